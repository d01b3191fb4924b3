"""Cutover under load: our switch against the two usual alternatives, side by side, in one run.

A steady request loop (half keep-alive clients, half a new connection per request) runs through
a public frontend while the live colour changes again and again. Methods:

- ours, normal path: `Service.switch()` as the lab stack does it (`switch.mode: direct`: checks,
  runtime `set map`, map file, verify, journal). Watching afterwards is off: it is monitoring
  after the cutover, not part of it, and would only make each switch three seconds longer.
- ours, emergency: `Service.switch(emergency=True)`: no checks, the same runtime flip.
- HAProxy config rewrite + reload: the live backend hard-wired with `default_backend`, the file
  rewritten and the master told to `reload` (validated with `haproxy -c` first). Run on a second
  HAProxy on the load balancer (ports 18080/18081/18404, its own files) so the lab's own config
  is never touched; same backends, same app processes. Twice: with a typical config, and with
  ours (`option idle-close-on-response`).
- `pm2 reload` of the live colour in place: what a single-colour setup does to ship a release.

Reported per method: failed requests, answers from the old colour for requests sent after the
cutover call had returned, p50/p99 latency before and during the cutovers, time from the start
of the cutover to the first answer from the new colour, and how long the cutover call took.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (
    Bench,
    BenchError,
    LoadProcess,
    Section,
    arg_parser,
    ensure_deployed,
    fmt_ms,
    fmt_num,
    md_table,
    median,
    open_bench,
    percentile,
    say,
    setup_logging,
    when_unlocked,
)

from bluegreen.hosts import haproxy, haproxy_cli
from bluegreen.lab.loadgen import Sample
from bluegreen.lab.services import ManagedProcess
from bluegreen.model.errors import BlueGreenError
from bluegreen.model.progress import RecordingProgress, StepRecord
from bluegreen.model.topology import Topology, other_color
from bluegreen.ops.switch import switch
from bluegreen.render import commands as cmd
from bluegreen.render.haproxy import render_haproxy_cfg

ALT_DIR = "/var/lib/bluegreen-bench"
ALT_PUBLIC, ALT_PREVIEW, ALT_STATS = 18080, 18081, 18404
ALT_HTTPS = 18443
BASELINE_S = 5.0
GAP_S = 0.3  # quiet time after each cutover, so answers after it returned can be counted
TAIL_S = 1.0
NEAR_S = 1.0  # a failure this close to a cutover call is counted against that method
FLIP_STEP_PREFIX = "flip live traffic"


@dataclass(frozen=True)
class Cutover:
    called: float  # the method's call began (monotonic seconds)
    flipped: float  # the routing change itself began (ours: the flip step; others: = called)
    returned: float
    old: str | None  # colours, when the method changes colour
    new: str | None


@dataclass(frozen=True)
class FailedCutover:
    called: float
    returned: float
    message: str


@dataclass(frozen=True)
class LoadShape:
    clients: int = 16
    pause: float = 0.02  # each client's think time between requests, seconds


@dataclass
class MethodRun:
    key: str
    name: str
    url: str
    samples: list[Sample]
    events: list[Cutover]
    baseline: tuple[float, float]
    end: float
    notes: list[str] = field(default_factory=list)
    errors: list[FailedCutover] = field(default_factory=list)  # cutover calls that raised


# --------------------------------------------------------------------------- analysis (pure)


def analyze(run: MethodRun) -> dict[str, Any]:
    samples = run.samples
    starts = [s.started for s in samples]

    def between(lo: float, hi: float) -> list[Sample]:
        return samples[bisect.bisect_left(starts, lo):bisect.bisect_left(starts, hi)]

    base = between(*run.baseline)
    first = run.events[0].called if run.events else run.baseline[1]
    last = run.events[-1].returned if run.events else run.end
    during = between(first, last)
    window = between(first, run.end)
    failed = [s for s in window if not s.ok]
    reasons = Counter(s.error or f"HTTP {s.status}" for s in failed)
    # A failure far from every cutover was caused by something else (other work on the lab).
    spans = [(e.called, e.returned) for e in run.events] + [(f.called, f.returned) for f in run.errors]
    near = sum(1 for s in failed if any(lo - NEAR_S <= s.started <= hi + NEAR_S for lo, hi in spans))
    attempts = sorted([e.called for e in run.events] + [f.called for f in run.errors])

    def next_attempt(moment: float) -> float:
        later = attempts[bisect.bisect_right(attempts, moment):]
        return later[0] if later else run.end

    # A cutover call that raised may still have moved traffic: answers from another colour than
    # the one live before it (the last successful cutover's), once it had returned.
    moved_anyway = 0
    for failure in run.errors:
        done = [e for e in run.events if e.returned <= failure.called]
        live = done[-1].new if done else None
        if live is not None:
            moved_anyway += sum(1 for s in between(failure.returned, next_attempt(failure.returned))
                                if s.served_by and s.served_by != live)
    old_after = 0
    to_new: list[float] = []
    for ev in run.events:
        following = next_attempt(ev.called)
        after = between(ev.returned, following)
        if ev.old is not None:
            old_after += sum(1 for s in after if s.served_by == ev.old)
        if ev.new is not None:
            arrivals = [s.started + s.latency_ms / 1000 for s in between(ev.flipped, following)
                        if s.ok and s.served_by == ev.new]
            if arrivals:
                to_new.append(min(arrivals) - ev.flipped)

    def latency(group: list[Sample], q: float) -> float | None:
        value = percentile((s.latency_ms for s in group if s.ok), q)
        return None if value is None else value / 1000

    return {
        "method": run.name,
        "cutovers": len(run.events),
        "cutoverErrors": [f.message for f in run.errors],
        "movedByFailedCutover": moved_anyway,
        "requests": len(window),
        "requestsBaseline": len(base),
        "requestsPerSecond": len(window) / (run.end - first) if run.end > first else None,
        "failed": len(failed),
        "failedBaseline": sum(1 for s in base if not s.ok),
        "failureReasons": dict(reasons),
        "failedNearCutover": near,
        "failedPer1000": 1000 * len(failed) / len(window) if window else None,
        "oldColourAfterReturn": old_after if any(e.old for e in run.events) else None,
        "p50Before": latency(base, 50), "p99Before": latency(base, 99),
        "p50During": latency(during, 50), "p99During": latency(during, 99),
        "maxDuring": latency(during, 100),
        "toNewMedian": median(to_new), "toNewMax": max(to_new) if to_new else None,
        "toNewMeasured": len(to_new),
        "callMedian": median(e.returned - e.called for e in run.events),
        "callMax": max((e.returned - e.called for e in run.events), default=None),
        "colours": dict(Counter(s.served_by for s in window if s.served_by)),
        "notes": run.notes,
    }


def hardwire(config: str, live: str, *, idle_close: bool) -> str:
    """The config rewrite alternative: each frontend's map lookup replaced by a fixed backend."""
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


def alt_topology(t: Topology) -> Topology:
    """The lab's load balancer settings moved to other ports and files, for the second HAProxy."""
    hp = dataclasses.replace(
        t.haproxy, public_port=ALT_PUBLIC, preview_port=ALT_PREVIEW, stats_port=ALT_STATS, https_port=ALT_HTTPS,
        config_path=f"{ALT_DIR}/haproxy.cfg", map_path=f"{ALT_DIR}/live.map",
        admin_socket=f"{ALT_DIR}/admin.sock", master_socket=f"{ALT_DIR}/master.sock",
        pid_file=f"{ALT_DIR}/haproxy.pid")
    return dataclasses.replace(t, haproxy=hp)


# --------------------------------------------------------------------------- methods


def lab_haproxy_reloads(bench: Bench) -> int:
    """How often the lab's own HAProxy was reloaded: one that happens mid-run is someone else's."""
    t = bench.topology()
    with bench.executor(t.load_balancer) as lb:
        return haproxy.show_proc(lb, t).reloads


def drive(bench: Bench, key: str, name: str, url: str, cutover: Callable[[], Cutover], count: int,
          shape: LoadShape, notes: list[str] | None = None,
          load_process: Callable[[], Any] | None = None, gaps: tuple[float, ...] = (GAP_S,)) -> MethodRun:
    say(f"-- {name}: {count} cutovers under {shape.clients} clients on {url}")
    notes = list(notes or [])
    reloads_before = lab_haproxy_reloads(bench)
    t = bench.topology()
    process = load_process() if load_process else LoadProcess(
        url, clients=shape.clients, pause=shape.pause, ca_file=t.haproxy.ca_file, server_name=t.tls_server_name)
    with process as load:
        begin = time.monotonic()
        time.sleep(BASELINE_S)
        baseline = (begin, time.monotonic())
        events = []
        errors = []
        for i in range(count):
            called = time.monotonic()
            try:
                events.append(cutover())
            except BlueGreenError as exc:
                # Counted and shown, never retried away: a cutover the tool could not do is a result.
                say(f"   cutover {i + 1} failed: {exc}")
                errors.append(FailedCutover(called, time.monotonic(), str(exc)))
            if (i + 1) % 10 == 0:
                say(f"   {i + 1}/{count}")
            time.sleep(gaps[i % len(gaps)])
        time.sleep(TAIL_S)
        end = time.monotonic()
        samples = load.stop()
    reloaded = lab_haproxy_reloads(bench) - reloads_before
    if reloaded:
        notes.append(f"the lab's HAProxy was reloaded {reloaded} time(s) by something else during this run")
    return MethodRun(key=key, name=name, url=url, samples=samples, events=events, baseline=baseline,
                     end=end, notes=notes, errors=errors)


def ours(bench: Bench, *, emergency: bool) -> Callable[[], Cutover]:
    def cutover() -> Cutover:
        flips: list[float] = []

        def listener(event: str, record: StepRecord) -> None:
            if event == "start" and record.name.startswith(FLIP_STEP_PREFIX):
                flips.append(time.monotonic())

        called = time.monotonic()
        estate = bench.service(progress=RecordingProgress(listener=listener))
        result = when_unlocked(lambda: switch(estate, emergency=emergency, watch=False))
        returned = time.monotonic()
        if not result.ok:
            raise BenchError(f"switch to {result.color} failed: {result.error}")
        return Cutover(called=called, flipped=flips[-1] if flips else called, returned=returned,
                       old=result.from_color, new=result.color)

    return cutover


def _pids_running(config_path: str) -> list[int]:
    """Processes whose command line names `config_path` (only the second HAProxy's do)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"-f {config_path}" in cmdline:
            found.append(int(entry.name))
    return found


@contextlib.contextmanager
def second_haproxy(bench: Bench, *, idle_close: bool) -> Iterator[Callable[[], Cutover]]:
    """A second HAProxy on the load balancer serving the live colour; yields the reload cutover."""
    t = bench.topology()
    alt = alt_topology(t)
    paths = haproxy_cli.HaproxyPaths.from_topology(alt)
    base_config = render_haproxy_cfg(alt)
    state = {"live": bench.live_color()}
    process = ManagedProcess("benchmark haproxy", Path(paths.pid_file), expect=f"-f {paths.config}")
    with bench.executor(t.load_balancer) as lb:
        try:
            lb.put(paths.config, hardwire(base_config, state["live"], idle_close=idle_close),
                   step="write the benchmark HAProxy config")
            haproxy.ensure_running(lb, paths)

            def cutover() -> Cutover:
                new = other_color(state["live"])
                called = time.monotonic()
                lb.put(paths.config, hardwire(base_config, new, idle_close=idle_close),
                       step="rewrite haproxy.cfg")
                haproxy.reload(lb, paths)
                returned = time.monotonic()
                old, state["live"] = state["live"], new
                return Cutover(called=called, flipped=called, returned=returned, old=old, new=new)

            yield cutover
        finally:
            process.stop()
            # Old workers still draining keep the config path in their command line: ours too.
            for pid in _pids_running(paths.config):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _pids_running(paths.config) and time.monotonic() < deadline:
                time.sleep(0.1)
            for pid in _pids_running(paths.config):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            lb.run(f"rm -rf -- {cmd.sh(t.load_balancer.path(ALT_DIR))}", step="remove the benchmark files",
                   check=False)


@contextlib.contextmanager
def pm2_in_place(bench: Bench) -> Iterator[Callable[[], Cutover]]:
    """`pm2 reload <app>` on the live colour's host: no second colour, the app replaced in place."""
    t = bench.topology()
    live = bench.live_color()
    host = t.app_host(live)
    paths = cmd.AppPaths.of(t, host)
    with bench.executor(host) as ex:
        def cutover() -> Cutover:
            called = time.monotonic()
            ex.run(cmd.pm2(t, paths, "reload", t.app.name), step="pm2 reload")
            return Cutover(called=called, flipped=called, returned=time.monotonic(), old=None, new=None)

        yield cutover


# --------------------------------------------------------------------------- the run


def run(bench: Bench, *, switches: int = 50, config_reloads: int = 20, pm2_reloads: int = 10,
        shape: LoadShape | None = None) -> Section:
    """Each of our two paths switches `switches` times; the alternatives, which exist here only to
    be compared with, cut over fewer times (their rates per cutover and per request still compare)."""
    shape = shape or LoadShape()
    if switches < 2 or switches % 2:
        raise BenchError(f"--switches must be an even number >= 2 (the lab ends on the colour it "
                         f"started on), got {switches}")
    ensure_deployed(bench)
    t = bench.topology()
    public = f"{t.public_url}/"
    alt_url = (f"https://{t.load_balancer.ip}:{ALT_HTTPS}/" if t.haproxy.tls
               else f"http://{t.load_balancer.ip}:{ALT_PUBLIC}/")
    runs = [
        drive(bench, "ours", "ours: switch (normal path, direct)", public, ours(bench, emergency=False),
              switches, shape),
        drive(bench, "emergency", "ours: switch --emergency", public, ours(bench, emergency=True),
              switches, shape),
    ]
    with second_haproxy(bench, idle_close=False) as reload_typical:
        runs.append(drive(bench, "reload", "haproxy.cfg rewrite + reload (typical config)", alt_url,
                          reload_typical, config_reloads, shape,
                          ["a second HAProxy with the lab's config minus `option idle-close-on-response`"]))
    with second_haproxy(bench, idle_close=True) as reload_ours:
        runs.append(drive(bench, "reload-idle-close", "haproxy.cfg rewrite + reload (our config)", alt_url,
                          reload_ours, config_reloads, shape,
                          ["a second HAProxy with the lab's config, `option idle-close-on-response` kept"]))
    with pm2_in_place(bench) as pm2_reload:
        runs.append(drive(bench, "pm2", "pm2 reload of the live colour in place", public, pm2_reload,
                          pm2_reloads, shape, ["one colour, reloaded in place: there is no colour to change"]))
    results = [analyze(r) for r in runs]
    return Section("Cutover under load", render(results, shape),
                   data={"clients": shape.clients, "pause": shape.pause, "methods": results},
                   headline=headline(results))


def _ratio(value: float | None, reference: float | None) -> str:
    if value is None or reference is None:
        return "n/a"
    if reference == 0:
        return "same (0)" if value == 0 else f"{value:g} vs 0"
    return f"{value / reference:.1f}x"


def headline(results: list[dict[str, Any]]) -> list[str]:
    ours_result = results[0]
    lines = []
    for r in results:
        lines.append(f"{r['method']}: {r['failed']} failed of {r['requests']} requests over "
                     f"{r['cutovers']} cutovers"
                     + (f" ({len(r['cutoverErrors'])} more cutover calls failed)" if r["cutoverErrors"] else "")
                     + f"; p99 during {fmt_ms(r['p99During'])} "
                     f"({_ratio(r['p99During'], ours_result['p99During'])} ours)")
    return lines


def render(results: list[dict[str, Any]], shape: LoadShape) -> str:
    ours_result = results[0]
    rows = []
    for r in results:
        rows.append([
            r["method"], r["cutovers"], f"{r['requests']} ({fmt_num(r['requestsPerSecond'], 0)}/s)",
            r["failed"],
            fmt_num(r["failedPer1000"], 2),
            "n/a" if r["oldColourAfterReturn"] is None else r["oldColourAfterReturn"],
            f"{fmt_ms(r['p50Before'])} / {fmt_ms(r['p99Before'])}",
            f"{fmt_ms(r['p50During'])} / {fmt_ms(r['p99During'])}",
            f"{fmt_ms(r['toNewMedian'])} / {fmt_ms(r['toNewMax'])}",
            f"{fmt_ms(r['callMedian'], 0)} / {fmt_ms(r['callMax'], 0)}",
        ])
    table = md_table(["method", "cutovers", "requests (rate)", "failed", "failed per 1000",
                      "old colour after return", "p50 / p99 before", "p50 / p99 during",
                      "flip to first new-colour answer (median / max)", "cutover call (median / max)"],
                     rows)
    ratios = md_table(["method", "failed vs ours", "p99 during vs ours", "max latency during"],
                      [[r["method"], _ratio(r["failed"], ours_result["failed"]),
                        _ratio(r["p99During"], ours_result["p99During"]), fmt_ms(r["maxDuring"])]
                       for r in results])
    reasons = "\n".join(
        f"- {r['method']}: " + (", ".join(f"{k} x{v}" for k, v in r["failureReasons"].items()) or "none")
        + (f" ({r['failedNearCutover']} within {NEAR_S:g} s of a cutover call)" if r["failed"] else "")
        for r in results)
    notes = "\n".join(f"- {r['method']}: {note}" for r in results for note in r["notes"])
    errors = "\n".join(f"- {r['method']}: {len(r['cutoverErrors'])} cutover call(s) raised, e.g. "
                       f"`{r['cutoverErrors'][0]}`"
                       + (f"; after raising, {r['movedByFailedCutover']} answers still came from the colour "
                          "it was switching to: the call failed but traffic had moved"
                          if r["movedByFailedCutover"] else "")
                       for r in results if r["cutoverErrors"])
    return "\n\n".join([
        f"{shape.clients} concurrent clients (half keep-alive, half a new connection per request), "
        f"each waiting {shape.pause * 1000:g} ms between its requests, through the frontend; "
        f"{BASELINE_S:g} s of baseline first, {GAP_S:g} s between cutovers. "
        "\"During\" is from the first cutover call to the last one's return. \"Old colour after "
        "return\" counts answers from the previous colour to requests sent after the cutover call "
        "had returned. \"Flip to first new-colour answer\" runs from the start of the routing change "
        "(our flip step; the config write; for pm2 there is no colour) to the first reply carrying "
        "the new colour in `X-Served-By`.",
        table, "Compared with ours (normal path):", ratios, "Why requests failed:", reasons,
        "Cutover calls that failed (not counted in the table):\n" + errors if errors else "",
        "Setup notes:\n" + notes if notes else "",
    ]).strip()


# --------------------------------------------------------------------------- the real app (issue 21)

NEXT_REF = "next-v2"
# Quiet time after each switch, cycling: with the switch call itself, a colour sits idle from about
# 2 to 8 s between two switches, across the app's old 5 s keep-alive (a fixed cadence could miss it).
NEXT_GAPS_S = (0.3, 1.5, 2.5, 3.0, 3.5, 4.0, 5.0)


class NextLoadProcess:
    """`nextload.py` in its own process: keep-alive GET clients and Server Action POST clients on
    the real Next.js app, no retry at all. Samples carry their kind (GET or POST)."""

    def __init__(self, url: str, *, gets: int, posts: int, pause: float, action_id: str,
                 ca_file: str | None, server_name: str | None) -> None:
        import tempfile

        self.argv = [sys.executable, str(Path(__file__).with_name("nextload.py")), url, str(gets), str(posts),
                     str(pause), "1800", "", action_id,
                     *([ca_file or "", server_name or ""] if url.startswith("https:") else [])]
        self._dir = tempfile.TemporaryDirectory(prefix="bluegreen-nextload-")
        self.out = Path(self._dir.name) / "samples.json"
        self.argv[7] = str(self.out)
        self.proc: Any = None
        self.kinds: list[str] = []

    def __enter__(self) -> NextLoadProcess:
        import subprocess

        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     cwd=Path(__file__).resolve().parents[1])
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            self.proc.wait()
            raise BenchError(f"the Next.js load did not start (said {line!r})")
        return self

    def stop(self) -> list[Sample]:
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
        self.proc.wait(timeout=120)
        rows = json.loads(self.out.read_text())
        self.kinds = [r[5] for r in rows]
        return [Sample(started=r[0], latency_ms=r[1], status=r[2], served_by=r[3], error=r[4]) for r in rows]

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._dir.cleanup()


def _given(load: NextLoadProcess) -> Callable[[], NextLoadProcess]:
    return lambda: load


def ensure_next_app(bench: Bench) -> None:
    """Both colours serve the real Next.js app, built with the same Server Actions key."""
    from bluegreen.ops.deploy import deploy

    for _ in range(2):
        standby = other_color(bench.live_color())
        say(f"   deploying {NEXT_REF} to {standby}")
        when_unlocked(lambda: deploy(bench.service(), NEXT_REF, migrate=True, snapshot=False))
        when_unlocked(lambda: switch(bench.service(), watch=False))


BEFORE_FIX_LINES = ("http-reuse safe", "retry-on conn-failure empty-response",
                    "http-request disable-l7-retry unless METH_GET")


@contextlib.contextmanager
def configured_as_before(bench: Bench) -> Iterator[None]:
    """The lab as it was before issue 21's fix, for comparison: the app's idle keep-alive back to
    Node's default 5 s (KEEP_ALIVE_TIMEOUT in each colour's ecosystem, PM2 reloaded before any
    load runs) and HAProxy without the reuse and retry lines. Put back afterwards."""
    from bluegreen.model.topology import COLORS

    t = bench.topology()
    saved: dict[str, tuple[Any, str, bytes]] = {}
    config_path = t.load_balancer.path(t.haproxy.config_path)
    with bench.executor(t.load_balancer) as lb:
        config = lb.get(config_path, step="read haproxy.cfg") or b""
        saved["lb"] = (t.load_balancer, config_path, config)
        lines = [line for line in config.decode().splitlines() if line.strip() not in BEFORE_FIX_LINES]
        lb.put(config_path, "\n".join(lines) + "\n", step="haproxy.cfg as before")
        haproxy.reload(lb, t)
    for color in COLORS:
        host = t.app_host(color)
        paths = cmd.AppPaths.of(t, host)
        with bench.executor(host) as ex:
            eco = ex.get(paths.ecosystem, step="read the ecosystem") or b""
            saved[color] = (host, paths.ecosystem, eco)
            before = eco.decode().replace('"KEEP_ALIVE_TIMEOUT": "65000"', '"KEEP_ALIVE_TIMEOUT": "5000"')
            if before == eco.decode():
                raise BenchError(f"{color}'s ecosystem does not set KEEP_ALIVE_TIMEOUT 65000")
            ex.put(paths.ecosystem, before, step="ecosystem as before")
            ex.run(cmd.pm2_reload(t, paths), step="pm2 reload")
    time.sleep(5)
    try:
        yield
    finally:
        for key, (host, path, content) in saved.items():
            with bench.executor(host) as ex:
                ex.put(path, content, step="put back")
                if key == "lb":
                    haproxy.reload(ex, t)
                else:
                    ex.run(cmd.pm2_reload(t, cmd.AppPaths.of(t, host)), step="pm2 reload")


def run_next(bench: Bench, *, switches: int = 100, gets: int = 8, posts: int = 4, pause: float = 0.02,
             deploy_app: bool = True, label: str = "") -> Section:
    """100 switches (half normal, half emergency) of the real app under keep-alive GETs and
    Server Action POSTs, no client retry: every request that fails is counted."""
    from bluegreen.lab.nextapp import render_form

    if deploy_app:
        ensure_next_app(bench)
    t = bench.topology()
    public = f"{t.public_url}/"
    form = render_form(public, ca_file=t.haproxy.ca_file, server_name=t.tls_server_name)
    shape = LoadShape(gets + posts, pause)
    results = []
    kinds_by_run: list[list[str]] = []
    for key, name, emergency in (("next-normal", f"real app{label}: switch (normal path, direct)", False),
                                 ("next-emergency", f"real app{label}: switch --emergency", True)):
        load = NextLoadProcess(public, gets=gets, posts=posts, pause=pause, action_id=form.action_id,
                               ca_file=t.haproxy.ca_file, server_name=t.tls_server_name)
        run = drive(bench, key, name, public, ours(bench, emergency=emergency), switches // 2, shape,
                    load_process=_given(load), gaps=NEXT_GAPS_S)
        result = analyze(run)
        by_kind: dict[str, dict[str, int]] = {}
        window_start = run.events[0].called if run.events else run.baseline[1]
        for sample, kind in zip(run.samples, load.kinds, strict=True):
            if sample.started < window_start:
                continue
            entry = by_kind.setdefault(kind, {"requests": 0, "failed": 0})
            entry["requests"] += 1
            entry["failed"] += 0 if sample.ok else 1
        result["byKind"] = by_kind
        results.append(result)
        kinds_by_run.append(load.kinds)
    data = {"gets": gets, "posts": posts, "pause": pause, "retries": 0, "gapsSeconds": list(NEXT_GAPS_S),
            "beforeFix": bool(label), "methods": results}
    markdown, lines = next_markdown(data)
    return Section(f"Cutover under load, real Next.js app (issue 21){label}", markdown, data=data,
                   headline=lines)


def next_markdown(data: dict[str, Any]) -> tuple[str, list[str]]:
    """The section's text and headline lines from its data (results.json can be re-rendered)."""
    results = data["methods"]
    lines = [f"{r['method']}: {r['failed']} failed of {r['requests']} requests over {r['cutovers']} switches "
             f"(GET {r['byKind'].get('GET', {}).get('failed', 0)}/{r['byKind'].get('GET', {}).get('requests', 0)}, "
             f"Server Action POST {r['byKind'].get('POST', {}).get('failed', 0)}/"
             f"{r['byKind'].get('POST', {}).get('requests', 0)} failed)"
             + (f"; {len(r['cutoverErrors'])} switch calls failed" if r["cutoverErrors"] else "")
             for r in results]
    gaps = ", ".join(f"{g:g}" for g in data.get("gapsSeconds", NEXT_GAPS_S))
    shape = LoadShape(data["gets"] + data["posts"], data["pause"])
    # The generic table's first paragraph describes the other load (half new connections): not this one.
    tables = render(results, shape).split("\n\n", 1)[1]
    markdown = "\n".join([
        f"{data['gets']} keep-alive GET clients and {data['posts']} keep-alive Server Action POST clients on the "
        f"real Next.js app ({NEXT_REF} on both colours, `next start` under PM2), each on ONE persistent "
        f"connection, {data['pause'] * 1000:g} ms between its requests, no client retry of any kind (a "
        "connection closed without an answer is a failed request); half the GET clients load the home page, "
        f"half /api/health. After each switch a pause cycling through {gaps} s, so a colour sits idle for "
        "every length from about 2 to 8 s between switches. Switch calls as in the section above "
        "(`switch.mode: direct`, no watch). \"During\" runs from the first switch call to the last one's "
        "return; \"old colour after return\" counts answers from the previous colour to requests sent after "
        "the call returned."
        + (" Run with the settings from before issue 21's fix (`configured_as_before`): the app's idle "
           "keep-alive at Node's default 5 s, HAProxy without `http-reuse safe`, `retry-on` and "
           "`disable-l7-retry`; the failures are connections closed with no byte of an answer "
           "(`RemoteDisconnected`)." if data.get("beforeFix") else ""), "",
        *(f"- {line}" for line in lines), "", tables])
    return markdown, lines


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser(__doc__)
    parser.add_argument("--switches", type=int, default=50, help="cutovers per switching method (even)")
    parser.add_argument("--config-reloads", type=int, default=20, help="cutovers by haproxy.cfg rewrite")
    parser.add_argument("--pm2-reloads", type=int, default=10, help="pm2 reloads in place")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--pause", type=float, default=0.02, help="each client's think time (s)")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--next", action="store_true",
                        help="instead: the real Next.js app, keep-alive GETs and Server Action POSTs, no retry")
    parser.add_argument("--no-deploy", action="store_true", help="with --next: both colours already serve it")
    parser.add_argument("--results", metavar="FILE", help="with --next: add the section's data to this results.json")
    parser.add_argument("--before-fix", type=int, default=0, metavar="N",
                        help="with --next: first N switches with the settings before issue 21's fix, to compare")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if args.next:
        sections = []
        with open_bench() as bench:
            if not args.no_deploy:
                ensure_next_app(bench)
            if args.before_fix:
                with configured_as_before(bench):
                    sections.append(run_next(bench, switches=args.before_fix, deploy_app=False,
                                             label=" before the fix"))
            sections.append(run_next(bench, switches=args.switches if args.switches != 50 else 100,
                                     deploy_app=False))
        for section in sections:
            print(f"## {section.title}\n\n{section.markdown}\n")
        for section in sections if args.results else []:
            path = Path(args.results)
            results = json.loads(path.read_text()) if path.exists() else {"sections": {}}
            results.setdefault("sections", {})[section.title] = {**section.data, "markdown": section.markdown,
                                                                 "headline": section.headline}
            path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        return 0
    with open_bench() as bench:
        section = run(bench, switches=args.switches, config_reloads=args.config_reloads,
                      pm2_reloads=args.pm2_reloads,
                      shape=LoadShape(args.clients, args.pause))
    print(f"## {section.title}\n\n{section.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
