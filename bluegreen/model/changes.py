"""Which container changes reboot or replace a container, and which of them are refused.

What the provider (bpg's container resource, bridged by pulumi-proxmoxve) does on a change,
read from its source and issue trackers (docs/OPERATIONS.md has the table for people):

- in place, no reboot: tags, start on boot, startup order, protection, a disk that grows;
- in place **with a reboot** of a running container: cores, memory, swap, hostname, DNS
  servers and domain, the network interface and its address/gateway;
- **replacement** (a new container, new host key, blank disk): the template, the disk's
  datastore, a disk that shrinks, and the SSH public keys, for containers the program created
  (adopted ones ignore template and keys).

`container_changes` compares the declared container with what PVE holds (`GET .../config`) and
classifies every difference. `disruption_problems` refuses a reboot or a replacement of the live
colour or of the database unless the stack lists it in `bluegreen:allowDisruption` ("live",
"database"). `frozen_fields` is the program's side of the same rule: for those containers, the
reboot-causing fields are in `ignore_changes`, so `pulumi up` cannot reboot them by surprise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bluegreen.model.topology import Container, Topology

IN_PLACE = "in place"
REBOOT = "reboot"
REPLACE = "replace"

# Camel-case property paths of ContainerLegacy whose in-place change reboots a running container.
REBOOT_PATHS = ("cpu", "memory", "initialization.hostname", "initialization.dns",
                "initialization.ipConfigs", "networkInterfaces")
# ... and whose change replaces a container the program created (new keys, a new template).
REPLACE_PATHS = ("initialization.userAccount", "operatingSystem")
DISRUPTION_SCOPES = ("live", "database")


@dataclass(frozen=True)
class Change:
    vmid: int
    host: str
    field: str
    current: str
    declared: str
    effect: str

    def to_json(self) -> dict[str, Any]:
        return {"vmid": self.vmid, "host": self.host, "field": self.field, "current": self.current,
                "declared": self.declared, "effect": self.effect}

    def __str__(self) -> str:
        return f"{self.host}: {self.field} {self.current} -> {self.declared} ({self.effect})"


def _net0(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(",") if "=" in part)


def _size_gb(text: str) -> float | None:
    size = _net0(text).get("size", "")
    units = {"T": 1024.0, "G": 1.0, "M": 1 / 1024}
    if size and size[-1] in units:
        try:
            return float(size[:-1]) * units[size[-1]]
        except ValueError:
            return None
    return None


def container_changes(t: Topology, c: Container, pve: Mapping[str, Any]) -> list[Change]:
    """Every difference between the declared container and PVE's config, classified. Pure."""
    px = t.proxmox
    changes: list[Change] = []

    def diff(field: str, current: Any, declared: Any, effect: str) -> None:
        if str(current) != str(declared):
            changes.append(Change(c.vmid, c.label, field, str(current), str(declared), effect))

    diff("hostname", pve.get("hostname", ""), c.name, REBOOT)
    diff("cores", pve.get("cores", ""), c.cores, REBOOT)
    diff("memory", pve.get("memory", ""), c.memory, REBOOT)
    diff("swap", pve.get("swap", ""), c.swap, REBOOT)
    diff("nameserver", pve.get("nameserver", ""), " ".join(px.dns_servers), REBOOT)
    diff("searchdomain", pve.get("searchdomain", ""), px.dns_domain or "", REBOOT)
    net = _net0(str(pve.get("net0", "")))
    diff("net0.ip", net.get("ip", ""), c.interface.with_prefixlen, REBOOT)
    diff("net0.gw", net.get("gw", ""), px.gateway, REBOOT)
    diff("net0.bridge", net.get("bridge", ""), px.bridge, REBOOT)
    rootfs = str(pve.get("rootfs", ""))
    diff("rootfs.datastore", rootfs.split(":", 1)[0], px.datastore, REPLACE)
    size = _size_gb(rootfs)
    if size is not None and size != c.disk:
        changes.append(Change(c.vmid, c.label, "rootfs.size", f"{size:g}G", f"{c.disk}G",
                              IN_PLACE if c.disk > size else REPLACE))
    tags = sorted(filter(None, str(pve.get("tags", "")).replace(",", ";").split(";")))
    diff("tags", ";".join(tags), ";".join(sorted(t.lower() for t in c.tags)), IN_PLACE)
    return changes


def scope_of(t: Topology, c: Container, live: str) -> str | None:
    """'database', 'live' or None (the standby and the load balancer)."""
    if c.role == "database":
        return "database"
    if c.role == "app" and c.color == live:
        return "live"
    return None


def disruption_problems(t: Topology, changes: list[Change], live: str) -> list[str]:
    """Why each reboot or replacement of the live colour or the database is refused."""
    problems = []
    for change in changes:
        if change.effect == IN_PLACE:
            continue
        c = t.container(change.vmid)
        scope = scope_of(t, c, live)
        if scope is None or scope in t.allow_disruption:
            continue
        who = "the database (every colour's data)" if scope == "database" else f"the live colour ({live})"
        problems.append(f"{change}: refused, it would {change.effect} {who} while it serves; switch first, "
                        f"or add {scope!r} to bluegreen:allowDisruption to accept the interruption")
    return problems


def frozen_fields(t: Topology, c: Container) -> tuple[str, ...]:
    """Reboot- and replace-causing properties the program must not change on `c` (the declared
    live colour and the database, unless the stack allows it)."""
    scope = scope_of(t, c, t.active_color)
    return (*REBOOT_PATHS, *REPLACE_PATHS) if scope is not None and scope not in t.allow_disruption else ()
