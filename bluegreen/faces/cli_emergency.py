"""`switch --emergency` and `rollback --emergency`: straight to the load balancer.

Kept apart from the other commands so that what they import stays light: the emergency path
starts, connects and flips before anything else the CLI could load.
"""

from __future__ import annotations

import argparse
import sys
import time

from bluegreen.faces.cli_support import Output, confirm
from bluegreen.faces.terminal import TerminalProgress
from bluegreen.model.lock import default_holder
from bluegreen.model.topology import Topology
from bluegreen.ops.emergency import run


def cmd_emergency(args: argparse.Namespace, t: Topology, o: Output, p: TerminalProgress, *, rollback: bool) -> int:
    """Straight to the load balancer: no estate handle, no plan round trips (ops/emergency.py)."""
    what = "roll back" if rollback else "switch"
    to_color = getattr(args, "to_color", None)
    where = f"to {to_color}" if to_color else ("to the colour live before the last switch" if rollback
                                                 else "to the other colour")
    confirm(f"EMERGENCY: {what} live traffic {where}, no checks?", yes=args.yes, stdin=sys.stdin, err=o.err)
    started = time.time()
    result = run(t, rollback=rollback, progress=p, to_color=to_color)
    if t.events.webhooks:  # imported only when needed: the emergency path stays light
        from bluegreen.hosts.events import publish, switch_event, switch_kind

        publish(t, switch_event(switch_kind(emergency=True, reason="rollback" if rollback else "switch"), t,
                                default_holder(), started, time.time(), emergency=True, result=result),
                o.secrets)
    data = result.to_json()
    if result.reconcile:
        o.say(f"the stack still declares {result.declared}; reconcile with: {result.reconcile}")
    if result.noop:
        done = f"; recorded the switch found unrecorded in {result.recorded_in}" if result.recorded_in else ""
        o.result(data, f"{result.color} is already live: nothing moved (emergency{done})"
                 + (f"; but: {result.error}" if result.error else ""))
        return 0 if result.ok else 1
    if result.ok:
        o.result(data, f"{result.color} is live (emergency; flip to first answer {result.flip_ms:.0f} ms; "
                 f"recorded in {result.recorded_in})")
        return 0
    o.result(data, f"traffic moved: {result.color} is live, but: {result.error}")
    return 1
