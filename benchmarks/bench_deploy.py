"""Deploy time: fresh dependencies against reused ones, and the tool's own overhead.

Four deploys to the standby, in order (the two refs swap places when the standby already serves
the variant):
1. branch `bench-lockfile` (main with package-lock.json re-serialised: same dependencies, other
   bytes), so the lockfile differs from the standby's release and `npm ci` installs from scratch;
2. the same branch again: lockfile unchanged, node_modules hard-linked from the previous release;
3. `main`: the lockfile differs again, a second cold deploy;
4. `main` again: warm.
The tool's overhead is the wall time minus the install and build steps (the app's own work):
git fetch and export, the Proxmox snapshot, migrations check, PM2 reload, health wait, smoke test,
pruning, the lock and the journal.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from benchlib import (
    Bench,
    BenchError,
    Section,
    StepTree,
    arg_parser,
    ensure_deployed,
    fmt_num,
    generic_step,
    md_table,
    open_bench,
    say,
    setup_logging,
    when_unlocked,
)

from bluegreen.lab.repo import publish_variant
from bluegreen.model.topology import other_color
from bluegreen.ops.deploy import deploy

VARIANT = "bench-lockfile"
INSTALL_STEP = "install dependencies"
BUILD_STEP = "build"


def publish_lockfile_variant(bench: Bench) -> str:
    """`main` with the same dependencies written with other whitespace: `cmp` sees a new lockfile."""
    repo = bench.lab.paths.sample_repo
    lock = json.loads((bench.lab.project_dir / "sample-app" / "package-lock.json").read_text())
    text = json.dumps(lock, indent=4) + "\n"
    return publish_variant(repo, base="main", branch=VARIANT, changes={"package-lock.json": text},
                           message="bench: package-lock.json re-serialised (same dependencies)")


def _deploy(bench: Bench, ref: str, expect: str) -> dict[str, Any]:
    tree = StepTree()
    progress = tree.progress
    started = time.perf_counter()
    result = when_unlocked(lambda: deploy(bench.service(progress=progress), ref, migrate=True))
    wall = time.perf_counter() - started
    if result.dependencies != expect:
        raise BenchError(f"deploy of {ref} {result.dependencies or 'did nothing with'} dependencies, "
                         f"expected {expect}: the measurement would be mislabelled")
    steps = {generic_step(s.name).replace(ref, "<ref>"): s.seconds for s in progress.steps}
    steps["(outside the steps: connections, lock, journal)"] = wall - sum(s.seconds for s in tree.top_level())
    app_work = steps.get(INSTALL_STEP, 0.0) + steps.get(BUILD_STEP, 0.0)
    return {"ref": ref, "dependencies": result.dependencies, "colour": result.color, "wall": wall,
            "install": steps.get(INSTALL_STEP), "build": steps.get(BUILD_STEP),
            "overhead": wall - app_work, "steps": steps, "release": result.release}


def run(bench: Bench) -> Section:
    served = ensure_deployed(bench)
    publish_lockfile_variant(bench)
    standby = other_color(bench.live_color())
    # Start with the ref whose lockfile differs from what the standby serves, or the first
    # deploy would reuse its dependencies and be no cold deploy at all.
    first, second = (("main", VARIANT) if served.get(standby) == VARIANT else (VARIANT, "main"))
    plan = [(first, "installed"), (first, "reused"), (second, "installed"), (second, "reused")]
    deploys = []
    for ref, expect in plan:
        say(f"-- deploy {ref} (dependencies expected {expect})")
        deploys.append(_deploy(bench, ref, expect))
    cold = [d for d in deploys if d["dependencies"] == "installed"]
    warm = [d for d in deploys if d["dependencies"] == "reused"]

    def mean(rows: list[dict[str, Any]], key: str) -> float:
        return sum(r[key] or 0.0 for r in rows) / len(rows)

    summary = {"coldWall": mean(cold, "wall"), "warmWall": mean(warm, "wall"),
               "coldInstall": mean(cold, "install"), "warmInstall": mean(warm, "install"),
               "overhead": mean(deploys, "overhead")}
    return Section("Deploy", render(deploys, summary), data={"deploys": deploys, **summary},
                   headline=[f"deploy: {summary['coldWall']:.1f} s with a fresh `npm ci`, "
                             f"{summary['warmWall']:.1f} s with dependencies reused; the tool's own "
                             f"overhead {summary['overhead']:.1f} s"])


def render(deploys: list[dict[str, Any]], summary: dict[str, float]) -> str:
    rows = [[i + 1, d["ref"], d["dependencies"], d["colour"], fmt_num(d["wall"], 2, " s"),
             fmt_num(d["install"], 2, " s"), fmt_num(d["build"], 2, " s"), fmt_num(d["overhead"], 2, " s")]
            for i, d in enumerate(deploys)]
    step_names = list(dict.fromkeys(name for d in deploys for name in d["steps"]))
    steps = [[name, *(fmt_num(d["steps"].get(name), 2, " s") for d in deploys)] for name in step_names]
    return "\n\n".join([
        "Each deploy: `Service.deploy(ref, migrate=True)` with its Proxmox snapshot (fakepve), to the "
        "standby, no switch in between. Overhead = wall time - install - build.",
        md_table(["#", "ref", "dependencies", "to", "wall", "install", "build", "overhead"], rows),
        f"Mean: cold {summary['coldWall']:.2f} s (install {summary['coldInstall']:.2f} s), warm "
        f"{summary['warmWall']:.2f} s (install {summary['warmInstall']:.2f} s); overhead "
        f"{summary['overhead']:.2f} s per deploy.",
        "Every step (seconds; nested steps such as the database backup are inside their parent):",
        md_table(["step", *(f"#{i + 1}" for i in range(len(deploys)))], steps),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser(__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    with open_bench() as bench:
        section = run(bench)
    print(f"## {section.title}\n\n{section.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
