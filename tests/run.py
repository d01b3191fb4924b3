"""The whole suite, with the integration tests spread over several private lab worlds.

    python tests/run.py [--worlds N] [--files NAME...] [--no-unit] [PYTEST ARGS...]

Each world is a network namespace of its own (its own loopback: 127.0.3.x free to bind again, and
no route anywhere else) plus a mount namespace of its own, for its whole life, in which
`/var/tmp/jw-lab` is `/var/tmp/jw-lab-world<N>`: N labs run side by side without seeing each
other. The files are dealt out before the start, longest first to the least loaded world, so a
world runs the same files in the same order every time (a test that leans on what an earlier file
left behind fails every time, not one run in five). Each world brings its lab up once and runs
each file in a pytest session that reuses the lab, then stops its lab by PID
(`bluegreen.lab down`) and its namespaces are deleted. The unit and Pulumi tests run meanwhile,
outside any world.

`--files` runs only the integration files named (`test_deploy.py` or a path) in the worlds, and
`--no-unit` leaves the unit and Pulumi tests out. Several runs may share one machine: each sets
`JW_TEST_WORLD_NAME` (default `world`) to a name of its own, so that their lab directories
(`/var/tmp/jw-lab-<name><N>`) differ; namespaces and logs are named by the runner's pid anyway.

Without root, or without `ip`/`unshare`/`nsenter`, or with `--worlds 1`, it is plain `pytest` in one lab.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
LAB_DIR = Path("/var/tmp/jw-lab")
MOUNT_NS_DIR = Path("/run/jw-test-worlds")
# Sessions run side by side: no shared .pytest_cache; failures and errors listed at the end of each.
PYTEST = (PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE")

# Seconds each file took in a CI-like run (three worlds on a 2-core machine): the longest go first,
# so that no world is left with a long file at the end. Files not listed count as a minute.
WEIGHTS = {
    "test_zzz_docs.py": 900, "test_dbsafety.py": 300, "test_zzz_lab_reset.py": 240, "test_sample_app.py": 165,
    "test_faults.py": 160,
    "test_emergency.py": 155, "test_deploy.py": 130, "test_mcp.py": 125, "test_next_app.py": 115,
    "test_providers.py": 110,
    "test_prisma_real.py": 75, "test_monitoring.py": 70, "test_zzz_takeover.py": 70, "test_clean_repo.py": 50,
    "test_fresh_estate.py": 40, "test_rebuild.py": 40, "test_routing.py": 30, "test_zz_legacy_lab.py": 25,
    "test_migration_state.py": 20, "test_lab.py": 17, "test_pve.py": 17, "test_health_root.py": 14,
    "test_convert.py": 11, "test_metrics.py": 10, "test_render_real.py": 8, "test_ssh.py": 8, "test_https.py": 1,
}


class WorldsUnavailable(Exception):
    """The namespaces for the worlds could not be made here."""


@dataclass
class Outcome:
    name: str
    world: int
    code: int
    seconds: float
    log: Path
    summary: str = ""


@dataclass
class World:
    index: int
    run_id: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def netns(self) -> str:
        return f"jwtest-{self.run_id}-{self.index}"

    @property
    def lab_dir(self) -> Path:
        return Path(f"/var/tmp/jw-lab-{os.environ.get('JW_TEST_WORLD_NAME', 'world')}{self.index}")

    @property
    def mount_ns(self) -> Path:
        return MOUNT_NS_DIR / self.netns

    def argv(self, *command: str) -> list[str]:
        # One network and one mount namespace for the world's whole life: a mount a test makes
        # (a full backup volume, say) is seen by the lab's daemons, which live in the same one.
        return ["nsenter", f"--net=/run/netns/{self.netns}", f"--mount={self.mount_ns}", "--",
                "sh", "-c", 'cd "$0" && exec "$@"', str(REPO), *command]

    def create(self, log: Path) -> None:
        """New namespaces and an empty lab directory: nothing from an earlier run (a lock a killed
        run left, say) reaches this one. Servers an earlier run left are stopped first, by pid."""
        LAB_DIR.mkdir(parents=True, exist_ok=True)
        self.lab_dir.mkdir(parents=True, exist_ok=True)
        self.lab_dir.chmod(0o755)
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        subprocess.run(["ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up"], check=True)
        # A persistent mount namespace is a file bind-mounted on a private mount (unshare(1)).
        MOUNT_NS_DIR.mkdir(parents=True, exist_ok=True)
        if subprocess.run(["mountpoint", "-q", str(MOUNT_NS_DIR)]).returncode != 0:
            subprocess.run(["mount", "--bind", str(MOUNT_NS_DIR), str(MOUNT_NS_DIR)], check=True)
            subprocess.run(["mount", "--make-private", str(MOUNT_NS_DIR)], check=True)
        self.mount_ns.touch()
        subprocess.run(["unshare", f"--mount={self.mount_ns}", "--propagation", "private", "--",
                        "mount", "--bind", str(self.lab_dir), str(LAB_DIR)], check=True)
        # The lab's own destroy: down by pid, then its files (the mounted directory itself stays).
        if any(self.lab_dir.iterdir()):
            destroy = [PYTHON, "-m", "bluegreen.lab", "destroy"]
            if self.run(destroy, log, timeout=300) != 0:
                raise subprocess.CalledProcessError(1, destroy)

    def run(self, command: list[str], log: Path, timeout: float | None = None) -> int:
        with open(log, "ab") as out:
            proc = subprocess.Popen(self.argv(*command), cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            self.processes.append(proc)
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                stop_group(proc)
                return 124
            finally:
                self.processes.remove(proc)

    def destroy(self) -> None:
        subprocess.run(["umount", str(self.mount_ns)], check=False, capture_output=True)
        self.mount_ns.unlink(missing_ok=True)
        subprocess.run(["ip", "netns", "delete", self.netns], check=False, capture_output=True)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a child this runner started (its own session) by its pid: INT first, as Ctrl-C would
    (pytest tears its fixtures down, a deploy under test restores and releases its lock), then
    TERM, then KILL."""
    for signum, grace in ((signal.SIGINT, 60), (signal.SIGTERM, 20), (signal.SIGKILL, None)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def can_make_worlds() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    for tool in ("ip", "unshare", "nsenter", "mount", "mountpoint"):
        if shutil.which(tool) is None:
            return f"no `{tool}`"
    # Root is not always enough (a container without CAP_SYS_ADMIN): try one of each, for real.
    probe = f"jwtest-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    private = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True)
    if private.returncode != 0:
        return f"`unshare --mount` failed: {private.stderr.strip()}"
    return None


# pytest's closing line (`1 failed, 5 passed in 58.72s (0:00:58)`), maybe inside `=` rules.
_CLOSING = re.compile(r"^=*\s*(?:\d+ (?:passed|failed|errors?|skipped|xfailed|xpassed|warnings?|deselected)"
                      r"(?:, )?)+ in [\d.]+s\b")


def last_line(log: Path) -> str:
    """pytest's closing line: the last line of the log that is one (a warning Python prints at exit,
    after pytest's summary, must not hide the counts), else the last line of all."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    closing = [line for line in lines if _CLOSING.match(line)]
    chosen = closing[-1] if closing else (lines[-1] if lines else "(no output)")
    return chosen.strip("= ")


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worlds", type=int, default=int(os.environ.get("JW_TEST_WORLDS", "3")),
                        help="labs side by side (default 3, or $JW_TEST_WORLDS); 1: plain pytest")
    parser.add_argument("--files", nargs="+", metavar="NAME", help="only these integration files")
    parser.add_argument("--no-unit", action="store_true", help="leave the unit and Pulumi tests out")
    args, pytest_args = parser.parse_known_args(argv)
    sys.path.insert(0, str(REPO))
    from bluegreen.lab.services import servers_get_default_signals

    servers_get_default_signals()
    signal.signal(signal.SIGTERM, _interrupt)  # a CI time-out stops the worlds like Ctrl-C does
    why_not = can_make_worlds()
    # Chosen files always run in a world of their own (even one): never in the shared root lab.
    if (args.worlds > 1 or args.files) and not why_not and not pytest_args:
        try:
            return run_in_worlds(max(args.worlds, 1), only=args.files, unit=not args.no_unit)
        except WorldsUnavailable as exc:
            why_not = str(exc)
    if args.files:
        print(f"tests: --files needs lab worlds, which cannot be made here ({why_not})", file=sys.stderr)
        return 2
    if why_not and args.worlds > 1:
        print(f"tests: one lab ({why_not})", file=sys.stderr)
    return subprocess.call([PYTHON, "-m", "pytest", "-q", *pytest_args], cwd=REPO)


def deal(files: list[Path], count: int) -> list[list[Path]]:
    """Longest first, each to the world with the least work so far (ties: the lowest index)."""
    shares: list[list[Path]] = [[] for _ in range(count)]
    loads = [0] * count
    for f in sorted(files, key=lambda f: (-WEIGHTS.get(f.name, 60), f.name)):
        i = loads.index(min(loads))
        shares[i].append(f)
        loads[i] += WEIGHTS.get(f.name, 60)
    return shares


def integration_files(only: list[str] | None) -> list[Path]:
    every = sorted((REPO / "tests/integration").glob("test_*.py"))
    if not only:
        return every
    wanted = {Path(name).name for name in only}
    unknown = wanted - {f.name for f in every}
    if unknown:
        raise SystemExit(f"tests: no integration file {', '.join(sorted(unknown))}")
    return [f for f in every if f.name in wanted]


def run_in_worlds(count: int, *, only: list[str] | None = None, unit: bool = True) -> int:
    started = time.monotonic()
    run_id = str(os.getpid())
    logs = Path(f"/tmp/jw-test-logs-{run_id}")
    logs.mkdir(parents=True)
    # Each file's pytest --basetemp under it; short, as tests put unix sockets there (108 bytes)
    scratch = Path(f"/tmp/jwt{run_id}")
    scratch.mkdir(parents=True)
    files = integration_files(only)
    count = min(count, len(files))
    dealt = dict(enumerate(deal(files, count)))
    worlds = [World(i, run_id) for i in range(count)]
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    stopping = threading.Event()

    def report(outcome: Outcome) -> None:
        with lock:
            outcomes.append(outcome)
            verdict = "ok  " if outcome.code == 0 else "FAIL"
            print(f"[world {outcome.world}] {verdict} {outcome.name:32} {outcome.seconds:6.0f}s  {outcome.summary}",
                  flush=True)

    def work(world: World) -> None:
        log = logs / f"world{world.index}-lab.log"
        t0 = time.monotonic()
        code = world.run([PYTHON, "-m", "bluegreen.lab", "up"], log, timeout=900)
        report(Outcome("(lab up)", world.index, code, time.monotonic() - t0, log,
                       "" if code == 0 else last_line(log)))
        # Each dealt file is read, not popped: one that dies with its thread is still counted.
        for test_file in dealt[world.index]:
            if code != 0 or stopping.is_set():
                break
            file_log = logs / f"{test_file.stem}.log"
            t0 = time.monotonic()
            rc = world.run([*PYTEST, f"--basetemp={scratch / test_file.stem.removeprefix('test_')}",
                            str(test_file.relative_to(REPO))], file_log)
            report(Outcome(test_file.name, world.index, rc, time.monotonic() - t0, file_log, last_line(file_log)))

    fast_log = logs / "unit-and-pulumi.log"
    fast: subprocess.Popen[bytes] | None = None
    threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in worlds]
    try:
        for w in worlds:
            w.create(logs / f"world{w.index}-lab.log")
    except (subprocess.CalledProcessError, OSError) as exc:
        for w in worlds:
            w.destroy()
        raise WorldsUnavailable(str(exc)) from None
    try:
        if unit:
            with open(fast_log, "wb") as out:
                fast = subprocess.Popen([*PYTEST, "tests/unit", "tests/pulumi"], cwd=REPO, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        print(f"tests: {'unit and Pulumi tests, and ' if unit else ''}{len(files)} integration files in "
              f"{count} lab worlds (logs in {logs})", flush=True)
        for thread in threads:
            thread.start()
        if fast is not None:
            fast_code = fast.wait()
            report(Outcome("unit + pulumi", -1, fast_code, time.monotonic() - started, fast_log,
                           last_line(fast_log)))
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        stopping.set()
        print("tests: interrupted; stopping the worlds", file=sys.stderr, flush=True)
        for proc in [fast, *(p for w in worlds for p in list(w.processes))]:
            if proc is not None:
                stop_group(proc)
        for thread in threads:
            thread.join(60)
    finally:
        namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for w in worlds:
            if w.netns in namespaces:
                w.run([PYTHON, "-m", "bluegreen.lab", "down"], logs / f"world{w.index}-lab.log", timeout=300)
                w.destroy()
        shutil.rmtree(scratch, ignore_errors=True)

    finished = {o.name for o in outcomes}
    not_run = [f.name for share in dealt.values() for f in share if f.name not in finished]
    failed = [o for o in outcomes if o.code != 0]
    for o in failed:
        text = o.log.read_text(errors="replace")
        print(f"\n{'=' * 30} {o.name} (world {o.world}, exit {o.code}) {'=' * 30}\n{text[-12000:]}")
    minutes = (time.monotonic() - started) / 60
    if not_run:
        print(f"\ntests: NOT RUN: {', '.join(not_run)}", flush=True)
    print(f"\ntests: {len(outcomes)} runs, {len(failed)} failed, {len(not_run)} files not run, "
          f"{minutes:.1f} min in all", flush=True)
    counts = tally(o.summary for o in outcomes if o.name != "(lab up)")
    print(f"{summary_line(counts, len(not_run))} in {minutes:.1f} min", flush=True)
    return 0 if not failed and not not_run and not stopping.is_set() else 1


_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)\b")


def tally(summaries: Iterable[str]) -> dict[str, int]:
    """pytest's closing lines (`22 passed, 1 xfailed in 9.1s`) summed by kind."""
    counts: dict[str, int] = {}
    for line in summaries:
        for number, kind in _COUNT.findall(line):
            kind = "error" if kind.startswith("error") else kind
            counts[kind] = counts.get(kind, 0) + int(number)
    return counts


def summary_line(counts: dict[str, int], not_run: int) -> str:
    """`N passed, N failed[, N error, ...]`: passed and failed always, the others when they occur."""
    parts = [f"{counts.get('passed', 0)} passed", f"{counts.get('failed', 0)} failed"]
    parts += [f"{counts[k]} {k}" for k in ("error", "skipped", "xfailed", "xpassed") if counts.get(k)]
    if not_run:
        parts.append(f"{not_run} files not run")
    return ", ".join(parts)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
