"""Typed access to nested stack config that records problems (by key) instead of raising."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bluegreen.model.errors import Problem

# --------------------------------------------------------------------------- reading


class Reader:
    """Typed access to nested config that records problems instead of raising."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(Problem(key, message))

    def obj(self, value: Any, key: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem(key, f"expected a mapping, got {json_kind(value)}")
            return {}
        return value

    def str_(self, m: Mapping[str, Any], key: str, path: str, default: str | None = None,
             *, required: bool = False) -> str:
        value = m.get(key)
        full = f"{path}.{key}" if path else key
        if value is None or (required and isinstance(value, str) and not value.strip()):
            if required:
                self.problem(full, "is required (expected a non-empty string)")
            return default if default is not None else ""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.problem(full, f"expected a string, got {json_kind(value)}")
            return default or ""
        return str(value)

    def opt_str(self, m: Mapping[str, Any], key: str, path: str) -> str | None:
        if m.get(key) is None:
            return None
        return self.str_(m, key, path)

    def num(self, m: Mapping[str, Any], key: str, path: str, default: float | None = None, *,
            integer: bool = True, minimum: float = 0, required: bool = False) -> Any:
        value = m.get(key)
        full = f"{path}.{key}" if path else key
        if value is None:
            if required or default is None:
                self.problem(full, "is required (expected a number)")
                return 0
            return default
        parsed: float | None
        if isinstance(value, bool):
            parsed = None
        elif isinstance(value, (int, float)):
            parsed = value
        elif isinstance(value, str):
            try:
                parsed = float(value) if not integer else int(value, 10)
            except ValueError:
                parsed = None
        else:
            parsed = None
        if parsed is not None and not math.isfinite(parsed):
            # YAML's .nan/.inf: a poll with no end, an int() that raises. Refused like any bad value.
            self.problem(full, f"expected a finite number, got {value!r}")
            return default if default is not None else 0
        if parsed is None or (integer and float(parsed) != int(parsed)):
            what = "a whole number" if integer else "a number"
            self.problem(full, f"expected {what}, got {value!r}")
            return default if default is not None else 0
        if parsed < minimum:
            self.problem(full, f"must be at least {minimum:g}, got {parsed!r}")
        elif key.lower().endswith("port") and not 1 <= parsed <= 65535:
            self.problem(full, f"must be a TCP port (1-65535), got {parsed!r}")
        elif key.lower().endswith(("timeout", "seconds")) and parsed <= 0 and key != "watchSeconds":
            self.problem(full, f"must be more than 0, got {parsed!r}")
        elif key == "maxErrorRatio" and parsed > 1:
            self.problem(full, f"must be a ratio between 0 and 1, got {parsed!r}")
        return int(parsed) if integer else float(parsed)

    def bool_(self, m: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = m.get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        self.problem(f"{path}.{key}" if path else key, f"expected true or false, got {value!r}")
        return default

    def str_list(self, m: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = m.get(key)
        full = f"{path}.{key}" if path else key
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(full, f"expected a list of strings, got {json_kind(value)}")
            return ()
        return tuple(value)

    def abs_path(self, m: Mapping[str, Any], key: str, path: str, default: str) -> str:
        value = self.str_(m, key, path, default)
        if value and not value.startswith("/"):
            self.problem(f"{path}.{key}", f"expected an absolute path, got {value!r}")
        return value


def json_kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    return f"{type(value).__name__} {value!r}"
