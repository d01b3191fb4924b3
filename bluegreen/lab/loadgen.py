"""A bounded, steady request loop: proof that a switch drops nothing.

Clients run in threads, half on keep-alive connections and half opening a new connection per
request, until stopped or until their request budget runs out. Like a browser's or urllib3's
connection pool, a keep-alive client does not send on an idle connection the server has already
closed (a reload closes idle ones): it looks first, and opens a new one. Once a request is sent,
the client retries a GET once, on a new connection, exactly when RFC 9112 (9.3.1) lets it: the
method is idempotent, the connection had been used before, and it closed (end of stream or reset)
before the client received any byte of the status line. Such retries are counted in the report.
A timeout, a 5xx, a reset after the status line began, or anything on a fresh connection is a
failure; `retry=False` turns retries off (every error is then a failure).
Every response is recorded with the colour that served it (`X-Served-By`), so callers can count
failures, old-colour answers after a flip, and latency percentiles. Only loopback targets are
allowed: this is a test tool.
"""

from __future__ import annotations

import errno
import http.client
import io
import ipaddress
import select
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bluegreen.hosts import health
from bluegreen.model.errors import ConfigError

if TYPE_CHECKING:
    from bluegreen.model.topology import Topology


@dataclass(frozen=True)
class Sample:
    started: float
    latency_ms: float
    status: int | None
    served_by: str | None
    error: str | None
    retried: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 400


@dataclass
class LoadReport:
    samples: list[Sample] = field(default_factory=list)
    # Idle keep-alive connections found closed by the server before reuse (a reload closes them),
    # replaced by a new one before anything was sent: not a retry, nothing was lost.
    closed_idle: int = 0

    @property
    def total(self) -> int:
        return len(self.samples)

    @property
    def failures(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    @property
    def retried(self) -> int:
        """Requests retried once because their idle keep-alive connection had been closed."""
        return sum(s.retried for s in self.samples)

    def colours(self) -> dict[str, int]:
        seen: dict[str, int] = {}
        for s in self.samples:
            if s.served_by:
                seen[s.served_by] = seen.get(s.served_by, 0) + 1
        return seen

    def percentile(self, q: float, *, since: float | None = None, until: float | None = None) -> float:
        values = sorted(s.latency_ms for s in self.samples
                        if s.ok and (since is None or s.started >= since)
                        and (until is None or s.started < until))
        if not values:
            return 0.0
        index = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
        return values[index]

    def after(self, moment: float) -> list[Sample]:
        return [s for s in self.samples if s.started >= moment]

    def summary(self) -> str:
        fails = self.failures
        reasons: dict[str, int] = {}
        for s in fails:
            key = s.error or f"HTTP {s.status}"
            reasons[key] = reasons.get(key, 0) + 1
        detail = ", ".join(f"{k}: {v}" for k, v in reasons.items())
        return (f"{self.total} requests, {len(fails)} failed" + (f" ({detail})" if detail else "")
                + (f", {self.retried} retried on a closed idle connection" if self.retried else "")
                + (f", {self.closed_idle} idle connections closed by the server and replaced before reuse"
                   if self.closed_idle else "")
                + f", p50 {self.percentile(50):.1f} ms, p99 {self.percentile(99):.1f} ms, "
                f"served by {self.colours()}")


def _require_loopback(host: str) -> None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if host != "localhost" and (address is None or not address.is_loopback):
        raise ConfigError(f"the request loop only targets loopback addresses, not {host!r}")


class RequestLoop:
    """`with RequestLoop(url, clients=16) as loop: ...` then `loop.report`."""

    def __init__(self, url: str, *, clients: int = 8, max_requests: int = 200_000,
                 max_seconds: float = 600.0, timeout: float = 5.0, pause: float = 0.0,
                 ca_file: str | None = None, server_name: str | None = None, retry: bool = True) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"expected an http:// or https:// URL, got {url!r}")
        _require_loopback(parts.hostname)
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        # https like a visitor: SNI and Host name `server_name`, the certificate verified for it
        # against `ca_file` (or the system's CAs). Never unverified.
        self.tls = health.ssl_context(ca_file) if parts.scheme == "https" else None
        self.server_name = server_name
        self.path = parts.path or "/"
        self.clients = clients
        self.retry = retry
        self.budget = max_requests
        self.max_seconds = max_seconds
        self.timeout = timeout
        self.pause = pause
        self.report = LoadReport()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._count = 0

    def __enter__(self) -> RequestLoop:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        for i in range(self.clients):
            thread = threading.Thread(target=self._client, args=(i % 2 == 0, deadline), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> LoadReport:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 1)
        self.report.samples.sort(key=lambda s: s.started)
        return self.report

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        """Block until at least `count` more responses were recorded (traffic really flows)."""
        target = self._count + count
        end = time.monotonic() + timeout
        while (self._count < target and time.monotonic() < end
               and any(thread.is_alive() for thread in self._threads)):  # the budget may run out first
            time.sleep(0.01)

    def _take(self) -> bool:
        with self._lock:
            if self._count >= self.budget:
                return False
            self._count += 1
            return True

    @classmethod
    def visitor(cls, t: Topology, path: str = "/", **kwargs: Any) -> RequestLoop:
        """A loop on the stack's public URL, the way a visitor reaches it (HTTPS when served)."""
        return cls(f"{t.public_url}{path}", ca_file=t.haproxy.ca_file, server_name=t.tls_server_name,
                   **kwargs)

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self.tls is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        else:
            conn = _TlsConnection(self.host, self.port, timeout=self.timeout, context=self.tls,
                                  server_name=self.server_name or self.host)
        conn.response_class = _CountingResponse
        return conn

    def _client(self, keep_alive: bool, deadline: float) -> None:
        conn: http.client.HTTPConnection | None = None
        reused = False  # `conn` already carried an answer: the server may close it while idle
        while not self._stop.is_set() and time.monotonic() < deadline and self._take():
            started = time.monotonic()
            retried = False
            while True:
                if conn is not None and _closed_by_server(conn):
                    conn.close()
                    conn = None
                    with self._lock:
                        self.report.closed_idle += 1
                if conn is None:
                    conn, reused = self._connection(), False
                current = conn
                status = served = error = None
                _CountingResponse.received.value = 0
                try:
                    status, served, will_close = self._get(current, keep_alive)
                    reused = True
                    if not keep_alive or will_close:
                        current.close()
                        conn = None
                except (OSError, http.client.HTTPException) as exc:
                    error = _describe(exc)
                    current.close()
                    conn = None
                    if self.retry and reused and not retried and retryable(exc, _CountingResponse.received.value):
                        retried = True
                        continue
                break
            sample = Sample(started, (time.monotonic() - started) * 1000, status, served, error, retried)
            with self._lock:
                self.report.samples.append(sample)
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()

    def _get(self, conn: http.client.HTTPConnection, keep_alive: bool) -> tuple[int, str | None, bool]:
        headers = {} if keep_alive else {"Connection": "close"}
        if self.server_name:
            headers["Host"] = self.server_name
        conn.request("GET", self.path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("X-Served-By"), response.will_close


# A connection the server closed: end of stream before a status line, a reset, a broken pipe. A
# timeout is not one of them (the server is there, and slow).
_CLOSED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


def _describe(exc: BaseException) -> str:
    """The exception's type; for a bare OSError also its errno, the only thing that tells them apart."""
    if type(exc) is OSError and exc.errno is not None:
        return f"OSError({errno.errorcode.get(exc.errno, exc.errno)})"
    return type(exc).__name__


def retryable(exc: BaseException, answer_bytes: int) -> bool:
    """RFC 9112, 9.3.1, for a GET on a reused connection: the connection closed before any byte of
    the answer (the status line) arrived."""
    return answer_bytes == 0 and isinstance(exc, _CLOSED)


class _Received(threading.local):
    value = 0


class _CountingReader(io.RawIOBase):
    """The socket's own reader (which keeps the socket open while a response reads it, even after
    the connection let go of it), its bytes counted for the current thread's request."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        n: int | None = self._raw.readinto(buffer)
        if n:
            _CountingResponse.received.value += n
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


class _CountingSocket:
    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def makefile(self, mode: str, *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_CountingReader(self._sock.makefile("rb", buffering=0)))


class _CountingResponse(http.client.HTTPResponse):
    """An answer whose bytes are counted as they arrive, even when reading it fails half-way."""

    received = _Received()

    def __init__(self, sock: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(_CountingSocket(sock), *args, **kwargs)  # type: ignore[arg-type]


def _closed_by_server(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle connection has something to read (its close, as nothing else is due):
    the check a connection pool makes before it reuses one."""
    sock = conn.sock
    if sock is None:
        return False
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)




class _TlsConnection(http.client.HTTPConnection):
    """HTTPS to an address, verifying the certificate for `server_name` (sent as SNI)."""

    def __init__(self, host: str, port: int, *, timeout: float, context: ssl.SSLContext,
                 server_name: str) -> None:
        super().__init__(host, port, timeout=timeout)
        self._context = context
        self._server_name = server_name

    def connect(self) -> None:
        super().connect()
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_name)
