"""`python -m bluegreen.lab up|down|status|reset|destroy|apply|lose-node`: the local lab from a shell."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from typing import Any

from bluegreen.lab.found import Summary, format_summary
from bluegreen.lab.lab import Lab
from bluegreen.lab.paths import LabInfo
from bluegreen.lab.services import servers_get_default_signals
from bluegreen.model.errors import BlueGreenError

PROG = "python -m bluegreen.lab"
# Each command: (one line of help, what it does, an example). `make lab-up`, `make lab-down`,
# `make lab-reset`, `make lab-legacy` and `make lab-status` run the same.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "up": ("start the lab (or the legacy estate with --legacy) and say what it found",
           "Starts every process the lab needs (reusing those that run), applies the host configuration "
           "`pulumi up` would, and says what it found, what the lab is now and the command that moves on. "
           "Over the legacy estate it builds a new lab estate.",
           f"{PROG} up\n  {PROG} up --legacy --reset     # the estate as it runs today, from scratch"),
    "down": ("stop every process the lab started, by PID (its files stay)",
             "Stops every process the lab started, by the PID it recorded; nothing else. `up` starts them "
             "again as they were.", f"{PROG} down"),
    "status": ("every process of the lab: running or stopped, and where it listens", "",
               f"{PROG} status"),
    "reset": ("any lab state back to a new lab (what `make lab-reset` runs)",
              "From any state (the legacy estate, adopted or not, half-way through the takeover rehearsal, "
              "after lose-node, after the demo): stops the lab by PID, removes the estate's files, data, "
              "dumps, declared colour and adopted stack, then `up`. Keys, CA and secrets stay.",
              f"{PROG} reset"),
    "destroy": ("stop the lab and remove every file of it", "Like down, then /var/tmp/jw-lab is emptied "
                "(keys, CA and secrets too). Refused while test sessions use the lab.", f"{PROG} destroy"),
    "apply": ("apply the host configuration `pulumi up` would, on the running lab",
              "What `pulumi up` applies to each host, from the stack as it is now (the adopted one after "
              "`bluegreen adopt`); prints what changed.", f"{PROG} apply"),
    "lose-node": ("destroy the four containers' processes and data (then `bluegreen rebuild estate`)",
                  "The stand-in for losing the Proxmox node: the containers' processes stop, the node "
                  "forgets them, their disks are deleted; the backup host stays.",
                  f"{PROG} lose-node\n  bluegreen --stack lab rebuild estate --yes"),
}


def _common(parser: argparse.ArgumentParser, top: bool) -> None:
    extra: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument("--stack", help="the stack to run locally (default: lab)",
                        **({"default": "lab"} if top else extra))
    parser.add_argument("--json", action="store_true", help="print the result as JSON", **extra)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step to stderr", **extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="The local lab: the stack `lab` on loopback addresses (docs/OPERATIONS.md).",
        epilog=f"Example:\n  {PROG} up\n  {PROG} reset", formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, description, example) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=textwrap.fill(description or summary, 88),
                           epilog=f"Example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)
        _common(p, top=False)
        if name == "up":
            p.add_argument("--legacy", action="store_true",
                           help="build the estate as it runs today, by hand (bluegreen/lab/legacy.py)")
            p.add_argument("--reset", action="store_true", help="with --legacy: rebuild it from scratch")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    servers_get_default_signals()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("paramiko").setLevel(logging.WARNING)
    try:
        return _run(args)
    except BlueGreenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (`| head`) went away: not an error of ours, and no traceback for it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "up" and args.legacy:
        from bluegreen.lab.legacy import LegacyLab

        lab: Lab = LegacyLab(stack=args.stack, reset=args.reset)
    else:
        lab = Lab(stack=args.stack)
    if args.command in ("up", "reset"):
        _print_up(lab.up() if args.command == "up" else lab.reset(), as_json=args.json)
    elif args.command == "apply":
        changes = lab.apply()
        print(json.dumps({"changes": changes}, indent=2) if args.json else
              "\n".join(changes) if changes else "nothing to change: every host already matches")
    elif args.command == "lose-node":
        _lose_node(lab, as_json=args.json)
    elif args.command in ("down", "destroy"):
        stopped = lab.down() if args.command == "down" else lab.destroy()
        if args.json:
            print(json.dumps({"stopped": stopped}, indent=2))
        else:
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
            if args.command == "destroy":
                print(f"removed the lab's files in {lab.paths.root}")
    else:
        statuses = lab.status()
        if args.json:
            print(json.dumps([s.to_json() for s in statuses], indent=2))
        else:
            width = max(len(s.name) for s in statuses)
            for s in statuses:
                state = f"running (pid {s.pid})" if s.running else "stopped"
                where = f"  {s.listen}" if s.listen else ""
                print(f"{s.name:<{width}}  {state:<20}{where}")
    return 0


def _print_up(info: LabInfo, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(info.to_json(), indent=2))
        return
    print(f"lab up in {info.lab_dir}")
    print(f"  started: {', '.join(info.started) or 'nothing (all running)'}")
    print(f"  reused:  {', '.join(info.reused) or 'nothing'}")
    print(f"  public:  {info.public_url}   preview: {info.preview_url}")
    print(f"  proxmox: {info.proxmox_endpoint}")
    for host in info.ssh_hosts:
        print(f"  ssh:     {host}")
    if info.state:
        print("\n".join(format_summary(Summary(info.found, info.state, info.next_step))))


def _lose_node(lab: Lab, *, as_json: bool) -> None:
    from bluegreen.lab.loss import lose_node

    done = lose_node(lab)
    if as_json:
        print(json.dumps({"done": done}, indent=2))
    else:
        print("\n".join(done) if done else "nothing to lose: no container runs")
        print("next: `bluegreen --stack lab rebuild estate --yes` brings the estate back from the off-host "
              "copies (or `make lab-reset`: a new lab)")


if __name__ == "__main__":
    sys.exit(main())
