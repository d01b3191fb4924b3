"""What several integration tests build: a small estate on loopback addresses of their own, and a
stand-in app server that answers 200 with HTTP/1.1 keep-alive."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bluegreen.hosts import haproxy as haproxy_runtime
from bluegreen.hosts.executor import CommandResult, DelegatingExecutor, SshExecutor, connect
from bluegreen.model.config import config_getter, from_config
from bluegreen.model.errors import LockedError
from bluegreen.model.stackfile import load_stack, set_active_color_in_file
from bluegreen.model.topology import Topology, other_color
from bluegreen.ops.deploy import deploy, plan_deploy
from bluegreen.ops.estate import Estate
from bluegreen.ops.status import status
from bluegreen.ops.switch import switch

SSH_PORT = 2222
APP_PORT = 3000


def loopback_topology(base: Path, identity: Path, known_hosts: Path, *, net: str, stack: str, prefix: str,
                      app: dict[str, Any] | None = None, haproxy: dict[str, Any] | None = None,
                      extra: dict[str, Any] | None = None) -> Topology:
    """A four-host estate on `net`.21/22/24/26, each host rooted under `base`."""

    def host(vmid: int, name: str, role: str, last: int, color: str | None = None) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": vmid, "name": f"{prefix}-{name}", "role": role,
                                 "ip": f"{net}.{last}/24", "root": str(base / f"ct{vmid}")}
        if color:
            entry["color"] = color
        return entry

    config: dict[str, Any] = {
        "proxmoxve:endpoint": f"https://{net}.5:8006/",
        "bluegreen:activeColor": "blue",
        "bluegreen:proxmox": {"node": "pve", "datastore": "local-lvm", "gateway": f"{net}.1",
                              "template": {"file": "debian-12-standard_12.7-1_amd64.tar.zst"}},
        "bluegreen:ssh": {"user": "root", "port": SSH_PORT, "identityFile": str(identity),
                          "knownHosts": str(known_hosts), "connectTimeout": 5,
                          "publicKeys": [f"file:{identity}.pub"]},
        "bluegreen:containers": [host(131, "postgres", "database", 21),
                                 host(132, "blue", "app", 22, "blue"),
                                 host(134, "green", "app", 24, "green"),
                                 host(136, "haproxy", "loadbalancer", 26)],
        "bluegreen:app": {"repo": str(base / "none.git"), "branch": "main", "port": APP_PORT,
                          "healthPath": "/api/health", "deployUser": "root", **(app or {})},
        "bluegreen:haproxy": {"serverName": f"{stack}.test", "maxconn": 1000, **(haproxy or {})},
        **(extra or {}),
    }
    return from_config(config_getter(config), stack=stack, project_dir=base)


class OkApp(BaseHTTPRequestHandler):
    """A stand-in app: 200 on every path, HTTP/1.1 keep-alive."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # health checks and closing keep-alive clients reset connections all the time


# ---------------------------------------------------------------- tests on the shared lab

LAB_STACK = "lab"
LOCK_WAIT_S = 180.0


def copy_project(source: Path, dest: Path) -> Path:
    """A private copy of Pulumi.yaml and stacks/, its declared colour the one HAProxy serves
    (a switch records the live colour in the stack file: tests must not rewrite the repo's)."""
    shutil.copy2(source / "Pulumi.yaml", dest / "Pulumi.yaml")
    shutil.copytree(source / "stacks", dest / "stacks")
    set_active_color_in_file(dest, LAB_STACK, live_color(load_stack(dest, LAB_STACK)))
    return dest


def live_color(t: Topology) -> str:
    with connect(t, t.load_balancer) as lb:
        return haproxy_runtime.live_color(lb, t)


def retry_locked(action: Callable[[], Any]) -> Any:
    """Other sessions may share the lab and its deployment lock: wait for our turn."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            return action()
        except LockedError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1.0)


class InterceptingExecutor(DelegatingExecutor):
    """An SSH executor that calls `before(step, operation)` ahead of each command, write or read:
    the hook of a fault test (drop the connection, fail a write) with the rest delegated."""

    inner: SshExecutor

    def __init__(self, inner: SshExecutor) -> None:
        super().__init__(inner)

    def before(self, step: str, operation: str) -> None:
        """Override: `operation` is "run", "put" or "get"."""

    def run(self, command: str, *, step: str, check: bool = True, timeout: float | None = None,
            input: str | None = None, env: Mapping[str, str] | None = None) -> CommandResult:
        self.before(step, "run")
        return super().run(command, step=step, check=check, timeout=timeout, input=input, env=env)

    def put(self, path: str, content: str | bytes, *, step: str, mode: int = 0o644) -> None:
        self.before(step, "put")
        super().put(path, content, step=step, mode=mode)

    def get(self, path: str, *, step: str) -> bytes | None:
        self.before(step, "get")
        return super().get(path, step=step)


def serve_both_colours(project: Path, *, direct: bool = False, main_migrated: bool = False) -> None:
    """Both colours of the project copy's lab stack serve a release and the live one is healthy,
    whatever earlier tests left: `v1` where the live colour cannot serve (then traffic moves to
    it), `main` where the standby has nothing. `main_migrated`: the database also has every
    migration `main` brings (an earlier file may have left it behind, by a restore)."""
    def estate() -> Estate:
        return Estate(load_stack(project, LAB_STACK))  # read again: a switch records the colour there

    report = status(estate())
    assert report.live is not None, f"cannot read the live colour: {report.errors}"
    if not report.colors[report.live].healthy:
        retry_locked(lambda: deploy(estate(), "v1", migrate=True, snapshot=False))
        retry_locked(lambda: switch(estate(), direct=direct, watch=False))
        report = status(estate())
    standby = other_color(report.live or report.declared)
    if not report.colors[standby].release or not report.colors[standby].healthy:
        retry_locked(lambda: deploy(estate(), "main", migrate=True, snapshot=False))
    if main_migrated and plan_deploy(estate(), "main").pending:
        retry_locked(lambda: deploy(estate(), "main", migrate=True, snapshot=False))
    report = status(estate())
    broken = {c: s.errors for c, s in report.colors.items() if not (s.healthy and s.release)}
    assert not broken, f"the lab's colours do not both serve a release: {broken}"


def release_on_both_colours(service: Estate) -> None:
    """Both colours serve a healthy release, so a switch either way is a real one: `v1` to a
    standby without one; a live colour with nothing to serve hands traffic over first."""
    for _ in range(2):
        report = status(service)
        standby = report.colors[report.standby]
        if not (standby.healthy and standby.release):
            deploy(service, "v1", migrate=True)
        live = report.colors[report.live or report.declared]
        if live.healthy and live.release:
            break
        switch(service, watch=False, emergency=not live.healthy)


def wait_backends_up(t: Topology, colors: tuple[str, ...] = ("blue", "green"), timeout: float = 60.0) -> None:
    """Until HAProxy's health checks see each colour's server UP (after `rise` good checks): an app
    a test broke and mended is not back for the next switch's pre-switch checks before that."""
    deadline = time.monotonic() + timeout
    with connect(t, t.load_balancer) as lb:
        while True:
            states = haproxy_runtime.backend_states(lb, t)
            down = {c: str(states.get(c, {}).get("status", "")) for c in colors}
            down = {c: status for c, status in down.items() if not status.upper().startswith("UP")}
            if not down:
                return
            assert time.monotonic() < deadline, f"HAProxy still sees {down} after {timeout:g}s"
            time.sleep(0.5)


# ---------------------------------------------------------------- a clean checkout

REPO = Path(__file__).resolve().parents[2]
_SKIP = {".venv", ".git", "node_modules"}


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def clone_of_the_working_tree(dest: Path) -> Path:
    """The files git would commit from this working tree (tracked and new, not ignored), committed
    in a new repository: what a fresh clone of this branch looks like."""
    listed = git(REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if not source.is_file() or set(Path(name).parts) & _SKIP:
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "clone")
    return dest
