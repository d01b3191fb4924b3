"""Which container changes reboot or replace it, and which are refused (pure)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from bluegreen.model.changes import IN_PLACE, REBOOT, REPLACE, container_changes, disruption_problems
from bluegreen.model.stackfile import load_stack

REPO = Path(__file__).resolve().parents[2]
T = dataclasses.replace(load_stack(REPO, "prod"), active_color="blue")


def pve_config(vmid: int) -> dict[str, Any]:
    """What PVE holds for a container that matches the stack exactly."""
    c = T.container(vmid)
    px = T.proxmox
    return {"hostname": c.name, "cores": c.cores, "memory": c.memory, "swap": c.swap,
            "nameserver": " ".join(px.dns_servers), "searchdomain": px.dns_domain or "",
            "net0": f"name=eth0,bridge={px.bridge},gw={px.gateway},hwaddr=BC:24:11:00:00:01,"
                    f"ip={c.interface.with_prefixlen},type=veth",
            "rootfs": f"{px.datastore}:vm-{vmid}-disk-0,size={c.disk}G", "tags": ";".join(sorted(c.tags))}


def test_a_matching_container_has_no_changes() -> None:
    for c in T.containers:
        assert container_changes(T, c, pve_config(c.vmid)) == []


@pytest.mark.parametrize(("edit", "field", "effect"), [
    ({"memory": 1024}, "memory", REBOOT),
    ({"cores": 1}, "cores", REBOOT),
    ({"swap": 0}, "swap", REBOOT),
    ({"hostname": "old-name"}, "hostname", REBOOT),
    ({"nameserver": "1.1.1.1"}, "nameserver", REBOOT),
    ({"tags": "other"}, "tags", IN_PLACE),
    ({"rootfs": "other-store:vm-134-disk-0,size=16G"}, "rootfs.datastore", REPLACE),
    ({"rootfs": "local-lvm:vm-134-disk-0,size=8G"}, "rootfs.size", IN_PLACE),  # declared grows
    ({"rootfs": "local-lvm:vm-134-disk-0,size=64G"}, "rootfs.size", REPLACE),  # declared shrinks
])
def test_each_change_is_classified(edit: dict[str, Any], field: str, effect: str) -> None:
    c = T.container(134)
    config = {**pve_config(134), **edit}
    if "rootfs" in edit:
        config["rootfs"] = edit["rootfs"].replace("local-lvm", T.proxmox.datastore, 1) \
            if field == "rootfs.size" else edit["rootfs"]
    changes = container_changes(T, c, config)
    assert [(ch.field, ch.effect) for ch in changes] == [(field, effect)]


@pytest.mark.parametrize(("vmid", "allow", "refused"), [
    (132, (), True),               # the live colour
    (131, (), True),               # the database
    (134, (), False),              # the standby
    (136, (), False),              # the load balancer
    (132, ("live",), False),
    (131, ("live",), True),
    (131, ("database",), False),
])
def test_reboots_of_the_live_colour_and_the_database_are_refused(vmid: int, allow: tuple[str, ...],
                                                                 refused: bool) -> None:
    t = dataclasses.replace(T, allow_disruption=allow)
    changes = container_changes(t, t.container(vmid), {**pve_config(vmid), "memory": 1})
    problems = disruption_problems(t, changes, "blue")
    assert bool(problems) is refused
    if refused:
        assert "would reboot" in problems[0] and "allowDisruption" in problems[0]


def test_in_place_changes_are_never_refused() -> None:
    changes = container_changes(T, T.container(132), {**pve_config(132), "tags": "x"})
    assert changes and disruption_problems(T, changes, "blue") == []
