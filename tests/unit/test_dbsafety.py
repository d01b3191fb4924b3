"""The database safety net's pure parts: TOC parsing, verification, retention, restore prelude, the
deploy pin, and the command lines."""

from __future__ import annotations

import base64
import json
import shlex

import pytest

from bluegreen.model import deploy_pin, dumps
from bluegreen.model.deploy_pin import DeployPin, PlanMismatch
from bluegreen.model.dumps import Backup, DumpMeta, TocEntry
from bluegreen.model.errors import ConfigError
from bluegreen.render import dbcommands

TOC = """;
; Archive created at 2026-11-30 22:40:08 UTC
;     dbname: app
;
; Selected TOC Entries:
;
842; 1247 16395 TYPE public Role postgres
215; 1259 16386 TABLE public Shift postgres
214; 1259 16385 SEQUENCE public Shift_id_seq postgres
3358; 0 0 SEQUENCE OWNED BY public Shift_id_seq postgres
216; 1259 16399 VIEW public v postgres
3204; 2604 16389 DEFAULT public Shift id postgres
3351; 0 16386 TABLE DATA public Shift postgres
3352; 0 16390 TABLE DATA public _prisma_migrations jw_app
217; 1259 16390 TABLE public _prisma_migrations jw_app
3359; 0 0 SEQUENCE SET public Shift_id_seq postgres
3206; 2606 16393 CONSTRAINT public Shift Shift_pkey postgres
"""


def test_parse_toc_reads_kinds_schemas_and_names() -> None:
    entries = dumps.parse_toc(TOC)
    assert TocEntry("TYPE", "public", "Role") in entries
    assert TocEntry("TABLE", "public", "Shift") in entries
    assert TocEntry("TABLE DATA", "public", "Shift") in entries
    assert TocEntry("SEQUENCE OWNED BY", "public", "Shift_id_seq") in entries
    assert TocEntry("VIEW", "public", "v") in entries
    assert not any(e.desc == "TABLE" and e.name.startswith("DATA") for e in entries)


TABLES = {"public.Shift": "r", "public._prisma_migrations": "r"}


@pytest.mark.parametrize("case, kwargs, expect", [
    ("good", {}, []),
    ("empty", {"size": 0}, ["empty"]),
    ("unreadable", {"list_error": "input file is too short"}, ["cannot read it: input file is too short"]),
    ("truncated", {"read_error": "could not read from input file: end of file"}, ["truncated or corrupt"]),
    ("missing table", {"db_tables": {**TABLES, "public.Attendant": "r"}}, ["public.Attendant"]),
    ("no data", {"toc": [e for e in dumps.parse_toc(TOC) if e.desc != "TABLE DATA"]},
     ["no data for table(s): public.Shift, public._prisma_migrations"]),
    ("partitioned parent needs no data", {"db_tables": {**TABLES, "public.Shift": "p"},
                                          "toc": [e for e in dumps.parse_toc(TOC)
                                                  if not (e.desc == "TABLE DATA" and e.name == "Shift")]}, []),
])
def test_verify_problems(case: str, kwargs: dict, expect: list[str]) -> None:
    args = {"size": 1234, "toc": dumps.parse_toc(TOC), "list_error": None, "read_error": None,
            "db_tables": TABLES, **kwargs}
    problems = dumps.verify_problems(**args)
    assert len(problems) == len(expect), problems
    for wanted, got in zip(expect, problems, strict=True):
        assert wanted in got


def backup(name: str, *, good: bool | None, created: str) -> Backup:
    meta = None if good is None else DumpMeta(file=name, bytes=10, created_at=created, kind="pre-migration",
                                              database="db", verified=True, migrated=good)
    return Backup(file=name, path=f"/b/{name}", bytes=10, mtime=0.0, meta=meta)


def stamp(i: int) -> str:
    return f"2026-01-{i:02d}T00:00:00Z"


@pytest.mark.parametrize("case, history, keep, deleted", [
    # history oldest first: (good?, name)
    ("failed retries never push out the last good dump",
     [True, False, False, False, False, False], 2, [2, 3, 4]),
    ("good ones beyond keep go, oldest first", [True, True, True, False], 2, [1]),
    ("nothing to delete", [True, False], 3, []),
    ("only failures: keep the newest", [False, False, False], 2, [1]),
])
def test_retention(case: str, history: list[bool], keep: int, deleted: list[int]) -> None:
    backups = [backup(f"2026010{i}000000-blue-abcdef{i}.dump", good=g, created=stamp(i))
               for i, g in enumerate(history, start=1)]
    doomed = dumps.retention(backups, keep)
    assert [b.file[7] for b in doomed] == [str(i) for i in deleted], case
    survivors = [b for b in backups if b not in doomed]
    if any(history):
        assert dumps.last_good(survivors) == dumps.last_good(backups)


def test_retention_never_touches_files_it_did_not_write() -> None:
    nightly = Backup(file="nightly-2026-01-01.dump", path="/b/n", bytes=1, mtime=0.0, meta=None)
    legacy = Backup(file="20250101000000-blue-abc1234.dump", path="/b/l", bytes=1, mtime=0.0, meta=None)
    doomed = dumps.retention([nightly, legacy, *[backup(f"2026010{i}000000-x.dump", good=False,
                                                           created=stamp(i)) for i in range(1, 4)]], 1)
    assert nightly not in doomed and legacy in doomed
    with pytest.raises(ConfigError, match="backupKeep"):
        dumps.retention([], 0)


def test_backup_listing_round_trips_the_sidecar() -> None:
    meta = DumpMeta(file="20260101000000-blue-abc1234.dump", bytes=99, created_at=stamp(1), kind="pre-migration",
                    database="db", verified=True, applied=("a",), pending=("b",), color="blue", sha="a" * 40,
                    migrated=True)
    encoded = base64.b64encode(meta.sidecar().encode()).decode()
    out = (f"{meta.file}\t99\t1700000000\t{encoded}\n"
           "nightly.dump\t5\t1600000000\t\n"
           "broken.dump\t7\t1600000001\tnot-base64!\n"
           "garbage line\n")
    listed = dumps.parse_backup_listing(out, "/var/backups/x")
    by_name = {b.file: b for b in listed}
    assert by_name[meta.file].meta == meta and by_name[meta.file].good
    assert by_name["nightly.dump"].meta is None and not by_name["nightly.dump"].ours
    assert by_name["broken.dump"].meta is None
    assert by_name[meta.file].path == f"/var/backups/x/{meta.file}"


def test_pick_backup_by_name_prefix_or_last_good() -> None:
    backups = [backup("20260102000000-blue-a.dump", good=False, created=stamp(2)),
               backup("20260101000000-blue-b.dump", good=True, created=stamp(1))]
    assert dumps.pick_backup(backups, None).file == "20260101000000-blue-b.dump"
    assert dumps.pick_backup(backups, "/some/dir/20260102000000-blue-a.dump").file.endswith("a.dump")
    assert dumps.pick_backup(backups, "20260101").file.endswith("b.dump")
    with pytest.raises(ConfigError, match="matches 2"):
        dumps.pick_backup(backups, "2026010")
    with pytest.raises(ConfigError, match="no dump named"):
        dumps.pick_backup(backups, "nope")
    with pytest.raises(dumps.RestoreRefused):
        dumps.pick_backup(backups[:1], None)


def test_dump_before_release_is_the_good_one_of_that_colour_and_sha() -> None:
    def meta_backup(name: str, color: str, sha: str, good: bool, i: int) -> Backup:
        meta = DumpMeta(file=name, bytes=1, created_at=stamp(i), kind="pre-migration", database="db",
                        verified=True, color=color, sha=sha, migrated=good)
        return Backup(file=name, path=name, bytes=1, mtime=0, meta=meta)

    backups = [meta_backup("a", "green", "s1", True, 1), meta_backup("b", "green", "s1", False, 2),
               meta_backup("c", "blue", "s1", True, 3), meta_backup("d", "green", "s2", True, 4)]
    assert dumps.dump_before_release(backups, "green", "s1").file == "a"  # type: ignore[union-attr]
    assert dumps.dump_before_release(backups, "blue", "s2") is None


def test_extra_objects_and_the_restore_prelude() -> None:
    toc = dumps.parse_toc(TOC)
    db = [TocEntry("TABLE", "public", "Shift"), TocEntry("TABLE", "public", "New"),
          TocEntry("VIEW", "public", "v"), TocEntry("TYPE", "public", 'Mo"od'),
          TocEntry("SEQUENCE", "public", "New_id_seq"), TocEntry("TABLE", "other", "Untouched")]
    extras = dumps.extra_objects(db, toc)
    assert [(e.desc, e.name) for e in extras] == [("TABLE", "New"), ("TYPE", 'Mo"od'), ("SEQUENCE", "New_id_seq")]
    prelude = dumps.restore_prelude(extras)
    assert prelude.splitlines() == [
        "SET LOCAL lock_timeout = '30s';",
        'DROP TABLE IF EXISTS "public"."New" CASCADE;',
        'DROP SEQUENCE IF EXISTS "public"."New_id_seq" CASCADE;',
        'DROP TYPE IF EXISTS "public"."Mo""od" CASCADE;',
    ]


def test_applied_in_dump_reads_the_copy_block() -> None:
    text = (
        "SET statement_timeout = 0;\n"
        "COPY public._prisma_migrations (id, checksum, finished_at, migration_name, logs, rolled_back_at, "
        "started_at, applied_steps_count) FROM stdin;\n"
        "1\tc1\t2026-01-01 00:00:00+00\t20250101_init\t\\N\t\\N\t2026-01-01 00:00:00+00\t1\n"
        "2\tc2\t\\N\t20250201_failed\tboom\t\\N\t2026-01-01 00:00:00+00\t0\n"
        "3\tc3\t2026-01-01 00:00:00+00\t20250301_back\t\\N\t2026-01-02 00:00:00+00\t1\n"
        "\\.\n")
    assert dumps.applied_in_dump(text) == ["20250101_init"]
    assert dumps.applied_in_dump("") == []


def test_migration_files_from_git_ls_tree() -> None:
    out = ("prisma/migrations/20250101_init/migration.sql\nprisma/migrations/migration_lock.toml\n"
           "prisma/migrations/20250201_notes/migration.sql\nprisma/migrations/20250201_notes/README\n")
    assert deploy_pin.migration_files(out) == ["20250101_init", "20250201_notes"]


SHA_A, SHA_B = "a" * 40, "b" * 40


@pytest.mark.parametrize("case, sha, pending, refused, shown", [
    ("same", SHA_A, [("m1", "c1")], False, []),
    ("same, order ignored", SHA_A, [("m1", "c1")], False, []),
    ("branch moved", SHA_B, [("m1", "c1"), ("m2", "c2")], True, ["aaaaaaaaaaaa", "bbbbbbbbbbbb", "m2", "moved"]),
    ("migration edited", SHA_A, [("m1", "c9")], True, ["c1", "c9", "pending migrations changed"]),
    ("migration already applied", SHA_A, [], True, ["none", "m1"]),
    ("sha only, pending not read", SHA_B, None, True, ["(not read)"]),
])
def test_check_pin(case: str, sha: str, pending: list | None, refused: bool, shown: list[str]) -> None:
    pin = DeployPin(ref="main", sha=SHA_A, pending=(("m1", "c1"),))
    if not refused:
        deploy_pin.check_pin(pin, sha=sha, pending=pending)
        return
    with pytest.raises(PlanMismatch) as info:
        deploy_pin.check_pin(pin, sha=sha, pending=pending)
    message = str(info.value)
    assert "approved:" in message and "now:" in message and "Nothing was changed" in message
    for text in shown:
        assert text in message, case


def test_no_pin_checks_nothing() -> None:
    deploy_pin.check_pin(None, sha=SHA_B, pending=[("x", "y")])


@pytest.mark.parametrize("data, error", [
    ({"ref": "main", "sha": "abc", "pendingMigrations": []}, "full commit sha"),
    ({"ref": "main", "sha": SHA_A}, "required"),
    ({"ref": "main", "sha": SHA_A, "pendingMigrations": [{"name": "m"}]}, "pendingMigrations[0]"),
])
def test_approved_plan_file_is_checked_by_key(data: dict, error: str) -> None:
    with pytest.raises(ConfigError, match=error.replace("[", r"\[").replace("]", r"\]")):
        DeployPin.from_plan_json(data)


def test_pin_from_a_plan_json_sorts_the_pending_set() -> None:
    plan = {"ref": "main", "sha": SHA_A, "pendingMigrations": [
        {"name": "m2", "checksum": "c2", "sql": "..."}, {"name": "m1", "checksum": "c1", "sql": "..."}]}
    assert DeployPin.from_plan_json(json.loads(json.dumps(plan))).pending == (("m1", "c1"), ("m2", "c2"))


def test_restore_command_is_one_transaction_with_clean_if_exists() -> None:
    from pathlib import Path

    from tests.integration.support import loopback_topology

    t = loopback_topology(Path("/srv/unit"), Path("/srv/id"), Path("/srv/kh"), net="127.0.9",
                          stack="unit", prefix="u")
    command = dbcommands.restore_command(t, t.database_host, "/var/backups/x/a b.dump", "/var/backups/x/.p.sql")
    assert "pipefail" in command
    assert "pg_restore --clean --if-exists --file=- '/var/backups/x/a b.dump'" in command
    psql = command.split("| ", 1)[1]
    assert "--single-transaction" in psql and "ON_ERROR_STOP=1" in psql
    assert shlex.split(command.split("{ ", 1)[1].split(" &&")[0]) == ["cat", "/var/backups/x/.p.sql"]
    assert dbcommands.full_read_command("/b/x.dump") == "pg_restore --file=/dev/null /b/x.dump"


def test_the_deploy_plan_json_carries_what_an_approval_fingerprint_must_cover() -> None:
    from bluegreen.faces.approval import digest
    from bluegreen.ops.deploy import DeployPlan

    def plan(sha: str, checksum: str) -> DeployPlan:
        return DeployPlan(color="green", host="h", ref="main", migrate=True, allow_destructive=False,
                          live="blue", steps=[], sha=sha,
                          pending=[deploy_pin.PendingMigration("m1", checksum, "ALTER TABLE x ADD y int;")])

    approved = plan(SHA_A, "c1")
    data = approved.to_json()
    assert data["sha"] == SHA_A
    assert data["pendingMigrations"] == [{"name": "m1", "checksum": "c1", "sql": "ALTER TABLE x ADD y int;"}]
    assert approved.pin() == DeployPin(ref="main", sha=SHA_A, pending=(("m1", "c1"),))
    # The MCP approval digests the plan JSON: a moved branch or an edited migration changes it.
    assert digest({"plan": data}) == digest({"plan": plan(SHA_A, "c1").to_json()})
    assert digest({"plan": data}) != digest({"plan": plan(SHA_B, "c1").to_json()})
    assert digest({"plan": data}) != digest({"plan": plan(SHA_A, "c2").to_json()})
