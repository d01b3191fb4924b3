"""The lab's Proxmox node: start the fakepve server process, or serve one inside a test.

`start_fakepve(lab_dir, topology)` runs `python -m bluegreen.lab.pve_server` in the background
(pid file `<lab>/pids/fakepve.pid`, log `<lab>/logs/fakepve.log`, state `<lab>/pve/`) and returns
once every container of the stack reports running through a verified, token-authenticated
`PveClient`. `serve_fakepve(...)` serves the same node on a thread of the calling process, for
tests that inject faults into the live FakePve object (`pve.fail(...)` and friends).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bluegreen.hosts.pve import DEFAULT_TASK_TIMEOUT, DEFAULT_TIMEOUT, PveClient, parse_endpoint
from bluegreen.lab import pve_server
from bluegreen.lab.services import LabError, ManagedProcess, log_tail, spawn
from bluegreen.model.errors import BlueGreenError, ConfigError
from bluegreen.model.secrets import read_token
from bluegreen.model.sensitive import Sensitive
from bluegreen.model.topology import Topology

if TYPE_CHECKING:
    from fakepve import FakePve

log = logging.getLogger("bluegreen.lab.pve")

NAME = "fakepve"
STATE_DIR = "pve"
START_TIMEOUT = 60.0
_LOOP_CALL_TIMEOUT = 60.0

T = TypeVar("T")


def state_dir(lab_dir: Path) -> Path:
    return lab_dir / STATE_DIR


def ca_file(lab_dir: Path) -> Path:
    """The CA bundle a client verifies the lab node with (`proxmox.caFile` of the lab stack)."""
    return state_dir(lab_dir) / pve_server.CA_FILE


def pid_file(lab_dir: Path) -> Path:
    return lab_dir / "pids" / f"{NAME}.pid"


def log_file(lab_dir: Path) -> Path:
    return lab_dir / "logs" / f"{NAME}.log"


def _loopback_endpoint(t: Topology) -> tuple[str, int]:
    host, port = parse_endpoint(t.proxmox.endpoint)
    if not host.startswith("127."):
        raise ConfigError(f"stack {t.stack}: the lab node must be on a loopback address, "
                          f"not {t.proxmox.endpoint}")
    return host, port


def server_argv(lab_dir: Path, t: Topology, *, time_scale: float | None = None) -> list[str]:
    host, port = _loopback_endpoint(t)
    if not t.proxmox.token_file:
        raise ConfigError(f"stack {t.stack}: proxmox.tokenFile is required for the lab node")
    argv = [sys.executable, "-m", "bluegreen.lab.pve_server", "--state-dir", str(state_dir(lab_dir)),
            "--host", host, "--port", str(port), "--topology-stack", t.stack,
            "--project-dir", t.project_dir, "--token-file", t.proxmox.token_file]
    if time_scale is not None:
        argv += ["--time-scale", str(time_scale)]
    return argv


def _containers_lost(lab_dir: Path, t: Topology) -> bool:
    try:
        states = lab_client(lab_dir, t, timeout=5.0).statuses([c.vmid for c in t.containers])
    except BlueGreenError:
        return False  # not answering yet: wait_ready says what is wrong
    return any(s.status == "missing" for s in states.values())


def lab_client(lab_dir: Path, t: Topology, *, timeout: float = DEFAULT_TIMEOUT) -> PveClient:
    """A client of the lab node that verifies its certificate and reads the token from its file."""
    token_id, secret = read_token(t, environ={})
    return PveClient(t.proxmox.endpoint, t.proxmox.node, token_id, secret,
                     verify=str(ca_file(lab_dir)), timeout=timeout)


def start_fakepve(lab_dir: Path, topology: Topology, *, timeout: float = START_TIMEOUT,
                  time_scale: float | None = None) -> ManagedProcess:
    """Start the lab node (or keep the one running) and wait until all its containers run.

    The server reads the stack file itself; the endpoint's host and port and the token file are
    passed from `topology`, so a test can move them (a free port, a private token file).
    """
    argv = server_argv(lab_dir, topology, time_scale=time_scale)
    process = ManagedProcess(NAME, pid_file(lab_dir))
    already = process.alive()
    if already and _containers_lost(lab_dir, topology):
        # `lose-node` leaves the node's API running without the containers; the server creates
        # what the stack declares when it starts, so a restart brings them back.
        log.warning("the lab node runs without some of its containers (a lost node): restarting it")
        process.stop()
        already = False
    if not already:
        log.info("starting fakepve on %s", topology.proxmox.endpoint)
        # The state dir tells this lab's server apart from any other one (tests run their own).
        process = spawn(NAME, argv, pid_file=pid_file(lab_dir), log_file=log_file(lab_dir),
                        expect=f"bluegreen.lab.pve_server --state-dir {state_dir(lab_dir)} ")
    try:
        wait_ready(lab_dir, topology, process, timeout=timeout)
    except BlueGreenError:
        if not already:
            process.stop()
        raise
    return process


def wait_ready(lab_dir: Path, t: Topology, process: ManagedProcess, *, timeout: float) -> None:
    """Until every container of the stack is running, as seen through a verifying client."""
    vmids = [c.vmid for c in t.containers]
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        if not process.alive():
            raise LabError(_with_log(f"fakepve exited before answering ({last})", lab_dir))
        try:
            states = lab_client(lab_dir, t, timeout=5.0).statuses(vmids)
        except BlueGreenError as exc:
            # Until the server has written its token and certificate, and listens, this fails.
            last = str(exc)
        else:
            waiting = [v for v, s in states.items() if not s.running]
            if not waiting:
                return
            last = f"CTs {waiting} not running yet"
        if time.monotonic() >= deadline:
            raise LabError(_with_log(f"fakepve not ready within {timeout:g}s: {last}", lab_dir))
        time.sleep(0.1)


def _with_log(message: str, lab_dir: Path) -> str:
    tail = log_tail(log_file(lab_dir))
    return f"{message}\n--- last lines of {log_file(lab_dir)} ---\n{tail}" if tail else message


# --------------------------------------------------------------------------- in-process


@dataclass
class InProcessPve:
    """A FakePve served on a private event loop thread; its state belongs to that thread, so
    change it through `call` (plain functions such as `pve.fail`) or `run` (coroutines such as
    `pve.backup`)."""

    pve: FakePve
    endpoint: str
    ca_file: Path
    token_id: str
    token_secret: Sensitive
    node: str
    _loop: asyncio.AbstractEventLoop = field(repr=False)

    def client(self, *, timeout: float = DEFAULT_TIMEOUT,
               task_timeout: float = DEFAULT_TASK_TIMEOUT) -> PveClient:
        return PveClient(self.endpoint, self.node, self.token_id, self.token_secret,
                         verify=str(self.ca_file), timeout=timeout, task_timeout=task_timeout)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_LOOP_CALL_TIMEOUT)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async def invoke() -> T:
            return fn(*args, **kwargs)
        return self.run(invoke())


@contextmanager
def serve_fakepve(work_dir: Path, topology: Topology, *, host: str | None = None, port: int = 0,
                  time_scale: float = pve_server.DEFAULT_TIME_SCALE) -> Iterator[InProcessPve]:
    """The lab node, provisioned like the server process, on a thread of this process.

    Certificate, CA and token live in `work_dir`, never in the lab's own state. `port=0` picks a
    free port; the stack's endpoint host is used unless `host` is given.
    """
    default_host, _ = _loopback_endpoint(topology)
    host = host or default_host
    if not host.startswith("127."):
        raise ConfigError(f"serve_fakepve: {host} is not a loopback address")
    token_id = topology.proxmox.token_id or pve_server.DEFAULT_TOKEN_ID
    secret = pve_server.ensure_token(work_dir / "token", token_id)
    tls = pve_server.make_tls(work_dir, host)
    pve = pve_server.build_fake(topology, host=host, port=port, token_id=token_id, secret=secret,
                                time_scale=time_scale)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fakepve-loop", daemon=True)
    thread.start()
    handle: InProcessPve | None = None
    try:
        asyncio.run_coroutine_threadsafe(pve.start(str(tls.cert), str(tls.key)), loop).result(
            _LOOP_CALL_TIMEOUT)
        endpoint = f"https://{host}:{pve.port}/"
        handle = InProcessPve(pve=pve, endpoint=endpoint, ca_file=tls.ca, token_id=token_id,
                              token_secret=secret, node=topology.proxmox.node, _loop=loop)
        pve_server.provision(topology, endpoint=endpoint, token_id=token_id, secret=secret,
                             ca_file=tls.ca)
        yield handle
    finally:
        from fakepve import settle

        try:
            for coro in (settle(), pve.stop(), _cancel_tasks()):
                asyncio.run_coroutine_threadsafe(coro, loop).result(_LOOP_CALL_TIMEOUT)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_LOOP_CALL_TIMEOUT)
            if not thread.is_alive():
                loop.close()


async def _cancel_tasks() -> None:
    """Cancel PVE tasks still running (a test may leave one that would take hours)."""
    current = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not current]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
