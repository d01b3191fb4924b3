"""`bluegreen rebuild estate`: the plan shown (and refused when it has problems), then the run.
Formatting only; the work is in `ops.rebuild_estate`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bluegreen.faces.cli_support import Output, cli_estate, confirm
from bluegreen.faces.terminal import TerminalProgress
from bluegreen.model.dumps import human_bytes
from bluegreen.model.topology import Topology
from bluegreen.ops.rebuild_estate import RebuildRefused, plan_rebuild_estate, rebuild_estate


def cmd_rebuild_estate(args: argparse.Namespace, t: Topology, o: Output, p: TerminalProgress) -> int:
    estate = cli_estate(t, p, o)
    replace = [name for item in args.replace for name in item.split(",") if name]
    plan = plan_rebuild_estate(estate, backup=args.backup, replace=replace, ref=args.ref)
    o.say(format_plan(plan.to_json()))
    if plan.problems:
        raise RebuildRefused("refusing to rebuild the estate: " + "; ".join(plan.problems))
    confirm("rebuild the whole estate as shown?", yes=args.yes, stdin=sys.stdin, err=o.err)
    result = rebuild_estate(estate, plan).to_json()
    o.result(result, format_result(result))
    return 0


def format_plan(plan: dict[str, Any]) -> str:
    lines = [f"rebuild the estate ({plan['backend']}):"]
    for c in plan["containers"]:
        serving = f", answering: {', '.join(c['serving'])}" if c["serving"] else ""
        lines.append(f"  CT {c['vmid']:<5} {c['label']:<32} {c['state']:<8} -> {c['action']}{serving}")
    backup = plan.get("backup")
    if backup:
        lines.append(f"  database from {backup['file']} ({human_bytes(int(backup['bytes']))}, {backup['kind']}, "
                     f"taken {backup['createdAt']}; sha256 {str(backup['sha256'])[:16]}..., re-read on the backup "
                     "host)")
    journal = plan.get("journal")
    if journal:
        lines.append(f"  journal from {journal['file']}: {plan['historyEntries']} history entries, live colour "
                     f"{plan['live']}")
    if plan.get("ref"):
        lines.append(f"  release {str(plan['ref'])[:12]}" + (f" ({plan['release']})" if plan.get("release") else ""))
    lines.append("steps:")
    lines += [f"  - {step}" for step in plan["steps"]]
    lines += [f"  PROBLEM: {problem}" for problem in plan["problems"]]
    return "\n".join(lines)


def format_result(data: dict[str, Any]) -> str:
    db = data.get("database") or {}
    journal = data.get("journal") or {}
    phases = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in data["phases"].items())
    lines = [f"the estate is back in {data['durationSeconds']:.0f}s ({phases}); visitors were served again "
             f"after {data['servingAfterSeconds']:.0f}s:",
             f"  database restored from {db.get('file')} ({len(db.get('migrationsApplied') or [])} migrations "
             "applied)",
             f"  journal restored from {journal.get('copy')} ({journal.get('entries')} history entries)",
             f"  {data['live']} is live on {str(data['sha'])[:7]}; both colours serve it"]
    lines += [f"  new host key of {k['host']}: {k['type']} {k['fingerprint']}" for k in data["hostKeys"]]
    return "\n".join(lines)
