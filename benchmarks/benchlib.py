"""What every benchmark shares: the lab, a private copy of the project, timed executors, the
request loop in a process of its own, percentiles, tables and a description of the machine.

Benchmarks work on a copy of `Pulumi.yaml` and `stacks/` (switches record the live colour in the
stack file, and the repository's copy must not change under other people's feet). The lab itself
is shared: `open_bench()` joins it through `Lab.session()`, so a lab someone else started keeps
running and one started here is stopped again at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bluegreen.hosts import haproxy as haproxy_runtime
from bluegreen.hosts.executor import CommandResult, Executor, SshExecutor, connect
from bluegreen.lab.lab import Lab
from bluegreen.lab.loadgen import Sample
from bluegreen.model.errors import BlueGreenError, LockedError
from bluegreen.model.progress import Progress, RecordingProgress, StepRecord
from bluegreen.model.stackfile import load_stack, set_active_color_in_file
from bluegreen.model.topology import Container, Topology, other_color
from bluegreen.ops.deploy import deploy
from bluegreen.ops.estate import Estate
from bluegreen.ops.status import status
from bluegreen.ops.switch import switch

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
        # Read again every time: each switch records the new live colour in the stack file.
        return load_stack(self.project, self.stack)

    def service(self, *, progress: Progress | None = None,
                executor_factory: Callable[[Container], Executor] | None = None) -> Estate:
        return Estate(self.topology(), progress=progress, executor_factory=executor_factory)

    def executor(self, host: Container) -> SshExecutor:
        return connect(self.topology(), host)

    def live_color(self) -> str:
        t = self.topology()
        with self.executor(t.load_balancer) as lb:
            return haproxy_runtime.live_color(lb, t)

    def sync_declared_color(self) -> str:
        """Make the copy's declared colour the one HAProxy really routes to (no drift to start from)."""
        live = self.live_color()
        set_active_color_in_file(self.project, self.stack, live)
        return live


@contextlib.contextmanager
def open_bench() -> Iterator[Bench]:
    lab = Lab()
    with lab.session(), tempfile.TemporaryDirectory(prefix="bluegreen-bench-") as tmp:
        bench = Bench(lab=lab, project=copy_project(Path(tmp) / "project"))
        bench.sync_declared_color()
        yield bench


def when_unlocked(action: Callable[[], T], *, wait_s: float = LOCK_WAIT_S) -> T:
    """Run `action`, waiting while someone else (a test session on the same lab) holds the lock."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return action()
        except LockedError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1.0)


def ensure_deployed(bench: Bench, progress: Progress | None = None) -> dict[str, str | None]:
    """Both colours serve a release and the live one is healthy, deploying what is missing.

    Returns {colour: ref served}. A cutover can only be measured between two working colours.
    """
    report = status(bench.service(progress=progress))
    if report.live is None:
        raise BenchError(f"cannot tell the live colour: {'; '.join(report.errors) or 'HAProxy did not say'}")
    if not report.colors[report.live].healthy:
        log.info("the live colour %s serves nothing: deploying v1 to the standby and switching", report.live)
        when_unlocked(lambda: deploy(bench.service(progress=progress), "v1", migrate=True))
        when_unlocked(lambda: switch(bench.service(progress=progress), watch=False))
        report = status(bench.service(progress=progress))
    standby = other_color(report.live or report.declared)
    if not report.colors[standby].release or not report.colors[standby].healthy:
        log.info("the standby %s serves nothing: deploying main to it", standby)
        when_unlocked(lambda: deploy(bench.service(progress=progress), "main", migrate=True))
        report = status(bench.service(progress=progress))
    broken = [c for c, s in report.colors.items() if not s.healthy or not s.release]
    if broken:
        raise BenchError(f"colour(s) {', '.join(broken)} still not serving after deploying: "
                         + "; ".join(e for c in broken for e in report.colors[c].errors))
    return {c: s.ref for c, s in report.colors.items()}


# --------------------------------------------------------------------------- timed executors


@dataclass(frozen=True)
class CallRecord:
    host: str
    step: str
    kind: str  # connect, run, put, get
    seconds: float


class TimingExecutor:
    """An executor that records how long each call took, by host and step, then delegates."""

    def __init__(self, inner: Executor, records: list[CallRecord]) -> None:
        self.inner = inner
        self.host = inner.host
        self.records = records

    def _timed(self, kind: str, step: str, call: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return call()
        finally:
            self.records.append(CallRecord(self.host, step, kind, time.perf_counter() - started))

    def run(self, command: str, *, step: str, check: bool = True, timeout: float | None = None,
            input: str | None = None, env: Mapping[str, str] | None = None) -> CommandResult:
        return self._timed("run", step, lambda: self.inner.run(command, step=step, check=check,
                                                                timeout=timeout, input=input, env=env))

    def put(self, path: str, content: str | bytes, *, step: str, mode: int = 0o644) -> None:
        self._timed("put", step, lambda: self.inner.put(path, content, step=step, mode=mode))

    def get(self, path: str, *, step: str) -> bytes | None:
        return self._timed("get", step, lambda: self.inner.get(path, step=step))

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> TimingExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def timing_factory(t: Topology, records: list[CallRecord]) -> Callable[[Container], Executor]:
    """Executors that connect eagerly (so the SSH handshake is its own record) and time each call."""

    def make(container: Container) -> Executor:
        inner = connect(t, container)
        started = time.perf_counter()
        inner.connect()
        records.append(CallRecord(inner.host, "ssh connect", "connect", time.perf_counter() - started))
        return TimingExecutor(inner, records)

    return make


# --------------------------------------------------------------------------- request loop process


class LoadProcess:
    """`bluegreen.loadgen.RequestLoop` in its own process (`loadworker.py`).

    In a process of its own the clients do not share a GIL with the SSH work of the benchmark,
    so what they measure is the proxy and the app, not paramiko. Sample times are
    `time.monotonic()`, one clock for every process on the machine, so they line up with the
    moments the benchmark records. Stopped by closing its stdin; killed by its pid if it hangs.
    """

    def __init__(self, url: str, *, clients: int = 16, pause: float = 0.0, max_seconds: float = 900.0,
                 warmup_requests: int = 200, ca_file: str | None = None,
                 server_name: str | None = None) -> None:
        self.url = url
        # https as a visitor: verified against ca_file for server_name (never unverified)
        self.tls_args = [ca_file or "", server_name or ""] if url.startswith("https:") else []
        self.clients = clients
        self.pause = pause
        self.max_seconds = max_seconds
        self.warmup = warmup_requests
        self._dir = tempfile.TemporaryDirectory(prefix="bluegreen-load-")
        self.out = Path(self._dir.name) / "samples.json"
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> LoadProcess:
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH_DIR / "loadworker.py"), self.url, str(self.clients),
             str(self.pause), str(self.max_seconds), str(self.warmup), str(self.out), *self.tls_args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=PROJECT_DIR)
        line = self._readline(timeout=60.0)
        if line != "ready":
            self._kill()
            raise BenchError(f"the request loop on {self.url} did not start (said {line!r})")
        return self

    def _readline(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().strip() if ready else ""

    def stop(self) -> list[Sample]:
        """Stop the clients and return every sample, oldest first."""
        assert self.proc is not None and self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._kill()
            raise BenchError(f"the request loop on {self.url} did not stop; killed pid {self.proc.pid}") \
                from None
        if self.proc.returncode != 0:
            raise BenchError(f"the request loop on {self.url} failed (exit {self.proc.returncode})")
        rows = json.loads(self.out.read_text())
        return [Sample(started=r[0], latency_ms=r[1], status=r[2], served_by=r[3], error=r[4]) for r in rows]

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __exit__(self, *exc: object) -> None:
        self._kill()
        if self.proc is not None:
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self._dir.cleanup()


# --------------------------------------------------------------------------- numbers and tables


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: Iterable[float]) -> float | None:
    return percentile(values, 50)


def fmt_ms(seconds: float | None, digits: int = 1) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.{digits}f} ms"


def fmt_num(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


_COLOUR_WORD = re.compile(r"\b(blue|green)\b")


def generic_step(name: str) -> str:
    """A step name with the colour taken out, so steps of switches both ways group together."""
    return _COLOUR_WORD.sub("<colour>", name)


class StepTree:
    """A RecordingProgress that also knows which steps ran inside another one (a deploy's backup
    runs inside its "migrations" step), so top-level durations add up without double counting."""

    def __init__(self) -> None:
        self.progress = RecordingProgress(listener=self._on)
        self._depth: dict[int, int] = {}
        self._open = 0

    def _on(self, event: str, record: StepRecord) -> None:
        if event == "start":
            self._depth[id(record)] = self._open
            self._open += 1
        elif event == "end":
            self._open -= 1

    def top_level(self) -> list[StepRecord]:
        return [s for s in self.progress.steps if self._depth.get(id(s)) == 0]


@dataclass
class Section:
    """One benchmark's contribution to RESULTS.md: prose and tables, plus the raw figures."""

    title: str
    markdown: str
    data: dict[str, Any] = field(default_factory=dict)
    headline: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- the machine


def _first_line(argv: Sequence[str]) -> str:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _pm2_version() -> str:
    # `pm2 --version` would start a daemon; the package file says the same without one.
    root = _first_line(["npm", "root", "-g"])
    try:
        return str(json.loads((Path(root) / "pm2" / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"


def _meminfo_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    """The 1/5/15-minute load: other work on the machine skews every latency measured here."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def machine_info() -> dict[str, str]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "memory": _meminfo_total(),
        "kernel": platform.release(),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo \"$PRETTY_NAME\""]),
        "haproxy": _first_line(["haproxy", "-v"]),
        "node": _first_line(["node", "--version"]),
        "pm2": _pm2_version(),
        "python": platform.python_version(),
        "postgresql": _first_line(["/usr/lib/postgresql/15/bin/postgres", "--version"]),
        "openssh": _first_line(["ssh", "-V"]),
    }


def ssh_command_cost(bench: Bench, repeats: int = 10) -> dict[str, str]:
    """What one command over SSH costs here, and how much of it is the remote login shell's rc file.

    sshd runs every command through the user's shell, and Debian's bash reads ~/.bashrc when sshd
    starts it. The lab's hosts share this machine's root account, so they pay for whatever that
    file does (here: pyenv initialisation); a stock container does not.
    """
    t = bench.topology()
    with bench.executor(t.load_balancer) as lb:
        lb.run("true", step="warm up")
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            lb.run("true", step="measure")
            runs.append(time.perf_counter() - started)
    rc = []
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run(["bash", "-c", ". ~/.bashrc"], capture_output=True, timeout=60)
        rc.append(time.perf_counter() - started)
    return {"one SSH command (`true`) on an open connection, median": fmt_ms(median(runs), 0),
            "of which root's ~/.bashrc, which bash runs for each command sshd starts": fmt_ms(median(rc), 0)}


def machine_table(info: Mapping[str, str]) -> str:
    return md_table(["", ""], [(k, v) for k, v in info.items()])


def run_standalone(doc: str | None, run: Callable[..., Section], counts: dict[str, int],
                   argv: list[str] | None = None) -> int:
    """`python benchmarks/bench_X.py`: one benchmark on the lab, its section printed as markdown.
    `counts` are its repetition options (`{"normal_repeats": 5}` gives `--normal-repeats 5`)."""
    parser = arg_parser(doc)
    for name, default in counts.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=default)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    with open_bench() as bench:
        section = run(bench, **{name: getattr(args, name) for name in counts})
    print(f"## {section.title}\n\n{section.markdown}")
    return 0


def arg_parser(doc: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("paramiko").setLevel(logging.WARNING)


def say(text: str) -> None:
    """Benchmark progress for the person watching (stderr; the figures go to stdout)."""
    sys.stderr.write(text.rstrip() + "\n")
    sys.stderr.flush()
