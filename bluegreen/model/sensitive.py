"""A value that never shows itself: repr/str/format print a mask, `.reveal()` gives the value.

Also a redactor that scrubs known secret values out of any text before it is logged or raised.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "[REDACTED]"


class Sensitive:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Sensitive({MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sensitive) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (Sensitive, (self._value,))


# Patterns that look like credentials even when we were not told the value.
_PATTERNS = (
    re.compile(r"(PVEAPIToken=[^=\s]+=)[^\s'\"]+"),
    re.compile(r"(postgres(?:ql)?://[^:/\s]+:)[^@\s]+(@)"),
    re.compile(r"((?:password|passwd|secret|token|apiToken|PGPASSWORD)\s*[=:]\s*)['\"]?[^\s'\",]+", re.I),
)


def redact(text: str, secrets: Iterable[Sensitive | str] = ()) -> str:
    """Remove every given secret value, and anything shaped like a credential, from `text`."""
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Sensitive) else secret
        if value and len(value) >= 4:
            text = text.replace(value, MASK)
    for pattern in _PATTERNS:
        if pattern.groups == 2:
            text = pattern.sub(lambda m: f"{m.group(1)}{MASK}{m.group(2)}", text)
        else:
            text = pattern.sub(lambda m: f"{m.group(1)}{MASK}", text)
    return text
