"""The lab's second place for backups: a backup host on a loopback address.

The backup host (`bluegreen:backup` of the lab stack) is one more loopback "machine" with its own
sshd and its own root directory, outside the four containers: the operator's key logs in there
unrestricted (its `authorized_keys` is the host's own, seeded with the lab's client key), and the
estate's off-host configuration adds the database and HAProxy hosts' keys, each for one forced
command (`hosts.offsite.setup`). It survives `lab.loss.lose_node` (the stand-in for losing the Proxmox node).
"""

from __future__ import annotations

import logging
from pathlib import Path

from bluegreen.hosts.executor import trust_host
from bluegreen.hosts.hostkeys import repin
from bluegreen.lab.services import LabError, ManagedProcess, host_public_key, sshd_process, start_sshd
from bluegreen.model.errors import HostKeyError
from bluegreen.model.topology import BackupSettings, Topology

log = logging.getLogger("bluegreen.lab.offsite")

BACKUP_HOST_NAME = "jw-backup"


def backup_sshd(t: Topology, pids: Path) -> ManagedProcess | None:
    if t.backup is None:
        return None
    return sshd_process(BACKUP_HOST_NAME, Path(t.backup.path("/etc/ssh")), pids / "sshd-backup.pid")


def start_backup_host(t: Topology, *, lab_root: Path, pids: Path, logs: Path, client_key: Path,
                      known_hosts: Path) -> tuple[ManagedProcess, str] | None:
    """The backup host's sshd (reused when it runs), its key pinned in the lab's known_hosts;
    (process, listen address), or None when the stack names no backup host."""
    b = t.backup
    if b is None:
        return None
    root = Path(b.root)
    if not root.is_relative_to(lab_root) or root == lab_root:
        raise LabError(f"backup.root {root} must be a directory inside the lab ({lab_root})")
    home = root / "root"
    authorized = home / ".ssh" / "authorized_keys"
    authorized.parent.mkdir(parents=True, exist_ok=True)
    authorized.parent.chmod(0o700)
    client = client_key.read_text().strip()
    lines = authorized.read_text().splitlines() if authorized.exists() else []
    if client not in lines:
        authorized.write_text("".join(f"{line}\n" for line in [client, *lines]))
    authorized.chmod(0o600)
    Path(b.path(b.dir)).mkdir(parents=True, exist_ok=True)
    process = backup_sshd(t, pids)
    assert process is not None
    state_dir = Path(b.path("/etc/ssh"))
    start_sshd(name=BACKUP_HOST_NAME, address=b.address, port=b.port, state_dir=state_dir,
               authorized_keys=authorized, log_file=logs / "sshd-backup.log", pid_file=process.pid_file,
               home=home)
    pin_backup_key(b, known_hosts, host_public_key(state_dir))
    return process, f"{b.address}:{b.port}"


def pin_backup_key(b: BackupSettings, known_hosts: Path, public_key: str) -> None:
    try:
        trust_host(str(known_hosts), b.address, b.port, public_key)
    except HostKeyError:
        # The lab generated this key itself: a different pin means the host's root was recreated.
        log.warning("host key of the lab's backup host changed (its root was recreated); re-pinning it")
        key_type, key_b64 = public_key.split()[:2]
        repin(str(known_hosts), b.address, b.port, key_type, key_b64)
