"""Per-container Proxmox settings: what the Pulumi program used to hard-code, now stack values.

Each container in `bluegreen:containers` may carry these keys; a key left out keeps today's
default for a new container (on boot, started, firewall on eth0, nesting, start-up order by role,
protection on the database). `bluegreen adopt` writes them from what the Proxmox API reports for
a running container, every value the provider's Read returns (`bluegreen.model.ctread`), so a
container rebuilt from its stack entry is the container that ran before.

    - {id: 132, ..., onBoot: false, startup: none, firewall: false, description: "notes",
       mac: BC:24:11:00:00:01, features: {nesting: true, keyctl: false}, datastore: local-lvm,
       inheritDns: true, ip6: "fd00::22/64", rate: 12.5, cpuLimit: 1.5,
       console: {enabled: true, mode: shell, tty: 2}, lxcEnv: {TZ: Europe/Berlin},
       extraInterfaces: [{key: net1, name: eth1, bridge: vmbr1, ip: 192.168.9.22/24}],
       mountPoints: [{key: mp0, volume: local-lvm:vm-132-disk-1, path: /data, size: 1T,
                      acl: true, mountOptions: [noatime]}]}
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
        "unprivileged", "mountPoints", "sshAlias", "vlan", "mtu", "inheritDns", "ip6", "gateway6", "rate",
        "interfaceName", "extraInterfaces", "rootfs", "cpuLimit", "cpuUnits", "console", "devices",
        "lxcEnv", "osType")
FEATURE_KEYS = ("nesting", "keyctl", "fuse", "mknod")
_MAC = re.compile(r"[0-9A-F]{2}(:[0-9A-F]{2}){5}")
_MP_KEY = re.compile(r"mp[0-9]{1,3}")
_NET_KEY = re.compile(r"net[0-9]")
_DEV_KEY = re.compile(r"dev[0-9]{1,3}")
# PVE's size notation (`qemu-server`/`pve-container` `disk-size`): a number and K, M, G or T.
SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)$")
NO_STARTUP = "none"
CONSOLE_MODES = ("tty", "console", "shell")


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
    size: str | None = None  # as PVE writes it: "8G", "1T", "512M"
    backup: bool | None = None
    read_only: bool | None = None
    acl: bool | None = None
    quota: bool | None = None
    replicate: bool | None = None
    shared: bool | None = None
    mount_options: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Nic:
    """A network interface beyond net0 (net0 is the container's own keys: ip, bridge, gateway...)."""

    key: str  # net1..net9
    name: str
    bridge: str | None = None
    ip: str | None = None
    gateway: str | None = None
    ip6: str | None = None
    gateway6: str | None = None
    firewall: bool | None = None
    mac: str | None = None
    vlan: int | None = None
    mtu: int | None = None
    rate: float | None = None


@dataclass(frozen=True)
class RootfsOptions:
    acl: bool | None = None
    quota: bool | None = None
    replicate: bool | None = None
    mount_options: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Console:
    enabled: bool | None = None
    mode: str | None = None
    tty: int | None = None


@dataclass(frozen=True)
class Device:
    key: str  # dev0..
    path: str
    mode: str | None = None
    uid: int | None = None
    gid: int | None = None
    deny_write: bool | None = None


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
    feature_mounts: tuple[str, ...] | None = None  # features.mount: allowed filesystem types
    description: str | None = None
    mac: str | None = None
    bridge: str | None = None
    gateway: str | None = None
    dns_servers: tuple[str, ...] | None = None
    dns_domain: str | None = None
    inherit_dns: bool = False  # no nameserver/searchdomain in PVE: the node's DNS
    datastore: str | None = None
    unprivileged: bool | None = None
    mount_points: tuple[MountPoint, ...] = ()
    ssh_alias: str | None = None
    vlan: int | None = None
    mtu: int | None = None
    ip6: str | None = None
    gateway6: str | None = None
    rate: float | None = None
    interface_name: str | None = None
    extra_interfaces: tuple[Nic, ...] = ()
    rootfs: RootfsOptions | None = None
    cpu_limit: float | None = None
    cpu_units: int | None = None
    console: Console | None = None
    devices: tuple[Device, ...] = ()
    lxc_env: tuple[tuple[str, str], ...] | None = None
    os_type: str | None = None


def size_text(value: Any) -> str | None:
    """A size as PVE writes it: a whole number is GB (`8` -> `8G`); `1T`, `512M` stay as they are.
    None for anything else (the caller reports it)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return f"{int(value)}G" if float(value).is_integer() and value > 0 else None
    text = str(value).strip().upper()
    m = SIZE.match(text)
    return text if m and float(m.group(1)) > 0 else None


def _opt_bool(r: Reader, m: Mapping[str, Any], key: str, path: str) -> bool | None:
    return None if m.get(key) is None else r.bool_(m, key, path, False)


def _opt_int(r: Reader, m: Mapping[str, Any], key: str, path: str) -> int | None:
    return None if m.get(key) is None else int(r.num(m, key, path, 0))


def _opt_float(r: Reader, m: Mapping[str, Any], key: str, path: str) -> float | None:
    return None if m.get(key) is None else float(r.num(m, key, path, 0, integer=False))


def _items(r: Reader, m: Mapping[str, Any], key: str, path: str) -> list[tuple[str, Mapping[str, Any]]]:
    """(path, mapping) of each entry of the list `key`."""
    raw = m.get(key)
    if raw is None:
        return []
    if not isinstance(raw, list):
        r.problem(f"{path}.{key}", "expected a list")
        return []
    return [(f"{path}.{key}[{j}]", r.obj(item, f"{path}.{key}[{j}]")) for j, item in enumerate(raw)]


def _unknown_keys(r: Reader, m: Mapping[str, Any], path: str, known: tuple[str, ...]) -> None:
    for extra in sorted(set(m) - set(known)):
        r.problem(f"{path}.{extra}", f"unknown key (expected one of {', '.join(known)})")


def _size(r: Reader, m: Mapping[str, Any], path: str) -> str | None:
    if m.get("size") is None:
        return None
    size = size_text(m.get("size"))
    if size is None:
        r.problem(f"{path}.size", f"expected GB as a whole number or a size like 8G, 1T, 512M, got {m.get('size')!r}")
    return size


def _options(r: Reader, m: Mapping[str, Any], path: str) -> tuple[str, ...] | None:
    return r.str_list(m, "mountOptions", path) if m.get("mountOptions") is not None else None


def _mac(r: Reader, m: Mapping[str, Any], path: str) -> str | None:
    mac = r.opt_str(m, "mac", path)
    if mac is None:
        return None
    mac = mac.upper()
    if not _MAC.fullmatch(mac):
        r.problem(f"{path}.mac", f"expected a MAC address like BC:24:11:00:00:01, got {m.get('mac')!r}")
    return mac


_MP_FIELDS = ("key", "volume", "path", "size", "backup", "readOnly", "acl", "quota", "replicate", "shared",
              "mountOptions")


def _mount_points(r: Reader, m: Mapping[str, Any], path: str) -> tuple[MountPoint, ...]:
    mounts: list[MountPoint] = []
    for mp_path, mm in _items(r, m, "mountPoints", path):
        _unknown_keys(r, mm, mp_path, _MP_FIELDS)
        key = r.str_(mm, "key", mp_path, required=True)
        if key and not _MP_KEY.fullmatch(key):
            r.problem(f"{mp_path}.key", f"expected mp0..mp255, got {key!r}")
        mounts.append(MountPoint(
            key=key, volume=r.str_(mm, "volume", mp_path, required=True),
            path=r.str_(mm, "path", mp_path, required=True), size=_size(r, mm, mp_path),
            backup=_opt_bool(r, mm, "backup", mp_path), read_only=_opt_bool(r, mm, "readOnly", mp_path),
            acl=_opt_bool(r, mm, "acl", mp_path), quota=_opt_bool(r, mm, "quota", mp_path),
            replicate=_opt_bool(r, mm, "replicate", mp_path), shared=_opt_bool(r, mm, "shared", mp_path),
            mount_options=_options(r, mm, mp_path)))
    return tuple(mounts)


_NIC_FIELDS = ("key", "name", "bridge", "ip", "gateway", "ip6", "gateway6", "firewall", "mac", "vlan", "mtu",
               "rate")


def _extra_interfaces(r: Reader, m: Mapping[str, Any], path: str) -> tuple[Nic, ...]:
    nics: list[Nic] = []
    for nic_path, nm in _items(r, m, "extraInterfaces", path):
        _unknown_keys(r, nm, nic_path, _NIC_FIELDS)
        key = r.str_(nm, "key", nic_path, required=True)
        if key and (not _NET_KEY.fullmatch(key) or key == "net0"):
            r.problem(f"{nic_path}.key", f"expected net1..net9 (net0 is the container's own keys), got {key!r}")
        nics.append(Nic(
            key=key, name=r.str_(nm, "name", nic_path, required=True), bridge=r.opt_str(nm, "bridge", nic_path),
            ip=r.opt_str(nm, "ip", nic_path), gateway=r.opt_str(nm, "gateway", nic_path),
            ip6=r.opt_str(nm, "ip6", nic_path), gateway6=r.opt_str(nm, "gateway6", nic_path),
            firewall=_opt_bool(r, nm, "firewall", nic_path), mac=_mac(r, nm, nic_path),
            vlan=_opt_int(r, nm, "vlan", nic_path), mtu=_opt_int(r, nm, "mtu", nic_path),
            rate=_opt_float(r, nm, "rate", nic_path)))
    if len({n.key for n in nics}) != len(nics):
        r.problem(f"{path}.extraInterfaces", "two interfaces with the same key")
    return tuple(nics)


def _devices(r: Reader, m: Mapping[str, Any], path: str) -> tuple[Device, ...]:
    devices: list[Device] = []
    for dev_path, dm in _items(r, m, "devices", path):
        _unknown_keys(r, dm, dev_path, ("key", "path", "mode", "uid", "gid", "denyWrite"))
        key = r.str_(dm, "key", dev_path, required=True)
        if key and not _DEV_KEY.fullmatch(key):
            r.problem(f"{dev_path}.key", f"expected dev0..dev255, got {key!r}")
        devices.append(Device(key=key, path=r.str_(dm, "path", dev_path, required=True),
                              mode=r.opt_str(dm, "mode", dev_path), uid=_opt_int(r, dm, "uid", dev_path),
                              gid=_opt_int(r, dm, "gid", dev_path),
                              deny_write=_opt_bool(r, dm, "denyWrite", dev_path)))
    return tuple(devices)


def _startup(r: Reader, m: Mapping[str, Any], path: str) -> tuple[StartupOrder | None, bool]:
    raw = m.get("startup")
    if isinstance(raw, str) and raw == NO_STARTUP:
        return None, True
    if raw is None:
        return None, False
    sp = f"{path}.startup"
    su = r.obj(raw, sp)
    _unknown_keys(r, su, sp, ("order", "upDelay", "downDelay"))
    return StartupOrder(order=_opt_int(r, su, "order", sp), up_delay=_opt_int(r, su, "upDelay", sp),
                        down_delay=_opt_int(r, su, "downDelay", sp)), False


def _features(r: Reader, m: Mapping[str, Any], path: str) -> tuple[tuple[tuple[str, bool], ...] | None,
                                                                  tuple[str, ...] | None]:
    if m.get("features") is None:
        return None, None
    fp = f"{path}.features"
    fm = r.obj(m.get("features"), fp)
    for extra in sorted(set(fm) - {*FEATURE_KEYS, "mount"}):
        r.problem(f"{fp}.{extra}", f"unknown feature (expected one of {', '.join((*FEATURE_KEYS, 'mount'))})")
    flags = tuple((k, r.bool_(fm, k, fp, False)) for k in FEATURE_KEYS if fm.get(k) is not None)
    mounts = r.str_list(fm, "mount", fp) if fm.get("mount") is not None else None
    return flags, mounts


def _console(r: Reader, m: Mapping[str, Any], path: str) -> Console | None:
    if m.get("console") is None:
        return None
    cp = f"{path}.console"
    cm = r.obj(m.get("console"), cp)
    _unknown_keys(r, cm, cp, ("enabled", "mode", "tty"))
    mode = r.opt_str(cm, "mode", cp)
    if mode is not None and mode not in CONSOLE_MODES:
        r.problem(f"{cp}.mode", f"expected one of {', '.join(CONSOLE_MODES)}, got {mode!r}")
    return Console(enabled=_opt_bool(r, cm, "enabled", cp), mode=mode, tty=_opt_int(r, cm, "tty", cp))


def _rootfs(r: Reader, m: Mapping[str, Any], path: str) -> RootfsOptions | None:
    if m.get("rootfs") is None:
        return None
    rp = f"{path}.rootfs"
    rm = r.obj(m.get("rootfs"), rp)
    _unknown_keys(r, rm, rp, ("acl", "quota", "replicate", "mountOptions"))
    return RootfsOptions(acl=_opt_bool(r, rm, "acl", rp), quota=_opt_bool(r, rm, "quota", rp),
                         replicate=_opt_bool(r, rm, "replicate", rp), mount_options=_options(r, rm, rp))


def _lxc_env(r: Reader, m: Mapping[str, Any], path: str) -> tuple[tuple[str, str], ...] | None:
    if m.get("lxcEnv") is None:
        return None
    em = r.obj(m.get("lxcEnv"), f"{path}.lxcEnv")
    return tuple(sorted((str(k), r.str_(em, k, f"{path}.lxcEnv")) for k in em))


def read_settings(r: Reader, m: Mapping[str, Any], path: str) -> ContainerSettings:
    """Read the optional per-container keys, recording problems by key path."""
    startup, no_startup = _startup(r, m, path)
    features, feature_mounts = _features(r, m, path)
    dns_servers = r.str_list(m, "dnsServers", path) if m.get("dnsServers") is not None else None
    inherit_dns = bool(_opt_bool(r, m, "inheritDns", path))
    if inherit_dns and (dns_servers or m.get("dnsDomain")):
        r.problem(f"{path}.inheritDns", "the container inherits the node's DNS: give no dnsServers or dnsDomain")
    return ContainerSettings(
        hostname=r.opt_str(m, "hostname", path),
        on_boot=_opt_bool(r, m, "onBoot", path),
        started=_opt_bool(r, m, "started", path),
        protection=_opt_bool(r, m, "protection", path),
        startup=startup,
        no_startup=no_startup,
        firewall=_opt_bool(r, m, "firewall", path),
        features=features,
        feature_mounts=feature_mounts,
        description=r.opt_str(m, "description", path),
        mac=_mac(r, m, path),
        bridge=r.opt_str(m, "bridge", path),
        gateway=r.opt_str(m, "gateway", path),
        dns_servers=dns_servers,
        dns_domain=r.opt_str(m, "dnsDomain", path),
        inherit_dns=inherit_dns,
        datastore=r.opt_str(m, "datastore", path),
        unprivileged=_opt_bool(r, m, "unprivileged", path),
        mount_points=_mount_points(r, m, path),
        ssh_alias=r.opt_str(m, "sshAlias", path),
        vlan=_opt_int(r, m, "vlan", path),
        mtu=_opt_int(r, m, "mtu", path),
        ip6=r.opt_str(m, "ip6", path),
        gateway6=r.opt_str(m, "gateway6", path),
        rate=_opt_float(r, m, "rate", path),
        interface_name=r.opt_str(m, "interfaceName", path),
        extra_interfaces=_extra_interfaces(r, m, path),
        rootfs=_rootfs(r, m, path),
        cpu_limit=_opt_float(r, m, "cpuLimit", path),
        cpu_units=_opt_int(r, m, "cpuUnits", path),
        console=_console(r, m, path),
        devices=_devices(r, m, path),
        lxc_env=_lxc_env(r, m, path),
        os_type=r.opt_str(m, "osType", path),
    )
