"""The host-configuration providers against real hosts: sshd per host on 127.0.71.x, HAProxy 2.6,
PostgreSQL 15 and PM2, each provider first sent through the engine's own dill serialization.

"Nothing changed" is proved by the host, not by our return values: file mtimes, HAProxy's reload
counter and worker pids (`show proc`), PostgreSQL's `pg_conf_load_time()`, PM2's process pid.
Every process started here is stopped by its PID at the end of the module.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import dill
import pulumi.dynamic as dyn
import pytest
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import rpc

from bluegreen.hosts import haproxy as hr
from bluegreen.hosts import haproxy_cli as hr_cli
from bluegreen.hosts.executor import SshExecutor, connect, trust_host
from bluegreen.hosts.hostconfig import SWITCH_ENV, pm2_home, sql_secrets
from bluegreen.hosts.providers import (
    connection_props,
    ecosystem_props,
    haproxy_config_props,
    postgres_props,
    routing_props,
)
from bluegreen.lab.loadgen import RequestLoop
from bluegreen.lab.services import ManagedProcess, host_public_key, start_postgres, start_sshd
from bluegreen.model.errors import ConfigError, RemoteError
from bluegreen.model.sensitive import MASK, Sensitive, redact
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import Topology
from bluegreen.ops.configure import apply_estate, plan_estate
from bluegreen.render.haproxy import render_live_map
from bluegreen.render.postgres import BEGIN_MARKER, render_database_sql
from components.hostconfig import (
    BootstrapDynamicProvider,
    HaproxyConfigDynamicProvider,
    LiveColorRoutingDynamicProvider,
    Pm2EcosystemDynamicProvider,
    PostgresDatabaseDynamicProvider,
)
from tests.integration.support import APP_PORT, SSH_PORT, OkApp, QuietServer, loopback_topology

pytestmark = pytest.mark.integration

NET = "127.0.71"
DB_PASSWORD = "first-Pa55word'with\\quote"

P = TypeVar("P", bound=dyn.ResourceProvider)


def outs(result: dyn.CreateResult | dyn.UpdateResult | dyn.ReadResult) -> dict[str, Any]:
    assert result.outs is not None
    return result.outs


def engine_copy(provider: P) -> P:
    """The provider as the engine's provider process gets it: dill-pickled in `Resource.__init__`."""
    return cast(P, dill.loads(base64.b64decode(serialize_provider(provider))))


# --------------------------------------------------------------------------- the test estate


def make_topology(base: Path, identity: Path, known_hosts: Path, **haproxy: Any) -> Topology:
    return loopback_topology(
        base, identity, known_hosts, net=NET, stack="providers-test", prefix="t",
        app={"dir": "/opt/app", "instances": 1, "pm2Home": "/root/.pm2", "startScript": "server.js",
             "startArgs": ""},
        haproxy={"publicPort": 80, "previewPort": 8080, "statsPort": 8404, "serverName": "providers.test",
                 "maxconn": 500, **haproxy},
        extra={"bluegreen:environment": "test",
               "bluegreen:database": {"name": "t_app", "user": "t_app_user", "port": 5432}})


@dataclass
class Estate:
    base: Path
    t: Topology
    identity: Path
    known_hosts: Path

    def executor(self, role_or_color: str) -> SshExecutor:
        return connect(self.t, self.t.find_host(role_or_color))

    @property
    def paths(self) -> hr_cli.HaproxyPaths:
        return hr_cli.HaproxyPaths.from_topology(self.t)

    def psql(self, sql: str) -> str:
        db = self.t.database_host
        result = subprocess.run(
            ["runuser", "-u", "postgres", "--", "psql", "-X", "-At", "-h", db.path("/var/run/postgresql"),
             "-p", str(self.t.database.port), "-d", "postgres", "-c", sql],
            capture_output=True, text=True, check=True, timeout=30)
        return result.stdout.strip()


def _pm2_processes(home: Path) -> list[int]:
    if not (home / "pm2.pid").exists():
        return []
    result = subprocess.run(["pm2", "jlist"], env={**os.environ, "PM2_HOME": str(home)},
                            capture_output=True, text=True, timeout=60)
    start = result.stdout.find("[")
    if start < 0:
        return []
    return [p["pid"] for p in json.loads(result.stdout[start:]) if p.get("pid")]


def _stop_pm2(home: Path) -> None:
    apps = _pm2_processes(home)
    ManagedProcess(f"pm2 {home}", home / "pm2.pid", expect="God Daemon",
                   expect_env={"PM2_HOME": str(home)}).stop()
    for pid in apps:  # the daemon stops its apps on SIGTERM; make sure, by pid
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def estate() -> Iterator[Estate]:
    base = Path(tempfile.mkdtemp(prefix="bg-prov-", dir="/tmp"))
    base.chmod(0o755)  # PostgreSQL runs as postgres and must reach its data dir
    identity = base / "client_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(identity)], check=True)
    known_hosts = base / "known_hosts"
    t = make_topology(base, identity, known_hosts)
    stoppers: list[Callable[[], object]] = []
    servers: list[QuietServer] = []
    try:
        for c in t.containers:
            state = Path(c.path("/etc/ssh"))
            sshd = start_sshd(name=c.name, address=c.ip, port=SSH_PORT, state_dir=state,
                              authorized_keys=identity.with_suffix(".pub"),
                              log_file=base / f"sshd-{c.vmid}.log", pid_file=base / f"sshd-{c.vmid}.pid")
            stoppers.append(sshd.stop)
            trust_host(str(known_hosts), c.ip, SSH_PORT, host_public_key(state))
        db = t.database_host
        postgres = start_postgres(name=db.name, data_dir=Path(db.path("/var/lib/postgresql/15/main")),
                                  address=db.ip, port=t.database.port,
                                  socket_dir=Path(db.path("/var/run/postgresql")),
                                  hba_file=Path(db.path("/etc/postgresql/15/main/pg_hba.conf")),
                                  log_file=base / "postgres.log", pid_file=base / "postgres.pid")
        stoppers.append(postgres.stop)
        for host in t.app_hosts.values():
            server = QuietServer((host.ip, APP_PORT), OkApp)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
        paths = hr_cli.HaproxyPaths.from_topology(t)
        stoppers.append(ManagedProcess("haproxy", Path(paths.pid_file), expect=paths.config).stop)
        for home in sorted({Path(pm2_home(t, host)) for host in t.app_hosts.values()}):
            stoppers.append(functools.partial(_stop_pm2, home))
        yield Estate(base, t, identity, known_hosts)
    finally:
        for stop in reversed(stoppers):
            stop()
        for server in servers:
            server.shutdown()
            server.server_close()
        leftovers = _pids_mentioning(str(base))
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)
        assert not leftovers, f"processes outlived their stop: {leftovers}"


def _pids_mentioning(text: str) -> dict[int, str]:
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        if text in cmdline and stat[stat.rfind(")") + 2] not in "ZX":
            found[int(proc.name)] = cmdline
    return found


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def mtime(path: str) -> int:
    return Path(path).stat().st_mtime_ns


def served_by(url: str) -> str | None:
    host_port = url.split("//", 1)[1]
    host, port = host_port.split(":")
    with closing(http.client.HTTPConnection(host, int(port), timeout=5)) as conn:
        conn.request("GET", "/", headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.getheader("X-Served-By") if response.status == 200 else None


def proc_table(estate: Estate) -> hr_cli.ProcTable:
    with closing(estate.executor("loadbalancer")) as ex:
        return hr.show_proc(ex, estate.paths)


# --------------------------------------------------------------------------- pure parts


PROJECT_DIR = Path(__file__).resolve().parents[2]


def test_plan_lists_every_host_in_apply_order_without_the_password() -> None:
    t = load_stack(PROJECT_DIR, "lab")
    plan = plan_estate(t)
    assert list(plan) == [c.label for c in t.containers]
    json.dumps(plan)  # the CLI prints it as JSON
    lb = plan[t.load_balancer.label]
    assert [item["kind"] for item in lb][:2] == ["file", "command"], "bootstrap first"
    steps = [item["step"] for item in lb]
    assert steps.index("validate the HAProxy configuration") < steps.index("install the HAProxy configuration")
    assert any(item.get("path") == t.load_balancer.path(t.haproxy.config_path).replace(
        "haproxy.cfg", ".haproxy.cfg.candidate") for item in lb)
    sql = next(item["content"] for item in plan[t.database_host.label] if item.get("path") == "(stdin)")
    assert f"PASSWORD E'{MASK}'" in sql
    files = [item["path"] for items in plan.values() for item in items
             if item["kind"] == "file" and item["path"].startswith("/")]
    assert files and all(path.startswith("/var/tmp/jw-lab/ct") for path in files), "lab hosts are rooted"


def test_secrets_in_sql_are_found_as_written_and_as_values() -> None:
    t = load_stack(PROJECT_DIR, "lab")
    password = "it's a \\ secret"
    sql = render_database_sql(t, Sensitive(password))
    found = [s.reveal() for s in sql_secrets(sql)]
    assert password in found
    assert password.replace("\\", "\\\\").replace("'", "''") in found
    scrubbed = redact(f"ERROR near {sql}", sql_secrets(sql))
    assert password not in scrubbed and "it''s" not in scrubbed


def test_diff_ignores_the_engines_float_numbers_and_reports_real_changes() -> None:
    provider = PostgresDatabaseDynamicProvider()
    t = load_stack(PROJECT_DIR, "lab")
    olds = postgres_props(t, Sensitive(DB_PASSWORD))
    news = json.loads(json.dumps(olds))
    news["port"] = float(news["port"])
    news["connection"]["port"] = float(news["connection"]["port"])
    assert not provider.diff("id", olds, news).changes
    news["hba"] += "host all all 10.0.0.1/32 reject\n"
    diff = provider.diff("id", olds, news)
    assert diff.changes and not diff.replaces


def test_check_names_missing_properties_and_waits_for_unknowns() -> None:
    provider = HaproxyConfigDynamicProvider()
    t = load_stack(PROJECT_DIR, "lab")
    props = haproxy_config_props(t)
    assert not provider.check({}, props).failures
    incomplete = {k: v for k, v in props.items() if k not in ("config", "map_path")}
    reasons = [f.reason for f in provider.check({}, incomplete).failures]
    assert reasons == ["haproxy-config: property 'config' is required",
                       "haproxy-config: property 'map_path' is required"]
    preview = {**incomplete, "connection": {**props["connection"], "address": rpc.UNKNOWN}}
    assert not provider.check({}, preview).failures


def test_provider_without_a_host_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="property 'connection' is required"):
        engine_copy(BootstrapDynamicProvider()).create({"script": "true", "script_path": "/x"})


# --------------------------------------------------------------------------- bootstrap


def bootstrap_props(estate: Estate, script: str) -> dict[str, Any]:
    host = estate.t.app_host("green")
    return {"connection": connection_props(estate.t, host), "script": script,
            "script_path": host.path("/var/lib/bluegreen-test/bootstrap.sh")}


def counting_script(estate: Estate, version: str) -> str:
    runs = estate.t.app_host("green").path("/var/lib/bluegreen-test/runs")
    return f"set -e\necho {version} >> {runs}\necho 'bootstrap: counted run {version}'\n"


def test_bootstrap_runs_once_per_script_version(estate: Estate) -> None:
    provider = engine_copy(BootstrapDynamicProvider())
    runs = Path(estate.t.app_host("green").path("/var/lib/bluegreen-test/runs"))
    props = bootstrap_props(estate, counting_script(estate, "v1"))

    created = provider.create(props)
    assert runs.read_text() == "v1\n"
    assert outs(created)["script_sha256"] == hashlib.sha256(props["script"].encode()).hexdigest()
    assert Path(props["script_path"]).read_text() == props["script"]

    assert not provider.diff(created.id, outs(created), props).changes
    record_mtime = mtime(props["script_path"])
    provider.update(created.id, outs(created), props)  # even if asked, the host already ran it
    assert runs.read_text() == "v1\n"
    assert mtime(props["script_path"]) == record_mtime

    changed = {**props, "script": counting_script(estate, "v2")}
    diff = provider.diff(created.id, outs(created), changed)
    assert diff.changes and not diff.replaces
    updated = provider.update(created.id, outs(created), changed)
    assert runs.read_text() == "v1\nv2\n"
    assert outs(updated)["script_sha256"] == hashlib.sha256(changed["script"].encode()).hexdigest()

    assert outs(provider.read(created.id, outs(updated)))["script"] == changed["script"]
    provider.delete(created.id, outs(updated))
    assert runs.read_text() == "v1\nv2\n"

    # A new address updates (strict host keys: its key must be pinned first), never replaces
    # (which would trust whatever key answers there).
    moved = {**changed, "connection": {**changed["connection"], "address": f"{NET}.99"}}
    diff = provider.diff(created.id, outs(updated), moved)
    assert diff.changes and diff.replaces == []


def test_failed_bootstrap_names_host_and_step_and_is_retried(estate: Estate) -> None:
    provider = engine_copy(BootstrapDynamicProvider())
    flag = Path(estate.t.app_host("green").path("/var/lib/bluegreen-test/allow"))
    runs = Path(estate.t.app_host("green").path("/var/lib/bluegreen-test/runs-failing"))
    script = f"set -e\necho run >> {runs}\ntest -e {flag} || {{ echo 'no flag yet' >&2; exit 4; }}\n"
    props = {**bootstrap_props(estate, script),
             "script_path": estate.t.app_host("green").path("/var/lib/bluegreen-test/failing.sh")}
    with pytest.raises(RemoteError) as err:
        provider.create(props)
    assert err.value.host == estate.t.app_host("green").label
    assert err.value.step == "bootstrap"
    assert "exit code 4" in str(err.value) and "no flag yet" in str(err.value)
    assert not Path(props["script_path"]).exists(), "a failed run must not be recorded as done"
    flag.write_text("")
    provider.create(props)
    assert runs.read_text() == "run\nrun\n"


# --------------------------------------------------------------------------- HAProxy config


@pytest.fixture(scope="module")
def haproxy(estate: Estate) -> dyn.CreateResult:
    provider = engine_copy(HaproxyConfigDynamicProvider())
    created = provider.create(haproxy_config_props(estate.t))
    wait_until("both colour backends UP", lambda: all(
        b["status"] == "UP" for b in _backend_states(estate).values()))
    return created


def _backend_states(estate: Estate) -> dict[str, dict[str, Any]]:
    with closing(estate.executor("loadbalancer")) as ex:
        return hr.backend_states(ex, estate.paths)


def test_haproxy_config_create_starts_haproxy_serving_the_active_colour(
        estate: Estate, haproxy: dyn.CreateResult) -> None:
    paths = estate.paths
    assert Path(paths.config).read_text() == haproxy_config_props(estate.t)["config"]
    assert Path(paths.map).read_text() == render_live_map(estate.t, "blue")
    table = proc_table(estate)
    assert int(Path(paths.pid_file).read_text().split()[0]) == table.master.pid
    assert len(table.workers) == 1
    assert served_by(estate.t.public_url) == "blue"
    assert served_by(estate.t.preview_url) == "green"
    assert set(_backend_states(estate)) == {"blue", "green"}


def test_haproxy_config_unchanged_input_touches_nothing(estate: Estate, haproxy: dyn.CreateResult) -> None:
    provider = engine_copy(HaproxyConfigDynamicProvider())
    props = haproxy_config_props(estate.t)
    assert not provider.diff(haproxy.id, outs(haproxy), props).changes
    before = proc_table(estate)
    config_mtime, map_mtime = mtime(estate.paths.config), mtime(estate.paths.map)
    provider.update(haproxy.id, outs(haproxy), props)
    after = proc_table(estate)
    assert (after.reloads, after.master.pid, after.worker_pids) == (before.reloads, before.master.pid,
                                                                     before.worker_pids)
    assert (mtime(estate.paths.config), mtime(estate.paths.map)) == (config_mtime, map_mtime)


def test_haproxy_config_change_is_reloaded_hitlessly(estate: Estate, haproxy: dyn.CreateResult) -> None:
    provider = engine_copy(HaproxyConfigDynamicProvider())
    old = haproxy_config_props(estate.t)
    t2 = dataclasses.replace(estate.t, haproxy=dataclasses.replace(estate.t.haproxy, maxconn=600))
    new = haproxy_config_props(t2)
    assert "maxconn 600" in new["config"]
    diff = provider.diff(haproxy.id, outs(haproxy), new)
    assert diff.changes and not diff.replaces
    before = proc_table(estate)
    with RequestLoop(estate.t.public_url, clients=6, max_requests=20_000) as loop:
        loop.wait_for(100)
        updated = provider.update(haproxy.id, outs(haproxy), new)
        loop.wait_for(100)
    report = loop.report
    assert report.total >= 200 and not report.failures, report.summary()
    after = proc_table(estate)
    assert after.reloads == before.reloads + 1
    assert after.failed_reloads == before.failed_reloads
    assert after.worker_pids.isdisjoint(before.worker_pids)
    assert Path(estate.paths.config).read_text() == new["config"]
    assert outs(updated)["config_sha256"] == hashlib.sha256(new["config"].encode()).hexdigest()
    provider.update(haproxy.id, outs(updated), old)  # back, for the tests after this one
    assert Path(estate.paths.config).read_text() == old["config"]


def test_broken_haproxy_config_is_rejected_and_the_proxy_keeps_serving(
        estate: Estate, haproxy: dyn.CreateResult) -> None:
    provider = engine_copy(HaproxyConfigDynamicProvider())
    good = haproxy_config_props(estate.t)
    broken = {**good, "config": good["config"] + "\nbackend bk_broken\n    bogus-keyword here\n"}
    before = proc_table(estate)
    config_mtime = mtime(estate.paths.config)
    with RequestLoop(estate.t.public_url, clients=6, max_requests=20_000) as loop:
        loop.wait_for(100)
        with pytest.raises(RemoteError) as err:
            provider.update(haproxy.id, outs(haproxy), broken)
        loop.wait_for(100)
    report = loop.report
    assert report.total >= 200 and not report.failures and report.retried == 0, report.summary()
    message = str(err.value)
    assert err.value.host == estate.t.load_balancer.label
    assert "unknown keyword 'bogus-keyword'" in message
    assert f"the new {estate.paths.config}" in message
    assert Path(estate.paths.config).read_text() == good["config"]
    assert mtime(estate.paths.config) == config_mtime
    assert not Path(estate.paths.config).with_name(".haproxy.cfg.candidate").exists()
    after = proc_table(estate)
    assert (after.reloads, after.failed_reloads, after.worker_pids) == (before.reloads, before.failed_reloads,
                                                                        before.worker_pids)


def test_new_listener_on_a_port_another_program_holds_is_refused_before_reload(
        estate: Estate, haproxy: dyn.CreateResult) -> None:
    provider = engine_copy(HaproxyConfigDynamicProvider())
    good = haproxy_config_props(estate.t)
    lb = estate.t.load_balancer
    # `haproxy -c` does not bind, so it passes this; the load balancer's sshd holds the port.
    taken = {**good, "config": good["config"] + f"\nfrontend fe_taken\n    bind {lb.ip}:{SSH_PORT}\n"}
    before = proc_table(estate)
    config_mtime = mtime(estate.paths.config)
    with RequestLoop(estate.t.public_url, clients=4, max_requests=20_000) as loop:
        loop.wait_for(50)
        with pytest.raises(RemoteError) as err:
            provider.update(haproxy.id, outs(haproxy), taken)
        loop.wait_for(50)
    assert not loop.report.failures and loop.report.retried == 0, loop.report.summary()
    assert f"{lb.ip}:{SSH_PORT} already in use" in str(err.value)
    assert mtime(estate.paths.config) == config_mtime
    after = proc_table(estate)
    assert (after.reloads, after.failed_reloads, after.worker_pids) == (before.reloads, before.failed_reloads,
                                                                        before.worker_pids)


def test_config_that_fails_only_when_the_new_worker_starts_is_put_back(
        estate: Estate, haproxy: dyn.CreateResult) -> None:
    provider = engine_copy(HaproxyConfigDynamicProvider())
    good = haproxy_config_props(estate.t)
    missing_dir = estate.base / "no-such-dir"
    # Valid to `haproxy -c`; binding the socket fails in the new worker.
    late = {**good, "config": good["config"] + f"\nfrontend fe_late\n    bind unix@{missing_dir}/x.sock\n"}
    before = proc_table(estate)
    with pytest.raises(RemoteError) as err:
        provider.update(haproxy.id, outs(haproxy), late)
    assert "refused the new configuration" in str(err.value)
    assert "back to its previous content" in str(err.value)
    assert Path(estate.paths.config).read_text() == good["config"]
    after = proc_table(estate)
    assert after.failed_reloads == before.failed_reloads + 1
    assert after.worker_pids == before.worker_pids, "the old worker serves on"
    wait_until("the old worker answers again", lambda: served_by(estate.t.public_url) == "blue")
    # The next good change reloads normally.
    t2 = dataclasses.replace(estate.t, haproxy=dataclasses.replace(estate.t.haproxy, maxconn=700))
    updated = provider.update(haproxy.id, outs(haproxy), haproxy_config_props(t2))
    assert proc_table(estate).worker_pids.isdisjoint(before.worker_pids)
    provider.update(haproxy.id, outs(updated), good)


# --------------------------------------------------------------------------- routing


def test_routing_provider_flips_reads_and_delete_leaves_traffic(
        estate: Estate, haproxy: dyn.CreateResult, monkeypatch: pytest.MonkeyPatch) -> None:
    provider = engine_copy(LiveColorRoutingDynamicProvider())
    blue = routing_props(estate.t, "blue")
    created = provider.create(blue)
    assert outs(created)["live_backend"] == "bk_blue"
    assert not provider.diff(created.id, outs(created), blue).changes
    map_mtime = mtime(estate.paths.map)
    provider.update(created.id, outs(created), blue)
    assert mtime(estate.paths.map) == map_mtime

    green = routing_props(estate.t, "green")
    diff = provider.diff(created.id, outs(created), green)
    assert diff.changes and not diff.replaces
    # Outside `bluegreen switch` a declared colour other than the served one is refused, naming
    # the file to change, and traffic stays where it is.
    with pytest.raises(Exception, match=r"serves blue .* declares bluegreen:activeColor: green.*stacks/Pulumi\."):
        provider.update(created.id, outs(created), green)
    assert served_by(estate.t.public_url) == "blue"
    assert Path(estate.paths.map).read_text() == render_live_map(estate.t, "blue")
    # The switch's own run may move it.
    monkeypatch.setenv(SWITCH_ENV, "green")
    updated = provider.update(created.id, outs(created), green)
    assert outs(updated)["live_backend"] == "bk_green"
    assert Path(estate.paths.map).read_text() == render_live_map(estate.t, "green")
    assert served_by(estate.t.public_url) == "green"
    assert served_by(estate.t.preview_url) == "blue"
    assert outs(provider.read(created.id, outs(updated)))["live_color"] == "green"

    # Drift made behind the provider's back shows up on refresh.
    with closing(estate.executor("loadbalancer")) as ex:
        hr.set_live_color(ex, estate.paths, "blue", render_live_map(estate.t, "blue"))
    assert outs(provider.read(created.id, outs(updated)))["live_color"] == "blue"
    provider.update(created.id, outs(updated), green)

    provider.delete(created.id, outs(updated))
    assert served_by(estate.t.public_url) == "green", "deleting the routing resource must not unroute"
    monkeypatch.setenv(SWITCH_ENV, "blue")
    provider.update(created.id, outs(updated), blue)
    assert served_by(estate.t.public_url) == "blue"


def test_routing_rejects_an_unknown_colour_before_touching_haproxy(
        estate: Estate, haproxy: dyn.CreateResult) -> None:
    props = {**routing_props(estate.t, "blue"), "live_color": "purple"}
    provider = engine_copy(LiveColorRoutingDynamicProvider())
    failures = provider.check({}, props).failures
    assert [f.reason for f in failures] == [
        "live-color-routing: live_color must be one of blue, green, got 'purple'"]
    with closing(estate.executor("loadbalancer")) as ex:
        before = hr.read_map(ex, estate.paths)
    map_mtime = mtime(estate.paths.map)
    with pytest.raises(ConfigError, match="purple"):
        provider.create(props)
    with closing(estate.executor("loadbalancer")) as ex:
        assert hr.read_map(ex, estate.paths) == before
    assert mtime(estate.paths.map) == map_mtime


# --------------------------------------------------------------------------- PM2


def _app_release(estate: Estate, color: str) -> tuple[str, int]:
    host = estate.t.app_host(color)
    app_dir = host.path("/srv/pm2-test")
    release = Path(app_dir) / "releases" / "r1"
    release.mkdir(parents=True, exist_ok=True)
    (release / "server.js").write_text(
        'require("http").createServer((q, s) => s.end(process.env.APP_VERSION))'
        ".listen(+process.env.PORT, process.env.HOST);\n")
    current = Path(app_dir) / "current"
    if not current.is_symlink():
        current.symlink_to("releases/r1")
    return app_dir, 3100


def _ecosystem(app_dir: str, host_ip: str, port: int, version: str) -> str:
    app = {"name": "provider-test-app", "cwd": f"{app_dir}/current", "script": "server.js",
           "exec_mode": "fork", "instances": 1,
           "env": {"PORT": str(port), "HOST": host_ip, "APP_VERSION": version}}
    return f"module.exports = {{ apps: [{json.dumps(app)}] }};\n"


def _answer(host: str, port: int) -> str | None:
    try:
        with closing(http.client.HTTPConnection(host, port, timeout=2)) as conn:
            conn.request("GET", "/")
            return conn.getresponse().read().decode()
    except OSError:
        return None


def _app_pid(home: str) -> int:
    pids = _pm2_processes(Path(home))
    assert len(pids) == 1, pids
    return pids[0]


def test_pm2_ecosystem_written_loaded_and_reloaded_only_on_change(estate: Estate) -> None:
    host = estate.t.app_host("blue")
    app_dir, port = _app_release(estate, "blue")
    home = pm2_home(estate.t, host)
    path = f"{app_dir}/ecosystem.config.js"
    props = {"connection": connection_props(estate.t, host),
             "ecosystem": _ecosystem(app_dir, host.ip, port, "1"), "path": path,
             "pm2_home": home, "app_dir": app_dir, "run_as": "root"}
    provider = engine_copy(Pm2EcosystemDynamicProvider())

    created = provider.create(props)
    assert Path(path).read_text() == props["ecosystem"]
    wait_until("the app answers version 1", lambda: _answer(host.ip, port) == "1")
    assert (Path(home) / "dump.pm2").exists(), "pm2 save keeps the process list for resurrection"
    pid = _app_pid(home)

    assert not provider.diff(created.id, outs(created), props).changes
    file_mtime = mtime(path)
    provider.update(created.id, outs(created), props)
    assert mtime(path) == file_mtime
    assert _app_pid(home) == pid, "unchanged input must not reload the app"

    changed = {**props, "ecosystem": _ecosystem(app_dir, host.ip, port, "2")}
    assert provider.diff(created.id, outs(created), changed).changes
    updated = provider.update(created.id, outs(created), changed)
    wait_until("the app answers version 2", lambda: _answer(host.ip, port) == "2")
    assert _app_pid(home) != pid
    assert outs(provider.read(created.id, outs(updated)))["ecosystem"] == changed["ecosystem"]

    provider.delete(created.id, outs(updated))
    assert Path(path).read_text() == changed["ecosystem"], "`pulumi destroy` leaves what deploys need"
    assert _answer(host.ip, port) == "2", "deleting the resource leaves the running app alone"


def test_pm2_ecosystem_without_a_release_only_writes_the_file(estate: Estate) -> None:
    host = estate.t.app_host("green")
    app_dir = host.path("/srv/pm2-empty")
    home = pm2_home(estate.t, host)
    path = f"{app_dir}/ecosystem.config.js"
    props = {"connection": connection_props(estate.t, host),
             "ecosystem": _ecosystem(app_dir, host.ip, 3101, "1"), "path": path,
             "pm2_home": home, "app_dir": app_dir, "run_as": "root"}
    provider = engine_copy(Pm2EcosystemDynamicProvider())
    created = provider.create(props)
    assert Path(path).read_text() == props["ecosystem"]
    assert not (Path(home) / "pm2.pid").exists(), "no release: PM2 must not be started"
    provider.delete(created.id, outs(created))
    assert Path(path).read_text() == props["ecosystem"], "`pulumi destroy` leaves what deploys need"


# --------------------------------------------------------------------------- PostgreSQL


def scram_matches(verifier: str, password: str) -> bool:
    """Check a password against PostgreSQL's SCRAM-SHA-256 verifier (RFC 5802 StoredKey)."""
    method, rest = verifier.split("$", 1)
    assert method == "SCRAM-SHA-256"
    params, keys = rest.split("$")
    iterations, salt = params.split(":")
    stored_key = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), base64.b64decode(stored_key))


def can_log_in(estate: Estate, password: str) -> bool:
    """A real login over TCP as the app user (loopback clients come from 127.0.0.1)."""
    t = estate.t
    result = subprocess.run(["psql", "-X", "-w", "-At", "-h", t.database_host.ip, "-p", str(t.database.port),
                             "-U", t.database.user, "-d", t.database.name, "-c", "SELECT current_user"],
                            env={**os.environ, "PGPASSWORD": password}, capture_output=True, text=True,
                            timeout=30)
    return result.returncode == 0 and result.stdout.strip() == t.database.user


def _verifier(estate: Estate) -> str:
    return estate.psql(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{estate.t.database.user}'")


@pytest.fixture(scope="module")
def database(estate: Estate) -> dyn.CreateResult:
    provider = engine_copy(PostgresDatabaseDynamicProvider())
    return provider.create(postgres_props(estate.t, Sensitive(DB_PASSWORD)))


def test_database_created_with_password_and_hba_block(estate: Estate, database: dyn.CreateResult) -> None:
    t = estate.t
    owner = estate.psql("SELECT pg_get_userbyid(datdba) FROM pg_database "
                        f"WHERE datname = '{t.database.name}'")
    assert owner == t.database.user
    assert scram_matches(_verifier(estate), DB_PASSWORD)
    hba_file = estate.psql("SHOW hba_file")
    text = Path(hba_file).read_text()
    assert text.startswith(BEGIN_MARKER)
    assert "local   all             all" in text, "the administrator's rules stay"
    rules = estate.psql("SELECT address || '/' || netmask || ' ' || array_to_string(user_name, ',') || ' ' "
                        "|| auth_method FROM pg_hba_file_rules WHERE type = 'host' ORDER BY line_number")
    rendered = [line.split() for line in outs(database)["hba"].splitlines() if line.startswith("host")]
    assert rendered, "the block admits the app hosts"
    assert [r.split() for r in rules.splitlines()] == [
        [str(ipaddress.IPv4Interface(row[3]).ip) + "/" + str(ipaddress.IPv4Interface(row[3]).netmask),
         row[2], row[4]] for row in rendered]
    assert can_log_in(estate, DB_PASSWORD)
    assert Path(hba_file).owner() == "postgres"


def test_database_unchanged_input_neither_rewrites_nor_reloads(
        estate: Estate, database: dyn.CreateResult) -> None:
    provider = engine_copy(PostgresDatabaseDynamicProvider())
    props = postgres_props(estate.t, Sensitive(DB_PASSWORD))
    assert not provider.diff(database.id, outs(database), props).changes
    hba_file = estate.psql("SHOW hba_file")
    loaded, hba_mtime = estate.psql("SELECT pg_conf_load_time()"), mtime(hba_file)
    provider.update(database.id, outs(database), props)
    assert estate.psql("SELECT pg_conf_load_time()") == loaded
    assert mtime(hba_file) == hba_mtime
    assert scram_matches(_verifier(estate), DB_PASSWORD)


def test_existing_role_keeps_its_password_and_an_hba_change_applies(
        estate: Estate, database: dyn.CreateResult) -> None:
    provider = engine_copy(PostgresDatabaseDynamicProvider())
    new_password = "second-Pa55word"
    props = postgres_props(estate.t, Sensitive(new_password))
    diff = provider.diff(database.id, outs(database), props)
    assert diff.changes and not diff.replaces
    loaded = estate.psql("SELECT pg_conf_load_time()")
    provider.update(database.id, outs(database), props)
    # An existing role is adopted as it is: the apps' .env holds its password.
    assert scram_matches(_verifier(estate), DB_PASSWORD)
    assert can_log_in(estate, DB_PASSWORD)
    assert not can_log_in(estate, new_password)
    assert estate.psql("SELECT pg_conf_load_time()") == loaded, "nothing to reload"

    loaded = estate.psql("SELECT pg_conf_load_time()")
    extra = {**props, "hba": props["hba"] + f"host {estate.t.database.name} {estate.t.database.user} "
                                            f"{NET}.30/32 scram-sha-256\n"}
    updated = provider.update(database.id, outs(database), extra)
    assert estate.psql("SELECT pg_conf_load_time()") != loaded, "a changed block is reloaded"
    assert f"{NET}.30" in estate.psql("SELECT string_agg(address, ' ') FROM pg_hba_file_rules")
    assert outs(provider.read(database.id, outs(updated)))["hba"] == extra["hba"]
    Path(estate.psql("SHOW hba_file")).write_text("# someone replaced the file\nlocal all all trust\n")
    assert outs(provider.read(database.id, outs(updated)))["hba"] == "", "a lost block is drift"
    provider.update(database.id, outs(updated), postgres_props(estate.t, Sensitive(DB_PASSWORD)))
    assert scram_matches(_verifier(estate), DB_PASSWORD)


def test_unparsable_hba_block_is_put_back_and_not_reloaded(estate: Estate,
                                                           database: dyn.CreateResult) -> None:
    provider = engine_copy(PostgresDatabaseDynamicProvider())
    props = postgres_props(estate.t, Sensitive(DB_PASSWORD))
    hba_file = estate.psql("SHOW hba_file")
    before, loaded = Path(hba_file).read_text(), estate.psql("SELECT pg_conf_load_time()")
    broken = {**props, "hba": props["hba"] + "host all all 127.0.0.1/32 no-such-method\n"}
    with pytest.raises(RemoteError) as err:
        provider.update(database.id, outs(database), broken)
    assert "PostgreSQL cannot parse" in str(err.value)
    assert Path(hba_file).read_text() == before
    assert estate.psql("SELECT pg_conf_load_time()") == loaded
    assert not Path(f"{hba_file}.bluegreen-previous").exists()


def test_sql_errors_never_show_the_password(estate: Estate, database: dyn.CreateResult,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "Sup3r-Secret'Value"
    escaped = secret.replace("'", "''")
    props = {**postgres_props(estate.t, Sensitive(DB_PASSWORD)),
             "sql": f"ALTER ROLE {estate.t.database.user} WITH PASSWORD '{escaped}' NONSENSE;\n"}
    with pytest.raises(RemoteError) as err:
        engine_copy(PostgresDatabaseDynamicProvider()).update(database.id, outs(database), props)
    message = str(err.value)
    assert "ERROR:" in message and "NONSENSE" in message, "PostgreSQL's own words, with the statement"
    assert "[REDACTED]" in message
    for text in (message, caplog.text):
        assert secret not in text and escaped not in text


# --------------------------------------------------------------------------- the whole estate


def test_apply_estate_converges_then_changes_nothing(estate: Estate, haproxy: dyn.CreateResult,
                                                     database: dyn.CreateResult) -> None:
    t = estate.t
    password = Sensitive(DB_PASSWORD)
    executors = {c.vmid: estate.executor(str(c.vmid)) for c in t.containers}
    try:
        with closing(executors[t.load_balancer.vmid]) as lb:
            hr.set_live_color(lb, estate.paths, "green", render_live_map(t, "green"))
        # The estate serves green, the stack declares blue: refused, naming the file; nothing moves.
        with pytest.raises(ConfigError, match=rf"serves green .*stacks/Pulumi\.{t.stack}\.yaml declares "
                                              r"bluegreen:activeColor: blue"):
            apply_estate(t, password, executor_for=executors)
        assert served_by(t.public_url) == "green"
        # Declared as served: converges without touching the routing.
        t = dataclasses.replace(t, active_color="green")
        first = apply_estate(t, password, executor_for=executors)
        assert not any("routing" in line for line in first)
        assert served_by(t.public_url) == "green"
        for color in ("blue", "green"):
            eco = ecosystem_props(t, color)
            assert Path(eco["path"]).read_text() == eco["ecosystem"]
        before = proc_table(estate)
        second = apply_estate(t, password, executor_for=lambda c: executors[c.vmid])
        assert second == []
        assert proc_table(estate).reloads == before.reloads
        with closing(estate.executor("loadbalancer")) as lb:
            hr.set_live_color(lb, estate.paths, "blue", render_live_map(t, "blue"))
    finally:
        for ex in executors.values():
            ex.close()
