"""The host configuration's resources as providers and props: each entry of the ONE list
(`model.resources.host_resources`, which the Pulumi program registers) has its provider here
(`PROVIDERS[kind]`, the CRUD logic of `hosts.providers`) and its props outside the engine, so what
the lab applies and `bluegreen plan` shows is what `pulumi up` registers.
"""

from __future__ import annotations

from typing import Any

from bluegreen.hosts import providers
from bluegreen.model.resources import HostResource
from bluegreen.model.secrets import Secrets
from bluegreen.model.topology import Topology
from bluegreen.render.appenv import render_env

PROVIDERS: dict[str, type[providers.HostProvider]] = {
    provider.kind: provider for provider in (
        providers.BootstrapProvider, providers.PostgresDatabaseProvider, providers.HaproxyConfigProvider,
        providers.LiveColorRoutingProvider, providers.AppEnvProvider, providers.Pm2EcosystemProvider)
}
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
