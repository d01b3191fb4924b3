"""Reading the live colour from a hand-written haproxy.cfg (the estate as it runs today)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluegreen.hosts.haproxy_cfg import backend_colors, color_from_config, routed_backend, served_color
from bluegreen.lab.legacy import haproxy_cfg
from bluegreen.model.stackfile import load_stack

PROJECT = Path(__file__).resolve().parents[2]
LAB = load_stack(PROJECT, "lab")

HAND_WRITTEN = """
global
    stats socket /run/haproxy/admin.sock mode 660 level admin
defaults
    mode http
frontend stats
    bind 127.0.3.26:8404
    default_backend green_app
frontend www
    bind 127.0.3.26:80
    bind 127.0.3.26:443 ssl crt /etc/haproxy/certs/site.pem
    use_backend green_app if { path_beg /beta }
    {route}
backend blue_app
    server b1 127.0.3.22:3000 check
backend green_app
    server g1 127.0.3.24:3000 check  # the other one
backend both
    server b1 127.0.3.22:3000
    server g1 127.0.3.24:3000
"""


@pytest.mark.parametrize(("route", "backend", "color"), [
    ("use_backend blue_app", "blue_app", "blue"),
    ("use_backend green_app", "green_app", "green"),
    ("default_backend blue_app", "blue_app", "blue"),  # the conditional use_backend is not the route
    ("use_backend both", "both", None),  # not one colour: no answer rather than a guess
    ("# use_backend green_app", None, None),  # commented out
])
def test_the_public_frontends_route_gives_the_colour(route: str, backend: str | None, color: str | None) -> None:
    config = HAND_WRITTEN.replace("{route}", route)
    assert routed_backend(config, {80, 443}) == backend
    found, why = color_from_config(config, LAB)
    assert found == color, why


def test_backends_are_mapped_to_colours_by_their_servers_not_their_names() -> None:
    assert backend_colors(HAND_WRITTEN, LAB) == {"blue_app": "blue", "green_app": "green"}


@pytest.mark.parametrize(("before", "after", "expected"), [
    ({"blue_app": 10, "green_app": 4}, {"blue_app": 11, "green_app": 4}, "blue"),
    ({"blue_app": 10, "green_app": 4}, {"blue_app": 10, "green_app": 5}, "green"),
    ({"blue_app": 10, "green_app": 4}, {"blue_app": 11, "green_app": 5}, None),  # both moved
    ({"blue_app": 10, "green_app": 4}, {"blue_app": 10, "green_app": 4}, None),  # nothing counted
    ({"both": 1}, {"both": 2}, None),  # a backend of no single colour
])
def test_the_served_colour_is_the_backend_that_counted_the_request(
        before: dict[str, int], after: dict[str, int], expected: str | None) -> None:
    colors = {"blue_app": "blue", "green_app": "green"}
    assert served_color(before, after, colors) == expected


def test_the_legacy_labs_config_routes_to_its_live_colour() -> None:
    for live in ("blue", "green"):
        assert color_from_config(haproxy_cfg(LAB, live), LAB)[0] == live
