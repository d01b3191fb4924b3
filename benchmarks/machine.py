"""The machine a benchmark run shares, measured rather than assumed: what it is, how loaded it was
before and after, which other lab worlds ran beside it and how much CPU everything outside the
run took meanwhile.

`Census` samples /proc every few seconds in a thread of the process that owns the run (outside
the run's private world): per process, the CPU time it used between two samples, split into
"this run" (processes in the run's network namespace, and the sampling process's own children)
and "others" (everything else on the machine: other labs, other test runs, editors, builds).
The figures go into results.json; render.py turns them into the page's sentences.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK")
LAB_DIRS = Path("/var/tmp")
LAB_PREFIX = "jw-lab"


# --------------------------------------------------------------------------- what the machine is


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


def _proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def facts() -> dict[str, Any]:
    """CPU count and model, memory, kernel and the versions of every real component the lab runs."""
    memory_kb = (_proc_field("/proc/meminfo", "MemTotal") or "0 kB").split()[0]
    return {
        "cpus": os.cpu_count() or 0,
        "cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "memoryGiB": round(int(memory_kb) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo \"$PRETTY_NAME\""]),
        "haproxy": _first_line(["haproxy", "-v"]),
        "node": _first_line(["node", "--version"]),
        "pm2": _pm2_version(),
        "python": platform.python_version(),
        "postgresql": _first_line(["/usr/lib/postgresql/15/bin/postgres", "--version"]),
        "openssh": _first_line(["ssh", "-V"]),
    }


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def git_commit(repo: Path) -> dict[str, Any]:
    """The commit the run measured, and whether the tree had uncommitted changes to tracked files."""
    def git(*args: str) -> str:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    return {"commit": git("rev-parse", "HEAD") or "unknown", "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


# --------------------------------------------------------------------------- other labs


def running_labs(exclude: Sequence[Path] = ()) -> list[str]:
    """The lab directories (/var/tmp/jw-lab*) with at least one live server, by name.

    A lab's servers are known by the pid files it writes (`{"pid": ..., "cmd": ...}`); a pid
    counts only while /proc says that pid still runs that command line (the lab's own check)."""
    from bluegreen.lab.services import ManagedProcess

    skip = {p.resolve() for p in exclude}
    found = []
    for lab in sorted(LAB_DIRS.glob(f"{LAB_PREFIX}*")):
        if lab.resolve() in skip or not (lab / "pids").is_dir():
            continue
        for pid_file in sorted((lab / "pids").glob("*.pid")):
            try:
                if not pid_file.read_text().lstrip().startswith("{"):
                    continue  # a plain pid file has no command to check the pid against
            except OSError:
                continue
            if ManagedProcess(pid_file.stem, pid_file).alive():
                found.append(lab.name)
                break
    return found


# --------------------------------------------------------------------------- CPU by whom


def _net_ns(pid: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return ""


def _stat(pid: str) -> tuple[str, int, int, int] | None:
    """(command, ppid, cpu ticks used, start time in ticks since boot) of one process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    head, _, rest = raw.rpartition(")")
    fields = rest.split()
    try:
        return head.split("(", 1)[1], int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[19])
    except (IndexError, ValueError):
        return None


def _cpu_total() -> tuple[int, int]:
    """(busy ticks, all ticks) over every CPU since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def _boot_ticks_now() -> float:
    return float(Path("/proc/uptime").read_text().split()[0]) * TICKS


@dataclass
class Census:
    """CPU used on the machine while a run went on, ours apart from everyone else's.

    `ours_ns`: the network namespace of the run's private world (`net:[inode]`), or None when the
    run shares the machine's own; the sampling process and its descendants are always ours."""

    ours_ns: str | None = None
    interval: float = 2.0
    exclude_labs: Sequence[Path] = ()
    started: float = 0.0
    load_before: list[float] = field(default_factory=list)
    labs_before: list[str] = field(default_factory=list)
    _seen: dict[int, tuple[int, int]] = field(default_factory=dict)  # pid -> (start, ticks)
    _ours_ticks: int = 0
    _other_ticks: dict[str, int] = field(default_factory=dict)
    _cpu0: tuple[int, int] = (0, 0)
    _last_boot_ticks: float = 0.0
    _max_load: float = 0.0
    _labs_during: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Census:
        self.started = time.monotonic()
        self.load_before = load_average()
        self.labs_before = running_labs(self.exclude_labs)
        self._cpu0 = _cpu_total()
        self._sample(first=True)
        self._thread = threading.Thread(target=self._run, name="census", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self, *, first: bool = False) -> None:
        me = os.getpid()
        previous_sample = self._last_boot_ticks
        self._last_boot_ticks = _boot_ticks_now()
        stats: dict[int, tuple[str, int, int, int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                got = _stat(entry)
                if got is not None:
                    stats[int(entry)] = got
        parents = {pid: s[1] for pid, s in stats.items()}

        def ours(pid: int) -> bool:
            if self.ours_ns and _net_ns(str(pid)) == self.ours_ns:
                return True
            for _ in range(64):  # up the tree to the sampling process
                if pid == me:
                    return True
                pid = parents.get(pid, 0)
                if pid <= 1:
                    return False
            return False

        seen: dict[int, tuple[int, int]] = {}
        for pid, (command, _, ticks, start) in stats.items():
            before = self._seen.get(pid)
            if before is not None and before[0] == start:
                used = ticks - before[1]
            elif first or start < previous_sample:
                used = 0  # running before the run (or before our last look): no baseline yet
            else:
                used = ticks  # started since the last sample: all of its time is in the run
            seen[pid] = (start, ticks)
            if used <= 0:
                continue
            if ours(pid):
                self._ours_ticks += used
            else:
                self._other_ticks[command] = self._other_ticks.get(command, 0) + used
        self._seen = seen
        self._max_load = max(self._max_load, os.getloadavg()[0])
        self._labs_during.update(running_labs(self.exclude_labs))

    def stop(self) -> dict[str, Any]:
        """Stop sampling; the figures for results.json."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        seconds = time.monotonic() - self.started
        busy1, all1 = _cpu_total()
        busy = (busy1 - self._cpu0[0]) / max(all1 - self._cpu0[1], 1)
        cpus = os.cpu_count() or 1
        others = sum(self._other_ticks.values()) / TICKS
        run = self._ours_ticks / TICKS
        top = sorted(self._other_ticks.items(), key=lambda kv: -kv[1])[:5]
        return {
            "seconds": round(seconds, 1),
            "loadBefore": self.load_before,
            "loadAfter": load_average(),
            "loadMax1min": round(self._max_load, 2),
            "otherLabsBefore": self.labs_before,
            "otherLabsAfter": running_labs(self.exclude_labs),
            "otherLabsDuring": sorted(self._labs_during),
            "cpusBusy": round(busy * cpus, 2),
            "cpusUsedByRun": round(run / max(seconds, 1e-9), 2),
            "cpusUsedByOthers": round(others / max(seconds, 1e-9), 2),
            "busiestOthers": [{"command": name, "cpus": round(ticks / TICKS / max(seconds, 1e-9), 2)}
                              for name, ticks in top],
            "cpus": cpus,
            "sampleSeconds": self.interval,
        }
