"""What `pulumi up` would do to each container, from the same model the program declares.

`container_changes` compares the program's declaration (`model.ctinputs.declared_inputs`, what
the Pulumi program registers) with what the provider reads from PVE (`model.ctread.read_inputs`,
what the state holds after an import or a refresh), field by field, and says for each difference
what the provider would do and whether the program lets it happen:

- the effect, read from bpg/terraform-provider-proxmox v0.111.1 (`proxmoxtf/resource/container/
  container.go`): replacement for the schema's ForceNew fields (template, user account, node,
  pool, unprivileged, mount points, disk datastore; lines 239-1156) and a shrinking disk
  (CustomizeDiff, 1171-1224); a **reboot** of a running container for console, disk mount
  options, env, DNS, hostname, entrypoint, memory, devices, idmaps and network (`containerUpdate`,
  the `rebootRequired = true` lines 3598-4079); in place for the rest;
- whether it is applied: not on an adopted container outside `MANAGED_ON_ADOPTED` (left as PVE
  has it), not for a reboot or replacement of a serving container (the database, the load
  balancer, the colour HAProxy routes to) unless `bluegreen:allowDisruption` allows it. These
  are exactly the program's `ignore_changes` (`model.ctinputs.lifecycle`).

`disruption_problems` lists the declared reboots and replacements held back on a serving
container: `bluegreen plan --changes` exits 1 on them, since `pulumi up` will not apply them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bluegreen.model.ctinputs import ADOPTED, Lifecycle, declared_inputs, held_back, lifecycle, serving_scope
from bluegreen.model.ctread import read_inputs
from bluegreen.model.topology import Container, Topology

IN_PLACE = "in place"
REBOOT = "reboot"
REPLACE = "replace"
START_STOP = "start/stop"

# Longest prefix wins. Dotted camelCase paths of the engine's inputs.
_EFFECTS: dict[str, str] = {
    "console": REBOOT, "environmentVariables": REBOOT, "memory": REBOOT, "devicePassthroughs": REBOOT,
    "idmaps": REBOOT, "networkInterfaces": REBOOT, "initialization": REBOOT,
    "initialization.userAccount": REPLACE, "disk": IN_PLACE, "disk.mountOptions": REBOOT,
    "disk.datastoreId": REPLACE, "mountPoints": REPLACE, "operatingSystem": REPLACE, "unprivileged": REPLACE,
    "nodeName": REPLACE, "poolId": REPLACE, "template": REPLACE, "clone": REPLACE, "vmId": REPLACE,
    "started": START_STOP,
}
# Never read back (PVE keeps no template or initial keys): not comparable, not a change.
_UNREADABLE = ("vmId", "initialization.userAccount", "operatingSystem.templateFileId")
# Read back but computed by the provider when not declared (Optional + Computed in the schema):
# leaving them out changes nothing.
_COMPUTED_LEAVES = ("macAddress", "pathInDatastore", "hostManaged", "enabled", "entrypoint")
# Schema defaults that are not "empty" (container.go, the dv* constants, lines 43-104): a leaf the
# program leaves out takes this value, so PVE holding it is no difference.
_DEFAULTS: dict[str, Any] = {
    "cpu.architecture": "amd64", "cpu.cores": 1, "console.enabled": True, "console.type": "tty",
    "console.ttyCount": 2, "mountPoints.replicate": True, "networkInterfaces.bridge": "vmbr0",
    "startup.order": -1, "startup.upDelay": -1, "startup.downDelay": -1, "devicePassthroughs.mode": "0660",
}
# Blocks Read leaves out when every value in them is the default (container.go 2717-2904).
_DEFAULT_BLOCKS: dict[str, dict[str, Any]] = {
    "cpu": {"architecture": "amd64", "cores": 1, "limit": 0, "units": 0},
    "console": {"enabled": True, "type": "tty", "ttyCount": 2},
    "features": {"nesting": False, "keyctl": False, "fuse": False, "mounts": [], "mknod": False},
}


@dataclass(frozen=True)
class Change:
    vmid: int
    host: str
    field: str
    current: str
    declared: str
    effect: str
    applied: bool = True
    why: str | None = None  # why it is not applied

    def to_json(self) -> dict[str, Any]:
        return {"vmid": self.vmid, "host": self.host, "field": self.field, "current": self.current,
                "declared": self.declared, "effect": self.effect, "applied": self.applied, "why": self.why}

    def __str__(self) -> str:
        held = "" if self.applied else f"; not applied: {self.why}"
        return f"{self.host}: {self.field} {self.current} -> {self.declared} ({self.effect}{held})"


def _pattern(path: str) -> str:
    """`networkInterfaces[1].mtu` -> `networkInterfaces.mtu`."""
    return re.sub(r"\[\d+\]", "", path)


def effect_of(path: str, current: Any = None, declared: Any = None) -> str:
    path = _pattern(path)
    if path == "disk.size":
        try:
            return IN_PLACE if float(declared) >= float(current) else REPLACE
        except (TypeError, ValueError):
            return REPLACE
    best = ""
    for prefix in _EFFECTS:
        if (path == prefix or path.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return _EFFECTS.get(best, IN_PLACE)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _empty(value: Any) -> bool:
    return value in (None, "", 0, False, [], {}) and not (isinstance(value, bool) and value is True)


def _leaves(path: str, declared: Any, current: Any) -> list[tuple[str, Any, Any]]:
    """(path, current, declared) for every declared leaf that differs, plus elements PVE has beyond
    what the program declares, plus whole blocks the program leaves out that PVE has."""
    declared, current = _plain(declared), _plain(current)
    if any(path == u or path.startswith(u + ".") for u in _UNREADABLE):
        return []
    if isinstance(declared, Mapping):
        if path and current is None:
            return [(path, None, _summary(declared))]  # a block PVE does not have at all
        cur = current if isinstance(current, Mapping) else {}
        found: list[tuple[str, Any, Any]] = []
        for key, value in declared.items():
            found += _leaves(f"{path}.{key}" if path else key, value, cur.get(key))
        if path:  # inside a declared block, a leaf left out takes its default: PVE's other value differs
            for key in sorted(set(cur) - set(declared) - set(_COMPUTED_LEAVES)):
                leaf = f"{path}.{key}"
                if not _empty(cur[key]) and cur[key] != _DEFAULTS.get(_pattern(leaf)):
                    found.append((leaf, cur[key], None))
        return found
    if isinstance(declared, list) and declared and isinstance(declared[0], Mapping):
        cur_list = current if isinstance(current, list) else []
        found = []
        for i, value in enumerate(declared):
            found += _leaves(f"{path}[{i}]", value, cur_list[i] if i < len(cur_list) else None)
        for i in range(len(declared), len(cur_list)):
            found.append((f"{path}[{i}]", _summary(cur_list[i]), None))  # the update deletes it
        return found
    if isinstance(declared, list) or isinstance(current, list):
        same = sorted(map(str, declared or [])) == sorted(map(str, current or []))
        return [] if same else [(path, current, declared)]
    if declared is None:
        return []
    if str(declared) == str(current) or (_empty(declared) and _empty(current)):
        return []
    return [(path, current, declared)]


def _summary(value: Any) -> Any:
    if isinstance(value, list):
        return [_summary(v) for v in value]
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if k not in _COMPUTED_LEAVES and not _empty(v)}
    return value


def _undeclared_blocks(declared: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """Blocks PVE has that the program does not declare at all (an update would remove them)."""
    return [(key, _summary(current[key]), None)
            for key in ("console", "devicePassthroughs", "environmentVariables", "mountPoints")
            if key not in declared and not _empty(current.get(key)) and current.get(key) != _DEFAULT_BLOCKS.get(key)]


def _text(value: Any) -> str:
    if value is None:
        return "(none)"
    return str(value)


def container_changes(t: Topology, c: Container, config: Mapping[str, Any], *, running: bool = True,
                      live: str | None, rebuild: tuple[int, str] | None = None) -> list[Change]:
    """Every difference between the declared container and PVE's config, classified. Pure."""
    declared = declared_inputs(t, c, public_keys=())
    current = read_inputs(config, running=running, node=t.proxmox.node)
    for block, defaults in _DEFAULT_BLOCKS.items():
        current.setdefault(block, dict(defaults))
    life = lifecycle(t, c, live=live, rebuild=rebuild, switch_run=rebuild is None and c.rebuilding)
    def without_dns(inputs: Mapping[str, Any]) -> dict[str, Any]:
        return {**inputs, "initialization": {k: v for k, v in inputs["initialization"].items() if k != "dns"}}

    found = (_leaves("", without_dns(declared), without_dns(current)) + _dns(declared, current)
             + _undeclared_blocks(declared, current))
    changes = []
    for path, cur, dec in found:
        effect = effect_of(path, cur, dec)
        why = _why_not_applied(t, c, path, effect, life, live)
        changes.append(Change(c.vmid, c.label, path, _text(cur), _text(dec), effect, why is None, why))
    return changes


def _dns(declared: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    dec = (declared.get("initialization") or {}).get("dns")
    cur = (current.get("initialization") or {}).get("dns")
    if dec is None and cur is None:
        return []
    if dec is None:
        return [("initialization.dns", cur, "inherited from the node")]
    if cur is None:
        return [("initialization.dns", "inherited from the node", dec)]
    return _leaves("initialization.dns", dec, cur)


def _why_not_applied(t: Topology, c: Container, path: str, effect: str, life: Lifecycle,
                     live: str | None) -> str | None:
    top = path.split(".", 1)[0].split("[", 1)[0]
    if top not in life.ignore_changes:
        return None
    if life.state == ADOPTED:
        return "adopted: the program leaves it as PVE has it (rebuild the container to apply it)"
    if effect == IN_PLACE:
        return None
    scope = serving_scope(c, live)
    who = {"database": "the database", "loadbalancer": "the load balancer"}.get(
        scope or "", f"the live colour ({live})" if live else "an app colour (the live one is unknown)")
    return f"held back: {who} serves"


def disruption_problems(t: Topology, changes: list[Change], live: str | None) -> list[str]:
    """Why each declared reboot or replacement of a serving container is refused."""
    problems = []
    for change in changes:
        if change.applied or change.effect == IN_PLACE or not (change.why or "").startswith("held back"):
            continue
        c = t.container(change.vmid)
        if not held_back(t, c, live):
            continue
        scope = serving_scope(c, live) or "live"
        problems.append(f"{change.host}: {change.field} {change.current} -> {change.declared}: refused, it would "
                        f"{change.effect} {_who(scope, live)} while it serves; switch first, or add {scope!r} to "
                        "bluegreen:allowDisruption to accept the interruption")
    return problems


def _who(scope: str, live: str | None) -> str:
    if scope == "database":
        return "the database (every colour's data)"
    if scope == "loadbalancer":
        return "the load balancer (every visitor)"
    return f"the live colour ({live})" if live else "an app colour (the live one is unknown)"
