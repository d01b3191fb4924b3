"""Reading the stack's `containers` list: each container validated, ids, addresses and names unique,
one database, one load balancer, one app container per colour."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any

from bluegreen.model.ctsettings import KEYS as SETTINGS_KEYS
from bluegreen.model.ctsettings import read_settings
from bluegreen.model.reader import Reader, json_kind
from bluegreen.model.topology import (
    COLORS,
    REBUILDING,
    ROLES,
    Container,
)

_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


_UNSET_IP = ipaddress.IPv4Address(0)  # placeholder while an address is invalid (a problem is recorded)


_TAG = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def read_containers(r: Reader, raw: Any, gateway: ipaddress.IPv4Address | None,
                     resolve: Callable[[str | None], str | None]) -> tuple[Container, ...]:
    if raw is None:
        r.problem("containers", "is required (expected a list of containers)")
        return ()
    if not isinstance(raw, list):
        r.problem("containers", f"expected a list, got {json_kind(raw)}")
        return ()
    if not raw:
        r.problem("containers", "is empty (expected the database, two app and the load balancer containers)")
        return ()
    result: list[Container] = []
    seen: dict[str, dict[Any, str]] = {"id": {}, "ip": {}, "name": {}}
    for i, item in enumerate(raw):
        path = f"containers[{i}]"
        if not isinstance(item, Mapping):
            r.problem(path, f"expected a mapping, got {json_kind(item)}")
            continue
        container = _read_container(r, item, path, gateway, resolve)
        unique = {"id": container.vmid, "ip": container.ip if container.interface.ip != _UNSET_IP else None,
                  "name": container.name or None}
        for key, value in unique.items():
            if value is None:
                continue
            if value in seen[key]:
                r.problem(f"{path}.{key}", f"{value if key != 'name' else repr(value)} is used twice "
                                           f"(also by {seen[key][value]})")
            seen[key].setdefault(value, path)
        result.append(container)
    roles = [c.role for c in result]
    for role in ("database", "loadbalancer"):
        if roles.count(role) != 1:
            r.problem("containers", f"expected exactly one {role} container, found {roles.count(role)}")
    colors = [c.color for c in result if c.role == "app"]
    for color in COLORS:
        if colors.count(color) != 1:
            r.problem("containers",
                      f"expected exactly one app container of colour {color}, found {colors.count(color)}")
    return tuple(result)


_CONTAINER_KEYS = {"id", "name", "role", "color", "ip", "cores", "memory", "swap", "disk", "existing", "root",
                   "tags", *SETTINGS_KEYS}


def _read_container(r: Reader, m: Mapping[str, Any], path: str, gateway: ipaddress.IPv4Address | None,
                    resolve: Callable[[str | None], str | None]) -> Container:
    for extra in sorted(set(m) - _CONTAINER_KEYS):
        r.problem(f"{path}.{extra}", f"unknown key (expected one of {', '.join(sorted(_CONTAINER_KEYS))})")
    vmid = r.num(m, "id", path, minimum=100)
    if vmid > 999_999_999:
        r.problem(f"{path}.id", f"must be at most 999999999, got {vmid}")
    name = r.str_(m, "name", path, required=True)
    if name and not _HOSTNAME.match(name):
        r.problem(f"{path}.name", f"expected a lowercase hostname (a-z, 0-9, -), got {name!r}")
    role = r.str_(m, "role", path, required=True)
    if role and role not in ROLES:
        r.problem(f"{path}.role", f"expected one of {', '.join(ROLES)}, got {role!r}")
    color = r.opt_str(m, "color", path)
    if role == "app" and color is None:
        r.problem(f"{path}.color", f"is required for an app container (one of {', '.join(COLORS)})")
    elif color is not None and color not in COLORS:
        r.problem(f"{path}.color", f"expected one of {', '.join(COLORS)}, got {color!r}")
    elif color is not None and role != "app":
        r.problem(f"{path}.color", f"only app containers have a colour (this one is {role!r})")
    interface = _read_interface(r, m, path, gateway)
    tags_raw = r.str_list(m, "tags", path)
    for t in tags_raw:
        if not _TAG.match(t):
            r.problem(f"{path}.tags", f"tag {t!r}: expected lowercase letters, digits, '-', '_' or '.'")
    return Container(
        vmid=vmid, name=name, role=role, color=color, interface=interface,
        cores=r.num(m, "cores", path, 1, minimum=1),
        memory=r.num(m, "memory", path, 1024, minimum=16),
        swap=r.num(m, "swap", path, 512),
        disk=r.num(m, "disk", path, 8, minimum=1),
        # `existing: rebuilding`: between adopted and owned (`bluegreen rebuild standby`, ops/rebuild.py).
        existing=m.get("existing") == REBUILDING or r.bool_(m, "existing", path, False),
        rebuilding=m.get("existing") == REBUILDING,
        root=resolve(r.str_(m, "root", path, "/")) or "/",
        tags=tuple(sorted({t.lower() for t in tags_raw})),
        settings=read_settings(r, m, path),
    )


def _read_interface(r: Reader, m: Mapping[str, Any], path: str,
                    gateway: ipaddress.IPv4Address | None) -> ipaddress.IPv4Interface:
    """`ip` with its prefix, in the gateway's subnet; a placeholder (0.0.0.0) after a problem."""
    ip_text = r.str_(m, "ip", path, required=True)
    interface = ipaddress.IPv4Interface(f"{_UNSET_IP}/32")
    if not ip_text:
        return interface
    try:
        if "/" not in ip_text:
            raise ValueError("no prefix length")
        interface = ipaddress.IPv4Interface(ip_text)
    except ValueError:
        r.problem(f"{path}.ip", f"expected an IPv4 address with prefix, like 10.92.3.21/24, got {ip_text!r}")
        return interface
    if gateway is not None and gateway not in interface.network:
        r.problem(f"{path}.ip", f"{ip_text} is not in the same subnet as the gateway {gateway}")
    if interface.ip == interface.network.network_address or (
            interface.network.prefixlen < 31 and interface.ip == interface.network.broadcast_address):
        r.problem(f"{path}.ip", f"{ip_text} is the subnet's network or broadcast address")
    return interface
