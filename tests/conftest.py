"""Shared fixtures. `lab`: the local lab (stack `lab`), up once for the whole test session.

A lab that was already running (brought up by hand or by another test session) is reused and
left running; one this session started is stopped at the end, unless another session still
uses it (see `Lab.session`). Tests that use it are marked `integration` automatically.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Rule 1 as a mechanism, before anything can connect: this process and every Python process the
# tests start refuse connections outside the loopback range (tests/loopback_guard).
LOOPBACK_GUARD = Path(__file__).resolve().parent / "loopback_guard"
sys.path.insert(0, str(LOOPBACK_GUARD))
os.environ["PYTHONPATH"] = os.pathsep.join([str(LOOPBACK_GUARD), *filter(None, [os.environ.get("PYTHONPATH")])])
import bluegreen_loopback_guard  # noqa: E402, F401

from bluegreen.lab.lab import Lab  # noqa: E402
from bluegreen.lab.services import servers_get_default_signals  # noqa: E402

# CI may start the suite in the background, where SIGINT arrives ignored and every child would
# inherit that: the tests that interrupt a deploy with Ctrl-C, and the lab's servers, need it back.
servers_get_default_signals()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "lab" in getattr(item, "fixturenames", ()) and item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The running lab: `.topology`, `.paths`, `.executor(host)`, `.db_password()`, `.status()`."""
    the_lab = Lab()
    with the_lab.session():
        yield the_lab


@pytest.fixture
def tracked_stacks_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The repository's stacks as tracked: a takeover rehearsal on this machine may have left an
    adopted lab stack in the lab's directory (`bluegreen:adoptedStackFile`), which is the lab's
    stack until the next `lab up`; tests of the code read the tracked one. A stack copy whose
    adopted file lives elsewhere (a test's own directory) is read as it is."""
    from bluegreen.lab.paths import LAB_DIR
    from bluegreen.model import stackfile

    real = stackfile.adopted_stack_file

    def outside_the_lab(project_dir: str | os.PathLike[str], stack: str) -> Path | None:
        path = real(project_dir, stack)
        return None if path is not None and path.is_relative_to(LAB_DIR) else path

    monkeypatch.setattr(stackfile, "adopted_stack_file", outside_the_lab)
