"""A deploy whose health gate is `/`, on an app without /api/health (the estate's app today)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from bluegreen.hosts import haproxy, haproxy_cli
from bluegreen.hosts.health import COMMIT_NOT_REPORTED, http_probe
from bluegreen.hosts.hostconfig import apply_haproxy_config
from bluegreen.lab.lab import Lab
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import HealthStatuses, Topology, other_color
from bluegreen.ops.deploy import deploy
from bluegreen.ops.estate import Estate
from bluegreen.ops.status import status
from bluegreen.render.haproxy import render_haproxy_cfg, render_live_map

pytestmark = pytest.mark.integration


def _apply_lb(lab: Lab, t: Topology) -> None:
    with lab.executor(t.load_balancer) as lb:
        live = haproxy.live_color(lb, t)
        apply_haproxy_config(lb, haproxy_cli.HaproxyPaths.from_topology(t), render_haproxy_cfg(t),
                             render_live_map(t, live))


def _set_env(path: Path, value: str) -> None:
    lines = [line for line in path.read_text().splitlines() if not line.startswith("NO_HEALTH_ROUTE=")]
    path.write_text("\n".join([*lines, f"NO_HEALTH_ROUTE={value}"]) + "\n")


@pytest.fixture
def root_health(lab: Lab) -> Iterator[tuple[Topology, str]]:
    """The lab with health on `/`: HAProxy checks `/`, the standby's app answers no /api/health.
    Afterwards the stack's own config and a standby with its health route are put back."""
    stack = load_stack(lab.project_dir, "lab")
    t = dataclasses.replace(stack, app=dataclasses.replace(stack.app, health_path="/",
                                                                    health_status=HealthStatuses(((200, 200),))))
    with lab.executor(stack.load_balancer) as lb:
        standby = other_color(haproxy.live_color(lb, stack))
    env = Path(stack.app_host(standby).path(f"{stack.app.dir}/shared/.env"))
    _set_env(env, "1")
    _apply_lb(lab, t)
    try:
        yield t, standby
    finally:
        _set_env(env, "0")  # PM2 keeps removed keys: set it off rather than drop it
        _apply_lb(lab, stack)
        deploy(Estate(load_stack(lab.project_dir, "lab")), snapshot=False, migrate=True)


@pytest.mark.timeout(1200)  # two deploys (the test's and the one that puts the standby back)
def test_deploy_gates_on_the_root_path_when_the_app_has_no_health_route(
        lab: Lab, root_health: tuple[Topology, str]) -> None:
    t, standby = root_health
    result = deploy(Estate(t), snapshot=False, migrate=True)
    assert result.ok and result.color == standby, result.error
    host = t.app_host(standby)
    assert http_probe(f"http://{host.ip}:{t.app.port}/api/health").status == 404  # really has none
    assert http_probe(f"http://{host.ip}:{t.app.port}/").status == 200
    report = status(Estate(t))
    assert report.colors[standby].healthy
    assert report.colors[standby].commit == COMMIT_NOT_REPORTED
    assert report.colors[standby].sha == result.sha  # the release is still known from the host
