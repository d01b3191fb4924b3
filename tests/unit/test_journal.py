"""The journal (user's state.json format) and the deployment lock, on real files via LocalExecutor."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import cast

import pytest

from bluegreen.hosts.executor import Executor, LocalExecutor
from bluegreen.hosts.journal import JournalStore
from bluegreen.hosts.lock import LockManager, create_exclusive_command
from bluegreen.model.errors import ConfigError, LockedError, RemoteError, ValidationError
from bluegreen.model.journal import (
    DeployRecord,
    State,
    SwitchRecord,
    archive_lines,
    archive_path,
    parse_archive,
    parse_state,
    with_entry,
)
from bluegreen.model.lock import LockInfo, lock_status

SEED = Path(__file__).resolve().parents[1] / "fixtures" / "state.seed.json"
T0 = 1_757_883_791.0  # 2025-09-14T21:03:11Z


def seed_text() -> str:
    return SEED.read_text()


def deploy(color: str = "green", result: str = "ok", sha: str = "a" * 40, *, failed_step: str | None = None,
           error: str | None = None) -> DeployRecord:
    return DeployRecord(color=color, ref="v2", sha=sha, release=f"20250915120000-{sha[:7]}",
                        who="alice@laptop", when="2025-09-15T12:00:00Z", duration_ms=84_000,
                        result=result, failed_step=failed_step, error=error)


def local(host: str = "haproxy") -> Executor:
    return cast(Executor, LocalExecutor(host=host))


# --------------------------------------------------------------------------- pure state


def test_seed_reads_as_is_and_old_entries_are_switches() -> None:
    state = parse_state(seed_text())
    assert (state.prod, state.standby, state.switch_count) == ("blue", "green", 7)
    assert state.last_switch == "2025-09-14T21:03:11Z"  # read as the file has it
    records = state.records()
    assert len(records) == 3 and all(isinstance(r, SwitchRecord) for r in records)
    first = records[0]
    assert isinstance(first, SwitchRecord)
    assert (first.from_color, first.to_color, first.who, first.emergency) == ("green", "blue", None, False)


def test_round_trip_keeps_the_file_identical_in_content_and_key_order() -> None:
    original = json.loads(seed_text())
    again = json.loads(parse_state(seed_text()).to_json())
    assert again == original
    assert list(again) == list(original)
    assert list(again["history"][0]) == list(original["history"][0])


def test_unknown_keys_survive_top_level_and_inside_entries() -> None:
    data = json.loads(seed_text())
    data["operator"] = {"team": "av", "pager": "+1 555"}
    data["history"][1]["ticket"] = "JW-42"
    state = parse_state(json.dumps(data)).with_switch("green", when=T0 + 60, who="bob@desk")
    written = json.loads(state.to_json())
    assert written["operator"] == {"team": "av", "pager": "+1 555"}
    assert written["history"][2]["ticket"] == "JW-42"


def test_switch_flips_colours_counts_and_prepends_an_extended_record() -> None:
    state = parse_state(seed_text()).with_switch("green", when=T0 + 3600, who="bob@desk",
                                                 reason="release v2", emergency=True, duration_ms=412)
    assert (state.prod, state.standby, state.switch_count) == ("green", "blue", 8)
    assert state.last_switch == "2025-09-14T22:03:11.000Z"
    newest = state.to_dict()["history"][0]
    assert newest == {"type": "switch", "from": "blue", "to": "green", "timestamp": "2025-09-14T22:03:11.000Z",
                      "reason": "release v2", "who": "bob@desk", "emergency": True, "durationMs": 412}
    # The old entries are not rewritten into the new shape.
    assert "type" not in state.to_dict()["history"][1]


def test_switch_to_an_unknown_colour_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="purple"):
        parse_state(seed_text()).with_switch("purple", when=T0, who="x")


def test_deploys_are_recorded_and_the_last_one_per_colour_is_found() -> None:
    state = parse_state(seed_text())
    assert state.last_deploy("green") is None
    first = deploy("green", sha="1" * 40)
    failed = deploy("green", result="failed", sha="2" * 40, failed_step="build",
                    error="npm ERR! code ELIFECYCLE")
    state = state.with_deploy_record(first).with_deploy_record(failed)
    assert state.last_deploy("green") == failed
    assert state.last_deploy("blue") is None
    assert (state.prod, state.switch_count) == ("blue", 7)  # a deploy is not a switch
    entry = state.to_dict()["history"][0]
    assert entry == {"type": "deploy", "color": "green", "ref": "v2", "sha": "2" * 40,
                     "release": "20250915120000-2222222", "who": "alice@laptop",
                     "when": "2025-09-15T12:00:00Z", "durationMs": 84_000, "result": "failed",
                     "failedStep": "build", "error": "npm ERR! code ELIFECYCLE"}
    assert state.deploy_totals() == {"green": {"ok": 1, "failed": 1}}


def test_history_keeps_the_newest_entries_and_moves_older_ones_to_the_archive() -> None:
    seed = parse_state(seed_text())
    state = seed
    for i in range(5):
        state = state.with_deploy_record(deploy("blue", sha=f"{i}" * 40), keep=4)
    assert len(state.history) == 4
    assert [(r.sha or "")[:1] for r in state.records() if isinstance(r, DeployRecord)] == ["4", "3", "2", "1"]
    assert state.deploy_totals() == {"blue": {"ok": 5}}
    reread = parse_state(state.to_json())
    assert reread.deploy_totals() == {"blue": {"ok": 5}}
    assert "archived" not in state.to_json() and reread.archived == ()
    # Nothing is dropped: every entry that left the file is in `archived`, oldest first, and the
    # archive's text reads back newest first, so history + archive is the whole story in order.
    archive = parse_archive(archive_lines(state.archived))
    assert [*state.recent(100), *archive] == [
        *[deploy("blue", sha=f"{i}" * 40).to_dict() for i in range(4, -1, -1)], *seed.recent(100)]
    assert next(json.loads(line) for line in archive_lines(state.archived).splitlines()) == seed.recent(100)[-1]
    assert archive_path("/var/lib/jw-deployment/state.json") == "/var/lib/jw-deployment/state.archive.jsonl"


def test_an_emergency_entry_trims_nothing_when_asked() -> None:
    seed = parse_state(seed_text())
    entry = {"type": "switch", "from": "blue", "to": "green", "timestamp": "2025-09-16T10:00:00.000Z", "id": "x"}
    kept = with_entry(seed, entry, None)
    assert len(kept.history) == len(seed.history) + 1 and kept.archived == ()
    assert with_entry(seed, entry, 1).archived == tuple(reversed(seed.history))


def test_totals_of_a_journal_without_counts_come_from_its_history() -> None:
    data = json.loads(seed_text())
    data["history"].insert(0, deploy("blue", result="failed").to_dict())
    data["history"].insert(0, deploy("blue").to_dict())
    assert parse_state(json.dumps(data)).deploy_totals() == {"blue": {"ok": 1, "failed": 1}}


def test_with_deploy_takes_plain_fields_and_normalises_the_timestamp() -> None:
    state = State.fresh("blue").with_deploy(
        color="green", ref="main", sha=None, release=None, who="mcp:alice", when="2025-09-15T12:00:00+00:00",
        duration_ms=900, result="failed", failed_step="fetch", error="git: unknown ref")
    entry = state.recent(1)[0]
    assert (entry["when"], entry["sha"], entry["release"]) == ("2025-09-15T12:00:00.000Z", None, None)
    again = parse_state(state.to_json()).last_deploy("green")
    assert again is not None and again.sha is None and again.failed_step == "fetch" and not again.ok


def test_switch_times_may_be_iso_text_but_must_parse() -> None:
    state = State.fresh("blue").with_switch("green", when="2025-09-15T12:00:00.250Z", who="x")
    assert state.last_switch == "2025-09-15T12:00:00.250Z"  # the estate's shape, milliseconds kept
    with pytest.raises(ConfigError, match="expected an ISO timestamp, got 'soon'"):
        State.fresh("blue").with_switch("green", when="soon", who="x")


def test_previous_live_is_where_the_newest_switch_to_it_came_from() -> None:
    state = parse_state(seed_text())  # newest: green -> blue
    assert state.previous_live("blue") == "green"
    assert state.previous_live("green") == "blue"  # blue -> green on 2025-09-14T20:41:57Z
    assert State.fresh("blue").previous_live("blue") is None


def test_recent_is_newest_first() -> None:
    state = parse_state(seed_text()).with_deploy_record(deploy("green"))
    recent = state.recent(2)
    assert [e.get("type", "switch") for e in recent] == ["deploy", "switch"]
    assert recent[1]["timestamp"] == "2025-09-14T21:03:11Z"
    assert state.recent(0) == []


def test_a_missing_file_starts_from_the_declared_colour() -> None:
    state = parse_state(None, declared_color="green")
    assert (state.prod, state.standby, state.switch_count, state.history) == ("green", "blue", 0, ())
    assert json.loads(state.to_json())["lastSwitch"] is None


@pytest.mark.parametrize("text, expected", [
    ('{"prod": "blue", ', r"/srv/state\.json: not valid JSON \(line 1, column 18"),
    ("   \n", r"/srv/state\.json: the journal file is empty"),
])
def test_unreadable_json_names_the_file_and_the_problem(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_state(text, source="/srv/state.json")


def test_a_wrong_shape_lists_every_problem_by_key() -> None:
    bad = {"prod": "red", "switchCount": -1, "history": [1, {"type": 5}], "lastSwitch": "yesterday"}
    with pytest.raises(ValidationError) as err:
        parse_state(json.dumps(bad), source="haproxy:/var/lib/bluegreen/state.json")
    message = str(err.value)
    assert message.startswith("haproxy:/var/lib/bluegreen/state.json: 5 problems")
    for key in ("prod:", "switchCount:", "history[0]:", "history[1].type:", "lastSwitch:"):
        assert key in message


def test_prod_and_standby_cannot_be_the_same_colour() -> None:
    with pytest.raises(ValidationError, match="standby: is the same colour as prod"):
        parse_state('{"prod": "blue", "standby": "blue"}')


def test_deploy_record_rejects_an_unknown_result() -> None:
    with pytest.raises(ConfigError, match="result must be one of ok, failed"):
        deploy(result="maybe")


# --------------------------------------------------------------------------- store on real files


def test_store_reads_fresh_then_writes_atomically_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "var/lib/bluegreen/state.json"
    store = JournalStore(local(), str(path), declared_color="blue")
    state = store.read()
    assert state == State.fresh("blue")
    store.write(state.with_switch("green", when=T0, who="bob@desk"))
    assert json.loads(path.read_text())["prod"] == "green"
    assert store.read().prod == "green"
    # No temporary file left behind; state.lock is the lock the old tool (and we) take.
    assert sorted(os.listdir(path.parent)) == ["state.json", "state.lock"]


def test_store_read_can_override_the_colour_of_a_fresh_journal(tmp_path: Path) -> None:
    store = JournalStore(local(), str(tmp_path / "state.json"), declared_color="blue")
    assert store.read(default_live="green").prod == "green"


def test_store_update_keeps_the_users_file_intact(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(seed_text())
    store = JournalStore(local(), str(path))
    store.update(lambda s: s.with_deploy_record(deploy("green")))
    data = json.loads(path.read_text())
    assert data["history"][1:] == json.loads(seed_text())["history"]


def test_store_names_the_host_and_path_of_a_corrupt_journal(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ConfigError, match=f"haproxy:{path}: not UTF-8"):
        JournalStore(local(), str(path)).read()


# --------------------------------------------------------------------------- lock


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now
        self._guard = threading.Lock()

    def __call__(self) -> float:
        with self._guard:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._guard:
            self.now += seconds


def manager(path: Path, clock: Clock | None = None, *, holder: str | None = None, stale_after: float = 120.0,
            heartbeat_every: float = 10.0) -> LockManager:
    return LockManager(local(), str(path), clock=clock or Clock(), holder=holder, stale_after=stale_after,
                       heartbeat_every=heartbeat_every)


def test_acquire_writes_who_what_and_when(tmp_path: Path) -> None:
    lock = tmp_path / "lock.json"
    info = manager(lock, holder="alice@laptop").acquire("deploy green v2")
    on_disk = LockInfo.from_file(lock.read_text())
    assert on_disk == info
    assert (info.holder, info.pid, info.operation, info.started) == ("alice@laptop", os.getpid(),
                                                                       "deploy green v2", T0)
    assert json.loads(lock.read_text())["startedAt"] == "2025-09-14T21:03:11.000Z"


def test_the_caller_can_name_the_holder_and_status_is_json_ready(tmp_path: Path) -> None:
    lock = tmp_path / "lock.json"
    mgr = manager(lock, holder="root@ops")
    mgr.acquire("switch", who="mcp:alice@laptop")
    status = mgr.status()
    assert status is not None
    data = status.to_json()
    assert json.loads(json.dumps(data)) == data
    assert (data["holder"], data["operation"], data["stale"], data["staleReason"]) == (
        "mcp:alice@laptop", "switch", False, None)
    assert data["startedAt"] == "2025-09-14T21:03:11.000Z"
    assert mgr.release() is True


def test_a_second_operation_is_refused_with_a_message_naming_the_holder(tmp_path: Path) -> None:
    lock = tmp_path / "lock.json"
    manager(lock, holder="alice@laptop").acquire("deploy green v2")
    with pytest.raises(LockedError) as err:
        manager(lock, holder="bob@desk").acquire("switch")
    message = str(err.value)
    for part in ("alice@laptop", socket.gethostname(), "deploy green v2", "2025-09-14T21:03:11.000Z",
                 "looks alive", "bluegreen lock release --force"):
        assert part in message
    assert "STALE" not in message


def test_only_one_of_many_racing_processes_gets_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "lock.json"
    contenders = 8
    for _round in range(5):
        barrier = threading.Barrier(contenders)
        winners: list[LockManager] = []
        refused: list[LockedError] = []
        unexpected: list[BaseException] = []

        def contend(i: int, barrier: threading.Barrier = barrier, winners: list[LockManager] = winners,
                    refused: list[LockedError] = refused,
                    unexpected: list[BaseException] = unexpected) -> None:
            mgr = manager(lock, holder=f"user{i}@host")
            barrier.wait()
            try:
                mgr.acquire("deploy")
                winners.append(mgr)
            except LockedError as exc:
                refused.append(exc)
            except BaseException as exc:  # reported below, not swallowed
                unexpected.append(exc)

        threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert unexpected == []
        assert len(winners) == 1 and len(refused) == contenders - 1
        assert LockInfo.from_file(lock.read_text()).holder == winners[0].holder
        assert winners[0].release() is True
        assert not lock.exists()


def test_release_never_removes_someone_elses_lock(tmp_path: Path) -> None:
    lock = tmp_path / "lock.json"
    first = manager(lock, holder="alice@laptop")
    first.acquire("deploy")
    breaker = manager(lock, holder="bob@desk")
    assert breaker.release() is False  # bob holds nothing
    assert breaker.force_release() is not None
    breaker.acquire("switch")
    assert first.release() is False
    assert LockInfo.from_file(lock.read_text()).holder == "bob@desk"


def test_heartbeat_refreshes_the_lock_and_stale_detection_follows_it(tmp_path: Path) -> None:
    lock = tmp_path / "lock.json"
    clock = Clock()
    holder = manager(lock, clock, holder="alice@laptop", stale_after=120.0)
    info = holder.acquire("deploy")
    clock.advance(100)
    beat = holder.heartbeat()
    assert (beat.started, beat.heartbeat) == (info.started, T0 + 100)
    assert LockInfo.from_file(lock.read_text()) == beat
    clock.advance(100)
    status = holder.status()
    assert status is not None and not status.stale
    clock.advance(21)
    status = holder.status()
    assert status is not None and status.stale and "no heartbeat for 121s" in (status.reason or "")
    with pytest.raises(LockedError, match="It looks STALE: no heartbeat for 121s"):
        manager(lock, clock, holder="bob@desk").acquire("switch")


def test_a_lock_whose_local_process_died_is_stale(tmp_path: Path) -> None:
    lock = tmp_path / "lock.json"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: that pid names no process now
    dead = LockInfo(holder="alice@laptop", host=socket.gethostname(), pid=child.pid, operation="deploy",
                    started=T0, heartbeat=T0)
    lock.write_text(dead.to_file())
    status = manager(lock).status()
    assert status is not None and status.stale
    assert f"process {child.pid} on {socket.gethostname()} is no longer running" == status.reason


def test_a_dead_pid_on_another_machine_proves_nothing() -> None:
    info = LockInfo(holder="alice@laptop", host="laptop", pid=4242, operation="deploy",
                    started=T0, heartbeat=T0)
    elsewhere = lock_status(info, now=T0 + 5, stale_after=120, this_machine="ci-runner",
                            alive=lambda pid: False)
    here = lock_status(info, now=T0 + 5, stale_after=120, this_machine="laptop", alive=lambda pid: False)
    assert (elsewhere.stale, here.stale) == (False, True)


def test_heartbeat_after_the_lock_was_broken_reports_the_loss(tmp_path: Path) -> None:
    lock = tmp_path / "lock.json"
    holder = manager(lock, holder="alice@laptop")
    holder.acquire("deploy green")
    manager(lock, holder="bob@desk").force_release()
    with pytest.raises(LockedError, match="broken while 'deploy green' ran"):
        holder.heartbeat()
    assert holder.lost is not None and holder.held is None
    assert not lock.exists()  # a lost heartbeat never recreates the lock


def test_hold_heartbeats_in_the_background_and_releases_on_exit(tmp_path: Path) -> None:
    lock = tmp_path / "lock.json"
    clock = Clock()
    holder = manager(lock, clock, heartbeat_every=0.01)
    with holder.hold("deploy") as info:
        clock.advance(30)
        deadline = time.monotonic() + 30
        while LockInfo.from_file(lock.read_text()).heartbeat == info.heartbeat:
            assert time.monotonic() < deadline, "the heartbeat thread never refreshed the lock"
            time.sleep(0.01)
        assert LockInfo.from_file(lock.read_text()).heartbeat == T0 + 30
    assert not lock.exists()
    assert not [t for t in threading.enumerate() if t.name == "bluegreen-lock-heartbeat"]


def test_hold_releases_when_the_operation_fails(tmp_path: Path) -> None:
    lock = tmp_path / "lock.json"
    with pytest.raises(RuntimeError, match="build failed"), manager(lock).hold("deploy"):
        assert lock.exists()
        raise RuntimeError("build failed")
    assert not lock.exists()


def test_an_unreadable_lock_counts_as_stale_and_blocks(tmp_path: Path) -> None:
    lock = tmp_path / "lock.json"
    lock.write_text("{half a lock")
    status = manager(lock).status()
    assert status is not None and status.stale and status.reason == "the lock file is unreadable"
    with pytest.raises(LockedError, match="STALE"):
        manager(lock).acquire("deploy")
    assert manager(lock).force_release() is not None
    assert not lock.exists()


def test_force_release_without_a_lock_returns_none(tmp_path: Path) -> None:
    assert manager(tmp_path / "lock.json").force_release() is None


def test_a_lock_that_cannot_be_created_is_a_remote_error_not_a_locked_one(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(RemoteError, match="take the deployment lock failed: cannot create"):
        manager(blocker / "lock.json").acquire("deploy")


def test_the_create_command_quotes_hostile_paths(tmp_path: Path) -> None:
    odd = tmp_path / "it's $(touch pwned) here" / "lock.json"
    result = LocalExecutor().run(create_exclusive_command(str(odd)), step="t", input="{}")
    assert result.ok and odd.read_text() == "{}"
    assert not (Path.cwd() / "pwned").exists() and not (tmp_path / "pwned").exists()
    again = LocalExecutor().run(create_exclusive_command(str(odd)), step="t", input="{}", check=False)
    assert again.exit_code == 3
    assert sorted(os.listdir(odd.parent)) == ["lock.json"]


# --------------------------------------------------------------------------- the old tool's lock

# The estate's own state script, as its operators wrote it (get/set under flock on state.lock).
LEGACY_SCRIPT = """#!/bin/bash
set -euo pipefail
STATE="$DIR/state.json"
LOCK="$DIR/state.lock"
exec 9>"$LOCK"
flock -w 10 9 || { echo "state is locked" >&2; exit 1; }
case "${1:-}" in
  get) if [ -n "${2:-}" ]; then jq -r --arg k "$2" '.[$k]' "$STATE"; else cat "$STATE"; fi ;;
  set) tmp="$STATE.tmp"
       jq --arg k "$2" --arg v "$3" 'if $k == "switchCount" then .[$k] = ($v|tonumber) else .[$k] = $v end' \\
          "$STATE" > "$tmp" && mv "$tmp" "$STATE" ;;
esac
"""


def _legacy(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "jw-deployment-state.sh"
    script.write_text(LEGACY_SCRIPT)
    return subprocess.run(["bash", str(script), *args], env={**os.environ, "DIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=30)


def test_journal_writes_wait_for_the_old_tools_lock(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(seed_text())
    lock = tmp_path / "state.lock"
    holder = subprocess.Popen(["flock", str(lock), "sleep", "1.5"])
    try:
        time.sleep(0.3)
        started = time.monotonic()
        JournalStore(local(), str(path)).update(lambda s: s.with_deploy_record(deploy("green")))
        waited = time.monotonic() - started
    finally:
        holder.wait(10)
    assert waited >= 1.0, "the write must wait while the old tool holds state.lock"
    assert json.loads(path.read_text())["history"][1:] == json.loads(seed_text())["history"]


def test_a_write_between_read_and_write_is_not_lost(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(seed_text())
    calls = []

    def change(state: State) -> State:
        calls.append(state.switch_count)
        if len(calls) == 1:  # the old tool sets a value while we compute
            assert _legacy(tmp_path, "set", "switchCount", "41").returncode == 0
        return state.with_deploy_record(deploy("green"))

    JournalStore(local(), str(path)).update(change)
    data = json.loads(path.read_text())
    assert data["switchCount"] == 41, "the old tool's write survives"
    assert len(calls) == 2 and calls[1] == 41
    assert data["history"][1:] == json.loads(seed_text())["history"]


def test_the_old_script_keeps_working_on_the_extended_journal(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(seed_text())
    JournalStore(local(), str(path)).update(lambda s: s.with_deploy_record(deploy("green")))
    got = _legacy(tmp_path, "get", "prod")
    assert got.returncode == 0 and got.stdout.strip() == json.loads(seed_text())["prod"]
    assert _legacy(tmp_path, "set", "lastSwitch", "2026-11-30T12:00:00.000Z").returncode == 0
    data = json.loads(path.read_text())
    assert data["lastSwitch"] == "2026-11-30T12:00:00.000Z"
    assert len(data["history"]) == len(json.loads(seed_text())["history"]) + 1
