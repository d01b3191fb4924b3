"""Rebuild the standby colour from scratch: a new container, configured, serving the live release.

The steps, all under the deployment lock and never touching the live colour:

1. read which colour is live (HAProxy) and the release it serves;
2. replace the standby's container (`ContainerBackend.replace`): with Pulumi, `pulumi up
   --replace` of its URN, targeting exactly its resources (the program deletes before it creates,
   and the host configuration on it is replaced with it); an adopted container first takes the
   defined way from adopted to owned (`replace_through_pulumi`); on the lab, the same delete and
   create calls against the fake PVE, and the container "boots" (its root is new, its sshd has a
   new host key);
3. wait for SSH to answer, bounded (`ssh_wait_s`), with progress;
4. trust the new host key: trust on first use, *only* for the container this run just created
   (`trust_created_host`); its fingerprint is printed and written to the journal. Every other
   host keeps strict verification, so a changed key on any of them is still refused;
5. configure the host (bootstrap, PM2 ecosystem, shared/.env from the stack's secrets), unless
   the backend's engine already did;
6. deploy the live release to it (no migrations: the database is shared and already there) and
   check its health and the preview frontend, like every deploy; the deploy gives the new host a
   working copy on `app.branch` (cloned from the fetched mirror), where the team expects one.

The team's working copy on the standby goes with its container, so a rebuild first reads it and
refuses while it holds work found nowhere else (uncommitted or untracked files, commits on no
remote branch, stashes), naming it, unless told to discard it.

`rebuild_standby` returns a `RebuildResult`; every failure is a `BlueGreenError` naming its step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from bluegreen.hosts.executor import connect
from bluegreen.hosts.hostkeys import HostKey, trust_created_host
from bluegreen.hosts.pulumi import PulumiSeam, find_container, find_urn, provider_tls_env
from bluegreen.model.ctinputs import REBUILD_ENV, RELEASE, REPLACE
from bluegreen.model.errors import BlueGreenError, ConfigError, PulumiError, SwitchError
from bluegreen.model.resources import (
    TEMPLATE_FILE_TYPE,
    container_resources,
    container_urn,
    host_resource_urn,
    template_name,
    template_urns,
)
from bluegreen.model.secrets import Secrets, secrets_from_environment
from bluegreen.model.stackfile import load_stack, set_container_existing
from bluegreen.model.timestamps import iso, utcnow
from bluegreen.model.topology import REBUILDING, Container, Topology, other_color
from bluegreen.ops.configure import configure_app_host
from bluegreen.ops.deploy import deploy
from bluegreen.ops.estate import Estate
from bluegreen.ops.status import read_working_copy
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
    """`pulumi up --replace <container urn>` targeting exactly that host's resources, through the
    Automation API; on an adopted container, the transition to owned first (`replace_through_pulumi`)."""

    project_dir: str
    stack: str
    pulumi_command: Any = None
    name: str = "pulumi"
    configures_hosts: bool = True
    topology: Topology | None = None
    lock_token: str | None = None  # the project lock the rebuild holds (rebuild_standby sets it)
    env: dict[str, str] | None = None  # for the CLI: SSL_CERT_FILE (`provider_tls_env`)

    def replace(self, host: Container) -> None:
        t = self.topology or load_stack(self.project_dir, self.stack)
        seam = PulumiSeam(self.project_dir, self.stack, pulumi_command=self.pulumi_command,
                          lock_token=self.lock_token, env=self.env)
        replace_through_pulumi(seam, t, host, on_output=lambda line: log.info("pulumi: %s", line.rstrip()))


def standby_targets(t: Topology, project: str, host: Container, deployment: Mapping[str, Any],
                    container_urn_: str, *, created: bool) -> list[str]:
    """Exactly the rebuilt host's resources: its container, the host configuration on it, and the
    template download when the container is to be created from it and the state has none yet
    (a targeted update creates only what it targets: step_generator.go, "Case 4", skipped creates).
    Never `--target-dependents`: the load balancer depends on both colours, and would come along."""
    targets = [container_urn_]
    for resource in container_resources(t, host):
        targets.append(find_urn(deployment, resource.type, resource.name)
                       or host_resource_urn(t, project, resource))
    if created and t.proxmox.template.url and find_urn(deployment, TEMPLATE_FILE_TYPE, template_name(t)) is None:
        targets += template_urns(t, project)
    return targets


def replace_through_pulumi(seam: PulumiSeam, t: Topology, host: Container, *,
                           on_output: Callable[[str], Any] | None = None) -> None:
    """Replace `host`'s container with a new one the program owns.

    A container the program created: one `up --replace`. An adopted one (`existing: true`) takes
    the defined way to owned, each step recorded before the next so a cut leaves a state the next
    run continues from (model/ctinputs.py, `lifecycle`):

    1. the stack file says `existing: rebuilding`: from here a plain `pulumi up` refuses to run;
    2. `release` (if the state still retains it): an `up` of the container alone that records
       `retain_on_delete: false` (same import id, so no import; a "same" step that persists it,
       pkg/backend/snapshot.go `mustWrite`). Without it the replacement's delete would keep CT
       and the create collide with its vmid: the engine deletes by the *old* state's flag
       (pkg/resource/deploy/step.go, DeleteStep.Apply: `s.old.RetainOnDelete`);
    3. `replace`: the container declared without `import` (one that still declares it may not be
       replaced: step_generator.go, "previously-imported resources that still specify an ID may not
       be replaced"), with template and keys, its host configuration tied to it; `--replace` of its
       URN, targets exactly its resources;
    4. the stack file drops `existing`: owned. A plain `up` now declares what the replace created
       and changes nothing.
    """
    vmid = host.vmid
    deployment = seam.export()
    found = find_container(deployment, vmid)
    urn = str(found["urn"]) if found is not None else container_urn(t, seam.project, host)
    targets = standby_targets(t, seam.project, host, deployment, urn, created=True)
    replace = [urn] if found is not None else []  # nothing to replace: a cut after the delete
    if not host.existing:
        seam.up(f"replace container {vmid}", targets=targets, replace=replace,
                message=f"bluegreen: replace container {vmid}", on_output=on_output)
        return
    if found is None:
        raise PulumiError(f"stack {t.stack!r} has no state for the adopted CT {vmid} ({host.name}): run "
                          f"`pulumi up --stack {t.stack}` first (it imports the running container and changes "
                          "nothing), then rebuild; creating it now would collide with the running one")
    if not host.rebuilding:
        set_container_existing(t.project_dir, t.stack, vmid, REBUILDING)
    if found.get("retainOnDelete"):
        seam.up(f"release container {vmid} from adoption", targets=[urn],
                env={REBUILD_ENV: f"{vmid}:{RELEASE}"}, on_output=on_output,
                message=f"bluegreen: rebuild {vmid}: stop retaining the adopted container")
    seam.up(f"replace container {vmid}", targets=targets, replace=replace,
            env={REBUILD_ENV: f"{vmid}:{REPLACE}"}, on_output=on_output,
            message=f"bluegreen: rebuild {vmid}: replace the adopted container with one the program owns")
    set_container_existing(t.project_dir, t.stack, vmid, False)

    def recreate(self, hosts: Sequence[Container], replace: Sequence[Container]) -> None:
        """`rebuild estate`: refresh, then one `pulumi up` that recreates every container (those of
        `replace` still existing are replaced) and configures every host.

        An adopted container (`existing: true`) that is gone cannot be imported again: the program
        would declare an import of what no longer exists. Each one is recorded as owned first (the
        stack file drops `existing`), so the program creates it; a plain `up` afterwards declares
        what it created and changes nothing."""
        for host in hosts:
            if host.existing:
                set_container_existing(self.project_dir, self.stack, host.vmid, False)
        seam = PulumiSeam(self.project_dir, self.stack, pulumi_command=self.pulumi_command,
                          lock_token=self.lock_token, env=self.env)
        seam.recreate_estate([h.vmid for h in replace],
                             on_output=lambda line: log.info("pulumi: %s", line.rstrip()))


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
    working_copy: str | None = None  # what became of the standby's working copy

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "colour": self.color, "vmid": self.vmid, "live": self.live,
                "workingCopy": self.working_copy,
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
    return state.with_entry_on_top(entry, keep=keep)


def rebuild_standby(estate: Estate, backend: ContainerBackend | None = None, secrets: Secrets | None = None, *,
                    ssh_wait_s: float = SSH_WAIT_S, discard_working_copy: bool = False) -> RebuildResult:
    """Replace the standby's container and bring it back serving the live release."""
    t = estate.t
    backend = backend or backend_for(t, estate.pulumi_command)
    if isinstance(backend, PulumiBackend):
        backend.topology = backend.topology or t
    if secrets is None:
        secrets = backend.secrets() if isinstance(backend, SecretHolder) else None
    started = time.monotonic()
    with estate.holding("rebuild standby"), estate.on(t.load_balancer) as lb:
        if isinstance(backend, PulumiBackend):
            backend.lock_token = estate.lock_token  # the program then knows the lock is ours
        live = estate.live_color(lb)
        standby = other_color(live)
        host, live_host = t.app_host(standby), t.app_host(live)
        with estate.on(live_host) as ex:
            current = cmd.parse_current(ex.run(cmd.read_current(cmd.AppPaths.of(t, live_host)),
                                               step="read the live release").stdout)
        if not current.sha:
            raise SwitchError(f"the live colour {live} serves no release to copy to the rebuilt {standby}")
        kept = _check_working_copy(estate, host, discard=discard_working_copy)
        if secrets is None and not backend.configures_hosts:
            secrets = secrets_from_environment(t)
        result = RebuildResult(ok=False, color=standby, vmid=host.vmid, live=live, backend=backend.name,
                               working_copy=kept)
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
    if deployed.working_copy:
        result.working_copy = "; ".join(filter(None, [result.working_copy, deployed.working_copy]))
    result.ok = True


def _check_working_copy(estate: Estate, host: Container, *, discard: bool) -> str | None:
    """Refuse to replace a container whose working copy holds work found nowhere else (unless
    `discard`); what is known about it, for the result. An unreachable host is what a rebuild is
    for: it goes on, saying the working copy could not be checked."""
    paths = cmd.AppPaths.of(estate.t, host)
    if paths.working_copy is None:
        return None
    try:
        with estate.on(host) as ex:
            found = read_working_copy(ex, paths)
    except BlueGreenError as exc:
        note = f"the working copy {paths.working_copy} on {host.label} could not be checked ({exc})"
        estate.progress.note(note)
        return note
    if found.state != "present" or not found.unsaved:
        return None
    what = ", ".join(found.unsaved)
    if not discard:
        raise ConfigError(
            f"the working copy {paths.working_copy} on {host.label} holds work found nowhere else ({what}); "
            "a rebuild replaces the container and it with it: commit and push it (or copy it off the host) "
            "first, or rebuild with --discard-working-copy")
    note = f"discarded the working copy {paths.working_copy} on {host.label} with {what} (--discard-working-copy)"
    estate.progress.note(note)
    return note


BACKENDS_GROUP = "bluegreen.container_backends"


def backend_for(t: Topology, pulumi_command: Any = None) -> ContainerBackend:
    """The backend registered for the stack's environment (the lab registers its fake PVE under
    `lab`, as an entry point of the group `bluegreen.container_backends`), else the Pulumi program."""
    for entry in entry_points(group=BACKENDS_GROUP, name=t.environment):
        factory: Callable[[Topology], ContainerBackend] = entry.load()
        return factory(t)
    return PulumiBackend(t.project_dir, t.stack, pulumi_command, topology=t, env=provider_tls_env(t))
