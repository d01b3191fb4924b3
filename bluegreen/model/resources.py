"""The names and types the Pulumi program gives its resources, and the URNs the engine derives.

Pure facts shared by the program (`components/`) and the automation (`hosts.pulumi`), which
targets resources by URN: one place, so a renamed resource cannot leave a switch or a rebuild
targeting nothing.

A URN is `urn:pulumi:<stack>::<project>::<qualified type>::<name>`, the qualified type being the
types of the parents (the root stack left out) and the resource's own, joined by `$`
(pulumi/pulumi `sdk/go/common/resource/urn.go`, `NewURN`; `sdk/python/lib/pulumi/resource.py`,
`create_urn`).
"""

from __future__ import annotations

from dataclasses import dataclass

from bluegreen.model.topology import COLORS, Container, Topology

CONTAINER_TYPE = "proxmoxve:index/containerLegacy:ContainerLegacy"
CONTAINER_COMPONENT_TYPE = "bluegreen:proxmox:Container"
TEMPLATE_COMPONENT_TYPE = "bluegreen:proxmox:ContainerTemplate"
TEMPLATE_FILE_TYPE = "proxmoxve:download/file:File"
HOST_CONFIGURATION_TYPE = "bluegreen:hosts:HostConfiguration"
ROLE_TYPES = {"database": "bluegreen:estate:DatabaseHost", "app": "bluegreen:estate:AppHost",
              "loadbalancer": "bluegreen:estate:LoadBalancer"}

# `class X(pulumi.dynamic.Resource, module="bluegreen", name=N)` registers
# `pulumi-python:dynamic/bluegreen:N` (sdk/python/lib/pulumi/dynamic/dynamic.py, __init_subclass__).
DYNAMIC_PREFIX = "pulumi-python:dynamic/bluegreen:"
BOOTSTRAP_TYPE = DYNAMIC_PREFIX + "Bootstrap"
APP_ENV_TYPE = DYNAMIC_PREFIX + "AppEnv"
ECOSYSTEM_TYPE = DYNAMIC_PREFIX + "Pm2Ecosystem"
DATABASE_TYPE = DYNAMIC_PREFIX + "PostgresDatabase"
HAPROXY_TYPE = DYNAMIC_PREFIX + "HaproxyConfig"
ROUTING_TYPE = DYNAMIC_PREFIX + "LiveColorRouting"

# Top-level and always this name, so a switch can target it without knowing the component tree.
ROUTING_RESOURCE_NAME = "live-color-routing"


def bare_stack(stack: str) -> str:
    """URNs carry the bare stack name, also for `org/project/stack` names."""
    return stack.rsplit("/", 1)[-1]


def urn(stack: str, project: str, qualified_type: str, name: str) -> str:
    return f"urn:pulumi:{bare_stack(stack)}::{project}::{qualified_type}::{name}"


def routing_urn(stack: str, project: str) -> str:
    return urn(stack, project, ROUTING_TYPE, ROUTING_RESOURCE_NAME)


def host_configuration_name(t: Topology) -> str:
    return f"{t.stack}-hosts"


# The host-configuration resources by kind (a provider each: `hosts.resources.PROVIDERS`).
KIND_TYPES = {"bootstrap": BOOTSTRAP_TYPE, "postgres-database": DATABASE_TYPE, "haproxy-config": HAPROXY_TYPE,
              "live-color-routing": ROUTING_TYPE, "app-env": APP_ENV_TYPE, "pm2-ecosystem": ECOSYSTEM_TYPE}


@dataclass(frozen=True)
class HostResource:
    """One host-configuration resource: its kind, Pulumi name, host and what it waits for. Each is
    replaced with its host's container when the program owns that container (`replace_with`)."""

    kind: str  # a key of KIND_TYPES
    name: str  # the Pulumi resource name
    host: Container
    after: tuple[str, ...] = ()  # names of the resources (of this list) it waits for
    top_level: bool = False  # registered without a parent: its URN must not depend on the component
    color: str | None = None

    @property
    def type(self) -> str:
        return KIND_TYPES[self.kind]


def bootstrap_name(c: Container) -> str:
    return f"{c.name}-bootstrap"


def app_env_name(c: Container) -> str:
    return f"{c.name}-app-env"


def ecosystem_name(c: Container) -> str:
    return f"{c.name}-pm2-ecosystem"


def database_resource_name(c: Container) -> str:
    return f"{c.name}-database"


def haproxy_resource_name(c: Container) -> str:
    return f"{c.name}-haproxy"


def host_resources(t: Topology) -> list[HostResource]:
    """Every host-configuration resource of the stack, in the order they are applied: ONE list,
    registered by the Pulumi program (components/hostconfig.py), applied and planned without the
    engine (ops/configure.py: the lab, a rebuilt host, `bluegreen plan`), targeted by a rebuild."""
    boot = {c.vmid: bootstrap_name(c) for c in t.containers}
    db, lb = t.database_host, t.load_balancer
    database = HostResource("postgres-database", database_resource_name(db), db, after=(boot[db.vmid],))
    haproxy = HostResource("haproxy-config", haproxy_resource_name(lb), lb, after=(boot[lb.vmid],))
    resources = [HostResource("bootstrap", boot[c.vmid], c) for c in t.containers]
    resources += [database, haproxy,
                  HostResource("live-color-routing", ROUTING_RESOURCE_NAME, lb, after=(haproxy.name,),
                               top_level=True)]
    envs = {}
    for color in COLORS:
        host = t.app_host(color)
        envs[color] = HostResource("app-env", app_env_name(host), host, after=(boot[host.vmid],), color=color)
    resources += envs.values()
    resources += [HostResource("pm2-ecosystem", ecosystem_name(t.app_host(color)), t.app_host(color),
                               after=(boot[t.app_host(color).vmid], database.name, envs[color].name), color=color)
                  for color in COLORS]
    return resources


def container_resources(t: Topology, c: Container) -> list[HostResource]:
    """The host configuration that lives on `c` (replaced with it, targeted with it), the top-level
    routing aside (a rebuild of the load balancer targets it by its own URN)."""
    return [r for r in host_resources(t) if r.host.vmid == c.vmid and not r.top_level]


def host_resource_urn(t: Topology, project: str, resource: HostResource) -> str:
    """Host resources are children of the `HostConfiguration` component (top-level)."""
    return urn(t.stack, project, f"{HOST_CONFIGURATION_TYPE}${resource.type}", resource.name)


def container_urn(t: Topology, project: str, c: Container) -> str:
    """Role component > Container component > the provider's resource, all named after the host."""
    chain = f"{ROLE_TYPES[c.role]}${CONTAINER_COMPONENT_TYPE}${CONTAINER_TYPE}"
    return urn(t.stack, project, chain, c.name)


def template_name(t: Topology) -> str:
    return f"{t.proxmox.node}-{t.proxmox.template.file}"


def template_urns(t: Topology, project: str) -> tuple[str, str]:
    """(the ContainerTemplate component, its download.File child)."""
    name = template_name(t)
    return (urn(t.stack, project, TEMPLATE_COMPONENT_TYPE, name),
            urn(t.stack, project, f"{TEMPLATE_COMPONENT_TYPE}${TEMPLATE_FILE_TYPE}", name))
