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
    ContainerLegacyNetworkInterfaceArgs,
    ContainerLegacyOperatingSystemArgs,
    ContainerLegacyStartupArgs,
)

from bluegreen.changes import frozen_fields
from bluegreen.topology import Container, Topology

CONTAINER_TYPE = "bluegreen:proxmox:Container"

# PVE never returns the template a container was built from nor its initial user account, and
# `unprivileged` cannot change in place: declaring them on an adopted container would force a
# replacement of a production host. Camel-case property paths: Pulumi translates only top-level
# snake_case names, never nested paths.
ADOPTED_IGNORE_CHANGES = ("operatingSystem", "initialization.userAccount", "unprivileged")


@dataclass(frozen=True)
class Startup:
    """PVE boot order: lower starts first; `up_delay` seconds pass before the next one starts."""

    order: int
    up_delay: int


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

    @classmethod
    def from_topology(cls, topology: Topology, container: Container, *,
                      public_keys: Sequence[str],
                      template_file_id: pulumi.Input[str] | None = None) -> ProxmoxContainerArgs:
        """`public_keys` are key texts (already read from `file:` entries); the template id
        defaults to the file assumed present on the node's storage."""
        px = topology.proxmox
        return cls(
            node=px.node,
            vmid=container.vmid,
            hostname=container.name,
            role=container.role,
            color=container.color,
            address=str(container.interface),
            gateway=px.gateway,
            bridge=px.bridge,
            dns_servers=tuple(px.dns_servers),
            dns_domain=px.dns_domain,
            cores=container.cores,
            memory=container.memory,
            swap=container.swap,
            datastore=px.datastore,
            disk_size=container.disk,
            template_file_id=template_file_id if template_file_id is not None else px.template.file_id,
            public_keys=tuple(public_keys),
            tags=container.tags,
            existing=container.existing,
            frozen=frozen_fields(topology, container),
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
    def startup(self) -> Startup:
        return STARTUP_BY_ROLE[self.role]


def normalized_tags(tags: Iterable[str]) -> list[str]:
    """PVE stores tags lowercased and sorted: anything else shows a diff on every preview."""
    return sorted({tag.lower() for tag in tags})


def container_legacy_args(args: ProxmoxContainerArgs) -> ContainerLegacyArgs:
    """The inputs of the `ContainerLegacy` resource: every value the provider would otherwise
    default is declared, so an adopted container shows no spurious diff."""
    ipv4 = ContainerLegacyInitializationIpConfigIpv4Args(address=args.address, gateway=args.gateway)
    return ContainerLegacyArgs(
        node_name=args.node,
        vm_id=args.vmid,
        unprivileged=True,
        started=True,
        start_on_boot=True,
        protection=args.is_database,
        startup=ContainerLegacyStartupArgs(order=args.startup.order, up_delay=args.startup.up_delay),
        tags=normalized_tags(args.tags),
        cpu=ContainerLegacyCpuArgs(cores=args.cores),
        memory=ContainerLegacyMemoryArgs(dedicated=args.memory, swap=args.swap),
        disk=ContainerLegacyDiskArgs(datastore_id=args.datastore, size=args.disk_size),
        network_interfaces=[
            ContainerLegacyNetworkInterfaceArgs(name="eth0", bridge=args.bridge, firewall=True)],
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
        features=ContainerLegacyFeaturesArgs(nesting=True),
    )


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
        protect=args.is_database,
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
