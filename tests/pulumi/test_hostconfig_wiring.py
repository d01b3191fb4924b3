"""The program configures every host after its container: the resources `pulumi up` applies over SSH."""

from __future__ import annotations

import json
from typing import Any

from bluegreen.hosts.providers import (
    AppEnvProvider,
    BootstrapProvider,
    HaproxyConfigProvider,
    LiveColorRoutingProvider,
    Pm2EcosystemProvider,
    PostgresDatabaseProvider,
)
from bluegreen.hosts.resources import PROVIDERS
from bluegreen.model.config import config_getter, from_config
from bluegreen.model.resources import host_resources
from bluegreen.model.topology import Topology
from bluegreen.render.appenv import HEADER
from tests.pulumi.conftest import PROJECT_DIR, TEST_DB_PASSWORD, PulumiHarness, stack_config, unwrap_secret

DYNAMIC = "pulumi-python:dynamic/bluegreen:"
TOKEN = "root@pam!pulumi=00000000-test-only"


def prod_config() -> dict[str, Any]:
    return {**stack_config("prod"), "proxmoxve:apiToken": TOKEN}


def load_stack_config_topology(stack: str, config: dict[str, Any]) -> Topology:
    return from_config(config_getter(config), stack=stack, project_dir=PROJECT_DIR)


def _types(run: Any) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for reg in run.registrations:
        if reg.type.startswith(DYNAMIC):
            found.setdefault(reg.type[len(DYNAMIC):], []).append(reg)
    return found


def test_prod_registers_host_configuration_for_every_host(pulumi_harness: PulumiHarness) -> None:
    run = pulumi_harness.run("prod", prod_config(), secret_keys=("proxmoxve:apiToken",))
    assert run.error is None, run.error
    found = _types(run)
    assert {k: len(v) for k, v in found.items()} == {
        "Bootstrap": 4, "PostgresDatabase": 1, "HaproxyConfig": 1, "Pm2Ecosystem": 2, "LiveColorRouting": 1,
        "AppEnv": 2}
    routing = found["LiveColorRouting"][0]
    assert routing.urn.endswith("::live-color-routing")
    # The database password only ever travels as a secret: wrapped in the envelope where it is
    # used (the engine encrypts those in state), and nowhere else at all.
    (database,) = found["PostgresDatabase"]
    is_secret, sql = unwrap_secret(database.inputs["sql"])
    assert is_secret and TEST_DB_PASSWORD in sql
    for app_env in found["AppEnv"]:
        is_secret, content = unwrap_secret(app_env.inputs["content"])
        assert is_secret and TEST_DB_PASSWORD in content and content.startswith(HEADER)
        assert app_env.inputs["secret_names"] == ["DATABASE_URL"]  # names only, never values
    others = [r.__dict__ for r in run.registrations if r is not database and r not in found["AppEnv"]]
    assert TEST_DB_PASSWORD not in json.dumps(others, default=str)


def test_the_program_registers_exactly_the_list_the_lab_applies(pulumi_harness: PulumiHarness) -> None:
    """`lab apply`, `plan` and a rebuilt host use `host_resources`; the program registers the same
    resources, by name and provider: they cannot drift apart."""
    run = pulumi_harness.run("prod", prod_config(), secret_keys=("proxmoxve:apiToken",))
    assert run.error is None, run.error
    registered = [(reg.name, reg.type[len(DYNAMIC):]) for reg in run.registrations if reg.type.startswith(DYNAMIC)]
    t = load_stack_config_topology("prod", prod_config())
    kinds = {provider.kind: name for name, provider in (
        ("Bootstrap", BootstrapProvider), ("PostgresDatabase", PostgresDatabaseProvider),
        ("HaproxyConfig", HaproxyConfigProvider), ("LiveColorRouting", LiveColorRoutingProvider),
        ("AppEnv", AppEnvProvider), ("Pm2Ecosystem", Pm2EcosystemProvider))}
    assert set(kinds) == set(PROVIDERS)
    assert sorted(registered) == sorted((r.name, kinds[r.kind]) for r in host_resources(t))
    assert len(registered) == len(set(registered))


def test_missing_database_password_fails_before_any_resource(pulumi_harness: PulumiHarness,
                                                             monkeypatch: Any) -> None:
    monkeypatch.delenv("BLUEGREEN_DB_PASSWORD", raising=False)
    config = {**prod_config(), "__no_db_password__": True}
    run = pulumi_harness.run("prod", config)
    assert run.error is not None and "bluegreen:databasePassword" in str(run.error)
    assert run.registrations == [] or all(r.type.startswith("pulumi:") for r in run.registrations)
