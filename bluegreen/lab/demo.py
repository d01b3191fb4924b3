"""`make demo`: the whole blue-green story on the local lab, start to finish.

Starts the lab (configured exactly as `pulumi up` would), deploys the real Next.js 15 + Prisma app
(`sample-next/`, ref `next-v1`) to the standby and switches to it, renders its Server Action form
on the live colour, deploys `next-v2` (a Prisma migration adds the column the page shows),
switches under a steady request loop and counts failed requests, submits the form rendered before
the switch to the new colour (the row is written: both colours share the Server Actions key), rolls
back, shows status, the real install/build/migrate timings, and where every part runs. Safe to run
again without cleaning up.
Progress goes to stderr; the closing report goes to stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from bluegreen.faces.cli_support import format_status
from bluegreen.faces.terminal import TerminalProgress
from bluegreen.lab.lab import Lab
from bluegreen.lab.loadgen import LoadReport, RequestLoop
from bluegreen.lab.nextapp import DeployTimings, format_timings, read_build_timings, render_form, split_deploy, submit
from bluegreen.lab.services import servers_get_default_signals
from bluegreen.model.errors import BlueGreenError
from bluegreen.model.stackfile import load_stack
from bluegreen.ops.deploy import deploy
from bluegreen.ops.deploy_run import DeployResult
from bluegreen.ops.estate import Estate
from bluegreen.ops.rollback import rollback
from bluegreen.ops.status import status
from bluegreen.ops.switch import switch
from bluegreen.render import commands as cmd


@dataclass
class Chapter:
    what: str
    outcome: str
    seconds: float


class Story:
    """The demo's chapters as they happen: a line on stderr each, the table at the end."""

    def __init__(self, lab: Lab, progress: TerminalProgress) -> None:
        self.lab = lab
        self.progress = progress
        self.chapters: list[Chapter] = []
        self.timings: dict[str, DeployTimings] = {}

    def chapter(self, what: str, outcome: str, started: float) -> None:
        self.chapters.append(Chapter(what, outcome, time.monotonic() - started))
        sys.stderr.write(f"==> {what}: {outcome}\n")

    def estate(self) -> Estate:
        # Reloaded each time: switches record the declared live colour.
        return Estate(load_stack(self.lab.project_dir, "lab"), progress=self.progress)

    def deploy(self, ref: str) -> DeployResult:
        started = time.monotonic()
        first_step = len(self.progress.steps)
        result = deploy(self.estate(), ref, migrate=True)
        build = read_build_timings(self.lab.topology, result.color, result.release) if result.release else None
        self.timings[f"{ref} -> {result.color} ({result.dependencies})"] = split_deploy(
            self.progress.steps[first_step:], time.monotonic() - started, build)
        self.chapter(f"deploy {ref} to {result.color}", f"release {result.release}, deps {result.dependencies}, "
                     f"migrations {result.migrations_applied or 'none'}", started)
        return result


def run(clients: int = 16) -> int:
    progress = TerminalProgress(sys.stderr)
    lab = Lab()
    story = Story(lab, progress)
    started = time.monotonic()
    with progress.step("start the lab and configure every host as `pulumi up` would", long=True):
        info = lab.up()
    story.chapter("lab up", f"started {len(info.started)}, reused {len(info.reused)}", started)
    t = lab.topology

    story.deploy("next-v1")
    started = time.monotonic()
    switch1 = switch(story.estate())
    story.chapter(f"switch to {switch1.color}", f"flip {switch1.flip_ms:.0f} ms, verified {switch1.verified}",
                  started)
    started = time.monotonic()
    form = render_form(f"{t.public_url}/", ca_file=t.haproxy.ca_file, server_name=t.tls_server_name)
    story.chapter("render the Server Action form", f"on {form.served_by}, action {form.action_id[:12]}...", started)

    story.deploy("next-v2")
    started = time.monotonic()
    with RequestLoop.visitor(t, "/", clients=clients, max_seconds=300) as loop:
        loop.wait_for(300)
        switch2 = switch(story.estate())
        loop.wait_for(300)
    load: LoadReport = loop.report
    story.chapter(f"switch to {switch2.color} under load", f"{len(load.failures)} failed of {load.total} "
                  f"requests ({clients} clients)", started)

    started = time.monotonic()
    marker = f"demo-{int(time.time())}"
    sent = submit(f"{t.public_url}/", form, {"name": "Demo attendant", "post": marker},
                  ca_file=t.haproxy.ca_file, server_name=t.tls_server_name)
    rows = _count_shifts(lab, marker)
    action_ok = sent.status == 200 and rows == 1
    story.chapter("submit that form after the switch", f"HTTP {sent.status} from {sent.served_by}, "
                  f"rows written {rows}" + ("" if action_ok else "  <-- FAILED"), started)

    started = time.monotonic()
    back = rollback(story.estate())
    story.chapter(f"rollback to {back.color}", f"flip {back.flip_ms:.0f} ms", started)
    _report(story, status(story.estate()).to_json(), load, info.lab_dir, sys.stdout)
    return 0 if not load.failures and action_ok else 1


def _report(story: Story, report: dict[str, Any], load: LoadReport, lab_dir: Any, out: TextIO) -> None:
    t = story.lab.topology
    live = report["live"]
    release = report["colors"][live]["ref"] if live else None
    out.write("\n" + format_status(report) + "\n\n")
    out.write("The story:\n")
    width = max(len(c.what) for c in story.chapters)
    for c in story.chapters:
        out.write(f"  {c.what:<{width}}  {c.seconds:6.1f}s  {c.outcome}\n")
    out.write(f"\nRequest loop during the switch: {load.summary()}\n")
    out.write("\nWhere the deploys' time went (seconds; tool = SSH, git, snapshot, checks, backup):\n")
    out.write(format_timings(story.timings) + "\n")
    out.write(f"The lab now serves {release} from {live} at {t.public_url}/\n\n")
    out.write("Where each part runs (all on loopback, files under " f"{lab_dir}):\n")
    out.write(f"  Proxmox VE API (fakepve)   {t.proxmox.endpoint}\n")
    for host in t.containers:
        what = {"database": f"PostgreSQL :{t.database.port}",
                "app": f"PM2 + app :{t.app.port} ({host.color})",
                "loadbalancer": f"HAProxy public :{t.haproxy.public_port}"
                                + (f" -> https :{t.haproxy.https_port} ({t.tls_server_name}, CA "
                                   f"{t.haproxy.ca_file})" if t.haproxy.tls else "")
                                + f", preview {t.private_ip}:{t.haproxy.preview_port}, metrics "
                                f"{t.private_ip}:{t.haproxy.stats_port}/metrics"}[host.role]
        out.write(f"  CT {host.vmid} {host.name:<12} {host.ip:<11} sshd :{t.ssh.port}, {what}, "
                  f"root {host.root}\n")
    if t.monitoring.prometheus:  # what the lab's Prometheus saw of the cutover
        prometheus = f"http://{t.monitoring.prometheus}"
        # Debian's Prometheus 2.42 serves its alerts and targets pages under /classic/ only.
        out.write(f"\nMonitoring (docs/MONITORING.md): Prometheus {prometheus}/classic/graph (graph "
                  f"`max by (color) (bluegreen_live_color)` to see the cutover), alerts {prometheus}/classic/alerts, "
                  f"targets {prometheus}/classic/targets; dashboard monitoring/dashboards/bluegreen.json (with "
                  f"monitoring/rules/ loaded); deployment events received in {lab_dir}/monitoring/events.jsonl\n")
    out.write("\nTry (README, after `make demo`): `source .venv/bin/activate`, then `bluegreen status --stack lab`"
              "    |    `make lab-down` stops it all, `make lab-reset` gives a new lab\n")


def _count_shifts(lab: Lab, post: str) -> int:
    t = lab.topology
    sql = "SELECT count(*) FROM \"Shift\" WHERE post = '" + post.replace("'", "''") + "'"
    with lab.executor(t.database_host) as db:
        out = db.run(cmd.psql(t, t.database_host, sql), step="count demo rows").stdout
    return int(out.strip() or 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bluegreen.lab.demo", description=__doc__)
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients in the request loop")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    servers_get_default_signals()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(clients=args.clients)
    except BlueGreenError as exc:
        sys.stderr.write(f"demo: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("demo: interrupted (the lab keeps running; `make lab-down` stops it)\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
