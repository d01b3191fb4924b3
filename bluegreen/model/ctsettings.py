"""Per-container Proxmox settings: what the Pulumi program used to hard-code, now stack values.

Each container in `bluegreen:containers` may carry these keys; a key left out keeps today's
default for a new container (on boot, started, firewall on eth0, nesting, start-up order by role,
protection on the database). `bluegreen adopt` writes them from what the Proxmox API reports for
a running container, so the program declares exactly what is there and an import shows no diff.

    - {id: 132, ..., onBoot: false, startup: none, firewall: false, description: "notes",
       mac: BC:24:11:00:00:01, features: {nesting: true, keyctl: false}, datastore: local-lvm,
       mountPoints: [{key: mp0, volume: local-lvm:vm-132-disk-1, path: /data, size: 8}]}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bluegreen.model.reader import Reader

# The keys this module reads from one container's mapping (`model.config` admits them).
KEYS = ("hostname", "onBoot", "started", "protection", "startup", "firewall", "features",
        "description", "mac", "bridge", "gateway", "dnsServers", "dnsDomain", "datastore",
        "unprivileged", "mountPoints", "sshAlias", "vlan", "mtu")
FEATURE_KEYS = ("nesting", "keyctl", "fuse")
_MAC = re.compile(r"[0-9A-F]{2}(:[0-9A-F]{2}){5}")
_MP_KEY = re.compile(r"mp[0-9]{1,3}")
NO_STARTUP = "none"


@dataclass(frozen=True)
class StartupOrder:
    """PVE boot order: lower starts first; `up_delay` seconds pass before the next one starts."""

    order: int | None
    up_delay: int | None = None
    down_delay: int | None = None


@dataclass(frozen=True)
class MountPoint:
    key: str
    volume: str
    path: str
    size: int | None = None  # GB
    backup: bool | None = None
    read_only: bool | None = None


@dataclass(frozen=True)
class ContainerSettings:
    """None means "not given": the program's default for a new container applies."""

    hostname: str | None = None
    on_boot: bool | None = None
    started: bool | None = None
    protection: bool | None = None
    startup: StartupOrder | None = None
    no_startup: bool = False
    firewall: bool | None = None
    features: tuple[tuple[str, bool], ...] | None = None
    description: str | None = None
    mac: str | None = None
    bridge: str | None = None
    gateway: str | None = None
    dns_servers: tuple[str, ...] | None = None
    dns_domain: str | None = None
    datastore: str | None = None
    unprivileged: bool | None = None
    mount_points: tuple[MountPoint, ...] = ()
    ssh_alias: str | None = None
    vlan: int | None = None
    mtu: int | None = None


def read_settings(r: Reader, m: Mapping[str, Any], path: str) -> ContainerSettings:
    """Read the optional per-container keys, recording problems by key path."""

    def opt_bool(key: str) -> bool | None:
        return None if m.get(key) is None else r.bool_(m, key, path, False)

    def opt_int(key: str) -> int | None:
        return None if m.get(key) is None else r.num(m, key, path, 0)

    startup: StartupOrder | None = None
    no_startup = False
    raw_startup = m.get("startup")
    if isinstance(raw_startup, str) and raw_startup == NO_STARTUP:
        no_startup = True
    elif raw_startup is not None:
        su = r.obj(raw_startup, f"{path}.startup")
        sp = f"{path}.startup"
        startup = StartupOrder(
            order=None if su.get("order") is None else r.num(su, "order", sp, 0),
            up_delay=None if su.get("upDelay") is None else r.num(su, "upDelay", sp, 0),
            down_delay=None if su.get("downDelay") is None else r.num(su, "downDelay", sp, 0))
        for extra in sorted(set(su) - {"order", "upDelay", "downDelay"}):
            r.problem(f"{sp}.{extra}", "unknown key (expected order, upDelay, downDelay)")

    features: tuple[tuple[str, bool], ...] | None = None
    if m.get("features") is not None:
        fm = r.obj(m.get("features"), f"{path}.features")
        for extra in sorted(set(fm) - set(FEATURE_KEYS)):
            r.problem(f"{path}.features.{extra}", f"unknown feature (expected one of {', '.join(FEATURE_KEYS)})")
        features = tuple((k, r.bool_(fm, k, f"{path}.features", False))
                         for k in FEATURE_KEYS if fm.get(k) is not None)

    mac = r.opt_str(m, "mac", path)
    if mac is not None:
        mac = mac.upper()
        if not _MAC.fullmatch(mac):
            r.problem(f"{path}.mac", f"expected a MAC address like BC:24:11:00:00:01, got {m.get('mac')!r}")

    mounts: list[MountPoint] = []
    raw_mounts = m.get("mountPoints")
    if raw_mounts is not None:
        if not isinstance(raw_mounts, list):
            r.problem(f"{path}.mountPoints", "expected a list of mount points")
        else:
            for j, item in enumerate(raw_mounts):
                mp_path = f"{path}.mountPoints[{j}]"
                mm = r.obj(item, mp_path)
                key = r.str_(mm, "key", mp_path, required=True)
                if key and not _MP_KEY.fullmatch(key):
                    r.problem(f"{mp_path}.key", f"expected mp0..mp255, got {key!r}")
                mounts.append(MountPoint(
                    key=key, volume=r.str_(mm, "volume", mp_path, required=True),
                    path=r.str_(mm, "path", mp_path, required=True),
                    size=None if mm.get("size") is None else r.num(mm, "size", mp_path, 0),
                    backup=None if mm.get("backup") is None else r.bool_(mm, "backup", mp_path, True),
                    read_only=None if mm.get("readOnly") is None else r.bool_(mm, "readOnly", mp_path, False)))

    dns_servers = r.str_list(m, "dnsServers", path) if m.get("dnsServers") is not None else None
    return ContainerSettings(
        hostname=r.opt_str(m, "hostname", path),
        on_boot=opt_bool("onBoot"),
        started=opt_bool("started"),
        protection=opt_bool("protection"),
        startup=startup,
        no_startup=no_startup,
        firewall=opt_bool("firewall"),
        features=features,
        description=r.opt_str(m, "description", path),
        mac=mac,
        bridge=r.opt_str(m, "bridge", path),
        gateway=r.opt_str(m, "gateway", path),
        dns_servers=dns_servers,
        dns_domain=r.opt_str(m, "dnsDomain", path),
        datastore=r.opt_str(m, "datastore", path),
        unprivileged=opt_bool("unprivileged"),
        mount_points=tuple(mounts),
        ssh_alias=r.opt_str(m, "sshAlias", path),
        vlan=opt_int("vlan"),
        mtu=opt_int("mtu"),
    )
