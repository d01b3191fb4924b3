"""The database safety net on the real lab (PostgreSQL 15, pg_dump/pg_restore, PM2, HAProxy).

- a deploy that migrates, then `rollback --with-database` brings code and rows back, under an HTTP
  request loop with no failed request outside the restore's own window (measured and printed);
- a truncated dump is refused before anything migrates;
- retention after failed retries keeps the last good dump;
- a branch moved after approval is refused, with both commits shown.

Tests work on a copy of the project (switches record the live colour in the stack file).
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bluegreen.hosts import database
from bluegreen.hosts.executor import connect
from bluegreen.lab.lab import Lab
from bluegreen.lab.loadgen import RequestLoop
from bluegreen.lab.repo import publish_variant
from bluegreen.model import dumps, migrations
from bluegreen.model.errors import DeployError
from bluegreen.model.progress import RecordingProgress, StepRecord
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import Topology, other_color
from bluegreen.ops import rollback
from bluegreen.ops.deploy import deploy
from bluegreen.ops.deploy_run import DeployResult
from bluegreen.ops.estate import Estate
from bluegreen.ops.status import status
from bluegreen.ops.switch import switch
from bluegreen.render import commands as cmd
from bluegreen.render import dbcommands
from tests.integration.support import copy_project, live_color, retry_locked

pytestmark = pytest.mark.integration

STACK = "lab"
ROWS_SQL = 'SELECT "id", "post" FROM "Shift" ORDER BY "id"'


@pytest.fixture(scope="module")
def project(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copied = copy_project(lab.project_dir, tmp_path_factory.mktemp("dbsafety-project"))
    # A lab world has no internet: npm must take what its cache holds without asking the registry.
    stack = copied / "stacks" / f"Pulumi.{STACK}.yaml"
    text = stack.read_text()
    if "--prefer-offline" not in text:
        stack.write_text(text.replace("installCommand: npm ci --no-audit --no-fund",
                                      "installCommand: npm ci --no-audit --no-fund --prefer-offline"))
    return copied


def topology(project: Path) -> Topology:
    return load_stack(project, STACK)


def psql(t: Topology, sql: str) -> str:
    db = t.database_host
    with connect(t, db) as ex:
        return ex.run(cmd.psql(t, db, sql), step="psql").stdout


def applied(t: Topology) -> set[str]:
    db = t.database_host
    with connect(t, db) as ex:
        out = ex.run(cmd.psql(t, db, migrations.applied_rows_query()), step="rows", check=False)
    return {r.name for r in migrations.parse_applied(out.stdout, out.stderr, out.exit_code) if r.applied}


def columns(t: Topology, table: str) -> list[str]:
    return psql(t, "SELECT column_name FROM information_schema.columns "
                   f"WHERE table_name = '{table}' ORDER BY ordinal_position").split()


def backups(t: Topology) -> list[dumps.Backup]:
    with connect(t, t.database_host) as db:
        return database.read_backups(t, db)


def release_sha(t: Topology, color: str) -> str:
    host = t.app_host(color)
    with connect(t, host) as ex:
        return cmd.parse_current(ex.run(cmd.read_current(cmd.AppPaths.of(t, host)), step="read").stdout).sha or ""


def cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bluegreen", "--cwd", str(project), "--stack", STACK,
                           *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def base(lab: Lab, project: Path) -> Iterator[Path]:
    """Both colours serve a release (the live one healthy) and the schema has the base tables."""
    t = topology(project)
    report = status(Estate(t))
    assert report.live is not None, report.errors
    if not report.colors[report.live].healthy:
        retry_locked(lambda: deploy(Estate(topology(project)), "v1", migrate=True, snapshot=False))
        retry_locked(lambda: switch(Estate(topology(project)), watch=False))
    # The database matches what the live release expects (a lab whose database was recreated
    # under releases deployed earlier would otherwise lack their tables).
    t = topology(project)
    # Failed rows this module's retention test leaves when it stops half-way block every deploy.
    psql(t, "DELETE FROM _prisma_migrations WHERE finished_at IS NULL AND rolled_back_at IS NULL "
            "AND migration_name ~ '_(fails|dbsafety|truncated|kept)_'")
    host = t.app_host(live_color(t))
    with connect(t, host) as ex:
        ex.run(cmd.migrate(t, cmd.AppPaths.of(t, host).current), step="migrate the live release")
    yield project


def seed_rows(t: Topology) -> None:
    psql(t, 'INSERT INTO "Attendant" ("name") SELECT \'dbsafety\' WHERE NOT EXISTS '
            '(SELECT 1 FROM "Attendant" WHERE "name" = \'dbsafety\')')
    psql(t, 'INSERT INTO "Shift" ("attendantId", "startsAt", "endsAt", "post") SELECT a."id", now(), '
            "now() + interval '1 hour', 'door ' || g FROM \"Attendant\" a, generate_series(1, 3) g "
            "WHERE a.\"name\" = 'dbsafety'")


# --------------------------------------------------------------------------- rollback --with-database


def test_deploy_that_migrates_then_rollback_with_database_brings_code_and_rows_back(
        lab: Lab, base: Path) -> None:
    project = base
    t = topology(project)
    stamp = time.strftime("%Y%m%d%H%M%S")
    migration = f"{stamp}_dbsafety_{stamp[-4:]}"
    column, extra = f"dbsafety{stamp}", f"DbSafetyExtra{stamp}"
    live = live_color(t)
    live_sha = release_sha(t, live)
    # A release on top of what is live now, whose migration adds a column and rewrites rows.
    branch = f"t-dbsafety-{stamp}"
    publish_variant(lab.paths.sample_repo, base=live_sha, branch=branch, message="dbsafety: migrate rows",
                    changes={f"prisma/migrations/{migration}/migration.sql":
                             f'ALTER TABLE "Shift" ADD COLUMN "{column}" TEXT;\n'
                             'UPDATE "Shift" SET "post" = "post" || \' (moved)\';\n'
                             f'CREATE TABLE "{extra}" ("id" SERIAL PRIMARY KEY);\n'})
    seed_rows(t)
    rows_before = psql(t, ROWS_SQL)
    applied_before = applied(t)
    assert "door" in rows_before

    deployed = retry_locked(lambda: deploy(Estate(topology(project)), branch, migrate=True, snapshot=False))
    assert deployed.ok and deployed.migrations_applied == [migration]
    assert deployed.backup and deployed.backup_bytes and deployed.backup_bytes > 0
    assert migration in applied(t) and column in columns(t, "Shift")
    assert psql(t, ROWS_SQL) != rows_before
    meta = next(b for b in backups(t) if b.path == deployed.backup)
    assert meta.good and meta.meta is not None and meta.meta.sha == deployed.sha
    entry = json.loads(cli(project, "--json", "history", "--limit", "1").stdout)[0]
    assert entry["backup"] == deployed.backup and entry["backupBytes"] == deployed.backup_bytes
    status = json.loads(cli(project, "--json", "status").stdout)
    assert status["database"]["lastGoodDump"]["path"] == deployed.backup

    switched = retry_locked(lambda: switch(Estate(topology(project)), watch=False))
    assert switched.ok
    new_live = switched.color
    assert release_sha(t, new_live) == deployed.sha

    # While the new release is live, a plain restore of the pre-migration dump is refused.
    refused = cli(project, "db", "restore", Path(deployed.backup).name, "--yes")
    assert refused.returncode == 1, refused.stderr
    assert "needs migration" in refused.stderr and migration in refused.stderr
    assert column in columns(t, "Shift")

    # The plan is shown first, then: switch, restore.
    window: dict[str, float] = {}

    def progress(event: str, record: StepRecord) -> None:
        if record.name.startswith("restore ") and "one transaction" in record.name:
            window[event] = time.monotonic()

    svc = Estate(topology(project), progress=RecordingProgress(listener=progress))
    plan = rollback.plan_rollback_with_database(svc)
    assert plan.problems == [] and plan.to_color == live and plan.undoes == [migration]
    assert plan.dump is not None and plan.dump["path"] == deployed.backup
    assert plan.steps[0].startswith(f"switch live traffic {new_live} -> {live}")
    with RequestLoop.visitor(t, "/", clients=4, max_seconds=300, pause=0.005) as loop, \
            RequestLoop.visitor(t, "/api/ready", clients=2, max_seconds=300, pause=0.01) as ready:
        loop.wait_for(50)
        ready.wait_for(20)
        data = rollback.rollback_with_database(svc, plan, direct=True)
    assert data["ok"] is True, data
    start, end = window["start"], window["end"]
    samples = sorted(loop.report.samples + ready.report.samples, key=lambda s: s.started)
    outside = [s for s in samples if not s.ok and not (start - 1.0 <= s.started <= end)]
    inside = [s for s in samples if not s.ok and start - 1.0 <= s.started <= end]
    print(f"\nrestore window {end - start:.3f}s; {len(samples)} requests, {len(inside)} failed inside the "
          f"window, {len(outside)} outside; / {loop.report.summary()}; /api/ready {ready.report.summary()}")
    assert outside == [], [(s.status, s.error) for s in outside]
    assert live_color(topology(project)) == live and release_sha(t, live) == live_sha

    assert psql(t, ROWS_SQL) == rows_before
    assert applied(t) == applied_before
    assert column not in columns(t, "Shift")
    assert psql(t, f"SELECT to_regclass('\"{extra}\"') IS NULL").strip() == "t"
    undo = data["restore"]["undo"]
    assert data["undoCommand"] == f"bluegreen db restore {undo['file']}"
    assert any(b.file == undo["file"] and b.meta and b.meta.verified for b in backups(t))
    history = json.loads(cli(project, "--json", "history", "--limit", "2").stdout)
    assert history[0]["type"] == "restore" and history[0]["restored"] == Path(deployed.backup).name
    assert history[1]["reason"] == "rollback --with-database"

    # Again, now that the live release applied nothing this rollback could undo safely: the CLI
    # shows the plan with its problem and refuses before switching anything.
    again = cli(project, "rollback", "--with-database", "--yes")
    assert again.returncode == 1, again.stderr
    assert "PROBLEM" in again.stderr and "refusing to roll back with the database" in again.stderr
    assert live_color(topology(project)) == live


# --------------------------------------------------------------------------- truncated dump


def test_a_truncated_dump_is_refused_before_migrating(lab: Lab, base: Path) -> None:
    project = base
    t = topology(project)
    stamp = time.strftime("%Y%m%d%H%M%S")
    migration = f"{stamp}_truncated_{stamp[-4:]}"
    branch = f"t-truncated-{stamp}"
    live_sha = release_sha(t, live_color(t))
    publish_variant(lab.paths.sample_repo, base=live_sha, branch=branch, message="dbsafety: truncated",
                    changes={f"prisma/migrations/{migration}/migration.sql":
                             f'ALTER TABLE "Shift" ADD COLUMN "truncated{stamp}" TEXT;\n'})
    seed_rows(t)  # some data, so the dump has data blocks to cut
    psql(t, 'INSERT INTO "Shift" ("attendantId", "startsAt", "endsAt", "post") SELECT a."id", now(), now(), '
            "repeat('x', 200) || g FROM \"Attendant\" a, generate_series(1, 3000) g WHERE a.\"name\" = 'dbsafety'")
    cut: dict[str, int] = {}

    def truncate(event: str, record: StepRecord) -> None:
        if event == "end" and record.name == "back up the database" and record.ok:
            dumps = sorted(Path(dbcommands.backup_folder(t)).glob("*.dump"), key=lambda p: p.stat().st_mtime)
            newest = dumps[-1]
            size = newest.stat().st_size
            with open(newest, "r+b") as f:
                f.truncate(size // 2)
            cut[newest.name] = size

    standby = other_color(live_color(t))
    before = release_sha(t, standby)
    svc = Estate(topology(project), progress=RecordingProgress(listener=truncate))
    with pytest.raises(DeployError) as info:
        retry_locked(lambda: deploy(svc, branch, migrate=True, snapshot=False))
    message = str(info.value)
    print(f"\n{message}")
    assert cut, "the dump was never taken"
    assert "failed verification" in message and "truncated or corrupt" in message
    assert migration not in applied(t)
    assert f"truncated{stamp}" not in columns(t, "Shift")
    assert release_sha(t, standby) == before
    assert not any(b.file in cut for b in backups(t)), "the unusable dump was left behind"


# --------------------------------------------------------------------------- retention


def test_retention_after_failed_retries_keeps_the_last_good_dump(lab: Lab, base: Path) -> None:
    project = base
    t = topology(project)
    good = dumps.last_good(backups(t))
    if good is None:  # the rollback test ran first in this module normally; make one otherwise
        pytest.skip("no good dump yet (run with the rollback test)")
    stamp = time.strftime("%Y%m%d%H%M%S")
    live_sha = release_sha(t, live_color(t))
    keep = t.database.backup_keep
    failures = keep + 2
    for i in range(failures):
        branch = f"t-retry-{stamp}-{i}"
        publish_variant(lab.paths.sample_repo, base=live_sha, branch=branch, message=f"failing {i}",
                        changes={f"prisma/migrations/{stamp}_fails_{i}/migration.sql":
                                 'ALTER TABLE "NoSuchTable" ADD COLUMN "x" integer;\n'})
        with pytest.raises(DeployError) as info:
            retry_locked(functools.partial(deploy_migrating, project, branch))
        message = str(info.value)
        assert "no migration was applied" in message and ".dump" in message
        assert "P3009" in message
        # Resolve the failed row, as an operator would, so the next retry can run.
        psql(t, f"DELETE FROM _prisma_migrations WHERE migration_name = '{stamp}_fails_{i}'")
    after = backups(t)
    assert dumps.last_good(after) is not None and dumps.last_good(after).file == good.file  # type: ignore[union-attr]
    failed_attempts = [b for b in after if b.ours and not b.good]
    assert len(failed_attempts) <= keep
    listing = cli(project, "db", "backups")
    assert listing.returncode == 0 and good.file in listing.stderr and "GOOD" in listing.stderr
    print("\n" + listing.stderr)


# --------------------------------------------------------------------------- approvals pin the SQL


def test_a_branch_moved_after_approval_is_refused_with_both_commits(lab: Lab, base: Path, tmp_path: Path) -> None:
    project = base
    t = topology(project)
    stamp = time.strftime("%Y%m%d%H%M%S")
    branch = f"t-moved-{stamp}"
    live_sha = release_sha(t, live_color(t))
    first = publish_variant(lab.paths.sample_repo, base=live_sha, branch=branch, message="approved",
                            changes={f"prisma/migrations/{stamp}_seen/migration.sql":
                                     'ALTER TABLE "Shift" ADD COLUMN "seen" TEXT;\n'})
    planned = cli(project, "--json", "plan", "--deploy", "--ref", branch, "--migrate")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["sha"] == first
    assert [m["name"] for m in plan["pendingMigrations"]] == [f"{stamp}_seen"]
    assert plan["pendingMigrations"][0]["checksum"] == migrations.migration_checksum(
        'ALTER TABLE "Shift" ADD COLUMN "seen" TEXT;\n')
    approved = tmp_path / "approved.json"
    approved.write_text(planned.stdout)
    # The branch moves: SQL nobody saw.
    moved = publish_variant(lab.paths.sample_repo, base=live_sha, branch=branch, message="moved",
                            changes={f"prisma/migrations/{stamp}_unseen/migration.sql":
                                     'DELETE FROM "Shift";\n'})
    assert moved != first
    standby = other_color(live_color(t))
    before = release_sha(t, standby)
    dumps_before = {b.file for b in backups(t)}
    run = cli(project, "deploy", "--approved-plan", str(approved), "--yes", "--no-snapshot")
    print("\n" + run.stderr[-1500:])
    assert run.returncode == 1
    assert first[:12] in run.stderr and moved[:12] in run.stderr
    assert f"{stamp}_seen" in run.stderr and f"{stamp}_unseen" in run.stderr
    assert "not the plan that was approved" in run.stderr
    assert f"{stamp}_unseen" not in applied(t) and f"{stamp}_seen" not in applied(t)
    assert release_sha(t, standby) == before
    assert {b.file for b in backups(t)} == dumps_before  # refused before any dump or migration


# --------------------------------------------------------------------------- failed after migrating

BROKEN_HEALTH_SERVER = """
const http = require('http');
http.createServer((req, res) => { res.statusCode = 500; res.end('broken on purpose'); })
  .listen(Number(process.env.PORT), process.env.HOSTNAME, () => process.send && process.send('ready'));
"""


def test_a_deploy_failing_after_its_migration_says_the_database_stays_migrated(lab: Lab, base: Path) -> None:
    project = base
    t = topology(project)
    stamp = time.strftime("%Y%m%d%H%M%S")
    migration = f"{stamp}_kept_{stamp[-4:]}"
    branch = f"t-health-after-migrate-{stamp}"
    live_sha = release_sha(t, live_color(t))
    publish_variant(lab.paths.sample_repo, base=live_sha, branch=branch, message="migrates, then fails health",
                    changes={"server.js": BROKEN_HEALTH_SERVER,
                             f"prisma/migrations/{migration}/migration.sql":
                             f'ALTER TABLE "Shift" ADD COLUMN "kept{stamp[-4:]}" TEXT;\n'})
    standby = other_color(live_color(t))
    before = release_sha(t, standby)
    import dataclasses

    quick = dataclasses.replace(topology(project), app=dataclasses.replace(t.app, health_timeout=4.0))
    with pytest.raises(DeployError) as info:
        retry_locked(lambda: deploy(Estate(quick), branch, migrate=True, snapshot=False))
    message = str(info.value)
    print(f"\n{message}")
    assert migration in applied(t)  # the migration ran; the standby went back
    assert release_sha(t, standby) == before
    assert "STAYS MIGRATED" in message and migration in message
    dump = next(b for b in backups(t) if b.meta and b.meta.pending == (migration,))
    assert dump.path in message and f"bluegreen db restore {dump.file}" in message
    assert dump.good  # the dump that undoes an applied migration is protected by retention
    entry = json.loads(cli(project, "--json", "history", "--limit", "1").stdout)[0]
    assert entry["result"] == "failed" and entry["backup"] == dump.path
    assert entry["migrationsApplied"] == [migration] and "STAYS MIGRATED" in entry["database"]


def deploy_migrating(project: Path, ref: str) -> DeployResult:
    return deploy(Estate(topology(project)), ref, migrate=True, snapshot=False)
