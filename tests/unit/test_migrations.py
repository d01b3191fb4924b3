"""Migration analysis (pure) and reading `_prisma_migrations` back through a real psql."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bluegreen.hosts.executor import LocalExecutor
from bluegreen.model.errors import ConfigError
from bluegreen.model.migrations import (
    PSQL_ARGS,
    AppliedRow,
    MigrationTableError,
    applied_not_local,
    applied_rows_query,
    checksum_drift,
    checksum_matches,
    failed,
    migration_checksum,
    parse_applied,
    pending,
)
from bluegreen.model.sql_analysis import (
    ADD_NOT_NULL,
    ALLOW_FLAG,
    ALTER_TYPE,
    DROP_COLUMN,
    DROP_SCHEMA,
    DROP_TABLE,
    RENAME_COLUMN,
    RENAME_TABLE,
    SET_NOT_NULL,
    TRUNCATE,
    analyze,
    explain,
    split_statements,
)
from bluegreen.render.shell import sh

MIGRATIONS = Path(__file__).resolve().parents[1] / "fixtures" / "prisma" / "migrations"


def local_migrations() -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in sorted(MIGRATIONS.glob("*/migration.sql"))}


# --------------------------------------------------------------------------- splitting


@pytest.mark.parametrize("sql, expected", [
    ("SELECT 1; SELECT 2;", ["SELECT 1", "SELECT 2"]),
    ("SELECT 'a;b'; SELECT 'it''s;'", ["SELECT 'a;b'", "SELECT 'it''s;'"]),
    ("SELECT E'\\';' ; SELECT 2", ["SELECT E'\\';'", "SELECT 2"]),
    ('SELECT "we;ird""name" FROM t; SELECT 2', ['SELECT "we;ird""name" FROM t', "SELECT 2"]),
    ("-- a; comment\nSELECT 1 -- trailing; comment\n; SELECT 2", ["SELECT 1", "SELECT 2"]),
    ("/* outer /* inner; */ still; */ SELECT 1; /* only a comment; */", ["SELECT 1"]),
    ("CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql; SELECT 2",
     ["CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql", "SELECT 2"]),
    ("DO $body$ BEGIN PERFORM 1; $x$ not the end; END $body$; SELECT $1",
     ["DO $body$ BEGIN PERFORM 1; $x$ not the end; END $body$", "SELECT $1"]),
    ("SELECT a$b FROM t;;;  ;", ["SELECT a$b FROM t"]),
    ("", []),
])
def test_split_statements_respects_quotes_comments_and_dollar_bodies(sql: str, expected: list[str]) -> None:
    assert split_statements(sql) == expected


@pytest.mark.parametrize("sql, what", [
    ("SELECT 1;\nSELECT 'oops", "unterminated string starting on line 2"),
    ('SELECT "oops', "unterminated quoted identifier starting on line 1"),
    ("SELECT 1; /* never closed", "unterminated /\\* comment starting on line 1"),
    ("SELECT 1;\n\nDO $f$ BEGIN", "unterminated \\$f\\$-quoted body starting on line 3"),
])
def test_broken_sql_is_a_config_error_naming_file_and_line(sql: str, what: str) -> None:
    with pytest.raises(ConfigError, match=f"^20250915_x/migration.sql: {what}"):
        analyze("20250915_x/migration.sql", sql)


# --------------------------------------------------------------------------- analysis


@pytest.mark.parametrize("sql, kinds", [
    ('DROP TABLE "Post"', [DROP_TABLE]),
    ("drop table if exists public.posts, comments cascade", [DROP_TABLE]),
    ('ALTER TABLE "User" DROP COLUMN "email"', [DROP_COLUMN]),
    ('ALTER TABLE "User" DROP "email"', [DROP_COLUMN]),
    ('ALTER TABLE IF EXISTS ONLY "User" DROP COLUMN IF EXISTS "email"', [DROP_COLUMN]),
    ('ALTER TABLE "Post" RENAME TO "Article"', [RENAME_TABLE]),
    ('ALTER TABLE "User" RENAME COLUMN "email" TO "emailAddress"', [RENAME_COLUMN]),
    ('ALTER TABLE "User" RENAME "email" TO "mail"', [RENAME_COLUMN]),
    ('ALTER TABLE "User" ALTER COLUMN "age" SET DATA TYPE BIGINT', [ALTER_TYPE]),
    ('ALTER TABLE "User" ALTER "age" TYPE text USING "age"::text', [ALTER_TYPE]),
    ('ALTER TABLE "User" ADD COLUMN "emailAddress" TEXT NOT NULL', [ADD_NOT_NULL]),
    ('ALTER TABLE "User" ADD "n" INTEGER PRIMARY KEY', [ADD_NOT_NULL]),
    ('ALTER TABLE "User" ALTER COLUMN "name" SET NOT NULL', [SET_NOT_NULL]),
    ("DROP SCHEMA legacy CASCADE", [DROP_SCHEMA]),
    ('TRUNCATE TABLE "Shift"', [TRUNCATE]),
    ('TRUNCATE "Shift", "User" RESTART IDENTITY', [TRUNCATE]),
    ('ALTER TABLE "User" DROP COLUMN "a", ADD COLUMN "b" TEXT NOT NULL, ALTER COLUMN "c" SET NOT NULL',
     [DROP_COLUMN, ADD_NOT_NULL, SET_NOT_NULL]),
])
def test_statements_the_live_colour_cannot_survive_are_flagged(sql: str, kinds: list[str]) -> None:
    found = analyze("m.sql", sql + ";")
    assert [f.kind for f in found] == kinds
    assert all(f.file == "m.sql" and f.statement == sql and f.explanation for f in found)


@pytest.mark.parametrize("sql", [
    'CREATE TABLE "Post" ("id" TEXT NOT NULL, "title" TEXT NOT NULL, '
    'CONSTRAINT "Post_pkey" PRIMARY KEY ("id"))',
    'ALTER TABLE "User" ADD COLUMN "nickname" TEXT',
    "ALTER TABLE \"User\" ADD COLUMN \"role\" TEXT NOT NULL DEFAULT 'ATTENDANT'",
    'ALTER TABLE "User" ADD COLUMN "seq" SERIAL NOT NULL',
    'ALTER TABLE "User" ADD COLUMN "n" INT NOT NULL GENERATED ALWAYS AS IDENTITY',
    'CREATE INDEX "Shift_eventId_idx" ON "Shift"("eventId")',
    'CREATE UNIQUE INDEX CONCURRENTLY "u" ON "User"("email")',
    'ALTER TABLE "Shift" ADD CONSTRAINT "fk" FOREIGN KEY ("a") REFERENCES "User"("id") ON DELETE SET NULL',
    'ALTER TABLE "User" ALTER COLUMN "name" DROP NOT NULL',
    "ALTER TABLE \"User\" ALTER COLUMN \"role\" SET DEFAULT 'ADMIN'",
    'ALTER TABLE "User" DROP CONSTRAINT "User_email_key"',
    'ALTER TABLE "User" RENAME CONSTRAINT "a" TO "b"',
    'DROP INDEX "User_email_key"',
    "INSERT INTO notes VALUES ('DROP TABLE \"User\"; TRUNCATE x')",
    "-- DROP TABLE \"User\";\nSELECT 1",
    "/* ALTER TABLE \"User\" DROP COLUMN \"email\"; */ SELECT 1",
    'ALTER TABLE "drop" ADD COLUMN "truncate" TEXT',
])
def test_additive_changes_and_lookalikes_are_not_flagged(sql: str) -> None:
    assert analyze("m.sql", sql) == []


def test_the_fixture_migrations_only_flag_the_contracting_one() -> None:
    migrations = local_migrations()
    assert list(migrations) == ["20250801093000_init", "20250910120000_add_shift_notes",
                                "20250915080000_rename_attendant_email"]
    findings = [f for name, sql in migrations.items() for f in analyze(f"{name}/migration.sql", sql)]
    assert [(f.file.split("/")[0], f.kind) for f in findings] == [
        ("20250915080000_rename_attendant_email", DROP_COLUMN),
        ("20250915080000_rename_attendant_email", ADD_NOT_NULL),
        ("20250915080000_rename_attendant_email", SET_NOT_NULL),
    ]
    assert '"User"."email"' in findings[0].explanation


def test_explain_names_files_statements_the_pattern_and_the_override() -> None:
    findings = (analyze("20250915_a/migration.sql", 'ALTER TABLE "User" DROP COLUMN "email", '
                        'ADD COLUMN "emailAddress" TEXT NOT NULL;')
                + analyze("20250916_b/migration.sql", 'DROP TABLE "Post";'))
    message = explain(findings)
    assert message.startswith("refusing to migrate: 2 statements in 20250915_a/migration.sql, "
                              "20250916_b/migration.sql")
    assert ('20250915_a/migration.sql: ALTER TABLE "User" DROP COLUMN "email", ADD COLUMN "emailAddress" '
            "TEXT NOT NULL") in message
    assert '20250916_b/migration.sql: DROP TABLE "Post"' in message
    for kind in (DROP_COLUMN, ADD_NOT_NULL, DROP_TABLE):
        assert f"{kind}: " in message
    for step in ("expand", "writes both", "backfill", "switch", "contract in a later release"):
        assert step in message
    assert ALLOW_FLAG in message
    assert explain([]) == ""


# --------------------------------------------------------------------------- Prisma bookkeeping


def row(name: str, *, checksum: str = "", finished: bool = True,
        rolled_back: bool = False) -> AppliedRow:
    return AppliedRow(id=f"id-{name}", checksum=checksum, migration_name=name,
                            started_at="2025-09-01T10:00:00.000000Z",
                            finished_at="2025-09-01T10:00:01.000000Z" if finished else None,
                            rolled_back_at="2025-09-01T11:00:00.000000Z" if rolled_back else None,
                            applied_steps_count=1 if finished else 0)


def test_pending_follows_prisma_rolled_back_rows_do_not_count() -> None:
    local = ["20250910_b", "20250801_a", "20250915_c", "20250920_d"]
    rows = [row("20250801_a"), row("20250910_b", rolled_back=True, finished=False),
            row("20250915_c", finished=False)]
    assert pending(local, rows) == ["20250910_b", "20250920_d"]
    assert pending(local, []) == sorted(local)


def test_a_failed_row_blocks_and_a_resolved_one_does_not() -> None:
    stuck = row("20250915_c", finished=False)
    rows = [row("20250801_a"), stuck, row("20250910_b", finished=False, rolled_back=True)]
    assert failed(rows) == [stuck]


def test_applied_migrations_missing_from_the_release_mean_older_code() -> None:
    rows = [row("20250801_a"), row("20250915_c"), row("20250916_d", finished=False, rolled_back=True)]
    assert applied_not_local(["20250801_a"], rows) == ["20250915_c"]


def test_checksum_is_lowercase_sha256_hex_and_tolerates_line_endings() -> None:
    sql = 'ALTER TABLE "User" ADD COLUMN "x" TEXT;\n'
    expected = hashlib.sha256(sql.encode()).hexdigest()
    assert migration_checksum(sql) == expected == expected.lower()
    assert checksum_matches(sql.replace("\n", "\r\n"), expected)
    assert checksum_matches(sql, hashlib.sha256(sql.replace("\n", "\r\n").encode()).hexdigest())
    assert not checksum_matches(sql + "-- edited\n", expected)


def test_checksum_drift_reports_edited_applied_files_only() -> None:
    local = local_migrations()
    names = list(local)
    rows = [row(names[0], checksum=migration_checksum(local[names[0]])),
            row(names[1], checksum=migration_checksum("-- the file as it was applied\n")),
            row(names[2], checksum="0" * 64, finished=False, rolled_back=True),  # never really applied
            row("20240101_gone", checksum="f" * 64)]
    assert checksum_drift(local, rows) == [names[1]]


def test_psql_output_of_the_wrong_shape_is_a_clear_error() -> None:
    with pytest.raises(MigrationTableError, match="not a whole number of 8-column rows"):
        parse_applied("a\0b\0c\0")
    with pytest.raises(MigrationTableError, match="a row of 2 fields instead of 8"):
        parse_applied("a\x1fb\n")
    with pytest.raises(MigrationTableError, match="the row of 'm' does not parse"):
        parse_applied("i\0c\0m\0\0\0\0x\0\0")


def test_relation_does_not_exist_means_nothing_applied() -> None:
    message = ('ERROR:  relation "public._prisma_migrations" does not exist\n'
               "LINE 1: ...FROM public._prisma_migrations")
    assert parse_applied("", message, 1) == []
    assert parse_applied(message) == []  # stderr merged into the output
    assert parse_applied("") == []


def test_any_other_psql_failure_is_reported_with_its_message() -> None:
    expected = r"psql exit code 2\): psql: error: could not connect to server"
    with pytest.raises(MigrationTableError, match=expected):
        parse_applied("", "psql: error: could not connect to server: No such file or directory", 2)


# --------------------------------------------------------------------------- real PostgreSQL + psql

PG_BIN = Path("/usr/lib/postgresql/15/bin")

PRISMA_TABLE = """
CREATE TABLE "_prisma_migrations" (
    "id" VARCHAR(36) NOT NULL,
    "checksum" VARCHAR(64) NOT NULL,
    "finished_at" TIMESTAMPTZ,
    "migration_name" VARCHAR(255) NOT NULL,
    "logs" TEXT,
    "rolled_back_at" TIMESTAMPTZ,
    "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count" INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT "_prisma_migrations_pkey" PRIMARY KEY ("id")
);
"""


@pytest.fixture(scope="module")
def pg_socket_dir() -> Iterator[str]:
    """A throwaway PostgreSQL 15 listening on a unix socket only; stopped by its PID."""
    if os.geteuid() != 0 or not (PG_BIN / "postgres").exists():
        pytest.skip("needs root and PostgreSQL 15 (initdb runs as the postgres user)")
    base = Path(tempfile.mkdtemp(prefix="bg-pg-", dir="/tmp"))
    shutil.chown(base, "postgres")
    data = base / "data"
    server: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data),
                        "-U", "postgres", "-A", "trust", "--no-sync"], check=True, capture_output=True)
        with (base / "server.log").open("wb") as server_log:
            server = subprocess.Popen(
                [str(PG_BIN / "postgres"), "-D", str(data), "-k", str(base), "-c", "listen_addresses=",
                 "-c", "fsync=off"], user="postgres", stdout=server_log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while subprocess.run(["pg_isready", "-q", "-h", str(base)]).returncode != 0:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"PostgreSQL did not start: {(base / 'server.log').read_text()[-2000:]}")
            time.sleep(0.05)
        yield str(base)
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGINT)  # fast shutdown
            server.wait(timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def db(pg_socket_dir: str, request: pytest.FixtureRequest) -> tuple[str, str]:
    """A fresh database per test, so no test sees another's tables."""
    name = "jw_" + request.node.name.lower().replace("test_", "")[:50]
    psql((pg_socket_dir, "postgres"), f'DROP DATABASE IF EXISTS "{name}"')
    psql((pg_socket_dir, "postgres"), f'CREATE DATABASE "{name}"')
    return pg_socket_dir, name


NUL_ARGS = PSQL_ARGS
UNIT_ARGS = ("-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-F", "\x1f")  # the shape commands.psql uses


def psql(db: tuple[str, str], sql: str, *, args: tuple[str, ...] = NUL_ARGS,
         check: bool = True) -> tuple[str, str, int]:
    socket_dir, database = db
    command = sh("runuser", "-u", "postgres", "--", "psql", "-h", socket_dir, "-d", database, *args,
                 "-c", sql)
    result = LocalExecutor(host="db").run(command, step="psql", check=check)
    return result.stdout, result.stderr, result.exit_code


def test_a_database_prisma_never_touched_reads_as_nothing_applied(db: tuple[str, str]) -> None:
    stdout, stderr, code = psql(db, applied_rows_query(), check=False)
    assert code != 0 and "does not exist" in stderr  # what psql really says
    assert parse_applied(stdout, stderr, code) == []
    assert parse_applied(*psql(db, applied_rows_query("no_such_schema"), check=False)) == []


def test_a_real_psql_failure_is_not_mistaken_for_an_empty_database(db: tuple[str, str]) -> None:
    socket_dir, database = db
    reader = f"reader_{database}"  # roles are cluster-wide: one per test database
    psql(db, PRISMA_TABLE)
    psql(db, f'REVOKE ALL ON "_prisma_migrations" FROM PUBLIC; CREATE ROLE "{reader}" LOGIN;')
    command = sh("runuser", "-u", "postgres", "--", "psql", "-h", socket_dir, "-d", database, "-U", reader,
                 *NUL_ARGS, "-c", applied_rows_query())
    result = LocalExecutor(host="db").run(command, step="psql", check=False)
    with pytest.raises(MigrationTableError, match="permission denied"):
        parse_applied(result.stdout, result.stderr, result.exit_code)


@pytest.mark.parametrize("args", [NUL_ARGS, UNIT_ARGS], ids=["nul-separated", "unit-separated"])
def test_rows_read_through_real_psql_round_trip_exactly(db: tuple[str, str], args: tuple[str, ...]) -> None:
    local = local_migrations()
    names = list(local)
    nasty_logs = ("P3018\nA migration failed to apply.\tDatabase error: 42703 | column \"x\"\n"
                  ";'\"$$ \x1f ünïcode")
    psql(db, PRISMA_TABLE + f"""
INSERT INTO "_prisma_migrations" VALUES
  ('0a1b', '{migration_checksum(local[names[0]])}', '2025-08-01 09:30:02.123456+00', '{names[0]}',
   NULL, NULL, '2025-08-01 09:30:01+00', 1),
  ('0a1c', '{migration_checksum("edited")}', '2025-09-10 12:00:05+00', '{names[1]}',
   NULL, NULL, '2025-09-10 12:00:04+00', 1),
  ('0a1d', '{"e" * 64}', NULL, '{names[2]}', $logs${nasty_logs}$logs$, NULL, '2025-09-15 08:00:00+00', 0);
""")
    rows = parse_applied(*psql(db, applied_rows_query(), args=args))
    assert [r.name for r in rows] == names
    first, second, third = rows
    assert first == AppliedRow(id="0a1b", checksum=migration_checksum(local[names[0]]),
                               migration_name=names[0], started_at="2025-08-01T09:30:01.000000Z",
                               finished_at="2025-08-01T09:30:02.123456Z", rolled_back_at=None,
                               applied_steps_count=1, logs="")
    assert third.failed and third.logs == nasty_logs and third.finished_at is None
    assert failed(rows) == [third]
    assert pending(names, rows) == []
    assert checksum_drift(local, rows) == [names[1]]
    assert second.applied

    psql(db, """UPDATE "_prisma_migrations" SET rolled_back_at = '2025-09-15 09:00:00+00'
                WHERE id = '0a1d';""")
    rows = parse_applied(*psql(db, applied_rows_query(), args=args))
    assert failed(rows) == [] and pending(names, rows) == [names[2]]
    assert rows[2].rolled_back_at == "2025-09-15T09:00:00.000000Z"


def test_an_empty_table_reads_as_no_rows(db: tuple[str, str]) -> None:
    psql(db, PRISMA_TABLE)
    for args in (NUL_ARGS, UNIT_ARGS):
        assert parse_applied(*psql(db, applied_rows_query(), args=args)) == []


def test_a_schema_name_is_quoted_not_pasted(db: tuple[str, str]) -> None:
    psql(db, 'CREATE SCHEMA "odd""schema";' + PRISMA_TABLE.replace(
        'TABLE "_prisma_migrations"', 'TABLE "odd""schema"."_prisma_migrations"'))
    psql(db, """INSERT INTO "odd""schema"."_prisma_migrations"
                (id, checksum, migration_name, finished_at, applied_steps_count)
                VALUES ('x1', 'abc', '20250101_only', now(), 1);""")
    rows = parse_applied(*psql(db, applied_rows_query('odd"schema')))
    assert [r.name for r in rows] == ["20250101_only"]


# --------------------------------------------------------------------------- data loss, types, dynamic SQL

from bluegreen.model.sql_analysis import (  # noqa: E402
    DELETE_ROWS,
    DROP_TYPE,
    DROP_VIEW,
    DYNAMIC_SQL,
    RENAME_TYPE,
    RENAME_TYPE_VALUE,
)


@pytest.mark.parametrize("sql, kinds, target", [
    ('DELETE FROM "Shift"', [DELETE_ROWS], '"Shift"'),
    ('delete from only public."Shift" where "id" > 3', [DELETE_ROWS], 'public."Shift"'),
    ('WITH gone AS (DELETE FROM "Shift" RETURNING *) SELECT count(*) FROM gone', [DELETE_ROWS], "DELETE"),
    ('DROP VIEW "ShiftSummary"', [DROP_VIEW], '"ShiftSummary"'),
    ("DROP VIEW IF EXISTS a, b CASCADE", [DROP_VIEW], "a, b"),
    ('DROP MATERIALIZED VIEW "Totals"', [DROP_VIEW], '"Totals"'),
    ('DROP TYPE "Role"', [DROP_TYPE], '"Role"'),
    ('DROP TYPE IF EXISTS "Role", "Mood" CASCADE', [DROP_TYPE], '"Role", "Mood"'),
    ("DROP DOMAIN email_address", [DROP_TYPE], "email_address"),
    ("ALTER TYPE \"Role\" RENAME VALUE 'ADMIN' TO 'OWNER'", [RENAME_TYPE_VALUE], "'ADMIN'"),
    ('ALTER TYPE "Role" RENAME TO "UserRole"', [RENAME_TYPE], '"Role"'),
    ("DO $$ BEGIN EXECUTE 'DROP TABLE \"Shift\"'; END $$", [DYNAMIC_SQL, DROP_TABLE], '"Shift"'),
    ("DO $body$ BEGIN EXECUTE format('DROP TABLE %I', 'Shift'); END $body$", [DYNAMIC_SQL, DROP_TABLE], "DO block"),
    ("DO $$ BEGIN DELETE FROM \"Shift\"; END $$", [DYNAMIC_SQL, DELETE_ROWS], '"Shift"'),
    ("DO $$ DECLARE n int; BEGIN IF true THEN EXECUTE 'ALTER TABLE a DROP COLUMN b'; END IF; END $$",
     [DYNAMIC_SQL, DROP_COLUMN], "a.b"),
    ("DO $$ BEGIN RAISE NOTICE 'harmless'; END $$", [DYNAMIC_SQL], "DO block"),
    ("EXECUTE cleanup(1)", [DYNAMIC_SQL], "EXECUTE"),
    ("CREATE FUNCTION wipe() RETURNS void AS $$ BEGIN EXECUTE 'TRUNCATE x'; END $$ LANGUAGE plpgsql",
     [DYNAMIC_SQL], "function"),
])
def test_data_loss_type_changes_and_dynamic_sql_are_flagged(sql: str, kinds: list[str], target: str) -> None:
    found = analyze("m.sql", sql + ";")
    assert [f.kind for f in found] == kinds
    assert all(f.statement == sql for f in found)
    assert any(target in f.explanation for f in found), [f.explanation for f in found]
    message = explain(found)
    assert ALLOW_FLAG in message and "m.sql" in message


@pytest.mark.parametrize("sql", [
    "ALTER TYPE \"Role\" ADD VALUE 'GUEST'",
    "ALTER TYPE \"Role\" ADD VALUE IF NOT EXISTS 'GUEST' AFTER 'ADMIN'",
    'CREATE VIEW "ShiftSummary" AS SELECT 1',
    "CREATE TYPE \"Mood\" AS ENUM ('ok', 'not ok')",
    "CREATE FUNCTION one() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql",
    "INSERT INTO audit (what) VALUES ('DELETE FROM x; DO $$ $$')",
    "UPDATE \"Shift\" SET post = 'DROP VIEW v'",
    'SELECT "execute", "do" FROM "delete"',
])
def test_additive_type_and_view_changes_are_not_flagged(sql: str) -> None:
    assert analyze("m.sql", sql) == []
