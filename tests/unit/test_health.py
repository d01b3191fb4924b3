"""Health probes against a real HTTP server on 127.0.0.1, and poll/ErrorWindow logic on a fake clock."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bluegreen.hosts.health import ErrorWindow, ProbeResult, http_probe, poll
from bluegreen.model.errors import ConfigError


class AppHandler(BaseHTTPRequestHandler):
    server: AppServer

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        srv = self.server
        with srv.guard:
            srv.hits[self.path] = srv.hits.get(self.path, 0) + 1
            hits = srv.hits[self.path]
        if self.path == "/hang":
            srv.release.wait(30)  # the client has given up by now: nothing left to answer
        elif self.path == "/api/health":
            self._reply(200, json.dumps({"status": "ok", "commit": "abc1234"}).encode(), served_by="green")
        elif self.path == "/broken":
            self._reply(503, b"no server is available to handle this request", served_by="blue")
        elif self.path == "/flaky":
            self._reply(200 if hits > 3 else 502, f"attempt {hits}".encode())
        elif self.path == "/headers":
            self._reply(200, json.dumps({"host": self.headers.get("Host")}).encode())
        elif self.path == "/big":
            self._reply(200, b"x" * 10_000)
        else:
            self._reply(404, b"not found")

    def _reply(self, status: int, body: bytes, served_by: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if served_by:
            self.send_header("X-Served-By", served_by)
        self.end_headers()
        self.wfile.write(body)


class AppServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), AppHandler)
        self.hits: dict[str, int] = {}
        self.guard = threading.Lock()
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def app() -> Iterator[AppServer]:
    server = AppServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


# --------------------------------------------------------------------------- http_probe, real server


def test_a_healthy_answer_carries_status_body_and_colour(app: AppServer) -> None:
    result = http_probe(f"{app.url}/api/health")
    assert (result.ok, result.status, result.error, result.served_by) == (True, 200, None, "green")
    assert json.loads(result.body) == {"status": "ok", "commit": "abc1234"}
    assert result.json() == {"status": "ok", "commit": "abc1234"}
    assert result.describe().startswith("HTTP 200 from green in ")


def test_a_5xx_answer_is_not_ok_and_says_why(app: AppServer) -> None:
    result = http_probe(f"{app.url}/broken")
    assert (result.ok, result.status, result.served_by) == (False, 503, "blue")
    assert result.error == f"{app.url}/broken: HTTP 503"
    assert "no server is available" in result.body
    assert result.json() is None


def test_the_body_is_truncated(app: AppServer) -> None:
    assert len(http_probe(f"{app.url}/big").body) == 2000


def test_headers_are_sent(app: AppServer) -> None:
    result = http_probe(f"{app.url}/headers", headers={"Host": "attendant.lab"})
    assert json.loads(result.body) == {"host": "attendant.lab"}


def test_a_refused_connection_is_a_result_not_an_exception() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = http_probe(f"http://127.0.0.1:{port}/api/health", timeout=2)
    assert (result.ok, result.status, result.served_by) == (False, None, None)
    assert result.error is not None and f"127.0.0.1:{port}" in result.error
    assert "refused" in result.error.lower()


def test_no_answer_within_the_timeout_is_a_result(app: AppServer) -> None:
    result = http_probe(f"{app.url}/hang", timeout=0.2)
    assert not result.ok and result.status is None
    assert result.error is not None and "no answer within 0.2s" in result.error


def test_proxy_settings_of_the_operator_are_ignored(app: AppServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert http_probe(f"{app.url}/api/health").ok


@pytest.mark.parametrize("url", ["127.0.0.1:3000/api/health", "ftp://127.0.0.1/x", "http://"])
def test_a_malformed_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="cannot probe"):
        http_probe(url)


def test_poll_against_a_real_server_waits_for_recovery(app: AppServer) -> None:
    attempts: list[int] = []
    result = poll(lambda: http_probe(f"{app.url}/flaky"), deadline_s=60, interval_s=0.01,
                  on_attempt=lambda n, r: attempts.append(r.status or 0))
    assert result.ok and result.body == "attempt 4"
    assert attempts == [502, 502, 502, 200]


# --------------------------------------------------------------------------- poll, fake clock


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def result(ok: bool, status: int | None = 200, served_by: str | None = None) -> ProbeResult:
    return ProbeResult(ok=ok, status=status, latency_ms=1.0, body="", error=None if ok else "down",
                       served_by=served_by)


def scripted(*outcomes: ProbeResult) -> tuple[list[int], Callable[[], ProbeResult]]:
    calls: list[int] = []

    def probe() -> ProbeResult:
        calls.append(1)
        return outcomes[min(len(calls), len(outcomes)) - 1]

    return calls, probe


def test_poll_returns_the_first_ok_result() -> None:
    t = FakeTime()
    calls, probe = scripted(result(False, 502), result(False, 502), result(True))
    got = poll(probe, deadline_s=10, interval_s=0.5, clock=t.clock, sleep=t.sleep)
    assert got.ok and len(calls) == 3 and t.sleeps == [0.5, 0.5]


def test_poll_returns_the_last_failure_once_the_deadline_passes_without_oversleeping() -> None:
    t = FakeTime()
    failures = [result(False, 500 + i) for i in range(10)]
    calls, probe = scripted(*failures)
    got = poll(probe, deadline_s=1.2, interval_s=0.5, clock=t.clock, sleep=t.sleep)
    assert not got.ok and got.status == 503
    assert len(calls) == 4 and t.sleeps == pytest.approx([0.5, 0.5, 0.2])
    assert t.now == pytest.approx(101.2)


def test_time_spent_inside_slow_probes_counts_against_the_deadline() -> None:
    t = FakeTime()

    def slow_probe() -> ProbeResult:
        t.now += 3.0
        return result(False, None)

    calls: list[ProbeResult] = []
    poll(slow_probe, deadline_s=5, interval_s=1, clock=t.clock, sleep=t.sleep,
         on_attempt=lambda n, r: calls.append(r))
    assert len(calls) == 2 and t.sleeps == [1]


def test_a_zero_deadline_probes_exactly_once() -> None:
    t = FakeTime()
    calls, probe = scripted(result(False, 502))
    poll(probe, deadline_s=0, clock=t.clock, sleep=t.sleep)
    assert len(calls) == 1 and t.sleeps == []


def test_accept_can_demand_a_specific_colour() -> None:
    t = FakeTime()
    calls, probe = scripted(result(True, served_by="blue"), result(True, served_by="blue"),
                            result(True, served_by="green"))
    got = poll(probe, deadline_s=10, clock=t.clock, sleep=t.sleep,
               accept=lambda r: r.ok and r.served_by == "green")
    assert got.served_by == "green" and len(calls) == 3


@pytest.mark.parametrize("deadline, interval", [(-1, 0.5), (5, 0), (5, -1)])
def test_poll_rejects_nonsense_settings(deadline: float, interval: float) -> None:
    with pytest.raises(ConfigError):
        poll(lambda: result(True), deadline_s=deadline, interval_s=interval)


# --------------------------------------------------------------------------- error window


def test_too_few_requests_never_breach() -> None:
    window = ErrorWindow(max_ratio=0.05, min_requests=20)
    window.record_all([500] * 19)
    assert not window.breached and window.ratio == 1.0
    assert window.describe() == ("19 of 19 requests failed (100.0%, limit 5.0%); "
                                 "too few requests to judge (need 20)")
    window.record(200)
    assert window.breached


def test_the_threshold_itself_is_tolerated_and_anything_above_breaches() -> None:
    window = ErrorWindow(max_ratio=0.05, min_requests=20)
    window.record_all([200] * 19 + [503])
    assert window.ratio == pytest.approx(0.05) and not window.breached
    window.record(None)  # no answer at all counts as a failure
    assert window.errors == 2 and window.breached
    assert window.describe() == "2 of 21 requests failed (9.5%, limit 5.0%)"


def test_client_errors_are_not_the_new_colours_fault() -> None:
    window = ErrorWindow(max_ratio=0.0, min_requests=3)
    window.record_all([404, 401, 429, 302])
    assert window.errors == 0 and not window.breached


def test_counter_deltas_from_haproxy_stats_add_up() -> None:
    window = ErrorWindow(max_ratio=0.1, min_requests=50)
    window.add_counts(40, 2)
    window.add_counts(20, 5)
    assert (window.total, window.errors, window.breached) == (60, 7, True)
    with pytest.raises(ValueError, match="bad counter deltas"):
        window.add_counts(3, 4)


def test_breach_judges_cumulative_counters_and_says_why() -> None:
    window = ErrorWindow(max_ratio=0.05, min_requests=20)
    assert window.breach(total=10, errors=10) is None  # too few to judge
    assert window.breach(total=40, errors=2) is None
    assert window.breach(total=60, errors=4) == "4 of 60 requests failed (6.7%, limit 5.0%)"
    with pytest.raises(ValueError, match="bad counters"):
        window.breach(total=5, errors=6)


@pytest.mark.parametrize("ratio, minimum", [(1.5, 10), (-0.1, 10), (0.05, 0)])
def test_window_rejects_nonsense_settings(ratio: float, minimum: int) -> None:
    with pytest.raises(ConfigError):
        ErrorWindow(max_ratio=ratio, min_requests=minimum)
