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
from urllib.parse import parse_qsl, unquote, urlsplit

from bluegreen.model.errors import BlueGreenError, ConfigError
from bluegreen.model.sensitive import MIN_SECRET_LENGTH, NOT_SECRETS, SecretSet, Sensitive
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


def _lookup(var: AppEnvVar, env: Mapping[str, str]) -> str | None:
    """An `app.env` secret outside the engine: its variable, else its file."""
    return env.get(var.env or default_secret_env(var.secret or "")) or _from_file(var)


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
        value = (config_secret(var.secret) if config_secret else None) or _lookup(var, env)
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
# A variable of an app's .env whose name says it holds a secret (DATABASE_URL's password is
# taken from the URL).
_SECRET_NAME = re.compile(r"(^|_)(KEY|SECRET|TOKEN|PASS|PWD|CREDENTIALS?|PRIVATE|AUTH|SALT)(_|$)"
                          r"|PASSW(OR)?D|SECRET|TOKEN|APIKEY", re.I)
_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def stack_secrets(topology: Topology, environ: Mapping[str, str] | None = None) -> SecretSet:
    """Every secret value this machine knows for the stack, to scrub from every output: THE one
    place that gathers them (the CLI, the MCP server and the operations all start from it).

    The values of `SECRET_ENVS` and `database.passwordEnv` (or `passwordFile`), every `app.env` secret found outside
    the engine (its variable or file), the Proxmox API token, and each webhook URL read from a
    variable or file (with its password and token-like parts). Nothing missing is an error here:
    what is not configured cannot leak. The estate adds what the hosts hold (`secrets_in_env_text`
    of each app host's `.env`) once it reads it.
    """
    env = os.environ if environ is None else environ
    found = SecretSet()
    names = [*SECRET_ENVS, topology.database.password_env]
    found.add(*(env.get(name) for name in dict.fromkeys(names)))
    with contextlib.suppress(BlueGreenError):
        found.add(read_secret_file(topology.database.password_file, "database.passwordFile"))
    for var in topology.app.env:
        if var.secret is not None:
            with contextlib.suppress(BlueGreenError):
                found.add(_lookup(var, env))
    with contextlib.suppress(BlueGreenError):  # no token configured: nothing of it to leak either
        token_id, secret = read_token(topology, env)
        found.add(secret, f"{token_id}={secret.reveal()}")
    for url in _webhook_urls(topology, env):
        found.add(*url_secrets(url))
    return found


def known_secrets(topology: Topology, environ: Mapping[str, str]) -> list[Sensitive]:
    """`stack_secrets` as a list (kept for callers that want one)."""
    return list(stack_secrets(topology, environ))


def url_secrets(url: str) -> list[str]:
    """A secret URL, and the parts of it a receiver or an error may print alone: the password of
    its userinfo, long query values, and a long last path segment (`/hooks/<token>`)."""
    parts = urlsplit(url.strip())
    found = [url.strip()]
    if parts.password:
        found.append(unquote(parts.password))
    found += [value for _, value in parse_qsl(parts.query) if len(value) >= 8]
    last = parts.path.rstrip("/").rsplit("/", 1)[-1]
    if len(last) >= 16:
        found.append(last)
    return found


def _webhook_urls(topology: Topology, env: Mapping[str, str]) -> list[str]:
    urls = []
    for hook in topology.events.webhooks:
        if hook.url_env:
            urls.append(env.get(hook.url_env, "").strip())
        elif hook.url_file:
            with contextlib.suppress(OSError):
                urls.append(Path(hook.url_file).read_text().strip())
    return [u for u in urls if u]


def secrets_in_env_text(text: str, topology: Topology | None = None) -> list[str]:
    """The secret values of an app's `.env` (`KEY=value` lines): every variable `app.env` declares
    secret, every variable whose name says secret (`*_KEY`, `*_SECRET`, `*_TOKEN`, `*PASSWORD*`,
    ...), and the password inside any URL (`DATABASE_URL`). Pure; what a build or a migration on
    that host can print, so the estate scrubs these once it has read the file."""
    declared = {var.name for var in topology.app.env if var.secret is not None} if topology else set()
    found: list[str] = []
    for line in text.splitlines():
        match = _ENV_LINE.match(line)
        if not match or line.lstrip().startswith("#"):
            continue
        name, value = match.group(1), _unquote_env(match.group(2))
        if not value:
            continue
        if name in declared or (_SECRET_NAME.search(name) and _could_be_secret(value)):
            found.append(value)
        if "://" in value:
            password = urlsplit(value).password
            if password:
                found.append(unquote(password))
    return found


def _could_be_secret(value: str) -> bool:
    """A value a variable named like a secret may really hold: not a flag or a number
    (`AUTH_TRUST_HOST=true`, `TOKEN_TTL=3600`), not a URL without a password in it."""
    plain = value.strip()
    if plain.lower() in NOT_SECRETS or (plain.isdigit() and len(plain) < 8) or len(plain) < MIN_SECRET_LENGTH:
        return False
    return not ("://" in plain and not urlsplit(plain).password)


def _unquote_env(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        inner = raw[1:-1]
        if raw[0] == "'":
            return inner
        return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), inner)
    return raw.split(" #", 1)[0].strip()


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
        # Worded so that no part looks like a credential (`TOKEN=...`, `token: ...`): the run's
        # output is scrubbed by shape, which would blank the very advice.
        raise ConfigError(f"no Proxmox API token (user@realm!tokenid=<uuid>) found: put it in the environment "
                          f"variable {TOKEN_ENV}, or in a 0600 file named by proxmox.tokenFile in the stack")
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
