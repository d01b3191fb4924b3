"""The lab's Proxmox node: fakepve serving the stack's containers over verified HTTPS.

    python -m bluegreen.lab.pve_server --state-dir DIR --host 127.0.3.5 --port 8006 \\
        --topology-stack lab --project-dir DIR

Serves FakePve in this process on an asyncio loop with a certificate made for `--host`; the
certificate is its own CA and is copied to `<state-dir>/ca.pem` for clients to verify with. An API
token (`proxmox.tokenId`, default `root@pam!deploy`) gets a random secret that is written once to
`proxmox.tokenFile` (mode 0600, as `id=secret`) and reused on every restart. The stack's template
is registered in storage and every container is created from the topology through the API (so
PVE's own parameter checks see what we send) and started. Nothing else persists: snapshots and
tasks live as long as the process. SIGTERM or SIGINT stops it cleanly.

fakepve is a test dependency (AGPL): it is imported only here and from tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bluegreen.lab.services import LabError
from bluegreen.model.ctinputs import declared_inputs
from bluegreen.model.errors import BlueGreenError, ConfigError
from bluegreen.model.secrets import parse_api_token
from bluegreen.model.sensitive import Sensitive
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import Container, Topology

if TYPE_CHECKING:
    from fakepve import FakePve

log = logging.getLogger("bluegreen.lab.pve")

DEFAULT_TOKEN_ID = "root@pam!deploy"  # noqa: S105 - an id, not a secret
CA_FILE = "ca.pem"
CERT_NAME = "pve"
# A lab template needs no real bytes: PVE only checks that the volume is listed.
TEMPLATE_SIZE = 128 * 1024 ** 2
# PVE seconds per task kind; with the default time scale each takes a fraction of a real second,
# long enough that clients really poll a running task.
TASK_SECONDS = {"create": 4, "snapshot": 2, "delsnapshot": 1, "rollback": 3, "destroy": 2}
DEFAULT_TIME_SCALE = 0.05
PROVISION_TIMEOUT = 60.0


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path
    ca: Path


# --------------------------------------------------------------------------- pure


def container_create_params(t: Topology, c: Container) -> dict[str, Any]:
    """`POST /nodes/{node}/lxc` parameters for one container, as the Pulumi provider would send for
    what the program declares (`model.ctinputs.declared_inputs`), so `plan --changes` finds the lab
    built as declared. Protection is left out: the lab destroys and recreates its containers, and
    `pulumi up` would set it in place."""
    px = t.proxmox
    declared = declared_inputs(t, c, public_keys=())
    nic = declared["networkInterfaces"][0]
    net0 = [f"name={nic['name']}", f"bridge={nic['bridge']}", *(["firewall=1"] if nic.get("firewall") else []),
            f"ip={c.interface.with_prefixlen}", f"gw={px.gateway}"]
    params: dict[str, Any] = {
        "vmid": c.vmid,
        "ostemplate": px.template.file_id,
        "hostname": c.name,
        "cores": c.cores,
        "memory": c.memory,
        "swap": c.swap,
        "rootfs": f"{px.datastore}:{c.disk}",
        "net0": ",".join(net0),
        "unprivileged": 1,
        "onboot": int(bool(declared["startOnBoot"])),
        "start": 1,
    }
    if declared.get("startup"):
        s = declared["startup"]
        params["startup"] = ",".join(f"{pve}={s[key]}" for key, pve in (("order", "order"), ("upDelay", "up"),
                                                                        ("downDelay", "down")) if key in s)
    if declared.get("features"):
        params["features"] = ",".join(f"{k}={int(v)}" for k, v in declared["features"].items() if isinstance(v, bool))
    if c.tags:
        params["tags"] = ";".join(c.tags)
    if px.dns_servers:
        params["nameserver"] = " ".join(px.dns_servers)
    if px.dns_domain:
        params["searchdomain"] = px.dns_domain
    return params


def token_file_text(token_id: str, secret: Sensitive) -> str:
    return f"{token_id}={secret.reveal()}\n"


# --------------------------------------------------------------------------- files


def ensure_token(token_file: Path, token_id: str) -> Sensitive:
    """The lab token's secret: read from `token_file` when there, else a new random one written
    there (0600). Reusing it keeps every client's configuration valid across restarts."""
    secret: Sensitive | None = None
    with contextlib.suppress(FileNotFoundError):
        text = token_file.read_text().strip()
        if "=" in text:
            _, secret = parse_api_token(text, source=f"token file {token_file}")
        elif text:
            secret = Sensitive(text)
    if secret is None:
        # PVE's own token secrets are UUIDs; the format does not matter to clients.
        secret = Sensitive(secrets.token_hex(16))
    token_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_private(token_file, token_file_text(token_id, secret))
    return secret


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(text)
    os.replace(tmp, path)


def make_tls(state_dir: Path, host: str) -> Tls:
    """A fresh certificate for `host` (fakepve's make_cert lasts 30 days, so one per start), and
    `ca.pem`, the same certificate, which is its own trust anchor."""
    from fakepve.certs import make_cert

    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert, key, _ = make_cert(str(state_dir), name=CERT_NAME, hosts=(host,))
    ca = state_dir / CA_FILE
    tmp = ca.with_name(f".{CA_FILE}.tmp")
    tmp.write_bytes(Path(cert).read_bytes())
    os.replace(tmp, ca)
    return Tls(Path(cert), Path(key), ca)


# --------------------------------------------------------------------------- the fake


def build_fake(t: Topology, *, host: str, port: int, token_id: str, secret: Sensitive,
               time_scale: float = DEFAULT_TIME_SCALE) -> FakePve:
    """A FakePve shaped like the stack's node: its name, token, storages and template."""
    from fakepve import FakePve

    # Password logins exist in fakepve with a public default; a random one nobody knows shuts them.
    pve = FakePve(user="root@pam", password=secrets.token_hex(16), host=host, port=port)
    pve.time_scale = time_scale
    pve.nodes = {t.proxmox.node: {"online": True}}
    pve.apitokens[token_id] = secret.reveal()
    for kind, secs in TASK_SECONDS.items():
        pve.ct_secs[kind] = secs
    template = t.proxmox.template
    if template.storage not in pve.storages:
        raise LabError(f"proxmox.template.storage {template.storage!r}: the lab node has only "
                       f"{', '.join(sorted(pve.storages))}")
    if t.proxmox.datastore not in pve.storages:
        raise LabError(f"proxmox.datastore {t.proxmox.datastore!r}: the lab node has only "
                       f"{', '.join(sorted(pve.storages))}")
    pve.store_file(template.storage, template.file, TEMPLATE_SIZE, content="vztmpl")
    return pve


def provision(t: Topology, *, endpoint: str, token_id: str, secret: Sensitive, ca_file: Path,
              timeout: float = PROVISION_TIMEOUT) -> None:
    """Create and start every container of the stack through the API (blocking: run it off the
    fake's event loop)."""
    import requests
    from proxmoxer import ResourceException

    try:
        _provision(t, endpoint=endpoint, token_id=token_id, secret=secret, ca_file=ca_file, timeout=timeout)
    except (ResourceException, requests.exceptions.RequestException) as exc:
        raise LabError(f"provisioning the lab node's containers: {exc}") from None


def _provision(t: Topology, *, endpoint: str, token_id: str, secret: Sensitive, ca_file: Path,
               timeout: float) -> None:
    from proxmoxer import ProxmoxAPI, ResourceException

    from bluegreen.hosts.pve import parse_endpoint

    host, port = parse_endpoint(endpoint)
    user, _, name = token_id.partition("!")
    api = ProxmoxAPI(host, port=port, user=user, token_name=name, token_value=secret.reveal(),
                     verify_ssl=str(ca_file), timeout=10)
    node = api.nodes(t.proxmox.node)
    existing = {int(item["vmid"]) for item in node.lxc.get()}
    pending: dict[int, str] = {}
    for c in t.containers:
        if c.vmid in existing:
            continue
        try:
            pending[c.vmid] = node.lxc.post(**container_create_params(t, c))
        except ResourceException as exc:
            raise LabError(f"creating CT {c.vmid} ({c.name}) on the lab node: {exc}") from None
    deadline = time.monotonic() + timeout
    while pending:
        for vmid, upid in list(pending.items()):
            status: Mapping[str, Any] = node.tasks(upid).status.get()
            if status.get("status") != "stopped":
                continue
            del pending[vmid]
            if status.get("exitstatus") != "OK":
                raise LabError(f"creating CT {vmid} on the lab node: {status.get('exitstatus')}")
            log.info("CT %d created and started", vmid)
        if pending and time.monotonic() >= deadline:
            raise LabError(f"creating CTs {sorted(pending)}: tasks still running after {timeout:g}s")
        time.sleep(0.05)


async def serve(t: Topology, *, state_dir: Path, host: str, port: int, token_file: Path,
                token_id: str, time_scale: float) -> None:
    """Run until SIGTERM or SIGINT."""
    from fakepve import settle

    secret = ensure_token(token_file, token_id)
    tls = make_tls(state_dir, host)
    pve = build_fake(t, host=host, port=port, token_id=token_id, secret=secret, time_scale=time_scale)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await pve.start(str(tls.cert), str(tls.key))
    try:
        endpoint = f"https://{host}:{pve.port}/"
        await asyncio.to_thread(provision, t, endpoint=endpoint, token_id=token_id, secret=secret,
                                ca_file=tls.ca)
        log.info("fakepve listening on %s (node %s, CTs %s, CA %s)", endpoint, t.proxmox.node,
                 ", ".join(str(c.vmid) for c in t.containers), tls.ca)
        await stop.wait()
        log.info("fakepve stopping (signal received)")
    finally:
        await settle()
        await pve.stop()
    log.info("fakepve stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bluegreen.lab.pve_server",
                                     description="The lab's fake Proxmox VE node (fakepve).")
    parser.add_argument("--state-dir", required=True, type=Path, help="certificate and ca.pem go here")
    parser.add_argument("--host", required=True, help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=8006)
    parser.add_argument("--topology-stack", required=True, help="stack whose containers to serve")
    parser.add_argument("--project-dir", required=True, type=Path)
    parser.add_argument("--token-file", type=Path, help="default: the stack's proxmox.tokenFile")
    parser.add_argument("--time-scale", type=float, default=DEFAULT_TIME_SCALE,
                        help="real seconds per PVE second (default %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiohttp's access log would log every poll of every task.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        if not args.host.startswith("127."):
            raise ConfigError(f"--host {args.host}: the lab node listens on loopback (127.x) only")
        t = load_stack(args.project_dir, args.topology_stack)
        token_file = args.token_file or (Path(t.proxmox.token_file) if t.proxmox.token_file else None)
        if token_file is None:
            raise ConfigError(f"stack {args.topology_stack}: proxmox.tokenFile is not set "
                              "(or pass --token-file)")
        asyncio.run(serve(t, state_dir=args.state_dir, host=args.host, port=args.port,
                          token_file=token_file, token_id=t.proxmox.token_id or DEFAULT_TOKEN_ID,
                          time_scale=args.time_scale))
    except BlueGreenError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except OSError as exc:
        log.error("fakepve: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
