"""Rebuild the standby colour from scratch: a new container, configured, serving the live release.

The steps, all under the deployment lock and never touching the live colour:

1. read which colour is live (HAProxy) and the release it serves;
2. replace the standby's container (`ContainerBackend.replace`): with Pulumi, `pulumi up
   --replace` of its URN (the program deletes before it creates, and the host configuration is
   replaced with it); on the lab, the same delete and create calls against the fake PVE, and the
   container "boots" (its root is new, its sshd has a new host key);
3. wait for SSH to answer, bounded (`ssh_wait_s`), with progress;
4. trust the new host key: trust on first use, *only* for the container this run just created
   (`trust_created_host`); its fingerprint is printed and written to the journal. Every other
   host keeps strict verification, so a changed key on any of them is still refused;
5. configure the host (bootstrap, PM2 ecosystem, shared/.env from the stack's secrets), unless
   the backend's engine already did;
6. deploy the live release to it (no migrations: the database is shared and already there) and
   check its health and the preview frontend, like every deploy.

`rebuild_standby` returns a `RebuildResult`; every failure is a `BlueGreenError` naming its step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from bluegreen.hosts.executor import connect
from bluegreen.hosts.hostkeys import HostKey, trust_created_host
from bluegreen.hosts.pulumi import PulumiSeam, provider_tls_env
from bluegreen.model.errors import BlueGreenError, SwitchError
from bluegreen.model.secrets import Secrets, secrets_from_environment
from bluegreen.model.timestamps import iso, utcnow
from bluegreen.model.topology import Container, Topology, other_color
from bluegreen.ops.configure import configure_app_host
from bluegreen.ops.deploy import deploy
from bluegreen.ops.estate import Estate
from bluegreen.render import commands as cmd

log = logging.getLogger("bluegreen.rebuild")

SSH_WAIT_S = 120.0


# --------------------------------------------------------------------------- backends


class ContainerBackend(Protocol):
    """How containers are deleted and created: the Pulumi engine, or the lab's fake PVE."""

    name: str
    # True when replacing also configures the host (the Pulumi program's host configuration).
    configures_hosts: bool

    def replace(self, host: Container) -> None:
        """Delete `host`'s container and create it again, blank and started."""
        ...


@runtime_checkable
class SecretHolder(Protocol):
    """A backend that knows the secrets a rebuilt host needs (the lab keeps its own)."""

    def secrets(self) -> Secrets: ...


@dataclass
class PulumiBackend:
    """`pulumi up --replace <container urn> --target-dependents`, through the Automation API."""

    project_dir: str
    stack: str
    pulumi_command: Any = None
    name: str = "pulumi"
    configures_hosts: bool = True
    env: dict[str, str] | None = None  # for the CLI: SSL_CERT_FILE (`provider_tls_env`)

    def replace(self, host: Container) -> None:
        seam = PulumiSeam(self.project_dir, self.stack, pulumi_command=self.pulumi_command, env=self.env)
        seam.replace_container(host.vmid, on_output=lambda line: log.info("pulumi: %s", line.rstrip()))


# --------------------------------------------------------------------------- the run


@dataclass
class RebuildResult:
    ok: bool
    color: str
    vmid: int
    live: str
    backend: str
    release: str | None = None
    sha: str | None = None
    host_key: HostKey | None = None
    configured: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "colour": self.color, "vmid": self.vmid, "live": self.live,
                "backend": self.backend, "release": self.release, "sha": self.sha,
                "hostKey": self.host_key.to_json() if self.host_key else None,
                "configured": self.configured, "durationSeconds": round(self.duration_s, 2)}


def record_rebuild(state: Any, result: RebuildResult, *, who: str, when: str, keep: int,
                   error: str | None = None) -> Any:
    """The journal with one `rebuild` entry on top (other tools skip entry types they do not know)."""
    entry = {"type": "rebuild", "color": result.color, "vmid": result.vmid, "backend": result.backend,
             "who": who, "when": when, "result": "ok" if result.ok else "failed",
             "release": result.release, "sha": result.sha,
             "hostKey": result.host_key.to_json() if result.host_key else None,
             "durationMs": int(result.duration_s * 1000), "error": error}
    return replace(state, history=((entry, *state.history))[:keep])


def rebuild_standby(estate: Estate, backend: ContainerBackend | None = None, secrets: Secrets | None = None, *,
                    ssh_wait_s: float = SSH_WAIT_S) -> RebuildResult:
    """Replace the standby's container and bring it back serving the live release."""
    t = estate.t
    backend = backend or backend_for(t, estate.pulumi_command)
    if secrets is None:
        secrets = backend.secrets() if isinstance(backend, SecretHolder) else None
    started = time.monotonic()
    with estate.holding("rebuild standby"), estate.on(t.load_balancer) as lb:
        live = estate.live_color(lb)
        standby = other_color(live)
        host, live_host = t.app_host(standby), t.app_host(live)
        with estate.on(live_host) as ex:
            current = cmd.parse_current(ex.run(cmd.read_current(cmd.AppPaths.of(t, live_host)),
                                               step="read the live release").stdout)
        if not current.sha:
            raise SwitchError(f"the live colour {live} serves no release to copy to the rebuilt {standby}")
        if secrets is None and not backend.configures_hosts:
            secrets = secrets_from_environment(t)
        result = RebuildResult(ok=False, color=standby, vmid=host.vmid, live=live, backend=backend.name)
        error: str | None = None
        try:
            _replace_and_serve(estate, backend, host, current.sha, secrets, result, ssh_wait_s=ssh_wait_s)
            return result
        except BlueGreenError as exc:
            error = str(exc)
            raise
        finally:
            result.duration_s = time.monotonic() - started
            try:
                journal = estate.journal(lb).store
                state = journal.read(default_live=live)
                journal.write(record_rebuild(state, result, who=estate.who, when=iso(utcnow()),
                                             keep=t.journal.history_keep, error=error))
            except BlueGreenError as exc:
                log.error("could not record the rebuild in the journal: %s", exc)


def _replace_and_serve(estate: Estate, backend: ContainerBackend, host: Container, sha: str,
                       secrets: Secrets | None, result: RebuildResult, *, ssh_wait_s: float) -> None:
    """The new container: replaced, its key trusted, configured, serving `sha` (the live release)."""
    t, progress = estate.t, estate.progress
    with progress.step(f"replace CT {host.vmid} ({result.color}, {backend.name})", long=True):
        backend.replace(host)
    with progress.step(f"wait for SSH on {host.label} and trust its new host key", long=True):
        result.host_key = trust_created_host(t, host, created_by_this_run=True, timeout_s=ssh_wait_s,
                                             progress=progress)
    if not backend.configures_hosts:
        assert secrets is not None
        # The secrets it writes join what every output of this run is scrubbed of.
        estate.secrets.add(*secrets.all())
        with progress.step(f"configure {host.label}", long=True), \
                connect(t, host, secrets=estate.secrets) as ex:
            result.configured = configure_app_host(t, host, ex, secrets)
    deployed = deploy(estate, sha, migrate=False, snapshot=False)
    result.release, result.sha = deployed.release, deployed.sha
    result.ok = True


BACKENDS_GROUP = "bluegreen.container_backends"


def backend_for(t: Topology, pulumi_command: Any = None) -> ContainerBackend:
    """The backend registered for the stack's environment (the lab registers its fake PVE under
    `lab`, as an entry point of the group `bluegreen.container_backends`), else the Pulumi program."""
    for entry in entry_points(group=BACKENDS_GROUP, name=t.environment):
        factory: Callable[[Topology], ContainerBackend] = entry.load()
        return factory(t)
    return PulumiBackend(t.project_dir, t.stack, pulumi_command, env=provider_tls_env(t))
