"""Values a stack must name that neither the stack file nor the estate gives yet.

The topology accepts them absent, because `bluegreen adopt` reads some of them from the running
estate (the repository URL from the app's working copy, the database user from its `.env`), and
reading a stack must work before that. Whatever touches the estate asks `unset()` first: `config
check`, the Pulumi program (before any resource) and the deploy. Each answer says what to set and
what to put there: `set app.repo: ...`.
"""

from __future__ import annotations

from bluegreen.model.errors import Problem, ValidationError
from bluegreen.model.topology import Topology


class Unset(Problem):
    """A key to set, and what to put there."""

    def __str__(self) -> str:
        return f"set {self.key}: {self.message}"


def unset(t: Topology) -> list[Unset]:
    """Every value still missing, in the order a user fills them in."""
    missing: list[Unset] = []
    adopt = f"`bluegreen adopt --stack {t.stack}` reads it from the estate and writes it here"
    app_host = t.app_host(t.active_color) if t.app_hosts else None
    where = f" on {app_host.label}" if app_host else ""
    if not t.app.repo:
        missing.append(Unset("app.repo", (
            f"the URL of the app's git repository, the `origin` of the working copy {t.app.dir}{where} "
            f"(`git -C {t.app.dir} remote get-url origin`); {adopt}")))
    if not t.app.deploy_user:
        missing.append(Unset("app.deployUser", (
            f"the user that runs the app's PM2{where} (the owner of its `PM2 God Daemon`: root when "
            f"PM2 was started by hand as root); {adopt}")))
    if not t.database.user:
        missing.append(Unset("database.user", (
            f"the database user the app connects as, the user in DATABASE_URL of {t.app.dir}/.env{where}; "
            f"{adopt}")))
    new = [c for c in t.containers if not c.existing]
    if new and not t.ssh.public_keys:
        names = ", ".join(c.label for c in new)
        missing.append(Unset("ssh.publicKeys", (
            f"the OpenSSH public key(s) to install in the container(s) to be created ({names}): "
            "a list of `ssh-ed25519 AAAA... you@host` lines or `file:~/.ssh/id_ed25519.pub`")))
    return missing


def require_complete(t: Topology, source: str | None = None) -> None:
    """Raise one ValidationError (exit code 2) naming every key still to set."""
    missing = unset(t)
    if missing:
        raise ValidationError(source or f"stack {t.stack!r}", missing)
