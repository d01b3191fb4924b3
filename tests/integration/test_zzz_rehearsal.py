"""The documented rehearsal (docs/OPERATIONS.md, "Rehearse it first"), run exactly as written, line by
line in a shell, in a fresh clone of this branch, on a lab left as `make demo` leaves it.

What the demo leaves that outlives `lab up --legacy --reset` is the lab's directory: its keys, CA,
secrets, and the declared colour of its last switch (`activeColorFile`: green after the demo's
switch, switch and rollback). The test puts the running lab in that state with a real switch,
without the demo's two Next.js builds (about five minutes); with JW_REHEARSAL_REAL_DEMO=1 it runs
the demo itself (`python -m bluegreen.lab.demo`, what `make demo` runs) instead.

Then every command of the documented block must succeed, and the clone must stay clean (the
adopted stack lives in the lab's directory, never in the tracked stacks/Pulumi.lab.yaml).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bluegreen.hosts import haproxy as hr
from bluegreen.hosts.executor import connect
from bluegreen.lab.lab import Lab
from bluegreen.model.stackfile import adopted_stack_file, load_stack, stack_file

from .support import REPO, clone_of_the_working_tree, git

pytestmark = pytest.mark.integration


def documented_rehearsal() -> list[str]:
    """The command lines of the first code block after "Rehearse it first" in docs/OPERATIONS.md."""
    text = (REPO / "docs" / "OPERATIONS.md").read_text()
    start = text.index("**Rehearse it first**")
    block = re.search(r"```\n(.*?)```", text[start:], re.S)
    assert block is not None, "no code block after 'Rehearse it first'"
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert lines and all(line.split()[0] in ("python", "bluegreen") for line in lines), lines
    return lines


def shell(clone: Path, bin_dir: Path, line: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """One documented line, as a newcomer types it in the clone: `python` and `bluegreen` are this
    project's (its virtualenv)."""
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-c", line], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def after_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    base = tmp_path_factory.mktemp("rehearsal")
    clone = clone_of_the_working_tree(base / "clone")
    bin_dir = base / "bin"
    bin_dir.mkdir()
    # Wrappers, not symlinks: a symlink outside the virtualenv would not find its site-packages.
    for name, target in (("python", sys.executable), ("bluegreen", str(Path(sys.executable).parent / "bluegreen"))):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec {target} "$@"\n')
        (bin_dir / name).chmod(0o755)
    try:
        if os.environ.get("JW_REHEARSAL_REAL_DEMO") == "1":
            demo = shell(clone, bin_dir, "python -m bluegreen.lab.demo", timeout=3600)
            assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        else:
            lab = Lab(project_dir=clone)
            lab.up()
            t = load_stack(clone, "lab")
            with connect(t, t.load_balancer) as lb:
                live = hr.live_color(lb, t)
            # The demo ends on a colour the tracked stack file does not declare (green): its last
            # switch recorded that in the lab's directory, which the legacy lab's --reset keeps.
            for line in ("bluegreen --stack lab deploy --yes --migrate", "bluegreen --stack lab switch --yes"):
                ran = shell(clone, bin_dir, line)
                assert ran.returncode == 0, f"{line}: {ran.stderr[-2000:]}"
            assert load_stack(clone, "lab").active_color != live
        yield clone, bin_dir
    finally:
        Lab()._up()  # the lab's own estate back (the legacy one and its adopted stack go)


@pytest.mark.timeout(3600)
def test_the_documented_rehearsal_works_as_written_after_the_demo(after_demo: tuple[Path, Path]) -> None:
    clone, bin_dir = after_demo
    tracked = stack_file(clone, "lab").read_text()
    transcript = Path(Lab().paths.logs, "rehearsal.txt")  # what a newcomer sees, kept beside the lab's logs
    transcript.write_text("")
    for line in documented_rehearsal():
        ran = shell(clone, bin_dir, line)
        with transcript.open("a") as out:
            out.write(f"$ {line}\n{ran.stdout}{ran.stderr}\n")
        assert ran.returncode == 0, f"`{line}` exited {ran.returncode}:\n{ran.stdout[-2000:]}\n{ran.stderr[-3000:]}"
    t = load_stack(clone, "lab")
    adopted = adopted_stack_file(clone, "lab")
    assert adopted is not None and adopted.is_file() and t.adopted_stack_file == str(adopted)
    assert t.app.deploy_user == "root" and t.app.health_path == "/"
    with connect(t, t.load_balancer) as lb:
        assert hr.live_color(lb, t) == t.active_color == "blue"  # green, then blue again
    # Nothing of the rehearsal is in the repository.
    assert stack_file(clone, "lab").read_text() == tracked
    assert git(clone, "status", "--porcelain", "--untracked-files=all") == ""
