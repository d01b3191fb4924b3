"""Metrics, scraped and parsed as Prometheus would: HAProxy's own exporter on the load balancer, and
the tool's textfile (node_exporter's textfile collector format) written after deploys and switches.

Parsing uses prometheus_client's parser, so whatever it accepts Prometheus accepts too.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bluegreen.hosts.executor import connect
from bluegreen.hosts.health import http_probe, visitor
from bluegreen.lab.lab import Lab
from bluegreen.model.journal import parse_state
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import Topology, other_color
from bluegreen.ops.deploy import deploy
from bluegreen.ops.estate import Estate
from bluegreen.ops.switch import switch
from tests.integration.support import copy_project, live_color, retry_locked

from .test_deploy import estate  # noqa: F401

pytestmark = pytest.mark.integration

STACK = "lab"
COLOUR_BACKENDS = {"bk_blue", "bk_green"}


@pytest.fixture(scope="module")
def project(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(lab.project_dir, tmp_path_factory.mktemp("metrics-project"))


def topology(project: Path) -> Topology:
    return load_stack(project, STACK)


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def scrape(t: Topology) -> list[Sample]:
    url = f"http://{t.private_ip}:{t.haproxy.stats_port}/metrics"
    response = httpx.get(url, timeout=5.0, trust_env=False)
    assert response.status_code == 200, f"{url}: HTTP {response.status_code}"
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return samples(response.text)


def value(found: list[Sample], name: str, **labels: str) -> float:
    matches = [s.value for s in found
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, f"expected one {name}{labels}, found {len(matches)}"
    return float(matches[0])


def get_public(t: Topology, count: int) -> list[tuple[int | None, str | None]]:
    answers = []
    for _ in range(count):
        # As a visitor: HTTPS, verified against the stack's CA (port 80 only redirects).
        probe = http_probe(f"{t.public_url}{t.app.health_path}", headers={"Connection": "close"},
                           timeout=5, **visitor(t))
        answers.append((probe.status, probe.served_by))
    return answers


def test_exporter_lists_both_colour_backends_with_the_series_the_dashboards_use(lab: Lab) -> None:
    found = scrape(lab.topology)
    for name in ("haproxy_backend_http_responses_total", "haproxy_backend_status",
                 "haproxy_backend_active_servers", "haproxy_backend_current_sessions"):
        proxies = {s.labels.get("proxy") for s in found if s.name == name}
        assert proxies >= COLOUR_BACKENDS, f"{name} lacks {COLOUR_BACKENDS - proxies}"
    codes = {s.labels["code"] for s in found
             if s.name == "haproxy_backend_http_responses_total" and s.labels.get("proxy") == "bk_blue"}
    assert {"2xx", "5xx"} <= codes, codes
    for backend in COLOUR_BACKENDS:
        states = {s.labels["state"]: s.value for s in found
                  if s.name == "haproxy_backend_status" and s.labels.get("proxy") == backend}
        assert sum(states.values()) == 1, f"{backend} should be in exactly one state: {states}"


def test_exporter_counts_live_traffic_on_the_live_colours_backend(estate: Lab, project: Path) -> None:  # noqa: F811
    # `estate`: both colours serve a release, whatever ran before in this lab.
    t = topology(project)
    live = live_color(t)
    before = scrape(t)
    answers = get_public(t, 30)
    after = scrape(t)
    served = [colour for status, colour in answers if status == 200]
    assert served, f"the public frontend answered nothing useful: {answers}"
    # Another session may switch meanwhile: count what each colour really answered.
    for colour in {live, other_color(live)}:
        grew = (value(after, "haproxy_backend_http_responses_total", proxy=f"bk_{colour}", code="2xx")
                - value(before, "haproxy_backend_http_responses_total", proxy=f"bk_{colour}", code="2xx"))
        assert grew >= served.count(colour), f"bk_{colour}: {grew} 2xx counted, {served.count(colour)} served"
    assert value(after, "haproxy_backend_status", proxy=f"bk_{live}", state="UP") == 1


def test_textfile_after_deploy_and_switch_parses_and_names_the_live_colour(lab: Lab, project: Path) -> None:
    t = topology(project)
    started = time.time()
    deployed = retry_locked(lambda: deploy(Estate(topology(project)), "main", migrate=True, snapshot=False))
    switched = retry_locked(lambda: switch(Estate(topology(project)), watch=False))
    assert switched.ok and switched.color == deployed.color, switched.to_json()

    lb = t.load_balancer
    with connect(t, lb) as ex:
        text = (ex.get(lb.path(t.journal.metrics_path), step="read the metrics textfile") or b"").decode()
        journal = parse_state((ex.get(lb.path(t.journal.path), step="read the journal") or b"").decode(),
                              source="state.json")
    assert text, f"no metrics textfile at {lb.path(t.journal.metrics_path)}"
    found = samples(text)
    assert all(s.name.startswith("bluegreen_") for s in found), {s.name for s in found}

    live = {s.labels["color"]: s.value for s in found if s.name == "bluegreen_live_color"}
    assert live == {switched.color: 1.0, switched.from_color: 0.0}, live
    assert value(found, "bluegreen_switch_total") == journal.switch_count
    assert value(found, "bluegreen_last_switch_timestamp_seconds") >= int(started)
    assert value(found, "bluegreen_last_deploy_success", color=deployed.color) == 1
    assert value(found, "bluegreen_deploys_total", color=deployed.color, result="ok") >= 1
    assert value(found, "bluegreen_metrics_generated_timestamp_seconds") >= started
