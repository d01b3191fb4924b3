"""What the container resource's Read returns for a PVE container, and the stack values that declare it.

`read_inputs(config, running)` is the provider's Read of one container (pulumi-proxmoxve 8.x wraps
bpg/terraform-provider-proxmox v0.111.1, commit b22fe919: `proxmoxtf/resource/container/
container.go`, `containerRead`, lines 2660-3519; PVE's strings parsed as in `proxmox/nodes/
containers/containers_types.go`), as it reads a container just imported (no prior state, not a
clone), in the engine's camelCase shape. That is what the imported state holds, so it is what
`bluegreen plan --changes` compares the program's declaration with (`model.changes`).

`stack_values(config, running)` turns the same reading into the per-container stack values of
`bluegreen adopt` (`model.ctsettings`), every field Read returns, so the program declares what
runs and a container rebuilt from its entry is the one that ran. PVE facts Read does not carry
(hook script, idmaps, lxc.* raw keys) come back as notes: the program cannot declare them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from bluegreen.model.ctsettings import SIZE
from bluegreen.model.errors import ConfigError

_GB_PER_UNIT = {"": 1 / 1024 ** 3, "K": 1 / 1024 ** 2, "M": 1 / 1024, "G": 1, "T": 1024}
MAX_NICS = 10  # net0..net9 (the provider's maxNetworkInterfaces)


def parse_pve_list(text: Any) -> dict[str, str]:
    """`key=value,key=value` as PVE writes net0, rootfs, startup, features and mount points; a
    leading item without `=` (the volume of rootfs/mpN, a device path) is returned under `volume`."""
    result: dict[str, str] = {}
    for i, item in enumerate(p for p in str(text or "").split(",") if p.strip()):
        key, sep, value = item.strip().partition("=")
        if not sep and i == 0:
            result["volume"] = key
        else:
            result[key.strip()] = value.strip()
    return result


def size_in_gb(text: str) -> float | None:
    """PVE's `16G` / `512M` / `1T` in GB (None if it is no size)."""
    m = SIZE.match(str(text).strip().upper())
    return None if not m else float(m.group(1)) * _GB_PER_UNIT[m.group(2)]


def _flag(value: Any) -> bool:
    return str(value).strip() in ("1", "true", "True")


def _numbered(config: Mapping[str, Any], prefix: str) -> list[str]:
    """`net0`, `net2`, ... in the provider's order (utils.OrderedListFromMap: by number)."""
    keys = [k for k in config if re.fullmatch(rf"{prefix}\d+", str(k))]
    return sorted(keys, key=lambda k: int(k[len(prefix):]))


def _int_or(value: Any, default: int) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


# --------------------------------------------------------------------------- Read


def _console(config: Mapping[str, Any]) -> dict[str, Any] | None:
    enabled = _flag(config["console"]) if "console" in config else True
    mode = str(config.get("cmode") or "tty")
    tty = _int_or(config.get("tty"), 2)
    # Only a non-default console is set on a fresh read (container.go 2717-2727).
    if (enabled, mode, tty) == (True, "tty", 2):
        return None
    return {"enabled": enabled, "type": mode, "ttyCount": tty}


def _cpu(config: Mapping[str, Any]) -> dict[str, Any] | None:
    cpu = {"architecture": str(config.get("arch") or "amd64"), "cores": _int_or(config.get("cores"), 1),
           "limit": float(config.get("cpulimit") or 0), "units": _int_or(config.get("cpuunits"), 0)}
    return None if cpu == {"architecture": "amd64", "cores": 1, "limit": 0.0, "units": 0} else cpu


def _disk(config: Mapping[str, Any]) -> dict[str, Any]:
    rootfs = parse_pve_list(config.get("rootfs"))
    volume = rootfs.get("volume", "")
    gb = size_in_gb(rootfs.get("size", "")) if rootfs.get("size") else None
    disk: dict[str, Any] = {"datastoreId": volume.split(":", 1)[0] if volume else "local",
                            # DiskSize.InGigabytes(): whole GB, truncated (types/disk_size.go).
                            "size": int(gb) if gb is not None else 4, "pathInDatastore": volume,
                            "mountOptions": [o for o in rootfs.get("mountoptions", "").split(";") if o]}
    for key in ("acl", "quota", "replicate"):
        if key in rootfs:
            disk[key] = _flag(rootfs[key])
    return disk


def _features(config: Mapping[str, Any]) -> dict[str, Any] | None:
    found = parse_pve_list(config.get("features")) if config.get("features") else {}
    features: dict[str, Any] = {"nesting": _flag(found.get("nesting", 0)), "keyctl": _flag(found.get("keyctl", 0)),
                                "fuse": _flag(found.get("fuse", 0)),
                                "mounts": [m for m in found.get("mount", "").split(";") if m],
                                "mknod": _flag(found.get("mknod", 0))}
    default = {"nesting": False, "keyctl": False, "fuse": False, "mounts": [], "mknod": False}
    return None if features == default else features


def _nic(text: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(networkInterfaces entry, ipConfigs entry or None) of one `netN` value."""
    n = parse_pve_list(text)
    nic = {"enabled": True, "name": n.get("name", n.get("volume", "")), "bridge": n.get("bridge", ""),
           "firewall": _flag(n.get("firewall", 0)), "hostManaged": _flag(n.get("host-managed", 0)),
           "macAddress": n.get("hwaddr", ""), "rateLimit": float(n.get("rate") or 0),
           "vlanId": _int_or(n.get("tag"), 0), "mtu": _int_or(n.get("mtu"), 0)}
    ip_config: dict[str, Any] | None = None
    if any(k in n for k in ("ip", "gw", "ip6", "gw6")):
        ip_config = {"ipv4": {"address": n.get("ip", ""), "gateway": n.get("gw", "")}
                     if ("ip" in n or "gw" in n) else None,
                     "ipv6": {"address": n.get("ip6", ""), "gateway": n.get("gw6", "")}
                     if ("ip6" in n or "gw6" in n) else None}
        ip_config = {k: v for k, v in ip_config.items() if v is not None}
    return nic, ip_config


def _initialization(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    init: dict[str, Any] = {"hostname": str(config.get("hostname") or ""),
                            "entrypoint": str(config.get("entrypoint") or "")}
    # A DNS block only when PVE has a nameserver or searchdomain: one inherited from the node
    # reads as no block at all (container.go 2936-2976).
    if config.get("nameserver") is not None or config.get("searchdomain") is not None:
        init["dns"] = {"domain": str(config.get("searchdomain") or ""),
                       "servers": str(config["nameserver"]).split(" ") if config.get("nameserver") else []}
    nics: list[dict[str, Any]] = []
    ip_configs: list[dict[str, Any]] = []
    for key in _numbered(config, "net"):
        nic, ip_config = _nic(config[key])
        nics.append(nic)
        if ip_config is not None:
            ip_configs.append(ip_config)
    init["ipConfigs"] = ip_configs
    return init, nics


def _mount_points(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = []
    for key in _numbered(config, "mp"):
        mp = parse_pve_list(config[key])
        options = mp.get("mountoptions")
        found.append({
            "acl": _flag(mp.get("acl", 0)), "backup": _flag(mp.get("backup", 0)),
            "mountOptions": [o for o in (options or "").split(";") if o], "path": mp.get("mp", ""),
            "quota": _flag(mp.get("quota", 0)), "readOnly": _flag(mp.get("ro", 0)),
            "replicate": _flag(mp.get("replicate", 1)), "shared": _flag(mp.get("shared", 0)),
            # Kept as PVE writes it (`1T`), never converted (container.go 3098-3102).
            "size": mp.get("size", ""), "volume": mp.get("volume", ""), "pathInDatastore": mp.get("volume", "")})
    return found


def _devices(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    devices = []
    for key in _numbered(config, "dev"):
        d = parse_pve_list(config[key])
        devices.append({"path": d.get("path", d.get("volume", "")), "mode": d.get("mode", "0660"),
                        "uid": _int_or(d.get("uid"), 0), "gid": _int_or(d.get("gid"), 0),
                        "denyWrite": _flag(d.get("deny-write", 0))})
    return devices


def _startup(config: Mapping[str, Any]) -> dict[str, Any] | None:
    if not config.get("startup"):
        return None  # read back as an empty list: no block (container.go 3318-3323)
    s = parse_pve_list(config["startup"])
    return {"order": _int_or(s.get("order"), -1), "upDelay": _int_or(s.get("up"), -1),
            "downDelay": _int_or(s.get("down"), -1)}


def environment(config: Mapping[str, Any]) -> dict[str, str]:
    """PVE's `env`: NUL-separated KEY=value pairs (containers_types.go, CustomEnvironmentVariables)."""
    pairs = (p.split("=", 1) for p in str(config.get("env") or "").split("\x00") if "=" in p)
    return {k: v for k, v in pairs}


def read_inputs(config: Mapping[str, Any], *, running: bool, node: str) -> dict[str, Any]:
    """The inputs the imported state holds for this container (the provider's Read, see above).

    Not read back after an import: `vmId` (the importer sets only the id and the node: container.go
    1230-1246), the template and the user account (PVE keeps neither), the `timeout*` fields.
    """
    init, nics = _initialization(config)
    read: dict[str, Any] = {
        "nodeName": node, "description": str(config.get("description") or ""), "disk": _disk(config),
        "memory": {"dedicated": _int_or(config.get("memory"), 0), "swap": _int_or(config.get("swap"), 0)},
        "initialization": init, "networkInterfaces": nics, "idmaps": [],
        "unprivileged": _flag(config.get("unprivileged", 0)), "protection": _flag(config.get("protection", 0)),
        # PVE returns no onboot when it is unset: false in practice (container.go 3437-3446).
        "startOnBoot": _flag(config.get("onboot", 0)), "hookScriptFileId": str(config.get("hookscript") or ""),
        "tags": sorted(t.strip() for t in str(config.get("tags") or "").split(";") if t.strip()),
        "environmentVariables": environment(config), "template": _flag(config.get("template", 0)),
        "started": running,
    }
    optional = {"console": _console(config), "cpu": _cpu(config), "features": _features(config),
                "startup": _startup(config), "mountPoints": _mount_points(config) or None,
                "devicePassthroughs": _devices(config) or None}
    if config.get("ostype"):
        optional["operatingSystem"] = {"type": str(config["ostype"])}
    read.update({k: v for k, v in optional.items() if v is not None})
    return read


# --------------------------------------------------------------------------- stack values


def _whole_gb(text: str, what: str, notes: list[str]) -> int:
    gb = size_in_gb(text)
    if gb is None:
        raise ConfigError(f"{what}: unexpected size {text!r}")
    if gb < 1 or not float(gb).is_integer():
        whole = max(1, math.ceil(gb))
        notes.append(f"{what}: {text} is not a whole number of GB; the stack says {whole} (a container "
                     "rebuilt from it gets that much; this one is left as it is)")
        return whole
    return int(gb)


def _net0_values(read: Mapping[str, Any], config: Mapping[str, Any], where: str) -> dict[str, Any]:
    nets = _numbered(config, "net")
    if "net0" not in nets:
        raise ConfigError(f"{where}: has no net0 interface; adopt needs its address")
    n = parse_pve_list(config["net0"])
    ip = n.get("ip", "")
    if not ip or ip in ("dhcp", "manual") or "/" not in ip:
        raise ConfigError(f"{where}: net0 has ip={ip or 'nothing'}; adopt needs a static address "
                          "with prefix (set one in Proxmox first)")
    nic = read["networkInterfaces"][0]
    return {"ip": ip, "bridge": nic["bridge"] or "vmbr0", "gateway": n.get("gw"), "firewall": nic["firewall"],
            "mac": nic["macAddress"].upper() or None, "vlan": nic["vlanId"] or None, "mtu": nic["mtu"] or None,
            "rate": nic["rateLimit"] or None, "ip6": n.get("ip6"), "gateway6": n.get("gw6"),
            "interfaceName": nic["name"] if nic["name"] != "eth0" else None}


def _extra_interfaces(config: Mapping[str, Any], notes: list[str], where: str) -> list[dict[str, Any]]:
    extra = []
    nets = _numbered(config, "net")
    if nets and nets != [f"net{i}" for i in range(len(nets))]:
        notes.append(f"{where}: interfaces {', '.join(nets)} have gaps; the provider numbers them by "
                     f"position, so a container rebuilt from the stack gets net0..net{len(nets) - 1}")
    for key in nets[1:]:
        n = parse_pve_list(config[key])
        entry = {"key": key, "name": n.get("name", ""), "bridge": n.get("bridge"), "ip": n.get("ip"),
                 "gateway": n.get("gw"), "ip6": n.get("ip6"), "gateway6": n.get("gw6"),
                 "firewall": _flag(n["firewall"]) if "firewall" in n else None,
                 "mac": n["hwaddr"].upper() if n.get("hwaddr") else None,
                 "vlan": _int_or(n["tag"], 0) if n.get("tag") else None,
                 "mtu": _int_or(n["mtu"], 0) if n.get("mtu") else None,
                 "rate": float(n["rate"]) if n.get("rate") else None}
        extra.append({k: v for k, v in entry.items() if v is not None})
    return extra


def _mount_values(read: Mapping[str, Any], config: Mapping[str, Any]) -> list[dict[str, Any]]:
    mounts = []
    for key, mp in zip(_numbered(config, "mp"), read.get("mountPoints") or [], strict=True):
        entry: dict[str, Any] = {"key": key, "volume": mp["volume"], "path": mp["path"]}
        if mp["size"]:
            entry["size"] = mp["size"]  # as PVE writes it: `1T` stays `1T`
        entry.update({"backup": mp["backup"], "readOnly": mp["readOnly"], "acl": mp["acl"], "quota": mp["quota"],
                      "replicate": mp["replicate"], "shared": mp["shared"]})
        if mp["mountOptions"]:
            entry["mountOptions"] = mp["mountOptions"]
        mounts.append(entry)
    return mounts


def _device_values(read: Mapping[str, Any], config: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "path": d["path"], "mode": d["mode"], "uid": d["uid"], "gid": d["gid"],
             "denyWrite": d["denyWrite"]}
            for key, d in zip(_numbered(config, "dev"), read.get("devicePassthroughs") or [], strict=True)]


def _optional_values(read: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Settings PVE holds only on some containers: given only when there."""
    values: dict[str, Any] = {}
    disk = read["disk"]
    rootfs = {k: disk[k] for k in ("acl", "quota", "replicate") if k in disk}
    if disk["mountOptions"]:
        rootfs["mountOptions"] = disk["mountOptions"]
    if rootfs:
        values["rootfs"] = rootfs
    cpu = read.get("cpu") or {}
    if cpu.get("limit"):
        values["cpuLimit"] = cpu["limit"]
    if cpu.get("units"):
        values["cpuUnits"] = cpu["units"]
    if read.get("console"):
        c = read["console"]
        values["console"] = {"enabled": c["enabled"], "mode": c["type"], "tty": c["ttyCount"]}
    if read.get("devicePassthroughs"):
        values["devices"] = _device_values(read, config)
    if read["environmentVariables"]:
        values["lxcEnv"] = dict(sorted(read["environmentVariables"].items()))
    if read.get("operatingSystem"):
        values["osType"] = read["operatingSystem"]["type"]
    if read.get("mountPoints"):
        values["mountPoints"] = _mount_values(read, config)
    return values


def _notes(config: Mapping[str, Any], where: str) -> list[str]:
    notes = []
    if config.get("hookscript"):
        notes.append(f"{where}: hook script {config['hookscript']} is not declared (it needs root@pam, not "
                     "an API token): a container rebuilt from the stack has none")
    raw = sorted(str(k) for k in config if str(k).startswith("lxc"))
    if raw:
        notes.append(f"{where}: raw LXC keys ({', '.join(raw)}; idmaps among them) are not declared: a "
                     "container rebuilt from the stack has none")
    return notes


def stack_values(config: Mapping[str, Any], *, running: bool, vmid: int,
                 node: str = "pve") -> tuple[dict[str, Any], list[str]]:
    """(the stack values of one container, notes on what cannot be declared) from PVE's
    `GET /nodes/{node}/lxc/{vmid}/config`: every value Read returns, including PVE's "unset"
    readings (no start-up order -> `none`, no onboot -> false, no DNS -> `inheritDns`)."""
    where = f"CT {vmid}"
    read = read_inputs(config, running=running, node=node)
    notes = _notes(config, where)
    rootfs = parse_pve_list(config.get("rootfs"))
    if "volume" not in rootfs or "size" not in rootfs:
        raise ConfigError(f"{where}: rootfs {config.get('rootfs')!r} names no volume and size")
    dns = read["initialization"].get("dns")
    startup = read.get("startup")
    features = read.get("features") or {}
    values: dict[str, Any] = {
        "hostname": read["initialization"]["hostname"],
        **_net0_values(read, config, where),
        "cores": (read.get("cpu") or {}).get("cores", 1),
        "memory": read["memory"]["dedicated"] or 512,
        "swap": read["memory"]["swap"],
        "disk": _whole_gb(rootfs["size"], f"{where} rootfs", notes),
        "datastore": read["disk"]["datastoreId"],
        "dnsServers": (dns or {}).get("servers") or None,
        "dnsDomain": (dns or {}).get("domain") or None,
        "inheritDns": True if dns is None else None,
        "onBoot": read["startOnBoot"], "started": running, "protection": read["protection"],
        "unprivileged": read["unprivileged"], "description": read["description"] or None,
        "tags": sorted({t.lower() for t in read["tags"]}),
        "startup": "none" if startup is None else {
            k: v for k, v in (("order", startup["order"]), ("upDelay", startup["upDelay"]),
                              ("downDelay", startup["downDelay"])) if v != -1},
        "features": {k: features[k] for k in ("nesting", "keyctl", "fuse", "mknod") if features.get(k)}
        | ({"mount": features["mounts"]} if features.get("mounts") else {}),
        "extraInterfaces": _extra_interfaces(config, notes, where) or None,
        **_optional_values(read, config),
    }
    return {k: v for k, v in values.items() if v is not None}, notes
