"""The pure parts of the components: argument building and the rules they encode."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import Topology
from components.container import STARTUP_BY_ROLE, ProxmoxContainerArgs, normalized_tags
from components.roles import AppHostArgs, DatabaseHostArgs, LoadBalancerArgs
from components.template import ContainerTemplateArgs, needs_download

PROJECT_DIR = Path(__file__).resolve().parents[2]
KEYS = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBfakeKeyForComponentTests000000000000000 t@test",)


@pytest.fixture
def prod() -> Topology:
    """The prod stack, with the template download a stack may add (https and a checksum)."""
    t = load_stack(PROJECT_DIR, "prod")
    template = dataclasses.replace(
        t.proxmox.template, url=f"https://download.proxmox.com/images/system/{t.proxmox.template.file}",
        checksum="ab" * 64, checksum_algorithm="sha512")
    return dataclasses.replace(t, proxmox=dataclasses.replace(t.proxmox, template=template))


def all_new(t: Topology) -> Topology:
    rebuilt = tuple(dataclasses.replace(c, existing=False) for c in t.containers)
    return dataclasses.replace(t, containers=rebuilt)


@pytest.mark.parametrize(("tags", "expected"), [
    (["jw-attendant", "App", "blue"], ["app", "blue", "jw-attendant"]),
    (["b", "a", "B"], ["a", "b"]),
    ([], []),
])
def test_tags_are_normalized_as_pve_stores_them(tags: list[str], expected: list[str]) -> None:
    assert normalized_tags(tags) == expected


def test_boot_order_is_database_then_apps_then_load_balancer() -> None:
    order = {role: s.order for role, s in STARTUP_BY_ROLE.items()}
    assert None not in order.values(), order
    assert order["database"] < order["app"] < order["loadbalancer"]  # type: ignore[operator]


def test_container_args_from_topology(prod: Topology) -> None:
    green = prod.app_host("green")
    args = ProxmoxContainerArgs.from_topology(prod, green, public_keys=KEYS)
    assert (args.node, args.vmid, args.hostname, args.color) == ("pve", 134, "jw-green", "green")
    assert (args.address, args.ip, args.gateway) == ("10.92.3.24/16", "10.92.3.24", "10.92.0.1")
    assert args.template_file_id == "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
    assert args.import_id == "pve/134"
    assert not args.is_database
    assert args.public_keys == KEYS


def test_new_containers_have_no_import_id(prod: Topology) -> None:
    fresh = all_new(prod)
    assert ProxmoxContainerArgs.from_topology(fresh, fresh.database_host, public_keys=KEYS).import_id is None


def test_template_download_only_with_a_url_and_a_container_to_build(prod: Topology) -> None:
    assert ContainerTemplateArgs.from_topology(prod) is not None
    assert not needs_download(prod)  # every prod container is adopted
    assert needs_download(all_new(prod))
    no_url = dataclasses.replace(prod, proxmox=dataclasses.replace(
        prod.proxmox, template=dataclasses.replace(prod.proxmox.template, url=None)))
    assert ContainerTemplateArgs.from_topology(no_url) is None
    assert not needs_download(all_new(no_url))


def test_template_args_name_the_file_as_the_stack_does(prod: Topology) -> None:
    args = ContainerTemplateArgs.from_topology(prod)
    assert args is not None
    assert args.file_id == "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
    assert args.url.endswith("/" + args.file)


def test_role_args_refuse_a_container_of_another_role(prod: Topology) -> None:
    blue = ProxmoxContainerArgs.from_topology(prod, prod.app_host("blue"), public_keys=KEYS)
    with pytest.raises(ValueError, match="expected 'database'"):
        DatabaseHostArgs(blue)
    with pytest.raises(ValueError, match="expected 'loadbalancer'"):
        LoadBalancerArgs(blue, apps=[])
    db = ProxmoxContainerArgs.from_topology(prod, prod.database_host, public_keys=KEYS)
    with pytest.raises(ValueError, match="expected 'app'"):
        AppHostArgs(db, database=None)  # type: ignore[arg-type]
