"""`__main__.py` run for real against Pulumi's mock engine, for both stack files.

Every assertion is on what the engine received: resource inputs, resource options, the provider
each resource is bound to, the outputs components register, the stack's exports.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pulumi_proxmoxve import ContainerLegacyArgs

from .conftest import (
    CONTAINER,
    DOWNLOAD,
    PROVIDER,
    ProgramRun,
    PulumiHarness,
    stack_config,
    unwrap_secret,
)

# Fake credentials: the mock engine is the only thing that ever sees them.
PROD_TOKEN = "root@pam!pulumi=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
LAB_TOKEN_SECRET = "9c8b7a65-4321-4fed-8cba-0123456789ab"
PROD_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHzq3J0vnDxc5vBqS1BvX3t5v8uQ0Yk6c2Hc0Jm4Zs6E "
            "deploy@jw-attendant")
TEMPLATE_FILE = "debian-12-standard_12.7-1_amd64.tar.zst"
TEMPLATE_ID = f"local:vztmpl/{TEMPLATE_FILE}"
TEMPLATE_URL = f"https://download.proxmox.com/images/system/{TEMPLATE_FILE}"
TEMPLATE_CHECKSUM = {"checksum": "ab" * 64, "checksumAlgorithm": "sha512"}
# The provider reads back neither vmId nor the timeouts after an import (bpg issues 2141, 3110).
TIMEOUTS = ["timeoutClone", "timeoutCreate", "timeoutDelete", "timeoutStart", "timeoutUpdate"]
# Every input of the installed provider's ContainerLegacy, camelCase as the engine sees it.
ALL_INPUTS = sorted(
    re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
    for name in inspect.signature(ContainerLegacyArgs.__init__).parameters if name not in ("self", "__self__"))
# An adopted container changes nothing on the first up whatever Read returns: all of them ignored
# but the three the program manages in place (no reboot: bpg container.go containerUpdate).
ADOPTED_IGNORES = [name for name in ALL_INPUTS if name not in ("protection", "startOnBoot", "startup")]
# Held back on a serving container the program owns (the live colour, the database, the load
# balancer): every input whose change reboots, replaces or stops it, i.e. all but the in-place
# ones (cpu, description, features, hook script, protection, start on boot, startup, tags) and the
# provider-local timeouts and waitForIp.
FROZEN = [name for name in ALL_INPUTS if name not in (
    "cpu", "description", "features", "hookScriptFileId", "protection", "startOnBoot", "startup", "tags",
    *TIMEOUTS, "waitForIp")]
SECRETS = ("proxmoxve:apiToken",)

# vmid -> (hostname, address, cores, memory, swap, disk, role type, startup order, tags)
PROD_HOSTS: dict[int, tuple[str, str, int, int, int, int, str, int, list[str]]] = {
    131: ("jw-postgres", "10.92.3.21/16", 2, 2048, 512, 32, "bluegreen:estate:DatabaseHost", 1,
          ["database", "jw-attendant"]),
    132: ("jw-blue", "10.92.3.22/16", 2, 2048, 512, 16, "bluegreen:estate:AppHost", 2,
          ["app", "blue", "jw-attendant"]),
    134: ("jw-green", "10.92.3.24/16", 2, 2048, 512, 16, "bluegreen:estate:AppHost", 2,
          ["app", "green", "jw-attendant"]),
    136: ("jw-haproxy", "10.92.3.26/16", 1, 512, 256, 8, "bluegreen:estate:LoadBalancer", 3,
          ["haproxy", "jw-attendant"]),
}


@pytest.fixture(autouse=True)
def no_token_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The program falls back to this variable; a developer's own must not change what tests see.
    monkeypatch.delenv("PROXMOX_VE_API_TOKEN", raising=False)


LAB_ACTIONS_KEY = "actions-key-for-mock-tests-only"


@pytest.fixture
def prod_config() -> dict[str, Any]:
    config = stack_config("prod")
    config["proxmoxve:apiToken"] = PROD_TOKEN
    # The shipped stack names no key (all four containers exist); tests set one as an operator would.
    config["bluegreen:ssh"]["publicKeys"] = [PROD_KEY]
    return config


@pytest.fixture
def lab_config(lab_key: str) -> dict[str, Any]:
    config = stack_config("lab")
    config["bluegreen:ssh"]["publicKeys"] = [f"file:{lab_key}"]
    config["proxmoxve:apiToken"] = f"root@pam!deploy={LAB_TOKEN_SECRET}"
    config["bluegreen:nextServerActionsKey"] = LAB_ACTIONS_KEY  # app.env's secret reference
    config.pop("bluegreen:activeColorFile")  # the stack's declared colour, not a running lab's
    return config


def run_ok(harness: PulumiHarness, stack: str, config: dict[str, Any]) -> ProgramRun:
    run = harness.run(stack, config, secret_keys=SECRETS)
    assert run.error is None, f"the program failed: {run.error}"
    return run


def assert_nothing_registered(run: ProgramRun) -> None:
    assert run.registrations == []
    assert run.resource_args == []


# --------------------------------------------------------------------------- prod


def test_prod_declares_exactly_the_four_containers_of_the_plan(pulumi_harness: PulumiHarness,
                                                               prod_config: dict[str, Any]) -> None:
    run = run_ok(pulumi_harness, "prod", prod_config)
    containers = run.containers()
    assert sorted(containers) == [131, 132, 134, 136]
    assert len(run.of_type(CONTAINER)) == 4

    for vmid, (hostname, address, cores, memory, swap, disk, _, order, tags) in PROD_HOSTS.items():
        inputs = containers[vmid].inputs
        assert inputs["nodeName"] == "pve"
        assert inputs["vmId"] == vmid
        assert inputs["initialization"]["hostname"] == hostname
        assert inputs["initialization"]["ipConfigs"] == [
            {"ipv4": {"address": address, "gateway": "10.92.0.1"}}]
        assert inputs["initialization"]["dns"] == {"servers": ["10.92.0.1"], "domain": "cloudigan.net"}
        assert inputs["initialization"]["userAccount"] == {"keys": [PROD_KEY]}
        assert inputs["cpu"] == {"cores": cores}
        assert inputs["memory"] == {"dedicated": memory, "swap": swap}
        assert inputs["disk"] == {"datastoreId": "local-lvm", "size": disk}
        assert inputs["networkInterfaces"] == [{"name": "eth0", "bridge": "vmbr0", "firewall": True}]
        assert inputs["operatingSystem"] == {"templateFileId": TEMPLATE_ID, "type": "debian"}
        assert inputs["features"] == {"nesting": True}
        assert inputs["unprivileged"] is True
        assert inputs["started"] is True
        assert inputs["startOnBoot"] is True
        assert inputs["startup"]["order"] == order
        assert inputs["tags"] == tags
        assert inputs["protection"] is (vmid == 131)


def test_startup_order_starts_the_database_first_and_the_load_balancer_last(
        pulumi_harness: PulumiHarness, prod_config: dict[str, Any]) -> None:
    containers = run_ok(pulumi_harness, "prod", prod_config).containers()
    order = {vmid: reg.inputs["startup"]["order"] for vmid, reg in containers.items()}
    assert order[131] < order[132] == order[134] < order[136]
    # The database gets time to accept connections before the apps boot.
    assert containers[131].inputs["startup"]["upDelay"] > 0


def test_prod_adopts_the_running_containers_instead_of_creating_them(
        pulumi_harness: PulumiHarness, prod_config: dict[str, Any]) -> None:
    containers = run_ok(pulumi_harness, "prod", prod_config).containers()
    for vmid, reg in containers.items():
        assert reg.import_id == f"pve/{vmid}"
        # Top-level names only: the engine resets each one to what Read returned, present or not
        # (pulumi/pulumi sdk/go/common/resource/properties_path.go, PropertyPath.Reset).
        assert sorted(reg.ignore_changes) == ADOPTED_IGNORES
        assert reg.retain_on_delete is True
    assert {vmid for vmid, reg in containers.items() if reg.protect} == {131}


def test_prod_downloads_no_template_when_every_container_is_adopted(
        pulumi_harness: PulumiHarness, prod_config: dict[str, Any]) -> None:
    run = run_ok(pulumi_harness, "prod", prod_config)
    assert run.of_type(DOWNLOAD) == []
    assert run.of_type("bluegreen:proxmox:ContainerTemplate") == []


def test_every_resource_goes_through_the_explicit_provider_with_a_secret_token(
        pulumi_harness: PulumiHarness, prod_config: dict[str, Any]) -> None:
    run = run_ok(pulumi_harness, "prod", prod_config)
    [provider] = run.of_type(PROVIDER)
    assert provider.inputs["endpoint"] == "https://10.92.0.5:8006/"
    assert provider.inputs["insecure"] == "false"  # verified by default (docs/SECURITY.md)
    assert unwrap_secret(provider.inputs["apiToken"]) == (True, PROD_TOKEN)

    provider_ref = f"{provider.urn}::{provider.id}"
    # Host configuration (dynamic providers over SSH) does not talk to Proxmox.
    custom = [r for r in run.registrations
              if r.custom and r.type != PROVIDER and not r.type.startswith("pulumi-python:dynamic")]
    assert custom, "no resources registered"
    assert all(r.provider == provider_ref for r in custom)


def test_the_token_never_reaches_the_stack_outputs(pulumi_harness: PulumiHarness,
                                                   prod_config: dict[str, Any]) -> None:
    run = run_ok(pulumi_harness, "prod", prod_config)
    secret = PROD_TOKEN.split("=", 1)[1]
    assert secret not in json.dumps(run.exports)
    assert all(secret not in json.dumps(r.outputs) for r in run.registrations)


def test_prod_stack_outputs(pulumi_harness: PulumiHarness, prod_config: dict[str, Any]) -> None:
    exports = run_ok(pulumi_harness, "prod", prod_config).exports
    assert exports == {
        "containers": {
            "jw-postgres": {"vmid": 131, "ip": "10.92.3.21", "role": "database", "color": None},
            "jw-blue": {"vmid": 132, "ip": "10.92.3.22", "role": "app", "color": "blue"},
            "jw-green": {"vmid": 134, "ip": "10.92.3.24", "role": "app", "color": "green"},
            "jw-haproxy": {"vmid": 136, "ip": "10.92.3.26", "role": "loadbalancer", "color": None},
        },
        "liveColor": "blue",
        "standbyColor": "green",
        "publicEndpoint": "https://10.92.3.26:443",
        "previewEndpoint": "https://10.92.3.26:8080",  # privateAddress defaults to the LB's own
        "databaseAddress": "10.92.3.21:5432",
    }


def test_live_colour_follows_active_color(pulumi_harness: PulumiHarness, prod_config: dict[str, Any]) -> None:
    prod_config["bluegreen:activeColor"] = "green"
    exports = run_ok(pulumi_harness, "prod", prod_config).exports
    assert (exports["liveColor"], exports["standbyColor"]) == ("green", "blue")


# --------------------------------------------------------------------------- structure


def test_components_nest_role_then_container_then_the_pve_resource(
        pulumi_harness: PulumiHarness, prod_config: dict[str, Any]) -> None:
    run = run_ok(pulumi_harness, "prod", prod_config)
    for vmid, reg in run.containers().items():
        component = run.parent_of(reg)
        assert component.type == "bluegreen:proxmox:Container"
        role = run.parent_of(component)
        assert role.type == PROD_HOSTS[vmid][6]
        assert role.parent.endswith("pulumi:pulumi:Stack::jw-attendant-estate-prod")


def test_components_register_their_real_outputs(pulumi_harness: PulumiHarness,
                                               prod_config: dict[str, Any]) -> None:
    run = run_ok(pulumi_harness, "prod", prod_config)
    for vmid, reg in run.containers().items():
        component = run.parent_of(reg)
        address = PROD_HOSTS[vmid][1].split("/")[0]
        assert component.outputs == {"vm_id": vmid, "ip": address, "id": str(vmid)}
        role_outputs = run.parent_of(component).outputs
        assert (role_outputs["vm_id"], role_outputs["ip"]) == (vmid, address)


def test_apps_start_after_the_database_and_the_load_balancer_after_both_apps(
        pulumi_harness: PulumiHarness, prod_config: dict[str, Any]) -> None:
    run = run_ok(pulumi_harness, "prod", prod_config)
    containers = run.containers()
    assert run.dependency_names(containers[131]) == set()
    for app in (132, 134):
        assert run.dependency_names(containers[app]) == {(CONTAINER, "jw-postgres")}
    assert run.dependency_names(containers[136]) == {(CONTAINER, "jw-blue"), (CONTAINER, "jw-green")}


def test_tags_are_lowercase_sorted_and_unique(pulumi_harness: PulumiHarness,
                                              prod_config: dict[str, Any]) -> None:
    prod_config["bluegreen:containers"][1]["tags"] = ["jw-attendant", "blue", "app", "blue"]
    containers = run_ok(pulumi_harness, "prod", prod_config).containers()
    assert containers[132].inputs["tags"] == ["app", "blue", "jw-attendant"]


# --------------------------------------------------------------------------- lab


def test_lab_creates_its_containers_and_adopts_nothing(pulumi_harness: PulumiHarness,
                                                       lab_config: dict[str, Any]) -> None:
    run = run_ok(pulumi_harness, "lab", lab_config)
    containers = run.containers()
    assert sorted(containers) == [131, 132, 134, 136]
    for vmid, reg in containers.items():
        assert reg.import_id == ""
        # Blue is live (the harness's HAProxy serves the declared colour), green the standby.
        assert sorted(reg.ignore_changes) == (FROZEN if vmid in (131, 132, 136) else [])
        assert reg.retain_on_delete is False
        assert reg.protect is (vmid == 131)
        assert reg.inputs["protection"] is (vmid == 131)
        last_octet = PROD_HOSTS[vmid][1].split("/")[0].rsplit(".", 1)[1]
        assert reg.inputs["initialization"]["ipConfigs"] == [
            {"ipv4": {"address": f"127.0.3.{last_octet}/24", "gateway": "127.0.3.1"}}]


def test_lab_installs_the_key_read_from_its_file(pulumi_harness: PulumiHarness, lab_config: dict[str, Any],
                                                 lab_key: str) -> None:
    key = Path(lab_key).read_text().strip()
    for reg in run_ok(pulumi_harness, "lab", lab_config).containers().values():
        assert reg.inputs["initialization"]["userAccount"] == {"keys": [key]}
        # No dnsDomain in the lab stack: only the servers are declared.
        assert reg.inputs["initialization"]["dns"] == {"servers": ["127.0.0.1"]}


def test_lab_without_template_url_downloads_nothing(pulumi_harness: PulumiHarness,
                                                    lab_config: dict[str, Any]) -> None:
    run = run_ok(pulumi_harness, "lab", lab_config)
    assert run.of_type(DOWNLOAD) == []
    for reg in run.containers().values():
        assert reg.inputs["operatingSystem"]["templateFileId"] == TEMPLATE_ID
        assert not any(t == DOWNLOAD for t, _ in run.dependency_names(reg))


def test_lab_stack_outputs(pulumi_harness: PulumiHarness, lab_config: dict[str, Any]) -> None:
    exports = run_ok(pulumi_harness, "lab", lab_config).exports
    assert exports["publicEndpoint"] == "https://127.0.3.26:443"
    assert exports["previewEndpoint"] == "https://127.0.3.126:8080"
    assert exports["databaseAddress"] == "127.0.3.21:5432"
    assert exports["containers"]["jw-green"] == {
        "vmid": 134, "ip": "127.0.3.24", "role": "app", "color": "green"}


# --------------------------------------------------------------------------- template download


def test_new_containers_wait_for_the_template_download(pulumi_harness: PulumiHarness,
                                                       lab_config: dict[str, Any]) -> None:
    lab_config["bluegreen:proxmox"]["template"].update(url=TEMPLATE_URL, **TEMPLATE_CHECKSUM)
    run = run_ok(pulumi_harness, "lab", lab_config)
    [download] = run.of_type(DOWNLOAD)
    assert download.inputs["contentType"] == "vztmpl"
    assert download.inputs["nodeName"] == "pve"
    assert download.inputs["datastoreId"] == "local"
    assert download.inputs["url"] == TEMPLATE_URL
    assert download.inputs["fileName"] == TEMPLATE_FILE
    assert download.inputs["overwriteUnmanaged"] is True
    assert run.parent_of(download).type == "bluegreen:proxmox:ContainerTemplate"

    for reg in run.containers().values():
        assert reg.inputs["operatingSystem"]["templateFileId"] == download.id
        assert (DOWNLOAD, download.name) in run.dependency_names(reg)


def test_only_new_containers_use_the_download_in_a_partly_adopted_estate(
        pulumi_harness: PulumiHarness, prod_config: dict[str, Any]) -> None:
    prod_config["bluegreen:containers"][2]["existing"] = False  # green (134) is rebuilt
    prod_config["bluegreen:proxmox"]["template"].update(url=TEMPLATE_URL, **TEMPLATE_CHECKSUM)
    run = run_ok(pulumi_harness, "prod", prod_config)
    [download] = run.of_type(DOWNLOAD)
    containers = run.containers()
    assert containers[134].import_id == ""
    assert containers[134].ignore_changes == []
    assert (DOWNLOAD, download.name) in run.dependency_names(containers[134])
    for vmid in (131, 132, 136):
        assert containers[vmid].import_id == f"pve/{vmid}"
        assert not any(t == DOWNLOAD for t, _ in run.dependency_names(containers[vmid]))


# --------------------------------------------------------------------------- API token sources


def test_lab_falls_back_to_the_token_file(pulumi_harness: PulumiHarness, lab_config: dict[str, Any],
                                          tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(LAB_TOKEN_SECRET + "\n")
    del lab_config["proxmoxve:apiToken"]
    lab_config["bluegreen:proxmox"]["tokenFile"] = str(token_file)
    run = run_ok(pulumi_harness, "lab", lab_config)
    [provider] = run.of_type(PROVIDER)
    assert unwrap_secret(provider.inputs["apiToken"]) == (True, f"root@pam!deploy={LAB_TOKEN_SECRET}")
    assert provider.inputs["endpoint"] == "https://127.0.3.5:8006/"


def test_an_unreadable_token_file_fails_before_any_resource(
        pulumi_harness: PulumiHarness, lab_config: dict[str, Any], tmp_path: Path) -> None:
    del lab_config["proxmoxve:apiToken"]
    lab_config["bluegreen:proxmox"]["tokenFile"] = str(tmp_path / "missing-token")
    run = pulumi_harness.run("lab", lab_config, secret_keys=SECRETS)
    assert run.error is not None
    assert "proxmox.tokenFile" in str(run.error)
    assert_nothing_registered(run)


def test_prod_without_a_token_names_the_config_key(pulumi_harness: PulumiHarness,
                                                   prod_config: dict[str, Any]) -> None:
    del prod_config["proxmoxve:apiToken"]
    run = pulumi_harness.run("prod", prod_config, secret_keys=SECRETS)
    assert run.error is not None
    assert "proxmoxve:apiToken" in str(run.error)
    assert_nothing_registered(run)


# --------------------------------------------------------------------------- bad config


def _duplicate_id(c: dict[str, Any]) -> None:
    c["bluegreen:containers"][1]["id"] = 131


def _address_outside_subnet(c: dict[str, Any]) -> None:
    c["bluegreen:containers"][2]["ip"] = "10.93.3.24/16"


def _unknown_active_colour(c: dict[str, Any]) -> None:
    c["bluegreen:activeColor"] = "purple"


def _missing_node(c: dict[str, Any]) -> None:
    del c["bluegreen:proxmox"]["node"]


def _cores_not_a_number(c: dict[str, Any]) -> None:
    c["bluegreen:containers"][0]["cores"] = "two"


def _containers_not_a_list(c: dict[str, Any]) -> None:
    c["bluegreen:containers"] = {"id": 131}


def _several_problems(c: dict[str, Any]) -> None:
    c["bluegreen:containers"][3]["role"] = "proxy"
    c["bluegreen:activeColor"] = "red"


BAD_CONFIGS: list[tuple[Callable[[dict[str, Any]], None], list[str]]] = [
    (_duplicate_id, ["containers[1].id"]),
    (_address_outside_subnet, ["containers[2].ip"]),
    (_unknown_active_colour, ["activeColor"]),
    (_missing_node, ["proxmox.node"]),
    (_cores_not_a_number, ["containers[0].cores"]),
    (_containers_not_a_list, ["containers"]),
    (_several_problems, ["containers[3].role", "activeColor"]),
]


@pytest.mark.parametrize(("mutate", "keys"), BAD_CONFIGS, ids=[m.__name__.strip("_") for m, _ in BAD_CONFIGS])
def test_bad_config_fails_before_any_resource_naming_the_key(
        pulumi_harness: PulumiHarness, prod_config: dict[str, Any],
        mutate: Callable[[dict[str, Any]], None], keys: list[str]) -> None:
    config = copy.deepcopy(prod_config)
    mutate(config)
    run = pulumi_harness.run("prod", config, secret_keys=SECRETS)
    assert run.error is not None, "bad config was accepted"
    message = str(run.error)
    for key in keys:
        assert f"{key}:" in message
    assert "Traceback" not in message
    assert PROD_TOKEN.split("=", 1)[1] not in message
    assert_nothing_registered(run)


def test_an_unreadable_public_key_file_fails_before_any_resource(pulumi_harness: PulumiHarness,
                                                                 lab_config: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    lab_config["bluegreen:ssh"]["publicKeys"] = [f"file:{tmp_path / 'absent.pub'}"]
    run = pulumi_harness.run("lab", lab_config, secret_keys=SECRETS)
    assert run.error is not None
    assert "ssh.publicKeys" in str(run.error)
    assert_nothing_registered(run)


def test_a_non_boolean_insecure_fails_before_any_resource(pulumi_harness: PulumiHarness,
                                                          prod_config: dict[str, Any]) -> None:
    prod_config["proxmoxve:insecure"] = "sometimes"
    run = pulumi_harness.run("prod", prod_config, secret_keys=SECRETS)
    assert run.error is not None
    assert "proxmoxve:insecure" in str(run.error)
    assert_nothing_registered(run)


# --------------------------------------------------------------------------- placeholders (issue 10)


def test_prod_as_shipped_asks_for_each_missing_value_before_any_resource(
        pulumi_harness: PulumiHarness) -> None:
    config = stack_config("prod", filled=False)
    config["proxmoxve:apiToken"] = PROD_TOKEN
    run = pulumi_harness.run("prod", config, secret_keys=SECRETS)
    assert run.error is not None
    for key in ("app.repo", "app.deployUser", "database.user"):
        assert f"set {key}: " in str(run.error)
    assert_nothing_registered(run)
