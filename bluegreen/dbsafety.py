"""The database safety net: verified dumps, retention that keeps the last good one, restore, and the
pending migrations a deploy plan pins.

Both colours share one PostgreSQL database, so a migration is the one step a colour switch cannot
undo. What this module promises:

- no migration runs without a dump that is known to restore: after `pg_dump -Fc` the file must be
  non-empty, `pg_restore --list` must read it and list every table the database has, and a full
  read (`pg_restore -f /dev/null`) must get through every data block (a truncated file passes
  `--list`: its table of contents sits at the start);
- every dump has a sidecar `<dump>.json` saying when, which deploy and release, what was applied,
  whether it was verified, and whether the migration after it succeeded ("good");
- retention keeps the newest `backupKeep` good dumps and, separately, the newest `backupKeep`
  others (failed attempts, pre-restore dumps), so retries never push out the last good dump;
  files it did not write (nightly dumps under other names) are never touched;
- a restore takes a fresh verified dump first (the undo), then replays the chosen dump in ONE
  transaction (`pg_restore --clean --if-exists` through `psql --single-transaction`), dropping
  first the tables, views, sequences and types the dump does not have (created by the migrations
  being undone), and refuses while the live colour runs a release that needs a newer schema;
- `rollback --with-database` shows its plan, switches to the previous colour, then restores the
  dump taken before the migration the rolled-back release applied.

Pure parsing and decisions at the top; command builders next; the operations (which take a
`Service` for its connections, lock and progress) at the bottom.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import commands as cmd
from . import migrations
from .errors import BlueGreenError, ConfigError, DeployError
from .executor import Executor, sh
from .metrics import write_dump_metrics
from .topology import Container, Topology, other_color

if TYPE_CHECKING:
    from .service import DeployResult, Service

log = logging.getLogger("bluegreen.dbsafety")

KIND_PRE_MIGRATION = "pre-migration"
KIND_PRE_RESTORE = "pre-restore"
SIDECAR_SUFFIX = ".json"
# Names this tool gives its dumps (`commands.backup_path` and the pre-restore ones).
_OUR_NAME = re.compile(r"^\d{14}-[a-z0-9-]+\.dump$")
RESTORE_LOCK_TIMEOUT = "30s"


class DumpError(BlueGreenError):
    """A dump could not be taken or did not verify: nothing was migrated or restored."""


class RestoreRefused(BlueGreenError):
    """A restore was refused before anything changed."""


class PlanMismatch(BlueGreenError):
    """The commit or the pending migrations differ from the approved deploy plan."""


# =========================================================================== pure: metadata


@dataclass(frozen=True)
class DumpMeta:
    """The sidecar of one dump (`<dump>.json`)."""

    file: str
    bytes: int
    created_at: str
    kind: str
    database: str
    verified: bool
    tables: tuple[str, ...] = ()
    applied: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    color: str | None = None
    ref: str | None = None
    sha: str | None = None
    release: str | None = None
    by: str | None = None
    migrated: bool = False
    migrated_at: str | None = None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "bytes": self.bytes, "createdAt": self.created_at, "kind": self.kind,
                "database": self.database, "verified": self.verified, "tables": list(self.tables),
                "applied": list(self.applied), "pending": list(self.pending), "colour": self.color,
                "ref": self.ref, "sha": self.sha, "release": self.release, "by": self.by,
                "migrated": self.migrated, "migratedAt": self.migrated_at, "note": self.note}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DumpMeta:
        def strs(key: str) -> tuple[str, ...]:
            value = data.get(key) or []
            return tuple(str(v) for v in value) if isinstance(value, list) else ()

        def opt(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        size = data.get("bytes")
        return cls(file=str(data.get("file") or ""), bytes=size if isinstance(size, int) else 0,
                   created_at=str(data.get("createdAt") or ""), kind=str(data.get("kind") or "unknown"),
                   database=str(data.get("database") or ""), verified=data.get("verified") is True,
                   tables=strs("tables"), applied=strs("applied"), pending=strs("pending"),
                   color=opt("colour"), ref=opt("ref"), sha=opt("sha"), release=opt("release"),
                   by=opt("by"), migrated=data.get("migrated") is True, migrated_at=opt("migratedAt"),
                   note=opt("note"))

    def sidecar(self) -> str:
        return json.dumps(self.to_json(), sort_keys=False) + "\n"


@dataclass(frozen=True)
class Backup:
    """One dump file in the backup directory, with its sidecar when it has one."""

    file: str
    path: str
    bytes: int
    mtime: float
    meta: DumpMeta | None

    @property
    def ours(self) -> bool:
        return self.meta is not None or bool(_OUR_NAME.match(self.file))

    @property
    def good(self) -> bool:
        """Taken before a migration that then succeeded: the dump that undoes it."""
        return self.meta is not None and self.meta.migrated and self.meta.verified

    @property
    def created(self) -> str:
        if self.meta and self.meta.created_at:
            return self.meta.created_at
        return datetime.fromtimestamp(self.mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def sort_key(self) -> tuple[str, str]:
        return (self.created, self.file)

    def to_json(self) -> dict[str, Any]:
        m = self.meta
        return {"file": self.file, "path": self.path, "bytes": self.bytes, "createdAt": self.created,
                "kind": m.kind if m else ("unrecorded" if self.ours else "not ours"),
                "verified": bool(m and m.verified), "good": self.good,
                "colour": m.color if m else None, "ref": m.ref if m else None,
                "sha": m.sha if m else None, "release": m.release if m else None,
                "applied": list(m.applied) if m else None, "pending": list(m.pending) if m else None,
                "migrated": bool(m and m.migrated), "note": m.note if m else None}


def parse_backup_listing(stdout: str, folder: str) -> list[Backup]:
    """What `list_backups_command` printed: `name<TAB>size<TAB>mtime<TAB>base64(sidecar)` lines."""
    backups: list[Backup] = []
    for line in stdout.splitlines():
        parts = line.split("\t")
        if len(parts) != 4 or not parts[0].endswith(".dump"):
            continue
        name, size, mtime, encoded = parts
        meta: DumpMeta | None = None
        if encoded:
            try:
                data = json.loads(base64.b64decode(encoded, validate=True).decode())
                if isinstance(data, dict):
                    meta = DumpMeta.from_json(data)
            except (ValueError, binascii.Error, UnicodeDecodeError):
                log.warning("backup %s: unreadable sidecar, treated as unrecorded", name)
        try:
            backups.append(Backup(file=name, path=f"{folder}/{name}", bytes=int(size),
                                  mtime=float(mtime), meta=meta))
        except ValueError:
            continue
    return sorted(backups, key=Backup.sort_key, reverse=True)


def retention(backups: Sequence[Backup], keep: int) -> list[Backup]:
    """Which dumps to delete: keep the newest `keep` good ones and, apart from them, the newest
    `keep` others of ours. Good dumps are counted separately, so failed attempts never push out
    the last good one; files this tool did not write are never deleted."""
    if keep < 1:
        raise ConfigError(f"database.backupKeep must be at least 1, got {keep}")
    ours = sorted((b for b in backups if b.ours), key=Backup.sort_key, reverse=True)
    good = [b for b in ours if b.good]
    others = [b for b in ours if not b.good]
    return sorted(good[keep:] + others[keep:], key=Backup.sort_key)


def last_good(backups: Iterable[Backup]) -> Backup | None:
    good = sorted((b for b in backups if b.good), key=Backup.sort_key, reverse=True)
    return good[0] if good else None


def dump_before_release(backups: Iterable[Backup], color: str, sha: str) -> Backup | None:
    """The newest good dump taken by the deploy of `sha` to `color`: the one that undoes it."""
    found = [b for b in backups if b.good and b.meta is not None
             and b.meta.sha == sha and b.meta.color == color]
    return max(found, key=Backup.sort_key) if found else None


def pick_backup(backups: Sequence[Backup], wanted: str | None) -> Backup:
    """`wanted` names a file (or a unique prefix of one); None means the last good dump."""
    if wanted is None:
        chosen = last_good(backups)
        if chosen is None:
            raise RestoreRefused("there is no dump taken before a successful migration to restore; "
                                 "name one (see `bluegreen db backups`)")
        return chosen
    name = wanted.rsplit("/", 1)[-1]
    exact = [b for b in backups if b.file == name]
    if exact:
        return exact[0]
    prefixed = [b for b in backups if b.file.startswith(name)]
    if len(prefixed) == 1:
        return prefixed[0]
    if not prefixed:
        raise ConfigError(f"no dump named {wanted!r} in the backup directory (see `bluegreen db backups`)")
    raise ConfigError(f"{wanted!r} matches {len(prefixed)} dumps: "
                      + ", ".join(b.file for b in prefixed[:5]))


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


# =========================================================================== pure: verification


@dataclass(frozen=True)
class TocEntry:
    desc: str  # TABLE, TABLE DATA, VIEW, SEQUENCE, TYPE, ...
    schema: str
    name: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


# Longest first: "TABLE DATA" before "TABLE", "SEQUENCE OWNED BY" before "SEQUENCE".
_TOC_DESCS = ("MATERIALIZED VIEW DATA", "MATERIALIZED VIEW", "SEQUENCE OWNED BY", "SEQUENCE SET",
              "FK CONSTRAINT", "TABLE DATA", "TABLE ATTACH", "DEFAULT ACL", "CHECK CONSTRAINT",
              "CONSTRAINT", "SEQUENCE", "TABLE", "VIEW", "TYPE", "DOMAIN", "INDEX", "DEFAULT",
              "FUNCTION", "PROCEDURE", "TRIGGER", "SCHEMA", "EXTENSION", "COMMENT", "ACL", "RULE")
_TOC_LINE = re.compile(r"^\s*\d+;\s+\d+\s+\d+\s+(.*)$")


def parse_toc(text: str) -> list[TocEntry]:
    """The entries of `pg_restore --list` (`215; 1259 16386 TABLE public Shift owner`)."""
    entries: list[TocEntry] = []
    for line in text.splitlines():
        if line.lstrip().startswith(";"):
            continue
        match = _TOC_LINE.match(line)
        if not match:
            continue
        rest = match.group(1)
        desc = next((d for d in _TOC_DESCS if rest == d or rest.startswith(d + " ")), None)
        if desc is None:
            continue
        words = rest[len(desc):].split()
        if len(words) < 2:
            continue
        # `schema name owner`; names with spaces keep their middle words. Entries without a schema
        # (`-`) still parse.
        schema, owner_dropped = words[0], words[1:-1] if len(words) > 2 else words[1:]
        entries.append(TocEntry(desc=desc, schema=schema, name=" ".join(owner_dropped)))
    return entries


def tables_query() -> str:
    """Every ordinary and partitioned table of the database: `schema.name<US>relkind` lines."""
    return ("SELECT n.nspname || '.' || c.relname, c.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' "
            "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e') "
            "ORDER BY 1")


def parse_tables(stdout: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        if "\x1f" in line:
            name, kind = line.split("\x1f", 1)
            out[name] = kind.strip()
    return out


def verify_problems(*, size: int, toc: Sequence[TocEntry], list_error: str | None,
                    read_error: str | None, db_tables: Mapping[str, str]) -> list[str]:
    """Why a dump cannot be trusted to restore (empty list: it can)."""
    if size <= 0:
        return ["the dump file is empty"]
    problems: list[str] = []
    if list_error is not None:
        problems.append(f"`pg_restore --list` cannot read it: {list_error}")
    if read_error is not None:
        problems.append(f"reading every data block failed (truncated or corrupt?): {read_error}")
    if list_error is None:
        tables = {e.qualified for e in toc if e.desc == "TABLE"}
        data = {e.qualified for e in toc if e.desc == "TABLE DATA"}
        missing = sorted(t for t in db_tables if t not in tables)
        no_data = sorted(t for t, kind in db_tables.items() if kind == "r" and t in tables and t not in data)
        if missing:
            problems.append(f"it does not list table(s) the database has: {', '.join(missing)}")
        if no_data:
            problems.append(f"it has no data for table(s): {', '.join(no_data)}")
    return problems


def short_error(text: str, limit: int = 300) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    joined = "; ".join(lines[-3:]) or "no output"
    return joined[-limit:]


# =========================================================================== pure: restore


def objects_query() -> str:
    """Tables, views, sequences and types a migration can create: `kind<US>schema<US>name`."""
    schemas = ("n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' "
               "AND n.nspname NOT LIKE 'pg\\_temp%'")
    not_ext = "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = {oid} AND d.deptype = 'e')"
    return (
        "SELECT CASE c.relkind WHEN 'r' THEN 'TABLE' WHEN 'p' THEN 'TABLE' WHEN 'v' THEN 'VIEW' "
        "WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE' END, n.nspname, c.relname "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND {schemas} AND {not_ext.format(oid='c.oid')} "
        "UNION ALL SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, n.nspname, t.typname "
        "FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
        f"WHERE t.typtype IN ('e', 'd', 'r', 'm') AND {schemas} AND {not_ext.format(oid='t.oid')} "
        "ORDER BY 1, 2, 3")


def parse_objects(stdout: str) -> list[TocEntry]:
    out = []
    for line in stdout.splitlines():
        parts = line.split("\x1f")
        if len(parts) == 3:
            out.append(TocEntry(desc=parts[0], schema=parts[1], name=parts[2]))
    return out


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def extra_objects(db_objects: Sequence[TocEntry], toc: Sequence[TocEntry]) -> list[TocEntry]:
    """Objects the database has and the dump does not: `--clean` would leave them behind."""
    in_dump = {(e.desc, e.schema, e.name) for e in toc}
    schemas = {e.schema for e in toc if e.desc in ("TABLE", "VIEW", "SEQUENCE", "TYPE")} | {"public"}
    return [o for o in db_objects if o.schema in schemas and (o.desc, o.schema, o.name) not in in_dump]


def restore_prelude(extras: Sequence[TocEntry]) -> str:
    """SQL run first in the restore's transaction: a lock timeout, and drops of the extras."""
    order = {"VIEW": 0, "MATERIALIZED VIEW": 0, "TABLE": 1, "SEQUENCE": 2, "DOMAIN": 3, "TYPE": 4}
    lines = [f"SET LOCAL lock_timeout = '{RESTORE_LOCK_TIMEOUT}';"]
    for o in sorted(extras, key=lambda e: (order.get(e.desc, 9), e.schema, e.name)):
        lines.append(f"DROP {o.desc} IF EXISTS {_ident(o.schema)}.{_ident(o.name)} CASCADE;")
    return "\n".join(lines) + "\n"


def applied_in_dump(copy_text: str) -> list[str]:
    """Applied migration names from the `_prisma_migrations` COPY block `pg_restore -a` prints."""
    names: list[str] = []
    columns: list[str] | None = None
    for line in copy_text.splitlines():
        if columns is None:
            match = re.match(r'^COPY \S*_prisma_migrations"? \((.*)\) FROM stdin;$', line)
            if match:
                columns = [c.strip().strip('"') for c in match.group(1).split(",")]
            continue
        if line == "\\.":
            break
        fields = line.split("\t")
        if len(fields) != len(columns):
            continue
        row = dict(zip(columns, fields, strict=True))
        if row.get("finished_at", "\\N") != "\\N" and row.get("rolled_back_at", "\\N") == "\\N":
            names.append(row.get("migration_name", ""))
    return sorted(n for n in names if n)


# =========================================================================== pure: the deploy pin


@dataclass(frozen=True)
class PendingMigration:
    name: str
    checksum: str
    sql: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "checksum": self.checksum, "sql": self.sql}


@dataclass(frozen=True)
class DeployPin:
    """What an approved deploy plan pinned: the commit and the pending migrations (name, checksum)."""

    ref: str
    sha: str
    pending: tuple[tuple[str, str], ...]

    @classmethod
    def from_plan_json(cls, data: Mapping[str, Any]) -> DeployPin:
        sha, ref = data.get("sha"), data.get("ref")
        pending = data.get("pendingMigrations")
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{40}", sha):
            raise ConfigError("approved plan: sha is missing or not a full commit sha "
                              "(write it with `bluegreen plan --deploy --json`)")
        if not isinstance(ref, str) or not isinstance(pending, list):
            raise ConfigError("approved plan: ref and pendingMigrations are required")
        pairs = []
        for i, item in enumerate(pending):
            if not (isinstance(item, dict) and isinstance(item.get("name"), str)
                    and isinstance(item.get("checksum"), str)):
                raise ConfigError(f"approved plan: pendingMigrations[{i}] needs a name and a checksum")
            pairs.append((item["name"], item["checksum"]))
        return cls(ref=ref, sha=sha, pending=tuple(sorted(pairs)))


def describe_pending(pending: Iterable[tuple[str, str]]) -> str:
    items = [f"{name} (sha256 {checksum[:12]})" for name, checksum in pending]
    return ", ".join(items) if items else "none"


def check_pin(pin: DeployPin | None, *, sha: str, pending: Iterable[tuple[str, str]] | None) -> None:
    """Refuse a run whose commit or pending migrations differ from the approved plan, showing both."""
    if pin is None:
        return
    now = tuple(sorted(pending)) if pending is not None else None
    if sha == pin.sha and (now is None or now == pin.pending):
        return
    lines = ["refusing to deploy: this is not the plan that was approved.",
             f"  approved: {pin.ref} at {pin.sha[:12]}, pending migrations: {describe_pending(pin.pending)}",
             f"  now:      {pin.ref} at {sha[:12]}, pending migrations: "
             + (describe_pending(now) if now is not None else "(not read)")]
    if sha != pin.sha:
        lines.append(f"{pin.ref} moved since the approval.")
    else:
        lines.append("the pending migrations changed since the approval (a migration was applied, "
                     "added or edited).")
    lines.append("Nothing was changed. Review the new plan (`bluegreen plan --deploy`) and approve it again.")
    raise PlanMismatch("\n".join(lines))


def migration_files(ls_tree: str) -> list[str]:
    """Migration names from `git ls-tree -r --name-only <sha> -- prisma/migrations/`."""
    names = []
    for line in ls_tree.splitlines():
        parts = line.strip().split("/")
        if len(parts) == 4 and parts[:2] == ["prisma", "migrations"] and parts[3] == "migration.sql":
            names.append(parts[2])
    return sorted(set(names))


# =========================================================================== command builders


def _socket(db_host: Container) -> str:
    return db_host.path("/var/run/postgresql")


def backup_folder(t: Topology) -> str:
    return t.database_host.path(t.database.backup_dir)


def list_backups_command(folder: str) -> str:
    return (f"cd {sh(folder)} 2>/dev/null || exit 0; for f in *.dump; do [ -f \"$f\" ] || continue; "
            f"m=''; [ -f \"$f{SIDECAR_SUFFIX}\" ] && m=$(base64 -w0 < \"$f{SIDECAR_SUFFIX}\"); "
            f"printf '%s\\t%s\\t%s\\t%s\\n' \"$f\" \"$(stat -c %s -- \"$f\")\" \"$(stat -c %Y -- \"$f\")\" \"$m\"; "
            f"done")


def size_command(path: str) -> str:
    return f"stat -c %s -- {sh(path)}"


def toc_command(path: str) -> str:
    return sh("pg_restore", "--list", path)


def full_read_command(path: str) -> str:
    """Read and decompress every block, writing the SQL nowhere: catches truncation."""
    return sh("pg_restore", "--file=/dev/null", path)


def dump_migrations_command(path: str) -> str:
    return sh("pg_restore", "--data-only", "--table=_prisma_migrations", "--file=-", path)


def delete_backup_command(path: str) -> str:
    return f"rm -f -- {sh(path)} {sh(path + SIDECAR_SUFFIX)}"


def restore_command(t: Topology, db_host: Container, dump: str, prelude_file: str) -> str:
    """One transaction: the prelude, then the dump's own `--clean --if-exists` script."""
    script = sh("pg_restore", "--clean", "--if-exists", "--file=-", dump)
    psql = sh("runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
              "--single-transaction", "-o", "/dev/null", "-h", _socket(db_host), "-p", str(t.database.port),
              "-d", t.database.name)
    return (f"set -o pipefail; {{ cat {sh(prelude_file)} && {script}; }} | {psql}; rc=$?; "
            f"rm -f {sh(prelude_file)}; exit $rc")


def git_migrations_command(paths: cmd.AppPaths, sha: str) -> str:
    return f"git --git-dir={sh(paths.mirror)} ls-tree -r --name-only {sh(sha)} -- prisma/migrations/"


def git_show_command(paths: cmd.AppPaths, sha: str, name: str) -> str:
    return (f"git --git-dir={sh(paths.mirror)} show "
            f"{sh(f'{sha}:prisma/migrations/{name}/migration.sql')} | base64 -w0")


def pre_restore_path(t: Topology, now: datetime) -> str:
    return f"{backup_folder(t)}/{now.strftime('%Y%m%d%H%M%S')}-pre-restore.dump"


# =========================================================================== operations


def _utc(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def take_verified_dump(svc: Service, db: Executor, target: str, *, kind: str,
                       applied: Sequence[str], pending: Sequence[str] = (),
                       deploy: Mapping[str, str | None] | None = None) -> DumpMeta:
    """pg_dump to `target`, verify it, write its sidecar; DumpError (file removed) if it does not verify."""
    t = svc.t
    tables = db_tables(t, db)
    with svc.progress.step("back up the database", long=True):
        db.run(cmd.dump_database(t, t.database_host, target), step="back up the database")
    with svc.progress.step("verify the dump"):
        size, _toc, problems = verify_dump(t, db, target, tables=tables)
        if problems:
            with contextlib.suppress(BlueGreenError):
                db.run(delete_backup_command(target), step="remove the unusable dump")
            raise DumpError(f"the database dump {target} failed verification and was removed: "
                            + "; ".join(problems) + ". Nothing was migrated or restored.")
    info = dict(deploy or {})
    meta = DumpMeta(file=target.rsplit("/", 1)[-1], bytes=size, created_at=_utc(), kind=kind,
                    database=t.database.name, verified=True, tables=tuple(sorted(tables)),
                    applied=tuple(sorted(applied)), pending=tuple(pending), color=info.get("colour"),
                    ref=info.get("ref"), sha=info.get("sha"), release=info.get("release"), by=svc.who)
    write_meta(db, target, meta)
    return meta


def write_meta(db: Executor, target: str, meta: DumpMeta) -> None:
    db.put(target + SIDECAR_SUFFIX, meta.sidecar(), step="record the dump", mode=0o640)


def prune(t: Topology, db: Executor) -> list[str]:
    """Apply retention; returns the files deleted."""
    doomed = retention(read_backups(t, db), t.database.backup_keep)
    for b in doomed:
        db.run(delete_backup_command(b.path), step="prune dumps")
    return [b.file for b in doomed]


def live_release_migrations(svc: Service, color: str) -> tuple[str | None, str | None, list[str]]:
    """(release, sha, migration names) of what `color` serves."""
    t = svc.t
    host = t.app_host(color)
    paths = cmd.AppPaths.of(t, host)
    with svc._on(host) as ex:
        current = cmd.parse_current(ex.run(cmd.read_current(paths), step="read release").stdout)
        names = (ex.run(cmd.list_migrations(current.path), step="list migrations").stdout.split()
                 if current.path else [])
    return current.name, current.sha, names


def migrations_in_dump(db: Executor, path: str) -> list[str]:
    out = db.run(dump_migrations_command(path), step="read the dump's migrations", check=False)
    return applied_in_dump(out.stdout) if out.ok else []


# --------------------------------------------------------------------------- deploy: plan


def inspect_ref(svc: Service, color: str, ref: str) -> tuple[str, list[PendingMigration]]:
    """Resolve `ref` on `color`'s mirror and list the migrations that commit would apply."""
    t = svc.t
    host = t.app_host(color)
    paths = cmd.AppPaths.of(t, host)
    with svc._on(host) as ex:
        out = ex.run(cmd.fetch_ref(t, paths, ref), step="fetch", check=False)
        if out.exit_code != 0:
            if not out.stderr.strip():
                raise ConfigError(f"unknown git ref {ref!r} in {t.app.repo}")
            raise DeployError("plan", f"{host.label}: fetch failed: {short_error(out.stderr)}")
        sha = out.stdout.strip().splitlines()[-1]
        return sha, _pending_at(svc, ex, paths, sha)


def _pending_at(svc: Service, ex: Executor, paths: cmd.AppPaths, sha: str) -> list[PendingMigration]:
    names = migration_files(ex.run(git_migrations_command(paths, sha), step="list migrations").stdout)
    with svc._on(svc.t.database_host) as db:
        rows = svc._applied_rows(db)
    result = []
    for name in migrations.pending(names, rows):
        raw = base64.b64decode(ex.run(git_show_command(paths, sha, name), step="read migration").stdout.strip())
        result.append(PendingMigration(name=name, checksum=migrations.migration_checksum(raw),
                                       sql=raw.decode(errors="replace")))
    return result


# --------------------------------------------------------------------------- deploy: the step


def check_fetched(run: Any, ex: Executor, sha: str) -> None:
    """Right after the fetch: refuse a commit other than the approved one, showing both (and what
    the new commit would migrate)."""
    pin: DeployPin | None = getattr(run, "pin", None)
    if pin is None or pin.sha == sha:
        return
    try:
        now = [(m.name, m.checksum) for m in _pending_at(run.s, ex, run.paths, sha)]
    except BlueGreenError as exc:
        log.warning("could not list the pending migrations of %s: %s", sha[:12], exc)
        now = None
    check_pin(pin, sha=sha, pending=now)


def migrations_step(run: Any, ex: Executor, *, migrate: bool, allow_destructive: bool) -> None:
    """`_DeployRun`'s migrations step: pin check, destructive check, verified dump, migrate, mark good,
    retention. `run` is the `_DeployRun` (its service, release, result and pin)."""
    svc, t, result = run.s, run.t, run.result
    names = ex.run(cmd.list_migrations(run.release), step="list migrations").stdout.split()
    with svc._on(t.database_host) as db:
        rows = svc._applied_rows(db)
        blocked = migrations.failed(rows)
        if blocked:
            raise DeployError("migrations", migrations.blocked_message(
                blocked, f"the app directory {run.paths.current} on {run.host.label}"))
        sums = migrations.parse_checksums(ex.run(cmd.migration_checksums(run.release),
                                                 step="checksum migrations").stdout)
        edited = migrations.edited_after_applying(sums, rows)
        if edited:
            result.migrations_edited = edited
            svc.progress.note(migrations.edited_message(edited))
            log.warning("%s", migrations.edited_message(edited))
        pending = migrations.pending(names, rows)
        sql = {name: ex.get(f"{run.release}/prisma/migrations/{name}/migration.sql", step="read migration") or b""
               for name in pending}
        check_pin(getattr(run, "pin", None), sha=result.sha or "",
                  pending=[(n, migrations.migration_checksum(sql[n])) for n in pending])
        if not pending:
            svc.progress.note("no pending migrations")
            return
        if not migrate:
            raise DeployError("migrations", f"{len(pending)} migration(s) pending ({', '.join(pending)}); "
                              "run the deploy with --migrate to back up the database and apply them")
        findings: list[migrations.Finding] = []
        for name in pending:
            findings += migrations.analyze(name, sql[name].decode(errors="replace"))
        if findings and not allow_destructive:
            raise DeployError("migrations", migrations.explain(findings))
        target = cmd.backup_path(t, t.database_host, run.color, result.sha or "unknown", datetime.now(UTC))
        applied_before = [r.name for r in rows if r.applied]
        meta = take_verified_dump(svc, db, target, kind=KIND_PRE_MIGRATION, applied=applied_before,
                                  pending=pending, deploy={"colour": run.color, "ref": run.ref,
                                                           "sha": result.sha, "release": result.release})
        result.backup = target
        result.backup_bytes = meta.bytes
        write_dump_metrics(db, t, target)  # for the no-recent-good-dump alert
        _prune_quietly(t, db)  # safe before migrating: good dumps are counted apart from this one
        run.pending = pending
        run.applied_before = applied_before
        with svc.progress.step(f"apply {len(pending)} migration(s)", long=True):
            ex.run(cmd.migrate(t, run.release), step="migrate")
        result.migrations_applied = pending
        write_meta(db, target, dataclasses.replace(meta, migrated=True, migrated_at=_utc()))
        _prune_quietly(t, db)


def _prune_quietly(t: Topology, db: Executor) -> None:
    try:
        deleted = prune(t, db)
        if deleted:
            log.info("pruned dumps: %s", ", ".join(deleted))
    except BlueGreenError as exc:
        log.warning("could not prune old dumps: %s", exc)


def failure_note(svc: Service, run: Any, result: DeployResult) -> str | None:
    """What happened to the database when a deploy failed after its dump was taken (None before)."""
    if not result.backup:
        return None
    dump = f"{result.backup} ({human_bytes(result.backup_bytes or 0)})"
    pending = list(getattr(run, "pending", []) or [])
    applied_now: list[str] = list(result.migrations_applied)
    failed_now: list[str] = []
    if not applied_now and pending:
        # The migrate step itself failed: read what it left behind.
        try:
            with svc._on(svc.t.database_host) as db:
                rows = svc._applied_rows(db)
            applied_now = [n for n in pending if any(r.name == n and r.applied for r in rows)]
            failed_now = [r.name for r in migrations.failed(rows) if r.name in pending]
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


def list_dumps(svc: Service) -> list[Backup]:
    with svc._on(svc.t.database_host) as db:
        return read_backups(svc.t, db)


def _applied_names(svc: Service, db: Executor) -> list[str]:
    return sorted(r.name for r in svc._applied_rows(db) if r.applied)


def restore(svc: Service, backup: str | None = None, *, check_live: bool = True,
            expect_applied: Sequence[str] | None = None, reason: str = "db restore") -> RestoreResult:
    """Restore a dump (default: the last good one) in one transaction, after a fresh dump."""
    t = svc.t
    with svc._holding(reason), svc._on(t.load_balancer) as lb, svc._on(t.database_host) as db:
        with svc.progress.step("choose the dump"):
            backups = read_backups(t, db)
            chosen = pick_backup(backups, backup)
            size, toc, problems = verify_dump(t, db, chosen.path, tables={})
            if problems:
                raise RestoreRefused(f"refusing to restore {chosen.file}: " + "; ".join(problems))
            in_dump = migrations_in_dump(db, chosen.path)
            before = _applied_names(svc, db)
        if expect_applied is not None and sorted(expect_applied) != before:
            raise RestoreRefused(
                "refusing to restore: the database's migrations changed since the plan was shown "
                f"(then: {', '.join(sorted(expect_applied)) or 'none'}; now: {', '.join(before) or 'none'}). "
                "Nothing was restored; review `bluegreen db backups` and run `bluegreen db restore`.")
        if check_live:
            live = svc.live_color(lb)
            release, _sha, needed = live_release_migrations(svc, live)
            missing = sorted(set(needed) - set(in_dump))
            if missing:
                raise RestoreRefused(
                    f"refusing to restore {chosen.file}: the live colour {live} runs release {release}, "
                    f"which needs migration(s) the dump predates ({', '.join(missing)}); restoring would "
                    f"break production. Roll back first with `bluegreen rollback --with-database` "
                    f"(switches to the previous colour, then restores), or restore a newer dump.")
        now = datetime.now(UTC)
        undo_target = pre_restore_path(t, now)
        undo = take_verified_dump(svc, db, undo_target, kind=KIND_PRE_RESTORE, applied=before,
                                  deploy={"colour": None, "ref": None, "sha": None, "release": None})
        undo = dataclasses.replace(undo, note=f"taken before restoring {chosen.file}")
        write_meta(db, undo_target, undo)
        extras = extra_objects(parse_objects(db.run(cmd.psql(t, t.database_host, objects_query()),
                                                    step="list database objects").stdout), toc)
        prelude = f"{backup_folder(t)}/.restore-prelude.sql"
        db.put(prelude, restore_prelude(extras), step="write the restore prelude", mode=0o644)
        with svc.progress.step(f"restore {chosen.file} in one transaction", long=True):
            started = time.monotonic()
            out = db.run(restore_command(t, t.database_host, chosen.path, prelude), step="restore the database",
                         check=False)
            ended = time.monotonic()
            if out.exit_code != 0:
                raise RestoreRefused(
                    f"restoring {chosen.file} failed and was rolled back (one transaction): "
                    f"{short_error(out.stderr)}. The database is as it was; the dump taken just before "
                    f"is {undo_target}.")
        after = _applied_names(svc, db)
        result = RestoreResult(
            ok=True, restored={**chosen.to_json(), "bytes": size}, undo=Backup(
                file=undo.file, path=undo_target, bytes=undo.bytes, mtime=time.time(), meta=undo).to_json(),
            undo_command=f"bluegreen db restore {undo.file}",
            dropped=[f"{o.desc} {o.qualified}" for o in extras], migrations_before=before,
            migrations_after=after, window_s=ended - started, window=(started, ended), reason=reason)
        _record(svc, lb, result)
        _prune_quietly(t, db)
        return result


def _record(svc: Service, lb: Executor, result: RestoreResult) -> None:
    from .service import iso, utcnow

    try:
        state = svc._read_state(lb)
        entry = {"type": "restore", "timestamp": iso(utcnow()), "who": svc.who, "reason": result.reason,
                 "restored": result.restored.get("file"), "undo": (result.undo or {}).get("file"),
                 "undoCommand": result.undo_command, "dropped": result.dropped,
                 "migrationsBefore": result.migrations_before, "migrationsAfter": result.migrations_after,
                 "durationMs": int(result.window_s * 1000)}
        keep = svc.t.journal.history_keep
        state = dataclasses.replace(state, history=((entry, *state.history))[:keep])
        svc._write_state(lb, state, svc.live_color(lb))
    except BlueGreenError as exc:
        log.error("could not record the restore in the journal: %s", exc)


# --------------------------------------------------------------------------- rollback --with-database


@dataclass
class RollbackDbPlan:
    from_color: str
    to_color: str
    from_release: str | None
    from_sha: str | None
    to_release: str | None
    to_sha: str | None
    dump: dict[str, Any] | None
    undoes: list[str]
    applied_now: list[str]
    steps: list[str]
    problems: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"from": self.from_color, "colour": self.to_color, "fromRelease": self.from_release,
                "fromSha": self.from_sha, "release": self.to_release, "sha": self.to_sha,
                "dump": self.dump, "undoesMigrations": self.undoes, "appliedNow": self.applied_now,
                "steps": self.steps, "problems": self.problems}


def plan_rollback_with_database(svc: Service) -> RollbackDbPlan:
    t = svc.t
    with svc._on(t.load_balancer) as lb:
        live = svc.live_color(lb)
        state = svc._read_state(lb)
    target = state.previous_live(live) or other_color(live)
    problems: list[str] = []
    from_release, from_sha, _ = live_release_migrations(svc, live)
    to_release, to_sha, to_needs = live_release_migrations(svc, target)
    if not to_release:
        problems.append(f"{target} serves no release to roll back to")
    with svc._on(t.database_host) as db:
        backups = read_backups(t, db)
        applied_now = _applied_names(svc, db)
        chosen = dump_before_release(backups, live, from_sha) if from_sha else None
        in_dump = migrations_in_dump(db, chosen.path) if chosen else []
    undoes = sorted(set(applied_now) - set(in_dump)) if chosen else []
    if chosen is None:
        problems.append(f"the live release {from_release} on {live} applied no migration this tool recorded "
                        f"a dump for: there is nothing to restore. Use `bluegreen rollback` (code only).")
    else:
        missing = sorted(set(to_needs) - set(in_dump))
        if missing:
            problems.append(f"{target}'s release {to_release} itself needs migration(s) the dump predates "
                            f"({', '.join(missing)}): restoring would break it")
    steps = [f"switch live traffic {live} -> {target} (release {to_release}, {(to_sha or '')[:7]}); "
             f"{live} keeps running {from_release}"]
    if chosen is not None:
        steps += [
            "take a fresh verified dump of the database (the undo of this restore)",
            f"restore {chosen.file} ({human_bytes(chosen.bytes)}, taken {chosen.created} before deploying "
            f"{(from_sha or '')[:7]} to {live}) in ONE transaction (pg_restore --clean --if-exists): undoes "
            f"migration(s) {', '.join(undoes) or 'none'}; rows written since {chosen.created} are lost "
            f"from the live database (they stay in the fresh dump)",
            "print the command that undoes the restore",
        ]
    return RollbackDbPlan(from_color=live, to_color=target, from_release=from_release, from_sha=from_sha,
                          to_release=to_release, to_sha=to_sha, dump=chosen.to_json() if chosen else None,
                          undoes=undoes, applied_now=applied_now, steps=steps, problems=problems)


def rollback_with_database(svc: Service, plan: RollbackDbPlan, *, direct: bool = False) -> dict[str, Any]:
    """Switch to the previous colour, then restore the dump the plan named, in that order."""
    if plan.problems or plan.dump is None:
        raise RestoreRefused("refusing to roll back with the database: " + "; ".join(plan.problems))
    switched = svc.switch(direct=direct, watch=False, to_color=plan.to_color, reason="rollback --with-database")
    if not switched.ok:
        return {"ok": False, "switch": switched.to_json(), "restore": None,
                "error": f"the switch failed, so the database was not restored: {switched.error}"}
    try:
        restored = restore(svc, plan.dump["file"], check_live=False, expect_applied=plan.applied_now,
                           reason="rollback --with-database")
    except BlueGreenError as exc:
        raise BlueGreenError(f"{plan.to_color} is live again (the code is rolled back), but the database "
                             f"was NOT restored: {exc}") from None
    return {"ok": True, "switch": switched.to_json(), "restore": restored.to_json(),
            "undoCommand": restored.undo_command}


def last_good_summary(t: Topology, db: Executor) -> dict[str, Any] | None:
    good = last_good(read_backups(t, db))
    return None if good is None else {"file": good.file, "path": good.path, "bytes": good.bytes,
                                      "createdAt": good.created, "sha": good.meta.sha if good.meta else None,
                                      "colour": good.meta.color if good.meta else None}


__all__ = ["Backup", "DeployPin", "DumpError", "DumpMeta", "PendingMigration", "PlanMismatch",
           "RestoreRefused", "RestoreResult", "RollbackDbPlan", "check_pin", "inspect_ref",
           "migrations_step", "plan_rollback_with_database", "restore", "retention",
           "rollback_with_database"]
