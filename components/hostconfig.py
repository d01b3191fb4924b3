"""Host configuration as Pulumi dynamic resources: bootstrap, PostgreSQL, HAProxy, routing, PM2.

The CRUD logic lives in `bluegreen.providers` (plain dicts in and out, no Pulumi); the classes
here only translate to and from `pulumi.dynamic`. The engine pickles each provider object with
dill and runs it in a separate process, so the providers hold nothing but a reference to their
logic class (importable from the installed package) and connect over SSH inside each call.

`HostConfiguration` builds them all for a topology. The routing resource is the exception to
`parent=self`: it is top-level and always named `live-color-routing`, so the switch can target
its URN (`ROUTING_TYPE` below) in a `pulumi up --target` without knowing the component tree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, cast

import pulumi
import pulumi.dynamic as dyn
from pulumi.runtime import rpc

from bluegreen.model import resources
from bluegreen.model.errors import ConfigError
from bluegreen.model.resources import HOST_CONFIGURATION_TYPE, ROUTING_RESOURCE_NAME, ROUTING_TYPE
from bluegreen.model.sensitive import Sensitive
from bluegreen.model.topology import COLORS, Container, Topology

if TYPE_CHECKING:
    from .estate import Estate
from bluegreen.hosts import hostconfig, providers
from bluegreen.hosts.resources import resource_props
from bluegreen.model.resources import HostResource, host_resources
from bluegreen.model.secrets import Secrets

# dynamic.Resource registers `pulumi-python:dynamic/<module>:<name>` (model/resources.py).
routing_urn = resources.routing_urn


# --------------------------------------------------------------------------- providers


def _has_unknowns(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_has_unknowns(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_unknowns(v) for v in value)
    return bool(value == rpc.UNKNOWN)


class _HostDynamicProvider(dyn.ResourceProvider):
    """Adapts a `bluegreen.providers.HostProvider` to the engine's calls."""

    logic_class: ClassVar[type[providers.HostProvider]]

    def _logic(self) -> providers.HostProvider:
        return self.logic_class()

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dyn.CheckResult:
        if _has_unknowns(news):
            # A preview before dependencies exist: create/update validate again with real values.
            return dyn.CheckResult(news, [])
        failures = [dyn.CheckFailure(self.logic_class.kind, problem) for problem in self._logic().check(news)]
        return dyn.CheckResult(news, failures)

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.DiffResult:
        report = self._logic().diff(id_, olds, news)
        return dyn.DiffResult(changes=report.changes, replaces=report.replaces,
                              delete_before_replace=report.delete_before_replace)

    def create(self, props: dict[str, Any]) -> dyn.CreateResult:
        created = self._logic().create(props)
        return dyn.CreateResult(id_=created.id, outs=created.outs)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.UpdateResult:
        return dyn.UpdateResult(outs=self._logic().update(id_, olds, news))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        self._logic().delete(id_, props)

    def read(self, id_: str, props: dict[str, Any]) -> dyn.ReadResult:
        found = self._logic().read(id_, props)
        return dyn.ReadResult(id_=found.id, outs=found.outs)


class BootstrapDynamicProvider(_HostDynamicProvider):
    logic_class = providers.BootstrapProvider


class PostgresDatabaseDynamicProvider(_HostDynamicProvider):
    logic_class = providers.PostgresDatabaseProvider


class HaproxyConfigDynamicProvider(_HostDynamicProvider):
    logic_class = providers.HaproxyConfigProvider


class LiveColorRoutingDynamicProvider(_HostDynamicProvider):
    logic_class = providers.LiveColorRoutingProvider


class Pm2EcosystemDynamicProvider(_HostDynamicProvider):
    logic_class = providers.Pm2EcosystemProvider


class AppEnvDynamicProvider(_HostDynamicProvider):
    logic_class = providers.AppEnvProvider


# --------------------------------------------------------------------------- resources


class Bootstrap(dyn.Resource, module="bluegreen", name="Bootstrap"):
    """The host's bootstrap script, re-run whenever it changes."""

    script_sha256: pulumi.Output[str]

    def __init__(self, name: str, props: Mapping[str, Any],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(BootstrapDynamicProvider(), name, {**props, "script_sha256": None}, opts)


class PostgresDatabase(dyn.Resource, module="bluegreen", name="PostgresDatabase"):
    """The app's role and database (SQL, secret) and the managed pg_hba block."""

    sql: pulumi.Output[str]
    hba: pulumi.Output[str]

    def __init__(self, name: str, props: Mapping[str, Any],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        # The SQL carries the password: keep it encrypted in the state, not only in the inputs.
        secret = pulumi.ResourceOptions(additional_secret_outputs=["sql"])
        super().__init__(PostgresDatabaseDynamicProvider(), name, dict(props),
                         pulumi.ResourceOptions.merge(opts, secret))


class HaproxyConfig(dyn.Resource, module="bluegreen", name="HaproxyConfig"):
    """haproxy.cfg, validated by HAProxy before it replaces the live file; reloaded hitlessly."""

    config_sha256: pulumi.Output[str]

    def __init__(self, name: str, props: Mapping[str, Any],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(HaproxyConfigDynamicProvider(), name, {**props, "config_sha256": None}, opts)


class LiveColorRouting(dyn.Resource, module="bluegreen", name="LiveColorRouting"):
    """Which colour serves: a runtime `set map` plus the map file. Refresh reads HAProxy's memory."""

    live_color: pulumi.Output[str]
    live_backend: pulumi.Output[str]

    def __init__(self, name: str, props: Mapping[str, Any],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(LiveColorRoutingDynamicProvider(), name, {**props, "live_backend": None}, opts)


class Pm2Ecosystem(dyn.Resource, module="bluegreen", name="Pm2Ecosystem"):
    """One colour's PM2 ecosystem file; PM2 reloads it when a release is deployed there."""

    ecosystem_sha256: pulumi.Output[str]

    def __init__(self, name: str, props: Mapping[str, Any],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(Pm2EcosystemDynamicProvider(), name, {**props, "ecosystem_sha256": None}, opts)


class AppEnv(dyn.Resource, module="bluegreen", name="AppEnv"):
    """One colour's shared/.env (DATABASE_URL and `app.env`), secret in the state, 0600 on the host."""

    content_sha256: pulumi.Output[str]

    def __init__(self, name: str, props: Mapping[str, Any],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        # The digest too: a sha256 of a short .env (one password, a few keys) can be searched for.
        secret = pulumi.ResourceOptions(additional_secret_outputs=["content", "content_sha256"])
        super().__init__(AppEnvDynamicProvider(), name, {**props, "content_sha256": None},
                         pulumi.ResourceOptions.merge(opts, secret))


# --------------------------------------------------------------------------- the component


def bootstrap_inputs(t: Topology, c: Container, created_by_program: bool | None = None) -> dict[str, Any]:
    """`providers.bootstrap_props`, plus: trust the new host key of a container the program
    creates (never of an adopted one) when the bootstrap is created with it."""
    created = not c.existing if created_by_program is None else created_by_program
    return {**providers.bootstrap_props(t, c), "trust_new_host_key": created}


def _render_sql(t: Topology, password: str) -> str:
    from bluegreen.render.postgres import render_database_sql

    return render_database_sql(t, Sensitive(password))


def postgres_inputs(t: Topology, db_password: pulumi.Input[str]) -> dict[str, Any]:
    """`providers.postgres_props` with the SQL rendered from a (secret) Pulumi input."""
    from bluegreen.render.postgres import render_pg_hba

    db = t.database_host
    rendered: pulumi.Output[str] = pulumi.Output.from_input(db_password).apply(lambda p: _render_sql(t, p))
    sql: pulumi.Output[str] = pulumi.Output.secret(rendered)
    return {"connection": providers.connection_props(t, db), "sql": sql, "hba": render_pg_hba(t),
            "socket_dir": db.path(hostconfig.PG_SOCKET_DIR), "port": t.database.port}


def app_env_secrets(t: Topology) -> dict[str, Sensitive]:
    """The `app.env` secrets: Pulumi secret config `bluegreen:<name>` first (`bluegreen.appenv`)."""
    from bluegreen.model.secrets import resolve_secrets

    return resolve_secrets(t, config_secret=pulumi.Config("bluegreen").get)


def app_env_inputs(t: Topology, color: str, db_password: pulumi.Input[str],
                   resolved: Mapping[str, Sensitive]) -> dict[str, Any]:
    """`AppEnv` props: the variables of shared/.env the stack manages (`render.appenv`), rendered
    from the password and the `app.env` secrets, the whole text a secret."""
    from bluegreen.render.appenv import render_env

    host = t.app_host(color)
    rendered: pulumi.Output[str] = pulumi.Output.from_input(db_password).apply(
        lambda p: render_env(t, host, Sensitive(p), resolved).reveal())
    content: pulumi.Output[str] = pulumi.Output.secret(rendered)
    return providers.app_env_props(t, color, content)


@dataclass(frozen=True)
class HostConfigurationArgs:
    topology: Topology
    db_password: pulumi.Input[str]
    # What each host's configuration waits for (its container), by vmid.
    hosts: Mapping[int, pulumi.Resource] = field(default_factory=dict)
    # The container resources the program creates (or owns), by vmid: every resource configured on
    # such a container is replaced with it (`replace_with`, Pulumi >= 3.207), deleted before it is
    # created again. Adopted containers are never replaced by the program, so nothing is tied to them.
    containers: Mapping[int, pulumi.Resource] = field(default_factory=dict)
    # The resolved `app.env` secrets by variable name (None: resolved from the stack config).
    app_secrets: Mapping[str, Sensitive] | None = None
    # The colour HAProxy serves now (None: unknown): its PM2 ecosystem is never reloaded in place.
    live: str | None = None


class HostConfiguration(pulumi.ComponentResource):
    bootstraps: dict[int, Bootstrap]
    database: PostgresDatabase
    haproxy: HaproxyConfig
    routing: LiveColorRouting
    ecosystems: dict[str, Pm2Ecosystem]
    app_envs: dict[str, AppEnv]

    def __init__(self, name: str, args: HostConfigurationArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(HOST_CONFIGURATION_TYPE, name, None, opts)
        t = args.topology

        app_secrets = args.app_secrets if args.app_secrets is not None else app_env_secrets(t)
        # One list for the program and everything that configures hosts without it (the lab,
        # `bluegreen plan`, a rebuilt host): `model.resources.host_resources`.
        listed = host_resources(t)
        registered: dict[str, pulumi.Resource] = {}
        for resource in listed:
            registered[resource.name] = RESOURCE_CLASSES[resource.kind](
                resource.name, self._inputs(resource, args, app_secrets), self._options(resource, args, registered))

        def of_kind(kind: str) -> list[HostResource]:
            return [r for r in listed if r.kind == kind]

        self.bootstraps = {r.host.vmid: cast(Bootstrap, registered[r.name]) for r in of_kind("bootstrap")}
        self.database = cast(PostgresDatabase, registered[of_kind("postgres-database")[0].name])
        self.haproxy = cast(HaproxyConfig, registered[of_kind("haproxy-config")[0].name])
        self.routing = cast(LiveColorRouting, registered[of_kind("live-color-routing")[0].name])
        self.app_envs = {r.color or "": cast(AppEnv, registered[r.name]) for r in of_kind("app-env")}
        self.ecosystems = {r.color or "": cast(Pm2Ecosystem, registered[r.name]) for r in of_kind("pm2-ecosystem")}
        self.register_outputs({
            "live_color": self.routing.live_color,
            "live_backend": self.routing.live_backend,
            "haproxy_config_sha256": self.haproxy.config_sha256,
            "bootstrap_sha256": {str(vmid): b.script_sha256 for vmid, b in self.bootstraps.items()},
            "ecosystem_sha256": {color: e.ecosystem_sha256 for color, e in self.ecosystems.items()},
        })

    def _inputs(self, resource: HostResource, args: HostConfigurationArgs,
                app_secrets: Mapping[str, Sensitive]) -> dict[str, Any]:
        t = args.topology
        if resource.kind == "bootstrap":
            return bootstrap_inputs(t, resource.host, created_by_program=resource.host.vmid in args.containers)
        if resource.kind == "postgres-database":
            return postgres_inputs(t, args.db_password)
        if resource.kind == "app-env":
            return app_env_inputs(t, resource.color or "", args.db_password, app_secrets)
        if resource.kind == "pm2-ecosystem":  # the colour HAProxy serves now is never reloaded
            return providers.ecosystem_props(t, resource.color or "", live=args.live)
        return resource_props(t, resource, Secrets(Sensitive("")))  # no secret in these

    def _options(self, resource: HostResource, args: HostConfigurationArgs,
                 registered: Mapping[str, pulumi.Resource]) -> pulumi.ResourceOptions:
        """Waits for what `resource.after` names (a bootstrap: for its container); a top-level one
        has no parent; each is replaced with its host's container when the program owns that
        container (deleted first), so a new container never keeps the old one's configuration."""
        waits: list[pulumi.Resource] = [registered[name] for name in resource.after]
        host = args.hosts.get(resource.host.vmid)
        if resource.kind == "bootstrap" and host is not None:
            waits.append(host)
        opts = pulumi.ResourceOptions(depends_on=waits) if resource.top_level else \
            pulumi.ResourceOptions(parent=self, depends_on=waits)
        container = args.containers.get(resource.host.vmid)
        if container is not None:
            opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
                replace_with=[container], delete_before_replace=True))
        return opts


RESOURCE_CLASSES: dict[str, Any] = {  # kind -> the dynamic resource class (each takes name, props, opts)
    "bootstrap": Bootstrap, "postgres-database": PostgresDatabase, "haproxy-config": HaproxyConfig,
    "live-color-routing": LiveColorRouting, "app-env": AppEnv, "pm2-ecosystem": Pm2Ecosystem,
}


def database_password(t: Topology) -> pulumi.Output[str]:
    """`bluegreen:databasePassword` (secret config), else the environment variable `database.passwordEnv`."""
    from bluegreen.model.secrets import database_password_outside_engine

    configured = pulumi.Config("bluegreen").get_secret("databasePassword")
    if configured is not None:
        return configured
    value = database_password_outside_engine(t)
    if not value:
        raise ConfigError(
            f"no database password: run pulumi config set --secret bluegreen:databasePassword ... "
            f"--stack {t.stack}, or set {t.database.password_env}")
    return pulumi.Output.secret(value)


def configure_hosts(t: Topology, estate: Estate, db_password: pulumi.Input[str] | None = None,
                    opts: pulumi.ResourceOptions | None = None, *,
                    app_secrets: Mapping[str, Sensitive] | None = None, live: str | None = None) -> HostConfiguration:
    """The host configuration of `estate`, each host waiting for its container."""
    hosts: dict[int, pulumi.Resource] = {t.database_host.vmid: estate.database,
                                         t.load_balancer.vmid: estate.load_balancer}
    hosts.update({t.app_host(color).vmid: estate.apps[color] for color in COLORS})
    # Adopted containers are never replaced by the program (retain_on_delete, ignore_changes).
    containers: dict[int, pulumi.Resource] = {
        host.container.args.vmid: host.container.resource for host in estate.hosts()
        if host.container.args.life.created_by_program}
    password = db_password if db_password is not None else database_password(t)
    return HostConfiguration(resources.host_configuration_name(t),
                             HostConfigurationArgs(t, password, hosts, containers, app_secrets, live), opts)


__all__: Sequence[str] = (
    "ROUTING_RESOURCE_NAME", "ROUTING_TYPE", "AppEnv", "Bootstrap", "HaproxyConfig", "HostConfiguration",
    "HostConfigurationArgs", "LiveColorRouting", "Pm2Ecosystem", "PostgresDatabase", "app_env_secrets",
    "configure_hosts", "database_password", "routing_urn",
)
