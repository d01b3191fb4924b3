"""What `pulumi up` would do to each container, from the program's own declaration (pure).

The effects are bpg/terraform-provider-proxmox v0.111.1's (container.go: ForceNew fields replace,
`containerUpdate` reboots for console, env, DNS, hostname, memory, devices, mount options and the
network); whether a change is applied is the program's own `ignore_changes`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from bluegreen.model.changes import IN_PLACE, REBOOT, REPLACE, START_STOP, container_changes, disruption_problems
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import Topology

REPO = Path(__file__).resolve().parents[2]
ADOPTED = dataclasses.replace(load_stack(REPO, "prod"), active_color="blue")
OWNED = dataclasses.replace(ADOPTED, containers=tuple(dataclasses.replace(c, existing=False)
                                                      for c in ADOPTED.containers))
ORDER = {"database": "order=1,up=15", "app": "order=2,up=5", "loadbalancer": "order=3,up=0"}


def pve_config(t: Topology, vmid: int) -> dict[str, Any]:
    """What PVE holds for a container built exactly as the stack declares it."""
    c = t.container(vmid)
    px = t.proxmox
    return {"hostname": c.name, "cores": c.cores, "memory": c.memory, "swap": c.swap,
            "nameserver": " ".join(px.dns_servers), "searchdomain": px.dns_domain or "",
            "net0": f"name=eth0,bridge={px.bridge},firewall=1,gw={px.gateway},hwaddr=BC:24:11:00:00:01,"
                    f"ip={c.interface.with_prefixlen},type=veth",
            "rootfs": f"{px.datastore}:vm-{vmid}-disk-0,size={c.disk}G", "tags": ";".join(sorted(c.tags)),
            "onboot": 1, "startup": ORDER[c.role], "features": "nesting=1", "unprivileged": 1,
            "ostype": "debian", **({"protection": 1} if c.role == "database" else {})}


def test_a_container_built_as_declared_has_no_changes() -> None:
    for t in (OWNED, ADOPTED):
        for c in t.containers:
            assert container_changes(t, c, pve_config(t, c.vmid), live="blue") == [], c.vmid


@pytest.mark.parametrize(("edit", "field", "effect"), [
    ({"memory": 1024}, "memory.dedicated", REBOOT),
    ({"swap": 0}, "memory.swap", REBOOT),
    ({"cores": 1}, "cpu.cores", IN_PLACE),  # containerUpdate sets no reboot for cpu
    ({"hostname": "old-name"}, "initialization.hostname", REBOOT),
    ({"nameserver": "1.1.1.1"}, "initialization.dns.servers", REBOOT),
    ({"nameserver": None, "searchdomain": None}, "initialization.dns", REBOOT),  # inherited: a DNS block is added
    ({"tags": "other"}, "tags", IN_PLACE),
    ({"onboot": 0}, "startOnBoot", IN_PLACE),
    ({"startup": None}, "startup", IN_PLACE),  # PVE has none: the update sets one
    ({"rootfs": "other-store:vm-134-disk-0,size=16G"}, "disk.datastoreId", REPLACE),
    ({"rootfs": "local-lvm:vm-134-disk-0,size=8G"}, "disk.size", IN_PLACE),  # declared grows
    ({"rootfs": "local-lvm:vm-134-disk-0,size=1T"}, "disk.size", REPLACE),  # declared shrinks
    ({"rootfs": "local-lvm:vm-134-disk-0,size=16G,mountoptions=noatime"}, "disk.mountOptions", REBOOT),
    ({"net1": "name=eth1,bridge=vmbr1"}, "networkInterfaces[1]", REBOOT),  # deleted by the update
    ({"net0": "name=eth0,bridge=vmbr0,firewall=1,gw=10.92.0.1,ip=10.92.3.24/16,rate=5"},
     "networkInterfaces[0].rateLimit", REBOOT),
    ({"mp0": "local-lvm:vm-134-disk-1,mp=/srv,size=1T"}, "mountPoints", REPLACE),
    ({"cmode": "shell"}, "console", REBOOT),
    ({"env": "TZ=UTC"}, "environmentVariables", REBOOT),
    ({"dev0": "/dev/net/tun"}, "devicePassthroughs", REBOOT),
    ({"unprivileged": 0}, "unprivileged", REPLACE),
])
def test_each_change_is_classified(edit: dict[str, Any], field: str, effect: str) -> None:
    c = OWNED.container(134)  # the standby: nothing held back
    config = {k: v for k, v in {**pve_config(OWNED, 134), **edit}.items() if v is not None}
    changes = container_changes(OWNED, c, config, live="blue")
    assert [(ch.field, ch.effect, ch.applied) for ch in changes] == [(field, effect, True)]


def test_a_stopped_container_would_be_started() -> None:
    changes = container_changes(OWNED, OWNED.container(134), pve_config(OWNED, 134), running=False, live="blue")
    assert [(ch.field, ch.effect) for ch in changes] == [("started", START_STOP)]


def test_an_adopted_container_applies_only_what_the_program_manages() -> None:
    config = {**pve_config(ADOPTED, 132), "memory": 1, "nameserver": "9.9.9.9", "onboot": 0, "startup": "order=7",
              "mp0": "local-lvm:vm-132-disk-1,mp=/srv,size=1T"}
    changes = {ch.field: ch for ch in container_changes(ADOPTED, ADOPTED.container(132), config, live="blue")}
    assert set(changes) == {"memory.dedicated", "initialization.dns.servers", "startOnBoot", "startup.order",
                            "startup.upDelay", "mountPoints"}
    for field in ("memory.dedicated", "initialization.dns.servers", "mountPoints"):
        assert not changes[field].applied and "adopted" in str(changes[field].why)
    for field in ("startOnBoot", "startup.order", "startup.upDelay"):
        assert changes[field].applied and changes[field].effect == IN_PLACE
    assert disruption_problems(ADOPTED, list(changes.values()), "blue") == []


@pytest.mark.parametrize(("vmid", "allow", "live", "refused"), [
    (132, (), "blue", True),                  # the live colour
    (134, (), "blue", False),                 # the standby
    (134, (), "green", True),                 # green serves (an emergency flip): protected, whatever is declared
    (132, (), "green", False),
    (132, (), None, True),                    # the live colour unknown: both colours protected
    (134, (), None, True),
    (131, (), "blue", True),                  # the database
    (136, (), "blue", True),                  # the load balancer
    (132, ("live",), "blue", False),
    (131, ("live",), "blue", True),
    (131, ("database",), "blue", False),
    (136, ("loadbalancer",), "blue", False),
])
def test_reboots_of_serving_containers_are_refused(vmid: int, allow: tuple[str, ...], live: str | None,
                                                   refused: bool) -> None:
    t = dataclasses.replace(OWNED, allow_disruption=allow)
    changes = container_changes(t, t.container(vmid), {**pve_config(t, vmid), "memory": 1}, live=live)
    assert [ch.applied for ch in changes] == [not refused]
    problems = disruption_problems(t, changes, live)
    assert bool(problems) is refused
    if refused:
        assert "would reboot" in problems[0] and "allowDisruption" in problems[0]


def test_in_place_changes_are_never_refused() -> None:
    changes = container_changes(OWNED, OWNED.container(132), {**pve_config(OWNED, 132), "tags": "x"}, live="blue")
    assert changes and all(ch.applied for ch in changes) and disruption_problems(OWNED, changes, "blue") == []
