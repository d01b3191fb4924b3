"""The prod stack names only what the estate has; what is missing is asked for by key (exit 2)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bluegreen.model.errors import ValidationError
from bluegreen.model.placeholders import require_complete, unset
from bluegreen.model.stackfile import load_stack
from bluegreen.ops.deploy import deploy, plan_deploy
from bluegreen.ops.estate import Estate
from tests.project_copy import project_copy

PROJECT = Path(__file__).resolve().parents[2]

# What `bluegreen adopt` (or the operator) writes in, by the keys config check names.
FILLED = {
    "app.repo": ("bluegreen:app", "repo", "git@example.invalid:org/app.git"),
    "app.deployUser": ("bluegreen:app", "deployUser", "root"),
    "database.user": ("bluegreen:database", "user", "jw_reader"),
}


def fill_prod_placeholders(project: Path, *, leave: str | None = None) -> None:
    path = project / "stacks" / "Pulumi.prod.yaml"
    data = yaml.safe_load(path.read_text())
    for key, (section, field, value) in FILLED.items():
        if key != leave:
            data["config"][section][field] = value
    path.write_text(yaml.safe_dump(data))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return project_copy(tmp_path)


def test_prod_stack_names_the_estate_and_invents_nothing() -> None:
    text = (PROJECT / "stacks" / "Pulumi.prod.yaml").read_text()
    t = load_stack(PROJECT, "prod")
    assert t.journal.path == "/var/lib/jw-deployment/state.json"
    assert Path(t.journal.lock_path).parent == Path(t.journal.path).parent
    assert t.database.name == "jw_attendant_scheduler_staging"
    assert t.haproxy.tls_cert == "/etc/haproxy/certs/attendant.cloudigan.net.pem"
    assert t.public_url == "https://10.92.3.26:443" and t.tls_server_name == "attendant.cloudigan.net"
    assert t.app.health_path == "/" and str(t.app.health_status) == "200-399"  # a redirect is healthy
    assert t.app.deploy_user == "" and t.haproxy.private_address is None  # nothing invented
    assert "ssh-ed25519" not in text and "github.com" not in text
    assert t.app.repo == "" and t.database.user == "" and t.ssh.public_keys == ()


def test_prod_stack_as_shipped_lists_every_missing_value() -> None:
    t = load_stack(PROJECT, "prod")
    assert [u.key for u in unset(t)] == list(FILLED)
    with pytest.raises(ValidationError) as err:
        require_complete(t)
    assert err.value.exit_code == 2
    for key in FILLED:
        assert f"set {key}: " in str(err.value)
    assert "bluegreen adopt --stack prod" in str(err.value)


@pytest.mark.parametrize("key", list(FILLED))
def test_config_check_names_each_placeholder_left_unset(project: Path, key: str) -> None:
    fill_prod_placeholders(project, leave=key)
    out = subprocess.run([sys.executable, "-m", "bluegreen", "--cwd", str(project), "config", "check",
                          "--stack", "prod"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"set {key}: " in out.stderr
    others = [k for k in FILLED if k != key]
    assert not any(f"set {k}:" in out.stderr for k in others)
    assert "Traceback" not in out.stderr


def test_config_check_passes_once_everything_is_set(project: Path) -> None:
    fill_prod_placeholders(project)
    out = subprocess.run([sys.executable, "-m", "bluegreen", "--cwd", str(project), "config", "check",
                          "--stack", "prod"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "https://10.92.3.26:443" in out.stdout + out.stderr


def test_a_container_to_be_created_needs_a_public_key() -> None:
    t = load_stack(PROJECT, "prod")
    t = dataclasses.replace(t, containers=tuple(
        dataclasses.replace(c, existing=c.vmid != 134) for c in t.containers))
    keys = [u for u in unset(t) if u.key == "ssh.publicKeys"]
    assert len(keys) == 1 and "134" in keys[0].message


def test_lab_stack_is_complete() -> None:
    assert unset(load_stack(PROJECT, "lab")) == []


def test_a_deploy_with_values_missing_stops_before_contacting_any_host() -> None:
    contacted: list[str] = []

    def no_hosts(container: object) -> object:
        contacted.append(str(container))
        raise AssertionError("a host was contacted")

    estate = Estate(load_stack(PROJECT, "prod"), executor_factory=no_hosts)  # type: ignore[arg-type]
    for attempt in (plan_deploy, deploy):
        with pytest.raises(ValidationError) as err:
            attempt(estate)
        assert "set app.repo: " in str(err.value)
    assert contacted == []
