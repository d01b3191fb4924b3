"""Run every benchmark on the local lab and rewrite benchmarks/RESULTS.md with the figures.

    .venv/bin/python benchmarks/run_all.py            # the full run (a few minutes)
    .venv/bin/python benchmarks/run_all.py --quick    # fewer repetitions, to check it works

Joins the lab (starting it if nothing runs, stopping it again afterwards), works on a private
copy of the project, deploys what both colours need first, then runs the cutover, switch and
rollback, deploy and status benchmarks in turn. Progress on stderr; RESULTS.md and results.json
are written only after every benchmark finished.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import bench_cutover
import bench_deploy
import bench_status
import bench_switch
from benchlib import (
    BENCH_DIR,
    Section,
    arg_parser,
    ensure_deployed,
    load_average,
    machine_info,
    machine_table,
    open_bench,
    say,
    setup_logging,
    ssh_command_cost,
)

from bluegreen.errors import BlueGreenError


def write_results(sections: list[Section], info: dict[str, str], seconds: float, command: str,
                  out: Path) -> None:
    headline = "\n".join(f"- {line}" for s in sections for line in s.headline)
    body = "\n\n".join(f"## {s.title}\n\n{s.markdown}" for s in sections)
    out.write_text(
        "# Benchmark results\n\n"
        f"Written by `{command}` from one run on the local lab ({seconds / 60:.1f} minutes, "
        f"{info['date']}). Every figure below comes from that run; rerun the command to refresh them.\n\n"
        f"## Headline\n\n{headline}\n\n"
        f"## Machine\n\n{machine_table(info)}\n\n"
        "All servers are real and local (loopback addresses): HAProxy, sshd per host, PostgreSQL, "
        "PM2 with the sample app, fakepve for the Proxmox API.\n\n"
        f"{body}\n")
    (out.parent / "results.json").write_text(json.dumps(
        {"machine": info, "seconds": seconds, "sections": {s.title: s.data for s in sections}},
        indent=2, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser(__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions: checks the run works; not for RESULTS.md")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--pause", type=float, default=0.02, help="each client's think time (s)")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    switches, reloads, repeats, cli_repeats = (10, 4, 3, 2) if args.quick else (50, 20, 10, 5)
    started = time.monotonic()
    try:
        info = machine_info()
        info["load average (1/5/15 min) at start"] = load_average()
        with open_bench() as bench:
            say("== making sure both colours serve a release")
            ensure_deployed(bench)
            info.update(ssh_command_cost(bench))
            say("== cutover under load")
            shape = bench_cutover.LoadShape(args.clients, args.pause)
            sections = [bench_cutover.run(bench, switches=switches, reloads=reloads, shape=shape)]
            say("== switch and rollback latency")
            sections.append(bench_switch.run(bench, repeats=repeats, cli_repeats=cli_repeats))
            say("== deploy")
            sections.append(bench_deploy.run(bench))
            say("== status")
            sections.append(bench_status.run(bench, repeats=repeats))
    except BlueGreenError as exc:
        say(f"benchmark failed: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted; RESULTS.md was not changed")
        return 130
    info["load average (1/5/15 min) at end"] = load_average()
    command = "python benchmarks/run_all.py" + (" --quick" if args.quick else "")
    write_results(sections, info, time.monotonic() - started, command, args.output)
    for section in sections:
        print(f"## {section.title}\n\n{section.markdown}\n")
    say(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
