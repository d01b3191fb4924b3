"""Can an app host fetch the app's repository, as the deploy user, with its own credentials?
(And is `app.dir` a place to fetch into at all: never the team's working copy.)

Deploys fetch on the host itself (a mirror beside the releases), as the deploy user, with the
token the team keeps in that user's `~/.git-credentials` (`app.gitCredentials`). Before a deploy
starts, each app host is asked: is the credential store there, 0600 and the deploy user's, and
does `git ls-remote` of the repository succeed with it? A host that cannot is named, with why and
the fix, before anything is changed. Pure: the command is built here and its answer parsed here;
the token itself is never read, printed or copied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bluegreen.model.topology import Container, Topology
from bluegreen.render.commands import AppPaths, as_deploy_user, deploy_home, git_as_deploy_user
from bluegreen.render.shell import sh
from bluegreen.render.workingcopy import without_userinfo

LS_REMOTE_TIMEOUT_S = 30


def access_command(t: Topology, host: Container, paths: AppPaths) -> str:
    """`key=value` lines: the credential store's state, mode and owner, and whether the deploy
    user's `git ls-remote` of the repository works (its last error line if not)."""
    user = t.app.deploy_user or t.ssh.user
    cred = sh(paths.git_credentials)
    root_store = sh(host.path("/root/.git-credentials"))
    probe = as_deploy_user(t, git_as_deploy_user(t, paths, f"ls-remote --heads {sh(t.app.repo)}"))
    return "\n".join([
        f"echo user={sh(user)}",
        f"if [ -e {cred} ]; then echo credentials=present; "
        f"echo mode=$(stat -c %a {cred}); echo owner=$(stat -c %U {cred}); "
        "else echo credentials=absent; fi",
        f"if [ {sh(user)} != root ] && [ -e {root_store} ]; then echo rootCredentials=present; fi",
        # A stack that still names the working copy as app.dir would fetch into it: refused here.
        f"if [ -e {sh(paths.app_dir + '/.git')} ]; then echo appDirIsWorkingCopy=yes; fi",
        f"if out=$(timeout {LS_REMOTE_TIMEOUT_S} {probe} 2>&1 >/dev/null); then echo access=ok; "
        "else echo access=failed; "
        # git's own first complaint (`fatal: ...`), else its last line.
        "why=$(printf '%s\\n' \"$out\" | grep -m 1 -E '^(fatal|error|remote):' || "
        "printf '%s\\n' \"$out\" | grep -v '^$' | tail -n 1); printf 'error=%s\\n' \"$why\"; fi",
    ])


def _loose(mode: str) -> bool:
    """Group or others may read or write it (or the mode could not be read)."""
    try:
        return bool(int(mode, 8) & 0o077)
    except ValueError:
        return True


def _needs_credentials(repo: str) -> bool:
    return repo.startswith(("https://", "http://"))


@dataclass(frozen=True)
class GitAccess:
    host: str
    user: str
    repo: str
    credentials: str
    present: bool
    mode: str | None = None
    owner: str | None = None
    root_has_store: bool = False
    access: bool = False
    error: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "user": self.user, "repo": self.repo, "credentials": self.credentials,
                "credentialsPresent": self.present, "mode": self.mode, "owner": self.owner,
                "access": self.access, "ok": self.ok, "problems": list(self.problems)}


def parse_access(t: Topology, host: Container, paths: AppPaths, stdout: str) -> GitAccess:
    """What `access_command` printed, with every problem spelled out (and its fix)."""
    values: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    user = values.get("user") or t.app.deploy_user or t.ssh.user
    store = paths.git_credentials
    repo = without_userinfo(t.app.repo) or t.app.repo
    present = values.get("credentials") == "present"
    mode, owner = values.get("mode"), values.get("owner")
    access = values.get("access") == "ok"
    problems: list[str] = []
    if values.get("appDirIsWorkingCopy") == "yes":
        problems.append(working_copy_as_app_dir(paths.app_dir))
    if t.app.repo != repo:
        problems.append(f"app.repo carries credentials in its URL: keep the token in {store} (0600) "
                        "and the URL without it")
    if present and mode is not None and _loose(mode):
        problems.append(f"{store} is mode {mode.zfill(4)}: it holds a token, so only {user} may read it "
                        f"(chmod 600 {store})")
    if present and owner and owner != user:
        problems.append(f"{store} is owned by {owner}, not the deploy user {user} (chown {user}: {store})")
    if not access:
        why = values.get("error") or "no answer"
        problems.append(f"{user} cannot fetch {repo}: {why}")
        if not present and _needs_credentials(t.app.repo):
            hint = f"no credential store at {store}"
            if values.get("rootCredentials") == "present":
                home = deploy_home(t)
                hint += (f" (root has one: install -m 600 -o {user} -g {user} /root/.git-credentials "
                         f"{home}/.git-credentials)")
            problems.append(hint)
    return GitAccess(host=host.label, user=user, repo=repo, credentials=store, present=present, mode=mode,
                     owner=owner, root_has_store=values.get("rootCredentials") == "present",
                     access=access, error=values.get("error"), problems=problems)


def working_copy_as_app_dir(app_dir: str) -> str:
    return (f"{app_dir} is a git working copy: releases live beside it, not in it; set app.dir to a "
            f"directory beside it (e.g. {app_dir}-deploy) and app.workingCopy: {app_dir}")


def describe_problems(found: GitAccess) -> str:
    return f"{found.host} cannot fetch the app as {found.user}: " + "; ".join(found.problems)
