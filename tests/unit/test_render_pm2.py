from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from bluegreen.model.errors import ConfigError
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import Topology
from bluegreen.render.pm2 import APP_KEEP_ALIVE_TIMEOUT_MS, KILL_TIMEOUT_MS, keep_alive_args, render_ecosystem

PROJECT = Path(__file__).resolve().parents[2]
CASES = [(name, color) for name in ("prod", "lab") for color in ("blue", "green")]


def stack(name: str) -> Topology:
    return load_stack(PROJECT, name)


def parts(js: str) -> tuple[dict[str, Any], str, dict[str, str]]:
    """The app object, the .env path and the managed env, read back out of the rendered JS."""
    app = re.search(r"^const app = (\{.*?^\});$", js, re.M | re.S)
    env = re.search(r"^app\.env = Object\.assign\(readEnvFile\((\".*?\")\), (\{.*?^\})\);$", js, re.M | re.S)
    assert app and env, js
    return json.loads(app.group(1)), json.loads(env.group(1)), json.loads(env.group(2))


@pytest.mark.parametrize(("name", "color"), CASES)
def test_app_definition_follows_the_topology(name: str, color: str) -> None:
    t = stack(name)
    host = t.app_host(color)
    app, env_file, env = parts(render_ecosystem(t, color))
    assert app["name"] == t.app.name
    assert app["cwd"] == host.path(f"{t.app.dir}/current")
    assert app["script"] == t.app.start_script
    assert app["args"][:len(t.app.start_args.split())] == t.app.start_args.split()
    assert app["exec_mode"] == "cluster"
    assert app["instances"] == t.app.instances
    assert app["wait_ready"] is True
    assert app["listen_timeout"] > 0
    assert app["kill_timeout"] == KILL_TIMEOUT_MS
    assert app["merge_logs"] is True
    for key in ("out_file", "error_file"):
        assert app[key].startswith(host.path(f"{t.app.dir}/logs/"))
    assert env_file == host.path(f"{t.app.dir}/shared/.env")
    assert env == {"NODE_ENV": t.app.node_env, "PORT": str(t.app.port), "HOSTNAME": host.ip,
                   "BLUEGREEN_COLOR": color, "KEEP_ALIVE_TIMEOUT": str(APP_KEEP_ALIVE_TIMEOUT_MS)}


def test_lab_paths_are_rooted_per_host() -> None:
    t = stack("lab")
    blue, _, _ = parts(render_ecosystem(t, "blue"))
    green, green_env_file, _ = parts(render_ecosystem(t, "green"))
    assert blue["cwd"] == "/var/tmp/jw-lab/ct132/opt/jw-attendant-scheduler-deploy/current"
    assert green["cwd"] == "/var/tmp/jw-lab/ct134/opt/jw-attendant-scheduler-deploy/current"
    assert green_env_file == "/var/tmp/jw-lab/ct134/opt/jw-attendant-scheduler-deploy/shared/.env"


def test_prod_runs_next_in_cluster_mode_keeping_idle_connections_longer_than_haproxy() -> None:
    app, _, _ = parts(render_ecosystem(stack("prod"), "blue"))
    assert (app["script"], app["args"]) == ("node_modules/next/dist/bin/next",
                                            ["start", "--keepAliveTimeout", str(APP_KEEP_ALIVE_TIMEOUT_MS)])


@pytest.mark.parametrize(("script", "args", "expected"), [
    ("node_modules/next/dist/bin/next", ["start"], ["start", "--keepAliveTimeout", "65000"]),
    ("node_modules/.bin/next", ["start", "-p", "3000"], ["start", "-p", "3000", "--keepAliveTimeout", "65000"]),
    ("node_modules/next/dist/bin/next", ["start", "--keepAliveTimeout", "90000"],
     ["start", "--keepAliveTimeout", "90000"]),  # the stack's own value stays
    ("node_modules/next/dist/bin/next", ["start", "--keepAliveTimeout=90000"], ["start", "--keepAliveTimeout=90000"]),
    ("server.js", [], []),  # reads KEEP_ALIVE_TIMEOUT from the env
    ("node_modules/next/dist/bin/next", ["dev"], ["dev"]),
])
def test_next_start_gets_the_keep_alive_flag(script: str, args: list[str], expected: list[str]) -> None:
    assert APP_KEEP_ALIVE_TIMEOUT_MS == 65_000
    assert keep_alive_args(script, args) == expected


def test_lab_start_args_empty_means_no_args() -> None:
    app, _, _ = parts(render_ecosystem(stack("lab"), "blue"))
    assert app["args"] == []


@pytest.mark.parametrize(("name", "color"), CASES)
def test_no_secret_reaches_the_rendered_file(name: str, color: str, monkeypatch: pytest.MonkeyPatch) -> None:
    t = stack(name)
    secret = "pw-that-must-not-leak-9f3a"
    monkeypatch.setenv(t.database.password_env, secret)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://jw_app:{secret}@db/jw")
    js = render_ecosystem(t, color)
    assert secret not in js
    assert "postgresql://" not in js
    # The .env is read by the JS itself when PM2 loads the file.
    assert "fs.readFileSync(path" in js


def test_output_is_deterministic() -> None:
    assert render_ecosystem(stack("prod"), "green") == render_ecosystem(stack("prod"), "green")


def test_quoted_start_args_become_separate_words() -> None:
    t = stack("prod")
    t = dataclasses.replace(t, app=dataclasses.replace(t.app, start_args="start --keepAliveTimeout '65000'"))
    app, _, _ = parts(render_ecosystem(t, "blue"))
    assert app["args"] == ["start", "--keepAliveTimeout", "65000"]


def test_unbalanced_quotes_in_start_args_are_a_config_error() -> None:
    t = stack("prod")
    t = dataclasses.replace(t, app=dataclasses.replace(t.app, start_args="start 'oops"))
    with pytest.raises(ConfigError, match=r"app\.startArgs"):
        render_ecosystem(t, "blue")


def test_unknown_colour_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no app host of colour 'red'"):
        render_ecosystem(stack("lab"), "red")


def test_app_name_that_would_escape_the_logs_dir_is_refused() -> None:
    t = stack("prod")
    t = dataclasses.replace(t, app=dataclasses.replace(t.app, name="../../etc/x"))
    with pytest.raises(ConfigError, match=r"app\.name"):
        render_ecosystem(t, "blue")
