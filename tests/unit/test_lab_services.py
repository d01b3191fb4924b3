"""The lab's servers: a working SIGINT even when the lab starts in the background (nohup, a CI job);
each host's SSH sessions with that host's own HOME."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bluegreen.lab.services import host_session_env, render_sshd_config, servers_get_default_signals

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


@pytest.mark.parametrize("session_env, setenv_line", [
    (None, None),
    ({"HOME": "/var/tmp/jw-lab/ct132/root", "NPM_CONFIG_CACHE": "/root/.npm"},
     'SetEnv "HOME=/var/tmp/jw-lab/ct132/root" "NPM_CONFIG_CACHE=/root/.npm"'),
])
def test_sshd_config_sets_the_session_environment(session_env: dict[str, str] | None,
                                                  setenv_line: str | None) -> None:
    text = render_sshd_config(address="127.0.3.22", port=2222, host_key=Path("/k"), pid_file=Path("/p"),
                              authorized_keys=Path("/a"), session_env=session_env)
    lines = text.splitlines()
    assert "ListenAddress 127.0.3.22:2222" in lines
    assert [line for line in lines if line.startswith("SetEnv")] == ([setenv_line] if setenv_line else [])


def test_a_host_session_keeps_the_warm_npm_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NPM_CONFIG_CACHE", raising=False)
    monkeypatch.setenv("HOME", "/home/ci")
    assert host_session_env(Path("/var/tmp/jw-lab/ct134/root")) == {
        "HOME": "/var/tmp/jw-lab/ct134/root", "NPM_CONFIG_CACHE": "/home/ci/.npm"}
    monkeypatch.setenv("NPM_CONFIG_CACHE", "/cache/npm")
    assert host_session_env(Path("/h"))["NPM_CONFIG_CACHE"] == "/cache/npm"
