"""Prisma migrations against a database both colours share: what is pending, what is broken, and
which statements the colour still serving could not survive.

Both colours run against one PostgreSQL database, so a migration applied for the standby runs
under the live colour's feet. `analyze` flags the statements that break old code (drops, renames,
type changes, new NOT NULL constraints); everything else here mirrors `prisma migrate deploy`'s
own bookkeeping in `_prisma_migrations`, read through psql. All pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bluegreen.model.errors import BlueGreenError

MIGRATIONS_TABLE = "_prisma_migrations"


class MigrationTableError(BlueGreenError):
    """The `_prisma_migrations` rows could not be read back (psql printed something unexpected)."""


# --------------------------------------------------------------------------- _prisma_migrations


@dataclass(frozen=True)
class AppliedRow:
    """One row of `_prisma_migrations` (timestamps as ISO UTC text, None when NULL)."""

    id: str
    checksum: str
    migration_name: str
    started_at: str | None
    finished_at: str | None
    rolled_back_at: str | None
    applied_steps_count: int
    logs: str = ""

    @property
    def name(self) -> str:
        return self.migration_name

    @property
    def failed(self) -> bool:
        return self.finished_at is None and self.rolled_back_at is None

    @property
    def applied(self) -> bool:
        return self.finished_at is not None and self.rolled_back_at is None


def pending(local_names: Iterable[str], applied_rows: Iterable[AppliedRow]) -> list[str]:
    """Migration directories Prisma would apply: no row of that name that was not rolled back."""
    present = {r.migration_name for r in applied_rows if r.rolled_back_at is None}
    return sorted({n for n in local_names if n not in present})


def failed(applied_rows: Iterable[AppliedRow]) -> list[AppliedRow]:
    """Rows that block every deploy (Prisma's P3009) until `prisma migrate resolve`."""
    return [r for r in applied_rows if r.failed]


def applied_not_local(local_names: Iterable[str], applied_rows: Iterable[AppliedRow]) -> list[str]:
    """Migrations the database has but the release does not: that code is older than the schema."""
    local = set(local_names)
    return sorted({r.migration_name for r in applied_rows if r.applied and r.migration_name not in local})


def migration_checksum(sql: str | bytes) -> str:
    data = sql.encode() if isinstance(sql, str) else sql
    return hashlib.sha256(data).hexdigest()


def checksum_matches(sql: str | bytes, checksum: str) -> bool:
    """Like Prisma, a file checked out with other line endings (git autocrlf) still matches."""
    data = sql.encode() if isinstance(sql, str) else sql
    lf = data.replace(b"\r\n", b"\n")
    variants = (data, lf, lf.replace(b"\n", b"\r\n"))
    wanted = checksum.strip().lower()
    return any(migration_checksum(v) == wanted for v in variants)


def checksum_drift(local: Mapping[str, str | bytes], applied_rows: Iterable[AppliedRow]) -> list[str]:
    """Applied migrations whose file changed since (Prisma itself never notices)."""
    drifted = {r.migration_name for r in applied_rows
               if r.applied and r.migration_name in local
               and not checksum_matches(local[r.migration_name], r.checksum)}
    return sorted(drifted)


# Logs are read hex-encoded, so no field can hold a newline or a separator: the rows parse the same
# with psql's NUL separators (PSQL_ARGS, -z -0) or with `-A -t -F $'\x1f'` and newline records.
PSQL_ARGS = ("--no-psqlrc", "--quiet", "--no-align", "--tuples-only", "--field-separator-zero",
             "--record-separator-zero", "--set", "ON_ERROR_STOP=1")
UNIT_SEPARATOR = "\x1f"
_COLUMNS = 8
_TS = "YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\""


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def applied_rows_query(schema: str = "public") -> str:
    """One SELECT (fits `psql -c`) of every `_prisma_migrations` row, oldest first.

    On a database Prisma never migrated psql fails with `relation ... does not exist`; give its
    stderr and exit code to `parse_applied`, which reads that as nothing applied.
    """
    table = f"{_quote_ident(schema)}.{_quote_ident(MIGRATIONS_TABLE)}"

    def ts(column: str) -> str:
        return f"to_char({column} AT TIME ZONE 'UTC', '{_TS}')"

    return (f"SELECT id, checksum, migration_name, {ts('started_at')}, {ts('finished_at')}, "
            f"{ts('rolled_back_at')}, applied_steps_count, "
            f"encode(convert_to(coalesce(logs, ''), 'UTF8'), 'hex') "
            f"FROM {table} ORDER BY started_at, migration_name")


def _missing_table(text: str) -> bool:
    return "relation" in text and f'{MIGRATIONS_TABLE}" does not exist' in text


def _unexpected(detail: str) -> MigrationTableError:
    return MigrationTableError(f"unexpected psql output reading {MIGRATIONS_TABLE}: {detail}")


def _records(stdout: str) -> list[list[str]]:
    if "\0" in stdout:
        fields = stdout.split("\0")
        if len(fields) % _COLUMNS == 1 and fields[-1].strip() == "":
            fields = fields[:-1]  # the separator psql prints after the last record
        if len(fields) % _COLUMNS:
            raise _unexpected(f"{len(fields)} fields is not a whole number of {_COLUMNS}-column rows")
        return [fields[k:k + _COLUMNS] for k in range(0, len(fields), _COLUMNS)]
    records = [line.split(UNIT_SEPARATOR) for line in stdout.split("\n") if line.strip()]
    for record in records:
        if len(record) != _COLUMNS:
            raise _unexpected(f"a row of {len(record)} fields instead of {_COLUMNS} "
                              f"(run psql with -A -t and the NUL or unit separator)")
    return records


def parse_applied(stdout: str, stderr: str = "", exit_code: int = 0) -> list[AppliedRow]:
    """The rows printed for `applied_rows_query()`; a missing table means nothing was applied."""
    if exit_code != 0:
        if _missing_table(stderr) or _missing_table(stdout):
            return []
        detail = (stderr.strip() or stdout.strip() or "no output")[-500:]
        raise MigrationTableError(f"reading {MIGRATIONS_TABLE} failed (psql exit code {exit_code}): "
                                  f"{detail}")
    if UNIT_SEPARATOR not in stdout and "\0" not in stdout and _missing_table(stdout):
        return []  # the error text, from a caller that merged stderr into stdout
    rows: list[AppliedRow] = []
    for rid, checksum, name, started, finished, rolled_back, steps, logs_hex in _records(stdout):
        try:
            step_count = int(steps)
            logs = bytes.fromhex(logs_hex).decode("utf-8", errors="replace")
        except ValueError:
            raise _unexpected(f"the row of {name!r} does not parse (applied_steps_count {steps!r})") from None
        rows.append(AppliedRow(id=rid, checksum=checksum, migration_name=name,
                               started_at=started or None, finished_at=finished or None,
                               rolled_back_at=rolled_back or None, applied_steps_count=step_count,
                               logs=logs))
    return rows


# --------------------------------------------------------------------------- what the deploy says

# Prisma's own words when a failed migration blocks `migrate deploy` (P3009, schema-engine's
# `FoundFailedMigrations`), checked against the real CLI in tests/integration/test_prisma_real.py.
P3009_TEXT = ("migrate found failed migrations in the target database, new migrations will not be "
              "applied. Read more about how to resolve migration issues in a production database: "
              "https://pris.ly/d/migrate-resolve")


def _indent(text: str, prefix: str = "    ", limit: int = 1500) -> str:
    text = text.strip()
    if len(text) > limit:
        text = text[:limit] + " ..."
    return "\n".join(prefix + line for line in text.splitlines()) if text else f"{prefix}(no log)"


def blocked_message(failed_rows: Sequence[AppliedRow], where: str) -> str:
    """Why a deploy stops on a failed migration, in Prisma's words, and the commands that unblock it.

    `where` names the release directory (and host) the resolve commands run in.
    """
    first = failed_rows[0]
    lines = ["Prisma P3009: " + P3009_TEXT]
    for row in failed_rows:
        lines.append(f"The `{row.name}` migration started at {row.started_at or 'an unknown time'} failed")
        lines.append("Prisma's log of that attempt (_prisma_migrations.logs):")
        lines.append(_indent(row.logs))
    lines += [
        "Nothing is applied until it is resolved. Check what the failed migration left in the database "
        "(PostgreSQL ran the file as one transaction unless it has its own BEGIN/COMMIT), then record "
        f"the outcome from {where}:",
        f"  npx prisma migrate resolve --rolled-back \"{first.name}\"   # its changes are not in the "
        "database: a fixed file runs again at the next deploy",
        f"  npx prisma migrate resolve --applied \"{first.name}\"       # you completed its changes by hand",
    ]
    return "\n".join(lines)


def parse_checksums(stdout: str) -> dict[str, str]:
    """`name sha256` lines (commands.migration_checksums) as {name: checksum}."""
    result: dict[str, str] = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and len(parts[1]) == 64:
            result[parts[0]] = parts[1].lower()
    return result


def edited_after_applying(local_checksums: Mapping[str, str], applied_rows: Iterable[AppliedRow]) -> list[str]:
    """Applied migrations whose migration.sql in the release no longer has the checksum Prisma
    recorded when it ran the file. `migrate deploy` never notices; the schema may then differ from
    what the release's migration files say it is."""
    return sorted({r.migration_name for r in applied_rows
                   if r.applied and r.migration_name in local_checksums
                   and local_checksums[r.migration_name].strip().lower() != r.checksum.strip().lower()})


def edited_message(names: Sequence[str]) -> str:
    return (f"{len(names)} applied migration(s) edited after they ran: {', '.join(names)} (the file's "
            "SHA-256 differs from _prisma_migrations.checksum). Prisma does not re-run or check them; "
            "put the change in a new migration instead, or restore the file.")
