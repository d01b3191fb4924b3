"""A value that never shows itself: repr/str/format print a mask, `.reveal()` gives the value.

Also the redactor: `redact` scrubs known secret values out of any text (by value, in the forms a
value takes in output: as is, percent-encoded in a URL, escaped inside JSON), then anything shaped
like a credential (a second net for values nobody told us about). `SecretSet` is the set of
values one run knows; it grows while the run learns more (a host's `.env`) and every place that
scrubs holds the same set, so a value learned late is scrubbed everywhere from then on.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

MASK = "[REDACTED]"
# Shorter values are not scrubbed by value: "1", "on" or "jw" would mask half of every message.
MIN_SECRET_LENGTH = 4
# Never secrets by value, whatever a variable's name says: masking them would break every JSON
# document and sentence they appear in (`AUTH_TRUST_HOST=true` is a setting, not a secret).
NOT_SECRETS = frozenset({"true", "false", "null", "none", "yes", "no", "on", "off"})


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


def spellings(value: str) -> list[str]:
    """The forms a secret takes in output: itself, percent-encoded (a URL's userinfo or query),
    and escaped as inside a JSON string."""
    forms = [value, quote(value, safe=""), quote(value, safe="/:@!$&'()*+,;="), json.dumps(value)[1:-1]]
    return [form for form in dict.fromkeys(forms) if len(form) >= MIN_SECRET_LENGTH]


class SecretSet:
    """The secret values one run knows; iterable as `Sensitive`s, safe to share between threads.

    Append-only: what was a secret stays one for the run. Executors, the journal, events and the
    faces hold the same object, so a value added later is scrubbed by all of them from then on.
    """

    def __init__(self, values: Iterable[Sensitive | str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, None] = {}
        self._forms: tuple[str, ...] = ()
        self.add(*values)

    def add(self, *values: Sensitive | str | None) -> None:
        with self._lock:
            before = len(self._values)
            for item in values:
                value = item.reveal() if isinstance(item, Sensitive) else item
                if value and len(value.strip()) >= MIN_SECRET_LENGTH and value.strip().lower() not in NOT_SECRETS:
                    self._values.setdefault(value, None)
            if len(self._values) != before:
                forms = {form for value in self._values for form in spellings(value)}
                # Longest first: a value that contains another is masked whole, not in pieces.
                self._forms = tuple(sorted(forms, key=len, reverse=True))

    def forms(self) -> tuple[str, ...]:
        return self._forms

    def __iter__(self) -> Iterator[Sensitive]:
        with self._lock:
            values = list(self._values)
        return iter([Sensitive(v) for v in values])

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, item: object) -> bool:
        value = item.reveal() if isinstance(item, Sensitive) else item
        return value in self._values

    def scrub(self, text: str) -> str:
        return redact(text, self)

    def __repr__(self) -> str:
        return f"SecretSet({len(self)} values)"


def as_secret_set(secrets: Iterable[Sensitive | str] | None) -> SecretSet:
    """`secrets` itself when it is a `SecretSet` (shared, so it keeps growing), else a new set."""
    if isinstance(secrets, SecretSet):
        return secrets
    return SecretSet(secrets or ())


_NAME_PART = r"[A-Za-z0-9_]*"
_SECRET_WORD = r"(?:password|passwd|passphrase|secret|token|api_?key|apitoken|private_?key|pgpassword)"  # noqa: S105
# Patterns that look like credentials even when we were not told the value. Each keeps its first
# group (what names the secret) and masks what follows; a second group is kept after the mask.
# No masked part ever takes a backslash or a quote, so text that is JSON stays valid JSON.
_VALUE = r"[^\s'\",;\\}]+"
_PATTERNS = (
    re.compile(r"(PVEAPIToken=[^=\s]+=)" + _VALUE),
    re.compile(r"((?:postgres(?:ql)?|mysql|redis|amqps?|mongodb(?:\+srv)?|https?)://[^:/\s@\"'\\]+:)"
               r"[^@\s/\"'\\]+(@)"),
    # "password": "..." (JSON, also with single quotes)
    re.compile(rf"([\"']{_NAME_PART}{_SECRET_WORD}[\"']\s*:\s*[\"'])(?:\\.|[^\"'\\])*([\"'])", re.I),
    # FOO_KEY=..., FOO_SECRET=..., FOO_TOKEN=..., FOO_PASSWORD=... (environment and .env lines)
    re.compile(r"(\b[A-Z0-9_]*(?:_KEY|_SECRET|_TOKEN|PASSWORD|_PASS|_PWD|_CREDENTIALS?)\s*=\s*['\"]?)" + _VALUE),
    # password=..., secret: ..., token = ... (any case)
    re.compile(rf"((?<![A-Za-z0-9]){_NAME_PART}{_SECRET_WORD}\s*[=:]\s*['\"]?)" + _VALUE, re.I),
)


def redact(text: str, secrets: Iterable[Sensitive | str] = ()) -> str:
    """Remove every given secret value, and anything shaped like a credential, from `text`."""
    forms = secrets.forms() if isinstance(secrets, SecretSet) else sorted(
        {form for s in secrets for form in spellings(s.reveal() if isinstance(s, Sensitive) else s)},
        key=len, reverse=True)
    for form in forms:
        if form in text:
            text = text.replace(form, MASK)
    for pattern in _PATTERNS:
        if pattern.groups == 2:
            text = pattern.sub(lambda m: f"{m.group(1)}{MASK}{m.group(2)}", text)
        else:
            text = pattern.sub(lambda m: f"{m.group(1)}{MASK}", text)
    return text


def redact_tree(value: Any, secrets: Iterable[Sensitive | str] = ()) -> Any:
    """Every string inside `value` (keys too) redacted; the structure untouched, so JSON stays valid
    (a number that is a secret's value becomes the mask, a string)."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return MASK if redact(str(value), secrets) != str(value) else value
    if isinstance(value, Mapping):
        return {redact(key, secrets) if isinstance(key, str) else key: redact_tree(item, secrets)
                for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(item, secrets) for item in value]
    return value
