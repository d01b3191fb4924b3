"""Database dumps as data: their sidecars, verification, retention, and what a restore must drop.

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

This module is the pure part (parsing and decisions); the command lines are in
`render.dbcommands`, the reads and writes on the database host in `hosts.database`, and the
operations in `ops.migrate`, `ops.restore` and `ops.rollback`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bluegreen.model.errors import BlueGreenError, ConfigError

log = logging.getLogger("bluegreen.dumps")

KIND_PRE_MIGRATION = "pre-migration"
KIND_PRE_RESTORE = "pre-restore"
KIND_SCHEDULED = "scheduled"  # the database host's timer (render.offsite), or `bluegreen db backup`
SIDECAR_SUFFIX = ".json"
# Names this tool gives its dumps (`commands.backup_path` and the pre-restore ones).
_OUR_NAME = re.compile(r"^\d{14}-[a-z0-9-]+\.dump$")
RESTORE_LOCK_TIMEOUT = "30s"


class DumpError(BlueGreenError):
    """A dump could not be taken or did not verify: nothing was migrated or restored."""


class RestoreRefused(BlueGreenError):
    """A restore was refused before anything changed."""


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
    sha256: str | None = None  # of the verified file: what every copy of it is checked against

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "bytes": self.bytes, "createdAt": self.created_at, "kind": self.kind,
                "database": self.database, "verified": self.verified, "tables": list(self.tables),
                "applied": list(self.applied), "pending": list(self.pending), "colour": self.color,
                "ref": self.ref, "sha": self.sha, "release": self.release, "by": self.by,
                "migrated": self.migrated, "migratedAt": self.migrated_at, "note": self.note,
                "sha256": self.sha256}

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
                   note=opt("note"), sha256=_sha256(data.get("sha256")))

    def sidecar(self) -> str:
        return json.dumps(self.to_json(), sort_keys=False) + "\n"


def _sha256(value: Any) -> str | None:
    return value if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) else None


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


def retention_class(backup: Backup) -> str:
    """Which count a dump of ours is kept in: `good` (taken before a migration that succeeded),
    `scheduled` (verified, taken by the timer or `db backup`), or `other` (failed attempts,
    pre-restore dumps, anything unverified). The shell twin is `render.offsite_scripts.PRUNE_FUNCTIONS`."""
    if backup.good:
        return "good"
    if backup.meta is not None and backup.meta.verified and backup.meta.kind == KIND_SCHEDULED:
        return "scheduled"
    return "other"


def retention(backups: Sequence[Backup], keep: int) -> list[Backup]:
    """Which dumps to delete: keep the newest `keep` of each class (`retention_class`). Classes are
    counted apart, so failed attempts never push out the last good dump and nightly dumps never
    push out the dump that undoes a migration; files this tool did not write are never deleted."""
    if keep < 1:
        raise ConfigError(f"database.backupKeep must be at least 1, got {keep}")
    # Ours by name only, newest first by name (it starts with the UTC time it was taken): the
    # shell twin on the backup host sees names, not the times inside sidecars.
    ours = sorted((b for b in backups if _OUR_NAME.match(b.file)), key=lambda b: b.file, reverse=True)
    doomed: list[Backup] = []
    for kind in ("good", "scheduled", "other"):
        doomed += [b for b in ours if retention_class(b) == kind][keep:]
    return sorted(doomed, key=lambda b: b.file)


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
