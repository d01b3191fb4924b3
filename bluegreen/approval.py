"""One-time approval tokens for mutating MCP tools: pure logic, no I/O.

A mutating tool called without a token changes nothing and returns its plan plus a token bound
to that tool, its arguments and a digest of the plan and estate it was shown. Redeeming the
token later is refused unless all three still match, so a person approves exactly what runs.
Tokens live only in the server process's memory: a restarted server forgets every approval.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import BlueGreenError

DEFAULT_TTL_SECONDS = 300.0


class ApprovalError(BlueGreenError):
    """An approval token was refused: unknown, expired, used, for another call, or stale."""


@dataclass(frozen=True)
class Approval:
    token: str
    tool: str
    args: Mapping[str, Any]
    plan_digest: str
    issued_at: float
    expires_at: float
    facts: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ttl_seconds(self) -> float:
        return self.expires_at - self.issued_at

    def to_json(self) -> dict[str, Any]:
        """What the client needs to redeem it; the digest stays on the server."""
        seconds = round(self.ttl_seconds, 1)
        return {"token": self.token, "tool": self.tool, "arguments": dict(self.args),
                "expiresInSeconds": int(seconds) if seconds.is_integer() else seconds}


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


@dataclass
class _Entry:
    approval: Approval
    used: bool = False


class ApprovalBook:
    """Issues and redeems approval tokens.

    `clock` must be monotonic (wall-clock jumps must neither expire nor revive a token).
    Expired and used tokens are remembered for `remember` seconds after they expire, so a late
    retry is told why it was refused instead of "unknown"; then they are forgotten, which bounds
    memory.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, ttl: float = DEFAULT_TTL_SECONDS,
                 *, remember: float = 600.0,
                 token_factory: Callable[[], str] = lambda: secrets.token_urlsafe(32)) -> None:
        if not ttl > 0:
            raise ValueError(f"approval ttl must be positive, got {ttl!r}")
        self.clock = clock
        self.ttl = float(ttl)
        self.remember = float(remember)
        self._token_factory = token_factory
        self._entries: list[_Entry] = []
        # Tool calls run concurrently (each in its own task and worker thread).
        self._lock = threading.Lock()

    def issue(self, tool: str, args: Mapping[str, Any], plan_digest: str, *,
              facts: Mapping[str, Any] | None = None) -> Approval:
        now = self.clock()
        approval = Approval(token=self._token_factory(), tool=tool, args=dict(args),
                            plan_digest=plan_digest, issued_at=now, expires_at=now + self.ttl,
                            facts=dict(facts or {}))
        with self._lock:
            self._forget_old(now)
            self._entries.append(_Entry(approval))
        return approval

    def redeem(self, token: str, tool: str, args: Mapping[str, Any], plan_digest: str, *,
               facts: Mapping[str, Any] | None = None) -> None:
        """Consume `token` for this exact call, or raise `ApprovalError` saying why not.

        A token for another tool or other arguments stays valid (the caller may retry the call
        it was issued for); a stale one is spent, since the plan it approved no longer exists.
        """
        now = self.clock()
        with self._lock:
            self._forget_old(now)
            entry = self._find(token)
            if entry is None:
                raise ApprovalError("approval token unknown: it was never issued by this server "
                                    "(tokens do not survive a restart); call the tool without a "
                                    "token to get a new plan and token")
            issued = entry.approval
            if entry.used:
                raise ApprovalError("approval token already used: each token approves one call; "
                                    "call the tool without a token to get a new plan and token")
            if now >= issued.expires_at:
                entry.used = True
                raise ApprovalError(f"approval token expired ({issued.ttl_seconds:g}s after it was "
                                    "issued); call the tool without a token to get a new plan and token")
            if not hmac.compare_digest(issued.tool.encode(), tool.encode()):
                raise ApprovalError(f"approval token was issued for {issued.tool}, not {tool}")
            if canonical(issued.args) != canonical(args):
                raise ApprovalError(f"approval token was issued for {issued.tool} with arguments "
                                    f"{canonical(issued.args)}, not {canonical(dict(args))}")
            if not hmac.compare_digest(issued.plan_digest.encode(), plan_digest.encode()):
                entry.used = True
                raise ApprovalError("stale: the estate changed since approval: "
                                    + describe_changes(issued.facts, facts or {})
                                    + "; review the new plan and approve it again")
            entry.used = True

    def _find(self, token: str) -> _Entry | None:
        """Every entry is compared, in constant time each, so timing says nothing about tokens."""
        wanted = token.encode()
        found = None
        for entry in self._entries:
            if hmac.compare_digest(entry.approval.token.encode(), wanted):
                found = entry
        return found

    def _forget_old(self, now: float) -> None:
        self._entries = [e for e in self._entries if now < e.approval.expires_at + self.remember]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
