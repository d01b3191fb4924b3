"""The estate described by a stack: one typed, validated model read by Pulumi and the automation.

`load_stack(project_dir, stack)` reads `stacks/Pulumi.<stack>.yaml`; `from_config(get, ...)` builds
the model from any key lookup (the Pulumi program passes `pulumi.Config`). Validation collects
every problem with its key path and raises one `ValidationError` listing them all.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from .ctsettings import KEYS as SETTINGS_KEYS
from .ctsettings import ContainerSettings, read_settings
from .errors import ConfigError, Problem, ValidationError

NAMESPACE = "bluegreen"
COLORS = ("blue", "green")
ROLES = ("database", "app", "loadbalancer")
SWITCH_MODES = ("automation", "direct")
_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_UNSET_IP = ipaddress.IPv4Address(0)  # placeholder while an address is invalid (a problem is recorded)
_TAG = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass(frozen=True)
class Container:
    vmid: int
    name: str
    role: str
    color: str | None
    interface: ipaddress.IPv4Interface
    cores: int
    memory: int
    swap: int
    disk: int
    existing: bool
    root: str
    tags: tuple[str, ...]
    settings: ContainerSettings = field(default_factory=ContainerSettings)

    @property
    def ip(self) -> str:
        return str(self.interface.ip)

    @property
    def label(self) -> str:
        """How messages name the host: `blue (132, 10.92.3.22)`."""
        who = self.color or self.role
        return f"{who} ({self.vmid}, {self.ip})"

    def path(self, path: str) -> str:
        """An absolute path on this host, under its root (the lab gives each host its own root)."""
        rel = PurePosixPath(path)
        if not rel.is_absolute():
            raise ValueError(f"expected an absolute path, got {path!r}")
        if self.root == "/":
            return str(rel)
        return str(PurePosixPath(self.root) / rel.relative_to("/"))


@dataclass(frozen=True)
class Template:
    file: str
    url: str | None
    checksum: str | None
    checksum_algorithm: str | None
    storage: str

    @property
    def file_id(self) -> str:
        return f"{self.storage}:vztmpl/{self.file}"


@dataclass(frozen=True)
class ProxmoxSettings:
    endpoint: str
    node: str
    insecure: bool
    datastore: str
    bridge: str
    gateway: str
    dns_servers: tuple[str, ...]
    dns_domain: str | None
    template: Template
    token_id: str | None
    token_file: str | None
    snapshot_keep: int
    ca_file: str | None = None


@dataclass(frozen=True)
class SshSettings:
    user: str
    port: int
    public_keys: tuple[str, ...]
    identity_file: str | None
    known_hosts: str
    connect_timeout: float
    command_timeout: float
    config_file: str = "~/.ssh/config"


@dataclass(frozen=True)
class AppSettings:
    name: str
    repo: str
    branch: str
    dir: str
    port: int
    health_path: str
    instances: int
    deploy_user: str
    node_env: str
    install_command: str
    build_command: str
    migrate_command: str
    start_script: str
    start_args: str
    keep_releases: int
    health_timeout: float
    pm2_home: str | None
    health_status: int = 200  # the status the health path answers when healthy


@dataclass(frozen=True)
class DatabaseSettings:
    name: str
    user: str
    port: int
    backup_dir: str
    backup_keep: int
    password_env: str


@dataclass(frozen=True)
class HaproxySettings:
    public_port: int
    preview_port: int
    stats_port: int
    server_name: str
    config_path: str
    map_path: str
    admin_socket: str
    master_socket: str
    pid_file: str
    maxconn: int
    # HTTPS (issue 10): all optional, so a stack without them serves plain HTTP as before.
    tls_cert: str | None = None  # PEM bundle (certificate, chain, key) on the HAProxy host
    https_port: int = 443
    ca_file: str | None = None  # the CA clients verify the certificate with (None: system trust)
    private_address: str | None = None  # where preview and stats listen (off the public address)
    stats_user: str | None = None  # basic auth on stats/metrics, with stats_password_hash
    stats_password_hash: str | None = None  # a crypt(3) hash, never the password itself

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


@dataclass(frozen=True)
class SwitchSettings:
    mode: str
    watch_seconds: float
    max_error_ratio: float
    min_requests: int


@dataclass(frozen=True)
class JournalSettings:
    path: str
    lock_path: str
    metrics_path: str
    history_keep: int


@dataclass(frozen=True)
class Topology:
    stack: str
    project_dir: str
    active_color: str
    containers: tuple[Container, ...]
    proxmox: ProxmoxSettings
    ssh: SshSettings
    app: AppSettings
    database: DatabaseSettings
    haproxy: HaproxySettings
    switch: SwitchSettings
    journal: JournalSettings
    environment: str = field(default="production")
    # Host configuration may restart a serving HAProxy or PostgreSQL (`bluegreen:allowRestart`).
    allow_restart: bool = False

    @property
    def database_host(self) -> Container:
        return next(c for c in self.containers if c.role == "database")

    @property
    def load_balancer(self) -> Container:
        return next(c for c in self.containers if c.role == "loadbalancer")

    @property
    def app_hosts(self) -> dict[str, Container]:
        return {c.color: c for c in self.containers if c.role == "app" and c.color}

    def app_host(self, color: str) -> Container:
        return self.app_hosts[color]

    @property
    def standby_color(self) -> str:
        return other_color(self.active_color)

    def container(self, vmid: int) -> Container:
        return next(c for c in self.containers if c.vmid == vmid)

    def find_host(self, name: str) -> Container:
        """A host by vmid, name, colour, role or address, as a user would type it."""
        for c in self.containers:
            if name in (str(c.vmid), c.name, c.color, c.role, c.ip):
                return c
        known = ", ".join(f"{c.vmid}/{c.name}/{c.color or c.role}" for c in self.containers)
        raise ConfigError(f"unknown host {name!r}; this stack has: {known}")

    @property
    def public_url(self) -> str:
        if self.haproxy.tls:
            return f"https://{self.load_balancer.ip}:{self.haproxy.https_port}"
        return f"http://{self.load_balancer.ip}:{self.haproxy.public_port}"

    @property
    def preview_url(self) -> str:
        scheme = "https" if self.haproxy.tls else "http"
        return f"{scheme}://{self.private_ip}:{self.haproxy.preview_port}"

    @property
    def private_ip(self) -> str:
        """Where the preview and stats frontends listen: `haproxy.privateAddress`, else the LB's."""
        return self.haproxy.private_address or self.load_balancer.ip

    @property
    def tls_server_name(self) -> str | None:
        """The name clients send (SNI, Host) and verify the certificate for; None without TLS."""
        return self.haproxy.server_name if self.haproxy.tls else None


def other_color(color: str) -> str:
    return COLORS[1] if color == COLORS[0] else COLORS[0]


# --------------------------------------------------------------------------- reading


class _Reader:
    """Typed access to nested config that records problems instead of raising."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(Problem(key, message))

    def obj(self, value: Any, key: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem(key, f"expected a mapping, got {_kind(value)}")
            return {}
        return value

    def str_(self, m: Mapping[str, Any], key: str, path: str, default: str | None = None,
             *, required: bool = False) -> str:
        value = m.get(key)
        full = f"{path}.{key}" if path else key
        if value is None or (required and isinstance(value, str) and not value.strip()):
            if required:
                self.problem(full, "is required (expected a non-empty string)")
            return default if default is not None else ""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.problem(full, f"expected a string, got {_kind(value)}")
            return default or ""
        return str(value)

    def opt_str(self, m: Mapping[str, Any], key: str, path: str) -> str | None:
        if m.get(key) is None:
            return None
        return self.str_(m, key, path)

    def num(self, m: Mapping[str, Any], key: str, path: str, default: float | None = None, *,
            integer: bool = True, minimum: float = 0, required: bool = False) -> Any:
        value = m.get(key)
        full = f"{path}.{key}" if path else key
        if value is None:
            if required or default is None:
                self.problem(full, "is required (expected a number)")
                return 0
            return default
        parsed: float | None
        if isinstance(value, bool):
            parsed = None
        elif isinstance(value, (int, float)):
            parsed = value
        elif isinstance(value, str):
            try:
                parsed = float(value) if not integer else int(value, 10)
            except ValueError:
                parsed = None
        else:
            parsed = None
        if parsed is not None and not math.isfinite(parsed):
            # YAML's .nan/.inf: a poll with no end, an int() that raises. Refused like any bad value.
            self.problem(full, f"expected a finite number, got {value!r}")
            return default if default is not None else 0
        if parsed is None or (integer and float(parsed) != int(parsed)):
            what = "a whole number" if integer else "a number"
            self.problem(full, f"expected {what}, got {value!r}")
            return default if default is not None else 0
        if parsed < minimum:
            self.problem(full, f"must be at least {minimum:g}, got {parsed!r}")
        elif key.lower().endswith("port") and not 1 <= parsed <= 65535:
            self.problem(full, f"must be a TCP port (1-65535), got {parsed!r}")
        elif key.lower().endswith(("timeout", "seconds")) and parsed <= 0 and key != "watchSeconds":
            self.problem(full, f"must be more than 0, got {parsed!r}")
        elif key == "maxErrorRatio" and parsed > 1:
            self.problem(full, f"must be a ratio between 0 and 1, got {parsed!r}")
        return int(parsed) if integer else float(parsed)

    def bool_(self, m: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = m.get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        self.problem(f"{path}.{key}" if path else key, f"expected true or false, got {value!r}")
        return default

    def str_list(self, m: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = m.get(key)
        full = f"{path}.{key}" if path else key
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(full, f"expected a list of strings, got {_kind(value)}")
            return ()
        return tuple(value)

    def abs_path(self, m: Mapping[str, Any], key: str, path: str, default: str) -> str:
        value = self.str_(m, key, path, default)
        if value and not value.startswith("/"):
            self.problem(f"{path}.{key}", f"expected an absolute path, got {value!r}")
        return value


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    return f"{type(value).__name__} {value!r}"


ConfigGetter = Callable[[str], Any]


def from_config(get: ConfigGetter, *, stack: str, project_dir: str | os.PathLike[str],
                source: str | None = None) -> Topology:
    """Build and validate the topology from config keys (without the `bluegreen:` prefix)."""
    r = _Reader()
    project = str(Path(project_dir).resolve())

    def resolve(p: str | None) -> str | None:
        if p is None:
            return None
        expanded = os.path.expanduser(p)
        return expanded if os.path.isabs(expanded) else str(Path(project) / expanded)

    # proxmox ------------------------------------------------------------------
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
    )
    try:
        gateway_ip: ipaddress.IPv4Address | None = ipaddress.IPv4Address(gateway) if gateway else None
    except ValueError:
        r.problem("proxmox.gateway", f"expected an IPv4 address, got {gateway!r}")
        gateway_ip = None

    # ssh ----------------------------------------------------------------------
    sh = r.obj(get("ssh"), "ssh")
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

    # containers ---------------------------------------------------------------
    containers = _read_containers(r, get("containers"), gateway_ip, resolve)

    # app ----------------------------------------------------------------------
    ap = r.obj(get("app"), "app")
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
    )
    if not 100 <= app.health_status <= 599:
        r.problem("app.healthStatus", f"expected an HTTP status (100-599), got {app.health_status}")
    if app.health_path and not app.health_path.startswith("/"):
        r.problem("app.healthPath", f"expected a path starting with /, got {app.health_path!r}")

    db = r.obj(get("database"), "database")
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

    hp = r.obj(get("haproxy"), "haproxy")
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

    sw = r.obj(get("switch"), "switch")
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

    jn = r.obj(get("journal"), "journal")
    journal = JournalSettings(
        path=r.abs_path(jn, "path", "journal", "/var/lib/bluegreen/state.json"),
        lock_path=r.abs_path(jn, "lockPath", "journal", "/var/lib/bluegreen/lock.json"),
        metrics_path=r.abs_path(jn, "metricsPath", "journal",
                                "/var/lib/prometheus/node-exporter/bluegreen.prom"),
        history_keep=r.num(jn, "historyKeep", "journal", 200, minimum=1),
    )

    active = get("activeColor")
    if active is None:
        r.problem("activeColor", f"is required (expected one of {', '.join(COLORS)})")
        active = COLORS[0]
    elif active not in COLORS:
        r.problem("activeColor", f"expected one of {', '.join(COLORS)}, got {active!r}")
        active = COLORS[0]

    allow_restart = r.bool_({"allowRestart": get("allowRestart")}, "allowRestart", "", False)
    if r.problems:
        raise ValidationError(source or f"stack {stack!r}", r.problems)
    return Topology(
        stack=stack, project_dir=project, active_color=str(active), containers=containers,
        proxmox=proxmox, ssh=ssh, app=app, database=database, haproxy=haproxy, switch=switch,
        journal=journal, environment=str(get("environment") or "production"),
        allow_restart=allow_restart,
    )


def _read_containers(r: _Reader, raw: Any, gateway: ipaddress.IPv4Address | None,
                     resolve: Callable[[str | None], str | None]) -> tuple[Container, ...]:
    if raw is None:
        r.problem("containers", "is required (expected a list of containers)")
        return ()
    if not isinstance(raw, list):
        r.problem("containers", f"expected a list, got {_kind(raw)}")
        return ()
    if not raw:
        r.problem("containers", "is empty (expected the database, two app and the load balancer containers)")
        return ()
    result: list[Container] = []
    seen_ids: dict[int, str] = {}
    seen_ips: dict[str, str] = {}
    seen_names: dict[str, str] = {}
    for i, item in enumerate(raw):
        path = f"containers[{i}]"
        if not isinstance(item, Mapping):
            r.problem(path, f"expected a mapping, got {_kind(item)}")
            continue
        m = item
        known = {"id", "name", "role", "color", "ip", "cores", "memory", "swap", "disk",
                 "existing", "root", "tags", *SETTINGS_KEYS}
        for extra in sorted(set(m) - known):
            r.problem(f"{path}.{extra}", f"unknown key (expected one of {', '.join(sorted(known))})")
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
        ip_text = r.str_(m, "ip", path, required=True)
        interface = ipaddress.IPv4Interface(f"{_UNSET_IP}/32")
        if ip_text:
            try:
                if "/" not in ip_text:
                    raise ValueError("no prefix length")
                interface = ipaddress.IPv4Interface(ip_text)
            except ValueError:
                r.problem(f"{path}.ip", f"expected an IPv4 address with prefix, like 10.92.3.21/24, got {ip_text!r}")
            else:
                if gateway is not None and gateway not in interface.network:
                    r.problem(f"{path}.ip", f"{ip_text} is not in the same subnet as the gateway {gateway}")
                if interface.ip == interface.network.network_address or (
                        interface.network.prefixlen < 31 and interface.ip == interface.network.broadcast_address):
                    r.problem(f"{path}.ip", f"{ip_text} is the subnet's network or broadcast address")
        tags_raw = r.str_list(m, "tags", path)
        for t in tags_raw:
            if not _TAG.match(t):
                r.problem(f"{path}.tags", f"tag {t!r}: expected lowercase letters, digits, '-', '_' or '.'")
        root = r.str_(m, "root", path, "/")
        resolved_root = resolve(root) or "/"
        container = Container(
            vmid=vmid, name=name, role=role, color=color, interface=interface,
            cores=r.num(m, "cores", path, 1, minimum=1),
            memory=r.num(m, "memory", path, 1024, minimum=16),
            swap=r.num(m, "swap", path, 512),
            disk=r.num(m, "disk", path, 8, minimum=1),
            existing=r.bool_(m, "existing", path, False),
            root=resolved_root,
            tags=tuple(sorted({t.lower() for t in tags_raw})),
            settings=read_settings(r, m, path),
        )
        if vmid in seen_ids:
            r.problem(f"{path}.id", f"{vmid} is used twice (also by {seen_ids[vmid]})")
        seen_ids.setdefault(vmid, path)
        if ip_text and container.interface.ip != _UNSET_IP:
            if container.ip in seen_ips:
                r.problem(f"{path}.ip", f"{container.ip} is used twice (also by {seen_ips[container.ip]})")
            seen_ips.setdefault(container.ip, path)
        if name:
            if name in seen_names:
                r.problem(f"{path}.name", f"{name!r} is used twice (also by {seen_names[name]})")
            seen_names.setdefault(name, path)
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


def stack_file(project_dir: str | os.PathLike[str], stack: str) -> Path:
    return Path(project_dir) / "stacks" / f"Pulumi.{stack}.yaml"


def available_stacks(project_dir: str | os.PathLike[str]) -> list[str]:
    folder = Path(project_dir) / "stacks"
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in folder.glob("Pulumi.*.yaml"))


def read_stack_config(project_dir: str | os.PathLike[str], stack: str) -> dict[str, Any]:
    path = stack_file(project_dir, stack)
    if not path.is_file():
        known = ", ".join(available_stacks(project_dir)) or "none"
        raise ConfigError(f"unknown stack {stack!r}: {path} does not exist (stacks here: {known})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValidationError(str(path), [Problem("(top level)", f"expected a mapping, got {_kind(data)}")])
    config = data.get("config", {})
    if not isinstance(config, Mapping):
        raise ValidationError(str(path), [Problem("config", f"expected a mapping, got {_kind(config)}")])
    return dict(config)


def load_stack(project_dir: str | os.PathLike[str], stack: str) -> Topology:
    """Read and validate `stacks/Pulumi.<stack>.yaml`."""
    config = read_stack_config(project_dir, stack)
    return from_config(config_getter(config), stack=stack, project_dir=project_dir,
                       source=str(stack_file(project_dir, stack)))


def set_active_color_in_file(project_dir: str | os.PathLike[str], stack: str, color: str) -> None:
    """Record the live colour in the stack file, changing only that line (comments survive)."""
    if color not in COLORS:
        raise ConfigError(f"unknown colour {color!r}")
    path = stack_file(project_dir, stack)
    text = path.read_text()
    pattern = re.compile(rf"^(\s*{NAMESPACE}:activeColor:\s*)(\S+)(.*)$", re.M)
    if not pattern.search(text):
        raise ConfigError(f"{path}: no '{NAMESPACE}:activeColor' line to update")
    new = pattern.sub(lambda m: f"{m.group(1)}{color}{m.group(3)}", text, count=1)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)
