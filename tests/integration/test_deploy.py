"""Deploy, switch and roll back on the real lab (sshd per host, PM2, HAProxy, PostgreSQL, fakepve).

Every failure case checks the promise: the live colour keeps serving (a request loop through the
public frontend sees no failure), the standby is back on its previous release, and the journal
records what happened.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bluegreen.hosts import haproxy as haproxy_runtime
from bluegreen.hosts.lock import LockManager
from bluegreen.lab.lab import Lab
from bluegreen.lab.loadgen import RequestLoop
from bluegreen.lab.repo import publish_variant
from bluegreen.model.errors import ConfigError, DeployError, LockedError, SwitchError
from bluegreen.model.journal import parse_state, unfinished_release
from bluegreen.model.progress import RecordingProgress, StepRecord
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import Topology, other_color
from bluegreen.ops.deploy import deploy
from bluegreen.ops.estate import Estate
from bluegreen.ops.status import status
from bluegreen.ops.switch import switch
from bluegreen.render import commands as cmd
from bluegreen.render.shell import sh
from tests.integration.support import wait_backends_up

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

BROKEN_HEALTH_SERVER = """
const http = require('http');
http.createServer((req, res) => { res.statusCode = 500; res.end('broken on purpose'); })
  .listen(Number(process.env.PORT), process.env.HOSTNAME, () => process.send && process.send('ready'));
"""


# ------------------------------------------------------------------------ helpers


def topology(lab: Lab, **app: Any) -> Topology:
    t = load_stack(lab.project_dir, "lab")  # fresh: switches record the live colour in the file
    return dataclasses.replace(t, app=dataclasses.replace(t.app, **app)) if app else t


def service(lab: Lab, progress: RecordingProgress | None = None, **app: object) -> Estate:
    return Estate(topology(lab, **app), progress=progress)


def live_colour(lab: Lab) -> str:
    t = topology(lab)
    with lab.executor(t.load_balancer) as lb:
        return haproxy_runtime.live_color(lb, t)


def release_of(lab: Lab, color: str) -> tuple[str, str]:
    t = topology(lab)
    host = t.app_host(color)
    with lab.executor(host) as ex:
        current = cmd.parse_current(ex.run(cmd.read_current(cmd.AppPaths.of(t, host)), step="read").stdout)
    return current.name or "", current.sha or ""


def refused_release(lab: Lab, color: str) -> str | None:
    """Why a switch would refuse `color`'s release (an earlier fault test cut its deploy), or None."""
    estate = service(lab)
    with lab.executor(estate.t.load_balancer) as lb:
        return unfinished_release(estate.read_state(lb), color, release_of(lab, color)[0])


def releases_on(lab: Lab, color: str) -> list[str]:
    t = topology(lab)
    host = t.app_host(color)
    with lab.executor(host) as ex:
        out = ex.run(f"ls -1 {sh(cmd.AppPaths.of(t, host).releases)} 2>/dev/null || true", step="ls").stdout
    return sorted(out.split())


def journal(lab: Lab):
    t = topology(lab)
    with lab.executor(t.load_balancer) as lb:
        raw = lb.get(t.load_balancer.path(t.journal.path), step="read journal")
    return parse_state(raw.decode() if raw else None)


def set_fault(lab: Lab, color: str, mode: str | None) -> None:
    t = topology(lab)
    host = t.app_host(color)
    fault = cmd.AppPaths.of(t, host).fault_file
    with lab.executor(host) as ex:
        if mode:
            ex.put(fault, mode, step="plant fault")
        else:
            ex.run(f"rm -f {sh(fault)}", step="clear fault")


def variant(lab: Lab, branch: str, changes: dict[str, str | None], base: str = "v1") -> str:
    return publish_variant(lab.paths.sample_repo, base=base, branch=branch, changes=changes,
                           message=f"test variant {branch}")


@pytest.fixture
def estate(lab: Lab) -> Iterator[Lab]:
    """Both colours serve a release and the live one is healthy, whatever earlier tests did."""
    for color in ("blue", "green"):
        set_fault(lab, color, None)
    for _ in range(2):
        live = live_colour(lab)
        standby = other_color(live)
        if not release_of(lab, standby)[1] or refused_release(lab, standby):
            deploy(service(lab), "v1", migrate=True)
        if not release_of(lab, live)[1]:
            switch(service(lab), watch=False)
    assert all(release_of(lab, c)[1] for c in ("blue", "green"))
    wait_backends_up(topology(lab))  # a fault an earlier test set and cleared may still show DOWN
    yield lab
    for color in ("blue", "green"):
        set_fault(lab, color, None)


@pytest.fixture
def traffic(lab: Lab) -> Iterator[RequestLoop]:
    t = topology(lab)
    with RequestLoop.visitor(t, "/", clients=8, max_seconds=240) as loop:
        loop.wait_for(50)
        yield loop
    assert loop.report.total > 50
    assert loop.report.failures == [], loop.report.summary()
    assert loop.report.retried == 0, loop.report.summary()  # a deploy never touches the live colour


def assert_failed_deploy_left_standby_alone(lab: Lab, standby: str, before: tuple[str, str],
                                            releases_before: list[str]) -> None:
    assert release_of(lab, standby) == before
    assert releases_on(lab, standby) == releases_before
    entry = journal(lab).recent(1)[0]
    assert entry["type"] == "deploy" and entry["result"] == "failed" and entry["failedStep"]


# ------------------------------------------------------------------------ the happy path


def test_deploy_switch_rollback_cycle_with_json_cli(estate: Lab, traffic: RequestLoop) -> None:
    lab = estate

    def cli(*args: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "bluegreen", "--cwd", str(lab.project_dir),
                              "--stack", "lab", "--json", *args], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    before = cli("status")
    live, standby = before["live"], before["standby"]
    assert before["drift"] is (before["declared"] != live)
    assert set(before["colors"]) == {"blue", "green"}
    assert before["endpoints"] == {"public": "https://127.0.3.26:443", "preview": "https://127.0.3.126:8080"}
    assert before["colors"][live]["healthy"] is True

    deployed = cli("deploy", "--ref", "v2", "--migrate", "--yes")
    assert deployed["ok"] is True and deployed["colour"] == standby
    assert deployed["release"].endswith(deployed["sha"][:7])
    assert live_colour(lab) == live  # a deploy never touches the live colour

    switched = cli("switch", "--yes")
    assert switched["ok"] is True and switched["colour"] == standby and switched["verified"] is True
    after = cli("status")
    assert (after["live"], after["declared"], after["drift"]) == (standby, standby, False)
    assert after["colors"][standby]["sha"] == deployed["sha"]
    assert after["switchCount"] == before["switchCount"] + 1
    assert after["lock"] is None

    old_release = release_of(lab, live)
    rolled = cli("rollback", "--yes")
    assert rolled["ok"] is True and rolled["colour"] == live
    assert live_colour(lab) == live
    assert release_of(lab, live) == old_release  # the old colour still ran its release

    history = cli("history", "--limit", "3")
    assert [h.get("type", "switch") for h in history[:3]] == ["switch", "switch", "deploy"]
    assert history[0]["reason"] == "rollback"


# ------------------------------------------------------------------------ failed deploys


@pytest.mark.parametrize("case", ["build", "health", "migration", "destructive"])
def test_failed_deploy_leaves_live_serving_and_standby_on_previous_release(
        estate: Lab, traffic: RequestLoop, case: str) -> None:
    lab = estate
    live = live_colour(lab)
    standby = other_color(live)
    before = release_of(lab, standby)
    releases_before = releases_on(lab, standby)
    t = topology(lab)
    db = t.database_host
    if case == "build":
        ref = variant(lab, "t-build-fails", {"BUILD_SHOULD_FAIL": "yes\n"})
        svc, expect = service(lab), "build"
    elif case == "health":
        ref = variant(lab, "t-health-fails", {"server.js": BROKEN_HEALTH_SERVER})
        svc, expect = service(lab, health_timeout=4.0), "health"
    elif case == "migration":
        ref = variant(lab, "t-migration-fails", {
            "prisma/migrations/20250301000000_broken/migration.sql":
                'ALTER TABLE "NoSuchTable" ADD COLUMN "x" integer;\n'})
        svc, expect = service(lab), "migrations"
    else:
        ref = variant(lab, "t-destructive", {
            "prisma/migrations/20250302000000_drop_shift/migration.sql": 'DROP TABLE "Shift";\n'})
        svc, expect = service(lab), "migrations"

    with pytest.raises(DeployError) as info:
        deploy(svc, ref, migrate=True)
    message = str(info.value)
    assert expect in info.value.step and standby in message
    assert live_colour(lab) == live
    assert_failed_deploy_left_standby_alone(lab, standby, before, releases_before)
    assert LockManager(lab.executor(t.load_balancer),
                       t.load_balancer.path(t.journal.lock_path)).status() is None

    if case == "destructive":
        assert "20250302000000_drop_shift" in message and 'DROP TABLE "Shift"' in message
        assert "expand" in message.lower() and "--allow-destructive" in message
    if case == "migration":
        with lab.executor(db) as ex:
            rows = ex.run(cmd.psql(t, db, "SELECT migration_name, finished_at IS NULL FROM _prisma_migrations "
                                   "WHERE migration_name LIKE '%broken'"), step="rows").stdout
            backups = ex.run(f"ls -1 {sh(db.path(t.database.backup_dir))}", step="ls").stdout.split()
            # The failed row blocks later deploys (P3009) until resolved: resolve it for later tests.
            ex.run(cmd.psql(t, db, "DELETE FROM _prisma_migrations WHERE migration_name LIKE '%broken'"),
                   step="resolve")
        assert "20250301000000_broken" in rows
        assert any(b.endswith(".dump") for b in backups)  # the dump was taken before migrating


def test_unknown_ref_is_bad_input(estate: Lab) -> None:
    live = live_colour(estate)
    with pytest.raises(ConfigError, match="unknown git ref 'no-such-branch'") as err:
        deploy(service(estate), "no-such-branch")
    assert live_colour(estate) == live
    # ... naming the refs there are, as the mirror on the host has them.
    said = str(err.value)
    branches, _, tags = said.partition("; it has branches ")[2].partition(" and tags ")
    assert "main" in branches.split(", ") and {"next-v1", "v1", "v2"} <= set(re.split(r", | \(", tags)), said


def test_second_deploy_is_refused_while_the_lock_is_held(estate: Lab) -> None:
    t = topology(estate)
    with estate.executor(t.load_balancer) as lb:
        locks = LockManager(lb, t.load_balancer.path(t.journal.lock_path), holder="alice@laptop")
        with locks.hold("deploy", "alice@laptop"), pytest.raises(LockedError) as info:
            deploy(service(estate), "v1")
    message = str(info.value)
    assert "alice@laptop" in message and "deploy" in message


# ------------------------------------------------------------------------ switches


def test_switch_refuses_an_unhealthy_standby(estate: Lab, traffic: RequestLoop) -> None:
    live = live_colour(estate)
    set_fault(estate, other_color(live), "5xx")
    with pytest.raises(SwitchError, match="not healthy"):
        switch(service(estate))
    assert live_colour(estate) == live


def test_switch_goes_back_when_the_new_colour_answers_5xx(estate: Lab) -> None:
    lab = estate
    live = live_colour(lab)
    target = other_color(live)
    count_before = journal(lab).switch_count

    def break_after_verify(event: str, record: StepRecord) -> None:
        if event == "end" and record.name.startswith("verify new requests"):
            set_fault(lab, target, "5xx")

    result = switch(service(lab, progress=RecordingProgress(listener=break_after_verify)))
    assert result.ok is False and result.rolled_back is True
    assert target in (result.error or "") and live in (result.error or "")
    assert live_colour(lab) == live
    assert load_stack(lab.project_dir, "lab").active_color == live
    state = journal(lab)
    assert state.switch_count == count_before + 2
    assert state.recent(1)[0]["reason"].startswith("automatic switch back")


def test_seed_journal_is_read_and_extended(estate: Lab) -> None:
    lab = estate
    t = topology(lab)
    seed = json.loads((FIXTURES / "state.seed.json").read_text())
    live = live_colour(lab)
    seed["prod"], seed["standby"] = live, other_color(live)
    with lab.executor(t.load_balancer) as lb:
        lb.put(t.load_balancer.path(t.journal.path), json.dumps(seed, indent=2), step="seed journal")
    report = status(service(lab))
    assert report.switch_count == seed["switchCount"] and report.last_switch == seed["lastSwitch"]
    switch(service(lab), watch=False)
    state = journal(lab)
    assert state.switch_count == seed["switchCount"] + 1
    assert list(state.history[1:]) == seed["history"][: len(state.history) - 1]
    assert state.recent(1)[0]["from"] == live


def test_trust_pins_only_a_confirmed_fingerprint(lab: Lab, tmp_path: Path) -> None:
    """`bluegreen trust`: the key offered by the host, checked against its fingerprint out of band."""
    t = topology(lab)
    host = t.app_host("blue")
    key_file = Path(host.path("/etc/ssh/ssh_host_ed25519_key.pub"))
    real = subprocess.run(["ssh-keygen", "-lf", str(key_file)], capture_output=True, text=True,
                          check=True).stdout.split()[1]
    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True)
    (project / "Pulumi.yaml").write_text((lab.project_dir / "Pulumi.yaml").read_text())
    known = tmp_path / "known_hosts"
    stack = (lab.project_dir / "stacks" / "Pulumi.lab.yaml").read_text()
    (project / "stacks" / "Pulumi.lab.yaml").write_text(stack.replace(t.ssh.known_hosts, str(known)))

    def trust(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bluegreen", "--cwd", str(project), "--stack", "lab",
                               "trust", "blue", *args], capture_output=True, text=True, timeout=60)

    refused = trust("--fingerprint", "SHA256:" + "A" * 43)
    assert refused.returncode == 2 and "refusing to pin" in refused.stderr
    assert not known.exists()
    assert trust().returncode == 2  # no terminal, no --yes: nothing is pinned silently
    assert not known.exists()
    accepted = trust("--fingerprint", real)
    assert accepted.returncode == 0, accepted.stderr
    assert known.read_text().startswith(f"[{host.ip}]:{t.ssh.port} ssh-ed25519 ")


def test_deploy_snapshots_the_standby_and_rollback_snapshot_restores_it(estate: Lab) -> None:
    """The Proxmox side: a deploy snapshots the standby container first (kept per retention) and
    `bluegreen rollback --snapshot` restores the newest one, all through proxmoxer on fakepve."""
    from bluegreen.hosts.pve import PveClient

    lab = estate
    t = topology(lab)
    standby = other_color(live_colour(lab))
    vmid = t.app_host(standby).vmid
    deployed = deploy(service(lab), "v1", migrate=True)
    assert deployed.snapshot and deployed.snapshot.startswith("bluegreen-")
    client = PveClient.from_topology(t)
    ours = [s.name for s in client.snapshots(vmid) if s.name.startswith("bluegreen-")]
    assert ours[-1] == deployed.snapshot and len(ours) <= t.proxmox.snapshot_keep
    out = subprocess.run([sys.executable, "-m", "bluegreen", "--cwd", str(lab.project_dir), "--stack", "lab",
                          "--json", "rollback", "--snapshot", "--yes"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert (data["ok"], data["vmid"], data["snapshot"]) == (True, vmid, deployed.snapshot)
    assert client.container_status(vmid).status == "running"
