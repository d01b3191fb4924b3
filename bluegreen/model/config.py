"""Reading a stack's config into a `Topology`: every value validated, every problem reported by key."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bluegreen.model.ctsettings import KEYS as SETTINGS_KEYS
from bluegreen.model.ctsettings import read_settings
from bluegreen.model.errors import ConfigError, ValidationError
from bluegreen.model.reader import Reader, json_kind
from bluegreen.model.tlspin import normalize_fingerprint
from bluegreen.model.topology import (
    COLORS,
    NAMESPACE,
    ROLES,
    SWITCH_MODES,
    AppEnvVar,
    AppSettings,
    Container,
    DatabaseSettings,
    EventSettings,
    HaproxySettings,
    JournalSettings,
    MonitoringSettings,
    ProxmoxSettings,
    SshSettings,
    SwitchSettings,
    Template,
    Topology,
    Webhook,
)

_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_UNSET_IP = ipaddress.IPv4Address(0)  # placeholder while an address is invalid (a problem is recorded)
_TAG = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


ConfigGetter = Callable[[str], Any]


def from_config(get: ConfigGetter, *, stack: str, project_dir: str | os.PathLike[str],
                source: str | None = None) -> Topology:
    """Build and validate the topology from config keys (without the `bluegreen:` prefix)."""
    r = Reader()
    project = str(Path(project_dir).resolve())

    def resolve(p: str | None) -> str | None:
        if p is None:
            return None
        expanded = os.path.expanduser(p)
        return expanded if os.path.isabs(expanded) else str(Path(project) / expanded)

    proxmox, gateway_ip = _read_proxmox(r, get, resolve)
    ssh = _read_ssh(r, get("ssh"), resolve)
    containers = _read_containers(r, get("containers"), gateway_ip, resolve)
    app = _read_app(r, get("app"), resolve)
    database = _read_database(r, get("database"))
    haproxy = _read_haproxy(r, get("haproxy"), resolve)
    switch = _read_switch(r, get("switch"))
    journal = _read_journal(r, get("journal"))
    monitoring = _read_monitoring(r, get("monitoring"))
    events = _read_events(r, get("events"), resolve)
    active, color_file = _read_active_color(r, get, resolve)
    allow_disruption = r.str_list({"allowDisruption": get("allowDisruption")}, "allowDisruption", "")
    for item in allow_disruption:
        if item not in ("live", "database"):
            r.problem("allowDisruption", f"expected a list of live and/or database, got {item!r}")
    allow_restart = r.bool_({"allowRestart": get("allowRestart")}, "allowRestart", "", False)
    if r.problems:
        raise ValidationError(source or f"stack {stack!r}", r.problems)
    return Topology(
        stack=stack, project_dir=project, active_color=str(active), containers=containers,
        proxmox=proxmox, ssh=ssh, app=app, database=database, haproxy=haproxy, switch=switch,
        journal=journal, environment=str(get("environment") or "production"),
        allow_restart=allow_restart,
        monitoring=monitoring, events=events,
        active_color_file=color_file, allow_disruption=allow_disruption,
    )


Resolve = Callable[[str | None], str | None]

def _read_proxmox(r: Reader, get: ConfigGetter,
                  resolve: Resolve) -> tuple[ProxmoxSettings, ipaddress.IPv4Address | None]:
    px = r.obj(get("proxmox"), "proxmox")
    tpl = r.obj(px.get("template"), "proxmox.template")
    template = Template(
        file=r.str_(tpl, "file", "proxmox.template", required=True),
        url=r.opt_str(tpl, "url", "proxmox.template"),
        checksum=r.opt_str(tpl, "checksum", "proxmox.template"),
        checksum_algorithm=r.opt_str(tpl, "checksumAlgorithm", "proxmox.template"),
        storage=r.str_(tpl, "storage", "proxmox.template", "local"),
    )
    algorithms = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")
    if template.checksum is not None and template.checksum_algorithm is None:
        r.problem("proxmox.template.checksumAlgorithm", "is required when checksum is given")
    elif template.checksum is None and template.checksum_algorithm is not None:
        r.problem("proxmox.template.checksum", "is required when checksumAlgorithm is given")
    elif template.checksum_algorithm is not None and template.checksum_algorithm not in algorithms:
        r.problem("proxmox.template.checksumAlgorithm",
                  f"expected one of {', '.join(algorithms)}, got {template.checksum_algorithm!r}")
    if template.url is not None:
        # The node downloads it and every new container runs it as root: only over https, and only
        # the file whose checksum the stack names.
        if not template.url.lower().startswith("https://"):
            r.problem("proxmox.template.url", f"must be an https:// URL, got {template.url!r}")
        if template.checksum is None:
            r.problem("proxmox.template.checksum",
                      "is required with url (the SHA-256 the distributor publishes; checksumAlgorithm: sha256)")
        elif template.checksum_algorithm in ("md5", "sha1"):
            r.problem("proxmox.template.checksumAlgorithm",
                      f"{template.checksum_algorithm} is broken for this purpose: use sha256 or stronger")
    endpoint = get("endpoint@proxmoxve") or r.str_(px, "endpoint", "proxmox", required=True)
    gateway = r.str_(px, "gateway", "proxmox", required=True)
    proxmox = ProxmoxSettings(
        endpoint=str(endpoint),
        node=r.str_(px, "node", "proxmox", required=True),
        insecure=r.bool_(px, "insecure", "proxmox", False),
        datastore=r.str_(px, "datastore", "proxmox", required=True),
        bridge=r.str_(px, "bridge", "proxmox", "vmbr0"),
        gateway=gateway,
        dns_servers=r.str_list(px, "dnsServers", "proxmox"),
        dns_domain=r.opt_str(px, "dnsDomain", "proxmox"),
        template=template,
        token_id=r.opt_str(px, "tokenId", "proxmox"),
        token_file=resolve(r.opt_str(px, "tokenFile", "proxmox")),
        snapshot_keep=r.num(px, "snapshotKeep", "proxmox", 3),
        ca_file=resolve(r.opt_str(px, "caFile", "proxmox")),
        fingerprint=_read_fingerprint(r, px),
    )
    try:
        gateway_ip: ipaddress.IPv4Address | None = ipaddress.IPv4Address(gateway) if gateway else None
    except ValueError:
        r.problem("proxmox.gateway", f"expected an IPv4 address, got {gateway!r}")
        gateway_ip = None
    return proxmox, gateway_ip


def _read_fingerprint(r: Reader, px: Mapping[str, Any]) -> str | None:
    raw = r.opt_str(px, "fingerprint", "proxmox")
    if raw is None:
        return None
    try:
        return normalize_fingerprint(raw)
    except ConfigError as exc:
        r.problem("proxmox.fingerprint", str(exc).removeprefix("proxmox.fingerprint: "))
        return None


def _read_ssh(r: Reader, raw: Any, resolve: Resolve) -> SshSettings:
    sh = r.obj(raw, "ssh")
    ssh = SshSettings(
        user=r.str_(sh, "user", "ssh", "root"),
        port=r.num(sh, "port", "ssh", 22, minimum=1),
        public_keys=r.str_list(sh, "publicKeys", "ssh"),
        identity_file=resolve(r.opt_str(sh, "identityFile", "ssh")),
        known_hosts=resolve(r.str_(sh, "knownHosts", "ssh", "~/.config/bluegreen/known_hosts")) or "",
        connect_timeout=r.num(sh, "connectTimeout", "ssh", 10.0, integer=False),
        command_timeout=r.num(sh, "commandTimeout", "ssh", 900.0, integer=False),
        config_file=resolve(r.str_(sh, "configFile", "ssh", "~/.ssh/config")) or "~/.ssh/config",
    )
    # An empty ssh.publicKeys is reported by `placeholders.unset` only when a container is to be
    # created (adopted containers keep their own keys).
    for i, key in enumerate(ssh.public_keys):
        if not key.startswith(("ssh-", "ecdsa-", "sk-", "file:")):
            r.problem(f"ssh.publicKeys[{i}]",
                      "expected an OpenSSH public key (ssh-ed25519 AAAA...) or file:PATH of one")
    return ssh


def _read_app(r: Reader, raw: Any, resolve: Resolve) -> AppSettings:
    ap = r.obj(raw, "app")
    app = AppSettings(
        name=r.str_(ap, "name", "app", "jw-attendant-scheduler"),
        repo=r.str_(ap, "repo", "app", ""),  # `bluegreen adopt` reads it from the estate
        branch=r.str_(ap, "branch", "app", required=True),
        dir=r.abs_path(ap, "dir", "app", "/opt/jw-attendant-scheduler"),
        port=r.num(ap, "port", "app", 3000, minimum=1),
        health_path=r.str_(ap, "healthPath", "app", "/api/health"),
        instances=r.num(ap, "instances", "app", 2, minimum=1),
        deploy_user=r.str_(ap, "deployUser", "app", "jwapp"),
        node_env=r.str_(ap, "nodeEnv", "app", "production"),
        install_command=r.str_(ap, "installCommand", "app", "npm ci"),
        build_command=r.str_(ap, "buildCommand", "app", "npm run build"),
        migrate_command=r.str_(ap, "migrateCommand", "app", "npx prisma migrate deploy"),
        start_script=r.str_(ap, "startScript", "app", "node_modules/next/dist/bin/next"),
        start_args=r.str_(ap, "startArgs", "app", "start"),
        keep_releases=r.num(ap, "keepReleases", "app", 5, minimum=2),
        health_timeout=r.num(ap, "healthTimeout", "app", 120.0, integer=False, minimum=1),
        pm2_home=r.opt_str(ap, "pm2Home", "app"),
        health_status=r.num(ap, "healthStatus", "app", 200),
        env=_read_app_env(r, ap.get("env"), resolve),
    )
    if not 100 <= app.health_status <= 599:
        r.problem("app.healthStatus", f"expected an HTTP status (100-599), got {app.health_status}")
    if app.health_path and not app.health_path.startswith("/"):
        r.problem("app.healthPath", f"expected a path starting with /, got {app.health_path!r}")
    return app


def _read_database(r: Reader, raw: Any) -> DatabaseSettings:
    db = r.obj(raw, "database")
    database = DatabaseSettings(
        name=r.str_(db, "name", "database", "jw_attendant"),
        user=r.str_(db, "user", "database", ""),  # `bluegreen adopt` reads it from .env
        port=r.num(db, "port", "database", 5432, minimum=1),
        backup_dir=r.abs_path(db, "backupDir", "database", "/var/backups/jw-attendant"),
        backup_keep=r.num(db, "backupKeep", "database", 10, minimum=1),
        password_env=r.str_(db, "passwordEnv", "database", "BLUEGREEN_DB_PASSWORD"),
    )
    for key, value in (("database.name", database.name), ("database.user", database.user)):
        if value and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
            r.problem(key, f"expected a lowercase SQL identifier, got {value!r}")
    return database


def _read_haproxy(r: Reader, raw: Any, resolve: Resolve) -> HaproxySettings:
    hp = r.obj(raw, "haproxy")
    haproxy = HaproxySettings(
        public_port=r.num(hp, "publicPort", "haproxy", 80, minimum=1),
        preview_port=r.num(hp, "previewPort", "haproxy", 8080, minimum=1),
        stats_port=r.num(hp, "statsPort", "haproxy", 8404, minimum=1),
        server_name=r.str_(hp, "serverName", "haproxy", "localhost"),
        config_path=r.abs_path(hp, "configPath", "haproxy", "/etc/haproxy/haproxy.cfg"),
        map_path=r.abs_path(hp, "mapPath", "haproxy", "/etc/haproxy/live-color.map"),
        admin_socket=r.abs_path(hp, "adminSocket", "haproxy", "/run/haproxy/admin.sock"),
        master_socket=r.abs_path(hp, "masterSocket", "haproxy", "/run/haproxy/master.sock"),
        pid_file=r.abs_path(hp, "pidFile", "haproxy", "/run/haproxy.pid"),
        maxconn=r.num(hp, "maxconn", "haproxy", 4096, minimum=1),
        tls_cert=r.opt_str(hp, "tlsCert", "haproxy"),
        https_port=r.num(hp, "httpsPort", "haproxy", 443, minimum=1),
        ca_file=resolve(r.opt_str(hp, "caFile", "haproxy")),
        private_address=r.opt_str(hp, "privateAddress", "haproxy"),
        stats_user=r.opt_str(r.obj(hp.get("statsAuth"), "haproxy.statsAuth"), "user", "haproxy.statsAuth"),
        stats_password_hash=r.opt_str(r.obj(hp.get("statsAuth"), "haproxy.statsAuth"), "passwordHash",
                                      "haproxy.statsAuth"),
    )
    if haproxy.tls_cert is not None and not haproxy.tls_cert.startswith("/"):
        r.problem("haproxy.tlsCert", f"expected an absolute path on the HAProxy host, got {haproxy.tls_cert!r}")
    if haproxy.private_address is not None:
        try:
            ipaddress.IPv4Address(haproxy.private_address)
        except ValueError:
            r.problem("haproxy.privateAddress", f"expected an IPv4 address, got {haproxy.private_address!r}")
    if (haproxy.stats_user is None) != (haproxy.stats_password_hash is None):
        r.problem("haproxy.statsAuth", "needs both user and passwordHash (a crypt hash: openssl passwd -6)")
    elif haproxy.stats_password_hash is not None and not haproxy.stats_password_hash.startswith("$"):
        r.problem("haproxy.statsAuth.passwordHash",
                  "expected a crypt(3) hash such as the output of `openssl passwd -6`, not a password")
    ports = {"publicPort": haproxy.public_port, "previewPort": haproxy.preview_port,
             "statsPort": haproxy.stats_port}
    if haproxy.tls:
        ports["httpsPort"] = haproxy.https_port
    if len(set(ports.values())) != len(ports):
        r.problem("haproxy", f"publicPort, previewPort and statsPort must differ, got {ports}")
    return haproxy


def _read_switch(r: Reader, raw: Any) -> SwitchSettings:
    sw = r.obj(raw, "switch")
    switch = SwitchSettings(
        mode=r.str_(sw, "mode", "switch", "automation"),
        watch_seconds=r.num(sw, "watchSeconds", "switch", 60.0, integer=False),
        max_error_ratio=r.num(sw, "maxErrorRatio", "switch", 0.05, integer=False),
        min_requests=r.num(sw, "minRequests", "switch", 20),
    )
    if switch.mode not in SWITCH_MODES:
        r.problem("switch.mode", f"expected one of {', '.join(SWITCH_MODES)}, got {switch.mode!r}")
    if not 0 <= switch.max_error_ratio <= 1:
        r.problem("switch.maxErrorRatio", f"expected a ratio between 0 and 1, got {switch.max_error_ratio}")
    return switch


def _read_journal(r: Reader, raw: Any) -> JournalSettings:
    jn = r.obj(raw, "journal")
    journal = JournalSettings(
        path=r.abs_path(jn, "path", "journal", "/var/lib/bluegreen/state.json"),
        lock_path=r.abs_path(jn, "lockPath", "journal", "/var/lib/bluegreen/lock.json"),
        metrics_path=r.abs_path(jn, "metricsPath", "journal",
                                "/var/lib/prometheus/node-exporter/bluegreen.prom"),
        history_keep=r.num(jn, "historyKeep", "journal", 200, minimum=1),
    )
    return journal


def _read_active_color(r: Reader, get: ConfigGetter, resolve: Resolve) -> tuple[str, str | None]:
    active = get("activeColor")
    if active is None:
        r.problem("activeColor", f"is required (expected one of {', '.join(COLORS)})")
        active = COLORS[0]
    elif active not in COLORS:
        r.problem("activeColor", f"expected one of {', '.join(COLORS)}, got {active!r}")
        active = COLORS[0]
    # The stack's own value is validated above whatever the overlay says.
    color_file = resolve(r.opt_str({"activeColorFile": get("activeColorFile")}, "activeColorFile", ""))
    if color_file is not None:
        overlay = _read_color_file(color_file)
        if overlay is not None and overlay not in COLORS:
            r.problem("activeColorFile", f"{color_file} holds {overlay!r}, expected one of {', '.join(COLORS)}")
        elif overlay is not None:
            active = overlay
    return str(active), color_file


def _host_port(r: Reader, m: Mapping[str, Any], key: str, path: str) -> str | None:
    value = r.opt_str(m, key, path)
    if value is None:
        return None
    host, _, port = value.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
        ok = port.isdigit() and 0 < int(port) < 65536
    except ValueError:
        ok = False
    if not ok:
        r.problem(f"{path}.{key}", f"expected an IPv4 address and port like 10.92.3.30:9090, got {value!r}")
        return None
    return value


def _read_monitoring(r: Reader, raw: Any) -> MonitoringSettings:
    m = r.obj(raw, "monitoring")
    return MonitoringSettings(
        prometheus=_host_port(r, m, "prometheus", "monitoring"),
        blackbox=_host_port(r, m, "blackboxExporter", "monitoring"),
        node_exporter_port=r.num(m, "nodeExporterPort", "monitoring", 9100, minimum=1),
        scrape_interval=r.num(m, "scrapeInterval", "monitoring", 15.0, integer=False, minimum=1),
        haproxy_metrics=_host_port(r, m, "haproxyMetrics", "monitoring"),
    )


def _read_events(r: Reader, raw: Any, resolve: Callable[[str | None], str | None]) -> EventSettings:
    m = r.obj(raw, "events")
    hooks = r.obj(m.get("hooks"), "events.hooks")
    webhooks: list[Webhook] = []
    items = m.get("webhooks")
    if items is not None and not isinstance(items, list):
        r.problem("events.webhooks", f"expected a list, got {json_kind(items)}")
        items = []
    for i, item in enumerate(items or []):
        path = f"events.webhooks[{i}]"
        w = r.obj(item, path)
        if isinstance(w.get("url"), Mapping) and set(w["url"]) == {"secure"}:
            r.problem(f"{path}.url", "is encrypted (only the Pulumi engine can read it): "
                                     "give the URL in an environment variable (urlEnv) or a file (urlFile)")
            continue
        url = r.opt_str(w, "url", path)
        url_env = r.opt_str(w, "urlEnv", path)
        url_file = resolve(r.opt_str(w, "urlFile", path))
        if sum(v is not None for v in (url, url_env, url_file)) != 1:
            r.problem(path, "expected exactly one of url, urlEnv, urlFile")
        if url is not None and not re.match(r"^https?://[^\s/]+", url):
            r.problem(f"{path}.url", "expected an http:// or https:// URL")
        webhooks.append(Webhook(name=r.str_(w, "name", path, f"webhook-{i}"), url=url,
                                url_env=url_env, url_file=url_file))
    return EventSettings(
        webhooks=tuple(webhooks),
        timeout=r.num(m, "timeout", "events", 2.0, integer=False, minimum=0.1),
        retries=r.num(m, "retries", "events", 3),
        pre_deploy=resolve(r.opt_str(hooks, "preDeploy", "events.hooks")),
        post_switch=resolve(r.opt_str(hooks, "postSwitch", "events.hooks")),
        hook_timeout=r.num(hooks, "timeout", "events.hooks", 60.0, integer=False, minimum=1),
    )


def _read_color_file(path: str) -> str | None:
    """The colour an `activeColorFile` declares, or None when it does not exist yet."""
    try:
        return Path(path).read_text().strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"activeColorFile {path}: {exc.strerror}") from None


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


def _read_app_env(r: Reader, raw: Any, resolve: Callable[[str | None], str | None]) -> tuple[AppEnvVar, ...]:
    """`app.env`: NAME: "plain value" | {value: ...} | {secret: NAME, env: VAR, file: PATH}."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        r.problem("app.env", f"expected a mapping of variable names, got {json_kind(raw)}")
        return ()
    out: list[AppEnvVar] = []
    for name, spec in raw.items():
        key = f"app.env.{name}"
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            r.problem(key, "expected an environment variable name (letters, digits, _)")
            continue
        if name in ("DATABASE_URL", "PORT", "HOSTNAME", "NODE_ENV", "BLUEGREEN_COLOR"):
            r.problem(key, "is set by bluegreen itself (from the database and app settings)")
            continue
        if isinstance(spec, (str, int, float)) and not isinstance(spec, bool):
            out.append(AppEnvVar(name=name, value=str(spec)))
            continue
        if not isinstance(spec, Mapping) or set(spec) - {"value", "secret", "env", "file"}:
            r.problem(key, "expected a string, {value: ...} or {secret: NAME, env: VAR, file: PATH}")
            continue
        if ("value" in spec) == ("secret" in spec):
            r.problem(key, "give exactly one of value or secret")
            continue
        if "value" in spec:
            out.append(AppEnvVar(name=name, value=str(spec["value"])))
            continue
        secret = spec["secret"]
        if not isinstance(secret, str) or not _SECRET_NAME.fullmatch(secret):
            r.problem(f"{key}.secret", f"expected a config key name, got {secret!r}")
            continue
        env = spec.get("env")
        if env is not None and (not isinstance(env, str) or not _ENV_NAME.fullmatch(env)):
            r.problem(f"{key}.env", f"expected an environment variable name, got {env!r}")
            continue
        file = spec.get("file")
        if file is not None and not isinstance(file, str):
            r.problem(f"{key}.file", f"expected a path, got {json_kind(file)}")
            continue
        out.append(AppEnvVar(name=name, secret=secret, env=env, file=resolve(file)))
    return tuple(out)


def _read_containers(r: Reader, raw: Any, gateway: ipaddress.IPv4Address | None,
                     resolve: Callable[[str | None], str | None]) -> tuple[Container, ...]:
    if raw is None:
        r.problem("containers", "is required (expected a list of containers)")
        return ()
    if not isinstance(raw, list):
        r.problem("containers", f"expected a list, got {json_kind(raw)}")
        return ()
    if not raw:
        r.problem("containers", "is empty (expected the database, two app and the load balancer containers)")
        return ()
    result: list[Container] = []
    seen: dict[str, dict[Any, str]] = {"id": {}, "ip": {}, "name": {}}
    for i, item in enumerate(raw):
        path = f"containers[{i}]"
        if not isinstance(item, Mapping):
            r.problem(path, f"expected a mapping, got {json_kind(item)}")
            continue
        container = _read_container(r, item, path, gateway, resolve)
        unique = {"id": container.vmid, "ip": container.ip if container.interface.ip != _UNSET_IP else None,
                  "name": container.name or None}
        for key, value in unique.items():
            if value is None:
                continue
            if value in seen[key]:
                r.problem(f"{path}.{key}", f"{value if key != 'name' else repr(value)} is used twice "
                                           f"(also by {seen[key][value]})")
            seen[key].setdefault(value, path)
        result.append(container)
    roles = [c.role for c in result]
    for role in ("database", "loadbalancer"):
        if roles.count(role) != 1:
            r.problem("containers", f"expected exactly one {role} container, found {roles.count(role)}")
    colors = [c.color for c in result if c.role == "app"]
    for color in COLORS:
        if colors.count(color) != 1:
            r.problem("containers",
                      f"expected exactly one app container of colour {color}, found {colors.count(color)}")
    return tuple(result)


_CONTAINER_KEYS = {"id", "name", "role", "color", "ip", "cores", "memory", "swap", "disk", "existing", "root",
                   "tags", *SETTINGS_KEYS}


def _read_container(r: Reader, m: Mapping[str, Any], path: str, gateway: ipaddress.IPv4Address | None,
                    resolve: Callable[[str | None], str | None]) -> Container:
    for extra in sorted(set(m) - _CONTAINER_KEYS):
        r.problem(f"{path}.{extra}", f"unknown key (expected one of {', '.join(sorted(_CONTAINER_KEYS))})")
    vmid = r.num(m, "id", path, minimum=100)
    if vmid > 999_999_999:
        r.problem(f"{path}.id", f"must be at most 999999999, got {vmid}")
    name = r.str_(m, "name", path, required=True)
    if name and not _HOSTNAME.match(name):
        r.problem(f"{path}.name", f"expected a lowercase hostname (a-z, 0-9, -), got {name!r}")
    role = r.str_(m, "role", path, required=True)
    if role and role not in ROLES:
        r.problem(f"{path}.role", f"expected one of {', '.join(ROLES)}, got {role!r}")
    color = r.opt_str(m, "color", path)
    if role == "app" and color is None:
        r.problem(f"{path}.color", f"is required for an app container (one of {', '.join(COLORS)})")
    elif color is not None and color not in COLORS:
        r.problem(f"{path}.color", f"expected one of {', '.join(COLORS)}, got {color!r}")
    elif color is not None and role != "app":
        r.problem(f"{path}.color", f"only app containers have a colour (this one is {role!r})")
    interface = _read_interface(r, m, path, gateway)
    tags_raw = r.str_list(m, "tags", path)
    for t in tags_raw:
        if not _TAG.match(t):
            r.problem(f"{path}.tags", f"tag {t!r}: expected lowercase letters, digits, '-', '_' or '.'")
    return Container(
        vmid=vmid, name=name, role=role, color=color, interface=interface,
        cores=r.num(m, "cores", path, 1, minimum=1),
        memory=r.num(m, "memory", path, 1024, minimum=16),
        swap=r.num(m, "swap", path, 512),
        disk=r.num(m, "disk", path, 8, minimum=1),
        existing=r.bool_(m, "existing", path, False),
        root=resolve(r.str_(m, "root", path, "/")) or "/",
        tags=tuple(sorted({t.lower() for t in tags_raw})),
        settings=read_settings(r, m, path),
    )


def _read_interface(r: Reader, m: Mapping[str, Any], path: str,
                    gateway: ipaddress.IPv4Address | None) -> ipaddress.IPv4Interface:
    """`ip` with its prefix, in the gateway's subnet; a placeholder (0.0.0.0) after a problem."""
    ip_text = r.str_(m, "ip", path, required=True)
    interface = ipaddress.IPv4Interface(f"{_UNSET_IP}/32")
    if not ip_text:
        return interface
    try:
        if "/" not in ip_text:
            raise ValueError("no prefix length")
        interface = ipaddress.IPv4Interface(ip_text)
    except ValueError:
        r.problem(f"{path}.ip", f"expected an IPv4 address with prefix, like 10.92.3.21/24, got {ip_text!r}")
        return interface
    if gateway is not None and gateway not in interface.network:
        r.problem(f"{path}.ip", f"{ip_text} is not in the same subnet as the gateway {gateway}")
    if interface.ip == interface.network.network_address or (
            interface.network.prefixlen < 31 and interface.ip == interface.network.broadcast_address):
        r.problem(f"{path}.ip", f"{ip_text} is the subnet's network or broadcast address")
    return interface


def read_public_keys(ssh: SshSettings) -> list[str]:
    """The public keys to install, reading `file:PATH` entries (the lab generates its key)."""
    keys = []
    for entry in ssh.public_keys:
        if entry.startswith("file:"):
            path = Path(os.path.expanduser(entry[len("file:"):]))
            try:
                keys.append(path.read_text().strip())
            except OSError as exc:
                raise ConfigError(f"ssh.publicKeys: cannot read {path}: {exc.strerror}") from None
        else:
            keys.append(entry)
    return keys


def config_getter(config: Mapping[str, Any]) -> ConfigGetter:
    """A getter over a stack file's `config:` mapping: `get("app")` reads `bluegreen:app`."""

    def get(key: str) -> Any:
        if "@" in key:
            name, namespace = key.split("@", 1)
            value = config.get(f"{namespace}:{name}")
        else:
            value = config.get(f"{NAMESPACE}:{key}")
        if isinstance(value, Mapping) and set(value) == {"secure"}:
            return None  # an encrypted value: only the Pulumi engine can read it
        return value

    return get


def pulumi_getter(raw_get: Callable[[str], str | None],
                  other: Callable[[str, str], str | None] | None = None) -> ConfigGetter:
    """Adapt `pulumi.Config(...).get` (values arrive as JSON text for structured keys)."""

    def get(key: str) -> Any:
        if "@" in key:
            name, namespace = key.split("@", 1)
            text = other(namespace, name) if other else None
        else:
            text = raw_get(key)
        if text is None:
            return None
        try:
            return json.loads(text)
        except (ValueError, TypeError):
            return text

    return get
