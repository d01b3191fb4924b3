"""`status` wall time against its slowest single probe.

`Service.status()` asks the load balancer (live map, backend states, journal, lock), each colour
(health over HTTP, release and PM2 over SSH), the database (applied and pending migrations) and
Proxmox, in parallel. Each probe is also timed alone; if the parallelism works, the whole takes
about as long as the slowest probe, not their sum.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

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
)

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


def run(bench: Bench, *, repeats: int = 10) -> Section:
    ensure_deployed(bench)
    walls: list[float] = []
    alone: dict[str, list[float]] = {}
    say(f"-- status, {repeats} times, and each of its probes alone")
    for _ in range(repeats):
        service = bench.service()
        started = time.perf_counter()
        report = status(service)
        walls.append(time.perf_counter() - started)
        if report.live is None:
            raise BenchError(f"status could not read the live colour: {report.errors}")
        for name, probe in probes(bench.service()).items():
            started = time.perf_counter()
            probe()
            alone.setdefault(name, []).append(time.perf_counter() - started)
    medians = {name: median(values) for name, values in alone.items()}
    slowest = max(medians.items(), key=lambda kv: kv[1] or 0.0)
    total = sum(v or 0.0 for v in medians.values())
    wall = median(walls)
    data: dict[str, Any] = {"wallMedian": wall, "wallMax": max(walls), "probesMedian": medians,
                            "slowest": slowest[0], "slowestMedian": slowest[1], "sumOfProbes": total}
    rows = [[name, fmt_ms(v, 0)] for name, v in sorted(medians.items(), key=lambda kv: -(kv[1] or 0.0))]
    text = "\n\n".join([
        f"`Service.status()` {repeats} times; after each, every probe alone (medians).",
        md_table(["", "median"], [["status, whole", fmt_ms(wall, 0)], ["slowest probe: " + slowest[0],
                                                                      fmt_ms(slowest[1], 0)],
                                  ["sum of all probes (if run one after another)", fmt_ms(total, 0)]]),
        md_table(["probe alone", "median"], rows),
        f"status takes {(wall or 0) / (slowest[1] or 1):.2f}x its slowest probe "
        f"({(wall or 0) / (total or 1):.2f}x the sum of all probes).",
    ])
    return Section("Status", text, data=data,
                   headline=[f"status: {fmt_ms(wall, 0)}, slowest probe ({slowest[0]}) "
                             f"{fmt_ms(slowest[1], 0)}, all probes in a row {fmt_ms(total, 0)}"])


def main(argv: list[str] | None = None) -> int:
    return run_standalone(__doc__, run, {"repeats": 10}, argv)


if __name__ == "__main__":
    sys.exit(main())
