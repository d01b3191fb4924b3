"""HAProxy's runtime API (admin socket) and master CLI: pure builders and parsers, thin operations.

Builders return the exact command text; `runtime_command` wraps a list of them into one shell
line (one `socat` connection per command, each answer followed by a marker line) so a whole
conversation costs one executor call and answers split without guessing. The operations below
(`flip`, `reload`, `ensure_running`, ...) run those lines through an `Executor`.

Facts this relies on (HAProxy 2.6, checked): every answer ends with an empty line; `set map`
answers nothing on success; the master's `reload` answers nothing, so a reload is confirmed by
`show proc` (the master's reload counter moves and a new worker appears, or the failed-reload
counter moves); `set map` changes memory only, so the map file is written too.
"""

from __future__ import annotations

import csv
import logging
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from .errors import BlueGreenError, ConfigError, RemoteError
from .executor import Executor, sh
from .topology import COLORS, Topology, other_color

log = logging.getLogger("bluegreen.haproxy")

LIVE_KEY = "live"
PREVIEW_KEY = "preview"
RESPONSE_END = "--bluegreen-end-of-answer--"
SOCKET_TIMEOUT = 10.0
RELOAD_TIMEOUT = 30.0
START_TIMEOUT = 15.0
_POLL_INTERVAL = 0.1

# Words HAProxy's CLI would split or treat specially (`;` separates commands, spaces arguments).
_CLI_WORD = re.compile(r"^[A-Za-z0-9_./@+:=-]+$")
# socat addresses use `:` `,` `!` as syntax; a socket path with them would be misread.
_SOCKET_PATH = re.compile(r"^/[A-Za-z0-9_./@+-]+$")


class UnexpectedAnswer(BlueGreenError):
    """HAProxy answered something a parser does not understand (a pure-parser failure)."""


class HaproxyUnavailable(RemoteError):
    """Nothing answers on a socket: HAProxy (or its master) is not running there."""


# --------------------------------------------------------------------------- where things are


@dataclass(frozen=True)
class HaproxyPaths:
    """Absolute paths on the load balancer, already rooted (the lab gives each host its own root).

    `service` is the systemd unit to start when no master answers, or None to start HAProxy
    directly (rooted lab hosts: a system unit would read /etc/haproxy, not the host's root).
    """

    config: str
    map: str
    admin_socket: str
    master_socket: str
    pid_file: str
    service: str | None = None

    @classmethod
    def from_topology(cls, t: Topology) -> HaproxyPaths:
        lb, hp = t.load_balancer, t.haproxy
        return cls(config=lb.path(hp.config_path), map=lb.path(hp.map_path),
                   admin_socket=lb.path(hp.admin_socket), master_socket=lb.path(hp.master_socket),
                   pid_file=lb.path(hp.pid_file), service="haproxy" if lb.root == "/" else None)

    def to_props(self) -> dict[str, Any]:
        return {"config_path": self.config, "map_path": self.map, "admin_socket": self.admin_socket,
                "master_socket": self.master_socket, "pid_file": self.pid_file, "service": self.service}

    @classmethod
    def from_props(cls, props: dict[str, Any]) -> HaproxyPaths:
        try:
            return cls(config=str(props["config_path"]), map=str(props["map_path"]),
                       admin_socket=str(props["admin_socket"]),
                       master_socket=str(props["master_socket"]), pid_file=str(props["pid_file"]),
                       service=props.get("service") or None)
        except KeyError as exc:
            raise ConfigError(f"HAProxy resource properties lack {exc.args[0]!r}") from None


def _paths(where: Topology | HaproxyPaths) -> HaproxyPaths:
    return where if isinstance(where, HaproxyPaths) else HaproxyPaths.from_topology(where)


def backend_for(color: str) -> str:
    if color not in COLORS:
        raise ConfigError(f"unknown colour {color!r} (expected one of {', '.join(COLORS)})")
    return f"bk_{color}"


def color_of(backend: str) -> str | None:
    return next((c for c in COLORS if backend == f"bk_{c}"), None)


def routing_entries(live_color: str) -> dict[str, str]:
    """What the map must hold for `live_color` to serve: the preview goes to the other colour."""
    return {LIVE_KEY: backend_for(live_color), PREVIEW_KEY: backend_for(other_color(live_color))}


# --------------------------------------------------------------------------- pure builders


def _word(value: str, what: str) -> str:
    if not _CLI_WORD.match(value):
        raise ConfigError(f"{what} {value!r} cannot be passed to the HAProxy CLI "
                          "(letters, digits and _ . / @ + : = - only)")
    return value


def set_map(map_path: str, key: str, value: str) -> str:
    return f"set map {_word(map_path, 'map path')} {_word(key, 'map key')} {_word(value, 'map value')}"


def add_map(map_path: str, key: str, value: str) -> str:
    return f"add map {_word(map_path, 'map path')} {_word(key, 'map key')} {_word(value, 'map value')}"


def show_map(map_path: str) -> str:
    return f"show map {_word(map_path, 'map path')}"


SHOW_STAT = "show stat"
SHOW_SERVERS_STATE = "show servers state"
SHOW_BACKEND = "show backend"
# Master CLI.
RELOAD = "reload"
SHOW_PROC = "show proc"


def runtime_command(socket_path: str, commands: Sequence[str], *, timeout: float = SOCKET_TIMEOUT) -> str:
    """One shell line sending each command on its own connection, each answer ended by RESPONSE_END.

    The chain stops at the first connection that fails, so a short answer list means socat failed.
    """
    if not _SOCKET_PATH.match(socket_path):
        raise ConfigError(f"socket path {socket_path!r}: expected an absolute path of letters, digits "
                          "and _ . / @ + - only")
    if not commands:
        raise ValueError("runtime_command needs at least one command")
    address = f"UNIX-CONNECT:{socket_path}"
    parts = []
    for command in commands:
        if "\n" in command or ";" in command:
            raise ConfigError(f"refusing to send {command!r}: one command per line, no ';'")
        parts.append(f"printf '%s\\n' {shlex.quote(command)} | socat -T {timeout:g} -t {timeout:g} - "
                     f"{shlex.quote(address)} && echo {RESPONSE_END}")
    return "set -o pipefail; " + " && ".join(parts)


def check_config_command(config_path: str) -> str:
    return sh("haproxy", "-c", "-f", config_path)


def start_command(paths: HaproxyPaths) -> str:
    """Master-worker HAProxy, daemonised, with its master CLI on `paths.master_socket`."""
    if not _SOCKET_PATH.match(paths.master_socket):
        raise ConfigError(f"master socket {paths.master_socket!r}: expected an absolute path of "
                          "letters, digits and _ . / @ + - only")
    dirs = sorted({str(PurePosixPath(p).parent) for p in
                   (paths.admin_socket, paths.master_socket, paths.pid_file)})
    return (sh("mkdir", "-p", *dirs) + " && "
            + sh("haproxy", "-W", "-S", f"{paths.master_socket},mode,600", "-f", paths.config,
                 "-p", paths.pid_file, "-D"))


def systemd_start_command(service: str) -> str:
    return sh("systemctl", "start", service)


def port_in_use_command(address: str, port: int) -> str:
    """Exit status 0 when something accepts TCP connections on address:port (bash's /dev/tcp)."""
    return sh("timeout", "3", "bash", "-c", f'exec 3<>"/dev/tcp/{address}/{port}"')


_BIND = re.compile(r"^\s*bind\s+(\d{1,3}(?:\.\d{1,3}){3}):(\d+)(?:\s|$)", re.M)


def tcp_binds(config: str) -> set[tuple[str, int]]:
    """The IPv4 `bind address:port` listeners of a config (other bind forms are not listed)."""
    return {(m.group(1), int(m.group(2))) for m in _BIND.finditer(config)}


# --------------------------------------------------------------------------- pure parsers


def split_answers(stdout: str) -> list[str]:
    """The answers of a `runtime_command` run, each without HAProxy's closing empty line."""
    answers: list[str] = []
    current: list[str] = []
    for line in stdout.split("\n"):
        if line == RESPONSE_END:
            answers.append("\n".join(current).strip("\n"))
            current = []
        else:
            current.append(line)
    return answers


def parse_show_map(text: str) -> dict[str, str]:
    """`show map <file>` lines (`0x55d5c0e3f0a0 live bk_blue`) as {key: value}."""
    entries: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split(None, 2)
        if len(parts) != 3 or not parts[0].startswith("0x"):
            raise UnexpectedAnswer(f"show map answered {text.strip()!r}")
        entries[parts[1]] = parts[2]
    return entries


def parse_show_backend(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@dataclass(frozen=True)
class ServerStat:
    backend: str
    name: str
    status: str
    check_status: str
    check_description: str
    address: str
    weight: int
    current_sessions: int
    total_sessions: int
    hrsp_5xx: int

    @property
    def up(self) -> bool:
        # "UP 1/2" while rising, "UP" when settled; "no check" counts as up (not checked).
        return self.status.startswith("UP") or self.status == "no check"


@dataclass(frozen=True)
class BackendStat:
    name: str
    status: str
    current_sessions: int
    total_sessions: int
    requests_total: int
    hrsp_5xx: int
    servers: tuple[ServerStat, ...] = ()

    @property
    def up(self) -> bool:
        return self.status == "UP"

    @property
    def servers_up(self) -> int:
        return sum(1 for s in self.servers if s.up)

    @property
    def color(self) -> str | None:
        return color_of(self.name)


@dataclass(frozen=True)
class FrontendStat:
    name: str
    status: str
    current_sessions: int
    requests_total: int
    hrsp_5xx: int


@dataclass(frozen=True)
class StatSnapshot:
    frontends: dict[str, FrontendStat] = field(default_factory=dict)
    backends: dict[str, BackendStat] = field(default_factory=dict)

    @property
    def requests_total(self) -> int:
        return sum(f.requests_total for f in self.frontends.values())

    @property
    def hrsp_5xx_total(self) -> int:
        return sum(b.hrsp_5xx for b in self.backends.values())

    @property
    def current_sessions(self) -> int:
        return sum(f.current_sessions for f in self.frontends.values())


def _int(row: dict[str, str], key: str) -> int:
    value = row.get(key) or ""
    return int(value) if value.lstrip("-").isdigit() else 0


def parse_stat_csv(text: str) -> StatSnapshot:
    """`show stat` CSV: frontends and backends with their servers, sessions and 5xx counters."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# pxname,"):
        raise UnexpectedAnswer(f"show stat answered {text.strip()[:200]!r}")
    header = lines[0][2:].split(",")
    rows = list(csv.DictReader(lines[1:], fieldnames=header))
    servers: dict[str, list[ServerStat]] = {}
    for row in rows:
        if row.get("type") == "2":
            servers.setdefault(row["pxname"], []).append(ServerStat(
                backend=row["pxname"], name=row["svname"], status=row.get("status") or "",
                check_status=row.get("check_status") or "", check_description=row.get("check_desc") or "",
                address=row.get("addr") or "", weight=_int(row, "weight"),
                current_sessions=_int(row, "scur"), total_sessions=_int(row, "stot"),
                hrsp_5xx=_int(row, "hrsp_5xx")))
    frontends: dict[str, FrontendStat] = {}
    backends: dict[str, BackendStat] = {}
    for row in rows:
        kind = row.get("type")
        if kind == "0":
            frontends[row["pxname"]] = FrontendStat(
                name=row["pxname"], status=row.get("status") or "", current_sessions=_int(row, "scur"),
                requests_total=_int(row, "req_tot"), hrsp_5xx=_int(row, "hrsp_5xx"))
        elif kind == "1":
            backends[row["pxname"]] = BackendStat(
                name=row["pxname"], status=row.get("status") or "", current_sessions=_int(row, "scur"),
                total_sessions=_int(row, "stot"), requests_total=_int(row, "req_tot"),
                hrsp_5xx=_int(row, "hrsp_5xx"), servers=tuple(servers.get(row["pxname"], ())))
    return StatSnapshot(frontends=frontends, backends=backends)


def parse_servers_state(text: str) -> list[dict[str, str]]:
    """`show servers state`: a version line, a `# be_id be_name ...` header, one line per server."""
    lines = [line for line in text.splitlines() if line.strip()]
    header_at = next((i for i, line in enumerate(lines) if line.startswith("# be_id")), None)
    if header_at is None:
        raise UnexpectedAnswer(f"show servers state answered {text.strip()[:200]!r}")
    names = lines[header_at][2:].split()
    return [dict(zip(names, line.split(), strict=False)) for line in lines[header_at + 1:]
            if not line.startswith("#")]


@dataclass(frozen=True)
class ProcEntry:
    pid: int
    kind: str
    reloads: int
    uptime: str
    version: str


@dataclass(frozen=True)
class ProcTable:
    """The master's `show proc`: its reload counters, current workers, workers still draining."""

    master: ProcEntry
    failed_reloads: int
    workers: tuple[ProcEntry, ...]
    old_workers: tuple[ProcEntry, ...]

    @property
    def reloads(self) -> int:
        return self.master.reloads

    @property
    def worker_pids(self) -> frozenset[int]:
        return frozenset(w.pid for w in self.workers)


_PROC_LINE = re.compile(r"^(\d+)\s+(\S+)\s+(\d+)(?:\s+\[failed:\s*(\d+)\])?\s+(\S+)\s+(\S+)")


def parse_show_proc(text: str) -> ProcTable:
    master: ProcEntry | None = None
    failed = 0
    workers: list[ProcEntry] = []
    old: list[ProcEntry] = []
    section = "master"
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#<PID>"):
            continue
        if stripped.startswith("#"):
            section = stripped.lstrip("# ").lower()
            continue
        m = _PROC_LINE.match(stripped)
        if m is None:
            raise UnexpectedAnswer(f"show proc line not understood: {stripped!r}")
        entry = ProcEntry(pid=int(m.group(1)), kind=m.group(2), reloads=int(m.group(3)),
                          uptime=m.group(5), version=m.group(6))
        if entry.kind == "master":
            master = entry
            failed = int(m.group(4) or 0)
        elif section == "workers":
            workers.append(entry)
        elif section == "old workers":
            old.append(entry)
    if master is None:
        raise UnexpectedAnswer(f"show proc answered no master: {text.strip()[:200]!r}")
    return ProcTable(master=master, failed_reloads=failed, workers=tuple(workers), old_workers=tuple(old))


def config_errors(output: str) -> str:
    """HAProxy's own complaint from `haproxy -c` output: its ALERT lines, else everything."""
    alerts = [line for line in output.splitlines() if "[ALERT]" in line]
    return "\n".join(alerts) if alerts else output.strip()


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
            from .estate_haproxy import live_color_from_config

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


MISSING_BACKEND_EXIT = 3


def guarded_flip_command(socket_path: str, map_path: str, wanted: Mapping[str, str]) -> str:
    """One shell line: refuse (exit 3) unless HAProxy has every backend `wanted` names, then
    answer `show map`, the `set map`s and `show map` again.

    One SSH round trip from the decision to the flip: traffic moves as soon as this runs.
    """
    check = runtime_command(socket_path, [SHOW_BACKEND])
    needed = " ".join(shlex.quote(b) for b in sorted(set(wanted.values())))
    guard = (f"backends=$({check}) || exit 4; for b in {needed}; do "
             f"printf '%s\\n' \"$backends\" | grep -qxF \"$b\" || "
             f"{{ echo \"missing backend $b\" >&2; exit {MISSING_BACKEND_EXIT}; }}; done")
    commands = [show_map(map_path), *(set_map(map_path, k, v) for k, v in wanted.items()), show_map(map_path)]
    return f"{guard}; {runtime_command(socket_path, commands)}"


def set_live_color(executor: Executor, paths: HaproxyPaths, live_color: str, map_text: str) -> FlipResult:
    """Route `live_color` in memory (no reload), then make the map file say the same.

    Refuses, before changing anything, when the running HAProxy lacks either colour backend: a
    map value naming a missing backend answers every request with 503.
    """
    wanted = routing_entries(live_color)
    step = f"route traffic to {live_color}"
    result = executor.run(guarded_flip_command(paths.admin_socket, paths.map, wanted), step=step,
                          check=False, timeout=SOCKET_TIMEOUT * (len(wanted) + 3) + 10)
    if result.exit_code == MISSING_BACKEND_EXIT:
        missing = result.stderr.strip().splitlines()[-1].removeprefix("missing backend ")
        raise RemoteError(executor.host, step, f"the running HAProxy has no backend {missing}; "
                          "apply the HAProxy configuration first")
    answers = split_answers(result.stdout)
    if not result.ok or len(answers) != len(wanted) + 2:
        why = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit code {result.exit_code}"
        why = re.sub(r"^\S*socat\[\d+\] E ", "", why)
        raise HaproxyUnavailable(executor.host, step, f"no answer from HAProxy on {paths.admin_socket}: {why}")
    before: dict[str, str] = _parse(executor, step, parse_show_map, answers[0])
    refused = [a.strip() for a in answers[1:-1] if a.strip()]
    after: dict[str, str] = _parse(executor, step, parse_show_map, answers[-1])
    if refused and any(k not in before for k in wanted):
        # `set map` only changes existing keys: a map file missing one gets it added.
        adds = [add_map(paths.map, k, v) for k, v in wanted.items() if k not in before]
        answers = ask(executor, paths.admin_socket, [*adds, show_map(paths.map)], step=step)
        refused = [a.strip() for a in answers[:-1] if a.strip()]
        after = _parse(executor, step, parse_show_map, answers[-1])
    if refused or any(after.get(k) != v for k, v in wanted.items()):
        raise RemoteError(executor.host, step, "HAProxy did not take the new map: "
                          + ("; ".join(refused) or f"it now holds {after}"))
    runtime_changed = any(before.get(k) != v for k, v in wanted.items())
    if runtime_changed:
        log.info("%s: live colour is now %s (was %s)", executor.host, live_color,
                 color_of(before.get(LIVE_KEY, "")) or before.get(LIVE_KEY))
    file_changed = False
    existing = executor.get(paths.map, step=step)
    if existing is None or existing.decode(errors="replace") != map_text:
        try:
            executor.put(paths.map, map_text, step="write the live-colour map file")
        except RemoteError as exc:
            raise RemoteError(exc.host, exc.step, f"{exc.detail} (HAProxy already routes to {live_color} "
                              "in memory; a reload before this file is fixed would undo that)") from None
        file_changed = True
    return FlipResult(previous=before, current=after, runtime_changed=runtime_changed,
                      file_changed=file_changed)


def flip(executor: Executor, t: Topology, live_color: str) -> FlipResult:
    """Make `live_color` live: runtime `set map` for live and preview, then the map file."""
    from .render.haproxy import render_live_map

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
    table: ProcTable = _parse(executor, step, parse_show_proc, answer)
    return table


def reload(executor: Executor, where: Topology | HaproxyPaths, *,
           timeout: float = RELOAD_TIMEOUT) -> ProcTable:
    """Validate, then reload hitlessly through the master; returns `show proc` with the new worker.

    A config HAProxy rejects raises before anything is sent: the running workers keep serving.
    """
    paths = _paths(where)
    validate_config(executor, paths.config)
    before = show_proc(executor, paths)
    step = "reload HAProxy"
    sent = executor.run(runtime_command(paths.master_socket, [RELOAD]), step=step, check=False,
                        timeout=SOCKET_TIMEOUT + 10)
    deadline = time.monotonic() + timeout
    while True:
        try:
            after = show_proc(executor, paths)
        except HaproxyUnavailable:
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


def master_answers(executor: Executor, where: Topology | HaproxyPaths) -> ProcTable | None:
    try:
        return show_proc(executor, where)
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
        table = master_answers(executor, paths)
        if table is not None and table.workers:
            log.info("%s: HAProxy started (master %d)", executor.host, table.master.pid)
            return True
        if time.monotonic() >= deadline:
            hint = (f"; systemd started {paths.service} but its master CLI is not on {paths.master_socket} "
                    "(set -S in the unit's EXTRAOPTS)") if use_systemd else ""
            raise RemoteError(executor.host, step, f"no HAProxy master answered on {paths.master_socket} "
                              f"within {timeout:g}s{hint}")
        time.sleep(_POLL_INTERVAL)
