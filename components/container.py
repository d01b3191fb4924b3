"""One Proxmox LXC container of the estate, new or adopted, as a Pulumi component.

The inputs of the underlying `proxmoxve.ContainerLegacy` are built by pure functions from a typed
`ProxmoxContainerArgs`, itself built from the validated topology, so what Pulumi declares and what
the automation reads can never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_proxmoxve as proxmoxve
from pulumi_proxmoxve import (
    ContainerLegacyArgs,
    ContainerLegacyCpuArgs,
    ContainerLegacyDiskArgs,
    ContainerLegacyFeaturesArgs,
    ContainerLegacyInitializationArgs,
    ContainerLegacyInitializationDnsArgs,
    ContainerLegacyInitializationIpConfigArgs,
    ContainerLegacyInitializationIpConfigIpv4Args,
    ContainerLegacyInitializationUserAccountArgs,
    ContainerLegacyMemoryArgs,
    ContainerLegacyMountPointArgs,
    ContainerLegacyNetworkInterfaceArgs,
    ContainerLegacyOperatingSystemArgs,
    ContainerLegacyStartupArgs,
)

from bluegreen.model.changes import frozen_fields
from bluegreen.model.ctsettings import MountPoint
from bluegreen.model.topology import Container, Topology

CONTAINER_TYPE = "bluegreen:proxmox:Container"

# PVE never returns the template a container was built from nor its initial user account, and
# `unprivileged` cannot change in place: declaring them on an adopted container would force a
# replacement of a production host. Camel-case property paths: Pulumi translates only top-level
# snake_case names, never nested paths.
#
# After an import the provider reads back neither `vmId` (its importer sets only the id and the
# node; bpg/terraform-provider-proxmox issues 2141, 1406) nor the five `timeout*` fields (issues
# 1406, 3110: `timeout_clone/create/delete/start/update` show as "+" after an import): the engine
# would see them as differences and refuse the import.
ADOPTED_IGNORE_CHANGES = ("operatingSystem", "initialization.userAccount", "unprivileged", "vmId",
                          "timeoutClone", "timeoutCreate", "timeoutDelete", "timeoutStart",
                          "timeoutUpdate")


@dataclass(frozen=True)
class Startup:
    """PVE boot order: lower starts first; `up_delay` seconds pass before the next one starts."""

    order: int | None
    up_delay: int | None
    down_delay: int | None = None


# The database must accept connections before the apps boot, and HAProxy comes last so its
# first health checks find both colours up instead of marking them down.
STARTUP_BY_ROLE: dict[str, Startup] = {
    "database": Startup(order=1, up_delay=15),
    "app": Startup(order=2, up_delay=5),
    "loadbalancer": Startup(order=3, up_delay=0),
}


@dataclass(frozen=True)
class ProxmoxContainerArgs:
    """Everything one container declares; plain values except the template id (an output when
    the template is downloaded by the same program)."""

    node: str
    vmid: int
    hostname: str
    role: str
    color: str | None
    address: str
    gateway: str
    bridge: str
    dns_servers: tuple[str, ...]
    dns_domain: str | None
    cores: int
    memory: int
    swap: int
    datastore: str
    disk_size: int
    template_file_id: pulumi.Input[str]
    public_keys: tuple[str, ...]
    tags: tuple[str, ...]
    existing: bool
    # Reboot-causing properties held back on the live colour and the database (`bluegreen.changes`).
    frozen: tuple[str, ...] = ()
    # Per-container values (stack keys of ctsettings); the defaults are today's for new containers.
    on_boot: bool = True
    started: bool = True
    protection: bool | None = None  # None: the database only
    startup_order: Startup | bool | None = True  # True: by role; None: no start-up order
    firewall: bool = True
    features: tuple[tuple[str, bool], ...] = (("nesting", True),)
    description: str | None = None
    mac: str | None = None
    unprivileged: bool = True
    mount_points: tuple[MountPoint, ...] = ()
    vlan: int | None = None
    mtu: int | None = None

    @classmethod
    def from_topology(cls, topology: Topology, container: Container, *,
                      public_keys: Sequence[str],
                      template_file_id: pulumi.Input[str] | None = None) -> ProxmoxContainerArgs:
        """`public_keys` are key texts (already read from `file:` entries); the template id
        defaults to the file assumed present on the node's storage."""
        px = topology.proxmox
        s = container.settings
        startup: Startup | bool | None = True
        if s.no_startup:
            startup = None
        elif s.startup is not None:
            startup = Startup(order=s.startup.order, up_delay=s.startup.up_delay,
                              down_delay=s.startup.down_delay)
        return cls(
            node=px.node,
            vmid=container.vmid,
            hostname=s.hostname or container.name,
            role=container.role,
            color=container.color,
            address=str(container.interface),
            gateway=s.gateway or px.gateway,
            bridge=s.bridge or px.bridge,
            dns_servers=tuple(s.dns_servers if s.dns_servers is not None else px.dns_servers),
            dns_domain=s.dns_domain if s.dns_domain is not None else px.dns_domain,
            cores=container.cores,
            memory=container.memory,
            swap=container.swap,
            datastore=s.datastore or px.datastore,
            disk_size=container.disk,
            template_file_id=template_file_id if template_file_id is not None else px.template.file_id,
            public_keys=tuple(public_keys),
            tags=container.tags,
            existing=container.existing,
            frozen=frozen_fields(topology, container),
            on_boot=True if s.on_boot is None else s.on_boot,
            started=True if s.started is None else s.started,
            protection=s.protection,
            startup_order=startup,
            firewall=True if s.firewall is None else s.firewall,
            features=(("nesting", True),) if s.features is None else s.features,
            description=s.description,
            mac=s.mac,
            unprivileged=True if s.unprivileged is None else s.unprivileged,
            mount_points=s.mount_points,
            vlan=s.vlan,
            mtu=s.mtu,
        )

    @property
    def ip(self) -> str:
        return self.address.split("/", 1)[0]

    @property
    def is_database(self) -> bool:
        return self.role == "database"

    @property
    def import_id(self) -> str | None:
        """The id `pulumi import` takes for this container, when it is adopted."""
        return f"{self.node}/{self.vmid}" if self.existing else None

    @property
    def startup(self) -> Startup | None:
        if self.startup_order is True:
            return STARTUP_BY_ROLE[self.role]
        return self.startup_order or None

    @property
    def protected(self) -> bool:
        return self.is_database if self.protection is None else self.protection


def normalized_tags(tags: Iterable[str]) -> list[str]:
    """PVE stores tags lowercased and sorted: anything else shows a diff on every preview."""
    return sorted({tag.lower() for tag in tags})


def container_legacy_args(args: ProxmoxContainerArgs) -> ContainerLegacyArgs:
    """The inputs of the `ContainerLegacy` resource: every value the provider would otherwise
    default is declared, so an adopted container shows no spurious diff."""
    ipv4 = ContainerLegacyInitializationIpConfigIpv4Args(address=args.address, gateway=args.gateway)
    startup = args.startup
    return ContainerLegacyArgs(
        node_name=args.node,
        vm_id=args.vmid,
        unprivileged=args.unprivileged,
        started=args.started,
        start_on_boot=args.on_boot,
        protection=args.protected,
        # PVE reports no start-up order as nothing at all: declare none then, or the import differs.
        startup=None if startup is None else ContainerLegacyStartupArgs(
            order=startup.order, up_delay=startup.up_delay, down_delay=startup.down_delay),
        description=args.description,
        tags=normalized_tags(args.tags),
        cpu=ContainerLegacyCpuArgs(cores=args.cores),
        memory=ContainerLegacyMemoryArgs(dedicated=args.memory, swap=args.swap),
        disk=ContainerLegacyDiskArgs(datastore_id=args.datastore, size=args.disk_size),
        mount_points=[ContainerLegacyMountPointArgs(
            volume=mp.volume, path=mp.path, size=None if mp.size is None else f"{mp.size}G",
            backup=mp.backup, read_only=mp.read_only) for mp in args.mount_points] or None,
        network_interfaces=[
            ContainerLegacyNetworkInterfaceArgs(name="eth0", bridge=args.bridge, firewall=args.firewall,
                                                mac_address=args.mac, vlan_id=args.vlan, mtu=args.mtu)],
        initialization=ContainerLegacyInitializationArgs(
            hostname=args.hostname,
            ip_configs=[ContainerLegacyInitializationIpConfigArgs(ipv4=ipv4)],
            dns=ContainerLegacyInitializationDnsArgs(domain=args.dns_domain or None,
                                                     servers=list(args.dns_servers)),
            user_account=ContainerLegacyInitializationUserAccountArgs(keys=list(args.public_keys)),
        ),
        operating_system=ContainerLegacyOperatingSystemArgs(template_file_id=args.template_file_id,
                                                            type="debian"),
        # systemd in Debian 12 containers needs nesting; the only feature an API token may set.
        features=_features(args.features),
    )


def _features(flags: tuple[tuple[str, bool], ...]) -> ContainerLegacyFeaturesArgs | None:
    f = dict(flags)
    if not f:
        return None
    return ContainerLegacyFeaturesArgs(nesting=f.get("nesting"), keyctl=f.get("keyctl"), fuse=f.get("fuse"))


def container_options(args: ProxmoxContainerArgs, *, parent: pulumi.Resource,
                      depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.ResourceOptions:
    """Adoption, protection and replacement rules.

    Adopted containers are imported, never created, and kept on PVE when Pulumi would delete
    them (`retain_on_delete`): they served production before Pulumi knew them, and a forced
    replacement then fails on the still-existing vmid instead of destroying the host. The
    database is protected in Pulumi as in PVE, adopted or not.
    """
    return pulumi.ResourceOptions(
        parent=parent,
        depends_on=list(depends_on),
        protect=args.is_database or args.protected,
        import_=args.import_id,
        ignore_changes=list(dict.fromkeys([*(ADOPTED_IGNORE_CHANGES if args.existing else ()),
                                           *args.frozen])) or None,
        retain_on_delete=True if args.existing else None,
        # The vmid is fixed: PVE refuses to create a second CT with it, so a replacement (a
        # rebuild, a new template or key set) must delete the old container first. The database
        # is protected, so Pulumi refuses to replace it at all.
        delete_before_replace=True,
    )


class ProxmoxContainer(pulumi.ComponentResource):
    """An unprivileged LXC container. `depends_on` is applied to the container itself (Pulumi
    does not pass a component's own dependencies on to its children)."""

    resource: proxmoxve.ContainerLegacy
    vm_id: pulumi.Output[int]
    ip: str

    def __init__(self, name: str, args: ProxmoxContainerArgs,
                 opts: pulumi.ResourceOptions | None = None, *,
                 depends_on: Sequence[pulumi.Resource] = ()) -> None:
        super().__init__(CONTAINER_TYPE, name, None, opts)
        self.args = args
        self.resource = proxmoxve.ContainerLegacy(
            name, container_legacy_args(args),
            opts=container_options(args, parent=self, depends_on=depends_on))
        self.vm_id = self.resource.vm_id
        self.ip = args.ip
        self.register_outputs({"vm_id": self.resource.vm_id, "ip": args.ip, "id": self.resource.id})
