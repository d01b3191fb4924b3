"""The app's settings: `{app.dir}/shared/.env`, rendered from the stack and its secrets.

The file is the estate's as much as ours: besides what the stack manages, it holds whatever the
operators put there (auth secrets, URLs, mail settings). So the stack renders only the variables
it manages (`render_env`), and `merge_env` lays them over the file found on the host: every other
line (variables, comments, order) is kept as it is, a managed variable whose value is already
right keeps its line as written, one that differs is rewritten in place, a missing one is added.

Managed: DATABASE_URL (the database host or `database.urlHost`, name, user, the secret password
and `database.urlQuery`), PORT, HOSTNAME and NODE_ENV (the values the PM2 ecosystem gives the app
anyway), then every variable of `app.env` in the order the stack lists them, plain or resolved
from a secret reference. All pure; the texts are `Sensitive`, written (0600, owned by the deploy
user) through an executor that redacts the secrets in them, never printed, logged or returned.

Secret references (`app.env.NAME: {secret: key, env: VAR, file: PATH}`) are resolved by
`model.secrets.resolve_secrets`: the Pulumi secret config `bluegreen:<key>` inside the engine,
else the environment variable (`env`, default `BLUEGREEN_SECRET_<KEY>`), else `file`.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from bluegreen.model.dotenv import assignment, parse_env, parse_lines
from bluegreen.model.errors import ConfigError
from bluegreen.model.sensitive import Sensitive
from bluegreen.model.topology import Container, Topology

ENV_FILE_MODE = 0o600
HEADER = ("# bluegreen writes DATABASE_URL, PORT, HOSTNAME, NODE_ENV and the variables of app.env "
          "from the stack; every other line is kept as it is.")
# Variables whose values are secrets even when the stack writes them as plain text.
ALWAYS_SECRET = ("DATABASE_URL",)


def env_path(t: Topology, host: Container) -> str:
    return host.path(f"{t.app.dir}/shared/.env")


def database_url(t: Topology, password: Sensitive) -> Sensitive:
    db = t.database
    host = db.url_host or t.database_host.ip
    query = f"?{db.url_query}" if db.url_query else ""
    return Sensitive(f"postgresql://{quote(db.user, safe='')}:{quote(password.reveal(), safe='')}@"
                     f"{host}:{db.port}/{quote(db.name, safe='')}{query}")


def managed_values(t: Topology, host: Container, password: Sensitive,
                   resolved: Mapping[str, Sensitive]) -> dict[str, str]:
    """Every variable the stack manages in `host`'s file, by name, in the order it writes them."""
    values = {"DATABASE_URL": database_url(t, password).reveal(), "PORT": str(t.app.port),
              "HOSTNAME": host.ip, "NODE_ENV": t.app.node_env}
    for var in t.app.env:
        if var.secret is not None:
            if var.name not in resolved:
                raise ConfigError(f"app.env.{var.name}: secret {var.secret!r} was not resolved")
            values[var.name] = resolved[var.name].reveal()
        else:
            values[var.name] = var.value or ""
    return values


def secret_names(t: Topology) -> list[str]:
    """The managed variables whose values are secrets (never the values: names only)."""
    return [*ALWAYS_SECRET, *(var.name for var in t.app.env if var.secret is not None)]


def render_env(t: Topology, host: Container, password: Sensitive, resolved: Mapping[str, Sensitive]) -> Sensitive:
    """The managed part of `host`'s file (what a new file holds). `resolved` maps each secret
    variable's name to its value."""
    values = managed_values(t, host, password, resolved)
    return Sensitive("\n".join([HEADER, *(assignment(k, v) for k, v in values.items())]) + "\n")


def merge_env(existing: str | None, managed: str) -> str:
    """`managed` laid over the file found on the host (None: no file yet, `managed` as it is)."""
    if existing is None:
        return managed
    wanted = parse_env(managed)
    lines: list[str] = []
    seen: set[str] = set()
    for line in parse_lines(existing):
        if line.name is not None and line.name in wanted:
            seen.add(line.name)
            right = line.value == wanted[line.name]
            lines.append(line.raw if right else assignment(line.name, wanted[line.name]))
        else:
            lines.append(line.raw)
    missing = [assignment(name, value) for name, value in wanted.items() if name not in seen]
    if missing:
        if lines and lines[-1].strip():
            lines.append("")
        lines += [HEADER, *missing] if HEADER not in lines else missing
    return "\n".join(lines) + "\n"


def managed_as_found(existing: str | None, managed: str) -> str:
    """What the host's file says about the managed variables, rendered the way `render_env` writes
    them (a variable the file lacks is left out): equal to `managed` when the file matches."""
    if existing is None:
        return ""
    found = parse_env(existing)
    wanted = parse_env(managed)
    return "\n".join([HEADER, *(assignment(name, found[name]) for name in wanted if name in found)]) + "\n"


def secret_values(content: str, names: list[str]) -> list[Sensitive]:
    """The values of `names` in a rendered (or found) file: what an executor must redact."""
    values = parse_env(content)
    return [Sensitive(values[name]) for name in names if values.get(name)]
