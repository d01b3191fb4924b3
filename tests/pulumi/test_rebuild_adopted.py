"""`bluegreen rebuild standby` on an adopted estate: the defined way from adopted to owned.

The legacy lab's estate adopted and imported (first `up` through the engine stand-in), then the
Pulumi backend of `rebuild standby` (ops/rebuild.py) drives the real seam (hosts/pulumi.py) and a
CLI that runs the real `__main__.py` and the stand-in. What must hold, read from the engine's and
the provider's source (tests/pulumi/engine.py, bpg.py cite it):

- CT 134 (the standby) is deleted and created again on the node, the other three untouched;
- the update targets exactly the standby's resources, never `--target-dependents` (the load
  balancer depends on both colours);
- its host configuration is replaced with it; nothing else of the host configuration runs;
- afterwards the stack says it is owned, and a plain `up` changes nothing;
- cut between the two runs, a plain `up` refuses to run, and the rebuild run again finishes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bluegreen.model.resources import CONTAINER_TYPE
from bluegreen.model.stackfile import load_stack
from bluegreen.ops.rebuild import PulumiBackend

from .adopted import SECRETS, AdoptedEstate, engine_for, legacy_estate
from .cli import EngineCli
from .conftest import PROJECT, PulumiHarness
from .engine import EngineError, goals

STANDBY = 134


@pytest.fixture
def estate(tmp_path: Path, lab_key: str) -> Iterator[AdoptedEstate]:
    with legacy_estate(tmp_path, lab_key) as found:
        yield found


def existing_of(project: Path, vmid: int) -> Any:
    data = yaml.safe_load((project / "stacks/Pulumi.lab.yaml").read_text())
    entry = next(e for e in data["config"]["bluegreen:containers"] if e["id"] == vmid)
    return entry.get("existing", False)


def ups(cli: EngineCli) -> list[list[str]]:
    return [c for c in cli.calls if c[0] == "up"]


def targets_of(argv: list[str], flag: str = "--target") -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_rebuild_standby_takes_an_adopted_container_to_owned(estate: AdoptedEstate,
                                                              pulumi_harness: PulumiHarness) -> None:
    engine, containers, dynamic = engine_for(estate.client)
    cli = EngineCli(pulumi_harness, engine, estate.project, secrets=SECRETS)
    engine.up(cli.program("lab"))  # the first `pulumi up`: imports, changes nothing
    for provider in dynamic.values():
        provider.calls.clear()
    before = estate.digests()
    host = estate.topology.container(STANDBY)

    PulumiBackend(str(estate.project), "lab", cli, topology=load_stack(estate.project, "lab")).replace(host)

    release, replace = ups(cli)
    state = {r["urn"]: r for r in engine.export()["resources"]}
    urn = next(u for u, r in state.items() if r["type"] == CONTAINER_TYPE and u.endswith("::jw-green"))
    # 1. release: the container alone, recording retain_on_delete=false (else the delete keeps CT 134).
    assert targets_of(release) == [urn] and "--replace" not in release
    # 2. replace: exactly the standby's container and the host configuration on it.
    host_urns = {u for u in state if u.rsplit("::", 1)[-1] in ("jw-green-bootstrap", "jw-green-app-env",
                                                               "jw-green-pm2-ecosystem")}
    assert set(targets_of(replace)) == {urn, *host_urns} and targets_of(replace, "--replace") == [urn]
    assert "--target-dependents" not in release + replace
    assert (containers.deletes, containers.creates, containers.reboots) == ([STANDBY], [STANDBY], [])
    after = estate.digests()
    assert {v: after[v] for v in (131, 132, 136)} == {v: before[v] for v in (131, 132, 136)}
    created = estate.client.container_config(STANDBY)
    assert created["hostname"] == "jw-green" and "127.0.3.24/24" in created["net0"]
    assert created.get("cmode") == "shell"  # what the adopted container had, declared by adopt, kept
    replaced = [c for p in dynamic.values() for c in p.calls if c[0] in ("create", "delete")]
    assert sorted(name for op, name in replaced if op == "create") == sorted(u.rsplit("::", 1)[-1] for u in host_urns)
    assert "retainOnDelete" not in state[urn] and "importID" not in state[urn]
    # 3. owned: the stack says so, and a plain `up` changes nothing anywhere.
    assert existing_of(estate.project, STANDBY) is False
    assert existing_of(estate.project, 132) is True
    settled = estate.digests()
    steps = engine.up(cli.program("lab"))
    assert {s.op for s in steps} == {"same"}, [(s.op, s.name) for s in steps if s.op != "same"]
    assert estate.digests() == settled


def test_a_rebuild_cut_between_its_runs_is_finished_by_the_next_one(estate: AdoptedEstate,
                                                                    pulumi_harness: PulumiHarness) -> None:
    engine, containers, _ = engine_for(estate.client)
    cli = EngineCli(pulumi_harness, engine, estate.project, secrets=SECRETS)
    engine.up(cli.program("lab"))
    real_up = engine.up
    calls = {"up": 0}

    def cut_before_the_replace(*args: Any, **kwargs: Any) -> Any:
        calls["up"] += 1
        if calls["up"] == 2:
            raise EngineError("connection to the node lost")
        return real_up(*args, **kwargs)

    engine.up = cut_before_the_replace  # type: ignore[method-assign]
    host = estate.topology.container(STANDBY)
    with pytest.raises(Exception, match="connection to the node lost"):
        PulumiBackend(str(estate.project), "lab", cli, topology=load_stack(estate.project, "lab")).replace(host)
    engine.up = real_up  # type: ignore[method-assign]
    assert existing_of(estate.project, STANDBY) == "rebuilding"
    assert containers.deletes == []  # the container still runs, released from retention
    # A plain `up` now could import it again and delete it: the program refuses, naming the way out.
    run = pulumi_harness.run("lab", estate.config(), secret_keys=tuple(SECRETS))
    assert run.error is not None and "between adopted and owned" in str(run.error)
    assert "bluegreen rebuild standby" in str(run.error)
    assert not [r for r in run.registrations if r.custom]
    # The rebuild again: picks up where it stopped (no second release) and finishes.
    PulumiBackend(str(estate.project), "lab", cli, topology=load_stack(estate.project, "lab")).replace(
        load_stack(estate.project, "lab").container(STANDBY))
    assert containers.deletes == [STANDBY] and containers.creates == [STANDBY]
    assert existing_of(estate.project, STANDBY) is False
    assert {s.op for s in engine.up(goals(pulumi_harness.run("lab", estate.config(), secret_keys=tuple(SECRETS)),
                                          stack="lab", project=PROJECT))} == {"same"}


def test_without_state_for_the_adopted_container_the_rebuild_refuses(estate: AdoptedEstate,
                                                                     pulumi_harness: PulumiHarness) -> None:
    engine, containers, _ = engine_for(estate.client)
    cli = EngineCli(pulumi_harness, engine, estate.project, secrets=SECRETS)
    with pytest.raises(Exception, match="no state for the adopted CT 134"):
        PulumiBackend(str(estate.project), "lab", cli, topology=load_stack(estate.project, "lab")).replace(
            estate.topology.container(STANDBY))
    assert ups(cli) == [] and existing_of(estate.project, STANDBY) is True and containers.creates == []
