"""`bluegreen status`, `history` and `lock`: what the estate is doing, read from every host at once.

Status never changes anything. Each part (load balancer, each colour, the database, Proxmox) is
read on its own thread and fails on its own: an unreachable host is reported in the result, not
raised, so the report is always whole.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bluegreen.hosts import haproxy, health
from bluegreen.hosts.database import applied_rows, last_good_summary
from bluegreen.model import migrations
from bluegreen.model.errors import BlueGreenError, ConfigError
from bluegreen.model.journal import State
from bluegreen.model.topology import other_color
from bluegreen.ops.emergency import reconcile_command
from bluegreen.ops.estate import Estate
from bluegreen.render import commands as cmd


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


def status(estate: Estate) -> StatusReport:
    t = estate.t
    with ThreadPoolExecutor(max_workers=6) as pool:
        lb_future = pool.submit(load_balancer_status, estate)
        color_futures = {c: pool.submit(color_status, estate, c) for c in t.app_hosts}
        db_future = pool.submit(database_status, estate)
        pve_future = pool.submit(proxmox_status, estate)
        lb = lb_future.result()
        colors = {c: f.result() for c, f in color_futures.items()}
        database = db_future.result()
        proxmox = pve_future.result()
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
        proxmox=proxmox, errors=errors,
    )
    if report.drift and report.live:
        report.reconcile = reconcile_command(t, report.live)
    return report


def load_balancer_status(estate: Estate) -> dict[str, Any]:
    """The live colour, each colour backend's state, the journal and the lock, from HAProxy's host."""
    out: dict[str, Any] = {"live": None, "servers": {}, "state": None, "lock": None, "errors": []}
    try:
        with estate.on(estate.t.load_balancer) as lb:
            out["live"] = estate.live_color(lb)
            out["servers"].update(haproxy.backend_states(lb, estate.t))
            out["state"] = estate.read_state(lb)
            lock = estate.lock(lb).status()
            out["lock"] = lock.to_json() if lock else None
    except BlueGreenError as exc:
        out["errors"].append(str(exc))
    return out


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
        with estate.on(host) as ex:
            current = cmd.parse_current(ex.run(cmd.read_current(paths), step="read release").stdout)
            result.reachable = True
            result.release, result.sha, result.ref = current.name, current.sha, current.ref
            raw = ex.run(cmd.pm2_jlist(t, paths), step="pm2 jlist", check=False).stdout
            result.pm2 = pm2_summary(raw)
    except BlueGreenError as exc:
        result.errors.append(str(exc))
    return result


def database_status(estate: Estate) -> dict[str, Any]:
    """Applied, pending and failed migrations, and the last good dump."""
    t = estate.t
    out: dict[str, Any] = {"host": t.database_host.ip, "reachable": False, "applied": 0, "pending": [],
                           "failed": [], "error": None}
    try:
        with estate.on(t.database_host) as ex:
            rows = applied_rows(t, ex)
            out["reachable"] = True
            out["applied"] = len([r for r in rows if r.finished_at])
            out["failed"] = [r.name for r in migrations.failed(rows)]
            out["lastGoodDump"] = last_good_summary(t, ex)
        live_host = t.app_host(t.active_color)
        with estate.on(live_host) as ex:
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
        return estate.read_state(lb).recent(limit)


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
