"""`bluegreen db restore`: a fresh verified dump first, then the chosen dump replayed in one transaction."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bluegreen.hosts.database import (
    applied_rows,
    copy_offsite,
    migrations_in_dump,
    prune_quietly,
    read_backups,
    take_verified_dump,
    verify_dump,
    write_meta,
)
from bluegreen.hosts.executor import Executor
from bluegreen.model.dumps import (
    KIND_PRE_RESTORE,
    Backup,
    RestoreRefused,
    extra_objects,
    parse_objects,
    pick_backup,
    restore_prelude,
    short_error,
)
from bluegreen.model.errors import BlueGreenError
from bluegreen.model.timestamps import iso, utcnow
from bluegreen.ops.estate import Estate
from bluegreen.render import commands as cmd
from bluegreen.render.dbcommands import backup_folder, objects_query, pre_restore_path, restore_command

log = logging.getLogger("bluegreen.restore")


def live_release_migrations(estate: Estate, color: str) -> tuple[str | None, str | None, list[str]]:
    """(release, sha, migration names) of what `color` serves."""
    t = estate.t
    host = t.app_host(color)
    paths = cmd.AppPaths.of(t, host)
    with estate.on(host) as ex:
        current = cmd.parse_current(ex.run(cmd.read_current(paths), step="read release").stdout)
        names = (ex.run(cmd.list_migrations(current.path), step="list migrations").stdout.split()
                 if current.path else [])
    return current.name, current.sha, names


# --------------------------------------------------------------------------- restore


@dataclass
class RestoreResult:
    ok: bool
    restored: dict[str, Any]
    undo: dict[str, Any] | None
    undo_command: str | None
    dropped: list[str] = field(default_factory=list)
    migrations_before: list[str] = field(default_factory=list)
    migrations_after: list[str] = field(default_factory=list)
    window_s: float = 0.0
    window: tuple[float, float] | None = None  # monotonic start and end of the restore transaction
    reason: str = "db restore"

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "restored": self.restored, "undo": self.undo, "undoCommand": self.undo_command,
                "dropped": self.dropped, "migrationsBefore": self.migrations_before,
                "migrationsAfter": self.migrations_after, "restoreSeconds": round(self.window_s, 3),
                "reason": self.reason}


def list_dumps(estate: Estate) -> list[Backup]:
    with estate.on(estate.t.database_host) as db:
        return read_backups(estate.t, db)


def applied_names(estate: Estate, db: Executor) -> list[str]:
    return sorted(r.name for r in applied_rows(estate.t, db) if r.applied)


def restore(estate: Estate, backup: str | None = None, *, check_live: bool = True,
            expect_applied: Sequence[str] | None = None, reason: str = "db restore") -> RestoreResult:
    """Restore a dump (default: the last good one) in one transaction, after a fresh dump."""
    t = estate.t
    with estate.holding(reason), estate.on(t.load_balancer) as lb, estate.on(t.database_host) as db:
        with estate.progress.step("choose the dump"):
            backups = read_backups(t, db)
            chosen = pick_backup(backups, backup)
            size, toc, problems = verify_dump(t, db, chosen.path, tables={})
            if problems:
                raise RestoreRefused(f"refusing to restore {chosen.file}: " + "; ".join(problems))
            in_dump = migrations_in_dump(db, chosen.path)
            before = applied_names(estate, db)
        if expect_applied is not None and sorted(expect_applied) != before:
            raise RestoreRefused(
                "refusing to restore: the database's migrations changed since the plan was shown "
                f"(then: {', '.join(sorted(expect_applied)) or 'none'}; now: {', '.join(before) or 'none'}). "
                "Nothing was restored; review `bluegreen db backups` and run `bluegreen db restore`.")
        if check_live:
            live = estate.live_color(lb)
            release, _sha, needed = live_release_migrations(estate, live)
            missing = sorted(set(needed) - set(in_dump))
            if missing:
                raise RestoreRefused(
                    f"refusing to restore {chosen.file}: the live colour {live} runs release {release}, "
                    f"which needs migration(s) the dump predates ({', '.join(missing)}); restoring would "
                    f"break production. Roll back first with `bluegreen rollback --with-database` "
                    f"(switches to the previous colour, then restores), or restore a newer dump.")
        undo_target = pre_restore_path(t, utcnow())
        undo = take_verified_dump(t, db, undo_target, progress=estate.progress, who=estate.who,
                                  kind=KIND_PRE_RESTORE, applied=before,
                                  deploy={"colour": None, "ref": None, "sha": None, "release": None})
        undo = dataclasses.replace(undo, note=f"taken before restoring {chosen.file}")
        write_meta(db, undo_target, undo)
        copy_offsite(t, db, estate.progress)
        extras = extra_objects(parse_objects(db.run(cmd.psql(t, t.database_host, objects_query()),
                                                    step="list database objects").stdout), toc)
        prelude = f"{backup_folder(t)}/.restore-prelude.sql"
        db.put(prelude, restore_prelude(extras), step="write the restore prelude", mode=0o644)
        with estate.progress.step(f"restore {chosen.file} in one transaction", long=True):
            started = time.monotonic()
            out = db.run(restore_command(t, t.database_host, chosen.path, prelude), step="restore the database",
                         check=False)
            ended = time.monotonic()
            if out.exit_code != 0:
                raise RestoreRefused(
                    f"restoring {chosen.file} failed and was rolled back (one transaction): "
                    f"{short_error(out.stderr)}. The database is as it was; the dump taken just before "
                    f"is {undo_target}.")
        after = applied_names(estate, db)
        result = RestoreResult(
            ok=True, restored={**chosen.to_json(), "bytes": size}, undo=Backup(
                file=undo.file, path=undo_target, bytes=undo.bytes, mtime=time.time(), meta=undo).to_json(),
            undo_command=f"bluegreen db restore {undo.file}",
            dropped=[f"{o.desc} {o.qualified}" for o in extras], migrations_before=before,
            migrations_after=after, window_s=ended - started, window=(started, ended), reason=reason)
        _record(estate, lb, result)
        prune_quietly(t, db)
        return result


def _record(estate: Estate, lb: Executor, result: RestoreResult) -> None:
    try:
        entry = {"type": "restore", "timestamp": iso(utcnow()), "who": estate.who, "reason": result.reason,
                 "restored": result.restored.get("file"), "undo": (result.undo or {}).get("file"),
                 "undoCommand": result.undo_command, "dropped": result.dropped,
                 "migrationsBefore": result.migrations_before, "migrationsAfter": result.migrations_after,
                 "durationMs": int(result.window_s * 1000)}
        keep = estate.t.journal.history_keep
        estate.update_state(lb, lambda state: state.with_entry_on_top(entry, keep=keep), estate.live_color(lb))
    except BlueGreenError as exc:
        log.error("could not record the restore in the journal: %s", exc)
