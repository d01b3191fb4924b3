"""The database host: applied migrations, verified dumps and their sidecars, retention."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from bluegreen.hosts import offsite
from bluegreen.hosts.executor import Executor
from bluegreen.model import migrations
from bluegreen.model.dumps import (
    SIDECAR_SUFFIX,
    Backup,
    DumpError,
    DumpMeta,
    TocEntry,
    applied_in_dump,
    last_good,
    parse_backup_listing,
    parse_tables,
    parse_toc,
    retention,
    short_error,
    verify_problems,
)
from bluegreen.model.errors import BlueGreenError
from bluegreen.model.progress import Progress
from bluegreen.model.timestamps import iso, utcnow
from bluegreen.model.topology import Topology
from bluegreen.render import commands as cmd
from bluegreen.render.dbcommands import (
    backup_folder,
    delete_backup_command,
    dump_migrations_command,
    full_read_command,
    list_backups_command,
    size_command,
    tables_query,
    toc_command,
)
from bluegreen.render.shell import sh

log = logging.getLogger("bluegreen.database")


# =========================================================================== operations


def read_backups(t: Topology, db: Executor) -> list[Backup]:
    folder = backup_folder(t)
    out = db.run(list_backups_command(folder), step="list database dumps").stdout
    return parse_backup_listing(out, folder)


def db_tables(t: Topology, db: Executor) -> dict[str, str]:
    out = db.run(cmd.psql(t, t.database_host, tables_query()), step="list the database's tables").stdout
    return parse_tables(out)


def verify_dump(t: Topology, db: Executor, path: str, *, tables: Mapping[str, str] | None = None
                ) -> tuple[int, list[TocEntry], list[str]]:
    """(size, toc, problems) of a dump file on the database host."""
    size_out = db.run(size_command(path), step="check the dump", check=False)
    size = int(size_out.stdout.strip()) if size_out.ok and size_out.stdout.strip().isdigit() else 0
    if size_out.exit_code != 0:
        return 0, [], [f"the dump file is missing: {short_error(size_out.stderr)}"]
    toc_out = db.run(toc_command(path), step="check the dump", check=False)
    read_out = db.run(full_read_command(path), step="check the dump", check=False)
    toc = parse_toc(toc_out.stdout) if toc_out.ok else []
    problems = verify_problems(
        size=size, toc=toc, list_error=None if toc_out.ok else short_error(toc_out.stderr),
        read_error=None if read_out.ok else short_error(read_out.stderr),
        db_tables=tables if tables is not None else db_tables(t, db))
    return size, toc, problems


def take_verified_dump(t: Topology, db: Executor, target: str, *, progress: Progress, who: str, kind: str,
                       applied: Sequence[str], pending: Sequence[str] = (),
                       deploy: Mapping[str, str | None] | None = None) -> DumpMeta:
    """pg_dump to `target`, verify it, write its sidecar; DumpError (file removed) if it does not verify."""
    tables = db_tables(t, db)
    with progress.step("back up the database", long=True):
        db.run(cmd.dump_database(t, t.database_host, target), step="back up the database")
    with progress.step("verify the dump"):
        size, _toc, problems = verify_dump(t, db, target, tables=tables)
        if problems:
            with contextlib.suppress(BlueGreenError):
                db.run(delete_backup_command(target), step="remove the unusable dump")
            raise DumpError(f"the database dump {target} failed verification and was removed: "
                            + "; ".join(problems) + ". Nothing was migrated or restored.")
    info = dict(deploy or {})
    # The checksum every copy of this verified file is held to (the backup host checks it on arrival).
    digest = db.run(sh("sha256sum", "--", target), step="checksum the dump").stdout.split()[0]
    meta = DumpMeta(file=target.rsplit("/", 1)[-1], bytes=size, created_at=iso(utcnow()), kind=kind,
                    database=t.database.name, verified=True, tables=tuple(sorted(tables)),
                    applied=tuple(sorted(applied)), pending=tuple(pending), color=info.get("colour"),
                    ref=info.get("ref"), sha=info.get("sha"), release=info.get("release"), by=who,
                    sha256=digest)
    write_meta(db, target, meta)
    return meta


def write_meta(db: Executor, target: str, meta: DumpMeta) -> None:
    db.put(target + SIDECAR_SUFFIX, meta.sidecar(), step="record the dump", mode=0o640)


def copy_offsite(t: Topology, db: Executor, progress: Progress) -> offsite.OffsiteResult | None:
    """Copy the verified dumps not yet on the backup host there (none configured: None).

    A failed copy is reported, not raised: the dump on the database host is there and verified,
    and the next copy (the scheduled dump's, or the next deploy's) sends whatever is missing."""
    if t.backup is None:
        return None
    try:
        with progress.step("copy the dump off-host"):
            result = offsite.sync_dumps(t, db)
    except BlueGreenError as exc:
        result = offsite.OffsiteResult(ok=False, error=str(exc))
    if result.ok:
        for line in result.copied:
            progress.note(f"copied to {t.backup.label}, checksum checked there: {line.split()[0]}")
    else:
        problem = "; ".join(result.failed) or result.error or "unknown failure"
        progress.note(f"NOT copied off-host ({problem}); the next scheduled dump copies it")
        log.warning("off-host copy failed: %s", problem)
    return result


def prune(t: Topology, db: Executor) -> list[str]:
    """Apply retention; returns the files deleted."""
    doomed = retention(read_backups(t, db), t.database.backup_keep)
    for b in doomed:
        db.run(delete_backup_command(b.path), step="prune dumps")
    return [b.file for b in doomed]


def migrations_in_dump(db: Executor, path: str) -> list[str]:
    out = db.run(dump_migrations_command(path), step="read the dump's migrations", check=False)
    return applied_in_dump(out.stdout) if out.ok else []


def prune_quietly(t: Topology, db: Executor) -> None:
    try:
        deleted = prune(t, db)
        if deleted:
            log.info("pruned dumps: %s", ", ".join(deleted))
    except BlueGreenError as exc:
        log.warning("could not prune old dumps: %s", exc)


def last_good_summary(t: Topology, db: Executor) -> dict[str, Any] | None:
    good = last_good(read_backups(t, db))
    return None if good is None else {"file": good.file, "path": good.path, "bytes": good.bytes,
                                      "createdAt": good.created, "sha": good.meta.sha if good.meta else None,
                                      "colour": good.meta.color if good.meta else None}


def applied_rows(t: Topology, db: Executor, *, timeout_s: int | None = None) -> list[migrations.AppliedRow]:
    """The rows of Prisma's `_prisma_migrations` table (none when it does not exist yet). With
    `timeout_s`, a hung PostgreSQL costs at most that to connect and that for the query."""
    result = db.run(cmd.psql(t, t.database_host, migrations.applied_rows_query(), timeout_s=timeout_s),
                    step="read applied migrations", check=False,
                    timeout=None if timeout_s is None else 2 * timeout_s + 5)
    return migrations.parse_applied(result.stdout, result.stderr, result.exit_code)
