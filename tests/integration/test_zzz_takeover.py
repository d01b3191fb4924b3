"""The rehearsal of the takeover (docs/OPERATIONS.md, "Taking over the running estate"), on the
legacy lab as unkind as the estate (a home page that redirects to its sign-in page, a `.env` of a
dozen and more variables with secrets, PM2 started by hand as root, a second site on the load
balancer), in a fresh clone of this branch, under request loops from start to end:

    bluegreen --stack lab adopt --yes
    python -m bluegreen.lab apply            (the host configuration `pulumi up` applies)
    bluegreen --stack lab deploy --yes --migrate ; bluegreen --stack lab switch --yes
    bluegreen --stack lab deploy --yes           ; bluegreen --stack lab switch --yes
    bluegreen --stack lab rebuild standby --yes

The loops (the app over HTTPS, and the second site), half fresh connections and half keep-alive,
retry nothing: 0 failed requests. Also asserted: every `.env` variable's value unchanged on both
colours (the rebuilt one included); the old tool's history kept verbatim and in order; the
database's rows unchanged; the same certificate throughout; the declared colour equal to the live
one; HAProxy's master and PostgreSQL never restarted; the clone's `git status` clean.

Named to run after the legacy lab's own tests; it rebuilds the lab's own estate afterwards.
"""

from __future__ import annotations

import io
import json
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bluegreen.faces import cli
from bluegreen.hosts import haproxy as hr
from bluegreen.hosts.executor import connect
from bluegreen.lab.lab import Lab
from bluegreen.lab.legacy import WIKI, LegacyLab
from bluegreen.lab.loadgen import RequestLoop
from bluegreen.model.dotenv import parse_env
from bluegreen.model.stackfile import load_stack, stack_file
from bluegreen.model.topology import Topology

from .support import clone_of_the_working_tree, git

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LegacyLab, Path]]:
    clone = clone_of_the_working_tree(tmp_path_factory.mktemp("takeover") / "clone")
    the_lab = LegacyLab(reset=True)
    with the_lab.exclusive():
        was_running = Lab().is_running()
        try:
            the_lab._up()
            yield the_lab, clone
        finally:
            if was_running:
                Lab()._up()
            else:
                the_lab.clear_estate()


def bluegreen(clone: Path, *args: str) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--cwd", str(clone), "--stack", "lab", "--json", *args], out=out, err=err)
    assert code == 0, f"bluegreen {' '.join(args)} exited {code}: {err.getvalue()[-2000:]}"
    result: dict[str, Any] = json.loads(out.getvalue())
    return result


def certificate(t: Topology) -> bytes:
    context = ssl.create_default_context(cafile=t.haproxy.ca_file)
    with socket.create_connection((t.load_balancer.ip, t.haproxy.https_port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=t.tls_server_name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der
    return der


def psql(t: Topology, sql: str) -> str:
    db = t.database_host
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-X", "-At", "-h", db.path("/var/run/postgresql"),
         "-p", str(t.database.port), "-d", t.database.name, "-c", sql],
        capture_output=True, text=True, check=True, timeout=60).stdout


def env_values(t: Topology, color: str) -> dict[str, str]:
    """What the app on `color` is given: its shared/.env once converted, else the working copy's."""
    host = t.app_host(color)
    for rel in ("shared/.env", ".env"):
        path = Path(host.path(t.app.dir), rel)
        if path.exists():
            return parse_env(path.read_text())
    raise AssertionError(f"no .env on {color}")


def facts(t: Topology) -> dict[str, Any]:
    with connect(t, t.load_balancer) as lb:
        master = hr.show_proc(lb, t).master.pid
    return {
        "history": json.loads(Path(t.load_balancer.path(t.journal.path)).read_text())["history"],
        "rows": psql(t, "SELECT * FROM attendants ORDER BY id"),
        "env": {c: env_values(t, c) for c in ("blue", "green")},
        "certificate": certificate(t),
        "haproxy_master": master,
        "postgres": psql(t, "SELECT pg_backend_pid() > 0, pg_postmaster_start_time()").split("|")[1],
    }


# Two first deploys, a rebuild (each a cold `npm ci`) plus adopt and apply over the lab's slow SSH.
@pytest.mark.timeout(2400)
def test_takeover_under_load_loses_nothing(legacy: tuple[LegacyLab, Path]) -> None:
    _, clone = legacy
    tracked = stack_file(clone, "lab").read_text()
    t = load_stack(clone, "lab")
    before = facts(t)
    assert len(before["env"]["blue"]) >= 12
    # No client retries at all: a request that is sent and not answered is a failure.
    app = RequestLoop(f"{t.public_url}/", clients=6, ca_file=t.haproxy.ca_file, server_name=t.tls_server_name,
                      max_requests=5_000_000, max_seconds=2300, pause=0.002, retry_idle=False)
    wiki = RequestLoop(f"http://{t.load_balancer.ip}:{WIKI[0]}/", clients=2, max_requests=5_000_000,
                       max_seconds=2300, pause=0.01, retry_idle=False)
    with app, wiki:
        adopted = bluegreen(clone, "adopt", "--yes")
        assert adopted["liveColor"] == "blue" and adopted["databaseUser"] and adopted["deployUser"] == "root"
        assert adopted["healthPath"] == "/" and adopted["healthStatus"] == "200-399"
        applied = Lab(project_dir=clone)._apply()
        apply_ended = time.monotonic()
        assert any("kept the previous" in line for line in applied)
        first = bluegreen(clone, "deploy", "--yes", "--migrate")
        bluegreen(clone, "switch", "--yes")
        second = bluegreen(clone, "deploy", "--yes")
        bluegreen(clone, "switch", "--yes")
        rebuilt = bluegreen(clone, "rebuild", "standby", "--yes")
    summaries = []
    for loop, what in ((app, "the app"), (wiki, "the second site")):
        report = loop.report
        summaries.append(f"takeover under load, {what}: {report.summary()}")
        assert report.total > 0 and report.samples[-1].started > apply_ended, f"{what}: the loop must run to the end"
        assert report.failures == [] and report.retried == 0, f"{what}: {report.summary()}"
    # Kept beside the lab's logs (pytest -q shows no output of a passing test).
    Path(Lab().paths.logs, "takeover-summary.txt").write_text("\n".join(summaries) + "\n")
    assert {s.status for s in app.report.samples} == {307}  # the sign-in redirect, throughout
    assert (first["colour"], second["colour"], rebuilt["colour"]) == ("green", "blue", "green")

    t = load_stack(clone, "lab")
    after = facts(t)
    # Every variable of the estate's .env keeps its value on both colours (the rebuilt one too);
    # bluegreen only adds what the stack declares besides (the Server Actions key).
    for color in ("blue", "green"):
        kept = {k: v for k, v in after["env"][color].items() if k in before["env"][color]}
        assert kept == before["env"][color], color
    # Every earlier history entry is still there, unchanged and in order (new ones come first).
    assert after["history"][-len(before["history"]):] == before["history"]
    assert len(after["history"]) >= len(before["history"]) + 5
    assert after["rows"] == before["rows"]
    assert after["certificate"] == before["certificate"]
    assert after["haproxy_master"] == before["haproxy_master"], "HAProxy's master was restarted"
    assert after["postgres"] == before["postgres"], "PostgreSQL was restarted"
    with connect(t, t.load_balancer) as lb:
        assert hr.live_color(lb, t) == t.active_color == "blue"
    # The working copy of the colour never rebuilt is kept aside, never deleted.
    assert Path(t.app_host("blue").path(t.app.dir + ".working-copy"), ".git").is_dir()
    # The rehearsal wrote its adopted stack in the lab's directory: the clone is as it was.
    assert stack_file(clone, "lab").read_text() == tracked
    assert git(clone, "status", "--porcelain", "--untracked-files=all") == ""
