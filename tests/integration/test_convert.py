"""Converting an app host from the hand-kept layout (git working copy + .env + a PM2 process
started by hand) to the release layout beside that working copy, on real files, a real git
repository and a real PM2 daemon (own PM2_HOME, stopped by its PID at the end)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bluegreen.hosts.executor import LocalExecutor
from bluegreen.model.errors import ConfigError
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import Topology
from bluegreen.ops.convert import LEGACY_PM2_RECORD, OLD_ASIDE_SUFFIX, convert_host, replace_hand_started
from bluegreen.render.commands import AppPaths

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
ENV_TEXT = 'DATABASE_URL="postgresql://jw:secret@127.0.0.1:5432/db"\nNODE_ENV=production\n# keep me\n'


@dataclasses.dataclass
class Host:
    t: Topology
    root: Path
    app: Path
    pm2_env: dict[str, str]


def _pm2(host: Host, *args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["pm2", *args], env=host.pm2_env, cwd=cwd, check=True, capture_output=True,
                          text=True, timeout=60).stdout


@pytest.fixture
def legacy_host(tmp_path: Path) -> Iterator[Host]:
    base = load_stack(PROJECT, "lab")
    root = tmp_path / "ct134"
    containers = tuple(dataclasses.replace(c, root=str(root)) if c.color == "green" else c for c in base.containers)
    t = dataclasses.replace(base, containers=containers,
                            app=dataclasses.replace(base.app, pm2_home="/root/.pm2", deploy_user="root"))
    assert t.app.working_copy is not None
    app = root / t.app.working_copy.lstrip("/")
    app.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "production-gold-standard"], cwd=app, check=True)
    (app / "server.js").write_text("require('http').createServer((q, s) => s.end('ok')).listen(0)\n")
    subprocess.run(["git", "add", "server.js"], cwd=app, check=True)
    subprocess.run(["git", "-c", "user.name=dev", "-c", "user.email=dev@x", "commit", "-qm", "by hand"],
                   cwd=app, check=True)
    (app / ".env").write_text(ENV_TEXT)
    os.chmod(app / ".env", 0o600)
    home = root / "root/.pm2"
    host = Host(t, root, app, {**os.environ, "PM2_HOME": str(home)})
    _pm2(host, "start", "server.js", "--name", t.app.name, cwd=app)
    try:
        yield host
    finally:
        pid_file = home / "pm2.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            subprocess.run(["pm2", "delete", "all"], env=host.pm2_env, capture_output=True, timeout=60)
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)


def _processes(host: Host) -> list[dict[str, object]]:
    return [{"name": p["name"], "cwd": p["pm2_env"]["pm_cwd"]} for p in json.loads(_pm2(host, "jlist"))]


def test_live_colour_is_refused(legacy_host: Host) -> None:
    green = legacy_host.t.app_host("green")
    with pytest.raises(ConfigError, match=r"serves live traffic.*after a switch made it the standby"):
        convert_host(legacy_host.t, green, LocalExecutor(host="green"), live_color="green")
    assert (legacy_host.app / ".git").is_dir() and (legacy_host.app / ".env").exists()


def _git(app: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=app, capture_output=True, text=True, check=True).stdout


def test_standby_converted_beside_the_working_copy_nothing_moved(legacy_host: Host) -> None:
    t, work = legacy_host.t, legacy_host.app
    green = t.app_host("green")
    (work / "server.js").write_text("// uncommitted work in progress\n")  # a developer's edit
    head, status = _git(work, "rev-parse", "HEAD"), _git(work, "status", "--porcelain")
    assert [p["cwd"] for p in _processes(legacy_host)] == [str(work)]

    result = convert_host(t, green, LocalExecutor(host="green"), live_color="blue")
    assert result.converted and result.working_copy == str(work)
    paths = AppPaths.of(t, green)
    # The working copy is where it was: same commit, branch, uncommitted change and .env.
    assert _git(work, "rev-parse", "HEAD") == head and _git(work, "status", "--porcelain") == status
    assert _git(work, "rev-parse", "--abbrev-ref", "HEAD").strip() == "production-gold-standard"
    assert (work / ".env").read_text() == ENV_TEXT
    # The releases live beside it; .env copied unchanged, 0600.
    assert Path(paths.app_dir).parent == work.parent and Path(paths.releases).is_dir()
    env = Path(paths.env_file)
    assert env.read_text() == ENV_TEXT and (env.stat().st_mode & 0o777) == 0o600
    assert not (work / "releases").exists() and not (work / "shared").exists()
    # The hand-started process keeps running until the release is about to start...
    assert [p["cwd"] for p in _processes(legacy_host)] == [str(work)]
    replaced = replace_hand_started(t, green, LocalExecutor(host="green"))
    # ...then it is gone (the ecosystem's takes its name) and described.
    assert _processes(legacy_host) == [] and replaced
    assert replace_hand_started(t, green, LocalExecutor(host="green")) == ()
    described = json.loads((Path(paths.shared) / LEGACY_PM2_RECORD).read_text())
    assert described[0]["name"] == t.app.name and described[0]["pm_cwd"] == str(work)
    assert any("copied" in c and "keeps its own" in c for c in result.changes)

    again = convert_host(t, green, LocalExecutor(host="green"), live_color="blue")
    assert not again.converted and again.changes == ()


def test_an_interrupted_conversion_is_finished_by_the_next_run(legacy_host: Host) -> None:
    t = legacy_host.t
    green = t.app_host("green")
    paths = AppPaths.of(t, green)
    Path(paths.releases).mkdir(parents=True)  # interrupted after the first directory
    result = convert_host(t, green, LocalExecutor(host="green"), live_color="blue")
    assert result.converted
    assert Path(paths.env_file).read_text() == ENV_TEXT and Path(paths.shared).is_dir()
    assert (legacy_host.app / ".git").is_dir()
    replace_hand_started(t, green, LocalExecutor(host="green"))
    assert _processes(legacy_host) == []


def test_a_stack_naming_the_working_copy_as_app_dir_is_refused(legacy_host: Host) -> None:
    t = legacy_host.t
    assert t.app.working_copy is not None
    old = dataclasses.replace(t, app=dataclasses.replace(t.app, dir=t.app.working_copy, working_copy=None))
    with pytest.raises(ConfigError, match=r"is a git working copy: releases live beside it.*app\.workingCopy"):
        convert_host(old, old.app_host("green"), LocalExecutor(host="green"), live_color="blue")
    assert not (legacy_host.app / "releases").exists() and (legacy_host.app / ".env").read_text() == ENV_TEXT


def test_a_working_copy_an_earlier_version_moved_aside_is_named(legacy_host: Host) -> None:
    t, work = legacy_host.t, legacy_host.app
    aside = work.with_name(work.name + OLD_ASIDE_SUFFIX)
    work.rename(aside)
    with pytest.raises(ConfigError, match="moved the working copy aside"):
        convert_host(t, t.app_host("green"), LocalExecutor(host="green"), live_color="blue")
    assert (aside / ".git").is_dir()
def test_the_hand_started_process_is_found_whoever_runs_it(legacy_host: Host) -> None:
    """PM2 was started by hand as root; the stack names another deploy user (and PM2 home): the
    process is still found in root's PM2 and replaced, so the ecosystem's can take its port."""
    t = dataclasses.replace(legacy_host.t, app=dataclasses.replace(legacy_host.t.app, deploy_user="nobody",
                                                                   pm2_home="/home/nobody/.pm2"))
    green = t.app_host("green")
    assert convert_host(t, green, LocalExecutor(host="green"), live_color="blue").converted
    replaced = replace_hand_started(t, green, LocalExecutor(host="green"))
    assert _processes(legacy_host) == []
    assert any(f"of root ({legacy_host.root}/root/.pm2)" in line for line in replaced), replaced
