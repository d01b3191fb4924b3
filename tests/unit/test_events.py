"""Deployment events and hooks: event shape, delivery with retries against a real local HTTP
server, secret URLs, and a failing pre-deploy hook stopping a deploy before any host is touched."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bluegreen.hosts import events
from bluegreen.model.errors import ConfigError, DeployError
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import EventSettings, Topology, Webhook
from bluegreen.ops.deploy import deploy
from bluegreen.ops.estate import Estate
from bluegreen.ops.switch import SwitchResult

PROJECT = Path(__file__).resolve().parents[2]


def lab(**settings: Any) -> Topology:
    t = load_stack(PROJECT, "lab")
    return dataclasses.replace(t, events=EventSettings(**settings))


class Receiver:
    """A real HTTP server on 127.0.0.1 answering with the given status codes in turn."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.bodies.append(json.loads(body))
                outer.headers.append(dict(self.headers))
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/s3cr3t-token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def no_sleep() -> Iterator[list[float]]:
    slept: list[float] = []
    yield slept


def test_event_has_a_stable_shape() -> None:
    event = events.make_event("switch", stack="lab", who="alice@laptop", ok=True, started=100.0, finished=101.5,
                              **{"from": "blue"}, to="green", release="r1", sha="abc")
    assert list(event)[:10] == ["version", "id", "event", "stack", "ok", "result", "who", "startedAt",
                                "finishedAt", "durationSeconds"]
    assert event["durationSeconds"] == 1.5 and event["result"] == "ok"
    assert event["startedAt"] == "1970-01-01T00:01:40.000Z"
    with pytest.raises(ValueError):
        events.make_event("reboot", stack="lab", who="x", ok=True, started=0, finished=0)


@pytest.mark.parametrize(("emergency", "reason", "kind"), [
    (False, "switch", "switch"), (True, "switch", "emergency-switch"),
    (False, "rollback", "rollback"), (True, "rollback", "rollback"),
])
def test_switch_kinds(emergency: bool, reason: str, kind: str) -> None:
    assert events.switch_kind(emergency=emergency, reason=reason) == kind


def test_switch_event_from_a_result_that_went_back() -> None:
    result = SwitchResult(ok=False, color="green", from_color="blue", release="r2", path="direct", flip_ms=12.34,
                          verified=True, rolled_back=True, reason="switch", error="switched back", sha="f" * 40)
    event = events.switch_event("switch", lab(), "bob@ci", 10.0, 14.0, emergency=False, result=result)
    assert (event["from"], event["to"], event["result"], event["sha"], event["flipMs"]) == (
        "blue", "green", "switched-back", "f" * 40, 12.3)


def test_delivery_retries_5xx_and_stops_on_success(no_sleep: list[float]) -> None:
    event = events.make_event("deploy", stack="lab", who="x", ok=True, started=0, finished=1)
    with Receiver([503, 502, 200]) as rx:
        outcome = events.deliver(event, [("rx", rx.url)], timeout=2, retries=3, sleep=no_sleep.append)
    assert outcome == {"rx": "ok"}
    assert len(rx.bodies) == 3 and rx.bodies[-1] == event
    assert no_sleep == [0.5, 1.0]
    assert rx.headers[0]["X-Bluegreen-Event"] == "deploy"


def test_delivery_does_not_retry_a_refusal_and_never_reports_the_secret_url(no_sleep: list[float]) -> None:
    event = events.make_event("deploy", stack="lab", who="x", ok=True, started=0, finished=1)
    with Receiver([404, 200]) as rx:
        outcome = events.deliver(event, [("rx", rx.url)], timeout=2, retries=3, sleep=no_sleep.append)
    assert outcome == {"rx": "HTTP 404"} and len(rx.bodies) == 1
    dead = "http://127.0.0.1:9/hook/s3cr3t-token"  # discard port: connection refused
    outcome = events.deliver(event, [("dead", dead)], timeout=0.5, retries=1, sleep=no_sleep.append)
    assert outcome["dead"] != "ok" and "s3cr3t-token" not in outcome["dead"]


def test_secret_urls_come_from_env_or_file_and_missing_ones_name_the_key(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    url_file = tmp_path / "url"
    url_file.write_text("https://hooks.example.invalid/T0KEN\n")
    monkeypatch.setenv("HOOK_URL", "http://127.0.0.1:1/x")
    t = lab(webhooks=(Webhook("a", None, url_env="HOOK_URL"), Webhook("b", None, url_file=str(url_file))))
    resolved = events.resolve_webhooks(t)
    assert [(n, u.reveal()) for n, u in resolved] == [("a", "http://127.0.0.1:1/x"),
                                                      ("b", "https://hooks.example.invalid/T0KEN")]
    assert "T0KEN" not in repr(resolved)
    monkeypatch.delenv("HOOK_URL")
    with pytest.raises(ConfigError, match=r"events\.webhooks\[0\]\.urlEnv: .*HOOK_URL"):
        events.resolve_webhooks(t)


def test_publish_hands_the_event_to_a_detached_process_that_delivers_it() -> None:
    with Receiver([500, 200]) as rx:
        t = lab(webhooks=(Webhook("rx", rx.url),), timeout=2, retries=2)
        event = events.make_event("rollback", stack="lab", who="x", ok=True, started=0, finished=1)
        started = time.monotonic()
        child = events.publish(t, event)
        handed_over = time.monotonic() - started
        assert child is not None
        assert child.wait(timeout=30) == 0
    assert rx.bodies[-1]["id"] == event["id"] and len(rx.bodies) == 2
    assert handed_over < 1.0  # the caller only spawns; the retry backoff ran in the child


def test_publish_without_webhooks_does_nothing() -> None:
    assert events.publish(lab(), events.make_event("switch", stack="lab", who="x", ok=True, started=0,
                                                   finished=0)) is None


def hook(tmp_path: Path, body: str) -> str:
    path = tmp_path / "hook"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def test_a_failing_pre_deploy_hook_stops_the_deploy_before_any_host_is_contacted(tmp_path: Path) -> None:
    t = lab(pre_deploy=hook(tmp_path, 'echo "freeze: $BLUEGREEN_REF by $BLUEGREEN_WHO" >&2; exit 3'))
    contacted: list[str] = []

    def factory(host: Any) -> Any:
        contacted.append(host.name)
        raise AssertionError("no host may be contacted")

    service = Estate(t, executor_factory=factory, who="alice@laptop")
    with pytest.raises(DeployError, match=r"pre-deploy hook.*exited with 3: freeze: v9 by alice@laptop"):
        deploy(service, "v9")
    assert contacted == []


def test_hook_gets_the_event_as_environment_and_stdin(tmp_path: Path) -> None:
    out = tmp_path / "seen"
    path = hook(tmp_path, f'env | grep ^BLUEGREEN_ | sort > {out}; cat >> {out}')
    t = lab(post_switch=path)
    events.run_hook(t, path, "post-switch", {"to": "green", "emergency": True, "flipMs": 3.5, "extra": [1]})
    seen = out.read_text()
    for line in ("BLUEGREEN_EMERGENCY=true", "BLUEGREEN_FLIP_MS=3.5", "BLUEGREEN_OPERATION=post-switch",
                 "BLUEGREEN_STACK=lab", "BLUEGREEN_TO=green"):
        assert line in seen
    assert '"extra": [1]' in seen


@pytest.mark.parametrize(("body", "message"), [
    ("sleep 5", "did not finish within 1s"),
    (None, "does not exist"),
])
def test_hook_failures_are_deploy_errors_naming_the_hook(tmp_path: Path, body: str | None, message: str) -> None:
    path = hook(tmp_path, body) if body else str(tmp_path / "missing")
    t = dataclasses.replace(lab(), events=EventSettings(hook_timeout=1))
    with pytest.raises(events.HookError, match=message):
        events.run_hook(t, path, "pre-deploy", {})
