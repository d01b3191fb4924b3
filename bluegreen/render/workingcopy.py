"""The team's git working copy on an app host: read it (status, rebuild) and make one (deploy).

Developers commit and push from `app.workingCopy` (`ssh jwg; cd /opt/jw-attendant-scheduler; git
commit; git push`); releases live beside it under `app.dir`. Nothing here changes a working copy
that exists: the report is read-only (`git --no-optional-locks`, so not even the index is
refreshed), and a working copy is only created where there is none (a rebuilt or new host).
Pure: commands built here, their output parsed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bluegreen.model.topology import Topology
from bluegreen.render.commands import AppPaths, as_deploy_user, validate_ref
from bluegreen.render.shell import sh


def _git(path: str) -> str:
    # A working copy owned by another user than the one reading it is "dubious" to git >= 2.35;
    # naming it safe on the command line allows reading it without changing any configuration.
    return f"git -c safe.directory={sh(path)} -C {sh(path)} --no-optional-locks"


def report_command(paths: AppPaths) -> str:
    """`key=value` lines describing the working copy (`state=absent` when there is none)."""
    wc = paths.working_copy
    if wc is None:
        return "echo state=unmanaged"
    g = _git(wc)
    return "\n".join([
        f"if [ ! -e {sh(wc)} ]; then echo state=absent; exit 0; fi",
        f"if [ ! -e {sh(wc + '/.git')} ]; then echo state=not-git; exit 0; fi",
        "echo state=present",
        f"echo owner=$(stat -c %U {sh(wc)})",
        f"echo branch=$({g} symbolic-ref --quiet --short HEAD || echo '(detached)')",
        f"echo head=$({g} rev-parse --verify --quiet HEAD || true)",
        f"echo origin=$({g} remote get-url origin 2>/dev/null || true)",
        f"if up=$({g} rev-parse --abbrev-ref --symbolic-full-name '@{{upstream}}' 2>/dev/null); then",
        '  echo "upstream=$up"',
        f"  {g} rev-list --left-right --count 'HEAD...@{{upstream}}' | "
        "awk '{print \"ahead=\"$1; print \"behind=\"$2}'",
        "fi",
        f"porcelain=$({g} status --porcelain=v1 --untracked-files=normal 2>/dev/null || true)",
        "echo changes=$(printf '%s\\n' \"$porcelain\" | grep -c -v -e '^??' -e '^$' || true)",
        "echo untracked=$(printf '%s\\n' \"$porcelain\" | grep -c '^??' || true)",
        f"echo unpushed=$({g} rev-list --count --branches --not --remotes 2>/dev/null || echo 0)",
        f"echo stashes=$({g} stash list 2>/dev/null | wc -l)",
        f"echo fetched=$(stat -c %Y {sh(wc + '/.git/FETCH_HEAD')} 2>/dev/null || true)",
    ])


@dataclass(frozen=True)
class WorkingCopy:
    """What `report_command` printed. `ahead`/`behind` count commits against the branch's upstream
    as of the working copy's last fetch (`fetched`, epoch seconds; status never fetches)."""

    path: str | None
    state: str  # present | absent | not-git | unmanaged | unreadable
    owner: str | None = None
    branch: str | None = None
    head: str | None = None
    origin: str | None = None
    upstream: str | None = None
    ahead: int | None = None
    behind: int | None = None
    changes: int = 0
    untracked: int = 0
    unpushed: int = 0
    stashes: int = 0
    fetched: int | None = None
    error: str | None = None

    @property
    def unsaved(self) -> list[str]:
        """Work that exists only in this working copy (lost if the host is replaced)."""
        out = []
        if self.changes:
            out.append(f"{self.changes} uncommitted change(s)")
        if self.untracked:
            out.append(f"{self.untracked} untracked file(s)")
        if self.unpushed:
            out.append(f"{self.unpushed} commit(s) on local branches not on any remote branch")
        if self.stashes:
            out.append(f"{self.stashes} stash(es)")
        return out

    def summary(self) -> str:
        if self.state == "absent":
            return f"{self.path}: no working copy"
        if self.state == "not-git":
            return f"{self.path}: exists but is not a git working copy"
        if self.state == "unreadable":
            return f"{self.path}: could not be read ({self.error})"
        if self.state != "present":
            return "no working copy configured (app.workingCopy)"
        parts = [f"{self.path}: {self.branch}"]
        if self.upstream is None:
            parts.append("no upstream branch")
        elif not self.ahead and not self.behind:
            parts.append(f"up to date with {self.upstream}")
        else:
            parts.append(f"{self.ahead} ahead / {self.behind} behind {self.upstream}")
        parts += self.unsaved if self.unsaved else ["clean"]
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "state": self.state, "owner": self.owner, "branch": self.branch,
                "head": self.head, "origin": self.origin, "upstream": self.upstream, "ahead": self.ahead,
                "behind": self.behind, "changes": self.changes, "untracked": self.untracked,
                "unpushed": self.unpushed, "stashes": self.stashes, "lastFetch": self.fetched,
                "error": self.error, "summary": self.summary()}


def without_userinfo(url: str | None) -> str | None:
    """A remote URL without any `user:token@` in it (a token pasted into the URL stays on the host)."""
    if not url or "://" not in url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _int(value: str | None) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def parse_report(path: str | None, stdout: str) -> WorkingCopy:
    values: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    state = values.get("state", "unreadable")
    if state != "present":
        return WorkingCopy(path=path, state=state,
                           error=None if state != "unreadable" else "no answer")
    return WorkingCopy(
        path=path, state=state, owner=values.get("owner") or None, branch=values.get("branch") or None,
        head=values.get("head") or None, origin=without_userinfo(values.get("origin") or None),
        upstream=values.get("upstream") or None, ahead=_int(values.get("ahead")),
        behind=_int(values.get("behind")), changes=_int(values.get("changes")) or 0,
        untracked=_int(values.get("untracked")) or 0, unpushed=_int(values.get("unpushed")) or 0,
        stashes=_int(values.get("stashes")) or 0, fetched=_int(values.get("fetched")))


def create_command(t: Topology, paths: AppPaths, branch: str) -> str:
    """A working copy where there is none: cloned from the host's mirror of the repository (no
    network, no credentials needed), on `branch`, with `origin` the repository itself, owned by
    the deploy user. Prints `created` when it made one; does nothing where anything exists."""
    wc = paths.working_copy
    if wc is None:
        return "true"
    validate_ref(branch)
    user = t.app.deploy_user or t.ssh.user
    clone = as_deploy_user(t, (
        f"git clone --quiet --branch {sh(branch)} {sh(paths.mirror)} {sh(wc)} && "
        f"git -C {sh(wc)} remote set-url origin {sh(t.app.repo)}"))
    return (
        f"if [ -e {sh(wc)} ]; then exit 0; fi; set -e; "
        f"install -d -m 0755 -o {sh(user)} -g \"$(id -gn {sh(user)})\" {sh(wc)}; "
        f"if ! {{ {clone}; }}; then rm -rf -- {sh(wc)}; exit 1; fi; echo created"
    )
