"""The operations users run: status, deploy, switch, rollback, history, lock, plan.

One service layer under every front-end (CLI, MCP server, lab demo). It orchestrates; the pure
modules decide (commands, migrations, journal, renderers) and the executor acts. Every result is
a dataclass with `to_json()`; every foreseeable failure is a `BlueGreenError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import commands as cmd
from . import emergency as em
from . import haproxy_runtime, health, migrations
from .errors import (
    BlueGreenError,
    ConfigError,
    DeployError,
    LockedError,
    ProxmoxError,
    RemoteError,
    SwitchError,
)
from .executor import Executor, connect
from .journal import JournalStore, LockManager, State
from .metrics import render_metrics
from .progress import NullProgress, Progress
from .pve import PveClient, snapshot_name
from .sensitive import Sensitive, redact
from .topology import Container, Topology, other_color, set_active_color_in_file

log = logging.getLogger("bluegreen.service")

ExecutorFactory = Callable[[Container], Executor]


def whoami() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------ results


@dataclass
class ColorStatus:
    color: str
    host: str
    vmid: int
    reachable: bool = False
    healthy: bool = False
    status_code: int | None = None
    latency_ms: float | None = None
    release: str | None = None
    sha: str | None = None
    ref: str | None = None
    pm2: list[dict[str, Any]] = field(default_factory=list)
    haproxy: str | None = None
    proxmox: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)
    commit: str | None = None  # what the health answer reports, or COMMIT_NOT_REPORTED

    def to_json(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "host": self.host, "vmid": self.vmid, "reachable": self.reachable,
            "healthy": self.healthy, "statusCode": self.status_code, "latencyMs": self.latency_ms,
            "release": self.release, "sha": self.sha, "ref": self.ref, "pm2": self.pm2,
            "haproxy": self.haproxy, "proxmox": self.proxmox, "errors": self.errors,
        }


@dataclass
class StatusReport:
    stack: str
    live: str | None
    declared: str
    colors: dict[str, ColorStatus]
    database: dict[str, Any]
    last_switch: str | None
    switch_count: int
    lock: dict[str, Any] | None
    endpoints: dict[str, str]
    proxmox: dict[str, Any] | None
    errors: list[str]

    @property
    def standby(self) -> str:
        return other_color(self.live or self.declared)

    @property
    def drift(self) -> bool:
        return self.live is not None and self.live != self.declared

    reconcile: str | None = None  # with drift: the one command that makes the declared colour true

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack, "live": self.live, "declared": self.declared,
            "standby": self.standby, "drift": self.drift, "reconcile": self.reconcile,
            "colors": {c: s.to_json() for c, s in self.colors.items()},
            "database": self.database, "lastSwitch": self.last_switch,
            "switchCount": self.switch_count, "lock": self.lock, "endpoints": self.endpoints,
            "proxmox": self.proxmox, "errors": self.errors,
        }


@dataclass
class DeployPlan:
    color: str
    host: str
    ref: str
    migrate: bool
    allow_destructive: bool
    live: str
    steps: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"colour": self.color, "host": self.host, "ref": self.ref, "migrate": self.migrate,
                "allowDestructive": self.allow_destructive, "live": self.live, "steps": self.steps}


@dataclass
class DeployResult:
    ok: bool
    color: str
    ref: str
    sha: str | None = None
    release: str | None = None
    previous_release: str | None = None
    dependencies: str | None = None
    migrations_applied: list[str] = field(default_factory=list)
    backup: str | None = None
    snapshot: str | None = None
    duration_s: float = 0.0
    failed_step: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "colour": self.color, "ref": self.ref, "sha": self.sha,
                "release": self.release, "previousRelease": self.previous_release,
                "dependencies": self.dependencies, "migrationsApplied": self.migrations_applied,
                "backup": self.backup, "snapshot": self.snapshot,
                "durationSeconds": round(self.duration_s, 2),
                "failedStep": self.failed_step, "error": self.error}


@dataclass
class SwitchPlan:
    from_color: str
    to_color: str
    release: str | None
    sha: str | None
    emergency: bool
    path: str
    checks: list[str]
    problems: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"from": self.from_color, "colour": self.to_color, "release": self.release,
                "sha": self.sha, "emergency": self.emergency, "path": self.path,
                "checks": self.checks, "problems": self.problems}


@dataclass
class SwitchResult:
    ok: bool
    color: str
    from_color: str
    release: str | None
    path: str
    flip_ms: float
    verified: bool
    watched_s: float = 0.0
    rolled_back: bool = False
    reason: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "colour": self.color, "from": self.from_color,
                "release": self.release, "path": self.path, "flipMs": round(self.flip_ms, 1),
                "verified": self.verified, "watchedSeconds": round(self.watched_s, 1),
                "rolledBack": self.rolled_back, "reason": self.reason, "error": self.error}


# ------------------------------------------------------------------------ service


class Service:
    def __init__(self, topology: Topology, *, progress: Progress | None = None,
                 executor_factory: ExecutorFactory | None = None, pulumi_command: Any = None,
                 who: str | None = None, secrets: list[Sensitive] | None = None) -> None:
        self.t = topology
        self.progress: Progress = progress or NullProgress()
        self.secrets = secrets or []
        self._factory = executor_factory or (lambda c: connect(topology, c, self.secrets))
        self._default_factory = executor_factory is None
        self.pulumi_command = pulumi_command
        self.who = who or whoami()

    # -- plumbing -----------------------------------------------------------------

    @contextlib.contextmanager
    def _on(self, host: Container) -> Iterator[Executor]:
        if self._pool is not None:
            with self._pool_mutex:
                ex = self._pool.get(host.vmid)
                if ex is None:
                    ex = self._pool[host.vmid] = (
                        em.OpenSshExecutor(self.t, host, secrets=self.secrets) if self._default_factory
                        else self._factory(host))
            yield ex
            return
        ex = self._factory(host)
        try:
            yield ex
        finally:
            ex.close()

    _pool: dict[int, Executor] | None = None
    _pool_mutex = threading.Lock()

    @contextlib.contextmanager
    def pooled(self) -> Iterator[None]:
        """One persistent SSH connection and remote shell per host for everything inside (a switch:
        each step is then one script down an open session, not a new connection or login)."""
        if self._pool is not None:
            yield
            return
        self._pool = {}
        if self._default_factory:
            # Start every connection a switch may need at once: their logins overlap.
            for host in (self.t.load_balancer, *self.t.app_hosts.values()):
                session = em.OpenSshExecutor(self.t, host, secrets=self.secrets)
                session.start()
                self._pool[host.vmid] = session
        try:
            yield
        finally:
            pool, self._pool = self._pool, None
            for ex in pool.values():
                ex.close()

    def _lock(self, lb: Executor) -> LockManager:
        return LockManager(lb, self.t.load_balancer.path(self.t.journal.lock_path))

    @contextlib.contextmanager
    def _holding(self, operation: str) -> Iterator[None]:
        """Hold the estate lock on its own connection: the heartbeat thread uses it while the
        operation's own connection may be dropped and reopened."""
        with self._on(self.t.load_balancer) as lock_ex:
            manager = self._lock(lock_ex)
            with manager.hold(operation, self.who):
                self._held_lock = manager
                try:
                    yield
                finally:
                    self._held_lock = None

    _held_lock: LockManager | None = None

    def _check_lock(self) -> None:
        """At each step boundary: stop if the lock was broken or pre-empted (an emergency)."""
        if self._held_lock is not None:
            self._held_lock.check()

    def _journal(self, lb: Executor) -> JournalStore:
        return JournalStore(lb, self.t.load_balancer.path(self.t.journal.path))

    def _read_state(self, lb: Executor) -> State:
        state = self._journal(lb).read(default_live=self.t.active_color)
        # Whatever an emergency recorded beside an unreadable journal is folded in here.
        return em.fold_pending(lb, self.t.load_balancer.path(self.t.journal.path), state,
                                      self.t.journal.history_keep)

    def _write_state(self, lb: Executor, state: State, live: str) -> None:
        self._journal(lb).write(state)
        with contextlib.suppress(RemoteError):
            em.clear_pending(lb, self.t.load_balancer.path(self.t.journal.path), state)
        metrics = render_metrics(state, live=live, generated_at=time.time())
        with contextlib.suppress(RemoteError):
            lb.put(self.t.load_balancer.path(self.t.journal.metrics_path), metrics,
                   step="write metrics", mode=0o644)

    def live_color(self, lb: Executor) -> str:
        return haproxy_runtime.live_color(lb, self.t)

    def _pve(self) -> PveClient:
        return PveClient.from_topology(self.t)

    # -- status -------------------------------------------------------------------

    def status(self) -> StatusReport:
        t = self.t
        with ThreadPoolExecutor(max_workers=6) as pool:
            lb_future = pool.submit(self._status_lb)
            color_futures = {c: pool.submit(self._status_color, c) for c in t.app_hosts}
            db_future = pool.submit(self._status_db)
            pve_future = pool.submit(self._status_pve)
            lb = lb_future.result()
            colors = {c: f.result() for c, f in color_futures.items()}
            database = db_future.result()
            proxmox = pve_future.result()
        errors = list(lb["errors"])
        for color, state in colors.items():
            state.haproxy = lb["servers"].get(color)
            if proxmox and not proxmox.get("error"):
                state.proxmox = proxmox["containers"].get(str(state.vmid))
        state_obj: State | None = lb["state"]
        report = StatusReport(
            stack=t.stack, live=lb["live"], declared=t.active_color, colors=colors,
            database=database,
            last_switch=state_obj.last_switch if state_obj else None,
            switch_count=state_obj.switch_count if state_obj else 0,
            lock=lb["lock"], endpoints={"public": t.public_url, "preview": t.preview_url},
            proxmox=proxmox, errors=errors,
        )
        if report.drift and report.live:
            report.reconcile = em.reconcile_command(t, report.live)
        return report

    def _status_lb(self) -> dict[str, Any]:
        out: dict[str, Any] = {"live": None, "servers": {}, "state": None, "lock": None, "errors": []}
        try:
            with self._on(self.t.load_balancer) as lb:
                out["live"] = self.live_color(lb)
                for color, info in haproxy_runtime.backend_states(lb, self.t).items():
                    out["servers"][color] = info
                out["state"] = self._read_state(lb)
                lock = self._lock(lb).status()
                out["lock"] = lock.to_json() if lock else None
        except BlueGreenError as exc:
            out["errors"].append(str(exc))
        return out

    def _status_color(self, color: str) -> ColorStatus:
        t = self.t
        host = t.app_host(color)
        result = ColorStatus(color=color, host=host.ip, vmid=host.vmid)
        probe = health.http_probe(f"http://{host.ip}:{t.app.port}{t.app.health_path}", timeout=3.0,
                                  expect_status=t.app.health_status)
        result.healthy = probe.ok
        result.commit = reported_commit(probe)
        result.status_code = probe.status
        result.latency_ms = probe.latency_ms
        if probe.error and not probe.ok:
            result.errors.append(f"health: {probe.error}")
        paths = cmd.AppPaths.of(t, host)
        try:
            with self._on(host) as ex:
                current = cmd.parse_current(ex.run(cmd.read_current(paths), step="read release").stdout)
                result.reachable = True
                result.release, result.sha, result.ref = current.name, current.sha, current.ref
                raw = ex.run(cmd.pm2_jlist(t, paths), step="pm2 jlist", check=False).stdout
                result.pm2 = _pm2_summary(raw)
        except BlueGreenError as exc:
            result.errors.append(str(exc))
        return result

    def _status_db(self) -> dict[str, Any]:
        t = self.t
        db = t.database_host
        out: dict[str, Any] = {"host": db.ip, "reachable": False, "applied": 0, "pending": [],
                               "failed": [], "error": None}
        try:
            with self._on(db) as ex:
                rows = self._applied_rows(ex)
                out["reachable"] = True
                out["applied"] = len([r for r in rows if r.finished_at])
                out["failed"] = [r.name for r in migrations.failed(rows)]
            live_host = t.app_host(t.active_color)
            with self._on(live_host) as ex:
                paths = cmd.AppPaths.of(t, live_host)
                names = ex.run(cmd.list_migrations(paths.current), step="list migrations").stdout.split()
            out["pending"] = migrations.pending(names, rows)
        except BlueGreenError as exc:
            out["error"] = str(exc)
        return out

    def _status_pve(self) -> dict[str, Any] | None:
        try:
            client = self._pve()
            states = client.statuses([c.vmid for c in self.t.containers])
        except BlueGreenError as exc:
            return {"error": str(exc), "containers": {}}
        return {"node": self.t.proxmox.node, "error": None,
                "containers": {str(vmid): _jsonable(s) for vmid, s in states.items()}}

    def _applied_rows(self, db_ex: Executor) -> list[migrations.AppliedRow]:
        result = db_ex.run(cmd.psql(self.t, self.t.database_host, migrations.applied_rows_query()),
                           step="read applied migrations", check=False)
        return migrations.parse_applied(result.stdout, result.stderr, result.exit_code)

    # -- history and lock -------------------------------------------------------------

    def history(self, limit: int = 20) -> list[dict[str, Any]]:
        if limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {limit}")
        with self._on(self.t.load_balancer) as lb:
            return self._read_state(lb).recent(limit)

    def lock_status(self) -> dict[str, Any] | None:
        with self._on(self.t.load_balancer) as lb:
            lock = self._lock(lb).status()
            return lock.to_json() if lock else None

    def lock_release(self, *, force: bool) -> dict[str, Any] | None:
        if not force:
            raise ConfigError("releasing someone else's lock needs --force")
        with self._on(self.t.load_balancer) as lb:
            released = self._lock(lb).force_release()
            return _jsonable(released) if released else None

    # -- deploy -------------------------------------------------------------------

    def plan_deploy(self, ref: str | None = None, *, migrate: bool = False,
                    allow_destructive: bool = False) -> DeployPlan:
        t = self.t
        from .placeholders import require_complete

        require_complete(t)  # "set app.repo: ..." before any host is contacted
        ref = cmd.validate_ref(ref or t.app.branch)
        with self._on(t.load_balancer) as lb:
            live = self.live_color(lb)
        standby = other_color(live)
        steps = [
            f"lock the estate (on {t.load_balancer.label})",
            f"snapshot CT {t.app_host(standby).vmid} in Proxmox (keep {t.proxmox.snapshot_keep})",
            f"fetch {ref} from {t.app.repo} into a new release on {standby}",
            "link shared .env; install dependencies (reused when package-lock.json is unchanged)",
            f"build ({t.app.build_command})",
            ("if migrations are pending: dump the database, refuse destructive changes"
             + (" (allowed)" if allow_destructive else "") + f", run `{t.app.migrate_command}`")
            if migrate else "refuse if migrations are pending (run with --migrate)",
            f"point current at the new release; reload PM2 on {standby}",
            f"wait for {t.app.health_path} on {standby} (deadline {t.app.health_timeout:g}s)",
            f"smoke test through the preview frontend {t.preview_url}",
            f"keep the last {t.app.keep_releases} releases; record the deploy; release the lock",
        ]
        return DeployPlan(color=standby, host=t.app_host(standby).label, ref=ref, migrate=migrate,
                          allow_destructive=allow_destructive, live=live, steps=steps)

    def deploy(self, ref: str | None = None, *, migrate: bool = False,
               allow_destructive: bool = False, snapshot: bool = True) -> DeployResult:
        t = self.t
        from .placeholders import require_complete

        require_complete(t)  # "set app.repo: ..." before anything is touched
        ref = cmd.validate_ref(ref or t.app.branch)
        started = time.monotonic()
        with self._holding("deploy"), self._on(t.load_balancer) as lb:
            live = self.live_color(lb)
            standby = other_color(live)
            result = DeployResult(ok=False, color=standby, ref=ref)
            run = _DeployRun(self, lb, standby, ref, result)
            interrupted: KeyboardInterrupt | None = None
            try:
                run.execute(migrate=migrate, allow_destructive=allow_destructive, snapshot=snapshot)
                result.ok = True
            except BlueGreenError as exc:
                result.failed_step = run.step_name
                detail = exc.detail if isinstance(exc, DeployError) else str(exc)
                result.error = redact(detail, self.secrets)
                with em.signals_deferred():
                    run.restore()
            except KeyboardInterrupt as exc:
                # SIGINT/SIGTERM: the same restore as a failed step, then the interrupt goes on.
                interrupted = exc
                result.failed_step = run.step_name
                result.error = "interrupted"
                with em.signals_deferred():
                    run.restore()
            finally:
                result.duration_s = time.monotonic() - started
                with em.signals_deferred():
                    self._record_deploy(lb, result, live)
            if interrupted is not None:
                raise interrupted
            if not result.ok:
                if isinstance(run.failure, ConfigError):
                    raise ConfigError(result.error or "bad input")
                raise DeployError(result.failed_step or "deploy", result.error or "failed", color=standby)
            return result

    def _record_deploy(self, lb: Executor, result: DeployResult, live: str) -> None:
        try:
            state = self._read_state(lb).with_deploy(
                color=result.color, ref=result.ref, sha=result.sha, release=result.release,
                who=self.who, when=iso(utcnow()), duration_ms=int(result.duration_s * 1000),
                result="ok" if result.ok else "failed", failed_step=result.failed_step,
                error=result.error, keep=self.t.journal.history_keep)
            self._write_state(lb, state, live)
        except BlueGreenError as exc:
            log.error("could not record the deploy in the journal: %s", exc)

    # -- switch -------------------------------------------------------------------

    def _switch_path(self, emergency: bool, direct: bool) -> str:
        if emergency:
            return "emergency"
        if direct or self.t.switch.mode == "direct":
            return "direct"
        return "automation"

    def plan_switch(self, *, emergency: bool = False, direct: bool = False,
                    to_color: str | None = None) -> SwitchPlan:
        with self.pooled(), self._on(self.t.load_balancer) as lb:
            return self._plan_switch(lb, emergency=emergency, direct=direct, to_color=to_color)

    def _plan_switch(self, lb: Executor, *, emergency: bool, direct: bool,
                     to_color: str | None = None) -> SwitchPlan:
        t = self.t
        live = self.live_color(lb)
        target = to_color or other_color(live)
        if target == live:
            raise SwitchError(f"{target} is already live")
        host = t.app_host(target)
        paths = cmd.AppPaths.of(t, host)
        release = sha = None
        problems: list[str] = []
        try:
            with self._on(host) as ex:
                current = cmd.parse_current(ex.run(cmd.read_current(paths), step="read release").stdout)
                release, sha = current.name, current.sha
        except BlueGreenError as exc:
            problems.append(str(exc))
        checks = [f"{target} serves a release", f"{target} answers {t.app.health_path} with 200",
                  f"HAProxy sees backend bk_{target} UP"]
        if not emergency:
            if not release:
                problems.append(f"{target} ({host.ip}) has no release deployed")
            else:
                try:
                    unfinished = em.unfinished_release(self._read_state(lb), target, release)
                except BlueGreenError as exc:
                    unfinished = f"cannot check how {release} was deployed: {exc}"
                if unfinished:
                    problems.append(unfinished)
            probe = health.http_probe(f"http://{host.ip}:{t.app.port}{t.app.health_path}",
                                      expect_status=t.app.health_status)
            if not probe.ok:
                problems.append(f"{target} is not healthy: {probe.error or probe.status}")
            server = haproxy_runtime.backend_states(lb, t).get(target)
            if server and not str(server.get("status", "")).upper().startswith("UP"):
                problems.append(f"HAProxy sees bk_{target} as {server.get('status')}")
        else:
            checks = ["none (emergency: checks skipped)"]
        return SwitchPlan(from_color=live, to_color=target, release=release, sha=sha,
                          emergency=emergency, path=self._switch_path(emergency, direct),
                          checks=checks, problems=problems)

    def switch(self, *, emergency: bool = False, direct: bool = False, watch: bool = True,
               to_color: str | None = None, reason: str = "switch") -> SwitchResult:
        t = self.t
        if emergency:
            # The load balancer only: no lock wait, no app hosts, no journal needed (emergency.py).
            return self._emergency(rollback=reason == "rollback", to_color=to_color)
        with self.pooled(), self._holding(reason), self._on(t.load_balancer) as lb:
            with self.progress.step("pre-switch checks"):
                plan = self._plan_switch(lb, emergency=emergency, direct=direct, to_color=to_color)
                if plan.problems:
                    raise SwitchError(
                        f"refusing to switch to {plan.to_color}: " + "; ".join(plan.problems)
                        + ". Fix the standby (or use --emergency to skip the checks).")
            self._check_lock()
            result = SwitchResult(ok=True, color=plan.to_color, from_color=plan.from_color,
                                  release=plan.release, path=plan.path, flip_ms=0.0,
                                  verified=False, reason=reason)
            recorded = False
            try:
                flip_started = time.monotonic()
                with self.progress.step(f"flip live traffic to {plan.to_color} ({plan.path})"):
                    self._flip(lb, plan.to_color, plan.path)
                result.flip_ms = (time.monotonic() - flip_started) * 1000
                with self.progress.step("verify new requests reach the new colour"):
                    result.verified = self._verify_serving(plan.to_color)
                why: str | None = None
                if not result.verified:
                    # Back at once: every moment here serves users from a colour that is not answering.
                    why = f"new requests were not served by {plan.to_color}"
                    self._switch_back(lb, plan, why, result)
                self._record_safely(lb, plan.from_color, plan.to_color, reason, False, int(result.flip_ms),
                                    result)
                recorded = True
                if why is None and watch and t.switch.watch_seconds > 0:
                    why = self._watch(lb, plan.to_color, result)
                    if why:
                        self._switch_back(lb, plan, why, result)
                if why is not None:
                    self._record_safely(lb, plan.to_color, plan.from_color, f"automatic switch back: {why}",
                                        True, 0, result)
            except KeyboardInterrupt:
                # SIGINT/SIGTERM: the restore path of a failed step (back to the old colour), recorded.
                with em.signals_deferred():
                    self._interrupted_switch(lb, plan, result, reason, recorded)
                raise
            return result

    def _emergency(self, *, rollback: bool, to_color: str | None) -> SwitchResult:
        done = em.run(self.t, rollback=rollback, who=self.who, to_color=to_color,
                             progress=self.progress)
        if self.t.switch.mode == "direct":
            self.t = dataclasses.replace(self.t, active_color=done.color)
        return SwitchResult(ok=done.ok, color=done.color, from_color=done.from_color, release=None,
                            path=done.path, flip_ms=done.flip_ms, verified=done.verified,
                            reason=done.reason, error=done.error)

    def _interrupted_switch(self, lb: Executor, plan: SwitchPlan, result: SwitchResult, reason: str,
                            recorded: bool) -> None:
        try:
            live = self.live_color(lb)
        except BlueGreenError as exc:
            log.error("interrupted; cannot read the live colour to restore it: %s", exc)
            return
        if live != plan.to_color:
            # Not flipped (or already back): only the declared colour may need to follow.
            if self.t.switch.mode == "direct" or plan.path != "automation":
                with contextlib.suppress(ConfigError, OSError):
                    set_active_color_in_file(self.t.project_dir, self.t.stack, live)
            return
        if not recorded:
            self._record_safely(lb, plan.from_color, plan.to_color, reason, False, 0, result)
        self._switch_back(lb, plan, "interrupted", result)
        self._record_safely(lb, plan.to_color, plan.from_color, "automatic switch back: interrupted",
                            True, 0, result)

    def _record_safely(self, lb: Executor, from_color: str, to_color: str, reason: str, emergency_: bool,
                       duration_ms: int, result: SwitchResult) -> None:
        """Record a flip that happened; if the journal cannot take it, the side file does (the next
        normal command folds it in) and the result says so: the flip stands, the error is real."""
        try:
            self._record_switch(lb, from_color, to_color, reason, emergency_, duration_ms)
            return
        except BlueGreenError as exc:
            problem = f"the switch to {to_color} happened but the journal write failed: {exc}"
        entry = em.switch_entry(from_color=from_color, to_color=to_color, when=time.time(),
                                       who=self.who, reason=reason, duration_ms=duration_ms,
                                       preempted=None, path=result.path)
        journal = self.t.load_balancer.path(self.t.journal.path)
        try:
            lb.run(em.append_side_command(journal, json.dumps(entry, separators=(",", ":"))),
                   step="record the switch in the side journal")
            problem += f"; recorded in {em.side_path(journal)} instead"
        except BlueGreenError as exc:
            problem += f"; the side journal could not take it either: {exc}"
        log.error("%s", problem)
        result.ok = False
        result.error = f"{result.error}; {problem}" if result.error else problem

    def _switch_back(self, lb: Executor, plan: SwitchPlan, why: str, result: SwitchResult) -> None:
        self.progress.note(f"switching back to {plan.from_color}: {why}")
        with self.progress.step(f"automatic switch back to {plan.from_color}"):
            self._flip(lb, plan.from_color, "direct" if plan.path == "automation" else plan.path)
        result.ok = False
        result.rolled_back = True
        result.error = f"switched back to {plan.from_color}: {why}"

    def _record_switch(self, lb: Executor, from_color: str, to_color: str, reason: str, emergency: bool,
                       duration_ms: int) -> None:
        state = self._read_state(lb).with_switch(
            from_color=from_color, to_color=to_color, who=self.who, when=iso(utcnow()), reason=reason,
            emergency=emergency, duration_ms=duration_ms, keep=self.t.journal.history_keep)
        self._write_state(lb, state, to_color)

    def rollback(self, *, emergency: bool = False, direct: bool = False,
                 watch: bool = False) -> SwitchResult:
        """Back to the colour that was live before the last switch (it still runs its release)."""
        if emergency:
            return self._emergency(rollback=True, to_color=None)  # needs no readable journal
        with self.pooled(), self._on(self.t.load_balancer) as lb:
            live = self.live_color(lb)
            state = self._read_state(lb)
        previous = state.previous_live(live) or other_color(live)
        if previous == live:
            raise SwitchError(f"nothing to roll back to: {live} is live and was live before")
        return self.switch(emergency=emergency, direct=direct, watch=watch, to_color=previous,
                           reason="rollback")

    def _flip(self, lb: Executor, color: str, path: str) -> None:
        t = self.t
        if path == "automation":
            from .pulumi_seam import PulumiSeam

            seam = PulumiSeam(t.project_dir, t.stack, pulumi_command=self.pulumi_command)
            try:
                seam.switch_to(color, on_output=lambda line: log.info("pulumi: %s", line.rstrip()))
                live = self.live_color(lb)
                if live != color:
                    raise SwitchError(f"pulumi up finished but HAProxy still routes to {live}")
            except BaseException as exc:
                # `config set` already declared `color`: make the stack file say what HAProxy
                # serves, or the next routine `pulumi up` flips production with no checks.
                with em.signals_deferred():
                    live = self._restore_declared(lb, previous=t.active_color)
                if live == color and not isinstance(exc, KeyboardInterrupt):
                    log.warning("pulumi failed after the routing changed (%s); the flip stands", exc)
                    self.t = dataclasses.replace(t, active_color=color)
                    return
                raise
            self.t = dataclasses.replace(t, active_color=color)
            return
        try:
            haproxy_runtime.flip(lb, t, color)
        except RemoteError as exc:
            # HAProxy can take a `set map` and lose the answer when busy: the flip is idempotent,
            # so one more try either confirms it (and writes the map file) or fails for real.
            log.warning("flip to %s: %s; trying once more", color, exc)
            haproxy_runtime.flip(lb, t, color)
        # The declared colour follows the runtime flip, so a later `pulumi up` changes nothing.
        set_active_color_in_file(t.project_dir, t.stack, color)
        self.t = dataclasses.replace(t, active_color=color)

    def _restore_declared(self, lb: Executor, *, previous: str) -> str:
        """The stack file's declared colour set to the one HAProxy serves (else back to `previous`)."""
        try:
            live = self.live_color(lb)
        except BlueGreenError as exc:
            log.error("cannot read the live colour (%s); declaring %s again", exc, previous)
            live = previous
        set_active_color_in_file(self.t.project_dir, self.t.stack, live)
        self.t = dataclasses.replace(self.t, active_color=live)
        return live

    def _verify_serving(self, color: str, attempts: int = 5) -> bool:
        url = f"{self.t.public_url}{self.t.app.health_path}"
        for _ in range(attempts):
            probe = health.http_probe(url, headers={"Connection": "close"}, **health.visitor(self.t),
                                      expect_status=self.t.app.health_status)
            if probe.ok and probe.served_by == color:
                return True
            time.sleep(0.1)
        return False

    def _watch(self, lb: Executor, color: str, result: SwitchResult) -> str | None:
        """Watch the new live backend; return why it breached, or None if it held."""
        t = self.t
        host = t.app_host(color)
        window = health.ErrorWindow(max_ratio=t.switch.max_error_ratio, min_requests=t.switch.min_requests)
        started = time.monotonic()
        baseline = haproxy_runtime.backend_counters(lb, t, color)
        failures = 0
        with self.progress.step(f"watch {color} for {t.switch.watch_seconds:g}s", long=True):
            while time.monotonic() - started < t.switch.watch_seconds:
                self._check_lock()  # pre-empted (an emergency flip): stop, never switch back over it
                probe = health.http_probe(f"http://{host.ip}:{t.app.port}{t.app.health_path}",
                                          expect_status=t.app.health_status)
                failures = 0 if probe.ok else failures + 1
                if failures >= 3:
                    result.watched_s = time.monotonic() - started
                    return f"{color} failed 3 health checks in a row ({probe.error or probe.status})"
                counters = haproxy_runtime.backend_counters(lb, t, color)
                total = counters.total - baseline.total
                errors = counters.http_5xx - baseline.http_5xx
                verdict = window.breach(total=total, errors=errors)
                if verdict:
                    result.watched_s = time.monotonic() - started
                    return f"{color} answered errors: {verdict}"
                time.sleep(0.5)
        result.watched_s = time.monotonic() - started
        return None

    # -- rebuild, snapshots -------------------------------------------------------------

    def rollback_snapshot(self) -> dict[str, Any]:
        """Restore the standby container from its newest deploy snapshot."""
        with self._holding("rollback --snapshot"), self._on(self.t.load_balancer) as lb:
            standby = other_color(self.live_color(lb))
            vmid = self.t.app_host(standby).vmid
            client = self._pve()
            ours = [s for s in client.snapshots(vmid) if s.name.startswith("bluegreen-")]
            if not ours:
                raise ProxmoxError(f"CT {vmid} ({standby}) has no bluegreen snapshot to restore")
            newest = ours[-1]  # snapshots() is oldest first, ties broken by parent links
            with self.progress.step(f"restore CT {vmid} from snapshot {newest.name}", long=True):
                client.rollback(vmid, newest.name)
            return {"ok": True, "colour": standby, "vmid": vmid, "snapshot": newest.name}

    def rebuild_standby(self) -> dict[str, Any]:
        """Replace the standby container from scratch, configure it, deploy the live release."""
        from .pulumi_seam import PulumiSeam

        t = self.t
        with self._on(t.load_balancer) as lb:
            live = self.live_color(lb)
        standby = other_color(live)
        live_host = t.app_host(live)
        with self._on(live_host) as ex:
            out = ex.run(cmd.read_current(cmd.AppPaths.of(t, live_host)), step="read release").stdout
        sha = cmd.parse_current(out).sha
        if not sha:
            raise SwitchError(f"the live colour {live} serves no release to copy")
        seam = PulumiSeam(t.project_dir, t.stack, pulumi_command=self.pulumi_command)
        with self.progress.step(f"replace CT {t.app_host(standby).vmid} ({standby})", long=True):
            seam.replace_container(t.app_host(standby).vmid,
                                   on_output=lambda line: log.info("pulumi: %s", line.rstrip()))
        result = self.deploy(sha, migrate=False, snapshot=False)
        return {"ok": result.ok, "colour": standby, "release": result.release, "sha": result.sha}


# ------------------------------------------------------------------------ deploy run


class _DeployRun:
    """One deploy to the standby: each step recorded, so a failure can be undone precisely."""

    def __init__(self, service: Service, lb: Executor, color: str, ref: str,
                 result: DeployResult) -> None:
        self.s = service
        self.t = service.t
        self.lb = lb
        self.color = color
        self.host = self.t.app_host(color)
        self.paths = cmd.AppPaths.of(self.t, self.host)
        self.ref = ref
        self.result = result
        self.step_name = "start"
        self.failure: BlueGreenError | None = None
        self.release: str | None = None
        self.previous: str | None = None
        self.pointed = False
        self.reloaded = False

    @contextlib.contextmanager
    def step(self, name: str, *, long: bool = False) -> Iterator[None]:
        self.step_name = name
        try:
            self.s._check_lock()  # a lock lost (broken, pre-empted) stops the deploy here
            with self.s.progress.step(name, long=long):
                yield
        except BlueGreenError as exc:
            self.failure = exc
            raise

    def execute(self, *, migrate: bool, allow_destructive: bool, snapshot: bool) -> None:
        t, paths, r = self.t, self.paths, self.result
        if snapshot:
            with self.step(f"snapshot CT {self.host.vmid}", long=True):
                r.snapshot = self._snapshot()
        with self.s._on(self.host) as ex:
            self._convert_layout(ex)
            with self.step(f"fetch {self.ref}", long=True):
                out = ex.run(cmd.fetch_ref(t, paths, self.ref), step="fetch", check=False)
                if out.exit_code != 0:
                    detail = out.stderr.strip()
                    if not detail:
                        raise ConfigError(f"unknown git ref {self.ref!r} in {t.app.repo}")
                    raise RemoteError(self.host.label, "fetch", detail)
                sha = out.stdout.strip().splitlines()[-1]
                r.sha = sha
                current = cmd.parse_current(ex.run(cmd.read_current(paths), step="read release").stdout)
                self.previous = current.path
                r.previous_release = current.name
                name = cmd.release_name(sha, utcnow())
                self.release = paths.release(name)
                r.release = name
                ex.run(cmd.export_release(paths, self.release, sha, self.ref), step="export release")
            with self.step("install dependencies", long=True):
                out = ex.run(cmd.install_dependencies(t, paths, self.release, self.previous),
                             step="install dependencies")
                r.dependencies = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else None
            with self.step("build", long=True):
                ex.run(cmd.build(t, self.release), step="build")
            with self.step("migrations"):
                self._migrations(ex, migrate=migrate, allow_destructive=allow_destructive)
            with self.step("point current at the new release"):
                ex.run(cmd.point_current(paths, self.release), step="point current")
                self.pointed = True
            with self.step(f"reload PM2 on {self.color}"):
                self.reloaded = True
                self._replace_hand_started(ex)
                ex.run(cmd.pm2_reload(t, paths), step="pm2 reload")
            with self.step(f"wait for health on {self.color}", long=True):
                self._wait_healthy(sha)
            with self.step("smoke test through the preview frontend", long=True):
                self._smoke(sha)
            with self.step("prune old releases"):
                ex.run(cmd.prune_releases(paths, t.app.keep_releases,
                                          [self.release, self.previous or ""]),
                       step="prune releases")

    def _convert_layout(self, ex: Executor) -> None:
        """The first deploy to a host still kept by hand (working copy, .env, hand-started PM2)
        moves it to the release layout; see convert.py."""
        from .convert import convert_host, needs_conversion_command

        if not ex.run(needs_conversion_command(self.paths), step="look for the old layout", check=False).ok:
            return
        with self.step(f"convert {self.color} to the release layout"):
            done = convert_host(self.t, self.host, ex, live_color=other_color(self.color))
            for change in done.changes:
                logging.getLogger("bluegreen.convert").info("%s: %s", self.host.label, change)

    def _replace_hand_started(self, ex: Executor) -> None:
        from .convert import replace_hand_started

        for change in replace_hand_started(self.t, self.host, ex):
            logging.getLogger("bluegreen.convert").info("%s: %s", self.host.label, change)

    def _snapshot(self) -> str:
        client = self.s._pve()
        name = snapshot_name(f"{self.color}-{self.ref}", utcnow())
        client.snapshot(self.host.vmid, name, f"before deploy of {self.ref} by {self.s.who}")
        client.prune_snapshots(self.host.vmid, keep=self.t.proxmox.snapshot_keep)
        return name

    def _migrations(self, ex: Executor, *, migrate: bool, allow_destructive: bool) -> None:
        t = self.t
        assert self.release is not None
        names = ex.run(cmd.list_migrations(self.release), step="list migrations").stdout.split()
        with self.s._on(t.database_host) as db:
            rows = self.s._applied_rows(db)
            blocked = migrations.failed(rows)
            if blocked:
                raise DeployError("migrations", f"migration {blocked[0].name} failed earlier and blocks "
                                  "every later one (Prisma P3009); resolve it with `prisma migrate resolve` first")
            pending = migrations.pending(names, rows)
            if not pending:
                self.s.progress.note("no pending migrations")
                return
            if not migrate:
                raise DeployError("migrations", f"{len(pending)} migration(s) pending ({', '.join(pending)}); "
                                  "run the deploy with --migrate to back up the database and apply them")
            findings: list[migrations.Finding] = []
            for name in pending:
                sql = ex.get(f"{self.release}/prisma/migrations/{name}/migration.sql", step="read migration")
                findings += migrations.analyze(name, (sql or b"").decode(errors="replace"))
            if findings and not allow_destructive:
                raise DeployError("migrations", migrations.explain(findings))
            target = cmd.backup_path(t, t.database_host, self.color, self.result.sha or "unknown", utcnow())
            with self.s.progress.step("back up the database", long=True):
                db.run(cmd.dump_database(t, t.database_host, target), step="back up the database")
                self.result.backup = target
                db.run(cmd.prune_backups(t, t.database_host), step="prune backups")
        with self.s.progress.step(f"apply {len(pending)} migration(s)", long=True):
            ex.run(cmd.migrate(t, self.release), step="migrate")
        self.result.migrations_applied = pending

    def _wait_healthy(self, sha: str) -> None:
        t = self.t
        url = f"http://{self.host.ip}:{t.app.port}{t.app.health_path}"
        result = health.poll(lambda: _expect_commit(health.http_probe(url, expect_status=t.app.health_status),
                                                    sha),
                             deadline_s=t.app.health_timeout, interval_s=0.5)
        if not result.ok:
            raise DeployError("health", f"{self.color} did not become healthy on {sha[:7]} within "
                              f"{t.app.health_timeout:g}s: {result.error or result.status}", color=self.color)

    def _smoke(self, sha: str) -> None:
        t = self.t
        url = f"{t.preview_url}{t.app.health_path}"

        def probe() -> health.ProbeResult:
            res = _expect_commit(health.http_probe(url, headers={"Connection": "close"}, **health.visitor(t),
                                                   expect_status=t.app.health_status), sha)
            if res.ok and res.served_by != self.color:
                return health.ProbeResult(ok=False, status=res.status, latency_ms=res.latency_ms,
                                          body=res.body, error=f"served by {res.served_by}",
                                          served_by=res.served_by)
            return res

        result = health.poll(probe, deadline_s=max(10.0, t.app.health_timeout / 2), interval_s=0.5)
        if not result.ok:
            raise DeployError("smoke test", f"the preview frontend {t.preview_url} did not serve "
                              f"{self.color} at {sha[:7]}: {result.error or result.status}", color=self.color)

    def restore(self) -> None:
        """Put the standby back on its previous release; the live colour was never touched."""
        t, paths = self.t, self.paths
        try:
            with self.s._on(self.host) as ex:
                if self.pointed:
                    if self.previous:
                        ex.run(cmd.point_current(paths, self.previous), step="restore current")
                    else:
                        ex.run(f"rm -f {cmd.sh(paths.current)}", step="restore current")
                if self.reloaded:
                    if self.previous:
                        ex.run(cmd.pm2_reload(t, paths), step="reload previous release")
                    else:
                        ex.run(cmd.pm2_stop(t, paths), step="stop failed first release")
                if self.release:
                    ex.run(cmd.remove_release(self.release), step="remove failed release")
        except BlueGreenError as exc:
            log.error("could not fully restore %s: %s", self.host.label, exc)
            self.result.error = f"{self.result.error}; restoring the previous release also failed: {exc}"


COMMIT_NOT_REPORTED = "commit not reported"


def reported_commit(probe: health.ProbeResult) -> str | None:
    """The commit a health answer reports; COMMIT_NOT_REPORTED when it answers without one (an
    app whose health path is its home page); None when there was no healthy answer."""
    if not probe.ok:
        return None
    data = probe.json()
    commit = data.get("commit") if isinstance(data, dict) else None
    return str(commit) if commit else COMMIT_NOT_REPORTED


def _expect_commit(probe: health.ProbeResult, sha: str) -> health.ProbeResult:
    """Healthy and on `sha`; an answer that reports no commit passes (nothing to compare)."""
    if not probe.ok:
        return probe
    data = probe.json()
    commit = data.get("commit") if isinstance(data, dict) else None
    if commit and commit != sha:
        return health.ProbeResult(ok=False, status=probe.status, latency_ms=probe.latency_ms,
                                  body=probe.body, error=f"still serving {str(commit)[:7]}",
                                  served_by=probe.served_by)
    return probe


def _pm2_summary(raw: str) -> list[dict[str, Any]]:
    """Only what status needs from `pm2 jlist`: its env holds every secret, never pass it on."""
    start = raw.find("[")
    try:
        items = json.loads(raw[start:]) if start >= 0 else []
    except ValueError:
        return [{"error": "unreadable pm2 jlist output"}]
    summary = []
    for item in items if isinstance(items, list) else []:
        env = item.get("pm2_env", {}) if isinstance(item, dict) else {}
        summary.append({"name": item.get("name"), "id": item.get("pm_id"), "pid": item.get("pid"),
                        "status": env.get("status"), "restarts": env.get("restart_time"),
                        "uptimeSince": env.get("pm_uptime"),
                        "memory": (item.get("monit") or {}).get("memory")})
    return summary


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return value


__all__ = ["ColorStatus", "DeployPlan", "DeployResult", "LockedError", "Service", "StatusReport",
           "SwitchPlan", "SwitchResult"]
