"""The three roles of the estate, each a component owning its container.

Boot order is enforced twice: by PVE (`startup.order` in each container) when the node boots,
and by Pulumi (`depends_on`) when containers are created: apps after the database, the load
balancer after both apps. The dependencies are declared for adopted containers too: there they
only order the imports and, more usefully, deletions (load balancer first, database last), and
one graph for every stack keeps lab and prod previews alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi

from bluegreen.model.resources import ROLE_TYPES

from .container import ProxmoxContainer, ProxmoxContainerArgs

DATABASE_HOST_TYPE = ROLE_TYPES["database"]
APP_HOST_TYPE = ROLE_TYPES["app"]
LOAD_BALANCER_TYPE = ROLE_TYPES["loadbalancer"]


def _require_role(args: ProxmoxContainerArgs, role: str) -> None:
    if args.role != role:
        raise ValueError(f"container {args.vmid} has role {args.role!r}, expected {role!r}")


@dataclass(frozen=True)
class DatabaseHostArgs:
    container: ProxmoxContainerArgs

    def __post_init__(self) -> None:
        _require_role(self.container, "database")


@dataclass(frozen=True)
class AppHostArgs:
    container: ProxmoxContainerArgs
    database: DatabaseHost

    def __post_init__(self) -> None:
        _require_role(self.container, "app")
        if self.container.color is None:
            raise ValueError(f"app container {self.container.vmid} has no colour")

    @property
    def color(self) -> str:
        assert self.container.color is not None  # checked in __post_init__
        return self.container.color


@dataclass(frozen=True)
class LoadBalancerArgs:
    container: ProxmoxContainerArgs
    apps: Sequence[AppHost]

    def __post_init__(self) -> None:
        _require_role(self.container, "loadbalancer")


class RoleHost(pulumi.ComponentResource):
    """What every role has: its container, and the address the others reach it at."""

    container: ProxmoxContainer
    role: str
    ip: str
    vm_id: pulumi.Output[int]

    def __init__(self, type_: str, name: str, container: ProxmoxContainerArgs,
                 opts: pulumi.ResourceOptions | None, start_after: Sequence[pulumi.Resource]) -> None:
        super().__init__(type_, name, None, opts)
        self.role = container.role
        self.ip = container.ip
        self.container = ProxmoxContainer(name, container, pulumi.ResourceOptions(parent=self),
                                          depends_on=start_after)
        self.vm_id = self.container.vm_id
        self.register_outputs({"vm_id": self.container.vm_id, "ip": container.ip, "role": container.role})


class DatabaseHost(RoleHost):
    """PostgreSQL, shared by both colours."""

    def __init__(self, name: str, args: DatabaseHostArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(DATABASE_HOST_TYPE, name, args.container, opts, start_after=())


class AppHost(RoleHost):
    """One colour of the app."""

    color: str

    def __init__(self, name: str, args: AppHostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        self.color = args.color
        super().__init__(APP_HOST_TYPE, name, args.container, opts, start_after=[args.database])


class LoadBalancer(RoleHost):
    """HAProxy in front of both colours; it also keeps the deployment journal."""

    def __init__(self, name: str, args: LoadBalancerArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(LOAD_BALANCER_TYPE, name, args.container, opts, start_after=list(args.apps))
