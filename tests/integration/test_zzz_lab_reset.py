"""`make lab-reset` (`python -m bluegreen.lab reset`) brings any lab state back to a new lab: after a
deploy and a switch (what the demo leaves: the declared colour moved), after `lose-node`, and
half-way through a takeover rehearsal (the legacy estate adopted, nothing applied). `up --legacy
--reset` and `destroy` then `up` reset the declared colour too, and `up` says what it found.

A new lab: no release on either colour, the declared colour the tracked stack's (no
activeColorFile), no adopted stack nor the secrets adopt read, no dump here or on the backup host,
every host answering again. The CLI is run as a person runs it (a subprocess of this project's
Python); the lab of this world is used as it is, without a test session's lease (destroy refuses
while one is held)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bluegreen.lab.lab import Lab
from bluegreen.lab.paths import LEGACY_MARKER
from bluegreen.model.stackfile import adopted_stack_file, load_stack, stack_file
from bluegreen.ops.estate import Estate
from bluegreen.ops.status import status
from tests.guides import PROJECT

pytestmark = pytest.mark.integration


def run(*argv: str, timeout: float = 900) -> str:
    done = run_as_typed(*argv, timeout=timeout)
    assert done.returncode == 0, \
        f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def run_as_typed(*argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BLUEGREEN_STACK"}
    return subprocess.run([sys.executable, "-m", *argv], cwd=PROJECT, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=env)


def lab(*argv: str) -> str:
    return run("bluegreen.lab", *argv)


def bluegreen(*argv: str) -> str:
    return run("bluegreen", "--stack", "lab", *argv)


def tracked_colour() -> str:
    for line in stack_file(PROJECT, "lab").read_text().splitlines():
        if line.strip().startswith("bluegreen:activeColor:"):
            return line.split(":", 2)[2].strip()
    raise AssertionError("no activeColor in the tracked lab stack")


def declared_file() -> Path:
    t = load_stack(PROJECT, "lab")
    assert t.active_color_file is not None
    return Path(t.active_color_file)


def moved_declared_colour() -> None:
    """A release on the standby and a switch to it: the declared colour is now the other one."""
    bluegreen("deploy", "--yes", "--migrate", "--no-snapshot")
    bluegreen("switch", "--yes", "--no-watch")
    assert declared_file().read_text().strip() != tracked_colour()


def assert_a_new_lab(said: str) -> None:
    assert "now:     no release yet" in said and "`make demo`" in said, said
    the_lab = Lab()
    p, t = the_lab.paths, load_stack(PROJECT, "lab")
    assert not (p.root / LEGACY_MARKER).exists()
    adopted = adopted_stack_file(PROJECT, "lab")
    assert adopted is not None and not adopted.exists()
    assert not declared_file().exists() and t.active_color == tracked_colour()
    assert not (p.secrets / "app-env").exists() and not (p.secrets / "database-password").exists()
    dumps = Path(t.database_host.path(t.database.backup_dir))
    assert not dumps.exists() or not any(dumps.iterdir())
    assert t.backup is not None
    offsite = Path(t.backup.path(t.backup.dir))
    assert not offsite.exists() or not any(f.name.endswith(".dump") for f in offsite.iterdir())
    report = status(Estate(t))
    assert report.live == report.declared == tracked_colour()
    assert all(c.reachable and c.release is None for c in report.colors.values()), report.to_json()
    assert report.database.get("reachable") and report.database.get("applied") == 0
    assert report.database.get("lastGoodDump") is None


@pytest.fixture(autouse=True)
def alone() -> None:
    others = Lab().other_sessions()
    if others:
        pytest.skip(f"other test sessions use this lab (pids {others}): a reset would pull it from under them")


@pytest.mark.timeout(2400)
def test_reset_from_after_a_switch_after_lose_node_and_half_adopted() -> None:
    lab("up")
    moved_declared_colour()
    said = lab("reset")
    assert "found:   the lab's own estate: replaced by a new lab estate" in said, said
    assert_a_new_lab(said)

    lost = lab("lose-node")
    assert "gone from the node" in lost and "rebuild estate" in lost
    assert_a_new_lab(lab("reset"))

    moved_declared_colour()
    legacy = lab("up", "--legacy", "--reset")
    assert not declared_file().exists(), "up --legacy --reset kept the declared colour of the estate it replaced"
    assert "next:    `bluegreen --stack lab adopt --yes`" in legacy, legacy
    adopted = bluegreen("adopt", "--yes")
    assert "not sent" not in adopted  # the legacy lab has the stack's webhook receiver
    said = lab("reset")
    assert "found:   the legacy estate, adopted: replaced by a new lab estate" in said, said
    assert_a_new_lab(said)


@pytest.mark.timeout(1200)
def test_destroy_then_up_is_a_new_lab_that_says_so() -> None:
    lab("up")
    moved_declared_colour()
    lab("destroy")
    # Nothing runs now: the CLI says so and what starts it, after the wall of unreachable hosts.
    down = run_as_typed("bluegreen", "status", "--stack", "lab", timeout=300)
    assert down.returncode == 1
    assert down.stderr.rstrip().endswith("next: the lab is not running (nothing answers on its loopback addresses): "
                                          "start it with `make lab-up`, or run `make demo` for the whole story; "
                                          "then `bluegreen status --stack lab`"), down.stderr[-1500:]
    # Without --stack the CLI goes to prod, unreachable from here (a world has no route out): it says so.
    prod = run_as_typed("bluegreen", "history", timeout=300)
    assert prod.returncode != 0 and "add `--stack lab`, or `export BLUEGREEN_STACK=lab`" in prod.stderr, prod.stderr
    said = lab("up")
    assert "found:   nothing: a new lab" in said, said
    assert_a_new_lab(said)
