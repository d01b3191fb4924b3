"""Cutover under load with the real Next.js app: our switch against reloading HAProxy with a
rewritten config, interleaved, every client on a keep-alive connection and none retrying.

Both colours serve the real app (`sample-next/`, left by bench_push.py). Three public frontends
run side by side on the load balancer, each with its own clients (`nextload.py`: keep-alive GETs
of the home page and /api/health, keep-alive Server Action POSTs, no retry of any kind):
- the lab's own HAProxy, which our switch moves: `ops.switch.switch` (the normal path, checks on,
  no watch) and the emergency path (`ops.emergency.run`, what `switch --emergency` runs), both
  on the executors the CLI uses;
- two more HAProxy instances on the same host and backends (ports 18xxx and 19xxx, files of
  their own), each routing by a hard-wired `default_backend`: a cutover rewrites the file and
  reloads (`hosts.haproxy.reload`, validated, through the master socket), one with a typical
  config (no `option idle-close-on-response`), one with ours.
The methods take turns (ours, reload typical, ours emergency, reload ours, then again), so each
sees the same machine; the clients of all three frontends run the whole time. (`pm2 reload` of a
colour in place is left out: it replaces the very processes that serve the other methods'
frontends, so it cannot take turns with them on one lab.)

For every method the clock of "flip to first new-colour answer" starts at the same event: the
moment the command that changes routing is sent (our flip step's `set map`; the reload command
to the master), seen by an executor that notes when each command leaves (benchlib.StepClock),
and stops at the first answer carrying the new colour in `X-Served-By` to a request sent after
it. A method's requests are those sent from its cutover call to the next cutover on the same
frontend; its "during" latencies those sent between its call and half a second after it returned.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import (
    BENCH_DIR,
    PROJECT_DIR,
    Bench,
    BenchError,
    Knobs,
    StepClock,
    median,
    percentile,
    run_alone,
    say,
    when_unlocked,
)

from bluegreen.hosts import haproxy, health
from bluegreen.hosts.haproxy_cli import HaproxyPaths
from bluegreen.hosts.openssh import OpenSshExecutor
from bluegreen.lab.nextapp import render_form
from bluegreen.lab.services import ManagedProcess
from bluegreen.model.errors import BlueGreenError
from bluegreen.model.progress import RecordingProgress, StepRecord
from bluegreen.model.topology import COLORS, Topology, other_color
from bluegreen.ops import emergency
from bluegreen.ops.switch import switch
from bluegreen.render import commands as cmd
from bluegreen.render.haproxy import render_haproxy_cfg

BASELINE_S = 5.0
TAIL_S = 2.0
DURING_TAIL_S = 0.5
# Quiet time after each cutover, cycling: a frontend's connections sit idle for every length from
# a few seconds to well past Node's default 5 s keep-alive between two of its cutovers.
GAPS_S = (0.3, 1.5, 2.5, 3.0, 3.5, 4.0, 5.0)
FLIP_STEP_PREFIX = "flip live traffic"
EMERGENCY_FLIP_STEP = "route traffic to"
RELOAD_STEP = "reload HAProxy"


@dataclass(frozen=True)
class AltFrontend:
    """A second HAProxy on the load balancer: its own ports and files."""

    key: str
    directory: str
    public: int
    preview: int
    stats: int
    https: int
    idle_close: bool


ALT_TYPICAL = AltFrontend("reload-typical", "/var/lib/bluegreen-bench-typical", 18080, 18081, 18404, 18443, False)
ALT_OURS = AltFrontend("reload-ours", "/var/lib/bluegreen-bench-ours", 19080, 19081, 19404, 19443, True)


@dataclass(frozen=True)
class Cutover:
    frontend: str
    method: str
    called: float  # time.monotonic(): the cutover call began
    flipped: float | None  # the command that changes routing was sent
    returned: float
    old: str
    new: str


@dataclass(frozen=True)
class FailedCutover:
    frontend: str
    method: str
    called: float
    returned: float
    message: str


@dataclass
class Row:
    started: float
    latency_ms: float
    status: int | None
    served_by: str | None
    error: str | None
    kind: str
    attempts: int

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 400 and self.error is None


# --------------------------------------------------------------------------- analysis (pure)


def _between(rows: list[Row], starts: list[float], lo: float, hi: float) -> list[Row]:
    return rows[bisect.bisect_left(starts, lo):bisect.bisect_left(starts, hi)]


def analyze(method: str, rows: list[Row], events: list[Cutover], errors: list[FailedCutover],
            frontend_calls: list[float], baseline: tuple[float, float], end: float) -> dict[str, Any]:
    """One method's figures from its frontend's requests. `frontend_calls`: every cutover call on
    that frontend (any method), which ends the window of the one before it."""
    starts = [r.started for r in rows]
    calls = sorted(frontend_calls)

    def next_call(moment: float) -> float:
        later = calls[bisect.bisect_right(calls, moment):]
        return later[0] if later else end

    mine = [e for e in events if e.method == method]
    failures = [f for f in errors if f.method == method]
    window: list[Row] = []
    during: list[Row] = []
    old_after = 0
    to_new: list[float] = []
    for ev in mine:
        following = next_call(ev.called)
        window += _between(rows, starts, ev.called, following)
        during += _between(rows, starts, ev.called, min(ev.returned + DURING_TAIL_S, following))
        old_after += sum(1 for r in _between(rows, starts, ev.returned, following) if r.served_by == ev.old)
        if ev.flipped is not None:
            arrivals = [r.started + r.latency_ms / 1000 for r in _between(rows, starts, ev.flipped, following)
                        if r.ok and r.served_by == ev.new]
            if arrivals:
                to_new.append(min(arrivals) - ev.flipped)
    for fail in failures:
        window += _between(rows, starts, fail.called, next_call(fail.called))
    base = _between(rows, starts, *baseline)
    failed = [r for r in window if not r.ok]
    by_kind: dict[str, dict[str, int]] = {}
    for r in window:
        entry = by_kind.setdefault(r.kind, {"requests": 0, "failed": 0})
        entry["requests"] += 1
        entry["failed"] += 0 if r.ok else 1

    def latency(group: list[Row], q: float) -> float | None:
        value = percentile((r.latency_ms for r in group if r.ok), q)
        return None if value is None else round(value / 1000, 5)

    return {
        "method": method,
        "cutovers": len(mine),
        "cutoverErrors": [f.message for f in failures],
        "requests": len(window),
        "failed": len(failed),
        "retried": sum(r.attempts - 1 for r in window),
        "byKind": by_kind,
        "failureReasons": dict(Counter(r.error or f"HTTP {r.status}" for r in failed)),
        "oldColourAfterReturn": old_after,
        "p50Before": latency(base, 50), "p99Before": latency(base, 99),
        "p50During": latency(during, 50), "p99During": latency(during, 99), "maxDuring": latency(during, 100),
        "toNewMedian": median(to_new), "toNewMax": max(to_new) if to_new else None, "toNewMeasured": len(to_new),
        "callMedian": median(e.returned - e.called for e in mine),
        "callMax": max((e.returned - e.called for e in mine), default=None),
    }


def hardwire(config: str, live: str, *, idle_close: bool) -> str:
    """The config-reload alternative: each frontend's map lookup replaced by a fixed backend."""
    fixed = {"frontend fe_public": f"bk_{live}", "frontend fe_preview": f"bk_{other_color(live)}"}
    out: list[str] = []
    section = ""
    replaced = 0
    for line in config.splitlines():
        if line and not line[0].isspace():
            section = line.strip()
        stripped = line.strip()
        if stripped.startswith("use_backend ") and section in fixed:
            out.append(f"    default_backend {fixed[section]}")
            replaced += 1
        elif stripped == "option idle-close-on-response" and not idle_close:
            continue
        else:
            out.append(line)
    if replaced != len(fixed):
        raise BenchError(f"expected one use_backend line in each of {', '.join(fixed)}; found {replaced}")
    return "\n".join(out) + "\n"


def alt_topology(t: Topology, alt: AltFrontend) -> Topology:
    """The lab's load balancer settings moved to another frontend's ports and files."""
    hp = dataclasses.replace(
        t.haproxy, public_port=alt.public, preview_port=alt.preview, stats_port=alt.stats, https_port=alt.https,
        config_path=f"{alt.directory}/haproxy.cfg", map_path=f"{alt.directory}/live.map",
        admin_socket=f"{alt.directory}/admin.sock", master_socket=f"{alt.directory}/master.sock",
        pid_file=f"{alt.directory}/haproxy.pid")
    return dataclasses.replace(t, haproxy=hp)


# --------------------------------------------------------------------------- the clients


class NextLoad:
    """`nextload.py` in its own process on one frontend (no GIL shared with the cutovers)."""

    def __init__(self, url: str, *, gets: int, posts: int, pause: float, action_id: str,
                 ca_file: str | None, server_name: str | None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="bluegreen-nextload-")
        self.out = Path(self._dir.name) / "samples.json"
        self.argv = [sys.executable, str(BENCH_DIR / "nextload.py"), url, str(gets), str(posts), str(pause), "3600",
                     str(self.out), action_id]
        if url.startswith("https:"):
            self.argv += [ca_file or "", server_name or ""]
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     cwd=PROJECT_DIR)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.close()
            raise BenchError(f"the Next.js clients on {self.argv[2]} did not start (said {line!r})")

    def stop(self) -> list[Row]:
        assert self.proc is not None and self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
        self.proc.wait(timeout=120)
        return [Row(*r) for r in json.loads(self.out.read_text())]

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # our own child, by its pid
            self.proc.wait()
        self._dir.cleanup()


# --------------------------------------------------------------------------- the methods


def our_switch(bench: Bench) -> Callable[[], Cutover]:
    def cutover() -> Cutover:
        flips: list[float] = []

        def listener(event: str, record: StepRecord) -> None:
            if event == "start" and record.name.startswith(FLIP_STEP_PREFIX):
                flips.append(time.monotonic())

        called = time.monotonic()
        result = when_unlocked(lambda: switch(bench.estate(progress=RecordingProgress(listener=listener)),
                                              watch=False))
        returned = time.monotonic()
        if not result.ok:
            raise BenchError(f"switch to {result.color} failed: {result.error}")
        return Cutover("lab", "ours: switch (normal path)", called, flips[-1] if flips else None, returned,
                       result.from_color, result.color)

    return cutover


def our_emergency(bench: Bench) -> Callable[[], Cutover]:
    def cutover() -> Cutover:
        t = bench.topology()
        called = time.monotonic()
        with StepClock(OpenSshExecutor(t, t.load_balancer)) as lb:
            result = emergency.run(t, rollback=False, executor=lb)
        returned = time.monotonic()
        if not result.ok:
            raise BenchError(f"emergency switch to {result.color} failed: {result.error}")
        return Cutover("lab", "ours: switch --emergency", called, lb.first(EMERGENCY_FLIP_STEP), returned,
                       result.from_color, result.color)

    return cutover


def _own_haproxy_pids(config_path: str) -> list[int]:
    """Processes of this world (our mount namespace) whose command line names `config_path`."""
    own = os.readlink("/proc/self/ns/mnt")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "mnt") != own:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"-f {config_path}" in cmdline:
            found.append(int(entry.name))
    return found


@contextlib.contextmanager
def reloading_haproxy(bench: Bench, alt: AltFrontend, name: str) -> Iterator[tuple[str, Callable[[], Cutover]]]:
    """A second HAProxy serving the live colour; yields its public URL and its reload cutover."""
    t = bench.topology()
    at = alt_topology(t, alt)
    paths = HaproxyPaths.from_topology(at)
    base_config = render_haproxy_cfg(at)
    state = {"live": bench.live_color()}
    process = ManagedProcess(f"benchmark haproxy {alt.key}", Path(paths.pid_file), expect=f"-f {paths.config}")
    lb = StepClock(OpenSshExecutor(at, at.load_balancer))
    try:
        lb.run(f"mkdir -p {cmd.sh(at.load_balancer.path(alt.directory))}", step="make the benchmark directory")
        lb.put(paths.config, hardwire(base_config, state["live"], idle_close=alt.idle_close),
               step="write the benchmark HAProxy config")
        haproxy.ensure_running(lb, paths)

        def cutover() -> Cutover:
            new = other_color(state["live"])
            called = time.monotonic()
            lb.put(paths.config, hardwire(base_config, new, idle_close=alt.idle_close), step="rewrite haproxy.cfg")
            haproxy.reload(lb, paths)
            returned = time.monotonic()
            old, state["live"] = state["live"], new
            return Cutover(alt.key, name, called, lb.first(RELOAD_STEP, since=called), returned, old, new)

        yield at.public_url + "/", cutover
    finally:
        process.stop()
        # Old workers still draining name the config too: stopped by their pids, ours only.
        for signum in (signal.SIGTERM, signal.SIGKILL):
            for pid in _own_haproxy_pids(paths.config):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
            deadline = time.monotonic() + 10
            while _own_haproxy_pids(paths.config) and time.monotonic() < deadline:
                time.sleep(0.1)
        lb.run(f"rm -rf -- {cmd.sh(at.load_balancer.path(alt.directory))}", step="remove the benchmark files",
               check=False)
        lb.close()


# --------------------------------------------------------------------------- the run


def _both_serve(bench: Bench) -> None:
    t = bench.topology()
    for color in COLORS:
        host = t.app_host(color)
        probe = health.http_probe(f"http://{host.ip}:{t.app.port}/", expect_status=t.app.health_status)
        if not probe.ok:
            raise BenchError(f"{color} does not serve the app's home page ({probe.error or probe.status}): "
                             "the cutover needs both colours serving the real app (bench_push.py first)")


def run(bench: Bench, knobs: Knobs) -> dict[str, Any]:
    _both_serve(bench)
    t = bench.topology()
    lab_url = f"{t.public_url}/"
    form = render_form(lab_url, ca_file=t.haproxy.ca_file, server_name=t.tls_server_name)
    normal, urgent = our_switch(bench), our_emergency(bench)
    with reloading_haproxy(bench, ALT_TYPICAL, "haproxy.cfg rewrite + reload (typical config)") as (typ_url, typical), \
            reloading_haproxy(bench, ALT_OURS, "haproxy.cfg rewrite + reload (our config)") as (ours_url, ours_cfg):
        urls = {"lab": lab_url, ALT_TYPICAL.key: typ_url, ALT_OURS.key: ours_url}
        loads = {key: NextLoad(url, gets=knobs.gets, posts=knobs.posts, pause=knobs.pause, action_id=form.action_id,
                               ca_file=t.haproxy.ca_file, server_name=t.tls_server_name) for key, url in urls.items()}
        order: list[tuple[str, str, Callable[[], Cutover]]] = [
            ("lab", "ours: switch (normal path)", normal),
            (ALT_TYPICAL.key, "haproxy.cfg rewrite + reload (typical config)", typical),
            ("lab", "ours: switch --emergency", urgent),
            (ALT_OURS.key, "haproxy.cfg rewrite + reload (our config)", ours_cfg)]
        events: list[Cutover] = []
        errors: list[FailedCutover] = []
        try:
            for load in loads.values():
                load.start()
            say(f"-- {knobs.cutover_rounds} rounds of 4 cutovers, {knobs.gets} GET + {knobs.posts} POST clients "
                f"on each of {len(loads)} frontends")
            begin = time.monotonic()
            time.sleep(BASELINE_S)
            baseline = (begin, time.monotonic())
            step = 0
            for round_ in range(knobs.cutover_rounds):
                for frontend, method, cutover in order:
                    called = time.monotonic()
                    try:
                        events.append(cutover())
                    except BlueGreenError as exc:
                        # Counted and shown, never retried away: a cutover that failed is a result.
                        say(f"   {method}: {exc}")
                        errors.append(FailedCutover(frontend, method, called, time.monotonic(), str(exc)))
                    time.sleep(GAPS_S[step % len(GAPS_S)])
                    step += 1
                say(f"   round {round_ + 1}/{knobs.cutover_rounds}")
            time.sleep(TAIL_S)
            end = time.monotonic()
            rows = {key: load.stop() for key, load in loads.items()}
        finally:
            for load in loads.values():
                load.close()
    methods = []
    for frontend, method, _ in order:
        calls = [e.called for e in events if e.frontend == frontend] + \
                [f.called for f in errors if f.frontend == frontend]
        methods.append({**analyze(method, rows[frontend], events, errors, calls, baseline, end), "frontend": frontend,
                        "idleCloseOnResponse": frontend != ALT_TYPICAL.key})
    return {"rounds": knobs.cutover_rounds, "gets": knobs.gets, "posts": knobs.posts, "pause": knobs.pause,
            "gapsSeconds": list(GAPS_S), "baselineSeconds": BASELINE_S, "duringTailSeconds": DURING_TAIL_S,
            "seconds": round(end - begin, 1), "methods": methods}


def main(argv: list[str] | None = None) -> int:
    return run_alone(__doc__, run, "--rounds", "cutover_rounds", argv)


if __name__ == "__main__":
    sys.exit(main())
