"""ApprovalBook: every way a token is accepted or refused, with a clock the test moves."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from bluegreen.approval import ApprovalBook, ApprovalError, canonical, describe_changes, digest
from bluegreen.errors import BlueGreenError


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
    ("long after expiry (forgotten)", [(Redeem(after_s=601.0), "unknown")]),
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
    book = ApprovalBook(clock=clock, ttl=10)
    for _ in range(5):
        book.issue("rollback", {}, PLAN)
    assert len(book) == 5
    clock.now += 21
    book.issue("rollback", {}, PLAN)
    assert len(book) == 1


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
