"""Issue 12 on the lab: emergency rollback under each fault, the automation flip through the
recording Pulumi fake, interrupts at deploy step boundaries and between a flip and its record,
and two processes racing for the lock.

Every test ends by checking the three truths: the traffic is on the intended colour (HAProxy's
map and the public frontend agree), the journal says so, and the stack file declares it (or, in
automation mode after an emergency, status names the drift and the command that reconciles it).
Tests work on a copy of the project (a switch records the live colour in the stack file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bluegreen.hosts import haproxy as haproxy_runtime
from bluegreen.hosts import journal as host_journal
from bluegreen.hosts import visitor
from bluegreen.hosts.executor import connect
from bluegreen.hosts.lock import LockManager
from bluegreen.lab.lab import Lab
from bluegreen.model import journal as journal_model
from bluegreen.model.errors import PulumiError, RemoteError
from bluegreen.model.journal import State, parse_state
from bluegreen.model.lock import LockInfo
from bluegreen.model.stackfile import load_stack, set_active_color_in_file
from bluegreen.model.topology import Topology, other_color
from bluegreen.ops import emergency, signals
from bluegreen.ops.estate import Estate
from bluegreen.ops.status import history, lock_status, status
from bluegreen.ops.switch import plan_switch, switch
from bluegreen.render import commands as cmd
from tests.integration.support import (
    InterceptingExecutor,
    copy_project,
    live_color,
    serve_both_colours,
    wait_backends_up,
)
from tests.unit.test_pulumi_seam import DIY_LOCKED, FakePulumi

pytestmark = pytest.mark.integration

STACK = "lab"
BLUEGREEN = Path(sys.executable).with_name("bluegreen")


@pytest.fixture(scope="module")
def project(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(lab.project_dir, tmp_path_factory.mktemp("emergency-project"))


def topology(project: Path) -> Topology:
    return load_stack(project, STACK)


@pytest.fixture(scope="module")
def estate(project: Path) -> Path:
    """Both colours serve a release that deployed ok; the live one is healthy. These tests deploy
    `main` without --migrate, so the database gets its migrations first."""
    serve_both_colours(project, direct=True, main_migrated=True)
    return project


def cli(project: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BLUEGREEN), *args, "--stack", STACK, "--cwd", str(project)],
                          capture_output=True, text=True, timeout=timeout)


def journal_text(t: Topology) -> bytes | None:
    with connect(t, t.load_balancer) as lb:
        return lb.get(t.load_balancer.path(t.journal.path), step="read the journal")


def journal(t: Topology) -> State:
    """The journal as the next command reads it (side-file entries folded in)."""
    raw = journal_text(t)
    state = parse_state(raw.decode() if raw is not None else None, declared_color=live_color(t))
    with connect(t, t.load_balancer) as lb:
        return host_journal.fold_pending(lb, t.load_balancer.path(t.journal.path), state, t.journal.history_keep)


def served_by_public(t: Topology) -> str | None:
    return visitor.served_by(f"{t.public_url}{t.app.health_path}", ca_file=t.haproxy.ca_file,
                        server_name=t.tls_server_name)[1]


def assert_true_state(project: Path, color: str, *, declared: str | None = None) -> None:
    """Traffic on `color` (map and public frontend), the journal's prod, the declared colour."""
    t = topology(project)
    assert live_color(t) == color, f"HAProxy routes to {live_color(t)}, expected {color}"
    assert served_by_public(t) == color
    assert journal(t).prod == color, f"the journal says {journal(t).prod} is live, HAProxy serves {color}"
    assert t.active_color == (declared or color), f"the stack declares {t.active_color}"


def lock_now(t: Topology) -> dict[str, Any] | None:
    return lock_status(Estate(t))


def wait_free(t: Topology, timeout: float = 120) -> None:
    """The lock free, both colour backends UP (a restarted database takes the apps' health checks
    a moment), and the copy's declared colour the live one: a known start for every test."""
    deadline = time.monotonic() + timeout
    while lock_now(t) is not None:
        assert time.monotonic() < deadline, f"the lock stayed taken: {lock_now(t)}"
        time.sleep(0.5)
    wait_backends_up(t, timeout=max(1.0, deadline - time.monotonic()))
    set_active_color_in_file(t.project_dir, STACK, live_color(t))


def emergency_rollback(project: Path) -> dict[str, Any]:
    started = time.monotonic()
    done = cli(project, "rollback", "--emergency", "--yes", "--json")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    data = json.loads(done.stdout)
    data["_elapsed"] = elapsed
    return data


def read_until(proc: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    from tests.integration.test_faults import _read_until

    found, lines = _read_until(proc, needle, timeout)
    assert found, f"never printed {needle!r}: {lines[-20:]}"
    return lines


# --------------------------------------------------------------------------- emergency under faults


def test_emergency_rollback_preempts_a_running_deploy_which_stops_and_restores(estate: Path) -> None:
    wait_free(topology(estate))
    t = topology(estate)
    live = live_color(t)
    standby = other_color(live)
    host = t.app_host(standby)
    paths = cmd.AppPaths.of(t, host)
    with connect(t, host) as ex:
        before = cmd.parse_current(ex.run(cmd.read_current(paths), step="read").stdout)
    deploy = subprocess.Popen([str(BLUEGREEN), "deploy", "--ref", "main", "--yes", "--no-snapshot",
                               "--stack", STACK, "--cwd", str(estate)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        read_until(deploy, ".. install dependencies", 180)
        data = emergency_rollback(estate)
        assert data["colour"] == standby and data["from"] == live
        assert data["preempted"]["operation"] == "deploy" and data["preempted"]["pid"] == deploy.pid
        assert data["recordedIn"] == "journal"
        _, err = deploy.communicate(timeout=600)
    finally:
        if deploy.poll() is None:
            deploy.kill()
            deploy.wait()
    assert deploy.returncode == 1, err
    assert "lock" in err and "Traceback" not in err
    state = journal(t)
    newest_switch = next(e for e in state.history if e.get("type", "switch") == "switch")
    assert newest_switch["emergency"] is True and newest_switch["preempted"]["pid"] == deploy.pid
    failed = state.last_deploy(standby)
    assert failed is not None and failed.result == "failed" and "lock" in (failed.error or "")
    with connect(t, host) as ex:
        after = cmd.parse_current(ex.run(cmd.read_current(paths), step="read").stdout)
    assert after.path == before.path, "the pre-empted deploy left the new release in place"
    wait_free(t)
    assert_true_state(estate, standby)


def test_emergency_rollback_takes_over_the_lock_of_a_killed_process(estate: Path) -> None:
    wait_free(topology(estate))
    t = topology(estate)
    live = live_color(t)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = LockInfo(holder="alice@laptop", host=os.uname().nodename, pid=child.pid, operation="deploy",
                    started=time.time() - 30, heartbeat=time.time() - 30, token="deadbeef")
    with connect(t, t.load_balancer) as lb:
        lb.put(t.load_balancer.path(t.journal.lock_path), dead.to_file(), step="plant a dead lock")
    data = emergency_rollback(estate)
    assert data["colour"] == other_color(live)
    assert data["preempted"]["pid"] == child.pid
    assert lock_now(t) is None, "the emergency left a lock behind"
    assert_true_state(estate, other_color(live))


def test_emergency_rollback_with_a_corrupt_journal_records_beside_it_and_the_next_command_folds_it(
        estate: Path) -> None:
    wait_free(topology(estate))
    t = topology(estate)
    live = live_color(t)
    path = t.load_balancer.path(t.journal.path)
    original = journal_text(t)
    assert original is not None
    with connect(t, t.load_balancer) as lb:
        lb.put(path, b'{"prod": "blue", "history": [', step="corrupt the journal")
        try:
            data = emergency_rollback(estate)
            assert data["colour"] == other_color(live)
            assert data["recordedIn"] == journal_model.side_path(path)
            side = lb.get(journal_model.side_path(path), step="read the side file")
            assert side is not None and json.loads(side.decode().splitlines()[-1])["to"] == other_color(live)
            assert live_color(t) == other_color(live)
            refused = cli(estate, "history", "--json")
            assert refused.returncode == 2 and "not valid JSON" in refused.stderr  # says what is wrong
        finally:
            lb.put(path, original, step="restore the journal")
    shown = json.loads(cli(estate, "history", "--json", "--limit", "1").stdout)
    assert shown[0]["to"] == other_color(live) and shown[0]["emergency"] is True  # folded in on read
    back = cli(estate, "switch", "--direct", "--no-watch", "--yes", "--json")  # a normal command writes
    assert back.returncode == 0, back.stderr
    with connect(t, t.load_balancer) as lb:
        assert lb.get(journal_model.side_path(path), step="t") is None, "the side file was not folded in"
    ids = [e.get("id") for e in journal(t).history]
    assert json.loads(side.decode().splitlines()[-1])["id"] in ids
    assert_true_state(estate, live)


@contextlib.contextmanager
def stopped(lab: Lab, what: str, t: Topology) -> Iterator[None]:
    if what == "target app host's sshd":
        process = lab.sshd(t.app_host(other_color(live_color(t))))
    elif what == "PostgreSQL":
        process = lab.postgres()
    else:
        process = next(p for p in lab.registered() if "fakepve" in p.name)
    assert process.alive(), f"{what} is not running"
    process.stop()
    try:
        yield
    finally:
        lab.up()  # starts what is missing, by the same code that started it


@pytest.mark.parametrize("what", ["target app host's sshd", "fake PVE", "PostgreSQL"])
def test_emergency_rollback_needs_only_the_load_balancer(lab: Lab, estate: Path, what: str) -> None:
    wait_free(topology(estate))
    t = topology(estate)
    live = live_color(t)
    with stopped(lab, what, t):
        data = emergency_rollback(estate)
        assert data["colour"] == other_color(live) and data["recordedIn"] == "journal"
        assert live_color(t) == other_color(live)
        assert_true_state(estate, other_color(live))


def test_emergency_in_automation_mode_goes_direct_and_status_names_the_reconciling_command(
        estate: Path) -> None:
    wait_free(topology(estate))
    t = topology(estate)
    live = live_color(t)
    auto = dataclasses.replace(t, switch=dataclasses.replace(t.switch, mode="automation"))
    result = emergency.run(auto, rollback=True)
    assert result.ok, result.error
    assert result.declared == live and result.reconcile and other_color(live) in result.reconcile
    assert topology(estate).active_color == live  # left for the reconciling command
    report = status(Estate(auto))
    assert report.drift and report.reconcile == result.reconcile
    set_active_color_in_file(estate, STACK, other_color(live))  # what `pulumi config set` does
    assert_true_state(estate, other_color(live))


# --------------------------------------------------------------------------- automation flip


class FlippingPulumi(FakePulumi):
    """The recording fake, plus what the real CLI does to the lab: `config set` writes the stack
    file, `up` of the routing resource flips HAProxy (the LiveColorRouting provider's job)."""

    def __init__(self, project: Path, *, fail_up: tuple[int, str] | None = None,
                 interrupt: str | None = None) -> None:
        super().__init__()
        self.project = project
        self.fail_up = fail_up
        self.interrupt = interrupt  # "before flip" / "after flip"

    def _answer(self, verb: str, argv: list[str]) -> tuple[str, str, int]:
        if verb == "config set":
            set_active_color_in_file(self.project, STACK, argv[argv.index("--") + 1])
        if verb == "up":
            if self.interrupt == "before flip":
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            if self.fail_up is not None:
                return "", self.fail_up[1], self.fail_up[0]
            t = topology(self.project)
            with connect(t, t.load_balancer) as lb:
                haproxy_runtime.flip(lb, t, t.active_color)
            if self.interrupt == "after flip":
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
        return super()._answer(verb, argv)


@pytest.mark.parametrize("case", ["success", "up fails", "concurrent update", "interrupt before flip",
                                  "interrupt after flip"])
def test_the_automation_flip_ends_with_the_declared_colour_served(estate: Path, case: str) -> None:
    wait_free(topology(estate))
    t = topology(estate)
    live = live_color(t)
    auto = dataclasses.replace(t, switch=dataclasses.replace(t.switch, mode="automation"))
    fake = FlippingPulumi(estate, fail_up={"up fails": (1, "error: update failed: boom"),
                                           "concurrent update": (255, DIY_LOCKED)}.get(case),
                          interrupt={"interrupt before flip": "before flip",
                                     "interrupt after flip": "after flip"}.get(case))
    svc = Estate(auto, pulumi_command=fake)
    outcome: Any
    try:
        outcome = switch(svc, watch=False)
    except (PulumiError, KeyboardInterrupt) as exc:
        outcome = exc
    ups = [c for c in fake.calls if "up" in c]
    assert ups, "pulumi up was never asked for"
    expected = other_color(live) if case == "success" else live
    if case == "success":
        assert outcome.ok, outcome
    elif case.startswith("interrupt"):
        assert isinstance(outcome, KeyboardInterrupt), outcome
    else:
        assert isinstance(outcome, PulumiError), outcome
        if case == "concurrent update":
            assert "another update holds the stack's lock" in str(outcome)
    assert live_color(t) == expected
    assert topology(estate).active_color == expected, "the stack file declares a colour HAProxy does not serve"
    assert journal(t).prod == expected
    assert lock_now(t) is None


# --------------------------------------------------------------------------- interrupts


@pytest.mark.parametrize(("signum", "at"), [
    (signal.SIGTERM, ".. install dependencies"),
    (signal.SIGINT, ".. build"),
    (signal.SIGTERM, ".. wait for health"),  # after `current` moved and PM2 reloaded
])
def test_an_interrupted_deploy_restores_the_standby_and_records_the_step(
        estate: Path, signum: int, at: str) -> None:
    wait_free(topology(estate))
    t = topology(estate)
    standby = other_color(live_color(t))
    host = t.app_host(standby)
    paths = cmd.AppPaths.of(t, host)
    with connect(t, host) as ex:
        before = cmd.parse_current(ex.run(cmd.read_current(paths), step="read").stdout)
    proc = subprocess.Popen([str(BLUEGREEN), "deploy", "--ref", "main", "--yes", "--no-snapshot",
                             "--stack", STACK, "--cwd", str(estate)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        read_until(proc, at, 300)
        os.kill(proc.pid, signum)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    record = journal(t).last_deploy(standby)
    assert record is not None and record.result == "failed" and record.error == "interrupted"
    assert record.failed_step and at.removeprefix(".. ").split(" on ")[0] in record.failed_step
    with connect(t, host) as ex:
        after = cmd.parse_current(ex.run(cmd.read_current(paths), step="read").stdout)
    assert after.path == before.path, "the interrupted release is still `current`"
    assert lock_now(t) is None
    status = cli(estate, "status", "--json")
    data = json.loads(status.stdout)
    assert data["colors"][standby]["release"] == before.name
    # Converges: the standby serves its good release again, and a switch to it is allowed.
    deadline = time.monotonic() + 60
    while (plan := plan_switch(Estate(topology(estate)))).problems:
        assert time.monotonic() < deadline, plan.problems
        time.sleep(1)


class _InterruptingRecord(Estate):
    """Delivers a real SIGTERM to this process between the flip and the journal write."""

    fired = False

    def update_state(self, lb: Any, change: Any, live: str) -> State:
        if not self.fired:
            self.fired = True
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        return super().update_state(lb, change, live)


def test_sigterm_between_the_flip_and_the_journal_write_switches_back_and_records_both(estate: Path) -> None:
    wait_free(topology(estate))
    t = topology(estate)
    live = live_color(t)
    signals.raise_on_sigterm()
    try:
        with pytest.raises(KeyboardInterrupt):
            switch(_InterruptingRecord(t), direct=True, watch=False)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    state = journal(t)
    assert [(e["from"], e["to"]) for e in state.history[:2]] == [(other_color(live), live),
                                                                 (live, other_color(live))]
    assert "interrupted" in state.history[0]["reason"]
    assert lock_now(t) is None
    assert_true_state(estate, live)


class _JournalWriteFails(InterceptingExecutor):
    """An SSH executor whose journal writes fail (a full or read-only disk, say); all else works."""

    def before(self, step: str, operation: str) -> None:
        if operation == "put" and step == "write the deployment journal":
            raise RemoteError(self.host, step, "No space left on device")


def test_a_flip_whose_journal_write_fails_is_still_verified_watched_and_recorded_beside_it(
        estate: Path) -> None:
    wait_free(topology(estate))
    t = topology(estate)
    live = live_color(t)
    failing = Estate(t, executor_factory=lambda c: _JournalWriteFails(connect(t, c)))
    result = switch(failing, direct=True, watch=True)
    assert result.color == other_color(live) and result.verified and result.watched_s > 0
    assert not result.ok and "journal write failed" in (result.error or "") and "No space" in (result.error or "")
    assert journal_model.side_path(t.load_balancer.path(t.journal.path)) in (result.error or "")
    assert live_color(t) == other_color(live) and topology(estate).active_color == other_color(live)
    assert lock_now(t) is None
    # The next normal command folds the side entry in: the journal tells the truth again.
    assert journal_via_service(t)[0]["to"] == other_color(live)
    assert_true_state(estate, other_color(live))


def journal_via_service(t: Topology) -> list[dict[str, Any]]:
    return history(Estate(t), 1)


# --------------------------------------------------------------------------- the lock


def test_two_processes_racing_for_the_lock_exactly_one_proceeds(estate: Path) -> None:
    wait_free(topology(estate))
    t = topology(estate)
    live = live_color(t)
    # With the lab's 3 s watch the winner holds the lock long enough that the race is real.
    argv = [str(BLUEGREEN), "switch", "--direct", "--yes", "--json", "--stack", STACK,
            "--cwd", str(estate)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outs
    loser = outs[[p.returncode for p in procs].index(1)][1]
    assert "lock" in loser and "held by" in loser, loser
    assert_true_state(estate, other_color(live))


def test_a_forced_release_makes_the_running_deploy_stop_not_overwrite(estate: Path) -> None:
    wait_free(topology(estate))
    t = topology(estate)
    standby = other_color(live_color(t))
    proc = subprocess.Popen([str(BLUEGREEN), "deploy", "--ref", "main", "--yes", "--no-snapshot",
                             "--stack", STACK, "--cwd", str(estate)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        read_until(proc, ".. install dependencies", 180)
        assert cli(estate, "lock", "release", "--force").returncode == 0
        with connect(t, t.load_balancer) as lb:
            thief = LockManager(lb, t.load_balancer.path(t.journal.lock_path), holder="bob@desk")
            mine = thief.acquire("maintenance")
            try:
                _, err = proc.communicate(timeout=600)
                assert proc.returncode == 1, err
                # "now held by bob@desk" or, if it looked before bob took the lock, "by nobody".
                assert "broken while 'deploy' ran" in err and "stopping" in err, err
                current = LockInfo.from_file(
                    (lb.get(t.load_balancer.path(t.journal.lock_path), step="t") or b"").decode())
                assert current.token == mine.token, "the stopped deploy overwrote the new holder's lock"
            finally:
                assert thief.release() is True  # never leave the lab locked
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    record = journal(t).last_deploy(standby)
    assert record is not None and record.result == "failed" and "broken" in (record.error or "")
