"""The legacy lab's estate on a real fakepve, adopted, with the engine stand-in ready to run `pulumi up`.

The containers are the ones `python -m bluegreen.lab up --legacy` builds: the lab's containers,
changed by the legacy lab's own hand (`LegacyLab._hand_built_containers`), plus what hand-built
containers also have and Read returns (`UNKIND`): DNS inherited from the node, a second NIC,
IPv6, a terabyte mount point with options, a CPU limit, a NIC rate limit, a console mode, LXC env.
The estate's files adopt reads (a hand-written haproxy.cfg, the app's `.env`) are real files read
through the local executor, as in test_adopt_import.py.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bluegreen.hosts.executor import LocalExecutor
from bluegreen.hosts.pve import PveClient
from bluegreen.lab.legacy import LegacyLab
from bluegreen.lab.pve import InProcessPve, serve_fakepve
from bluegreen.model.resources import CONTAINER_TYPE, DYNAMIC_PREFIX
from bluegreen.model.stackfile import effective_stack_file, load_stack
from bluegreen.model.topology import Topology
from bluegreen.ops.adopt import AdoptResult, adopt
from components import hostconfig

from .bpg import ContainerProvider, DynamicProvider
from .conftest import PROJECT_DIR
from .engine import Engine
from .test_adopt_import import _estate_files

HOST = "127.0.3.5"
# Beyond what the legacy lab sets: what Read returns that adopt used not to write (issue 23).
UNKIND: dict[int, dict[str, Any]] = {
    131: {"mp0": "local-lvm:1024,mp=/var/lib/postgresql-archive,acl=1,quota=1,replicate=0,mountoptions=noatime",
          "cpulimit": 1.5},
    132: {"net1": "name=eth1,bridge=vmbr0,ip=192.168.50.22/24,hwaddr=BC:24:11:00:00:32",
          "env": "TZ=Europe/Berlin"},
    134: {"cmode": "shell", "tty": 3},
    136: {"delete": "nameserver,searchdomain"},  # the load balancer inherits the node's DNS
}
UNKIND_NET0: dict[int, str] = {132: "ip6=fd00:3::22/64,gw6=fd00:3::1,rate=50"}
SECRETS = {"proxmoxve:apiToken": "root@pam!deploy=mock-token-secret", "bluegreen:databasePassword": "db-pass",
           "bluegreen:nextServerActionsKey": "actions-key"}
HOST_TYPES = ("Bootstrap", "PostgresDatabase", "HaproxyConfig", "LiveColorRouting", "Pm2Ecosystem", "AppEnv")


@dataclass
class AdoptedEstate:
    project: Path
    topology: Topology
    pve: InProcessPve
    client: PveClient
    adopted: AdoptResult | None
    public_key_file: str

    def config(self) -> dict[str, Any]:
        """The stack config as the CLI hands it to the program, with the secrets."""
        data = yaml.safe_load(effective_stack_file(self.project, "lab").read_text())
        return {**data["config"], **SECRETS}

    def digests(self) -> dict[int, str]:
        """PVE's config digest per container: it changes with any write to the config."""
        return {c.vmid: str(self.client.container_config(c.vmid).get("digest")) for c in self.topology.containers}


def engine_for(client: PveClient) -> tuple[Engine, ContainerProvider, dict[str, DynamicProvider]]:
    containers = ContainerProvider(client)
    dynamic = {name: DynamicProvider(getattr(hostconfig, f"{name}DynamicProvider")()) for name in HOST_TYPES}
    providers: dict[str, Any] = {CONTAINER_TYPE: containers}
    providers.update({DYNAMIC_PREFIX + name: provider for name, provider in dynamic.items()})
    return Engine(providers), containers, dynamic


def _project(tmp: Path, public_key: str) -> Path:
    project = tmp / "project"
    (project / "stacks").mkdir(parents=True)
    shutil.copy(PROJECT_DIR / "Pulumi.yaml", project / "Pulumi.yaml")
    text = (PROJECT_DIR / "stacks/Pulumi.lab.yaml").read_text().replace("/var/tmp/jw-lab", str(tmp / "lab"))
    data = yaml.safe_load(text)
    data["config"]["bluegreen:ssh"]["publicKeys"] = [f"file:{public_key}"]  # not the running lab's own key
    # Stack config the Automation API edits (`pulumi config set`) has no activeColorFile overlay,
    # and the engine reads the stack file itself: no adoptedStackFile copy beside it.
    data["config"].pop("bluegreen:activeColorFile")
    data["config"].pop("bluegreen:adoptedStackFile")
    (project / "stacks/Pulumi.lab.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return project


def mark_existing(project: Path) -> None:
    """`existing: true` on every container, nothing else adopted (the stack as shipped, declared on)."""
    path = project / "stacks/Pulumi.lab.yaml"
    data = yaml.safe_load(path.read_text())
    for entry in data["config"]["bluegreen:containers"]:
        entry["existing"] = True
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@contextmanager
def legacy_estate(tmp: Path, public_key: str, *, run_adopt: bool = True) -> Iterator[AdoptedEstate]:
    project = _project(tmp, public_key)
    _estate_files(tmp / "lab")
    t = load_stack(project, "lab")
    (tmp / "pve").mkdir()
    with serve_fakepve(tmp / "pve", t, host=HOST, port=0) as pve:
        t = dataclasses.replace(t, proxmox=dataclasses.replace(
            t.proxmox, endpoint=pve.endpoint, token_file=str(tmp / "pve/token"), ca_file=str(pve.ca_file)))
        legacy = LegacyLab(project, "lab", lab_dir=tmp / "lab")
        legacy.topology = t
        legacy._hand_built_containers()  # the legacy lab's own hand, whatever it does
        client = pve.client()
        for vmid, change in UNKIND.items():
            client._lxc(vmid).config.put(**change)
        for vmid, extra in UNKIND_NET0.items():
            client._lxc(vmid).config.put(net0=f"{client.container_config(vmid)['net0']},{extra}")
        result = None
        if run_adopt:
            result = adopt(t, pve=client, connect=lambda c: LocalExecutor(host=c.label))
        else:
            mark_existing(project)
        # The program connects to the node through the stack's endpoint: point it at this one.
        path = effective_stack_file(project, "lab")  # adopt wrote the adopted copy
        data = yaml.safe_load(path.read_text())
        data["config"]["proxmoxve:endpoint"] = pve.endpoint
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        yield AdoptedEstate(project, load_stack(project, "lab"), pve, client, result, public_key)
