"""Approval basics for mutating MCP tools: the error, canonical digests, change descriptions.

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
