"""Unit tests read the repository's stacks as tracked (see `tracked_stacks_only`)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _tracked_stacks(tracked_stacks_only: None) -> None:
    pass
