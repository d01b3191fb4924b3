"""Stand-ins for the providers behind the engine stand-in (tests/pulumi/engine.py).

`ContainerProvider` is the container resource (pulumi-proxmoxve 8.x, bridging bpg/terraform-provider-
proxmox v0.111.1, commit b22fe919) against a real fakepve node, written from its source
(`proxmoxtf/resource/container/container.go`, here "container.go"):

- Read (`containerRead`, 2660-3519) from PVE's config and status; written here on its own, and
  checked against the product's reading (bluegreen/model/ctread.py) in test_engine_standin.py;
- Diff: the schema's ForceNew fields replace (lines 239-1156) and so does a disk that shrinks
  (CustomizeDiff, 1171-1224); a key the bridge is told to ignore shows no diff (pulumi-terraform-
  bridge pkg/tfbridge/diff.go, computeIgnoreChanges);
- Update (`containerUpdate`, 3521-4180): one PUT of what changed, then a reboot of a running container
  when console, env, DNS, hostname, entrypoint, memory, devices, idmaps, mount points, network or OS
  type changed (the `rebootRequired = true` lines 3598-4079); every PUT and reboot is recorded;
- Create/Delete: `POST /nodes/{node}/lxc` and stop + `DELETE`.

`DynamicProvider` runs the project's own dynamic providers (components/hostconfig.py): their `diff`
always (on the recorded outputs, as pulumi's dynamic provider server passes them), their CRUD for
real when `real=True` (SSH to real hosts), else recorded with outputs = inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bluegreen.hosts.pve import PveClient

from .engine import Diff

FORCE_NEW = ("operatingSystem", "initialization.userAccount", "mountPoints", "nodeName", "poolId", "unprivileged",
             "template", "clone", "disk.datastoreId")
REBOOT = ("console", "environmentVariables", "initialization.dns", "initialization.hostname",
          "initialization.entrypoint", "memory", "devicePassthroughs", "idmaps", "mountPoints",
          "initialization.ipConfigs", "networkInterfaces", "operatingSystem", "disk.mountOptions")
NO_PVE_CALL = ("timeoutClone", "timeoutCreate", "timeoutDelete", "timeoutStart", "timeoutUpdate", "waitForIp",
               "vmId")
# Undeclared leaves the provider computes (Optional+Computed): leaving them out changes nothing.
COMPUTED = ("macAddress", "pathInDatastore", "hostManaged", "enabled", "entrypoint", "architecture")
DEFAULTS = {"replicate": True, "ttyCount": 2, "type": "tty", "bridge": "vmbr0", "order": -1, "upDelay": -1,
            "downDelay": -1, "mode": "0660", "cores": 1}


def kv(text: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, part in enumerate(p for p in str(text or "").split(",") if p):
        key, sep, value = part.partition("=")
        out[key if sep else ("volume" if i == 0 else key)] = value if sep else key
    return out


def _b(value: Any) -> bool:
    return str(value) == "1"


def _num(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# --------------------------------------------------------------------------- Read


def read_container(config: Mapping[str, Any], running: bool, node: str) -> dict[str, Any]:
    """containerRead for a container with no prior state (just imported, not a clone)."""
    nets = sorted((k for k in config if k.startswith("net") and k[3:].isdigit()), key=lambda k: int(k[3:]))
    nics, ips = [], []
    for key in nets:
        n = kv(config[key])
        nics.append({"enabled": True, "name": n.get("name", ""), "bridge": n.get("bridge", ""),
                     "firewall": _b(n.get("firewall")), "hostManaged": _b(n.get("host-managed")),
                     "macAddress": n.get("hwaddr", ""), "rateLimit": float(n.get("rate") or 0),
                     "vlanId": int(n.get("tag") or 0), "mtu": int(n.get("mtu") or 0)})
        ip: dict[str, Any] = {}
        if "ip" in n or "gw" in n:
            ip["ipv4"] = {"address": n.get("ip", ""), "gateway": n.get("gw", "")}
        if "ip6" in n or "gw6" in n:
            ip["ipv6"] = {"address": n.get("ip6", ""), "gateway": n.get("gw6", "")}
        if ip:
            ips.append(ip)
    init: dict[str, Any] = {"hostname": str(config.get("hostname") or ""), "entrypoint": "", "ipConfigs": ips}
    if "nameserver" in config or "searchdomain" in config:
        init["dns"] = {"domain": str(config.get("searchdomain") or ""),
                       "servers": str(config["nameserver"]).split(" ") if config.get("nameserver") else []}
    rootfs = kv(config.get("rootfs"))
    size = rootfs.get("size", "4G")
    unit = {"T": 1024, "G": 1, "M": 1 / 1024}[size[-1]] if size[-1] in "TGM" else 1
    out: dict[str, Any] = {
        "nodeName": node, "description": str(config.get("description") or ""), "initialization": init,
        "networkInterfaces": nics, "unprivileged": _b(config.get("unprivileged")),
        "protection": _b(config.get("protection")), "startOnBoot": _b(config.get("onboot")),
        "tags": sorted(t for t in str(config.get("tags") or "").split(";") if t), "started": running,
        "memory": {"dedicated": int(config.get("memory") or 0), "swap": int(config.get("swap") or 0)},
        "disk": {"datastoreId": rootfs.get("volume", "local").split(":")[0],
                 "size": int(float(size.rstrip("TGM")) * unit), "pathInDatastore": rootfs.get("volume", ""),
                 "mountOptions": [o for o in rootfs.get("mountoptions", "").split(";") if o],
                 # pointers set as they are: absent stays absent (container.go 2796-2798)
                 **{k: _b(rootfs[k]) for k in ("acl", "quota", "replicate") if k in rootfs}},
        "environmentVariables": dict(p.split("=", 1) for p in str(config.get("env") or "").split("\0") if "=" in p),
        "hookScriptFileId": str(config.get("hookscript") or ""), "idmaps": [], "template": False,
    }
    cpu = {"architecture": str(config.get("arch") or "amd64"), "cores": int(config.get("cores") or 1),
           "limit": float(config.get("cpulimit") or 0), "units": int(config.get("cpuunits") or 0)}
    if cpu != {"architecture": "amd64", "cores": 1, "limit": 0.0, "units": 0}:
        out["cpu"] = cpu
    console = {"enabled": _b(config.get("console", 1)), "type": str(config.get("cmode") or "tty"),
               "ttyCount": int(config.get("tty") or 2)}
    if console != {"enabled": True, "type": "tty", "ttyCount": 2}:
        out["console"] = console
    feats = kv(config.get("features"))
    features = {"nesting": _b(feats.get("nesting")), "keyctl": _b(feats.get("keyctl")), "fuse": _b(feats.get("fuse")),
                "mounts": [m for m in feats.get("mount", "").split(";") if m], "mknod": _b(feats.get("mknod"))}
    if any(features.values()):
        out["features"] = features
    if config.get("startup"):
        s = kv(config["startup"])
        out["startup"] = {"order": int(s.get("order", -1)), "upDelay": int(s.get("up", -1)),
                          "downDelay": int(s.get("down", -1))}
    mps = sorted((k for k in config if k.startswith("mp") and k[2:].isdigit()), key=lambda k: int(k[2:]))
    if mps:
        out["mountPoints"] = [_mount(kv(config[k])) for k in mps]
    devs = sorted((k for k in config if k.startswith("dev") and k[3:].isdigit()), key=lambda k: int(k[3:]))
    if devs:
        out["devicePassthroughs"] = [_device(kv(config[k])) for k in devs]
    if config.get("ostype"):
        out["operatingSystem"] = {"type": config["ostype"]}
    return out


def _device(d: Mapping[str, str]) -> dict[str, Any]:
    return {"path": d.get("path", d.get("volume", "")), "mode": d.get("mode", "0660"), "uid": int(d.get("uid", 0)),
            "gid": int(d.get("gid", 0)), "denyWrite": _b(d.get("deny-write"))}


def _mount(m: Mapping[str, str]) -> dict[str, Any]:
    return {"acl": _b(m.get("acl")), "backup": _b(m.get("backup")), "path": m.get("mp", ""),
            "mountOptions": [o for o in m.get("mountoptions", "").split(";") if o], "quota": _b(m.get("quota")),
            "readOnly": _b(m.get("ro")), "replicate": _b(m.get("replicate", "1")), "shared": _b(m.get("shared")),
            "size": m.get("size", ""), "volume": m.get("volume", ""), "pathInDatastore": m.get("volume", "")}


# --------------------------------------------------------------------------- Diff


def differences(path: str, old: Any, new: Any) -> list[str]:
    """Paths where the declared `new` differs from the state `old` (TF: declared leaves, list lengths,
    and leaves left out of a declared block whose state value is not the default)."""
    old, new = _num(old), _num(new)
    if isinstance(new, Mapping):
        if not isinstance(old, Mapping):
            return [path]
        found = [d for k, v in new.items() for d in differences(f"{path}.{k}" if path else k, old.get(k), v)]
        found += [f"{path}.{k}" for k, v in old.items() if k not in new and k not in COMPUTED
                  and v not in (None, "", 0, False, [], {}) and DEFAULTS.get(k) != v]
        return found
    if isinstance(new, list):
        if not isinstance(old, list) or len(old) != len(new):
            return [path]
        if new and isinstance(new[0], Mapping):
            return [d for i, (o, n) in enumerate(zip(old, new, strict=True)) for d in differences(f"{path}[{i}]", o, n)]
        return [] if sorted(map(str, old)) == sorted(map(str, new)) else [path]
    if new is None:
        return []
    return [] if str(_num(old)) == str(new) else [path]


def _matches(path: str, prefixes: Sequence[str]) -> bool:
    bare = path.split("[", 1)[0]
    return any(bare == p or bare.startswith(p + ".") or path.startswith(p + "[") for p in prefixes)


# --------------------------------------------------------------------------- the container provider


@dataclass
class ContainerProvider:
    client: PveClient
    node: str = "pve"
    puts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    reboots: list[int] = field(default_factory=list)
    creates: list[int] = field(default_factory=list)
    deletes: list[int] = field(default_factory=list)
    updates: list[tuple[int, list[str]]] = field(default_factory=list)

    def read(self, id_: str, inputs: Mapping[str, Any] | None) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
        node, _, vmid = id_.rpartition("/")
        state = self.client.statuses([int(vmid)])[int(vmid)]
        if state.status == "missing":
            return None
        read = read_container(self.client.container_config(int(vmid)), state.running, node or self.node)
        if inputs is not None:  # a refresh: what Read cannot see stays as recorded
            for key in ("vmId", "operatingSystem"):
                if key in inputs:
                    kept = inputs[key]
                    read[key] = {**kept, **read.get(key, {})} if isinstance(kept, Mapping) else kept
            if "userAccount" in (inputs.get("initialization") or {}):
                read["initialization"]["userAccount"] = inputs["initialization"]["userAccount"]
        return vmid, read, dict(read)

    def diff(self, id_: str, old_inputs: Mapping[str, Any], old_outputs: Mapping[str, Any],
             new_inputs: Mapping[str, Any], ignore_changes: Sequence[str]) -> Diff:
        ignored = {p.split(".")[0] for p in ignore_changes}
        changed = [d for key in sorted(set(new_inputs) - ignored - set(NO_PVE_CALL))
                   for d in differences(key, old_outputs.get(key), new_inputs[key])]
        # Optional blocks the program leaves out but PVE has: the plan removes them.
        changed += [key for key in ("console", "devicePassthroughs", "environmentVariables", "mountPoints")
                    if key not in new_inputs and key not in ignored and old_outputs.get(key)]
        replace = [c for c in changed if _matches(c, FORCE_NEW)]
        if ("disk" not in ignored and "disk.size" in changed
                and float(new_inputs["disk"]["size"]) < float(old_outputs["disk"]["size"])):
            replace.append("disk.size")
        if "vmId" not in ignored and new_inputs.get("vmId") is not None and str(int(new_inputs["vmId"])) != id_:
            replace.append("vmId")
        return Diff(bool(changed or replace), replace, changed)

    def update(self, id_: str, old_outputs: Mapping[str, Any], new_inputs: Mapping[str, Any]) -> dict[str, Any]:
        vmid = int(id_)
        changed = [d for key in sorted(new_inputs) if key not in NO_PVE_CALL
                   for d in differences(key, old_outputs.get(key), new_inputs[key])]
        params = config_params(new_inputs, {c.split(".")[0].split("[")[0] for c in changed})
        self.updates.append((vmid, changed))
        if params:
            self.puts.append((vmid, params))
            self.client._lxc(vmid).config.put(**params)
        if any(_matches(c, REBOOT) for c in changed) and self.client.statuses([vmid])[vmid].running:
            self.reboots.append(vmid)
            self.client._wait_task(f"rebooting CT {vmid}", self.client._lxc(vmid).status.reboot.post())
        found = self.read(id_, new_inputs)
        assert found is not None
        return found[2]

    def create(self, urn: str, inputs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        vmid = int(inputs["vmId"])
        params = {"vmid": vmid, "ostemplate": inputs["operatingSystem"]["templateFileId"],
                  "rootfs": f"{inputs['disk']['datastoreId']}:{int(inputs['disk']['size'])}",
                  "start": int(bool(inputs.get("started", True))),
                  **config_params(inputs, set(inputs))}
        self.creates.append(vmid)
        self.client.create_container(params)
        found = self.read(str(vmid), inputs)
        assert found is not None
        return str(vmid), found[2]

    def delete(self, id_: str, outputs: Mapping[str, Any]) -> None:
        self.deletes.append(int(id_))
        self.client.destroy_container(int(id_))


def _nets(inputs: Mapping[str, Any]) -> dict[str, str]:
    ips = (inputs.get("initialization") or {}).get("ipConfigs") or []
    nets = {}
    for i, nic in enumerate(inputs.get("networkInterfaces") or []):
        parts = [f"name={nic['name']}", f"bridge={nic.get('bridge') or 'vmbr0'}"]
        if nic.get("firewall"):
            parts.append("firewall=1")
        if nic.get("macAddress"):
            parts.append(f"hwaddr={nic['macAddress']}")
        ip = ips[i] if i < len(ips) else {}
        for key, (addr, gw) in (("ipv4", ("ip", "gw")), ("ipv6", ("ip6", "gw6"))):
            if ip.get(key, {}).get("address"):
                parts.append(f"{addr}={ip[key]['address']}")
            if ip.get(key, {}).get("gateway"):
                parts.append(f"{gw}={ip[key]['gateway']}")
        for key, pve in (("vlanId", "tag"), ("mtu", "mtu"), ("rateLimit", "rate")):
            if nic.get(key):
                parts.append(f"{pve}={_num(nic[key])}")
        nets[f"net{i}"] = ",".join(parts)
    return nets


def config_params(inputs: Mapping[str, Any], keys: set[str]) -> dict[str, Any]:
    """The PUT /config (or create) parameters for the top-level inputs `keys`."""
    p: dict[str, Any] = {}
    init = inputs.get("initialization") or {}
    if "cpu" in keys and inputs.get("cpu"):
        p["cores"] = int(inputs["cpu"].get("cores", 1))
    if "memory" in keys:
        p["memory"], p["swap"] = int(inputs["memory"]["dedicated"]), int(inputs["memory"]["swap"])
    if "initialization" in keys:
        p["hostname"] = init.get("hostname")
        if init.get("dns"):
            p["nameserver"] = " ".join(init["dns"].get("servers") or [])
            if init["dns"].get("domain"):
                p["searchdomain"] = init["dns"]["domain"]
        if init.get("userAccount", {}).get("keys") and "vmId" in keys:
            p["ssh-public-keys"] = "\n".join(init["userAccount"]["keys"])
    if keys & {"initialization", "networkInterfaces"}:
        p.update(_nets(inputs))
    if "startOnBoot" in keys:
        p["onboot"] = int(bool(inputs["startOnBoot"]))
    if "protection" in keys:
        p["protection"] = int(bool(inputs["protection"]))
    if "startup" in keys and inputs.get("startup"):
        s = inputs["startup"]
        p["startup"] = ",".join(f"{pve}={int(s[k])}" for k, pve in (("order", "order"), ("upDelay", "up"),
                                                                    ("downDelay", "down")) if s.get(k) is not None)
    if "tags" in keys:
        p["tags"] = ";".join(inputs.get("tags") or [])
    if "description" in keys and inputs.get("description") is not None:
        p["description"] = inputs["description"]
    if "features" in keys and inputs.get("features"):
        p["features"] = ",".join(f"{k}={int(bool(v))}" for k, v in inputs["features"].items() if isinstance(v, bool))
    if "unprivileged" in keys and "vmId" in keys:
        p["unprivileged"] = int(bool(inputs["unprivileged"]))
    if "cpu" in keys and (inputs.get("cpu") or {}).get("limit"):
        p["cpulimit"] = inputs["cpu"]["limit"]
    if "console" in keys and inputs.get("console"):
        c = inputs["console"]
        p.update({k: v for k, v in (("console", int(bool(c.get("enabled", True)))), ("cmode", c.get("type")),
                                    ("tty", c.get("ttyCount"))) if v is not None})
    if "environmentVariables" in keys and inputs.get("environmentVariables"):
        p["env"] = "\0".join(f"{k}={v}" for k, v in inputs["environmentVariables"].items())
    if "mountPoints" in keys:
        for i, mp in enumerate(inputs.get("mountPoints") or []):
            opts = {"mp": mp["path"], "size": mp.get("size"), "acl": mp.get("acl"), "quota": mp.get("quota"),
                    "replicate": mp.get("replicate"), "backup": mp.get("backup"), "ro": mp.get("readOnly"),
                    "mountoptions": ";".join(mp.get("mountOptions") or []) or None}
            p[f"mp{i}"] = ",".join([mp["volume"], *(f"{k}={int(v) if isinstance(v, bool) else v}"
                                                    for k, v in opts.items() if v is not None)])
    return {k: _num(v) for k, v in p.items()}  # the engine hands numbers over as floats


# --------------------------------------------------------------------------- the dynamic providers


@dataclass
class DynamicProvider:
    """One of components/hostconfig.py's dynamic providers behind the engine stand-in."""

    provider: Any  # an instance of a `_HostDynamicProvider` subclass
    real: bool = False
    observe: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None  # refresh when not real
    calls: list[tuple[str, str]] = field(default_factory=list)

    def read(self, id_: str, inputs: Mapping[str, Any] | None) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
        self.calls.append(("read", id_))
        if self.real:
            result = self.provider.read(id_, dict(inputs or {}))
            return result.id, dict(inputs or {}), dict(result.outs)
        outs = self.observe(inputs or {}) if self.observe else dict(inputs or {})
        return id_, dict(inputs or {}), outs

    def diff(self, id_: str, old_inputs: Mapping[str, Any], old_outputs: Mapping[str, Any],
             new_inputs: Mapping[str, Any], ignore_changes: Sequence[str]) -> Diff:
        result = self.provider.diff(id_, dict(old_outputs), dict(new_inputs))
        return Diff(bool(result.changes), list(result.replaces or []), [])

    def create(self, urn: str, inputs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        self.calls.append(("create", urn.rsplit("::", 1)[-1]))
        if self.real:
            result = self.provider.create(dict(inputs))
            return result.id, dict(result.outs)
        return urn.rsplit("::", 1)[-1], dict(inputs)

    def update(self, id_: str, old_outputs: Mapping[str, Any], new_inputs: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append(("update", id_))
        if self.real:
            return dict(self.provider.update(id_, dict(old_outputs), dict(new_inputs)).outs)
        return dict(new_inputs)

    def delete(self, id_: str, outputs: Mapping[str, Any]) -> None:
        self.calls.append(("delete", id_))
        if self.real:
            self.provider.delete(id_, dict(outputs))
