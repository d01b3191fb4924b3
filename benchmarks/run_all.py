"""`make bench`: every benchmark in ONE run, results.json written, RESULTS.md rendered from it.

    .venv/bin/python benchmarks/run_all.py            # the full run (about 15 minutes on 2 cores)
    .venv/bin/python benchmarks/run_all.py --quick    # fewer repetitions: checks the run works

As root (with `ip`, `unshare`, `nsenter`), the run gets a private lab world of its own, as the
test runner's worlds are made (tests/run.py: its own network namespace, so its own 127.0.3.x,
and its own /var/tmp/jw-lab): nothing it does touches a lab anyone else uses. The world's lab is
started on a fresh directory (`$JW_BENCH_WORLD_NAME`, default `bench`: /var/tmp/jw-lab-bench0),
and destroyed again at the end (servers stopped by their pids, files removed). Without root it
uses the shared lab (/var/tmp/jw-lab), joining it through `Lab.session()`.

In the world, in order: push to live of the real Next.js app (three pushes, which leave both
colours serving it), cutover under load, switch and rollback speed (the automation mode through
the recording Pulumi stand-in), the migration step against Prisma's own, status, and last the
estate rebuilt after losing the node (recovery time). Meanwhile this
process, outside the world, samples the machine (machine.Census): load, other lab worlds, CPU
used by everything else. A benchmark that fails is recorded as failed (the page says so) and the
others still run. Then results.json, then RESULTS.md from it (render.py). Progress on stderr.

Defaults (full run): 3 pushes, 10 cutover rounds (40 cutovers), 8 switch rounds, 3 migration
pairs, 5 status runs, 4 GET + 2 POST clients per frontend. --quick: 2 pushes, 2 cutover rounds,
2 switch rounds, 1 migration pair, 2 status runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_cutover
import bench_migrate
import bench_push
import bench_rebuild_estate
import bench_status
import bench_switch
import machine
import render
from benchlib import BENCH_DIR, PROJECT_DIR, Bench, Knobs, open_bench, say, setup_logging

log = logging.getLogger("bluegreen.bench")

SECTIONS: tuple[tuple[str, Callable[[Bench, Knobs], dict[str, Any]]], ...] = (
    ("push", bench_push.run),
    ("cutover", bench_cutover.run),
    ("switch", bench_switch.run),
    ("migrate", bench_migrate.run),
    ("status", bench_status.run),
    ("rebuild", bench_rebuild_estate.run),  # last: it destroys the lab's containers and brings them back
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions: checks the run works")
    defaults = Knobs()
    parser.add_argument("--cutover-rounds", type=int, help=f"rounds of 4 cutovers (default {defaults.cutover_rounds})")
    parser.add_argument("--switch-rounds", type=int, help=f"default {defaults.switch_rounds}")
    parser.add_argument("--migrate-pairs", type=int, help=f"default {defaults.migrate_pairs}")
    parser.add_argument("--status-repeats", type=int, help=f"default {defaults.status_repeats}")
    parser.add_argument("--no-warm-push", action="store_true", help="leave out the third push")
    parser.add_argument("--only", nargs="+", choices=[key for key, _ in SECTIONS],
                        help="only these benchmarks (push is needed by the others on a fresh lab)")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results.json")
    parser.add_argument("--page", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--shared-lab", action="store_true", help="use /var/tmp/jw-lab, not a private world")
    parser.add_argument("--inside", type=Path, help=argparse.SUPPRESS)  # the run inside the world writes here
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def knobs_of(args: argparse.Namespace) -> Knobs:
    knobs = Knobs.quick() if args.quick else Knobs()
    for name in ("cutover_rounds", "switch_rounds", "migrate_pairs", "status_repeats"):
        if getattr(args, name) is not None:
            setattr(knobs, name, getattr(args, name))
    if args.no_warm_push:
        knobs.warm_push = False
    return knobs


def passed_on(args: argparse.Namespace) -> list[str]:
    """The options the run inside the world gets (the same knobs)."""
    out = ["--quick"] if args.quick else []
    for name in ("cutover_rounds", "switch_rounds", "migrate_pairs", "status_repeats"):
        if getattr(args, name) is not None:
            out += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.no_warm_push:
        out.append("--no-warm-push")
    if args.only:
        out += ["--only", *args.only]
    if args.verbose:
        out.append("-v")
    return out


def run_benchmarks(out: Path, knobs: Knobs, only: list[str] | None) -> None:
    """Every benchmark on the lab, each one's data (or its failure) written to `out` as it ends."""
    data: dict[str, Any] = {"sections": {}, "errors": {}, "sectionSeconds": {}}
    with open_bench() as bench:
        for key, bench_run in SECTIONS:
            if only and key not in only:
                continue
            say(f"== {key}")
            started = time.monotonic()
            try:
                data["sections"][key] = bench_run(bench, knobs)
            except Exception as exc:
                say(f"== {key} FAILED: {type(exc).__name__}: {exc}")
                traceback.print_exc()
                data["errors"][key] = f"{type(exc).__name__}: {exc}"
            data["sectionSeconds"][key] = round(time.monotonic() - started, 1)
            out.write_text(json.dumps(data, indent=2, default=str))


class World:
    """A private lab world for the run: tests/run.py's World (network and mount namespaces), its
    lab destroyed by the lab's own code at the end."""

    def __init__(self) -> None:
        os.environ["JW_TEST_WORLD_NAME"] = os.environ.get("JW_BENCH_WORLD_NAME", "bench")
        sys.path.insert(0, str(PROJECT_DIR))
        from tests.run import World as TestWorld

        self.world = TestWorld(0, f"bench{os.getpid()}")
        self.log = Path(tempfile.gettempdir()) / f"jw-bench-world-{os.getpid()}.log"

    @staticmethod
    def why_not() -> str | None:
        sys.path.insert(0, str(PROJECT_DIR))
        from tests.run import can_make_worlds

        return can_make_worlds()

    @property
    def lab_dir(self) -> Path:
        return self.world.lab_dir

    def net_ns(self) -> str:
        return f"net:[{os.stat(f'/run/netns/{self.world.netns}').st_ino}]"

    def __enter__(self) -> World:
        self.world.create(self.log)
        return self

    def run(self, argv: list[str]) -> int:
        from tests.run import stop_group

        proc = subprocess.Popen(self.world.argv(*argv), cwd=PROJECT_DIR, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            say("interrupted: stopping the benchmarks in the world")
            stop_group(proc)
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            code = self.world.run([sys.executable, "-m", "bluegreen.lab", "destroy"], self.log, timeout=600)
            if code != 0:
                say(f"the world's lab was not destroyed cleanly (exit {code}); see {self.log}")
        finally:
            self.world.destroy()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    setup_logging(args.verbose)
    knobs = knobs_of(args)
    if args.inside is not None:
        run_benchmarks(args.inside, knobs, args.only)
        return 0
    command = "make bench" if os.environ.get("MAKELEVEL") else "python benchmarks/run_all.py"
    command += "".join(f" {a}" for a in passed_on(args) if a != "-v")
    results: dict[str, Any] = {"command": command, "quick": args.quick, "knobs": knobs.to_json(),
                               "git": machine.git_commit(PROJECT_DIR), "started": machine.now_iso(),
                               "machine": machine.facts()}
    started = time.monotonic()
    why_not = None if not args.shared_lab else "--shared-lab"
    why_not = why_not or World.why_not()
    with tempfile.TemporaryDirectory(prefix="bluegreen-bench-") as tmp:
        out = Path(tmp) / "sections.json"
        try:
            if why_not is None:
                world = World()
                say(f"== a private lab world for this run ({world.lab_dir})")
                census = machine.Census(exclude_labs=[world.lab_dir])
                with world:
                    census.ours_ns = world.net_ns()
                    census.start()
                    code = world.run([sys.executable, str(Path(__file__).resolve()), "--inside", str(out),
                                      *passed_on(args)])
                results["world"] = {"private": True, "labDir": str(world.lab_dir)}
            else:
                say(f"== the shared lab (no private world: {why_not})")
                census = machine.Census().start()
                run_benchmarks(out, knobs, args.only)
                code = 0
                results["world"] = {"private": False, "why": why_not}
        except KeyboardInterrupt:
            say("interrupted; results.json and RESULTS.md were not changed")
            return 130
        results["load"] = census.stop()
        if not out.exists():
            say(f"the benchmarks wrote nothing (exit {code}); results.json and RESULTS.md were not changed")
            return 1
        results.update(json.loads(out.read_text()))
    results["finished"] = machine.now_iso()
    results["seconds"] = round(time.monotonic() - started, 1)
    args.results.write_text(json.dumps(results, indent=2, default=str) + "\n")
    args.page.write_text(render.render(results))
    say(f"wrote {args.results} and {args.page} ({results['seconds'] / 60:.1f} minutes)")
    return 0 if code == 0 and not results.get("errors") else 1


if __name__ == "__main__":
    sys.exit(main())
