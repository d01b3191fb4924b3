"""Backups off the database host, without a lab: the stack key, the listing and the choice a rebuild
makes (pure), and the real shell scripts of both ends run here with bash, the backup host's end
reached through a stand-in `ssh` that runs it as the forced command would."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bluegreen.lab.timers import Scheduler, Watch, next_elapse, parse_unit
from bluegreen.model import dumps
from bluegreen.model.config import config_getter, from_config
from bluegreen.model.errors import ConfigError, ValidationError
from bluegreen.model.journal import State
from bluegreen.model.offsite import (
    history_kept,
    merge,
    parse_journal_listing,
    parse_offsite_listing,
    pick_offsite,
    release_to_restore,
)
from bluegreen.model.stackfile import load_stack, read_stack_config
from bluegreen.model.topology import BackupSettings, Topology
from bluegreen.render import offsite

REPO = Path(__file__).resolve().parents[2]


def lab_config() -> dict[str, Any]:
    return dict(read_stack_config(REPO, "lab"))


def topology_with(backup: Any) -> Topology:
    config = lab_config()
    config["bluegreen:backup"] = backup
    return from_config(config_getter(config), stack="lab", project_dir=REPO)


# --------------------------------------------------------------------------- the stack key


def test_the_lab_stack_names_a_backup_host_on_loopback() -> None:
    b = load_stack(REPO, "lab").backup
    assert b is not None and b.address.startswith("127.") and b.keep >= 5
    assert b.path("/srv/x") == f"{b.root}/srv/x"


def test_backup_defaults_follow_ssh_and_the_database() -> None:
    t = topology_with({"host": "10.92.3.40"})
    assert t.backup == BackupSettings(address="10.92.3.40", port=t.ssh.port, user=t.ssh.user,
                                      dir="/var/backups/bluegreen", keep=t.database.backup_keep,
                                      schedule="*-*-* 03:15:00")
    config = lab_config()
    config.pop("bluegreen:backup")
    assert from_config(config_getter(config), stack="lab", project_dir=REPO).backup is None


@pytest.mark.parametrize(("backup", "key", "message"), [
    ({}, "backup.host", "is required"),
    ({"host": "nas.local"}, "backup.host", "IPv4"),
    ({"host": "10.0.0.1", "keep": 1}, "backup.keep", "at least database.backupKeep"),
    ({"host": "10.0.0.1", "schedule": "daily; rm -rf /"}, "backup.schedule", "calendar"),
    ({"host": "10.0.0.1", "dir": "relative"}, "backup.dir", "absolute"),
    ({"host": "10.0.0.1", "dir": "/srv/my backups"}, "backup.dir", "plain absolute path"),
    ({"host": "10.0.0.1", "user": "Root User"}, "backup.user", "Unix user"),
    ({"host": "10.0.0.1", "bucket": "s3"}, "backup.bucket", "unknown key"),
])
def test_bad_backup_settings_are_named_by_key(backup: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        topology_with(backup)
    assert any(p.key == key and message in p.message for p in info.value.problems), info.value.problems


# --------------------------------------------------------------------------- retention, both twins


def meta(name: str, *, kind: str = dumps.KIND_PRE_MIGRATION, verified: bool = True,
         migrated: bool = False) -> dumps.DumpMeta:
    return dumps.DumpMeta(file=name, bytes=10, created_at=f"{name[:4]}-{name[4:6]}-{name[6:8]}T{name[8:10]}:"
                          f"{name[10:12]}:{name[12:14]}Z", kind=kind, database="db", verified=verified,
                          migrated=migrated, sha256="0" * 64)


CASES: list[tuple[str, dumps.DumpMeta | None]] = []
for day in range(1, 8):
    CASES.append((f"2026010{day}000000-green-abc1234.dump", None))
    CASES[-1] = (CASES[-1][0], meta(CASES[-1][0], migrated=day % 2 == 0))
    sched = f"2026010{day}120000-scheduled.dump"
    CASES.append((sched, meta(sched, kind=dumps.KIND_SCHEDULED)))
    restore_dump = f"2026010{day}180000-pre-restore.dump"
    CASES.append((restore_dump, meta(restore_dump, kind=dumps.KIND_PRE_RESTORE)))
CASES.append(("20260109000000-scheduled.dump", meta("20260109000000-scheduled.dump", kind=dumps.KIND_SCHEDULED,
                                                    verified=False)))
CASES.append(("20260110000000-blue-def5678.dump", None))  # ours by name, no sidecar
CASES.append(("nightly.dump", None))  # not ours: never touched


def python_doomed(keep: int) -> set[str]:
    backups = [dumps.Backup(file=name, path=f"/x/{name}", bytes=10, mtime=0.0, meta=m) for name, m in CASES]
    return {b.file for b in dumps.retention(backups, keep)}


@pytest.mark.parametrize("keep", [1, 2, 3, 10])
def test_the_shell_retention_deletes_what_the_python_one_does(tmp_path: Path, keep: int) -> None:
    for name, m in CASES:
        (tmp_path / name).write_text("x")
        if m is not None:
            (tmp_path / f"{name}.json").write_text(m.sidecar())
    out = subprocess.run(["bash", "-c", offsite.PRUNE_FUNCTIONS + '\nprune_dumps "$1" "$2"', "_", str(keep),
                          str(tmp_path)], capture_output=True, text=True, check=True).stdout
    pruned = {line.removeprefix("pruned ") for line in out.splitlines()}
    assert pruned == python_doomed(keep)
    assert (tmp_path / "nightly.dump").exists()
    assert all(not (tmp_path / f"{name}.json").exists() for name in pruned)


def test_retention_counts_scheduled_dumps_apart_from_good_ones() -> None:
    doomed = python_doomed(2)
    kept_good = [n for n, m in CASES if m and m.migrated and n not in doomed]
    kept_scheduled = [n for n, m in CASES if m and m.kind == dumps.KIND_SCHEDULED and m.verified and n not in doomed]
    assert len(kept_good) == 2 and len(kept_scheduled) == 2
    assert "20260106000000-green-abc1234.dump" in kept_good  # nightly dumps never push out a good one


# --------------------------------------------------------------------------- the scripts, run for real


@dataclasses.dataclass
class Hosts:
    t: Topology
    root: Path
    db: Path  # the database host's script
    lb: Path
    receive: Path
    bin: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}"}

    def run_db(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(self.db), *args], capture_output=True, text=True, env=self.env(),
                              check=check)

    def run_lb(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(self.lb), *args], capture_output=True, text=True, env=self.env(),
                              check=True)

    def operator(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(self.receive), "operator", *args], capture_output=True, text=True,
                              check=False)

    @property
    def backups(self) -> Path:
        return Path(self.t.database_host.path(self.t.database.backup_dir))

    @property
    def store(self) -> Path:
        assert self.t.backup is not None
        return Path(self.t.backup.path(self.t.backup.dir))


FAKE_SSH = """#!/bin/bash
# Stands in for ssh to the backup host: runs its receive script as the forced command would.
role=$ROLE_FOR_TEST
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -O) exit 0 ;;                 # closing a master connection
    -N) exit 0 ;;                 # opening one
    --) shift; break ;;
    -o|-i|-p|-F) shift 2 ;;
    *) shift ;;
  esac
done
SSH_ORIGINAL_COMMAND="$*" exec bash "$RECEIVE" "$role"
"""


@pytest.fixture
def hosts(tmp_path: Path) -> Hosts:
    base = load_stack(REPO, "lab")
    roots = {c.vmid: str(tmp_path / f"ct{c.vmid}") for c in base.containers}
    t = dataclasses.replace(
        base, containers=tuple(dataclasses.replace(c, root=roots[c.vmid]) for c in base.containers),
        backup=BackupSettings(address="127.0.3.40", port=2222, user="root", dir="/srv/copies", keep=2,
                              schedule="daily", root=str(tmp_path / "backup"), journal_keep=2),
        database=dataclasses.replace(base.database, backup_keep=2))
    receive = Path(offsite.receive_path(t.backup))  # type: ignore[arg-type]
    receive.parent.mkdir(parents=True)
    receive.write_text(offsite.render_receive(t))
    scripts = {}
    for host in (t.database_host, t.load_balancer):
        path = Path(host.path(offsite.OFFSITE_SCRIPT))
        path.parent.mkdir(parents=True)
        path.write_text(offsite.render_offsite_script(t, host))
        scripts[host.role] = path
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ssh").write_text(FAKE_SSH)
    (fake / "ssh").chmod(0o755)
    os.environ.setdefault("ROLE_FOR_TEST", "database")
    hosts = Hosts(t=t, root=tmp_path, db=scripts["database"], lb=scripts["loadbalancer"], receive=receive, bin=fake)
    hosts.backups.mkdir(parents=True)
    return hosts


@pytest.fixture(autouse=True)
def _role(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ROLE_FOR_TEST", "database")
    monkeypatch.setenv("RECEIVE", str(tmp_path / "backup" / "srv" / "copies" / ".bluegreen" / "receive"))


def verified_dump(h: Hosts, name: str, content: bytes, *, verified: bool = True, migrated: bool = False) -> str:
    (h.backups / name).write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    m = dataclasses.replace(meta(name, verified=verified, migrated=migrated), sha256=digest)
    (h.backups / f"{name}.json").write_text(m.sidecar())
    return digest


def test_sync_copies_verified_dumps_checked_on_arrival_and_nothing_else(hosts: Hosts) -> None:
    h = hosts
    good = verified_dump(h, "20260101000000-green-abc1234.dump", b"a dump", migrated=True)
    verified_dump(h, "20260102000000-green-abc1234.dump", b"not verified", verified=False)
    (h.backups / "hand-made.dump").write_bytes(b"someone else's")
    first = h.run_db("sync")
    assert first.stdout.splitlines()[0] == f"copied 20260101000000-green-abc1234.dump {good}"
    assert sorted(p.name for p in h.store.iterdir() if not p.name.startswith(".")) == [
        "20260101000000-green-abc1234.dump", "20260101000000-green-abc1234.dump.json",
        "20260101000000-green-abc1234.dump.json.sha256", "20260101000000-green-abc1234.dump.sha256"]
    assert stat.S_IMODE((h.store / "20260101000000-green-abc1234.dump").stat().st_mode) == 0o600
    again = h.run_db("sync")
    assert again.stdout.startswith("present 20260101000000-green-abc1234.dump")
    listing = parse_offsite_listing(h.operator("list").stdout, str(h.store))
    assert [c.file for c in listing] == ["20260101000000-green-abc1234.dump"] and listing[0].verified


def test_a_dump_changed_since_its_verification_is_refused_on_arrival(hosts: Hosts) -> None:
    h = hosts
    verified_dump(h, "20260101000000-green-abc1234.dump", b"as verified")
    (h.backups / "20260101000000-green-abc1234.dump").write_bytes(b"bit rot")
    out = h.run_db("sync", check=False)
    assert out.returncode != 0
    assert "failed 20260101000000-green-abc1234.dump" in out.stdout and "checksum mismatch" in out.stdout
    assert not (h.store / "20260101000000-green-abc1234.dump").exists()


def test_retention_is_counted_on_the_backup_host_too(hosts: Hosts) -> None:
    h = hosts
    for day in range(1, 5):
        verified_dump(h, f"2026010{day}000000-green-abc1234.dump", f"dump {day}".encode(), migrated=True)
    out = h.run_db("sync")
    assert sorted(line.split()[1] for line in out.stdout.splitlines() if line.startswith("pruned")) == [
        "20260101000000-green-abc1234.dump", "20260102000000-green-abc1234.dump"]
    assert sorted(p.name for p in h.store.glob("*.dump")) == ["20260103000000-green-abc1234.dump",
                                                             "20260104000000-green-abc1234.dump"]


def test_pull_brings_a_copy_back_checked_against_the_recorded_checksum(hosts: Hosts) -> None:
    h = hosts
    digest = verified_dump(h, "20260101000000-green-abc1234.dump", b"the data")
    h.run_db("sync")
    for name in ("20260101000000-green-abc1234.dump", "20260101000000-green-abc1234.dump.json"):
        (h.backups / name).unlink()  # the database host was lost
    pulled = h.run_db("pull", "20260101000000-green-abc1234.dump")
    assert pulled.stdout.strip() == f"pulled 20260101000000-green-abc1234.dump {digest}"
    assert (h.backups / "20260101000000-green-abc1234.dump").read_bytes() == b"the data"
    assert json.loads((h.backups / "20260101000000-green-abc1234.dump.json").read_text())["sha256"] == digest
    # A copy damaged on the backup host is refused, and nothing is left behind.
    (h.backups / "20260101000000-green-abc1234.dump").unlink()
    (h.store / "20260101000000-green-abc1234.dump").write_bytes(b"the dat4")
    bad = h.run_db("pull", "20260101000000-green-abc1234.dump", check=False)
    assert bad.returncode == offsite.EXIT_MISMATCH and "checksum mismatch" in bad.stderr
    assert sorted(p.name for p in h.backups.iterdir() if not p.name.startswith(".offsite")) == [
        "20260101000000-green-abc1234.dump.json"]
    assert "mismatch" in h.operator("verify", "20260101000000-green-abc1234.dump").stdout


def test_the_journal_and_the_bundle_are_copied_when_they_change(hosts: Hosts, monkeypatch: pytest.MonkeyPatch) -> None:
    h = hosts
    monkeypatch.setenv("ROLE_FOR_TEST", "journal")
    journal = Path(h.t.load_balancer.path(h.t.journal.path))
    bundle = Path(h.t.load_balancer.path(h.t.haproxy.tls_cert or ""))
    journal.parent.mkdir(parents=True)
    bundle.parent.mkdir(parents=True)
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    for version in range(3):
        journal.write_text(json.dumps({"prod": "blue", "history": [{"n": version}]}))
        out = h.run_lb("journal").stdout
        assert out.startswith("stored ") and (version == 0) == ("stored" in out.splitlines()[1])
        assert "present" in h.run_lb("journal").stdout.splitlines()[0]
    copies = parse_journal_listing(h.operator("journals").stdout)
    assert len(copies) == 2  # journalKeep
    newest = h.operator("journal-get", copies[0].file).stdout
    assert json.loads(newest)["history"] == [{"n": 2}]
    assert hashlib.sha256(newest.encode()).hexdigest() == copies[0].sha256
    bundle.unlink()
    restored = h.run_lb("tls-restore").stdout
    assert restored.startswith("restored ") and bundle.read_text() == "-----BEGIN CERTIFICATE-----\n"
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600


@pytest.mark.parametrize(("role", "command"), [
    ("journal", "put 20260101000000-green-abc1234.dump " + "0" * 64),
    ("journal", "get 20260101000000-green-abc1234.dump"),
    ("database", "journal-put " + "0" * 64),
    ("database", "verify 20260101000000-green-abc1234.dump"),
    ("database", "get ../../etc/shadow"),
    ("database", "sums; rm -rf /"),
    ("database", "$(touch /tmp/pwned)"),
])
def test_a_pushing_key_runs_only_its_own_verbs(hosts: Hosts, role: str, command: str) -> None:
    out = subprocess.run(["bash", str(hosts.receive), role], capture_output=True, text=True,
                         env={**os.environ, "SSH_ORIGINAL_COMMAND": command})
    assert out.returncode == 2 and "bluegreen receive:" in out.stderr
    assert not Path("/tmp/pwned").exists()


def test_the_authorized_key_line_forces_the_receive_script(hosts: Hosts, tmp_path: Path) -> None:
    t = hosts.t
    line = offsite.authorized_key_line(t, "database", "ssh-ed25519 AAAAkey host@db")
    assert line == (f'restrict,command="{offsite.receive_path(t.backup)} database" ssh-ed25519 AAAAkey '  # type: ignore[arg-type]
                    "bluegreen-offsite:lab:database")
    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(home)}
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAAoperator me\n")

    def authorize(key: str) -> str:
        return subprocess.run(["bash", "-c", offsite.authorize_command(t, "database", key)], env=env,
                              capture_output=True, text=True, check=True).stdout

    assert authorize("ssh-ed25519 AAAAold x") == "changed\n"
    assert authorize("ssh-ed25519 AAAAold x") == ""
    assert authorize("ssh-ed25519 AAAAnew x") == "changed\n"  # a rebuilt host's new key replaces the old
    lines = (home / ".ssh" / "authorized_keys").read_text().splitlines()
    assert lines[0] == "ssh-ed25519 AAAAoperator me" and len(lines) == 2 and "AAAAnew" in lines[1]
    with pytest.raises(ConfigError):
        offsite.authorized_key_line(t, "operator", "ssh-ed25519 AAAAkey")


def test_the_bootstrap_installs_the_key_script_and_units_only_with_a_backup_host() -> None:
    t = load_stack(REPO, "lab")
    from bluegreen.render.bootstrap import render_bootstrap

    db = render_bootstrap(t, t.database_host)
    assert "ssh-keygen -q -t ed25519" in db and "bluegreen-dump.timer" in db and "ssh:openssh-client" in db
    assert "ssh:openssh-client" in render_bootstrap(t, t.load_balancer)
    assert "bluegreen-journal-offsite.path" in render_bootstrap(t, t.load_balancer)
    assert "offsite" not in render_bootstrap(t, t.app_host("blue"))
    plain = dataclasses.replace(t, backup=None)
    assert "offsite" not in render_bootstrap(plain, plain.database_host)
    units = offsite.render_units(t, t.database_host)
    timer = parse_unit(units["bluegreen-dump.timer"])
    assert timer["Timer"]["OnCalendar"] == ["*-*-* 03:15:00"] and timer["Install"]["WantedBy"] == ["timers.target"]
    service = parse_unit(units["bluegreen-dump.service"])
    assert service["Service"]["ExecStart"] == [f"{t.database_host.path(offsite.OFFSITE_SCRIPT)} dump"]
    path = parse_unit(offsite.render_units(t, t.load_balancer)["bluegreen-journal-offsite.path"])
    assert len(path["Path"]["PathChanged"]) == 2  # the journal and the certificate bundle


# --------------------------------------------------------------------------- the choice a rebuild makes


def listing_line(name: str, m: dumps.DumpMeta | None, digest: str | None) -> str:
    side = base64.b64encode(m.sidecar().encode()).decode() if m else ""
    return f"{name}\t10\t1767225600\t{digest or ''}\t{side}"


def test_a_rebuild_restores_the_newest_verified_copy_of_a_restorable_kind() -> None:
    good = dataclasses.replace(meta("20260101000000-green-abc1234.dump", migrated=True), sha256="a" * 64)
    nightly = dataclasses.replace(meta("20260102000000-scheduled.dump", kind=dumps.KIND_SCHEDULED), sha256="b" * 64)
    undo = dataclasses.replace(meta("20260103000000-pre-restore.dump", kind=dumps.KIND_PRE_RESTORE), sha256="c" * 64)
    broken = dataclasses.replace(meta("20260104000000-scheduled.dump", kind=dumps.KIND_SCHEDULED), sha256="d" * 64)
    text = "\n".join([listing_line(good.file, good, "a" * 64), listing_line(nightly.file, nightly, "b" * 64),
                      listing_line(undo.file, undo, "c" * 64), listing_line(broken.file, broken, "e" * 64)])
    copies = parse_offsite_listing(text, "/srv")
    assert [c.verified for c in copies] == [False, True, True, True]
    assert pick_offsite(copies, None).file == nightly.file  # not the pre-restore one, not the mismatch
    assert pick_offsite(copies, "20260103").file == undo.file  # named: any verified kind
    with pytest.raises(dumps.RestoreRefused, match="checksum"):
        pick_offsite(copies, broken.file)
    with pytest.raises(ConfigError, match="no dump named"):
        pick_offsite(copies, "1999")
    with pytest.raises(dumps.RestoreRefused, match="no verified dump"):
        pick_offsite([copies[0]], None)


def test_both_places_side_by_side() -> None:
    a = dataclasses.replace(meta("20260101000000-green-abc1234.dump"), sha256="a" * 64)
    b = dataclasses.replace(meta("20260102000000-scheduled.dump", kind=dumps.KIND_SCHEDULED), sha256="b" * 64)
    c = dataclasses.replace(meta("20260103000000-scheduled.dump", kind=dumps.KIND_SCHEDULED), sha256="c" * 64)
    local = [dumps.Backup(file=m.file, path=f"/l/{m.file}", bytes=10, mtime=0, meta=m) for m in (b, c)]
    there = parse_offsite_listing("\n".join([listing_line(a.file, a, "a" * 64), listing_line(b.file, b, "f" * 64)]),
                                  "/srv")
    rows = merge(local, there)
    assert [(r.file, r.offsite_state) for r in rows] == [
        (c.file, "not copied"), (b.file, "MISMATCH"), (a.file, "off-host only")]
    assert rows[2].to_json()["local"] is False and rows[1].to_json()["offsite"]["sha256"] == "f" * 64


def test_the_release_to_restore_is_the_live_colours_last_good_deploy() -> None:
    state = State.fresh("blue")
    for color, sha, result in (("blue", "a" * 40, "ok"), ("green", "b" * 40, "ok"), ("blue", "c" * 40, "failed")):
        state = state.with_deploy(color=color, ref="main", sha=sha, release="r", who="me", when=1.0,
                                  duration_ms=1, result=result)
    assert release_to_restore(state, "blue").sha == "a" * 40  # type: ignore[union-attr]
    assert release_to_restore(state, "green").sha == "b" * 40  # type: ignore[union-attr]
    assert release_to_restore(State.fresh("blue"), "blue") is None


def test_history_kept_needs_every_entry_in_order() -> None:
    before = [{"n": 2}, {"n": 1}]
    assert history_kept(before, [{"new": 1}, {"n": 2}, {"n": 1}])
    assert not history_kept(before, [{"n": 1}, {"n": 2}])
    assert not history_kept(before, [{"n": 2}])


# --------------------------------------------------------------------------- the lab's systemd stand-in


def test_next_elapse_comes_from_systemd() -> None:
    base = 1796515200.0  # 2026-12-06 00:00:00 UTC
    assert next_elapse("*-*-* 03:15:00", base) == base + 3 * 3600 + 15 * 60
    assert next_elapse("not a calendar", base) is None


def test_the_stand_in_fires_a_path_unit_when_its_file_changes(tmp_path: Path) -> None:
    t = load_stack(REPO, "lab")
    lb = dataclasses.replace(t.load_balancer, root=str(tmp_path))
    t = dataclasses.replace(t, containers=(lb,))
    units = Path(lb.path("/etc/systemd/system"))
    units.mkdir(parents=True)
    watched = tmp_path / "state.json"
    (units / "x.path").write_text(f"[Path]\nPathChanged={watched}\n")
    fired: list[str] = []
    scheduler = Scheduler(t, tmp_path / "runs.jsonl")
    def fire(watch: Watch) -> str:
        fired.append(watch.unit)
        return watch.unit

    scheduler.fire = fire  # type: ignore[method-assign]
    scheduler.scan(0)
    assert scheduler.tick(0) == []  # nothing changed since it was first seen
    watched.write_text("1")
    scheduler.tick(1)
    scheduler.tick(2)
    assert fired == ["x.path"]
    watch = next(iter(scheduler.watches.values()))
    assert isinstance(watch, Watch) and watch.kind == "path"
