"""The commands of `bluegreen`, one function each: arguments in, an operation run, its result out.

Each formats for people on stderr (or JSON on stdout with --json) and returns the exit code; the
work is in `bluegreen.ops`. Database commands live in `cli_db`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bluegreen.faces import cli_db
from bluegreen.faces.cli_emergency import cmd_emergency
from bluegreen.faces.cli_support import Output, cli_estate, confirm, format_status, hint_for
from bluegreen.faces.terminal import TerminalProgress, status_table
from bluegreen.model.errors import BlueGreenError, ConfigError
from bluegreen.model.topology import Topology
from bluegreen.ops.deploy import deploy, plan_deploy
from bluegreen.ops.rebuild import rebuild_standby
from bluegreen.ops.rollback import rollback, rollback_snapshot
from bluegreen.ops.status import history, lock_release, lock_status, status
from bluegreen.ops.switch import plan_switch, switch


def cmd_config_check(args: argparse.Namespace, t: Topology, o: Output, _p: TerminalProgress) -> int:
    from bluegreen.model.placeholders import require_complete

    require_complete(t)  # "set KEY: what to put there" for every value still missing, exit 2
    estate = [{"vmid": c.vmid, "name": c.name, "role": c.role, "color": c.color, "ip": str(c.interface),
               "cores": c.cores, "memoryMb": c.memory, "diskGb": c.disk, "existing": c.existing}
              for c in t.containers]
    tls = proxmox_tls(t)
    data = {"ok": True, "stack": t.stack, "activeColor": t.active_color, "node": t.proxmox.node,
            "endpoint": t.proxmox.endpoint, "proxmoxTls": tls, "switchMode": t.switch.mode,
            "containers": estate, "endpoints": {"public": t.public_url, "preview": t.preview_url}}
    lines = [f"stack {t.stack}: valid. Proxmox node {t.proxmox.node} at {t.proxmox.endpoint}",
             f"proxmox TLS: {tls}",
             f"live colour (declared): {t.active_color}; switch path: {t.switch.mode}", ""]
    lines.append(f"  {'ct':>5}  {'name':<14} {'role':<13} {'address':<18} {'cores':>5} {'mem':>6} {'disk':>5}  adopt")
    for c in t.containers:
        role = f"{c.role}/{c.color}" if c.color else c.role
        lines.append(f"  {c.vmid:>5}  {c.name:<14} {role:<13} {c.interface!s:<18} {c.cores:>5} "
                     f"{c.memory:>5}M {c.disk:>4}G  {'yes' if c.existing else 'no'}")
    lines += ["", f"public  {t.public_url}", f"preview {t.preview_url}"]
    o.result(data, "\n".join(lines))
    return 0


def proxmox_tls(t: Topology) -> str:
    from bluegreen.model.tlspin import show_fingerprint

    if t.proxmox.fingerprint:
        return f"verified: certificate pinned ({show_fingerprint(t.proxmox.fingerprint)})"
    if t.proxmox.insecure:
        return ("NOT VERIFIED (proxmox.insecure: true): anyone on the path can read the API token; "
                "pin the node with `bluegreen trust --proxmox`")
    if t.proxmox.ca_file:
        return f"verified against {t.proxmox.ca_file}"
    return "verified against the system CAs (a self-signed node: `bluegreen trust --proxmox`)"


def cmd_status(args: argparse.Namespace, t: Topology, o: Output, p: TerminalProgress) -> int:
    report = status(cli_estate(t, p, o))
    data = report.to_json()
    text = format_status(data)
    table = None if o.as_json else status_table(data, o.err)  # rich on a terminal, else plain lines
    if table is not None and "\ndatabase " in text:
        text = table + "\n" + text[text.index("\ndatabase ") + 1:]
    # The full report is always printed; the exit code tells scripts whether production is served.
    live_ok = report.live is not None and report.colors[report.live].healthy
    hint = None if live_ok else hint_for(args, t, "\n".join(
        [*data.get("errors", []), *(e for c in data["colors"].values() for e in c["errors"])]))
    if hint:
        data["next"] = hint
        text += f"\nnext: {hint}"
    o.result(data, text)
    consistent = not (report.truth or {}).get("mismatches")
    return 0 if live_ok and consistent else 1


def cmd_deploy(args: argparse.Namespace, t: Topology, o: Output, p: TerminalProgress) -> int:
    estate = cli_estate(t, p, o)
    approved = cli_db.load_approved_plan(args.approved_plan, args) if args.approved_plan else None
    plan = plan_deploy(estate, args.ref, migrate=args.migrate, allow_destructive=args.allow_destructive)
    for line in cli_db.plan_lines(plan):
        o.say(line)
    confirm(f"deploy {plan.ref} to {plan.color}?", yes=args.yes, stdin=sys.stdin, err=o.err)
    try:
        # What was shown (or approved) is what runs: another commit or migration is refused.
        result = deploy(estate, args.ref, migrate=args.migrate, allow_destructive=args.allow_destructive,
                        snapshot=not args.no_snapshot, approved=approved or plan.pin())
    finally:
        if not o.as_json:
            o.say(p.summary())
    if result.error:  # deployed, but the record went elsewhere (or nowhere): said, not hidden
        o.say(f"warning: {result.error}")
    o.result(result.to_json(), f"deployed {result.ref} ({(result.sha or '')[:7]}) to {result.color} "
             f"as release {result.release}; dependencies {result.dependencies}. "
             + (f"Database dumped to {result.backup} ({result.backup_bytes} bytes) before migrating "
                f"{', '.join(result.migrations_applied)}. " if result.backup else "") +
             f"Preview: {t.preview_url}. Switch with `bluegreen switch --stack {t.stack}`.")
    return 0


def cmd_switch(args: argparse.Namespace, t: Topology, o: Output, p: TerminalProgress) -> int:
    if args.emergency:
        return cmd_emergency(args, t, o, p, rollback=False)
    estate = cli_estate(t, p, o)
    with estate.pooled():  # one SSH connection per host for the plan and the switch
        plan = plan_switch(estate, emergency=args.emergency, direct=args.direct, to_color=args.to_color)
        if not plan.noop:  # a no-op moves nothing: no question to ask
            o.say(f"switch live traffic {plan.from_color} -> {plan.to_color} (release {plan.release}, "
                  f"path {plan.path})")
            confirm(f"switch to {plan.to_color}?", yes=args.yes, stdin=sys.stdin, err=o.err)
        result = switch(estate, emergency=args.emergency, direct=args.direct, watch=not args.no_watch,
                        to_color=args.to_color or plan.to_color)
    return _switch_result(result, o)


def _switch_result(result: Any, o: Output) -> int:
    data = result.to_json()
    if result.noop:
        o.result(data, "; ".join(result.notes) or f"{result.color} is already live: nothing to switch")
        return 0
    if result.ok:
        o.result(data, f"{result.color} is live (flip {result.flip_ms:.0f} ms via {result.path}; "
                 f"verified {result.verified}; watched {result.watched_s:.0f}s)")
        return 0
    if not result.rolled_back and result.verified:
        o.result(data, f"traffic moved: {result.color} is live, but: {result.error}")  # e.g. the journal write
        return 1
    o.result(data, f"switch failed: {result.error} (traffic is back on {result.from_color})"
             if result.rolled_back else f"switch failed: {result.error}")
    return 1


def cmd_rollback(args: argparse.Namespace, t: Topology, o: Output, p: TerminalProgress) -> int:
    if args.with_database:
        return cli_db.cmd_rollback_with_database(args, t, o, p)
    estate = cli_estate(t, p, o)
    if args.snapshot:
        confirm("restore the standby container from its last snapshot?", yes=args.yes,
                stdin=sys.stdin, err=o.err)
        data = rollback_snapshot(estate)
        o.result(data, f"CT {data['vmid']} ({data['colour']}) restored from {data['snapshot']}")
        return 0
    if args.emergency:
        return cmd_emergency(args, t, o, p, rollback=True)
    confirm("roll back to the previous live colour?", yes=args.yes, stdin=sys.stdin, err=o.err)
    return _switch_result(rollback(estate, emergency=args.emergency, direct=args.direct), o)


def cmd_rebuild(args: argparse.Namespace, t: Topology, o: Output, p: TerminalProgress) -> int:
    if args.target == "estate":
        from bluegreen.faces.cli_rebuild import cmd_rebuild_estate

        return cmd_rebuild_estate(args, t, o, p)
    if args.backup or args.replace or args.ref:
        raise ConfigError("--backup, --replace and --ref are options of `rebuild estate`")
    estate = cli_estate(t, p, o)
    confirm("destroy and rebuild the standby container?", yes=args.yes, stdin=sys.stdin, err=o.err)
    data = rebuild_standby(estate, discard_working_copy=args.discard_working_copy).to_json()
    key = data.get("hostKey") or {}
    o.result(data, f"{data['colour']} rebuilt and serving release {data['release']}"
             + (f"; new host key {key.get('type')} {key.get('fingerprint')} pinned" if key else "")
             + (f"\n{data['workingCopy']}" if data.get("workingCopy") else ""))
    return 0


def cmd_history(args: argparse.Namespace, t: Topology, o: Output, p: TerminalProgress) -> int:
    entries = history(cli_estate(t, p, o), args.limit)
    lines = []
    for e in entries:
        when = e.get("timestamp") or e.get("when") or "?"
        if e.get("type") == "deploy":
            lines.append(f"{when}  deploy  {e.get('colour') or e.get('color')} {e.get('ref')} "
                         f"{(e.get('sha') or '')[:7]} {e.get('result')}"
                         + (f" at {e.get('failedStep')}: {e.get('error')}" if e.get("failedStep") else "")
                         + (f" [dump {e.get('backup')}, {e.get('backupBytes')} bytes]" if e.get("backup") else "")
                         + f"  ({e.get('who', '?')})")
        elif e.get("type") == "rebuild":
            what = "estate" if e.get("scope") == "estate" else f"{e.get('color')} (CT {e.get('vmid')})"
            lines.append(f"{when}  rebuild {what} {e.get('result')}"
                         + (f" from {e.get('backup')}" if e.get("backup") else "")
                         + (f": {e.get('error')}" if e.get("error") else "") + f"  ({e.get('who', '?')})")
        elif e.get("type") == "restore":
            lines.append(f"{when}  restore {e.get('restored')} ({e.get('reason')}); undo: "
                         f"`{e.get('undoCommand')}`  ({e.get('who', '?')})")
        else:
            lines.append(f"{when}  switch  {e.get('from')} -> {e.get('to')}  {e.get('reason') or ''}"
                         f"  ({e.get('who', '?')})")
    o.result(entries, "\n".join(lines) or "no history yet")
    return 0


def cmd_lock(args: argparse.Namespace, t: Topology, o: Output, p: TerminalProgress) -> int:
    estate = cli_estate(t, p, o)
    if args.lock_command == "status":
        lock = lock_status(estate)
        o.result({"lock": lock}, "lock: free" if not lock else
                 f"lock held by {lock['holder']} on {lock['host']} for {lock['operation']} since "
                 f"{lock.get('startedAt')}" + (f" (STALE: {lock.get('staleReason')})" if lock.get("stale") else ""))
        return 0
    released = lock_release(estate, force=args.force)
    o.result({"ok": True, "released": released},
             "lock released" if released else "there was no lock")
    return 0


def cmd_plan(args: argparse.Namespace, t: Topology, o: Output, _p: TerminalProgress) -> int:
    if args.deploy:
        return cli_db.cmd_plan_deploy(args, t, o, _p)
    from bluegreen.render.commands import deploy_plan

    if getattr(args, "changes", False):
        return _plan_changes(t, o)
    from bluegreen.ops.configure import plan_estate

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
    from bluegreen.hosts import haproxy
    from bluegreen.hosts.executor import connect
    from bluegreen.hosts.pve import PveClient
    from bluegreen.ops.plan import plan_changes

    live: str | None
    try:
        with connect(t, t.load_balancer) as lb:
            live = haproxy.live_color(lb, t)
    except BlueGreenError as exc:
        live = None  # as the program does: both colours count as serving
        o.say(f"the live colour could not be read ({exc}): both colours count as serving")
    changes, refused = plan_changes(t, PveClient.from_topology(t), live)
    lines = [str(c) for c in changes] or ["no container changes"]
    o.result({"live": live, "changes": [c.to_json() for c in changes], "refused": refused},
             "\n".join(lines + [f"REFUSED: {p}" for p in refused]))
    return 1 if refused else 0


def cmd_trust(args: argparse.Namespace, t: Topology, o: Output, _p: TerminalProgress) -> int:
    if getattr(args, "proxmox", False):
        from bluegreen.faces.trust_proxmox import trust_proxmox

        return trust_proxmox(args, t, o)
    from bluegreen.hosts.executor import fetch_host_key, fingerprint, resolve_target, ssh_target, trust_host
    from bluegreen.hosts.offsite import backup_target

    # The estate's containers, and the backup host (`backup`) when the stack names one.
    wanted = list(args.hosts) or [str(c.vmid) for c in t.containers] + (["backup"] if t.backup else [])
    targets = [(t.backup.label, backup_target(t)) if name == "backup" and t.backup
               else (t.find_host(name).label, ssh_target(t, t.find_host(name))) for name in wanted]
    pinned: list[dict[str, Any]] = []
    added_count = 0
    for label, target in targets:
        # Pinned under the address and port the connection really uses (an ~/.ssh/config alias's
        # HostName and Port), which is what the host key is checked against when connecting.
        address, port, _, _ = resolve_target(target)
        key_type, key_b64 = fetch_host_key(target)
        print_ = fingerprint(key_b64)
        o.say(f"{label}: {key_type} {print_}")
        if args.fingerprint:
            if print_ not in args.fingerprint:
                raise ConfigError(f"{label} presented {print_}, which is not one of the fingerprints "
                                  "given: refusing to pin it")
        else:
            confirm(f"pin this key for {address}:{port}?", yes=args.yes, stdin=sys.stdin, err=o.err)
        added = trust_host(target.known_hosts, address, port, f"{key_type} {key_b64}")
        added_count += added
        pinned.append({"host": label, "fingerprint": print_, "added": added})
    o.result({"ok": True, "knownHosts": t.ssh.known_hosts, "hosts": pinned},
             f"{added_count} key(s) added to {t.ssh.known_hosts}")
    return 0


def cmd_adopt(args: argparse.Namespace, t: Topology, o: Output, _p: TerminalProgress) -> int:
    from bluegreen.ops.adopt import run_adopt

    def ask(diff: str) -> None:
        o.say(diff)
        confirm("write these values into the stack file?", yes=args.yes, stdin=sys.stdin, err=o.err)

    ide = Path(args.ide_config).expanduser() if args.ide_config else None
    result = run_adopt(t, dry_run=args.dry_run, confirm=ask, ide_config=ide)
    lines = list(result.findings.notes)
    if not result.diff:
        lines.append(f"{result.stack_file} already holds what the estate runs: nothing to write")
    elif result.dry_run:
        lines += [result.diff.rstrip(), f"(dry run: {result.stack_file} not written)"]
    else:
        if result.values.secret_files:
            lines.append(f"kept {len(result.values.secret_files)} secret value(s) in 0600 files under "
                         f"{t.secrets_dir} (the stack file names the files, never the values)")
        if result.colour_file:
            lines.append(f"declared live colour {result.findings.live_color} in {result.colour_file}")
        lines.append(f"wrote {result.stack_file}; next: `pulumi preview --diff --stack {t.stack}` "
                     "shows imports with no changes")
    o.result(result.to_json(), "\n".join(lines))
    return 0


def cmd_mcp(args: argparse.Namespace, t: Topology, o: Output, _p: TerminalProgress) -> int:
    from bluegreen.faces.mcp_server import serve

    serve(t)
    return 0
