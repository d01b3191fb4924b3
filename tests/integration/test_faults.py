"""Faults injected into real operations on the lab, each under a request loop through the public
frontend.

For every fault the same promises are checked: the request loop sees no failed request (the live
colour is never touched by a failing deploy or a refused switch), nothing is lost (the journal is
intact and parses, the standby's previous release is intact and `current` still points at it,
every database backup is still there byte for byte), the deployment lock ends released (or, when
the tool itself dies, visibly stale and naming its holder), and the user gets one BlueGreenError
whose message names the host and the step.

Faults: the SSH connection dropped before each command a deploy runs on the standby; the
standby's app killed (PM2 daemon and app processes, by pid) when a switch starts, and the new
live colour's app killed right after the flip; HAProxy refusing a new configuration (rejected by
`haproxy -c`, a listener another program holds, refused by the master at reload); a full backup
volume (a tiny tmpfs mounted over the backup directory); the CLI SIGKILLed while it holds the
lock; the Proxmox API refusing a request or failing its task (an in-process fakepve with fault
injection).

Tests work on a copy of the project (switches record the live colour in the stack file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import pwd
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bluegreen.hosts import haproxy as haproxy_runtime
from bluegreen.hosts import health
from bluegreen.hosts.executor import Executor, SshExecutor, connect
from bluegreen.hosts.providers import HaproxyConfigProvider, haproxy_config_props
from bluegreen.hosts.pve import snapshot_name
from bluegreen.lab.lab import Lab
from bluegreen.lab.loadgen import LoadReport, RequestLoop
from bluegreen.lab.pve import InProcessPve, serve_fakepve
from bluegreen.lab.repo import publish_variant
from bluegreen.lab.services import ManagedProcess
from bluegreen.model import migrations
from bluegreen.model.errors import BlueGreenError, DeployError, LockedError, ProxmoxError, RemoteError, SwitchError
from bluegreen.model.journal import State, parse_state
from bluegreen.model.progress import RecordingProgress, StepRecord
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import Container, Topology, other_color
from bluegreen.ops.deploy import deploy
from bluegreen.ops.estate import Estate
from bluegreen.ops.rollback import rollback_snapshot
from bluegreen.ops.status import lock_release, lock_status
from bluegreen.ops.switch import switch
from bluegreen.render import commands as cmd
from tests.integration.support import (
    LOCK_WAIT_S,
    InterceptingExecutor,
    copy_project,
    live_color,
    serve_both_colours,
    wait_backends_up,
)

pytestmark = pytest.mark.integration

STACK = "lab"
BLUEGREEN = Path(sys.executable).with_name("bluegreen")
# Few clients with a short pause: enough traffic to catch any failed request, little enough
# CPU that the deploys under test run at their normal pace on a two-core machine.
CLIENTS = 4
CLIENT_PAUSE_S = 0.005
HEALTH_WAIT_S = 60.0

# Every step that runs a command on the standby during a deploy of a ref with no pending
# migration, in order (bluegreen/service.py, `_DeployRun.execute`).
STANDBY_DEPLOY_STEPS = ("fetch", "read release", "export release", "install dependencies", "build",
                        "list migrations", "checksum migrations", "point current", "pm2 reload",
                        "prune releases")


# --------------------------------------------------------------------------- the estate


@pytest.fixture(scope="module")
def project(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(lab.project_dir, tmp_path_factory.mktemp("faults-project"))


def topology(project: Path) -> Topology:
    # Read again each time: a switch records the new colour in the stack file.
    return load_stack(project, STACK)


def wait_unlocked(t: Topology) -> None:
    """Other test sessions share the lab: wait until nobody holds the deployment lock."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while lock_status(Estate(t)) is not None:
        if time.monotonic() >= deadline:
            pytest.fail(f"the deployment lock stayed taken for {LOCK_WAIT_S:g}s: {lock_status(Estate(t))}")
        time.sleep(1.0)


@pytest.fixture(scope="module")
def estate(project: Path) -> Path:
    """Both colours serve a release and the live one is healthy; returns the project copy."""
    serve_both_colours(project)
    return project


# --------------------------------------------------------------------------- what must survive


@dataclass(frozen=True)
class Standby:
    color: str
    current: str  # the release directory `current` resolves to
    revision: str
    releases: frozenset[str]


@dataclass(frozen=True)
class EstateSnapshot:
    live: str
    standby: Standby
    backups: Mapping[str, str]  # file name -> sha256
    journal: State
    config_sha: str  # haproxy.cfg on the load balancer


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def capture(t: Topology) -> EstateSnapshot:
    live = live_color(t)
    standby = other_color(live)
    host = t.app_host(standby)
    paths = cmd.AppPaths.of(t, host)
    with connect(t, host) as ex:
        current, revision = ex.run(cmd.read_current(paths), step="read release").stdout.split("\n")[:2]
        names = ex.run(f"ls -1 {cmd.sh(paths.releases)} 2>/dev/null || true", step="list releases").stdout
    db = t.database_host
    folder = db.path(t.database.backup_dir)
    with connect(t, db) as ex:
        sums = ex.run(f"cd {cmd.sh(folder)} 2>/dev/null && sha256sum -- *.dump 2>/dev/null || true",
                      step="checksum backups").stdout
    backups = {line.split(None, 1)[1].lstrip("*"): line.split()[0]
               for line in sums.splitlines() if line.strip()}
    lb = t.load_balancer
    with connect(t, lb) as ex:
        raw = ex.get(lb.path(t.journal.path), step="read the journal")
        config = ex.get(lb.path(t.haproxy.config_path), step="read haproxy.cfg") or b""
    journal = parse_state(raw.decode() if raw is not None else None, source="state.json",
                          declared_color=live)
    return EstateSnapshot(live=live, standby=Standby(standby, current.strip(), revision.strip(),
                                             frozenset(names.split())),
                  backups=backups, journal=journal, config_sha=_sha(config))


def new_history(before: State, after: State) -> list[Mapping[str, Any]]:
    """Entries `after` added on top of `before` (history is newest first and may be trimmed)."""
    old, new = list(before.history), list(after.history)
    for added in range(len(new) + 1):
        kept = new[added:]
        # With earlier entries there, some must remain: a journal started afresh lost them.
        if kept == old[:len(kept)] and (kept or not old):
            return new[:added]
    raise AssertionError("the journal lost or changed earlier entries:\n"
                         f"before: {json.dumps(old[:5], indent=1)}\nafter: {json.dumps(new[:5], indent=1)}")


def assert_nothing_lost(t: Topology, before: EstateSnapshot, *, same_live: bool = True) -> EstateSnapshot:
    after = capture(t)
    if same_live:
        assert after.live == before.live, f"the live colour moved from {before.live} to {after.live}"
    assert after.standby.color == before.standby.color
    assert after.standby.current == before.standby.current, (
        f"{before.standby.color}'s current moved from {before.standby.current} to {after.standby.current}")
    assert after.standby.revision == before.standby.revision and before.standby.revision
    missing = before.standby.releases - after.standby.releases
    assert not missing, f"releases disappeared from {before.standby.color}: {sorted(missing)}"
    for name, digest in before.backups.items():
        assert after.backups.get(name) == digest, f"backup {name} is gone or changed"
    new_history(before.journal, after.journal)
    assert after.config_sha == before.config_sha, "haproxy.cfg changed"
    return after


def assert_standby_serves(t: Topology, color: str, revision: str) -> None:
    """The standby's app answers health with the release it had before (not just the symlink)."""
    url = f"http://{t.app_host(color).ip}:{t.app.port}{t.app.health_path}"

    def probe() -> health.ProbeResult:
        result = health.http_probe(url)
        commit = _commit(result)
        if result.ok and commit != revision:
            return dataclasses.replace(result, ok=False, error=f"serves {commit}")
        return result

    result = health.poll(probe, deadline_s=HEALTH_WAIT_S, interval_s=0.5)
    assert result.ok, f"{color} does not serve {revision[:7]} again: {result.describe()}"


def _commit(result: health.ProbeResult) -> str | None:
    try:
        body = json.loads(result.body)
    except ValueError:
        return None
    return body.get("commit") if isinstance(body, dict) else None


def assert_unlocked(t: Topology) -> None:
    """Our operations run in this process: a lock naming our pid was left behind by them. (Another
    session on the shared lab may hold the lock by now; that one is not ours to judge.)"""
    lock = lock_status(Estate(t))
    assert lock is None or lock.get("pid") != os.getpid(), f"the deployment lock was left behind: {lock}"


def assert_clear_error(error: BaseException, host: str, step: str) -> None:
    message = str(error)
    assert isinstance(error, BlueGreenError), f"{type(error).__name__} is not a BlueGreenError: {message}"
    assert host in message, f"the message does not name the host {host!r}: {message}"
    assert step in message, f"the message does not name the step {step!r}: {message}"
    assert "Traceback" not in message


@contextlib.contextmanager
def traffic(t: Topology) -> Iterator[RequestLoop]:
    """A steady request loop on the public frontend for the whole block (and a bit either side)."""
    loop = RequestLoop.visitor(t, "/", clients=CLIENTS, pause=CLIENT_PAUSE_S, max_seconds=900)
    with loop:
        loop.wait_for(40)
        yield loop
        loop.wait_for(40)


def assert_no_failures(report: LoadReport) -> None:
    """Nothing failed, and nothing needed the loop's one retry: none of these faults reloads
    HAProxy, so no connection may close under a client."""
    assert report.total > 0, "the request loop sent nothing"
    assert not report.failures, f"requests failed during the fault: {report.summary()}"
    assert report.retried == 0, f"connections closed under clients during the fault: {report.summary()}"


@dataclass
class Attempt:
    before: EstateSnapshot
    error: BlueGreenError | None = None
    result: Any = None


def attempt(t: Topology, action: Callable[[EstateSnapshot], Any]) -> Attempt:
    """Capture the estate, then run `action(before)`; its BlueGreenError is the outcome.

    The lab is shared with other test sessions: if one of them holds the lock, nothing of ours
    ran yet, so wait, capture again (they may have changed the estate) and retry.
    """
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        wait_unlocked(t)
        before = capture(t)
        try:
            return Attempt(before, result=action(before))
        except LockedError:
            if time.monotonic() >= deadline:
                raise
        except BlueGreenError as exc:
            return Attempt(before, error=exc)


# --------------------------------------------------------------------------- 1. SSH drops


class _DroppingExecutor(InterceptingExecutor):
    """Delegates to an SSH executor, but kills its connection right before the fault's step."""

    def __init__(self, inner: SshExecutor, fault: DropBeforeStep) -> None:
        super().__init__(inner)
        self.fault = fault

    def before(self, step: str, operation: str) -> None:
        self.fault.seen.append(step)
        if not self.fault.fired and step == self.fault.step:
            self.fault.fired = True
            transport = self.inner.connect().get_transport()
            assert transport is not None
            transport.close()


@dataclass
class DropBeforeStep:
    """An executor factory for Service: the connection to `host` dies before `step`'s command."""

    t: Topology
    host: Container
    step: str
    fired: bool = False
    seen: list[str] = dataclasses.field(default_factory=list)

    def __call__(self, container: Container) -> Executor:
        inner = connect(self.t, container)
        if container.vmid != self.host.vmid:
            return inner
        return _DroppingExecutor(inner, self)


@pytest.mark.parametrize("step", STANDBY_DEPLOY_STEPS)
def test_ssh_drop_at_each_deploy_step_loses_nothing(estate: Path, step: str) -> None:
    t = topology(estate)
    faults: list[DropBeforeStep] = []

    def deploy_dropping(before: EstateSnapshot) -> Any:
        faults.append(DropBeforeStep(t, t.app_host(before.standby.color), step))
        return deploy(Estate(t, executor_factory=faults[-1]), "main", migrate=True, snapshot=False)

    with traffic(t) as loop:
        outcome = attempt(t, deploy_dropping)
    before, fault = outcome.before, faults[-1]
    host = fault.host
    assert fault.fired, f"the deploy never ran step {step!r} on {host.label}; it ran {fault.seen}"
    assert_no_failures(loop.report)
    assert isinstance(outcome.error, DeployError), outcome
    assert_clear_error(outcome.error, host.label, step)
    assert "connection lost" in str(outcome.error)
    after = assert_nothing_lost(t, before)
    assert_unlocked(t)
    recorded = [e for e in new_history(before.journal, after.journal) if e.get("type") == "deploy"]
    assert recorded, "the failed deploy was not recorded in the journal"
    assert recorded[0].get("result") == "failed" and step in str(recorded[0].get("error")), recorded
    assert_standby_serves(t, before.standby.color, before.standby.revision)


# --------------------------------------------------------------------------- 2. the app dies


def _app_pids(t: Topology, ex: Executor, paths: cmd.AppPaths) -> list[int]:
    raw = ex.run(cmd.pm2_jlist(t, paths), step="pm2 jlist").stdout
    items = json.loads(raw[raw.find("["):]) if "[" in raw else []
    return [int(i["pid"]) for i in items if i.get("name") == t.app.name and i.get("pid")]


def kill_app(t: Topology, color: str) -> list[int]:
    """SIGKILL the colour's PM2 daemon (so nothing restarts the app) and its app processes, by pid."""
    host = t.app_host(color)
    paths = cmd.AppPaths.of(t, host)
    with connect(t, host) as ex:
        apps = _app_pids(t, ex, paths)
        assert apps, f"no {t.app.name} processes in pm2 jlist on {host.label}"
        # The daemon's pid file may outlive it: trust the pid only if it is that colour's PM2.
        daemon = ManagedProcess("pm2", Path(paths.pm2_home) / "pm2.pid", expect="God Daemon",
                                expect_env={"PM2_HOME": paths.pm2_home}).pid()
        pids = [daemon, *apps] if daemon is not None else apps
        ex.run("kill -KILL " + " ".join(map(str, pids)) + " 2>/dev/null; true", step="kill the app")
        waited = ex.run("for i in $(seq 100); do alive=0; for p in " + " ".join(map(str, pids))
                        + "; do kill -0 $p 2>/dev/null && alive=1; done; [ $alive = 0 ] && exit 0; "
                        "sleep 0.05; done; exit 1", step="wait for the app to die", check=False)
        assert waited.ok, f"processes {pids} on {host.label} survived SIGKILL"
    return pids


def restart_app(t: Topology, color: str, revision: str) -> None:
    """Bring a killed app back, until HAProxy's health checks see it UP again (`rise` checks):
    the next switch's pre-switch checks rightly refuse a backend HAProxy still marks DOWN."""
    host = t.app_host(color)
    with connect(t, host) as ex:
        ex.run(cmd.pm2_reload(t, cmd.AppPaths.of(t, host)), step="restart the app")
    assert_standby_serves(t, color, revision)
    wait_backends_up(t, (color,))


def test_standby_app_killed_as_a_switch_starts_is_refused_and_live_keeps_serving(estate: Path) -> None:
    t = topology(estate)
    killed: list[int] = []

    def switch_killing(before: EstateSnapshot) -> Any:
        def kill_at_checks(event: str, record: StepRecord) -> None:
            if event == "start" and record.name == "pre-switch checks" and not killed:
                killed.extend(kill_app(t, before.standby.color))

        return switch(Estate(t, progress=RecordingProgress(listener=kill_at_checks)), watch=True)

    with traffic(t) as loop:
        outcome = attempt(t, switch_killing)
    before = outcome.before
    standby = before.standby.color
    try:
        assert killed, "the switch never reached its pre-switch checks"
        assert_no_failures(loop.report)
        assert isinstance(outcome.error, SwitchError), outcome
        assert_clear_error(outcome.error, t.app_host(standby).ip, "not healthy")
        assert f"refusing to switch to {standby}" in str(outcome.error)
        assert_nothing_lost(t, before)
        assert_unlocked(t)
    finally:
        if killed:
            restart_app(t, standby, before.standby.revision)


def test_new_live_app_killed_right_after_the_flip_is_switched_back(estate: Path) -> None:
    """The other order: the app dies once traffic already moved. No guard before the flip can see
    that; the watch must, and must put traffic back where it was."""
    t = topology(estate)
    killed: list[int] = []

    def switch_killing(before: EstateSnapshot) -> Any:
        def kill_after_flip(event: str, record: StepRecord) -> None:
            if event == "end" and record.name.startswith("flip live traffic") and not killed:
                killed.extend(kill_app(t, before.standby.color))

        return switch(Estate(t, progress=RecordingProgress(listener=kill_after_flip)), watch=True)

    with traffic(t) as loop:
        outcome = attempt(t, switch_killing)
        returned = time.monotonic()
    before, result = outcome.before, outcome.result
    old, new = before.live, before.standby.color
    try:
        assert killed, f"the switch never flipped: {outcome}"
        assert outcome.error is None, f"a failed switch should come back as a result: {outcome.error}"
        assert not result.ok and result.rolled_back, result.to_json()
        assert result.error and old in result.error, result.to_json()
        assert live_color(t) == old
        late = [s for s in loop.report.failures if s.started >= returned]
        assert not late, f"requests still failed after the switch back returned: {late[:5]}"
        after = assert_nothing_lost(t, before, same_live=True)
        added = new_history(before.journal, after.journal)
        switches = [e for e in added if e.get("type", "switch") == "switch"]
        assert [(e.get("from"), e.get("to")) for e in switches] == [(new, old), (old, new)], switches
        assert_unlocked(t)
    finally:
        if killed:
            restart_app(t, new, before.standby.revision)


# --------------------------------------------------------------------------- 3. HAProxy refuses


def _worker_pids(t: Topology) -> frozenset[int]:
    with connect(t, t.load_balancer) as lb:
        return haproxy_runtime.show_proc(lb, t).worker_pids


def _candidate_exists(t: Topology) -> bool:
    from bluegreen.hosts.hostconfig import candidate_path

    path = candidate_path(t.load_balancer.path(t.haproxy.config_path))
    with connect(t, t.load_balancer) as lb:
        return lb.get(path, step="look for the candidate") is not None


def _with_maxconn(config: str, t: Topology, value: int) -> str:
    line = f"maxconn {t.haproxy.maxconn}"
    assert line in config, f"no {line!r} in the rendered config"
    return config.replace(line, f"maxconn {value}", 1)


def _with_frontend(config: str, t: Topology, bind: str) -> str:
    return config + f"\nfrontend fe_taken\n    bind {bind}\n    default_backend bk_blue\n"


# (fault, how the new config is made, the step the error names, what it says)
HAPROXY_FAULTS = [
    pytest.param("rejected by haproxy -c",
                 lambda c, t: c + "\nbackend bk_broken\n    option no-such-option\n",
                 "validate the HAProxy configuration", "no-such-option", id="invalid"),
    pytest.param("a listener sshd holds",
                 lambda c, t: _with_frontend(c, t, f"{t.load_balancer.ip}:{t.ssh.port}"),
                 "check new listeners", "already in use", id="port-taken"),
    # Passes `haproxy -c` and the listener check; the master itself refuses it at reload (the
    # open-file limit cannot be raised that far), so this is HAProxy rejecting a reload.
    pytest.param("more connections than file descriptors",
                 lambda c, t: _with_maxconn(c, t, 200_000),
                 "reload HAProxy", "refused the new configuration", id="reload-refused"),
    pytest.param("a taken listener written as ipv4@address:port",
                 lambda c, t: _with_frontend(c, t, f"ipv4@{t.load_balancer.ip}:{t.ssh.port}"),
                 "check new listeners", "already in use", id="port-taken-ipv4-prefix"),
    pytest.param("a taken listener written as a wildcard",
                 lambda c, t: _with_frontend(c, t, f"*:{t.ssh.port}"),
                 "check new listeners", "already in use", id="port-taken-wildcard"),
]


@pytest.mark.parametrize(("fault", "make", "step", "says"), HAPROXY_FAULTS)
def test_haproxy_config_it_cannot_run_is_refused_and_the_old_one_keeps_serving(
        estate: Path, fault: str, make: Callable[[str, Topology], str], step: str, says: str) -> None:
    t = topology(estate)
    workers = _worker_pids(t)
    props = haproxy_config_props(t)
    broken = {**props, "config": make(props["config"], t)}
    with traffic(t) as loop:
        outcome = attempt(t, lambda _: HaproxyConfigProvider().update("haproxy", props, broken))
    before = outcome.before
    assert_no_failures(loop.report)
    assert isinstance(outcome.error, RemoteError), outcome
    assert_clear_error(outcome.error, t.load_balancer.label, step)
    assert says in str(outcome.error), fault
    assert_nothing_lost(t, before)
    assert _worker_pids(t) == workers, "the workers serving before were replaced"
    assert not _candidate_exists(t), "the rejected candidate file was left next to haproxy.cfg"


# --------------------------------------------------------------------------- 4. backups


FULL_VOLUME_MIGRATION = "20990101000000_fault_backup_note"


def _postgres_ids() -> tuple[int, int]:
    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


@contextlib.contextmanager
def full_volume(folder: Path) -> Iterator[Path]:
    """A tiny tmpfs over `folder` holding copies of its backups and a filler up to the last byte.

    Models the backup disk running full (ENOSPC), the usual way nightly dumps start failing. The
    files under the mount are untouched; the mount is removed on the way out.
    """
    folder.mkdir(parents=True, exist_ok=True)
    existing = {p.name: p.read_bytes() for p in sorted(folder.glob("*.dump"))}
    uid, gid = _postgres_ids()
    size = sum(len(b) for b in existing.values()) + 256 * 1024
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0750,uid={uid},gid={gid}",
                              "bluegreen-fault", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        for name, data in existing.items():
            (folder / name).write_bytes(data)
        # Unbuffered, so the write that hits ENOSPC is the last one (a buffer would retry at close).
        fd = os.open(folder / ".filler", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        finally:
            os.close(fd)
        yield folder
    finally:
        for attempt in range(20):
            if subprocess.run(["umount", str(folder)], capture_output=True).returncode == 0:
                break
            time.sleep(0.2 * (attempt + 1))
        else:
            subprocess.run(["umount", "-l", str(folder)], check=True)


def _applied_migrations(t: Topology) -> set[str]:
    db = t.database_host
    with connect(t, db) as ex:
        out = ex.run(cmd.psql(t, db, migrations.applied_rows_query()), step="read migrations", check=False)
    return {r.migration_name for r in migrations.parse_applied(out.stdout, out.stderr, out.exit_code)}


def test_full_backup_volume_stops_the_deploy_before_it_migrates(lab: Lab, estate: Path) -> None:
    t = topology(estate)
    branch = "fault-backup-full"
    publish_variant(lab.paths.sample_repo, base="main", branch=branch,
                    message="fault test: one more migration",
                    changes={f"prisma/migrations/{FULL_VOLUME_MIGRATION}/migration.sql":
                             '-- additive: the live colour keeps working\nALTER TABLE "Shift" ADD COLUMN '
                             '"faultNote" TEXT;\n'})
    assert FULL_VOLUME_MIGRATION not in _applied_migrations(t)
    db = t.database_host
    folder = Path(db.path(t.database.backup_dir))
    with full_volume(folder) as full:
        inside_before = {p.name: _sha(p.read_bytes()) for p in full.iterdir()}
        with traffic(t) as loop:
            outcome = attempt(t, lambda _: deploy(Estate(t), branch, migrate=True, snapshot=False))
        inside_after = {p.name: _sha(p.read_bytes()) for p in full.iterdir()}
    before = outcome.before
    assert_no_failures(loop.report)
    assert isinstance(outcome.error, DeployError), outcome
    assert_clear_error(outcome.error, db.label, "back up the database")
    assert "No space left on device" in str(outcome.error)
    assert inside_after == inside_before, "the failed dump left a file behind or changed one"
    assert FULL_VOLUME_MIGRATION not in _applied_migrations(t), "migrated without a backup"
    assert_nothing_lost(t, before)
    assert_unlocked(t)


# --------------------------------------------------------------------------- 5. the tool dies


def _cli(project: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BLUEGREEN), *args, "--stack", STACK, "--cwd", str(project)],
                          capture_output=True, text=True, timeout=timeout)


def _read_until(proc: subprocess.Popen[str], needle: str, timeout: float) -> tuple[bool, list[str]]:
    """Read the process's stderr until a line holds `needle`; (found, lines read)."""
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if needle in line:
            return True, lines
    return False, lines


def kill_deploy_at(t: Topology, project: Path, needle: str) -> tuple[int, EstateSnapshot]:
    """Start `bluegreen deploy`, SIGKILL it by its pid once it prints `needle`; (pid, estate before)."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        wait_unlocked(t)
        before = capture(t)
        proc = subprocess.Popen([str(BLUEGREEN), "deploy", "--ref", "main", "--yes", "--no-snapshot",
                                 "--stack", STACK, "--cwd", str(project)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            found, lines = _read_until(proc, needle, timeout=180)
            if found:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return proc.pid, before
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            if proc.stderr is not None:
                proc.stderr.close()
        # Another session held the lock: nothing of ours ran; try again once it is free.
        if "deployment lock" not in "\n".join(lines) or time.monotonic() >= deadline:
            raise AssertionError(f"`bluegreen deploy` never printed {needle!r}: {lines[-20:]}")


def test_tool_killed_holding_the_lock_leaves_it_stale_with_its_holder(estate: Path) -> None:
    t = topology(estate)
    with traffic(t) as loop:
        pid, before = kill_deploy_at(t, estate, ".. build")
        try:
            shown = _cli(estate, "lock", "status", "--json")
            assert shown.returncode == 0, shown.stderr
            lock = json.loads(shown.stdout)["lock"]
            assert lock is not None, "the killed deploy's lock is gone: nobody could tell it was interrupted"
            assert lock["stale"] is True, lock
            assert lock["operation"] == "deploy" and lock["holder"], lock
            assert str(pid) in json.dumps(lock), f"the lock does not name the dead pid {pid}: {lock}"

            refused = _cli(estate, "deploy", "--ref", "main", "--yes", "--no-snapshot")
            assert refused.returncode == 1, refused.stderr
            assert "STALE" in refused.stderr and "lock release --force" in refused.stderr, refused.stderr
            assert "Traceback" not in refused.stderr

            released = _cli(estate, "lock", "release", "--force", "--json")
            assert released.returncode == 0, released.stderr
            assert json.loads(released.stdout)["released"], released.stdout
            again = json.loads(_cli(estate, "lock", "status", "--json").stdout)["lock"]
            # Free, or already taken by another session sharing the lab: either way not the dead one.
            assert again is None or again.get("pid") != pid, again
        finally:
            # A failed assertion must not leave the shared lab locked for everyone else.
            left = lock_status(Estate(t))
            if left is not None and left.get("pid") == pid:
                lock_release(Estate(t), force=True)
    assert_no_failures(loop.report)
    assert_nothing_lost(t, before)
    assert_standby_serves(t, before.standby.color, before.standby.revision)


# --------------------------------------------------------------------------- 6. Proxmox


@pytest.fixture
def pve_node(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InProcessPve]:
    """The lab's node served in this process, so its faults can be injected."""
    monkeypatch.delenv("PROXMOX_VE_API_TOKEN", raising=False)
    with serve_fakepve(tmp_path / "pve", lab.topology) as node:
        yield node


def on_node(t: Topology, node: InProcessPve, token_file: Path) -> Topology:
    return dataclasses.replace(t, proxmox=dataclasses.replace(
        t.proxmox, endpoint=node.endpoint, ca_file=str(node.ca_file), token_file=str(token_file),
        token_id=node.token_id))


@pytest.mark.parametrize(("fault", "says"), [
    ("no_quorum", "no quorum"),
    ("permission_denied", "Permission check failed"),
    ("snapshot_feature_not_available", "snapshot feature is not available"),
    ("token revoked", "was refused"),
])
def test_proxmox_refusing_or_failing_the_snapshot_stops_the_deploy_first(
        estate: Path, pve_node: InProcessPve, tmp_path: Path, fault: str, says: str) -> None:
    t = on_node(topology(estate), pve_node, tmp_path / "pve" / "token")
    if fault == "token revoked":
        pve_node.call(pve_node.pve.apitokens.pop, pve_node.token_id)
    else:
        for vmid in (c.vmid for c in t.app_hosts.values()):
            pve_node.call(pve_node.pve.fail, "POST", f"/nodes/{t.proxmox.node}/lxc/{vmid}/snapshot", error=fault)
    with traffic(t) as loop:
        outcome = attempt(t, lambda _: deploy(Estate(t), "main", migrate=True, snapshot=True))
    before = outcome.before
    vmid = t.app_host(before.standby.color).vmid
    assert_no_failures(loop.report)
    assert isinstance(outcome.error, DeployError), outcome
    assert_clear_error(outcome.error, f"CT {vmid}", "snapshot")
    assert says in str(outcome.error), fault
    assert pve_node.token_secret.reveal() not in str(outcome.error)
    after = assert_nothing_lost(t, before)
    assert after.standby.releases == before.standby.releases, "the deploy went on past the failed snapshot"
    assert_unlocked(t)


def test_snapshot_rollback_of_a_locked_container_is_refused_in_pves_words(
        estate: Path, pve_node: InProcessPve, tmp_path: Path) -> None:
    t = on_node(topology(estate), pve_node, tmp_path / "pve" / "token")
    client = pve_node.client()
    vmids = [c.vmid for c in t.app_hosts.values()]
    for vmid in vmids:
        client.snapshot(vmid, snapshot_name("fault", datetime.now(UTC)), "fault test")
        pve_node.call(pve_node.pve.snapshot_lock, vmid, "backup")
    with traffic(t) as loop:
        outcome = attempt(t, lambda _: rollback_snapshot(Estate(t)))
    before = outcome.before
    vmid = t.app_host(before.standby.color).vmid
    assert_no_failures(loop.report)
    assert isinstance(outcome.error, ProxmoxError), outcome
    assert_clear_error(outcome.error, f"CT {vmid}", "rollback")
    assert "locked" in str(outcome.error)
    assert_nothing_lost(t, before)
    assert_unlocked(t)
