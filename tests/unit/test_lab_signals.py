"""A lab brought up from the background (nohup, a CI job) still gives its servers a working SIGINT."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from bluegreen.lab.services import servers_get_default_signals

CHILD = "import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"


@pytest.mark.parametrize("reset, child_ignores", [(False, "True"), (True, "False")])
def test_a_server_started_after_the_reset_does_not_inherit_an_ignored_sigint(reset: bool,
                                                                             child_ignores: str) -> None:
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if reset:
            servers_get_default_signals()
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == child_ignores
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_handler_already_set_is_left_alone() -> None:
    def mine(_signum: int, _frame: object) -> None:
        pass

    before = signal.signal(signal.SIGINT, mine)
    try:
        servers_get_default_signals()
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, before)
