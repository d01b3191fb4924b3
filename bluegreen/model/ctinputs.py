"""What the program declares for each container, and which of it the engine may act on.

`declared_inputs(t, c, ...)` is the `ContainerLegacy` resource's inputs in the engine's camelCase
shape: the Pulumi program registers exactly this (components/container.py) and `bluegreen plan
--changes` compares exactly this with what the provider reads (`model.ctread`, `model.changes`).

`lifecycle(...)` is the rest: import id, retain-on-delete and `ignore_changes`, by what the
container is to the program:

- **adopted** (`existing: true`): imported (`node/vmid`), kept on PVE if Pulumi ever deletes it,
  and every input ignored except `MANAGED_ON_ADOPTED`. Since Pulumi 3.174 an import whose inputs
  differ is carried into an update in the same run (pulumi/pulumi `pkg/resource/deploy/
  step_generator.go`: the import is followed by `continueStepsFromImport`, whose
  `processIgnoreChanges` (line 3076) resets each ignored top-level property to what Read returned;
  the bridge drops diffs on ignored keys too, pulumi-terraform-bridge `pkg/tfbridge/diff.go`
  `computeIgnoreChanges`). So whatever Read returns, the first `up` changes nothing but the managed
  few, and none of those reboots: in bpg/terraform-provider-proxmox v0.111.1
  `proxmoxtf/resource/container/container.go` `containerUpdate`, `startup` (4053-4060), `protection`
  (4083-4087) and `start_on_boot` (4089-4093) only fill the PUT body; the reboot flag is set by
  console, disk mount options, env, DNS, hostname, entrypoint, memory, devices, idmaps, mount points,
  network and OS type (lines 3598-4079), none of them managed here.
- **owned** (created by the program): nothing imported; `ignore_changes` holds the fields whose
  change reboots or replaces (`FROZEN_INPUTS`) while the container serves: the database, the
  load balancer and the colour HAProxy routes to *now* (read from the load balancer, not the
  declared colour); unless `bluegreen:allowDisruption` allows it.
- **rebuilding** (`existing: rebuilding`, `bluegreen rebuild standby` on an adopted estate): the
  defined way from adopted to owned, in two runs the rebuild makes with `REBUILD_ENV` set
  (ops/rebuild.py); any other run refuses (`RebuildPending`), because a plain `up` between the two
  could re-import, and so delete, the container (step_generator.go 1113-1196: an import id that
  differs from the recorded one imports again and schedules the old state for deletion).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bluegreen.model.ctsettings import MountPoint, Nic
from bluegreen.model.errors import ConfigError
from bluegreen.model.topology import Container, Topology

# Every input of ContainerLegacy (pulumi-proxmoxve 8.x `ContainerLegacyArgs`, camelCase as the
# engine sees them); tests/unit/test_ctinputs.py checks the list against the installed SDK, so a
# provider upgrade that adds one is not silently managed on adopted containers.
CONTAINER_INPUTS = (
    "clone", "console", "cpu", "description", "devicePassthroughs", "disk", "environmentVariables",
    "features", "hookScriptFileId", "idmaps", "initialization", "memory", "mountPoints", "networkInterfaces",
    "nodeName", "operatingSystem", "poolId", "protection", "startOnBoot", "started", "startup", "tags",
    "template", "timeoutClone", "timeoutCreate", "timeoutDelete", "timeoutStart", "timeoutUpdate",
    "unprivileged", "vmId", "waitForIp",
)
# What the program keeps managing on an adopted container: the boot order (database first, load
# balancer last), start on boot, and PVE's own protection. In place, never a reboot (see above).
MANAGED_ON_ADOPTED = ("protection", "startOnBoot", "startup")
ADOPTED_IGNORE_CHANGES = tuple(k for k in CONTAINER_INPUTS if k not in MANAGED_ON_ADOPTED)
# Changed in place with no reboot (containerUpdate sets no reboot flag for them: description 3563,
# cpu 3603, features 3728, hookscript 3738, startup 4053, protection 4083, onboot 4089, tags 4095).
IN_PLACE_INPUTS = ("cpu", "description", "features", "hookScriptFileId", "protection", "startOnBoot",
                   "startup", "tags")
# Provider-local settings: no PVE call at all (containerUpdate 3549-3553, on bpg issue #2883).
NO_EFFECT_INPUTS = ("timeoutClone", "timeoutCreate", "timeoutDelete", "timeoutStart", "timeoutUpdate",
                    "waitForIp")
# Held back on a serving container the program owns: a change reboots, replaces, or (`started`)
# stops it.
FROZEN_INPUTS = tuple(k for k in CONTAINER_INPUTS if k not in (*IN_PLACE_INPUTS, *NO_EFFECT_INPUTS))

# Set by `bluegreen rebuild standby` for its two runs: `<vmid>:release` then `<vmid>:replace`.
REBUILD_ENV = "BLUEGREEN_REBUILD"
RELEASE, REPLACE = "release", "replace"

ADOPTED, OWNED, RELEASING, REPLACING = "adopted", "owned", "releasing", "replacing"


@dataclass(frozen=True)
class StartupOrder:
    order: int | None
    up_delay: int | None
    down_delay: int | None = None


# The database must accept connections before the apps boot, and HAProxy comes last so its
# first health checks find both colours up instead of marking them down.
STARTUP_BY_ROLE: dict[str, StartupOrder] = {
    "database": StartupOrder(order=1, up_delay=15),
    "app": StartupOrder(order=2, up_delay=5),
    "loadbalancer": StartupOrder(order=3, up_delay=0),
}


class RebuildPending(ConfigError):
    """A container is between adopted and owned and this run is not the rebuild's own."""


def parse_rebuild(value: str | None) -> tuple[int, str] | None:
    """`REBUILD_ENV`'s value as (vmid, phase); None when unset."""
    if not value:
        return None
    vmid, _, phase = value.partition(":")
    if not vmid.isdigit() or phase not in (RELEASE, REPLACE):
        raise ConfigError(f"{REBUILD_ENV}={value!r}: expected <vmid>:{RELEASE} or <vmid>:{REPLACE}")
    return int(vmid), phase


# --------------------------------------------------------------------------- who serves


def serving_scope(c: Container, live: str | None) -> str | None:
    """Why `c` serves: 'database', 'loadbalancer', 'live' (the colour HAProxy routes to, or
    either colour while that is unknown), or None for the standby."""
    if c.role == "database":
        return "database"
    if c.role == "loadbalancer":
        return "loadbalancer"
    if live is None or c.color == live:
        return "live"
    return None


def held_back(t: Topology, c: Container, live: str | None) -> bool:
    """True when the program must not reboot or replace `c` now."""
    scope = serving_scope(c, live)
    return scope is not None and scope not in t.allow_disruption


# --------------------------------------------------------------------------- lifecycle


@dataclass(frozen=True)
class Lifecycle:
    state: str  # ADOPTED, OWNED, RELEASING, REPLACING
    import_id: str | None
    retain_on_delete: bool
    ignore_changes: tuple[str, ...]

    @property
    def created_by_program(self) -> bool:
        """The program created (or now creates) this container: its host configuration is tied to
        it (`replace_with`) and its new host key trusted on first use."""
        return self.state in (OWNED, REPLACING)


def lifecycle(t: Topology, c: Container, *, live: str | None, rebuild: tuple[int, str] | None = None,
              switch_run: bool = False) -> Lifecycle:
    """How the program declares `c` in this run (see the module docstring)."""
    frozen = FROZEN_INPUTS if held_back(t, c, live) else ()
    import_id = f"{t.proxmox.node}/{c.vmid}"
    if c.rebuilding:
        if rebuild is not None and rebuild[0] == c.vmid:
            if rebuild[1] == RELEASE:
                # Same import id as recorded, so no re-import: a "same" step that records
                # retain_on_delete=false (pkg/backend/snapshot.go, sameSnapshotMutation.mustWrite).
                return Lifecycle(RELEASING, import_id, False, ADOPTED_IGNORE_CHANGES)
            return Lifecycle(REPLACING, None, False, frozen)
        if switch_run:
            # A switch targets only the routing: this container is untargeted and keeps its state
            # as it is; declaring no import keeps the engine from importing it again.
            return Lifecycle(RELEASING, None, False, ADOPTED_IGNORE_CHANGES)
        raise RebuildPending(
            f"CT {c.vmid} ({c.name}) is between adopted and owned (`existing: rebuilding` in "
            f"stacks/Pulumi.{t.stack}.yaml): `bluegreen rebuild standby --stack {t.stack}` began rebuilding it "
            "and did not finish. Run it again; a plain `pulumi up` now could delete the container")
    if c.existing:
        return Lifecycle(ADOPTED, import_id, True, ADOPTED_IGNORE_CHANGES)
    return Lifecycle(OWNED, None, False, frozen)


# --------------------------------------------------------------------------- declared inputs


def normalized_tags(tags: Sequence[str]) -> list[str]:
    """PVE stores tags lowercased and sorted: anything else shows a diff on every preview."""
    return sorted({tag.lower() for tag in tags})


def startup_of(c: Container) -> StartupOrder | None:
    s = c.settings
    if s.no_startup:
        return None
    if s.startup is not None:
        return StartupOrder(order=s.startup.order, up_delay=s.startup.up_delay, down_delay=s.startup.down_delay)
    return STARTUP_BY_ROLE[c.role]


def _drop_none(m: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if v is not None}


def _nic(*, name: str, bridge: str | None, firewall: bool | None, mac: str | None, vlan: int | None,
         mtu: int | None, rate: float | None) -> dict[str, Any]:
    return _drop_none({"name": name, "bridge": bridge, "firewall": firewall, "macAddress": mac, "vlanId": vlan,
                       "mtu": mtu, "rateLimit": rate})


def _ip_config(ip: str | None, gateway: str | None, ip6: str | None, gateway6: str | None) -> dict[str, Any] | None:
    config: dict[str, Any] = {}
    if ip or gateway:
        config["ipv4"] = _drop_none({"address": ip, "gateway": gateway})
    if ip6 or gateway6:
        config["ipv6"] = _drop_none({"address": ip6, "gateway": gateway6})
    return config or None


def _network(t: Topology, c: Container) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(networkInterfaces, initialization.ipConfigs): net0 from the container's keys, then the rest.
    The provider pairs ipConfigs with interfaces by position (containerUpdate 3998)."""
    s = c.settings
    nics = [_nic(name=s.interface_name or "eth0", bridge=s.bridge or t.proxmox.bridge,
                 firewall=True if s.firewall is None else s.firewall, mac=s.mac, vlan=s.vlan, mtu=s.mtu,
                 rate=s.rate)]
    first = _ip_config(str(c.interface), s.gateway or t.proxmox.gateway, s.ip6, s.gateway6)
    ip_configs = [first] if first else []
    for n in s.extra_interfaces:
        nics.append(_extra_nic(n))
        extra = _ip_config(n.ip, n.gateway, n.ip6, n.gateway6)
        if extra:
            ip_configs.append(extra)
    return nics, ip_configs


def _extra_nic(n: Nic) -> dict[str, Any]:
    return _nic(name=n.name, bridge=n.bridge, firewall=n.firewall, mac=n.mac, vlan=n.vlan, mtu=n.mtu, rate=n.rate)


def _mount_point(mp: MountPoint) -> dict[str, Any]:
    return _drop_none({
        "volume": mp.volume, "path": mp.path, "size": mp.size, "backup": mp.backup, "readOnly": mp.read_only,
        "acl": mp.acl, "quota": mp.quota, "replicate": mp.replicate, "shared": mp.shared,
        "mountOptions": None if mp.mount_options is None else list(mp.mount_options)})


def _features(c: Container) -> dict[str, Any] | None:
    s = c.settings
    flags = dict((("nesting", True),) if s.features is None else s.features)
    features: dict[str, Any] = {k: flags[k] for k in ("nesting", "keyctl", "fuse", "mknod") if k in flags}
    if s.feature_mounts:
        features["mounts"] = list(s.feature_mounts)
    return features or None


def _initialization(t: Topology, c: Container, ip_configs: list[dict[str, Any]],
                    public_keys: Sequence[str]) -> dict[str, Any]:
    s = c.settings
    init: dict[str, Any] = {"hostname": s.hostname or c.name, "ipConfigs": ip_configs,
                            "userAccount": {"keys": list(public_keys)}}
    if not s.inherit_dns:
        # An inherited DNS is declared as no block: Read returns none for it, and a declared one
        # would be written into the container (a reboot).
        domain = s.dns_domain if s.dns_domain is not None else t.proxmox.dns_domain
        servers = s.dns_servers if s.dns_servers is not None else t.proxmox.dns_servers
        init["dns"] = _drop_none({"domain": domain or None, "servers": list(servers)})
    return init


def _optional(c: Container) -> dict[str, Any]:
    s = c.settings
    optional: dict[str, Any] = {}
    if s.console is not None:
        optional["console"] = _drop_none({"enabled": s.console.enabled, "type": s.console.mode,
                                          "ttyCount": s.console.tty})
    if s.devices:
        optional["devicePassthroughs"] = [_drop_none({"path": d.path, "mode": d.mode, "uid": d.uid, "gid": d.gid,
                                                      "denyWrite": d.deny_write}) for d in s.devices]
    if s.lxc_env:
        optional["environmentVariables"] = dict(s.lxc_env)
    if s.mount_points:
        optional["mountPoints"] = [_mount_point(mp) for mp in s.mount_points]
    if s.description is not None:
        optional["description"] = s.description
    return optional


def declared_inputs(t: Topology, c: Container, *, public_keys: Sequence[str],
                    template_file_id: Any = None) -> dict[str, Any]:
    """The container's inputs (engine shape). `template_file_id` may be a Pulumi output; by default
    the template file assumed present on the node's storage."""
    s = c.settings
    nics, ip_configs = _network(t, c)
    startup = startup_of(c)
    rootfs = s.rootfs
    disk = _drop_none({"datastoreId": s.datastore or t.proxmox.datastore, "size": c.disk,
                       "acl": rootfs.acl if rootfs else None, "quota": rootfs.quota if rootfs else None,
                       "replicate": rootfs.replicate if rootfs else None,
                       "mountOptions": list(rootfs.mount_options) if rootfs and rootfs.mount_options else None})
    inputs: dict[str, Any] = {
        "nodeName": t.proxmox.node,
        "vmId": c.vmid,
        "unprivileged": True if s.unprivileged is None else s.unprivileged,
        "started": True if s.started is None else s.started,
        "startOnBoot": True if s.on_boot is None else s.on_boot,
        "protection": (c.role == "database") if s.protection is None else s.protection,
        "tags": normalized_tags(c.tags),
        "cpu": _drop_none({"cores": c.cores, "limit": s.cpu_limit, "units": s.cpu_units}),
        "memory": {"dedicated": c.memory, "swap": c.swap},
        "disk": disk,
        "networkInterfaces": nics,
        "initialization": _initialization(t, c, ip_configs, public_keys),
        "operatingSystem": {"templateFileId": template_file_id if template_file_id is not None
                            else t.proxmox.template.file_id, "type": s.os_type or "debian"},
        **_optional(c),
    }
    if startup is not None:
        # PVE reports no start-up order as nothing at all: declare none then, or the import differs.
        inputs["startup"] = _drop_none({"order": startup.order, "upDelay": startup.up_delay,
                                        "downDelay": startup.down_delay})
    features = _features(c)
    if features:
        # systemd in Debian 12 containers needs nesting; the only feature an API token may set.
        inputs["features"] = features
    return inputs
