"""shared/.env from the stack and its secrets; the lab's declared colour outside the repository;
re-pinning the host key of a container the run created."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from bluegreen.hosts.hostkeys import repin
from bluegreen.model.config import config_getter, from_config
from bluegreen.model.dotenv import assignment, is_secret, parse_env, secret_key
from bluegreen.model.errors import ConfigError, ValidationError
from bluegreen.model.secrets import default_secret_env, resolve_secrets
from bluegreen.model.sensitive import Sensitive
from bluegreen.model.stackfile import load_stack, set_active_color_in_file, stack_file
from bluegreen.render.appenv import HEADER, managed_as_found, merge_env, render_env, secret_names, secret_values

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
    blue = t.app_host("blue")
    text = render_env(t, blue, Sensitive("p@ss:w/rd"), {"A_SECRET": Sensitive("s3cret\nline")}).reveal()
    lines = text.splitlines()
    db = t.database
    assert lines[0] == HEADER
    assert lines[1] == f"DATABASE_URL=postgresql://{db.user}:p%40ss%3Aw%2Frd@127.0.3.21:5432/{db.name}"
    # What the ecosystem gives the app anyway, so the file says the truth (and a rebuilt host has it).
    assert lines[2:5] == ["PORT=3000", "HOSTNAME=127.0.3.22", "NODE_ENV=production"]
    assert lines[5:] == ['B_PLAIN="x y"', 'A_SECRET="s3cret\\nline"', 'C="q\\"uote\\\\"']
    assert parse_env(text)["A_SECRET"] == "s3cret\nline" and parse_env(text)["C"] == 'q"uote\\'
    # Redaction knows the secret ones (names travel with the content, never values).
    names = secret_names(t)
    assert names == ["DATABASE_URL", "A_SECRET"]
    assert {v.reveal() for v in secret_values(text, names)} == {
        "s3cret\nline", f"postgresql://{db.user}:p%40ss%3Aw%2Frd@127.0.3.21:5432/{db.name}"}


def test_database_url_keeps_the_query_and_host_the_estate_had(tmp_path: Path) -> None:
    config = copy.deepcopy(lab_config())
    config["bluegreen:database"].update(urlQuery="schema=public&connection_limit=10", urlHost="jw-postgres")
    t = from_config(config_getter(config), stack="lab", project_dir=REPO)
    url = parse_env(render_env(t, t.app_host("green"), Sensitive("pw"), {"NEXT_SERVER_ACTIONS_ENCRYPTION_KEY":
                                                                          Sensitive("k")}).reveal())["DATABASE_URL"]
    assert url == (f"postgresql://{t.database.user}:pw@jw-postgres:5432/{t.database.name}"
                   "?schema=public&connection_limit=10")


ESTATE_ENV = """# JW Attendant Scheduler: production settings
DATABASE_URL="postgresql://jw:old@10.0.0.1:5432/db"
NEXTAUTH_SECRET='a b c'
export EMAIL_FROM="Scheduler <noreply@example.invalid>"
PORT=3000
TZ=America/Chicago # the congregation's time zone
"""


def test_merge_keeps_every_line_the_stack_does_not_manage() -> None:
    managed = "\n".join([HEADER, "DATABASE_URL=postgresql://jw:new@10.0.0.2:5432/db", "PORT=3000",
                         'NEXTAUTH_SECRET="a b c"', "HOSTNAME=10.0.0.3"]) + "\n"
    merged = merge_env(ESTATE_ENV, managed)
    lines = merged.splitlines()
    # Comments, order, quoting and unmanaged variables stay as written; a managed value that is
    # already right keeps its line; one that differs is rewritten in place; a missing one is added.
    assert lines[0] == "# JW Attendant Scheduler: production settings"
    assert lines[1] == "DATABASE_URL=postgresql://jw:new@10.0.0.2:5432/db"
    assert lines[2] == "NEXTAUTH_SECRET='a b c'"
    assert lines[3:6] == ESTATE_ENV.splitlines()[3:6]
    assert lines[6:] == ["", HEADER, "HOSTNAME=10.0.0.3"]
    values = parse_env(merged)
    assert values["EMAIL_FROM"] == "Scheduler <noreply@example.invalid>" and values["TZ"] == "America/Chicago"
    assert merge_env(merged, managed) == merged  # a second update changes nothing
    assert merge_env(None, managed) == managed  # a new host: the stack's variables only
    # A refresh reads back what the file says about the managed variables, nothing else.
    assert managed_as_found(merged, managed) == "\n".join(
        [HEADER, "DATABASE_URL=postgresql://jw:new@10.0.0.2:5432/db", "PORT=3000", 'NEXTAUTH_SECRET="a b c"',
         "HOSTNAME=10.0.0.3"]) + "\n"
    assert managed_as_found(ESTATE_ENV, managed) != managed  # drift shows


@pytest.mark.parametrize(("line", "value"), [
    ("A=plain", "plain"), ("export A=x", "x"), ("A = spaced ", "spaced"), ('A="q \\"x\\" \\n"', 'q "x" \n'),
    ("A='single # not a comment'", "single # not a comment"), ("A=v # comment", "v"), ("A=", ""),
    ("A=a#b", "a#b"),
])
def test_dotenv_reads_as_the_ecosystem_does(line: str, value: str) -> None:
    assert parse_env(line + "\n") == {"A": value}
    assert parse_env(assignment("A", value) + "\n") == {"A": value}


@pytest.mark.parametrize(("name", "value", "secret"), [
    ("NEXTAUTH_SECRET", "x", True), ("EMAIL_SERVER_PASSWORD", "x", True), ("RESEND_API_KEY", "x", True),
    ("GITHUB_TOKEN", "x", True), ("JWT_SIGNING_KEY", "x", True), ("NEXTAUTH_URL", "https://a.example", False),
    ("REDIS_URL", "redis://:pw@10.0.0.5:6379", True), ("TZ", "America/Chicago", False),
    ("EMAIL_SERVER_HOST", "smtp.example.invalid", False), ("NO_HEALTH_ROUTE", "1", False),
])
def test_which_variables_are_secrets(name: str, value: str, secret: bool) -> None:
    assert is_secret(name, value) is secret


def test_secret_keys_are_camel_case_and_unique() -> None:
    assert secret_key("NEXTAUTH_SECRET") == "nextauthSecret"
    assert secret_key("EMAIL_SERVER_PASSWORD", ["emailServerPassword"]) == "emailServerPassword2"


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


def test_an_adopted_stack_file_is_the_stack_once_it_exists(tmp_path: Path) -> None:
    from bluegreen.model.stackfile import adopted_stack_file, effective_stack_file

    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True)
    shutil.copy(REPO / "Pulumi.yaml", project)
    adopted = tmp_path / "lab" / "adopted" / "Pulumi.lab.yaml"
    text = (stack_file(REPO, "lab").read_text()
            .replace("/var/tmp/jw-lab/adopted/Pulumi.lab.yaml", str(adopted))
            .replace("/var/tmp/jw-lab/active-color", str(tmp_path / "colour")))
    stack_file(project, "lab").write_text(text)
    assert adopted_stack_file(project, "lab") == adopted
    assert effective_stack_file(project, "lab") == stack_file(project, "lab")  # not adopted yet
    adopted.parent.mkdir(parents=True)
    adopted.write_text(text.replace("healthPath: /api/health", "healthPath: /"))
    assert effective_stack_file(project, "lab") == adopted
    assert load_stack(project, "lab").app.health_path == "/"
    # A switch records the declared colour in the lab's file; neither stack file changes.
    set_active_color_in_file(project, "lab", "green")
    assert (tmp_path / "colour").read_text() == "green\n"
    assert stack_file(project, "lab").read_text() == text
    assert load_stack(project, "lab").active_color == "green"


def test_the_first_write_on_an_unconverted_host_starts_from_the_working_copy_and_leaves_it(tmp_path: Path) -> None:
    """The estate's app runs from the team's working copy and its `.env`: the stack's variables go
    to shared/.env beside the releases, laid over that file; the working copy's file is untouched."""
    import getpass

    from bluegreen.hosts.appenv import observe_env_file, write_env_file
    from bluegreen.hosts.executor import LocalExecutor

    work = tmp_path / "opt/jw-attendant-scheduler"
    work.mkdir(parents=True)
    team = "# the team's settings\nDATABASE_URL=postgresql://u:pw@db/x\nTZ=America/Chicago\n"
    (work / ".env").write_text(team)
    shared = tmp_path / "opt/jw-attendant-scheduler-deploy/shared/.env"
    managed = f"{HEADER}\nPORT=3000\nNODE_ENV=production\n"
    ex = LocalExecutor(host="green")
    done = write_env_file(ex, str(shared), Sensitive(managed), getpass.getuser(), working_copy=str(work))
    assert (work / ".env").read_text() == team
    assert parse_env(shared.read_text()) == {**parse_env(team), "PORT": "3000", "NODE_ENV": "production"}
    assert oct(shared.stat().st_mode & 0o777) == "0o600" and oct(shared.parent.stat().st_mode & 0o777) == "0o700"
    assert done and "starting from" in done[0]
    assert observe_env_file(ex, str(shared), managed, working_copy=str(work)) == managed
    # Converted now: the next write reads and writes shared/.env alone, and changes nothing.
    assert write_env_file(ex, str(shared), Sensitive(managed), getpass.getuser(), working_copy=str(work)) == []
