"""`bluegreen retire-legacy`: the estate's old switch script replaced by the thin one (ops/retire.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bluegreen.faces.cli_support import Output, cli_estate, confirm
from bluegreen.faces.terminal import TerminalProgress
from bluegreen.model.topology import Topology
from bluegreen.ops.retire import replacement_json, retire_legacy


def cmd_retire_legacy(args: argparse.Namespace, t: Topology, o: Output, p: TerminalProgress) -> int:
    ide = Path(args.ide_config).expanduser() if args.ide_config else None
    estate = cli_estate(t, p, o)
    if not args.dry_run:
        preview = retire_legacy(estate, ide_config=ide, dry_run=True)
        for line in [*preview.found.notes, *(f"will {c}" for c in preview.changes)]:
            o.say(line)
        if preview.changes:
            confirm("replace the old switch script on the load balancer?", yes=args.yes, stdin=sys.stdin,
                    err=o.err)
    result = retire_legacy(estate, ide_config=ide, dry_run=args.dry_run)
    lines = list(result.found.notes) if args.dry_run else []
    if not result.changes:
        lines.append(f"{result.found.script} is already bluegreen's thin script: nothing to do")
    else:
        verb = "would" if args.dry_run else "did"
        lines += [f"{verb}: {c}" for c in result.changes]
    if result.check is not None:
        lines.append(f"check: `jw-deployment-state.sh get prod` answers {result.check}")
    if result.found.ide_entries or result.found.ide_config:
        lines += ["replace the old entry in your IDE's mcpServers with (docs/MCP.md):", replacement_json(result)]
    o.result(result.to_json(), "\n".join(lines))
    return 0
