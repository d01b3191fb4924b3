"""Validation of the topology model: both real stack files load; each bad input is reported with
its key path, all problems of a file at once."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bluegreen.model.config import config_getter, from_config, pulumi_getter
from bluegreen.model.errors import ValidationError
from bluegreen.model.stackfile import load_stack, read_stack_config

PROJECT_DIR = Path(__file__).resolve().parents[2]

Mutation = Callable[[dict[str, Any]], None]


def prod_config() -> dict[str, Any]:
    return copy.deepcopy(read_stack_config(PROJECT_DIR, "prod"))


def validate(config: dict[str, Any]) -> list[tuple[str, str]]:
    """The (key, message) of every problem, or [] when the config is valid."""
    try:
        from_config(config_getter(config), stack="prod", project_dir=PROJECT_DIR)
    except ValidationError as err:
        return [(p.key, p.message) for p in err.problems]
    return []


# --------------------------------------------------------------------------- good stacks


def test_prod_stack_is_the_users_plan() -> None:
    t = load_stack(PROJECT_DIR, "prod")
    assert [(c.vmid, c.role, c.color, c.ip) for c in t.containers] == [
        (131, "database", None, "10.92.3.21"),
        (132, "app", "blue", "10.92.3.22"),
        (134, "app", "green", "10.92.3.24"),
        (136, "loadbalancer", None, "10.92.3.26"),
    ]
    assert all(c.existing and c.root == "/" for c in t.containers)
    assert (t.active_color, t.standby_color) == ("blue", "green")
    assert t.proxmox.endpoint == "https://10.92.0.5:8006/"
    assert t.proxmox.template.file_id == "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
    assert t.app.branch == "production-gold-standard"
    assert t.public_url == "https://10.92.3.26:443"


def test_lab_stack_roots_every_host_on_loopback() -> None:
    t = load_stack(PROJECT_DIR, "lab")
    assert [(c.vmid, c.ip, c.root) for c in t.containers] == [
        (131, "127.0.3.21", "/var/tmp/jw-lab/ct131"),
        (132, "127.0.3.22", "/var/tmp/jw-lab/ct132"),
        (134, "127.0.3.24", "/var/tmp/jw-lab/ct134"),
        (136, "127.0.3.26", "/var/tmp/jw-lab/ct136"),
    ]
    assert not any(c.existing for c in t.containers)
    assert t.proxmox.template.url is None
    assert t.app_host("green").path("/opt/app") == "/var/tmp/jw-lab/ct134/opt/app"


@pytest.mark.parametrize("stack", ["prod", "lab"])
def test_the_pulumi_program_and_the_automation_read_the_same_topology(stack: str) -> None:
    # The engine hands the program strings, structured values as JSON text.
    config = read_stack_config(PROJECT_DIR, stack)
    engine = {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}

    def bluegreen_get(key: str) -> str | None:
        return engine.get(f"bluegreen:{key}")

    def other_get(namespace: str, key: str) -> str | None:
        return engine.get(f"{namespace}:{key}")

    via_pulumi = from_config(pulumi_getter(bluegreen_get, other_get), stack=stack, project_dir=PROJECT_DIR)
    assert via_pulumi == load_stack(PROJECT_DIR, stack)


def test_encrypted_values_are_not_read_as_plain_config() -> None:
    get = config_getter({"bluegreen:activeColor": {"secure": "v1:AAAA"}})
    assert get("activeColor") is None


# --------------------------------------------------------------------------- bad input


def _containers(i: int, **changes: Any) -> Mutation:
    return lambda c: c["bluegreen:containers"][i].update(changes)


def _set(key: str, value: Any) -> Mutation:
    return lambda c: c.update({key: value})


def _drop(section: str, key: str) -> Mutation:
    return lambda c: c[section].pop(key)


# id, mutation, expected problems: (key, a phrase of its message), exactly these and no others.
BAD: list[tuple[str, Mutation, list[tuple[str, str]]]] = [
    ("duplicate container id", _containers(1, id=131),
     [("containers[1].id", "131 is used twice (also by containers[0])")]),
    ("duplicate address", _containers(2, ip="10.92.3.22/16"),
     [("containers[2].ip", "10.92.3.22 is used twice (also by containers[1])")]),
    ("duplicate name", _containers(3, name="jw-blue"),
     [("containers[3].name", "'jw-blue' is used twice")]),
    # A role the estate does not know also leaves the estate without a load balancer.
    ("unknown role", _containers(3, role="proxy"),
     [("containers[3].role", "got 'proxy'"),
      ("containers", "expected exactly one loadbalancer container, found 0")]),
    ("unknown colour", _containers(1, color="purple"),
     [("containers[1].color", "got 'purple'"),
      ("containers", "expected exactly one app container of colour blue, found 0")]),
    ("colour on a database", _containers(0, color="blue"),
     [("containers[0].color", "only app containers have a colour (this one is 'database')")]),
    ("app without colour", _containers(2, color=None),
     [("containers[2].color", "is required for an app container"),
      ("containers", "expected exactly one app container of colour green, found 0")]),
    ("activeColor not a colour", _set("bluegreen:activeColor", "purple"),
     [("activeColor", "expected one of blue, green, got 'purple'")]),
    ("activeColor missing", lambda c: c.pop("bluegreen:activeColor"),
     [("activeColor", "is required")]),
    ("bad healthStatus", lambda c: c["bluegreen:app"].update(healthStatus=42),
     [("app.healthStatus", "expected HTTP statuses")]),
    ("relative tlsCert", lambda c: c["bluegreen:haproxy"].update(tlsCert="certs/x.pem"),
     [("haproxy.tlsCert", "expected an absolute path")]),
    ("bad privateAddress", lambda c: c["bluegreen:haproxy"].update(privateAddress="internal"),
     [("haproxy.privateAddress", "expected an IPv4 address")]),
    ("stats auth without hash", lambda c: c["bluegreen:haproxy"].update(statsAuth={"user": "ops"}),
     [("haproxy.statsAuth", "needs both user and passwordHash")]),
    ("stats auth with a password", lambda c: c["bluegreen:haproxy"].update(
        statsAuth={"user": "ops", "passwordHash": "hunter2"}),
     [("haproxy.statsAuth.passwordHash", "expected a crypt(3) hash")]),
    ("missing proxmox.node", _drop("bluegreen:proxmox", "node"), [("proxmox.node", "is required")]),
    ("missing endpoint", lambda c: c.pop("proxmoxve:endpoint"), [("proxmox.endpoint", "is required")]),
    ("missing containers", lambda c: c.pop("bluegreen:containers"), [("containers", "is required")]),
    ("containers not a list", _set("bluegreen:containers", {"id": 131}),
     [("containers", "expected a list, got a mapping")]),
    ("address outside the gateway's subnet", _containers(2, ip="10.93.3.24/16"),
     [("containers[2].ip", "not in the same subnet as the gateway 10.92.0.1")]),
    ("address without prefix", _containers(0, ip="10.92.3.21"),
     [("containers[0].ip", "expected an IPv4 address with prefix")]),
    ("gateway not an address", lambda c: c["bluegreen:proxmox"].update(gateway="10.92.0.300"),
     [("proxmox.gateway", "expected an IPv4 address")]),
    ("disk size not a number", _containers(0, disk="big"),
     [("containers[0].disk", "expected a whole number, got 'big'")]),
    ("disk size not whole", _containers(0, disk=8.5),
     [("containers[0].disk", "expected a whole number, got 8.5")]),
    ("memory below the minimum", _containers(3, memory=8),
     [("containers[3].memory", "must be at least 16")]),
    ("id below 100", _containers(0, id=99), [("containers[0].id", "must be at least 100")]),
    ("existing not a boolean", _containers(0, existing="yes"),
     [("containers[0].existing", "expected true or false")]),
    ("hostname with capitals", _containers(0, name="JW-Postgres"),
     [("containers[0].name", "expected a lowercase hostname")]),
    ("tag with capitals", _containers(0, tags=["Database"]), [("containers[0].tags", "tag 'Database'")]),
    ("unknown container key", _containers(0, ram=4096), [("containers[0].ram", "unknown key")]),
    ("public key not a key", lambda c: c["bluegreen:ssh"].update(publicKeys=["hello"]),
     [("ssh.publicKeys[0]", "expected an OpenSSH public key")]),
    ("switch mode unknown", lambda c: c["bluegreen:switch"].update(mode="yolo"),
     [("switch.mode", "expected one of automation, direct")]),
    ("haproxy ports collide", lambda c: c["bluegreen:haproxy"].update(previewPort=80),
     [("haproxy", "must differ")]),
    ("relative app dir", lambda c: c["bluegreen:app"].update(dir="opt/app"),
     [("app.dir", "expected an absolute path")]),
    ("releases in the working copy", lambda c: c["bluegreen:app"].update(dir="/opt/jw-attendant-scheduler"),
     [("app.dir", "is the working copy")]),
    ("releases nested in the working copy",
     lambda c: c["bluegreen:app"].update(dir="/opt/jw-attendant-scheduler/deploy"),
     [("app.dir", "inside one another")]),
    ("relative working copy", lambda c: c["bluegreen:app"].update(workingCopy="opt/app"),
     [("app.workingCopy", "expected an absolute path")]),
    ("relative git credentials", lambda c: c["bluegreen:app"].update(gitCredentials=".git-credentials"),
     [("app.gitCredentials", "expected an absolute path or ~/")]),
    ("section not a mapping", _set("bluegreen:app", "jw"),
     [("app", "expected a mapping"), ("app.branch", "is required")]),
]


@pytest.mark.parametrize(("mutate", "expected"), [(m, e) for _, m, e in BAD], ids=[i for i, _, _ in BAD])
def test_bad_input_is_reported_by_key(mutate: Mutation, expected: list[tuple[str, str]]) -> None:
    config = prod_config()
    mutate(config)
    problems = validate(config)
    assert sorted(key for key, _ in problems) == sorted(key for key, _ in expected), problems
    for key, phrase in expected:
        assert any(k == key and phrase in message for k, message in problems), (key, phrase, problems)


def test_several_problems_are_reported_at_once_each_with_its_key() -> None:
    config = prod_config()
    _containers(0, disk="big")(config)
    _containers(1, id=131)(config)
    _containers(2, ip="10.93.3.24/16")(config)
    _set("bluegreen:activeColor", "red")(config)
    _drop("bluegreen:app", "branch")(config)
    with pytest.raises(ValidationError) as caught:
        from_config(config_getter(config), stack="prod", project_dir=PROJECT_DIR,
                    source="stacks/Pulumi.prod.yaml")
    err = caught.value
    keys = {p.key for p in err.problems}
    assert keys == {"containers[0].disk", "containers[1].id", "containers[2].ip", "activeColor", "app.branch"}
    message = str(err)
    assert message.startswith("stacks/Pulumi.prod.yaml: 5 problems:")
    for problem in err.problems:
        assert f"  - {problem.key}: {problem.message}" in message


# Empty values and half-given pairs: each must be reported as a problem by its key.
EDGE_CASES: list[tuple[str, Mutation, str]] = [
    ("empty address", _containers(0, ip=""), "containers[0].ip"),
    ("empty hostname", _containers(0, name=""), "containers[0].name"),
    ("empty container list", _set("bluegreen:containers", []), "containers"),
    ("empty container entry", lambda c: c["bluegreen:containers"].append({}), "containers[4].id"),
    ("checksum without algorithm",
     lambda c: c["bluegreen:proxmox"]["template"].update(checksum="0" * 64),
     "proxmox.template.checksumAlgorithm"),
]


@pytest.mark.parametrize(("mutate", "key"), [(m, k) for _, m, k in EDGE_CASES],
                         ids=[i for i, _, _ in EDGE_CASES])
def test_edge_cases_are_reported(mutate: Mutation, key: str) -> None:
    config = prod_config()
    mutate(config)
    assert key in {k for k, _ in validate(config)}


def test_releases_live_beside_the_working_copy() -> None:
    t = from_config(config_getter(prod_config()), stack="prod", project_dir=PROJECT_DIR)
    assert t.app.working_copy == "/opt/jw-attendant-scheduler"
    assert t.app.dir == "/opt/jw-attendant-scheduler-deploy"
    config = prod_config()
    config["bluegreen:app"].update(workingCopy="none")
    assert from_config(config_getter(config), stack="prod", project_dir=PROJECT_DIR).app.working_copy is None
