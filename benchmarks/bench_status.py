"""`status` wall time against its slowest single probe.

`ops.status.status` asks the load balancer (live map, backend states, journal, lock), each colour
(health over HTTP, release and PM2 over SSH), the database (applied and pending migrations) and
Proxmox, in parallel, on an `Estate` built as the CLI builds it. Each probe is also timed alone,
right after: if the parallelism works, the whole takes about as long as the slowest probe, not
their sum.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from benchlib import Bench, BenchError, Knobs, median, run_alone, say

from bluegreen.ops.estate import Estate
from bluegreen.ops.status import color_status, database_status, load_balancer_status, proxmox_status, status


def probes(estate: Estate) -> dict[str, Callable[[], object]]:
    """Each part of `status` on its own (the parts `status` runs side by side)."""
    found: dict[str, Callable[[], object]] = {"load balancer": lambda: load_balancer_status(estate)}
    for color in sorted(estate.t.app_hosts):
        found[f"{color} app host"] = lambda c=color: color_status(estate, c)  # type: ignore[misc]
    found["database"] = lambda: database_status(estate)
    found["proxmox"] = lambda: proxmox_status(estate)
    return found


def run(bench: Bench, knobs: Knobs) -> dict[str, Any]:
    walls: list[float] = []
    alone: dict[str, list[float]] = {}
    say(f"-- status, {knobs.status_repeats} times, and each of its probes alone")
    for _ in range(knobs.status_repeats):
        started = time.perf_counter()
        report = status(bench.estate())
        walls.append(time.perf_counter() - started)
        if report.live is None:
            raise BenchError(f"status could not read the live colour: {report.errors}")
        for name, probe in probes(bench.estate()).items():
            started = time.perf_counter()
            probe()
            alone.setdefault(name, []).append(time.perf_counter() - started)
    medians = {name: median(values) for name, values in alone.items()}
    slowest = max(medians.items(), key=lambda kv: kv[1] or 0.0)
    return {"repeats": knobs.status_repeats, "wallMedian": median(walls), "wallMax": max(walls),
            "probesMedian": medians, "slowest": slowest[0], "slowestMedian": slowest[1],
            "sumOfProbes": sum(v or 0.0 for v in medians.values())}


def main(argv: list[str] | None = None) -> int:
    return run_alone(__doc__, run, "--repeats", "status_repeats", argv)


if __name__ == "__main__":
    sys.exit(main())
