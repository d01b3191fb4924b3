"""`.env` files as the app's readers see them, and which of their variables are secrets.

One reading for every place that looks at the app's settings: the PM2 ecosystem's reader
(`render/pm2.py`), which is what the app gets, and dotenv: `KEY=value`, an optional `export `,
`#` comments, single or double quotes (`\\n`, `\\"` and `\\\\` undone inside double quotes), an
unquoted value ending at ` #`. A variable set twice takes its last value, as both readers do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_ASSIGNMENT = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_UNESCAPE = re.compile(r'\\(n|"|\\)')


@dataclass(frozen=True)
class EnvLine:
    """One line of the file: `name`/`value` when it sets a variable, the line as written in `raw`."""

    raw: str
    name: str | None = None
    value: str | None = None


def _value(text: str) -> str:
    quote = text[:1]
    if quote in ('"', "'") and len(text) >= 2 and text.endswith(quote):
        inner = text[1:-1]
        if quote == '"':
            inner = _UNESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), inner)
        return inner
    return re.sub(r"\s+#.*$", "", text)


def parse_lines(text: str) -> list[EnvLine]:
    """Every line of the file, in order; those that set a variable carry its name and value."""
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        match = _ASSIGNMENT.match(line) if line and not line.startswith("#") else None
        if match is None:
            lines.append(EnvLine(raw))
        else:
            lines.append(EnvLine(raw, match.group(1), _value(match.group(2))))
    return lines


def parse_env(text: str) -> dict[str, str]:
    """The variables a reader gets from the file, in the order they first appear (last value wins)."""
    result: dict[str, str] = {}
    for line in parse_lines(text):
        if line.name is not None and line.value is not None:
            result[line.name] = line.value
    return result


_PLAIN = re.compile(r"[A-Za-z0-9_@%:/.+=,~-]*")


def quoted(value: str) -> str:
    """The value as written in the file: as is when plain, else double-quoted so every reader
    above gives back exactly `value`."""
    if _PLAIN.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def assignment(name: str, value: str) -> str:
    return f"{name}={quoted(value)}"


# Names whose value is a secret, by the words they are made of (NEXTAUTH_SECRET, SMTP_PASSWORD,
# RESEND_API_KEY, JWT_SIGNING_KEY, GITHUB_TOKEN, ...). Erring on the side of secret is safe: a
# plain value kept as a secret is only less convenient to read.
_SECRET_WORDS = re.compile(
    r"(^|_)(SECRET|SECRETS|PASSWORD|PASSWD|PASS|PWD|TOKEN|KEY|KEYS|PRIVATE|CREDENTIALS?|SALT|"
    r"SIGNATURE|SIGNING|AUTH|APIKEY|DSN|COOKIE|SESSION|CERT|PEM)($|_)|SECRET|PASSWORD|TOKEN|APIKEY")
# A URL with a password in it (postgresql://user:pw@host/db, redis://:pw@host, smtp://u:pw@host).
_URL_CREDENTIALS = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@")


def is_secret(name: str, value: str) -> bool:
    """Whether a variable holds a secret: by its name, or a URL carrying credentials."""
    if name.endswith("_URL") and not _URL_CREDENTIALS.match(value):
        # NEXTAUTH_URL, APP_URL: addresses, not secrets (one with a password in it is, below).
        return False
    if value.lower() in ("true", "false", "yes", "no", "on", "off", "") or re.fullmatch(r"\d{1,5}", value):
        return False  # a switch or a small number (AUTH_TRUST_HOST=true) hides nothing
    return bool(_SECRET_WORDS.search(name.upper()) or _URL_CREDENTIALS.match(value))


def secret_key(name: str, taken: Iterable[str] = ()) -> str:
    """The stack's secret name for a variable: `NEXTAUTH_SECRET` -> `nextauthSecret` (a second
    variable mapping to a name already taken gets a numbered one)."""
    words = [w for w in name.lower().split("_") if w]
    base = (words[0] + "".join(w.capitalize() for w in words[1:])) if words else "secret"
    if not base[0].isalpha():
        base = "env" + base[0].upper() + base[1:]
    used = set(taken)
    key, n = base, 2
    while key in used:
        key, n = f"{base}{n}", n + 1
    return key
