"""Deploying the real Next.js 15 + Prisma app (`sample-next/`): where the time goes, how much memory
the build takes on the standby, and what the live colour feels meanwhile.

    .venv/bin/python benchmarks/bench_next_deploy.py     # writes its own section of RESULTS.md

Two deploys to the standby, no switch in between:
1. `next-v1`: dependencies installed with `npm ci` from npm's cache (the standby's previous release
   has another lockfile) or reused when it already has this one (the table says which);
2. `bench-next-<run>`: `next-v2` plus a no-op migration named for this run, so `prisma migrate
   deploy` has one migration to apply; the lockfile is unchanged, so node_modules is reused.

Each deploy's wall time is split into install, generate, build (the app's build script times
`prisma generate` and `next build` itself), migrate (the migration command alone), reload (PM2 on
the standby), health (until /api/health reports the new commit) and the tool (everything else:
SSH, git, snapshot, reading `_prisma_migrations`, the pre-migration dump, smoke test, pruning, the
lock and journal). A sampler reads /proc every 0.2 s: the resident memory of every process working
in the new release (npm, prisma, next build and its workers) and of the live colour's app, and a
request loop on the live colour's public URL measures its latency before and during the build.
The section goes between markers in RESULTS.md, so run_all.py's sections are left alone.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchlib import BENCH_DIR, Bench, StepTree, arg_parser, md_table, open_bench, say, setup_logging, when_unlocked

from bluegreen.lab.loadgen import RequestLoop
from bluegreen.lab.nextapp import PHASES, read_build_timings, split_deploy
from bluegreen.lab.repo import publish_variant
from bluegreen.model.topology import other_color
from bluegreen.ops.deploy import deploy

START = "<!-- bench_next_deploy: start -->"
END = "<!-- bench_next_deploy: end -->"
PAGE = 4096


def _rss_mb(pid: str) -> float:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def _cwd(pid: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def _mount_ns(pid: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return ""


class MemorySampler:
    """Peak summed RSS of the processes working in a new release of `releases`, and of the app
    processes of the live colour (cwd inside `live_releases`)."""

    def __init__(self, releases: str, live_releases: str, interval: float = 0.2) -> None:
        self.releases = releases.rstrip("/") + "/"
        self.live = live_releases.rstrip("/") + "/"
        self.before = set(os.listdir(releases)) if os.path.isdir(releases) else set()
        self.interval = interval
        self.peak_build = 0.0
        self.peak_live = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        # Other labs on this machine (each in its own mount namespace) use the same paths: count only
        # the processes of this lab, whose hosts' sshd runs in this process's mount namespace.
        own = _mount_ns("self")
        while not self._stop.is_set():
            build = live = 0.0
            for pid in filter(str.isdigit, os.listdir("/proc")):
                if _mount_ns(pid) != own:
                    continue
                cwd = _cwd(pid)
                if cwd.startswith(self.releases):
                    name = cwd[len(self.releases):].split("/", 1)[0]
                    if name not in self.before:
                        build += _rss_mb(pid)
                elif cwd.startswith(self.live):
                    live += _rss_mb(pid)
            self.peak_build = max(self.peak_build, build)
            self.peak_live = max(self.peak_live, live)
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _publish_migration_variant(bench: Bench) -> str:
    run_id = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    branch = f"bench-next-{run_id}"
    name = f"{run_id}_bench_noop"
    publish_variant(bench.lab.paths.sample_repo, base="next-v2", branch=branch,
                    changes={f"prisma/migrations/{name}/migration.sql":
                             "-- benchmark: a migration for `prisma migrate deploy` to apply; changes nothing\n"
                             "SELECT 1;\n"},
                    message=f"bench: no-op migration {name}")
    return branch


def _deploy(bench: Bench, ref: str) -> dict[str, Any]:
    t = bench.topology()
    live = bench.live_color()
    standby = other_color(live)
    app_dir = t.app.dir
    releases = t.app_host(standby).path(f"{app_dir}/releases")
    live_releases = t.app_host(live).path(f"{app_dir}/releases")
    tree = StepTree()
    build_window: dict[str, float] = {}

    def on_step(event: str, record: Any) -> None:
        if record.name == "build":
            build_window[event] = time.monotonic()

    inner = tree.progress.listener

    def listener(event: str, record: Any) -> None:
        if inner is not None:
            inner(event, record)
        on_step(event, record)

    tree.progress.listener = listener
    with RequestLoop.visitor(t, "/api/health", clients=2, max_seconds=900) as loop, \
            MemorySampler(releases, live_releases) as memory:
        loop.wait_for(50, timeout=60)
        started = time.monotonic()
        result = when_unlocked(lambda: deploy(bench.service(progress=tree.progress), ref, migrate=True))
        wall = time.monotonic() - started
    report = loop.report
    build = read_build_timings(t, result.color, result.release) if result.release else None
    timing = split_deploy(tree.progress.steps, wall, build)
    b0, b1 = build_window.get("start", started), build_window.get("end", started)

    def p(q: float, since: float | None, until: float | None) -> float | None:
        window = [x for x in report.samples if x.ok and (since is None or x.started >= since)
                  and (until is None or x.started < until)]
        return round(report.percentile(q, since=since, until=until), 1) if window else None

    return {"ref": ref, "colour": result.color, "dependencies": result.dependencies,
            "migrations": result.migrations_applied, "timings": timing.to_json(),
            "buildScript": build, "peakBuildRssMb": round(memory.peak_build),
            "peakLiveRssMb": round(memory.peak_live),
            "liveP50BeforeMs": p(50, None, started), "liveP99BeforeMs": p(99, None, started),
            "liveP50DuringBuildMs": p(50, b0, b1), "liveP99DuringBuildMs": p(99, b0, b1),
            "liveFailed": len(report.failures), "liveRequests": report.total}


def render(rows: list[dict[str, Any]], when: str, load: str) -> str:
    def f(v: Any, unit: str = "") -> str:
        return "n/a" if v is None else f"{v:.1f}{unit}" if isinstance(v, float) else f"{v}{unit}"

    head = ["deploy", "deps", *PHASES, "tool", "total"]
    table = [[r["ref"].split("-20")[0] if r["ref"].startswith("bench-next") else r["ref"], r["dependencies"],
              *(f(r["timings"].get(k), " s") for k in PHASES), f(r["timings"]["tool"], " s"),
              f(r["timings"]["total"], " s")] for r in rows]
    mem = [[r["ref"].split("-20")[0] if r["ref"].startswith("bench-next") else r["ref"],
            f"{r['peakBuildRssMb']} MB", f"{r['peakLiveRssMb']} MB",
            f(r["liveP50BeforeMs"], " ms"), f(r["liveP99BeforeMs"], " ms"),
            f(r["liveP50DuringBuildMs"], " ms"), f(r["liveP99DuringBuildMs"], " ms"),
            f"{r['liveFailed']} of {r['liveRequests']}"] for r in rows]
    return "\n\n".join([
        f"From `python benchmarks/bench_next_deploy.py` ({when}; load average at the start {load}). "
        "Two deploys of the real app to the standby: `next-v1`, then `next-v2` plus a no-op migration "
        "(so `prisma migrate deploy` applies one). Seconds of wall time; tool = everything that is not "
        "the app's own commands (SSH round trips, git fetch/export, Proxmox snapshot, reading "
        "`_prisma_migrations`, the pre-migration `pg_dump`, smoke test, pruning, lock, journal).",
        md_table(head, table),
        "Memory (peak resident set, summed over processes, sampled every 0.2 s from /proc) of everything "
        "working in the new release on the standby (npm, prisma, `next build` and its workers), of the "
        "live colour's app (PM2 cluster, 2 instances of `next start`), and the live colour's /api/health "
        "latency through HAProxy before the deploy and while the standby built (2 clients):",
        md_table(["deploy", "build peak RSS", "live app RSS", "live p50 before", "live p99 before",
                  "live p50 during build", "live p99 during build", "live failed"], mem),
        "In the lab every container shares this machine's 2 cores and memory, as two colours on one "
        "Proxmox node do: the build's peak is what the standby container needs on top of its running "
        "app (the stack gives each app container 2048 MB), and the live colour's latency during the "
        "build is what users feel. `migrate` includes about 10 s that Prisma 6.19's wasm schema engine "
        "waits after its work (a timer keeps node alive); `reload` is with server.js telling PM2 "
        "\"ready\" when Next listens (without it each instance waits listen_timeout, 10 s).",
    ])


def write_section(markdown: str) -> Path:
    path = BENCH_DIR / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{START}\n## Real app deploy (Next.js 15 + Prisma)\n\n{markdown}\n{END}"
    if START in text and END in text:
        text = text[:text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser(__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    with open_bench() as bench:
        variant = _publish_migration_variant(bench)
        rows = []
        for ref in ("next-v1", variant):
            say(f"-- deploy {ref}")
            rows.append(_deploy(bench, ref))
    markdown = render(rows, when, load)
    (BENCH_DIR / "results-next.json").write_text(json.dumps({"when": when, "load": load, "deploys": rows},
                                                            indent=2) + "\n")
    print(write_section(markdown).read_text()[-4000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
