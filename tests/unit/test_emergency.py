"""The pure and local parts of issue 12: the emergency path's commands and parsers, the side
journal and its fold, the lock's compare-and-swap and pre-emption (on real files through the
LocalExecutor, the same shell the HAProxy host runs), the release gate, deferred signals, and
finite, in-range config numbers."""

from __future__ import annotations

import copy
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from bluegreen.hosts import journal as host_journal
from bluegreen.hosts import openssh
from bluegreen.hosts.executor import LocalExecutor
from bluegreen.hosts.lock import LockManager
from bluegreen.model import journal as journal_model
from bluegreen.model.config import config_getter, from_config
from bluegreen.model.errors import LockedError, ValidationError
from bluegreen.model.journal import State, parse_state
from bluegreen.model.lock import LockInfo
from bluegreen.model.stackfile import load_stack, read_stack_config
from bluegreen.ops import emergency, signals

PROJECT_DIR = Path(__file__).resolve().parents[2]

# What HAProxy 2.6 answered on the lab's admin socket to `show map M;set map M live bk_blue;
# set map M preview bk_green;show map M` (every answer ends with an empty line).
FLIP_ANSWER = ("0x56546ee83470 live bk_green\n0x56546ee83500 preview bk_blue\n\n\n\n"
               "0x56546ee83470 live bk_blue\n0x56546ee83500 preview bk_green\n\n")


# --------------------------------------------------------------------------- parsers, commands


def test_answers_of_one_connection_split_at_empty_lines() -> None:
    answers = emergency.split_cli_answers(FLIP_ANSWER)
    assert answers[:4] == ["0x56546ee83470 live bk_green\n0x56546ee83500 preview bk_blue", "", "",
                           "0x56546ee83470 live bk_blue\n0x56546ee83500 preview bk_green"]
    assert emergency.parse_map(answers[3]) == {"live": "bk_blue", "preview": "bk_green"}
    assert emergency.parse_map("entry not found.") == {}


def test_the_emergency_flips_with_the_same_one_step_script_as_every_switch() -> None:
    """Runtime map and map file in one remote step, for the emergency as for the normal path."""
    from bluegreen.hosts.haproxy_cli import HaproxyPaths, flip_script, routing_entries
    from bluegreen.render.haproxy import render_live_map

    t = load_stack(PROJECT_DIR, "lab")
    paths = HaproxyPaths.from_topology(t)
    assert emergency.flip_command(t, "green") == flip_script(
        paths.admin_socket, paths.map, routing_entries("green"), render_live_map(t, "green"))


def test_ssh_options_pin_host_keys_and_never_add_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    t = load_stack(PROJECT_DIR, "lab")
    argv = openssh.ssh_argv(t, t.load_balancer)
    joined = " ".join(argv)
    assert "StrictHostKeyChecking=yes" in joined and "BatchMode=yes" in joined
    assert "UserKnownHostsFile=/var/tmp/jw-lab/ssh/known_hosts" in joined
    assert "StrictHostKeyChecking=no" not in joined and "accept-new" not in joined
    assert argv[-1] == "127.0.3.26" and argv[argv.index("-p") + 1] == "2222"
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("Host jw-haproxy\n  HostName 127.0.3.26\n  Port 2200\n")
    aliased = openssh.ssh_argv(t, t.load_balancer)
    assert aliased[-1] == "jw-haproxy" and "-p" not in aliased  # ~/.ssh/config decides, as with paramiko


def test_the_emergency_connection_uses_the_stacks_alias_and_ssh_config(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`sshAlias: haproxy` and `ssh.configFile`, as every other connection uses them (OPERATIONS.md, step 1)."""
    import dataclasses

    monkeypatch.setenv("HOME", str(tmp_path))
    config = tmp_path / "estate_ssh_config"
    config.write_text("Host haproxy\n  HostName 127.0.3.26\n  Port 2200\n  User admin\n")
    t = load_stack(PROJECT_DIR, "lab")
    lb = dataclasses.replace(t.load_balancer, settings=dataclasses.replace(t.load_balancer.settings,
                                                                           ssh_alias="haproxy"))
    t = dataclasses.replace(t, ssh=dataclasses.replace(t.ssh, config_file=str(config)),
                            containers=tuple(lb if c.vmid == lb.vmid else c for c in t.containers))
    argv = openssh.ssh_argv(t, t.load_balancer)
    assert argv[-3:] == ["-F", str(config), "haproxy"] and "-p" not in argv and "-l" not in argv
    assert "StrictHostKeyChecking=yes" in " ".join(argv)
    # A config file that names neither alias nor address still applies, with the stack's options.
    config.write_text("Host *\n  ServerAliveInterval 9\n")
    plain = openssh.ssh_argv(t, t.load_balancer)
    assert plain[-1] == "127.0.3.26" and ["-F", str(config)] == plain[plain.index("-F"):plain.index("-F") + 2]


# --------------------------------------------------------------------------- journal, side file


def _entry(frm: str, to: str, ts: float = 1_760_000_000.0) -> dict[str, Any]:
    return journal_model.switch_entry(from_color=frm, to_color=to, when=ts, who="ops@laptop",
                                      reason="emergency rollback", duration_ms=12,
                                      preempted=LockInfo("al@box", "box", 42, "deploy", 1.0, 2.0), path="emergency")


def test_an_emergency_entry_moves_prod_and_names_whom_it_preempted() -> None:
    state = State.fresh("blue")
    after = journal_model.with_entry(state, _entry("blue", "green"), keep=200)
    assert (after.prod, after.standby, after.switch_count) == ("green", "blue", 1)
    top = after.history[0]
    assert top["emergency"] is True and top["preempted"]["pid"] == 42 and top["id"]
    assert parse_state(after.to_json()).history[0] == top  # survives a round trip


def test_side_entries_are_folded_once_in_order_and_garbage_is_skipped() -> None:
    first, second = _entry("blue", "green", 1_760_000_000), _entry("green", "blue", 1_760_000_100)
    text = "\n".join([json.dumps(first), "{not json", json.dumps({"to": "purple"}), json.dumps(second)])
    entries = journal_model.parse_side(text)
    assert [e["to"] for e in entries] == ["green", "blue"]
    folded = journal_model.fold(State.fresh("blue"), entries, keep=200)
    assert folded.prod == "blue" and folded.switch_count == 2
    assert [h["to"] for h in folded.history] == ["blue", "green"]  # newest first
    assert journal_model.fold(folded, entries, keep=200) == folded  # ids already there: nothing twice


def test_side_file_is_folded_by_reads_and_cleared_after_a_write(tmp_path: Path) -> None:
    ex = LocalExecutor()
    journal = str(tmp_path / "state.json")
    Path(journal).write_text(State.fresh("blue").to_json())
    ex.run(host_journal.append_side_command(journal, json.dumps(_entry("blue", "green"))), step="t")
    state = host_journal.fold_pending(ex, journal, parse_state(Path(journal).read_text()), keep=200)
    assert state.prod == "green"
    host_journal.clear_pending(ex, journal, State.fresh("blue"))  # a journal without it: the side file stays
    assert Path(journal_model.side_path(journal)).exists()
    host_journal.clear_pending(ex, journal, state)
    assert not Path(journal_model.side_path(journal)).exists()


def _lab_rooted_at(tmp_path: Path, journal: str | None = None) -> Any:
    t = load_stack(PROJECT_DIR, "lab")
    root = tmp_path / "ct136"
    t = t.__class__(**{**t.__dict__, "containers": tuple(
        c.__class__(**{**c.__dict__, "root": str(root)}) if c.role == "loadbalancer" else c
        for c in t.containers)})
    if journal is not None:
        t = t.__class__(**{**t.__dict__, "journal": t.journal.__class__(**{**t.journal.__dict__, "path": journal})})
    return t


def _codes(out: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in out.strip().splitlines()[-1].split())


def test_record_writes_the_journal_or_the_side_file_and_releases_only_our_lock(tmp_path: Path) -> None:
    t = _lab_rooted_at(tmp_path)
    journal = Path(t.load_balancer.path(t.journal.path))
    lock = Path(t.load_balancer.path(t.journal.lock_path))
    mine = LockManager(LocalExecutor(), str(lock), holder="ops@laptop")
    mine.take_over("emergency rollback")
    assert mine.held is not None
    ex = LocalExecutor()
    text = State.fresh("green").to_json()
    out = ex.run(emergency.record_command(t, mine.held.token, journal_text=text, side_line='{"x":1}',
                                          expected="absent"), step="t", input=text)
    assert _codes(out.stdout) == {"journal": "0", "side": "-", "lock": "0"}
    assert parse_state(journal.read_text()).prod == "green" and not lock.exists()
    assert journal.stat().st_mode & 0o777 == 0o600
    other = LockManager(LocalExecutor(), str(lock), holder="bob@desk")
    other.acquire("deploy")
    # The lock is bob's now: the journal is not ours to write, the line goes to the side file.
    out = ex.run(emergency.record_command(t, mine.held.token, journal_text=text, side_line='{"x":1}',
                                          expected=None), step="t", input=text)
    assert _codes(out.stdout) == {"journal": "5", "side": "0", "lock": "5"}
    assert lock.exists() and LockInfo.from_file(lock.read_text()).holder == "bob@desk"
    assert Path(journal_model.side_path(str(journal))).read_text() == '{"x":1}\n'


def test_a_journal_changed_since_it_was_read_is_not_overwritten(tmp_path: Path) -> None:
    """Compare-and-swap: the emergency's journal write loses to a write it did not read."""
    t = _lab_rooted_at(tmp_path)
    journal = Path(t.load_balancer.path(t.journal.path))
    journal.parent.mkdir(parents=True)
    journal.write_text(State.fresh("blue").to_json())
    read_digest = __import__("hashlib").sha256(journal.read_bytes()).hexdigest()
    journal.write_text(State.fresh("blue").with_switch("green", when=time.time(), who="x").to_json())
    text = State.fresh("blue").with_switch("green", when=time.time(), who="emergency").to_json()
    out = LocalExecutor().run(emergency.record_command(t, None, journal_text=text, side_line='{"y":2}',
                                                       expected=read_digest), step="t", input=text)
    assert _codes(out.stdout)["journal"] == "3" and _codes(out.stdout)["side"] == "0"
    assert parse_state(journal.read_text()).history[0]["who"] == "x"


def test_a_journal_that_cannot_be_written_still_releases_the_lock(tmp_path: Path) -> None:
    """Journal and side file both fail (here: their directory is a file; on the lab, a full disk):
    the lock is released all the same, and the codes say what failed."""
    (tmp_path / "not-a-dir").write_text("")
    t = _lab_rooted_at(tmp_path, journal="/../not-a-dir/state.json")
    lock = Path(t.load_balancer.path(t.journal.lock_path))
    mine = LockManager(LocalExecutor(), str(lock), holder="ops@laptop")
    mine.take_over("emergency switch")
    assert mine.held is not None
    text = State.fresh("green").to_json()
    out = LocalExecutor().run(emergency.record_command(t, mine.held.token, journal_text=text,
                                                       side_line='{"z":3}', expected="absent"),
                              step="t", input=text, check=False)
    codes = _codes(out.stdout)
    assert codes["journal"] not in ("0", "-") and codes["side"] not in ("0", "-") and codes["lock"] == "0"
    assert not lock.exists()


# --------------------------------------------------------------------------- lock CAS, pre-emption


def test_a_preempted_holder_stops_at_its_next_check_and_never_overwrites(tmp_path: Path) -> None:
    lock = tmp_path / "lock.json"
    deploy = LockManager(LocalExecutor(), str(lock), holder="alice@laptop")
    deploy.acquire("deploy")
    deploy.check()  # still ours: nothing happens
    rescuer = LockManager(LocalExecutor(), str(lock), holder="ops@laptop")
    ours, displaced = rescuer.take_over("emergency rollback")
    assert displaced is not None and displaced.holder == "alice@laptop" and displaced.operation == "deploy"
    with pytest.raises(LockedError, match=r"broken while 'deploy' ran .*ops@laptop.*stopping"):
        deploy.check()
    with pytest.raises(LockedError):
        deploy.heartbeat()
    assert deploy.release() is False
    assert LockInfo.from_file(lock.read_text()).token == ours.token  # the rescuer's lock untouched


def test_heartbeat_cannot_resurrect_a_lock_that_was_broken_and_retaken(tmp_path: Path) -> None:
    lock = tmp_path / "lock.json"
    first = LockManager(LocalExecutor(), str(lock), holder="alice@laptop")
    first.acquire("deploy")
    LockManager(LocalExecutor(), str(lock), holder="ops").force_release()
    second = LockManager(LocalExecutor(), str(lock), holder="bob@desk")
    second.acquire("switch")
    with pytest.raises(LockedError, match="now held by bob@desk"):
        first.heartbeat()
    assert LockInfo.from_file(lock.read_text()).holder == "bob@desk"
    assert second.heartbeat().holder == "bob@desk"
    assert second.release() is True and not lock.exists()


# --------------------------------------------------------------------------- release gate


def _deploy(state: State, color: str, release: str | None, result: str, step: str | None = None) -> State:
    return state.with_deploy(color=color, ref="main", sha="abc1234", release=release, who="ci", when=1_760_000_000.0,
                             duration_ms=1, result=result, failed_step=step, error=None if result == "ok" else "x")


@pytest.mark.parametrize(("history", "release", "refused"), [
    ([], "20260101000000-abc1234", None),  # nothing known: an estate the old tool deployed
    ([("20260101000000-abc1234", "ok")], "20260101000000-abc1234", None),
    ([("20260101000000-abc1234", "failed")], "20260101000000-abc1234", "did not finish ok"),
    ([("20260101000000-abc1234", "ok"), ("20260102000000-def5678", "failed")],
     "20260101000000-abc1234", None),  # the failed one was restored away: current is the good one
    ([("20260101000000-abc1234", "ok")], "20260102000000-def5678", "no deploy recorded"),  # killed deploy
    ([("20260102000000-def5678", "ok")], "20251231000000-abc1234", None),  # older than records
])
def test_a_release_whose_deploy_did_not_finish_ok_is_not_promoted(
        history: list[tuple[str, str]], release: str, refused: str | None) -> None:
    state = State.fresh("blue")
    for name, result in history:
        state = _deploy(state, "green", name, result, None if result == "ok" else "build")
    why = journal_model.unfinished_release(state, "green", release)
    assert (why is None) if refused is None else (why is not None and refused in why)


# --------------------------------------------------------------------------- signals


def test_signals_are_held_back_then_delivered_as_an_interrupt() -> None:
    before = signal.getsignal(signal.SIGINT)
    if before is signal.SIG_IGN:  # started in the background: give SIGINT its usual handler
        signal.signal(signal.SIGINT, signal.default_int_handler)
        before = signal.default_int_handler
    done = []
    with pytest.raises(KeyboardInterrupt), signals.signals_deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        done.append("finished")  # the block is not cut short
    assert done == ["finished"]
    with signals.signals_deferred(deliver=False):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is before


def test_a_signal_ignored_at_start_stays_ignored_in_the_block() -> None:
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with signals.signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


# --------------------------------------------------------------------------- config numbers


def _lab() -> dict[str, Any]:
    return copy.deepcopy(read_stack_config(PROJECT_DIR, "lab"))


@pytest.mark.parametrize(("section", "key", "value", "says"), [
    ("app", "healthTimeout", float("nan"), "finite"),
    ("switch", "watchSeconds", float("inf"), "finite"),
    ("app", "keepReleases", float("inf"), "finite"),  # a whole-number field: no internal error
    ("app", "port", 70000, "1-65535"),
    ("haproxy", "publicPort", 0, "at least 1"),
    ("ssh", "connectTimeout", 0, "more than 0"),
    ("ssh", "commandTimeout", -5, "at least 0"),
    ("switch", "maxErrorRatio", 3, "between 0 and 1"),
    ("app", "healthTimeout", "nan", "finite"),
])
def test_config_numbers_are_finite_and_in_range(section: str, key: str, value: Any, says: str) -> None:
    config = _lab()
    config.setdefault(f"bluegreen:{section}", {})[key] = value
    with pytest.raises(ValidationError) as err:
        from_config(config_getter(config), stack="lab", project_dir=PROJECT_DIR)
    problems = {p.key: p.message for p in err.value.problems}
    assert f"{section}.{key}" in problems and says in problems[f"{section}.{key}"], problems
