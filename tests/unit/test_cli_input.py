"""Bad input: exit code 2, one clear message per problem, no traceback, nothing contacted."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.project_copy import project_copy

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return project_copy(tmp_path)


def bluegreen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bluegreen", "--cwd", str(cwd), *args],
                          capture_output=True, text=True, timeout=60)


def test_config_check_json_describes_the_estate(project: Path) -> None:
    from tests.unit.test_placeholders import fill_prod_placeholders

    fill_prod_placeholders(project)
    out = bluegreen("config", "check", "--stack", "prod", "--json", cwd=project)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [(c["vmid"], c["ip"], c["role"]) for c in data["containers"]] == [
        (131, "10.92.3.21/16", "database"), (132, "10.92.3.22/16", "app"),
        (134, "10.92.3.24/16", "app"), (136, "10.92.3.26/16", "loadbalancer")]
    assert data["activeColor"] == "blue"


def test_unknown_stack_exits_2(project: Path) -> None:
    out = bluegreen("status", "--stack", "staging", cwd=project)
    assert out.returncode == 2
    assert "unknown stack 'staging'" in out.stderr and "lab, prod" in out.stderr
    assert "Traceback" not in out.stderr


def test_malformed_stack_lists_every_problem(project: Path) -> None:
    path = project / "stacks" / "Pulumi.lab.yaml"
    text = path.read_text()
    text = re.sub(r"bluegreen:activeColor: \w+", "bluegreen:activeColor: purple", text)
    text = text.replace("ip: 127.0.3.24/24", "ip: 127.0.3.22/24")
    text = text.replace("cores: 1,", "cores: many,")
    path.write_text(text)
    out = bluegreen("config", "check", "--stack", "lab", "--json", cwd=project)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "activeColor: expected one of blue, green, got 'purple'" in out.stderr
    assert "containers[2].ip: 127.0.3.22 is used twice" in out.stderr
    assert "containers[3].cores: expected a whole number, got 'many'" in out.stderr
    assert json.loads(out.stdout)["ok"] is False


def test_not_yaml_names_the_line(project: Path) -> None:
    (project / "stacks" / "Pulumi.lab.yaml").write_text("config:\n  a: [unclosed\n")
    out = bluegreen("deploy", "--stack", "lab", "--yes", cwd=project)
    assert out.returncode == 2
    assert "not valid YAML at line" in out.stderr


def test_not_a_project(tmp_path: Path) -> None:
    out = bluegreen("status", "--stack", "lab", cwd=tmp_path)
    assert out.returncode == 2 and "not a Pulumi project" in out.stderr


def test_usage_errors_exit_2(project: Path) -> None:
    out = bluegreen("history", "--limit", "many", cwd=project)
    assert out.returncode == 2
    out = bluegreen("frobnicate", cwd=project)
    assert out.returncode == 2


def test_invalid_ref_exits_2_before_contacting_anything(project: Path) -> None:
    # The prod stack would be contacted only after confirmation; the plan needs HAProxy, so use a
    # stack whose load balancer is an unused loopback address: nothing answers, nothing leaves.
    path = project / "stacks" / "Pulumi.lab.yaml"
    path.write_text(path.read_text().replace("127.0.3.", "127.0.9."))
    out = bluegreen("deploy", "--stack", "lab", "--ref=-rf", cwd=project)
    assert out.returncode == 2 and "invalid git ref" in out.stderr


def test_plan_is_offline_and_lists_pulumi_up_and_deploy_steps(project: Path) -> None:
    from tests.unit.test_placeholders import fill_prod_placeholders

    fill_prod_placeholders(project)
    out = bluegreen("plan", "green", "--stack", "prod", "--json", cwd=project)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert list(plan) == ["green (134, 10.92.3.24)"]
    steps = [item["step"] for item in plan["green (134, 10.92.3.24)"]]
    assert any("ecosystem" in s.lower() for s in steps)
    assert next(s for s in steps if s.startswith("deploy:")) == "deploy: fetch the ref"
    assert "db-pass" not in out.stdout and "PASSWORD E'" not in out.stdout


@pytest.mark.parametrize("content, message", [
    (None, "--approved-plan"),
    ("{not json", "not JSON"),
    ('{"ref": "main", "sha": "abc", "pendingMigrations": []}', "full commit sha"),
    ('{"ref": "other", "sha": "' + "a" * 40 + '", "pendingMigrations": []}', "differs from the approved plan"),
])
def test_a_bad_approved_plan_exits_2_before_contacting_anything(project: Path, content: str | None,
                                                                 message: str) -> None:
    plan = project / "approved.json"
    if content is not None:
        plan.write_text(content)
    # The prod stack's hosts are 10.92.x.x: reaching them would be a bug; bad input stops first.
    out = bluegreen("deploy", "--stack", "prod", "--ref", "main", "--approved-plan", str(plan), "--yes",
                    cwd=project)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr


def test_db_commands_parse(project: Path) -> None:
    assert bluegreen("db", "--stack", "lab", cwd=project).returncode == 2
    out = bluegreen("db", "nonsense", "--stack", "lab", cwd=project)
    assert out.returncode == 2 and "invalid choice" in out.stderr
    helped = bluegreen("rollback", "--help", cwd=project)
    assert "--with-database" in helped.stdout
