"""The deployment lock's record: who holds it, since when, and whether it is stale (pure)."""

from __future__ import annotations

import getpass
import json
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bluegreen.model.errors import ConfigError
from bluegreen.model.timestamps import iso_utc

FORCE_RELEASE_HINT = "bluegreen lock release --force"


# --------------------------------------------------------------------------- lock


@dataclass(frozen=True)
class LockInfo:
    holder: str  # user@machine of whoever runs the operation
    host: str  # that machine, to check whether its pid is still alive
    pid: int
    operation: str
    started: float  # epoch seconds
    heartbeat: float
    # A random identity of this holding: heartbeat and release compare-and-swap on it on the host.
    token: str = ""

    def same_owner(self, other: LockInfo) -> bool:
        if self.token or other.token:
            return self.token == other.token
        return (self.holder, self.pid, self.started) == (other.holder, other.pid, other.started)

    def to_json(self) -> dict[str, Any]:
        """What status, `lock status` and the MCP tools show: never the token, which lets its
        bearer refresh or release the lock as if it held it."""
        # Epoch floats compare exactly; the ISO copies are for people.
        return {"holder": self.holder, "host": self.host, "pid": self.pid, "operation": self.operation,
                "started": self.started, "heartbeat": self.heartbeat,
                "startedAt": iso_utc(self.started), "heartbeatAt": iso_utc(self.heartbeat)}

    def to_file(self) -> str:
        """The lock file's text (0600 on the load balancer): with the token."""
        return json.dumps({**self.to_json(), **({"token": self.token} if self.token else {})}, indent=2) + "\n"

    @classmethod
    def from_file(cls, text: str, *, source: str = "lock file") -> LockInfo:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object")
        try:
            return cls(holder=_req_str(data, "holder"), host=_req_str(data, "host"),
                       pid=int(data["pid"]), operation=_req_str(data, "operation"),
                       started=float(data["started"]), heartbeat=float(data["heartbeat"]),
                       token=str(data.get("token") or ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: missing or malformed field ({exc})") from None


def _req_str(data: Mapping[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    return value


UNREADABLE_LOCK = LockInfo(holder="unknown", host="unknown", pid=0, operation="unknown",
                           started=0.0, heartbeat=0.0)


@dataclass(frozen=True)
class LockStatus:
    info: LockInfo
    stale: bool
    reason: str | None  # why it looks stale
    heartbeat_age: float  # seconds since the holder last proved it is alive

    def to_json(self) -> dict[str, Any]:
        return {**self.info.to_json(), "stale": self.stale, "staleReason": self.reason,
                "heartbeatAgeSeconds": round(self.heartbeat_age, 1)}


def default_holder() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_status(info: LockInfo, *, now: float, stale_after: float, this_machine: str,
                alive: Callable[[int], bool] = pid_alive) -> LockStatus:
    """Pure apart from `alive`: stale when the heartbeat stopped, or when the holder ran here and died."""
    age = max(0.0, now - info.heartbeat)
    if info is UNREADABLE_LOCK:
        return LockStatus(info, True, "the lock file is unreadable", age)
    if age > stale_after:
        return LockStatus(info, True, f"no heartbeat for {age:.0f}s (stale after {stale_after:g}s)", age)
    if info.host == this_machine and not alive(info.pid):
        return LockStatus(info, True, f"process {info.pid} on {info.host} is no longer running", age)
    return LockStatus(info, False, None, age)


def describe_locked(status: LockStatus, path: str) -> str:
    info = status.info
    lines = [f"the deployment lock ({path}) is held by {info.holder} (pid {info.pid} on {info.host}) "
             f"for '{info.operation}' since {iso_utc(info.started)}, "
             f"last heartbeat {status.heartbeat_age:.0f}s ago."]
    if status.stale:
        lines.append(f"It looks STALE: {status.reason}. If you are sure that operation is not running, "
                     f"break the lock with `{FORCE_RELEASE_HINT}`.")
    else:
        lines.append(f"It looks alive: wait for it to finish. Only if you are sure it is not running, "
                     f"break it with `{FORCE_RELEASE_HINT}`.")
    return " ".join(lines)
