"""`python -m bluegreen.lab up|down|status|destroy`: the local lab from a shell."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from bluegreen.lab.lab import Lab
from bluegreen.lab.services import servers_get_default_signals
from bluegreen.model.errors import BlueGreenError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bluegreen.lab",
                                     description="The local lab: the stack `lab` on loopback addresses.")
    parser.add_argument("command", choices=("up", "down", "status", "destroy", "apply", "lose-node"),
                        help="apply: the host configuration `pulumi up` would apply, on the running lab; "
                             "lose-node: destroy the four containers' processes and data (`bluegreen "
                             "rebuild estate` brings them back)")
    parser.add_argument("--stack", default="lab", help="the stack to run locally (default: lab)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--legacy", action="store_true",
                        help="up: build the estate as it runs today, by hand (bluegreen/lab/legacy.py)")
    parser.add_argument("--reset", action="store_true", help="with --legacy: rebuild it from scratch")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step to stderr")
    args = parser.parse_args(argv)
    servers_get_default_signals()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("paramiko").setLevel(logging.WARNING)
    try:
        if args.legacy and args.command == "up":
            from bluegreen.lab.legacy import LegacyLab

            lab: Lab = LegacyLab(stack=args.stack, reset=args.reset)
        else:
            lab = Lab(stack=args.stack)
        if args.command == "up":
            info = lab.up()
            if args.json:
                print(json.dumps(info.to_json(), indent=2))
            else:
                print(f"lab up in {info.lab_dir}")
                print(f"  started: {', '.join(info.started) or 'nothing (all running)'}")
                print(f"  reused:  {', '.join(info.reused) or 'nothing'}")
                print(f"  public:  {info.public_url}   preview: {info.preview_url}")
                print(f"  proxmox: {info.proxmox_endpoint}")
                for host in info.ssh_hosts:
                    print(f"  ssh:     {host}")
        elif args.command == "apply":
            changes = lab.apply()
            if args.json:
                print(json.dumps({"changes": changes}, indent=2))
            else:
                print("\n".join(changes) if changes else "nothing to change: every host already matches")
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
    return 0


def _lose_node(lab: Lab, *, as_json: bool) -> None:
    from bluegreen.lab.loss import lose_node

    done = lose_node(lab)
    if as_json:
        print(json.dumps({"done": done}, indent=2))
    else:
        print("\n".join(done) if done else "nothing to lose: no container runs")


if __name__ == "__main__":
    sys.exit(main())
