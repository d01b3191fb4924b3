"""Metrics render in Prometheus text format, checked with prometheus_client's own parser."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bluegreen.model.errors import ConfigError
from bluegreen.model.journal import DeployRecord, State, parse_state
from bluegreen.render.metrics import render_metrics

SEED = Path(__file__).resolve().parents[1] / "fixtures" / "state.seed.json"
NOW = 1_757_938_000.5


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def types(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def deploy(color: str, result: str, when: str, duration_ms: int) -> DeployRecord:
    return DeployRecord(color=color, ref="v2", sha="b" * 40, release="20250915120000-bbbbbbb",
                        who="alice@laptop", when=when, duration_ms=duration_ms, result=result,
                        failed_step="migrate" if result == "failed" else None)


def test_the_seed_journal_renders_parseable_metrics() -> None:
    state = (parse_state(SEED.read_text())
             .with_deploy_record(deploy("green", "failed", "2025-09-15T11:00:00Z", 30_500))
             .with_deploy_record(deploy("green", "ok", "2025-09-15T12:00:00Z", 84_250)))
    text = render_metrics(state, live="blue", generated_at=NOW)
    got = samples(text)
    assert got == {
        ("bluegreen_live_color", (("color", "blue"),)): 1,
        ("bluegreen_live_color", (("color", "green"),)): 0,
        ("bluegreen_switch_total", ()): 7,
        ("bluegreen_last_switch_timestamp_seconds", ()): 1_757_883_791,  # 2025-09-14T21:03:11Z
        ("bluegreen_last_deploy_duration_seconds", (("color", "green"),)): 84.25,
        ("bluegreen_last_deploy_success", (("color", "green"),)): 1,
        ("bluegreen_last_deploy_timestamp_seconds", (("color", "green"),)): 1_757_937_600,
        ("bluegreen_deploys_total", (("color", "blue"), ("result", "failed"))): 0,
        ("bluegreen_deploys_total", (("color", "blue"), ("result", "ok"))): 0,
        ("bluegreen_deploys_total", (("color", "green"), ("result", "failed"))): 1,
        ("bluegreen_deploys_total", (("color", "green"), ("result", "ok"))): 1,
        ("bluegreen_metrics_generated_timestamp_seconds", ()): NOW,
    }
    assert types(text) == {
        "bluegreen_live_color": "gauge", "bluegreen_switch": "counter",
        "bluegreen_last_switch_timestamp_seconds": "gauge", "bluegreen_last_deploy_duration_seconds": "gauge",
        "bluegreen_last_deploy_success": "gauge", "bluegreen_last_deploy_timestamp_seconds": "gauge",
        "bluegreen_deploys": "counter", "bluegreen_metrics_generated_timestamp_seconds": "gauge",
    }


def test_every_family_has_help_and_type_lines_and_the_file_ends_with_a_newline() -> None:
    text = render_metrics(parse_state(SEED.read_text()), live="green", generated_at=NOW)
    assert text.endswith("\n")
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#")}
    for name in names:
        assert f"# HELP {name} " in text and f"# TYPE {name} " in text


def test_live_colour_follows_haproxy_not_the_journal() -> None:
    state = parse_state(SEED.read_text())  # the journal says blue
    got = samples(render_metrics(state, live="green", generated_at=NOW))
    assert got[("bluegreen_live_color", (("color", "green"),))] == 1
    assert got[("bluegreen_live_color", (("color", "blue"),))] == 0


def test_a_failed_last_deploy_reports_zero_success() -> None:
    state = State.fresh("blue").with_deploy_record(deploy("blue", "failed", "2025-09-15T11:00:00Z", 1_000))
    got = samples(render_metrics(state, live="blue", generated_at=NOW))
    assert got[("bluegreen_last_deploy_success", (("color", "blue"),))] == 0
    assert ("bluegreen_last_deploy_success", (("color", "green"),)) not in got


def test_a_fresh_journal_reports_only_what_it_knows() -> None:
    text = render_metrics(State.fresh("green"), live="green", generated_at=NOW)
    got = samples(text)
    assert got[("bluegreen_switch_total", ())] == 0
    assert "bluegreen_last_switch_timestamp_seconds" not in text
    assert "bluegreen_last_deploy_duration_seconds" not in text
    assert [v for (name, _), v in got.items() if name == "bluegreen_deploys_total"] == [0, 0, 0, 0]


def test_counts_survive_history_trimming() -> None:
    state = State.fresh("blue")
    for i in range(6):
        state = state.with_deploy_record(deploy("green", "ok", f"2025-09-1{i}T10:00:00Z", 1000), keep=2)
    got = samples(render_metrics(state, live="blue", generated_at=NOW))
    assert got[("bluegreen_deploys_total", (("color", "green"), ("result", "ok")))] == 6


def test_an_unknown_live_colour_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown live colour 'purple'"):
        render_metrics(State.fresh("blue"), live="purple", generated_at=NOW)
