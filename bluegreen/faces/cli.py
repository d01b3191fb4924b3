"""`bluegreen`: the command line over the operations (`bluegreen.ops`).

stdout carries results only (JSON with --json); people read stderr. Exit codes: 0 success,
1 operational failure, 2 bad input. No traceback for a foreseeable failure.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

from bluegreen.faces.cli_help import document
from bluegreen.faces.cli_support import (
    DEFAULT_STACK_ENV,
    Output,
    RedactingStream,
    hint_for,
    redact_logs,
    stack_name,
)
from bluegreen.faces.terminal import TerminalProgress
from bluegreen.model.errors import BlueGreenError, ConfigError
from bluegreen.model.sensitive import SecretSet, redact
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import Topology
from bluegreen.ops.signals import raise_on_sigterm

_P = TypeVar("_P", bound=argparse.ArgumentParser)


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad usage already; make its message match ours."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"bluegreen: error: {message}\n")
        raise SystemExit(2)


def _global_options(parser: _P, top: bool) -> _P:
    # Global options are accepted before or after the command; the copies on each command
    # default to SUPPRESS so they never overwrite a value given before the command.
    extra: dict[str, object] = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument("--cwd", metavar="DIR", help="the Pulumi project directory (default: .)",
                        **extra)  # type: ignore[arg-type]
    parser.add_argument("--stack", "-s", metavar="NAME",
                        help=f"stack name (default: ${DEFAULT_STACK_ENV} or prod)",
                        **extra)  # type: ignore[arg-type]
    flag: dict[str, object] = {"action": "store_true", **extra}
    parser.add_argument("--json", help="machine-readable result on stdout", **flag)  # type: ignore[arg-type]
    parser.add_argument("--verbose", "-v", help="debug logging on stderr", **flag)  # type: ignore[arg-type]
    return parser


def build_parser() -> argparse.ArgumentParser:
    common = _global_options(_Parser(add_help=False), top=False)
    p = _global_options(_Parser(prog="bluegreen",
                                description="Blue-green deploys of the JW Attendant Scheduler on Proxmox.",
                                epilog="Example (on the local lab, after `make demo`):\n"
                                       "  bluegreen status --stack lab\n"
                                       "`bluegreen COMMAND --help` says what a command does, with an example.",
                                formatter_class=argparse.RawDescriptionHelpFormatter),
                        top=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    _operation_parsers(sub, common)
    _estate_parsers(sub, common)
    _database_parsers(sub, common)
    document(p)
    return p


def _operation_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Deploy, switch, rollback, rebuild, and what they leave behind (status, history, lock)."""
    sub.add_parser("status", parents=[common], help="live and standby colours, health, releases")
    d = sub.add_parser("deploy", parents=[common], help="deploy a git ref to the standby colour")
    d.add_argument("--ref", help="branch, tag or sha (default: the stack's app.branch)")
    d.add_argument("--migrate", action="store_true", help="back up the database and apply pending migrations")
    d.add_argument("--allow-destructive", action="store_true",
                   help="apply migrations the live colour may not survive (drops, renames, type changes)")
    d.add_argument("--no-snapshot", action="store_true", help="skip the Proxmox snapshot of the standby")
    d.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    d.add_argument("--approved-plan", metavar="FILE",
                   help="run only the plan written by `plan --deploy --json` (same commit and migrations)")

    s = sub.add_parser("switch", parents=[common], help="move live traffic to the standby colour")
    s.add_argument("--to", metavar="COLOUR", choices=["blue", "green"], dest="to_color",
                   help="the colour to make live; already live: a no-op that says so (safe to repeat)")
    s.add_argument("--emergency", action="store_true", help="skip the checks; flip at runtime directly")
    s.add_argument("--direct", action="store_true", help="flip through the HAProxy runtime API, not `pulumi up`")
    s.add_argument("--no-watch", action="store_true", help="do not watch the new colour afterwards")
    s.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    r = sub.add_parser("rollback", parents=[common], help="switch back to the previous live colour")
    r.add_argument("--emergency", action="store_true", help="skip the checks")
    r.add_argument("--direct", action="store_true", help="flip through the HAProxy runtime API")
    r.add_argument("--snapshot", action="store_true",
                   help="instead: restore the standby container from its last deploy snapshot")
    r.add_argument("--with-database", action="store_true",
                   help="then restore the dump taken before the rolled-back release's migrations")
    r.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    rb = sub.add_parser("rebuild", parents=[common],
                        help="rebuild the standby container, or the whole estate, from scratch")
    rb.add_argument("target", choices=["standby", "estate"],
                    help="estate: every container, the database and the journal from the off-host copies")
    rb.add_argument("--backup", metavar="FILE", help="estate: the dump to restore (default: the newest verified)")
    rb.add_argument("--replace", action="append", default=[], metavar="HOSTS",
                    help="estate: containers that still exist and may be destroyed (vmid, name, colour, role; "
                         "comma-separated or repeated; `all`)")
    rb.add_argument("--ref", help="estate: the release to deploy (default: what the journal says the live colour ran)")
    rb.add_argument("--discard-working-copy", action="store_true",
                    help="standby: rebuild even though its working copy holds unpushed or uncommitted work")
    rb.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    h = sub.add_parser("history", parents=[common], help="switches and deploys, newest first")
    h.add_argument("--limit", "-n", type=int, default=20, help="how many entries (default 20)")

    lk = sub.add_parser("lock", parents=[common], help="the deployment lock")
    lk_sub = lk.add_subparsers(dest="lock_command", required=True, parser_class=_Parser)
    lk_sub.add_parser("status", parents=[common], help="who holds the lock, for what, since when")
    lr = lk_sub.add_parser("release", parents=[common], help="break a stale lock")
    lr.add_argument("--force", action="store_true", help="break the lock even if another run holds it")


def _estate_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """The stack and its hosts: config, plan, trust, adopt; the MCP server and its approvals."""
    cf = sub.add_parser("config", parents=[common], help="stack configuration")
    cf_sub = cf.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    cf_sub.add_parser("check", parents=[common], help="validate the stack file offline")

    pl = sub.add_parser("plan", parents=[common], help="files and commands each host would get")
    pl.add_argument("host", nargs="?", help="one host: vmid, name, colour or role")
    pl.add_argument("--deploy", action="store_true",
                    help="instead: the deploy plan, pinning the commit and the pending migrations")
    pl.add_argument("--ref", help="with --deploy: branch, tag or sha")
    pl.add_argument("--migrate", action="store_true", help="with --deploy: the deploy migrates")
    pl.add_argument("--allow-destructive", action="store_true", help="with --deploy")
    pl.add_argument("--changes", action="store_true",
                    help="instead: compare each container with Proxmox; say what reboots or replaces it")

    tr = sub.add_parser("trust", parents=[common],
                        help="pin the SSH host keys of the estate's hosts, or the Proxmox certificate")
    tr.add_argument("hosts", nargs="*",
                    help="vmid, name, colour, role or `backup` (default: every host and the backup host)")
    tr.add_argument("--fingerprint", action="append", default=[], metavar="SHA256:...",
                    help="accept only a key (or with --proxmox a certificate) with this fingerprint "
                         "(repeatable); no prompt")
    tr.add_argument("--yes", "-y", action="store_true", help="pin without asking (trust on first use)")
    tr.add_argument("--proxmox", action="store_true",
                    help="instead: show and pin the Proxmox node's TLS certificate (proxmox.fingerprint)")

    sub.add_parser("mcp", parents=[common], help="run the MCP server on stdio")
    ap = sub.add_parser("approve", parents=[common],
                        help="approve a deploy, switch or rollback the MCP server is waiting for "
                             "(as the approver account: sudo -u <approver> bluegreen approve CODE)")
    ap.add_argument("code", help="the approval code the assistant showed you, e.g. K7QF-3MXD")
    ap.add_argument("--approvals-dir", metavar="DIR",
                    help="the shared approvals directory (default: $BLUEGREEN_APPROVALS_DIR or "
                         "/var/lib/bluegreen/approvals)")
    ad = sub.add_parser("adopt", parents=[common],
                        help="write the running estate (PVE settings, live colour, repo, db user) into the stack file")
    ad.add_argument("--dry-run", action="store_true", help="show the stack file diff, write nothing")
    ad.add_argument("--yes", "-y", action="store_true", help="write without asking")
    ad.add_argument("--ide-config", metavar="FILE",
                    help="also look for the old MCP server in this IDE config (default: Windsurf's, if any)")
    rl = sub.add_parser("retire-legacy", parents=[common],
                        help="replace the estate's old switch script with one that switches the new way")
    rl.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")
    rl.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    rl.add_argument("--ide-config", metavar="FILE",
                    help="the IDE config that registers the old MCP server (default: Windsurf's, if any)")


def _database_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    db = sub.add_parser("db", parents=[common], help="database dumps: list them, restore one")
    db_sub = db.add_subparsers(dest="db_command", required=True, parser_class=_Parser)
    bk = db_sub.add_parser("backups", parents=[common],
                           help="the dumps on the database host and on the backup host, side by side")
    bk.add_argument("--verify", action="store_true",
                    help="also re-read every copy on the backup host against its checksum")
    db_sub.add_parser("backup", parents=[common],
                      help="a verified dump now, copied to the backup host (what the nightly timer runs)")
    db_sub.add_parser("offsite-setup", parents=[common],
                      help="authorize the database and HAProxy hosts on the backup host (after `pulumi up`)")
    rs = db_sub.add_parser("restore", parents=[common],
                           help="restore a dump (default: the one taken before the last migration)")
    rs.add_argument("backup", nargs="?", help="file name of the dump (see `bluegreen db backups`)")
    rs.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")


def _load(args: argparse.Namespace) -> Topology:
    project = Path(args.cwd or ".").resolve()
    if not (project / "Pulumi.yaml").is_file():
        raise ConfigError(f"{project} is not a Pulumi project (no Pulumi.yaml); use --cwd DIR")
    return load_stack(project, stack_name(args))


Handler = Callable[[argparse.Namespace, Topology, Output, TerminalProgress], int]

# Each command's module is imported when that command runs: an emergency flip loads nothing else.
COMMANDS: dict[str, str] = {
    "status": "cli_commands:cmd_status", "deploy": "cli_commands:cmd_deploy",
    "switch": "cli_commands:cmd_switch", "rollback": "cli_commands:cmd_rollback",
    "rebuild": "cli_commands:cmd_rebuild", "history": "cli_commands:cmd_history",
    "lock": "cli_commands:cmd_lock", "plan": "cli_commands:cmd_plan", "mcp": "cli_commands:cmd_mcp",
    "trust": "cli_commands:cmd_trust", "adopt": "cli_commands:cmd_adopt", "db": "cli_db:cmd_db",
    "config": "cli_commands:cmd_config_check", "retire-legacy": "cli_legacy:cmd_retire_legacy",
}


def handler_for(args: argparse.Namespace) -> Handler:
    if args.command in ("switch", "rollback") and args.emergency and not getattr(args, "snapshot", False) \
            and not getattr(args, "with_database", False):
        from bluegreen.faces.cli_emergency import cmd_emergency

        return lambda a, t, o, p: cmd_emergency(a, t, o, p, rollback=a.command == "rollback")
    module, _, name = COMMANDS[args.command].partition(":")
    handler: Handler = getattr(importlib.import_module(f"bluegreen.faces.{module}"), name)
    return handler


def _with_secrets(t: Topology, secrets: SecretSet) -> Topology:
    """Every secret the stack knows, for scrubbing everything this run writes (`stack_secrets`)."""
    from bluegreen.model.secrets import stack_secrets

    secrets.add(*stack_secrets(t))
    return t


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    secrets = SecretSet()
    # Everything written to stdout and stderr (results, progress, logs, errors) goes through the
    # run's secrets: by value once the stack is loaded, by shape from the start.
    out = RedactingStream(out or sys.stdout, secrets)  # type: ignore[assignment]
    err = RedactingStream(err or sys.stderr, secrets)  # type: ignore[assignment]
    assert out is not None and err is not None
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=err,
                        format="%(levelname)s %(name)s: %(message)s")
    redact_logs(secrets)
    o = Output(args.json, out, err, secrets)
    raise_on_sigterm()  # SIGTERM runs the same restore paths as Ctrl-C
    t: Topology | None = None
    try:
        if args.command == "approve":  # needs only the stack name, not the project
            from bluegreen.faces.approve import cmd_approve

            return cmd_approve(args, o)
        t = _with_secrets(_load(args), secrets)
        return handler_for(args)(args, t, o, TerminalProgress(err))
    except BlueGreenError as exc:
        message = redact(str(exc), secrets)
        hint = hint_for(args, t, message)
        if args.json:
            out.write(json.dumps({"ok": False, "error": message, "kind": type(exc).__name__,
                                  **({"next": hint} if hint else {})}) + "\n")
        err.write(f"bluegreen: {message}\n")
        if hint:
            err.write(f"bluegreen: next: {hint}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        err.write("bluegreen: interrupted\n")
        return 130
    except Exception as exc:  # a bug, not a foreseeable failure: one line, details with --verbose
        logging.getLogger("bluegreen").debug("internal error", exc_info=True)
        message = redact(f"internal error: {type(exc).__name__}: {exc}", secrets)
        if args.json:
            out.write(json.dumps({"ok": False, "error": message, "kind": "InternalError"}) + "\n")
        err.write(f"bluegreen: {message} (run with --verbose for the traceback)\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
