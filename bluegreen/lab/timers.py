"""The lab's stand-in for systemd's timers and path units: the lab's hosts have no systemd.

The bootstrap writes real unit files on every host (`render.offsite.render_units`) and enables
them where systemd runs; on the lab it only writes them. This daemon reads them from each host's
`/etc/systemd/system` every second and does what systemd would: a `.timer` fires its service at
each `OnCalendar=` elapse (computed by the real `systemd-analyze calendar`), a `.path` fires its
service when its `PathChanged=` file changes; firing runs the service's `ExecStart=` (with its
`Environment=`) on that host over SSH, like `systemctl start`. Each run is appended to
`<lab>/timers/runs.jsonl`. `python -m bluegreen.lab.timers --once` scans and fires what is due once.

Started by `lab up` (pid file, stopped by PID like every lab process); a host that is gone (a lost
node) is skipped until its units come back.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bluegreen.hosts.executor import connect
from bluegreen.lab.services import ManagedProcess, spawn
from bluegreen.model.errors import BlueGreenError
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import Container, Topology

log = logging.getLogger("bluegreen.lab.timers")

UNIT_DIR = "/etc/systemd/system"
NAME = "timers"
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """`[Section]` -> key -> values (a key may repeat, like `Environment=`)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        if current is not None and "=" in line:
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def next_elapse(spec: str, after: float) -> float | None:
    """The next time (epoch seconds) `OnCalendar=spec` elapses after `after`, from systemd itself."""
    base = datetime.fromtimestamp(after, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    try:
        out = subprocess.run([SYSTEMD_ANALYZE, "calendar", "--iterations=1", f"--base-time={base}", spec],
                             capture_output=True, text=True, timeout=10, env={**os.environ, "TZ": "UTC"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error("systemd-analyze calendar %r: %s", spec, exc)
        return None
    for line in out.stdout.splitlines():
        if "Next elapse:" in line:
            stamp = line.split("Next elapse:", 1)[1].strip()
            try:
                return datetime.strptime(stamp, "%a %Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC).timestamp()
            except ValueError:
                break
    log.error("systemd-analyze calendar %r: no next elapse (%s)", spec, (out.stderr or out.stdout).strip())
    return None


@dataclass
class Watch:
    host: Container
    unit: str  # e.g. bluegreen-dump.timer
    kind: str  # timer | path
    spec: str  # OnCalendar= or PathChanged=
    due: float | None = None  # timers: the next elapse
    seen: tuple[tuple[int, int, int], ...] | None = None  # paths: (inode, size, mtime_ns) of each, last seen


def _stat(paths: str) -> tuple[tuple[int, int, int], ...]:
    """Of each watched path (one per line): what tells a change, (0, -1, 0) when it is missing."""
    out = []
    for path in paths.splitlines():
        try:
            st = os.stat(path)
        except OSError:
            out.append((0, -1, 0))
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


@dataclass
class Scheduler:
    t: Topology
    record: Path
    watches: dict[tuple[int, str], Watch] = field(default_factory=dict)

    def scan(self, now: float) -> None:
        """Pick up units that appeared, forget those that are gone (their host was lost)."""
        found: set[tuple[int, str]] = set()
        for host in self.t.containers:
            folder = Path(host.path(UNIT_DIR))
            if not folder.is_dir():
                continue
            for unit in sorted(folder.iterdir()):
                if unit.suffix not in (".timer", ".path"):
                    continue
                key = (host.vmid, unit.name)
                found.add(key)
                spec = self._spec(unit)
                watch = self.watches.get(key)
                if watch is not None and watch.spec == spec:
                    continue
                watch = Watch(host=host, unit=unit.name, kind=unit.suffix[1:], spec=spec or "")
                if watch.kind == "timer" and spec:
                    watch.due = next_elapse(spec, now)
                elif watch.kind == "path" and spec:
                    watch.seen = _stat(spec)
                self.watches[key] = watch
        for key in set(self.watches) - found:
            del self.watches[key]

    @staticmethod
    def _spec(unit: Path) -> str | None:
        try:
            sections = parse_unit(unit.read_text())
        except OSError:
            return None
        key = ("Timer", "OnCalendar") if unit.suffix == ".timer" else ("Path", "PathChanged")
        values = sections.get(key[0], {}).get(key[1], [])
        if not values:
            return None
        return values[0] if unit.suffix == ".timer" else "\n".join(values)

    def tick(self, now: float) -> list[str]:
        """Fire what is due; the services run, in order."""
        fired = []
        for watch in list(self.watches.values()):
            if watch.kind == "timer" and watch.due is not None and now >= watch.due:
                watch.due = next_elapse(watch.spec, now)
                fired.append(self.fire(watch))
            elif watch.kind == "path" and watch.spec:
                state = _stat(watch.spec)
                before, watch.seen = watch.seen, state
                # A path that changed and is there (systemd: PathChanged fires on the close after a write).
                if before is not None and any(now_ != then and now_[1] >= 0 for now_, then in zip(state, before,
                                                                                                  strict=True)):
                    fired.append(self.fire(watch))
        return fired

    def fire(self, watch: Watch) -> str:
        service = watch.unit.rsplit(".", 1)[0] + ".service"
        started = time.time()
        outcome: dict[str, object] = {"host": watch.host.name, "unit": watch.unit, "service": service,
                                      "at": datetime.fromtimestamp(started, UTC).isoformat()}
        try:
            sections = parse_unit(Path(watch.host.path(f"{UNIT_DIR}/{service}")).read_text())
            command = sections["Service"]["ExecStart"][0]
            env = dict(item.split("=", 1) for item in sections["Service"].get("Environment", []) if "=" in item)
            with connect(self.t, watch.host) as ex:
                result = ex.run(command, step=f"run {service}", check=False, env=env or None, timeout=3600)
            outcome.update(exit=result.exit_code, stdout=result.stdout[-2000:], stderr=result.stderr[-2000:])
        except (OSError, KeyError, IndexError, BlueGreenError) as exc:
            outcome.update(exit=None, error=str(exc))
        outcome["seconds"] = round(time.time() - started, 3)
        self.record.parent.mkdir(parents=True, exist_ok=True)
        with self.record.open("a") as fh:
            fh.write(json.dumps(outcome) + "\n")
        log.info("%s on %s: exit %s", service, watch.host.name, outcome.get("exit"))
        return service


def runs_file(lab_dir: Path) -> Path:
    return lab_dir / NAME / "runs.jsonl"


def pid_file(lab_dir: Path) -> Path:
    return lab_dir / "pids" / f"{NAME}.pid"


def start_timers(lab_dir: Path, t: Topology) -> ManagedProcess:
    """The stand-in daemon for this lab (reused when it runs)."""
    argv = [sys.executable, "-m", "bluegreen.lab.timers", "--project-dir", t.project_dir, "--stack", t.stack,
            "--lab-dir", str(lab_dir)]
    return spawn(f"systemd timers stand-in ({lab_dir.name})", argv, pid_file=pid_file(lab_dir),
                 log_file=lab_dir / "logs" / f"{NAME}.log",
                 expect=f"bluegreen.lab.timers --project-dir {t.project_dir} --stack {t.stack} --lab-dir {lab_dir}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bluegreen.lab.timers")
    parser.add_argument("--project-dir", required=True)
    parser.add_argument("--stack", default="lab")
    parser.add_argument("--lab-dir", required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--once", action="store_true", help="scan, fire what is due, exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    scheduler = Scheduler(load_stack(Path(args.project_dir), args.stack), runs_file(Path(args.lab_dir)))
    while not stopping:
        now = time.time()
        scheduler.scan(now)
        scheduler.tick(now)
        if args.once:
            break
        time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
