"""The request loop as a process of its own (started by `benchlib.LoadProcess`).

    python benchmarks/loadworker.py URL CLIENTS PAUSE MAX_SECONDS WARMUP OUT_FILE [CA_FILE SERVER_NAME]

Starts `RequestLoop(URL, clients=CLIENTS, pause=PAUSE)` (PAUSE: seconds each client waits
between its requests), prints `ready` once WARMUP responses came back, runs
until a line arrives on stdin (or stdin closes, or MAX_SECONDS pass), then writes every sample as
JSON rows `[started, latency_ms, status, served_by, error]` to OUT_FILE and exits 0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bluegreen.lab.loadgen import RequestLoop
from bluegreen.model.errors import BlueGreenError

# Enough for 15 minutes at the rates a laptop reaches; the budget only stops a runaway loop.
MAX_REQUESTS = 20_000_000


def main(argv: list[str]) -> int:
    if len(argv) not in (6, 8):
        sys.stderr.write(__doc__ or "")
        return 2
    url, clients, pause, max_seconds, warmup, out = argv[:6]
    ca_file, server_name = [*argv[6:], "", ""][:2]
    try:
        loop = RequestLoop(url, clients=int(clients), max_requests=MAX_REQUESTS,
                           max_seconds=float(max_seconds), timeout=5.0, pause=float(pause),
                           ca_file=ca_file or None, server_name=server_name or None)
    except BlueGreenError as exc:
        sys.stderr.write(f"loadworker: {exc}\n")
        return 2
    loop.start()
    try:
        loop.wait_for(int(warmup), timeout=30.0)
        print("ready", flush=True)
        sys.stdin.readline()
    finally:
        report = loop.stop()
    rows = [[s.started, s.latency_ms, s.status, s.served_by, s.error] for s in report.samples]
    Path(out).write_text(json.dumps(rows))
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
