"""Replacing a lab container for real: what `pulumi up --replace` does to a Proxmox node.

The lab has no Pulumi engine, so `bluegreen rebuild standby` on a lab stack replaces the
container with the calls the provider makes, against the fake PVE (stop, destroy, create with the
parameters `container_create_params` builds, which start it), and does to the lab's "container"
what that does to a real one: its processes stop (PM2 and its apps, sshd), its root file system
is gone, and the new one boots with nothing but an sshd with a *new* host key that accepts the
estate's public key (PVE's ssh-public-keys). Everything after that (waiting for SSH, trusting the
new key, configuring, deploying) is the same code for the lab and for Pulumi
(`bluegreen.ops.rebuild`). The lab registers `LabBackend.for_stack` as the `lab` entry of the
`bluegreen.container_backends` entry points (pyproject.toml): the product never imports the lab.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from bluegreen.lab.lab import Lab, stop_pm2
from bluegreen.lab.pve import lab_client
from bluegreen.lab.pve_server import container_create_params
from bluegreen.lab.services import LabError, start_sshd
from bluegreen.model.secrets import Secrets, ensure_secret_files, resolve_secrets
from bluegreen.model.topology import Container, Topology

log = logging.getLogger("bluegreen.lab.rebuild")


def lab_dir_of(t: Topology) -> Path:
    """The lab's directory: its client key lives at `<lab>/ssh/id_ed25519`."""
    if not t.ssh.identity_file:
        raise LabError(f"stack {t.stack}: ssh.identityFile is not set; cannot tell where its lab lives")
    return Path(t.ssh.identity_file).parent.parent


@dataclass
class LabBackend:
    lab: Lab
    name: str = "lab fakepve"
    configures_hosts: bool = False

    @classmethod
    def for_stack(cls, t: Topology) -> LabBackend:
        return cls(Lab(Path(t.project_dir), t.stack, lab_dir=lab_dir_of(t)))

    def secrets(self) -> Secrets:
        t = self.lab.topology
        ensure_secret_files(t)
        return Secrets(self.lab.db_password(), resolve_secrets(t, environ={}))

    def replace(self, host: Container) -> None:
        t, lab = self.lab.topology, self.lab
        root = Path(host.root)
        if not root.is_relative_to(lab.paths.root) or root == lab.paths.root:
            raise LabError(f"{host.label}: root {root} is not a container root inside {lab.paths.root}")
        self._stop_processes(host)
        client = lab_client(lab.paths.root, t)
        if client.destroy_container(host.vmid):
            log.info("CT %d destroyed on the lab node", host.vmid)
        if root.exists():
            shutil.rmtree(root)
        client.create_container(container_create_params(t, host))
        log.info("CT %d created and started on the lab node", host.vmid)
        self.boot(host)

    def create(self, host: Container) -> bool:
        """Create `host`'s container if the node does not have it (a fresh estate); True if created."""
        client = lab_client(self.lab.paths.root, self.lab.topology)
        if client.statuses([host.vmid])[host.vmid].status != "missing":
            return False
        client.create_container(container_create_params(self.lab.topology, host))
        self.boot(host)
        return True

    def boot(self, host: Container) -> None:
        """The new container's first boot: an sshd with a fresh host key, the estate's key allowed.
        A database container also gets its PostgreSQL cluster, which the package's installation
        creates and starts on a real one (the lab's hosts share this machine's binaries)."""
        t, p = self.lab.topology, self.lab.paths
        process = self.lab.sshd(host)
        start_sshd(name=host.name, address=host.ip, port=t.ssh.port, state_dir=Path(host.path("/etc/ssh")),
                   authorized_keys=p.public_key, log_file=p.logs / f"sshd-{host.vmid}.log",
                   pid_file=process.pid_file, home=Path(host.path("/root")))
        if host.role == "database":
            self.lab.start_database()

    def _stop_processes(self, host: Container) -> None:
        root = Path(host.root)
        for home, daemon in self.lab.pm2_daemons():
            if not home.is_relative_to(root) or daemon.pid() is None:
                continue
            stop_pm2(home, daemon)
        if host.role == "database":
            self.lab.postgres().stop()
        if host.role == "loadbalancer":
            self.lab.haproxy().stop()
        self.lab.sshd(host).stop()
