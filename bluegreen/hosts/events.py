"""Deployment events out: one JSON event per operation to the stack's webhooks, and local hooks.

Every deploy, switch, rollback, automatic switch back and emergency flip produces one event
(what, colours, release, SHA, who, result, durations). Delivery never delays an operation: the
event is handed to a detached `python -m bluegreen.hosts.events` process (on its stdin, so secret URLs
never show in a process list) that posts it with a short timeout and a few retries, and outlives
the command that started it. A dead or slow receiver costs the operation one process spawn.

Hooks (Kamal-style, `events.hooks` in the stack): `preDeploy` runs before a deploy takes the
lock, and a failure stops the deploy; `postSwitch` runs after a switch or rollback has finished,
and its failure is only reported. Both get the event (or what is known so far) as `BLUEGREEN_*`
environment variables and as JSON on stdin.

The core never prints: delivery problems are logged (webhook names only, never their URLs).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx

from bluegreen.model.errors import ConfigError, DeployError
from bluegreen.model.sensitive import Sensitive, redact, redact_tree
from bluegreen.model.topology import Topology

log = logging.getLogger("bluegreen.events")

SCHEMA_VERSION = 1
KINDS = ("deploy", "switch", "rollback", "switch-back", "emergency-switch")
USER_AGENT = "bluegreen-events/1"
_BACKOFF = 0.5


class HookError(DeployError):
    """A pre-deploy hook failed, so the deploy did not start."""


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


# --------------------------------------------------------------------------- events (pure)


def switch_kind(*, emergency: bool, reason: str) -> str:
    """What a call of `ops.switch.switch` is, as an event: rollbacks and emergency flips by name."""
    if reason == "rollback":
        return "rollback"
    return "emergency-switch" if emergency else "switch"


def make_event(kind: str, *, stack: str, who: str, ok: bool, started: float, finished: float,
               result: str | None = None, **fields: Any) -> dict[str, Any]:
    """One event as sent: fixed keys first, `None` fields kept so receivers see a stable shape."""
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    return {
        "version": SCHEMA_VERSION, "id": str(uuid.uuid4()), "event": kind, "stack": stack,
        "ok": ok, "result": result or ("ok" if ok else "failed"), "who": who,
        "startedAt": _iso(started), "finishedAt": _iso(finished),
        "durationSeconds": round(max(0.0, finished - started), 3), **fields,
    }


def deploy_event(t: Topology, who: str, started: float, finished: float, result: Any = None,
                 error: str | None = None, failed_step: str | None = None, ref: str | None = None,
                 color: str | None = None) -> dict[str, Any]:
    if result is not None:
        data = result.to_json()
        return make_event("deploy", stack=t.stack, who=who, ok=bool(data["ok"]), started=started,
                          finished=finished, colour=data["colour"], ref=data["ref"],
                          sha=data["sha"], release=data["release"], previousRelease=data["previousRelease"],
                          migrationsApplied=data["migrationsApplied"], backup=data["backup"],
                          failedStep=data["failedStep"], error=data["error"])
    return make_event("deploy", stack=t.stack, who=who, ok=False, started=started, finished=finished,
                      colour=color, ref=ref, sha=None, release=None, previousRelease=None,
                      migrationsApplied=[], backup=None, failedStep=failed_step, error=error)


def switch_event(kind: str, t: Topology, who: str, started: float, finished: float, *, emergency: bool,
                 result: Any = None, error: str | None = None, to_color: str | None = None,
                 from_color: str | None = None) -> dict[str, Any]:
    if result is not None:
        data = result.to_json()
        outcome = "switched-back" if data["rolledBack"] else ("ok" if data["ok"] else "failed")
        return make_event(kind, stack=t.stack, who=who, ok=bool(data["ok"]), result=outcome, started=started,
                          finished=finished, **{"from": data["from"]}, to=data["colour"],
                          release=data["release"], sha=getattr(result, "sha", None), emergency=emergency,
                          path=data["path"], flipMs=data["flipMs"], verified=data["verified"],
                          watchedSeconds=data["watchedSeconds"], reason=data["reason"], error=data["error"])
    return make_event(kind, stack=t.stack, who=who, ok=False, started=started, finished=finished,
                      **{"from": from_color}, to=to_color, release=None, sha=None, emergency=emergency,
                      path=None, flipMs=None, verified=False, watchedSeconds=0.0, reason=None, error=error)


# --------------------------------------------------------------------------- delivery


def resolve_webhooks(t: Topology) -> list[tuple[str, Sensitive]]:
    """(name, URL) of each webhook; URLs from urlEnv/urlFile are secrets and stay wrapped."""
    out = []
    for i, hook in enumerate(t.events.webhooks):
        key = f"events.webhooks[{i}]"
        if hook.url is not None:
            url = hook.url
        elif hook.url_env is not None:
            url = os.environ.get(hook.url_env, "").strip()
            if not url:
                raise ConfigError(f"{key}.urlEnv: environment variable {hook.url_env} is not set")
        else:
            try:
                url = Path(cast(str, hook.url_file)).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{key}.urlFile: cannot read {hook.url_file}: {exc.strerror}") from None
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{key}: the URL of webhook {hook.name!r} must start with http:// or https://")
        out.append((hook.name, Sensitive(url)))
    return out


def deliver(event: Mapping[str, Any], targets: list[tuple[str, str]], *, timeout: float, retries: int,
            sleep: Callable[[float], None] = time.sleep) -> dict[str, str]:
    """POST `event` to each target (retrying with backoff); returns name -> "ok" or why it failed.
    Runs in the detached delivery process; also callable directly (tests, benchmarks)."""
    body = json.dumps(event).encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "X-Bluegreen-Event": str(event.get("event")), "X-Bluegreen-Delivery": str(event.get("id"))}
    outcome: dict[str, str] = {}
    secrets = [url for _, url in targets]
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for name, url in targets:
            why = "not tried"
            for attempt in range(retries + 1):
                if attempt:
                    sleep(_BACKOFF * 2 ** (attempt - 1))
                try:
                    response = client.post(url, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    why = redact(f"{type(exc).__name__}: {exc}", secrets)
                    continue
                if response.status_code < 300:
                    why = "ok"
                    break
                why = f"HTTP {response.status_code}"
                if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                    break  # the receiver refuses this event: retrying will not change that
            outcome[name] = why
            if why != "ok":
                log.warning("event %s to webhook %s not delivered: %s", event.get("event"), name, why)
    return outcome


def publish(t: Topology, event: dict[str, Any], secrets: Iterable[Sensitive] = ()) -> subprocess.Popen[bytes] | None:
    """Hand `event`, scrubbed of `secrets` (and of anything shaped like one), to a detached
    delivery process and return at once (None: no webhooks). Never raises for delivery
    problems: an operation's result must not depend on a receiver."""
    if not t.events.webhooks:
        return None
    event = redact_tree(event, secrets)
    try:
        targets = [(name, url.reveal()) for name, url in resolve_webhooks(t)]
    except ConfigError as exc:
        log.warning("event %s not sent: %s", event.get("event"), exc)
        return None
    payload = json.dumps({"event": event, "targets": targets, "timeout": t.events.timeout,
                          "retries": t.events.retries}).encode()
    log_path = os.environ.get("BLUEGREEN_EVENTS_LOG")
    try:
        err = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            child = subprocess.Popen([sys.executable, "-m", "bluegreen.hosts.events"], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                     close_fds=True)
        finally:
            if log_path:
                cast(Any, err).close()
        assert child.stdin is not None
        child.stdin.write(payload)  # well below a pipe buffer: never blocks
        child.stdin.close()
    except OSError as exc:
        log.warning("event %s not sent: cannot start the delivery process: %s", event.get("event"), exc)
        return None
    return child


# --------------------------------------------------------------------------- hooks


def hook_env(t: Topology, kind: str, fields: Mapping[str, Any]) -> dict[str, str]:
    env = {"BLUEGREEN_STACK": t.stack, "BLUEGREEN_OPERATION": kind}
    for key, value in fields.items():
        if value is None or isinstance(value, (dict, list)):
            continue
        name = "BLUEGREEN_" + "".join(f"_{c}" if c.isupper() else c.upper() for c in key)
        env[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def run_hook(t: Topology, path: str, kind: str, fields: Mapping[str, Any],
             secrets: Iterable[Sensitive] = ()) -> None:
    """Run a local hook script (given `fields` scrubbed of `secrets`); HookError (naming it, with
    its last output) if it fails."""
    fields = redact_tree(dict(fields), secrets)
    env = {**os.environ, **hook_env(t, kind, fields)}
    try:
        proc = subprocess.run([path], input=json.dumps(dict(fields)), capture_output=True, text=True,
                              timeout=t.events.hook_timeout, env=env, errors="replace", check=False)
    except FileNotFoundError:
        raise HookError(f"{kind} hook", f"{path} does not exist") from None
    except PermissionError:
        raise HookError(f"{kind} hook", f"{path} is not executable (chmod +x it)") from None
    except subprocess.TimeoutExpired:
        raise HookError(f"{kind} hook", f"{path} did not finish within {t.events.hook_timeout:g}s") from None
    if proc.returncode != 0:
        output = (proc.stderr.strip() or proc.stdout.strip() or "no output")[-500:]
        raise HookError(f"{kind} hook", f"{path} exited with {proc.returncode}: {output}")


# --------------------------------------------------------------------------- the delivery process


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    try:
        payload = json.loads(sys.stdin.buffer.read())
        targets = [(str(name), str(url)) for name, url in payload["targets"]]
        outcome = deliver(payload["event"], targets, timeout=float(payload["timeout"]),
                          retries=int(payload["retries"]))
    except (ValueError, KeyError, TypeError) as exc:
        log.error("unreadable event payload: %s", type(exc).__name__)
        return 2
    return 0 if all(v == "ok" for v in outcome.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
