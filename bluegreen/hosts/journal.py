"""The deployment journal on the HAProxy host.

Writes are atomic and take the old tool's flock (`state.lock` beside the journal), optionally as
a compare-and-swap against what was read. An emergency that cannot parse the journal appends its
record to a side file instead (`<journal>.pending`), which the next normal read folds in. Entries
trimmed from the file are appended to the archive beside it (`state.archive.jsonl`) under the same
lock and before the journal is replaced: an interruption between the two can repeat an entry in
the archive, never lose one.
"""

from __future__ import annotations

import contextlib
import hashlib
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any

from bluegreen.hosts.executor import Executor
from bluegreen.hosts.lock import token_line
from bluegreen.model.errors import ConfigError, LockedError, RemoteError
from bluegreen.model.journal import (
    State,
    archive_lines,
    archive_path,
    fold,
    parse_archive,
    parse_side,
    parse_state,
    scrub_errors,
    side_path,
)
from bluegreen.model.topology import COLORS, Topology
from bluegreen.render.metrics import render_metrics
from bluegreen.render.shell import sh


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

    def write(self, state: State) -> State:
        """Replace the file atomically while holding the state lock `jw-deployment-state.sh`
        takes (flock on `state.lock` beside it), so neither side ever sees the other's half.
        Returns the state as written (its archived entries appended to the archive)."""
        self._install(state, expected=None)
        return replace(state, archived=())

    def update(self, change: Callable[[State], State], *, owner: LockOwner | None = None) -> State:
        """Read, change, write back only if nobody wrote in between (under the state lock);
        otherwise read again and re-apply `change`. With `owner` (the deployment lock's path and
        the caller's token), nothing is written unless the lock still carries that token: an
        operation that lost its lock raises JournalNotOurs instead of writing."""

        for _ in range(JOURNAL_CAS_ATTEMPTS):
            raw = self.executor.get(self.path, step="read the deployment journal")
            digest = hashlib.sha256(raw).hexdigest() if raw is not None else ABSENT
            state = change(self._parse(raw, self.declared_color))
            if self._install(state, expected=digest, owner=owner):
                return replace(state, archived=())
        raise RemoteError(self.executor.host, "write the deployment journal",
                          f"{self.path} kept changing while being updated; try again")

    @property
    def state_lock(self) -> str:
        return state_lock_path(self.path)

    @property
    def archive(self) -> str:
        return archive_path(self.path)

    def read_archive(self) -> list[dict[str, Any]]:
        """The entries moved out of the journal, newest first ([] when none were)."""
        raw = self.executor.get(self.archive, step="read the journal archive")
        return [] if raw is None else parse_archive(raw.decode(errors="replace"))

    def _install(self, state: State, *, expected: str | None, owner: LockOwner | None = None) -> bool:
        # Private: the journal quotes remote stderr, redacted here first. `install -d` also
        # tightens an existing directory.
        text = scrub_errors(state, getattr(self.executor, "secrets", None) or []).to_json()
        directory = str(PurePosixPath(self.path).parent)
        self.executor.run(sh("install", "-d", "-m", "700", "--", directory), step="write the deployment journal")
        tmp = f"{self.path}.bluegreen-tmp"
        self.executor.put(tmp, text, step="write the deployment journal", mode=0o600)
        moved = scrub_errors(State(prod=state.prod, standby=state.standby, archived=state.archived),
                             getattr(self.executor, "secrets", None) or []).archived
        archive_tmp = None
        if moved:
            archive_tmp = f"{self.archive}.bluegreen-tmp"
            self.executor.put(archive_tmp, archive_lines(moved), step="archive older journal entries", mode=0o600)
        result = self.executor.run(install_state_command(self.path, tmp, self.state_lock, expected, owner,
                                                         archive=self.archive if moved else None,
                                                         archive_tmp=archive_tmp),
                                   step="write the deployment journal", check=False)
        if result.exit_code == CAS_CONFLICT:
            return False
        if result.exit_code == JOURNAL_NOT_OURS:
            raise JournalNotOurs(f"{self.source}: not written: the deployment lock no longer belongs to "
                                 "this run (an emergency took it over, or it was broken)")
        if not result.ok:
            self.executor.run(sh("rm", "-f", tmp, *([archive_tmp] if archive_tmp else [])),
                              step="discard the journal update", check=False)
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


@dataclass(frozen=True)
class LockOwner:
    """Who may write: the deployment lock's path and the token the writer took it with."""

    lock_path: str
    token: str


class JournalNotOurs(LockedError):
    """The journal was not written: the writer no longer holds the deployment lock."""


JOURNAL_NOT_OURS = 5


def install_state_command(path: str, tmp: str, lock: str, expected: str | None,
                          owner: LockOwner | None = None, *,
                          archive: str | None = None, archive_tmp: str | None = None) -> str:
    """Move `tmp` over `path` under the old tool's flock on `lock`; with `expected` (a sha256, or
    `absent`), only if the file still has that content (else exit 3, the temp files removed); with
    `owner`, only while the deployment lock carries the owner's token, checked under the lock's
    own mutex so no take-over slips in between (else exit 5). With `archive`, the lines of
    `archive_tmp` are appended to it first (0600); if that fails, nothing is replaced."""
    drop = 'rm -f "$2" ${7:+"$7"}'
    script = ""
    if owner is not None:
        script += (f'exec 8>>"$5.mutex" && flock -w {STATE_LOCK_WAIT} 8 || {{ {drop}; exit 4; }}; '
                   f'grep -qF -- "$6" "$5" 2>/dev/null || {{ {drop}; exit {JOURNAL_NOT_OURS}; }}; ')
    script += (f'exec 9>>"$3" && flock -w {STATE_LOCK_WAIT} 9 || {{ {drop}; '
               f'echo "could not take $3 within {STATE_LOCK_WAIT}s" >&2; exit 4; }}; ')
    if expected is not None:
        script += ('cur=$(sha256sum "$1" 2>/dev/null | cut -d" " -f1); '
                   f'if [ "${{cur:-{ABSENT}}}" != "$4" ]; then {drop}; exit {CAS_CONFLICT}; fi; ')
    if archive is not None and archive_tmp is not None:
        script += ('( umask 077; cat "$7" >> "$8" ) || { rm -f "$2" "$7"; echo "cannot append to $8" >&2; '
                   'exit 1; }; chmod 600 "$8"; rm -f "$7"; ')
    script += 'chmod 600 -- "$2" && mv -f -- "$2" "$1"'
    return sh("bash", "-c", script, "_", path, tmp, lock, expected or "",
              owner.lock_path if owner else "", token_line(owner.token) if owner else "",
              archive_tmp or "", archive or "")


def append_side_command(journal_path: str, line: str) -> str:
    """Append one JSON line to the side journal (a single short write: appends do not interleave),
    0600, under the journal's flock when it can be had within a few seconds (a record matters
    more than the lock, which only keeps a fold from clearing the file in between)."""
    side = shlex.quote(side_path(journal_path))
    lock = shlex.quote(state_lock_path(journal_path))
    return (f"mkdir -p -m 700 -- \"$(dirname -- {side})\" && {{ exec 9>>{lock} && flock -w 3 9; "
            f"true; }} && ( umask 077; printf '%s\\n' {shlex.quote(line)} >> {side} )")


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
        # Only the content just read: a line appended since then stays for the next fold.
        digest = hashlib.sha256(raw).hexdigest()
        lock = shlex.quote(state_lock_path(journal_path))
        executor.run(f"exec 9>>{lock} && flock -w {STATE_LOCK_WAIT} 9 && "
                     f"[ \"$(sha256sum < {shlex.quote(path)} | cut -d' ' -f1)\" = {digest} ] && "
                     f"rm -f -- {shlex.quote(path)}; true", step="fold the side journal in")


class EstateJournal:
    """The journal as operations use it: on read, what an emergency left in the side file is folded
    in; on write, the side file goes once the journal holds all of it, and the metrics textfile
    (live colour, switches, deploys) is rewritten for node_exporter."""

    def __init__(self, executor: Executor, t: Topology) -> None:
        self.t = t
        self.store = JournalStore(executor, t.load_balancer.path(t.journal.path))

    def read(self) -> State:
        state = self.store.read(default_live=self.t.active_color)
        return fold_pending(self.store.executor, self.store.path, state, self.t.journal.history_keep)

    def update(self, change: Callable[[State], State], *, live: str, owner: LockOwner | None = None) -> State:
        """Read (side file folded in), change, write back as a compare-and-swap under the old
        tool's flock, and only while `owner` still holds the deployment lock."""
        lb = self.store.executor
        keep = self.t.journal.history_keep
        state = self.store.update(lambda s: change(fold_pending(lb, self.store.path, s, keep)), owner=owner)
        self._after_write(state, live)
        return state

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` entries, newest first: the journal's, then the archive's."""
        entries = self.read().recent(limit)
        if len(entries) < limit:
            entries += self.store.read_archive()[:limit - len(entries)]
        return entries

    def write(self, state: State, *, live: str) -> State:
        """Write the journal (trimmed entries archived); returns the state as written."""
        state = self.store.write(state)
        self._after_write(state, live)
        return state

    def _after_write(self, state: State, live: str) -> None:
        lb = self.store.executor
        with contextlib.suppress(RemoteError):
            clear_pending(lb, self.store.path, state)
        metrics = render_metrics(state, live=live, generated_at=time.time(), declared=self.t.active_color)
        with contextlib.suppress(RemoteError):
            lb.put(self.t.load_balancer.path(self.t.journal.metrics_path), metrics, step="write metrics", mode=0o644)
