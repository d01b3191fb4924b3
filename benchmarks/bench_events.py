"""Emergency rollback with the event receiver up versus stopped (a dead webhook must cost nothing).

Alternates `Service.rollback(emergency=True)` with the lab's webhook receiver running and with it
stopped, in pairs (so load drifts hit both sides alike), and reports both medians and their ratio.
A third column times the same rollback with no webhooks configured at all: the baseline of what
publishing an event (one detached process spawn) adds.

    labns iNN .venv/bin/python benchmarks/bench_events.py --pairs 8
"""

from __future__ import annotations

import dataclasses
import sys
import time

from benchlib import (
    Bench,
    BenchError,
    Section,
    ensure_deployed,
    fmt_ms,
    md_table,
    median,
    run_standalone,
    say,
    when_unlocked,
)

from bluegreen.hosts import events
from bluegreen.lab.monitoring import start_monitoring, stop_receiver
from bluegreen.model.topology import EventSettings
from bluegreen.ops.estate import Estate
from bluegreen.ops.rollback import rollback


def _rollback(bench: Bench, *, webhooks: bool) -> float:
    t = bench.topology()
    if not webhooks:
        t = dataclasses.replace(t, events=EventSettings())
    service = Estate(t)
    started = time.perf_counter()
    result = when_unlocked(lambda: rollback(service, emergency=True))
    wall = time.perf_counter() - started
    if not result.ok:
        raise BenchError(f"rollback failed: {result.error}")
    return wall


def _publish_cost(bench: Bench, repeats: int) -> list[float]:
    """What the operation itself pays per event: the hand-over to the delivery process."""
    t = bench.topology()
    costs = []
    for _ in range(repeats):
        event = events.make_event("rollback", stack=t.stack, who="bench", ok=True, started=0, finished=0)
        started = time.perf_counter()
        child = events.publish(t, event)
        costs.append(time.perf_counter() - started)
        if child is not None:
            child.wait(timeout=60)  # one at a time: the next hand-over is not measured under its load
    return costs


def run(bench: Bench, *, pairs: int = 8) -> Section:
    ensure_deployed(bench)
    lab = bench.lab
    start_monitoring(lab.paths.root, lab.topology, lab.project_dir)
    publish_up = _publish_cost(bench, 10)
    stop_receiver(lab.paths.root)
    publish_down = _publish_cost(bench, 10)
    up: list[float] = []
    down: list[float] = []
    none: list[float] = []
    try:
        for i in range(pairs):
            say(f"-- pair {i + 1}/{pairs}")
            start_monitoring(lab.paths.root, lab.topology, lab.project_dir)
            up.append(_rollback(bench, webhooks=True))
            stop_receiver(lab.paths.root)
            down.append(_rollback(bench, webhooks=True))
            none.append(_rollback(bench, webhooks=False))
    finally:
        start_monitoring(lab.paths.root, lab.topology, lab.project_dir)
    m_up, m_down, m_none = median(up), median(down), median(none)
    ratio = (m_down or 0) / (m_up or 1)
    rows = [["receiver up", fmt_ms(m_up, 0), fmt_ms(max(up), 0)],
            ["receiver stopped", fmt_ms(m_down, 0), fmt_ms(max(down), 0)],
            ["no webhooks configured", fmt_ms(m_none, 0), fmt_ms(max(none), 0)]]
    text = "\n\n".join([
        f"`rollback --emergency` in process, {pairs} runs of each, interleaved.",
        md_table(["webhook receiver", "median", "max"], rows),
        f"stopped / up = {ratio:.2f}; up / no webhooks = {(m_up or 0) / (m_none or 1):.2f}.",
        "What publishing costs the operation itself (the hand-over to the detached delivery process, "
        "10 events each):",
        md_table(["webhook receiver", "median", "max"],
                 [["up", fmt_ms(median(publish_up), 1), fmt_ms(max(publish_up), 1)],
                  ["stopped", fmt_ms(median(publish_down), 1), fmt_ms(max(publish_down), 1)]]),
    ])
    return Section("Emergency rollback and a dead webhook receiver", text,
                   data={"up": up, "down": down, "none": none, "ratioDownUp": ratio,
                         "publishUp": publish_up, "publishDown": publish_down},
                   headline=[f"emergency rollback: {fmt_ms(m_up, 0)} with the receiver up, "
                             f"{fmt_ms(m_down, 0)} with it stopped ({ratio:.2f}x)"])


def main(argv: list[str] | None = None) -> int:
    return run_standalone(__doc__, run, {"pairs": 8}, argv)


if __name__ == "__main__":
    sys.exit(main())
