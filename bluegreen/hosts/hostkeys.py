"""Host keys of containers a run has just created: trust on first use for them, and only them.

A new container presents a new SSH host key. Every connection of the project verifies host keys
strictly (paramiko's RejectPolicy against `ssh.knownHosts`): an unknown or changed key is refused.
The one exception is the container this same run created (a rebuild, or the first `pulumi up` of
a container the program creates): `trust_created_host` waits (bounded) for its sshd, pins the key
it presents in place of any old pin for that address, and returns its fingerprint, which the
caller prints and writes to the journal. Nothing here is reachable for an existing host: the
caller must say the container was created by this run, and adopted containers never are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bluegreen.hosts.executor import SshTarget, fetch_host_key, fingerprint, known_hosts_line, ssh_target
from bluegreen.model.errors import HostKeyError, RemoteError
from bluegreen.model.progress import NullProgress, Progress
from bluegreen.model.topology import Container, Topology

log = logging.getLogger("bluegreen.hostkeys")

SSH_POLL_S = 0.5


@dataclass(frozen=True)
class HostKey:
    host: str
    address: str
    key_type: str
    fingerprint: str
    replaced_pin: bool

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "address": self.address, "type": self.key_type,
                "fingerprint": self.fingerprint, "replacedPin": self.replaced_pin}


def _host_field(address: str, port: int) -> str:
    return known_hosts_line(address, port, "x", "x").split()[0]


def repin(known_hosts: str, address: str, port: int, key_type: str, key_b64: str) -> bool:
    """Make `key_type key_b64` the only key pinned for the host; True if another pin was removed.

    Only for a host this same run created (see `trust_created_host`): it overrides the refusal
    of a changed key, which is exactly what a new container presents.
    """
    path = Path(known_hosts).expanduser()
    host = _host_field(address, port)
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in lines if host not in (line.split()[:1] or [""])[0].split(",")]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{line}\n" for line in [*kept, known_hosts_line(address, port, key_type, key_b64)]))
    tmp.chmod(0o600)
    tmp.replace(path)
    return len(kept) != len(lines)


def wait_for_ssh(target: SshTarget, *, timeout_s: float, progress: Progress,
                 poll_s: float = SSH_POLL_S, sleep: Callable[[float], None] = time.sleep) -> tuple[str, str]:
    """The host key of `target` once its sshd answers; RemoteError after `timeout_s`."""
    started = time.monotonic()
    attempt = 0
    last = "no answer yet"
    while True:
        attempt += 1
        try:
            return fetch_host_key(target)
        except RemoteError as exc:
            last = exc.detail
        waited = time.monotonic() - started
        if waited >= timeout_s:
            raise RemoteError(f"{target.address}:{target.port}", "wait for SSH",
                              f"sshd did not answer within {timeout_s:g}s ({attempt} attempts; last: {last})")
        if attempt == 1 or attempt % 10 == 0:
            progress.note(f"waiting for SSH on {target.address}:{target.port} "
                          f"({waited:.0f}s of {timeout_s:g}s: {last})")
        sleep(poll_s)


def trust_created_host(t: Topology, host: Container, *, created_by_this_run: bool, timeout_s: float,
                       progress: Progress) -> HostKey:
    """Wait for the new container's sshd and pin the key it presents (trust on first use).

    Refuses unless `created_by_this_run`: an existing host whose key changed is an incident, not
    a rebuild, and stays refused by every connection (RejectPolicy) until a person runs `trust`.
    """
    if not created_by_this_run:
        raise HostKeyError(host.label, "trust", "refusing to trust a host key on first use for a "
                           "container this run did not create; check it and run `bluegreen trust`")
    return trust_created_target(ssh_target(t, host), host.label, timeout_s=timeout_s, progress=progress)


def trust_created_target(target: SshTarget, label: str, *, timeout_s: float,
                         progress: Progress | None = None) -> HostKey:
    """`trust_created_host` for a bare SSH target (the Pulumi bootstrap provider's view)."""
    progress = progress or NullProgress()
    key_type, key_b64 = wait_for_ssh(target, timeout_s=timeout_s, progress=progress)
    replaced = repin(target.known_hosts, target.address, target.port, key_type, key_b64)
    key = HostKey(host=label, address=f"{target.address}:{target.port}", key_type=key_type,
                  fingerprint=fingerprint(key_b64), replaced_pin=replaced)
    progress.note(f"new host key of {label} (created by this run): {key_type} {key.fingerprint}")
    log.info("pinned the new host key of %s: %s %s", label, key_type, key.fingerprint)
    return key
