"""What `pulumi up` would do to each container: changes compared with Proxmox, disruptions refused.

The comparison is the program's own declaration (`model.ctinputs`) against what the provider reads
from PVE (`model.ctread`), with the program's own `ignore_changes` (`model.changes`): what this
reports is what an `up` would do, not a second opinion.
"""

from __future__ import annotations

from typing import Any

from bluegreen.model.changes import Change, container_changes, disruption_problems
from bluegreen.model.topology import Topology


def plan_changes(t: Topology, client: Any, live: str | None) -> tuple[list[Change], list[str]]:
    """Changes of every container against the node (`client`: a `PveClient`), and the refusals.
    `live`: the colour HAProxy serves (None: unknown, both colours count as serving)."""
    changes: list[Change] = []
    states = client.statuses([c.vmid for c in t.containers])
    for c in t.containers:
        state = states[c.vmid]
        if state.status == "missing":
            adopted = c.existing and not c.rebuilding
            changes.append(Change(c.vmid, c.label, "container", "missing", "created", "create",
                                  applied=not adopted,
                                  why="adopted: the import fails, there is nothing to import" if adopted else None))
            continue
        changes += container_changes(t, c, client.container_config(c.vmid), running=state.running, live=live)
    pending = [f"CT {c.vmid} ({c.name}) is between adopted and owned (`existing: rebuilding`): a rebuild did "
               f"not finish; `pulumi up` refuses to run until `bluegreen rebuild standby --stack {t.stack}` "
               "completes it" for c in t.containers if c.rebuilding]
    return changes, disruption_problems(t, changes, live) + pending
