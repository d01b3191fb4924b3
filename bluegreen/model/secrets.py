"""The secrets a stack knows: app.env references, the database password, token variables."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets as random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bluegreen.model.errors import BlueGreenError, ConfigError
from bluegreen.model.sensitive import Sensitive
from bluegreen.model.topology import AppEnvVar, Topology

SecretLookup = Callable[[str], str | None]
TOKEN_ENV = "PROXMOX_VE_API_TOKEN"  # noqa: S105 - the variable's name
_TOKEN_ID = re.compile(r"[^\s@!=:]+@[A-Za-z][A-Za-z0-9._-]*![A-Za-z][A-Za-z0-9._-]*")


def default_secret_env(secret: str) -> str:
    """`nextServerActionsKey` -> `BLUEGREEN_SECRET_NEXT_SERVER_ACTIONS_KEY`."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", secret)
    return "BLUEGREEN_SECRET_" + re.sub(r"[^A-Za-z0-9]+", "_", snake).upper()


def read_secret_file(path: str | None, key: str) -> str | None:
    """A secret kept in a file: its text without the final newline (spaces are part of a value,
    as in the `.env` it came from); None when there is no such file."""
    if path is None:
        return None
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    value = text[:-1] if text.endswith("\n") else text
    return (value[:-1] if value.endswith("\r") else value) or None


def write_secret_file(path: str, value: str) -> None:
    """Keep a secret in a file of its own: 0600 in a 0700 directory, replaced atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    target.parent.chmod(0o700)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    os.replace(tmp, target)


def _from_file(var: AppEnvVar) -> str | None:
    return read_secret_file(var.file, f"app.env.{var.name}.file")


def resolve_secrets(t: Topology, *, environ: Mapping[str, str] | None = None,
                    config_secret: SecretLookup | None = None) -> dict[str, Sensitive]:
    """Every secret of `app.env`, by variable name; a missing one names its key and where it looked."""
    env = os.environ if environ is None else environ
    found: dict[str, Sensitive] = {}
    missing: list[str] = []
    for var in t.app.env:
        if var.secret is None:
            continue
        variable = var.env or default_secret_env(var.secret)
        value = (config_secret(var.secret) if config_secret else None) or env.get(variable) or _from_file(var)
        if value:
            found[var.name] = Sensitive(value)
            continue
        where = [f"pulumi config set --secret bluegreen:{var.secret} --stack {t.stack}", f"${variable}"]
        if var.file:
            where.append(var.file)
        missing.append(f"app.env.{var.name}: secret {var.secret!r} not found (set one of: {', '.join(where)})")
    if missing:
        raise ConfigError("; ".join(missing))
    return found


def ensure_secret_files(t: Topology) -> list[str]:
    """Create (random, 0600) every secret file `app.env` names that does not exist yet; for the
    lab, which generates its own secrets as it does the database password. Returns the paths made."""
    made = []
    for var in t.app.env:
        if var.secret is None or var.file is None or Path(var.file).exists():
            continue
        path = Path(var.file)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            # Standard base64 of 32 random bytes: what NEXT_SERVER_ACTIONS_ENCRYPTION_KEY requires
            # (Next decodes it with atob into an AES-256 key), and a fine secret for anything else.
            fh.write(base64.b64encode(random.token_bytes(32)).decode() + "\n")
        made.append(str(path))
    return made


# Values of these variables are secrets wherever they appear in a message.
SECRET_ENVS = ("PROXMOX_VE_API_TOKEN", "PULUMI_CONFIG_PASSPHRASE", "PGPASSWORD")


def known_secrets(topology: Topology, environ: Mapping[str, str]) -> list[Sensitive]:
    """Secret values to scrub from every message, besides what `redact` recognises by shape."""
    names = [*SECRET_ENVS, topology.database.password_env]
    found = [Sensitive(environ[name]) for name in dict.fromkeys(names) if environ.get(name)]
    with contextlib.suppress(BlueGreenError):
        kept = read_secret_file(topology.database.password_file, "database.passwordFile")
        if kept:
            found.append(Sensitive(kept))
    with contextlib.suppress(BlueGreenError):  # no token configured: nothing of it to leak either
        found.append(read_token(topology, environ)[1])
    return found


# --------------------------------------------------------------------------- configuring a host


@dataclass(frozen=True)
class Secrets:
    """The database password and the resolved `app.env` secrets."""

    db_password: Sensitive
    app: Mapping[str, Sensitive] = field(default_factory=dict)

    def all(self) -> list[Sensitive]:
        return [self.db_password, *self.app.values()]


def database_password_outside_engine(t: Topology, environ: Mapping[str, str] | None = None) -> str | None:
    """`database.passwordEnv`, else the file `database.passwordFile` (adopt keeps it there)."""
    env = os.environ if environ is None else environ
    return env.get(t.database.password_env) or read_secret_file(t.database.password_file,
                                                                  "database.passwordFile")


def secrets_from_environment(t: Topology, environ: Mapping[str, str] | None = None) -> Secrets:
    """Outside the engine: `database.passwordEnv` (or `passwordFile`) and the `app.env` references."""
    env = os.environ if environ is None else environ
    password = database_password_outside_engine(t, env)
    if not password:
        where = f" or {t.database.password_file}" if t.database.password_file else ""
        raise ConfigError(f"no database password to write shared/.env: set {t.database.password_env}{where}")
    return Secrets(Sensitive(password), resolve_secrets(t, environ=env))


# --------------------------------------------------------------------------- the Proxmox API token


def parse_api_token(text: str, *, source: str) -> tuple[str, Sensitive]:
    """Split `user@realm!tokenid=secret` (the Pulumi provider's format) into id and secret.

    The error names `source` and never the text, which holds the secret.
    """
    token_id, sep, secret = text.strip().partition("=")
    if not sep or not secret:
        raise ConfigError(f"{source}: expected user@realm!tokenid=secret")
    check_token_id(token_id, source=source)
    return token_id, Sensitive(secret)


def check_token_id(token_id: str, *, source: str) -> None:
    if not _TOKEN_ID.fullmatch(token_id):
        raise ConfigError(f"{source}: {token_id!r} is not an API token id (expected user@realm!tokenid)")


def read_token(t: Topology, environ: Mapping[str, str] | None = None) -> tuple[str, Sensitive]:
    """The stack's API token: `PROXMOX_VE_API_TOKEN` (as the Pulumi provider reads it), else
    `proxmox.tokenFile` holding either the secret alone or the whole `id=secret`."""
    env = os.environ if environ is None else environ
    configured = t.proxmox.token_id
    if env.get(TOKEN_ENV):
        token_id, secret = parse_api_token(env[TOKEN_ENV], source=TOKEN_ENV)
        if configured and configured != token_id:
            raise ConfigError(f"{TOKEN_ENV} holds a token of {token_id!r}, but proxmox.tokenId is "
                              f"{configured!r}")
        return token_id, secret
    path = t.proxmox.token_file
    if not path:
        raise ConfigError(f"no Proxmox API token: set {TOKEN_ENV}=user@realm!tokenid=secret "
                          "or proxmox.tokenFile in the stack")
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"proxmox.tokenFile {path}: {exc.strerror}") from None
    if not text:
        raise ConfigError(f"proxmox.tokenFile {path}: the file is empty")
    if "=" in text:
        token_id, secret = parse_api_token(text, source=f"proxmox.tokenFile {path}")
        if configured and configured != token_id:
            raise ConfigError(f"proxmox.tokenFile {path} holds a token of {token_id!r}, but "
                              f"proxmox.tokenId is {configured!r}")
        return token_id, secret
    if not configured:
        raise ConfigError(f"proxmox.tokenFile {path} holds only a secret: set proxmox.tokenId too")
    check_token_id(configured, source="proxmox.tokenId")
    return configured, Sensitive(text)
