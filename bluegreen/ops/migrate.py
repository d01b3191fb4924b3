"""A deploy's database side: what a ref would migrate, and the migrations step itself.

Both colours share one PostgreSQL database, so a migration is the one step a switch cannot undo.
The step refuses a commit or migrations other than the approved plan's, refuses destructive
statements unless allowed, takes a verified dump first, migrates, then marks that dump "good"
(the one that undoes this release). After a failure, `failure_note` says what the database is left
with and the one command that puts it back.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from typing import Protocol

from bluegreen.hosts import database
from bluegreen.hosts.executor import Executor
from bluegreen.hosts.metrics import write_dump_metrics
from bluegreen.model import migrations, sql_analysis
from bluegreen.model.deploy_pin import DeployPin, PendingMigration, check_pin, migration_files
from bluegreen.model.dumps import KIND_PRE_MIGRATION, human_bytes, short_error
from bluegreen.model.errors import BlueGreenError, ConfigError, DeployError
from bluegreen.model.timestamps import iso, utcnow
from bluegreen.model.topology import Container, Topology
from bluegreen.ops.estate import Estate
from bluegreen.render import commands as cmd
from bluegreen.render.dbcommands import git_migrations_command, git_show_command

log = logging.getLogger("bluegreen.migrate")


class MigrationRecord(Protocol):
    """What the step records in a deploy's result."""

    sha: str | None
    release: str | None
    backup: str | None
    backup_bytes: int | None
    migrations_applied: list[str]
    migrations_edited: list[str]


class MigratingRun(Protocol):
    """What the step needs of the deploy running it (`deploy_run.DeployRun`)."""

    host: Container
    paths: cmd.AppPaths
    color: str
    ref: str
    release: str | None
    pin: DeployPin | None
    pending: list[str]

    @property
    def result(self) -> MigrationRecord: ...


# --------------------------------------------------------------------------- the plan


def inspect_ref(estate: Estate, color: str, ref: str) -> tuple[str, list[PendingMigration]]:
    """Resolve `ref` on `color`'s mirror and list the migrations that commit would apply."""
    t = estate.t
    host = t.app_host(color)
    paths = cmd.AppPaths.of(t, host)
    with estate.on(host) as ex:
        out = ex.run(cmd.fetch_ref(t, paths, ref), step="fetch", check=False)
        if out.exit_code != 0:
            if not out.stderr.strip():
                raise unknown_ref(t, ex, paths, ref)
            raise DeployError("plan", f"{host.label}: fetch failed: {short_error(out.stderr)}")
        sha = out.stdout.strip().splitlines()[-1]
        return sha, pending_at(estate, ex, paths, sha)


def unknown_ref(t: Topology, ex: Executor, paths: cmd.AppPaths, ref: str) -> ConfigError:
    """The error for a ref the repository does not have, naming the branches and tags it has."""
    listing = ex.run(cmd.list_refs(t, paths), step="list the refs", check=False).stdout
    return ConfigError(cmd.unknown_ref_message(ref, t.app.repo, listing))


def pending_at(estate: Estate, ex: Executor, paths: cmd.AppPaths, sha: str) -> list[PendingMigration]:
    """The migrations commit `sha` has that the database has not applied, with their checksums."""
    names = migration_files(ex.run(git_migrations_command(paths, sha), step="list migrations").stdout)
    with estate.on(estate.t.database_host) as db:
        rows = database.applied_rows(estate.t, db)
    result = []
    for name in migrations.pending(names, rows):
        raw = base64.b64decode(ex.run(git_show_command(paths, sha, name), step="read migration").stdout.strip())
        result.append(PendingMigration(name=name, checksum=migrations.migration_checksum(raw),
                                       sql=raw.decode(errors="replace")))
    return result


# --------------------------------------------------------------------------- the step


def check_fetched(estate: Estate, ex: Executor, run: MigratingRun, sha: str) -> None:
    """Right after the fetch: refuse a commit other than the approved one, showing both (and what
    the new commit would migrate)."""
    pin = run.pin
    if pin is None or pin.sha == sha:
        return
    try:
        now: list[tuple[str, str]] | None = [(m.name, m.checksum) for m in pending_at(estate, ex, run.paths, sha)]
    except BlueGreenError as exc:
        log.warning("could not list the pending migrations of %s: %s", sha[:12], exc)
        now = None
    check_pin(pin, sha=sha, pending=now)


def migrations_step(estate: Estate, ex: Executor, run: MigratingRun, *, migrate: bool,
                    allow_destructive: bool) -> None:
    """Pin check, destructive check, verified dump, migrate, mark the dump good, retention."""
    t, result, release = estate.t, run.result, run.release or ""
    names = ex.run(cmd.list_migrations(release), step="list migrations").stdout.split()
    with estate.on(t.database_host) as db:
        rows = database.applied_rows(t, db)
        blocked = migrations.failed(rows)
        if blocked:
            raise DeployError("migrations", migrations.blocked_message(
                blocked, f"the app directory {run.paths.current} on {run.host.label}"))
        sums = migrations.parse_checksums(ex.run(cmd.migration_checksums(release),
                                                 step="checksum migrations").stdout)
        edited = migrations.edited_after_applying(sums, rows)
        if edited:
            result.migrations_edited = edited
            estate.progress.note(migrations.edited_message(edited))
            log.warning("%s", migrations.edited_message(edited))
        pending = migrations.pending(names, rows)
        sql = {name: ex.get(f"{release}/prisma/migrations/{name}/migration.sql", step="read migration") or b""
               for name in pending}
        check_pin(run.pin, sha=result.sha or "",
                  pending=[(n, migrations.migration_checksum(sql[n])) for n in pending])
        if not pending:
            estate.progress.note("no pending migrations")
            return
        if not migrate:
            raise DeployError("migrations", f"{len(pending)} migration(s) pending ({', '.join(pending)}); "
                              "run the deploy with --migrate to back up the database and apply them")
        findings: list[sql_analysis.Finding] = []
        for name in pending:
            findings += sql_analysis.analyze(name, sql[name].decode(errors="replace"))
        if findings and not allow_destructive:
            raise DeployError("migrations", sql_analysis.explain(findings))
        _dump_and_migrate(estate, ex, db, run, pending, applied_before=[r.name for r in rows if r.applied])


def _dump_and_migrate(estate: Estate, ex: Executor, db: Executor, run: MigratingRun, pending: list[str], *,
                      applied_before: list[str]) -> None:
    t, result = estate.t, run.result
    target = cmd.backup_path(t, t.database_host, run.color, result.sha or "unknown", utcnow())
    meta = database.take_verified_dump(
        t, db, target, progress=estate.progress, who=estate.who, kind=KIND_PRE_MIGRATION,
        applied=applied_before, pending=pending,
        deploy={"colour": run.color, "ref": run.ref, "sha": result.sha, "release": result.release})
    result.backup = target
    result.backup_bytes = meta.bytes
    write_dump_metrics(db, t, target)  # for the no-recent-good-dump alert
    database.prune_quietly(t, db)  # safe before migrating: good dumps are counted apart from this one
    database.copy_offsite(t, db, estate.progress)  # off the host before the step a switch cannot undo
    run.pending = pending
    with estate.progress.step(f"apply {len(pending)} migration(s)", long=True):
        ex.run(cmd.migrate(t, run.release or ""), step="migrate")
    result.migrations_applied = pending
    database.write_meta(db, target, dataclasses.replace(meta, migrated=True, migrated_at=iso(utcnow())))
    database.prune_quietly(t, db)
    database.copy_offsite(t, db, estate.progress)  # the sidecar now says GOOD there too


def failure_note(estate: Estate, run: MigratingRun) -> str | None:
    """What happened to the database when a deploy failed after its dump was taken (None before)."""
    result = run.result
    if not result.backup:
        return None
    dump = f"{result.backup} ({human_bytes(result.backup_bytes or 0)})"
    applied_now: list[str] = list(result.migrations_applied)
    failed_now: list[str] = []
    if not applied_now and run.pending:
        # The migrate step itself failed: read what it left behind.
        try:
            with estate.on(estate.t.database_host) as db:
                rows = database.applied_rows(estate.t, db)
            applied_now = [n for n in run.pending if any(r.name == n and r.applied for r in rows)]
            failed_now = [r.name for r in migrations.failed(rows) if r.name in run.pending]
        except BlueGreenError as exc:
            return (f"database: dump {dump} was taken before migrating; whether migrations ran is "
                    f"unknown ({exc}). Check with `bluegreen status`.")
    restore = f"bluegreen db restore {result.backup.rsplit('/', 1)[-1]}"
    if applied_now:
        note = (f"database: the shared database STAYS MIGRATED ({', '.join(applied_now)} applied) although "
                f"the standby went back to its previous release. The dump taken before migrating is {dump}; "
                f"to put the database back as it was: `{restore}` (it takes a fresh dump first; rows "
                f"written since the dump are lost).")
    else:
        note = f"database: no migration was applied; the dump taken before migrating is {dump}."
    if failed_now:
        note += (f" Migration {failed_now[0]} failed and is recorded as failed: it blocks later deploys "
                 f"(Prisma P3009) until `prisma migrate resolve --rolled-back {failed_now[0]}`.")
    return note
