"""Flipping the live colour under steady load: a real HAProxy 2.6 reached over SSH (sshd on
127.0.73.26), two stand-in apps answering on 127.0.73.22/24:3000, and a request loop of
keep-alive and new-connection clients. Every process started here is stopped by its PID."""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dill
import pytest
from pulumi.dynamic.dynamic import serialize_provider

from bluegreen.hosts import haproxy as hr
from bluegreen.hosts import haproxy_cli
from bluegreen.hosts.executor import SshExecutor, connect, trust_host
from bluegreen.hosts.hostconfig import SWITCH_ENV, apply_haproxy_config
from bluegreen.hosts.providers import haproxy_config_props, routing_props
from bluegreen.lab.loadgen import RequestLoop
from bluegreen.lab.services import ManagedProcess, host_public_key, start_sshd
from bluegreen.model.topology import Topology
from bluegreen.render.haproxy import render_live_map
from components.hostconfig import LiveColorRoutingDynamicProvider
from tests.integration.support import APP_PORT, SSH_PORT, OkApp, QuietServer, loopback_topology

pytestmark = pytest.mark.integration

NET = "127.0.73"


def make_topology(base: Path, identity: Path, known_hosts: Path) -> Topology:
    return loopback_topology(base, identity, known_hosts, net=NET, stack="routing-test", prefix="r")


@dataclass
class Site:
    t: Topology

    @property
    def paths(self) -> haproxy_cli.HaproxyPaths:
        return haproxy_cli.HaproxyPaths.from_topology(self.t)

    def lb(self) -> SshExecutor:
        return connect(self.t, self.t.load_balancer)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    base = Path(tempfile.mkdtemp(prefix="bg-route-", dir="/tmp"))
    identity = base / "client_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(identity)], check=True)
    known_hosts = base / "known_hosts"
    t = make_topology(base, identity, known_hosts)
    lb = t.load_balancer
    paths = haproxy_cli.HaproxyPaths.from_topology(t)
    haproxy = ManagedProcess("haproxy", Path(paths.pid_file), expect=paths.config)
    sshd: ManagedProcess | None = None
    servers: list[QuietServer] = []
    try:
        state = Path(lb.path("/etc/ssh"))
        sshd = start_sshd(name=lb.name, address=lb.ip, port=SSH_PORT, state_dir=state,
                          authorized_keys=identity.with_suffix(".pub"), log_file=base / "sshd.log",
                          pid_file=base / "sshd.pid")
        trust_host(str(known_hosts), lb.ip, SSH_PORT, host_public_key(state))
        for app in t.app_hosts.values():
            server = QuietServer((app.ip, APP_PORT), OkApp)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
        props = haproxy_config_props(t)
        with connect(t, lb) as ex:
            apply_haproxy_config(ex, paths, props["config"], props["initial_map"])
            deadline = time.monotonic() + 30
            while not all(b["status"] == "UP" for b in hr.backend_states(ex, paths).values()):
                assert time.monotonic() < deadline, "the colour backends never came UP"
                time.sleep(0.1)
        yield Site(t)
    finally:
        haproxy.stop()
        if sshd is not None:
            sshd.stop()
        for server in servers:
            server.shutdown()
            server.server_close()
        shutil.rmtree(base, ignore_errors=True)


def engine_copy(provider: LiveColorRoutingDynamicProvider) -> LiveColorRoutingDynamicProvider:
    copied: LiveColorRoutingDynamicProvider = dill.loads(base64.b64decode(serialize_provider(provider)))
    return copied


def test_flips_under_load_drop_nothing_and_new_requests_follow_at_once(site: Site,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    provider = engine_copy(LiveColorRoutingDynamicProvider())
    created = provider.create(routing_props(site.t, "blue"))
    state = created.outs
    assert state is not None
    with site.lb() as ex:
        before = hr.show_proc(ex, site.paths)
    flips: list[tuple[float, float, str]] = []  # (update called, update returned, colour)
    # The loop outlives the flips however slow a shared machine makes them (it stops with the block).
    with RequestLoop(site.t.public_url, clients=8, max_requests=40_000, max_seconds=900) as loop:
        loop.wait_for(200)
        for color in ("green", "blue", "green", "blue", "green", "blue", "green"):
            # The routing resource only moves traffic inside `bluegreen switch` (which says so).
            monkeypatch.setenv(SWITCH_ENV, color)
            called = time.monotonic()
            result = provider.update(created.id, state, routing_props(site.t, color))
            flips.append((called, time.monotonic(), color))
            assert result.outs is not None
            state = result.outs
            loop.wait_for(150, timeout=300)  # requests flow after each flip, however loaded the machine
    report = loop.report
    assert report.total >= 200 + 150 * 7, report.summary()
    assert not report.failures and report.retried == 0, report.summary()  # a flip closes no connection
    assert set(report.colours()) == {"blue", "green"}
    # From a flip's return until the next flip is called, every request that started was served
    # by that colour: in-memory `set map` applies to the very next request, keep-alive or not.
    ends = [called for called, _, _ in flips[1:]] + [float("inf")]
    for (_, returned, color), end in zip(flips, ends, strict=True):
        window = [s for s in report.after(returned) if s.started < end]
        assert window, f"no requests after the flip to {color}"
        stale = [(round(s.started - returned, 4), s.served_by) for s in window if s.served_by != color]
        assert not stale, f"flip to {color}: {len(window)} requests, stale {stale[:20]}"
    with site.lb() as ex:
        after = hr.show_proc(ex, site.paths)
        assert hr.live_color(ex, site.paths) == "green"
        assert hr.read_map(ex, site.paths) == {"live": "bk_green", "preview": "bk_blue"}
    assert (after.reloads, after.worker_pids) == (before.reloads, before.worker_pids), "a flip never reloads"
    assert Path(site.paths.map).read_text() == render_live_map(site.t, "green")


def test_runtime_api_the_service_uses(site: Site) -> None:
    with site.lb() as ex:
        result = hr.flip(ex, site.t, "blue")
        assert result.current == {"live": "bk_blue", "preview": "bk_green"}
        again = hr.flip(ex, site.t, "blue")
        assert not again.changed, "flipping to the live colour changes nothing"
        assert hr.live_backend(ex, site.t) == "bk_blue"
        states = hr.backend_states(ex, site.t)
        assert {c: s["status"] for c, s in states.items()} == {"blue": "UP", "green": "UP"}
        assert states["blue"]["servers"][0]["address"] == f"{NET}.22:{APP_PORT}"
        counters = hr.backend_counters(ex, site.t, "blue")
        with RequestLoop(site.t.public_url, clients=2, max_requests=50) as loop:
            loop.wait_for(50)
        assert not loop.report.failures and loop.report.retried == 0, loop.report.summary()
        grown = hr.backend_counters(ex, site.t, "blue")
        assert grown.total - counters.total == loop.report.total
        assert grown.http_5xx == counters.http_5xx
        assert {r["srv_name"] for r in hr.servers_state(ex, site.t)} == {"blue", "green"}
        assert hr.ensure_running(ex, site.t) is False, "already running: nothing to start"
        proc = hr.show_proc(ex, site.t)
        reloaded = hr.reload(ex, site.t)
        assert reloaded.reloads == proc.reloads + 1
        assert reloaded.worker_pids.isdisjoint(proc.worker_pids)
        assert hr.live_color(ex, site.t) == "blue", "the map file keeps the colour across a reload"


def test_a_stopped_haproxy_is_a_clear_error(site: Site) -> None:
    with site.lb() as ex:
        missing = haproxy_cli.HaproxyPaths(config=site.paths.config, map=site.paths.map,
                                  admin_socket=site.t.load_balancer.path("/run/haproxy/none.sock"),
                                  master_socket=site.paths.master_socket, pid_file=site.paths.pid_file)
        with pytest.raises(hr.HaproxyUnavailable) as err:
            hr.live_backend(ex, missing)
    assert err.value.host == site.t.load_balancer.label
    assert "no answer from HAProxy" in str(err.value) and "none.sock" in str(err.value)
