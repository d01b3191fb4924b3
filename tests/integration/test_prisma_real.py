"""bluegreen/migrations.py against `_prisma_migrations` tables that real Prisma wrote.

The real app (`sample-next/`: Prisma 6.19.3 with its JavaScript schema engine, no download) runs
`prisma migrate deploy` and `prisma migrate resolve` against a throwaway PostgreSQL 15 (the fixture
of test_sample_app.py, stopped by its PID). The rows are read back with the tool's own query and
parser, then judged with the functions the deploy uses: applied, pending, failed (P3009, with
Prisma's own words and the resolve command), rolled back, and edited after applying.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bluegreen.model import migrations
from bluegreen.render import commands as cmd
from tests.integration.test_sample_app import PSQL, Postgres, database, postgres  # noqa: F401

pytestmark = pytest.mark.integration

SAMPLE_NEXT = Path(__file__).resolve().parents[2] / "sample-next"
INIT = "20250101000000_init"
NOTES = "20250201000000_add_notes"
BROKEN = "20250301000000_broken"
GENERATED = shutil.ignore_patterns("node_modules", ".next", "generated", ".env", "next-env.d.ts")


@pytest.fixture(scope="module")
def node_modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sample-next's dependencies: the ones scripts/setup.sh installed, else `npm ci` from the
    cache into a scratch copy (no network needed once the cache is warm)."""
    installed = SAMPLE_NEXT / "node_modules"
    if (installed / ".bin" / "prisma").exists() and (installed / "adapter-pg-7").is_dir():
        return installed
    scratch = tmp_path_factory.mktemp("next-install") / "app"
    shutil.copytree(SAMPLE_NEXT, scratch, ignore=GENERATED)
    done = subprocess.run(["npm", "ci", "--prefer-offline", "--no-audit", "--no-fund"], cwd=scratch,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"npm ci failed (is the npm cache warm? run scripts/setup.sh):\n{done.stderr}"
    return scratch / "node_modules"


@pytest.fixture
def project(node_modules: Path, tmp_path: Path) -> Path:
    """A private copy of sample-next's sources (a test may edit its migrations)."""
    copy = tmp_path / "app"
    shutil.copytree(SAMPLE_NEXT, copy, ignore=GENERATED)
    (copy / "node_modules").symlink_to(node_modules)
    return copy


def prisma(project: Path, *args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "CHECKPOINT_DISABLE": "1", "PRISMA_HIDE_UPDATE_MESSAGE": "1"}
    return subprocess.run([str(project / "node_modules" / ".bin" / "prisma"), *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=180)


def rows(pg: Postgres, db: str) -> list[migrations.AppliedRow]:
    """`_prisma_migrations` through the tool's own query and parser."""
    done = subprocess.run([PSQL, *migrations.PSQL_ARGS, "-h", str(pg.socket_dir), "-p", str(pg.port),
                           "-U", "postgres", "-d", db, "-c", migrations.applied_rows_query()],
                          capture_output=True, text=True, timeout=60)
    return migrations.parse_applied(done.stdout, done.stderr, done.returncode)


def local_names(project: Path) -> list[str]:
    return sorted(p.parent.name for p in (project / "prisma" / "migrations").glob("*/migration.sql"))


def local_checksums(project: Path) -> dict[str, str]:
    """What the deploy computes on the host (commands.migration_checksums), run here."""
    done = subprocess.run(["bash", "-c", cmd.migration_checksums(str(project))], capture_output=True,
                          text=True, timeout=30, check=True)
    return migrations.parse_checksums(done.stdout)


def test_applied_then_pending_then_applied(project: Path, postgres: Postgres, database: str) -> None:  # noqa: F811
    url = postgres.url(database)
    assert rows(postgres, database) == []  # no table yet: nothing applied
    notes = project / "prisma" / "migrations" / NOTES
    held = project / "held-back"
    notes.rename(held)  # the first release has only the first migration

    first = prisma(project, "migrate", "deploy", url=url)
    assert first.returncode == 0, first.stderr
    applied = rows(postgres, database)
    assert [(r.name, r.applied, r.failed) for r in applied] == [(INIT, True, False)]
    assert applied[0].applied_steps_count == 1

    held.rename(notes)  # the next release adds a migration
    assert migrations.pending(local_names(project), applied) == [NOTES]
    # Prisma's checksum is the SHA-256 the deploy computes on the host.
    sums = local_checksums(project)
    assert sums[INIT] == applied[0].checksum
    assert migrations.checksum_matches((project / "prisma/migrations" / INIT / "migration.sql").read_bytes(),
                                       applied[0].checksum)
    assert migrations.edited_after_applying(sums, applied) == []
    assert migrations.applied_not_local([INIT], applied) == []

    second = prisma(project, "migrate", "deploy", url=url)
    assert second.returncode == 0, second.stderr
    applied = rows(postgres, database)
    assert [r.name for r in applied if r.applied] == [INIT, NOTES]
    assert migrations.pending(local_names(project), applied) == []
    assert migrations.failed(applied) == []
    # A release older than the schema: the database has a migration the release does not.
    assert migrations.applied_not_local([INIT], applied) == [NOTES]


@pytest.mark.timeout(900)
def test_failed_migration_blocks_until_resolved(project: Path, postgres: Postgres, database: str) -> None:  # noqa: F811
    url = postgres.url(database)
    broken = project / "prisma" / "migrations" / BROKEN
    broken.mkdir()
    (broken / "migration.sql").write_text('ALTER TABLE "Shift" ADD COLUMN "room" TEXT;\n'
                                          'ALTER TABLE "NoSuchTable" ADD COLUMN "x" INTEGER;\n')
    failing = prisma(project, "migrate", "deploy", url=url)
    assert failing.returncode == 1
    # Through the JavaScript engine and driver adapter Prisma says "external connector error"
    # with the database's message and the migration's name (the native engine says P3018).
    assert BROKEN in failing.stderr and "NoSuchTable" in failing.stderr, failing.stderr

    found = rows(postgres, database)
    assert [r.name for r in found if r.applied] == [INIT, NOTES]
    blocked = migrations.failed(found)
    assert [r.name for r in blocked] == [BROKEN]
    assert blocked[0].finished_at is None and blocked[0].rolled_back_at is None
    assert "NoSuchTable" in blocked[0].logs  # Prisma recorded why
    # One implicit transaction: the first statement of the file was rolled back too.
    columns = postgres.sql(database, "SELECT count(*) FROM information_schema.columns "
                                     "WHERE table_name = 'Shift' AND column_name = 'room'")
    assert columns == "0"

    # The next deploy: Prisma refuses with P3009, in the words the tool quotes.
    again = prisma(project, "migrate", "deploy", url=url)
    assert again.returncode == 1
    assert "P3009" in again.stderr, again.stderr
    assert migrations.P3009_TEXT in " ".join(again.stderr.split())
    assert f"The `{BROKEN}` migration started at" in again.stderr
    message = migrations.blocked_message(blocked, "/opt/app/current on green")
    assert migrations.P3009_TEXT in message
    assert f"The `{BROKEN}` migration started at {blocked[0].started_at}" in message
    assert "NoSuchTable" in message
    assert f'npx prisma migrate resolve --rolled-back "{BROKEN}"' in message

    # The resolve command the message gives. Offline, Prisma 6.19.3's `--rolled-back` first checks
    # the database through the native schema engine, which it cannot download; then the row is
    # marked exactly as Prisma's engine marks it (rolled_back_at on the failed row).
    resolved = prisma(project, "migrate", "resolve", "--rolled-back", BROKEN, url=url)
    if resolved.returncode != 0:
        assert "schema-engine" in resolved.stderr, resolved.stderr
        postgres.sql(database, "UPDATE _prisma_migrations SET rolled_back_at = now() "
                               f"WHERE migration_name = '{BROKEN}' AND rolled_back_at IS NULL")
    after = rows(postgres, database)
    assert migrations.failed(after) == []
    rolled = [r for r in after if r.name == BROKEN]
    assert len(rolled) == 1 and rolled[0].rolled_back_at is not None and not rolled[0].applied
    assert migrations.pending(local_names(project), after) == [BROKEN]  # it will run again

    (broken / "migration.sql").write_text('ALTER TABLE "Shift" ADD COLUMN "room" TEXT;\n')
    fixed = prisma(project, "migrate", "deploy", url=url)
    assert fixed.returncode == 0, fixed.stderr
    final = rows(postgres, database)
    assert [(r.name, r.applied, r.rolled_back_at is not None) for r in final if r.name == BROKEN] == [
        (BROKEN, False, True), (BROKEN, True, False)]
    assert migrations.pending(local_names(project), final) == []
    # The fixed file differs from the rolled-back attempt's, but only applied rows count as edits.
    assert migrations.edited_after_applying(local_checksums(project), final) == []

    # Resolved the other way: the failed file's change made by hand, then `--applied` (which works
    # offline through the adapter), all by the real CLI.
    hotfix = project / "prisma" / "migrations" / "20250401000000_hotfix"
    hotfix.mkdir()
    (hotfix / "migration.sql").write_text('ALTER TABLE "Attendant" ADD COLUMN "phone" TEXT;\n'
                                          'SELECT 1/0;\n')
    assert prisma(project, "migrate", "deploy", url=url).returncode == 1
    assert [r.name for r in migrations.failed(rows(postgres, database))] == [hotfix.name]
    postgres.sql(database, 'ALTER TABLE "Attendant" ADD COLUMN "phone" TEXT')
    applied = prisma(project, "migrate", "resolve", "--applied", hotfix.name, url=url)
    assert applied.returncode == 0, applied.stderr
    last = rows(postgres, database)
    assert migrations.failed(last) == []
    assert any(r.name == hotfix.name and r.applied for r in last)
    assert migrations.pending(local_names(project), last) == []


@pytest.fixture
def migrated(project: Path, postgres: Postgres, database: str) -> Iterator[str]:  # noqa: F811
    done = prisma(project, "migrate", "deploy", url=postgres.url(database))
    assert done.returncode == 0, done.stderr
    yield database


def test_edited_applied_migration_is_reported(project: Path, postgres: Postgres, migrated: str) -> None:  # noqa: F811
    init = project / "prisma" / "migrations" / INIT / "migration.sql"
    init.write_text(init.read_text().replace('"email" TEXT,', '"email" TEXT NOT NULL,'))
    found = rows(postgres, migrated)
    edited = migrations.edited_after_applying(local_checksums(project), found)
    assert edited == [INIT]
    assert INIT in migrations.edited_message(edited)
    # Prisma itself does not notice: nothing pending, exit 0.
    deploy = prisma(project, "migrate", "deploy", url=postgres.url(migrated))
    assert deploy.returncode == 0, deploy.stderr
    assert "No pending migrations to apply" in deploy.stdout + deploy.stderr
