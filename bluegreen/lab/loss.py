"""The lab's stand-in for losing the Proxmox node: `python -m bluegreen.lab lose-node`.

What losing the node does to the four containers, done to the lab's: their processes stop (by
PID), the (fake) Proxmox node no longer has them, their root directories (their disks) are gone.
What a lost node does not take stays: the backup host (another machine), the repository, the lab's
keys, secrets and declared colour (the operator's side), the node's API itself (the new, empty
node). `bluegreen rebuild estate` then brings the estate back from code and the off-host copies.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from bluegreen.lab.lab import Lab, stop_pm2
from bluegreen.lab.pve import lab_client
from bluegreen.lab.services import LabError

log = logging.getLogger("bluegreen.lab.loss")


def lose_node(lab: Lab) -> list[str]:
    """Destroy the four containers' processes, Proxmox entries and data; what was done, in order."""
    t, p = lab.topology, lab.paths
    for c in t.containers:
        root = Path(c.root)
        if not root.is_relative_to(p.root) or root == p.root:
            raise LabError(f"{c.label}: root {root} is not a container root inside {p.root}")
    done: list[str] = []
    with lab.exclusive():
        for home, daemon in lab.pm2_daemons():
            pid = daemon.pid()
            if pid is not None:
                stop_pm2(home, daemon)
                done.append(f"stopped {daemon.name} (pid {pid})")
        for process in (lab.haproxy(), lab.postgres(), *(lab.sshd(c) for c in t.containers)):
            pid = process.pid()
            if process.stop():
                done.append(f"stopped {process.name} (pid {pid})")
        client = lab_client(p.root, t)
        for c in t.containers:
            if client.destroy_container(c.vmid):
                done.append(f"CT {c.vmid} gone from the node")
        for c in t.containers:
            if Path(c.root).exists():
                shutil.rmtree(c.root)
                done.append(f"deleted {c.root}")
    log.info("node lost: %s", "; ".join(done))
    return done
