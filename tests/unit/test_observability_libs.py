"""The library-backed pieces: monitoring/events config in the topology, the ruamel stack-file edit,
lock and dump metrics through prometheus_client, and rich progress (plain lines off a terminal)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bluegreen.faces.terminal import TerminalProgress, status_table
from bluegreen.model.config import config_getter, from_config
from bluegreen.model.errors import ConfigError, ValidationError
from bluegreen.model.journal import State
from bluegreen.model.stackfile import load_stack, read_stack_config, set_active_color_in_file
from bluegreen.model.topology import other_color
from bluegreen.render.metrics import render_dump_metrics, render_lock_metrics, render_metrics, textfile_path

PROJECT = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def with_keys(**extra: Any) -> dict[str, Any]:
    config = read_stack_config(PROJECT, "lab")
    config.update({f"bluegreen:{k}": v for k, v in extra.items()})
    return config


@pytest.mark.parametrize(("extra", "key"), [
    ({"monitoring": {"prometheus": "prometheus:9090"}}, "monitoring.prometheus"),
    ({"monitoring": {"blackboxExporter": "127.0.3.30"}}, "monitoring.blackboxExporter"),
    ({"monitoring": {"scrapeInterval": 0}}, "monitoring.scrapeInterval"),
    ({"events": {"webhooks": {"url": "http://x"}}}, "events.webhooks"),
    ({"events": {"webhooks": [{"name": "a"}]}}, "events.webhooks[0]"),
    ({"events": {"webhooks": [{"url": "ftp://x/y"}]}}, "events.webhooks[0].url"),
    ({"events": {"webhooks": [{"url": {"secure": "v1:abc"}}]}}, "events.webhooks[0].url"),
    ({"events": {"webhooks": [{"url": "http://x", "urlEnv": "X"}]}}, "events.webhooks[0]"),
    ({"events": {"timeout": "soon"}}, "events.timeout"),
    ({"events": {"hooks": {"preDeploy": ["a", "b"]}}}, "events.hooks.preDeploy"),
])
def test_bad_monitoring_and_event_settings_name_their_key(extra: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError) as info:
        from_config(config_getter(with_keys(**extra)), stack="lab", project_dir=PROJECT)
    assert any(p.key == key for p in info.value.problems), [str(p) for p in info.value.problems]


def test_lab_stack_names_its_monitoring_and_a_secret_webhook_url() -> None:
    t = load_stack(PROJECT, "lab")
    assert t.monitoring.prometheus == "127.0.3.30:9090"
    assert [(w.name, w.url, w.url_file) for w in t.events.webhooks] == [
        ("lab-receiver", None, "/var/tmp/jw-lab/secrets/webhook-url")]
    hooks = from_config(config_getter(with_keys(events={"hooks": {"preDeploy": "hooks/pre"}})), stack="lab",
                        project_dir=PROJECT).events
    assert hooks.pre_deploy == str(PROJECT / "hooks" / "pre")


def test_active_colour_edit_changes_one_value_and_keeps_comments_and_layout(tmp_path: Path) -> None:
    (tmp_path / "stacks").mkdir()
    for stack in ("lab", "prod"):
        text = (PROJECT / "stacks" / f"Pulumi.{stack}.yaml").read_text()
        # The lab keeps its declared colour in a file of its own (activeColorFile); without that
        # key its stack file is edited like prod's, which is what this test is about.
        text = "".join(line for line in text.splitlines(keepends=True) if "bluegreen:activeColorFile:" not in line)
        (tmp_path / "stacks" / f"Pulumi.{stack}.yaml").write_text(text)
        before = (tmp_path / "stacks" / f"Pulumi.{stack}.yaml").read_text()
        declared = load_stack(tmp_path, stack).active_color
        flipped = other_color(declared)
        set_active_color_in_file(tmp_path, stack, flipped)
        after = (tmp_path / "stacks" / f"Pulumi.{stack}.yaml").read_text()
        changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
        assert changed == [(f"  bluegreen:activeColor: {declared}", f"  bluegreen:activeColor: {flipped}")]
        assert load_stack(tmp_path, stack).active_color == flipped
        set_active_color_in_file(tmp_path, stack, declared)
        assert (tmp_path / "stacks" / f"Pulumi.{stack}.yaml").read_text() == before


def test_active_colour_edit_refuses_a_file_without_the_key(tmp_path: Path) -> None:
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "Pulumi.x.yaml").write_text("# nothing\nconfig:\n  other: 1\n")
    with pytest.raises(ConfigError, match="no 'bluegreen:activeColor' line"):
        set_active_color_in_file(tmp_path, "x", "green")
    with pytest.raises(ConfigError, match="unknown colour"):
        set_active_color_in_file(tmp_path, "x", "red")


def test_declared_colour_is_exported_next_to_the_live_one() -> None:
    got = samples(render_metrics(State.fresh("blue"), live="green", generated_at=5, declared="blue"))
    assert got[("bluegreen_declared_color", (("color", "blue"),))] == 1
    assert got[("bluegreen_live_color", (("color", "green"),))] == 1
    with pytest.raises(ConfigError, match="declared"):
        render_metrics(State.fresh("blue"), live="green", generated_at=5, declared="red")


def test_lock_metrics_held_and_released() -> None:
    held = samples(render_lock_metrics(held=True, operation="deploy", holder="alice@laptop", since=100,
                                       generated_at=101))
    assert held[("bluegreen_lock_held", (("holder", "alice@laptop"), ("operation", "deploy")))] == 1
    assert held[("bluegreen_lock_acquired_timestamp_seconds", ())] == 100
    free = samples(render_lock_metrics(held=False, operation="deploy", holder="alice@laptop", since=100,
                                       generated_at=101))
    assert free[("bluegreen_lock_held", (("holder", ""), ("operation", "")))] == 0
    assert ("bluegreen_lock_acquired_timestamp_seconds", ()) not in free


def test_dump_metrics_and_their_place_on_the_database_host() -> None:
    got = samples(render_dump_metrics(path="/var/backups/jw/jw_attendant-green-abc.dump", taken_at=42.5))
    assert got == {("bluegreen_db_dump_last_success_timestamp_seconds",
                    (("file", "jw_attendant-green-abc.dump"),)): 42.5}
    t = load_stack(PROJECT, "lab")
    assert textfile_path(t, t.database_host, "bluegreen_dump.prom") == (
        "/var/tmp/jw-lab/ct131/var/lib/prometheus/node-exporter/bluegreen_dump.prom")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_steps(stream: io.StringIO) -> TerminalProgress:
    progress = TerminalProgress(stream)
    with progress.step("build [release]", long=True):
        pass
    progress.note("no pending migrations")
    with pytest.raises(RuntimeError), progress.step("smoke"):
        raise RuntimeError
    return progress


def test_progress_off_a_terminal_is_plain_lines() -> None:
    stream = io.StringIO()
    progress = run_steps(stream)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "  .. build [release]"
    assert lines[1].startswith("      ok build [release] (")
    assert lines[2] == "         no pending migrations"
    assert lines[4].startswith("  FAILED smoke (")
    assert "\x1b" not in stream.getvalue()
    assert progress.summary().splitlines()[0].split() == ["step", "result", "seconds"]


def test_progress_on_a_terminal_is_drawn_by_rich() -> None:
    stream = Tty()
    progress = run_steps(stream)
    text = stream.getvalue()
    assert "\x1b[" in text  # colours and the spinner's cursor control
    assert "build [release]" in text  # markup-looking names are escaped, not swallowed
    assert "FAILED" in text and "smoke" in text
    assert "total" in progress.summary()


def test_status_table_only_on_a_terminal() -> None:
    data = {"stack": "lab", "live": "blue", "declared": "blue", "standby": "green", "drift": False,
            "colors": {c: {"healthy": c == "blue", "reachable": True, "statusCode": 200, "latencyMs": 3.0,
                           "pm2": [{"status": "online"}], "host": f"jw-{c}", "release": "r1", "sha": "abcdef123",
                           "haproxy": {"status": "UP"}, "errors": []} for c in ("blue", "green")}}
    assert status_table(data, io.StringIO()) is None
    table = status_table(data, Tty())
    assert table is not None and "jw-green" in table and "DOWN" in table


def test_active_colour_goes_to_the_overlay_file_when_the_stack_names_one(tmp_path: Path) -> None:
    (tmp_path / "stacks").mkdir()
    text = (PROJECT / "stacks" / "Pulumi.lab.yaml").read_text()
    overlay = tmp_path / "lab-dir" / "active-color"
    text = text.replace("bluegreen:activeColorFile: /var/tmp/jw-lab/active-color",
                        f"bluegreen:activeColorFile: {overlay}")
    (tmp_path / "stacks" / "Pulumi.lab.yaml").write_text(text)
    set_active_color_in_file(tmp_path, "lab", "green")
    assert overlay.read_text() == "green\n"
    assert (tmp_path / "stacks" / "Pulumi.lab.yaml").read_text() == text  # the stack file is untouched
    assert load_stack(tmp_path, "lab").active_color == "green"
