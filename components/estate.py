"""The whole estate of one stack: template, database, both colours, load balancer.

`build_estate` is everything `__main__.py` registers; `stack_outputs` is what it exports,
computed from the topology alone so the automation and the stack outputs agree by construction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from bluegreen.model.config import read_public_keys
from bluegreen.model.resources import template_name
from bluegreen.model.topology import COLORS, Topology

from .container import ProxmoxContainerArgs
from .roles import (
    AppHost,
    AppHostArgs,
    DatabaseHost,
    DatabaseHostArgs,
    LoadBalancer,
    LoadBalancerArgs,
    RoleHost,
)
from .template import ContainerTemplate, ContainerTemplateArgs, needs_download

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Estate:
    topology: Topology
    provider: pulumi.ProviderResource
    template: ContainerTemplate | None
    database: DatabaseHost
    apps: Mapping[str, AppHost]
    load_balancer: LoadBalancer

    def hosts(self) -> list[RoleHost]:
        """Every host, in boot order."""
        return [self.database, *(self.apps[c] for c in COLORS), self.load_balancer]


def build_estate(topology: Topology, provider: pulumi.ProviderResource, *,
                 public_keys: Sequence[str] | None = None, live: str | None = None,
                 rebuild: tuple[int, str] | None = None, switch_run: bool = False) -> Estate:
    """Register the estate's resources, all through `provider`.

    `public_keys` are key texts; when None they are read here from `ssh.publicKeys`, which may
    raise `ConfigError`: callers that must fail before registering anything read them first.
    `live` is the colour HAProxy serves (None: unknown); `rebuild` and `switch_run` say which run
    of the automation this is (`model.ctinputs.lifecycle`).
    """
    keys = list(public_keys) if public_keys is not None else read_public_keys(topology.ssh)
    opts = pulumi.ResourceOptions(provider=provider)

    def args_of(vmid: int, file_id: pulumi.Input[str] | None = None) -> ProxmoxContainerArgs:
        return ProxmoxContainerArgs.from_topology(topology, topology.container(vmid), public_keys=keys,
                                                  template_file_id=file_id, live=live, rebuild=rebuild,
                                                  switch_run=switch_run)

    # Lifecycles first: may raise (a rebuild left half-way) before anything is registered.
    planned = {c.vmid: args_of(c.vmid) for c in topology.containers}
    template: ContainerTemplate | None = None
    template_args = ContainerTemplateArgs.from_topology(topology)
    created = [vmid for vmid, a in planned.items() if a.life.created_by_program]
    if template_args is not None and needs_download(topology, created):
        template = ContainerTemplate(template_name(topology), template_args, opts)
    elif template_args is not None:
        log.debug("every container is adopted: template %s is not downloaded", template_args.file_id)

    def container_args(vmid: int) -> ProxmoxContainerArgs:
        # Adopted containers ignore their template: they must not wait for (or cause) a download.
        if template is not None and planned[vmid].life.created_by_program:
            return args_of(vmid, template.file_id)
        return planned[vmid]

    db = topology.database_host
    database = DatabaseHost(db.name, DatabaseHostArgs(container_args(db.vmid)), opts)
    apps = {
        color: AppHost(host.name, AppHostArgs(container_args(host.vmid), database=database), opts)
        for color, host in sorted(topology.app_hosts.items())
    }
    lb = topology.load_balancer
    load_balancer = LoadBalancer(
        lb.name, LoadBalancerArgs(container_args(lb.vmid), apps=[apps[c] for c in COLORS]), opts)
    return Estate(topology=topology, provider=provider, template=template, database=database,
                  apps=apps, load_balancer=load_balancer)


def stack_outputs(topology: Topology) -> dict[str, Any]:
    """The stack outputs (plain values): what the CLI, the MCP server and people read."""
    return {
        "containers": {
            c.name: {"vmid": c.vmid, "ip": c.ip, "role": c.role, "color": c.color}
            for c in topology.containers
        },
        "liveColor": topology.active_color,
        "standbyColor": topology.standby_color,
        "publicEndpoint": topology.public_url,
        "previewEndpoint": topology.preview_url,
        "databaseAddress": f"{topology.database_host.ip}:{topology.database.port}",
    }
