"""Emergency rollback with the event receiver up versus stopped (a dead webhook must cost nothing).

Alternates `ops.rollback.rollback(emergency=True)` with the lab's webhook receiver running and with it
stopped, in pairs (so load drifts hit both sides alike), and reports both medians and their ratio.
A third column times the same rollback with no webhooks configured at all: the baseline of what
publishing an event (one detached process spawn) adds.

    .venv/bin/python benchmarks/bench_events.py --pairs 8     (not part of `make bench`)
"""

from __future__ import annotations

import dataclasses
import sys
import time

from benchlib import Bench, BenchError, arg_parser, median, open_bench, say, setup_logging, when_unlocked
from render import md_table, ms

from bluegreen.hosts import events
from bluegreen.lab.monitoring import start_monitoring, stop_receiver
from bluegreen.model.topology import EventSettings
from bluegreen.ops.rollback import rollback
from bluegreen.ops.status import status


def _rollback(bench: Bench, *, webhooks: bool) -> float:
    t = bench.topology()
    if not webhooks:
        t = dataclasses.replace(t, events=EventSettings())
    service = bench.estate(topology=t)
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


def run(bench: Bench, *, pairs: int = 8) -> str:
    if status(bench.estate()).live is None:
        raise BenchError("the lab's live colour cannot be read: deploy and switch first")
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
    rows = [["receiver up", ms(m_up, 0), ms(max(up), 0)],
            ["receiver stopped", ms(m_down, 0), ms(max(down), 0)],
            ["no webhooks configured", ms(m_none, 0), ms(max(none), 0)]]
    text = "\n\n".join([
        f"`rollback --emergency` in process, {pairs} runs of each, interleaved.",
        md_table(["webhook receiver", "median", "max"], rows),
        f"stopped / up = {ratio:.2f}; up / no webhooks = {(m_up or 0) / (m_none or 1):.2f}.",
        "What publishing costs the operation itself (the hand-over to the detached delivery process, "
        "10 events each):",
        md_table(["webhook receiver", "median", "max"],
                 [["up", ms(median(publish_up), 1), ms(max(publish_up), 1)],
                  ["stopped", ms(median(publish_down), 1), ms(max(publish_down), 1)]]),
    ])
    return text


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser(__doc__)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    with open_bench() as bench:
        print(run(bench, pairs=args.pairs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
