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

import base64
import os
import re
import secrets as random
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote

from .errors import ConfigError
from .executor import Executor, sh
from .sensitive import Sensitive
from .topology import AppEnvVar, Container, Topology

ENV_FILE_MODE = 0o600

SecretLookup = Callable[[str], str | None]


def env_path(t: Topology, host: Container) -> str:
    return host.path(f"{t.app.dir}/shared/.env")


def default_secret_env(secret: str) -> str:
    """`nextServerActionsKey` -> `BLUEGREEN_SECRET_NEXT_SERVER_ACTIONS_KEY`."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", secret)
    return "BLUEGREEN_SECRET_" + re.sub(r"[^A-Za-z0-9]+", "_", snake).upper()


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


def _from_file(var: AppEnvVar) -> str | None:
    if var.file is None:
        return None
    try:
        return Path(var.file).read_text().strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"app.env.{var.name}.file: cannot read {var.file}: {exc.strerror}") from None


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


def env_secrets(password: Sensitive, resolved: Mapping[str, Sensitive]) -> list[Sensitive]:
    """Every value an executor writing the file must redact from its errors."""
    return [password, *resolved.values()]


def apply_env(executor: Executor, t: Topology, host: Container, content: Sensitive) -> list[str]:
    """Write shared/.env on `host` if it differs (0600, owned by the deploy user)."""
    return write_env_file(executor, env_path(t, host), content, t.app.deploy_user)


def write_env_file(executor: Executor, path: str, content: Sensitive, owner: str) -> list[str]:
    """Write the file if it differs, mode 0600, owned by `owner`. Returns what changed, never the
    content."""
    current = executor.get(path, step="read the app settings")
    if current is not None and current.decode(errors="replace") == content.reveal():
        executor.run(sh("chmod", "600", path), step="app settings mode")
        return []
    executor.put(path, content.reveal(), step="write the app settings", mode=ENV_FILE_MODE)
    executor.run(sh("chown", owner, path) + " && " + sh("chmod", "600", path),
                 step="app settings owner and mode")
    return [f"wrote {path} (mode 0600)"]


def values_of(content: str) -> list[Sensitive]:
    """Every value in a rendered file, for redaction (as written and unquoted)."""
    found: list[Sensitive] = []
    for line in content.splitlines():
        if "=" not in line or line.startswith("#"):
            continue
        raw = line.split("=", 1)[1]
        found.append(Sensitive(raw))
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            inner = re.sub(r'\\(n|"|\\)', lambda m: "\n" if m.group(1) == "n" else m.group(1), raw[1:-1])
            found.append(Sensitive(inner))
    return [v for v in found if v.reveal()]
