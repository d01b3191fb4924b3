"""Push to live: the real Next.js 15 + Prisma app (`sample-next/`) deployed and switched to, end
to end through the CLI, and where the seconds go.

Each push is two commands, run back to back as a person runs them:

    python -m bluegreen deploy --ref REF --migrate --yes      (to the standby)
    python -m bluegreen switch --yes                          (checks, flip, verify, watch)

The pushes, on a fresh lab (no release anywhere):
1. `next-v1` to the standby: the first release there (`npm ci`, the initial migration);
2. `next-v2` to the other colour: its first release too, and ONE small migration (a column);
3. `next-v2` back to the first colour (`--no-warm-push` leaves it out): dependencies reused
   (same lockfile), nothing to migrate: the everyday push.
After them both colours serve the real app, which the cutover benchmark needs.

Per step, the CLI's own progress lines (`ok <step> (12.3s)`): fetch, install, build,
migrations (and inside it the dump, its verification, the off-host copies, `prisma migrate
deploy`), point current, PM2 reload, the health gate, the smoke test, and the switch's checks,
flip, verification and watch. Meanwhile, when the live colour serves: the resident memory of
everything working in the new release (npm, prisma, `next build`) and of the live app, sampled
from /proc every 0.2 s, and the live colour's latency through HAProxy (2 clients on
/api/health) before and during the build.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from typing import Any

from benchlib import Bench, Knobs, Step, cli, generic_step, open_bench, percentile, say, setup_logging

from bluegreen.hosts import health
from bluegreen.lab.loadgen import RequestLoop
from bluegreen.model.topology import other_color

PAGE = 4096


def _rss_mb(pid: str) -> float:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def _link(pid: str, what: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/{what}")
    except OSError:
        return ""


class MemorySampler:
    """Peak summed RSS of the processes working in a new release under `releases`, and of the
    live colour's app processes (cwd under `live_releases`)."""

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
        # Other labs use the same paths in their own mount namespaces: count only this one's.
        own = _link("self", "ns/mnt")
        while not self._stop.is_set():
            build = live = 0.0
            for pid in filter(str.isdigit, os.listdir("/proc")):
                if _link(pid, "ns/mnt") != own:
                    continue
                cwd = _link(pid, "cwd")
                if cwd.startswith(self.releases):
                    if cwd[len(self.releases):].split("/", 1)[0] not in self.before:
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


_HOST_DETAIL = ((re.compile(r" \(as [^()]*(\([^()]*\))?[^()]*\)$"), " (as the deploy user)"),
                (re.compile(r"^snapshot CT \d+$"), "snapshot CT <vmid>"))


def _steps(steps: list[Step], ref: str) -> list[dict[str, Any]]:
    """The steps with what differs between hosts and refs taken out of their names, so the pushes'
    steps line up (`fetch <ref>`, `reload PM2 on <colour>`, `snapshot CT <vmid>`)."""
    out = []
    for s in steps:
        name = generic_step(s.name).replace(ref, "<ref>")
        for pattern, replacement in _HOST_DETAIL:
            name = pattern.sub(replacement, name)
        out.append({**s.to_json(), "name": name})
    return out


def _serves(bench: Bench, color: str) -> bool:
    t = bench.topology()
    host = t.app_host(color)
    probe = health.http_probe(f"http://{host.ip}:{t.app.port}{t.app.health_path}", expect_status=t.app.health_status)
    return probe.ok


def push(bench: Bench, ref: str, kind: str) -> dict[str, Any]:
    t = bench.topology()
    live = bench.live_color()
    standby = other_color(live)
    live_serves = _serves(bench, live)
    say(f"-- push {ref} to {standby} ({kind})")
    releases = t.app_host(standby).path(f"{t.app.dir}/releases")
    live_releases = t.app_host(live).path(f"{t.app.dir}/releases")
    latency: dict[str, Any] = {}
    with MemorySampler(releases, live_releases) as memory:
        loop = RequestLoop.visitor(t, t.app.health_path, clients=2, max_seconds=1800) if live_serves else None
        if loop is not None:
            loop.start()
            loop.wait_for(50, timeout=60)
        deployed = cli(bench, "deploy", "--ref", ref, "--migrate", "--yes", timeout=1800)
        if loop is not None:
            report = loop.stop()
            build = next((s for s in deployed.steps if s.name == "build"), None)
            b0, b1 = (build.started, build.ended) if build else (None, None)

            def p(q: float, since: float | None, until: float | None) -> float | None:
                ok = [s.latency_ms for s in report.samples if s.ok and (since is None or s.started >= since)
                      and (until is None or s.started < until)]
                return None if not ok else round(percentile(ok, q) or 0.0, 1)

            latency = {"p50Before": p(50, None, deployed.started), "p99Before": p(99, None, deployed.started),
                       "p50DuringBuild": p(50, b0, b1), "p99DuringBuild": p(99, b0, b1),
                       "requests": report.total, "failed": len(report.failures), "retried": report.retried}
    switched = cli(bench, "switch", "--yes", timeout=600)
    d, s = deployed.data or {}, switched.data or {}
    if not d.get("ok") or not s.get("ok"):
        raise RuntimeError(f"push of {ref}: deploy ok={d.get('ok')} ({d.get('error')}), "
                           f"switch ok={s.get('ok')} ({s.get('error')})")
    return {
        "ref": ref, "kind": kind, "colour": d.get("colour"), "dependencies": d.get("dependencies"),
        "migrationsApplied": d.get("migrationsApplied") or [],
        "deploy": {"wall": round(deployed.wall, 2), "productSeconds": d.get("durationSeconds"),
                   "steps": _steps(deployed.steps, ref)},
        "switch": {"wall": round(switched.wall, 2), "flipMs": s.get("flipMs"),
                   "watchedSeconds": s.get("watchedSeconds"),
                   "steps": _steps(switched.steps, ref)},
        "total": round(deployed.wall + switched.wall, 2),
        "peakBuildRssMb": round(memory.peak_build), "peakLiveRssMb": round(memory.peak_live),
        "live": latency,
    }


def run(bench: Bench, knobs: Knobs) -> dict[str, Any]:
    plan = [("next-v1", "first release on that colour, initial migration"),
            ("next-v2", "first release on that colour, one small migration")]
    if knobs.warm_push:
        plan.append(("next-v2", "dependencies reused, nothing to migrate"))
    return {"pushes": [push(bench, ref, kind) for ref, kind in plan]}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-warm-push", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    with open_bench() as bench:
        print(json.dumps(run(bench, Knobs(warm_push=not args.no_warm_push)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
