"""The deployment lock on the HAProxy host: created atomically, heart-beaten, released only by its owner."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import PurePosixPath

from bluegreen.hosts.executor import Executor
from bluegreen.model.errors import BlueGreenError, ConfigError, LockedError, RemoteError, add_problem
from bluegreen.model.lock import UNREADABLE_LOCK, LockInfo, LockStatus, default_holder, describe_locked, lock_status

log = logging.getLogger("bluegreen.lock")


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


def token_line(token: str) -> str:
    """The text a lock file carrying `token` holds (as its to_file() writes it)."""
    return json.dumps({"token": token})[1:-1]


def _token_line(token: str) -> str:
    return shlex.quote(token_line(token))


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
        except BaseException as exc:
            stop.set()
            beat.join()
            try:
                self.release()
            except BlueGreenError as failed:
                # Beside the operation's own error, never instead of it.
                log.error("%s", failed)
                add_problem(exc, f"the deployment lock could not be released ({failed}); once nothing "
                                 f"runs, check `bluegreen lock status` and release it with "
                                 f"`bluegreen lock release --force`")
            raise
        stop.set()
        beat.join()
        try:
            self.release()
        except RemoteError as failed:
            raise RemoteError(failed.host, failed.step, f"{failed.detail} ('{operation}' itself finished; "
                              "the lock stays on the load balancer: once nothing runs, release it with "
                              "`bluegreen lock release --force`)") from None

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
