"""The program's side of the lifecycle: what it reads from the load balancer before registering
anything (the colour that serves, the project lock), the rebuild's two runs, the CLI version."""

from __future__ import annotations

from typing import Any

import pytest

from bluegreen.model.lock import LockInfo, LockStatus
from components import live as live_estate

from .conftest import CONTAINER, PulumiHarness, stack_config

TOKEN = "root@pam!pulumi=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
SECRETS = ("proxmoxve:apiToken",)


@pytest.fixture
def prod_config() -> dict[str, Any]:
    return {**stack_config("prod"), "proxmoxve:apiToken": TOKEN}


def held(operation: str, token: str = "a1b2c3") -> LockStatus:
    info = LockInfo(holder="ops@laptop", host="laptop", pid=4242, operation=operation, started=1.0e9,
                    heartbeat=1.0e9 + 5, token=token)
    return LockStatus(info, False, None, 3.0)


def test_the_program_refuses_to_run_while_an_operation_holds_the_lock(pulumi_harness: PulumiHarness,
                                                                      prod_config: dict[str, Any]) -> None:
    run = pulumi_harness.run("prod", prod_config, secret_keys=SECRETS, lock=held("deploy"))
    assert run.error is not None
    message = str(run.error)
    assert "refusing to run while 'deploy' holds the project lock" in message
    assert "ops@laptop" in message and "pid 4242" in message and "bluegreen lock release --force" in message
    assert not [r for r in run.registrations if r.custom]


def test_the_automations_own_run_under_its_lock_goes_ahead(pulumi_harness: PulumiHarness,
                                                           prod_config: dict[str, Any],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(live_estate.LOCK_TOKEN_ENV, "a1b2c3")
    run = pulumi_harness.run("prod", prod_config, secret_keys=SECRETS, lock=held("switch"))
    assert run.error is None, run.error
    monkeypatch.setenv(live_estate.LOCK_TOKEN_ENV, "someone-elses")
    assert pulumi_harness.run("prod", prod_config, secret_keys=SECRETS, lock=held("switch")).error is not None


def rebuilding(config: dict[str, Any], vmid: int = 134) -> dict[str, Any]:
    for entry in config["bluegreen:containers"]:
        if entry["id"] == vmid:
            entry["existing"] = "rebuilding"
    return config


def test_a_rebuild_left_half_way_refuses_a_plain_up(pulumi_harness: PulumiHarness,
                                                    prod_config: dict[str, Any]) -> None:
    run = pulumi_harness.run("prod", rebuilding(prod_config), secret_keys=SECRETS)
    assert run.error is not None and "CT 134 (jw-green) is between adopted and owned" in str(run.error)
    assert "bluegreen rebuild standby --stack prod" in str(run.error)
    assert not [r for r in run.registrations if r.custom]


def test_the_rebuilds_two_runs_declare_release_then_replace(pulumi_harness: PulumiHarness,
                                                            prod_config: dict[str, Any],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    config = rebuilding(prod_config)
    # A stack that downloads its template (prod's is already on the node: it names no URL).
    config["bluegreen:proxmox"]["template"].update(
        url="https://download.proxmox.com/images/system/debian-12-standard_12.7-1_amd64.tar.zst",
        checksum="ab" * 64, checksumAlgorithm="sha512")
    monkeypatch.setenv("BLUEGREEN_REBUILD", "134:release")
    run = pulumi_harness.run("prod", config, secret_keys=SECRETS)
    assert run.error is None, run.error
    green = run.containers()[134]
    # Release: same import id (no re-import), no longer retained, still nothing but the managed fields.
    assert (green.import_id, green.retain_on_delete) == ("pve/134", False)
    assert "memory" in green.ignore_changes and "operatingSystem" in green.ignore_changes
    assert all(r.retain_on_delete for v, r in run.containers().items() if v != 134)
    assert not run.of_type("proxmoxve:download/file:File")

    monkeypatch.setenv("BLUEGREEN_REBUILD", "134:replace")
    run = pulumi_harness.run("prod", config, secret_keys=SECRETS)
    assert run.error is None, run.error
    green = run.containers()[134]
    # Replace: no import (an imported resource that still declares it may not be replaced), the
    # template (downloaded: this stack names its URL) and keys declared, nothing ignored (the standby).
    assert (green.import_id, green.retain_on_delete, green.ignore_changes) == ("", False, [])
    assert green.inputs["operatingSystem"]["templateFileId"].startswith("local:vztmpl/")
    assert run.of_type("proxmoxve:download/file:File")
    mine = [r for r in run.registrations if r.name.startswith("jw-green-")]
    assert {r.name for r in mine} == {"jw-green-bootstrap", "jw-green-app-env", "jw-green-pm2-ecosystem"}
    for reg in mine:
        assert [u.rsplit("::", 1)[-1] for u in reg.replace_with] == ["jw-green"], reg.name
    boot = next(r for r in mine if r.name == "jw-green-bootstrap")
    assert boot.inputs["trust_new_host_key"] is True
    # The other containers stay adopted, their host configuration untied.
    others = [r for r in run.registrations if r.name.startswith(("jw-blue-", "jw-haproxy-", "jw-postgres-"))]
    assert others and all(not r.replace_with for r in others)


def test_a_switch_run_goes_ahead_over_a_pending_rebuild(pulumi_harness: PulumiHarness,
                                                        prod_config: dict[str, Any],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`bluegreen switch --direct` is not the only way out: the automation switch targets the
    routing alone, and the half-rebuilt container is declared without import (no re-import)."""
    monkeypatch.setenv("BLUEGREEN_SWITCH_TO", "green")
    run = pulumi_harness.run("prod", rebuilding(prod_config), secret_keys=SECRETS)
    assert run.error is None, run.error
    assert run.containers()[134].import_id == "" and run.containers()[132].import_id == "pve/132"


def test_a_bad_rebuild_variable_is_a_clear_error(pulumi_harness: PulumiHarness, prod_config: dict[str, Any],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLUEGREEN_REBUILD", "134:smash")
    run = pulumi_harness.run("prod", prod_config, secret_keys=SECRETS)
    assert run.error is not None and "BLUEGREEN_REBUILD='134:smash'" in str(run.error)


def test_the_app_envs_digest_is_secret_in_the_state(pulumi_harness: PulumiHarness,
                                                    prod_config: dict[str, Any]) -> None:
    run = pulumi_harness.run("prod", prod_config, secret_keys=SECRETS)
    envs = [r for r in run.registrations if r.type.endswith(":AppEnv")]
    assert len(envs) == 2
    for reg in envs:
        assert {"content", "content_sha256"} <= set(reg.additional_secret_outputs)


@pytest.mark.parametrize(("answer", "ok"), [(None, True), ("3.251.0", False)])
def test_the_engine_version_is_required_with_a_clear_error(answer: str | None, ok: bool) -> None:
    from bluegreen.model.errors import PulumiError

    asked: list[str] = []

    def require(version_range: str) -> None:
        asked.append(version_range)
        if answer is not None:
            raise Exception(f"Pulumi CLI version {answer} does not satisfy the version range \"{version_range}\"")

    if ok:
        live_estate.require_engine(require)
    else:
        with pytest.raises(PulumiError) as err:
            live_estate.require_engine(require)
        assert "3.251.0" in str(err.value) and "3.252.0 for the import-id fix" in str(err.value)
    assert asked == [">=3.252.0"]


def test_every_container_is_declared_with_the_lifecycle_it_has(pulumi_harness: PulumiHarness,
                                                               prod_config: dict[str, Any]) -> None:
    run = pulumi_harness.run("prod", prod_config, secret_keys=SECRETS)
    assert {v: (r.import_id, r.retain_on_delete) for v, r in run.containers().items()} == {
        131: ("pve/131", True), 132: ("pve/132", True), 134: ("pve/134", True), 136: ("pve/136", True)}
    assert {r.type for r in run.registrations if r.custom} >= {CONTAINER}
