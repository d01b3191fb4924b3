"""Reading a stack's config into a `Topology`: every value validated, every problem reported by key."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bluegreen.model.config_containers import read_containers
from bluegreen.model.errors import ConfigError, ValidationError
from bluegreen.model.offsite import read_backup
from bluegreen.model.reader import Reader, json_kind
from bluegreen.model.tlspin import normalize_fingerprint
from bluegreen.model.topology import (
    COLORS,
    DISRUPTION_SCOPES,
    NAMESPACE,
    SWITCH_MODES,
    AppEnvVar,
    AppSettings,
    DatabaseSettings,
    EventSettings,
    HaproxySettings,
    HealthStatuses,
    JournalSettings,
    MonitoringSettings,
    ProxmoxSettings,
    SshSettings,
    SwitchSettings,
    Template,
    Topology,
    Webhook,
)

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
    containers = read_containers(r, get("containers"), gateway_ip, resolve)
    app = _read_app(r, get("app"), resolve)
    database = _read_database(r, get("database"), resolve)
    haproxy = _read_haproxy(r, get("haproxy"), resolve)
    switch = _read_switch(r, get("switch"))
    journal = _read_journal(r, get("journal"))
    monitoring = _read_monitoring(r, get("monitoring"))
    events = _read_events(r, get("events"), resolve)
    backup = read_backup(r, get("backup"), ssh, database, resolve)
    active, color_file = _read_active_color(r, get, resolve)
    allow_disruption = r.str_list({"allowDisruption": get("allowDisruption")}, "allowDisruption", "")
    for item in allow_disruption:
        if item not in DISRUPTION_SCOPES:
            r.problem("allowDisruption", f"expected a list of {', '.join(DISRUPTION_SCOPES)}, got {item!r}")
    allow_restart = r.bool_({"allowRestart": get("allowRestart")}, "allowRestart", "", False)
    top = {"adoptedStackFile": get("adoptedStackFile"), "secretsDir": get("secretsDir")}
    adopted_stack_file = resolve(r.opt_str(top, "adoptedStackFile", ""))
    secrets_dir = resolve(r.str_(top, "secretsDir", "", f"~/.config/bluegreen/secrets/{stack}")) or ""
    if r.problems:
        raise ValidationError(source or f"stack {stack!r}", r.problems)
    return Topology(
        stack=stack, project_dir=project, active_color=str(active), containers=containers,
        proxmox=proxmox, ssh=ssh, app=app, database=database, haproxy=haproxy, switch=switch,
        journal=journal, environment=str(get("environment") or "production"),
        allow_restart=allow_restart,
        monitoring=monitoring, events=events,
        active_color_file=color_file, allow_disruption=allow_disruption, backup=backup,
        adopted_stack_file=adopted_stack_file, secrets_dir=secrets_dir,
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


# Releases live beside the team's working copy, never inside it (a `git clean` there must not
# touch them) and never instead of it (its branch, origin and uncommitted work stay usable).
DEFAULT_APP_DIR = "/opt/jw-attendant-scheduler-deploy"
DEFAULT_WORKING_COPY = "/opt/jw-attendant-scheduler"
NO_WORKING_COPY = ("", "none")


def _working_copy(r: Reader, ap: Mapping[str, Any]) -> str | None:
    value = ap.get("workingCopy", DEFAULT_WORKING_COPY)
    if value is None or (isinstance(value, str) and value.strip().lower() in NO_WORKING_COPY):
        return None
    path = r.abs_path(ap, "workingCopy", "app", DEFAULT_WORKING_COPY)
    return path.rstrip("/") or None


def _git_credentials(r: Reader, ap: Mapping[str, Any]) -> str | None:
    value = r.opt_str(ap, "gitCredentials", "app")
    if value is not None and not value.startswith(("/", "~/")):
        r.problem("app.gitCredentials", f"expected an absolute path or ~/..., got {value!r}")
    return value


def _check_apart(r: Reader, app: AppSettings) -> None:
    """The release directory and the working copy must not contain each other."""
    if not app.working_copy or not app.dir.startswith("/"):
        return
    releases, work = app.dir.rstrip("/") + "/", app.working_copy + "/"
    if releases == work:
        r.problem("app.dir", f"is the working copy ({app.working_copy}): releases live beside it, "
                  f"e.g. dir: {app.working_copy}-deploy")
    elif releases.startswith(work) or work.startswith(releases):
        r.problem("app.dir", f"{app.dir} and app.workingCopy {app.working_copy} are inside one another: "
                  "keep them apart (siblings)")


def _read_app(r: Reader, raw: Any, resolve: Resolve) -> AppSettings:
    ap = r.obj(raw, "app")
    app = AppSettings(
        name=r.str_(ap, "name", "app", "jw-attendant-scheduler"),
        repo=r.str_(ap, "repo", "app", ""),  # `bluegreen adopt` reads it from the estate
        branch=r.str_(ap, "branch", "app", required=True),
        dir=r.abs_path(ap, "dir", "app", DEFAULT_APP_DIR),
        port=r.num(ap, "port", "app", 3000, minimum=1),
        health_path=r.str_(ap, "healthPath", "app", "/api/health"),
        instances=r.num(ap, "instances", "app", 2, minimum=1),
        # Never invented: the user the estate runs the app's PM2 as (`bluegreen adopt` reads it).
        deploy_user=r.str_(ap, "deployUser", "app", ""),
        node_env=r.str_(ap, "nodeEnv", "app", "production"),
        install_command=r.str_(ap, "installCommand", "app", "npm ci"),
        build_command=r.str_(ap, "buildCommand", "app", "npm run build"),
        migrate_command=r.str_(ap, "migrateCommand", "app", "npx prisma migrate deploy"),
        start_script=r.str_(ap, "startScript", "app", "node_modules/next/dist/bin/next"),
        start_args=r.str_(ap, "startArgs", "app", "start"),
        keep_releases=r.num(ap, "keepReleases", "app", 5, minimum=2),
        health_timeout=r.num(ap, "healthTimeout", "app", 120.0, integer=False, minimum=1),
        pm2_home=r.opt_str(ap, "pm2Home", "app"),
        health_status=_read_health_status(r, ap.get("healthStatus")),
        env=_read_app_env(r, ap.get("env"), resolve),
        working_copy=_working_copy(r, ap),
        git_credentials=_git_credentials(r, ap),
    )
    _check_apart(r, app)
    if app.health_path and not app.health_path.startswith("/"):
        r.problem("app.healthPath", f"expected a path starting with /, got {app.health_path!r}")
    return app


_STATUS_ITEM = re.compile(r"^\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?$")


def _read_health_status(r: Reader, raw: Any) -> HealthStatuses:
    """`app.healthStatus`: 200, "200-399", "200,204,301-308" or a list of those (default 200-399)."""
    if raw is None:
        return HealthStatuses()
    items = raw if isinstance(raw, list) else [raw]
    ranges: list[tuple[int, int]] = []
    for item in items:
        parts = [item] if isinstance(item, int) and not isinstance(item, bool) else \
            str(item).split(",") if isinstance(item, str) else None
        for part in parts or [None]:
            match = _STATUS_ITEM.match(str(part)) if part is not None else None
            low = int(match.group(1)) if match else 0
            high = int(match.group(2) or low) if match else 0
            if not match or not 100 <= low <= high <= 599:
                r.problem("app.healthStatus", "expected HTTP statuses (100-599): a status, a range like "
                                              f"200-399, or a list of them, got {raw!r}")
                return HealthStatuses()
            ranges.append((low, high))
    return HealthStatuses(tuple(ranges))


def _read_database(r: Reader, raw: Any, resolve: Resolve) -> DatabaseSettings:
    db = r.obj(raw, "database")
    database = DatabaseSettings(
        name=r.str_(db, "name", "database", "jw_attendant"),
        user=r.str_(db, "user", "database", ""),  # `bluegreen adopt` reads it from .env
        port=r.num(db, "port", "database", 5432, minimum=1),
        backup_dir=r.abs_path(db, "backupDir", "database", "/var/backups/jw-attendant"),
        backup_keep=r.num(db, "backupKeep", "database", 10, minimum=1),
        password_env=r.str_(db, "passwordEnv", "database", "BLUEGREEN_DB_PASSWORD"),
        password_file=resolve(r.opt_str(db, "passwordFile", "database")),
        url_query=r.str_(db, "urlQuery", "database", ""),
        url_host=r.opt_str(db, "urlHost", "database"),
    )
    if database.url_query.startswith("?") or any(ch.isspace() for ch in database.url_query):
        r.problem("database.urlQuery", "expected the part of DATABASE_URL after `?` (like "
                                       f"schema=public&connection_limit=5), got {database.url_query!r}")
    if database.url_host is not None and not re.fullmatch(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]",
                                                          database.url_host):
        r.problem("database.urlHost", f"expected a host name or address, got {database.url_host!r}")
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
        extra_config=r.str_(hp, "extraConfig", "haproxy", ""),
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
