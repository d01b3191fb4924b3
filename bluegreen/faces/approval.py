"""Approval basics for mutating MCP tools: the error, canonical digests, change descriptions, the
plan in words and the estate facts an approval is bound to.

Pure logic, no I/O. The store that binds a person's approval to one plan is `approval_store.py`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from bluegreen.model.errors import BlueGreenError

DEFAULT_TTL_SECONDS = 300.0


class ApprovalError(BlueGreenError):
    """An approval was refused: unknown, expired, not given, used, for another call, or stale."""


def canonical(value: Any) -> str:
    """One spelling per value, so equal arguments or plans compare equal whatever their key order."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def digest(value: Any) -> str:
    return hashlib.sha256(canonical(value).encode()).hexdigest()


def describe_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """`key: old -> new` for every fact that differs, for the refusal message."""
    changes = []
    # In the order the facts were given: the caller lists the most telling first.
    for key in [*before, *(k for k in after if k not in before)]:
        old, new = before.get(key), after.get(key)
        if canonical(old) != canonical(new):
            changes.append(f"{key}: {_short(old)} -> {_short(new)}")
    return "; ".join(changes) or "the plan differs from the one approved"


def _short(value: Any, limit: int = 80) -> str:
    text = "none" if value is None else value if isinstance(value, str) else canonical(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def estate_facts(status: Mapping[str, Any], last_entry: Mapping[str, Any] | None) -> dict[str, Any]:
    """What an approval is bound to besides the plan: what would make the plan mean something else.

    From `status().to_json()`; volatile readings (latency, uptime, pm2 pids) stay out, or every
    token would go stale by itself.
    """
    standby = status.get("standby")
    color = (status.get("colors") or {}).get(standby) or {}
    return {"live": status.get("live"), "standby": standby, "standbyRelease": color.get("release"),
            "standbySha": color.get("sha"), "switchCount": status.get("switchCount"),
            "lastHistoryEntry": dict(last_entry) if last_entry else None}


def describe_plan(tool: str, plan: Mapping[str, Any]) -> str:
    """The plan in words, for the person approving it."""
    if tool == "deploy_to_standby":
        lines = [f"Deploy {plan.get('ref')} to the standby colour {plan.get('colour')} "
                 f"({plan.get('host')}); {plan.get('live')} stays live and untouched."]
        lines += [f"  - {step}" for step in plan.get("steps") or []]
        return "\n".join(lines)
    verb = "Roll back" if tool == "rollback" else "Switch"
    sha = str(plan.get("sha") or "")[:7] or "unknown"
    emergency = " EMERGENCY: checks skipped." if plan.get("emergency") else ""
    lines = [f"{verb} live traffic from {plan.get('from')} to {plan.get('colour')} "
             f"(release {plan.get('release') or 'none'}, commit {sha}, via {plan.get('path')}).{emergency}"]
    lines += [f"  check: {check}" for check in plan.get("checks") or []]
    lines += [f"  PROBLEM: {problem}" for problem in plan.get("problems") or []]
    return "\n".join(lines)
