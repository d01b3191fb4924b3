"""The estate's own tools recognised from their text: the switch script and the old MCP server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bluegreen.hosts.legacy_switch import render_thin_script
from bluegreen.lab.legacy import OLD_MCP_SERVER_JS, STATE_SCRIPT_TEXT, old_mcp_config
from bluegreen.model.errors import ConfigError
from bluegreen.model.legacy import classify_script, describe_server_js, old_mcp_servers, replacement_entry
from bluegreen.model.stackfile import load_stack
from bluegreen.render.bootstrap import render_state_script

PROJECT = Path(__file__).resolve().parents[2]


def test_the_estates_switch_script_is_recognised_and_what_it_does() -> None:
    found = classify_script(STATE_SCRIPT_TEXT % {"root": "/", "master": "/run/haproxy-master.sock"})
    assert found.kind == "estate" and found.dangerous
    assert found.commands == ("get", "set", "history", "switch")
    assert "rewrites use_backend in haproxy.cfg" in found.does and "reloads HAProxy" in found.does


def test_bluegreens_own_scripts_are_recognised() -> None:
    t = load_stack(PROJECT, "lab")
    boot = classify_script(render_state_script(t, t.load_balancer))
    assert boot.kind == "bootstrap" and not boot.dangerous
    thin = classify_script(render_thin_script(t))
    assert thin.kind == "thin" and not thin.dangerous
    assert {"get", "set", "history", "switch"} <= set(thin.commands)


def test_the_thin_script_is_valid_bash_for_both_stacks() -> None:
    for stack in ("lab", "prod"):
        script = render_thin_script(load_stack(PROJECT, stack))
        assert subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True).returncode == 0


def test_the_old_mcp_server_is_found_in_an_ide_config_and_ours_is_not() -> None:
    config = old_mcp_config("/Users/ops/mcp-blue-green/server.js", "127.0.3.26")
    config["mcpServers"]["bluegreen-prod"] = replacement_entry(python="/repo/.venv/bin/python",
                                                               project_dir="/repo", stack="prod")
    [entry] = old_mcp_servers(json.dumps(config))
    assert (entry.name, entry.command, entry.server_js) == \
        ("blue-green-deployment", "node", "/Users/ops/mcp-blue-green/server.js")
    assert old_mcp_servers(json.dumps({"mcpServers": {}})) == [] and old_mcp_servers("{}") == []


@pytest.mark.parametrize("text,message", [("{nope", "not valid JSON"), ('{"mcpServers": []}', "not an object")])
def test_a_broken_ide_config_is_named(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        old_mcp_servers(text, "mcp_config.json")


def test_how_the_old_server_switches_is_read_from_its_source() -> None:
    assert describe_server_js(OLD_MCP_SERVER_JS) == ("switches through jw-deployment-state.sh on the load balancer",)
    direct = "fs.writeFileSync(cfg, text.replace(/use_backend \\w+/, `use_backend ${to}_servers`))"
    assert describe_server_js(direct) == ("rewrites use_backend in haproxy.cfg itself",)
