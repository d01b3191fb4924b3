"""Losing the node, rehearsed: rows written, the four containers' processes, Proxmox entries and
disks destroyed (`python -m bluegreen.lab lose-node`), then `rebuild estate` brings the estate back
from code and the backup host's copies: the rows are there, the public URL answers from the colour
that was live, the history is whole. The recovery time is printed (the benchmark
`benchmarks/bench_rebuild_estate.py` measures it with the real Next.js app).

Also here: the refusal while containers still exist, the scheduled dump fired by the timer (the
lab's systemd stand-in), and a copy damaged on the backup host found by its checksum."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import pytest

from bluegreen.hosts import health, offsite
from bluegreen.hosts.executor import connect
from bluegreen.lab.lab import Lab
from bluegreen.lab.loss import lose_node
from bluegreen.lab.pve import lab_client
from bluegreen.model.journal import State, parse_state
from bluegreen.model.offsite import history_kept, release_to_restore
from bluegreen.model.progress import RecordingProgress
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import Topology, other_color
from bluegreen.ops.backups import backup_now, list_backups
from bluegreen.ops.deploy import deploy
from bluegreen.ops.estate import Estate
from bluegreen.ops.rebuild_estate import RebuildRefused, plan_rebuild_estate, rebuild_estate
from bluegreen.ops.switch import switch
from bluegreen.render import commands as cmd

from .support import LAB_STACK, copy_project, live_color, retry_locked

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# No registry inside the lab's network namespace: npm must take the packages from its cache.
OFFLINE_INSTALL = "npm ci --prefer-offline --no-audit --no-fund"


@pytest.fixture
def project(lab: Lab, tmp_path: Path) -> Path:
    copied = copy_project(REPO, tmp_path)
    stack = copied / "stacks" / f"Pulumi.{LAB_STACK}.yaml"
    stack.write_text(re.sub(r"installCommand: .*", f"installCommand: {OFFLINE_INSTALL}", stack.read_text()))
    return copied


def service(project: Path, progress: RecordingProgress | None = None) -> Estate:
    return Estate(load_stack(project, LAB_STACK), progress=progress or RecordingProgress())


def psql(t: Topology, sql: str) -> str:
    with connect(t, t.database_host) as db:
        return db.run(cmd.psql(t, t.database_host, sql), step="psql").stdout


def release(t: Topology, color: str) -> str | None:
    host = t.app_host(color)
    with connect(t, host) as ex:
        return cmd.parse_current(ex.run(cmd.read_current(cmd.AppPaths.of(t, host)), step="read").stdout).sha


def both_colours_serving(project: Path) -> None:
    """Both colours on a release the journal records as deployed, and a switch in the history (a
    fresh world has neither; an earlier file may have left the lab's own unrecorded release live)."""
    def recorded(t: Topology, color: str) -> bool:
        return release(t, color) is not None and release_to_restore(parse_journal(t), color) is not None

    t = load_stack(project, LAB_STACK)
    if not recorded(t, other_color(live_color(t))):
        assert retry_locked(lambda: deploy(service(project), "v1", migrate=True, snapshot=False)).ok
    t = load_stack(project, LAB_STACK)
    if not recorded(t, live_color(t)) or not parse_journal(t).history:
        assert retry_locked(lambda: switch(service(project), watch=False)).ok
        assert retry_locked(lambda: deploy(service(project), "v1", migrate=True, snapshot=False)).ok


def parse_journal(t: Topology) -> State:
    with connect(t, t.load_balancer) as lb:
        raw = lb.get(t.load_balancer.path(t.journal.path), step="read the journal")
    return parse_state(raw.decode() if raw else None, declared_color=t.active_color)


def journal_copied(t: Topology, timeout: float = 60.0) -> str:
    """Until the backup host's newest journal copy is the HAProxy host's journal (its path unit
    copies it on every change); its sha256."""
    deadline = time.monotonic() + timeout
    while True:
        with connect(t, t.load_balancer) as lb:
            raw = lb.get(t.load_balancer.path(t.journal.path), step="read the journal") or b""
        digest = hashlib.sha256(raw).hexdigest()
        with offsite.backup_executor(t) as backup:
            copies = offsite.journal_copies(t, backup)
        if copies and copies[0].sha256 == digest:
            return digest
        assert time.monotonic() < deadline, "the journal never reached the backup host"
        time.sleep(0.5)


def no_other_sessions(lab: Lab) -> None:
    if lab.other_sessions():
        pytest.skip(f"other test sessions use the lab right now (pids {lab.other_sessions()})")


def test_refused_while_the_containers_exist(lab: Lab, project: Path) -> None:
    t = load_stack(project, LAB_STACK)
    plan = plan_rebuild_estate(service(project))
    assert [c.action for c in plan.containers] == ["refuse"] * 4
    problems = " ".join(plan.problems)
    for c in t.containers:
        assert f"--replace {c.vmid}" in problems
    assert "SSH" in problems and "HAProxy" in problems  # what still answers is named
    releases = {color: release(t, color) for color in ("blue", "green")}
    with pytest.raises(RebuildRefused, match="still exists"):
        rebuild_estate(service(project), plan)
    states = lab_client(lab.paths.root, t).statuses([c.vmid for c in t.containers])
    assert all(s.running for s in states.values())
    assert {color: release(t, color) for color in ("blue", "green")} == releases
    # Naming every container turns the refusals into replacements (the plan only; nothing runs).
    assert [c.action for c in plan_rebuild_estate(service(project), replace=["all"]).containers] == ["replace"] * 4


def test_an_unreachable_backup_host_is_a_reason_in_the_plan_not_a_crash(lab: Lab, project: Path) -> None:
    if not list_backups(service(project)).rows:  # a fresh world has no dump yet: one to list
        assert backup_now(service(project)).offsite.ok
    stack = project / "stacks" / f"Pulumi.{LAB_STACK}.yaml"
    stack.write_text(stack.read_text().replace("host: 127.0.3.40\n    port: 2222", "host: 127.0.3.40\n    port: 2299"))
    plan = plan_rebuild_estate(service(project), replace=["all"])
    assert any("cannot read the backup host" in p and "127.0.3.40:2299" in p for p in plan.problems), plan.problems
    with pytest.raises(RebuildRefused):
        rebuild_estate(service(project), plan)
    report = list_backups(service(project))
    assert report.offsite_error and report.local_error is None and report.rows  # the other place still listed


def test_the_timer_takes_a_verified_dump_and_copies_it_off_host(lab: Lab, project: Path) -> None:
    """The scheduled dump as the database host's timer runs it (the lab's stand-in fires it):
    every 5 seconds for this test, then back to the stack's schedule."""
    both_colours_serving(project)
    no_other_sessions(lab)
    stack = project / "stacks" / f"Pulumi.{LAB_STACK}.yaml"
    original = stack.read_text()
    stack.write_text(original.replace('schedule: "*-*-* 03:15:00"', 'schedule: "*:*:0/5"'))
    t = load_stack(project, LAB_STACK)
    before = {r.file for r in list_backups(service(project)).rows}
    try:
        Lab(project, LAB_STACK, lab_dir=lab.paths.root).apply()
        deadline = time.monotonic() + 120
        while True:
            report = list_backups(service(project))
            new = [r for r in report.rows if r.file not in before and r.file.endswith("-scheduled.dump")]
            # The dump, its checksum record, then its sidecar arrive: verified once all three are there.
            if new and new[0].offsite_state == "copied" and new[0].offsite and new[0].offsite.verified:
                break
            assert time.monotonic() < deadline, f"no scheduled dump reached the backup host: {report.to_json()}"
            time.sleep(1)
    finally:
        stack.write_text(original)
        Lab(project, LAB_STACK, lab_dir=lab.paths.root).apply()
    row = new[0]
    assert row.local is not None and row.local.meta is not None
    assert row.local.meta.verified and row.local.meta.kind == "scheduled" and row.local.meta.sha256
    assert "20250101000000_init" in row.local.meta.applied
    assert row.offsite is not None and row.offsite.verified
    unit = Path(t.database_host.path("/etc/systemd/system/bluegreen-dump.timer")).read_text()
    assert "OnCalendar=*-*-* 03:15:00" in unit  # the stack's schedule is back


def test_a_damaged_copy_is_found_by_its_checksum(lab: Lab, project: Path) -> None:
    both_colours_serving(project)
    t = load_stack(project, LAB_STACK)
    done = backup_now(service(project))
    assert done.offsite.ok, done.offsite
    assert t.backup is not None
    copy = Path(t.backup.path(f"{t.backup.dir}/{done.file}"))
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    try:
        report = list_backups(service(project), verify=True)
        assert "does not match its checksum" in report.rechecked[done.file]
        plan = plan_rebuild_estate(service(project), backup=done.file, replace=["all"])
        assert any("does not match its checksum" in p for p in plan.problems), plan.problems
    finally:
        copy.unlink()  # with its checksum record: the next sync sends it again, checked on arrival
        copy.with_name(copy.name + ".sha256").unlink()
    resent = backup_now(service(project))
    assert resent.offsite.ok and any(line.startswith(done.file) for line in resent.offsite.copied)


@pytest.mark.timeout(900)
def test_losing_the_node_then_rebuilding_the_estate_from_scratch(lab: Lab, project: Path) -> None:
    both_colours_serving(project)
    no_other_sessions(lab)
    t = load_stack(project, LAB_STACK)
    live = live_color(t)
    sha = release(t, live)
    marker = f"before-the-loss-{int(time.time() * 1000)}"
    psql(t, f"INSERT INTO \"Attendant\" (name, email) VALUES ('{marker}-1', 'a@example.org'), ('{marker}-2', NULL)")
    dumped = backup_now(service(project))  # what the nightly timer takes
    assert dumped.offsite.ok, dumped.offsite
    journal_copied(t)
    before = parse_journal(t)
    assert before.history

    lost = lose_node(lab)
    started = time.monotonic()  # the node is gone: recovery starts here
    assert any("gone from the node" in line for line in lost)
    states = lab_client(lab.paths.root, t).statuses([c.vmid for c in t.containers])
    assert all(s.status == "missing" for s in states.values()), states
    assert not Path(t.database_host.root).exists()
    assert not health.http_probe(f"{t.public_url}{t.app.health_path}", timeout=2, **health.visitor(t)).ok

    progress = RecordingProgress()
    plan = plan_rebuild_estate(service(project, progress))
    assert plan.problems == [], plan.problems
    assert [c.action for c in plan.containers] == ["create"] * 4
    assert plan.backup is not None and plan.backup.file == dumped.file
    assert plan.live == live and plan.ref == sha
    result = rebuild_estate(service(project, progress), plan)
    probe = health.poll(lambda: health.http_probe(f"{t.public_url}{t.app.health_path}", **health.visitor(t)),
                        deadline_s=30)
    recovery = time.monotonic() - started
    print(f"\nrecovery time: visitors served again {result.serving_s or 0:.1f}s after the rebuild started, "
          f"both colours back after {recovery:.1f}s from the loss (rebuild estate {result.duration_s:.1f}s: "
          + ", ".join(f"{k} {v:.1f}s" for k, v in result.phases.items()) + ")")

    assert result.ok and result.live == live and result.sha == sha
    assert result.serving_s is not None and result.serving_s < result.duration_s
    assert probe.ok and probe.served_by == live, probe
    t = load_stack(project, LAB_STACK)
    assert {release(t, color) for color in ("blue", "green")} == {sha}
    rows = psql(t, f"SELECT name FROM \"Attendant\" WHERE name LIKE '{marker}%' ORDER BY name").split()
    assert rows == [f"{marker}-1", f"{marker}-2"]
    after = parse_journal(t)
    assert history_kept(before.history, after.history), "history entries were lost"
    assert after.prod == before.prod and after.switch_count == before.switch_count
    entry = next(e for e in after.history if e.get("type") == "rebuild")
    assert entry["scope"] == "estate" and entry["result"] == "ok" and entry["backup"] == dumped.file
    assert len(entry["hostKeys"]) == 4
    assert [e.get("color") for e in after.history[1:3]] == [other_color(live), live]  # the two deploys
    password = lab.db_password().reveal()
    assert password not in str(result.to_json()) and password not in " ".join(progress.notes)
    # The rebuilt hosts copy off-host again: the journal (with the rebuild) reaches the backup host.
    journal_copied(t)
