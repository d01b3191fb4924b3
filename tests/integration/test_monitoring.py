"""Monitoring on the real lab: Prometheus (Debian's package) scraping HAProxy's exporter, a node
exporter per host and the blackbox probes; the alert rules and dashboard that ship, proven against
what it collects; and the webhook receiver getting one event per operation.

Each test works on a private copy of the stack files (switches record the live colour there).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bluegreen.hosts import haproxy as haproxy_runtime
from bluegreen.hosts import health
from bluegreen.lab.lab import Lab
from bluegreen.lab.monitoring import events_record, start_monitoring, stop_receiver
from bluegreen.lab.receiver import read_events
from bluegreen.model.progress import RecordingProgress, StepRecord
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import Topology, other_color
from bluegreen.ops.deploy import deploy
from bluegreen.ops.estate import Estate as Handle
from bluegreen.ops.rollback import rollback
from bluegreen.ops.switch import switch
from bluegreen.render import commands as cmd
from bluegreen.render.monitoring import haproxy_metrics_target
from bluegreen.render.shell import sh

from .support import LAB_STACK, copy_project, retry_locked

# Deploys and switches on two shared cores take minutes: the module fixture alone can pass 300 s.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PROJECT = Path(__file__).resolve().parents[2]
DASHBOARD = PROJECT / "monitoring" / "dashboards" / "bluegreen.json"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "10s", "$__range": "10m"}
EVENT_WAIT_S = 30.0


@dataclass
class Estate:
    lab: Lab
    project: Path

    def topology(self) -> Topology:
        return load_stack(self.project, LAB_STACK)

    def service(self, progress: RecordingProgress | None = None) -> Handle:
        return Handle(self.topology(), progress=progress)

    @property
    def prometheus(self) -> str:
        return f"http://{self.topology().monitoring.prometheus}"

    def live(self) -> str:
        t = self.topology()
        with self.lab.executor(t.load_balancer) as lb:
            return haproxy_runtime.live_color(lb, t)

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def events(self) -> list[dict[str, Any]]:
        return read_events(events_record(self.lab.paths.root))


def set_fault(estate: Estate, color: str, mode: str | None) -> None:
    t = estate.topology()
    host = t.app_host(color)
    fault = cmd.AppPaths.of(t, host).fault_file
    with estate.lab.executor(host) as ex:
        if mode:
            ex.put(fault, mode, step="plant fault")
        else:
            ex.run(f"rm -f {sh(fault)}", step="clear fault")


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s (last: {value!r})")
        time.sleep(every)


def backends_up(estate: Estate) -> bool:
    t = estate.topology()
    with estate.lab.executor(t.load_balancer) as lb:
        states = haproxy_runtime.backend_states(lb, t)
    return all(str((states.get(c) or {}).get("status", "")).upper().startswith("UP") for c in t.app_hosts)


@pytest.fixture(scope="module")
def estate(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    """The lab after a deploy, a switch and a deploy to the new standby (the demo's first three
    chapters): both colours serve a release, so later tests can switch either way."""
    project = copy_project(lab.project_dir, tmp_path_factory.mktemp("monitoring-project"))
    the = Estate(lab, project)
    retry_locked(lambda: deploy(the.service(), "v1", migrate=True))
    retry_locked(lambda: switch(the.service()))
    retry_locked(lambda: deploy(the.service(), "v2", migrate=True))
    yield the


def test_prometheus_reports_every_target_up(estate: Estate) -> None:
    t = estate.topology()
    expected = {("prometheus", t.monitoring.prometheus), ("haproxy", haproxy_metrics_target(t))}
    expected |= {("node", f"{c.ip}:{t.monitoring.node_exporter_port}") for c in t.containers}
    expected |= {("app_health", f"http://{c.ip}:{t.app.port}{t.app.health_path}") for c in t.app_hosts.values()}

    def targets() -> dict[tuple[str, str], str]:
        body = httpx.get(f"{estate.prometheus}/api/v1/targets", timeout=10).json()
        return {(x["labels"]["job"], x["labels"]["instance"]): x["health"] for x in body["data"]["activeTargets"]}

    wait_for("every target up", lambda: set(targets().items()) == {(k, "up") for k in expected}, 20)
    # The blackbox target being up only means the exporter answered: the live colour's probe passes too.
    live = estate.live()
    probes = wait_for("health probes", lambda: estate.query('probe_success{job="app_health"}'), 10)
    assert {p["metric"]["color"]: p["value"][1] for p in probes}[live] == "1"


def test_live_colour_query_follows_a_switch_within_two_scrape_intervals(estate: Estate) -> None:
    t = estate.topology()
    before = estate.live()
    result = retry_locked(lambda: switch(estate.service(), watch=False))
    switched = time.monotonic()
    assert result.ok and result.color == other_color(before)

    def live_in_prometheus() -> str | None:
        rows = estate.query("max by (color) (bluegreen_live_color) == 1")
        return rows[0]["metric"]["color"] if len(rows) == 1 else None

    deadline = 2 * t.monitoring.scrape_interval
    wait_for(f"Prometheus reporting {result.color} live", lambda: live_in_prometheus() == result.color,
             deadline - (time.monotonic() - switched), every=0.1)
    declared = estate.query("max by (color) (bluegreen_declared_color) == 1")
    assert [r["metric"]["color"] for r in declared] == [result.color]


def test_every_dashboard_query_parses_and_returns_data(estate: Estate) -> None:
    doc = json.loads(DASHBOARD.read_text())
    queries = [(p["title"], t["expr"]) for p in doc["panels"] for t in p["targets"]]
    queries += [(f"annotation {a['name']}", a["expr"]) for a in doc["annotations"]["list"]]
    end = time.time()
    empty, bad = [], []
    for title, expr in queries:
        for name, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(name, value)
        # As Grafana asks: a range query over the dashboard's window.
        response = httpx.get(f"{estate.prometheus}/api/v1/query_range", timeout=20,
                             params={"query": expr, "start": end - 600, "end": end, "step": "5"})
        body = response.json()
        if body.get("status") != "success":
            bad.append((title, expr, body.get("error")))
        elif not body["data"]["result"]:
            empty.append((title, expr))
    assert not bad, bad
    assert not empty, f"queries without data after a deploy and a switch: {empty}"


def test_injected_5xx_on_the_live_colour_fires_the_5xx_ratio_alert(estate: Estate) -> None:
    retry_locked(lambda: switch(estate.service(), watch=False))  # a recent switch: the alert's window
    live = estate.live()

    def firing() -> list[dict[str, Any]]:
        body = httpx.get(f"{estate.prometheus}/api/v1/alerts", timeout=10).json()
        return [a for a in body["data"]["alerts"]
                if a["labels"]["alertname"] == "BlueGreenLive5xxRatioHigh" and a["labels"].get("color") == live
                and a["state"] == "firing"]

    set_fault(estate, live, "5xx")
    try:
        url = f"{estate.topology().public_url}/"
        deadline = time.monotonic() + 120
        alerts: list[dict[str, Any]] = []
        t = estate.topology()  # a visitor's HTTPS: the certificate checked against the lab's CA
        with httpx.Client(timeout=5, verify=health.ssl_context(t.haproxy.ca_file),
                          headers={"Host": t.tls_server_name} if t.tls_server_name else None) as client:
            while time.monotonic() < deadline and not alerts:
                for _ in range(20):
                    client.get(url)
                time.sleep(0.2)
                alerts = firing()
        assert alerts, "BlueGreenLive5xxRatioHigh did not fire within 120 s of 5xx on the live colour"
        alert = alerts[0]
        assert alert["labels"]["severity"] == "critical" and alert["labels"]["proxy"] == f"bk_{live}"
        assert "bluegreen rollback --emergency" in alert["annotations"]["description"]
        assert float(alert["value"]) > 0.05
    finally:
        set_fault(estate, live, None)
        wait_for("both backends UP again", lambda: backends_up(estate), 30, every=0.5)


def test_the_receiver_gets_one_event_per_operation(estate: Estate) -> None:
    start = len(estate.events())
    svc = estate.service
    live = estate.live()
    retry_locked(lambda: deploy(svc(), "v1"))
    retry_locked(lambda: switch(svc(), watch=False))
    retry_locked(lambda: rollback(svc()))
    retry_locked(lambda: switch(svc(), emergency=True, watch=False))
    target = other_color(estate.live())

    def break_after_flip(event: str, record: StepRecord) -> None:
        # The new colour starts failing right after the flip: verification fails, the switch goes back.
        if event == "end" and record.name.startswith("flip live traffic"):
            set_fault(estate, target, "5xx")

    try:
        went_back = retry_locked(lambda: switch(svc(RecordingProgress(listener=break_after_flip))))
    finally:
        set_fault(estate, target, None)
    assert went_back.rolled_back
    expected = ["deploy", "switch", "rollback", "emergency-switch", "switch", "switch-back"]
    wait_for("six events", lambda: len(estate.events()) >= start + 6, EVENT_WAIT_S)
    time.sleep(2)  # nothing more arrives: one event per operation, retries do not duplicate
    got = estate.events()[start:]
    assert sorted(e["event"] for e in got) == sorted(expected), [e["event"] for e in got]
    by_kind = {e["event"]: e for e in got}
    deployed = by_kind["deploy"]
    assert deployed["ok"] and deployed["colour"] == other_color(live) and deployed["ref"] == "v1"
    assert deployed["sha"] and deployed["release"] and deployed["who"] and deployed["durationSeconds"] > 0
    assert by_kind["switch-back"]["to"] != by_kind["switch-back"]["from"]
    assert by_kind["emergency-switch"]["emergency"] is True
    assert len({e["id"] for e in got}) == 6
    switches = [e for e in got if e["event"] == "switch"]
    assert {e["result"] for e in switches} == {"ok", "switched-back"}
    assert all(e["sha"] for e in switches)
    token = (estate.lab.paths.root / "secrets" / "webhook-token").read_text().strip()
    assert token not in events_record(estate.lab.paths.root).read_text()
    wait_for("both backends UP again", lambda: backends_up(estate), 30, every=0.5)


def test_emergency_rollback_with_the_receiver_stopped_still_works(estate: Estate) -> None:
    lab = estate.lab
    start = len(estate.events())
    assert stop_receiver(lab.paths.root)
    try:
        before = estate.live()
        result = retry_locked(lambda: rollback(estate.service(), emergency=True))
        assert result.ok and result.color == other_color(before) and estate.live() == result.color
        time.sleep(3)  # the delivery process has given up by now (refused connections, 2 retries)
        assert len(estate.events()) == start
    finally:
        start_monitoring(lab.paths.root, lab.topology, lab.project_dir)
    assert lab.is_running()
