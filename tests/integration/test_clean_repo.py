"""Running the project leaves its repository clean: a fresh clone stays clean after its own tests
and after a switch and a rollback on the lab (which used to rewrite the tracked lab stack file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bluegreen.lab.lab import Lab

from .support import clone_of_the_working_tree, git, live_color
from .test_deploy import estate  # noqa: F401

pytestmark = pytest.mark.integration


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
