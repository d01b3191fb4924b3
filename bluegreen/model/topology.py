"""The estate described by a stack: one typed, validated model read by Pulumi and the automation.

`load_stack(project_dir, stack)` reads `stacks/Pulumi.<stack>.yaml`; `from_config(get, ...)` builds
the model from any key lookup (the Pulumi program passes `pulumi.Config`). Validation collects
every problem with its key path and raises one `ValidationError` listing them all.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from bluegreen.model.ctsettings import ContainerSettings
from bluegreen.model.errors import ConfigError

NAMESPACE = "bluegreen"
COLORS = ("blue", "green")
ROLES = ("database", "app", "loadbalancer")
# What `bluegreen:allowDisruption` may name: hosts whose reboot or replacement `pulumi up` holds back.
DISRUPTION_SCOPES = ("live", "database", "loadbalancer")
# `existing: rebuilding`: an adopted container on its way to being owned by the program.
REBUILDING = "rebuilding"
SWITCH_MODES = ("automation", "direct")


def rooted(root: str, path: str) -> str:
    """`path` (absolute) under `root`: a host's own root, "/" on a real host."""
    rel = PurePosixPath(path)
    if not rel.is_absolute():
        raise ValueError(f"expected an absolute path, got {path!r}")
    if root == "/":
        return str(rel)
    return str(PurePosixPath(root) / rel.relative_to("/"))


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
    # `existing: rebuilding` (then `existing` is True too): adopted, and a rebuild has begun.
    rebuilding: bool = False

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
        return rooted(self.root, path)


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
    # The node certificate's SHA-256 (64 lowercase hex digits), pinned by `bluegreen trust --proxmox`.
    fingerprint: str | None = None


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
class HealthStatuses:
    """The HTTP statuses a healthy answer may have, as inclusive ranges: what both the tool's probes
    and HAProxy's `http-check expect status` accept. Default: 2xx and 3xx, HAProxy's own default
    for `option httpchk` (a home page behind a sign-in redirects)."""

    ranges: tuple[tuple[int, int], ...] = ((200, 399),)

    def accepts(self, status: int | None) -> bool:
        return status is not None and any(low <= status <= high for low, high in self.ranges)

    def __str__(self) -> str:
        """`200-399`, `200`, `200,204,301-308`: HAProxy's list-of-codes-or-ranges spelling."""
        return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in self.ranges)


@dataclass(frozen=True)
class AppSettings:
    name: str
    repo: str
    branch: str
    dir: str
    port: int
    health_path: str
    instances: int
    deploy_user: str  # "" until the stack names it (`bluegreen adopt` reads it from the estate)
    node_env: str
    install_command: str
    build_command: str
    migrate_command: str
    start_script: str
    start_args: str
    keep_releases: int
    health_timeout: float
    pm2_home: str | None
    health_status: HealthStatuses = field(default_factory=HealthStatuses)  # what a healthy answer is
    # Extra variables of shared/.env (`app.env`), by name; see `AppEnvVar`.
    env: tuple[AppEnvVar, ...] = ()
    # The team's git working copy on each app host (`app.workingCopy`): developers commit and push
    # from it, and it stays where it is; releases live beside it under `dir`. None: no working copy.
    working_copy: str | None = None
    # The deploy user's git credential store (`app.gitCredentials`, default `~/.git-credentials`).
    git_credentials: str | None = None


@dataclass(frozen=True)
class AppEnvVar:
    """One extra variable of the app's shared/.env: a plain `value`, or a secret reference.

    A secret is looked up, in order, in the Pulumi secret config `bluegreen:<secret>` (inside the
    engine), the environment variable `env` (default `BLUEGREEN_SECRET_<SECRET>`), then `file`.
    """

    name: str
    value: str | None = None
    secret: str | None = None
    env: str | None = None
    file: str | None = None


@dataclass(frozen=True)
class DatabaseSettings:
    name: str
    user: str
    port: int
    backup_dir: str
    backup_keep: int
    password_env: str
    password_file: str | None = None  # where the password is kept outside the engine (adopt writes it)
    url_query: str = ""  # what DATABASE_URL carries after `?` (schema=public&connection_limit=5)
    url_host: str | None = None  # the host DATABASE_URL names; default the database container's address


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
    # Other sites the load balancer serves (their frontends, backends, ...), carried over verbatim
    # from the hand-written haproxy.cfg by `bluegreen adopt` and rendered after ours.
    extra_config: str = ""

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
class MonitoringSettings:
    """`bluegreen:monitoring`: the Prometheus server that scrapes the estate (optional) and the
    exporters it scrapes. `prometheus`/`blackbox` are `host:port`; None when the stack names none."""

    prometheus: str | None
    blackbox: str | None
    node_exporter_port: int
    scrape_interval: float
    haproxy_metrics: str | None = None  # host:port of HAProxy's exporter; default the LB's stats port


@dataclass(frozen=True)
class Webhook:
    name: str
    url: str | None  # plain URL from the stack file, or None when read from url_env/url_file
    url_env: str | None = None
    url_file: str | None = None


@dataclass(frozen=True)
class EventSettings:
    """`bluegreen:events`: webhooks that get one JSON event per operation, and local hook scripts."""

    webhooks: tuple[Webhook, ...] = ()
    timeout: float = 2.0
    retries: int = 3
    pre_deploy: str | None = None
    post_switch: str | None = None
    hook_timeout: float = 60.0


@dataclass(frozen=True)
class BackupSettings:
    """`bluegreen:backup`: the second place, off the database host, that every verified dump and
    the journal are copied to (a host reached over SSH; the lab runs one on a loopback address).

    `dir` is on that host; `root` roots every path on it like a container's (the lab); `keep` is
    the retention counted there (per class, like `database.backupKeep`); `schedule` is the
    systemd `OnCalendar=` of the scheduled dump on the database host."""

    address: str
    port: int
    user: str
    dir: str
    keep: int
    schedule: str
    ssh_alias: str | None = None
    root: str = "/"
    journal_keep: int = 20

    @property
    def label(self) -> str:
        return f"backup host ({self.address})"

    def path(self, path: str) -> str:
        return rooted(self.root, path)


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
    monitoring: MonitoringSettings = field(
        default_factory=lambda: MonitoringSettings(None, None, 9100, 15.0))
    events: EventSettings = field(default_factory=EventSettings)
    # Where the declared live colour is kept when not in the stack file (`activeColorFile`).
    active_color_file: str | None = None
    # What may be rebooted or replaced while it serves (`allowDisruption`: live, database).
    allow_disruption: tuple[str, ...] = ()
    # Where dumps and the journal are copied off the database host (`backup`); None: nowhere.
    backup: BackupSettings | None = None
    # Where `bluegreen adopt` writes the adopted stack instead of the tracked file (the lab keeps
    # it in its own directory); when that file exists, it is the stack.
    adopted_stack_file: str | None = None
    # Where `bluegreen adopt` keeps the secret values it reads from the estate (0600 files).
    secrets_dir: str = ""

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
