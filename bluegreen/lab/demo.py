"""`make demo`: the whole blue-green story on the local lab, start to finish.

Starts the lab (configured exactly as `pulumi up` would), deploys v1 to the standby and switches
to it, deploys v2, switches under a steady request loop and counts failed requests, rolls back,
shows status, and says where every part runs. Safe to run again without cleaning up.
Progress goes to stderr; the closing report goes to stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass

from ..cli import format_status
from ..errors import BlueGreenError
from ..loadgen import LoadReport, RequestLoop
from ..progress import TerminalProgress
from ..service import Service
from ..topology import load_stack
from .lab import Lab


@dataclass
class Chapter:
    what: str
    outcome: str
    seconds: float


def run(clients: int = 16) -> int:
    progress = TerminalProgress(sys.stderr)
    chapters: list[Chapter] = []

    def chapter(what: str, outcome: str, started: float) -> None:
        chapters.append(Chapter(what, outcome, time.monotonic() - started))
        sys.stderr.write(f"==> {what}: {outcome}\n")

    lab = Lab()
    started = time.monotonic()
    with progress.step("start the lab and configure every host as `pulumi up` would", long=True):
        info = lab.up()
    chapter("lab up", f"started {len(info.started)}, reused {len(info.reused)}", started)

    def service() -> Service:
        # Reload each time: switches record the live colour in the stack file.
        return Service(load_stack(lab.project_dir, "lab"), progress=progress)

    started = time.monotonic()
    first = service().deploy("v1", migrate=True)
    chapter(f"deploy v1 to {first.color}", f"release {first.release}, deps {first.dependencies}", started)

    started = time.monotonic()
    switch1 = service().switch()
    chapter(f"switch to {switch1.color}", f"flip {switch1.flip_ms:.0f} ms, verified {switch1.verified}", started)

    started = time.monotonic()
    second = service().deploy("v2", migrate=True)
    chapter(f"deploy v2 to {second.color}", f"release {second.release}, deps {second.dependencies}, "
            f"migrations {second.migrations_applied or 'none'}", started)

    started = time.monotonic()
    t = lab.topology
    with RequestLoop.visitor(t, "/", clients=clients, max_seconds=300) as loop:
        loop.wait_for(300)
        switch2 = service().switch()
        loop.wait_for(300)
    load: LoadReport = loop.report
    chapter(f"switch to {switch2.color} under load", f"{len(load.failures)} failed of {load.total} "
            f"requests ({clients} clients)", started)

    started = time.monotonic()
    back = service().rollback()
    chapter(f"rollback to {back.color}", f"flip {back.flip_ms:.0f} ms", started)

    status = service().status().to_json()
    live = status["live"]
    release = status["colors"][live]["ref"] if live else None

    out = sys.stdout
    out.write("\n" + format_status(status) + "\n\n")
    out.write("The story:\n")
    width = max(len(c.what) for c in chapters)
    for c in chapters:
        out.write(f"  {c.what:<{width}}  {c.seconds:6.1f}s  {c.outcome}\n")
    out.write(f"\nRequest loop during the switch: {load.summary()}\n")
    out.write(f"The lab now serves {release} from {live} at {t.public_url}/\n\n")
    out.write("Where each part runs (all on loopback, files under " f"{info.lab_dir}):\n")
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
    out.write("\nTry: .venv/bin/bluegreen status --stack lab    |    make lab-down to stop it all\n")
    return 0 if not load.failures else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bluegreen.lab.demo", description=__doc__)
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients in the request loop")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
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
