"""`bluegreen status`, `history` and `lock`: what the estate is doing, read from every host at once.

Status never changes anything. Each part (load balancer, each colour, the database, Proxmox) is
read on its own thread and fails on its own: an unreachable host is reported in the result, not
raised, so the report is always whole.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bluegreen.hosts import haproxy, health
from bluegreen.hosts.database import applied_rows, last_good_summary
from bluegreen.hosts.executor import CommandResult, DelegatingExecutor
from bluegreen.model import migrations
from bluegreen.model.errors import BlueGreenError, ConfigError
from bluegreen.model.journal import State
from bluegreen.model.topology import other_color
from bluegreen.ops.emergency import reconcile_command
from bluegreen.ops.estate import Estate
from bluegreen.ops.reconcile import read_truth
from bluegreen.render import commands as cmd
from bluegreen.render import workingcopy


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
    working_copy: workingcopy.WorkingCopy | None = None  # the team's git working copy beside the releases

    def to_json(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "workingCopy": self.working_copy.to_json() if self.working_copy else None,
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
    truth: dict[str, Any] | None = None  # runtime map vs map file vs journal (model.truth)

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack, "live": self.live, "declared": self.declared,
            "standby": self.standby, "drift": self.drift, "reconcile": self.reconcile,
            "liveTruth": self.truth,
            "colors": {c: s.to_json() for c, s in self.colors.items()},
            "database": self.database, "lastSwitch": self.last_switch,
            "switchCount": self.switch_count, "lock": self.lock, "endpoints": self.endpoints,
            "proxmox": self.proxmox, "errors": self.errors,
        }


# Every probe is bounded: one command on a host gets PROBE_TIMEOUT_S, PostgreSQL a connect and
# a statement timeout of DB_TIMEOUT_S, and the whole report STATUS_DEADLINE_S: a part that has
# not answered by then is reported as such, and its thread (a daemon) is left behind.
PROBE_TIMEOUT_S = 5.0
DB_TIMEOUT_S = 3
STATUS_DEADLINE_S = 10.0


class _Part:
    """One part of the report, read on a daemon thread: a hung host never holds the report (or
    the process: SIGINT/SIGTERM end `status` at once) past the deadline."""

    def __init__(self, name: str, read: Callable[[], Any]) -> None:
        self.name = name
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(read,), daemon=True, name=f"status-{name}")
        self.thread.start()

    def _run(self, read: Callable[[], Any]) -> None:
        try:
            self.value = read()
        except BaseException as exc:  # reported in the result, like every part's failure
            self.error = exc

    def result(self, deadline: float, fallback: Callable[[str], Any]) -> Any:
        while self.thread.is_alive() and time.monotonic() < deadline:
            self.thread.join(0.1)
        if self.thread.is_alive():
            return fallback(f"{self.name}: no answer within {STATUS_DEADLINE_S:g}s")
        if self.error is not None:
            return fallback(f"{self.name}: {self.error}")
        return self.value


def _reader(read: Callable[[Estate, str], Any], estate: Estate, color: str) -> Callable[[], Any]:
    return lambda: read(estate, color)


def _unanswered_color(estate: Estate, color: str) -> Callable[[str], ColorStatus]:
    host = estate.t.app_host(color)
    return lambda why: ColorStatus(color=color, host=host.ip, vmid=host.vmid, errors=[why])


def status(estate: Estate, *, deadline_s: float = STATUS_DEADLINE_S) -> StatusReport:
    t = estate.t
    deadline = time.monotonic() + deadline_s
    lb_part = _Part("load balancer", lambda: load_balancer_status(estate))
    color_parts = {c: _Part(f"{c} app host", _reader(color_status, estate, c)) for c in t.app_hosts}
    db_part = _Part("database", lambda: database_status(estate))
    pve_part = _Part("Proxmox", lambda: proxmox_status(estate))
    lb = lb_part.result(deadline, lambda why: {"live": None, "servers": {}, "state": None, "lock": None,
                                               "truth": None, "errors": [why]})
    colors: dict[str, ColorStatus] = {c: part.result(deadline, _unanswered_color(estate, c))
                                      for c, part in color_parts.items()}
    database = db_part.result(deadline, lambda why: {"host": t.database_host.ip, "reachable": False,
                                                     "applied": 0, "pending": [], "failed": [], "error": why})
    proxmox = pve_part.result(deadline, lambda why: {"error": why, "containers": {}})
    errors = list(lb["errors"])
    for state in colors.values():
        state.haproxy = lb["servers"].get(state.color)
        if proxmox and not proxmox.get("error"):
            state.proxmox = proxmox["containers"].get(str(state.vmid))
    journal: State | None = lb["state"]
    report = StatusReport(
        stack=t.stack, live=lb["live"], declared=t.active_color, colors=colors, database=database,
        last_switch=journal.last_switch if journal else None,
        switch_count=journal.switch_count if journal else 0,
        lock=lb["lock"], endpoints={"public": t.public_url, "preview": t.preview_url},
        proxmox=proxmox, errors=errors, truth=lb.get("truth"),
    )
    if report.drift and report.live:
        report.reconcile = reconcile_command(t, report.live)
    return report


def load_balancer_status(estate: Estate) -> dict[str, Any]:
    """The live colour, each colour backend's state, the journal and the lock, from HAProxy's host."""
    out: dict[str, Any] = {"live": None, "servers": {}, "state": None, "lock": None, "truth": None,
                           "errors": []}
    try:
        with estate.on(estate.t.load_balancer) as lb:
            lb = _Bounded(lb)
            truth = read_truth(estate, lb)
            out["live"] = truth.runtime
            out["truth"] = truth.to_json(estate.t.stack)
            out["servers"].update(haproxy.backend_states(lb, estate.t))
            out["state"] = estate.read_state(lb)
            lock = estate.lock(lb).status()
            out["lock"] = lock.to_json() if lock else None
    except BlueGreenError as exc:
        out["errors"].append(str(exc))
    return out


class _Bounded(DelegatingExecutor):
    """An executor whose every command gets PROBE_TIMEOUT_S (status never waits longer on one)."""

    def run(self, command: str, *, step: str, check: bool = True, timeout: float | None = None,
            input: str | None = None, env: Mapping[str, str] | None = None) -> CommandResult:
        return self.inner.run(command, step=step, check=check, timeout=min(timeout or PROBE_TIMEOUT_S,
                                                                             PROBE_TIMEOUT_S),
                              input=input, env=env)


def color_status(estate: Estate, color: str) -> ColorStatus:
    """One colour: its health answer, the release `current` points at, its PM2 processes."""
    t = estate.t
    host = t.app_host(color)
    result = ColorStatus(color=color, host=host.ip, vmid=host.vmid)
    probe = health.http_probe(f"http://{host.ip}:{t.app.port}{t.app.health_path}", timeout=3.0,
                              expect_status=t.app.health_status)
    result.healthy = probe.ok
    result.commit = health.reported_commit(probe)
    result.status_code = probe.status
    result.latency_ms = probe.latency_ms
    if probe.error and not probe.ok:
        result.errors.append(f"health: {probe.error}")
    paths = cmd.AppPaths.of(t, host)
    try:
        with estate.on(host) as raw:
            ex = _Bounded(raw)
            current = cmd.parse_current(ex.run(cmd.read_current(paths), step="read release").stdout)
            result.reachable = True
            result.release, result.sha, result.ref = current.name, current.sha, current.ref
            jlist = ex.run(cmd.pm2_jlist(t, paths), step="pm2 jlist", check=False).stdout
            result.pm2 = pm2_summary(jlist)
            result.working_copy = read_working_copy(ex, paths)
    except BlueGreenError as exc:
        result.errors.append(str(exc))
    return result


def read_working_copy(ex: Any, paths: cmd.AppPaths) -> workingcopy.WorkingCopy:
    """The working copy's branch, how far it is ahead of or behind its upstream (as of its last
    fetch: status fetches nothing) and the work only it holds. Read-only."""
    out = ex.run(workingcopy.report_command(paths), step="read the working copy", check=False)
    found = workingcopy.parse_report(paths.working_copy, out.stdout)
    if found.state == "unreadable" and out.stderr.strip():
        return workingcopy.WorkingCopy(path=paths.working_copy, state="unreadable",
                                       error=out.stderr.strip().splitlines()[-1])
    return found


def database_status(estate: Estate) -> dict[str, Any]:
    """Applied, pending and failed migrations, and the last good dump."""
    t = estate.t
    out: dict[str, Any] = {"host": t.database_host.ip, "reachable": False, "applied": 0, "pending": [],
                           "failed": [], "error": None}
    try:
        with estate.on(t.database_host) as raw:
            ex = _Bounded(raw)
            rows = applied_rows(t, ex, timeout_s=DB_TIMEOUT_S)
            out["reachable"] = True
            out["applied"] = len([r for r in rows if r.finished_at])
            out["failed"] = [r.name for r in migrations.failed(rows)]
            out["lastGoodDump"] = last_good_summary(t, ex)
        live_host = t.app_host(t.active_color)
        with estate.on(live_host) as raw:
            ex = _Bounded(raw)
            paths = cmd.AppPaths.of(t, live_host)
            names = ex.run(cmd.list_migrations(paths.current), step="list migrations").stdout.split()
        out["pending"] = migrations.pending(names, rows)
    except BlueGreenError as exc:
        out["error"] = str(exc)
    return out


def proxmox_status(estate: Estate) -> dict[str, Any] | None:
    """Each container's state as Proxmox reports it."""
    try:
        states = estate.pve().statuses([c.vmid for c in estate.t.containers])
    except BlueGreenError as exc:
        return {"error": str(exc), "containers": {}}
    return {"node": estate.t.proxmox.node, "error": None,
            "containers": {str(vmid): s.to_json() for vmid, s in states.items()}}


def history(estate: Estate, limit: int = 20) -> list[dict[str, Any]]:
    if limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    # Entries quote what hosts printed, maybe before their secrets were scrubbed at write time.
    estate.learn_secrets()
    with estate.on(estate.t.load_balancer) as lb:
        return estate.journal(lb).recent(limit)


def lock_status(estate: Estate) -> dict[str, Any] | None:
    with estate.on(estate.t.load_balancer) as lb:
        lock = estate.lock(lb).status()
        return lock.to_json() if lock else None


def lock_release(estate: Estate, *, force: bool) -> dict[str, Any] | None:
    if not force:
        raise ConfigError("releasing someone else's lock needs --force")
    with estate.on(estate.t.load_balancer) as lb:
        released = estate.lock(lb).force_release()
        return released.to_json() if released else None


def pm2_summary(raw: str) -> list[dict[str, Any]]:
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
