"""Before a deploy: can the app hosts fetch the repository, as the deploy user, with its credentials?

The deploy's fetch runs on the standby as the deploy user with the token in that user's credential
store (`app.gitCredentials`, default `~/.git-credentials`). This asks each host first, so a host
without access is named (with why and the fix) before a snapshot, a release or a lock-held minute
is spent on it.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from bluegreen.model.errors import BlueGreenError, ConfigError
from bluegreen.ops.estate import Estate
from bluegreen.render.commands import AppPaths
from bluegreen.render.gitaccess import GitAccess, access_command, describe_problems, parse_access

log = logging.getLogger("bluegreen.gitaccess")


def git_access(estate: Estate, color: str) -> GitAccess:
    """What one app host answers (read-only: `stat` and `git ls-remote`)."""
    t = estate.t
    host = t.app_host(color)
    paths = AppPaths.of(t, host)
    with estate.on(host) as ex:
        out = ex.run(access_command(t, host, paths), step="check git access", check=False)
    found = parse_access(t, host, paths, out.stdout)
    log.info("%s: fetches as %s with the credential store %s (%s)", host.label, found.user, found.credentials,
             "present" if found.present else "absent")
    return found


def require_git_access(estate: Estate, color: str) -> GitAccess:
    found = git_access(estate, color)
    if not found.ok:
        raise ConfigError(describe_problems(found) + "; nothing on it was changed")
    return found


def git_access_all(estate: Estate) -> dict[str, GitAccess | str]:
    """Every app host at once; a host that cannot be asked gives the error's text."""

    def one(color: str) -> GitAccess | str:
        try:
            return git_access(estate, color)
        except BlueGreenError as exc:
            return str(exc)

    colors = sorted(estate.t.app_hosts)
    with ThreadPoolExecutor(max_workers=len(colors)) as pool:
        return dict(zip(colors, pool.map(one, colors), strict=True))
