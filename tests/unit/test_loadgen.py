"""The request loop counts what a visitor would see: a keep-alive connection the server closed while
idle is not reused (a connection pool looks first); a request the server dropped on a reused
connection is retried once only with `retry_idle` (as browsers and curl do); a refused or broken
fresh connection is a failure."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from bluegreen.lab.loadgen import RequestLoop
from bluegreen.model.errors import ConfigError

ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Served-By: blue\r\n"
          b"Connection: keep-alive\r\n\r\nok")


def _serve(listener: socket.socket, behaviour: str, stop: threading.Event) -> None:
    """`close-after-answer`: one answer per connection, then the connection is closed while idle
    (a reloading HAProxy does this); `drop-second`: one answer, then the next request is read and
    the connection closed without an answer (a close racing a request in flight); `reset`: every
    connection is reset before any answer."""
    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        with conn:
            conn.settimeout(2)
            try:
                if conn.recv(65536) and behaviour in ("close-after-answer", "drop-second"):
                    conn.sendall(ANSWER)
                    if behaviour == "drop-second":
                        conn.recv(65536)
                    else:
                        time.sleep(0.01)  # idle for a moment, then closed (the client pauses longer)
                elif behaviour == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError:
                pass


@pytest.fixture(params=["close-after-answer", "drop-second", "reset"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    stop = threading.Event()
    thread = threading.Thread(target=_serve, args=(listener, request.param, stop), daemon=True)
    thread.start()
    yield request.param, f"http://127.0.0.1:{listener.getsockname()[1]}/"
    stop.set()
    thread.join(2)
    listener.close()


@pytest.mark.parametrize("retry_idle", [True, False])
def test_only_a_request_dropped_on_a_reused_connection_is_retried(server: tuple[str, str], retry_idle: bool) -> None:
    behaviour, url = server
    with RequestLoop(url, clients=2, max_requests=20, timeout=2, retry_idle=retry_idle, pause=0.05) as loop:
        loop.wait_for(20, timeout=20)
    report = loop.report
    assert report.total == 20
    if behaviour == "close-after-answer":
        # the keep-alive client sees its idle connection closed and opens a new one: no retry needed
        assert report.failures == [] and report.retried == 0 and report.closed_idle >= 5
        assert "replaced before reuse" in report.summary()
    elif behaviour == "drop-second" and retry_idle:
        # a reused connection closed under a sent request: retried once, and counted
        assert report.failures == [] and report.retried >= 5
        assert "retried on a closed idle connection" in report.summary()
    elif behaviour == "drop-second":
        # no retries at all: each of those is a failure
        assert len(report.failures) >= 5 and report.retried == 0
    else:
        # nothing was ever answered on these connections: each is a failure, none retried
        assert len(report.failures) == 20 and report.retried == 0


def test_only_loopback_targets() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        RequestLoop("http://10.92.3.26/")
