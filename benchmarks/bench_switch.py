"""Switch and rollback speed against a bare flip, run in turns so each sees the same machine.

Each round, in this order:
- the baseline, a bare flip there and back: `ssh <lb> 'echo "set map <map> live bk_<c>" | socat
  stdio <admin socket>'` as a process (its wall time: the floor of any command that flips over a
  new SSH connection), then the same `set map` back over an OpenSSH session already open, from
  the command sent to the first answer from the new colour through the public frontend (asked
  over a connection opened before, as our flip asks; `hosts.visitor.verify`);
- the CLI as a person runs it (`python -m bluegreen ... --yes --json`, process start to exit):
  `switch --emergency`, `rollback --emergency`, `switch --no-watch` (checks on) and `rollback`
  (checks on; its watch, a step of its own in the CLI's progress, is taken out);
- in the same process, both on an `ops.estate.Estate` as the CLI builds it: `switch` through
  `switch.mode: direct` and through `switch.mode: automation` (prod's: stack config and a
  targeted `pulumi up` of the routing resource through the Automation API). There is no Pulumi
  engine here: the automation talks to the recording stand-in of tests/pulumi (`EngineCli`: the
  real program under Pulumi's mocks, the engine stand-in, the real routing provider flipping
  HAProxy over SSH). The stand-in's own time (program and engine bookkeeping, the provider's
  work not included) is measured and EXCLUDED from "ours"; a real `pulumi up` costs what the
  engine costs on top (process start, language host, plugins), which this machine cannot say.

The emergency figures carry the product's own flip timing (`timingsMs.flip_to_first_answer`:
the flip command sent to the first answer from the new colour), the same interval the baseline's
session flip measures. Targets (issue 12): emergency end to end <= 1 s, that flip <= 20 ms, the
normal switch without its watch <= 1 s.
"""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchlib import (
    Bench,
    BenchError,
    Knobs,
    cli,
    copy_project,
    median,
    rounded,
    run_alone,
    say,
    when_unlocked,
)

from bluegreen.hosts import visitor
from bluegreen.hosts.haproxy_cli import HaproxyPaths, backend_for, set_map
from bluegreen.hosts.openssh import OpenSshExecutor, ssh_argv
from bluegreen.lab.prodlike import declare_like_prod
from bluegreen.model.stackfile import load_stack, set_active_color_in_file
from bluegreen.model.topology import Topology, other_color
from bluegreen.ops.switch import switch

TARGETS = {"emergencySeconds": 1.0, "flipMs": 20.0, "normalSeconds": 1.0}
SECRETS = {"proxmoxve:apiToken": "root@pam!deploy=not-used-by-the-stand-in",
           "bluegreen:databasePassword": "not-used: the database resource is recorded",
           "bluegreen:nextServerActionsKey": "not-used: the app env resource is recorded"}


# --------------------------------------------------------------------------- the bare flip


def _bare(t: Topology, color: str) -> str:
    paths = HaproxyPaths.from_topology(t)
    return (f"echo {shlex.quote(set_map(paths.map, 'live', backend_for(color)))} | "
            f"socat stdio {shlex.quote('UNIX-CONNECT:' + paths.admin_socket)}")


def baseline(bench: Bench) -> tuple[float, float]:
    """(seconds of the bare flip process, ms from the bare `set map` sent over an open session to the
    first answer from the colour it routes to). Ends where it started: the estate is unchanged."""
    t = bench.topology()
    live = bench.live_color()
    target = other_color(live)
    started = time.perf_counter()
    proc = subprocess.run([*ssh_argv(t, t.load_balancer), _bare(t, target)], capture_output=True, text=True,
                          timeout=60)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise BenchError(f"the bare flip failed: {proc.stderr.strip()[-300:]}")
    ok, problem, _ = visitor.verify(t, target)
    if not ok:
        raise BenchError(f"the bare flip did not move traffic to {target}: {problem}")
    with OpenSshExecutor(t, t.load_balancer) as lb:
        lb.run("true", step="open the session")
        warm = visitor.warm_connection(visitor.verify_url(t), ca_file=t.haproxy.ca_file,
                                       server_name=t.tls_server_name)
        sent = time.perf_counter()
        lb.run(_bare(t, live), step="bare flip back")
        ok, problem, _ = visitor.verify(t, live, warm=warm)
        flip_ms = (time.perf_counter() - sent) * 1000
    if not ok:
        raise BenchError(f"the bare flip back did not move traffic to {live}: {problem}")
    return wall, flip_ms


# --------------------------------------------------------------------------- the automation stand-in


def automation_project(bench: Bench, dest: Path) -> Path:
    """The lab's stack as prod has it: switch through Pulumi, the declared colour in the stack file,
    every container adopted with the settings the lab gave it (the first `up` changes nothing)."""
    copy = copy_project(dest, bench.project)
    declare_like_prod(copy, bench.stack, bench.live_color())
    return copy


@dataclasses.dataclass
class StandIn:
    project: Path
    command: Any  # tests.pulumi.cli.EngineCli, timed
    timer: dict[str, float]


@contextmanager
def pulumi_stand_in(bench: Bench) -> Iterator[StandIn]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bluegreen.hosts.pve import PveClient
    from bluegreen.model.resources import CONTAINER_TYPE, DYNAMIC_PREFIX
    from components import hostconfig
    from tests.pulumi.bpg import ContainerProvider, DynamicProvider
    from tests.pulumi.cli import EngineCli
    from tests.pulumi.conftest import REAL, pulumi_session
    from tests.pulumi.engine import Engine

    timer = {"engine": 0.0, "provider": 0.0, "calls": 0.0}

    class TimedProvider(DynamicProvider):
        def read(self, id_: str, inputs: Mapping[str, Any] | None) -> Any:
            started = time.perf_counter()
            try:
                return super().read(id_, inputs)
            finally:
                timer["provider"] += time.perf_counter() - started

        def update(self, id_: str, old_outputs: Mapping[str, Any], new_inputs: Mapping[str, Any]) -> Any:
            started = time.perf_counter()
            try:
                return super().update(id_, old_outputs, new_inputs)
            finally:
                timer["provider"] += time.perf_counter() - started

    class TimedCli(EngineCli):
        def run(self, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return super().run(*args, **kwargs)
            finally:
                timer["engine"] += time.perf_counter() - started
                timer["calls"] += 1

    with tempfile.TemporaryDirectory(prefix="bluegreen-bench-auto-") as tmp, pulumi_session() as harness:
        project = automation_project(bench, Path(tmp) / "project")
        t = load_stack(project, bench.stack)
        providers: dict[str, Any] = {CONTAINER_TYPE: ContainerProvider(PveClient.from_topology(t))}
        for name in ("Bootstrap", "PostgresDatabase", "HaproxyConfig", "Pm2Ecosystem", "AppEnv"):
            providers[DYNAMIC_PREFIX + name] = DynamicProvider(getattr(hostconfig, f"{name}DynamicProvider")())
        providers[DYNAMIC_PREFIX + "LiveColorRouting"] = TimedProvider(hostconfig.LiveColorRoutingDynamicProvider(),
                                                                       real=True)
        engine = Engine(providers)
        command = TimedCli(harness, engine, project, secrets=SECRETS, live=lambda: REAL)
        engine.up(command.program(bench.stack))  # the first `pulumi up`: imports, records the routing
        yield StandIn(project, command, timer)


# --------------------------------------------------------------------------- one round


def _in_process(bench: Bench, *, stand_in: StandIn | None) -> dict[str, float]:
    if stand_in is None:
        estate = bench.estate()
    else:
        live = bench.live_color()
        set_active_color_in_file(stand_in.project, bench.stack, live)  # a consistent estate to start from
        estate = bench.estate(topology=load_stack(stand_in.project, bench.stack), pulumi_command=stand_in.command)
        before = dict(stand_in.timer)
    started = time.perf_counter()
    result = when_unlocked(lambda: switch(estate, watch=False))
    wall = time.perf_counter() - started
    if not result.ok or result.noop:
        raise BenchError(f"the in-process switch ({'automation' if stand_in else 'direct'}) did not switch: "
                         f"{result.error or 'noop'}")
    if stand_in is None:
        return {"wall": wall}
    set_active_color_in_file(bench.project, bench.stack, result.color)  # the lab's declared colour follows
    engine = stand_in.timer["engine"] - before["engine"]
    provider = stand_in.timer["provider"] - before["provider"]
    return {"wall": wall, "standIn": engine - provider, "provider": provider,
            "calls": stand_in.timer["calls"] - before["calls"]}


def _watch_seconds(run: Any) -> float:
    return sum(s.seconds or 0.0 for s in run.steps if s.depth == 0 and s.name.startswith("watch "))


def run(bench: Bench, knobs: Knobs) -> dict[str, Any]:
    series: dict[str, list[float]] = {k: [] for k in (
        "bareProcess", "bareFlipMs", "emergencySwitch", "emergencyRollback", "emergencyFlipMs", "normalSwitch",
        "normalRollback", "rollbackWatch", "direct", "automation", "automationStandIn", "automationProvider")}
    calls: list[float] = []
    say(f"-- switch and rollback against a bare flip, {knobs.switch_rounds} rounds")
    with pulumi_stand_in(bench) as stand_in:
        for i in range(knobs.switch_rounds):
            wall, flip_ms = baseline(bench)
            series["bareProcess"].append(wall)
            series["bareFlipMs"].append(flip_ms)
            for key, args in (("emergencySwitch", ("switch", "--emergency", "--yes")),
                              ("emergencyRollback", ("rollback", "--emergency", "--yes"))):
                done = when_unlocked(lambda args=args: cli(bench, *args))  # type: ignore[misc]
                series[key].append(done.wall)
                series["emergencyFlipMs"].append(float(done.data["timingsMs"]["flip_to_first_answer"]))
            done = when_unlocked(lambda: cli(bench, "switch", "--yes", "--no-watch"))
            series["normalSwitch"].append(done.wall)
            done = when_unlocked(lambda: cli(bench, "rollback", "--yes"))
            watched = _watch_seconds(done)
            series["normalRollback"].append(done.wall - watched)
            series["rollbackWatch"].append(watched)
            series["direct"].append(_in_process(bench, stand_in=None)["wall"])
            auto = _in_process(bench, stand_in=stand_in)
            series["automation"].append(auto["wall"])
            series["automationStandIn"].append(auto["standIn"])
            series["automationProvider"].append(auto["provider"])
            calls.append(auto["calls"])
            say(f"   round {i + 1}/{knobs.switch_rounds}")
    return {"rounds": knobs.switch_rounds, "targets": TARGETS,
            "seconds": {k: rounded(v) for k, v in series.items() if not k.endswith("Ms")},
            "ms": {k: rounded(v, 1) for k, v in series.items() if k.endswith("Ms")},
            "medians": {k: median(v) for k, v in series.items()},
            "automationPulumiCallsMedian": median(calls)}


def main(argv: list[str] | None = None) -> int:
    return run_alone(__doc__, run, "--rounds", "switch_rounds", argv)


if __name__ == "__main__":
    sys.exit(main())


