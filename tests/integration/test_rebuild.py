"""`rebuild standby` on the real lab: the fake PVE deletes and creates the container, its sshd comes
back with a new host key, and the same code that runs after `pulumi up --replace` configures it and
deploys the live release, while a request loop on the live colour sees no failure."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bluegreen.hosts.executor import fetch_host_key, fingerprint, ssh_target
from bluegreen.hosts.hostkeys import trust_created_host
from bluegreen.lab.lab import Lab
from bluegreen.lab.loadgen import RequestLoop
from bluegreen.lab.pve import lab_client
from bluegreen.model.errors import HostKeyError, LockedError, ProxmoxError
from bluegreen.model.progress import RecordingProgress
from bluegreen.model.topology import other_color
from bluegreen.ops.deploy import deploy
from bluegreen.ops.rebuild import rebuild_standby
from bluegreen.ops.status import lock_status
from bluegreen.render import commands as cmd

from .support import copy_project
from .test_deploy import estate, journal, live_colour, release_of, service, topology  # noqa: F401

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# No registry inside the lab's network namespace: npm must take the packages from its cache.
OFFLINE_INSTALL = "npm ci --prefer-offline --no-audit --no-fund"


def test_rebuild_standby_under_load(estate: Lab) -> None:  # noqa: F811
    lab = estate
    t = topology(lab)
    live = live_colour(lab)
    standby = other_color(live)
    host = t.app_host(standby)
    live_release = release_of(lab, live)
    old_key = fetch_host_key(ssh_target(t, host))[1]
    marker = Path(host.path(f"{t.app.dir}/shared/rebuild-marker"))
    marker.write_text("from the old container\n")
    uptime_before = lab_client(lab.paths.root, t).container_status(host.vmid).uptime_s

    progress = RecordingProgress()
    with RequestLoop(f"{t.public_url}/", clients=8, max_seconds=300, ca_file=t.haproxy.ca_file,
                     server_name=t.haproxy.server_name) as loop:
        loop.wait_for(50)
        data = rebuild_standby(service(lab, progress, install_command=OFFLINE_INSTALL)).to_json()
    report = loop.report
    assert report.total > 50
    assert report.failures == [], report.summary()
    assert set(report.colours()) == {live}, report.colours()

    assert data["ok"] and data["colour"] == standby and data["live"] == live
    assert data["backend"] == "lab fakepve"
    assert data["sha"] == live_release[1]
    assert release_of(lab, standby)[1] == live_release[1]
    assert release_of(lab, live) == live_release, "the live colour was touched"
    # A new container: its files are gone and its sshd presents a new key, pinned by this run.
    assert not marker.exists()
    new_key = fetch_host_key(ssh_target(t, host))[1]
    assert new_key != old_key
    assert data["hostKey"]["fingerprint"] == fingerprint(new_key) and data["hostKey"]["replacedPin"]
    assert any(data["hostKey"]["fingerprint"] in note for note in progress.notes)
    assert lab_client(lab.paths.root, t).container_status(host.vmid).uptime_s <= uptime_before + 60
    # shared/.env from the stack's secrets, 0600, with the extra variable the stack lists.
    env_file = Path(host.path(f"{t.app.dir}/shared/.env"))
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    text = env_file.read_text()
    assert text.count("DATABASE_URL=") == 1 and "NEXT_SERVER_ACTIONS_ENCRYPTION_KEY=" in text
    password = lab.db_password().reveal()
    assert password not in json.dumps(data) and password not in " ".join(progress.notes)
    # Healthy on the live release, through its own port and the preview frontend.
    paths = cmd.AppPaths.of(t, host)
    with lab.executor(host) as ex:
        assert ex.run(cmd.read_current(paths), step="read").ok
    from bluegreen.hosts import health
    probe = health.http_probe(f"http://{host.ip}:{t.app.port}{t.app.health_path}")
    assert probe.ok, probe  # (the health path no longer reports the commit: release_of checks it)
    # The team's working copy went with the old container; the deploy made it again on app.branch.
    assert t.app.working_copy is not None
    assert "created the working copy" in (data["workingCopy"] or ""), data["workingCopy"]
    assert Path(host.path(t.app.working_copy), ".git").is_dir()
    # The journal records the rebuild and the new key.
    entry = journal(lab).recent(5)
    rebuilds = [e for e in entry if e.get("type") == "rebuild"]
    assert rebuilds and rebuilds[0]["result"] == "ok" and rebuilds[0]["color"] == standby
    assert rebuilds[0]["hostKey"]["fingerprint"] == fingerprint(new_key)
    deploys = [e for e in entry if e.get("type") == "deploy"]
    assert deploys and deploys[0]["sha"] == live_release[1]


def test_tofu_is_refused_for_a_container_this_run_did_not_create(lab: Lab) -> None:
    t = topology(lab)
    with pytest.raises(HostKeyError, match="did not create"):
        trust_created_host(t, t.database_host, created_by_this_run=False, timeout_s=1,
                           progress=RecordingProgress())


def test_rebuild_cli_json(estate: Lab, tmp_path: Path) -> None:  # noqa: F811
    lab = estate
    live = live_colour(lab)
    project = copy_project(REPO, tmp_path)
    stack = project / "stacks" / "Pulumi.lab.yaml"
    stack.write_text(re.sub(r"installCommand: .*", f"installCommand: {OFFLINE_INSTALL}", stack.read_text()))
    out = subprocess.run([sys.executable, "-m", "bluegreen", "--cwd", str(project), "rebuild", "standby",
                          "--stack", "lab", "--yes", "--json"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["ok"] and data["colour"] == other_color(live) and data["hostKey"]["fingerprint"]
    assert "SHA256:" in out.stderr  # the fingerprint is printed for the person running it
    assert lab.db_password().reveal() not in out.stdout + out.stderr


def test_plan_changes_refuses_a_reboot_of_the_live_colour(estate: Lab, tmp_path: Path) -> None:  # noqa: F811
    lab = estate
    live = live_colour(lab)
    host = topology(lab).app_host(live)
    project = copy_project(REPO, tmp_path)
    stack = project / "stacks" / "Pulumi.lab.yaml"
    text = stack.read_text()
    line = next(ln for ln in text.splitlines() if f"id: {host.vmid}," in ln)
    stack.write_text(text.replace(line, line.replace("memory: 2048", "memory: 3072")))

    def plan(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bluegreen", "--cwd", str(project), "plan", "--changes",
                               "--stack", "lab", "--json", *extra], capture_output=True, text=True, timeout=120)

    out = plan()
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    # The lab built its containers as the stack declares them (but PVE protection on the database,
    # which `pulumi up` sets in place): the memory is the one change held back.
    held = [(c["vmid"], c["field"], c["effect"]) for c in data["changes"] if not c["applied"]]
    assert held == [(host.vmid, "memory.dedicated", "reboot")], data["changes"]
    assert all(c["effect"] == "in place" for c in data["changes"] if c["applied"]), data["changes"]
    assert "refused" in data["refused"][0] and f"live colour ({live})" in data["refused"][0]
    stack.write_text(stack.read_text() + "  bluegreen:allowDisruption: [live]\n")
    out = plan()
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["refused"] == []


def test_rebuild_holds_the_lock_for_its_whole_run_and_records_a_failure(estate: Lab) -> None:  # noqa: F811
    lab = estate
    t = topology(lab)
    standby = other_color(live_colour(lab))
    before = release_of(lab, standby)
    seen: dict[str, object] = {}

    class ProbeBackend:
        """Stands in for the container step: looks at the lock from outside, then fails."""

        name = "probe"
        configures_hosts = True

        def replace(self, host: object) -> None:
            seen["lock"] = lock_status(service(lab))
            try:
                deploy(service(lab), "v1")
            except LockedError as exc:
                seen["deploy"] = str(exc)
            raise ProxmoxError("creating CT: node refused (test)")

    with pytest.raises(ProxmoxError, match="node refused"):
        rebuild_standby(service(lab), ProbeBackend())
    lock = seen["lock"]
    assert isinstance(lock, dict) and lock["operation"] == "rebuild standby"
    assert "deploy" in seen  # a deploy during the rebuild is refused
    assert lock_status(service(lab)) is None  # released at the end, even on failure
    assert release_of(lab, standby) == before
    entry = next(e for e in journal(lab).recent(5) if e.get("type") == "rebuild")
    assert entry["result"] == "failed" and entry["backend"] == "probe" and "node refused" in entry["error"]
    assert t.app_host(standby).vmid == entry["vmid"]
