"""HAProxy on the load balancer: the live colour, backend states and counters, flips, reloads, start."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bluegreen.hosts.executor import Executor
from bluegreen.hosts.haproxy_cfg import backend_colors, color_from_config, served_color
from bluegreen.hosts.haproxy_cli import (
    FLIP_SOCKET_TIMEOUT,
    LIVE_KEY,
    MAP_FILE_OK,
    MAP_FILE_WRITTEN,
    MISSING_BACKEND_EXIT,
    NO_ANSWER_EXIT,
    RELOAD,
    RELOAD_TIMEOUT,
    SHOW_PROC,
    SHOW_SERVERS_STATE,
    SHOW_STAT,
    SOCKET_TIMEOUT,
    START_TIMEOUT,
    BackendStat,
    HaproxyPaths,
    ProcTable,
    StatSnapshot,
    UnexpectedAnswer,
    backend_for,
    check_config_command,
    color_of,
    config_errors,
    flip_script,
    parse_servers_state,
    parse_show_map,
    parse_show_proc,
    parse_stat_csv,
    port_in_use_command,
    routing_entries,
    runtime_command,
    show_map,
    split_answers,
    start_command,
    systemd_start_command,
    tcp_binds,
)
from bluegreen.model.errors import RemoteError
from bluegreen.model.topology import Topology

log = logging.getLogger("bluegreen.haproxy")
_POLL_INTERVAL = 0.1


class HaproxyUnavailable(RemoteError):
    """Nothing answers on a socket: HAProxy (or its master) is not running there."""


class MasterNotReady(RemoteError):
    """The master took the CLI connection and closed it without a word: it is starting, or
    re-executing itself for a reload (seen under load). It is there; ask again in a moment."""


# How long a master may answer nothing before that counts as an error.
MASTER_SETTLE = 5.0


def _paths(where: Topology | HaproxyPaths) -> HaproxyPaths:
    return where if isinstance(where, HaproxyPaths) else HaproxyPaths.from_topology(where)


# --------------------------------------------------------------------------- operations


def ask(executor: Executor, socket_path: str, commands: Sequence[str], *, step: str,
        timeout: float = SOCKET_TIMEOUT) -> list[str]:
    """Send `commands` over the socket; their answers, or HaproxyUnavailable if none came back."""
    for _attempt in range(2):
        # Every command we send is idempotent (reads, `set map` to a value): a connection HAProxy
        # closed without an answer while busy is worth one more try.
        result = executor.run(runtime_command(socket_path, commands, timeout=timeout), step=step,
                              check=False, timeout=timeout * len(commands) + 10)
        answers = split_answers(result.stdout)
        if result.ok and len(answers) == len(commands):
            return answers
        if not result.ok:
            break
    why = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit code {result.exit_code}"
    why = re.sub(r"^\S*socat\[\d+\] E ", "", why)
    raise HaproxyUnavailable(executor.host, step, f"no answer from HAProxy on {socket_path}: {why}")


def _parse(executor: Executor, step: str, parser: Any, text: str) -> Any:
    try:
        return parser(text)
    except UnexpectedAnswer as exc:
        raise RemoteError(executor.host, step, str(exc)) from None


def read_map(executor: Executor, where: Topology | HaproxyPaths) -> dict[str, str]:
    paths = _paths(where)
    step = "read the live-colour map"
    (answer,) = ask(executor, paths.admin_socket, [show_map(paths.map)], step=step)
    entries: dict[str, str] = _parse(executor, step, parse_show_map, answer)
    return entries


def live_backend(executor: Executor, where: Topology | HaproxyPaths) -> str:
    """The backend the public frontend sends traffic to right now, from HAProxy's memory."""
    entries = read_map(executor, where)
    if LIVE_KEY not in entries:
        raise RemoteError(executor.host, "read the live-colour map",
                          f"the map {_paths(where).map} has no {LIVE_KEY!r} entry")
    return entries[LIVE_KEY]


def live_color(executor: Executor, where: Topology | HaproxyPaths) -> str:
    try:
        backend = live_backend(executor, where)
    except RemoteError as exc:
        # HAProxy answered but knows no such map: a config we did not write (the estate as it
        # runs today), whose public frontend names its backend. Read the colour from there.
        if isinstance(where, Topology) and "Unknown map identifier" in exc.detail:
            return live_color_from_config(executor, where)
        raise
    color = color_of(backend)
    if color is None:
        raise RemoteError(executor.host, "read the live-colour map",
                          f"the live entry names {backend!r}, not one of the colour backends")
    return color


def stat_snapshot(executor: Executor, where: Topology | HaproxyPaths) -> StatSnapshot:
    step = "read HAProxy statistics"
    (answer,) = ask(executor, _paths(where).admin_socket, [SHOW_STAT], step=step)
    snapshot: StatSnapshot = _parse(executor, step, parse_stat_csv, answer)
    return snapshot


def backend_summary(backend: BackendStat) -> dict[str, Any]:
    """One colour backend as plain JSON (status reports, MCP answers)."""
    return {
        "backend": backend.name,
        "status": backend.status,
        "servers_up": backend.servers_up,
        "servers": [{"name": s.name, "status": s.status, "check": s.check_status,
                     "check_description": s.check_description, "address": s.address}
                    for s in backend.servers],
        "current_sessions": backend.current_sessions,
        "requests_total": backend.requests_total,
        "hrsp_5xx": backend.hrsp_5xx,
    }


def backend_states(executor: Executor, where: Topology | HaproxyPaths) -> dict[str, dict[str, Any]]:
    """Each colour's backend as HAProxy sees it now, keyed by colour (see `backend_summary`)."""
    snapshot = stat_snapshot(executor, where)
    return {b.color: backend_summary(b) for b in snapshot.backends.values() if b.color is not None}


@dataclass(frozen=True)
class BackendCounters:
    total: int
    http_5xx: int
    current_sessions: int


def backend_counters(executor: Executor, where: Topology | HaproxyPaths, color: str) -> BackendCounters:
    """Cumulative request and 5xx counters of one colour's backend (diff two reads for a rate)."""
    name = backend_for(color)
    backend = stat_snapshot(executor, where).backends.get(name)
    if backend is None:
        raise RemoteError(executor.host, "read HAProxy statistics",
                          f"the running HAProxy has no backend {name}")
    return BackendCounters(total=backend.requests_total, http_5xx=backend.hrsp_5xx,
                           current_sessions=backend.current_sessions)


def servers_state(executor: Executor, where: Topology | HaproxyPaths) -> list[dict[str, str]]:
    step = "read HAProxy server states"
    (answer,) = ask(executor, _paths(where).admin_socket, [SHOW_SERVERS_STATE], step=step)
    states: list[dict[str, str]] = _parse(executor, step, parse_servers_state, answer)
    return states


@dataclass(frozen=True)
class FlipResult:
    previous: dict[str, str]
    current: dict[str, str]
    runtime_changed: bool
    file_changed: bool

    @property
    def changed(self) -> bool:
        return self.runtime_changed or self.file_changed


def set_live_color(executor: Executor, paths: HaproxyPaths, live_color: str, map_text: str) -> FlipResult:
    """Route `live_color` in memory (no reload) and make the map file say the same, in ONE remote
    step (`flip_script`): the file always ends up saying what HAProxy routes by, so a reload keeps
    it, even when this client loses the connection half way.

    Refuses, before changing anything, when the running HAProxy lacks either colour backend: a
    map value naming a missing backend answers every request with 503. A map file that already
    says it is not touched (`file_changed` False).
    """
    wanted = routing_entries(live_color)
    step = f"route traffic to {live_color}"
    result = executor.run(flip_script(paths.admin_socket, paths.map, wanted, map_text), step=step,
                          check=False, timeout=FLIP_SOCKET_TIMEOUT * (len(wanted) + 3) + 10)
    last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit code {result.exit_code}"
    if result.exit_code == MISSING_BACKEND_EXIT:
        raise RemoteError(executor.host, step, f"the running HAProxy has no backend "
                          f"{last.removeprefix('missing backend ')}; apply the HAProxy configuration first")
    if result.exit_code == NO_ANSWER_EXIT and "no answer" in last:
        raise HaproxyUnavailable(executor.host, step, re.sub(r"\S*socat\[\d+\] E ", "", last))
    answers = split_answers(result.stdout)
    if len(answers) != 3:
        raise RemoteError(executor.host, step, f"unexpected answer from the flip ({last})")
    before: dict[str, str] = _parse(executor, step, parse_show_map, answers[0])
    after: dict[str, str] = _parse(executor, step, parse_show_map, answers[1]) if answers[1].strip() else {}
    file_state = answers[2].strip()
    if result.exit_code != 0 or any(after.get(k) != v for k, v in wanted.items()):
        refused = "; ".join(line.removeprefix("refused: ") for line in result.stderr.splitlines()
                            if line.startswith("refused: ")) or last
        moved = color_of(after.get(LIVE_KEY, "")) if after else None
        raise RemoteError(executor.host, step, f"HAProxy did not take the new map: {refused} (it routes "
                          f"to {moved or 'an unknown backend'}; the map file: {file_state})")
    if file_state not in MAP_FILE_OK:
        raise RemoteError(executor.host, "write the live-colour map file", f"{file_state} (HAProxy already "
                          f"routes to {live_color} in memory; a reload before the file is fixed would undo "
                          "that; `bluegreen switch --to " + live_color + "` rewrites it)")
    runtime_changed = any(before.get(k) != v for k, v in wanted.items())
    if runtime_changed:
        log.info("%s: live colour is now %s (was %s)", executor.host, live_color,
                 color_of(before.get(LIVE_KEY, "")) or before.get(LIVE_KEY))
    return FlipResult(previous=before, current=after, runtime_changed=runtime_changed,
                      file_changed=file_state == MAP_FILE_WRITTEN)


def read_map_file(executor: Executor, paths: HaproxyPaths) -> dict[str, str] | None:
    """The map file's entries (what a reload would route by); None when there is no file."""
    raw = executor.get(paths.map, step="read the live-colour map file")
    if raw is None:
        return None
    entries: dict[str, str] = {}
    for line in raw.decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) >= 2 and not parts[0].startswith("#"):
            entries[parts[0]] = parts[1]
    return entries


def flip(executor: Executor, t: Topology, live_color: str) -> FlipResult:
    """Make `live_color` live: runtime `set map` for live and preview, then the map file."""
    from bluegreen.render.haproxy import render_live_map

    return set_live_color(executor, HaproxyPaths.from_topology(t), live_color, render_live_map(t, live_color))


def validate_config(executor: Executor, config_path: str, *, shown_as: str | None = None) -> None:
    """`haproxy -c`; a rejection raises RemoteError carrying HAProxy's own message."""
    result = executor.run(check_config_command(config_path), step="validate the HAProxy configuration",
                          check=False)
    if not result.ok:
        message = config_errors(result.stderr + result.stdout)
        if shown_as:
            message = message.replace(config_path, shown_as)
        raise RemoteError(executor.host, "validate the HAProxy configuration",
                          f"HAProxy rejects {shown_as or config_path}:\n{message}")


def check_new_binds_free(executor: Executor, old_config: str, new_config: str) -> None:
    """Refuse listeners that another program already holds, before anything is reloaded.

    `haproxy -c` does not bind, and a reload whose new worker cannot bind pauses the running
    listeners while it tries: clients see refused connections for that moment.
    """
    taken = [f"{address}:{port}" for address, port in sorted(tcp_binds(new_config) - tcp_binds(old_config))
             if executor.run(port_in_use_command(address, port), step="check new listeners", check=False).ok]
    if taken:
        raise RemoteError(executor.host, "check new listeners",
                          f"{', '.join(taken)} already in use by another program on this host; "
                          "the new configuration could not start, so nothing was changed")


def show_proc(executor: Executor, where: Topology | HaproxyPaths) -> ProcTable:
    step = "ask the HAProxy master"
    (answer,) = ask(executor, _paths(where).master_socket, [SHOW_PROC], step=step)
    if not answer.strip():
        raise MasterNotReady(executor.host, step, "the master closed its CLI without an answer "
                                                  "(starting or re-executing)")
    table: ProcTable = _parse(executor, step, parse_show_proc, answer)
    return table


def show_proc_settled(executor: Executor, where: Topology | HaproxyPaths, *,
                      within: float = MASTER_SETTLE) -> ProcTable:
    """`show proc`, asked again while the master answers nothing for up to `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            return show_proc(executor, where)
        except MasterNotReady:
            if time.monotonic() >= deadline:
                raise
        time.sleep(_POLL_INTERVAL)


def reload(executor: Executor, where: Topology | HaproxyPaths, *,
           timeout: float = RELOAD_TIMEOUT) -> ProcTable:
    """Validate, then reload hitlessly through the master; returns `show proc` with the new worker.

    A config HAProxy rejects raises before anything is sent: the running workers keep serving.
    """
    paths = _paths(where)
    validate_config(executor, paths.config)
    keep_runtime_routing(executor, paths)
    before = show_proc_settled(executor, paths)
    step = "reload HAProxy"
    sent = executor.run(runtime_command(paths.master_socket, [RELOAD]), step=step, check=False,
                        timeout=SOCKET_TIMEOUT + 10)
    deadline = time.monotonic() + timeout
    while True:
        try:
            after = show_proc(executor, paths)
        except (HaproxyUnavailable, MasterNotReady):
            after = None  # the master re-executes itself; its socket is back in a moment
        if after is not None and after.failed_reloads > before.failed_reloads:
            raise RemoteError(executor.host, step, "the master refused the new configuration (show proc "
                              f"counts {after.failed_reloads} failed reloads); the old workers keep serving")
        if after is not None and after.reloads > before.reloads:
            fresh = after.worker_pids - before.worker_pids
            if fresh:
                log.info("%s: HAProxy reloaded, new worker %s", executor.host,
                         ", ".join(map(str, sorted(fresh))))
                return after
        if time.monotonic() >= deadline:
            said = (sent.stderr.strip() or sent.stdout.strip() or "nothing")[-300:]
            raise RemoteError(executor.host, step, f"no new worker within {timeout:g}s after `reload` "
                              f"(master said: {said})")
        time.sleep(_POLL_INTERVAL)


def keep_runtime_routing(executor: Executor, paths: HaproxyPaths) -> bool:
    """Before a reload: a map file that disagrees with what HAProxy routes by in memory would move
    traffic when the new worker loads it. Rewrite it to the runtime's entries (what serves now);
    True when it had to. Nothing to do where HAProxy has no such map (a hand-written config)."""
    try:
        runtime = read_map(executor, paths)
    except RemoteError as exc:
        if "Unknown map identifier" in exc.detail:
            return False
        raise
    on_disk = read_map_file(executor, paths)
    if not runtime or (on_disk is not None and all(on_disk.get(k) == v for k, v in runtime.items())):
        return False
    log.warning("%s: the map file %s says %s but HAProxy routes by %s: rewriting the file before the "
                "reload, so the reload keeps the live colour", executor.host, paths.map, on_disk, runtime)
    executor.put(paths.map, "".join(f"{k} {v}\n" for k, v in runtime.items()),
                 step="keep the live colour across the reload")
    return True


def master_answers(executor: Executor, where: Topology | HaproxyPaths) -> ProcTable | None:
    try:
        return show_proc_settled(executor, where)
    except HaproxyUnavailable:
        return None


def ensure_running(executor: Executor, where: Topology | HaproxyPaths, *,
                   timeout: float = START_TIMEOUT) -> bool:
    """Start HAProxy if no master answers (systemd when the host has it, else `haproxy -W -D`).

    Returns True when it had to start it. The config is validated first, so a broken file gives
    HAProxy's own message rather than a dead daemon.
    """
    paths = _paths(where)
    if master_answers(executor, paths) is not None:
        return False
    validate_config(executor, paths.config)
    step = "start HAProxy"
    use_systemd = paths.service is not None and executor.run(
        "test -d /run/systemd/system", step=step, check=False).ok
    if use_systemd and paths.service:
        executor.run(systemd_start_command(paths.service), step=step)
    else:
        executor.run(start_command(paths), step=step)
    deadline = time.monotonic() + timeout
    while True:
        try:
            table = master_answers(executor, paths)
        except RemoteError as exc:
            # A master that has just opened its CLI may answer `show proc` with nothing yet.
            log.debug("%s: the starting HAProxy master: %s", executor.host, exc)
            table = None
        if table is not None and table.workers:
            log.info("%s: HAProxy started (master %d)", executor.host, table.master.pid)
            return True
        if time.monotonic() >= deadline:
            hint = (f"; systemd started {paths.service} but its master CLI is not on {paths.master_socket} "
                    "(set -S in the unit's EXTRAOPTS)") if use_systemd else ""
            raise RemoteError(executor.host, step, f"no HAProxy master answered on {paths.master_socket} "
                              f"within {timeout:g}s{hint}")
        time.sleep(_POLL_INTERVAL)


STEP = "read the live colour from haproxy.cfg"


def live_color_from_config(executor: Executor, t: Topology) -> str:
    """The colour the running HAProxy serves (no map in this estate): one request as a visitor
    sends it, and the colour whose backend counted it; when that cannot be told (no answer, or
    other traffic moved both), the colour the config file's public frontend names."""
    from bluegreen.hosts.health import http_probe, visitor

    path = t.load_balancer.path(t.haproxy.config_path)
    raw = executor.get(path, step=STEP)
    if raw is None:
        raise RemoteError(executor.host, STEP, f"{path} does not exist")
    config = raw.decode(errors="replace")
    colors = backend_colors(config, t)

    def totals() -> dict[str, int]:
        snapshot = stat_snapshot(executor, t)
        return {name: b.requests_total for name, b in snapshot.backends.items()}

    before = totals()
    probe = http_probe(f"{t.public_url}/", headers={"Connection": "close"}, timeout=5, **visitor(t))
    if probe.status is not None:
        served = served_color(before, totals(), colors)
        if served is not None:
            return served
    color, why = color_from_config(config, t)
    if color is None:
        raise RemoteError(executor.host, STEP, why)
    return color
