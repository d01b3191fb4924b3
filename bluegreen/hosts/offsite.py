"""The second place, reached over SSH: the backup host, and the pushing hosts' side of it.

`setup` installs the backup host's `receive` script, authorizes each pushing host's key there for
one forced command, and pins the backup host's key on each pushing host (the key the operator's
own known_hosts pins: nothing is trusted on first use). `sync_dumps`, `take_scheduled_dump`,
`push_journal` and `pull_dump` run the pushing hosts' script (`render.offsite`); `list_copies`,
`verify_copy` and `journal_copies`/`read_journal_copy` ask the backup host over the operator's
own connection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.hosts.executor import Executor, SshExecutor, SshTarget
from bluegreen.model.dumps import short_error
from bluegreen.model.errors import BlueGreenError, HostKeyError, RemoteError
from bluegreen.model.offsite import (
    JournalCopy,
    OffsiteCopy,
    fingerprint_lines,
    parse_journal_listing,
    parse_offsite_listing,
    parse_sync_report,
)
from bluegreen.model.sensitive import Sensitive, as_secret_set
from bluegreen.model.topology import BackupSettings, Container, Topology
from bluegreen.render import offsite as render
from bluegreen.render.shell import sh

log = logging.getLogger("bluegreen.offsite")


class OffsiteError(BlueGreenError):
    """The backup host could not be reached, or a copy there is not what was sent."""


@dataclass
class OffsiteResult:
    """What one run of the pushing script did."""

    ok: bool
    copied: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "copied": self.copied, "present": self.present, "pruned": self.pruned,
                "failed": self.failed, "error": self.error}


def backup_target(t: Topology) -> SshTarget:
    b = render.require_backup(t)
    return SshTarget(address=b.address, port=b.port, user=b.user, alias=b.ssh_alias,
                     identity_file=t.ssh.identity_file, known_hosts=t.ssh.known_hosts,
                     connect_timeout=t.ssh.connect_timeout, ssh_config=t.ssh.config_file)


def backup_executor(t: Topology, secrets: Iterable[Sensitive] = ()) -> SshExecutor:
    """The operator's connection to the backup host (not yet connected)."""
    b = render.require_backup(t)
    return SshExecutor(host=b.label, secrets=as_secret_set(secrets), command_timeout=t.ssh.command_timeout,
                       target=backup_target(t))


# --------------------------------------------------------------------------- setup


def install_receiver(t: Topology, backup: Executor) -> list[str]:
    b = render.require_backup(t)
    path = render.receive_path(b)
    text = render.render_receive(t)
    backup.run(sh("install", "-d", "-m", "0700", b.path(b.dir), str(Path(path).parent)),
               step="prepare the backup directory")
    current = backup.get(path, step="read the receive script")
    if current is not None and current.decode(errors="replace") == text:
        return []
    backup.put(path, text, step="install the receive script", mode=0o700)
    return [f"installed {path}"]


def authorize(t: Topology, backup: Executor, pusher: Executor, host: Container) -> list[str]:
    """Let `host`'s key run the receive script for its role on the backup host, and pin the
    backup host's key on `host`."""
    b = render.require_backup(t)
    role = "database" if host.role == "database" else "journal"
    public = pusher.get(render.key_path(host) + ".pub", step="read the off-host copy key")
    if public is None:
        raise RemoteError(host.label, "read the off-host copy key",
                          f"{render.key_path(host)}.pub is missing: the host's bootstrap creates it "
                          "(apply the host configuration first)")
    changes: list[str] = []
    out = backup.run(render.authorize_command(t, role, public.decode(errors="replace").strip()),
                     step="authorize the off-host copy key")
    if "changed" in out.stdout.split():
        changes.append(f"authorized the {role} key of {host.label} on {b.label}")
    keys = _pinned_keys(t, b)
    text = render.known_hosts_text(b, keys)
    path = render.known_hosts_path(host)
    current = pusher.get(path, step="read the backup host's pin")
    if current is None or current.decode(errors="replace") != text:
        pusher.put(path, text, step="pin the backup host's key", mode=0o600)
        changes.append(f"pinned {b.label}'s host key on {host.label}")
    return changes


def _pinned_keys(t: Topology, b: BackupSettings) -> list[str]:
    known = Path(t.ssh.known_hosts).expanduser()
    try:
        keys = fingerprint_lines(known.read_text(), b.address, b.port)
    except OSError:
        keys = []
    if not keys:
        raise HostKeyError(b.label, "pin the backup host's key",
                           f"{known} pins no key for {b.address}:{b.port}; check its fingerprint and pin it "
                           "with `bluegreen trust backup`")
    return keys


def setup(t: Topology, backup: Executor, pushers: Sequence[tuple[Container, Executor]]) -> list[str]:
    """Everything the off-host copies need across hosts (idempotent: an unchanged estate changes nothing)."""
    changes = install_receiver(t, backup)
    for host, ex in pushers:
        changes += authorize(t, backup, ex, host)
    return changes


# --------------------------------------------------------------------------- the pushing hosts


def _result(stdout: str, ok: bool, error: str | None) -> OffsiteResult:
    report = parse_sync_report(stdout)
    return OffsiteResult(ok=ok and not report["failed"], copied=report["copied"], present=report["present"],
                         pruned=report["pruned"], failed=report["failed"], error=error)


def sync_dumps(t: Topology, db: Executor) -> OffsiteResult:
    """Copy every verified dump not yet there (checked by sha256 on arrival); prune there."""
    out = db.run(render.offsite_command(t.database_host, "sync"), step="copy dumps off-host", check=False)
    error = None if out.ok else short_error(out.stderr or out.stdout)
    return _result(out.stdout, out.ok, error)


def take_scheduled_dump(t: Topology, db: Executor, who: str) -> tuple[str | None, OffsiteResult]:
    """What the timer runs: a verified dump now, then the copy off-host. (file, copy result)."""
    out = db.run(render.offsite_command(t.database_host, "dump"), step="take a verified dump", check=False,
                 env={"BLUEGREEN_BY": who}, timeout=max(t.ssh.command_timeout, 3600.0))
    dumped = next((line.split()[1] for line in out.stdout.splitlines() if line.startswith("dumped ")), None)
    if dumped is None:
        raise RemoteError(t.database_host.label, "take a verified dump", short_error(out.stderr or out.stdout))
    error = None if out.ok else short_error(out.stderr or out.stdout)
    return dumped, _result(out.stdout, out.ok, error)


def pull_dump(t: Topology, db: Executor, name: str) -> str:
    """Fetch `name` (and its sidecar) from the backup host onto the database host; its sha256."""
    out = db.run(render.offsite_command(t.database_host, "pull", name), step="fetch the dump from the backup host",
                 check=False, timeout=max(t.ssh.command_timeout, 3600.0))
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("pulled ")), None)
    if not out.ok or line is None:
        raise OffsiteError(f"fetching {name} from the backup host onto {t.database_host.label} failed: "
                           f"{short_error(out.stderr or out.stdout)}")
    return line.split()[2]


def restore_tls(t: Topology, lb: Executor) -> str:
    """Put the newest copy of the certificate bundle back on a rebuilt HAProxy host (0600)."""
    out = lb.run(render.offsite_command(t.load_balancer, "tls-restore"), step="restore the certificate bundle",
                 check=False)
    if not out.ok:
        raise OffsiteError(f"restoring the certificate bundle from the backup host failed: "
                           f"{short_error(out.stderr or out.stdout)}")
    return out.stdout.strip()


def push_journal(t: Topology, lb: Executor) -> str:
    out = lb.run(render.offsite_command(t.load_balancer, "journal"), step="copy the journal off-host",
                 check=False)
    if not out.ok:
        raise OffsiteError(f"copying the journal off-host failed: {short_error(out.stderr or out.stdout)}")
    return out.stdout.strip()


# --------------------------------------------------------------------------- the backup host


def list_copies(t: Topology, backup: Executor) -> list[OffsiteCopy]:
    b = render.require_backup(t)
    out = backup.run(render.receive_command(t, "list"), step="list the off-host copies")
    return parse_offsite_listing(out.stdout, b.path(b.dir))


def verify_copy(t: Topology, backup: Executor, name: str) -> str:
    """Re-read a copy on the backup host against the checksum recorded when it arrived."""
    out = backup.run(render.receive_command(t, "verify", name), step="re-check the off-host copy", check=False)
    if not out.ok:
        detail = (out.stdout.strip() or short_error(out.stderr))
        raise OffsiteError(f"the copy of {name} on the backup host does not match its checksum: {detail}")
    return out.stdout.split()[2]


def journal_copies(t: Topology, backup: Executor) -> list[JournalCopy]:
    out = backup.run(render.receive_command(t, "journals"), step="list the journal's copies")
    return parse_journal_listing(out.stdout)


def tls_copies(t: Topology, backup: Executor) -> list[JournalCopy]:
    out = backup.run(render.receive_command(t, "tls-copies"), step="list the certificate bundle's copies")
    return parse_journal_listing(out.stdout)


def read_journal_copy(t: Topology, backup: Executor, copy: JournalCopy) -> str:
    import hashlib

    out = backup.run(render.receive_command(t, "journal-get", copy.file), step="read the journal's copy")
    if hashlib.sha256(out.stdout.encode()).hexdigest() != copy.sha256:
        raise OffsiteError(f"the journal copy {copy.file} on the backup host does not match its checksum")
    return out.stdout
