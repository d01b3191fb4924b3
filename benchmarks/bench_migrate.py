"""The migration step at its floor: the product's migrations step applying ONE small migration,
against Prisma's own `prisma migrate deploy` applying one on the same database, interleaved.

On the standby's current release (the real Next.js app, Prisma 6.19 on its JavaScript schema
engine), each pair adds two migrations, one for each side, each `CREATE TABLE` of one column:
- ours: `ops.migrate.migrations_step` as a deploy runs it (inside its "migrations" step, holding
  the estate lock, on the estate's executors): the release's migrations listed and checksummed,
  `_prisma_migrations` read, the SQL read and checked for destructive statements, a verified
  `pg_dump`, its copy off-host, the app's migrate command (`npm run --silent migrate`, which is
  `prisma migrate deploy`), the dump marked good and copied again;
- Prisma alone: `npx prisma migrate deploy` in the same release, as the same user, over the same
  executor (with the environment the app's migrate script sets).
The sides alternate which goes first in each pair. The added migration directories are removed
afterwards (their rows stay in `_prisma_migrations`, which Prisma and the product both accept).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from benchlib import Bench, BenchError, Knobs, median, rounded, run_alone, say

from bluegreen.hosts import database
from bluegreen.hosts.executor import Executor
from bluegreen.model.deploy_pin import DeployPin
from bluegreen.model.progress import RecordingProgress
from bluegreen.model.timestamps import utcnow
from bluegreen.model.topology import Container, other_color
from bluegreen.ops.deploy_run import DeployResult
from bluegreen.ops.estate import Estate
from bluegreen.ops.migrate import migrations_step
from bluegreen.render import commands as cmd

PRISMA_ALONE = "CHECKPOINT_DISABLE=1 PRISMA_HIDE_UPDATE_MESSAGE=1 npx prisma migrate deploy"


@dataclass
class Release:
    """What `migrations_step` needs of a deploy (`ops.migrate.MigratingRun`)."""

    host: Container
    paths: cmd.AppPaths
    color: str
    ref: str
    release: str | None
    result: DeployResult
    pin: DeployPin | None = None
    pending: list[str] = field(default_factory=list)


def _add_migration(bench: Bench, ex: Executor, release: str, name: str, table: str) -> str:
    t = bench.topology()
    folder = f"{release}/prisma/migrations/{name}"
    sql = f'-- benchmark: one small migration\nCREATE TABLE "{table}" ("id" INTEGER);\n'
    ex.run(cmd.as_deploy_user(t, f"mkdir -p {cmd.sh(folder)} && cat > {cmd.sh(folder + '/migration.sql')}"),
           step="add a migration", input=sql)
    return folder


def _applied(bench: Bench, name: str) -> bool:
    t = bench.topology()
    estate = bench.estate()
    with estate.on(t.database_host) as db:
        return any(r.name == name and r.applied for r in database.applied_rows(t, db))


def _ours(estate: Estate, ex: Executor, run: Release) -> float:
    started = time.perf_counter()
    with estate.progress.step("migrations"):
        migrations_step(estate, ex, run, migrate=True, allow_destructive=False)
    wall = time.perf_counter() - started
    if len(run.result.migrations_applied) != 1:
        raise BenchError(f"the migrations step applied {run.result.migrations_applied}, expected one")
    return wall


def _prisma(ex: Executor, bench: Bench, release: str) -> tuple[float, float | None, float | None]:
    """(wall seconds, seconds until Prisma printed its last line, seconds until it exited), the last
    two from the host's clock (bash's $EPOCHREALTIME on each line as it arrives)."""
    t = bench.topology()
    stamped = (f"s=$EPOCHREALTIME; {{ {PRISMA_ALONE}; echo \"rc=$?\"; }} 2>&1 | "
               "while IFS= read -r l; do printf '%s %s\\n' \"$EPOCHREALTIME\" \"$l\"; done; echo \"start $s\"")
    started = time.perf_counter()
    out = ex.run(cmd.as_deploy_user(t, f"cd {cmd.sh(release)} && {stamped}"), step="prisma migrate deploy",
                 check=False)
    wall = time.perf_counter() - started
    lines = [line.split(" ", 1) for line in out.stdout.splitlines() if " " in line]
    begin = next((float(text) for stamp, text in lines if stamp == "start"), None)
    code = next((text for _, text in lines if text.startswith("rc=")), "rc=?")
    if not out.ok or code != "rc=0":
        raise BenchError(f"`{PRISMA_ALONE}` failed ({code}): {out.stdout.strip()[-500:]} {out.stderr.strip()[-300:]}")
    said = [float(stamp) for stamp, text in lines
            if stamp != "start" and text.strip() and not text.startswith("rc=")]
    ended = next((float(stamp) for stamp, text in lines if text.startswith("rc=")), None)
    if begin is None or not said or ended is None:
        return wall, None, None
    return wall, max(said) - begin, ended - begin


def run(bench: Bench, knobs: Knobs) -> dict[str, Any]:
    t = bench.topology()
    standby = other_color(bench.live_color())
    host = t.app_host(standby)
    paths = cmd.AppPaths.of(t, host)
    progress = RecordingProgress()
    estate = bench.estate(progress=progress)
    stamp = utcnow().strftime("%Y%m%d%H%M%S")
    ours: list[dict[str, Any]] = []
    prisma: list[float] = []
    prisma_said: list[float] = []
    prisma_exit: list[float] = []
    added: list[str] = []
    say(f"-- the migrations step and `prisma migrate deploy` on {standby}, {knobs.migrate_pairs} pair(s)")
    with estate.holding("deploy"), estate.on(host) as ex:
        current = cmd.parse_current(ex.run(cmd.read_current(paths), step="read release").stdout)
        if not current.path:
            raise BenchError(f"{standby} has no release to migrate from")
        release = current.path
        sha = ex.run(f"cat {cmd.sh(release + '/REVISION')}", step="read revision").stdout.strip()
        try:
            for i in range(knobs.migrate_pairs):
                sides = ("ours", "prisma") if i % 2 == 0 else ("prisma", "ours")
                for side in sides:
                    name = f"{stamp}{i:02d}{0 if side == 'ours' else 1}_bench_{side}"
                    added.append(_add_migration(bench, ex, release, name, f"bench_{side}_{stamp}_{i}"))
                    if side == "ours":
                        before = len(progress.steps)
                        run = Release(host=host, paths=paths, color=standby, ref="bench", release=release,
                                      result=DeployResult(ok=True, color=standby, ref="bench", sha=sha,
                                                          release=current.name))
                        wall = _ours(estate, ex, run)
                        nested = {s.name: round(s.seconds, 3) for s in progress.steps[before:]
                                  if s.name != "migrations"}
                        copies = [s.seconds for s in progress.steps[before:] if s.name == "copy the dump off-host"]
                        nested["copy the dump off-host"] = round(sum(copies), 3)
                        ours.append({"wall": round(wall, 3), "steps": nested, "offsiteCopies": len(copies)})
                    else:
                        wall, said, exited = _prisma(ex, bench, release)
                        prisma.append(wall)
                        if said is not None and exited is not None:
                            prisma_said.append(said)
                            prisma_exit.append(exited)
                    if not _applied(bench, name):
                        raise BenchError(f"{name} is not recorded as applied after the {side} run")
        finally:
            for folder in added:
                ex.run(f"rm -rf -- {cmd.sh(folder)}", step="remove the benchmark migration", check=False)
    apply = [o["steps"].get("apply 1 migration(s)", 0.0) for o in ours]
    return {"pairs": knobs.migrate_pairs, "colour": standby, "ours": ours,
            "oursWall": rounded((o["wall"] for o in ours), 3),
            "prismaWall": rounded(prisma, 3), "oursMedian": median(o["wall"] for o in ours),
            "prismaMedian": median(prisma), "applyMedian": median(apply), "command": PRISMA_ALONE,
            "prismaWorkMedian": median(prisma_said),
            "prismaIdleMedian": median(e - w for w, e in zip(prisma_said, prisma_exit, strict=True)),
            "migrateCommand": t.app.migrate_command}


def main(argv: list[str] | None = None) -> int:
    return run_alone(__doc__, run, "--pairs", "migrate_pairs", argv)


if __name__ == "__main__":
    sys.exit(main())
