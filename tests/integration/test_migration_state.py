"""The deploy reads `_prisma_migrations` on the lab's database and acts on it: a failed migration
(P3009 state) blocks the deploy with Prisma's words and the resolve commands, before anything is
migrated or switched; an applied migration whose file was edited afterwards is reported.

Uses the light stand-in (`sample-app/`, fast to deploy). The rows these tests plant are the ones
Prisma writes (see test_prisma_real.py for the real CLI writing them), and each test puts the
table back as it found it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bluegreen.lab.lab import Lab
from bluegreen.model import migrations
from bluegreen.model.errors import DeployError
from bluegreen.model.progress import RecordingProgress
from bluegreen.model.stackfile import load_stack
from bluegreen.ops.deploy import deploy
from bluegreen.ops.estate import Estate
from bluegreen.render import commands as cmd
from tests.integration.support import LAB_STACK, copy_project, live_color, retry_locked

pytestmark = pytest.mark.integration

FAILED = "20250301000000_half_done"
INIT = "20250101000000_init"


def sql(lab: Lab, query: str) -> str:
    t = lab.topology
    with lab.executor(t.database_host) as db:
        return db.run(cmd.psql(t, t.database_host, query), step="sql").stdout.strip()


@pytest.fixture
def project(lab: Lab, tmp_path: Path) -> Path:
    project = copy_project(lab.project_dir, tmp_path)
    # The stand-in's migrations must be in place (the table exists) before rows are planted.
    retry_locked(lambda: deploy(Estate(load_stack(project, LAB_STACK)), "main", migrate=True))
    return project


@pytest.fixture
def failed_row(lab: Lab, project: Path) -> Iterator[str]:
    row_id = str(uuid.uuid4())
    sql(lab, "INSERT INTO _prisma_migrations (id, checksum, migration_name, logs, started_at, "
             f"applied_steps_count) VALUES ('{row_id}', '{'0' * 64}', '{FAILED}', "
             "E'Database error code: 42P01\\nrelation \"NoSuchTable\" does not exist', now(), 0)")
    try:
        yield FAILED
    finally:
        sql(lab, f"DELETE FROM _prisma_migrations WHERE id = '{row_id}'")


def test_failed_migration_blocks_the_deploy_in_prismas_words(lab: Lab, project: Path, failed_row: str) -> None:
    t = load_stack(project, LAB_STACK)
    live = live_color(t)
    with pytest.raises(DeployError) as info:
        retry_locked(lambda: deploy(Estate(t), "v1", migrate=True))
    message = str(info.value)
    assert info.value.step == "migrations"
    assert "P3009" in message and migrations.P3009_TEXT in message
    assert f"The `{failed_row}` migration started at" in message
    assert 'relation "NoSuchTable" does not exist' in message  # the row's log, as Prisma wrote it
    assert f'npx prisma migrate resolve --rolled-back "{failed_row}"' in message
    assert f'npx prisma migrate resolve --applied "{failed_row}"' in message
    assert live_color(t) == live  # nothing switched
    assert sql(lab, f"SELECT count(*) FROM _prisma_migrations WHERE migration_name = '{failed_row}'") == "1"


def test_edited_applied_migration_is_reported(lab: Lab, project: Path) -> None:
    original = sql(lab, f"SELECT checksum FROM _prisma_migrations WHERE migration_name = '{INIT}' "
                        "AND finished_at IS NOT NULL AND rolled_back_at IS NULL")
    assert len(original) == 64
    # As if the file had been edited after Prisma applied it: its recorded checksum no longer matches.
    sql(lab, f"UPDATE _prisma_migrations SET checksum = '{'f' * 64}' WHERE migration_name = '{INIT}'")
    try:
        progress = RecordingProgress()
        estate = Estate(load_stack(project, LAB_STACK), progress=progress)
        result = retry_locked(lambda: deploy(estate, "main", migrate=True))
    finally:
        sql(lab, f"UPDATE _prisma_migrations SET checksum = '{original}' WHERE migration_name = '{INIT}'")
    assert result.ok
    assert result.migrations_edited == [INIT]
    assert result.to_json()["migrationsEdited"] == [INIT]
    assert any(INIT in note and "edited after they ran" in note for note in progress.notes)
