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
import json
import os
import shlex
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from bluegreen.hosts.haproxy_cli import HaproxyPaths, routing_entries, set_map, show_map
from bluegreen.hosts.journal import append_side_command
from bluegreen.hosts.lock import LOCK_NOT_OURS, remove_if_owner_command, take_over_command
from bluegreen.hosts.openssh import OpenSshExecutor
from bluegreen.hosts.visitor import verify, verify_url, warm_connection
from bluegreen.model.errors import BlueGreenError, ConfigError, RemoteError, SwitchError
from bluegreen.model.journal import parse_state, side_path, switch_entry, with_entry
from bluegreen.model.lock import UNREADABLE_LOCK, LockInfo, default_holder
from bluegreen.model.stackfile import set_active_color_in_file
from bluegreen.model.topology import COLORS, Topology, other_color
from bluegreen.ops.signals import signals_deferred
from bluegreen.render.haproxy import render_live_map
from bluegreen.render.shell import atomic_write_command

PART = "--bluegreen-part--"


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


def reconcile_command(t: Topology, live: str) -> str:
    """The one command that makes the stack's declared colour the live one (automation mode)."""
    return (f"pulumi config set bluegreen:activeColor {live} --stack {t.stack} --cwd "
            f"{shlex.quote(str(t.project_dir))}")


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
    now = time.time()
    ours = LockInfo(holder=who, host=default_holder().split("@", 1)[-1], pid=os.getpid(),
                    operation=reason, started=now, heartbeat=now, token=uuid.uuid4().hex)
    before = _prepare(t, lb, ours, timings, progress)
    target = to_color or other_color(before.live)
    if target == before.live:
        _release(lb, t, before.token)
        raise SwitchError(f"{target} is already live")
    missing = [b for b in (f"bk_{target}", f"bk_{before.live}") if b not in before.backends]
    if missing:
        _release(lb, t, before.token)
        raise RemoteError(lb.host, "route traffic", f"the running HAProxy has no backend {missing[0]}")
    map_file_ok, verified, problem, flip_ms = _flip(t, lb, before, target, timings)
    entry = switch_entry(from_color=before.live, to_color=target, when=time.time(), who=who, reason=reason,
                         duration_ms=int(flip_ms), preempted=before.preempted, path="emergency")
    recorded_in, errors = _record(t, lb, before, entry, timings, progress)
    if not map_file_ok:
        errors.append("HAProxy routes to the new colour in memory, but writing the map file failed: "
                      "a reload before it is fixed would undo the flip")
    if not verified:
        errors.append(f"the public frontend did not answer from {target}: {problem}")
    declared, reconcile = _declare(t, target, progress)
    timings["total"] = (time.perf_counter() - started) * 1000
    return EmergencyResult(ok=not errors, color=target, from_color=before.live, path="emergency",
                           flip_ms=flip_ms, verified=verified, reason=reason,
                           preempted=_lock_json(before.preempted), recorded_in=recorded_in, declared=declared,
                           reconcile=reconcile, error="; ".join(errors) or None, timings_ms=timings)


@dataclass(frozen=True)
class _Before:
    """What the first round trip found on the load balancer."""

    live: str
    backends: set[str]
    preempted: LockInfo | None
    token: str | None  # ours, when the lock was taken
    journal_part: str


def _prepare(t: Topology, lb: Any, ours: LockInfo, timings: dict[str, float], progress: Any) -> _Before:
    """Round trip 1: HAProxy's backends and live map, the lock taken over, the journal's text."""
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
    return _Before(live=live, backends=backends, preempted=preempted, token=ours.token if taken else None,
                   journal_part=journal_part)


def _flip(t: Topology, lb: Any, before: _Before, target: str,
          timings: dict[str, float]) -> tuple[bool, bool, str | None, float]:
    """Round trip 2, then the public frontend asked (over a connection opened before the flip):
    (map file written, verified, the last problem, ms from the flip to the first answer)."""
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
        _release(lb, t, before.token)
        raise RemoteError(lb.host, f"route traffic to {target}", "HAProxy did not take the new map: "
                          f"{flipped.stderr.strip()[-300:] or flip_answers}")
    verified, problem, first_answer_ms = verify(t, target, warm=warm)
    timings["verify"] = first_answer_ms
    flip_ms = (time.perf_counter() - flip_started) * 1000
    timings["flip_to_first_answer"] = flip_ms
    return flipped.exit_code == 0, verified, problem, flip_ms


def _record(t: Topology, lb: Any, before: _Before, entry: dict[str, Any], timings: dict[str, float],
            progress: Any) -> tuple[str | None, list[str]]:
    """Round trip 3: the journal if it parsed, else the side file; the lock released if still ours.
    (where it was recorded, what went wrong)."""
    journal_text: str | None = None
    side_line: str | None = None
    journal_problem: str | None = None
    status, _, body = before.journal_part.partition("\n")
    try:
        state = parse_state(body if status.strip() == "present" else None,
                            source=f"{lb.host}:{t.load_balancer.path(t.journal.path)}",
                            declared_color=before.live)
        # Nothing is trimmed here (this shell cannot archive): the next normal write archives.
        journal_text = with_entry(state, entry, None).to_json()
    except BlueGreenError as exc:
        journal_problem = str(exc)
        side_line = json.dumps(entry, separators=(",", ":"))
    mark = time.perf_counter()
    recorded = lb.run(record_command(t, before.token, journal_text=journal_text, side_line=side_line),
                      step="record the switch", check=False)
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
    return recorded_in, errors


def _declare(t: Topology, target: str, progress: Any) -> tuple[str, str | None]:
    """The declared colour after the flip, and the command that reconciles it (automation mode)."""
    if t.switch.mode == "direct":
        set_active_color_in_file(t.project_dir, t.stack, target)
        return target, None
    if t.active_color == target:
        return target, None
    reconcile = reconcile_command(t, target)
    _note(progress, f"automation mode: the stack still declares {t.active_color}; reconcile with `{reconcile}`")
    return t.active_color, reconcile


def _lock_json(info: LockInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    return {"holder": info.holder, "host": info.host, "pid": info.pid, "operation": info.operation}


def _release(lb: Any, t: Topology, token: str | None) -> None:
    if token:
        with contextlib.suppress(BlueGreenError):
            lb.run(record_command(t, token, journal_text=None, side_line=None), step="release the lock",
                   check=False)
