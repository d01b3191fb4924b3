"""The request loop counts what a visitor would see: a keep-alive connection the server closed while
idle is retried once (as browsers and curl do); a refused or broken fresh connection is a failure."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from bluegreen.lab.loadgen import RequestLoop
from bluegreen.model.errors import ConfigError

ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Served-By: blue\r\n"
          b"Connection: keep-alive\r\n\r\nok")


def _serve(listener: socket.socket, behaviour: str, stop: threading.Event) -> None:
    """`close-after-answer`: one answer per connection, then the connection is closed while idle
    (a reloading HAProxy does this); `reset`: every connection is reset before any answer."""
    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        with conn:
            conn.settimeout(2)
            try:
                if conn.recv(65536) and behaviour == "close-after-answer":
                    conn.sendall(ANSWER)
                elif behaviour == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError:
                pass


@pytest.fixture(params=["close-after-answer", "reset"])
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


def test_only_an_idle_connection_closed_by_the_server_is_retried(server: tuple[str, str]) -> None:
    behaviour, url = server
    with RequestLoop(url, clients=2, max_requests=20, timeout=2) as loop:
        loop.wait_for(20)
    report = loop.report
    assert report.total == 20
    if behaviour == "close-after-answer":
        # the keep-alive client found its connection closed before each later request: retried
        assert report.failures == [] and report.retried >= 5
        assert "retried on a closed idle connection" in report.summary()
    else:
        # nothing was ever answered on these connections: each is a failure, none retried
        assert len(report.failures) == 20 and report.retried == 0


def test_only_loopback_targets() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        RequestLoop("http://10.92.3.26/")
