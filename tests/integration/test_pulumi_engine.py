"""The automation switch after an emergency flip, through the real program, the real seam, the
engine stand-in (tests/pulumi/engine.py) and the real routing provider against the lab's HAProxy.

After a flip made outside Pulumi the state still records the colour the switch now asks for; the
routing provider's diff compares recorded outputs with new inputs (pulumi's dynamic provider
server), so without reading HAProxy first the update does nothing and the switch fails for ever.
The seam refreshes the routing resource first; here both are shown on the lab: the wedge, with the
refresh taken out, and the switch that reconciles. The program also reads the lab's lock for real:
it runs under the switch's own lock (the token is passed on), and refuses while another holds it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bluegreen.hosts.pulumi import PulumiSeam
from bluegreen.hosts.pve import PveClient
from bluegreen.lab.lab import Lab
from bluegreen.lab.prodlike import declare_like_prod
from bluegreen.model.errors import SwitchError
from bluegreen.model.resources import CONTAINER_TYPE, DYNAMIC_PREFIX, ROUTING_RESOURCE_NAME
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import Topology, other_color
from bluegreen.ops.estate import Estate
from bluegreen.ops.switch import switch
from components import hostconfig
from tests.integration.support import copy_project, live_color, retry_locked

# `estate`: both colours serve a release that deployed ok (and the `project` copy it needs).
from tests.integration.test_emergency import estate, project, wait_free  # noqa: F401
from tests.pulumi.bpg import ContainerProvider, DynamicProvider
from tests.pulumi.cli import EngineCli
from tests.pulumi.conftest import REAL, PulumiHarness, pulumi_session
from tests.pulumi.engine import Engine, EngineError

pytestmark = pytest.mark.integration

STACK = "lab"
SECRETS = {"proxmoxve:apiToken": "root@pam!deploy=not-used-by-the-stand-in",
           "bluegreen:databasePassword": "not-used: the database resource is recorded",
           "bluegreen:nextServerActionsKey": "not-used: the app env resource is recorded"}


@pytest.fixture
def harness() -> Iterator[PulumiHarness]:
    with pulumi_session() as h:
        yield h


def automation_copy(serving: Path, dest: Path) -> Path:
    """The lab's stack as prod has it: switch through Pulumi, the declared colour in the stack file
    (no activeColorFile), every container adopted with the settings the lab gave it (so the
    first `up` writes nothing to the lab's node)."""
    copy = copy_project(serving, dest)
    declare_like_prod(copy, STACK, live_color(load_stack(serving, STACK)))
    return copy


def stand_in(t: Topology) -> tuple[Engine, DynamicProvider]:
    """Containers through bpg's provider on the lab's node; the routing for real over SSH; the rest
    of the host configuration recorded (its real CRUD is test_providers.py's)."""
    routing = DynamicProvider(hostconfig.LiveColorRoutingDynamicProvider(), real=True)
    providers: dict[str, Any] = {CONTAINER_TYPE: ContainerProvider(PveClient.from_topology(t))}
    for name in ("Bootstrap", "PostgresDatabase", "HaproxyConfig", "Pm2Ecosystem", "AppEnv"):
        providers[DYNAMIC_PREFIX + name] = DynamicProvider(getattr(hostconfig, f"{name}DynamicProvider")())
    providers[DYNAMIC_PREFIX + "LiveColorRouting"] = routing
    return Engine(providers), routing


def recorded_colour(engine: Engine) -> str:
    routing = next(r for r in engine.export()["resources"] if r["urn"].endswith("::" + ROUTING_RESOURCE_NAME))
    return str(routing["outputs"]["live_color"])


def test_a_switch_after_an_emergency_flip_is_reconciled_not_wedged(
        lab: Lab, estate: Path, harness: PulumiHarness,  # noqa: F811
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wait_free(load_stack(estate, STACK))
    copy = automation_copy(estate, tmp_path)
    t = load_stack(copy, STACK)
    engine, routing = stand_in(t)
    cli = EngineCli(harness, engine, copy, secrets=SECRETS, live=lambda: REAL)
    first = engine.up(cli.program(STACK))  # the first `pulumi up`: imports, records the routing
    assert not [s for s in first if CONTAINER_TYPE in s.urn and s.op not in ("import", "same")]
    was = live_color(t)
    assert recorded_colour(engine) == was

    flipped = switch(Estate(dataclasses.replace(t, switch=dataclasses.replace(t.switch, mode="automation"))),
                     emergency=True)
    assert flipped.ok and live_color(t) == other_color(was)
    assert recorded_colour(engine) == was  # the state knows nothing of it

    # Without the refresh: the switch back to `was` compares `was` with the recorded `was`.
    monkeypatch.setattr(PulumiSeam, "refresh", lambda self, **kwargs: {})
    with pytest.raises(SwitchError, match=f"HAProxy still routes to {other_color(was)}"):
        retry_locked(lambda: switch(Estate(load_stack(copy, STACK), pulumi_command=cli), watch=False))
    monkeypatch.undo()
    assert live_color(t) == other_color(was)
    assert load_stack(copy, STACK).active_color == other_color(was)  # the file says what serves

    result = retry_locked(lambda: switch(Estate(load_stack(copy, STACK), pulumi_command=cli), watch=False))
    assert result.ok and result.color == was, result
    assert live_color(t) == was and recorded_colour(engine) == was
    assert load_stack(copy, STACK).active_color == was
    refreshes = [c for c in cli.calls if c[0] == "refresh"]
    assert refreshes and all("--target" in c for c in refreshes)
    assert ("update", routing.calls[-1][1]) == routing.calls[-1]  # the flip was the routing provider's


def test_the_program_refuses_to_run_while_another_operation_holds_the_lock(
        lab: Lab, estate: Path, harness: PulumiHarness, tmp_path: Path) -> None:  # noqa: F811
    copy = automation_copy(estate, tmp_path)
    t = load_stack(copy, STACK)
    engine, _ = stand_in(t)
    cli = EngineCli(harness, engine, copy, secrets=SECRETS, live=lambda: REAL)
    other = Estate(t, who="someone@else")

    def run_while_held() -> None:
        with other.holding("deploy"), pytest.raises(EngineError) as err:
            cli.program(STACK)
        message = str(err.value)
        assert "refusing to run while 'deploy' holds the project lock" in message
        assert "someone@else" in message and "bluegreen lock" in message

    retry_locked(run_while_held)
    assert engine.runs == []
