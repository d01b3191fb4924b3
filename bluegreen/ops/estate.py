"""The estate handle every operation receives.

An `Estate` is what one run of the tool holds of the estate: the stack's topology, an executor per
host (opened on demand, or pooled for a switch), the deployment lock and journal on the load
balancer, the Proxmox client, the secrets every output is scrubbed of, who runs it and where its
progress goes. Operations (`bluegreen.ops.*`) are functions of an `Estate`; they reach hosts only
through it and the host layer (`bluegreen.hosts`), never through each other's private names.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from bluegreen.hosts import haproxy
from bluegreen.hosts.executor import Executor, connect
from bluegreen.hosts.journal import EstateJournal, JournalNotOurs, LockOwner
from bluegreen.hosts.lock import LockManager
from bluegreen.hosts.metrics import LOCK_METRICS_OPERATIONS, write_lock_metrics
from bluegreen.hosts.openssh import OpenSshExecutor
from bluegreen.hosts.pve import PveClient
from bluegreen.model.errors import BlueGreenError, RemoteError
from bluegreen.model.journal import State
from bluegreen.model.lock import default_holder
from bluegreen.model.progress import NullProgress, Progress
from bluegreen.model.secrets import secrets_in_env_text
from bluegreen.model.sensitive import SecretSet, Sensitive, as_secret_set
from bluegreen.model.topology import Container, Topology
from bluegreen.render.appenv import env_path

ExecutorFactory = Callable[[Container], Executor]
log = logging.getLogger("bluegreen.estate")


class Estate:
    """One run's handle on the estate. `t` follows the declared colour as switches change it."""

    def __init__(self, topology: Topology, *, progress: Progress | None = None,
                 secrets: Iterable[Sensitive] = (), who: str | None = None, pulumi_command: Any = None,
                 executor_factory: ExecutorFactory | None = None) -> None:
        self.t = topology
        self.progress: Progress = progress or NullProgress()
        # Shared with every executor, the journal and the events: what `learn_secrets` adds later
        # is scrubbed by all of them. Faces start it from `model.secrets.stack_secrets`.
        self.secrets: SecretSet = as_secret_set(secrets)
        self._learned: set[int] = set()
        self._learn_mutex = threading.Lock()
        self.who = who or default_holder()
        self.pulumi_command = pulumi_command
        self._factory = executor_factory
        self._pool: dict[int, Executor] | None = None
        self._pool_mutex = threading.Lock()
        self._lease: LockManager | None = None

    # -- hosts --------------------------------------------------------------------------

    def connect(self, host: Container) -> Executor:
        """A new executor for `host` (its owner closes it)."""
        return self._factory(host) if self._factory else connect(self.t, host, self.secrets)

    def _session(self, host: Container) -> Executor:
        return self._factory(host) if self._factory else OpenSshExecutor(self.t, host, secrets=self.secrets)

    @contextlib.contextmanager
    def on(self, host: Container) -> Iterator[Executor]:
        """An executor for `host` for the block: the pooled one inside `pooled()`, else a new one."""
        if self._pool is not None:
            with self._pool_mutex:
                ex = self._pool.get(host.vmid)
                if ex is None:
                    ex = self._pool[host.vmid] = self._session(host)
            self._learn(host, ex)
            yield ex
            return
        ex = self.connect(host)
        try:
            self._learn(host, ex)
            yield ex
        finally:
            ex.close()

    # -- secrets --------------------------------------------------------------------------

    def _learn(self, host: Container, ex: Executor) -> None:
        """The first time this run reaches an app host: the secrets of its `.env` (the values a
        build or a migration there can print) join the set every output is scrubbed of."""
        if host.role != "app":
            return
        with self._learn_mutex:
            if host.vmid in self._learned:
                return
            self._learned.add(host.vmid)
        for path in (env_path(self.t, host), host.path(f"{self.t.app.dir}/.env")):
            try:
                raw = ex.get(path, step="read the secrets to scrub from output")
            except RemoteError as exc:
                if exc.step == "connect":  # what the caller's first command would meet: raise it once
                    with self._learn_mutex:
                        self._learned.discard(host.vmid)
                    raise
                log.debug("%s: %s not read: %s", host.label, path, exc)  # the operation goes on
                break
            if raw is not None:  # the release layout's, else the working copy's (an estate kept by hand)
                self.secrets.add(*secrets_in_env_text(raw.decode(errors="replace"), self.t))
                break

    def learn_secrets(self) -> None:
        """Read every app host's secrets now (before showing text the hosts wrote earlier, such as
        the journal); an unreachable host is skipped."""
        for host in self.t.app_hosts.values():
            if host.vmid in self._learned:
                continue
            try:
                with self.on(host):
                    pass
            except BlueGreenError as exc:
                log.debug("%s: secrets not read: %s", host.label, exc)

    @contextlib.contextmanager
    def pooled(self) -> Iterator[None]:
        """One persistent connection and remote shell per host for everything inside (a switch:
        each step is then one script down an open session, not a new connection or login)."""
        if self._pool is not None:
            yield
            return
        self._pool = {}
        if self._factory is None:
            # Start every connection a switch may need at once: their logins overlap.
            for host in (self.t.load_balancer, *self.t.app_hosts.values()):
                session = OpenSshExecutor(self.t, host, secrets=self.secrets)
                session.start()
                self._pool[host.vmid] = session
        try:
            yield
        finally:
            pool, self._pool = self._pool, None
            for ex in pool.values():
                ex.close()

    # -- the lock -------------------------------------------------------------------------

    def lock(self, lb: Executor) -> LockManager:
        return LockManager(lb, self.t.load_balancer.path(self.t.journal.lock_path))

    @contextlib.contextmanager
    def holding(self, operation: str) -> Iterator[None]:
        """Hold the estate lock on its own connection: the heartbeat thread uses it while the
        operation's own connection may be dropped and reopened. Re-entrant: an operation that
        holds it (rebuild) runs others (deploy) inside without letting go."""
        if self._lease is not None:
            yield
            return
        with self.on(self.t.load_balancer) as lock_ex:
            manager = self.lock(lock_ex)
            metrics = operation in LOCK_METRICS_OPERATIONS  # for the stale-lock alert
            with manager.hold(operation, self.who):
                self._lease = manager
                if metrics:
                    write_lock_metrics(lock_ex, self.t, held=True, operation=operation, holder=self.who)
                try:
                    yield
                finally:
                    self._lease = None
                    if metrics:
                        write_lock_metrics(lock_ex, self.t, held=False, operation=operation, holder=self.who)

    @property
    def lock_token(self) -> str | None:
        """The token of the project lock this run holds (None: it holds none): a `pulumi up` the
        run makes passes it on, so the program knows that lock is its caller's (components/live.py)."""
        held = self._lease.held if self._lease is not None else None
        return held.token if held is not None else None

    def check_lock(self) -> None:
        """At each step boundary: stop if the lock was broken or pre-empted (an emergency)."""
        if self._lease is not None:
            self._lease.check()

    # -- the journal and the live colour -----------------------------------------------------

    def journal(self, lb: Executor) -> EstateJournal:
        return EstateJournal(lb, self.t)

    def read_state(self, lb: Executor) -> State:
        return self.journal(lb).read()

    def write_state(self, lb: Executor, state: State, live: str) -> State:
        return self.journal(lb).write(state, live=live)

    def update_state(self, lb: Executor, change: Callable[[State], State], live: str) -> State:
        """The journal changed as a compare-and-swap against what was read, under the old tool's
        flock, and (inside `holding`) only while this run still holds the deployment lock
        (JournalNotOurs otherwise: an operation that lost its lock never writes the journal)."""
        return self.journal(lb).update(change, live=live, owner=self.owner())

    def owner(self) -> LockOwner | None:
        """Who may write the journal: this run's lock token (None outside `holding`)."""
        if self._lease is None:
            return None
        held = self._lease.held
        if held is None or not held.token:
            raise JournalNotOurs(self._lease.lost or "the deployment lock is no longer held by this run")
        return LockOwner(self._lease.path, held.token)

    def live_color(self, lb: Executor) -> str:
        return haproxy.live_color(lb, self.t)

    def declare(self, color: str) -> None:
        """The declared colour as the stack file now says it (after a flip recorded it)."""
        self.t = dataclasses.replace(self.t, active_color=color)

    # -- Proxmox ----------------------------------------------------------------------------

    def pve(self) -> PveClient:
        return PveClient.from_topology(self.t)
