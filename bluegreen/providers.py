"""Host configuration: the CRUD logic behind the Pulumi dynamic providers, and a direct apply.

Two layers:
- `apply_*` functions bring one piece of a host to its desired state through an `Executor` and
  return what they changed (an empty list means the host already matched and nothing on it was
  touched). `apply_estate` runs them in order for a whole topology without the Pulumi engine
  (the lab, `bluegreen apply`); `plan_estate` lists, purely, the files and commands they use.
- Provider classes (`BootstrapProvider`, ...) wrap them as create/diff/update/delete/read over
  plain dicts, so `components/hostconfig.py` can hand them to Pulumi: the engine pickles the
  provider with dill and calls it from another process. They hold no state; each method opens
  its own SSH connection from the `connection` property and closes it.

What `delete` does, per resource (deleting a resource from the stack must never take the
service down, so it removes only what nothing serving depends on):
- bootstrap: nothing (packages, users and directories stay; nothing safe to undo).
- HAProxy config: nothing. The proxy keeps serving with the file it has; removing it would make
  the next restart fail.
- live-colour routing: nothing. Traffic stays on the colour it is on.
- PM2 ecosystem: the file is removed if it still holds what we wrote; running apps keep running
  (PM2's dump has them).
- PostgreSQL: nothing. The role, the database, its data and the pg_hba block stay; dropping
  them is a decision for a human.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, ClassVar

from . import haproxy_runtime as hr
from .commands import pm2_invocation
from .errors import BlueGreenError, ConfigError, RemoteError
from .executor import Executor, SshExecutor, SshTarget, connect, sh, ssh_target
from .sensitive import MASK, Sensitive, redact
from .topology import COLORS, Container, Topology

log = logging.getLogger("bluegreen.providers")

BOOTSTRAP_SCRIPT_PATH = "/var/lib/bluegreen/bootstrap.sh"
PG_SOCKET_DIR = "/var/run/postgresql"
ECOSYSTEM_FILE = "ecosystem.config.js"
DEFAULT_KNOWN_HOSTS = "~/.config/bluegreen/known_hosts"
# Set (to the target colour) only by `bluegreen switch` around its `pulumi up` of the routing: the
# one run that may move traffic. Any other run that would serve another colour is refused.
SWITCH_ENV = "BLUEGREEN_SWITCH_TO"
# The hand-written haproxy.cfg found on a host before our first install, kept beside ours.
HAPROXY_BACKUP_SUFFIX = ".pre-bluegreen"


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
    return SshExecutor(host=str(conn.get("host") or target.address), secrets=list(secrets),
                       command_timeout=_number(conn.get("command_timeout") or 900, "command_timeout"),
                       target=target)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _read_text(executor: Executor, path: str, step: str) -> str | None:
    data = executor.get(path, step=step)
    return None if data is None else data.decode(errors="replace")


# --------------------------------------------------------------------------- bootstrap


def bootstrap_command(script_path: str) -> str:
    return sh("bash", script_path)


def apply_bootstrap(executor: Executor, script: str, script_path: str) -> list[str]:
    """Run the bootstrap script unless the host records that it already ran this exact script.

    The record is the script itself at `script_path`, moved there only after a successful run,
    so a run that failed half-way is retried next time.
    """
    if _read_text(executor, script_path, "read the bootstrap record") == script:
        return []
    pending = f"{script_path}.pending"
    executor.put(pending, script, step="upload the bootstrap script", mode=0o700)
    result = executor.run(bootstrap_command(pending), step="bootstrap")
    executor.run(sh("mv", "-f", pending, script_path), step="record the bootstrap script")
    prefix = "bootstrap: "
    done = [line[len(prefix):] for line in result.stdout.splitlines() if line.startswith(prefix)]
    return done or ["bootstrap script updated (the host already matched it)"]


# --------------------------------------------------------------------------- PostgreSQL

# Password literals as the SQL spells them (`PASSWORD 'x'` or `PASSWORD E'x'`): psql echoes a
# failing statement's text, so error messages are scrubbed of these.
_PASSWORD_LITERAL = re.compile(r"PASSWORD\s+(E?)'((?:[^'\\]|''|\\.)*)'", re.I | re.S)


def sql_secrets(sql: str) -> list[Sensitive]:
    """Every password the SQL sets, both as written and as its value."""
    found: list[Sensitive] = []
    for m in _PASSWORD_LITERAL.finditer(sql):
        written = m.group(2)
        value = written.replace("''", "'")
        if m.group(1):
            value = re.sub(r"\\(.)", r"\1", value)
        found += [Sensitive(written), Sensitive(value)]
    return found


def psql_command(socket_dir: str, port: int, *extra: str) -> str:
    """psql as the postgres OS user over the local socket, stopping at the first error.

    From `/`: psql complains about a working directory the postgres user may not enter (root's).
    """
    return "cd / && " + sh("runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                           "-h", socket_dir, "-p", port, "-d", "postgres", *extra)


def _query(executor: Executor, socket_dir: str, port: int, sql: str, step: str) -> str:
    result = executor.run(psql_command(socket_dir, port, "-At", "-c", sql), step=step)
    return result.stdout.strip()


def _count_objects(executor: Executor, socket_dir: str, port: int) -> tuple[int, int]:
    text = _query(executor, socket_dir, port,
                  "SELECT (SELECT count(*) FROM pg_roles) || ' ' || (SELECT count(*) FROM pg_database)",
                  "count roles and databases")
    roles, databases = text.split()
    return int(roles), int(databases)


def apply_postgres(executor: Executor, *, sql: str, hba_block: str, socket_dir: str, port: int,
                   hba_path: str | None = None) -> list[str]:
    """Apply the (idempotent) SQL, then merge the managed pg_hba block and reload if it changed.

    A block PostgreSQL cannot parse is never left behind: the previous file is put back before
    anything reloads. Errors never carry the passwords in the SQL.
    """
    secrets = sql_secrets(sql)
    try:
        return _apply_postgres(executor, sql, hba_block, socket_dir, port, hba_path)
    except RemoteError as exc:
        raise RemoteError(exc.host, exc.step, redact(exc.detail, secrets)) from None


def _apply_postgres(executor: Executor, sql: str, hba_block: str, socket_dir: str, port: int,
                    hba_path: str | None) -> list[str]:
    from .render.postgres import merge_managed_block

    changes: list[str] = []
    roles, databases = _count_objects(executor, socket_dir, port)
    executor.run(psql_command(socket_dir, port, "-f", "-"), step="apply the database SQL", input=sql)
    roles_after, databases_after = _count_objects(executor, socket_dir, port)
    if roles_after > roles:
        changes.append(f"created {roles_after - roles} database role(s)")
    if databases_after > databases:
        changes.append(f"created {databases_after - databases} database(s)")

    hba_file = hba_path or _query(executor, socket_dir, port, "SHOW hba_file", "find pg_hba.conf")
    step = "update pg_hba.conf"
    existing = _read_text(executor, hba_file, step)
    if existing is None:
        raise RemoteError(executor.host, step, f"{hba_file} does not exist")
    try:
        merged = merge_managed_block(existing, hba_block)
    except ConfigError as exc:
        raise RemoteError(executor.host, step, f"{hba_file}: {exc}") from None
    if merged == existing:
        return changes
    owner_mode = executor.run(sh("stat", "-c", "%u:%g %a", hba_file), step=step).stdout.split()
    backup = f"{hba_file}.bluegreen-previous"
    executor.run(sh("cp", "-p", hba_file, backup), step=step)
    executor.put(hba_file, merged, step=step, mode=int(owner_mode[1], 8))
    executor.run(sh("chown", owner_mode[0], hba_file), step=step)
    problems = _query(executor, socket_dir, port,
                      "SELECT string_agg('line ' || line_number || ': ' || error, '; ') "
                      "FROM pg_hba_file_rules WHERE error IS NOT NULL", "check pg_hba.conf")
    if problems:
        executor.run(sh("mv", "-f", backup, hba_file), step="restore pg_hba.conf")
        raise RemoteError(executor.host, step, f"PostgreSQL cannot parse the new {hba_file} ({problems}); "
                          "the previous file is back in place and nothing was reloaded")
    _query(executor, socket_dir, port, "SELECT pg_reload_conf()", "reload PostgreSQL")
    executor.run(sh("rm", "-f", backup), step=step)
    changes.append(f"updated the managed block in {hba_file} and reloaded PostgreSQL")
    return changes


def hba_block_present(executor: Executor, *, hba_block: str, socket_dir: str, port: int,
                      hba_path: str | None = None) -> bool:
    from .render.postgres import merge_managed_block

    hba_file = hba_path or _query(executor, socket_dir, port, "SHOW hba_file", "find pg_hba.conf")
    existing = _read_text(executor, hba_file, "read pg_hba.conf")
    if existing is None:
        return False
    try:
        return merge_managed_block(existing, hba_block) == existing
    except ConfigError:
        return False


# --------------------------------------------------------------------------- HAProxy


def candidate_path(config_path: str) -> str:
    """Where a new config is checked: beside the live one, so the final rename is atomic."""
    p = PurePosixPath(config_path)
    return str(p.with_name(f".{p.name}.candidate"))


def _refuse_serving_without_master(executor: Executor, paths: hr.HaproxyPaths, config: str,
                                   candidate: str) -> None:
    """No master answers, yet the new config's listeners are taken: a proxy serves there that we
    cannot reload hitlessly, and starting ours beside it (or restarting it) would drop visitors."""
    serving = [f"{address}:{port}" for address, port in sorted(hr.tcp_binds(config))
               if executor.run(hr.port_in_use_command(address, port), step="look for a serving proxy",
                               check=False).ok]
    if serving:
        executor.run(sh("rm", "-f", candidate), step="discard the configuration", check=False)
        raise RemoteError(
            executor.host, "install the HAProxy configuration",
            f"something already serves {', '.join(serving)} but no HAProxy master answers on "
            f"{paths.master_socket}, so the configuration cannot be reloaded hitlessly; nothing was "
            "changed. Point haproxy.masterSocket at the master CLI the running HAProxy opened "
            "(Debian's unit: /run/haproxy-master.sock), or restart it with that socket in a quiet moment")


def map_live_color(map_text: str) -> str | None:
    """The colour a live-colour map file routes to (its `live` entry)."""
    for line in map_text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == hr.LIVE_KEY:
            return hr.color_of(parts[1])
    return None


def serving_color(executor: Executor, paths: hr.HaproxyPaths, config: str | None) -> tuple[str | None, str]:
    """The colour the proxy serves now, and where that was read: HAProxy's runtime map, else the
    `use_backend` of its (hand-written) config; (None, ...) when nothing serves yet."""
    from .adopt import live_color_from_config

    if paths.admin_socket:
        try:
            return hr.live_color(executor, paths), "HAProxy's runtime map"
        except BlueGreenError as exc:
            log.debug("%s: no runtime live colour: %s", executor.host, exc)
    if config:
        color = live_color_from_config(config)
        if color:
            return color, f"the backend of {paths.config or 'haproxy.cfg'}"
    return None, "nothing serves yet"


def refuse_flip(live: str | None, declared: str, *, declared_in: str, source: str = "HAProxy") -> None:
    """A `pulumi up` never moves traffic: declared must equal live, except in `bluegreen switch`."""
    if live is None or live == declared or os.environ.get(SWITCH_ENV) == declared:
        return
    raise ConfigError(
        f"the estate serves {live} (from {source}) but {declared_in} declares "
        f"bluegreen:activeColor: {declared}; applying it would move live traffic. Set "
        f"`bluegreen:activeColor: {live}` in {declared_in} (or run `bluegreen adopt`), and move "
        "traffic only with `bluegreen switch`")


def apply_haproxy_config(executor: Executor, paths: hr.HaproxyPaths, config: str,
                         initial_map: str, *, declared_in: str = "the stack file") -> list[str]:
    """Install `config` if it differs (checked by `haproxy -c` first), reload or start HAProxy.

    A config HAProxy rejects raises with HAProxy's message; the live file and the running proxy
    are left as they were. The map file is only written when missing: after that it belongs to
    the routing (a flip rewrites it).
    """
    changes: list[str] = []
    current = _read_text(executor, paths.config, "read the HAProxy configuration")
    if executor.get(paths.map, step="read the live-colour map file") is None:
        # The first install on a serving proxy must route where it routes now.
        declared = map_live_color(initial_map)
        if declared is not None:
            live, source = serving_color(executor, paths, current)
            refuse_flip(live, declared, declared_in=declared_in, source=source)
        executor.put(paths.map, initial_map, step="write the initial live-colour map")
        changes.append(f"wrote the initial map {paths.map}")
    if current != config:
        candidate = candidate_path(paths.config)
        executor.put(candidate, config, step="upload the HAProxy configuration")
        try:
            hr.validate_config(executor, candidate, shown_as=f"the new {paths.config}")
        except RemoteError:
            executor.run(sh("rm", "-f", candidate), step="discard the rejected configuration", check=False)
            raise
        running = hr.master_answers(executor, paths) is not None
        if not running:
            _refuse_serving_without_master(executor, paths, config, candidate)
        if running:
            try:
                hr.check_new_binds_free(executor, current or "", config)
            except RemoteError:
                executor.run(sh("rm", "-f", candidate), step="discard the rejected configuration",
                             check=False)
                raise
        backup = paths.config + HAPROXY_BACKUP_SUFFIX
        if current is not None and executor.get(backup, step="look for the kept configuration") is None:
            executor.run(sh("cp", "-p", paths.config, backup), step="keep the previous HAProxy configuration")
            changes.append(f"kept the previous {paths.config} as {backup}")
        executor.run(sh("mv", "-f", candidate, paths.config), step="install the HAProxy configuration")
        changes.append(f"installed {paths.config}")
        if running:
            try:
                table = hr.reload(executor, paths)
            except RemoteError as exc:
                # Some failures only show when the new worker starts: the old workers still serve,
                # and the file must match them again for the next restart.
                if current is not None:
                    executor.put(paths.config, current, step="restore the previous HAProxy configuration")
                raise RemoteError(exc.host, exc.step, f"{exc.detail}; {paths.config} is back to its "
                                  "previous content") from None
            changes.append(f"reloaded HAProxy (worker {', '.join(map(str, sorted(table.worker_pids)))})")
    if hr.ensure_running(executor, paths):
        changes.append("started HAProxy")
    return changes


def apply_routing(executor: Executor, paths: hr.HaproxyPaths, live_color: str, map_text: str, *,
                  declared_in: str = "the stack file") -> list[str]:
    live, source = serving_color(executor, paths, None)
    refuse_flip(live, live_color, declared_in=declared_in, source=source)
    result = hr.set_live_color(executor, paths, live_color, map_text)
    changes = []
    if result.runtime_changed:
        was = hr.color_of(result.previous.get(hr.LIVE_KEY, "")) or result.previous.get(hr.LIVE_KEY, "nothing")
        changes.append(f"live colour {was} -> {live_color}")
    if result.file_changed:
        changes.append(f"wrote {paths.map}")
    return changes


# --------------------------------------------------------------------------- PM2


def pm2_home(t: Topology, host: Container) -> str:
    """PM2's home on `host`: `app.pm2Home`, else the deploy user's ~/.pm2 (rooted like every path)."""
    user = t.app.deploy_user
    default = "/root/.pm2" if user == "root" else f"/home/{user}/.pm2"
    return host.path(t.app.pm2_home or default)


def pm2_command(args: Iterable[str], *, pm2_home: str, run_as: str, login_user: str) -> str:
    """`pm2 ...` as the deploy user with its PM2 home (the same invocation deploys use)."""
    return pm2_invocation(args, pm2_home=pm2_home, run_as=run_as, login_user=login_user)


def apply_ecosystem(executor: Executor, *, text: str, path: str, pm2_home: str, app_dir: str,
                    run_as: str, login_user: str, reload: bool = True) -> list[str]:
    """Write the ecosystem file if it differs; then, if a release is deployed, have PM2 load it.

    `reload=False` for the live colour: reloading it in place drops requests, which is what
    blue-green avoids. Its file is written and takes effect at the next deploy to that colour.
    """
    if _read_text(executor, path, "read the PM2 ecosystem") == text:
        return []
    executor.put(path, text, step="write the PM2 ecosystem", mode=0o644)
    changes = [f"wrote {path}"]
    if not reload:
        changes.append("live colour not reloaded: takes effect at its next deploy")
        return changes
    current = str(PurePosixPath(app_dir) / "current")
    if executor.run(sh("test", "-e", current), step="look for a deployed release", check=False).ok:
        executor.run(pm2_command(["startOrReload", path], pm2_home=pm2_home, run_as=run_as,
                                 login_user=login_user), step="pm2 startOrReload")
        executor.run(pm2_command(["save"], pm2_home=pm2_home, run_as=run_as, login_user=login_user),
                     step="pm2 save")
        changes.append("pm2 startOrReload + save")
    return changes


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

    def apply(self, executor: Executor, props: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

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

    def identity(self, props: Mapping[str, Any]) -> str:
        return f"bootstrap:{_lookup(props, 'connection.address')}:{props['script_path']}"

    def apply(self, executor: Executor, props: Mapping[str, Any]) -> dict[str, Any]:
        changes = apply_bootstrap(executor, str(props["script"]), str(props["script_path"]))
        _log_changes(executor, self.kind, changes)
        return {"script_sha256": _sha256(str(props["script"]))}

    def create(self, props: Mapping[str, Any]) -> Created:
        """A bootstrap is created with its container (first `up`, or a replace: `replace_with`):
        when the program created that container (`trust_new_host_key`, never for adopted ones),
        its new host key is trusted on first use (`bluegreen.hostkeys`) before connecting."""
        if props.get("trust_new_host_key"):
            from .hostkeys import trust_created_target

            target = executor_from_props(props).target
            key = trust_created_target(target, str(_lookup(props, "connection.host") or target.address),
                                       timeout_s=_number(props.get("ssh_wait_s") or 120, "ssh_wait_s"))
            created = super().create(props)
            return Created(created.id, {**created.outs, "host_key_fingerprint": key.fingerprint})
        return super().create(props)

    def observe(self, executor: Executor, props: Mapping[str, Any]) -> dict[str, Any]:
        recorded = _read_text(executor, str(props["script_path"]), "read the bootstrap record") or ""
        return {**props, "script": recorded, "script_sha256": _sha256(recorded)}


class AppEnvProvider(HostProvider):
    """props: connection, content (secret), path, owner. The app's shared/.env (`bluegreen.appenv`)."""

    kind = "app-env"
    required = ("content", "path", "owner")
    inputs = ("content", "path", "owner")
    replace_on = ("connection.address", "path")

    def secrets(self, props: Mapping[str, Any]) -> list[Sensitive]:
        from .appenv import values_of

        return values_of(str(props.get("content") or ""))

    def identity(self, props: Mapping[str, Any]) -> str:
        return f"app-env:{_lookup(props, 'connection.address')}:{props['path']}"

    def apply(self, executor: Executor, props: Mapping[str, Any]) -> dict[str, Any]:
        from .appenv import write_env_file

        changes = write_env_file(executor, str(props["path"]), Sensitive(str(props["content"])),
                                 str(props["owner"]))
        _log_changes(executor, self.kind, changes)
        return {"content_sha256": _sha256(str(props["content"]))}

    def observe(self, executor: Executor, props: Mapping[str, Any]) -> dict[str, Any]:
        found = _read_text(executor, str(props["path"]), "read the app settings") or ""
        return {**props, "content": found, "content_sha256": _sha256(found)}


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

    def apply(self, executor: Executor, props: Mapping[str, Any]) -> dict[str, Any]:
        paths = hr.HaproxyPaths.from_props(dict(props))
        changes = apply_haproxy_config(executor, paths, str(props["config"]), str(props["initial_map"]),
                                       declared_in=str(props.get("declared_in") or "the stack file"))
        _log_changes(executor, self.kind, changes)
        return {"config_sha256": _sha256(str(props["config"]))}

    def observe(self, executor: Executor, props: Mapping[str, Any]) -> dict[str, Any]:
        found = _read_text(executor, str(props["config_path"]), "read the HAProxy configuration") or ""
        return {**props, "config": found, "config_sha256": _sha256(found)}


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
    def _paths(props: Mapping[str, Any]) -> hr.HaproxyPaths:
        # Routing needs only the map and the admin socket; the other paths are never used here.
        return hr.HaproxyPaths(config="", map=str(props["map_path"]), admin_socket=str(props["admin_socket"]),
                               master_socket="", pid_file="")

    def apply(self, executor: Executor, props: Mapping[str, Any]) -> dict[str, Any]:
        color = str(props["live_color"])
        changes = apply_routing(executor, self._paths(props), color, str(props["map_text"]),
                                declared_in=str(props.get("declared_in") or "the stack file"))
        _log_changes(executor, self.kind, changes)
        return {"live_backend": hr.backend_for(color)}

    def observe(self, executor: Executor, props: Mapping[str, Any]) -> dict[str, Any]:
        backend = hr.live_backend(executor, self._paths(props))
        return {**props, "live_color": hr.color_of(backend) or backend, "live_backend": backend}


class Pm2EcosystemProvider(HostProvider):
    """props: connection, ecosystem, path, pm2_home, app_dir, run_as."""

    kind = "pm2-ecosystem"
    required = ("ecosystem", "path", "pm2_home", "app_dir", "run_as")
    inputs = ("ecosystem", "path", "pm2_home", "app_dir", "run_as")
    replace_on = ("connection.address", "path")

    def identity(self, props: Mapping[str, Any]) -> str:
        return f"pm2-ecosystem:{_lookup(props, 'connection.address')}:{props['path']}"

    def apply(self, executor: Executor, props: Mapping[str, Any]) -> dict[str, Any]:
        changes = apply_ecosystem(executor, text=str(props["ecosystem"]), path=str(props["path"]),
                                  pm2_home=str(props["pm2_home"]), app_dir=str(props["app_dir"]),
                                  run_as=str(props["run_as"]),
                                  login_user=str(_lookup(props, "connection.user") or "root"),
                                  reload=bool(props.get("reload", True)))
        _log_changes(executor, self.kind, changes)
        return {"ecosystem_sha256": _sha256(str(props["ecosystem"]))}

    def observe(self, executor: Executor, props: Mapping[str, Any]) -> dict[str, Any]:
        found = _read_text(executor, str(props["path"]), "read the PM2 ecosystem") or ""
        return {**props, "ecosystem": found, "ecosystem_sha256": _sha256(found)}

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

    def apply(self, executor: Executor, props: Mapping[str, Any]) -> dict[str, Any]:
        changes = apply_postgres(executor, sql=str(props["sql"]), hba_block=str(props["hba"]),
                                 **self._where(props))
        _log_changes(executor, self.kind, changes)
        return {}

    def observe(self, executor: Executor, props: Mapping[str, Any]) -> dict[str, Any]:
        present = hba_block_present(executor, hba_block=str(props["hba"]), **self._where(props))
        # The SQL cannot be read back; a missing or edited block shows as drift on `hba`.
        return {**props, "hba": props["hba"] if present else ""}


# --------------------------------------------------------------------------- the whole estate


def bootstrap_props(t: Topology, container: Container) -> dict[str, Any]:
    from .render.bootstrap import render_bootstrap

    return {"connection": connection_props(t, container), "script": render_bootstrap(t, container),
            "script_path": container.path(BOOTSTRAP_SCRIPT_PATH)}


def postgres_props(t: Topology, password: Sensitive) -> dict[str, Any]:
    from .render.postgres import render_database_sql, render_pg_hba

    db = t.database_host
    return {"connection": connection_props(t, db), "sql": render_database_sql(t, password),
            "hba": render_pg_hba(t), "socket_dir": db.path(PG_SOCKET_DIR), "port": t.database.port}


def haproxy_config_props(t: Topology) -> dict[str, Any]:
    from .render.haproxy import render_haproxy_cfg, render_live_map

    return {"connection": connection_props(t, t.load_balancer), "config": render_haproxy_cfg(t),
            "initial_map": render_live_map(t, t.active_color), "declared_in": declared_in(t),
            **hr.HaproxyPaths.from_topology(t).to_props()}


def declared_in(t: Topology) -> str:
    """Where the declared live colour is written, as the user finds it."""
    return f"stacks/Pulumi.{t.stack}.yaml"


def routing_props(t: Topology, live_color: str | None = None) -> dict[str, Any]:
    from .render.haproxy import render_live_map

    color = live_color or t.active_color
    paths = hr.HaproxyPaths.from_topology(t)
    return {"connection": connection_props(t, t.load_balancer), "live_color": color,
            "map_text": render_live_map(t, color), "map_path": paths.map, "admin_socket": paths.admin_socket,
            "declared_in": declared_in(t)}


def ecosystem_props(t: Topology, color: str) -> dict[str, Any]:
    from .render.pm2 import render_ecosystem

    host = t.app_host(color)
    app_dir = host.path(t.app.dir)
    return {"connection": connection_props(t, host), "ecosystem": render_ecosystem(t, color),
            "path": str(PurePosixPath(app_dir) / ECOSYSTEM_FILE), "pm2_home": pm2_home(t, host),
            "app_dir": app_dir, "run_as": t.app.deploy_user, "reload": color != t.active_color}


ExecutorSource = Callable[[Container], Executor] | Mapping[int, Executor]


def apply_estate(t: Topology, db_password: Sensitive, *,
                 executor_for: ExecutorSource | None = None) -> list[str]:
    """Apply the whole host configuration, as `pulumi up` would, without the engine.

    Order: bootstrap every host -> PostgreSQL -> HAProxy config (+ start) -> routing to
    `t.active_color` -> PM2 ecosystems. Returns what changed, one line per change, each naming its
    host. `executor_for` gives the executor for a container (a callable, or a mapping by vmid);
    executors given are left open for their owner, ones made here are closed here.
    """
    own: dict[int, Executor] = {}

    def on(container: Container) -> Executor:
        if executor_for is None:
            if container.vmid not in own:
                own[container.vmid] = connect(t, container, secrets=[db_password])
            return own[container.vmid]
        if isinstance(executor_for, Mapping):
            return executor_for[container.vmid]
        return executor_for(container)

    changes: list[str] = []

    def record(container: Container, what: str, done: list[str]) -> None:
        for line in done:
            log.info("%s: %s: %s", container.label, what, line)
            changes.append(f"{container.label}: {what}: {line}")

    try:
        for container in t.containers:
            props = bootstrap_props(t, container)
            record(container, "bootstrap",
                   apply_bootstrap(on(container), props["script"], props["script_path"]))
        db = t.database_host
        pg = postgres_props(t, db_password)
        record(db, "postgres", apply_postgres(on(db), sql=pg["sql"], hba_block=pg["hba"],
                                              socket_dir=pg["socket_dir"], port=pg["port"]))
        lb = t.load_balancer
        hp = haproxy_config_props(t)
        paths = hr.HaproxyPaths.from_topology(t)
        record(lb, "haproxy", apply_haproxy_config(on(lb), paths, hp["config"], hp["initial_map"],
                                                   declared_in=hp["declared_in"]))
        rt = routing_props(t)
        record(lb, "routing", apply_routing(on(lb), paths, rt["live_color"], rt["map_text"],
                                            declared_in=rt["declared_in"]))
        for color in COLORS:
            host = t.app_host(color)
            eco = ecosystem_props(t, color)
            record(host, "pm2", apply_ecosystem(on(host), text=eco["ecosystem"], path=eco["path"],
                                                pm2_home=eco["pm2_home"], app_dir=eco["app_dir"],
                                                run_as=eco["run_as"], login_user=t.ssh.user,
                                                reload=eco["reload"]))
    finally:
        for executor in own.values():
            executor.close()
    return changes


def _file(step: str, path: str, content: str) -> dict[str, str]:
    return {"kind": "file", "step": step, "path": path, "content": content}


def _command(step: str, command: str) -> dict[str, str]:
    return {"kind": "command", "step": step, "command": command}


def plan_estate(t: Topology) -> dict[str, list[dict[str, str]]]:
    """Per host label, the files `apply_estate` writes and the commands it runs, in its order.

    Pure. The database password shows as a mask. Commands marked "if ..." in their step run
    only when that condition holds on the host.
    """
    plan: dict[str, list[dict[str, str]]] = {c.label: [] for c in t.containers}
    for container in t.containers:
        props = bootstrap_props(t, container)
        plan[container.label] += [
            _file("bootstrap script (runs if it differs from the one recorded)",
                  f"{props['script_path']}", props["script"]),
            _command("bootstrap", bootstrap_command(f"{props['script_path']}.pending")),
        ]
    db = t.database_host
    pg = postgres_props(t, Sensitive(MASK))
    plan[db.label] += [
        _file("database SQL (sent to psql on stdin)", "(stdin)", pg["sql"]),
        _command("apply the database SQL", psql_command(pg["socket_dir"], pg["port"], "-f", "-")),
        _file("managed block merged into pg_hba.conf (psql: SHOW hba_file)", "(pg_hba.conf)", pg["hba"]),
        _command("reload PostgreSQL (if pg_hba.conf changed)",
                 psql_command(pg["socket_dir"], pg["port"], "-At", "-c", "SELECT pg_reload_conf()")),
    ]
    lb = t.load_balancer
    hp = haproxy_config_props(t)
    paths = hr.HaproxyPaths.from_topology(t)
    candidate = candidate_path(paths.config)
    rt = routing_props(t)
    plan[lb.label] += [
        _file("initial live-colour map (if missing)", paths.map, hp["initial_map"]),
        _file("HAProxy configuration candidate (if it differs)", candidate, hp["config"]),
        _command("validate the HAProxy configuration", hr.check_config_command(candidate)),
        _command("install the HAProxy configuration", sh("mv", "-f", candidate, paths.config)),
        _command("reload HAProxy (if running)", hr.runtime_command(paths.master_socket, [hr.RELOAD])),
        *([_command("start HAProxy (if not running, on a systemd host)",
                    hr.systemd_start_command(paths.service))] if paths.service else []),
        _command("start HAProxy (if not running" + (", without systemd)" if paths.service else ")"),
                 hr.start_command(paths)),
        _command(f"route live traffic to {t.active_color}",
                 hr.runtime_command(paths.admin_socket,
                                    [hr.set_map(paths.map, k, v)
                                     for k, v in hr.routing_entries(t.active_color).items()])),
        _file("live-colour map", paths.map, rt["map_text"]),
    ]
    for color in COLORS:
        host = t.app_host(color)
        eco = ecosystem_props(t, color)
        save = _command("save the PM2 process list", pm2_command(["save"], pm2_home=eco["pm2_home"],
                                                                 run_as=eco["run_as"], login_user=t.ssh.user))
        reload = _command("reload the app (if the file changed and a release is deployed)",
                          pm2_command(["startOrReload", eco["path"]], pm2_home=eco["pm2_home"],
                                      run_as=eco["run_as"], login_user=t.ssh.user))
        plan[host.label] += [_file("PM2 ecosystem", eco["path"], eco["ecosystem"]),
                             *([reload, save] if eco["reload"] else [])]
    return plan
