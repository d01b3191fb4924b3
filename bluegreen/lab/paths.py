"""Where the lab keeps everything, and what `lab up` reports."""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bluegreen.model.errors import ConfigError
from bluegreen.model.topology import Topology

LAB_DIR = Path("/var/tmp/jw-lab")


PROJECT_DIR = Path(__file__).resolve().parents[2]


PM2 = "pm2"


LEGACY_MARKER = "legacy-estate"  # written by `up --legacy` (legacy.py)


@dataclass(frozen=True)
class LabPaths:
    root: Path

    @property
    def ssh(self) -> Path:
        return self.root / "ssh"

    @property
    def identity(self) -> Path:
        return self.ssh / "id_ed25519"

    @property
    def public_key(self) -> Path:
        return self.ssh / "id_ed25519.pub"

    @property
    def known_hosts(self) -> Path:
        return self.ssh / "known_hosts"

    @property
    def pve(self) -> Path:
        return self.root / "pve"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def db_password(self) -> Path:
        return self.secrets / "db_password"

    @property
    def server_actions_key(self) -> Path:
        return self.secrets / "next_server_actions_key"  # named by app.env in the lab stack

    @property
    def sample_repo(self) -> Path:
        return self.root / "sample-app.git"

    @property
    def registry(self) -> Path:
        """Processes started through other modules (fakepve): how to find and stop them again."""
        return self.pids / "registry.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lab.lock"

    @property
    def leases(self) -> Path:
        return self.root / "leases"

    @property
    def started_by_session(self) -> Path:
        return self.pids / "started-by-session"


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    pid: int | None
    running: bool
    pid_file: str
    listen: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LabInfo:
    lab_dir: str
    stack: str
    public_url: str
    preview_url: str
    proxmox_endpoint: str
    ssh_hosts: list[str]
    started: list[str]
    reused: list[str]
    applied: list[str] = field(default_factory=list)
    found: str = ""  # what `up` found in the lab's directory (lab.found)
    state: str = ""  # what the lab is now
    next_step: str = ""  # the command that moves on from there

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_loopback_only(t: Topology) -> None:
    """The lab must never reach a real server: every address it uses has to be in 127.0.0.0/8."""
    loopback = ipaddress.IPv4Network("127.0.0.0/8")
    outside = [c.label for c in t.containers if c.interface.ip not in loopback]
    endpoint_host = urlsplit(t.proxmox.endpoint).hostname or ""
    try:
        endpoint_ok = ipaddress.ip_address(endpoint_host) in loopback
    except ValueError:
        endpoint_ok = False
    if not endpoint_ok:
        outside.append(f"proxmox endpoint {t.proxmox.endpoint}")
    if t.backup is not None and not t.backup.address.startswith("127."):
        outside.append(f"backup.host {t.backup.address}")
    for key, address in (("monitoring.prometheus", t.monitoring.prometheus),
                         ("monitoring.blackboxExporter", t.monitoring.blackbox),
                         *((f"webhook {w.name}", urlsplit(w.url).hostname) for w in t.events.webhooks if w.url)):
        if address and not address.startswith("127."):
            outside.append(f"{key} {address}")
    if outside:
        raise ConfigError(f"stack {t.stack!r} is not a lab stack: {', '.join(outside)} "
                          f"not on 127.0.0.0/8 (the lab only runs on loopback addresses)")
