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
one; HAProxy's master and PostgreSQL never restarted; the team's working copies where they were
(a developer's uncommitted edit included); the clone's `git status` clean. Then the old switch is
retired and an old habit (`jw-deployment-state.sh switch`) switches the new way.

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
from bluegreen.hosts.haproxy_cli import runtime_command
from bluegreen.hosts.health import http_probe, visitor
from bluegreen.hosts.lock import LockManager
from bluegreen.lab.lab import Lab
from bluegreen.lab.legacy import BRANCH, IDE_CONFIG, OPERATOR_DIR, WIKI, LegacyLab
from bluegreen.lab.loadgen import RequestLoop
from bluegreen.model.dotenv import parse_env
from bluegreen.model.errors import LockedError
from bluegreen.model.stackfile import load_stack, stack_file
from bluegreen.model.topology import Topology, other_color
from bluegreen.render.bootstrap import STATE_SCRIPT

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


def bluegreen(clone: Path, *args: str) -> Any:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--cwd", str(clone), "--stack", "lab", "--json", *args], out=out, err=err)
    assert code == 0, f"bluegreen {' '.join(args)} exited {code}: {err.getvalue()[-2000:]}"
    return json.loads(out.getvalue())


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
    """The settings the app runs with: shared/.env once converted, the working copy's before."""
    host = t.app_host(color)
    assert t.app.working_copy is not None
    for path in (Path(host.path(t.app.dir), "shared/.env"), Path(host.path(t.app.working_copy), ".env")):
        if path.exists():
            return parse_env(path.read_text())
    raise AssertionError(f"no .env on {color}")


def working_copies(t: Topology) -> dict[str, dict[str, Any]]:
    """Each app host's working copy as the team sees it: branch, commit, origin, status, .env."""
    out = {}
    for color in ("blue", "green"):
        assert t.app.working_copy is not None
        work = t.app_host(color).path(t.app.working_copy)

        def git(*args: str, work: str = work) -> str:
            return subprocess.run(["git", "-C", work, *args], capture_output=True, text=True, check=True,
                                  timeout=60).stdout

        out[color] = {"branch": git("rev-parse", "--abbrev-ref", "HEAD"), "head": git("rev-parse", "HEAD"),
                      "origin": git("remote", "get-url", "origin"), "status": git("status", "--porcelain"),
                      # A working copy made again (a rebuilt host) has none: settings live in shared/.env.
                      "env": Path(work, ".env").read_text() if Path(work, ".env").exists() else None}
    return out


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
    assert t.app.working_copy is not None
    # A developer's uncommitted edit on blue (never rebuilt here): it must survive the conversion.
    edit = Path(t.app_host("blue").path(t.app.working_copy), "NOTES.md")
    edit.write_text("work in progress on blue\n")
    before = facts(t)
    copies = working_copies(t)
    assert len(before["env"]["blue"]) >= 12
    # Clients retry as browsers do (RFC 9112 9.3.1: a GET on a reused connection closed before any
    # byte of the answer), and only the first reload may cause that: its old worker runs the
    # estate's hand-written config, which closes idle connections when it stops (ours answers them
    # with `Connection: close`: idle-close-on-response). Any other retry, and any failure, fails.
    app = RequestLoop(f"{t.public_url}/", clients=6, ca_file=t.haproxy.ca_file, server_name=t.tls_server_name,
                      max_requests=5_000_000, max_seconds=2300, pause=0.002, retry=True)
    wiki = RequestLoop(f"http://{t.load_balancer.ip}:{WIKI[0]}/", clients=2, max_requests=5_000_000,
                       max_seconds=2300, pause=0.01, retry=True)
    with app, wiki:
        adopted = bluegreen(clone, "adopt", "--yes")
        assert adopted["liveColor"] == "blue" and adopted["databaseUser"] and adopted["deployUser"] == "root"
        assert adopted["healthPath"] == "/" and adopted["healthStatus"] == "200-399"
        apply_started = time.monotonic()
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
        assert report.failures == [], f"{what}: {report.summary()}"
        late = [s for s in report.samples if s.retried and not apply_started <= s.started <= apply_ended]
        assert late == [], f"{what}: retried outside the first reload: {late[:3]} ({report.summary()})"
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
    # The working copies are where the team left them: blue's as it was (branch, commit, origin,
    # the uncommitted edit, .env); the rebuilt green's made again on the branch. Releases live beside.
    now = working_copies(t)
    assert now["blue"] == copies["blue"] and edit.read_text() == "work in progress on blue\n"
    assert "?? NOTES.md" in copies["blue"]["status"]
    assert (now["green"]["branch"].strip(), now["green"]["origin"]) == (BRANCH, copies["green"]["origin"])
    status = bluegreen(clone, "status")
    for color in ("blue", "green"):
        wc = status["colors"][color]["workingCopy"]
        assert (wc["state"], wc["branch"], wc["ahead"], wc["behind"]) == ("present", BRANCH, 0, 0), wc
    assert status["colors"]["blue"]["workingCopy"]["untracked"] == 1
    # The rehearsal wrote its adopted stack in the lab's directory: the clone is as it was.
    assert stack_file(clone, "lab").read_text() == tracked
    assert git(clone, "status", "--porcelain", "--untracked-files=all") == ""


def _state_script(t: Topology, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([t.load_balancer.path(STATE_SCRIPT), *args], capture_output=True, text=True, timeout=60)


def _admin(t: Topology, command: str) -> str:
    with connect(t, t.load_balancer) as lb:
        return lb.run(runtime_command(t.load_balancer.path(t.haproxy.admin_socket), [command]),
                      step="admin socket").stdout


def _served_by(t: Topology) -> str | None:
    return http_probe(f"{t.public_url}/", headers={"Connection": "close"}, **visitor(t)).served_by


@pytest.mark.timeout(900)
def test_the_old_switch_is_retired_and_an_old_habit_switches_the_new_way(legacy: tuple[LegacyLab, Path]) -> None:
    the_lab, clone = legacy
    t = load_stack(clone, "lab")
    Lab(project_dir=clone)._apply()  # map routing in place (what the takeover above left; a no-op then)
    lb = t.load_balancer
    script = Path(lb.path(STATE_SCRIPT))
    state_file = Path(lb.path(t.journal.path))
    old_script = script.read_text()
    ide = the_lab.paths.root / OPERATOR_DIR / IDE_CONFIG

    # adopt says what it found: the old switch (and what it does) and the old MCP server in Windsurf.
    found = bluegreen(clone, "adopt", "--dry-run", "--ide-config", str(ide))["legacyTools"]
    assert found["scriptKind"] == "estate" and found["needsRetiring"], found
    assert "rewrites use_backend in haproxy.cfg" in found["does"] and "switch" in found["commands"]
    [entry] = found["ideEntries"]
    assert entry["name"] == "blue-green-deployment" and entry["serverJs"].endswith("mcp-blue-green/server.js")
    assert entry["does"] == ["switches through jw-deployment-state.sh on the load balancer"]

    retired = bluegreen(clone, "retire-legacy", "--yes", "--ide-config", str(ide))
    assert Path(str(script) + ".pre-bluegreen").read_text() == old_script  # kept, byte for byte
    assert retired["replacementEntry"][f"bluegreen-{t.stack}"]["args"][:3] == ["-m", "bluegreen", "mcp"]
    assert bluegreen(clone, "retire-legacy", "--yes")["changes"] == []  # a second run changes nothing

    with connect(t, lb) as ex:
        live = hr.live_color(ex, t)
    target = other_color(live)
    before = json.loads(state_file.read_text())
    # get, history and set keep working on the journal; set cannot make it lie.
    assert _state_script(t, "get", "prod").stdout.strip() == live == before["prod"]
    newest = _state_script(t, "history", "1").stdout.strip()
    assert newest.startswith(str(before["history"][0].get("timestamp") or before["history"][0].get("when")))
    refused = _state_script(t, "set", "prod", target)
    assert refused.returncode == 2 and f"switch {target}" in refused.stderr
    assert json.loads(state_file.read_text()) == before

    # A target HAProxy sees DOWN is refused; nothing moves.
    _admin(t, f"set server bk_{target}/{target} state maint")
    try:
        down = _state_script(t, "switch")
        assert down.returncode == 1 and f"bk_{target} has no server UP" in down.stderr
    finally:
        _admin(t, f"set server bk_{target}/{target} state ready")
    deadline = time.monotonic() + 30
    while f"bk_{target}" not in _admin(t, "show stat") or \
            not [ln for ln in _admin(t, "show stat").splitlines() if ln.startswith(f"bk_{target},{target},")
                 and ",UP," in ln]:
        assert time.monotonic() < deadline, "the target never came back UP"
        time.sleep(0.5)

    # The old habit: `jw-deployment-state.sh switch`. It flips the map (runtime and file) and records it.
    switched = _state_script(t, "switch", "--reason", "old habit")
    assert switched.returncode == 0, switched.stderr
    with connect(t, lb) as ex:
        assert hr.live_color(ex, t) == target
    assert f"live bk_{target}" in Path(lb.path(t.haproxy.map_path)).read_text()
    assert _served_by(t) == target
    after = json.loads(state_file.read_text())
    assert (after["prod"], after["switchCount"]) == (target, before["switchCount"] + 1)
    assert after["history"][0]["reason"] == "old habit" and after["history"][0]["path"] == "jw-deployment-state.sh"
    assert after["history"][1:] == before["history"][:len(after["history"]) - 1]
    assert bluegreen(clone, "history", "--limit", "1")[0]["to"] == target
    assert not Path(lb.path(t.journal.lock_path)).exists()  # released
    again = _state_script(t, "switch", target)
    assert again.returncode == 0 and "already live" in again.stdout

    # A held deployment lock refuses a normal switch; --emergency takes it over, as bluegreen's does.
    with connect(t, lb) as ex:
        holder = LockManager(ex, lb.path(t.journal.lock_path))
        holder.acquire("deploy", who="ops@laptop")
        held = _state_script(t, "switch")
        assert held.returncode == 1 and "held by ops@laptop for deploy" in held.stderr
        emergency = _state_script(t, "switch", "--emergency")
        assert emergency.returncode == 0, emergency.stderr
        with pytest.raises(LockedError):
            holder.check()
    final = json.loads(state_file.read_text())
    assert final["prod"] == live and final["history"][0]["preempted"]["holder"] == "ops@laptop"
    assert final["history"][0]["emergency"] is True
    assert _served_by(t) == live
    assert not Path(lb.path(t.journal.lock_path)).exists()
