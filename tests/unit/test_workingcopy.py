"""The team's working copy (read, created where missing) and the git access check, run for real with
bash and git on temporary directories."""

from __future__ import annotations

import dataclasses
import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bluegreen.hosts.executor import LocalExecutor
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import Topology
from bluegreen.render import commands as cmd
from bluegreen.render import gitaccess, workingcopy

PROJECT = Path(__file__).resolve().parents[2]
ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **ENV}, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def topo(tmp_path: Path) -> Topology:
    t = load_stack(PROJECT, "lab")
    blue = dataclasses.replace(t.app_host("blue"), root=str(tmp_path / "ct132"))
    containers = tuple(blue if c.vmid == blue.vmid else c for c in t.containers)
    return dataclasses.replace(t, containers=containers,
                               app=dataclasses.replace(t.app, repo=str(tmp_path / "origin.git")))


@pytest.fixture
def paths(topo: Topology) -> cmd.AppPaths:
    return cmd.AppPaths.of(topo, topo.app_host("blue"))


def origin_with_clone(tmp_path: Path, paths: cmd.AppPaths) -> Path:
    """A bare origin on branch `main` with two commits, and the working copy cloned from it."""
    seed = tmp_path / "seed"
    seed.mkdir()
    git("init", "-q", "-b", "main", cwd=seed)
    for n in (1, 2):
        (seed / "VERSION").write_text(f"{n}\n")
        git("add", "-A", cwd=seed)
        git("commit", "-qm", f"v{n}", cwd=seed)
    git("clone", "-q", "--bare", str(seed), str(tmp_path / "origin.git"), cwd=tmp_path)
    assert paths.working_copy
    work = Path(paths.working_copy)
    work.parent.mkdir(parents=True)
    git("clone", "-q", str(tmp_path / "origin.git"), str(work), cwd=tmp_path)
    return work


def report(paths: cmd.AppPaths) -> workingcopy.WorkingCopy:
    out = LocalExecutor().run(workingcopy.report_command(paths), step="read")
    return workingcopy.parse_report(paths.working_copy, out.stdout)


def test_no_working_copy_and_not_a_git_one(paths: cmd.AppPaths) -> None:
    assert report(paths).state == "absent"
    assert paths.working_copy
    Path(paths.working_copy).mkdir(parents=True)
    found = report(paths)
    assert found.state == "not-git" and "not a git working copy" in found.summary()


def test_up_to_date_ahead_behind_and_unsaved_work(tmp_path: Path, paths: cmd.AppPaths) -> None:
    work = origin_with_clone(tmp_path, paths)
    clean = report(paths)
    assert (clean.state, clean.branch, clean.upstream, clean.ahead, clean.behind) == \
        ("present", "main", "origin/main", 0, 0)
    assert clean.unsaved == [] and "up to date with origin/main" in clean.summary()
    assert clean.origin == str(tmp_path / "origin.git")

    # Someone pushed from elsewhere (fetched), and a local commit is not pushed yet.
    other = tmp_path / "other"
    git("clone", "-q", str(tmp_path / "origin.git"), str(other), cwd=tmp_path)
    (other / "B").write_text("b\n")
    git("add", "B", cwd=other)
    git("commit", "-qm", "theirs", cwd=other)
    git("push", "-q", "origin", "main", cwd=other)
    git("fetch", "-q", cwd=work)
    (work / "A").write_text("a\n")
    git("add", "A", cwd=work)
    git("commit", "-qm", "mine", cwd=work)
    # Uncommitted, untracked and stashed work.
    (work / "VERSION").write_text("dirty\n")
    (work / "notes.txt").write_text("x\n")
    (work / "S").write_text("s\n")
    git("add", "S", cwd=work)
    git("stash", "push", "-q", "--", "S", cwd=work)
    index_before = (work / ".git/index").stat().st_mtime_ns
    found = report(paths)
    assert (found.ahead, found.behind, found.changes, found.untracked, found.unpushed, found.stashes) == \
        (1, 1, 1, 1, 1, 1)
    assert "1 ahead / 1 behind origin/main" in found.summary()
    assert len(found.unsaved) == 4
    assert found.fetched is not None
    # Reading changed nothing, not even git's index.
    assert (work / ".git/index").stat().st_mtime_ns == index_before


def test_a_working_copy_owned_by_another_user_is_read(tmp_path: Path, paths: cmd.AppPaths) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the working copy to another user")
    work = origin_with_clone(tmp_path, paths)
    nobody = pwd.getpwnam("nobody")
    subprocess.run(["chown", "-R", f"{nobody.pw_uid}:{nobody.pw_gid}", str(work)], check=True)
    found = report(paths)
    assert (found.state, found.owner, found.branch) == ("present", "nobody", "main")


def test_a_missing_working_copy_is_created_from_the_mirror(tmp_path: Path, topo: Topology,
                                                            paths: cmd.AppPaths) -> None:
    origin_with_clone(tmp_path, paths)
    assert paths.working_copy
    subprocess.run(["rm", "-rf", paths.working_copy], check=True)
    ex = LocalExecutor()
    sha = ex.run(cmd.fetch_ref(topo, paths, "main"), step="fetch").stdout.strip()
    out = ex.run(workingcopy.create_command(topo, paths, "main"), step="create")
    assert out.stdout.split() == ["created"]
    found = report(paths)
    assert (found.branch, found.head, found.upstream, found.origin) == ("main", sha, "origin/main", topo.app.repo)
    assert found.unsaved == [] and found.ahead == 0
    # An existing one is never touched.
    (Path(paths.working_copy) / "mine.txt").write_text("keep\n")
    assert ex.run(workingcopy.create_command(topo, paths, "main"), step="create").stdout == ""
    assert (Path(paths.working_copy) / "mine.txt").read_text() == "keep\n"


@pytest.mark.parametrize("url,expected", [
    ("https://x-access-token:ghp_abc@github.com/o/r.git", "https://github.com/o/r.git"),
    ("https://github.com/o/r.git", "https://github.com/o/r.git"),
    ("git@github.com:o/r.git", "git@github.com:o/r.git"),
    ("/var/tmp/jw-lab/sample-app.git", "/var/tmp/jw-lab/sample-app.git"),
])
def test_tokens_in_remote_urls_never_leave_the_host(url: str, expected: str) -> None:
    assert workingcopy.without_userinfo(url) == expected


def _access(topo: Topology, paths: cmd.AppPaths, repo: str | None = None, **answers: str) -> gitaccess.GitAccess:
    t = dataclasses.replace(topo, app=dataclasses.replace(topo.app, repo=repo)) if repo else topo
    text = "".join(f"{k}={v}\n" for k, v in {"user": "root", **answers}.items())
    return gitaccess.parse_access(t, t.app_host("blue"), paths, text)


ACCESS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("local repo, no store needed", {"credentials": "absent", "access": "ok"}, []),
    ("store 0600 and reachable", {"credentials": "present", "mode": "600", "owner": "root", "access": "ok"}, []),
    ("store readable by others", {"credentials": "present", "mode": "644", "owner": "root", "access": "ok"},
     ["is mode 0644: it holds a token"]),
    ("store of another user", {"credentials": "present", "mode": "600", "owner": "jwapp", "access": "ok"},
     ["owned by jwapp, not the deploy user root"]),
    ("no access", {"credentials": "present", "mode": "600", "owner": "root", "access": "failed",
                   "error": "fatal: Authentication failed"}, ["root cannot fetch", "Authentication failed"]),
]


@pytest.mark.parametrize(("answers", "phrases"), [(a, p) for _, a, p in ACCESS], ids=[i for i, _, _ in ACCESS])
def test_git_access_problems_are_named(topo: Topology, paths: cmd.AppPaths, answers: dict[str, str],
                                       phrases: list[str]) -> None:
    found = _access(topo, paths, **answers)
    assert found.ok == (not phrases)
    text = "; ".join(found.problems)
    for phrase in phrases:
        assert phrase in text


def test_an_https_repo_without_a_store_says_so_and_where_root_keeps_one(topo: Topology,
                                                                         paths: cmd.AppPaths) -> None:
    t = dataclasses.replace(topo, app=dataclasses.replace(topo.app, deploy_user="jwapp"))
    p = cmd.AppPaths.of(t, t.app_host("blue"))
    found = _access(t, p, repo="https://github.com/o/r.git", user="jwapp", credentials="absent",
                    rootCredentials="present", access="failed", error="fatal: could not read Username")
    assert p.git_credentials.endswith("/home/jwapp/.git-credentials")
    assert any("no credential store at" in x and "install -m 600 -o jwapp" in x for x in found.problems)


def test_a_token_in_the_repo_url_is_a_problem_and_never_shown(topo: Topology, paths: cmd.AppPaths) -> None:
    found = _access(topo, paths, repo="https://u:ghp_secret@github.com/o/r.git", credentials="absent",
                    access="ok")
    assert not found.ok and "carries credentials in its URL" in found.problems[0]
    assert "ghp_secret" not in repr(found.to_json())


def test_the_access_check_runs_as_written(tmp_path: Path, topo: Topology, paths: cmd.AppPaths) -> None:
    origin_with_clone(tmp_path, paths)
    host = topo.app_host("blue")
    out = LocalExecutor().run(gitaccess.access_command(topo, host, paths), step="check")
    assert gitaccess.parse_access(topo, host, paths, out.stdout).ok
    broken = dataclasses.replace(topo, app=dataclasses.replace(topo.app, repo=str(tmp_path / "nowhere.git")))
    out = LocalExecutor().run(gitaccess.access_command(broken, host, paths), step="check")
    found = gitaccess.parse_access(broken, host, paths, out.stdout)
    assert not found.ok and "does not appear to be a git repository" in found.problems[0]
