"""The host configuration's resources: ONE list, read by the Pulumi program (`components/
hostconfig.py` registers a dynamic resource per entry) and by everything that configures hosts
without the engine (`ops.configure.apply_estate` for the lab and a rebuilt host, `plan_estate`
for `bluegreen plan`). What the lab rehearses is therefore what `pulumi up` registers: a resource
added here is applied, planned and registered alike, and cannot be left out of one of them.

Each entry names its provider (`PROVIDERS[kind]`, the CRUD logic of `hosts.providers`), its
Pulumi name, its host, the resources it waits for, and whether it is replaced with its container.
The order is the order `apply_estate` applies them in (a dependency always comes first).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bluegreen.hosts import providers
from bluegreen.model.secrets import Secrets
from bluegreen.model.topology import COLORS, Container, Topology
from bluegreen.render.appenv import render_env

PROVIDERS: dict[str, type[providers.HostProvider]] = {
    provider.kind: provider for provider in (
        providers.BootstrapProvider, providers.PostgresDatabaseProvider, providers.HaproxyConfigProvider,
        providers.LiveColorRoutingProvider, providers.AppEnvProvider, providers.Pm2EcosystemProvider)
}
ROUTING_RESOURCE_NAME = "live-color-routing"


@dataclass(frozen=True)
class HostResource:
    kind: str  # a key of PROVIDERS
    name: str  # the Pulumi resource name
    host: Container
    after: tuple[str, ...] = ()  # names of the resources (of this list) it waits for
    with_container: bool = False  # replaced with its container (`replace_with`), deleted first
    top_level: bool = False  # registered without a parent: its URN must not depend on the component
    color: str | None = None


def host_resources(t: Topology) -> list[HostResource]:
    """Every host-configuration resource of the stack, in the order they are applied."""
    boot = {c.vmid: f"{c.name}-bootstrap" for c in t.containers}
    db, lb = t.database_host, t.load_balancer
    database = HostResource("postgres-database", f"{db.name}-database", db, after=(boot[db.vmid],))
    haproxy = HostResource("haproxy-config", f"{lb.name}-haproxy", lb, after=(boot[lb.vmid],))
    resources = [HostResource("bootstrap", boot[c.vmid], c, with_container=True) for c in t.containers]
    resources += [database, haproxy,
                  HostResource("live-color-routing", ROUTING_RESOURCE_NAME, lb, after=(haproxy.name,),
                               top_level=True)]
    envs = {}
    for color in COLORS:
        host = t.app_host(color)
        envs[color] = HostResource("app-env", f"{host.name}-app-env", host, after=(boot[host.vmid],),
                                   with_container=True, color=color)
    resources += envs.values()
    resources += [HostResource("pm2-ecosystem", f"{t.app_host(color).name}-pm2-ecosystem", t.app_host(color),
                               after=(boot[t.app_host(color).vmid], database.name, envs[color].name),
                               with_container=True, color=color) for color in COLORS]
    return resources


def resource_props(t: Topology, resource: HostResource, secrets: Secrets) -> dict[str, Any]:
    """A resource's props outside the engine, from plain secrets (the engine builds the secret
    ones from its own secret outputs, the rest alike)."""
    host = resource.host
    if resource.kind == "bootstrap":
        return providers.bootstrap_props(t, host)
    if resource.kind == "postgres-database":
        return providers.postgres_props(t, secrets.db_password)
    if resource.kind == "haproxy-config":
        return providers.haproxy_config_props(t)
    if resource.kind == "live-color-routing":
        return providers.routing_props(t)
    if resource.kind == "app-env":
        return providers.app_env_props(t, resource.color or "", render_env(t, host, secrets.db_password,
                                                                            secrets.app).reveal())
    if resource.kind == "pm2-ecosystem":
        return providers.ecosystem_props(t, resource.color or "")
    raise ValueError(f"no props for a {resource.kind!r} resource")


def by_name(t: Topology) -> Mapping[str, HostResource]:
    return {r.name: r for r in host_resources(t)}
