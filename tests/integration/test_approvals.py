"""Approvals the assistant cannot forge (issue 24), on the lab, with real OS accounts and sudo.

A person's account runs the MCP server, as it would on a laptop; an "assistant" script runs as
that same account and tries every way to approve its own switch: a grant with the digest computed
from what the tool showed, the nonce read from the request file, a copied or hard-linked grant,
a swapped grants directory, a rewritten request, `bluegreen approve` behind `script`, sudo without
the password or with a guessed one, and replaying a spent approval. Traffic never moves. Then the
person approves through `sudo -u <approver>` with their own password on a terminal: it switches
once, the journal names who approved on which terminal, and the replays that follow move nothing.

The accounts (the person, the approver) are made for this module and removed after it; the
person's copies of the lab's key, token and secrets are theirs alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio
import anyio.to_thread
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp import types as mcp_types

from bluegreen.hosts.health import http_probe, visitor
from bluegreen.lab.lab import Lab
from bluegreen.model.topology import Topology, other_color
from bluegreen.ops.estate import Estate
from bluegreen.ops.status import history, lock_status, status
from bluegreen.ops.switch import switch
from tests.integration.accounts import (
    SITE_PACKAGES,
    SYSTEM_PYTHON,
    Account,
    accounts,
    accounts_available,
    make_account,
    on_terminal,
    python_argv,
    setup_approvals,
    write_bluegreen_wrapper,
)
from tests.integration.support import live_color, release_on_both_colours

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(accounts_available() is not None, reason=str(accounts_available()))]

REPO = Path(__file__).resolve().parents[2]
TAG = os.getpid()
PERSON, APPROVER = f"bga{TAG}", f"bgp{TAG}"
LAB_FILES = {  # what the person's copy of the stack points at instead of the lab's root-only files
    "/var/tmp/jw-lab/ssh/id_ed25519": "id_ed25519", "/var/tmp/jw-lab/ssh/known_hosts": "known_hosts",
    "/var/tmp/jw-lab/pve/token": "pve-token", "/var/tmp/jw-lab/secrets/next_server_actions_key": "actions-key",
    "/var/tmp/jw-lab/secrets/webhook-url": "webhook-url", "/var/tmp/jw-lab/active-color": "active-color",
}


@dataclass
class World:
    t: Topology
    person: Account
    base: Path
    project: Path
    approvals: Path  # the shared approvals directory (its <stack>/ below)
    bluegreen: Path  # the root-owned `bluegreen` the sudo rule names


def run_as_person(world: World, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", PERSON, "--", *argv], capture_output=True, text=True,
                          cwd=str(world.project), env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
                                                       "HOME": str(world.person.home), "APPROVER": APPROVER},
                          timeout=300, **kwargs)


def person_project(lab: Lab, home: Path) -> Path:
    """Pulumi.yaml and the lab stack, pointing at the person's own copies of the lab's files."""
    keep = home / ".bluegreen"
    keep.mkdir(mode=0o700)
    stack = (REPO / "stacks" / "Pulumi.lab.yaml").read_text()
    for source, name in LAB_FILES.items():
        if name == "active-color":  # the colour HAProxy serves (a fresh lab has no such file yet)
            (keep / name).write_text(live_color(lab.topology) + "\n")
        else:
            shutil.copy(source, keep / name)
        stack = stack.replace(source, str(keep / name))
    shutil.copy("/var/tmp/jw-lab/ssh/id_ed25519.pub", keep / "id_ed25519.pub")
    project = home / "project"
    (project / "stacks").mkdir(parents=True)
    shutil.copy(REPO / "Pulumi.yaml", project / "Pulumi.yaml")
    (project / "stacks" / "Pulumi.lab.yaml").write_text(stack)
    subprocess.run(["chown", "-R", f"{PERSON}:", str(home)], check=True)
    for path in keep.iterdir():
        path.chmod(0o600)
    return project


@pytest.fixture(scope="module")
def world(lab: Lab) -> Iterator[World]:
    t = lab.topology
    base = lab.paths.root / f"approvals-test-{TAG}"
    base.mkdir(mode=0o755)
    try:
        with accounts(PERSON, APPROVER):
            person = make_account(PERSON, base / "home")
            bluegreen = write_bluegreen_wrapper(base / "bin" / "bluegreen")
            approvals = base / "approvals"
            setup_approvals(APPROVER, PERSON, "lab", approvals, bluegreen)
            yield World(t, person, base, person_project(lab, person.home), approvals, bluegreen)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def ready(world: World) -> World:
    """Both colours serve a release, so a switch either way is a real one."""
    service = Estate(world.t)
    while lock_status(service) is not None:
        anyio.run(anyio.sleep, 1)
    release_on_both_colours(service)
    return world


@contextlib.asynccontextmanager
async def server_as_person(world: World, errlog: TextIO) -> AsyncIterator[ClientSession]:
    """`bluegreen mcp` started by the client as the person (no elicitation: codes only)."""
    params = StdioServerParameters(
        command="runuser",
        args=["-u", PERSON, "--", *python_argv("mcp", "--stack", "lab", "--cwd", str(world.project))],
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(world.person.home),
             "BLUEGREEN_APPROVALS_DIR": str(world.approvals), "BLUEGREEN_APPROVER": APPROVER},
        cwd=str(world.project))
    async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def served_by(t: Topology) -> str | None:
    return http_probe(f"{t.public_url}{t.app.health_path}", headers={"Connection": "close"}, timeout=5,
                      **visitor(t)).served_by


def traffic(t: Topology) -> tuple[str | None, str | None, int]:
    report = status(Estate(t))
    return report.live, served_by(t), report.to_json()["switchCount"]


def data_of(result: mcp_types.CallToolResult) -> dict[str, Any]:
    assert result.structured_content is not None, result
    return result.structured_content


def forge(world: World, shown: dict[str, Any]) -> dict[str, str]:
    """The assistant's attempts, as the person's account, with what the tool showed it."""
    result_file = world.person.home / "shown.json"
    result_file.write_text(json.dumps(shown))
    shutil.chown(result_file, PERSON)
    script = Path(__file__).with_name("forge.py")
    done = run_as_person(world, [SYSTEM_PYTHON, "-I", "-c",
                                 f"import sys; sys.path[:0] = [{str(SITE_PACKAGES)!r}, {str(REPO)!r}]; "
                                 f"sys.argv = ['forge.py', *sys.argv[1:]]; exec(open({str(script)!r}).read())",
                                 str(result_file), str(world.approvals), "lab", str(world.bluegreen)])
    assert done.returncode == 0, done.stderr
    outcome: dict[str, str] = json.loads(done.stdout)
    return outcome


def approve_with_sudo(world: World, code: str) -> tuple[int, str]:
    """The person, at a terminal: sudo asks their password, `bluegreen approve` shows the plan."""
    return on_terminal(["runuser", "-u", PERSON, "--", "sudo", "-u", APPROVER, str(world.bluegreen), "approve",
                        code, "--stack", "lab", "--approvals-dir", str(world.approvals)],
                       [(b"password for", world.person.password.encode()), (b"[y/N]", b"y")],
                       env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(world.person.home), "TERM": "dumb"},
                       cwd="/")


def test_the_assistant_cannot_approve_only_the_person_can(ready: World, tmp_path: Path) -> None:
    world = ready
    t = world.t
    live, served, count = traffic(t)
    assert live is not None and served == live
    errlog = (tmp_path / "server.log").open("w+")

    async def session() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with server_as_person(world, errlog) as mcp:
            first = data_of(await mcp.call_tool("switch_traffic", {}))
            code = first["approval"]["code"]
            command = first["approval"]["approveInTerminal"].split()
            assert command[:3] == ["sudo", "-u", APPROVER] and command[4:6] == ["approve", code], command
            assert command[3].startswith("/") and command[3].endswith("/bluegreen"), command  # sudo's PATH
            out["forged"] = await anyio.to_thread.run_sync(lambda: forge(world, first))
            attempts: list[dict[str, Any]] = [{}, {"approval_code": code}, {"approval_code": code, "wait_seconds": 2}]
            out["after forgery"] = [await mcp.call_tool("switch_traffic", args) for args in attempts]
            out["traffic after forgery"] = await anyio.to_thread.run_sync(lambda: traffic(t))
            out["approved"] = await anyio.to_thread.run_sync(lambda: approve_with_sudo(world, code))
            out["run"] = data_of(await mcp.call_tool("switch_traffic", {"approval_code": code}))
            out["traffic after approval"] = await anyio.to_thread.run_sync(lambda: traffic(t))
            # Replays: the spent request put back beside the approver's grant, still on disk; the spent code.
            out["replayed"] = await anyio.to_thread.run_sync(lambda: forge(world, first))
            out["after replay"] = [await mcp.call_tool("switch_traffic", args)
                                   for args in ({"approval_code": code}, {})]
            out["traffic after replay"] = await anyio.to_thread.run_sync(lambda: traffic(t))
        return out

    try:
        out = anyio.run(session)
    finally:
        errlog.seek(0)
        server_log = errlog.read()
    forged = out["forged"]
    # Nothing the assistant did could write where the server trusts grants, or be the approver.
    for name in ("computed grant in grants/", "swap grants/", "new grants/ beside"):
        assert forged[name].startswith("refused: PermissionError"), (name, forged[name])
    assert forged["computed grant in requests/"].startswith("done")  # its own directory: ignored
    assert "given by the account that owns" in forged["script + approve"]
    assert "a password is required" in forged["sudo -n"]
    assert "incorrect password" in forged["sudo -S wrong password"] or "exit 1" in forged["sudo -S wrong password"]
    assert not forged["script + sudo"].startswith("done: exit 0")
    for result in out["after forgery"]:
        assert result.is_error or data_of(result)["changed"] is False, result
    # The rewritten request file (what the approver shows) was noticed and written again.
    assert "written again" in json.dumps(data_of(out["after forgery"][0]))
    assert out["traffic after forgery"] == (live, live, count)
    # The person, with sudo and their password: exactly one switch, recorded with who approved where.
    code_run, printed = out["approved"]
    assert code_run == 0, printed
    assert "Switch live traffic from" in printed and "approved" in printed
    assert out["run"]["ok"] is True and out["run"]["colour"] == other_color(live)
    assert out["traffic after approval"] == (other_color(live), other_color(live), count + 1)
    entry = history(Estate(t), 1)[0]
    assert f"approved by {PERSON} (as {APPROVER}) on /dev/pts/" in str(entry.get("who")), entry
    # Replays after the run move nothing.
    replayed = out["replayed"]
    assert replayed["spent request put back"].startswith("done")
    assert replayed["copied grant"].startswith("refused: PermissionError")
    for result in out["after replay"]:
        assert result.is_error or data_of(result)["changed"] is False, result
    assert out["traffic after replay"] == (other_color(live), other_color(live), count + 1)
    assert "Traceback" not in server_log
    # Leave the lab as it was found.
    switch(Estate(t), watch=False)
    assert traffic(t)[:2] == (live, live)


def test_a_grant_the_server_cannot_trust_is_ignored_not_fatal(ready: World, tmp_path: Path) -> None:
    """A stray grant (wrong owner, open mode, not JSON) leaves the tool working and says why."""
    world = ready
    errlog = (tmp_path / "server.log").open("w+")

    async def session() -> tuple[dict[str, Any], mcp_types.CallToolResult]:
        async with server_as_person(world, errlog) as mcp:
            first = data_of(await mcp.call_tool("rollback", {}))
            code = first["approval"]["code"]
            stray = world.approvals / "lab" / "grants" / f"{code}.grant.json"
            stray.write_text("{not json")  # root plants it; owned by root, not the approver
            stray.chmod(0o666)
            again = await mcp.call_tool("rollback", {"approval_code": code})
            return first, again

    before = traffic(world.t)
    _, again = anyio.run(session)
    data = data_of(again)
    assert not again.is_error and data["changed"] is False
    assert "was ignored" in data["note"] and "not to the approver" in data["note"]
    assert traffic(world.t) == before
