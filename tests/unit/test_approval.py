"""ApprovalBook: every way a token is accepted or refused, with a clock the test moves."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.types import TextContent

from bluegreen.approval import ApprovalBook, ApprovalError, canonical, describe_changes, digest
from bluegreen.errors import BlueGreenError, ConfigError, DeployError, LockedError
from bluegreen.mcp_server import (
    ELICITATION_ENV,
    TTL_ENV,
    DeployTools,
    approval_ttl,
    describe_plan,
    elicitation_enabled,
    estate_facts,
    ok_result,
    redact_tree,
)
from bluegreen.sensitive import Sensitive
from bluegreen.topology import load_stack


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


DEPLOY_ARGS = {"ref": "v1", "migrate": False}
FACTS = {"live": "blue", "standbySha": "a" * 40, "switchCount": 3}
PLAN = digest({"plan": {"colour": "green"}, "estate": FACTS})


@dataclass
class Redeem:
    """One redeem attempt after the token was issued for `deploy_to_standby(ref=v1)`."""

    after_s: float = 0.0
    tool: str = "deploy_to_standby"
    args: dict[str, Any] = field(default_factory=lambda: dict(DEPLOY_ARGS))
    plan: str = PLAN
    facts: dict[str, Any] = field(default_factory=lambda: dict(FACTS))
    token: str | None = None  # None: the issued token


OK = None
CASES: list[tuple[str, list[tuple[Redeem, str | None]]]] = [
    ("fresh token, same call and estate", [(Redeem(), OK)]),
    ("just before expiry", [(Redeem(after_s=299.9), OK)]),
    ("at expiry", [(Redeem(after_s=300.0), "expired (300s after it was issued)")]),
    ("long after expiry, still remembered", [(Redeem(after_s=899.0), "expired")]),
    ("long after expiry (forgotten)", [(Redeem(after_s=901.0), "unknown")]),
    ("reused", [(Redeem(), OK), (Redeem(), "already used")]),
    ("never issued", [(Redeem(token="not-a-token"), "unknown")]),
    ("empty token", [(Redeem(token=""), "unknown")]),
    ("another tool", [(Redeem(tool="switch_traffic", args={}),
                       "issued for deploy_to_standby, not switch_traffic")]),
    ("other arguments", [(Redeem(args={"ref": "v2", "migrate": False}),
                          'with arguments {"migrate":false,"ref":"v1"}, not {"migrate":false,"ref":"v2"}')]),
    ("estate changed", [(Redeem(plan=digest("other"), facts={**FACTS, "live": "green"}),
                         "stale: the estate changed since approval: live: blue -> green")]),
    # A mismatched call leaves the token valid for the call it approved...
    ("wrong tool, then the right call", [(Redeem(tool="rollback", args={}), "not rollback"), (Redeem(), OK)]),
    # ...but a stale plan spends it: the approved plan no longer exists.
    ("stale, then the old estate again", [(Redeem(plan=digest("other")), "stale"),
                                          (Redeem(), "already used")]),
    ("expired, then retried", [(Redeem(after_s=301.0), "expired"), (Redeem(after_s=302.0), "already used")]),
]


@pytest.mark.parametrize("attempts", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_redeem(attempts: list[tuple[Redeem, str | None]]) -> None:
    clock = FakeClock()
    book = ApprovalBook(clock=clock, ttl=300)
    approval = book.issue("deploy_to_standby", DEPLOY_ARGS, PLAN, facts=FACTS)
    start = clock.now
    for attempt, refusal in attempts:
        clock.now = start + attempt.after_s
        token = approval.token if attempt.token is None else attempt.token
        if refusal is OK:
            book.redeem(token, attempt.tool, attempt.args, attempt.plan, facts=attempt.facts)
        else:
            with pytest.raises(ApprovalError, match=re.escape(refusal)):
                book.redeem(token, attempt.tool, attempt.args, attempt.plan, facts=attempt.facts)


def test_error_is_a_bluegreen_error() -> None:
    assert issubclass(ApprovalError, BlueGreenError)


def test_tokens_are_random_and_distinct() -> None:
    book = ApprovalBook(clock=FakeClock())
    tokens = {book.issue("rollback", {}, PLAN).token for _ in range(50)}
    assert len(tokens) == 50
    assert all(len(t) >= 32 for t in tokens)


def test_each_token_redeems_only_its_own_call() -> None:
    book = ApprovalBook(clock=FakeClock())
    deploy = book.issue("deploy_to_standby", DEPLOY_ARGS, PLAN)
    switch = book.issue("switch_traffic", {"emergency": False}, PLAN)
    with pytest.raises(ApprovalError, match="issued for switch_traffic"):
        book.redeem(switch.token, "deploy_to_standby", DEPLOY_ARGS, PLAN)
    book.redeem(deploy.token, "deploy_to_standby", DEPLOY_ARGS, PLAN)
    book.redeem(switch.token, "switch_traffic", {"emergency": False}, PLAN)


def test_argument_order_does_not_matter() -> None:
    book = ApprovalBook(clock=FakeClock())
    approval = book.issue("deploy_to_standby", {"ref": "v1", "migrate": True}, PLAN)
    book.redeem(approval.token, "deploy_to_standby", {"migrate": True, "ref": "v1"}, PLAN)


def test_configurable_ttl() -> None:
    clock = FakeClock()
    book = ApprovalBook(clock=clock, ttl=2)
    approval = book.issue("rollback", {}, PLAN)
    assert approval.to_json()["expiresInSeconds"] == 2
    clock.now += 2.5
    with pytest.raises(ApprovalError, match=r"expired \(2s"):
        book.redeem(approval.token, "rollback", {}, PLAN)


def test_forgotten_entries_bound_memory() -> None:
    clock = FakeClock()
    book = ApprovalBook(clock=clock, ttl=10, remember=10)
    for _ in range(5):
        book.issue("rollback", {}, PLAN)
    assert len(book) == 5
    clock.now += 19
    book.issue("rollback", {}, PLAN)
    assert len(book) == 6
    clock.now += 2
    book.issue("rollback", {}, PLAN)
    assert len(book) == 2


@pytest.mark.parametrize("ttl", [0, -1, float("nan")])
def test_bad_ttl_is_refused(ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl must be positive"):
        ApprovalBook(ttl=ttl)


def test_public_json_carries_no_digest() -> None:
    approval = ApprovalBook(clock=FakeClock()).issue("deploy_to_standby", DEPLOY_ARGS, PLAN, facts=FACTS)
    data = approval.to_json()
    assert data == {"token": approval.token, "tool": "deploy_to_standby", "arguments": DEPLOY_ARGS,
                    "expiresInSeconds": 300}
    assert PLAN not in canonical(data)


@pytest.mark.parametrize(("before", "after", "expected"), [
    ({"live": "blue"}, {"live": "green"}, "live: blue -> green"),
    ({"live": "blue", "switchCount": 1}, {"live": "blue", "switchCount": 2}, "switchCount: 1 -> 2"),
    ({"standbySha": None}, {"standbySha": "abc"}, "standbySha: none -> abc"),
    ({"b": 1, "a": 2}, {"a": 4, "b": 3}, "b: 1 -> 3; a: 2 -> 4"),
    ({"live": "blue"}, {"live": "blue", "extra": 1}, "extra: none -> 1"),
    ({"last": {"type": "switch"}}, {"last": {"type": "deploy"}},
     'last: {"type":"switch"} -> {"type":"deploy"}'),
    ({"live": "blue"}, {"live": "blue"}, "the plan differs from the one approved"),
    ({"x": "y" * 200}, {"x": "z"}, "x: " + "y" * 77 + "... -> z"),
])
def test_describe_changes(before: dict[str, Any], after: dict[str, Any], expected: str) -> None:
    assert describe_changes(before, after) == expected


def test_digest_is_order_independent() -> None:
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 2})


def test_fractional_ttl_is_shown_as_given() -> None:
    approval = ApprovalBook(clock=FakeClock(), ttl=0.5).issue("rollback", {}, PLAN)
    assert approval.to_json()["expiresInSeconds"] == 0.5


# ------------------------------------------------------------------------ the MCP server's side


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, 300.0), ({TTL_ENV: ""}, 300.0), ({TTL_ENV: "60"}, 60.0), ({TTL_ENV: " 0.5 "}, 0.5),
])
def test_approval_ttl(environ: dict[str, str], expected: float) -> None:
    assert approval_ttl(environ) == expected


@pytest.mark.parametrize("raw", ["0", "-5", "soon", "nan", "inf"])
def test_bad_approval_ttl_is_a_config_error(raw: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{TTL_ENV}={raw!r}: expected a positive number")):
        approval_ttl({TTL_ENV: raw})


@pytest.mark.parametrize(("raw", "expected"), [("on", True), ("OFF", False), ("0", False), ("yes", True)])
def test_elicitation_setting(raw: str, expected: bool) -> None:
    assert elicitation_enabled({ELICITATION_ENV: raw}) is expected
    assert elicitation_enabled({}) is True


def test_bad_elicitation_setting() -> None:
    with pytest.raises(ConfigError, match="expected on or off"):
        elicitation_enabled({ELICITATION_ENV: "sometimes"})


STATUS: dict[str, Any] = {
    "live": "blue", "standby": "green", "switchCount": 4,
    "colors": {"blue": {"release": "r1", "sha": "1" * 40, "latencyMs": 3.2},
               "green": {"release": "r2", "sha": "2" * 40, "latencyMs": 9.9}},
}


def test_estate_facts_keep_what_an_approval_depends_on() -> None:
    last = {"type": "switch", "from": "green", "to": "blue"}
    assert estate_facts(STATUS, last) == {
        "live": "blue", "standby": "green", "standbyRelease": "r2", "standbySha": "2" * 40,
        "switchCount": 4, "lastHistoryEntry": last}


def test_estate_facts_ignore_volatile_readings() -> None:
    jittered = {**STATUS, "colors": {c: {**s, "latencyMs": 50.0} for c, s in STATUS["colors"].items()}}
    assert estate_facts(jittered, None) == estate_facts(STATUS, None)
    redeployed = {**STATUS, "colors": {**STATUS["colors"], "green": {"release": "r3", "sha": "3" * 40}}}
    assert describe_changes(estate_facts(STATUS, None), estate_facts(redeployed, None)) == (
        f"standbyRelease: r2 -> r3; standbySha: {'2' * 40} -> {'3' * 40}")


@pytest.mark.parametrize(("tool", "plan", "expected"), [
    ("deploy_to_standby", {"ref": "v2", "colour": "green", "host": "jw-green", "live": "blue",
                           "steps": ["fetch v2", "build"]},
     "Deploy v2 to the standby colour green (jw-green); blue stays live and untouched.\n"
     "  - fetch v2\n  - build"),
    ("switch_traffic", {"from": "blue", "colour": "green", "release": "r2", "sha": "abcdef0123",
                        "path": "direct", "emergency": False, "checks": ["green is healthy"],
                        "problems": []},
     "Switch live traffic from blue to green (release r2, commit abcdef0, via direct).\n"
     "  check: green is healthy"),
    ("rollback", {"from": "green", "colour": "blue", "release": None, "sha": None, "path": "emergency",
                  "emergency": True, "checks": [], "problems": ["blue has no release deployed"]},
     "Roll back live traffic from green to blue (release none, commit unknown, via emergency). "
     "EMERGENCY: checks skipped.\n  PROBLEM: blue has no release deployed"),
])
def test_describe_plan(tool: str, plan: dict[str, Any], expected: str) -> None:
    assert describe_plan(tool, plan) == expected


def _tools() -> DeployTools:
    topology = load_stack(Path(__file__).resolve().parents[2], "lab")
    return DeployTools(topology, book=ApprovalBook(), secrets=[Sensitive("hunter2-secret")])


async def _raise(exc: Exception) -> Any:
    raise exc


@pytest.mark.parametrize(("exc", "message"), [
    (LockedError("lock held by ops@host since 12:00"), "lock held by ops@host since 12:00"),
    (DeployError("build", "npm said hunter2-secret", color="green"),
     "deploy on green failed at step 'build': npm said [REDACTED]"),
    (ApprovalError("approval token expired"), "approval token expired"),
    (RuntimeError("password=hunter2-secret in a crash"), "internal error: RuntimeError"),
    (KeyError("hunter2-secret"), "internal error: KeyError"),
])
def test_failures_become_tool_errors_without_secrets(exc: Exception, message: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    result = anyio.run(_tools()._guard, "deploy_to_standby", _raise(exc))
    assert result.is_error is True
    assert [c.text for c in result.content if isinstance(c, TextContent)] == [message]
    assert "deploy_to_standby" in caplog.text
    assert "hunter2-secret" not in caplog.text
    assert "Traceback" not in caplog.text


def test_results_are_scrubbed_and_stay_valid_json() -> None:
    secret = Sensitive("s3cr3t-token-value")
    data = {"errors": ['psql: password="s3cr3t-token-value" rejected', "fine"],
            "nested": {"url": "postgresql://jw:hunter@db/x", "count": 3, "ok": True}}
    result = ok_result(data, "saw s3cr3t-token-value", secrets=[secret])
    texts = [c.text for c in result.content if isinstance(c, TextContent)]
    assert "s3cr3t-token-value" not in "".join(texts)
    assert "hunter" not in "".join(texts)
    assert texts[0] == "saw [REDACTED]"
    assert json.loads(texts[1]) == result.structured_content
    assert result.structured_content == redact_tree(data, [secret])
    assert result.structured_content["nested"]["count"] == 3
    assert result.structured_content["nested"]["url"] == "postgresql://jw:[REDACTED]@db/x"
