"""One Proxmox LXC container of the estate, new or adopted, as a Pulumi component.

Its inputs are `bluegreen.model.ctinputs.declared_inputs`, the same function `bluegreen plan
--changes` compares with PVE, and its options (import, retain on delete, ignore_changes) are the
container's `Lifecycle` there: what the program declares and what the automation reports can
never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_proxmoxve as proxmoxve
from pulumi_proxmoxve import ContainerLegacyArgs

from bluegreen.model.ctinputs import (
    STARTUP_BY_ROLE,
    Lifecycle,
    declared_inputs,
    lifecycle,
    normalized_tags,
)
from bluegreen.model.resources import CONTAINER_COMPONENT_TYPE
from bluegreen.model.topology import Container, Topology

CONTAINER_TYPE = CONTAINER_COMPONENT_TYPE
__all__ = ("CONTAINER_TYPE", "STARTUP_BY_ROLE", "ProxmoxContainer", "ProxmoxContainerArgs", "container_legacy_args",
           "container_options", "normalized_tags")


@dataclass(frozen=True)
class ProxmoxContainerArgs:
    """Everything one container declares: the topology's container, its inputs (engine shape; the
    template id may be an output of the download), and its lifecycle in this run."""

    container: Container
    node: str
    inputs: Mapping[str, Any]
    life: Lifecycle
    public_keys: tuple[str, ...]
    template_file_id: pulumi.Input[str]

    @classmethod
    def from_topology(cls, topology: Topology, container: Container, *, public_keys: Sequence[str],
                      template_file_id: pulumi.Input[str] | None = None, live: str | None = None,
                      rebuild: tuple[int, str] | None = None, switch_run: bool = False) -> ProxmoxContainerArgs:
        """`public_keys` are key texts (already read from `file:` entries); the template id defaults
        to the file assumed present on the node's storage; `live` is the colour HAProxy serves
        (None: unknown, so both colours are protected)."""
        template = template_file_id if template_file_id is not None else topology.proxmox.template.file_id
        return cls(container=container, node=topology.proxmox.node,
                   inputs=declared_inputs(topology, container, public_keys=public_keys, template_file_id=template),
                   life=lifecycle(topology, container, live=live, rebuild=rebuild, switch_run=switch_run),
                   public_keys=tuple(public_keys), template_file_id=template)

    @property
    def vmid(self) -> int:
        return self.container.vmid

    @property
    def role(self) -> str:
        return self.container.role

    @property
    def color(self) -> str | None:
        return self.container.color

    @property
    def hostname(self) -> str:
        return str(self.inputs["initialization"]["hostname"])

    @property
    def address(self) -> str:
        return str(self.container.interface)

    @property
    def gateway(self) -> str:
        return str(self.inputs["initialization"]["ipConfigs"][0]["ipv4"]["gateway"])

    @property
    def ip(self) -> str:
        return self.container.ip

    @property
    def is_database(self) -> bool:
        return self.role == "database"

    @property
    def import_id(self) -> str | None:
        """The id `pulumi import` takes for this container, when it is adopted."""
        return self.life.import_id

    @property
    def protected(self) -> bool:
        return bool(self.inputs["protection"])


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def container_legacy_args(args: ProxmoxContainerArgs) -> ContainerLegacyArgs:
    """The `ContainerLegacy` inputs: top-level names as the SDK's arguments, nested blocks as
    the engine's camelCase dictionaries (the SDK passes those through unchanged)."""
    kwargs: dict[str, Any] = {_snake(k): v for k, v in args.inputs.items()}
    return ContainerLegacyArgs(**kwargs)


def container_options(args: ProxmoxContainerArgs, *, parent: pulumi.Resource,
                      depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.ResourceOptions:
    """Adoption, protection and replacement rules (`Lifecycle`, model/ctinputs.py).

    The database is protected in Pulumi as in PVE, adopted or not. The vmid is fixed: PVE refuses
    to create a second CT with it, so a replacement (a rebuild, a new template or key set) must
    delete the old container first.
    """
    life = args.life
    return pulumi.ResourceOptions(
        parent=parent,
        depends_on=list(depends_on),
        protect=args.is_database or args.protected,
        import_=life.import_id,
        ignore_changes=list(life.ignore_changes) or None,
        retain_on_delete=True if life.retain_on_delete else None,
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
