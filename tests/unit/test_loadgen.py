"""The request loop counts what a visitor would see. A keep-alive client does not reuse an idle
connection the server already closed (a connection pool looks first); once a request is sent, it
retries exactly what RFC 9112 (9.3.1) lets a client retry: a GET on a reused connection that closed
before any byte of the status line. Everything else on a reused connection (a reset mid-answer, a
timeout, a 5xx) and anything on a fresh connection is a failure, never retried."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from bluegreen.lab.loadgen import RequestLoop, retryable
from bluegreen.model.errors import ConfigError

ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Served-By: blue\r\n"
          b"Connection: keep-alive\r\n\r\nok")
UNAVAILABLE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\nX-Served-By: blue\r\n"
               b"Connection: keep-alive\r\n\r\nno")
PARTIAL = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nX-Served-By: blue\r\n\r\npartial"


def _reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


BODY = b"x" * 200_000  # far more than the client's read buffer
CLOSING = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Served-By: green\r\n"
           b"Connection: close\r\n\r\n" % len(BODY))


def _answer(conn: socket.socket, behaviour: str, request_no: int) -> bool:
    """Answer one request on `conn` as `behaviour` says; False: the connection is done."""
    if behaviour == "connection-close":
        conn.sendall(CLOSING)
        time.sleep(0.02)  # the body comes later: the client reads it after letting go of the socket
        conn.sendall(BODY)
        return False
    if behaviour == "reset":
        _reset(conn)  # before any byte, on every (fresh) connection
        return False
    if request_no == 0:
        conn.sendall(ANSWER)
        return behaviour != "close-after-answer"
    # The second request on a reused connection.
    if behaviour == "reset-before-answer":
        _reset(conn)
    elif behaviour == "reset-mid-answer":
        conn.sendall(PARTIAL)
        time.sleep(0.05)
        _reset(conn)
    elif behaviour == "hang":
        time.sleep(2.5)
    elif behaviour == "unavailable":
        conn.sendall(UNAVAILABLE)
        return True
    return False


def _serve(listener: socket.socket, behaviour: str, stop: threading.Event) -> None:
    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        threading.Thread(target=_connection, args=(conn, behaviour), daemon=True).start()


def _connection(conn: socket.socket, behaviour: str) -> None:
    with conn:
        conn.settimeout(3)
        request_no = 0
        try:
            while conn.recv(65536) and _answer(conn, behaviour, request_no):
                request_no += 1
        except OSError:
            pass


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[str]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    stop = threading.Event()
    thread = threading.Thread(target=_serve, args=(listener, request.param, stop), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    stop.set()
    thread.join(2)
    listener.close()


def _run(url: str, requests: int, *, retry: bool = True, pause: float = 0.0) -> RequestLoop:
    # One keep-alive client: every request after the first reuses its connection.
    with RequestLoop(url, clients=1, max_requests=requests, timeout=1, retry=retry, pause=pause) as loop:
        loop.wait_for(requests, timeout=20)
    return loop


@pytest.mark.parametrize("server", ["close-after-answer"], indirect=True)
def test_an_idle_connection_closed_by_the_server_is_replaced_before_reuse(server: str) -> None:
    # The client pauses between requests: the server's close has arrived before the next one.
    report = _run(server, 6, pause=0.05).report
    assert report.total == 6 and report.failures == [] and report.retried == 0
    assert report.closed_idle == 5  # every request after the first found its connection closed
    assert "5 idle connections closed by the server and replaced before reuse" in report.summary()


@pytest.mark.parametrize("server", ["reset-before-answer"], indirect=True)
def test_a_reused_connection_reset_before_any_byte_is_retried(server: str) -> None:
    report = _run(server, 4).report
    assert report.failures == [] and report.retried >= 1


@pytest.mark.parametrize("server", ["reset-before-answer"], indirect=True)
def test_without_retries_that_reset_is_a_failure(server: str) -> None:
    report = _run(server, 4, retry=False).report
    assert report.retried == 0 and len(report.failures) >= 1


@pytest.mark.parametrize(("server", "error"), [
    ("reset-mid-answer", "ConnectionResetError"),  # status line and headers arrived: not retried
    ("hang", "TimeoutError"),  # the server is there and slow
    ("unavailable", None),  # an answer is an answer, whatever its status
], indirect=["server"])
def test_on_a_reused_connection_everything_else_fails_without_retry(server: str, error: str | None) -> None:
    report = _run(server, 2).report
    assert report.total == 2 and report.retried == 0
    assert len(report.failures) == 1
    failure = report.failures[0]
    if error is None:
        assert failure.status == 503
    else:
        assert failure.error == error, failure


@pytest.mark.parametrize("server", ["connection-close"], indirect=True)
def test_answers_that_close_their_connection_are_read_whole(server: str) -> None:
    # `Connection: close`: http.client lets go of the socket before the body is read; the
    # response must still read it (both clients: keep-alive ones and one-request ones).
    with RequestLoop(server, clients=4, max_requests=40, timeout=2) as loop:
        loop.wait_for(40)
    assert loop.report.total == 40 and loop.report.failures == [] and loop.report.retried == 0


@pytest.mark.parametrize("server", ["reset"], indirect=True)
def test_a_fresh_connection_reset_is_a_failure_never_retried(server: str) -> None:
    with RequestLoop(server, clients=2, max_requests=20, timeout=2) as loop:
        loop.wait_for(20)
    assert len(loop.report.failures) == 20 and loop.report.retried == 0


@pytest.mark.parametrize(("exc", "received", "expected"), [
    (http.client.RemoteDisconnected("closed"), 0, True),
    (ConnectionResetError(), 0, True),
    (BrokenPipeError(), 0, True),
    (ConnectionResetError(), 17, False),
    (TimeoutError(), 0, False),
    (http.client.IncompleteRead(b"x"), 0, False),
])
def test_retryable_is_exactly_the_rfc_condition(exc: BaseException, received: int, expected: bool) -> None:
    assert retryable(exc, received) is expected


def test_only_loopback_targets() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        RequestLoop("http://10.92.3.26/")
