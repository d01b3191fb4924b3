"""Switch and rollback latency, end to end, and where the time goes.

In process: `Service.switch(emergency=True)` then `Service.rollback()` (the CLI's default: with
checks), repeated, each with a `RecordingProgress` (its steps' durations) and executors that time
every SSH call (connect, each command, each file read or write, by step). From the command line:
`bluegreen switch --emergency` and `bluegreen rollback`, wall time of the whole process
(interpreter start and imports included), next to the bare start-up cost of the CLI.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from benchlib import (
    PROJECT_DIR,
    Bench,
    BenchError,
    CallRecord,
    Section,
    ensure_deployed,
    fmt_ms,
    generic_step,
    md_table,
    median,
    run_standalone,
    say,
    timing_factory,
    when_unlocked,
)

from bluegreen.model.progress import RecordingProgress
from bluegreen.ops.rollback import rollback
from bluegreen.ops.switch import switch

BLUEGREEN = PROJECT_DIR / ".venv" / "bin" / "bluegreen"


@dataclass
class Timing:
    wall: float
    steps: dict[str, float]
    calls: list[CallRecord]
    flip_ms: float


@dataclass
class OperationTimings:
    name: str
    runs: list[Timing] = field(default_factory=list)
    cli: list[float] = field(default_factory=list)


def _timed(bench: Bench, operation: str) -> Timing:
    progress = RecordingProgress()
    calls: list[CallRecord] = []
    service = bench.service(progress=progress, executor_factory=timing_factory(bench.topology(), calls))
    started = time.perf_counter()
    if operation == "switch":
        result = when_unlocked(lambda: switch(service, emergency=True, watch=False))
    else:
        result = when_unlocked(lambda: rollback(service))
    wall = time.perf_counter() - started
    if not result.ok:
        raise BenchError(f"{operation} failed: {result.error}")
    steps: dict[str, float] = defaultdict(float)
    for step in progress.steps:
        steps[generic_step(step.name)] += step.seconds
    return Timing(wall=wall, steps=dict(steps), calls=calls, flip_ms=result.flip_ms)


def _cli(bench: Bench, args: list[str]) -> float:
    argv = [str(BLUEGREEN), *args, "--stack", bench.stack, "--cwd", str(bench.project), "--json"]
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise BenchError(f"`bluegreen {' '.join(args)}` failed (exit {proc.returncode}): "
                         f"{proc.stderr.strip()[-500:]}")
    return wall


def _cli_startup() -> float:
    started = time.perf_counter()
    proc = subprocess.run([str(BLUEGREEN), "--help"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise BenchError(f"`bluegreen --help` failed: {proc.stderr.strip()[-300:]}")
    return time.perf_counter() - started


def summarize(op: OperationTimings) -> dict[str, Any]:
    step_names = list(dict.fromkeys(name for r in op.runs for name in r.steps))
    steps = {name: median(r.steps.get(name, 0.0) for r in op.runs) for name in step_names}
    by_call: dict[str, list[float]] = defaultdict(list)
    for r in op.runs:
        per_run: dict[str, float] = defaultdict(float)
        for c in r.calls:
            per_run[f"{c.kind}: {generic_step(c.step)}"] += c.seconds
        for key, seconds in per_run.items():
            by_call[key].append(seconds)
    calls = {key: median(values) for key, values in by_call.items()}
    ssh_total = median(sum(c.seconds for c in r.calls) for r in op.runs)
    connects = median(float(sum(1 for c in r.calls if c.kind == "connect")) for r in op.runs)
    commands = median(float(sum(1 for c in r.calls if c.kind != "connect")) for r in op.runs)
    return {
        "operation": op.name, "runs": len(op.runs),
        "wallMedian": median(r.wall for r in op.runs),
        "wallMax": max((r.wall for r in op.runs), default=None),
        "flipMsMedian": median(r.flip_ms for r in op.runs),
        "steps": steps, "sshCalls": calls, "sshTotalMedian": ssh_total,
        "connectsMedian": connects, "commandsMedian": commands,
        "cliWallMedian": median(op.cli), "cliRuns": len(op.cli),
    }


def run(bench: Bench, *, repeats: int = 10, cli_repeats: int = 5) -> Section:
    ensure_deployed(bench)
    switch = OperationTimings("switch --emergency")
    rollback = OperationTimings("rollback")
    say(f"-- switch --emergency and rollback, {repeats} times each in process")
    for _ in range(repeats):
        switch.runs.append(_timed(bench, "switch"))
        rollback.runs.append(_timed(bench, "rollback"))
    say(f"-- the same through the CLI, {cli_repeats} times each")
    for _ in range(cli_repeats):
        switch.cli.append(when_unlocked(lambda: _cli(bench, ["switch", "--emergency", "--yes",
                                                             "--no-watch"])))
        rollback.cli.append(when_unlocked(lambda: _cli(bench, ["rollback", "--yes"])))
    startup = median(_cli_startup() for _ in range(3))
    summaries = [summarize(switch), summarize(rollback)]
    return Section("Switch and rollback latency", render(summaries, startup),
                   data={"operations": summaries, "cliStartupMedian": startup},
                   headline=[f"{s['operation']}: {fmt_ms(s['wallMedian'], 0)} end to end in process "
                             f"(flip {s['flipMsMedian']:.0f} ms), {fmt_ms(s['cliWallMedian'], 0)} as a "
                             "CLI command" for s in summaries])


def render(summaries: list[dict[str, Any]], startup: float | None) -> str:
    overview = md_table(
        ["operation", "runs", "in process (median / max)", "flip (median)", "SSH time (median)",
         "SSH connects / calls", "CLI wall (median)"],
        [[s["operation"], s["runs"], f"{fmt_ms(s['wallMedian'], 0)} / {fmt_ms(s['wallMax'], 0)}",
          f"{s['flipMsMedian']:.0f} ms", fmt_ms(s["sshTotalMedian"], 0),
          f"{s['connectsMedian']:.0f} / {s['commandsMedian']:.0f}", fmt_ms(s["cliWallMedian"], 0)]
         for s in summaries])
    parts = [
        "In process: `Service.switch(emergency=True, watch=False)` and `Service.rollback()` (checks "
        "on, no watch, as the CLI runs it). CLI: `bluegreen switch --emergency --yes --no-watch` and "
        f"`bluegreen rollback --yes`; `bluegreen --help` alone takes {fmt_ms(startup, 0)} (interpreter "
        "and imports), which every CLI figure includes.",
        overview,
    ]
    for s in summaries:
        accounted = sum(v or 0.0 for v in s["steps"].values())
        steps = [[name, fmt_ms(v)] for name, v in s["steps"].items()]
        steps.append(["(outside the steps: connect to the LB, lock, journal, metrics, release)",
                      fmt_ms((s["wallMedian"] or 0.0) - accounted)])
        calls = sorted(s["sshCalls"].items(), key=lambda kv: -(kv[1] or 0.0))
        parts += [f"Where `{s['operation']}` goes, by progress step (medians):",
                  md_table(["step", "time"], steps),
                  f"`{s['operation']}` by SSH call (medians, summed per run):",
                  md_table(["call: step", "time"], [[k, fmt_ms(v)] for k, v in calls])]
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    return run_standalone(__doc__, run, {"repeats": 10, "cli_repeats": 5}, argv)


if __name__ == "__main__":
    sys.exit(main())
