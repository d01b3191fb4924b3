"""The CRUD logic behind the Pulumi dynamic providers of host configuration (plain dicts in and out)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, ClassVar

from bluegreen.hosts import haproxy, haproxy_cli
from bluegreen.hosts.appenv import observe_env_file, write_env_file
from bluegreen.hosts.executor import Executor, SshExecutor, SshTarget, ssh_target
from bluegreen.hosts.hostconfig import (
    BOOTSTRAP_SCRIPT_PATH,
    ECOSYSTEM_FILE,
    PG_SOCKET_DIR,
    apply_bootstrap,
    apply_ecosystem,
    apply_haproxy_config,
    apply_postgres,
    apply_routing,
    hba_block_present,
    pm2_home,
    read_text,
    secret_modes_drift,
    sha256_of,
    sql_secrets,
)
from bluegreen.model.dotenv import parse_env
from bluegreen.model.errors import BlueGreenError, ConfigError
from bluegreen.model.sensitive import SecretSet, Sensitive
from bluegreen.model.topology import COLORS, Container, Topology
from bluegreen.render.appenv import env_path, secret_names, secret_values
from bluegreen.render.bootstrap import render_bootstrap
from bluegreen.render.haproxy import render_haproxy_cfg, render_live_map
from bluegreen.render.pm2 import render_ecosystem
from bluegreen.render.postgres import render_database_sql, render_pg_hba
from bluegreen.render.secretfiles import render_secret_modes

log = logging.getLogger("bluegreen.providers")
DEFAULT_KNOWN_HOSTS = "~/.config/bluegreen/known_hosts"


# --------------------------------------------------------------------------- connections


def connection_props(t: Topology, container: Container) -> dict[str, Any]:
    """How a provider reaches `container`: plain values only (they end up in the Pulumi state)."""
    target = ssh_target(t, container)
    return {
        "host": container.label,
        "address": target.address,
        "port": target.port,
        "user": target.user,
        "alias": target.alias,
        "identity_file": target.identity_file,
        "known_hosts": target.known_hosts,
        "ssh_config": target.ssh_config,
        "connect_timeout": target.connect_timeout,
        "command_timeout": t.ssh.command_timeout,
    }


def _number(value: Any, key: str) -> float:
    # The engine hands numbers back as floats, sometimes as strings.
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"connection.{key}: expected a number, got {value!r}") from None


def executor_from_props(props: Mapping[str, Any], secrets: Iterable[Sensitive] = ()) -> SshExecutor:
    """A fresh (not yet connected) SSH executor for the resource's host."""
    conn = props.get("connection")
    if not isinstance(conn, Mapping) or not conn.get("address"):
        raise ConfigError("the resource has no connection.address: cannot tell which host to configure")
    target = SshTarget(
        address=str(conn["address"]),
        port=int(_number(conn.get("port") or 22, "port")),
        user=str(conn.get("user") or "root"),
        alias=conn.get("alias") or None,
        identity_file=conn.get("identity_file") or None,
        known_hosts=str(conn.get("known_hosts") or DEFAULT_KNOWN_HOSTS),
        connect_timeout=_number(conn.get("connect_timeout") or 10, "connect_timeout"),
        ssh_config=str(conn.get("ssh_config") or "~/.ssh/config"),
    )
    return SshExecutor(host=str(conn.get("host") or target.address), secrets=SecretSet(secrets),
                       command_timeout=_number(conn.get("command_timeout") or 900, "command_timeout"),
                       target=target)


# --------------------------------------------------------------------------- providers


@dataclass(frozen=True)
class Created:
    """What create/read return: the resource id and its full output properties."""

    id: str
    outs: dict[str, Any]


@dataclass(frozen=True)
class DiffReport:
    changes: bool
    replaces: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    delete_before_replace: bool = False


def _lookup(props: Mapping[str, Any], dotted: str) -> Any:
    value: Any = props
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _normalise(value: Any) -> Any:
    # The engine turns ints into floats; compare 22 and 22.0 as equal.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: _normalise(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return value


class HostProvider:
    """Shared CRUD shape. Subclasses name their inputs and implement `apply` (and maybe `observe`).

    Holds nothing: safe to pickle, and every method opens (and closes) its own connection.
    """

    kind: ClassVar[str] = "host"
    required: ClassVar[tuple[str, ...]] = ()
    inputs: ClassVar[tuple[str, ...]] = ()
    replace_on: ClassVar[tuple[str, ...]] = ("connection.address",)

    # -- hooks ----------------------------------------------------------------------------
    def identity(self, props: Mapping[str, Any]) -> str:
        return f"{self.kind}:{_lookup(props, 'connection.address')}"

    def configure(self, executor: Executor, props: Mapping[str, Any]) -> list[str]:
        """Bring the host to `props`; what changed (nothing: the host already matched)."""
        raise NotImplementedError

    def outputs(self, props: Mapping[str, Any]) -> dict[str, Any]:
        """The output properties besides the inputs (pure)."""
        return {}

    def apply(self, executor: Executor, props: Mapping[str, Any]) -> dict[str, Any]:
        _log_changes(executor, self.kind, self.configure(executor, props))
        return self.outputs(props)

    def observe(self, executor: Executor, props: Mapping[str, Any]) -> dict[str, Any]:
        """The resource's properties as found on the host (for refresh); default: as recorded."""
        return dict(props)

    def remove(self, executor: Executor, props: Mapping[str, Any]) -> None:
        """What delete does on the host; default nothing (see the module docstring)."""

    def secrets(self, props: Mapping[str, Any]) -> list[Sensitive]:
        return []

    # -- the engine's calls ---------------------------------------------------------------
    def check(self, props: Mapping[str, Any]) -> list[str]:
        """Problems with the inputs, one message per missing or empty property."""
        problems = [f"{self.kind}: property {key!r} is required" for key in ("connection", *self.required)
                    if _lookup(props, key) in (None, "")]
        if isinstance(props.get("connection"), Mapping) and not _lookup(props, "connection.address"):
            problems.append(f"{self.kind}: property 'connection.address' is required")
        return problems

    def _validated(self, props: Mapping[str, Any]) -> dict[str, Any]:
        problems = self.check(props)
        if problems:
            raise ConfigError("; ".join(problems))
        return dict(props)

    def create(self, props: Mapping[str, Any]) -> Created:
        props = self._validated(props)
        with executor_from_props(props, self.secrets(props)) as executor:
            outs = {**props, **self.apply(executor, props)}
        return Created(self.identity(props), outs)

    def diff(self, _id: str, olds: Mapping[str, Any], news: Mapping[str, Any]) -> DiffReport:
        changed = [key for key in (*self.inputs, "connection")
                   if _normalise(_lookup(olds, key)) != _normalise(_lookup(news, key))]
        replaces = [key for key in self.replace_on
                    if _normalise(_lookup(olds, key)) != _normalise(_lookup(news, key))]
        return DiffReport(changes=bool(changed), replaces=replaces, changed=changed)

    def update(self, _id: str, _olds: Mapping[str, Any], news: Mapping[str, Any]) -> dict[str, Any]:
        news = self._validated(news)
        with executor_from_props(news, self.secrets(news)) as executor:
            return {**news, **self.apply(executor, news)}

    def delete(self, _id: str, props: Mapping[str, Any]) -> None:
        if type(self).remove is HostProvider.remove:
            return  # nothing to do on the host: do not even connect
        with executor_from_props(props, self.secrets(props)) as executor:
            self.remove(executor, props)

    def read(self, id_: str, props: Mapping[str, Any]) -> Created:
        with executor_from_props(props, self.secrets(props)) as executor:
            return Created(id_, self.observe(executor, props))


def _log_changes(executor: Executor, kind: str, changes: list[str]) -> None:
    for change in changes:
        log.info("%s: %s: %s", executor.host, kind, change)


class BootstrapProvider(HostProvider):
    """props: connection, script, script_path. Re-runs when the script changes."""

    kind = "bootstrap"
    required = ("script", "script_path")
    inputs = ("script", "script_path")
    # A new address is an update, never a replace: a replace would trust on first use whatever key
    # answers there. The update connects strictly, so a moved host's key is shown and must be
    # pinned (`bluegreen trust`) first. A container the program re-creates still replaces its
    # bootstrap (`replace_with`), and only then is its brand-new key trusted.
    replace_on: ClassVar[tuple[str, ...]] = ()

    def identity(self, props: Mapping[str, Any]) -> str:
        return f"bootstrap:{_lookup(props, 'connection.address')}:{props['script_path']}"

    def configure(self, executor: Executor, props: Mapping[str, Any]) -> list[str]:
        return apply_bootstrap(executor, str(props["script"]), str(props["script_path"]),
                               secret_modes=props.get("secret_modes"))

    def outputs(self, props: Mapping[str, Any]) -> dict[str, Any]:
        return {"script_sha256": sha256_of(str(props["script"]))}

    def diff(self, id_: str, olds: Mapping[str, Any], news: Mapping[str, Any]) -> DiffReport:
        """As any host resource, and on every `up`: have the host's secret files drifted from 0600
        in 0700 directories (a `pm2 save` by hand, a dump, an edited .env)? Then update, which
        tightens them. An unreachable host is not a change (its own steps will say why)."""
        report = super().diff(id_, olds, news)
        if report.changes or not news.get("secret_modes"):
            return report
        try:
            with executor_from_props(news) as executor:
                drift = secret_modes_drift(executor, str(news["secret_modes"]))
        except BlueGreenError as exc:
            log.warning("%s: secret file modes not checked: %s", _lookup(news, "connection.host"), exc)
            return report
        if not drift:
            return report
        for line in drift:
            log.info("%s: %s", _lookup(news, "connection.host"), line)
        return DiffReport(changes=True, replaces=[], changed=["secret_modes"])

    def create(self, props: Mapping[str, Any]) -> Created:
        """A bootstrap is created with its container (first `up`, or a replace: `replace_with`):
        when the program created that container (`trust_new_host_key`, never for adopted ones),
        its new host key is trusted on first use (`bluegreen.hostkeys`) before connecting."""
        if props.get("trust_new_host_key"):
            from bluegreen.hosts.hostkeys import trust_created_target

            target = executor_from_props(props).target
            key = trust_created_target(target, str(_lookup(props, "connection.host") or target.address),
                                       timeout_s=_number(props.get("ssh_wait_s") or 120, "ssh_wait_s"))
            created = super().create(props)
            return Created(created.id, {**created.outs, "host_key_fingerprint": key.fingerprint})
        return super().create(props)

    def observe(self, executor: Executor, props: Mapping[str, Any]) -> dict[str, Any]:
        recorded = read_text(executor, str(props["script_path"]), "read the bootstrap record") or ""
        return {**props, "script": recorded, "script_sha256": sha256_of(recorded)}


class AppEnvProvider(HostProvider):
    """props: connection, content (secret: the variables the stack manages), path, owner,
    secret_names, working_copy. The app's shared/.env (`render.appenv`): `content` is laid over
    the file on the host, so every variable the stack does not manage stays; a refresh reads back
    only the managed ones (the rest is the estate's, not drift)."""

    kind = "app-env"
    required = ("content", "path", "owner")
    inputs = ("content", "path", "owner")
    replace_on = ("connection.address", "path")

    def secrets(self, props: Mapping[str, Any]) -> list[Sensitive]:
        names = props.get("secret_names")
        content = str(props.get("content") or "")
        if not isinstance(names, (list, tuple)):  # older state: every value counts as secret
            names = list(parse_env(content))
        return secret_values(content, [str(n) for n in names])

    def identity(self, props: Mapping[str, Any]) -> str:
        return f"app-env:{_lookup(props, 'connection.address')}:{props['path']}"

    def configure(self, executor: Executor, props: Mapping[str, Any]) -> list[str]:
        return write_env_file(executor, str(props["path"]), Sensitive(str(props["content"])),
                              str(props["owner"]), working_copy=props.get("working_copy") or None)

    def outputs(self, props: Mapping[str, Any]) -> dict[str, Any]:
        return {"content_sha256": sha256_of(str(props["content"]))}

    def observe(self, executor: Executor, props: Mapping[str, Any]) -> dict[str, Any]:
        found = observe_env_file(executor, str(props["path"]), str(props["content"]),
                                 working_copy=props.get("working_copy") or None)
        return {**props, "content": found, "content_sha256": sha256_of(found)}


class HaproxyConfigProvider(HostProvider):
    """props: connection, config, initial_map, config_path, map_path, admin_socket, master_socket,
    pid_file, service."""

    kind = "haproxy-config"
    required = ("config", "initial_map", "config_path", "map_path", "admin_socket", "master_socket",
                "pid_file")
    inputs = ("config", "initial_map", "config_path", "map_path", "admin_socket", "master_socket",
              "pid_file", "service")
    replace_on = ("connection.address", "config_path")

    def identity(self, props: Mapping[str, Any]) -> str:
        return f"haproxy-config:{_lookup(props, 'connection.address')}:{props['config_path']}"

    def configure(self, executor: Executor, props: Mapping[str, Any]) -> list[str]:
        paths = haproxy_cli.HaproxyPaths.from_props(dict(props))
        return apply_haproxy_config(executor, paths, str(props["config"]), str(props["initial_map"]),
                                    declared_in=str(props.get("declared_in") or "the stack file"))

    def outputs(self, props: Mapping[str, Any]) -> dict[str, Any]:
        return {"config_sha256": sha256_of(str(props["config"]))}

    def observe(self, executor: Executor, props: Mapping[str, Any]) -> dict[str, Any]:
        found = read_text(executor, str(props["config_path"]), "read the HAProxy configuration") or ""
        return {**props, "config": found, "config_sha256": sha256_of(found)}


class LiveColorRoutingProvider(HostProvider):
    """props: connection, live_color, map_text, map_path, admin_socket. Reading asks HAProxy."""

    kind = "live-color-routing"
    required = ("live_color", "map_text", "map_path", "admin_socket")
    inputs = ("live_color", "map_text", "map_path", "admin_socket")

    def check(self, props: Mapping[str, Any]) -> list[str]:
        problems = super().check(props)
        color = props.get("live_color")
        if color is not None and color not in COLORS:
            problems.append(f"{self.kind}: live_color must be one of {', '.join(COLORS)}, got {color!r}")
        return problems

    def identity(self, props: Mapping[str, Any]) -> str:
        return f"live-color-routing:{_lookup(props, 'connection.address')}:{props['map_path']}"

    @staticmethod
    def _paths(props: Mapping[str, Any]) -> haproxy_cli.HaproxyPaths:
        # Routing needs only the map and the admin socket; the other paths are never used here.
        return haproxy_cli.HaproxyPaths(config="", map=str(props["map_path"]), admin_socket=str(props["admin_socket"]),
                               master_socket="", pid_file="")

    def configure(self, executor: Executor, props: Mapping[str, Any]) -> list[str]:
        return apply_routing(executor, self._paths(props), str(props["live_color"]), str(props["map_text"]),
                             declared_in=str(props.get("declared_in") or "the stack file"))

    def outputs(self, props: Mapping[str, Any]) -> dict[str, Any]:
        return {"live_backend": haproxy_cli.backend_for(str(props["live_color"]))}

    def observe(self, executor: Executor, props: Mapping[str, Any]) -> dict[str, Any]:
        backend = haproxy.live_backend(executor, self._paths(props))
        return {**props, "live_color": haproxy_cli.color_of(backend) or backend, "live_backend": backend}


class Pm2EcosystemProvider(HostProvider):
    """props: connection, ecosystem, path, pm2_home, app_dir, run_as."""

    kind = "pm2-ecosystem"
    required = ("ecosystem", "path", "pm2_home", "app_dir", "run_as")
    inputs = ("ecosystem", "path", "pm2_home", "app_dir", "run_as")
    replace_on = ("connection.address", "path")

    def identity(self, props: Mapping[str, Any]) -> str:
        return f"pm2-ecosystem:{_lookup(props, 'connection.address')}:{props['path']}"

    def configure(self, executor: Executor, props: Mapping[str, Any]) -> list[str]:
        return apply_ecosystem(executor, text=str(props["ecosystem"]), path=str(props["path"]),
                               pm2_home=str(props["pm2_home"]), app_dir=str(props["app_dir"]),
                               run_as=str(props["run_as"]),
                               login_user=str(_lookup(props, "connection.user") or "root"),
                               reload=bool(props.get("reload", True)))

    def outputs(self, props: Mapping[str, Any]) -> dict[str, Any]:
        return {"ecosystem_sha256": sha256_of(str(props["ecosystem"]))}

    def observe(self, executor: Executor, props: Mapping[str, Any]) -> dict[str, Any]:
        found = read_text(executor, str(props["path"]), "read the PM2 ecosystem") or ""
        return {**props, "ecosystem": found, "ecosystem_sha256": sha256_of(found)}

    # No `remove`: `pulumi destroy` leaves the file. The app keeps running either way, and every
    # later deploy (`pm2 startOrReload` of this file) needs it.


class PostgresDatabaseProvider(HostProvider):
    """props: connection, sql (secret), hba, socket_dir, port, hba_path (optional: else asked)."""

    kind = "postgres-database"
    required = ("sql", "hba", "socket_dir", "port")
    inputs = ("sql", "hba", "socket_dir", "port", "hba_path")

    def secrets(self, props: Mapping[str, Any]) -> list[Sensitive]:
        return sql_secrets(str(props.get("sql") or ""))

    def identity(self, props: Mapping[str, Any]) -> str:
        port = int(_number(props["port"], "port"))
        return f"postgres-database:{_lookup(props, 'connection.address')}:{port}"

    def _where(self, props: Mapping[str, Any]) -> dict[str, Any]:
        return {"socket_dir": str(props["socket_dir"]), "port": int(_number(props["port"], "port")),
                "hba_path": props.get("hba_path") or None}

    def configure(self, executor: Executor, props: Mapping[str, Any]) -> list[str]:
        return apply_postgres(executor, sql=str(props["sql"]), hba_block=str(props["hba"]), **self._where(props))

    def observe(self, executor: Executor, props: Mapping[str, Any]) -> dict[str, Any]:
        present = hba_block_present(executor, hba_block=str(props["hba"]), **self._where(props))
        # The SQL cannot be read back; a missing or edited block shows as drift on `hba`.
        return {**props, "hba": props["hba"] if present else ""}


# --------------------------------------------------------------------------- the whole estate


def bootstrap_props(t: Topology, container: Container) -> dict[str, Any]:
    return {"connection": connection_props(t, container), "script": render_bootstrap(t, container),
            "script_path": container.path(BOOTSTRAP_SCRIPT_PATH),
            "secret_modes": render_secret_modes(t, container)}


def postgres_props(t: Topology, password: Sensitive) -> dict[str, Any]:
    db = t.database_host
    return {"connection": connection_props(t, db), "sql": render_database_sql(t, password),
            "hba": render_pg_hba(t), "socket_dir": db.path(PG_SOCKET_DIR), "port": t.database.port}


def haproxy_config_props(t: Topology) -> dict[str, Any]:
    return {"connection": connection_props(t, t.load_balancer), "config": render_haproxy_cfg(t),
            "initial_map": render_live_map(t, t.active_color), "declared_in": declared_in(t),
            **haproxy_cli.HaproxyPaths.from_topology(t).to_props()}


def app_env_props(t: Topology, color: str, content: Any) -> dict[str, Any]:
    """AppEnv's props around `content` (a `Sensitive`'s text, or the engine's secret output)."""
    host = t.app_host(color)
    return {"connection": connection_props(t, host), "content": content, "path": env_path(t, host),
            "owner": t.app.deploy_user, "secret_names": secret_names(t),
            "working_copy": host.path(t.app.working_copy) if t.app.working_copy else ""}


def declared_in(t: Topology) -> str:
    """Where the declared live colour is written, as the user finds it: the stack's
    `activeColorFile` when it names one (the lab: a file in its own directory), else the stack file."""
    return t.active_color_file or f"stacks/Pulumi.{t.stack}.yaml"


def routing_props(t: Topology, live_color: str | None = None) -> dict[str, Any]:
    color = live_color or t.active_color
    paths = haproxy_cli.HaproxyPaths.from_topology(t)
    return {"connection": connection_props(t, t.load_balancer), "live_color": color,
            "map_text": render_live_map(t, color), "map_path": paths.map, "admin_socket": paths.admin_socket,
            "declared_in": declared_in(t)}


def ecosystem_props(t: Topology, color: str, *, live: str | None = None) -> dict[str, Any]:
    """`live`: the colour HAProxy serves now (default: the declared one); it is never reloaded."""
    host = t.app_host(color)
    app_dir = host.path(t.app.dir)
    return {"connection": connection_props(t, host), "ecosystem": render_ecosystem(t, color),
            "path": str(PurePosixPath(app_dir) / ECOSYSTEM_FILE), "pm2_home": pm2_home(t, host),
            "app_dir": app_dir, "run_as": t.app.deploy_user, "reload": color != (live or t.active_color)}
