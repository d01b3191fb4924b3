"""Emergency switch and rollback: the load balancer and nothing else.

`switch --emergency` / `rollback --emergency` are what users reach for while production burns, so
they depend on one SSH connection to the HAProxy host and nothing more: no PostgreSQL, no Proxmox
API, no SSH to the app hosts, no readable journal, no free lock. One run:

1. one round trip: HAProxy's backends and live map, the deployment lock taken over (whoever held
   it is recorded, and its next compare-and-swap or step-boundary check finds the lock is no
   longer its own, so it stops and restores), the journal's text;
2. one round trip: `show map; set map live; set map preview; show map` on one admin-socket
   connection, and the map file rewritten in the same shell, so a reload keeps the flip;
3. the public frontend asked until the new colour answers (X-Served-By);
4. one round trip: the switch recorded in the journal if it parsed, otherwise appended to a side
   file beside it (`<journal>.pending`, JSON lines) that the next normal command folds in; the
   lock released (only if it is still ours).

The SSH connection is the OpenSSH client running one remote shell for the whole command (one TCP
connection, one key exchange, one session; each step is a script sent down that session), host
keys checked against the tool's known_hosts file with `StrictHostKeyChecking=yes`. paramiko is
not imported here: its import alone costs more than the whole flip.

In `switch.mode: direct` the stack file's declared colour follows the flip; in `automation` mode
the declared colour is left for a reconciling command (status shows the drift and the command).
SIGINT/SIGTERM are held back from the take-over to the record, so a flip is always recorded.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import os
import re
import select
import shlex
import shutil
import signal
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from .errors import BlueGreenError, ConfigError, RemoteError, SwitchError
from .executor import CommandResult, env_prefix
from .journal import (
    LOCK_NOT_OURS,
    UNREADABLE_LOCK,
    LockInfo,
    State,
    default_holder,
    parse_state,
    remove_if_owner_command,
    take_over_command,
)
from .sensitive import Sensitive, redact
from .topology import COLORS, Container, Topology, other_color, set_active_color_in_file

log = logging.getLogger("bluegreen.emergency")

SIDE_SUFFIX = ".pending"
PART = "--bluegreen-part--"
SERVED_BY_HEADER = "X-Served-By"
VERIFY_DEADLINE_S = 5.0


# --------------------------------------------------------------------------- results


@dataclass
class EmergencyResult:
    ok: bool
    color: str
    from_color: str
    path: str
    flip_ms: float
    verified: bool
    reason: str
    preempted: dict[str, Any] | None = None
    recorded_in: str | None = None  # "journal" or the side file's path
    declared: str | None = None  # the stack file's colour after the run
    reconcile: str | None = None  # the one command that makes the declared colour true
    error: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    watched_s: float = 0.0
    rolled_back: bool = False
    release: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "colour": self.color, "from": self.from_color, "release": self.release,
                "path": self.path, "flipMs": round(self.flip_ms, 1), "verified": self.verified,
                "watchedSeconds": 0.0, "rolledBack": False, "reason": self.reason,
                "preempted": self.preempted, "recordedIn": self.recorded_in, "declared": self.declared,
                "reconcile": self.reconcile, "error": self.error,
                "timingsMs": {k: round(v, 1) for k, v in self.timings_ms.items()}}


# --------------------------------------------------------------------------- signals


@contextlib.contextmanager
def signals_deferred(*, deliver: bool = True) -> Iterator[list[int]]:
    """Hold SIGINT/SIGTERM back for the block, then deliver the first one as KeyboardInterrupt
    (or, with `deliver=False`, only log it: an emergency flip finishes and reports normally).

    For the few steps that must not be cut in half (a flip and its record, a restore). Outside the
    main thread signals cannot be handled here, and the block simply runs. A signal the process
    was started ignoring (under nohup, or in the background of a script) stays ignored.
    """
    caught: list[int] = []

    def hold(signum: int, _frame: FrameType | None) -> None:
        caught.append(signum)

    try:
        previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)
                    if signal.getsignal(s) is not signal.SIG_IGN}
    except ValueError:  # not the main thread
        yield caught
        return
    try:
        yield caught
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if caught and deliver:
        raise KeyboardInterrupt(f"interrupted by signal {caught[0]}")
    if caught:
        log.warning("signal %d arrived during the emergency flip; it finished first", caught[0])


def raise_on_sigterm() -> None:
    """Make SIGTERM interrupt like Ctrl-C does, so both run the same restore paths."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"interrupted by signal {signum}")

    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, handler)


# --------------------------------------------------------------------------- OpenSSH executor


def _ssh_aliases(config: Path) -> set[str]:
    """Literal `Host` names of ~/.ssh/config (patterns are OpenSSH's own business)."""
    try:
        text = config.read_text()
    except OSError:
        return set()
    names: set[str] = set()
    for line in text.splitlines():
        m = re.match(r"^\s*Host\s+(.+)$", line, re.I)
        if m:
            names.update(n for n in m.group(1).split() if not any(ch in n for ch in "*?!"))
    return names


def ssh_argv(t: Topology, host: Container) -> list[str]:
    """The OpenSSH client's options for one estate host (pure): host key checked against the
    tool's known_hosts, never added; `~/.ssh/config` wins for a host it names, as with paramiko."""
    s = t.ssh
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={os.path.expanduser(s.known_hosts)}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no",
            "-o", f"ConnectTimeout={max(1, math.ceil(s.connect_timeout))}",
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR",
            "-T"]
    if host.name in _ssh_aliases(Path(os.path.expanduser("~/.ssh/config"))):
        return [*argv, host.name]
    argv += ["-p", str(s.port), "-l", s.user]
    if s.identity_file:
        argv += ["-i", os.path.expanduser(s.identity_file), "-o", "IdentitiesOnly=yes"]
    return [*argv, host.ip]


class OpenSshExecutor:
    """The executor protocol over ONE OpenSSH connection and ONE remote shell for the whole command.

    The remote `bash` reads scripts from our pipe; each call is a script whose exit code and
    stderr come back after a marker line that carries a random token. A call is then as cheap as
    the work it does: no new connection, no new session, no key exchange.
    """

    def __init__(self, t: Topology, host: Container, *, command_timeout: float | None = None,
                 secrets: Sequence[Sensitive] = ()) -> None:
        if shutil.which("ssh") is None:
            raise ConfigError("the OpenSSH client (`ssh`) is not installed; install openssh-client")
        self.host = host.label
        self.command_timeout = command_timeout or t.ssh.command_timeout
        self.secrets = list(secrets)
        self._mutex = threading.Lock()  # one script at a time down the one session
        self._argv = ssh_argv(t, host)
        self._marker = f"--bluegreen-{uuid.uuid4().hex}--"
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""

    def _session(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            # A session of its own: Ctrl-C at the terminal must not kill a flip half way.
            self._proc = subprocess.Popen(
                [*self._argv, "exec bash --noprofile --norc"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
            assert self._proc.stdin is not None
            self._proc.stdin.write(b'__e=$(mktemp) || exit 99; trap \'rm -f "$__e"\' EXIT\n')
            self._proc.stdin.flush()
        return self._proc

    def start(self) -> None:
        """Begin connecting now (the login proceeds while the caller does other work)."""
        with self._mutex, contextlib.suppress(OSError):
            self._session()

    def _read_until(self, proc: subprocess.Popen[bytes], needle: bytes, deadline: float, step: str) -> bytes:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while needle not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self._kill()
                raise RemoteError(self.host, step, "timed out")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                detail = self._ssh_error()
                self._kill()
                raise RemoteError(self.host, step if self._buffer or detail else "connect",
                                  f"connection lost: {detail or 'ssh exited'}")
            self._buffer += chunk
        head, _, self._buffer = self._buffer.partition(needle)
        return head

    def _ssh_error(self) -> str:
        proc = self._proc
        if proc is None or proc.stderr is None:
            return ""
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        text = proc.stderr.read().decode(errors="replace").strip() if proc.poll() is not None else ""
        if "host key" in text.lower() or "REMOTE HOST IDENTIFICATION" in text:
            text += " (refusing: check the key, then pin it with `bluegreen trust`)"
        return text[-1000:]

    def run(self, command: str, *, step: str, check: bool = True, timeout: float | None = None,
            input: str | bytes | None = None, env: Mapping[str, str] | None = None) -> CommandResult:
        with self._mutex:
            try:
                return self._run(command, step=step, check=check, timeout=timeout, input=input, env=env)
            except RemoteError as exc:
                if not self.secrets:
                    raise
                raise RemoteError(exc.host, exc.step, redact(exc.detail, self.secrets)) from None

    def _run(self, command: str, *, step: str, check: bool, timeout: float | None,
             input: str | bytes | None, env: Mapping[str, str] | None) -> CommandResult:
        proc = self._session()
        full = env_prefix(env) + command
        data = input.decode(errors="replace") if isinstance(input, bytes) else input
        feed = f"printf %s {shlex.quote(data)} | " if data is not None else ""
        stdin = "" if data is not None else " </dev/null"
        mark = self._marker
        script = (f"{feed}bash -c {shlex.quote(full)}{stdin} 2>\"$__e\"; __rc=$?; "
                  f"printf '\\n%s %s\\n' {mark} \"$__rc\"; cat \"$__e\"; printf '\\n%s\\n' {mark}-end\n")
        started = time.monotonic()
        deadline = started + (timeout or self.command_timeout)
        assert proc.stdin is not None
        try:
            proc.stdin.write(script.encode())
            proc.stdin.flush()
        except OSError:
            detail = self._ssh_error()
            self._kill()
            raise RemoteError(self.host, "connect", f"connection lost: {detail or 'ssh exited'}") from None
        out = self._read_until(proc, f"\n{mark} ".encode(), deadline, step)
        code_line = self._read_until(proc, b"\n", deadline, step)
        err = self._read_until(proc, f"\n{mark}-end\n".encode(), deadline, step)
        code = int(code_line.strip() or b"1")
        result = CommandResult(redact(full, self.secrets), code, out.decode(errors="replace"),
                               err.decode(errors="replace"), time.monotonic() - started)
        if check and code != 0:
            raise RemoteError(self.host, step, f"exit code {code}: "
                              f"{(result.stderr.strip() or result.stdout.strip() or 'no output')[-2000:]}")
        return result

    def put(self, path: str, content: str | bytes, *, step: str, mode: int = 0o644) -> None:
        self.run(atomic_write_command(path, mode), step=step, input=content)

    def get(self, path: str, *, step: str) -> bytes | None:
        result = self.run(read_file_command(path), step=step, check=False)
        if result.exit_code == 3:
            return None
        if result.exit_code != 0:
            raise RemoteError(self.host, step, f"cannot read {path}: {result.stderr.strip()[-500:]}")
        return result.stdout.encode()

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()  # our own child, by its handle
        if proc is not None:
            proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()

    def close(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.write(b"exit 0\n")
                proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._kill()

    def __enter__(self) -> OpenSshExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def atomic_write_command(path: str, mode: int = 0o644) -> str:
    """Shell writing stdin to `path` through a temporary file and a rename."""
    p = shlex.quote(path)
    return (f"p={p}; mkdir -p -- \"$(dirname -- \"$p\")\" && t=$(mktemp -- \"$p.XXXXXXXX\") && "
            f"{{ cat > \"$t\" && chmod {mode:o} -- \"$t\" && mv -f -- \"$t\" \"$p\" "
            f"|| {{ rm -f -- \"$t\"; exit 1; }}; }}")


def read_file_command(path: str) -> str:
    """Shell printing `path`; exit 3 when it does not exist."""
    return f"p={shlex.quote(path)}; [ -e \"$p\" ] || exit 3; cat -- \"$p\""


# --------------------------------------------------------------------------- pure pieces


def side_path(journal_path: str) -> str:
    return journal_path + SIDE_SUFFIX


def split_parts(stdout: str, count: int) -> list[str]:
    parts = stdout.split(PART + "\n")
    return (parts + [""] * count)[:count]


def split_cli_answers(text: str) -> list[str]:
    """Answers of several `;`-separated commands on one admin-socket connection: each ends with
    an empty line (HAProxy 2.6)."""
    answers: list[str] = []
    current: list[str] = []
    for line in text.split("\n"):
        if line == "":
            answers.append("\n".join(current))
            current = []
        else:
            current.append(line)
    if current:
        answers.append("\n".join(current))
    return answers


def parse_map(text: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].startswith("0x"):
            entries[parts[1]] = parts[2]
    return entries


def _socat(socket_path: str, line: str) -> str:
    address = f"UNIX-CONNECT:{socket_path}"
    return f"printf '%s\\n' {shlex.quote(line)} | socat -T 5 -t 5 - {shlex.quote(address)}"


def prepare_command(t: Topology) -> str:
    """Round trip 1: backends and map (one socket connection); the lock taken over (stdin is the
    new lock); the journal's text. Parts are separated by PART lines."""
    from .haproxy_runtime import HaproxyPaths, show_map

    paths = HaproxyPaths.from_topology(t)
    lb = t.load_balancer
    journal = lb.path(t.journal.path)
    return "; ".join([
        _socat(paths.admin_socket, f"show backend;{show_map(paths.map)}"),
        f"echo {PART}",
        f"( {take_over_command(lb.path(t.journal.lock_path))} ) || echo '(lock not taken)' >&2",
        f"echo {PART}",
        f"if [ -e {shlex.quote(journal)} ]; then echo present; cat -- {shlex.quote(journal)}; "
        f"else echo absent; fi",
    ])


def flip_command(t: Topology, color: str) -> str:
    """Round trip 2: show map, both `set map`s and show map on one socket connection, then the
    map file written (stdin is its text) so a reload keeps the flip."""
    from .haproxy_runtime import HaproxyPaths, routing_entries, set_map, show_map

    paths = HaproxyPaths.from_topology(t)
    sets = [set_map(paths.map, k, v) for k, v in routing_entries(color).items()]
    line = ";".join([show_map(paths.map), *sets, show_map(paths.map)])
    return (f"{_socat(paths.admin_socket, line)} || exit 7; echo {PART}; "
            + atomic_write_command(paths.map))


def record_command(t: Topology, token: str | None, *, journal_text: str | None, side_line: str | None) -> str:
    """Round trip 3: the journal (or a line appended to the side file), then the lock released
    if it still carries our token."""
    lb = t.load_balancer
    journal = lb.path(t.journal.path)
    parts = []
    if journal_text is not None:
        parts.append(f"printf %s {shlex.quote(journal_text)} | {{ {atomic_write_command(journal)}; }} "
                     f"|| {{ echo 'journal write failed' >&2; exit 6; }}")
    if side_line is not None:
        parts.append(f"{{ {append_side_command(journal, side_line)}; }} "
                     f"|| {{ echo 'side file write failed' >&2; exit 6; }}")
    if token:
        parts.append(f"( {remove_if_owner_command(lb.path(t.journal.lock_path), token)} ) || "
                     f"[ $? -eq {LOCK_NOT_OURS} ]")
    return "; ".join(parts) or "true"


def append_side_command(journal_path: str, line: str) -> str:
    """Append one JSON line to the side journal (a single short write: appends do not interleave)."""
    side = shlex.quote(side_path(journal_path))
    return f"mkdir -p -- \"$(dirname -- {side})\" && printf '%s\\n' {shlex.quote(line)} >> {side}"


def switch_entry(*, from_color: str, to_color: str, when: float, who: str, reason: str,
                 duration_ms: int, preempted: LockInfo | None, path: str) -> dict[str, Any]:
    """The journal entry of an emergency flip (the same shape as any switch, plus who was
    pre-empted and an id that lets a side-file copy be folded in exactly once)."""
    entry: dict[str, Any] = {
        "type": "switch", "from": from_color, "to": to_color,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)), "reason": reason,
        "who": who, "emergency": True, "durationMs": duration_ms, "path": path,
        "id": uuid.uuid4().hex,
    }
    if preempted is not None:
        entry["preempted"] = {"holder": preempted.holder, "host": preempted.host, "pid": preempted.pid,
                              "operation": preempted.operation}
    return entry


def with_entry(state: State, entry: Mapping[str, Any], keep: int) -> State:
    """`state` with an emergency switch entry on top (prod and counters follow it)."""
    updated = state.with_switch(str(entry["to"]), when=str(entry["timestamp"]), who=entry.get("who"),
                                reason=str(entry.get("reason") or ""), emergency=True,
                                duration_ms=entry.get("durationMs"), from_color=str(entry["from"]),
                                keep=keep)
    top = {**updated.history[0], **{k: v for k, v in entry.items() if k not in updated.history[0]}}
    return replace(updated, history=(top, *updated.history[1:]))


def parse_side(text: str) -> list[dict[str, Any]]:
    """Side-file lines, oldest first; a line that does not parse is skipped (and logged)."""
    entries = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            log.warning("side journal line %d is not JSON; skipped", n)
            continue
        if isinstance(entry, dict) and entry.get("to") in COLORS and entry.get("from") in COLORS:
            entries.append(entry)
    return entries


def fold(state: State, entries: list[dict[str, Any]], keep: int) -> State:
    """The journal with side-file entries it does not hold yet (by id) added, oldest first."""
    known = {e.get("id") for e in state.history if isinstance(e, Mapping) and e.get("id")}
    for entry in entries:
        if entry.get("id") not in known:
            state = with_entry(state, entry, keep)
    return state


def fold_pending(executor: Any, journal_path: str, state: State, keep: int) -> State:
    """What a normal command reads: the journal plus anything an emergency left in the side file."""
    raw = executor.get(side_path(journal_path), step="read the side journal")
    if raw is None:
        return state
    return fold(state, parse_side(raw.decode(errors="replace")), keep)


def clear_pending(executor: Any, journal_path: str, state: State) -> None:
    """After the journal was written: drop the side file if the journal now holds all of it."""
    path = side_path(journal_path)
    raw = executor.get(path, step="read the side journal")
    if raw is None:
        return
    known = {e.get("id") for e in state.history if isinstance(e, Mapping)}
    if all(e.get("id") in known for e in parse_side(raw.decode(errors="replace"))):
        executor.run(f"rm -f -- {shlex.quote(path)}", step="fold the side journal in")


def unfinished_release(state: State, color: str, release: str) -> str | None:
    """Why `release` (what `current` points at on `color`) must not be promoted, or None.

    Refused: a release whose newest deploy record failed (or was interrupted), and a release no
    record names that is newer than the colour's newest good deploy (a deploy killed before it
    could record anything). Older unrecorded releases (an old tool, trimmed history) pass.
    """
    from .journal import DeployRecord

    deploys = [r for r in state.records() if isinstance(r, DeployRecord) and r.color == color]
    named = next((r for r in deploys if r.release == release), None)
    if named is not None:
        if named.ok:
            return None
        return (f"the deploy of {release} to {color} did not finish ok (step "
                f"'{named.failed_step}': {named.error}); deploy again, or --emergency to override")
    good = next((r for r in deploys if r.ok and r.release), None)
    if good is not None and good.release and release[:14].isdigit() and release[:14] > good.release[:14]:
        return (f"{color} points at {release}, which no deploy recorded as finished (newer than the last "
                f"good deploy {good.release}: an interrupted deploy?); deploy again, or --emergency")
    return None


def reconcile_command(t: Topology, live: str) -> str:
    """The one command that makes the stack's declared colour the live one (automation mode)."""
    return (f"pulumi config set bluegreen:activeColor {live} --stack {t.stack} --cwd "
            f"{shlex.quote(str(t.project_dir))}")


# --------------------------------------------------------------------------- verify


class _Https(http.client.HTTPSConnection):
    """HTTPS to an address, with SNI and certificate check for the public name (as a visitor)."""

    def __init__(self, host: str, port: int | None, *, server_name: str | None, context: ssl.SSLContext,
                 timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._sni = server_name
        self._ctx = context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._ctx.wrap_socket(self.sock, server_hostname=self._sni or self.host)


def open_connection(url: str, timeout: float = 2.0, *, ca_file: str | None = None,
                    server_name: str | None = None) -> http.client.HTTPConnection:
    """A connection to `url`'s frontend, not yet connected; https verified for `server_name`."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=ca_file)
        return _Https(parts.hostname or "", parts.port, server_name=server_name, context=context,
                      timeout=timeout)
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)


def warm_connection(url: str, *, ca_file: str | None = None,
                    server_name: str | None = None) -> http.client.HTTPConnection | None:
    """Connected (TCP and TLS) before the flip, so the first probe after it pays no handshake:
    HAProxy routes each request by the map, so a kept-alive connection follows the flip."""
    conn = open_connection(url, ca_file=ca_file, server_name=server_name)
    try:
        conn.connect()
    except OSError:
        conn.close()
        return None
    return conn


def served_by(url: str, timeout: float = 2.0, *, ca_file: str | None = None,
              server_name: str | None = None,
              conn: http.client.HTTPConnection | None = None) -> tuple[int | None, str | None, str | None]:
    """One GET: (status, X-Served-By, error), on `conn` if given (then closed), else on a new
    connection. Standard library only: this runs in the hot path. For https the certificate is
    verified for `server_name` (also sent as SNI and Host)."""
    parts = urlsplit(url)
    headers = {"Connection": "close"}
    if parts.scheme == "https" and server_name:
        headers["Host"] = server_name
    if conn is None:
        conn = open_connection(url, timeout, ca_file=ca_file, server_name=server_name)
    try:
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), headers=headers)
        response = conn.getresponse()
        response.read(2000)
        return response.status, response.getheader(SERVED_BY_HEADER), None
    except (OSError, http.client.HTTPException) as exc:
        return None, None, str(exc) or type(exc).__name__
    finally:
        conn.close()


def verify_url(t: Topology) -> str:
    return f"{t.public_url}{t.app.health_path}"


def verify(t: Topology, color: str, *, deadline_s: float = VERIFY_DEADLINE_S,
           warm: http.client.HTTPConnection | None = None) -> tuple[bool, str | None, float]:
    """Ask the public frontend until `color` answers healthy; (ok, last problem, ms to first answer).
    The first probe goes over `warm` (a connection opened before the flip) when there is one."""
    url = verify_url(t)
    expect = t.app.health_status
    started = time.perf_counter()
    problem: str | None = None
    while True:
        status, who, error = served_by(url, ca_file=t.haproxy.ca_file,
                                       server_name=t.tls_server_name, conn=warm)
        warm = None
        healthy = status is not None and (status == expect if expect else 200 <= status < 300)
        if healthy and who == color:
            return True, None, (time.perf_counter() - started) * 1000
        problem = error or f"HTTP {status} from {who or 'an unnamed backend'}"
        if time.perf_counter() - started > deadline_s:
            return False, problem, (time.perf_counter() - started) * 1000
        time.sleep(0.02)


# --------------------------------------------------------------------------- the operation


def run(t: Topology, *, rollback: bool, who: str | None = None, to_color: str | None = None,
        progress: Any = None, executor: Any = None) -> EmergencyResult:
    """The emergency flip. `executor` (tests) replaces the OpenSSH connection to the HAProxy host."""
    who = who or default_holder()
    reason = "emergency rollback" if rollback else "emergency switch"
    timings: dict[str, float] = {}
    started = time.perf_counter()
    lb = executor or OpenSshExecutor(t, t.load_balancer)
    try:
        with signals_deferred(deliver=False):
            return _run(t, lb, rollback=rollback, who=who, to_color=to_color, reason=reason,
                        timings=timings, started=started, progress=progress)
    finally:
        if executor is None:
            lb.close()


def _note(progress: Any, text: str) -> None:
    if progress is not None:
        progress.note(text)


def _run(t: Topology, lb: Any, *, rollback: bool, who: str, to_color: str | None, reason: str,
         timings: dict[str, float], started: float, progress: Any) -> EmergencyResult:
    from .render.haproxy import render_live_map

    now = time.time()
    ours = LockInfo(holder=who, host=default_holder().split("@", 1)[-1], pid=os.getpid(),
                    operation=reason, started=now, heartbeat=now, token=uuid.uuid4().hex)
    mark = time.perf_counter()
    out = lb.run(prepare_command(t), step="read HAProxy, take over the lock, read the journal",
                 check=False, input=ours.to_file())
    timings["prepare"] = (time.perf_counter() - mark) * 1000
    cli, lock_text, journal_part = split_parts(out.stdout, 3)
    answers = split_cli_answers(cli)
    if len(answers) < 2 or not answers[1].strip():
        why = (out.stderr.strip().splitlines() or [f"exit code {out.exit_code}"])[-1]
        raise RemoteError(lb.host, "read the live-colour map", f"no answer from HAProxy: {why}")
    backends = {line.strip() for line in answers[0].splitlines() if line.strip() and not line.startswith("#")}
    live_backend = parse_map(answers[1]).get("live", "")
    live = next((c for c in COLORS if live_backend == f"bk_{c}"), None)
    if live is None:
        raise RemoteError(lb.host, "read the live-colour map", f"the live entry names {live_backend!r}")
    taken = "(lock not taken)" not in out.stderr
    preempted: LockInfo | None = None
    if lock_text.strip():
        try:
            preempted = LockInfo.from_file(lock_text)
        except ConfigError:
            preempted = UNREADABLE_LOCK
    if preempted is not None:
        _note(progress, f"pre-empted the lock of {preempted.holder} (pid {preempted.pid}, "
                        f"'{preempted.operation}'); it stops at its next step")
    if not taken:
        _note(progress, "could not take the deployment lock; flipping anyway")
    target = to_color or other_color(live)
    if target == live:
        _release(lb, t, ours.token if taken else None)
        raise SwitchError(f"{target} is already live")
    missing = [b for b in (f"bk_{target}", f"bk_{live}") if b not in backends]
    if missing:
        _release(lb, t, ours.token if taken else None)
        raise RemoteError(lb.host, "route traffic", f"the running HAProxy has no backend {missing[0]}")

    # The flip: one round trip, then ask the public frontend (over a connection opened before).
    warm = warm_connection(verify_url(t), ca_file=t.haproxy.ca_file, server_name=t.tls_server_name)
    flip_started = time.perf_counter()
    flipped = lb.run(flip_command(t, target), step=f"route traffic to {target}", check=False,
                     input=render_live_map(t, target))
    timings["flip_round_trip"] = (time.perf_counter() - flip_started) * 1000
    flip_answers = split_cli_answers(split_parts(flipped.stdout, 2)[0])
    after = parse_map(next((a for a in reversed(flip_answers) if a.strip()), ""))
    if after.get("live") != f"bk_{target}":
        if warm is not None:
            warm.close()
        _release(lb, t, ours.token if taken else None)
        raise RemoteError(lb.host, f"route traffic to {target}", "HAProxy did not take the new map: "
                          f"{flipped.stderr.strip()[-300:] or flip_answers}")
    map_file_ok = flipped.exit_code == 0
    verified, problem, first_answer_ms = verify(t, target, warm=warm)
    timings["verify"] = first_answer_ms
    flip_ms = (time.perf_counter() - flip_started) * 1000
    timings["flip_to_first_answer"] = flip_ms

    # Record: the journal if it parsed, else the side file.
    entry = switch_entry(from_color=live, to_color=target, when=time.time(), who=who, reason=reason,
                         duration_ms=int(flip_ms), preempted=preempted, path="emergency")
    journal_text: str | None = None
    side_line: str | None = None
    journal_problem: str | None = None
    status, _, body = journal_part.partition("\n")
    try:
        state = parse_state(body if status.strip() == "present" else None,
                            source=f"{lb.host}:{t.load_balancer.path(t.journal.path)}",
                            declared_color=live)
        journal_text = with_entry(state, entry, t.journal.history_keep).to_json()
    except BlueGreenError as exc:
        journal_problem = str(exc)
        side_line = json.dumps(entry, separators=(",", ":"))
    mark = time.perf_counter()
    recorded = lb.run(record_command(t, ours.token if taken else None, journal_text=journal_text,
                                     side_line=side_line), step="record the switch", check=False)
    timings["record"] = (time.perf_counter() - mark) * 1000
    recorded_in: str | None = "journal" if journal_text is not None else \
        side_path(t.load_balancer.path(t.journal.path))
    errors: list[str] = []
    if recorded.exit_code != 0:
        errors.append(f"recording the switch failed: {recorded.stderr.strip()[-300:] or recorded.exit_code}")
        recorded_in = None
    if journal_problem:
        _note(progress, f"the journal is unreadable ({journal_problem.splitlines()[0]}); recorded in the "
                        f"side file {recorded_in}, folded in by the next normal command")
    if not map_file_ok:
        errors.append("HAProxy routes to the new colour in memory, but writing the map file failed: "
                      "a reload before it is fixed would undo the flip")
    if not verified:
        errors.append(f"the public frontend did not answer from {target}: {problem}")

    declared = t.active_color
    reconcile: str | None = None
    if t.switch.mode == "direct":
        set_active_color_in_file(t.project_dir, t.stack, target)
        declared = target
    elif declared != target:
        reconcile = reconcile_command(t, target)
        _note(progress, f"automation mode: the stack still declares {declared}; reconcile with `{reconcile}`")
    timings["total"] = (time.perf_counter() - started) * 1000
    return EmergencyResult(ok=not errors, color=target, from_color=live, path="emergency",
                           flip_ms=flip_ms, verified=verified, reason=reason,
                           preempted=_lock_json(preempted), recorded_in=recorded_in, declared=declared,
                           reconcile=reconcile, error="; ".join(errors) or None, timings_ms=timings)


def _lock_json(info: LockInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    return {"holder": info.holder, "host": info.host, "pid": info.pid, "operation": info.operation}


def _release(lb: Any, t: Topology, token: str | None) -> None:
    if token:
        with contextlib.suppress(BlueGreenError):
            lb.run(record_command(t, token, journal_text=None, side_line=None), step="release the lock",
                   check=False)


__all__ = [
    "EmergencyResult",
    "OpenSshExecutor",
    "append_side_command",
    "clear_pending",
    "fold",
    "fold_pending",
    "parse_side",
    "raise_on_sigterm",
    "reconcile_command",
    "run",
    "side_path",
    "signals_deferred",
    "ssh_argv",
    "unfinished_release",
]
