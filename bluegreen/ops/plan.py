"""What `pulumi up` would do to each container: changes compared with Proxmox, disruptions refused."""

from __future__ import annotations

from typing import Any

from bluegreen.model.changes import Change, container_changes, disruption_problems
from bluegreen.model.topology import Topology


def plan_changes(t: Topology, client: Any, live: str) -> tuple[list[Change], list[str]]:
    """Changes of every container against the node (`client`: a `PveClient`), and the refusals."""
    changes: list[Change] = []
    for c in t.containers:
        state = client.statuses([c.vmid])[c.vmid]
        if state.status == "missing":
            changes.append(Change(c.vmid, c.label, "container", "missing", "created", "create"))
            continue
        changes += container_changes(t, c, client.container_config(c.vmid))
    return changes, disruption_problems(t, changes, live)
