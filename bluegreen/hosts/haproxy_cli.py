"""HAProxy's runtime API (admin socket) and master CLI: the commands and the parsers of their answers.

Builders return the exact command text; `runtime_command` wraps a list of them into one shell
line (one `socat` connection per command, each answer followed by a marker line) so a whole
conversation costs one executor call and answers split without guessing. `hosts.haproxy` runs
them (`flip`, `reload`, `ensure_running`, ...) through an `Executor`. Pure.

Facts this relies on (HAProxy 2.6, checked): every answer ends with an empty line; `set map`
answers nothing on success; the master's `reload` answers nothing, so a reload is confirmed by
`show proc` (the master's reload counter moves and a new worker appears, or the failed-reload
counter moves); `set map` changes memory only, so the map file is written too.
"""

from __future__ import annotations

import csv
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from bluegreen.model.errors import BlueGreenError, ConfigError
from bluegreen.model.topology import COLORS, Topology, other_color
from bluegreen.render.shell import sh

LIVE_KEY = "live"
PREVIEW_KEY = "preview"
RESPONSE_END = "--bluegreen-end-of-answer--"
SOCKET_TIMEOUT = 10.0
RELOAD_TIMEOUT = 30.0
START_TIMEOUT = 15.0

# Words HAProxy's CLI would split or treat specially (`;` separates commands, spaces arguments).
_CLI_WORD = re.compile(r"^[A-Za-z0-9_./@+:=-]+$")
# socat addresses use `:` `,` `!` as syntax; a socket path with them would be misread.
_SOCKET_PATH = re.compile(r"^/[A-Za-z0-9_./@+-]+$")


class UnexpectedAnswer(BlueGreenError):
    """HAProxy answered something a parser does not understand (a pure-parser failure)."""


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


WILDCARD = "*"


def port_in_use_command(address: str, port: int) -> str:
    """Exit status 0 when something accepts TCP connections on address:port (bash's /dev/tcp);
    for a wildcard address, when anything listens on the port on any address (`ss`)."""
    if address == WILDCARD:
        return f"ss -Hltn {sh(f'( sport = :{port} )')} | grep -q ."
    return sh("timeout", "3", "bash", "-c", f'exec 3<>"/dev/tcp/{address.strip("[]")}/{port}"')


_BIND_LINE = re.compile(r"^\s*bind\s+(\S+)", re.M)
# Address families HAProxy listens on with TCP; unix@, abns@, fd@, sockpair@, udp@, quic@ are not TCP.
_TCP_PREFIXES = ("ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@")
_OTHER_PREFIX = re.compile(r"^[a-z0-9]+@")
_WILDCARDS = {"", "*", "0.0.0.0", "::", "[::]"}  # noqa: S104 - read from a config, never bound here


def _bind_endpoints(word: str) -> set[tuple[str, int]]:
    """`[family@]address:port[-port][,...]` (HAProxy's bind syntax) as (address, port) pairs; a
    wildcard address (`*`, empty, 0.0.0.0, ::) is WILDCARD."""
    found: set[tuple[str, int]] = set()
    for item in word.split(","):
        for prefix in _TCP_PREFIXES:
            if item.startswith(prefix):
                item = item[len(prefix):]
                break
        else:
            if _OTHER_PREFIX.match(item):
                continue  # a unix socket, an inherited fd, UDP/QUIC: no TCP port to check
        address, sep, ports = item.rpartition(":")
        if not sep:
            continue
        low, _, high = ports.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            continue
        host = WILDCARD if address in _WILDCARDS else address
        found |= {(host, port) for port in range(int(low), int(high or low) + 1)}
    return found


def tcp_binds(config: str) -> set[tuple[str, int]]:
    """Every TCP listener the config's `bind` lines open, in any of HAProxy's address forms
    (`a.b.c.d:p`, `ipv4@a.b.c.d:p`, `*:p`, `:p`, `[::1]:p`, ranges, comma lists). Comments skipped."""
    text = "\n".join(line.split("#", 1)[0] for line in config.splitlines())
    found: set[tuple[str, int]] = set()
    for match in _BIND_LINE.finditer(text):
        found |= _bind_endpoints(match.group(1))
    return found


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


MISSING_BACKEND_EXIT = 3
NO_ANSWER_EXIT = 4
REFUSED_EXIT = 5
FLIP_SOCKET_TIMEOUT = 5.0
MAP_FILE_WRITTEN = "file written"
MAP_FILE_UNCHANGED = "file unchanged"
MAP_FILE_OK = (MAP_FILE_WRITTEN, MAP_FILE_UNCHANGED)


def _has_entries(entries: Mapping[str, str]) -> str:
    """An awk program exiting 0 when a `show map` answer holds every (key, value) of `entries`."""
    checks = " && ".join(f"s{i}" for i in range(len(entries))) or "1"
    sets = " ".join(f'$2=="{k}" && $3=="{v}" {{s{i}=1}}' for i, (k, v) in enumerate(entries.items()))
    return shlex.quote(f"{sets} END {{exit !({checks})}}")


def flip_script(socket_path: str, map_path: str, wanted: Mapping[str, str], map_text: str) -> str:
    """ONE remote step for a flip: refuse (exit 3) unless HAProxy has every backend `wanted`
    names; `show map`; `set map` (`add map` for a key the map lacks) of each entry; `show map`;
    then the map file rewritten to what HAProxy now routes by (`map_text` when it took the new
    entries, else its own entries): the runtime and the file never disagree past this step, so a
    reload keeps whatever HAProxy serves. SIGHUP and SIGPIPE are ignored: a client that loses the
    connection half way does not stop the script between the runtime flip and the file.

    Prints the answers of the two `show map`s and the file's fate, each followed by RESPONSE_END;
    refusals go to stderr. Exit 0, or 3 (missing backend), 4 (no answer), 5 (refused).
    """
    for key, value in wanted.items():
        _word(key, "map key")
        _word(value, "map value")
    if not _SOCKET_PATH.match(socket_path):
        raise ConfigError(f"socket path {socket_path!r}: expected an absolute path of letters, digits "
                          "and _ . / @ + - only")
    timeout = f"{FLIP_SOCKET_TIMEOUT:g}"
    needed = " ".join(shlex.quote(b) for b in sorted(set(wanted.values())))
    entries = " ".join(shlex.quote(f"{k} {v}") for k, v in wanted.items())
    m = shlex.quote(_word(map_path, "map path"))
    return "\n".join([
        "trap '' HUP PIPE",
        f"S={shlex.quote('UNIX-CONNECT:' + socket_path)}; M={m}",
        f"ask() {{ printf '%s\\n' \"$1\" | socat -T {timeout} -t {timeout} - \"$S\"; }}",
        f"backends=$(ask 'show backend') || {{ echo \"no answer from HAProxy on $S\" >&2; exit {NO_ANSWER_EXIT}; }}",
        f"for b in {needed}; do printf '%s\\n' \"$backends\" | grep -qxF \"$b\" || "
        f"{{ echo \"missing backend $b\" >&2; exit {MISSING_BACKEND_EXIT}; }}; done",
        f"before=$(ask \"show map $M\") || {{ echo \"no answer from HAProxy on $S\" >&2; exit {NO_ANSWER_EXIT}; }}",
        "rc=0",
        f"for kv in {entries}; do k=${{kv%% *}}; verb=add; "
        "printf '%s\\n' \"$before\" | awk -v k=\"$k\" '$2==k{f=1} END{exit !f}' && verb=set; "
        f"out=$(ask \"$verb map $M $kv\") || rc={NO_ANSWER_EXIT}; "
        f"if [ -n \"$out\" ]; then printf 'refused: %s\\n' \"$out\" >&2; rc={REFUSED_EXIT}; fi; done",
        "after=$(ask \"show map $M\") || after=''",
        "file='file unwritten'",
        f"if printf '%s\\n' \"$after\" | awk {_has_entries(wanted)}; then "
        f"body={shlex.quote(map_text)}; "
        "elif printf '%s\\n' \"$after\" | awk '$2==\"live\"{f=1} END{exit !f}'; then "
        "body=$(printf '%s\\n' \"$after\" | awk 'NF==3{print $2\" \"$3}'); "
        "body=\"$body\"$'\\n'; else body=''; fi",
        # A file that already says it is left alone (its mtime too: nothing changed).
        "cur=$(cat -- \"$M\" 2>/dev/null; printf x)",
        f"if [ -n \"$body\" ] && [ \"$cur\" = \"${{body}}x\" ]; then file='{MAP_FILE_UNCHANGED}'; "
        "elif [ -n \"$body\" ]; then if t=$(mktemp -- \"$M.XXXXXXXX\") && printf '%s' \"$body\" > \"$t\" "
        f"&& chmod 644 -- \"$t\" && mv -f -- \"$t\" \"$M\"; then file='{MAP_FILE_WRITTEN}'; "
        "else rm -f -- \"$t\"; file='file write failed'; fi; fi",
        f"printf '%s\\n' \"$before\" {RESPONSE_END} \"$after\" {RESPONSE_END} \"$file\" {RESPONSE_END}",
        "exit $rc",
    ])
