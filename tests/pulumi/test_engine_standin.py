"""The engine stand-in behaves as pulumi/pulumi's step generator does (tests/pulumi/engine.py cites
the lines), and its provider Read agrees with the product's reading of PVE (bluegreen/model/ctread.py).
These are the behaviours the other stand-in tests rely on; each mirrors a test of the engine's own
lifecycle suite (pkg/engine/lifecycletest/import_test.go: TestImportOption, TestImportDeleteBeforeReplace).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from bluegreen.model.ctread import read_inputs

from .bpg import differences, read_container
from .engine import Diff, Engine, EngineError, Goal

URN = "urn:pulumi:t::p::pkgA:m:typA::resA"
DYN = "urn:pulumi:t::p::pulumi-python:dynamic/bluegreen:LiveColorRouting::live-color-routing"


@dataclass
class World:
    """A provider over an in-memory world: `things[id] = properties`; `reboots` counts updates of `foo`."""

    things: dict[str, dict[str, Any]] = field(default_factory=dict)
    force_new: tuple[str, ...] = ("size",)
    log: list[str] = field(default_factory=list)

    def read(self, id_: str, inputs: Mapping[str, Any] | None) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
        thing = self.things.get(id_.rpartition("/")[2])
        return None if thing is None else (id_.rpartition("/")[2], dict(thing), dict(thing))

    def diff(self, id_: str, old_inputs: Mapping[str, Any], old_outputs: Mapping[str, Any],
             new_inputs: Mapping[str, Any], ignore_changes: Sequence[str]) -> Diff:
        changed = [k for k in new_inputs
                   if k not in ignore_changes and differences(k, old_outputs.get(k), new_inputs[k])]
        return Diff(bool(changed), [k for k in changed if k in self.force_new], changed)

    def create(self, urn: str, inputs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        id_ = str(inputs["id"])
        if id_ in self.things:
            raise EngineError(f"CT {id_} already exists")
        self.things[id_] = dict(inputs)
        self.log.append(f"create {id_}")
        return id_, dict(inputs)

    def update(self, id_: str, old_outputs: Mapping[str, Any], new_inputs: Mapping[str, Any]) -> dict[str, Any]:
        self.things[id_] = dict(new_inputs)
        self.log.append(f"update {id_}")
        return dict(new_inputs)

    def delete(self, id_: str, outputs: Mapping[str, Any]) -> None:
        self.things.pop(id_, None)
        self.log.append(f"delete {id_}")


def goal(inputs: dict[str, Any], *, import_id: str = "", ignore: Sequence[str] = (), retain: bool = False,
         dbr: bool = True, urn: str = URN, replace_with: Sequence[str] = (), deps: Sequence[str] = ()) -> Goal:
    return Goal(urn=urn, type=urn.split("::")[2].rsplit("$", 1)[-1], name=urn.rsplit("::", 1)[-1], parent=None,
                custom=True, inputs=inputs, import_id=import_id, ignore_changes=list(ignore), protect=False,
                retain_on_delete=retain, delete_before_replace=dbr, replace_with=list(replace_with),
                dependencies=list(deps))


def engine(world: World, version: tuple[int, int, int] = (3, 272, 0)) -> Engine:
    return Engine({"pkgA:m:typA": world, "pkgA:m:typB": world}, version=version)


def test_an_import_with_other_inputs_is_updated_in_the_same_run() -> None:
    """TestImportOption: since 3.174 the import is carried into an update; before, it failed."""
    world = World({"1": {"id": 1, "foo": "bar"}})
    e = engine(world)
    steps = e.up([goal({"id": 1, "foo": "baz"}, import_id="n/1")])
    assert [s.op for s in steps] == ["import", "update"]
    assert world.things["1"]["foo"] == "baz"
    old = engine(World({"1": {"id": 1, "foo": "bar"}}), (3, 173, 0))
    with pytest.raises(EngineError, match="inputs to import do not match"):
        old.up([goal({"id": 1, "foo": "baz"}, import_id="n/1")])


def test_ignore_changes_reset_to_what_read_returned_change_nothing() -> None:
    world = World({"1": {"id": 1, "foo": "bar", "size": 8}})
    steps = engine(world).up([goal({"id": 1, "foo": "baz", "size": 4}, import_id="n/1", ignore=("foo", "size"))])
    assert [s.op for s in steps] == ["import", "same"] and world.log == []


def test_an_imported_resource_that_still_declares_its_import_may_not_be_replaced() -> None:
    """TestImportDeleteBeforeReplace: refused in an update, after the import already happened."""
    world = World({"1": {"id": 1, "size": 8}})
    e = engine(world)
    with pytest.raises(EngineError, match="previously-imported resources that still specify an ID may not be replaced"):
        e.up([goal({"id": 1, "size": 4}, import_id="n/1")])
    assert e.runs[-1][0].op == "import" and world.log == []  # the run stopped midway


def test_the_recorded_import_id_decides_whether_the_next_run_imports_again() -> None:
    """Before 3.252 the state after an import recorded no import id: the next run imported again and
    deleted the old copy (the same container) at the end, unless it was retained (#23834)."""
    for version, retain, deleted in (((3, 272, 0), False, False), ((3, 251, 0), True, False),
                                     ((3, 251, 0), False, True)):
        world = World({"1": {"id": 1, "foo": "bar"}})
        e = engine(world, version)
        program = [goal({"id": 1, "foo": "bar"}, import_id="n/1", retain=retain)]
        e.up(program)
        steps = e.up(program)
        assert ("delete 1" in world.log) is deleted, (version, retain)
        assert (steps[0].op == "import-replacement") is (version < (3, 252, 0))


def test_a_delete_keeps_the_resource_by_the_old_states_flag() -> None:
    """DeleteStep.Apply reads `s.old.RetainOnDelete`: dropping retain in the same run is too late."""
    world = World({"1": {"id": 1, "size": 8}})
    e = engine(world)
    e.up([goal({"id": 1, "size": 8}, import_id="n/1", retain=True)])
    with pytest.raises(EngineError, match="already exists"):
        e.up([goal({"id": 1, "size": 4})], replace=[URN])  # retained: the create collides
    world = World({"1": {"id": 1, "size": 8}})
    e = engine(world)
    e.up([goal({"id": 1, "size": 8}, import_id="n/1", retain=True)])
    e.up([goal({"id": 1, "size": 8}, import_id="n/1", retain=False)])  # a same step records it
    e.up([goal({"id": 1, "size": 4})], replace=[URN])
    assert world.log == ["delete 1", "create 1"] and world.things["1"]["size"] == 4


def test_targets_leave_the_rest_alone_and_replace_with_follows_a_replacement() -> None:
    world = World()
    e = engine(world)
    b, c = URN.replace("resA", "resB"), URN.replace("resA", "resC")
    program = [goal({"id": 1, "size": 8}), goal({"id": 2, "of": 1}, urn=b, replace_with=[URN]),
               goal({"id": 3}, urn=c)]
    e.up(program)
    world.log.clear()
    program[2].inputs["x"] = 1  # a change outside the targets is not applied
    steps = e.up(program, targets=[URN, b], replace=[URN])
    assert [(s.op, s.name) for s in steps] == [("delete", "resA"), ("replace", "resA"), ("delete", "resB"),
                                               ("replace", "resB"), ("same", "resC")]
    assert "x" not in world.things["3"]


def test_a_target_that_depends_on_an_untargeted_new_resource_fails() -> None:
    e = engine(World())
    b = URN.replace("resA", "resB")
    with pytest.raises(EngineError, match="untargeted create"):
        e.up([goal({"id": 1}), goal({"id": 2}, urn=b, deps=[URN])], targets=[b])


def test_a_dynamic_resource_diffs_against_its_recorded_outputs() -> None:
    """The switch wedge: after a flip outside Pulumi the recorded colour is the one asked for, so
    the update does nothing; a refresh first makes the diff see what HAProxy serves."""
    from components.hostconfig import LiveColorRoutingDynamicProvider

    from .bpg import DynamicProvider

    haproxy = {"live": "blue"}
    routing = DynamicProvider(LiveColorRoutingDynamicProvider(),
                              observe=lambda props: {**props, "live_color": haproxy["live"]})
    e = Engine({"pulumi-python:dynamic/bluegreen:LiveColorRouting": routing})
    props = {"connection": {"address": "127.0.3.26"}, "map_path": "/m", "admin_socket": "/s", "map_text": "live bk_"}
    dyn = goal({**props, "live_color": "blue"}, urn=DYN)
    e.up([dyn])
    haproxy["live"] = "green"  # an emergency flip: HAProxy serves green, the state says blue
    assert [s.op for s in e.up([goal({**props, "live_color": "blue"}, urn=DYN)])] == ["same"]  # wedged
    e.refresh([DYN])
    assert [s.op for s in e.up([goal({**props, "live_color": "blue"}, urn=DYN)])] == ["update"]


# --------------------------------------------------------------------------- Read


HAND_BUILT = {
    "hostname": "jw-blue", "cores": 2, "memory": 2048, "swap": 512, "unprivileged": 1, "onboot": 0,
    "net0": "name=eth0,bridge=vmbr0,firewall=1,gw=10.0.0.1,hwaddr=BC:24:11:00:00:01,ip=10.0.0.22/24,ip6=fd00::2/64,"
            "rate=12.5,tag=30,mtu=1400,type=veth",
    "net2": "name=eth1,bridge=vmbr1,ip=192.168.0.2/24", "rootfs": "local-lvm:vm-132-disk-0,size=1T,acl=1",
    "mp0": "local-lvm:vm-132-disk-1,mp=/srv,size=512G,acl=1,quota=1,replicate=0,shared=1,mountoptions=noatime",
    "mp3": "/mnt/host,mp=/host,ro=1", "features": "nesting=1,keyctl=1,mount=nfs;cifs", "cpulimit": "1.5",
    "cmode": "shell", "tty": 4, "env": "TZ=UTC\0LANG=C", "dev0": "/dev/net/tun,mode=0666", "ostype": "debian",
    "startup": "order=2,up=5", "tags": "blue;app", "description": "by hand", "protection": 1,
}


@pytest.mark.parametrize("config", [
    HAND_BUILT,
    {k: v for k, v in HAND_BUILT.items() if k not in ("startup", "features", "cmode", "tty", "onboot")},
    {**HAND_BUILT, "nameserver": "1.1.1.1 9.9.9.9", "searchdomain": "example.org", "cores": 1, "cpulimit": 0},
    {**HAND_BUILT, "searchdomain": "only.domain"},
])
def test_the_products_reading_is_the_providers_read(config: dict[str, Any]) -> None:
    assert read_inputs(config, running=True, node="pve") == read_container(config, True, "pve")
