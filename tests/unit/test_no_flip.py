"""The first `up` never flips traffic: the pure rule behind the routing and HAProxy providers."""

from __future__ import annotations

import pytest

from bluegreen.hosts.hostconfig import SWITCH_ENV, map_live_color, refuse_flip
from bluegreen.model.errors import ConfigError


@pytest.mark.parametrize(("live", "declared"), [(None, "blue"), ("blue", "blue"), ("green", "green")])
def test_nothing_served_or_the_same_colour_is_allowed(live: str | None, declared: str) -> None:
    refuse_flip(live, declared, declared_in="stacks/Pulumi.prod.yaml")


def test_another_colour_is_refused_naming_the_file_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SWITCH_ENV, raising=False)
    with pytest.raises(ConfigError) as err:
        refuse_flip("green", "blue", declared_in="stacks/Pulumi.prod.yaml", source="HAProxy's runtime map")
    text = str(err.value)
    assert "serves green (from HAProxy's runtime map)" in text
    assert "stacks/Pulumi.prod.yaml declares bluegreen:activeColor: blue" in text
    assert "`bluegreen:activeColor: green`" in text and "bluegreen switch" in text


def test_a_lab_stack_is_told_to_fix_its_colour_file_not_the_stack_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SWITCH_ENV, raising=False)
    with pytest.raises(ConfigError) as err:
        refuse_flip("green", "blue", declared_in="/var/tmp/jw-lab/active-color")
    text = str(err.value)
    assert "/var/tmp/jw-lab/active-color declares bluegreen:activeColor: blue" in text
    assert "`echo green > /var/tmp/jw-lab/active-color`" in text
    assert "bluegreen adopt" not in text and "stacks/" not in text


def test_only_the_switch_to_that_colour_may_move_traffic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SWITCH_ENV, "blue")
    refuse_flip("green", "blue", declared_in="f")
    monkeypatch.setenv(SWITCH_ENV, "green")  # a switch to another colour does not license this one
    with pytest.raises(ConfigError):
        refuse_flip("green", "blue", declared_in="f")


@pytest.mark.parametrize(("text", "color"), [
    ("live bk_green\npreview bk_blue\n", "green"),
    ("preview bk_green\nlive bk_blue\n", "blue"),
    ("", None),
    ("live somewhere_else\n", None),
])
def test_colour_of_a_map_file(text: str, color: str | None) -> None:
    assert map_live_color(text) == color
