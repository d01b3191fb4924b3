"""The Proxmox VE API as the automation needs it: container status and LXC snapshots.

Authenticates with an API token (`user@realm!name` plus a secret held as `Sensitive`) over
proxmoxer's HTTPS backend. TLS is always verified: against the node's pinned certificate
fingerprint (`proxmox.fingerprint`, which `bluegreen trust --proxmox` shows and pins, checked in
the handshake before any request, the token included, is sent), or a CA bundle
(`proxmox.caFile`), or the system CAs. Only an explicit `proxmox.insecure: true` turns it off,
with a warning on every use. Every request has a timeout,
every long operation waits for its PVE task, and every failure becomes a `ProxmoxError` that
says what was being done followed by PVE's own words, with the token secret scrubbed out.
"""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import requests
from proxmoxer import ProxmoxAPI, ResourceException
from requests.adapters import HTTPAdapter

from bluegreen.model.errors import ConfigError, ProxmoxError
from bluegreen.model.secrets import check_token_id, read_token
from bluegreen.model.sensitive import Sensitive, redact
from bluegreen.model.tlspin import normalize_fingerprint

if TYPE_CHECKING:
    from bluegreen.model.topology import Topology

log = logging.getLogger("bluegreen.pve")

SNAPSHOT_PREFIX = "bluegreen-"
DEFAULT_PORT = 8006
# PVE's `pve-configid` format and the API's maxLength for snapshot names.
_SNAPSHOT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]+")
SNAPSHOT_NAME_MAX = 40
# Long enough for a busy node, short enough that a dead one is reported while someone still waits.
DEFAULT_TIMEOUT = 15.0
DEFAULT_TASK_TIMEOUT = 600.0
_DETAIL_MAX = 600
_LOG_TAIL_LINES = 8

T = TypeVar("T")


@dataclass(frozen=True)
class ContainerState:
    """One container as PVE reports it; `status` is PVE's (running, stopped) or `missing`."""

    vmid: int
    status: str
    uptime_s: int
    mem_bytes: int
    maxmem_bytes: int
    name: str
    lock: str | None

    @property
    def running(self) -> bool:
        return self.status == "running"

    def to_json(self) -> dict[str, Any]:
        return {"vmid": self.vmid, "status": self.status, "uptime_s": self.uptime_s,
                "mem_bytes": self.mem_bytes, "maxmem_bytes": self.maxmem_bytes, "name": self.name,
                "lock": self.lock}


@dataclass(frozen=True)
class Snapshot:
    name: str
    description: str
    snaptime: int
    parent: str | None

    @property
    def created(self) -> datetime:
        return datetime.fromtimestamp(self.snaptime).astimezone()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "snaptime": self.snaptime,
                "parent": self.parent}


# --------------------------------------------------------------------------- pure helpers


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """Host and port of `https://host[:port][/]`, the form stack config and the provider use."""
    try:
        parts = urlsplit(endpoint.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"proxmox endpoint {endpoint!r}: {exc}") from None
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"proxmox endpoint {endpoint!r}: expected https://host:8006/")
    if parts.path.rstrip("/") not in ("", "/api2/json") or parts.query or parts.fragment:
        raise ConfigError(f"proxmox endpoint {endpoint!r}: expected no path beyond /api2/json")
    return parts.hostname, port or DEFAULT_PORT


def fetch_certificate(endpoint: str, *, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """The certificate the node presents (DER), from the TLS handshake alone: nothing is sent over
    the connection, no token, no request. Nothing is trusted here; the caller shows it to a person."""
    host, port = parse_endpoint(endpoint)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise ProxmoxError(f"reading the certificate of {endpoint}: {exc}") from None
    if not der:
        raise ProxmoxError(f"reading the certificate of {endpoint}: the node presented none")
    return der


def certificate_fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


class PinnedCertificate(HTTPAdapter):
    """Connections whose certificate must have this SHA-256 fingerprint, checked by urllib3 in the
    handshake (before the request and its token go out); chain and name are not what is trusted."""

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_fingerprint"] = self.fingerprint
        super().init_poolmanager(*args, **kwargs)


def check_snapshot_name(name: str) -> None:
    if len(name) > SNAPSHOT_NAME_MAX or not _SNAPSHOT_NAME.fullmatch(name):
        raise ConfigError(
            f"snapshot name {name!r}: expected a letter then letters, digits, '-' or '_' "
            f"(2 to {SNAPSHOT_NAME_MAX} characters)")


def snapshot_name(label: str, when: datetime, prefix: str = SNAPSHOT_PREFIX) -> str:
    """A snapshot name of ours: `bluegreen-<YYYYmmddHHMMSS>-<label>`, cut to PVE's limit."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", label).strip("-")
    name = f"{prefix}{when:%Y%m%d%H%M%S}"
    if slug:
        name = f"{name}-{slug}"
    name = name[:SNAPSHOT_NAME_MAX].rstrip("-")
    check_snapshot_name(name)
    return name


def snapshots_to_prune(snapshots: Iterable[Snapshot], keep: int,
                       prefix: str = SNAPSHOT_PREFIX) -> list[Snapshot]:
    """Ours (by prefix) beyond the newest `keep`, oldest first; snapshots made by hand never."""
    if keep < 0:
        raise ConfigError(f"snapshots to keep: expected 0 or more, got {keep}")
    ours = [s for s in order_snapshots(snapshots) if s.name.startswith(prefix)]
    return ours[:max(0, len(ours) - keep)]


def order_snapshots(snapshots: Iterable[Snapshot]) -> list[Snapshot]:
    """Oldest first. PVE stamps whole seconds, so ties are broken by the parent chain."""
    items = list(snapshots)
    by_name = {s.name: s for s in items}

    def depth(s: Snapshot) -> int:
        seen: set[str] = set()
        n = 0
        parent = s.parent
        while parent in by_name and parent not in seen:
            seen.add(parent)
            n += 1
            parent = by_name[parent].parent
        return n

    return sorted(items, key=lambda s: (s.snaptime, depth(s), s.name))


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def container_state(vmid: int, data: Mapping[str, Any]) -> ContainerState:
    """Parse a `status/current` (or `lxc` list) entry."""
    lock = data.get("lock")
    return ContainerState(
        vmid=vmid, status=str(data.get("status") or "unknown"), uptime_s=_int(data.get("uptime")),
        mem_bytes=_int(data.get("mem")), maxmem_bytes=_int(data.get("maxmem")),
        name=str(data.get("name") or ""), lock=str(lock) if lock else None,
    )


def parse_snapshots(data: Iterable[Mapping[str, Any]]) -> list[Snapshot]:
    """The snapshot list without PVE's `current` pseudo-entry, oldest first."""
    snaps = [
        Snapshot(name=str(item["name"]), description=str(item.get("description") or "").strip(),
                 snaptime=_int(item.get("snaptime")),
                 parent=str(item["parent"]) if item.get("parent") else None)
        for item in data if item.get("name") and item.get("name") != "current"
    ]
    return order_snapshots(snaps)


def task_failure_detail(exitstatus: str, log_lines: Iterable[str]) -> str:
    """PVE's exit status plus the end of the task log, without repeating the status line."""
    noise = {exitstatus, f"TASK ERROR: {exitstatus}", "TASK OK"}
    tail = [line for line in log_lines if line.strip() and line.strip() not in noise][-_LOG_TAIL_LINES:]
    return f"{exitstatus} (task log: {' | '.join(tail)})" if tail else exitstatus


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_MAX else text[:_DETAIL_MAX] + "..."


# --------------------------------------------------------------------------- client


class PveClient:
    """One Proxmox VE node's API, for the containers of a stack."""

    def __init__(self, endpoint: str, node: str, token_id: str, token_secret: Sensitive, *,
                 verify: bool | str = True, timeout: float = DEFAULT_TIMEOUT,
                 task_timeout: float = DEFAULT_TASK_TIMEOUT, fingerprint: str | None = None) -> None:
        check_token_id(token_id, source="proxmox token id")
        if not isinstance(token_secret, Sensitive) or not token_secret:
            raise ConfigError("proxmox token secret: expected a non-empty Sensitive value")
        if not node:
            raise ConfigError("proxmox node: expected a node name")
        if isinstance(verify, str) and not Path(verify).is_file():
            raise ConfigError(f"proxmox CA bundle {verify}: no such file")
        host, port = parse_endpoint(endpoint)
        self.endpoint = endpoint
        self.node = node
        self.token_id = token_id
        self._secret = token_secret
        self.timeout = timeout
        self.task_timeout = task_timeout
        self.fingerprint = normalize_fingerprint(fingerprint) if fingerprint else None
        if verify is False and self.fingerprint is None:
            log.warning("INSECURE: TLS verification of %s is off (proxmox.insecure: true): anyone on the "
                        "path can read the API token and act as the node. Pin the node instead: "
                        "`bluegreen trust --proxmox`", endpoint)
        user, _, token_name = token_id.partition("!")
        # With a pin, the pin is what is checked (PVE's own certificate is self-signed by its cluster CA).
        self._api = ProxmoxAPI(host, port=port, user=user, token_name=token_name,
                               token_value=token_secret.reveal(),
                               verify_ssl=False if self.fingerprint else verify, timeout=timeout)
        if self.fingerprint:
            # proxmoxer keeps its requests session in `_store`; every URL of the node goes through the pin.
            self._api._store["session"].mount(f"https://{host}:{port}/", PinnedCertificate(self.fingerprint))

    @classmethod
    def from_topology(cls, t: Topology, *, environ: Mapping[str, str] | None = None,
                      ca_file: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                      task_timeout: float = DEFAULT_TASK_TIMEOUT) -> PveClient:
        """The stack's node, token and TLS settings (see the module-level `from_topology`)."""
        return from_topology(t, environ=environ, ca_file=ca_file, timeout=timeout,
                             task_timeout=task_timeout)

    def __repr__(self) -> str:
        return f"PveClient({self.endpoint!r}, node={self.node!r}, token_id={self.token_id!r})"

    # ------------------------------------------------------------------ reading

    def version(self) -> str:
        data = self._call("reading the PVE version", lambda: self._api.version.get())
        if not isinstance(data, Mapping) or "version" not in data:
            raise self._unexpected("reading the PVE version", data)
        return str(data["version"])

    def container_config(self, vmid: int) -> dict[str, Any]:
        """The container's configuration as PVE stores it (`GET .../lxc/{vmid}/config`)."""
        what = f"configuration of CT {vmid}"
        data = self._call(what, lambda: self._lxc(vmid).config.get())
        if not isinstance(data, Mapping):
            raise self._unexpected(what, data)
        return dict(data)

    def container_status(self, vmid: int) -> ContainerState:
        what = f"status of CT {vmid}"
        data = self._call(what, lambda: self._lxc(vmid).status.current.get())
        if not isinstance(data, Mapping):
            raise self._unexpected(what, data)
        return container_state(vmid, data)

    def statuses(self, vmids: Iterable[int]) -> dict[int, ContainerState]:
        """Every asked container in one request; those the node does not have are `missing`."""
        what = f"listing the containers of node {self.node}"
        data = self._call(what, lambda: self._api.nodes(self.node).lxc.get())
        if not isinstance(data, list):
            raise self._unexpected(what, data)
        found = {_int(item.get("vmid")): item for item in data if isinstance(item, Mapping)}
        result = {}
        for vmid in vmids:
            item = found.get(vmid)
            result[vmid] = (container_state(vmid, item) if item is not None else
                            ContainerState(vmid, "missing", 0, 0, 0, "", None))
        return result

    def snapshots(self, vmid: int) -> list[Snapshot]:
        what = f"listing the snapshots of CT {vmid}"
        data = self._call(what, lambda: self._lxc(vmid).snapshot.get())
        if not isinstance(data, list):
            raise self._unexpected(what, data)
        return parse_snapshots(item for item in data if isinstance(item, Mapping))

    # ------------------------------------------------------------------ changing

    def snapshot(self, vmid: int, name: str, description: str = "") -> None:
        check_snapshot_name(name)
        what = f"snapshot {name!r} of CT {vmid}"
        params = {"snapname": name}
        if description:
            params["description"] = description
        upid = self._call(what, lambda: self._lxc(vmid).snapshot.post(**params))
        self._wait_task(what, upid)

    def rollback(self, vmid: int, name: str, *, start: bool | None = None) -> None:
        """Roll CT `vmid` back to snapshot `name`. PVE stops the container to do so; `start=None`
        starts it again if it was running before, True/False force either."""
        check_snapshot_name(name)
        what = f"rollback of CT {vmid} to snapshot {name!r}"
        if start is None:
            start = self.container_status(vmid).running
        params = {"start": 1} if start else {}
        upid = self._call(what, lambda: self._lxc(vmid).snapshot(name).rollback.post(**params))
        self._wait_task(what, upid)

    def delete_snapshot(self, vmid: int, name: str) -> None:
        check_snapshot_name(name)
        what = f"deleting snapshot {name!r} of CT {vmid}"
        upid = self._call(what, lambda: self._lxc(vmid).snapshot(name).delete())
        self._wait_task(what, upid)

    def prune_snapshots(self, vmid: int, keep: int, prefix: str = SNAPSHOT_PREFIX) -> list[str]:
        """Delete our snapshots (named `prefix...`) beyond the newest `keep`, oldest first; returns
        the names deleted. Snapshots made by hand are never touched."""
        doomed = snapshots_to_prune(self.snapshots(vmid), keep, prefix)
        deleted = []
        for snap in doomed:
            self.delete_snapshot(vmid, snap.name)
            deleted.append(snap.name)
            log.info("CT %d: pruned snapshot %s", vmid, snap.name)
        return deleted

    def create_container(self, params: Mapping[str, Any]) -> None:
        """`POST /nodes/{node}/lxc` (what the Pulumi provider sends on create); waits for the task."""
        vmid = params.get("vmid")
        what = f"creating CT {vmid}"
        upid = self._call(what, lambda: self._api.nodes(self.node).lxc.post(**dict(params)))
        self._wait_task(what, upid)

    def destroy_container(self, vmid: int) -> bool:
        """Stop (if running) and destroy CT `vmid`; False if the node has no such container."""
        state = self.statuses([vmid])[vmid]
        if state.status == "missing":
            return False
        if state.running:
            what = f"stopping CT {vmid}"
            upid = self._call(what, lambda: self._lxc(vmid).status.stop.post())
            self._wait_task(what, upid)
        what = f"destroying CT {vmid}"
        upid = self._call(what, lambda: self._lxc(vmid).delete())
        self._wait_task(what, upid)
        return True

    # ------------------------------------------------------------------ plumbing

    def _lxc(self, vmid: int) -> Any:
        if isinstance(vmid, bool) or not isinstance(vmid, int) or vmid < 100:
            raise ConfigError(f"container id {vmid!r}: expected a whole number of at least 100")
        return self._api.nodes(self.node).lxc(vmid)

    def _redact(self, text: str) -> str:
        return redact(text, [self._secret])

    def _call(self, what: str, request: Callable[[], T]) -> T:
        try:
            return request()
        except ResourceException as exc:
            detail = str(exc)
            if exc.status_code == 401:
                detail += f" (the API token {self.token_id} was refused)"
            raise self._error(what, detail) from None
        except requests.exceptions.SSLError as exc:
            hint = ("the certificate is not the one pinned in proxmox.fingerprint: check it, then pin "
                    "the new one with `bluegreen trust --proxmox`" if self.fingerprint else
                    "pin the node's certificate with `bluegreen trust --proxmox`, or give its CA bundle as "
                    "proxmox.caFile")
            raise self._error(what, f"TLS verification of {self.endpoint} failed: {_root_cause(exc)} "
                                    f"({hint}); nothing was sent") from None
        except requests.exceptions.Timeout:
            raise self._error(what, f"no answer from {self.endpoint} within {self.timeout:g}s") from None
        except requests.exceptions.ConnectionError as exc:
            raise self._error(what, f"cannot reach {self.endpoint}: {_root_cause(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise self._error(what, f"request to {self.endpoint} failed: {_root_cause(exc)}") from None

    def _error(self, what: str, detail: str) -> ProxmoxError:
        return ProxmoxError(self._redact(f"{what}: {_clip(detail)}"))

    def _unexpected(self, what: str, data: Any) -> ProxmoxError:
        return self._error(what, f"unexpected answer from {self.endpoint}: {data!r}")

    def _wait_task(self, what: str, upid: Any) -> None:
        """Poll the task until PVE marks it stopped; its exit status must be OK."""
        if not isinstance(upid, str) or not upid.startswith("UPID:"):
            raise self._unexpected(what, upid)
        fields = upid.split(":")
        node = fields[1] if len(fields) > 1 and fields[1] else self.node
        task = self._api.nodes(node).tasks(upid)
        deadline = time.monotonic() + self.task_timeout
        interval = 0.05
        while True:
            status = self._call(f"{what} (task status)", lambda: task.status.get())
            if not isinstance(status, Mapping):
                raise self._unexpected(what, status)
            if status.get("status") == "stopped":
                break
            if time.monotonic() >= deadline:
                raise self._error(what, f"task {upid} still running after {self.task_timeout:g}s "
                                        "(it goes on on the node; check its task log)")
            time.sleep(interval)
            interval = min(interval * 2, 1.0)
        exitstatus = str(status.get("exitstatus") or "unknown")
        if exitstatus == "OK":
            log.debug("%s: task %s OK", what, upid)
            return
        lines: list[str] = []
        try:
            entries = self._call(f"{what} (task log)", lambda: task.log.get(limit=500))
            if isinstance(entries, list):
                lines = [str(e.get("t", "")) for e in entries if isinstance(e, Mapping)]
        except ProxmoxError as exc:
            log.debug("%s: no task log: %s", what, exc)
        raise self._error(what, f"task failed: {task_failure_detail(exitstatus, lines)}")


def _root_cause(exc: BaseException) -> str:
    """The innermost message of a requests/urllib3 error chain (theirs nest three deep)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    message = str(exc)
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        args = getattr(current, "args", ())
        inner = next((a for a in args if isinstance(a, BaseException)), None)
        reason = getattr(current, "reason", None)
        nxt = inner or (reason if isinstance(reason, BaseException) else None) or current.__cause__
        if nxt is None:
            message = str(current)
        current = nxt
    return message


# --------------------------------------------------------------------------- from config


def verify_setting(t: Topology, ca_file: str | None = None) -> bool | str:
    """False only when the stack says `insecure: true` (and pins nothing); else the CA bundle if
    one is set, else True (the system CAs). A pinned fingerprint is checked on top of this."""
    if t.proxmox.insecure and not t.proxmox.fingerprint:
        return False
    bundle = ca_file or t.proxmox.ca_file
    return str(bundle) if bundle else True


def from_topology(t: Topology, *, environ: Mapping[str, str] | None = None, ca_file: str | None = None,
                  timeout: float = DEFAULT_TIMEOUT,
                  task_timeout: float = DEFAULT_TASK_TIMEOUT) -> PveClient:
    token_id, secret = read_token(t, environ)
    return PveClient(t.proxmox.endpoint, t.proxmox.node, token_id, secret,
                     verify=verify_setting(t, ca_file), timeout=timeout, task_timeout=task_timeout,
                     fingerprint=t.proxmox.fingerprint)
