"""A whole estate from an empty (fake) Proxmox node: a new lab stack with no containers and no
state is created, configured and serving; running it again changes nothing.

The lab's path is what `pulumi up` does on a real node: the containers are created through the
PVE API (fakepve), each host is bootstrapped and configured by the same providers, shared/.env
is rendered from the stack's secrets; then the release is deployed and switched to."""

from __future__ import annotations

import re
import shutil
import stat
from pathlib import Path

import pytest

from bluegreen.hosts import health
from bluegreen.lab.lab import Lab
from bluegreen.lab.pve import lab_client
from bluegreen.model.stackfile import load_stack
from bluegreen.ops.deploy import deploy
from bluegreen.ops.estate import Estate
from bluegreen.ops.status import status
from bluegreen.ops.switch import switch

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
OFFLINE_INSTALL = "npm ci --prefer-offline --no-audit --no-fund"


def fresh_project(dest: Path, lab_dir: Path) -> Path:
    shutil.copy2(REPO / "Pulumi.yaml", dest / "Pulumi.yaml")
    shutil.copytree(REPO / "stacks", dest / "stacks")
    for app in ("sample-app", "sample-next"):  # the lab's repo carries both (refs v1.., next-v1..)
        shutil.copytree(REPO / app, dest / app, ignore=shutil.ignore_patterns("node_modules", ".next", "generated"))
    stack = dest / "stacks" / "Pulumi.lab.yaml"
    text = stack.read_text().replace("/var/tmp/jw-lab/", f"{lab_dir}/")
    stack.write_text(re.sub(r"installCommand: .*", f"installCommand: {OFFLINE_INSTALL}", text))
    return dest


def test_a_fresh_estate_is_created_configured_serving_and_a_second_run_changes_nothing(
        lab: Lab, tmp_path: Path) -> None:
    fresh_dir = lab.paths.root / "fresh-estate"  # inside the lab's own (private) directory
    project = fresh_project(tmp_path, fresh_dir)
    with lab.exclusive():
        if lab.other_sessions():
            pytest.skip(f"other test sessions use the lab right now (pids {lab.other_sessions()})")
        lab.down()  # the fresh estate takes the same loopback addresses
        fresh: Lab | None = None
        try:
            if fresh_dir.exists():
                shutil.rmtree(fresh_dir)
            fresh = Lab(project, "lab", lab_dir=fresh_dir)
            t = fresh.topology
            info = fresh.up()
            states = lab_client(fresh_dir, t).statuses([c.vmid for c in t.containers])
            assert all(s.running for s in states.values()), states
            for c in t.containers:
                assert any(line.startswith(f"{c.label}: bootstrap:") for line in info.applied), c.label
            assert any("postgres" in line for line in info.applied)
            for host in t.app_hosts.values():
                env = Path(host.path(f"{t.app.dir}/shared/.env"))
                assert stat.S_IMODE(env.stat().st_mode) == 0o600
                assert "NEXT_SERVER_ACTIONS_ENCRYPTION_KEY=" in env.read_text()

            svc = Estate(load_stack(project, "lab"))
            first = deploy(svc, "v1", migrate=True, snapshot=False)
            assert switch(svc, watch=False).ok
            second = deploy(Estate(load_stack(project, "lab")), "v1", snapshot=False)
            assert first.ok and second.ok and first.sha == second.sha
            probe = health.http_probe(f"{t.public_url}{t.app.health_path}", **health.visitor(t))
            assert probe.ok and (probe.json() or {}).get("commit") == first.sha

            again = fresh.up()
            assert again.started == [] and again.applied == [], again
            report = status(Estate(load_stack(project, "lab")))
            assert report.live == first.color and not report.drift
            assert all(c.healthy and c.sha == first.sha for c in report.colors.values())
        finally:
            if fresh is not None:
                fresh.down()
            shutil.rmtree(fresh_dir, ignore_errors=True)
            lab.up()

