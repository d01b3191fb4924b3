"""What the program declares for a container, and what it lets the engine change (pure)."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from pulumi_proxmoxve import ContainerLegacyArgs

from bluegreen.model.config import config_getter, from_config
from bluegreen.model.ctinputs import (
    ADOPTED_IGNORE_CHANGES,
    CONTAINER_INPUTS,
    FROZEN_INPUTS,
    MANAGED_ON_ADOPTED,
    RebuildPending,
    declared_inputs,
    lifecycle,
    parse_rebuild,
)
from bluegreen.model.errors import ConfigError, ValidationError
from bluegreen.model.stackfile import load_stack, read_stack_config
from bluegreen.model.topology import Topology

REPO = Path(__file__).resolve().parents[2]
PROD = load_stack(REPO, "prod")


def test_every_input_of_the_installed_provider_is_known() -> None:
    """A provider upgrade that adds an input must not leave it managed on adopted containers."""
    sdk = {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
           for name in inspect.signature(ContainerLegacyArgs.__init__).parameters if name not in ("self", "__self__")}
    assert set(CONTAINER_INPUTS) == sdk
    assert set(ADOPTED_IGNORE_CHANGES) == sdk - {"protection", "startOnBoot", "startup"}
    assert set(MANAGED_ON_ADOPTED) & set(FROZEN_INPUTS) == set()  # the managed ones never reboot


def with_entry(t: Topology, vmid: int, **extra: Any) -> Topology:
    config = read_stack_config(REPO, t.stack)
    for entry in config["bluegreen:containers"]:
        if entry["id"] == vmid:
            entry.update(extra)
    config.setdefault("bluegreen:app", {}).setdefault("repo", "git@example.invalid:o/a.git")
    config.setdefault("bluegreen:database", {}).setdefault("user", "jw")
    return from_config(config_getter(config), stack=t.stack, project_dir=REPO)


def test_what_adopt_writes_is_declared() -> None:
    t = with_entry(PROD, 132, inheritDns=True, ip6="fd00::22/64", gateway6="fd00::1", rate=12.5,
                   cpuLimit=1.5, console={"enabled": True, "mode": "shell", "tty": 3}, lxcEnv={"TZ": "UTC"},
                   extraInterfaces=[{"key": "net1", "name": "eth1", "bridge": "vmbr9", "ip": "192.168.9.22/24"}],
                   devices=[{"key": "dev0", "path": "/dev/net/tun", "mode": "0666"}],
                   rootfs={"acl": True, "mountOptions": ["lazytime"]},
                   mountPoints=[{"key": "mp0", "volume": "local-lvm:vm-132-disk-1", "path": "/srv", "size": "1T",
                                 "acl": True, "mountOptions": ["noatime"]}])
    i = declared_inputs(t, t.container(132), public_keys=("ssh-ed25519 K",))
    assert "dns" not in i["initialization"]  # inherited: no block, as Read returns none
    assert i["initialization"]["ipConfigs"] == [
        {"ipv4": {"address": "10.92.3.22/16", "gateway": "10.92.0.1"},
         "ipv6": {"address": "fd00::22/64", "gateway": "fd00::1"}},
        {"ipv4": {"address": "192.168.9.22/24"}}]
    assert i["networkInterfaces"] == [{"name": "eth0", "bridge": "vmbr0", "firewall": True, "rateLimit": 12.5},
                                      {"name": "eth1", "bridge": "vmbr9"}]
    assert i["mountPoints"] == [{"volume": "local-lvm:vm-132-disk-1", "path": "/srv", "size": "1T", "acl": True,
                                 "mountOptions": ["noatime"]}]
    assert i["cpu"] == {"cores": 2, "limit": 1.5}
    assert i["console"] == {"enabled": True, "type": "shell", "ttyCount": 3}
    assert i["environmentVariables"] == {"TZ": "UTC"}
    assert i["devicePassthroughs"] == [{"path": "/dev/net/tun", "mode": "0666"}]
    assert i["disk"] == {"datastoreId": "local-lvm", "size": 16, "acl": True, "mountOptions": ["lazytime"]}
    assert i["initialization"]["userAccount"] == {"keys": ["ssh-ed25519 K"]}


def test_a_stack_wide_dns_is_declared_when_not_inherited() -> None:
    i = declared_inputs(PROD, PROD.container(136), public_keys=())
    assert i["initialization"]["dns"] == {"domain": "cloudigan.net", "servers": ["10.92.0.1"]}


@pytest.mark.parametrize(("extra", "key"), [
    ({"inheritDns": True, "dnsServers": ["1.1.1.1"]}, "inheritDns"),
    ({"mountPoints": [{"key": "mp0", "volume": "v", "path": "/p", "size": "8X"}]}, "size"),
    ({"extraInterfaces": [{"key": "net0", "name": "eth0"}]}, "key"),
    ({"console": {"mode": "serial"}}, "console.mode"),
    ({"devices": [{"key": "dev0"}]}, "path"),
])
def test_bad_settings_are_named_by_key(extra: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError) as err:
        with_entry(PROD, 132, **extra)
    assert key in str(err.value)


def owned(t: Topology) -> Topology:
    return dataclasses.replace(t, containers=tuple(dataclasses.replace(c, existing=False) for c in t.containers))


@pytest.mark.parametrize(("vmid", "live", "frozen"), [
    (132, "blue", True), (134, "blue", False), (134, "green", True), (132, "green", False),
    (132, None, True), (134, None, True), (131, "blue", True), (136, "blue", True),
])
def test_owned_serving_containers_hold_back_what_reboots(vmid: int, live: str | None, frozen: bool) -> None:
    t = owned(PROD)
    life = lifecycle(t, t.container(vmid), live=live)
    assert (life.import_id, life.retain_on_delete, life.created_by_program) == (None, False, True)
    assert (life.ignore_changes == FROZEN_INPUTS) is frozen and (life.ignore_changes == ()) is not frozen


def test_adopted_containers_ignore_everything_but_the_managed_fields() -> None:
    for c in PROD.containers:
        life = lifecycle(PROD, c, live="blue")
        assert (life.import_id, life.retain_on_delete, life.created_by_program) == (f"pve/{c.vmid}", True, False)
        assert life.ignore_changes == ADOPTED_IGNORE_CHANGES


def test_the_rebuild_phases() -> None:
    t = with_entry(PROD, 134, existing="rebuilding")
    c = t.container(134)
    assert c.existing and c.rebuilding
    with pytest.raises(RebuildPending, match="between adopted and owned"):
        lifecycle(t, c, live="blue")
    release = lifecycle(t, c, live="blue", rebuild=(134, "release"))
    assert (release.import_id, release.retain_on_delete, release.ignore_changes) == (
        "pve/134", False, ADOPTED_IGNORE_CHANGES)
    replace = lifecycle(t, c, live="blue", rebuild=(134, "replace"))
    assert (replace.import_id, replace.retain_on_delete, replace.ignore_changes) == (None, False, ())
    assert replace.created_by_program
    # Another container's rebuild does not release this one.
    with pytest.raises(RebuildPending):
        lifecycle(t, c, live="blue", rebuild=(132, "replace"))
    assert lifecycle(t, c, live="blue", switch_run=True).import_id is None


@pytest.mark.parametrize(("value", "parsed"), [(None, None), ("", None), ("134:release", (134, "release")),
                                               ("134:replace", (134, "replace"))])
def test_parse_rebuild(value: str | None, parsed: Any) -> None:
    assert parse_rebuild(value) == parsed


@pytest.mark.parametrize("value", ["134", "x:replace", "134:go"])
def test_parse_rebuild_refuses(value: str) -> None:
    with pytest.raises(ConfigError, match="BLUEGREEN_REBUILD"):
        parse_rebuild(value)
