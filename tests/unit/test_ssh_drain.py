"""Reading a command's output over SSH (`executor._drain`): sshd may send the exit status before
the last of the output, so the output is read until the end-of-file, and a command that never
sends one (a daemon holding its stdout) still ends after a short grace."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from bluegreen.hosts import executor


@dataclass
class _Channel:
    """A paramiko channel's reading side, scripted: (after seconds, what arrives) in order."""

    script: list[tuple[float, str, bytes]]
    started: float = field(default_factory=time.monotonic)
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    status: bool = False
    eof_received: bool = False
    closed: bool = False

    def _arrive(self) -> None:
        now = time.monotonic() - self.started
        while self.script and self.script[0][0] <= now:
            _, kind, data = self.script.pop(0)
            if kind == "out":
                self.out += data
            elif kind == "err":
                self.err += data
            elif kind == "status":
                self.status = True
            elif kind == "eof":
                self.eof_received = True
            elif kind == "close":
                self.closed = True

    def recv_ready(self) -> bool:
        self._arrive()
        return bool(self.out)

    def recv_stderr_ready(self) -> bool:
        self._arrive()
        return bool(self.err)

    def recv(self, n: int) -> bytes:
        data, self.out[:] = bytes(self.out[:n]), self.out[n:]
        return data

    def recv_stderr(self, n: int) -> bytes:
        data, self.err[:] = bytes(self.err[:n]), self.err[n:]
        return data

    def exit_status_ready(self) -> bool:
        self._arrive()
        return self.status or self.closed


CASES = [
    pytest.param([(0.0, "out", b"a\n"), (0.0, "eof", b""), (0.0, "status", b"")], b"a\n", 0.5,
                 id="output, end-of-file, status: done at once"),
    pytest.param([(0.0, "out", b"a\n"), (0.0, "status", b""), (0.15, "out", b"b\n"), (0.15, "err", b"e"),
                  (0.2, "eof", b"")], b"a\nb\n", 0.6, id="the status before the last output: all of it read"),
    pytest.param([(0.0, "out", b"a\n"), (0.0, "status", b"")], b"a\n", executor.EOF_GRACE_S + 0.5,
                 id="no end-of-file ever (a daemon holds stdout): ends after the grace"),
    pytest.param([(0.0, "out", b"a\n"), (0.05, "close", b"")], b"a\n", 0.5, id="closed"),
]


@pytest.mark.parametrize(("script", "expected", "within"), CASES)
def test_output_is_read_to_its_end(script: list[tuple[float, str, bytes]], expected: bytes,
                                   within: float) -> None:
    channel = _Channel(list(script))
    started = time.monotonic()
    out, _ = executor._drain(channel, 10.0, started)  # type: ignore[arg-type]
    assert out == expected
    assert time.monotonic() - started < within


def test_a_command_past_its_limit_times_out() -> None:
    channel = _Channel([(5.0, "status", b"")])
    with pytest.raises(TimeoutError):
        executor._drain(channel, 0.2, time.monotonic())  # type: ignore[arg-type]
