"""shared/.env from the stack and its secrets; the lab's declared colour outside the repository;
re-pinning the host key of a container the run created."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from bluegreen.hosts.appenv import values_of
from bluegreen.hosts.hostkeys import repin
from bluegreen.model.config import config_getter, from_config
from bluegreen.model.errors import ConfigError, ValidationError
from bluegreen.model.secrets import default_secret_env, resolve_secrets
from bluegreen.model.sensitive import Sensitive
from bluegreen.model.stackfile import load_stack, set_active_color_in_file, stack_file
from bluegreen.render.appenv import render_env

REPO = Path(__file__).resolve().parents[2]


def lab_config() -> dict[str, Any]:
    return dict(yaml.safe_load(stack_file(REPO, "lab").read_text())["config"])


def topology(env: Any, tmp_path: Path) -> Any:
    config = copy.deepcopy(lab_config())
    config["bluegreen:app"]["env"] = env
    config["bluegreen:activeColorFile"] = str(tmp_path / "active-color")
    return from_config(config_getter(config), stack="lab", project_dir=REPO)


def test_database_url_and_extra_variables_in_the_stacks_order(tmp_path: Path) -> None:
    t = topology({"B_PLAIN": "x y", "A_SECRET": {"secret": "aKey"}, "C": {"value": 'q"uote\\'}}, tmp_path)
    text = render_env(t, Sensitive("p@ss:w/rd"), {"A_SECRET": Sensitive("s3cret\nline")}).reveal()
    lines = text.splitlines()
    db = t.database
    assert lines[1] == f"DATABASE_URL=postgresql://{db.user}:p%40ss%3Aw%2Frd@127.0.3.21:5432/{db.name}"
    assert lines[2:] == ['B_PLAIN="x y"', 'A_SECRET="s3cret\\nline"', 'C="q\\"uote\\\\"']
    # Redaction knows every value both as written and as the app reads it.
    values = {v.reveal() for v in values_of(text)}
    assert {"s3cret\nline", 'q"uote\\', "x y"} <= values


@pytest.mark.parametrize(("env", "key"), [
    ({"DATABASE_URL": "x"}, "app.env.DATABASE_URL"),
    ({"1BAD": "x"}, "app.env.1BAD"),
    ({"X": {"secret": "a", "value": "b"}}, "app.env.X"),
    ({"X": {"secret": "a b"}}, "app.env.X.secret"),
    ({"X": {"secret": "a", "env": "no-dash"}}, "app.env.X.env"),
    ({"X": {"other": 1}}, "app.env.X"),
    ({"X": True}, "app.env.X"),
    (["X=1"], "app.env"),
])
def test_bad_app_env_names_the_key(env: Any, key: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as err:
        topology(env, tmp_path)
    assert key in [p.key for p in err.value.problems]


def test_secret_lookup_order_config_then_env_then_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "key"
    secret_file.write_text("from-file\n")
    t = topology({"K": {"secret": "myKey", "file": str(secret_file)}}, tmp_path)
    assert default_secret_env("myKey") == "BLUEGREEN_SECRET_MY_KEY"
    assert resolve_secrets(t, environ={})["K"].reveal() == "from-file"
    assert resolve_secrets(t, environ={"BLUEGREEN_SECRET_MY_KEY": "from-env"})["K"].reveal() == "from-env"
    got = resolve_secrets(t, environ={"BLUEGREEN_SECRET_MY_KEY": "from-env"},
                          config_secret=lambda name: "from-config" if name == "myKey" else None)
    assert got["K"].reveal() == "from-config"


def test_a_missing_secret_names_the_key_and_where_it_looked(tmp_path: Path) -> None:
    t = topology({"K": {"secret": "myKey", "env": "MY_VAR", "file": str(tmp_path / "none")}}, tmp_path)
    with pytest.raises(ConfigError) as err:
        resolve_secrets(t, environ={})
    message = str(err.value)
    assert "app.env.K" in message and "$MY_VAR" in message and "bluegreen:myKey" in message


def test_the_lab_records_its_colour_outside_the_repository(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True)
    shutil.copy(REPO / "Pulumi.yaml", project)
    text = stack_file(REPO, "lab").read_text().replace("/var/tmp/jw-lab/active-color", str(tmp_path / "colour"))
    stack_file(project, "lab").write_text(text)
    assert load_stack(project, "lab").active_color == "blue"  # no file yet: the stack's value
    set_active_color_in_file(project, "lab", "green")
    assert stack_file(project, "lab").read_text() == text  # the (tracked) stack file is untouched
    assert (tmp_path / "colour").read_text() == "green\n"
    assert load_stack(project, "lab").active_color == "green"
    (tmp_path / "colour").write_text("purple\n")
    with pytest.raises(ValidationError) as err:
        load_stack(project, "lab")
    assert [p.key for p in err.value.problems] == ["activeColorFile"]


def test_prod_keeps_its_declared_colour_in_the_stack_file(tmp_path: Path) -> None:
    (tmp_path / "stacks").mkdir()
    shutil.copy(stack_file(REPO, "prod"), stack_file(tmp_path, "prod"))
    assert load_stack(tmp_path, "prod").active_color_file is None
    set_active_color_in_file(tmp_path, "prod", "green")
    assert "bluegreen:activeColor: green" in stack_file(tmp_path, "prod").read_text()


def test_repin_replaces_only_the_pin_of_that_host(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("[127.0.3.22]:2222 ssh-ed25519 OLD\n[127.0.3.24]:2222 ssh-ed25519 OTHER\n")
    assert repin(str(known), "127.0.3.22", 2222, "ssh-ed25519", "NEW") is True
    assert known.read_text().splitlines() == ["[127.0.3.24]:2222 ssh-ed25519 OTHER",
                                              "[127.0.3.22]:2222 ssh-ed25519 NEW"]
    assert repin(str(known), "127.0.3.26", 2222, "ssh-ed25519", "LB") is False
