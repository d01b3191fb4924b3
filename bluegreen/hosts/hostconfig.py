"""Host configuration: each piece of a host brought to its desired state through an `Executor`.

The `apply_*` functions return what they changed (an empty list means the host already matched
and nothing on it was touched). `hosts.providers` wraps them as the Pulumi dynamic providers'
create/diff/update/delete/read; `ops.configure` runs them in order for a whole topology without
the engine (the lab, a rebuilt host) and lists, purely, the files and commands they use.

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
from collections.abc import Iterable
from pathlib import PurePosixPath

from bluegreen.hosts import haproxy, haproxy_cli
from bluegreen.hosts.executor import Executor
from bluegreen.hosts.haproxy_cfg import color_from_backend_names
from bluegreen.model.errors import BlueGreenError, ConfigError, RemoteError
from bluegreen.model.sensitive import Sensitive, redact
from bluegreen.model.topology import Container, Topology
from bluegreen.render.commands import default_pm2_home, pm2_invocation
from bluegreen.render.postgres import merge_managed_block
from bluegreen.render.secretfiles import CHECK_ONLY_ENV
from bluegreen.render.shell import sh

log = logging.getLogger("bluegreen.hostconfig")

# Set (to the target colour) only by `bluegreen switch` around its `pulumi up` of the routing: the
# one run that may move traffic. Any other run that would serve another colour is refused.
SWITCH_ENV = "BLUEGREEN_SWITCH_TO"
# Set by the automation (hosts.pulumi) for a `pulumi up` it runs while holding the project lock:
# the lock's token, so the program (components/live.py) knows that lock is its caller's.
LOCK_TOKEN_ENV = "BLUEGREEN_LOCK_TOKEN"  # noqa: S105 (a variable name, not a secret)

BOOTSTRAP_SCRIPT_PATH = "/var/lib/bluegreen/bootstrap.sh"
PG_SOCKET_DIR = "/var/run/postgresql"
ECOSYSTEM_FILE = "ecosystem.config.js"
# The hand-written haproxy.cfg found on a host before our first install, kept beside ours.
HAPROXY_BACKUP_SUFFIX = ".pre-bluegreen"


def sha256_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def read_text(executor: Executor, path: str, step: str) -> str | None:
    data = executor.get(path, step=step)
    return None if data is None else data.decode(errors="replace")


# --------------------------------------------------------------------------- bootstrap


def bootstrap_command(script_path: str) -> str:
    return sh("bash", script_path)


def secret_modes_drift(executor: Executor, secret_modes: str) -> list[str]:
    """What the secret-modes script would change on the host (`render.secretfiles`), changing nothing."""
    result = executor.run(sh("bash", "-s"), step="check the modes of secret files",
                          input=secret_modes, env={CHECK_ONLY_ENV: "1"})
    return [line for line in result.stdout.splitlines() if line.startswith("bootstrap: ")]


def apply_bootstrap(executor: Executor, script: str, script_path: str, *,
                    secret_modes: str | None = None) -> list[str]:
    """Run the bootstrap script unless the host records that it already ran this exact script;
    then, every time, keep the files that hold secrets 0600 in 0700 directories.

    The record is the script itself at `script_path`, moved there only after a successful run,
    so a run that failed half-way is retried next time.
    """
    if read_text(executor, script_path, "read the bootstrap record") == script:
        if not secret_modes:
            return []
        result = executor.run(sh("bash", "-s"), step="secure the secret files", input=secret_modes)
        return [line.removeprefix("bootstrap: ") for line in result.stdout.splitlines()
                if line.startswith("bootstrap: ")]
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
    existing = read_text(executor, hba_file, step)
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
    hba_file = hba_path or _query(executor, socket_dir, port, "SHOW hba_file", "find pg_hba.conf")
    existing = read_text(executor, hba_file, "read pg_hba.conf")
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


def _refuse_serving_without_master(executor: Executor, paths: haproxy_cli.HaproxyPaths, config: str,
                                   candidate: str) -> None:
    """No master answers, yet the new config's listeners are taken: a proxy serves there that we
    cannot reload hitlessly, and starting ours beside it (or restarting it) would drop visitors."""
    serving = [f"{address}:{port}" for address, port in sorted(haproxy_cli.tcp_binds(config))
               if executor.run(haproxy_cli.port_in_use_command(address, port), step="look for a serving proxy",
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
        if len(parts) >= 2 and parts[0] == haproxy_cli.LIVE_KEY:
            return haproxy_cli.color_of(parts[1])
    return None


def serving_color(executor: Executor, paths: haproxy_cli.HaproxyPaths, config: str | None) -> tuple[str | None, str]:
    """The colour the proxy serves now, and where that was read: HAProxy's runtime map, else the
    `use_backend` of its (hand-written) config; (None, ...) when nothing serves yet."""
    if paths.admin_socket:
        try:
            return haproxy.live_color(executor, paths), "HAProxy's runtime map"
        except BlueGreenError as exc:
            log.debug("%s: no runtime live colour: %s", executor.host, exc)
    if config:
        color = color_from_backend_names(config)
        if color:
            return color, f"the backend of {paths.config or 'haproxy.cfg'}"
    return None, "nothing serves yet"


def refuse_flip(live: str | None, declared: str, *, declared_in: str, source: str = "HAProxy") -> None:
    """A `pulumi up` never moves traffic: declared must equal live, except in `bluegreen switch`."""
    if live is None or live == declared or os.environ.get(SWITCH_ENV) == declared:
        return
    if declared_in.endswith((".yaml", ".yml")):
        fix = f"Set `bluegreen:activeColor: {live}` in {declared_in} (`bluegreen adopt` writes it from HAProxy)"
    else:  # a stack's activeColorFile (the lab's): the file holds the colour alone
        fix = f"Declare what serves: `echo {live} > {declared_in}`"
    raise ConfigError(
        f"the estate serves {live} (from {source}) but {declared_in} declares "
        f"bluegreen:activeColor: {declared}; applying it would move live traffic. {fix}, and move "
        "traffic only with `bluegreen switch`")


def apply_haproxy_config(executor: Executor, paths: haproxy_cli.HaproxyPaths, config: str,
                         initial_map: str, *, declared_in: str = "the stack file") -> list[str]:
    """Install `config` if it differs (checked by `haproxy -c` first), reload or start HAProxy.

    A config HAProxy rejects raises with HAProxy's message; the live file and the running proxy
    are left as they were. The map file is only written when missing: after that it belongs to
    the routing (a flip rewrites it).
    """
    changes: list[str] = []
    current = read_text(executor, paths.config, "read the HAProxy configuration")
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
            haproxy.validate_config(executor, candidate, shown_as=f"the new {paths.config}")
        except RemoteError:
            executor.run(sh("rm", "-f", candidate), step="discard the rejected configuration", check=False)
            raise
        running = haproxy.master_answers(executor, paths) is not None
        if not running:
            _refuse_serving_without_master(executor, paths, config, candidate)
        if running:
            try:
                haproxy.check_new_binds_free(executor, current or "", config)
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
                table = haproxy.reload(executor, paths)
            except RemoteError as exc:
                # Some failures only show when the new worker starts: the old workers still serve,
                # and the file must match them again for the next restart.
                if current is not None:
                    executor.put(paths.config, current, step="restore the previous HAProxy configuration")
                raise RemoteError(exc.host, exc.step, f"{exc.detail}; {paths.config} is back to its "
                                  "previous content") from None
            changes.append(f"reloaded HAProxy (worker {', '.join(map(str, sorted(table.worker_pids)))})")
    if haproxy.ensure_running(executor, paths):
        changes.append("started HAProxy")
    return changes


def apply_routing(executor: Executor, paths: haproxy_cli.HaproxyPaths, live_color: str, map_text: str, *,
                  declared_in: str = "the stack file") -> list[str]:
    live, source = serving_color(executor, paths, None)
    refuse_flip(live, live_color, declared_in=declared_in, source=source)
    result = haproxy.set_live_color(executor, paths, live_color, map_text)
    changes = []
    if result.runtime_changed:
        previous = result.previous.get(haproxy_cli.LIVE_KEY, "")
        was = haproxy_cli.color_of(previous) or previous or "nothing"
        changes.append(f"live colour {was} -> {live_color}")
    if result.file_changed:
        changes.append(f"wrote {paths.map}")
    return changes


# --------------------------------------------------------------------------- PM2


def pm2_home(t: Topology, host: Container) -> str:
    """PM2's home on `host`: `app.pm2Home`, else the deploy user's ~/.pm2 (rooted like every path)."""
    return host.path(default_pm2_home(t))


def pm2_command(args: Iterable[str], *, pm2_home: str, run_as: str, login_user: str) -> str:
    """`pm2 ...` as the deploy user with its PM2 home (the same invocation deploys use)."""
    return pm2_invocation(args, pm2_home=pm2_home, run_as=run_as, login_user=login_user)


def apply_ecosystem(executor: Executor, *, text: str, path: str, pm2_home: str, app_dir: str,
                    run_as: str, login_user: str, reload: bool = True) -> list[str]:
    """Write the ecosystem file if it differs; then, if a release is deployed, have PM2 load it.

    `reload=False` for the live colour: reloading it in place drops requests, which is what
    blue-green avoids. Its file is written and takes effect at the next deploy to that colour.
    """
    if read_text(executor, path, "read the PM2 ecosystem") == text:
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
        executor.run(pm2_command(["save"], pm2_home=pm2_home, run_as=run_as, login_user=login_user)
                     + " && " + sh("chmod", "600", f"{pm2_home}/dump.pm2"), step="pm2 save")
        changes.append("pm2 startOrReload + save")
    return changes
