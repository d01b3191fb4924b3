"""Shared fixtures. `lab`: the local lab (stack `lab`), up once for the whole test session.

A lab that was already running (brought up by hand or by another test session) is reused and
left running; one this session started is stopped at the end, unless another session still
uses it (see `Lab.session`). Tests that use it are marked `integration` automatically.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bluegreen.lab.lab import Lab


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
