"""Run every benchmark on the local lab and rewrite benchmarks/RESULTS.md with the figures.

    .venv/bin/python benchmarks/run_all.py            # the full run (about 12 minutes on 2 cores)
    .venv/bin/python benchmarks/run_all.py --quick    # fewer repetitions, to check it works

Joins the lab (starting it if nothing runs, stopping it again afterwards), works on a private
copy of the project, deploys what both colours need first, then runs the cutover, switch and
rollback, emergency-versus-bare-flip, deploy and status benchmarks in turn. Progress on stderr;
RESULTS.md and results.json are written only after every benchmark finished.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import bench_cutover
import bench_deploy
import bench_emergency
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

from bluegreen.model.errors import BlueGreenError


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


def reading(sections: list[Section], info: dict[str, str]) -> str:
    """What the figures say, computed from them (so it stays true when the run is repeated)."""
    data = {s.title: s.data for s in sections}
    lines = []
    methods = data.get("Cutover under load", {}).get("methods", [])
    if len(methods) >= 2:
        ours, emergency, others = methods[0], methods[1], methods[2:]
        lines.append(
            f"- Our switch moved live traffic {ours['cutovers'] + emergency['cutovers']} times "
            f"({ours['cutovers']} normal, {emergency['cutovers']} emergency) under "
            f"{ours['requests'] + emergency['requests']} requests: {ours['failed'] + emergency['failed']} "
            f"failed, {(ours['oldColourAfterReturn'] or 0) + (emergency['oldColourAfterReturn'] or 0)} "
            f"answers from the old colour once the call had returned; p99 latency "
            f"{_ms(ours['p99Before'])} before and {_ms(ours['p99During'])} while switching.")
        noisy = [m["method"] for m in methods
                 if m["p99Before"] is not None and m["p99During"] is not None and m["p99Before"] > m["p99During"]]
        if noisy:
            lines.append(
                f"- For {', '.join(noisy)} the p99 before cutting over was higher than during it: other "
                "work on this shared machine (see the load average) moved the tail more than the "
                "cutovers did. Compare failures first; compare latencies only where before < during.")
        for other in others:
            per = other["failedPer1000"] or 0.0
            lines.append(
                f"- {other['method']}: {other['failed']} failed in {other['cutovers']} cutovers "
                f"({per:.2f} per 1000 requests, about {other['failed'] / max(other['cutovers'], 1):.1f} "
                f"per cutover); p99 while cutting over {_ms(other['p99During'])} against ours "
                f"{_ms(ours['p99During'])}"
                + (f"; the new colour answered {_ms(other['toNewMedian'])} after the start (ours "
                   f"{_ms(ours['toNewMedian'])})." if other["toNewMedian"] is not None else "."))
    operations = data.get("Switch and rollback latency", {}).get("operations", [])
    for op in operations:
        if not op["connectsMedian"]:
            lines.append(
                f"- `{op['operation']}` talks to the load balancer over its own OpenSSH session "
                "(bluegreen/emergency.py), which this benchmark's timed paramiko executors do not see; "
                "the issue-12 section below measures it against a bare flip.")
            continue
        lines.append(
            f"- `{op['operation']}` runs about {op['commandsMedian']:.0f} SSH commands and file transfers "
            f"over {op['connectsMedian']:.0f} connections, one after another; they take "
            f"{_ms(op['sshTotalMedian'])} of its {_ms(op['wallMedian'])}.")
    ssh_cost = info.get("one SSH command (`true`) on an open connection, median")
    rc_cost = info.get("of which root's ~/.bashrc, which bash runs for each command sshd starts")
    if operations and ssh_cost:
        lines.append(
            f"- One SSH command costs {ssh_cost} here, about {rc_cost} of it in this machine's root "
            "~/.bashrc, which bash runs for every command sshd starts (the lab's hosts share this "
            "machine's root account); a container with a stock ~/.bashrc spends next to nothing there. "
            "The tool's wall times are these round trips: the routing change itself is one runtime "
            "`set map` inside HAProxy.")
    status = data.get("Status", {})
    if status:
        lines.append(
            f"- `status` asks its probes in parallel: {_ms(status['wallMedian'])}, against "
            f"{_ms(status['sumOfProbes'])} for all probes one after another and "
            f"{_ms(status['slowestMedian'])} for the slowest alone; the probes' SSH sessions, each "
            f"starting a remote shell, share the machine's {info.get('cpus', '?')} CPUs.")
    lines.append(
        "- This run shared the machine's 2 CPU cores with 7 other labs busy with their own tests (see "
        "the load averages under Machine): absolute times carry that contention; ratios against a "
        "baseline run side by side are the fairer reading.")
    return "\n".join(lines)


def write_results(sections: list[Section], info: dict[str, str], seconds: float, command: str,
                  out: Path) -> None:
    headline = "\n".join(f"- {line}" for s in sections for line in s.headline)
    body = "\n\n".join(f"## {s.title}\n\n{s.markdown}" for s in sections)
    out.write_text(
        "# Benchmark results\n\n"
        f"Written by `{command}` from one run on the local lab ({seconds / 60:.1f} minutes, "
        f"{info['date']}). Every figure below comes from that run; rerun the command to refresh them.\n\n"
        f"## Headline\n\n{headline}\n\n"
        f"## Reading the figures\n\n{reading(sections, info)}\n\n"
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
    switches, config_reloads, pm2_reloads, repeats, cli_repeats = (
        (10, 4, 2, 3, 2) if args.quick else (50, 20, 10, 10, 5))
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
            sections = [bench_cutover.run(bench, switches=switches, config_reloads=config_reloads,
                                          pm2_reloads=pm2_reloads, shape=shape)]
            say("== switch and rollback latency")
            sections.append(bench_switch.run(bench, repeats=repeats, cli_repeats=cli_repeats))
            say("== emergency and switch speed against a bare flip (issue 12)")
            sections.append(bench_emergency.run(bench, repeats=repeats, normal_repeats=cli_repeats))
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
