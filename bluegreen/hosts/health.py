"""Health checks: one HTTP probe, a deadline-bound poll over any probe, and the 5xx-ratio judge
used while watching a colour after a switch.

`poll` takes the probe, clock and sleep as arguments, so its logic is tested with a fake clock;
`http_probe` never raises for network failures (they are results, not exceptions).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from bluegreen.model.errors import ConfigError
from bluegreen.model.topology import HealthStatuses

if TYPE_CHECKING:
    from bluegreen.model.topology import Topology

log = logging.getLogger("bluegreen.health")

SERVED_BY_HEADER = "X-Served-By"
BODY_LIMIT = 2000


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    status: int | None  # None when no HTTP response came back
    latency_ms: float
    body: str  # the first BODY_LIMIT characters
    error: str | None
    served_by: str | None  # which colour answered, from HAProxy's X-Served-By header

    def json(self) -> Any:
        """The body parsed as JSON (a health endpoint's `{status, commit, ...}`), None if it is not."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def describe(self) -> str:
        if self.error is not None:
            return self.error
        who = f" from {self.served_by}" if self.served_by else ""
        return f"HTTP {self.status}{who} in {self.latency_ms:.0f} ms"


def _network_error(exc: httpx.HTTPError, url: str, timeout: float) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"{url}: no answer within {timeout:g}s ({type(exc).__name__})"
    reason = str(exc) or type(exc).__name__
    return f"{url}: {reason}"


_CLIENTS: dict[str | None, httpx.Client] = {}
_CLIENT_LOCK = threading.Lock()


def _client(ca_file: str | None = None) -> httpx.Client:
    """One client per trust anchor for every probe: building one costs an SSL context (tens of
    ms), which would show up as latency. No keep-alive, so each probe still opens its own
    connection. Certificates are always verified: against `ca_file`, else the system's CAs."""
    with _CLIENT_LOCK:
        client = _CLIENTS.get(ca_file)
        if client is None:
            verify: Any = ssl_context(ca_file)
            # trust_env=False: an operator's HTTP(S)_PROXY must never sit between us and the estate.
            client = httpx.Client(trust_env=False, follow_redirects=False, verify=verify,
                                  limits=httpx.Limits(max_keepalive_connections=0))
            _CLIENTS[ca_file] = client
        return client


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """A verifying client context: the stack's CA (`haproxy.caFile`) or the system's trust store."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"haproxy.caFile: cannot load {ca_file}: {exc}") from None


def visitor(t: Topology) -> dict[str, Any]:
    """How a visitor reaches the load balancer: the CA to verify with and the name to ask for
    (SNI and Host), as keyword arguments of `http_probe`."""
    return {"ca_file": t.haproxy.ca_file, "server_name": t.tls_server_name}


def status_ok(status: int | None, expect: int | HealthStatuses | None) -> bool:
    """Whether `status` is healthy: one the stack's `app.healthStatus` accepts (the same statuses
    HAProxy's `http-check expect` accepts), exactly `expect` when a number, else 2xx."""
    if status is None:
        return False
    if isinstance(expect, HealthStatuses):
        return expect.accepts(status)
    return status == expect if expect else 200 <= status < 300


def http_probe(url: str, *, timeout: float = 3.0, headers: Mapping[str, str] | None = None,
               ca_file: str | None = None, server_name: str | None = None,
               expect_status: int | HealthStatuses | None = None) -> ProbeResult:
    """GET `url` once, never following a redirect (HAProxy does not either); healthy per
    `status_ok`. Network failures come back as `ok=False` with the reason. For https,
    `server_name` is sent as SNI and Host and the certificate is verified for it against
    `ca_file` (or the system's CAs)."""
    client = _client(ca_file)
    started = time.perf_counter()
    sent = dict(headers or {})
    extensions: dict[str, Any] = {}
    if server_name and url.startswith("https:"):
        sent.setdefault("Host", server_name)
        extensions["sni_hostname"] = server_name
    try:
        response = client.get(url, headers=sent, timeout=timeout, extensions=extensions)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise ConfigError(f"cannot probe {url!r}: {exc}") from None
    except httpx.HTTPError as exc:
        elapsed = (time.perf_counter() - started) * 1000
        return ProbeResult(ok=False, status=None, latency_ms=elapsed, body="",
                           error=_network_error(exc, url, timeout), served_by=None)
    elapsed = (time.perf_counter() - started) * 1000
    ok = status_ok(response.status_code, expect_status)
    return ProbeResult(ok=ok, status=response.status_code, latency_ms=elapsed,
                       body=response.text[:BODY_LIMIT],
                       error=None if ok else f"{url}: HTTP {response.status_code}",
                       served_by=response.headers.get(SERVED_BY_HEADER))


def tcp_answers(address: str, port: int, timeout: float = 2.0) -> bool:
    """Whether something accepts TCP connections on `address:port` (a service still serving)."""
    import socket

    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def poll(probe: Callable[[], ProbeResult], *, deadline_s: float, interval_s: float = 0.5,
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
         accept: Callable[[ProbeResult], bool] | None = None,
         on_attempt: Callable[[int, ProbeResult], None] | None = None) -> ProbeResult:
    """Probe until one result is accepted (default: `ok`) or `deadline_s` has passed.

    Returns the first accepted result, or the last one once the deadline passes. Probes at least
    once, and never sleeps past the deadline.
    """
    if deadline_s < 0 or interval_s <= 0:
        raise ConfigError(f"poll needs deadline_s >= 0 and interval_s > 0, got {deadline_s} and {interval_s}")
    good = accept or (lambda r: r.ok)
    started = clock()
    attempt = 0
    while True:
        attempt += 1
        result = probe()
        if on_attempt is not None:
            on_attempt(attempt, result)
        if good(result):
            return result
        remaining = deadline_s - (clock() - started)
        if remaining <= 0:
            log.info("gave up after %d attempts: %s", attempt, result.describe())
            return result
        sleep(min(interval_s, remaining))


@dataclass
class ErrorWindow:
    """Failed requests seen while watching a colour: breaches when, with at least `min_requests`
    requests seen, more than `max_ratio` of them were 5xx (or got no answer at all)."""

    max_ratio: float
    min_requests: int
    total: int = 0
    errors: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.max_ratio <= 1:
            raise ConfigError(f"max error ratio must be between 0 and 1, got {self.max_ratio}")
        if self.min_requests < 1:
            raise ConfigError(f"minimum request count must be at least 1, got {self.min_requests}")

    @staticmethod
    def is_error(status: int | None) -> bool:
        return status is None or status >= 500

    def record(self, status: int | None) -> None:
        self.total += 1
        if self.is_error(status):
            self.errors += 1

    def record_all(self, statuses: Iterable[int | None]) -> None:
        for status in statuses:
            self.record(status)

    def add_counts(self, requests: int, errors: int) -> None:
        """Counter deltas, e.g. HAProxy's `req_tot` and `hrsp_5xx` between two `show stat` reads."""
        if requests < 0 or errors < 0 or errors > requests:
            raise ValueError(f"bad counter deltas: {errors} errors of {requests} requests")
        self.total += requests
        self.errors += errors

    def breach(self, *, total: int, errors: int) -> str | None:
        """Judge cumulative counts (e.g. HAProxy counters since the switch): why it breached, or None."""
        if total < 0 or errors < 0 or errors > total:
            raise ValueError(f"bad counters: {errors} errors of {total} requests")
        self.total, self.errors = total, errors
        return self.describe() if self.breached else None

    @property
    def ratio(self) -> float:
        return self.errors / self.total if self.total else 0.0

    @property
    def enough(self) -> bool:
        return self.total >= self.min_requests

    @property
    def breached(self) -> bool:
        return self.enough and self.ratio > self.max_ratio

    def describe(self) -> str:
        seen = (f"{self.errors} of {self.total} requests failed ({self.ratio:.1%}, "
                f"limit {self.max_ratio:.1%})")
        if not self.enough:
            return f"{seen}; too few requests to judge (need {self.min_requests})"
        return seen


COMMIT_NOT_REPORTED = "commit not reported"


def reported_commit(probe: ProbeResult) -> str | None:
    """The commit a health answer reports; COMMIT_NOT_REPORTED when it answers without one (an
    app whose health path is its home page); None when there was no healthy answer."""
    if not probe.ok:
        return None
    data = probe.json()
    commit = data.get("commit") if isinstance(data, dict) else None
    return str(commit) if commit else COMMIT_NOT_REPORTED


def expect_commit(probe: ProbeResult, sha: str) -> ProbeResult:
    """Healthy and on `sha`; an answer that reports no commit passes (nothing to compare)."""
    if not probe.ok:
        return probe
    data = probe.json()
    commit = data.get("commit") if isinstance(data, dict) else None
    if commit and commit != sha:
        return ProbeResult(ok=False, status=probe.status, latency_ms=probe.latency_ms, body=probe.body,
                           error=f"still serving {str(commit)[:7]}", served_by=probe.served_by)
    return probe
