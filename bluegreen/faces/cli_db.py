"""CLI front-end of the database safety net (`bluegreen db ...`, `rollback --with-database`,
`plan --deploy`, `deploy --approved-plan`). Formatting only; the work is in `ops.restore`,
`ops.rollback` and `ops.deploy`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bluegreen.faces.cli_support import Output, cli_estate, confirm
from bluegreen.faces.terminal import TerminalProgress
from bluegreen.hosts import offsite
from bluegreen.model import deploy_pin, dumps
from bluegreen.model.errors import ConfigError
from bluegreen.model.topology import Topology
from bluegreen.ops import backups as backup_ops
from bluegreen.ops import restore, rollback
from bluegreen.ops.deploy import DeployPlan, plan_deploy


def cmd_db(args: argparse.Namespace, t: Topology, o: Output, p: TerminalProgress) -> int:
    estate = cli_estate(t, p, o)
    if args.db_command == "backups":
        report = backup_ops.list_backups(estate, verify=args.verify)
        o.result(report.to_json(), format_backups(report, t))
        return 1 if report.local_error and report.offsite_error else 0
    if args.db_command == "backup":
        done = backup_ops.backup_now(estate)
        o.result(done.to_json(), f"took {done.file} (verified) on {t.database_host.label}; "
                 + format_offsite(done.offsite, t))
        return 0 if done.offsite.ok else 1
    if args.db_command == "offsite-setup":
        changes = backup_ops.setup_offsite(estate)
        o.result({"ok": True, "changes": changes}, "\n".join(changes) or "nothing to change")
        return 0
    estate.learn_secrets()  # a restore quotes what pg_restore and the hosts print
    backups = restore.list_dumps(estate)
    chosen = dumps.pick_backup(backups, args.backup)
    o.say(f"restore {chosen.file} ({dumps.human_bytes(chosen.bytes)}, taken {chosen.created}"
          + (f" before deploying {(chosen.meta.sha or '')[:7]} to {chosen.meta.color}" if chosen.meta
             and chosen.meta.sha else "") + f") into database {t.database.name}:")
    o.say("  - refuse if the live colour's release needs migrations the dump predates")
    o.say("  - take a fresh verified dump first (the undo)")
    o.say("  - replay the dump in ONE transaction (pg_restore --clean --if-exists), holding the "
          "deployment lock; rows written since the dump are lost from the live database")
    confirm(f"restore {chosen.file}?", yes=args.yes, stdin=sys.stdin, err=o.err)
    result = restore.restore(estate, chosen.file)
    o.result(result.to_json(), format_restore(result.to_json()))
    return 0


def format_backups(report: backup_ops.BackupsReport, t: Topology) -> str:
    keep = t.database.backup_keep
    lines = [f"dumps on {t.database_host.label} in {report.local_folder} (keep {keep} good + {keep} "
             f"scheduled + {keep} others)"]
    if report.offsite_label:
        lines[0] += f"\n  and on {report.offsite_label} in {report.offsite_folder}"
    else:
        lines.append("  no second place configured (bluegreen:backup): the dumps live on the database host only")
    for where, error in (("database host", report.local_error), ("backup host", report.offsite_error)):
        if error:
            lines.append(f"  ! {where} not read: {error}")
    if not report.rows:
        lines.append("  no dumps")
        return "\n".join(lines)
    lines.append(f"  {'file':<44} {'size':>10}  {'taken':<20} {'kind':<14} {'deploy':<14} verified  good  "
                 "off-host")
    for row in report.rows:
        b, d = row.newest, row.newest.to_json()
        deploy = f"{d['colour'] or '-'} {(d['sha'] or '')[:7]}".strip() if d["sha"] else "-"
        where = row.offsite_state if report.offsite_label else "-"
        if row.local is None:
            where += " (gone from the database host)"
        recheck = report.rechecked.get(row.file)
        if recheck:
            where += f"; re-read: {recheck}"
        lines.append(f"  {b.file:<44} {dumps.human_bytes(b.bytes):>10}  {b.created:<20} {d['kind']:<14} "
                     f"{deploy:<14} {'yes' if d['verified'] else 'no':<9} {'GOOD' if d['good'] else '    '}  "
                     f"{where}")
        if d["release"]:
            lines.append(f"      release {d['release']}; applied before: {len(d['applied'] or [])}; "
                         f"migrating: {', '.join(d['pending'] or []) or 'none'}")
    return "\n".join(lines)


def format_offsite(result: offsite.OffsiteResult, t: Topology) -> str:
    label = t.backup.label if t.backup else "the backup host"
    if result.ok:
        return (f"copied to {label} (checksums checked there): {len(result.copied)} new, "
                f"{len(result.present)} already there, {len(result.pruned)} pruned by retention")
    return f"NOT all copied to {label}: " + ("; ".join(result.failed) or result.error or "unknown failure")


def format_restore(data: dict[str, Any]) -> str:
    undo = data.get("undo") or {}
    lines = [f"restored {data['restored']['file']} in one transaction ({data['restoreSeconds']:.2f}s)",
             f"  migrations before: {', '.join(data['migrationsBefore']) or 'none'}",
             f"  migrations after:  {', '.join(data['migrationsAfter']) or 'none'}"]
    if data.get("dropped"):
        lines.append(f"  dropped (not in the dump): {', '.join(data['dropped'])}")
    lines.append(f"  a fresh dump was taken first: {undo.get('path')} "
                 f"({dumps.human_bytes(int(undo.get('bytes') or 0))})")
    lines.append(f"to undo this restore: `{data['undoCommand']}`")
    return "\n".join(lines)


def cmd_rollback_with_database(args: argparse.Namespace, t: Topology, o: Output, p: TerminalProgress) -> int:
    estate = cli_estate(t, p, o)
    plan = rollback.plan_rollback_with_database(estate)
    o.say(f"rollback with the database: {plan.from_color} -> {plan.to_color}, in this order:")
    for step in plan.steps:
        o.say(f"  - {step}")
    for problem in plan.problems:
        o.say(f"  PROBLEM: {problem}")
    if plan.problems:
        raise dumps.RestoreRefused("refusing to roll back with the database: " + "; ".join(plan.problems))
    confirm("roll back code and database?", yes=args.yes, stdin=sys.stdin, err=o.err)
    data = rollback.rollback_with_database(estate, plan, direct=args.direct)
    if not data["ok"]:
        o.result(data, f"rollback failed: {data['error']}")
        return 1
    o.result(data, f"{plan.to_color} is live again (release {plan.to_release}).\n"
                   + format_restore(data["restore"]))
    return 0


def plan_lines(plan: DeployPlan) -> list[str]:
    lines = [f"deploy {plan.ref} ({plan.sha}) to {plan.color} ({plan.host}); {plan.live} stays live:"]
    lines += [f"  - {step}" for step in plan.steps]
    if plan.pending:
        lines.append("pending migrations (applied in this order, each file in one transaction):")
        for m in plan.pending:
            lines.append(f"  -- {m.name}/migration.sql  sha256 {m.checksum}")
            lines += [f"  | {line}" for line in m.sql.rstrip().splitlines()]
    return lines


def cmd_plan_deploy(args: argparse.Namespace, t: Topology, o: Output, p: TerminalProgress) -> int:
    plan = plan_deploy(cli_estate(t, p, o), args.ref, migrate=args.migrate, allow_destructive=args.allow_destructive)
    o.result(plan.to_json(), "\n".join(plan_lines(plan)) + "\n\nSave it with --json and run it with "
             "`bluegreen deploy --approved-plan FILE`: any other commit or migration is refused.")
    return 0


def load_approved_plan(path: str, args: argparse.Namespace) -> deploy_pin.DeployPin:
    """Read a plan written by `plan --deploy --json`; its ref and --migrate fill in unset options."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"--approved-plan {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"--approved-plan {path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--approved-plan {path}: expected a JSON object")
    pin = deploy_pin.DeployPin.from_plan_json(data)
    if args.ref is None:
        args.ref = pin.ref
    elif args.ref != pin.ref:
        raise ConfigError(f"--ref {args.ref} differs from the approved plan's ref {pin.ref}")
    if data.get("migrate") and not args.migrate:
        args.migrate = True
    if data.get("allowDestructive") is not True and args.allow_destructive:
        raise ConfigError("--allow-destructive was not part of the approved plan")
    if data.get("allowDestructive") is True:
        args.allow_destructive = True
    return pin


__all__ = ["cmd_db", "cmd_plan_deploy", "cmd_rollback_with_database",
           "load_approved_plan", "plan_lines"]
