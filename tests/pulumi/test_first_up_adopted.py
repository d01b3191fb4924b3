"""The first `pulumi up` on the adopted legacy lab imports every container and changes none of them.

The legacy lab's containers (the legacy lab's own hand, plus what hand-built containers also have
and Read returns: inherited DNS, a second NIC, IPv6, a terabyte mount point with options, a CPU
limit, a console mode, LXC env) on a real fakepve; `bluegreen adopt` writes the stack; the real
`__main__.py` runs under Pulumi's mocks and its registrations go through the engine stand-in, which
imports each container with bpg's Read and then diffs and updates as the engine does since 3.174.
"""

from __future__ import annotations

from pathlib import Path

from bluegreen.model.resources import CONTAINER_TYPE

from .adopted import SECRETS, engine_for, legacy_estate
from .conftest import PROJECT, PulumiHarness
from .engine import goals

VMIDS = (131, 132, 134, 136)


def container_steps(steps: list) -> list[tuple[str, str]]:
    return [(s.op, s.name) for s in steps if CONTAINER_TYPE in s.urn]


def test_the_first_up_on_the_adopted_legacy_lab_changes_no_container(
        tmp_path: Path, pulumi_harness: PulumiHarness, lab_key: str) -> None:
    with legacy_estate(tmp_path, lab_key) as estate:
        assert estate.adopted is not None and estate.adopted.written
        before = estate.digests()
        engine, containers, dynamic = engine_for(estate.client)
        run = pulumi_harness.run("lab", estate.config(), secret_keys=tuple(SECRETS))
        assert run.error is None, run.error
        first = engine.up(goals(run, stack="lab", project=PROJECT))
        names = {c.vmid: c.name for c in estate.topology.containers}
        # Imported, then diffed as the engine does since 3.174: no update, no replacement.
        assert sorted(container_steps(first)) == sorted(step for v in VMIDS
                                                        for step in (("import", names[v]), ("same", names[v])))
        assert (containers.puts, containers.reboots, containers.creates, containers.deletes) == ([], [], [], [])
        assert estate.digests() == before  # PVE's config of every container untouched
        # The host configuration is created (its CRUD over SSH is covered against real hosts elsewhere).
        assert {call[0] for p in dynamic.values() for call in p.calls} == {"create"}
        # And the next up changes nothing at all.
        run = pulumi_harness.run("lab", estate.config(), secret_keys=tuple(SECRETS))
        second = engine.up(goals(run, stack="lab", project=PROJECT))
        assert {s.op for s in second} == {"same"}
        assert estate.digests() == before


def test_whatever_read_returns_an_adopted_container_is_never_rebooted_or_replaced(
        tmp_path: Path, pulumi_harness: PulumiHarness, lab_key: str) -> None:
    """No adopt at all: the shipped lab stack marked `existing: true`, so every declared value
    differs from the hand-built containers (memory, DNS, NICs, mount points, console, env...).
    Only what the program manages in place may change: start on boot, startup order, protection."""
    with legacy_estate(tmp_path, lab_key, run_adopt=False) as estate:
        engine, containers, _ = engine_for(estate.client)
        run = pulumi_harness.run("lab", estate.config(), secret_keys=tuple(SECRETS))
        assert run.error is None, run.error
        steps = engine.up(goals(run, stack="lab", project=PROJECT))
        ops = {op for op, _ in container_steps(steps)}
        assert ops <= {"import", "same", "update"} and "replace" not in ops
        assert containers.reboots == [] and containers.creates == [] and containers.deletes == []
        assert containers.puts, "the managed fields differ here: the test would prove nothing"
        for _vmid, params in containers.puts:
            assert set(params) <= {"onboot", "startup", "protection"}, params
