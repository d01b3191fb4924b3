"""What `bluegreen adopt` reads of the app and its load balancer, and how it is written into the stack.

From each app host: the app's `.env` (every variable), the user (and PM2 home) that runs the
app's PM2, the repository. From the load balancer's hand-written haproxy.cfg: the health check
the estate runs (path and statuses) and every other site it serves (carried over verbatim as
`haproxy.extraConfig`). Nothing is invented: what the estate does not say is left as the stack has it.

The `.env` becomes stack values: DATABASE_URL -> `database.user/name/urlQuery/urlHost` and the
password; PORT -> `app.port`; NODE_ENV -> `app.nodeEnv`; every other variable -> `app.env`,
plain values as they are, secrets (`model.dotenv.is_secret`) as references to 0600 files under
`bluegreen:secretsDir` (`{secret: <key>, file: <path>}`): the stack file never holds a secret
value, and inside `pulumi up` a Pulumi secret `bluegreen:<key>` takes precedence over the file
(`pulumi config set --secret bluegreen:<key> < <file>` moves it into Pulumi's encrypted config).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from bluegreen.hosts.haproxy_cfg import health_check, other_sites
from bluegreen.model.dotenv import is_secret, parse_env, secret_key
from bluegreen.model.errors import ConfigError
from bluegreen.model.secrets import read_secret_file, write_secret_file
from bluegreen.model.sensitive import Sensitive
from bluegreen.model.topology import COLORS, Container, Topology
from bluegreen.render.commands import default_pm2_home, parse_pm2_owners, pm2_owner_command

# Variables bluegreen itself gives the app (the ecosystem and shared/.env): read into app and
# database settings, never into app.env.
MANAGED = ("DATABASE_URL", "PORT", "HOSTNAME", "NODE_ENV", "BLUEGREEN_COLOR")


@dataclass(frozen=True)
class DatabaseUrl:
    user: str
    name: str
    host: str
    port: int
    query: str = ""


def parse_database_url(url: str) -> DatabaseUrl:
    """User, database, host, port and query of `postgresql://user:password@host:port/db?...`;
    the password is read past and never kept here (`database_password` reads it)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("postgres", "postgresql") or not parts.username:
        raise ConfigError("DATABASE_URL: expected postgresql://user:password@host:port/database")
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ConfigError("DATABASE_URL: names no database")
    try:
        port = parts.port or 5432
    except ValueError:
        raise ConfigError("DATABASE_URL: the port is not a number") from None
    return DatabaseUrl(user=unquote(parts.username), name=name, host=parts.hostname or "", port=port,
                       query=parts.query)


def database_password(url: str) -> Sensitive | None:
    password = urlsplit(url.strip()).password
    return Sensitive(unquote(password)) if password else None


@dataclass
class AppHostFindings:
    color: str
    env: dict[str, str] | None = None
    env_file: str = ""
    owners: list[tuple[str, str]] = field(default_factory=list)  # (user, PM2 home, unrooted)


@dataclass
class AppFindings:
    """What adopt found about the app; `values` are the stack values it implies."""

    hosts: dict[str, AppHostFindings] = field(default_factory=dict)
    health_path: str | None = None
    health_status: str | None = None
    extra_config: str | None = None
    notes: list[str] = field(default_factory=list)


def unrooted(host: Container, path: str) -> str:
    root = host.root.rstrip("/")
    if root and path.startswith(root + "/"):
        return path[len(root):]
    return path


def read_app_host(t: Topology, host: Container, executor: Any) -> AppHostFindings:
    found = AppHostFindings(color=host.color or "")
    app_dir = host.path(t.app.dir)
    # The team's working copy keeps the hand-kept `.env` (and runs the hand-started app) until the
    # first deploy; after it, shared/.env beside the releases is the app's.
    work = host.path(t.app.working_copy) if t.app.working_copy else None
    for path in (*filter(None, [work and f"{work}/.env"]), f"{app_dir}/shared/.env"):
        data = executor.get(path, step="read the app's .env")
        if data is not None:
            found.env, found.env_file = parse_env(data.decode(errors="replace")), path
            break
    result = executor.run(pm2_owner_command(work or app_dir), step="find the user that runs the app's PM2",
                          check=False)
    found.owners = [(user, unrooted(host, home)) for user, home in parse_pm2_owners(result.stdout)]
    return found


def read_load_balancer(t: Topology, config: str | None, live: str | None, findings: AppFindings) -> None:
    """The health check and the other sites of a hand-written haproxy.cfg (ours says nothing new)."""
    if config is None or "generated by bluegreen" in config.split("\n", 1)[0]:
        return
    check = health_check(config, t, live or COLORS[0])
    if check.path is not None:
        findings.health_path, findings.health_status = check.path, check.statuses or "200-399"
        findings.notes.append(f"health check: GET {check.path}, healthy on {findings.health_status} "
                              f"(the {live or COLORS[0]} backend of {t.haproxy.config_path})")
    elif check.note:
        findings.notes.append(f"health check: {check.note}; app.healthPath stays {t.app.health_path}")
    else:
        findings.notes.append(f"health check: the estate checks TCP only; app.healthPath stays {t.app.health_path}")
    if check.note and check.path is not None:
        findings.notes.append(check.note)
    sites = other_sites(config, t)
    findings.extra_config = sites.text.strip("\n") + "\n" if sites.text.strip() else ""
    if sites.carried:
        findings.notes.append(f"other sites on the load balancer, carried over verbatim: {', '.join(sites.carried)}")
    findings.notes += sites.notes


# --------------------------------------------------------------------------- into the stack


@dataclass
class AppValues:
    """Stack values to set, and the secret files to write once the stack file is written."""

    app: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    database: dict[str, Any] = field(default_factory=dict)
    haproxy: dict[str, Any] = field(default_factory=dict)
    secret_files: dict[str, Sensitive] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def write_secrets(self) -> None:
        for path, value in self.secret_files.items():
            write_secret_file(path, value.reveal())


def _merged_env(t: Topology, f: AppFindings, live: str, notes: list[str]) -> dict[str, str]:
    """One `.env` for the stack: the live colour's, plus what only the standby has."""
    order = [live, *(c for c in COLORS if c != live)]
    merged: dict[str, str] = {}
    for color in order:
        env = f.hosts.get(color, AppHostFindings(color)).env or {}
        for name, value in env.items():
            if name not in merged:
                merged[name] = value
            elif merged[name] != value and name != "HOSTNAME":
                shown = "" if is_secret(name, value) else f" ({merged[name]!r} on {live}, {value!r} on {color})"
                notes.append(f".env: {name} differs between the colours{shown}; the stack keeps {live}'s "
                             "(one value for both)")
    return merged


def app_values(t: Topology, f: AppFindings, live: str, declared: Mapping[str, Any]) -> AppValues:
    """The stack values `f` implies. `declared`: the resolved current values of `app.env`
    secrets by variable name (a secret that already resolves to the estate's value stays as
    declared)."""
    v = AppValues()
    _user(t, f, live, v)
    if f.health_path is not None:
        v.app["healthPath"] = f.health_path
        v.app["healthStatus"] = f.health_status or "200-399"
    if f.extra_config is not None and f.extra_config != t.haproxy.extra_config:
        v.haproxy["extraConfig"] = f.extra_config
    env = _merged_env(t, f, live, v.notes)
    if not env:
        return v
    if env.get("DATABASE_URL"):
        _database(t, env["DATABASE_URL"], v)
    if env.get("PORT", "").isdigit():
        v.app["port"] = int(env["PORT"])
    if env.get("NODE_ENV"):
        v.app["nodeEnv"] = env["NODE_ENV"]
    for color, found in f.hosts.items():
        bound = (found.env or {}).get("HOSTNAME")
        if bound and bound != t.app_host(color).ip:
            v.notes.append(f".env on {color}: HOSTNAME={bound}; the app will listen on {t.app_host(color).ip} "
                           "(its container address, where HAProxy sends requests)")
    _app_env(t, env, declared, v)
    return v


def _user(t: Topology, f: AppFindings, live: str, v: AppValues) -> None:
    owners = {color: found.owners for color, found in f.hosts.items() if found.owners}
    chosen = owners.get(live) or next(iter(owners.values()), [])
    if not chosen:
        v.notes.append("no PM2 runs the app on either colour: app.deployUser is left as the stack has it")
        return
    user, home = chosen[0]
    if len({o for found in owners.values() for o in found}) > 1:
        v.notes.append("the app's PM2 runs as " + "; ".join(f"{u} ({h}) on {c}" for c, found in owners.items()
                                                           for u, h in found) + f"; the stack takes {user}")
    v.app["deployUser"] = user
    if t.app.pm2_home is not None or home != default_pm2_home(_with_user(t, user)):
        v.app["pm2Home"] = home
    v.notes.append(f"deploy user: {user} (runs the app's PM2, home {home})")


def _with_user(t: Topology, user: str) -> Topology:
    import dataclasses

    return dataclasses.replace(t, app=dataclasses.replace(t.app, deploy_user=user, pm2_home=None))


def _database(t: Topology, url: str, v: AppValues) -> None:
    db = parse_database_url(url)
    v.database.update(user=db.user, name=db.name, urlQuery=db.query)
    if db.port != t.database.port:
        v.database["port"] = db.port
    if db.host != t.database_host.ip:
        v.database["urlHost"] = db.host
    password = database_password(url)
    if password is None:
        v.notes.append("DATABASE_URL carries no password")
        return
    current = read_secret_file(t.database.password_file, "database.passwordFile")
    if current != password.reveal():
        path = str(PurePosixPath(t.secrets_dir) / "database-password")
        v.database["passwordFile"] = path
        v.secret_files[path] = password
    v.notes.append(f"database: user {db.user}, database {db.name}" + (f", ?{db.query}" if db.query else "")
                   + " (DATABASE_URL; its password kept in database.passwordFile, not in the stack file)")


def _app_env(t: Topology, env: Mapping[str, str], declared: Mapping[str, Sensitive], v: AppValues) -> None:
    existing = {var.name: var for var in t.app.env}
    taken = {var.secret for var in t.app.env if var.secret}
    plain, secret = [], []
    for name, value in env.items():
        if name in MANAGED:
            continue
        var = existing.get(name)
        if is_secret(name, value):
            secret.append(name)
            if var is not None and var.secret is not None and name in declared \
                    and declared[name].reveal() == value:
                continue  # already declared, and it resolves to the estate's value
            key = secret_key(name, taken)
            taken.add(key)
            path = str(PurePosixPath(t.secrets_dir) / "app-env" / name)
            v.env[name] = {"secret": key, "file": path}
            v.secret_files[path] = Sensitive(value)
        else:
            plain.append(name)
            if var is not None and var.secret is None and var.value == value:
                continue
            v.env[name] = value
    # No `secret: NAME` in the words: the output is scrubbed by shape too, which would blank the name.
    v.notes.append(f".env: {len(plain) + len(secret)} variables into app.env; {len(secret)} of them secrets "
                   f"({', '.join(secret) or 'none'}), kept as 0600 files under {t.secrets_dir}")


def secrets_dir_is_safe(t: Topology, project_dir: str) -> None:
    """Secret files never go into the repository."""
    real = os.path.realpath(t.secrets_dir)
    if real == os.path.realpath(project_dir) or real.startswith(os.path.realpath(project_dir) + os.sep):
        raise ConfigError(f"bluegreen:secretsDir {t.secrets_dir} is inside the project {project_dir}: "
                          "secret values must stay out of the repository; choose a directory outside it")
