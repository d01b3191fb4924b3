"""The app-host command builders, run for real with bash on temporary directories."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from bluegreen.hosts.executor import LocalExecutor
from bluegreen.model.errors import ConfigError
from bluegreen.model.stackfile import load_stack
from bluegreen.render import commands as cmd

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def topo(tmp_path: Path):
    t = load_stack(PROJECT, "lab")
    blue = dataclasses.replace(t.app_host("blue"), root=str(tmp_path / "ct132"))
    containers = tuple(blue if c.vmid == blue.vmid else c for c in t.containers)
    app = dataclasses.replace(t.app, repo=str(tmp_path / "repo.git"),
                              install_command="mkdir -p node_modules && date +%s%N > node_modules/stamp")
    return dataclasses.replace(t, containers=containers, app=app)


@pytest.fixture
def ex():
    return LocalExecutor()


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def make_repo(tmp_path: Path) -> dict[str, str]:
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    (work / "package-lock.json").write_text('{"v": 1}')
    (work / "VERSION").write_text("1\n")
    git("add", "-A", cwd=work)
    git("commit", "-qm", "v1", cwd=work)
    git("tag", "v1", cwd=work)
    v1 = git("rev-parse", "HEAD", cwd=work)
    (work / "VERSION").write_text("2\n")
    git("commit", "-qam", "v2", cwd=work)
    git("tag", "v2", cwd=work)
    v2 = git("rev-parse", "HEAD", cwd=work)
    git("clone", "-q", "--bare", str(work), str(tmp_path / "repo.git"), cwd=tmp_path)
    return {"v1": v1, "v2": v2}


@pytest.mark.parametrize("ref,ok", [
    ("main", True), ("v1.2.3", True), ("feature/x-y", True), ("a1b2c3d", True), ("HEAD~1", True),
    ("-rf", False), ("--upload-pack=x", False), ("a..b", False), ("x;rm -rf /", False), ("", False),
    ("ref with space", False), ("$(id)", False), ("main.lock", False),
])
def test_validate_ref(ref: str, ok: bool) -> None:
    if ok:
        assert cmd.validate_ref(ref) == ref
    else:
        with pytest.raises(ConfigError, match="invalid git ref"):
            cmd.validate_ref(ref)


def test_fetch_and_export_a_release(tmp_path: Path, topo, ex) -> None:
    shas = make_repo(tmp_path)
    paths = cmd.AppPaths.of(topo, topo.app_host("blue"))
    assert paths.app_dir.startswith(str(tmp_path / "ct132"))
    for ref in ("v1", "v2", "main", shas["v1"]):
        out = ex.run(cmd.fetch_ref(topo, paths, ref), step="fetch")
        assert out.stdout.strip() == (shas["v2"] if ref in ("v2", "main") else shas["v1"])
    release = paths.release(cmd.release_name(shas["v1"], datetime(2026, 1, 2, 3, 4, 5)))
    assert release.endswith("/20260102030405-" + shas["v1"][:7])
    ex.run(cmd.export_release(paths, release, shas["v1"], "v1"), step="export")
    assert Path(release, "VERSION").read_text() == "1\n"
    assert Path(release, "REVISION").read_text().strip() == shas["v1"]
    assert Path(release, "REF").read_text().strip() == "v1"
    assert os.readlink(Path(release, ".env")) == paths.env_file
    assert not Path(release, ".git").exists()


def test_unknown_ref_fails_without_stderr(tmp_path: Path, topo, ex) -> None:
    make_repo(tmp_path)
    paths = cmd.AppPaths.of(topo, topo.app_host("blue"))
    out = ex.run(cmd.fetch_ref(topo, paths, "no-such-branch"), step="fetch", check=False)
    assert out.exit_code != 0 and out.stderr.strip() == ""


def test_current_pointer_and_read_back(tmp_path: Path, topo, ex) -> None:
    paths = cmd.AppPaths.of(topo, topo.app_host("blue"))
    empty = ex.run(cmd.read_current(paths), step="read").stdout.split("\n")
    assert empty[:3] == ["", "", ""]
    for name, sha in (("r1", "a" * 40), ("r2", "b" * 40)):
        Path(paths.release(name)).mkdir(parents=True)
        Path(paths.release(name), "REVISION").write_text(sha + "\n")
        Path(paths.release(name), "REF").write_text(name + "\n")
        ex.run(cmd.point_current(paths, paths.release(name)), step="point")
        lines = ex.run(cmd.read_current(paths), step="read").stdout.split("\n")
        assert lines[:3] == [paths.release(name), sha, name]
    assert not Path(paths.app_dir, ".current.tmp").exists()


def test_dependencies_reused_only_when_lockfile_unchanged(tmp_path: Path, topo, ex) -> None:
    paths = cmd.AppPaths.of(topo, topo.app_host("blue"))
    prev, same, changed = (paths.release(n) for n in ("prev", "same", "changed"))
    for d, lock in ((prev, "1"), (same, "1"), (changed, "2")):
        Path(d).mkdir(parents=True)
        Path(d, "package-lock.json").write_text(lock)
    first = ex.run(cmd.install_dependencies(topo, paths, prev, None), step="install")
    assert first.stdout.split()[-1] == "installed"
    reused = ex.run(cmd.install_dependencies(topo, paths, same, prev), step="install")
    assert reused.stdout.split()[-1] == "reused"
    assert Path(same, "node_modules/stamp").read_text() == Path(prev, "node_modules/stamp").read_text()
    fresh = ex.run(cmd.install_dependencies(topo, paths, changed, prev), step="install")
    assert fresh.stdout.split()[-1] == "installed"


def test_prune_keeps_newest_and_protected(tmp_path: Path, topo, ex) -> None:
    paths = cmd.AppPaths.of(topo, topo.app_host("blue"))
    names = [f"2026010100000{i}-abc" for i in range(6)]
    for n in names:
        Path(paths.release(n)).mkdir(parents=True)
    protected = paths.release(names[0])
    out = ex.run(cmd.prune_releases(paths, 3, [protected]), step="prune")
    assert sorted(out.stdout.split()) == names[1:3]
    assert sorted(os.listdir(paths.releases)) == [names[0], *names[3:]]


def test_list_migrations_only_dirs_with_sql(tmp_path: Path, topo, ex) -> None:
    release = tmp_path / "rel"
    for name, has_sql in (("20250101_init", True), ("20250201_x", True), ("notes", False)):
        (release / "prisma/migrations" / name).mkdir(parents=True)
        if has_sql:
            (release / "prisma/migrations" / name / "migration.sql").write_text("select 1;")
    out = ex.run(cmd.list_migrations(str(release)), step="list").stdout.split()
    assert sorted(out) == ["20250101_init", "20250201_x"]
    assert ex.run(cmd.list_migrations(str(tmp_path / "none")), step="list").stdout == ""


def test_as_deploy_user_wraps_only_other_users(topo) -> None:
    assert cmd.as_deploy_user(topo, "echo hi") == "echo hi"
    other = dataclasses.replace(topo, app=dataclasses.replace(topo.app, deploy_user="jwapp"))
    wrapped = cmd.as_deploy_user(other, "echo hi")
    assert wrapped.startswith("runuser -u jwapp -- env -u NPM_CONFIG_CACHE ") and wrapped.endswith(" bash -c 'echo hi'")
    # The deploy user's own caches, not the login user's (npm would write root's, or fail on it).
    as_user = wrapped.replace("runuser -u jwapp -- ", "").replace("echo hi", "echo $NPM_CONFIG_CACHE")
    out = subprocess.run(["bash", "-c", as_user], env={"PATH": "/usr/bin:/bin", "NPM_CONFIG_CACHE": "/root/.npm"},
                         capture_output=True, text=True)
    assert out.stdout.strip() == ""


def test_prune_backups_keeps_the_newest(tmp_path: Path, topo, ex) -> None:
    db = dataclasses.replace(topo.database_host, root=str(tmp_path / "ct131"))
    folder = Path(db.path(topo.database.backup_dir))
    folder.mkdir(parents=True)
    for i in range(8):
        f = folder / f"2026010100000{i}-blue-abc.dump"
        f.write_text("x")
        os.utime(f, (1_700_000_000 + i, 1_700_000_000 + i))
    removed = ex.run(cmd.prune_backups(topo, db), step="prune").stdout.split()
    assert len(removed) == 8 - topo.database.backup_keep
    assert sorted(os.listdir(folder)) == [f"2026010100000{i}-blue-abc.dump"
                                          for i in range(8 - topo.database.backup_keep, 8)]


@pytest.mark.parametrize("stdout,expected", [
    ("/a/releases/r1\nabc\nv1\n", ("r1", "abc", "v1")),
    ("/a/releases/r1\nabc", ("r1", "abc", None)),  # a release without REF, or a cut line
    ("\n\n\n", (None, None, None)),
    ("", (None, None, None)),
])
def test_parse_current_tolerates_missing_lines(stdout: str, expected: tuple) -> None:
    current = cmd.parse_current(stdout)
    assert (current.name, current.sha, current.ref) == expected
