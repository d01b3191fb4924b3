"""The public frontend asked as a visitor would (standard library only: it runs in the flip's hot path)."""

from __future__ import annotations

import http.client
import ssl
import time
from urllib.parse import urlsplit

from bluegreen.model.topology import Topology

SERVED_BY_HEADER = "X-Served-By"
VERIFY_DEADLINE_S = 5.0


# --------------------------------------------------------------------------- verify


class _Https(http.client.HTTPSConnection):
    """HTTPS to an address, with SNI and certificate check for the public name (as a visitor)."""

    def __init__(self, host: str, port: int | None, *, server_name: str | None, context: ssl.SSLContext,
                 timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._sni = server_name
        self._ctx = context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._ctx.wrap_socket(self.sock, server_hostname=self._sni or self.host)


def open_connection(url: str, timeout: float = 2.0, *, ca_file: str | None = None,
                    server_name: str | None = None) -> http.client.HTTPConnection:
    """A connection to `url`'s frontend, not yet connected; https verified for `server_name`."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=ca_file)
        return _Https(parts.hostname or "", parts.port, server_name=server_name, context=context,
                      timeout=timeout)
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)


def warm_connection(url: str, *, ca_file: str | None = None,
                    server_name: str | None = None) -> http.client.HTTPConnection | None:
    """Connected (TCP and TLS) before the flip, so the first probe after it pays no handshake:
    HAProxy routes each request by the map, so a kept-alive connection follows the flip."""
    conn = open_connection(url, ca_file=ca_file, server_name=server_name)
    try:
        conn.connect()
    except OSError:
        conn.close()
        return None
    return conn


def served_by(url: str, timeout: float = 2.0, *, ca_file: str | None = None,
              server_name: str | None = None,
              conn: http.client.HTTPConnection | None = None) -> tuple[int | None, str | None, str | None]:
    """One GET: (status, X-Served-By, error), on `conn` if given (then closed), else on a new
    connection. Standard library only: this runs in the hot path. For https the certificate is
    verified for `server_name` (also sent as SNI and Host)."""
    parts = urlsplit(url)
    headers = {"Connection": "close"}
    if parts.scheme == "https" and server_name:
        headers["Host"] = server_name
    if conn is None:
        conn = open_connection(url, timeout, ca_file=ca_file, server_name=server_name)
    try:
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), headers=headers)
        response = conn.getresponse()
        response.read(2000)
        return response.status, response.getheader(SERVED_BY_HEADER), None
    except (OSError, http.client.HTTPException) as exc:
        return None, None, str(exc) or type(exc).__name__
    finally:
        conn.close()


def verify_url(t: Topology) -> str:
    return f"{t.public_url}{t.app.health_path}"


def verify(t: Topology, color: str, *, deadline_s: float = VERIFY_DEADLINE_S,
           warm: http.client.HTTPConnection | None = None) -> tuple[bool, str | None, float]:
    """Ask the public frontend until `color` answers healthy; (ok, last problem, ms to first answer).
    The first probe goes over `warm` (a connection opened before the flip) when there is one."""
    url = verify_url(t)
    expect = t.app.health_status
    started = time.perf_counter()
    problem: str | None = None
    while True:
        status, who, error = served_by(url, ca_file=t.haproxy.ca_file,
                                       server_name=t.tls_server_name, conn=warm)
        warm = None
        healthy = expect.accepts(status)  # the statuses HAProxy's health check accepts too
        if healthy and who == color:
            return True, None, (time.perf_counter() - started) * 1000
        problem = error or f"HTTP {status} from {who or 'an unnamed backend'}"
        if time.perf_counter() - started > deadline_s:
            return False, problem, (time.perf_counter() - started) * 1000
        time.sleep(0.02)
