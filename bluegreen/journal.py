"""The deployment journal (`state.json` on the HAProxy host) and the deployment lock beside it.

The journal is the user's existing format, read as is and extended, never reshaped:
`{"prod", "standby", "lastSwitch", "switchCount", "history": [newest first]}`. Unknown keys, at
the top and inside history entries, survive a read/write round trip. History entries without a
`"type"` are switches (that is all the old tool wrote); new ones carry `"type": "switch"` or
`"type": "deploy"`. Parsing and extending are pure; `JournalStore` and `LockManager` do their I/O
through an `Executor`, so the same code works over SSH and on a local path.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import shlex
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from .errors import BlueGreenError, ConfigError, LockedError, Problem, RemoteError, ValidationError
from .executor import Executor, sh
from .sensitive import redact
from .topology import COLORS, other_color

log = logging.getLogger("bluegreen.journal")

DEFAULT_HISTORY_KEEP = 200
DEPLOY_RESULTS = ("ok", "failed")
FORCE_RELEASE_HINT = "bluegreen lock release --force"

# Key order of a journal we create from scratch; an existing file keeps its own order.
_KNOWN_KEYS = ("prod", "standby", "lastSwitch", "switchCount", "deployCounts", "history")


def iso_utc(epoch: float) -> str:
    """`2025-09-14T21:03:11Z`: the timestamp shape the existing journal already uses."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> float | None:
    """Epoch seconds of an ISO timestamp (naive ones are taken as UTC), None if unparseable."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class SwitchRecord:
    from_color: str
    to_color: str
    timestamp: str
    reason: str = ""
    who: str | None = None
    emergency: bool = False
    duration_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"type": "switch", "from": self.from_color, "to": self.to_color,
                "timestamp": self.timestamp, "reason": self.reason, "who": self.who,
                "emergency": self.emergency, "durationMs": self.duration_ms}

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> SwitchRecord:
        return cls(from_color=str(entry.get("from", "")), to_color=str(entry.get("to", "")),
                   timestamp=str(entry.get("timestamp", "")), reason=str(entry.get("reason") or ""),
                   who=_opt_str(entry.get("who")), emergency=entry.get("emergency") is True,
                   duration_ms=_opt_int(entry.get("durationMs")))


@dataclass(frozen=True)
class DeployRecord:
    color: str
    ref: str
    sha: str | None  # None when the deploy failed before the ref resolved
    release: str | None
    who: str
    when: str
    duration_ms: int
    result: str
    failed_step: str | None = None
    error: str | None = None  # the caller redacts it before it gets here
    # The database side (dbsafety): the dump taken before migrating, what was applied, and what
    # happened to the database when the deploy failed after its dump.
    backup: str | None = None
    backup_bytes: int | None = None
    migrations: tuple[str, ...] = ()
    database: str | None = None

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise ConfigError(f"deploy record: unknown colour {self.color!r} "
                              f"(expected one of {', '.join(COLORS)})")
        if self.result not in DEPLOY_RESULTS:
            raise ConfigError(f"deploy record: result must be one of {', '.join(DEPLOY_RESULTS)}, "
                              f"got {self.result!r}")

    @property
    def ok(self) -> bool:
        return self.result == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "deploy", "color": self.color, "ref": self.ref, "sha": self.sha,
                "release": self.release, "who": self.who, "when": self.when,
                "durationMs": self.duration_ms, "result": self.result,
                "failedStep": self.failed_step, "error": self.error,
                # Only deploys that dumped the database carry these, so older entries keep their shape.
                **({"backup": self.backup, "backupBytes": self.backup_bytes,
                    "migrationsApplied": list(self.migrations), "database": self.database}
                   if self.backup or self.migrations or self.database else {})}

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> DeployRecord | None:
        """None for an entry too damaged to describe a deploy (history is never fatal)."""
        color, result = entry.get("color"), entry.get("result")
        if color not in COLORS or result not in DEPLOY_RESULTS:
            return None
        return cls(color=str(color), ref=str(entry.get("ref") or ""), sha=_opt_str(entry.get("sha")),
                   release=_opt_str(entry.get("release")), who=str(entry.get("who") or ""),
                   when=str(entry.get("when") or ""), duration_ms=_opt_int(entry.get("durationMs")) or 0,
                   result=str(result), failed_step=_opt_str(entry.get("failedStep")),
                   error=_opt_str(entry.get("error")), backup=_opt_str(entry.get("backup")),
                   backup_bytes=_opt_int(entry.get("backupBytes")),
                   migrations=tuple(str(m) for m in entry.get("migrationsApplied") or []
                                    if isinstance(entry.get("migrationsApplied"), list)),
                   database=_opt_str(entry.get("database")))


JournalRecord = SwitchRecord | DeployRecord


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def entry_type(entry: Mapping[str, Any]) -> str:
    return str(entry.get("type") or "switch")


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class State:
    """One journal. History is newest first, like the file the user already has."""

    prod: str
    standby: str
    last_switch: str | None = None
    switch_count: int = 0
    history: tuple[Mapping[str, Any], ...] = ()
    deploy_counts: Mapping[str, Mapping[str, int]] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = _KNOWN_KEYS

    @classmethod
    def fresh(cls, declared_color: str) -> State:
        if declared_color not in COLORS:
            raise ConfigError(f"unknown colour {declared_color!r} (expected one of {', '.join(COLORS)})")
        return cls(prod=declared_color, standby=other_color(declared_color))

    def with_switch(self, to_color: str, *, when: str | float, who: str | None, reason: str = "",
                    emergency: bool = False, duration_ms: int | None = None,
                    from_color: str | None = None, keep: int = DEFAULT_HISTORY_KEEP) -> State:
        """`when` is epoch seconds or an ISO timestamp; `from_color` defaults to the journal's prod."""
        if to_color not in COLORS:
            raise ConfigError(f"cannot record a switch to {to_color!r} (expected one of {', '.join(COLORS)})")
        stamp = _stamp(when)
        record = SwitchRecord(from_color=from_color or self.prod, to_color=to_color, timestamp=stamp,
                              reason=reason, who=who, emergency=emergency, duration_ms=duration_ms)
        return replace(self, prod=to_color, standby=other_color(to_color), last_switch=stamp,
                       switch_count=self.switch_count + 1,
                       history=_trim((record.to_dict(), *self.history), keep))

    def with_deploy(self, *, color: str, ref: str, sha: str | None, release: str | None, who: str,
                    when: str | float, duration_ms: int, result: str, failed_step: str | None = None,
                    error: str | None = None, keep: int = DEFAULT_HISTORY_KEEP, backup: str | None = None,
                    backup_bytes: int | None = None, migrations: Sequence[str] = (),
                    database: str | None = None) -> State:
        """Record a deploy to `color`; `error` must already be redacted."""
        return self.with_deploy_record(
            DeployRecord(color=color, ref=ref, sha=sha, release=release, who=who, when=_stamp(when),
                         duration_ms=duration_ms, result=result, failed_step=failed_step, error=error,
                         backup=backup, backup_bytes=backup_bytes, migrations=tuple(migrations),
                         database=database),
            keep=keep)

    def with_deploy_record(self, record: DeployRecord, *, keep: int = DEFAULT_HISTORY_KEEP) -> State:
        counts = {c: dict(r) for c, r in self.deploy_totals().items()}
        counts.setdefault(record.color, {})
        counts[record.color][record.result] = counts[record.color].get(record.result, 0) + 1
        return replace(self, deploy_counts=counts,
                       history=_trim((record.to_dict(), *self.history), keep))

    def records(self) -> list[JournalRecord]:
        """History as records, newest first; entries of unknown types are left out."""
        out: list[JournalRecord] = []
        for entry in self.history:
            kind = entry_type(entry)
            if kind == "switch":
                out.append(SwitchRecord.from_dict(entry))
            elif kind == "deploy":
                deploy = DeployRecord.from_dict(entry)
                if deploy is not None:
                    out.append(deploy)
        return out

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` history entries, newest first, as plain dicts."""
        return [dict(e) for e in self.history[:max(0, limit)]]

    def previous_live(self, live: str) -> str | None:
        """The colour that was live before `live` became live (from the newest switch to it)."""
        for record in self.records():
            if isinstance(record, SwitchRecord) and record.to_color == live:
                return record.from_color if record.from_color in COLORS else None
        return None

    def last_deploy(self, color: str) -> DeployRecord | None:
        for record in self.records():
            if isinstance(record, DeployRecord) and record.color == color:
                return record
        return None

    def deploy_totals(self) -> dict[str, dict[str, int]]:
        """Deploys per colour and result. Kept as running totals in the file because history is
        trimmed; a journal written by the old tool starts from what its history shows."""
        if self.deploy_counts is not None:
            return {c: dict(r) for c, r in self.deploy_counts.items()}
        counts: dict[str, dict[str, int]] = {}
        for record in self.records():
            if isinstance(record, DeployRecord):
                per = counts.setdefault(record.color, {})
                per[record.result] = per.get(record.result, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        known: dict[str, Any] = {
            "prod": self.prod, "standby": self.standby, "lastSwitch": self.last_switch,
            "switchCount": self.switch_count, "history": [dict(e) for e in self.history],
        }
        if self.deploy_counts is not None:
            known["deployCounts"] = {c: dict(r) for c, r in self.deploy_counts.items()}
        merged = {**self.extra, **known}
        out = {key: merged[key] for key in self.key_order if key in merged}
        for key in (*_KNOWN_KEYS, *self.extra):
            if key in merged:
                out.setdefault(key, merged[key])
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"


def _stamp(when: str | float) -> str:
    if isinstance(when, str):
        epoch = parse_iso(when)
        if epoch is None:
            raise ConfigError(f"expected an ISO timestamp, got {when!r}")
        return iso_utc(epoch)
    return iso_utc(when)


def _trim(history: tuple[Mapping[str, Any], ...], keep: int) -> tuple[Mapping[str, Any], ...]:
    if keep < 1:
        raise ConfigError(f"journal.historyKeep must be at least 1, got {keep}")
    return history[:keep]


def parse_state(text: str | None, *, source: str = "state.json", declared_color: str = "blue") -> State:
    """Read a journal; a missing file (None) starts a fresh one from the declared live colour."""
    if text is None:
        return State.fresh(declared_color)
    if not text.strip():
        raise ConfigError(f"{source}: the journal file is empty; restore it from a backup or delete it "
                          f"to start a fresh journal (the live colour is then taken from the stack)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                          f"fix the file by hand or move it aside to start a fresh journal") from None
    if not isinstance(data, dict):
        problem = Problem("(top level)", f"expected a JSON object, got {_json_kind(data)}")
        raise ValidationError(source, [problem])

    problems: list[Problem] = []
    prod = data.get("prod")
    if prod not in COLORS:
        problems.append(Problem("prod", f"expected one of {', '.join(COLORS)}, got {prod!r}"))
        prod = COLORS[0]
    standby = data.get("standby", other_color(str(prod)))
    if standby not in COLORS:
        problems.append(Problem("standby", f"expected one of {', '.join(COLORS)}, got {standby!r}"))
    elif standby == prod:
        problems.append(Problem("standby", f"is the same colour as prod ({prod!r})"))
    last_switch = data.get("lastSwitch")
    if last_switch is not None and (not isinstance(last_switch, str) or parse_iso(last_switch) is None):
        problems.append(Problem("lastSwitch", f"expected an ISO timestamp or null, got {last_switch!r}"))
    switch_count = data.get("switchCount", 0)
    if isinstance(switch_count, bool) or not isinstance(switch_count, int) or switch_count < 0:
        problems.append(Problem("switchCount", f"expected a whole number >= 0, got {switch_count!r}"))
        switch_count = 0
    history = data.get("history", [])
    if not isinstance(history, list):
        problems.append(Problem("history", f"expected a list, got {_json_kind(history)}"))
        history = []
    for i, entry in enumerate(history):
        if not isinstance(entry, dict):
            problems.append(Problem(f"history[{i}]", f"expected an object, got {_json_kind(entry)}"))
        elif not isinstance(entry.get("type", "switch"), str):
            problems.append(Problem(f"history[{i}].type", f"expected a string, got {entry['type']!r}"))
    counts = data.get("deployCounts")
    if counts is not None and not _valid_counts(counts):
        problems.append(Problem("deployCounts",
                                'expected {"<colour>": {"ok": <count>, "failed": <count>}}'))
        counts = None
    if problems:
        raise ValidationError(source, problems)
    return State(
        prod=str(prod), standby=str(standby), last_switch=last_switch, switch_count=switch_count,
        history=tuple(history), deploy_counts=counts,
        extra={k: v for k, v in data.items() if k not in _KNOWN_KEYS},
        key_order=tuple(data),
    )


def _valid_counts(counts: Any) -> bool:
    return isinstance(counts, dict) and all(
        c in COLORS and isinstance(per, dict) and all(
            r in DEPLOY_RESULTS and isinstance(n, int) and not isinstance(n, bool) and n >= 0
            for r, n in per.items())
        for c, per in counts.items())


def _json_kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), f"the number {value!r}" if isinstance(value, (int, float)) else repr(value))


class JournalStore:
    """`state.json` on one host. Callers hold the deployment lock around read-modify-write."""

    def __init__(self, executor: Executor, path: str, *, declared_color: str = COLORS[0]) -> None:
        self.executor = executor
        self.path = path
        self.declared_color = declared_color

    @property
    def source(self) -> str:
        return f"{self.executor.host}:{self.path}"

    def read(self, *, default_live: str | None = None) -> State:
        """The journal; a missing one starts from `default_live` (else the store's declared colour)."""
        declared = default_live or self.declared_color
        raw = self.executor.get(self.path, step="read the deployment journal")
        return self._parse(raw, declared)

    def _parse(self, raw: bytes | None, declared: str) -> State:
        if raw is None:
            return parse_state(None, source=self.source, declared_color=declared)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{self.source}: not UTF-8 text (byte {exc.start}); "
                              f"fix the file by hand or move it aside to start a fresh journal") from None
        return parse_state(text, source=self.source, declared_color=declared)

    def write(self, state: State) -> None:
        """Replace the file atomically while holding the state lock `jw-deployment-state.sh`
        takes (flock on `state.lock` beside it), so neither side ever sees the other's half."""
        self._install(state, expected=None)

    def update(self, change: Callable[[State], State]) -> State:
        """Read, change, write back only if nobody wrote in between (under the state lock);
        otherwise read again and re-apply `change`."""
        import hashlib

        for _ in range(JOURNAL_CAS_ATTEMPTS):
            raw = self.executor.get(self.path, step="read the deployment journal")
            digest = hashlib.sha256(raw).hexdigest() if raw is not None else ABSENT
            state = change(self._parse(raw, self.declared_color))
            if self._install(state, expected=digest):
                return state
        raise RemoteError(self.executor.host, "write the deployment journal",
                          f"{self.path} kept changing while being updated; try again")

    @property
    def state_lock(self) -> str:
        return state_lock_path(self.path)

    def _install(self, state: State, *, expected: str | None) -> bool:
        # Private: the journal quotes remote stderr, redacted here first. `install -d` also
        # tightens an existing directory.
        text = scrub_errors(state, getattr(self.executor, "secrets", None) or []).to_json()
        directory = str(PurePosixPath(self.path).parent)
        self.executor.run(sh("install", "-d", "-m", "700", "--", directory), step="write the deployment journal")
        tmp = f"{self.path}.bluegreen-tmp"
        self.executor.put(tmp, text, step="write the deployment journal", mode=0o600)
        result = self.executor.run(install_state_command(self.path, tmp, self.state_lock, expected),
                                   step="write the deployment journal", check=False)
        if result.exit_code == CAS_CONFLICT:
            return False
        if not result.ok:
            self.executor.run(sh("rm", "-f", tmp), step="discard the journal update", check=False)
            raise RemoteError(self.executor.host, "write the deployment journal",
                              (result.stderr or result.stdout).strip()
                              or f"could not take {self.state_lock} within {STATE_LOCK_WAIT}s")
        return True


# The old tool's lock: `jw-deployment-state.sh` holds flock on this file while it reads or sets.
STATE_LOCK_NAME = "state.lock"
STATE_LOCK_WAIT = 10
JOURNAL_CAS_ATTEMPTS = 5
CAS_CONFLICT = 3
ABSENT = "absent"


def state_lock_path(state_path: str) -> str:
    return str(PurePosixPath(state_path).with_name(STATE_LOCK_NAME))


def install_state_command(path: str, tmp: str, lock: str, expected: str | None) -> str:
    """Move `tmp` over `path` under `flock lock`; with `expected` (a sha256, or `absent`), only
    if the file still has that content (else exit 3, the temp file removed)."""
    check = ""
    if expected is not None:
        check = ('cur=$(sha256sum "$1" 2>/dev/null | cut -d" " -f1); '
                 f'if [ "${{cur:-{ABSENT}}}" != "$4" ]; then rm -f "$2"; exit {CAS_CONFLICT}; fi; ')
    script = check + 'mv -f "$2" "$1"'
    return sh("flock", "-w", STATE_LOCK_WAIT, lock, "bash", "-c", script, "_", path, tmp, lock,
              expected or "")


def scrub_errors(state: State, secrets: list[Any]) -> State:
    """Every history entry's `error` (remote stderr) redacted before it is stored."""
    def scrub(entry: Mapping[str, Any]) -> Mapping[str, Any]:
        error = entry.get("error") if isinstance(entry, Mapping) else None
        return {**entry, "error": redact(error, secrets)} if isinstance(error, str) else entry

    return replace(state, history=tuple(scrub(e) for e in state.history))


# --------------------------------------------------------------------------- lock


@dataclass(frozen=True)
class LockInfo:
    holder: str  # user@machine of whoever runs the operation
    host: str  # that machine, to check whether its pid is still alive
    pid: int
    operation: str
    started: float  # epoch seconds
    heartbeat: float
    # A random identity of this holding: heartbeat and release compare-and-swap on it on the host.
    token: str = ""

    def same_owner(self, other: LockInfo) -> bool:
        if self.token or other.token:
            return self.token == other.token
        return (self.holder, self.pid, self.started) == (other.holder, other.pid, other.started)

    def to_json(self) -> dict[str, Any]:
        # Epoch floats compare exactly (the ownership token); the ISO copies are for people.
        return {"holder": self.holder, "host": self.host, "pid": self.pid, "operation": self.operation,
                "started": self.started, "heartbeat": self.heartbeat,
                "startedAt": iso_utc(self.started), "heartbeatAt": iso_utc(self.heartbeat),
                **({"token": self.token} if self.token else {})}

    def to_file(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    @classmethod
    def from_file(cls, text: str, *, source: str = "lock file") -> LockInfo:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object")
        try:
            return cls(holder=_req_str(data, "holder"), host=_req_str(data, "host"),
                       pid=int(data["pid"]), operation=_req_str(data, "operation"),
                       started=float(data["started"]), heartbeat=float(data["heartbeat"]),
                       token=str(data.get("token") or ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: missing or malformed field ({exc})") from None


def _req_str(data: Mapping[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    return value


UNREADABLE_LOCK = LockInfo(holder="unknown", host="unknown", pid=0, operation="unknown",
                           started=0.0, heartbeat=0.0)


@dataclass(frozen=True)
class LockStatus:
    info: LockInfo
    stale: bool
    reason: str | None  # why it looks stale
    heartbeat_age: float  # seconds since the holder last proved it is alive

    def to_json(self) -> dict[str, Any]:
        return {**self.info.to_json(), "stale": self.stale, "staleReason": self.reason,
                "heartbeatAgeSeconds": round(self.heartbeat_age, 1)}


def default_holder() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_status(info: LockInfo, *, now: float, stale_after: float, this_machine: str,
                alive: Callable[[int], bool] = pid_alive) -> LockStatus:
    """Pure apart from `alive`: stale when the heartbeat stopped, or when the holder ran here and died."""
    age = max(0.0, now - info.heartbeat)
    if info is UNREADABLE_LOCK:
        return LockStatus(info, True, "the lock file is unreadable", age)
    if age > stale_after:
        return LockStatus(info, True, f"no heartbeat for {age:.0f}s (stale after {stale_after:g}s)", age)
    if info.host == this_machine and not alive(info.pid):
        return LockStatus(info, True, f"process {info.pid} on {info.host} is no longer running", age)
    return LockStatus(info, False, None, age)


def describe_locked(status: LockStatus, path: str) -> str:
    info = status.info
    lines = [f"the deployment lock ({path}) is held by {info.holder} (pid {info.pid} on {info.host}) "
             f"for '{info.operation}' since {iso_utc(info.started)}, "
             f"last heartbeat {status.heartbeat_age:.0f}s ago."]
    if status.stale:
        lines.append(f"It looks STALE: {status.reason}. If you are sure that operation is not running, "
                     f"break the lock with `{FORCE_RELEASE_HINT}`.")
    else:
        lines.append(f"It looks alive: wait for it to finish. Only if you are sure it is not running, "
                     f"break it with `{FORCE_RELEASE_HINT}`.")
    return " ".join(lines)


# Exit codes of the create command: 3 = someone else's lock is there, 4 = could not create.
LOCK_EXISTS = 3
LOCK_CREATE_FAILED = 4


def create_exclusive_command(path: str) -> str:
    """Shell that writes stdin to `path` only if nothing is there, atomically.

    The content goes to a temporary file first and is hard-linked into place: link(2) fails if the
    name exists, and a reader never sees a half-written lock (a noclobber redirect would show an
    empty file between create and write).
    """
    directory = str(PurePosixPath(path).parent)
    return (
        f"d={shlex.quote(directory)}; p={shlex.quote(path)}; "
        f'mkdir -p -m 700 -- "$d" || exit {LOCK_CREATE_FAILED}; '
        f't=$(mktemp -- "$d/.lock.XXXXXXXX") || exit {LOCK_CREATE_FAILED}; '
        f'if ! cat > "$t" || ! chmod 600 -- "$t"; then rm -f -- "$t"; exit {LOCK_CREATE_FAILED}; fi; '
        f'if ln -T -- "$t" "$p" 2>/dev/null; then rm -f -- "$t"; exit 0; fi; '
        f'rm -f -- "$t"; '
        f'if [ -e "$p" ] || [ -L "$p" ]; then exit {LOCK_EXISTS}; fi; '
        f'echo "cannot create $p" >&2; exit {LOCK_CREATE_FAILED}'
    )


def remove_command(path: str) -> str:
    return f"rm -f -- {shlex.quote(path)}"


# Exit code of the compare-and-swap commands when the lock no longer carries the caller's token.
LOCK_NOT_OURS = 5


def _mutex(path: str) -> str:
    """Serialise every change to an existing lock file (heartbeat, release, force, pre-emption)
    on a flock beside it; creating one stays the atomic hard link of `create_exclusive_command`."""
    return (f"p={shlex.quote(path)}; mkdir -p -- \"$(dirname -- \"$p\")\"; "
            f"exec 9>>\"$p.mutex\" || exit {LOCK_CREATE_FAILED}; "
            f"flock -w 10 9 || exit {LOCK_CREATE_FAILED}; ")


def _token_line(token: str) -> str:
    return shlex.quote(json.dumps({"token": token})[1:-1])


def replace_if_owner_command(path: str, token: str) -> str:
    """Write stdin over the lock only if it still carries `token` (else exit LOCK_NOT_OURS)."""
    return (_mutex(path)
            + f'grep -qF -- {_token_line(token)} "$p" 2>/dev/null || exit {LOCK_NOT_OURS}; '
            + f't=$(mktemp -- "$p.XXXXXXXX") || exit {LOCK_CREATE_FAILED}; '
            + 'if cat > "$t" && chmod 600 -- "$t" && mv -f -- "$t" "$p"; then exit 0; fi; '
            + f'rm -f -- "$t"; exit {LOCK_CREATE_FAILED}')


def remove_if_owner_command(path: str, token: str) -> str:
    return (_mutex(path)
            + f'grep -qF -- {_token_line(token)} "$p" 2>/dev/null || exit {LOCK_NOT_OURS}; rm -f -- "$p"')


def take_over_command(path: str) -> str:
    """Print whatever lock is there, then put stdin in its place (pre-emption); atomic under the
    flock, so the holder's next compare-and-swap finds the lock is no longer its own."""
    return (_mutex(path) + 'cat -- "$p" 2>/dev/null; '
            + f't=$(mktemp -- "$p.XXXXXXXX") || exit {LOCK_CREATE_FAILED}; '
            + 'if cat > "$t" && chmod 600 -- "$t" && mv -f -- "$t" "$p"; then exit 0; fi; '
            + f'rm -f -- "$t"; exit {LOCK_CREATE_FAILED}')


def force_remove_command(path: str) -> str:
    """Print whatever lock is there and remove it, in one step under the flock."""
    return _mutex(path) + 'cat -- "$p" 2>/dev/null; rm -f -- "$p"'


class LockManager:
    """The deployment lock: one JSON file on the HAProxy host, created atomically.

    Give it an executor of its own when using `hold()`: the heartbeat thread runs commands on it
    while the operation uses its own connections.
    """

    def __init__(self, executor: Executor, path: str, *, stale_after: float = 120.0,
                 clock: Callable[[], float] = time.time, heartbeat_every: float = 10.0,
                 holder: str | None = None) -> None:
        self.executor = executor
        self.path = path
        self.stale_after = stale_after
        self.clock = clock
        self.heartbeat_every = heartbeat_every
        self.holder = holder or default_holder()
        self.machine = socket.gethostname()
        self.lost: str | None = None  # set when a heartbeat finds the lock taken from us
        self._held: LockInfo | None = None
        self._mutex = threading.Lock()

    @property
    def held(self) -> LockInfo | None:
        return self._held

    def _read(self) -> LockInfo | None:
        raw = self.executor.get(self.path, step="read the deployment lock")
        if raw is None:
            return None
        try:
            return LockInfo.from_file(raw.decode("utf-8", errors="replace"),
                                      source=f"{self.executor.host}:{self.path}")
        except ConfigError:
            return UNREADABLE_LOCK

    def status(self) -> LockStatus | None:
        info = self._read()
        if info is None:
            return None
        return lock_status(info, now=self.clock(), stale_after=self.stale_after, this_machine=self.machine)

    def acquire(self, operation: str, who: str | None = None) -> LockInfo:
        """Take the lock for `operation`; `who` overrides the holder name (e.g. an MCP client)."""
        step = "take the deployment lock"
        now = self.clock()
        info = LockInfo(holder=who or self.holder, host=self.machine, pid=os.getpid(), operation=operation,
                        started=now, heartbeat=now, token=uuid.uuid4().hex)
        # A lock released between our failed create and our read is worth one more try.
        for _attempt in range(3):
            result = self.executor.run(create_exclusive_command(self.path), step=step, check=False,
                                       input=info.to_file())
            if result.exit_code == 0:
                with self._mutex:
                    self._held = info
                    self.lost = None
                log.info("took the deployment lock for '%s'", operation)
                return info
            if result.exit_code != LOCK_EXISTS:
                detail = (result.stderr.strip() or result.stdout.strip() or f"exit code {result.exit_code}")
                raise RemoteError(self.executor.host, step, f"cannot create {self.path}: {detail[-500:]}")
            status = self.status()
            if status is not None:
                raise LockedError(describe_locked(status, self.path))
        raise LockedError(f"the deployment lock ({self.path}) keeps changing hands; try again")

    def _lose(self, held: LockInfo) -> LockedError:
        """Record that the lock was taken from us (caller holds the mutex); the error to raise."""
        try:
            current = self._read()
        except BlueGreenError:
            current = None
        now_by = "nobody" if current is None else f"{current.holder} for '{current.operation}'"
        self.lost = (f"the deployment lock was broken while '{held.operation}' ran "
                     f"(now held by {now_by}); stopping")
        self._held = None
        return LockedError(self.lost)

    def check(self) -> None:
        """Raise LockedError if the lock we hold was broken or taken over (a step boundary calls
        this, so an operation that lost its lock stops instead of carrying on)."""
        with self._mutex:
            if self.lost is not None:
                raise LockedError(self.lost)
            held = self._held
            if held is None:
                return
            current = self._read()
            if current is None or not current.same_owner(held):
                raise self._lose(held)

    def heartbeat(self) -> LockInfo:
        with self._mutex:
            held = self._held
            if held is None:
                raise LockedError(self.lost or "cannot refresh the deployment lock: this process does not hold it")
            refreshed = replace(held, heartbeat=self.clock())
            step = "refresh the deployment lock"
            result = self.executor.run(replace_if_owner_command(self.path, held.token), step=step,
                                       check=False, input=refreshed.to_file())
            if result.exit_code == LOCK_NOT_OURS:
                raise self._lose(held)
            if result.exit_code != 0:
                raise RemoteError(self.executor.host, step, (result.stderr.strip() or
                                                             f"exit code {result.exit_code}")[-500:])
            self._held = refreshed
            return refreshed

    def release(self) -> bool:
        """Remove the lock if it is still ours; True if we removed it."""
        with self._mutex:
            held = self._held
            self._held = None
            if held is None:
                return False
            result = self.executor.run(remove_if_owner_command(self.path, held.token),
                                       step="release the deployment lock", check=False)
            if result.exit_code == LOCK_NOT_OURS:
                current = self._read()
                if current is None:
                    log.warning("the deployment lock was already gone when '%s' finished", held.operation)
                else:
                    log.warning("not releasing the deployment lock: it now belongs to %s ('%s')",
                                current.holder, current.operation)
                return False
            if result.exit_code != 0:
                raise RemoteError(self.executor.host, "release the deployment lock",
                                  (result.stderr.strip() or f"exit code {result.exit_code}")[-500:])
            return True

    def force_release(self) -> LockInfo | None:
        """Break whatever lock is there; returns what it was (None if there was none)."""
        with self._mutex:
            out = self.executor.run(force_remove_command(self.path), step="break the deployment lock")
            if not out.stdout.strip():
                return None
            current = self._parse(out.stdout)
            if self._held is not None and current.same_owner(self._held):
                self._held = None
            log.warning("broke the deployment lock of %s ('%s')", current.holder, current.operation)
            return current

    def take_over(self, operation: str, who: str | None = None) -> tuple[LockInfo, LockInfo | None]:
        """Take the lock whoever holds it (an emergency pre-empts); (ours, the one we displaced)."""
        now = self.clock()
        info = LockInfo(holder=who or self.holder, host=self.machine, pid=os.getpid(), operation=operation,
                        started=now, heartbeat=now, token=uuid.uuid4().hex)
        with self._mutex:
            out = self.executor.run(take_over_command(self.path), step="take over the deployment lock",
                                    input=info.to_file())
            self._held = info
            self.lost = None
        return info, (self._parse(out.stdout) if out.stdout.strip() else None)

    def _parse(self, text: str) -> LockInfo:
        try:
            return LockInfo.from_file(text, source=f"{self.executor.host}:{self.path}")
        except ConfigError:
            return UNREADABLE_LOCK

    @contextlib.contextmanager
    def hold(self, operation: str, who: str | None = None) -> Iterator[LockInfo]:
        """Hold the lock for the block, heartbeating from a daemon thread; released on any exit."""
        info = self.acquire(operation, who)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat_loop, args=(stop,), daemon=True,
                                name="bluegreen-lock-heartbeat")
        beat.start()
        try:
            yield info
        finally:
            stop.set()
            beat.join()
            self.release()

    def _heartbeat_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_every):
            try:
                self.heartbeat()
            except LockedError as exc:
                log.error("%s", exc)
                return
            except BlueGreenError as exc:
                # A missed beat is survivable: the lock only looks stale after `stale_after`.
                log.warning("could not refresh the deployment lock: %s", exc)
