"""Emergency switch and rollback: the load balancer and nothing else.

`switch --emergency` / `rollback --emergency` are what users reach for while production burns, so
they depend on one SSH connection to the HAProxy host and nothing more: no PostgreSQL, no Proxmox
API, no SSH to the app hosts, no readable journal, no free lock. One run:

1. one round trip: HAProxy's backends and live map, the deployment lock taken over (whoever held
   it is recorded, and its next compare-and-swap or step-boundary check finds the lock is no
   longer its own, so it stops, and leaves a colour that became live as it is), the journal's
   digest and text and the side file's;
2. the target: `--to COLOUR`, else for a rollback the colour live before the last RECORDED
   switch, else the other colour. Already live: nothing moves (an emergency that took effect is
   safe to repeat), and a flip the journal does not know yet is recorded;
3. one round trip: the one-step flip every path uses (`haproxy_cli.flip_script`: runtime map and
   map file together, SIGHUP ignored, so a cut connection cannot split them); a lost answer is
   followed by one more look at the map, and the error says whether traffic moved;
4. the public frontend asked until the new colour answers (X-Served-By);
5. one round trip, each part run whatever the others did: the journal (0600, under the old
   tool's flock, a compare-and-swap against what step 1 read, only while the lock is ours),
   else a line appended to the side file (`<journal>.pending`) that the next normal command
   folds in; then the lock released. Whatever fails is said beside the flip, with how to
   release the lock by hand when it could not be.

The SSH connection is the OpenSSH client running one remote shell for the whole command (one TCP
connection, one key exchange, one session; each step is a script sent down that session), host
keys checked against the tool's known_hosts file with `StrictHostKeyChecking=yes`. paramiko is
not imported here: its import alone costs more than the whole flip.

In `switch.mode: direct` the stack file's declared colour follows the flip; in `automation` mode
the declared colour is left for a reconciling command (status shows the drift and the command).
SIGINT/SIGTERM are held back from the take-over to the record, so a flip is always recorded.
"""

from __future__ import annotations

import json
import os
import shlex
import time
import uuid
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from bluegreen.hosts.haproxy_cli import (
    MAP_FILE_OK,
    HaproxyPaths,
    flip_script,
    routing_entries,
    show_map,
    split_answers,
)
from bluegreen.hosts.journal import (
    ABSENT,
    CAS_CONFLICT,
    JOURNAL_NOT_OURS,
    LockOwner,
    append_side_command,
    install_state_command,
    state_lock_path,
)
from bluegreen.hosts.lock import LOCK_NOT_OURS, remove_if_owner_command, take_over_command
from bluegreen.hosts.openssh import OpenSshExecutor
from bluegreen.hosts.visitor import verify, verify_url, warm_connection
from bluegreen.model.errors import BlueGreenError, ConfigError, RemoteError, add_problem
from bluegreen.model.journal import State, fold, parse_side, parse_state, side_path, switch_entry, with_entry
from bluegreen.model.lock import UNREADABLE_LOCK, LockInfo, default_holder
from bluegreen.model.stackfile import set_active_color_in_file
from bluegreen.model.topology import COLORS, Topology, other_color
from bluegreen.model.truth import FOUND_REASON, rollback_target, with_found_switch
from bluegreen.ops.signals import signals_deferred
from bluegreen.render.haproxy import render_live_map

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
    noop: bool = False  # the colour asked for was already live: nothing moved

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "colour": self.color, "from": self.from_color, "release": self.release,
                "path": self.path, "flipMs": round(self.flip_ms, 1), "verified": self.verified,
                "watchedSeconds": 0.0, "rolledBack": False, "reason": self.reason, "noop": self.noop,
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
    new lock); the journal's digest and text; the side file's text. Parts are separated by PART
    lines."""
    paths = HaproxyPaths.from_topology(t)
    lb = t.load_balancer
    journal = shlex.quote(lb.path(t.journal.path))
    side = shlex.quote(side_path(lb.path(t.journal.path)))
    return "; ".join([
        _socat(paths.admin_socket, f"show backend;{show_map(paths.map)}"),
        f"echo {PART}",
        f"( {take_over_command(lb.path(t.journal.lock_path))} ) || echo '(lock not taken)' >&2",
        f"echo {PART}",
        f"if [ -e {journal} ]; then echo \"present $(sha256sum < {journal} | cut -d' ' -f1)\"; "
        f"cat -- {journal}; else echo absent; fi",
        f"echo {PART}",
        f"cat -- {side} 2>/dev/null; true",
    ])


def flip_command(t: Topology, color: str) -> str:
    """Round trip 2: the one-step flip every path uses (`haproxy_cli.flip_script`): runtime map
    and map file together, so a reload keeps the flip even if this connection dies half way."""
    paths = HaproxyPaths.from_topology(t)
    return flip_script(paths.admin_socket, paths.map, routing_entries(color), render_live_map(t, color))


def record_command(t: Topology, token: str | None, *, journal_text: str | None, side_line: str | None,
                   expected: str | None = None) -> str:
    """Round trip 3, every part run whatever the others did: the journal (stdin is its text;
    0600, under the old tool's flock, a compare-and-swap against `expected` and only while the
    lock still carries `token`); if that did not happen, a line appended to the side file; the
    lock released if it still carries our token. Prints `journal=N side=N lock=N` exit codes
    (`-` for a part not run)."""
    lb = t.load_balancer
    journal = lb.path(t.journal.path)
    parts = ["jr=-; sr=-; lr=-"]
    if journal_text is not None:
        tmp = f"{journal}.{(token or 'emergency')[:12]}.tmp"
        owner = LockOwner(lb.path(t.journal.lock_path), token) if token else None
        install = install_state_command(journal, tmp, state_lock_path(journal), expected, owner)
        parts.append(f"{{ ( umask 077; mkdir -p -- {shlex.quote(str(PurePosixPath(journal).parent))} && "
                     f"cat > {shlex.quote(tmp)} ) && {install}; }}; jr=$?; "
                     f"[ $jr = 0 ] || rm -f -- {shlex.quote(tmp)}")
    if side_line is not None:
        guard = 'if [ "$jr" != 0 ]; then ' if journal_text is not None else "if true; then "
        parts.append(f"{guard}{{ {append_side_command(journal, side_line)}; }}; sr=$?; fi")
    if token:
        parts.append(f"( {remove_if_owner_command(lb.path(t.journal.lock_path), token)} ); lr=$?")
    parts.append('echo "journal=$jr side=$sr lock=$lr"')
    return "; ".join(parts)


def reconcile_command(t: Topology, live: str) -> str:
    """The one command that makes the stack's declared colour the live one. A stack whose colour
    lives in an `activeColorFile` (the lab) is not read from Pulumi's config: `switch --to` the
    live colour records it there (a no-op for traffic)."""
    if t.active_color_file and t.switch.mode == "direct":
        return f"bluegreen switch --to {live} --yes --stack {t.stack}  (records {live} in {t.active_color_file})"
    if t.active_color_file:
        return f"echo {live} > {shlex.quote(t.active_color_file)}"
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
    try:
        before = _prepare(t, lb, ours, timings, progress)
    except BlueGreenError as exc:
        # The lock is taken in the same round trip: whatever happened, give it back.
        raise _with_release(lb, t, ours.token, exc, "Traffic did not move") from None
    state = before.journal_state(t)
    target = to_color or (rollback_target(state, before.live) if rollback else other_color(before.live))
    if target == before.live:
        return _noop(t, lb, before, state, target, who=who, reason=reason, timings=timings, started=started,
                     progress=progress)
    missing = [b for b in (f"bk_{target}", f"bk_{before.live}") if b not in before.backends]
    if missing:
        raise _with_release(lb, t, before.token, RemoteError(
            lb.host, "route traffic", f"the running HAProxy has no backend {missing[0]}"),
            f"Traffic did not move ({before.live} is live)")
    map_file, verified, problem, flip_ms = _flip(t, lb, before, target, timings)
    entry = switch_entry(from_color=before.live, to_color=target, when=time.time(), who=who, reason=reason,
                         duration_ms=int(flip_ms), preempted=before.preempted, path="emergency")
    entry["verified"] = verified
    recorded_in, errors = _record(t, lb, before, state, entry, timings, progress)
    if map_file not in MAP_FILE_OK:
        errors.append(f"HAProxy routes to {target} in memory, but the map file: {map_file} (a reload before it "
                      f"is fixed would undo the flip; `bluegreen switch --to {target}` rewrites it)")
    if not verified:
        errors.append(f"the public frontend did not answer from {target}: {problem}")
    declared, reconcile = _declare(t, target, progress)
    timings["total"] = (time.perf_counter() - started) * 1000
    return EmergencyResult(ok=not errors, color=target, from_color=before.live, path="emergency",
                           flip_ms=flip_ms, verified=verified, reason=reason,
                           preempted=_lock_json(before.preempted), recorded_in=recorded_in, declared=declared,
                           reconcile=reconcile, error="; ".join(errors) or None, timings_ms=timings)


def _noop(t: Topology, lb: Any, before: _Before, state: State | None, target: str, *, who: str, reason: str,
          timings: dict[str, float], started: float, progress: Any) -> EmergencyResult:
    """The colour asked for is already live (a repeated emergency that took effect): nothing
    moves. A flip that was not recorded (the journal still names the other colour) is recorded."""
    _note(progress, f"{target} is already live: nothing to switch")
    verified, problem, _ = verify(t, target)
    errors: list[str] = []
    recorded_in = None
    if (state is not None and state.prod != target) or before.journal_unreadable:
        entry = switch_entry(from_color=state.prod if state else other_color(target), to_color=target,
                             when=time.time(), who=who, reason=FOUND_REASON, duration_ms=0,
                             preempted=None, path="emergency")
        entry.update({"found": True, "verified": verified, "emergency": False})
        recorded_in, errors = _record(t, lb, before, state, entry, timings, progress)
    else:
        errors = _release_problems(lb, t, before.token)
    if not verified:
        errors.append(f"the public frontend did not answer from {target}: {problem}")
    declared, reconcile = _declare(t, target, progress)
    timings["total"] = (time.perf_counter() - started) * 1000
    return EmergencyResult(ok=not errors, color=target, from_color=before.live, path="emergency", flip_ms=0.0,
                           verified=verified, reason=reason, preempted=_lock_json(before.preempted),
                           recorded_in=recorded_in, declared=declared, reconcile=reconcile,
                           error="; ".join(errors) or None, timings_ms=timings, noop=True)


@dataclass(frozen=True)
class _Before:
    """What the first round trip found on the load balancer."""

    live: str
    backends: set[str]
    preempted: LockInfo | None
    token: str | None  # ours, when the lock was taken
    journal_part: str
    side_part: str = ""

    @property
    def journal_digest(self) -> str:
        status = self.journal_part.partition("\n")[0].split()
        return status[1] if len(status) == 2 and status[0] == "present" else ABSENT

    @property
    def journal_unreadable(self) -> bool:
        return self._parsed()[1] is not None

    def _parsed(self) -> tuple[State | None, str | None]:
        status, _, body = self.journal_part.partition("\n")
        try:
            return parse_state(body if status.startswith("present") else None, source="the journal",
                               declared_color=self.live), None
        except BlueGreenError as exc:
            return None, str(exc)

    def journal_state(self, t: Topology) -> State | None:
        """The journal as read (None when it does not parse), side-file entries folded in."""
        state, _ = self._parsed()
        if state is None:
            return None
        # keep=None: this path cannot archive what a trim would move (the next normal write does).
        return fold(state, parse_side(self.side_part), None)


def _prepare(t: Topology, lb: Any, ours: LockInfo, timings: dict[str, float], progress: Any) -> _Before:
    """Round trip 1: HAProxy's backends and live map, the lock taken over, the journal's text."""
    mark = time.perf_counter()
    out = lb.run(prepare_command(t), step="read HAProxy, take over the lock, read the journal",
                 check=False, input=ours.to_file())
    timings["prepare"] = (time.perf_counter() - mark) * 1000
    cli, lock_text, journal_part, side_part = split_parts(out.stdout, 4)
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
                   journal_part=journal_part, side_part=side_part)


def _flip(t: Topology, lb: Any, before: _Before, target: str,
          timings: dict[str, float]) -> tuple[str, bool, str | None, float]:
    """Round trip 2, then the public frontend asked (over a connection opened before the flip):
    (the map file's fate, verified, the last problem, ms from the flip to the first answer)."""
    warm = warm_connection(verify_url(t), ca_file=t.haproxy.ca_file, server_name=t.tls_server_name)
    flip_started = time.perf_counter()
    try:
        flipped = lb.run(flip_command(t, target), step=f"route traffic to {target}", check=False)
    except BlueGreenError as exc:
        if warm is not None:
            warm.close()
        flipped = None
        after = _live_after_cut(lb, t)
        if after != target:
            raise _with_release(lb, t, before.token, exc, _where(after, before.live, target)) from None
        map_file = "not confirmed (the connection was lost; the flip writes it in the same remote step)"
    timings["flip_round_trip"] = (time.perf_counter() - flip_started) * 1000
    if flipped is not None:
        answers = split_answers(flipped.stdout)
        after_map = parse_map(answers[1]) if len(answers) == 3 else {}
        map_file = answers[2].strip() if len(answers) == 3 else "unknown"
        if after_map.get("live") != f"bk_{target}":
            if warm is not None:
                warm.close()
            moved = next((c for c in COLORS if after_map.get("live") == f"bk_{c}"), None)
            raise _with_release(lb, t, before.token, RemoteError(
                lb.host, f"route traffic to {target}", "HAProxy did not take the new map: "
                f"{flipped.stderr.strip()[-300:] or answers}"), _where(moved, before.live, target))
        warm_ok = warm
    else:
        warm_ok = None
    verified, problem, first_answer_ms = verify(t, target, warm=warm_ok)
    timings["verify"] = first_answer_ms
    flip_ms = (time.perf_counter() - flip_started) * 1000
    timings["flip_to_first_answer"] = flip_ms
    return map_file, verified, problem, flip_ms


def _live_after_cut(lb: Any, t: Topology) -> str | None:
    """After a flip whose answer was lost: the live colour, asked once more (a new session)."""
    paths = HaproxyPaths.from_topology(t)
    try:
        out = lb.run(_socat(paths.admin_socket, show_map(paths.map)), step="read the live colour again",
                     check=False, timeout=15)
    except BlueGreenError:
        return None
    backend = parse_map(out.stdout).get("live", "")
    return next((c for c in COLORS if backend == f"bk_{c}"), None)


def _where(live: str | None, before: str, target: str) -> str:
    if live is None:
        return (f"Traffic MAY have moved to {target}: HAProxy cannot be asked. Repeating "
                f"`bluegreen switch --emergency --to {target}` is safe (a no-op if it moved); "
                "`bluegreen status` shows where it is")
    if live == before:
        return f"Traffic did not move ({before} is live)"
    return f"Traffic moved: {live} is live"


def _record(t: Topology, lb: Any, before: _Before, state: State | None, entry: dict[str, Any],
            timings: dict[str, float], progress: Any) -> tuple[str | None, list[str]]:
    """Round trip 3: the journal if it parsed and the lock is ours, else the side file; the lock
    released if still ours, whatever happened to the record. (where it was recorded, problems)."""
    journal = t.load_balancer.path(t.journal.path)
    journal_text: str | None = None
    if state is not None and before.token:
        # Nothing is trimmed here (this shell cannot archive): the next normal write archives.
        updated = state
        if state.prod != entry["from"]:  # a flip nobody recorded came first
            updated = with_found_switch(state, str(entry["from"]), who=entry.get("who"),
                                        when=str(entry["timestamp"]), keep=None)
        journal_text = with_entry(updated, entry, None).to_json()
    side_line = json.dumps(entry, separators=(",", ":"))
    mark = time.perf_counter()
    errors: list[str] = []
    try:
        out = lb.run(record_command(t, before.token, journal_text=journal_text, side_line=side_line,
                                    expected=before.journal_digest), step="record the switch", check=False,
                     input=journal_text)
    except BlueGreenError as exc:
        lock = (f"; the lock this emergency took stays at {t.load_balancer.path(t.journal.lock_path)}: "
                "release it with `bluegreen lock release --force`") if before.token else ""
        return None, [f"recording the switch failed ({exc}): the next command finds HAProxy serving "
                      f"{entry['to']} and records it{lock}"]
    timings["record"] = (time.perf_counter() - mark) * 1000
    codes = dict(part.split("=", 1) for part in (out.stdout.strip().splitlines() or [""])[-1].split() if "=" in part)
    said = out.stderr.strip()[-300:]
    recorded_in: str | None = None
    if codes.get("journal") == "0":
        recorded_in = "journal"
    elif codes.get("side") == "0":
        recorded_in = side_path(journal)
        why = {"-": "it does not parse" if state is None else "the lock is not this run's",
               str(CAS_CONFLICT): "another command wrote it meanwhile",
               str(JOURNAL_NOT_OURS): "the lock is no longer this run's"}.get(codes.get("journal", "-"), said)
        _note(progress, f"the journal was not written ({why}); recorded in the side file {recorded_in}, "
                        "folded in by the next normal command")
    else:
        errors.append(f"recording the switch failed ({said or out.exit_code}): the next command finds HAProxy "
                      f"serving {entry['to']} and records it")
    errors += _lock_problems(t, before.token, codes.get("lock", "-"), said)
    return recorded_in, errors


def _lock_problems(t: Topology, token: str | None, code: str, said: str) -> list[str]:
    if not token or code in ("0", str(LOCK_NOT_OURS)):
        return []
    return [f"the lock this emergency took could not be released ({said or 'exit ' + code}); it stays at "
            f"{t.load_balancer.path(t.journal.lock_path)}: release it with `bluegreen lock release --force`"]


def _release_problems(lb: Any, t: Topology, token: str | None) -> list[str]:
    """Release our lock; what went wrong, in words that say how to release it by hand."""
    if not token:
        return []
    try:
        out = lb.run(record_command(t, token, journal_text=None, side_line=None), step="release the lock",
                     check=False)
    except BlueGreenError as exc:
        return _lock_problems(t, token, "?", str(exc))
    code = (out.stdout.strip().splitlines() or ["lock=?"])[-1].rpartition("lock=")[2]
    return _lock_problems(t, token, code, out.stderr.strip()[-300:])


def _with_release(lb: Any, t: Topology, token: str | None, error: BlueGreenError, where: str) -> BlueGreenError:
    """`error`, saying where traffic is, and the lock this run took released (or why not, and how)."""
    for problem in _release_problems(lb, t, token):
        add_problem(error, problem)
    error.args = (f"{error}. {where}",)
    return error


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
