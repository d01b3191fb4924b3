"""One truth for the live colour (issue 21): mismatches named, the settling command, found flips
recorded, and where a rollback goes."""

from __future__ import annotations

import pytest

from bluegreen.model.errors import BlueGreenError, RemoteError, add_problem
from bluegreen.model.journal import State
from bluegreen.model.truth import (
    FOUND_REASON,
    LiveTruth,
    map_file_color,
    rollback_target,
    with_fields,
    with_found_switch,
)


@pytest.mark.parametrize(("truth", "says"), [
    (LiveTruth("green", "green", "green"), []),
    (LiveTruth("green", "blue", "green"), ["the map file names blue: a reload would move live traffic to blue"]),
    (LiveTruth("green", None, "green"), ["no live entry: a reload would route by the configuration's default"]),
    (LiveTruth("green", "green", "blue"), ["the journal says blue is live but HAProxy serves green"]),
    (LiveTruth("green", "blue", "blue"), ["the map file names blue", "the journal says blue"]),
    (LiveTruth("green", None, "green", has_map=False), []),  # a hand-written config: no map to compare
    (LiveTruth("green", "green", None), []),  # an unreadable journal is reported elsewhere
    (LiveTruth(None, "blue", "blue"), []),  # nothing to compare with
])
def test_each_mismatch_is_named_with_what_it_would_cause(truth: LiveTruth, says: list[str]) -> None:
    found = truth.mismatches()
    assert len(found) == len(says)
    for text, expected in zip(found, says, strict=True):
        assert expected in text
    assert truth.consistent == (not says)
    assert truth.resolve_command("prod") == (None if not says else "bluegreen switch --to green --stack prod")


def test_truth_as_json_names_the_resolving_command() -> None:
    data = LiveTruth("blue", "blue", "green").to_json("lab")
    assert data["consistent"] is False and data["resolve"] == "bluegreen switch --to blue --stack lab"
    assert data["runtime"] == "blue" and data["mapFile"] == "blue" and data["journal"] == "green"


@pytest.mark.parametrize(("entries", "color"), [
    ({"live": "bk_green", "preview": "bk_blue"}, "green"), ({"preview": "bk_blue"}, None), (None, None),
    ({"live": "something"}, None),
])
def test_the_map_files_colour(entries: dict[str, str] | None, color: str | None) -> None:
    assert map_file_color(entries) == color


def test_a_found_flip_is_recorded_once_marked_found_and_verified_only_when_seen() -> None:
    state = State.fresh("blue")
    found = with_found_switch(state, "green", who="ops", when=1_700_000_000.0, verified=False)
    top = found.history[0]
    assert found.prod == "green" and found.switch_count == 1
    assert (top["from"], top["to"], top["found"], top["verified"], top["reason"]) == \
        ("blue", "green", True, False, FOUND_REASON)
    assert top["id"]
    assert with_fields(found, verified=True).history[0]["verified"] is True
    assert with_fields(State.fresh("blue"), verified=True) == State.fresh("blue")


def test_rollback_goes_to_the_colour_live_before_the_last_recorded_switch() -> None:
    state = State.fresh("blue").with_switch("green", when=1.0, who="a").with_switch("blue", when=2.0, who="b")
    assert state.prod == "blue"
    # The recorded last switch was green -> blue: rollback means green ...
    assert rollback_target(state, "blue") == "green"
    # ... also when HAProxy already serves green (a rollback that took effect, unrecorded): then
    # the target is live and repeating the rollback is a no-op, never a flip back to blue.
    assert rollback_target(state, "green") == "green"
    assert rollback_target(State.fresh("blue"), "blue") == "green"
    assert rollback_target(None, "green") == "blue"


def test_a_second_problem_is_reported_beside_the_first_never_instead() -> None:
    error = RemoteError("lb", "route traffic to green", "connection lost")
    add_problem(error, "the deployment lock could not be released")
    assert isinstance(error, RemoteError) and error.exit_code == 1
    assert str(error).startswith("lb: route traffic to green failed: connection lost")
    assert str(error).endswith("and the deployment lock could not be released")
    plain = KeyboardInterrupt()
    add_problem(plain, "lock left")
    assert plain.__notes__ == ["lock left"]
    assert not isinstance(plain, BlueGreenError)


class _ReleaseFails:
    """A local executor whose lock release is cut off (the connection to the load balancer lost)."""

    def __init__(self) -> None:
        from bluegreen.hosts.executor import LocalExecutor

        self.inner = LocalExecutor(host="lb")
        self.host = "lb"

    def run(self, command: str, *, step: str, **kwargs: object) -> object:
        if step == "release the deployment lock":
            raise RemoteError("lb", step, "connection lost")
        return self.inner.run(command, step=step, **kwargs)  # type: ignore[arg-type]

    def get(self, path: str, *, step: str) -> bytes | None:
        return self.inner.get(path, step=step)


def test_a_failing_lock_release_is_reported_beside_the_operations_own_error(tmp_path: object) -> None:
    from pathlib import Path

    from bluegreen.hosts.lock import LockManager
    from bluegreen.model.errors import SwitchError

    manager = LockManager(_ReleaseFails(), str(Path(str(tmp_path)) / "lock.json"),  # type: ignore[arg-type]
                          heartbeat_every=60)
    with pytest.raises(SwitchError) as raised, manager.hold("switch"):
        raise SwitchError("the flip failed")
    message = str(raised.value)
    assert message.startswith("the flip failed")
    assert "could not be released" in message and "lock release --force" in message
    # Without an error of its own, the operation finished: the release failure says so.
    manager = LockManager(_ReleaseFails(), str(Path(str(tmp_path)) / "lock2.json"),  # type: ignore[arg-type]
                          heartbeat_every=60)
    with pytest.raises(RemoteError) as released, manager.hold("deploy"):
        pass
    assert "'deploy' itself finished" in str(released.value) and "lock release --force" in str(released.value)


def test_a_deploy_recorded_in_the_side_file_is_folded_in_once() -> None:
    """A deploy that lost its lock appends its record to the side file; the next read folds it."""
    from bluegreen.model.journal import DeployRecord, fold, parse_side

    record = DeployRecord(color="green", ref="main", sha="a" * 40, release="20260101000000-aaaaaaa", who="ops",
                          when="2026-01-01T00:00:00Z", duration_ms=5, result="failed", failed_step="health",
                          error="pre-empted; left green as it is")
    line = '{"id": "d1", ' + __import__("json").dumps(record.to_dict())[1:]
    entries = parse_side(line + "\nnot json\n")
    assert len(entries) == 1
    state = fold(State.fresh("blue"), entries, keep=200)
    assert state.last_deploy("green") == record and state.history[0]["id"] == "d1"
    assert fold(state, entries, keep=200) == state  # folded once
    assert state.deploy_totals() == {"green": {"failed": 1}}
