"""`bluegreen`: the command line over the service layer.

stdout carries results only (JSON with --json); people read stderr. Exit codes: 0 success,
1 operational failure, 2 bad input. No traceback for a foreseeable failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

from . import cli_db
from .errors import BlueGreenError, ConfigError
from .progress import TerminalProgress, status_table
from .sensitive import redact
from .topology import Topology, load_stack

DEFAULT_STACK_ENV = "BLUEGREEN_STACK"


_P = TypeVar("_P", bound=argparse.ArgumentParser)


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad usage already; make its message match ours."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"bluegreen: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    def global_options(parser: _P, top: bool) -> _P:
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

    common = global_options(_Parser(add_help=False), top=False)
    p = global_options(_Parser(prog="bluegreen",
                               description="Blue-green deploys of the JW Attendant Scheduler on Proxmox."),
                       top=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

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

    rb = sub.add_parser("rebuild", parents=[common], help="rebuild the standby container from scratch")
    rb.add_argument("target", choices=["standby"])
    rb.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    h = sub.add_parser("history", parents=[common], help="switches and deploys, newest first")
    h.add_argument("--limit", "-n", type=int, default=20)

    lk = sub.add_parser("lock", parents=[common], help="the deployment lock")
    lk_sub = lk.add_subparsers(dest="lock_command", required=True, parser_class=_Parser)
    lk_sub.add_parser("status", parents=[common])
    lr = lk_sub.add_parser("release", parents=[common])
    lr.add_argument("--force", action="store_true", help="break the lock even if another run holds it")

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

    tr = sub.add_parser("trust", parents=[common], help="pin the SSH host keys of the estate's hosts")
    tr.add_argument("hosts", nargs="*", help="vmid, name, colour or role (default: every host)")
    tr.add_argument("--fingerprint", action="append", default=[], metavar="SHA256:...",
                    help="accept only a key with this fingerprint (repeatable); no prompt")
    tr.add_argument("--yes", "-y", action="store_true", help="pin without asking (trust on first use)")

    sub.add_parser("mcp", parents=[common], help="run the MCP server on stdio")
    ap = sub.add_parser("approve", parents=[common],
                        help="approve a deploy, switch or rollback the MCP server is waiting for")
    ap.add_argument("code", help="the approval code the assistant showed you, e.g. K7QF-3MXD")
    ad = sub.add_parser("adopt", parents=[common],
                        help="write the running estate (PVE settings, live colour, repo, db user) into the stack file")
    ad.add_argument("--dry-run", action="store_true", help="show the stack file diff, write nothing")
    ad.add_argument("--yes", "-y", action="store_true", help="write without asking")
    cli_db.add_parsers(sub, common, _Parser)
    return p


# ------------------------------------------------------------------------ output


class Output:
    def __init__(self, as_json: bool, out: TextIO, err: TextIO) -> None:
        self.as_json = as_json
        self.out = out
        self.err = err

    def result(self, data: Any, human: str) -> None:
        if self.as_json:
            self.out.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
        else:
            self.err.write(human.rstrip() + "\n")

    def say(self, text: str) -> None:
        self.err.write(text.rstrip() + "\n")


def confirm(question: str, *, yes: bool, stdin: TextIO, err: TextIO) -> None:
    if yes:
        return
    if not stdin.isatty():
        raise ConfigError(f"{question} needs confirmation: pass --yes when not running interactively")
    err.write(f"{question} [y/N] ")
    err.flush()
    if stdin.readline().strip().lower() not in ("y", "yes"):
        raise ConfigError("cancelled")


# ------------------------------------------------------------------------ commands


def _load(args: argparse.Namespace) -> Topology:
    project = Path(args.cwd or ".").resolve()
    if not (project / "Pulumi.yaml").is_file():
        raise ConfigError(f"{project} is not a Pulumi project (no Pulumi.yaml); use --cwd DIR")
    stack = args.stack or os.environ.get(DEFAULT_STACK_ENV) or "prod"
    return load_stack(project, stack)


def _service(args: argparse.Namespace, t: Topology, progress: TerminalProgress) -> Any:
    from .exposure import known_secrets
    from .service import Service

    return Service(t, progress=progress, secrets=known_secrets(t, os.environ))


def cmd_config_check(args: argparse.Namespace, t: Topology, o: Output, _p: TerminalProgress) -> int:
    from .placeholders import require_complete

    require_complete(t)  # "set KEY: what to put there" for every value still missing, exit 2
    estate = [{"vmid": c.vmid, "name": c.name, "role": c.role, "color": c.color, "ip": str(c.interface),
               "cores": c.cores, "memoryMb": c.memory, "diskGb": c.disk, "existing": c.existing}
              for c in t.containers]
    data = {"ok": True, "stack": t.stack, "activeColor": t.active_color, "node": t.proxmox.node,
            "endpoint": t.proxmox.endpoint, "switchMode": t.switch.mode, "containers": estate,
            "endpoints": {"public": t.public_url, "preview": t.preview_url}}
    lines = [f"stack {t.stack}: valid. Proxmox node {t.proxmox.node} at {t.proxmox.endpoint}",
             f"live colour (declared): {t.active_color}; switch path: {t.switch.mode}", ""]
    lines.append(f"  {'ct':>5}  {'name':<14} {'role':<13} {'address':<18} {'cores':>5} {'mem':>6} {'disk':>5}  adopt")
    for c in t.containers:
        role = f"{c.role}/{c.color}" if c.color else c.role
        lines.append(f"  {c.vmid:>5}  {c.name:<14} {role:<13} {c.interface!s:<18} {c.cores:>5} "
                     f"{c.memory:>5}M {c.disk:>4}G  {'yes' if c.existing else 'no'}")
    lines += ["", f"public  {t.public_url}", f"preview {t.preview_url}"]
    o.result(data, "\n".join(lines))
    return 0


def cmd_status(args: argparse.Namespace, t: Topology, o: Output, p: TerminalProgress) -> int:
    report = _service(args, t, p).status()
    data = report.to_json()
    text = format_status(data)
    table = None if o.as_json else status_table(data, o.err)  # rich on a terminal, else plain lines
    if table is not None and "\ndatabase " in text:
        text = table + "\n" + text[text.index("\ndatabase ") + 1:]
    o.result(data, text)
    # The full report is always printed; the exit code tells scripts whether production is served.
    live_ok = report.live is not None and report.colors[report.live].healthy
    return 0 if live_ok else 1


def format_status(data: dict[str, Any]) -> str:
    live = data["live"] or "unknown"
    lines = [f"stack {data['stack']}: live {live}, declared {data['declared']}, standby {data['standby']}"
             + ("  ** DRIFT: HAProxy and stack config disagree **" if data["drift"] else "")]
    if data.get("reconcile"):
        lines.append(f"  reconcile the declared colour with: {data['reconcile']}")
    lines.append(f"  {'colour':<7} {'host':<12} {'health':<14} {'release':<24} {'sha':<8} {'pm2':<16} haproxy")
    for color, c in data["colors"].items():
        health = f"{c['statusCode'] or '-'} {c['latencyMs'] or 0:.0f}ms" if c["healthy"] else \
            ("DOWN" if c["reachable"] else "UNREACHABLE")
        pm2 = ",".join(f"{p.get('status')}" for p in c["pm2"]) or "-"
        mark = "*" if color == data["live"] else " "
        lines.append(f"{mark} {color:<7} {c['host']:<12} {health:<14} {(c['release'] or '-'):<24} "
                     f"{(c['sha'] or '-')[:7]:<8} {pm2:<16} {(c['haproxy'] or {}).get('status', '-')}")
        if c.get("commit") == "commit not reported":
            lines.append("      commit not reported (the health answer names no commit)")
        for e in c["errors"]:
            lines.append(f"      ! {e}")
    db = data["database"]
    db_state = "reachable" if db.get("reachable") else f"UNREACHABLE ({db.get('error')})"
    lines.append(f"database {db.get('host')}: {db_state}; applied {db.get('applied', 0)}, "
                 f"pending {len(db.get('pending') or [])}"
                 + (f", FAILED {db['failed']}" if db.get("failed") else ""))
    good = db.get("lastGoodDump")
    lines.append(f"last good dump: {good['file']} ({good['bytes']} bytes, {good['createdAt']}, before "
                 f"{good.get('colour')} {str(good.get('sha') or '')[:7]})" if good else "last good dump: none")
    pve = data.get("proxmox") or {}
    if pve.get("error"):
        lines.append(f"proxmox: {pve['error']}")
    elif pve:
        parts = [f"{vmid} {s.get('status')} up {int(s.get('uptime_s') or s.get('uptime') or 0)}s"
                 for vmid, s in sorted(pve.get("containers", {}).items())]
        lines.append(f"proxmox {pve.get('node')}: " + "; ".join(parts))
    lines.append(f"last switch {data['lastSwitch'] or 'never'}; switches {data['switchCount']}")
    lock = data["lock"]
    lines.append("lock: free" if not lock else
                 f"lock: held by {lock.get('holder')} ({lock.get('operation')}) since {lock.get('startedAt')}"
                 + (" - STALE" if lock.get("stale") else ""))
    lines.append(f"public {data['endpoints']['public']}  preview {data['endpoints']['preview']}")
    for e in data.get("errors", []):
        lines.append(f"! {e}")
    return "\n".join(lines)


def cmd_deploy(args: argparse.Namespace, t: Topology, o: Output, p: TerminalProgress) -> int:
    svc = _service(args, t, p)
    approved = cli_db.load_approved_plan(args.approved_plan, args) if args.approved_plan else None
    plan = svc.plan_deploy(args.ref, migrate=args.migrate, allow_destructive=args.allow_destructive)
    for line in cli_db.plan_lines(plan):
        o.say(line)
    confirm(f"deploy {plan.ref} to {plan.color}?", yes=args.yes, stdin=sys.stdin, err=o.err)
    try:
        # What was shown (or approved) is what runs: another commit or migration is refused.
        result = svc.deploy(args.ref, migrate=args.migrate, allow_destructive=args.allow_destructive,
                            snapshot=not args.no_snapshot, approved=approved or plan.pin())
    finally:
        if not o.as_json:
            o.say(p.summary())
    o.result(result.to_json(), f"deployed {result.ref} ({(result.sha or '')[:7]}) to {result.color} "
             f"as release {result.release}; dependencies {result.dependencies}. "
             + (f"Database dumped to {result.backup} ({result.backup_bytes} bytes) before migrating "
                f"{', '.join(result.migrations_applied)}. " if result.backup else "") +
             f"Preview: {t.preview_url}. Switch with `bluegreen switch --stack {t.stack}`.")
    return 0


def _emergency(args: argparse.Namespace, t: Topology, o: Output, p: TerminalProgress, *, rollback: bool) -> int:
    """Straight to the load balancer: no service layer, no plan round trips (bluegreen/emergency.py)."""
    from .emergency import default_holder, run

    what = "roll back" if rollback else "switch"
    confirm(f"EMERGENCY: {what} live traffic to the other colour, no checks?", yes=args.yes,
            stdin=sys.stdin, err=o.err)
    started = time.time()
    result = run(t, rollback=rollback, progress=p)
    if t.events.webhooks:  # imported only when needed: the emergency path stays light
        from .events import publish, switch_event, switch_kind

        publish(t, switch_event(switch_kind(emergency=True, reason="rollback" if rollback else "switch"), t,
                                default_holder(), started, time.time(), emergency=True, result=result))
    data = result.to_json()
    if result.reconcile:
        o.say(f"the stack still declares {result.declared}; reconcile with: {result.reconcile}")
    if result.ok:
        o.result(data, f"{result.color} is live (emergency; flip to first answer {result.flip_ms:.0f} ms; "
                 f"recorded in {result.recorded_in})")
        return 0
    o.result(data, f"{result.color} is live, but: {result.error}")
    return 1


def cmd_switch(args: argparse.Namespace, t: Topology, o: Output, p: TerminalProgress) -> int:
    if args.emergency:
        return _emergency(args, t, o, p, rollback=False)
    svc = _service(args, t, p)
    with svc.pooled():  # one SSH connection per host for the plan and the switch
        plan = svc.plan_switch(emergency=args.emergency, direct=args.direct)
        o.say(f"switch live traffic {plan.from_color} -> {plan.to_color} (release {plan.release}, "
              f"path {plan.path})")
        confirm(f"switch to {plan.to_color}?", yes=args.yes, stdin=sys.stdin, err=o.err)
        result = svc.switch(emergency=args.emergency, direct=args.direct, watch=not args.no_watch)
    return _switch_result(result, o)


def _switch_result(result: Any, o: Output) -> int:
    data = result.to_json()
    if result.ok:
        o.result(data, f"{result.color} is live (flip {result.flip_ms:.0f} ms via {result.path}; "
                 f"verified {result.verified}; watched {result.watched_s:.0f}s)")
        return 0
    if not result.rolled_back and result.verified:
        o.result(data, f"{result.color} is live, but: {result.error}")  # e.g. the journal write failed
        return 1
    o.result(data, f"switch failed: {result.error}")
    return 1


def cmd_rollback(args: argparse.Namespace, t: Topology, o: Output, p: TerminalProgress) -> int:
    if args.with_database:
        return cli_db.cmd_rollback_with_database(args, t, o, p)
    svc = _service(args, t, p)
    if args.snapshot:
        confirm("restore the standby container from its last snapshot?", yes=args.yes,
                stdin=sys.stdin, err=o.err)
        data = svc.rollback_snapshot()
        o.result(data, f"CT {data['vmid']} ({data['colour']}) restored from {data['snapshot']}")
        return 0
    if args.emergency:
        return _emergency(args, t, o, p, rollback=True)
    confirm("roll back to the previous live colour?", yes=args.yes, stdin=sys.stdin, err=o.err)
    return _switch_result(svc.rollback(emergency=args.emergency, direct=args.direct), o)


def cmd_rebuild(args: argparse.Namespace, t: Topology, o: Output, p: TerminalProgress) -> int:
    svc = _service(args, t, p)
    confirm("destroy and rebuild the standby container?", yes=args.yes, stdin=sys.stdin, err=o.err)
    data = svc.rebuild_standby()
    key = data.get("hostKey") or {}
    o.result(data, f"{data['colour']} rebuilt and serving release {data['release']}"
             + (f"; new host key {key.get('type')} {key.get('fingerprint')} pinned" if key else ""))
    return 0


def cmd_history(args: argparse.Namespace, t: Topology, o: Output, p: TerminalProgress) -> int:
    entries = _service(args, t, p).history(args.limit)
    lines = []
    for e in entries:
        when = e.get("timestamp") or e.get("when") or "?"
        if e.get("type") == "deploy":
            lines.append(f"{when}  deploy  {e.get('colour') or e.get('color')} {e.get('ref')} "
                         f"{(e.get('sha') or '')[:7]} {e.get('result')}"
                         + (f" at {e.get('failedStep')}: {e.get('error')}" if e.get("failedStep") else "")
                         + (f" [dump {e.get('backup')}, {e.get('backupBytes')} bytes]" if e.get("backup") else "")
                         + f"  ({e.get('who', '?')})")
        elif e.get("type") == "restore":
            lines.append(f"{when}  restore {e.get('restored')} ({e.get('reason')}); undo: "
                         f"`{e.get('undoCommand')}`  ({e.get('who', '?')})")
        else:
            lines.append(f"{when}  switch  {e.get('from')} -> {e.get('to')}  {e.get('reason') or ''}"
                         f"  ({e.get('who', '?')})")
    o.result(entries, "\n".join(lines) or "no history yet")
    return 0


def cmd_lock(args: argparse.Namespace, t: Topology, o: Output, p: TerminalProgress) -> int:
    svc = _service(args, t, p)
    if args.lock_command == "status":
        lock = svc.lock_status()
        o.result({"lock": lock}, "lock: free" if not lock else
                 f"lock held by {lock['holder']} on {lock['host']} for {lock['operation']} since "
                 f"{lock.get('startedAt')}" + (f" (STALE: {lock.get('staleReason')})" if lock.get("stale") else ""))
        return 0
    released = svc.lock_release(force=args.force)
    o.result({"ok": True, "released": released},
             "lock released" if released else "there was no lock")
    return 0


def cmd_plan(args: argparse.Namespace, t: Topology, o: Output, _p: TerminalProgress) -> int:
    if args.deploy:
        return cli_db.cmd_plan_deploy(args, t, o, _p)
    from .commands import deploy_plan

    if getattr(args, "changes", False):
        return _plan_changes(t, o)
    from .providers import plan_estate

    plan = plan_estate(t)
    for app_host in t.app_hosts.values():
        plan[app_host.label] = [*plan.get(app_host.label, []), *(
            {"kind": "command", "step": f"deploy: {step}", "command": command}
            for step, command in deploy_plan(t, app_host))]
    if args.host:
        wanted = t.find_host(args.host).label
        plan = {k: v for k, v in plan.items() if k == wanted}
    lines = []
    for host, items in plan.items():
        lines.append(f"== {host}")
        for item in items:
            kind = item.get("kind")
            if kind == "file":
                lines.append(f"-- file {item['path']} ({item.get('step')}, {len(item['content'])} bytes)")
                lines.append(item["content"].rstrip())
            else:
                what = f" ({item['step']})" if item.get("step") else ""
                lines.append(f"-- run{what}: {item['command']}")
    o.result(plan, "\n".join(lines))
    return 0


def _plan_changes(t: Topology, o: Output) -> int:
    from . import haproxy_runtime
    from .changes import plan_changes
    from .executor import connect
    from .pve import PveClient

    with connect(t, t.load_balancer) as lb:
        live = haproxy_runtime.live_color(lb, t)
    changes, refused = plan_changes(t, PveClient.from_topology(t), live)
    lines = [str(c) for c in changes] or ["no container changes"]
    o.result({"live": live, "changes": [c.to_json() for c in changes], "refused": refused},
             "\n".join(lines + [f"REFUSED: {p}" for p in refused]))
    return 1 if refused else 0


def cmd_trust(args: argparse.Namespace, t: Topology, o: Output, _p: TerminalProgress) -> int:
    from .executor import fetch_host_key, fingerprint, resolve_target, ssh_target, trust_host

    hosts = [t.find_host(h) for h in args.hosts] if args.hosts else list(t.containers)
    pinned: list[dict[str, Any]] = []
    added_count = 0
    for host in hosts:
        target = ssh_target(t, host)
        # Pinned under the address and port the connection really uses (an ~/.ssh/config alias's
        # HostName and Port), which is what the host key is checked against when connecting.
        address, port, _, _ = resolve_target(target)
        key_type, key_b64 = fetch_host_key(target)
        print_ = fingerprint(key_b64)
        o.say(f"{host.label}: {key_type} {print_}")
        if args.fingerprint:
            if print_ not in args.fingerprint:
                raise ConfigError(f"{host.label} presented {print_}, which is not one of the fingerprints "
                                  "given: refusing to pin it")
        else:
            confirm(f"pin this key for {address}:{port}?", yes=args.yes, stdin=sys.stdin, err=o.err)
        added = trust_host(target.known_hosts, address, port, f"{key_type} {key_b64}")
        added_count += added
        pinned.append({"host": host.label, "fingerprint": print_, "added": added})
    o.result({"ok": True, "knownHosts": t.ssh.known_hosts, "hosts": pinned},
             f"{added_count} key(s) added to {t.ssh.known_hosts}")
    return 0


def cmd_adopt(args: argparse.Namespace, t: Topology, o: Output, _p: TerminalProgress) -> int:
    from .adopt import run_adopt

    def ask(diff: str) -> None:
        o.say(diff)
        confirm("write these values into the stack file?", yes=args.yes, stdin=sys.stdin, err=o.err)

    result = run_adopt(t, dry_run=args.dry_run, confirm=ask)
    lines = list(result.findings.notes)
    if not result.diff:
        lines.append(f"{result.stack_file} already holds what the estate runs: nothing to write")
    elif result.dry_run:
        lines += [result.diff.rstrip(), f"(dry run: {result.stack_file} not written)"]
    else:
        lines.append(f"wrote {result.stack_file}; next: `pulumi preview --diff --stack {t.stack}` "
                     "shows imports with no changes")
    o.result(result.to_json(), "\n".join(lines))
    return 0


def cmd_mcp(args: argparse.Namespace, t: Topology, o: Output, _p: TerminalProgress) -> int:
    from .mcp_server import serve

    serve(t)
    return 0


def cmd_approve(args: argparse.Namespace, o: Output) -> int:
    from .approve import approve

    stack = args.stack or os.environ.get(DEFAULT_STACK_ENV) or "prod"
    done = approve(args.code, stack, environ=os.environ, stdin=sys.stdin, err=o.err)
    o.result(done, f"approved {done['code']}: call {done['tool']} again in the MCP client within "
             f"{done['expiresInSeconds']}s")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, Topology, Output, TerminalProgress], int]] = {
    "status": cmd_status, "deploy": cmd_deploy, "switch": cmd_switch, "rollback": cmd_rollback,
    "rebuild": cmd_rebuild, "history": cmd_history, "lock": cmd_lock, "plan": cmd_plan,
    "mcp": cmd_mcp, "trust": cmd_trust, "adopt": cmd_adopt, "db": cli_db.cmd_db,
}


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=err,
                        format="%(levelname)s %(name)s: %(message)s")
    o = Output(args.json, out, err)
    progress = TerminalProgress(err)
    from .emergency import raise_on_sigterm

    raise_on_sigterm()  # SIGTERM runs the same restore paths as Ctrl-C
    try:
        if args.command == "approve":  # needs only the stack name, not the project
            return cmd_approve(args, o)
        topology = _load(args)
        if args.command == "config":
            return cmd_config_check(args, topology, o, progress)
        return COMMANDS[args.command](args, topology, o, progress)
    except BlueGreenError as exc:
        if args.json:
            out.write(json.dumps({"ok": False, "error": str(exc), "kind": type(exc).__name__}) + "\n")
        err.write(f"bluegreen: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        err.write("bluegreen: interrupted\n")
        return 130
    except Exception as exc:  # a bug, not a foreseeable failure: one line, details with --verbose
        logging.getLogger("bluegreen").debug("internal error", exc_info=True)
        message = redact(f"internal error: {type(exc).__name__}: {exc}")
        if args.json:
            out.write(json.dumps({"ok": False, "error": message, "kind": "InternalError"}) + "\n")
        err.write(f"bluegreen: {message} (run with --verbose for the traceback)\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
