"""What `pulumi up --replace <container>` (rebuild standby) will do, as the engine is told it.

PVE refuses a second container with the same vmid, so a replace must delete before it creates;
and the host configuration on that container (bootstrap, shared/.env, PM2 ecosystem) must be
replaced with it, or the new container stays blank. The engine orders a replacement from these
resource options; the mock monitor records exactly what the program sends.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.pulumi.conftest import CONTAINER, PulumiHarness, Registration, stack_config, unwrap_secret

DYNAMIC = "pulumi-python:dynamic/bluegreen:"
TOKEN = "root@pam!deploy=00000000-test-only"
ACTIONS_KEY = "actions-key-for-mock-tests-only"
REPLACED_WITH_CONTAINER = ("Bootstrap", "AppEnv", "Pm2Ecosystem", "PostgresDatabase", "HaproxyConfig",
                           "LiveColorRouting")


@pytest.fixture
def lab_config(lab_key: str) -> dict[str, Any]:
    config = stack_config("lab")
    config["bluegreen:ssh"]["publicKeys"] = [f"file:{lab_key}"]
    config["proxmoxve:apiToken"] = TOKEN
    config["bluegreen:nextServerActionsKey"] = ACTIONS_KEY
    config.pop("bluegreen:activeColorFile")
    for container in config["bluegreen:containers"]:
        container.pop("existing", None)  # a new estate: the program creates every container
    return config


def _dynamic(run: Any, kind: str) -> list[Registration]:
    return [r for r in run.registrations if r.type == DYNAMIC + kind]


def _host_of(reg: Registration) -> str:
    return str(reg.inputs["connection"]["address"])


def test_created_containers_delete_before_they_are_replaced(pulumi_harness: PulumiHarness,
                                                            lab_config: dict[str, Any]) -> None:
    run = pulumi_harness.run("lab", lab_config, secret_keys=("proxmoxve:apiToken",))
    assert run.error is None, run.error
    containers = run.containers()
    assert set(containers) == {131, 132, 134, 136}
    assert all(c.delete_before_replace for c in containers.values())
    # The database is still protected: Pulumi refuses to replace (or delete) it at all.
    assert containers[131].protect and not containers[132].protect


def test_host_configuration_is_replaced_with_its_container(pulumi_harness: PulumiHarness,
                                                           lab_config: dict[str, Any]) -> None:
    run = pulumi_harness.run("lab", lab_config, secret_keys=("proxmoxve:apiToken",))
    assert run.error is None, run.error
    urn_of_container = {str(reg.inputs["initialization"]["ipConfigs"][0]["ipv4"]["address"]).split("/")[0]:
                        reg.urn for reg in run.of_type(CONTAINER)}
    for kind in REPLACED_WITH_CONTAINER:
        regs = _dynamic(run, kind)
        assert regs, kind
        for reg in regs:
            # The mock monitor's URNs differ from the SDK's full type chain: compare names.
            wanted = urn_of_container[_host_of(reg)].rsplit("::", 1)[-1]
            assert [u.rsplit("::", 1)[-1] for u in reg.replace_with] == [wanted], (kind, reg.name)
            assert reg.delete_before_replace, (kind, reg.name)
    # What runs on the database and load balancer hosts is tied to those containers too: replacing
    # 136 in a created stack reinstalls HAProxy's config and map, never leaves Debian's default.
    for kind in ("PostgresDatabase", "HaproxyConfig", "LiveColorRouting"):
        regs = _dynamic(run, kind)
        assert regs, kind
        for reg in regs:
            wanted = urn_of_container[_host_of(reg)].rsplit("::", 1)[-1]
            assert [u.rsplit("::", 1)[-1] for u in reg.replace_with] == [wanted], kind
            assert reg.delete_before_replace, kind
    assert {_host_of(r) for r in _dynamic(run, "HaproxyConfig") + _dynamic(run, "LiveColorRouting")} == {"127.0.3.26"}
    # A bootstrap created with its container trusts that container's new host key (only then).
    assert all(r.inputs["trust_new_host_key"] is True for r in _dynamic(run, "Bootstrap"))


def test_app_env_carries_the_stack_secrets_as_a_secret(pulumi_harness: PulumiHarness,
                                                       lab_config: dict[str, Any]) -> None:
    run = pulumi_harness.run("lab", lab_config, secret_keys=("proxmoxve:apiToken",))
    assert run.error is None, run.error
    envs = _dynamic(run, "AppEnv")
    assert sorted(_host_of(r) for r in envs) == ["127.0.3.22", "127.0.3.24"]
    for reg in envs:
        is_secret, content = unwrap_secret(reg.inputs["content"])
        assert is_secret
        assert f"NEXT_SERVER_ACTIONS_ENCRYPTION_KEY={ACTIONS_KEY}\n" in content
        db = lab_config["bluegreen:database"]
        assert f"DATABASE_URL=postgresql://{db['user']}:" in content and f"@127.0.3.21:5432/{db['name']}\n" in content
        assert reg.inputs["path"].endswith("/opt/jw-attendant-scheduler-deploy/shared/.env")


def test_a_missing_app_secret_fails_before_anything_is_registered(pulumi_harness: PulumiHarness,
                                                                  lab_config: dict[str, Any],
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Any) -> None:
    lab_config["bluegreen:app"]["env"]["NEXT_SERVER_ACTIONS_ENCRYPTION_KEY"] = {
        "secret": "notConfiguredKey", "file": str(tmp_path / "none")}
    monkeypatch.delenv("BLUEGREEN_SECRET_NOT_CONFIGURED_KEY", raising=False)
    run = pulumi_harness.run("lab", lab_config, secret_keys=("proxmoxve:apiToken",))
    assert run.error is not None
    assert "app.env.NEXT_SERVER_ACTIONS_ENCRYPTION_KEY" in str(run.error)
    assert not [r for r in run.registrations if r.custom]


def test_adopted_containers_are_not_tied_and_never_trusted_on_first_use(pulumi_harness: PulumiHarness) -> None:
    config = {**stack_config("prod"), "proxmoxve:apiToken": TOKEN}
    run = pulumi_harness.run("prod", config, secret_keys=("proxmoxve:apiToken",))
    assert run.error is None, run.error
    for kind in REPLACED_WITH_CONTAINER:
        assert all(not r.replace_with for r in _dynamic(run, kind)), kind
    assert all(r.inputs["trust_new_host_key"] is False for r in _dynamic(run, "Bootstrap"))


def test_serving_hosts_reboots_are_held_back_unless_allowed(pulumi_harness: PulumiHarness,
                                                            lab_config: dict[str, Any]) -> None:
    run = pulumi_harness.run("lab", lab_config, secret_keys=("proxmoxve:apiToken",))
    frozen = {vmid: reg.ignore_changes for vmid, reg in run.containers().items()}
    assert frozen[134] == []  # the standby (green)
    for vmid in (131, 132, 136):  # the database, the live colour, the load balancer
        assert {"memory", "initialization", "networkInterfaces", "operatingSystem"} <= set(frozen[vmid]), vmid
    lab_config["bluegreen:allowDisruption"] = ["live", "loadbalancer"]
    run = pulumi_harness.run("lab", lab_config, secret_keys=("proxmoxve:apiToken",))
    frozen = {vmid: reg.ignore_changes for vmid, reg in run.containers().items()}
    assert frozen[132] == frozen[136] == [] and "memory" in frozen[131]


def test_protection_follows_the_colour_haproxy_serves_not_the_declared_one(
        pulumi_harness: PulumiHarness, lab_config: dict[str, Any]) -> None:
    """After an emergency flip the stack still declares blue while green serves."""
    run = pulumi_harness.run("lab", lab_config, secret_keys=("proxmoxve:apiToken",), live="green")
    assert run.error is None, run.error
    frozen = {vmid: reg.ignore_changes for vmid, reg in run.containers().items()}
    assert frozen[132] == [] and "memory" in frozen[134]
    # The live colour's PM2 ecosystem is never reloaded in place: that is green's now.
    reload = {_host_of(r): r.inputs["reload"] for r in _dynamic(run, "Pm2Ecosystem")}
    assert reload == {"127.0.3.22": True, "127.0.3.24": False}
    # The routing still declares blue: only `bluegreen switch` moves traffic (providers.refuse_flip).
    assert [r.inputs["live_color"] for r in _dynamic(run, "LiveColorRouting")] == ["blue"]


def test_an_unreadable_live_colour_protects_both_colours(pulumi_harness: PulumiHarness,
                                                         lab_config: dict[str, Any]) -> None:
    run = pulumi_harness.run("lab", lab_config, secret_keys=("proxmoxve:apiToken",), live=None)
    assert run.error is None, run.error
    assert all("memory" in reg.ignore_changes for reg in run.containers().values())
