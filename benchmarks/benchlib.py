"""What every benchmark shares: the lab through a private copy of the project, the CLI run as a
user runs it (with its progress lines read as they come), an executor that notes when a step's
command was sent, and percentiles.

Benchmarks work on a copy of `Pulumi.yaml` and `stacks/`: switches record the declared colour,
and the repository's files must not change under other people's feet. Every operation goes
through the product's own paths: the CLI (`python -m bluegreen ...`) or an `ops` function on an
`ops.estate.Estate` built as the CLI builds it (pooled OpenSSH sessions for a switch, the same
executor for everything else). Nothing here times a private SSH path of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bluegreen.hosts import haproxy as haproxy_runtime
from bluegreen.hosts.executor import CommandResult, DelegatingExecutor, Executor
from bluegreen.hosts.openssh import OpenSshExecutor
from bluegreen.lab.lab import Lab
from bluegreen.model.errors import BlueGreenError, LockedError
from bluegreen.model.progress import Progress
from bluegreen.model.secrets import stack_secrets
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import Topology
from bluegreen.ops.estate import Estate

log = logging.getLogger("bluegreen.bench")

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent
STACK = "lab"
LOCK_WAIT_S = 180.0
T = TypeVar("T")


class BenchError(BlueGreenError):
    """The lab is not in a state a benchmark can measure (nothing deployed, a step misbehaved)."""


# --------------------------------------------------------------------------- the project copy


def copy_project(dest: Path, source: Path = PROJECT_DIR) -> Path:
    """`Pulumi.yaml` and `stacks/` of `source` under `dest`: enough for `load_stack` and switches."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "Pulumi.yaml", dest / "Pulumi.yaml")
    shutil.copytree(source / "stacks", dest / "stacks", dirs_exist_ok=True)
    return dest


@dataclass
class Bench:
    """The running lab seen through a private project copy."""

    lab: Lab
    project: Path
    stack: str = STACK

    def topology(self) -> Topology:
        # Read again every time: each switch records the new live colour.
        return load_stack(self.project, self.stack)

    def estate(self, *, progress: Progress | None = None, topology: Topology | None = None,
               pulumi_command: Any = None) -> Estate:
        """The handle the CLI builds (`faces.cli_support.cli_estate`): the stack's secrets, default
        executors (pooled OpenSSH sessions inside `pooled()`)."""
        t = topology or self.topology()
        return Estate(t, progress=progress, secrets=stack_secrets(t), pulumi_command=pulumi_command)

    def live_color(self) -> str:
        t = self.topology()
        with OpenSshExecutor(t, t.load_balancer) as lb:
            return haproxy_runtime.live_color(lb, t)


@contextlib.contextmanager
def open_bench() -> Iterator[Bench]:
    """The lab (started if nothing runs, stopped again at the end if this started it)."""
    lab = Lab()
    with lab.session(), tempfile.TemporaryDirectory(prefix="bluegreen-bench-") as tmp:
        yield Bench(lab=lab, project=copy_project(Path(tmp) / "project"))


def when_unlocked(action: Callable[[], T], *, wait_s: float = LOCK_WAIT_S) -> T:
    """Run `action`, waiting while someone else holds the lock (a shared lab only)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return action()
        except LockedError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1.0)


# --------------------------------------------------------------------------- the CLI


# What TerminalProgress writes when stderr is not a terminal (faces/terminal.py).
_START = re.compile(r"^  \.\. (?P<name>.+)$")
_END = re.compile(r"^ *(?P<mark>ok|FAILED) (?P<name>.+) \((?P<seconds>\d+(?:\.\d+)?)s\)$")


@dataclass
class Step:
    """One progress step of a CLI run: the product's own duration, and when its lines arrived."""

    name: str
    depth: int
    seconds: float | None = None  # as the CLI printed it (0.1 s resolution)
    ok: bool | None = None
    started: float | None = None  # time.monotonic() when the start line arrived
    ended: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "depth": self.depth, "seconds": self.seconds, "ok": self.ok}


def parse_progress(lines: Iterable[tuple[float, str]]) -> list[Step]:
    """Steps from the CLI's progress lines (`  .. name` at the start, `      ok name (1.2s)` at the
    end), nested as they ran: a step started inside another has a greater depth."""
    steps: list[Step] = []
    open_steps: list[Step] = []
    for moment, line in lines:
        line = line.rstrip("\n")
        started = _START.match(line)
        if started:
            step = Step(started["name"], depth=len(open_steps), started=moment)
            steps.append(step)
            open_steps.append(step)
            continue
        ended = _END.match(line)
        if not ended:
            continue
        for i in range(len(open_steps) - 1, -1, -1):
            if open_steps[i].name == ended["name"]:
                step = open_steps.pop(i)
                step.seconds, step.ok, step.ended = float(ended["seconds"]), ended["mark"] == "ok", moment
                break
    return steps


@dataclass
class CliRun:
    argv: list[str]
    code: int
    wall: float
    started: float
    data: Any
    steps: list[Step]
    stderr: str

    def top_level_seconds(self) -> float:
        return sum(s.seconds or 0.0 for s in self.steps if s.depth == 0)


def cli(bench: Bench, *args: str, timeout: float = 900.0, check: bool = True) -> CliRun:
    """`python -m bluegreen ARGS --json --stack lab --cwd <copy>`, as a user runs it: wall time
    from process start to exit, the JSON result, and the progress steps as they were printed."""
    argv = [sys.executable, "-m", "bluegreen", *args, "--json", "--stack", bench.stack, "--cwd", str(bench.project)]
    lines: list[tuple[float, str]] = []
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True, cwd=bench.project)
    assert proc.stderr is not None and proc.stdout is not None
    err_stream = proc.stderr

    def read_stderr() -> None:
        for line in err_stream:
            lines.append((time.monotonic(), line))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        out = proc.stdout.read()
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise BenchError(f"`bluegreen {' '.join(args)}` did not finish within {timeout:g} s") from None
    wall = time.monotonic() - started
    reader.join(10)
    stderr = "".join(line for _, line in lines)
    try:
        data = json.loads(out) if out.strip() else None
    except ValueError:
        data = None
    if check and proc.returncode != 0:
        raise BenchError(f"`bluegreen {' '.join(args)}` failed (exit {proc.returncode}): {stderr.strip()[-800:]}")
    return CliRun(argv=argv, code=proc.returncode, wall=wall, started=started, data=data,
                  steps=parse_progress(lines), stderr=stderr)


# --------------------------------------------------------------------------- observing an executor


class StepClock(DelegatingExecutor):
    """An executor that notes when each command of a step was sent (time.monotonic()), then hands
    it to the real one unchanged: the moment a flip or a reload command leaves, seen from outside."""

    def __init__(self, inner: Executor) -> None:
        super().__init__(inner)
        self.sent: list[tuple[str, float]] = []

    def first(self, prefix: str, since: float = 0.0) -> float | None:
        return next((when for step, when in self.sent if step.startswith(prefix) and when >= since), None)

    def run(self, command: str, *, step: str, check: bool = True, timeout: float | None = None,
            input: str | None = None, env: Mapping[str, str] | None = None) -> CommandResult:
        self.sent.append((step, time.monotonic()))
        return self.inner.run(command, step=step, check=check, timeout=timeout, input=input, env=env)

    def put(self, path: str, content: str | bytes, *, step: str, mode: int = 0o644) -> None:
        self.sent.append((step, time.monotonic()))
        self.inner.put(path, content, step=step, mode=mode)


# --------------------------------------------------------------------------- numbers


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: Iterable[float]) -> float | None:
    return percentile(values, 50)


def rounded(values: Iterable[float], digits: int = 4) -> list[float]:
    return [round(v, digits) for v in values]


_COLOUR_WORD = re.compile(r"\b(blue|green)\b")


def generic_step(name: str) -> str:
    """A step name with the colour taken out, so steps of runs both ways group together."""
    return _COLOUR_WORD.sub("<colour>", name)


@dataclass
class Knobs:
    """How much each benchmark repeats (run_all.py's options)."""

    cutover_rounds: int = 10
    switch_rounds: int = 8
    migrate_pairs: int = 3
    status_repeats: int = 5
    warm_push: bool = True
    gets: int = 4
    posts: int = 2
    pause: float = 0.02
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def quick(cls) -> Knobs:
        return cls(cutover_rounds=2, switch_rounds=2, migrate_pairs=1, status_repeats=2, warm_push=False)

    def to_json(self) -> dict[str, Any]:
        return {"cutoverRounds": self.cutover_rounds, "switchRounds": self.switch_rounds,
                "migratePairs": self.migrate_pairs, "statusRepeats": self.status_repeats,
                "warmPush": self.warm_push, "getClients": self.gets, "postClients": self.posts,
                "pauseSeconds": self.pause}


def arg_parser(doc: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def run_alone(doc: str | None, bench_run: Callable[[Bench, Knobs], dict[str, Any]], option: str, knob: str,
              argv: list[str] | None = None) -> int:
    """One benchmark on its own (outside `make bench`): its one repetition knob as `option`, its
    data as JSON on stdout."""
    parser = arg_parser(doc)
    parser.add_argument(option, dest=knob, type=int, default=getattr(Knobs(), knob))
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    with open_bench() as bench:
        print(json.dumps(bench_run(bench, Knobs(**{knob: getattr(args, knob)})), indent=2))
    return 0


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("paramiko").setLevel(logging.WARNING)


def say(text: str) -> None:
    """Benchmark progress for the person watching (stderr)."""
    sys.stderr.write(text.rstrip() + "\n")
    sys.stderr.flush()
