"""The MCP server over a real stdio connection, driven by the SDK's own client, against the lab.

Each test starts `python -m bluegreen.cli mcp --stack lab` as a subprocess through
`mcp.client.stdio.stdio_client`, which stops it by its PID when the session closes. What the
server claims is checked against the estate itself: the CLI's status, the hosts' health
endpoints, the public frontend's `X-Served-By` header, the journal.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

import anyio
import anyio.to_thread
import httpx
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp import types as mcp_types
from mcp.client.session import ClientRequestContext, ElicitationFnT

from bluegreen.health import http_probe, visitor
from bluegreen.lab.lab import Lab
from bluegreen.service import Service
from bluegreen.topology import Topology, other_color

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"
BLUEGREEN = REPO / ".venv" / "bin" / "bluegreen"
TOOLS = {"get_deployment_status", "get_deployment_history", "deploy_to_standby", "switch_traffic",
         "rollback"}

# ------------------------------------------------------------------------ helpers


@contextlib.asynccontextmanager
async def mcp_session(errlog: TextIO, *, env: dict[str, str] | None = None,
                      elicitation: ElicitationFnT | None = None) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=str(PYTHON), args=["-m", "bluegreen.cli", "mcp", "--stack", "lab", "--cwd", str(REPO)],
        env=env, cwd=str(REPO))
    async with stdio_client(params, errlog=errlog) as (read, write), \
            ClientSession(read, write, elicitation_callback=elicitation) as session:
        await session.initialize()
        yield session


def text_of(result: mcp_types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, mcp_types.TextContent))


def data_of(result: mcp_types.CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


def fingerprint(t: Topology) -> dict[str, Any]:
    """Everything a mutating call would change, read straight from the estate."""
    status = Service(t).status().to_json()
    history = Service(t).history(1)
    return {"live": status["live"], "switchCount": status["switchCount"],
            "colours": {c: (s["release"], s["sha"]) for c, s in status["colors"].items()},
            "lastEntry": history[0] if history else None}


def served_by(t: Topology) -> str | None:
    return http_probe(f"{t.public_url}{t.app.health_path}", headers={"Connection": "close"}, timeout=5,
                      **visitor(t)).served_by


def health_commit(t: Topology, color: str) -> str | None:
    host = t.app_host(color)
    body = httpx.get(f"http://{host.ip}:{t.app.port}{t.app.health_path}", timeout=5).json()
    return body.get("commit")


def tag_sha(t: Topology, tag: str) -> str:
    return subprocess.run(["git", "--git-dir", t.app.repo, "rev-parse", f"{tag}^{{commit}}"],
                          check=True, capture_output=True, text=True).stdout.strip()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BLUEGREEN), *args, "--stack", "lab", "--cwd", str(REPO)],
                          capture_output=True, text=True, timeout=240)


def wait_until_unlocked(t: Topology, patience_s: float = 300.0) -> None:
    """Other test sessions share the lab: let their deploy or switch finish before ours starts."""
    deadline = time.monotonic() + patience_s
    while Service(t).lock_status() is not None:
        if time.monotonic() > deadline:
            pytest.fail(f"the lab's deployment lock stayed held for {patience_s:g}s")
        time.sleep(1)


@pytest.fixture(scope="module")
def estate(lab: Lab) -> Topology:
    """The lab with a healthy release on both colours, so either one can take traffic."""
    t = lab.topology
    service = Service(t)
    wait_until_unlocked(t)
    for _ in range(2):
        status = service.status()
        standby = status.colors[status.standby]
        if not (standby.healthy and standby.release):
            service.deploy("v1", migrate=True)
        live = status.colors[status.live or status.declared]
        if live.healthy and live.release:
            break
        # The live colour has nothing to serve: move traffic, then give the other colour a release.
        service.switch(watch=False, emergency=not live.healthy)
    return t


@pytest.fixture(autouse=True)
def quiet_estate(request: pytest.FixtureRequest) -> None:
    if "estate" in request.fixturenames:
        wait_until_unlocked(request.getfixturevalue("estate"))


@pytest.fixture
def errlog(tmp_path: Path) -> TextIO:
    return (tmp_path / "server-stderr.log").open("w+")


# ------------------------------------------------------------------------ tests


def test_tools_and_their_input_schemas(errlog: TextIO) -> None:
    async def main() -> dict[str, mcp_types.Tool]:
        async with mcp_session(errlog) as session:
            return {tool.name: tool for tool in (await session.list_tools()).tools}

    tools = anyio.run(main)
    assert set(tools) == TOOLS
    deploy = tools["deploy_to_standby"].input_schema
    assert set(deploy["properties"]) == {"ref", "migrate", "approval_token"}
    assert deploy["properties"]["migrate"]["type"] == "boolean"
    assert not deploy.get("required")
    assert set(tools["switch_traffic"].input_schema["properties"]) == {"emergency", "approval_token"}
    assert set(tools["rollback"].input_schema["properties"]) == {"approval_token"}
    limit = tools["get_deployment_history"].input_schema["properties"]["limit"]
    assert (limit["type"], limit["default"], limit["minimum"]) == ("integer", 20, 1)
    assert tools["get_deployment_status"].input_schema["properties"] == {}
    for name in ("get_deployment_status", "get_deployment_history"):
        annotations = tools[name].annotations
        assert annotations is not None and annotations.read_only_hint is True
    for name in ("switch_traffic", "rollback"):
        annotations = tools[name].annotations
        assert annotations is not None and annotations.destructive_hint is True
    assert "approval_token" in (tools["deploy_to_standby"].description or "")


def test_status_is_the_cli_status(estate: Topology, errlog: TextIO) -> None:
    async def main() -> dict[str, Any]:
        async with mcp_session(errlog) as session:
            return data_of(await session.call_tool("get_deployment_status", {}))

    ours = anyio.run(main)
    completed = cli("status", "--json")
    assert completed.returncode == 0, completed.stderr
    theirs = json.loads(completed.stdout)
    stable = ("stack", "live", "declared", "standby", "drift", "switchCount", "lastSwitch", "endpoints")
    assert {k: ours[k] for k in stable} == {k: theirs[k] for k in stable}
    assert ours["stack"] == "lab"
    for color in ("blue", "green"):
        for key in ("host", "vmid", "release", "sha", "ref", "healthy"):
            assert ours["colors"][color][key] == theirs["colors"][color][key], (color, key)
    assert ours["colors"][ours["live"]]["healthy"] is True


def test_history_is_the_journal(estate: Topology, errlog: TextIO) -> None:
    async def main() -> tuple[dict[str, Any], mcp_types.CallToolResult]:
        async with mcp_session(errlog) as session:
            two = data_of(await session.call_tool("get_deployment_history", {"limit": 2}))
            bad = await session.call_tool("get_deployment_history", {"limit": 0})
            return two, bad

    two, bad = anyio.run(main)
    assert two["entries"] == Service(estate).history(2)
    assert two["count"] == len(two["entries"]) == 2
    assert bad.is_error and "limit" in text_of(bad)


def test_ungated_calls_change_nothing_and_return_plan_and_token(estate: Topology, errlog: TextIO) -> None:
    before = fingerprint(estate)
    live = before["live"]
    standby = other_color(live)

    async def main() -> dict[str, dict[str, Any]]:
        async with mcp_session(errlog) as session:
            deploy = await session.call_tool("deploy_to_standby", {"ref": "v2", "migrate": True})
            return {
                "deploy": data_of(deploy),
                "switch": data_of(await session.call_tool("switch_traffic", {})),
                "rollback": data_of(await session.call_tool("rollback", {})),
            }

    answers = anyio.run(main)
    assert fingerprint(estate) == before
    assert served_by(estate) == live
    deploy = answers["deploy"]
    assert (deploy["approved"], deploy["changed"]) == (False, False)
    assert deploy["plan"]["colour"] == standby and deploy["plan"]["live"] == live
    assert deploy["plan"]["ref"] == "v2" and deploy["plan"]["migrate"] is True
    assert any("migration" in step for step in deploy["plan"]["steps"])
    assert deploy["approval"]["tool"] == "deploy_to_standby"
    assert deploy["approval"]["arguments"] == {"ref": "v2", "migrate": True}
    assert deploy["approval"]["expiresInSeconds"] == 300
    switch = answers["switch"]
    assert (switch["plan"]["from"], switch["plan"]["colour"]) == (live, standby)
    assert switch["plan"]["sha"] == before["colours"][standby][1]
    assert switch["plan"]["problems"] == []
    assert switch["estate"]["live"] == live and switch["estate"]["switchCount"] == before["switchCount"]
    assert answers["rollback"]["plan"]["colour"] == standby
    tokens = {a["approval"]["token"] for a in answers.values()}
    assert len(tokens) == 3 and all(len(tok) >= 32 for tok in tokens)
    errlog.seek(0)
    log = errlog.read()
    assert not any(tok in log for tok in tokens), "approval tokens must never be logged"


def test_approved_deploy_runs_for_real_with_progress(estate: Topology, errlog: TextIO) -> None:
    standby = other_color(fingerprint(estate)["live"])
    expected_sha = tag_sha(estate, "v2")
    messages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    async def main() -> dict[str, Any]:
        async with mcp_session(errlog) as session:
            args = {"ref": "v2", "migrate": True}
            planned = data_of(await session.call_tool("deploy_to_standby", args))
            token = planned["approval"]["token"]
            return data_of(await session.call_tool("deploy_to_standby", {**args, "approval_token": token},
                                                   progress_callback=on_progress))

    result = anyio.run(main)
    assert result["ok"] is True
    assert (result["colour"], result["ref"], result["sha"]) == (standby, "v2", expected_sha)
    assert health_commit(estate, standby) == expected_sha
    after = fingerprint(estate)
    assert after["colours"][standby] == (result["release"], expected_sha)
    assert after["lastEntry"]["sha"] == expected_sha
    assert "fetch v2 ..." in messages
    assert any(m.startswith("ok: build (") for m in messages)
    assert any(m.startswith("ok: smoke test through the preview frontend") for m in messages)


def test_approved_switch_then_reuse_then_rollback_through_elicitation(estate: Topology,
                                                                     errlog: TextIO) -> None:
    before = fingerprint(estate)
    old, new = before["live"], other_color(before["live"])
    asked: list[str] = []

    async def approve(context: ClientRequestContext,
                        params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
        asked.append(params.message)
        return mcp_types.ElicitResult(action="accept", content={"approve": True})

    async def switch() -> tuple[dict[str, Any], mcp_types.CallToolResult]:
        async with mcp_session(errlog) as session:
            token = data_of(await session.call_tool("switch_traffic", {}))["approval"]["token"]
            done = data_of(await session.call_tool("switch_traffic", {"approval_token": token}))
            again = await session.call_tool("switch_traffic", {"approval_token": token})
            return done, again

    done, again = anyio.run(switch)
    assert done["ok"] is True and (done["from"], done["colour"]) == (old, new)
    assert done["verified"] is True and done["rolledBack"] is False
    assert served_by(estate) == new
    assert again.is_error and text_of(again).startswith("approval token already used")
    after_switch = fingerprint(estate)
    assert after_switch["live"] == new and after_switch["switchCount"] == before["switchCount"] + 1

    async def rollback() -> dict[str, Any]:
        async with mcp_session(errlog, elicitation=approve) as session:
            return data_of(await session.call_tool("rollback", {}))

    rolled = anyio.run(rollback)
    assert len(asked) == 1 and f"Roll back live traffic from {new} to {old}" in asked[0]
    assert rolled["ok"] is True and rolled["colour"] == old
    assert served_by(estate) == old
    assert fingerprint(estate)["switchCount"] == before["switchCount"] + 2


def test_declined_elicitation_changes_nothing(estate: Topology, errlog: TextIO) -> None:
    before = fingerprint(estate)

    async def decline(context: ClientRequestContext,
                        params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
        return mcp_types.ElicitResult(action="decline")

    async def main() -> dict[str, Any]:
        async with mcp_session(errlog, elicitation=decline) as session:
            return data_of(await session.call_tool("switch_traffic", {}))

    answer = anyio.run(main)
    assert (answer["approved"], answer["changed"], answer["answer"]) == (False, False, "decline")
    assert "approval" not in answer
    assert fingerprint(estate) == before


def test_token_for_another_call_or_unknown_is_refused(estate: Topology, errlog: TextIO) -> None:
    before = fingerprint(estate)

    async def main() -> list[mcp_types.CallToolResult]:
        async with mcp_session(errlog) as session:
            token = data_of(await session.call_tool("deploy_to_standby", {"ref": "v1"}))["approval"]["token"]
            return [
                await session.call_tool("deploy_to_standby", {"ref": "v2", "approval_token": token}),
                await session.call_tool("switch_traffic", {"approval_token": token}),
                await session.call_tool("rollback", {"approval_token": "made-up-token"}),
            ]

    other_args, other_tool, unknown = anyio.run(main)
    assert other_args.is_error and text_of(other_args) == (
        'approval token was issued for deploy_to_standby with arguments {"migrate":false,"ref":"v1"}, '
        'not {"migrate":false,"ref":"v2"}')
    assert other_tool.is_error
    assert text_of(other_tool) == "approval token was issued for deploy_to_standby, not switch_traffic"
    assert unknown.is_error and text_of(unknown).startswith("approval token unknown")
    assert fingerprint(estate) == before


def test_expired_token_is_refused(estate: Topology, errlog: TextIO) -> None:
    before = fingerprint(estate)

    async def main() -> tuple[dict[str, Any], mcp_types.CallToolResult]:
        env = {"BLUEGREEN_MCP_APPROVAL_TTL": "0.5"}
        async with mcp_session(errlog, env=env) as session:
            planned = data_of(await session.call_tool("switch_traffic", {}))
            # Waiting out the TTL is the behaviour under test, not a race: 0.5s TTL, 1s wait.
            await anyio.sleep(1.0)
            token = planned["approval"]["token"]
            return planned, await session.call_tool("switch_traffic", {"approval_token": token})

    planned, refused = anyio.run(main)
    assert planned["approval"]["expiresInSeconds"] == 0.5
    assert refused.is_error and text_of(refused).startswith("approval token expired (0.5s")
    assert fingerprint(estate) == before


def test_stale_token_is_refused_when_the_estate_changed(estate: Topology, errlog: TextIO) -> None:
    live = fingerprint(estate)["live"]
    standby = other_color(live)

    async def main() -> mcp_types.CallToolResult:
        async with mcp_session(errlog) as session:
            token = data_of(await session.call_tool("switch_traffic", {}))["approval"]["token"]
            # Someone else switches in between, through the CLI.
            switched = await anyio.to_thread.run_sync(lambda: cli("switch", "--yes", "--no-watch"))
            assert switched.returncode == 0, switched.stderr
            return await session.call_tool("switch_traffic", {"approval_token": token})

    try:
        refused = anyio.run(main)
        assert refused.is_error
        assert text_of(refused).startswith(
            f"stale: the estate changed since approval: live: {live} -> {standby}")
        # Refused, so still where the CLI put it: the MCP call did not switch back.
        assert fingerprint(estate)["live"] == standby
        assert served_by(estate) == standby
    finally:
        if fingerprint(estate)["live"] != live:
            restored = cli("switch", "--yes", "--no-watch")
            assert restored.returncode == 0, restored.stderr


def test_operational_failure_is_a_tool_error_with_the_cli_message(estate: Topology, errlog: TextIO) -> None:
    before = fingerprint(estate)
    args = {"ref": "no-such-ref-in-the-lab"}

    async def main() -> tuple[mcp_types.CallToolResult, mcp_types.CallToolResult]:
        async with mcp_session(errlog) as session:
            token = data_of(await session.call_tool("deploy_to_standby", args))["approval"]["token"]
            failed = await session.call_tool("deploy_to_standby", {**args, "approval_token": token})
            reused = await session.call_tool("deploy_to_standby", {**args, "approval_token": token})
            return failed, reused

    failed, reused = anyio.run(main)
    completed = cli("deploy", "--ref", args["ref"], "--yes")
    assert completed.returncode != 0
    cli_message = completed.stderr.strip().splitlines()[-1].removeprefix("bluegreen: ")
    assert failed.is_error
    assert text_of(failed) == cli_message
    assert args["ref"] in cli_message
    # A token approves one attempt, even one that failed.
    assert reused.is_error and text_of(reused).startswith("approval token already used")
    after = fingerprint(estate)
    assert (after["live"], after["colours"]) == (before["live"], before["colours"])
    errlog.seek(0)
    server_log = errlog.read()
    assert "Traceback" not in server_log
    assert "deploy_to_standby" in server_log


def test_server_refuses_a_bad_ttl_setting(errlog: TextIO) -> None:
    completed = subprocess.run(
        [str(PYTHON), "-m", "bluegreen.cli", "mcp", "--stack", "lab", "--cwd", str(REPO)],
        env={"PATH": "/usr/bin:/bin", "BLUEGREEN_MCP_APPROVAL_TTL": "soon"}, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2
    assert "BLUEGREEN_MCP_APPROVAL_TTL='soon': expected a positive number of seconds" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert completed.stdout == ""
