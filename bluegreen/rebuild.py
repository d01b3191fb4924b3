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
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from . import commands as cmd
from .appenv import apply_env, render_env, resolve_secrets
from .errors import BlueGreenError, SwitchError
from .executor import Executor
from .hostkeys import HostKey, trust_created_host
from .providers import (
    apply_bootstrap,
    apply_ecosystem,
    bootstrap_props,
    ecosystem_props,
)
from .sensitive import Sensitive
from .topology import Container, Topology, other_color

if TYPE_CHECKING:
    from .service import Service

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


@dataclass
class PulumiBackend:
    """`pulumi up --replace <container urn> --target-dependents`, through the Automation API."""

    project_dir: str
    stack: str
    pulumi_command: Any = None
    name: str = "pulumi"
    configures_hosts: bool = True

    def replace(self, host: Container) -> None:
        from .pulumi_seam import PulumiSeam

        seam = PulumiSeam(self.project_dir, self.stack, pulumi_command=self.pulumi_command)
        seam.replace_container(host.vmid, on_output=lambda line: log.info("pulumi: %s", line.rstrip()))


# --------------------------------------------------------------------------- configuring a host


@dataclass(frozen=True)
class Secrets:
    """The database password and the resolved `app.env` secrets."""

    db_password: Sensitive
    app: Mapping[str, Sensitive] = field(default_factory=dict)

    def all(self) -> list[Sensitive]:
        return [self.db_password, *self.app.values()]


def configure_app_host(t: Topology, host: Container, executor: Executor, secrets: Secrets) -> list[str]:
    """What `pulumi up` configures on one app host: bootstrap, shared/.env, PM2 ecosystem."""
    changes: list[str] = []
    boot = bootstrap_props(t, host)
    changes += [f"bootstrap: {c}" for c in apply_bootstrap(executor, boot["script"], boot["script_path"])]
    content = render_env(t, secrets.db_password, secrets.app)
    changes += [f"app settings: {c}" for c in apply_env(executor, t, host, content)]
    color = host.color or ""
    eco = ecosystem_props(t, color)
    changes += [f"pm2: {c}" for c in apply_ecosystem(
        executor, text=eco["ecosystem"], path=eco["path"], pm2_home=eco["pm2_home"],
        app_dir=eco["app_dir"], run_as=eco["run_as"], login_user=t.ssh.user, reload=True)]
    return changes


def secrets_from_environment(t: Topology, environ: Mapping[str, str] | None = None) -> Secrets:
    """Outside the engine: `database.passwordEnv` and the `app.env` references."""
    import os

    env = os.environ if environ is None else environ
    password = env.get(t.database.password_env)
    if not password:
        from .errors import ConfigError

        raise ConfigError(f"no database password to write shared/.env: set {t.database.password_env}")
    return Secrets(Sensitive(password), resolve_secrets(t, environ=env))


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


def rebuild_standby(service: Service, backend: ContainerBackend, secrets: Secrets | None = None, *,
                    ssh_wait_s: float = SSH_WAIT_S) -> RebuildResult:
    """Replace the standby's container and bring it back serving the live release."""
    from .service import iso, utcnow

    t = service.t
    progress = service.progress
    started = time.monotonic()
    with service._holding("rebuild standby"), service._on(t.load_balancer) as lb:
        live = service.live_color(lb)
        standby = other_color(live)
        host, live_host = t.app_host(standby), t.app_host(live)
        with service._on(live_host) as ex:
            current = cmd.parse_current(ex.run(cmd.read_current(cmd.AppPaths.of(t, live_host)),
                                               step="read the live release").stdout)
        if not current.sha:
            raise SwitchError(f"the live colour {live} serves no release to copy to the rebuilt {standby}")
        if secrets is None and not backend.configures_hosts:
            secrets = secrets_from_environment(t)
        result = RebuildResult(ok=False, color=standby, vmid=host.vmid, live=live, backend=backend.name)
        error: str | None = None
        try:
            with progress.step(f"replace CT {host.vmid} ({standby}, {backend.name})", long=True):
                backend.replace(host)
            with progress.step(f"wait for SSH on {host.label} and trust its new host key", long=True):
                result.host_key = trust_created_host(t, host, created_by_this_run=True,
                                                     timeout_s=ssh_wait_s, progress=progress)
            if not backend.configures_hosts:
                assert secrets is not None
                with progress.step(f"configure {host.label}", long=True), \
                        _executor(service, host, secrets) as ex:
                    result.configured = configure_app_host(t, host, ex, secrets)
            deployed = service.deploy(current.sha, migrate=False, snapshot=False)
            result.release, result.sha = deployed.release, deployed.sha
            result.ok = True
            return result
        except BlueGreenError as exc:
            error = str(exc)
            raise
        finally:
            result.duration_s = time.monotonic() - started
            try:
                journal = service._journal(lb)
                state = journal.read(default_live=live)
                journal.write(record_rebuild(state, result, who=service.who, when=iso(utcnow()),
                                             keep=t.journal.history_keep, error=error))
            except BlueGreenError as exc:
                log.error("could not record the rebuild in the journal: %s", exc)


class _executor:
    """An executor for `host` that redacts the secrets it writes."""

    def __init__(self, service: Service, host: Container, secrets: Secrets) -> None:
        from .executor import connect

        self.ex = connect(service.t, host, secrets=[*service.secrets, *secrets.all()])

    def __enter__(self) -> Executor:
        return self.ex

    def __exit__(self, *exc: object) -> None:
        self.ex.close()


def backend_for(t: Topology, pulumi_command: Any = None) -> ContainerBackend:
    """The lab's fake PVE for a lab stack (no Pulumi engine there), else the Pulumi program."""
    if t.environment == "lab":
        from .lab.rebuild import LabBackend

        return LabBackend.for_stack(t)
    return PulumiBackend(t.project_dir, t.stack, pulumi_command)
