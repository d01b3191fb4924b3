"""`bluegreen switch`: live traffic to the other colour, checked first, verified, watched.

The path of the flip: `automation` (stack config through the Automation API and a targeted `pulumi
up` of the routing resource), `direct` (HAProxy's runtime API, then the declared colour recorded),
or `emergency` (`ops.emergency`: the load balancer only, no checks). A flip that is not verified,
or a watch that sees errors, switches back at once; every flip is recorded in the journal, or in
the side file beside it when the journal cannot take it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from bluegreen.hosts import haproxy, health
from bluegreen.hosts.executor import Executor
from bluegreen.hosts.journal import append_side_command
from bluegreen.hosts.pulumi import PulumiSeam, provider_tls_env
from bluegreen.model.errors import BlueGreenError, ConfigError, RemoteError, SwitchError
from bluegreen.model.journal import State, side_path, switch_entry, unfinished_release
from bluegreen.model.stackfile import set_active_color_in_file
from bluegreen.model.timestamps import iso, utcnow
from bluegreen.model.topology import other_color
from bluegreen.model.truth import with_fields, with_found_switch
from bluegreen.ops.emergency import run as emergency_run
from bluegreen.ops.estate import Estate
from bluegreen.ops.notify import emits_switch, switch_back
from bluegreen.ops.reconcile import reconcile
from bluegreen.ops.signals import signals_deferred
from bluegreen.render import commands as cmd

log = logging.getLogger("bluegreen.switch")


@dataclass
class SwitchPlan:
    from_color: str
    to_color: str
    release: str | None
    sha: str | None
    emergency: bool
    path: str
    checks: list[str]
    problems: list[str]
    noop: bool = False  # the target is already live: nothing will move

    def to_json(self) -> dict[str, Any]:
        return {"from": self.from_color, "colour": self.to_color, "release": self.release,
                "sha": self.sha, "emergency": self.emergency, "path": self.path,
                "checks": self.checks, "problems": self.problems, "noop": self.noop}


@dataclass
class SwitchResult:
    ok: bool
    color: str
    from_color: str
    release: str | None
    path: str
    flip_ms: float
    verified: bool
    watched_s: float = 0.0
    rolled_back: bool = False
    reason: str | None = None
    error: str | None = None
    sha: str | None = None
    noop: bool = False  # the colour asked for was already live: no flip
    notes: list[str] = field(default_factory=list)  # what was reconciled first (ops.reconcile)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "colour": self.color, "from": self.from_color,
                "release": self.release, "path": self.path, "flipMs": round(self.flip_ms, 1),
                "verified": self.verified, "watchedSeconds": round(self.watched_s, 1),
                "rolledBack": self.rolled_back, "reason": self.reason, "error": self.error,
                "noop": self.noop, "notes": self.notes}


def switch_path(estate: Estate, emergency_: bool, direct: bool) -> str:
    if emergency_:
        return "emergency"
    if direct or estate.t.switch.mode == "direct":
        return "direct"
    return "automation"


def plan_switch(estate: Estate, *, emergency: bool = False, direct: bool = False,
                to_color: str | None = None) -> SwitchPlan:
    with estate.pooled(), estate.on(estate.t.load_balancer) as lb:
        return _plan(estate, lb, emergency=emergency, direct=direct, to_color=to_color)


def _plan(estate: Estate, lb: Executor, *, emergency: bool, direct: bool, to_color: str | None = None) -> SwitchPlan:
    t = estate.t
    live = estate.live_color(lb)
    target = to_color or other_color(live)
    if target == live:
        return SwitchPlan(from_color=live, to_color=target, release=None, sha=None, emergency=emergency,
                          path=switch_path(estate, emergency, direct), checks=[], problems=[], noop=True)
    host = t.app_host(target)
    release = sha = None
    problems: list[str] = []
    try:
        with estate.on(host) as ex:
            current = cmd.parse_current(ex.run(cmd.read_current(cmd.AppPaths.of(t, host)), step="read release").stdout)
            release, sha = current.name, current.sha
    except BlueGreenError as exc:
        problems.append(str(exc))
    checks = [f"{target} serves a release", f"{target} answers {t.app.health_path} with 200",
              f"HAProxy sees backend bk_{target} UP"]
    if emergency:
        checks = ["none (emergency: checks skipped)"]
    else:
        problems += _standby_problems(estate, lb, target, release)
    return SwitchPlan(from_color=live, to_color=target, release=release, sha=sha, emergency=emergency,
                      path=switch_path(estate, emergency, direct), checks=checks, problems=problems)


def _standby_problems(estate: Estate, lb: Executor, target: str, release: str | None) -> list[str]:
    """Why `target` must not go live: no release, an unfinished deploy, unhealthy, DOWN in HAProxy."""
    t = estate.t
    host = t.app_host(target)
    problems: list[str] = []
    if not release:
        problems.append(f"{target} ({host.ip}) has no release deployed")
    else:
        try:
            unfinished = unfinished_release(estate.read_state(lb), target, release)
        except BlueGreenError as exc:
            unfinished = f"cannot check how {release} was deployed: {exc}"
        if unfinished:
            problems.append(unfinished)
    probe = health.http_probe(f"http://{host.ip}:{t.app.port}{t.app.health_path}",
                              expect_status=t.app.health_status)
    if not probe.ok:
        problems.append(f"{target} is not healthy: {probe.error or probe.status}")
    server = haproxy.backend_states(lb, t).get(target)
    if server and not str(server.get("status", "")).upper().startswith("UP"):
        problems.append(f"HAProxy sees bk_{target} as {server.get('status')}")
    return problems


@emits_switch
def switch(estate: Estate, *, emergency: bool = False, direct: bool = False, watch: bool = True,
           to_color: str | None = None, reason: str = "switch") -> SwitchResult:
    """Live traffic to `to_color` (default: the other colour). Asking for the colour that is
    already live is a no-op that says so (and records a flip that was cut off before its record)."""
    if emergency:
        # The load balancer only: no lock wait, no app hosts, no journal needed (ops/emergency.py).
        return emergency_switch(estate, rollback=reason == "rollback", to_color=to_color)
    where = _Traffic()
    try:
        with estate.pooled(), estate.holding(reason), estate.on(estate.t.load_balancer) as lb:
            return _switch(estate, lb, direct=direct, watch=watch, to_color=to_color, reason=reason, where=where)
    except BlueGreenError as exc:
        exc.args = (f"{exc}. {where.say()}",)
        raise


@dataclass
class _Traffic:
    """Where live traffic is, as far as this run knows: every error says it."""

    known: str | None = None
    before: str | None = None
    maybe: str | None = None

    def say(self) -> str:
        if self.maybe:
            return (f"Traffic MAY have moved to {self.maybe}: the load balancer could not be asked. "
                    f"`bluegreen status` shows where it is; `bluegreen switch --to {self.maybe}` (or --to "
                    f"{self.before}) settles it, a no-op for the traffic if it is already there")
        if self.known is None or self.known == self.before:
            return f"Traffic did not move{f' ({self.before} is live)' if self.before else ''}"
        return f"Traffic moved: {self.known} is live"


def _switch(estate: Estate, lb: Executor, *, direct: bool, watch: bool, to_color: str | None, reason: str,
            where: _Traffic) -> SwitchResult:
    t = estate.t
    served = _already_served(estate, lb, to_color)
    notes = reconcile(estate, lb, verified=served)
    with estate.progress.step("pre-switch checks"):
        plan = _plan(estate, lb, emergency=False, direct=direct, to_color=to_color)
        where.before = where.known = plan.from_color
        if plan.noop:
            return _noop(estate, plan, reason, notes, served)
        if plan.problems:
            raise SwitchError(
                f"refusing to switch to {plan.to_color}: " + "; ".join(plan.problems)
                + ". Fix the standby (or use --emergency to skip the checks).")
    estate.check_lock()
    result = SwitchResult(ok=True, color=plan.to_color, from_color=plan.from_color, release=plan.release,
                          path=plan.path, flip_ms=0.0, verified=False, reason=reason, sha=plan.sha, notes=notes)
    recorded = False
    try:
        flip_started = time.monotonic()
        with estate.progress.step(f"flip live traffic to {plan.to_color} ({plan.path})"):
            _flip_or_find_out(estate, lb, plan, where)
        result.flip_ms = (time.monotonic() - flip_started) * 1000
        with estate.progress.step("verify new requests reach the new colour"):
            result.verified = _verify_serving(estate, plan.to_color)
        why: str | None = None
        if not result.verified:
            # Back at once: every moment here serves users from a colour that is not answering.
            why = f"new requests were not served by {plan.to_color}"
            _record_safely(estate, lb, plan.from_color, plan.to_color, reason, False, int(result.flip_ms), result)
            recorded = True
            _switch_back(estate, lb, plan, why, result)
            where.known = plan.from_color
        else:
            _record_safely(estate, lb, plan.from_color, plan.to_color, reason, False, int(result.flip_ms), result)
            recorded = True
        if why is None and watch and t.switch.watch_seconds > 0:
            why = _watch(estate, lb, plan.to_color, result)
            if why:
                _switch_back(estate, lb, plan, why, result)
                where.known = plan.from_color
        if why is not None:
            _record_safely(estate, lb, plan.to_color, plan.from_color, f"automatic switch back: {why}",
                           True, 0, result)
    except KeyboardInterrupt:
        # SIGINT/SIGTERM: the restore path of a failed step (back to the old colour), recorded.
        with signals_deferred():
            _interrupted(estate, lb, plan, result, reason, recorded)
        raise
    return result


def _already_served(estate: Estate, lb: Executor, to_color: str | None) -> bool:
    """For a `--to` colour HAProxy already routes to: does the public frontend answer from it?
    (A flip found unrecorded is recorded `verified` only then.)"""
    if to_color is None:
        return False
    try:
        live = estate.live_color(lb)
    except BlueGreenError:
        return False
    return live == to_color and _verify_serving(estate, to_color)


def _noop(estate: Estate, plan: SwitchPlan, reason: str, notes: list[str], served: bool) -> SwitchResult:
    said = f"{plan.to_color} is already live: nothing to switch"
    estate.progress.note(said)
    return SwitchResult(ok=True, color=plan.to_color, from_color=plan.from_color, release=None, path=plan.path,
                        flip_ms=0.0, verified=served or _verify_serving(estate, plan.to_color), reason=reason,
                        noop=True, notes=[said, *notes])


def _flip_or_find_out(estate: Estate, lb: Executor, plan: SwitchPlan, where: _Traffic) -> None:
    """The flip; when it fails, HAProxy is asked where traffic is. Moved: carry on (verify, record,
    watch). Not moved: the error says so. Cannot ask: the error says traffic MAY have moved."""
    try:
        flip(estate, lb, plan.to_color, plan.path)
        where.known = plan.to_color
        return
    except SwitchError:
        raise
    except BlueGreenError as exc:
        failure = exc
    try:
        live = estate.live_color(lb)
    except BlueGreenError as exc:
        log.error("after the flip failed (%s), the live colour cannot be read: %s", failure, exc)
        where.maybe = plan.to_color
        raise failure from None  # its own type and words; the caller adds where traffic may be
    where.known = live
    if live != plan.to_color:
        raise failure from None
    log.warning("the flip to %s reported %s, but HAProxy routes to it: carrying on", plan.to_color, failure)
    if plan.path != "automation":
        set_active_color_in_file(estate.t.project_dir, estate.t.stack, plan.to_color)
        estate.declare(plan.to_color)


def emergency_switch(estate: Estate, *, rollback: bool, to_color: str | None) -> SwitchResult:
    done = emergency_run(estate.t, rollback=rollback, who=estate.who, to_color=to_color, progress=estate.progress)
    if estate.t.switch.mode == "direct":
        estate.declare(done.color)
    return SwitchResult(ok=done.ok, color=done.color, from_color=done.from_color, release=None,
                        path=done.path, flip_ms=done.flip_ms, verified=done.verified,
                        reason=done.reason, error=done.error)


def _interrupted(estate: Estate, lb: Executor, plan: SwitchPlan, result: SwitchResult, reason: str,
                 recorded: bool) -> None:
    try:
        live = estate.live_color(lb)
    except BlueGreenError as exc:
        log.error("interrupted; cannot read the live colour to restore it: %s", exc)
        return
    if live != plan.to_color:
        # Not flipped (or already back): only the declared colour may need to follow.
        if estate.t.switch.mode == "direct" or plan.path != "automation":
            with contextlib.suppress(ConfigError, OSError):
                set_active_color_in_file(estate.t.project_dir, estate.t.stack, live)
        return
    if not recorded:
        _record_safely(estate, lb, plan.from_color, plan.to_color, reason, False, 0, result)
    _switch_back(estate, lb, plan, "interrupted", result)
    _record_safely(estate, lb, plan.to_color, plan.from_color, "automatic switch back: interrupted", True, 0, result)


def _record_safely(estate: Estate, lb: Executor, from_color: str, to_color: str, reason: str, emergency_: bool,
                   duration_ms: int, result: SwitchResult) -> None:
    """Record a flip that happened; if the journal cannot take it, the side file does (the next
    normal command folds it in) and the result says so: the flip stands, the error is real."""
    def change(state: State) -> State:
        if state.prod != from_color:  # a flip nobody recorded came first: keep the history whole
            state = with_found_switch(state, from_color, who=estate.who, when=iso(utcnow()),
                                      keep=estate.t.journal.history_keep)
        recorded = state.with_switch(
            from_color=from_color, to_color=to_color, who=estate.who, when=iso(utcnow()), reason=reason,
            emergency=emergency_, duration_ms=duration_ms, keep=estate.t.journal.history_keep)
        return recorded if emergency_ else with_fields(recorded, verified=result.verified)

    try:
        estate.update_state(lb, change, to_color)
        return
    except BlueGreenError as exc:
        problem = f"the switch to {to_color} happened but the journal write failed: {exc}"
    entry = switch_entry(from_color=from_color, to_color=to_color, when=time.time(), who=estate.who,
                         reason=reason, duration_ms=duration_ms, preempted=None, path=result.path)
    journal = estate.t.load_balancer.path(estate.t.journal.path)
    try:
        lb.run(append_side_command(journal, json.dumps(entry, separators=(",", ":"))),
               step="record the switch in the side journal")
        problem += f"; recorded in {side_path(journal)} instead"
    except BlueGreenError as exc:
        problem += f"; the side journal could not take it either: {exc}"
    log.error("%s", problem)
    result.ok = False
    result.error = f"{result.error}; {problem}" if result.error else problem


def _switch_back(estate: Estate, lb: Executor, plan: SwitchPlan, why: str, result: SwitchResult) -> None:
    estate.progress.note(f"switching back to {plan.from_color}: {why}")
    started = time.time()
    with estate.progress.step(f"automatic switch back to {plan.from_color}"):
        flip(estate, lb, plan.from_color, "direct" if plan.path == "automation" else plan.path)
    switch_back(estate, from_color=plan.to_color, to_color=plan.from_color, why=why, started=started)
    result.ok = False
    result.rolled_back = True
    result.error = f"switched back to {plan.from_color}: {why}"


def flip(estate: Estate, lb: Executor, color: str, path: str) -> None:
    """Route live traffic to `color` by `path`; the declared colour follows."""
    t = estate.t
    if path == "automation":
        _flip_through_pulumi(estate, lb, color)
        return
    try:
        haproxy.flip(lb, t, color)
    except RemoteError as exc:
        # HAProxy can take a `set map` and lose the answer when busy: the flip is idempotent,
        # so one more try either confirms it (and writes the map file) or fails for real.
        log.warning("flip to %s: %s; trying once more", color, exc)
        haproxy.flip(lb, t, color)
    # The declared colour follows the runtime flip, so a later `pulumi up` changes nothing.
    set_active_color_in_file(t.project_dir, t.stack, color)
    estate.declare(color)


def _flip_through_pulumi(estate: Estate, lb: Executor, color: str) -> None:
    """`bluegreen:activeColor` through the stack config and a targeted `pulumi up` of the routing.

    Never wedged by a flip made outside Pulumi (`--direct`, `--emergency`, an automatic switch
    back): the seam refreshes the routing resource from HAProxy's live map first, so the update
    compares the colour HAProxy really serves with the one asked for (hosts/pulumi.py,
    `PulumiSeam.switch_to`). The program it runs knows this switch holds the project lock.
    """
    t = estate.t
    seam = PulumiSeam(t.project_dir, t.stack, pulumi_command=estate.pulumi_command, lock_token=estate.lock_token,
                      env=provider_tls_env(t))
    try:
        seam.switch_to(color, on_output=lambda line: log.info("pulumi: %s", line.rstrip()))
        live = estate.live_color(lb)
        if live != color:
            raise SwitchError(f"pulumi up finished but HAProxy still routes to {live}")
    except BaseException as exc:
        # `config set` already declared `color`: make the stack file say what HAProxy
        # serves, or the next routine `pulumi up` flips production with no checks.
        with signals_deferred():
            live = _restore_declared(estate, lb, previous=t.active_color)
        if live == color and not isinstance(exc, KeyboardInterrupt):
            log.warning("pulumi failed after the routing changed (%s); the flip stands", exc)
            estate.declare(color)
            return
        raise
    estate.declare(color)


def _restore_declared(estate: Estate, lb: Executor, *, previous: str) -> str:
    """The stack file's declared colour set to the one HAProxy serves (else back to `previous`)."""
    try:
        live = estate.live_color(lb)
    except BlueGreenError as exc:
        log.error("cannot read the live colour (%s); declaring %s again", exc, previous)
        live = previous
    set_active_color_in_file(estate.t.project_dir, estate.t.stack, live)
    estate.declare(live)
    return live


def _verify_serving(estate: Estate, color: str, attempts: int = 5) -> bool:
    t = estate.t
    url = f"{t.public_url}{t.app.health_path}"
    for _ in range(attempts):
        probe = health.http_probe(url, headers={"Connection": "close"}, **health.visitor(t),
                                  expect_status=t.app.health_status)
        if probe.ok and probe.served_by == color:
            return True
        time.sleep(0.1)
    return False


def _watch(estate: Estate, lb: Executor, color: str, result: SwitchResult) -> str | None:
    """Watch the new live backend; return why it breached, or None if it held."""
    t = estate.t
    host = t.app_host(color)
    window = health.ErrorWindow(max_ratio=t.switch.max_error_ratio, min_requests=t.switch.min_requests)
    started = time.monotonic()
    baseline = haproxy.backend_counters(lb, t, color)
    failures = 0
    with estate.progress.step(f"watch {color} for {t.switch.watch_seconds:g}s", long=True):
        while time.monotonic() - started < t.switch.watch_seconds:
            estate.check_lock()  # pre-empted (an emergency flip): stop, never switch back over it
            probe = health.http_probe(f"http://{host.ip}:{t.app.port}{t.app.health_path}",
                                      expect_status=t.app.health_status)
            failures = 0 if probe.ok else failures + 1
            if failures >= 3:
                result.watched_s = time.monotonic() - started
                return f"{color} failed 3 health checks in a row ({probe.error or probe.status})"
            counters = haproxy.backend_counters(lb, t, color)
            verdict = window.breach(total=counters.total - baseline.total,
                                    errors=counters.http_5xx - baseline.http_5xx)
            if verdict:
                result.watched_s = time.monotonic() - started
                return f"{color} answered errors: {verdict}"
            time.sleep(0.5)
    result.watched_s = time.monotonic() - started
    return None
