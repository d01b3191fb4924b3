"""Running the project leaves its repository clean: a fresh clone stays clean after its own tests
and after a switch and a rollback on the lab (which used to rewrite the tracked lab stack file)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bluegreen.lab.lab import Lab

from .support import live_color
from .test_deploy import estate  # noqa: F401

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SKIP = {".venv", ".git", "node_modules"}


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def clone_of_the_working_tree(dest: Path) -> Path:
    """The files git would commit from this working tree (tracked and new, not ignored), committed
    in a new repository: what a fresh clone of this branch looks like."""
    listed = git(REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if not source.is_file() or set(Path(name).parts) & SKIP:
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "clone")
    return dest


def run(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_tests_and_a_switch_on_the_lab_leave_the_clone_clean(estate: Lab, tmp_path: Path) -> None:  # noqa: F811
    lab = estate
    clone = clone_of_the_working_tree(tmp_path / "clone")
    assert git(clone, "status", "--porcelain") == ""

    tests = run(clone, "-m", "pytest", "-q", "-x", "tests/unit", "tests/pulumi/test_program.py")
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]

    before = live_color(lab.topology)
    for command in (["switch", "--direct"], ["rollback", "--direct"]):
        out = run(clone, "-m", "bluegreen", *command, "--stack", "lab", "--yes", "--json")
        assert out.returncode == 0, out.stderr
    assert live_color(lab.topology) == before
    out = run(clone, "-m", "bluegreen", "status", "--stack", "lab", "--json")
    assert out.returncode == 0, out.stderr

    assert git(clone, "status", "--porcelain", "--untracked-files=all") == ""
