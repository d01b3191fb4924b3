"""The app's settings: `{app.dir}/shared/.env`, rendered from the stack and its secrets.

`render_env` is pure: DATABASE_URL from the database host, name, user and the (secret) password,
then every variable of `app.env` in the order the stack lists them, plain or resolved from a
secret reference. The whole text is a `Sensitive`: it is written (0600, owned by the deploy user)
through an executor that redacts every secret in it, and never printed, logged or returned.

Secret references (`app.env.NAME: {secret: key, env: VAR, file: PATH}`) are resolved by
`resolve_secrets`: the Pulumi secret config `bluegreen:<key>` when a lookup is given (inside the
engine), else the environment variable (`env`, default `BLUEGREEN_SECRET_<KEY>`), else `file`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote

from bluegreen.model.errors import ConfigError
from bluegreen.model.sensitive import Sensitive
from bluegreen.model.topology import Container, Topology

ENV_FILE_MODE = 0o600


def env_path(t: Topology, host: Container) -> str:
    return host.path(f"{t.app.dir}/shared/.env")


def database_url(t: Topology, password: Sensitive) -> Sensitive:
    db = t.database
    return Sensitive(f"postgresql://{quote(db.user, safe='')}:{quote(password.reveal(), safe='')}@"
                     f"{t.database_host.ip}:{db.port}/{quote(db.name, safe='')}")


_PLAIN = re.compile(r"[A-Za-z0-9_@%:/.+=,~-]*")


def _quoted(value: str) -> str:
    """As is when plain, else double-quoted the way both .env readers (the ecosystem's and
    dotenv's) undo it."""
    if _PLAIN.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def render_env(t: Topology, password: Sensitive, resolved: Mapping[str, Sensitive]) -> Sensitive:
    """The file's text. `resolved` maps each secret variable's name to its value."""
    lines = ["# Written by bluegreen from the stack config and its secrets: edits are overwritten.",
             f"DATABASE_URL={_quoted(database_url(t, password).reveal())}"]
    for var in t.app.env:
        if var.secret is not None:
            if var.name not in resolved:
                raise ConfigError(f"app.env.{var.name}: secret {var.secret!r} was not resolved")
            lines.append(f"{var.name}={_quoted(resolved[var.name].reveal())}")
        else:
            lines.append(f"{var.name}={_quoted(var.value or '')}")
    return Sensitive("\n".join(lines) + "\n")


def env_secrets(password: Sensitive, resolved: Mapping[str, Sensitive]) -> list[Sensitive]:
    """Every value an executor writing the file must redact from its errors."""
    return [password, *resolved.values()]
