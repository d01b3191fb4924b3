"""`bluegreen rebuild estate`: the whole estate back from code and its off-host copies.

For the day the Proxmox node (or the four containers) is gone. The plan reads, and changes nothing:
the node's containers (any that still exists is refused unless named with `--replace`: it may
serve, or hold the only copy of something), the backup host's copies (the dump to restore, the
newest verified one unless `--backup` names one, re-read there against its checksum; the newest
copy of the journal) and, from that journal, the colour that was live and the release it served.
The run then, in order:

1. containers: created (or replaced) through the container backend: the Pulumi program (`pulumi
   refresh` + `pulumi up`, which also configures every host), or the lab's fake node; each new
   host key is trusted on first use, for these containers only (`hosts.hostkeys`);
2. host configuration as `pulumi up` applies it (`ops.configure`), `shared/.env` from the
   stack's secrets, the off-host copies' keys authorized again on the backup host; HAProxy routes
   to the colour that was NOT live, so the first deploy lands on the one that was;
3. the database: the dump fetched from the backup host onto the new database host (checked
   against the checksum recorded there), verified, replayed in one transaction;
4. the journal, from its off-host copy: history, live colour, switch count as they were;
5. under the deployment lock: the release deployed to the colour that was live (its migrations
   applied when the dump predates them), traffic moved there, and the public URL must answer
   from it on that release (visitors are served again: `servingAfterSeconds`); then the same
   release deployed to the other colour; the journal gets a `rebuild` entry (scope `estate`);
6. the journal and the dumps are copied off-host again.

A failure names its phase; what exists by then stays, and a second run (`--replace all`) starts
over. Nothing here can reach a container the plan did not list as missing or named.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from bluegreen.hosts import haproxy, health, offsite
from bluegreen.hosts.appenv import apply_env
from bluegreen.hosts.database import applied_rows, copy_offsite, verify_dump
from bluegreen.hosts.haproxy_cli import HaproxyPaths
from bluegreen.hosts.hostconfig import apply_bootstrap
from bluegreen.hosts.hostkeys import HostKey, trust_created_host
from bluegreen.hosts.providers import bootstrap_props
from bluegreen.model.dumps import restore_prelude, short_error
from bluegreen.model.errors import BlueGreenError, ConfigError, ProxmoxError, PulumiError
from bluegreen.model.journal import parse_state
from bluegreen.model.offsite import JournalCopy, OffsiteCopy, pick_offsite, release_to_restore
from bluegreen.model.secrets import Secrets, secrets_from_environment
from bluegreen.model.stackfile import set_active_color_in_file
from bluegreen.model.timestamps import iso, utcnow
from bluegreen.model.topology import COLORS, Container, Topology, other_color
from bluegreen.ops.configure import apply_estate, configure_offsite
from bluegreen.ops.deploy import deploy
from bluegreen.ops.estate import Estate
from bluegreen.ops.rebuild import SSH_WAIT_S, ContainerBackend, SecretHolder, backend_for
from bluegreen.render.appenv import render_env
from bluegreen.render.dbcommands import backup_folder, restore_command
from bluegreen.render.haproxy import render_live_map
from bluegreen.render.offsite import require_backup
from bluegreen.render.shell import sh

log = logging.getLogger("bluegreen.rebuild_estate")


class RebuildRefused(BlueGreenError):
    """The plan found a reason not to start; nothing was changed."""


class RebuildFailed(BlueGreenError):
    """A phase of the run failed; what it built so far stays."""


@runtime_checkable
class CreatesContainers(Protocol):
    """A backend that creates one missing container (the lab's fake node)."""

    def create(self, host: Container) -> bool: ...


@runtime_checkable
class RecreatesEstate(Protocol):
    """A backend that brings every container back in one run (the Pulumi program)."""

    def recreate(self, hosts: Sequence[Container], replace: Sequence[Container]) -> None: ...


# --------------------------------------------------------------------------- the plan


@dataclass
class ContainerAction:
    vmid: int
    label: str
    state: str  # missing | running | stopped | ... (as Proxmox says)
    serving: list[str]  # the services that answered, for a container that still runs
    action: str  # create | replace | refuse

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class EstatePlan:
    backend: str
    containers: list[ContainerAction]
    backup: OffsiteCopy | None
    journal: JournalCopy | None
    journal_text: str | None
    live: str | None
    declared: str
    ref: str | None  # what is deployed: --ref, else the sha the journal records for the live colour
    release: str | None
    history: int = 0
    problems: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "containers": [c.to_json() for c in self.containers],
                "backup": self.backup.to_json() if self.backup else None,
                "journal": self.journal.to_json() if self.journal else None, "historyEntries": self.history,
                "live": self.live, "declared": self.declared, "ref": self.ref, "release": self.release,
                "problems": self.problems, "steps": self.steps}


def _serving(t: Topology, host: Container) -> list[str]:
    ports = {"database": [("PostgreSQL", t.database.port)], "app": [("the app", t.app.port)],
             "loadbalancer": [("HAProxy", t.haproxy.https_port if t.haproxy.tls else t.haproxy.public_port)]}
    found = [what for what, port in ports.get(host.role, []) if health.tcp_answers(host.ip, port)]
    if health.tcp_answers(host.ip, t.ssh.port):
        found.append("SSH")
    return found


def _replacing(t: Topology, names: Sequence[str]) -> set[int]:
    if any(n == "all" for n in names):
        return {c.vmid for c in t.containers}
    return {t.find_host(n).vmid for n in names}


def plan_containers(estate: Estate, replace: Sequence[str]) -> list[ContainerAction]:
    t = estate.t
    named = _replacing(t, replace)
    try:
        states = estate.pve().statuses([c.vmid for c in t.containers])
    except ProxmoxError as exc:
        raise RebuildRefused(f"cannot read the containers from Proxmox ({exc}); nothing was changed") from None
    actions = []
    for c in t.containers:
        state = states[c.vmid].status
        serving = _serving(t, c) if state != "missing" else []
        action = "create" if state == "missing" else ("replace" if c.vmid in named else "refuse")
        actions.append(ContainerAction(c.vmid, c.label, state, serving, action))
    return actions


def plan_rebuild_estate(estate: Estate, *, backup: str | None = None, replace: Sequence[str] = (),
                        ref: str | None = None, backend: ContainerBackend | None = None) -> EstatePlan:
    """What `rebuild_estate` would do, read from Proxmox and the backup host; changes nothing."""
    t = estate.t
    require_backup(t)
    backend = backend or backend_for(t, estate.pulumi_command)
    plan = EstatePlan(backend=backend.name, containers=plan_containers(estate, replace), backup=None,
                      journal=None, journal_text=None, live=None, declared=t.active_color, ref=ref, release=None)
    for c in plan.containers:
        if c.action == "refuse":
            doing = f", {', '.join(c.serving)} answering" if c.serving else ""
            plan.problems.append(f"{c.label} still exists ({c.state}{doing}): it may serve or hold data; "
                                 f"name it with --replace {c.vmid} (or --replace all) to destroy and recreate it")
    if backend.configures_hosts:
        plan.problems += [f"{c.label} is declared `existing: true`; a container that is gone cannot be adopted: "
                          "remove that line from the stack file so the program creates it"
                          for c in t.containers if c.existing]
    _read_backup_host(estate, plan, backup)
    plan.steps = _steps(t, plan)
    return plan


def _read_backup_host(estate: Estate, plan: EstatePlan, wanted: str | None) -> None:
    t = estate.t
    try:
        with offsite.backup_executor(t, estate.secrets) as bhost:
            copies = offsite.list_copies(t, bhost)
            try:
                plan.backup = pick_offsite(copies, wanted)
                offsite.verify_copy(t, bhost, plan.backup.file)  # the bytes there, read again
            except (BlueGreenError, ValueError) as exc:
                plan.problems.append(str(exc))
                plan.backup = None
            if t.haproxy.tls_cert and not offsite.tls_copies(t, bhost):
                plan.problems.append(f"the backup host holds no copy of the certificate bundle (haproxy.tlsCert "
                                     f"{t.haproxy.tls_cert}); HAProxy cannot serve HTTPS without it")
            journals = offsite.journal_copies(t, bhost)
            if not journals:
                plan.problems.append("the backup host holds no copy of the journal: the history and the live "
                                     "colour cannot be restored")
                return
            plan.journal = journals[0]
            plan.journal_text = offsite.read_journal_copy(t, bhost, journals[0])
    except BlueGreenError as exc:
        plan.problems.append(f"cannot read the backup host: {exc}")
        return
    try:
        state = parse_state(plan.journal_text, source=f"{t.backup.label if t.backup else ''}:{plan.journal.file}",
                            declared_color=t.active_color)
    except BlueGreenError as exc:
        plan.problems.append(f"the journal's copy {plan.journal.file} does not parse: {exc}")
        return
    plan.live, plan.history = state.prod, len(state.history)
    record = release_to_restore(state, state.prod)
    if plan.ref is None and record is not None:
        plan.ref, plan.release = record.sha, record.release
    if plan.ref is None:
        plan.problems.append(f"the journal records no finished deploy to {state.prod} (the live colour): "
                             "give the release to deploy with --ref")


def _steps(t: Topology, plan: EstatePlan) -> list[str]:
    live = plan.live or "?"
    made = [f"CT {c.vmid} ({c.action})" for c in plan.containers if c.action != "refuse"]
    backup = plan.backup.file if plan.backup else "?"
    steps = [f"containers through {plan.backend}: {', '.join(made)}; trust each new host key (this run created it)",
             "host configuration (bootstrap, PostgreSQL role and database, HAProxy, PM2, shared/.env); "
             f"authorize the database and HAProxy hosts on {t.backup.label if t.backup else 'the backup host'}",
             f"database: fetch {backup} from the backup host (checksum checked), verify it, restore it in one "
             "transaction",
             f"journal: restore {plan.journal.file if plan.journal else '?'} ({plan.history} history entries)",
             f"deploy {(plan.ref or '?')[:12]} to {live} (migrating what the dump predates), route traffic to "
             f"{live}, check {t.public_url} answers from it, deploy it to "
             f"{other_color(live) if live in COLORS else '?'}",
             "record the rebuild in the journal; copy the journal and the dumps off-host again"]
    if plan.live and plan.live != plan.declared:
        steps.insert(0, f"the stack declares {plan.declared} live, the journal {plan.live}: the declared colour "
                        f"is set to {plan.live} (the journal wins)")
    return steps


# --------------------------------------------------------------------------- the run


@dataclass
class EstateRebuildResult:
    ok: bool
    live: str
    backend: str
    sha: str | None = None
    containers: list[dict[str, Any]] = field(default_factory=list)
    host_keys: list[HostKey] = field(default_factory=list)
    database: dict[str, Any] = field(default_factory=dict)
    journal: dict[str, Any] = field(default_factory=dict)
    deploys: list[dict[str, Any]] = field(default_factory=list)
    configured: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0
    serving_s: float | None = None  # from the start until the public URL answered from the live colour
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "live": self.live, "backend": self.backend, "sha": self.sha,
                "containers": self.containers, "hostKeys": [k.to_json() for k in self.host_keys],
                "database": self.database, "journal": self.journal, "deploys": self.deploys,
                "phases": {k: round(v, 2) for k, v in self.phases.items()},
                "servingAfterSeconds": round(self.serving_s, 2) if self.serving_s is not None else None,
                "durationSeconds": round(self.duration_s, 2), "error": self.error}


def rebuild_estate(estate: Estate, plan: EstatePlan, backend: ContainerBackend | None = None,
                   secrets: Secrets | None = None, *, ssh_wait_s: float = SSH_WAIT_S) -> EstateRebuildResult:
    """Run `plan` (from `plan_rebuild_estate`); RebuildRefused when it has problems."""
    if plan.problems or plan.backup is None or plan.journal_text is None or plan.live is None or not plan.ref:
        raise RebuildRefused("refusing to rebuild the estate: " + ("; ".join(plan.problems) or "incomplete plan"))
    t = estate.t
    backend = backend or backend_for(t, estate.pulumi_command)
    if secrets is None and isinstance(backend, SecretHolder):
        secrets = backend.secrets()
    if secrets is None and not backend.configures_hosts:  # the Pulumi program has its own
        secrets = secrets_from_environment(t)
    started = time.monotonic()
    result = EstateRebuildResult(ok=False, live=plan.live, backend=backend.name)
    if plan.live != t.active_color:
        set_active_color_in_file(t.project_dir, t.stack, plan.live)
        estate.declare(plan.live)
        estate.progress.note(f"declared colour set to {plan.live}, as the journal says")
    phase = "containers"
    try:
        with _phase(result, "containers"):
            _containers(estate, backend, plan, result, ssh_wait_s)
        with _phase(result, phase := "configure"):
            _configure(estate, backend, plan.live, secrets, result)
        with _phase(result, phase := "database"):
            _restore_database(estate, plan.backup, result)
        with _phase(result, phase := "journal"):
            _restore_journal(estate, plan, result)
        with estate.holding("rebuild estate"):
            with _phase(result, phase := "deploy live"):
                _deploy_live(estate, plan.live, plan.ref, result)
            with _phase(result, phase := "verify"):
                _verify_public(estate, plan.live, result)
                result.serving_s = time.monotonic() - started  # visitors are served again from here
            with _phase(result, phase := "deploy standby"):
                second = deploy(estate, plan.ref, migrate=True, allow_destructive=True, snapshot=False,
                                reconcile_first=False)
                result.deploys.append(second.to_json())
            _verify_public(estate, plan.live, result)
            result.ok = True
            result.duration_s = time.monotonic() - started
            _record(estate, plan, result)
    except BlueGreenError as exc:
        result.duration_s = time.monotonic() - started
        result.error = f"{phase}: {exc}"
        if phase in ("deploy live", "verify", "deploy standby"):
            _record(estate, plan, result)
        if phase == "deploy standby":
            raise RebuildFailed(f"rebuild estate: visitors are served again by {plan.live} (release "
                                f"{(result.sha or '')[:7]}), but deploying it to {other_color(plan.live)} failed: "
                                f"{exc}. Fix the cause and run `bluegreen deploy --ref {plan.ref}`") from None
        raise RebuildFailed(f"rebuild estate failed at {phase}: {exc}. What was built so far stays; fix the "
                            "cause and run `bluegreen rebuild estate --replace all` again") from None
    _copy_off_host(estate)
    return result


@contextlib.contextmanager
def _phase(result: EstateRebuildResult, name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        result.phases[name] = time.monotonic() - started


def _containers(estate: Estate, backend: ContainerBackend, plan: EstatePlan, result: EstateRebuildResult,
                ssh_wait_s: float) -> None:
    t, progress = estate.t, estate.progress
    hosts = [t.container(c.vmid) for c in plan.containers]
    replace = [t.container(c.vmid) for c in plan.containers if c.action == "replace"]
    with progress.step(f"bring back {len(hosts)} containers ({backend.name})", long=True):
        if isinstance(backend, RecreatesEstate):
            try:
                backend.recreate(hosts, replace)
            except PulumiError as exc:
                if not t.haproxy.tls_cert:
                    raise
                # HAProxy's configuration needs the certificate bundle, which only the backup host
                # has: the containers and their bootstrap exist by now, so put it back and go again.
                progress.note(f"pulumi up stopped ({exc}); restoring the certificate bundle, then once more")
                _offsite_and_tls(estate, result)
                backend.recreate(hosts, [])
        else:
            if not isinstance(backend, CreatesContainers):
                raise ConfigError(f"the container backend {backend.name} cannot create containers")
            for host in hosts:
                if host in replace:
                    backend.replace(host)
                else:
                    backend.create(host)
    result.containers = [{"vmid": c.vmid, "action": c.action} for c in plan.containers]
    if backend.configures_hosts:
        return  # the program trusted each new key when it bootstrapped the container
    for host in hosts:
        with progress.step(f"wait for SSH on {host.label} and trust its new host key", long=True):
            result.host_keys.append(trust_created_host(t, host, created_by_this_run=True, timeout_s=ssh_wait_s,
                                                       progress=progress))


def _configure(estate: Estate, backend: ContainerBackend, live: str, secrets: Secrets | None,
               result: EstateRebuildResult) -> None:
    """Host configuration with traffic routed to the colour that was not live (nothing serves yet):
    the first deploy then lands on the one that was."""
    t, progress = estate.t, estate.progress
    first = dataclasses.replace(t, active_color=other_color(live))
    if not backend.configures_hosts:
        assert secrets is not None
        with progress.step("bootstrap every host", long=True):
            for host in t.containers:
                props = bootstrap_props(t, host)
                with estate.on(host) as ex:
                    result.configured += [f"{host.label}: bootstrap: {c}"
                                          for c in apply_bootstrap(ex, props["script"], props["script_path"])]
        _offsite_and_tls(estate, result)
        with progress.step("configure every host", long=True):
            result.configured += apply_estate(first, secrets.db_password)
            for host in t.app_hosts.values():
                content = render_env(t, host, secrets.db_password, secrets.app)
                with estate.on(host) as ex:
                    result.configured += [f"{host.label}: {c}" for c in apply_env(ex, t, host, content)]
        return
    _offsite_and_tls(estate, result)
    with progress.step("routing", long=True), estate.on(t.load_balancer) as lb:
        haproxy.set_live_color(lb, HaproxyPaths.from_topology(first), first.active_color,
                               render_live_map(first, first.active_color))


def _offsite_and_tls(estate: Estate, result: EstateRebuildResult) -> None:
    """The new hosts' keys authorized on the backup host, then the certificate bundle back in place
    (the HAProxy configuration cannot load without it)."""
    t, progress = estate.t, estate.progress
    with progress.step("authorize the new hosts on the backup host"), estate.on(t.database_host) as db, \
            estate.on(t.load_balancer) as lb:
        result.configured += configure_offsite(t, [(t.database_host, db), (t.load_balancer, lb)],
                                               secrets=estate.secrets)
        if t.haproxy.tls_cert:
            with progress.step("restore the certificate bundle"):
                result.configured.append(f"{t.load_balancer.label}: {offsite.restore_tls(t, lb)}")


def _restore_database(estate: Estate, copy: OffsiteCopy, result: EstateRebuildResult) -> None:
    t, progress = estate.t, estate.progress
    path = f"{backup_folder(t)}/{copy.file}"
    with estate.on(t.database_host) as db:
        with progress.step(f"fetch {copy.file} from the backup host", long=True):
            digest = offsite.pull_dump(t, db, copy.file)
        with progress.step("verify the dump"):
            size, _toc, problems = verify_dump(t, db, path, tables={})
            if problems:
                raise RebuildFailed(f"{copy.file} fetched from the backup host does not verify: {'; '.join(problems)}")
        prelude = f"{backup_folder(t)}/.restore-prelude.sql"
        db.put(prelude, restore_prelude([]), step="write the restore prelude", mode=0o644)
        with progress.step(f"restore {copy.file} in one transaction", long=True):
            out = db.run(restore_command(t, t.database_host, path, prelude), step="restore the database",
                         check=False)
            if not out.ok:
                raise RebuildFailed(f"restoring {copy.file} failed and was rolled back: {short_error(out.stderr)}")
        applied = sorted(r.name for r in applied_rows(t, db) if r.applied)
    meta = copy.backup.meta
    result.database = {"file": copy.file, "sha256": digest, "bytes": size,
                       "createdAt": copy.backup.created, "kind": meta.kind if meta else None,
                       "migrationsApplied": applied}


def _restore_journal(estate: Estate, plan: EstatePlan, result: EstateRebuildResult) -> None:
    t = estate.t
    path = t.load_balancer.path(t.journal.path)
    assert plan.journal is not None and plan.journal_text is not None
    with estate.on(t.load_balancer) as lb, estate.progress.step(f"restore the journal ({plan.journal.file})"):
        lb.run(sh("install", "-d", "-m", "700", "--", path.rsplit("/", 1)[0]), step="restore the journal")
        lb.put(path, plan.journal_text, step="restore the journal", mode=0o600)
        restored = estate.read_state(lb)
    result.journal = {"copy": plan.journal.file, "sha256": plan.journal.sha256, "entries": len(restored.history),
                      "prod": restored.prod, "switchCount": restored.switch_count}


def _deploy_live(estate: Estate, live: str, ref: str, result: EstateRebuildResult) -> None:
    """The release onto the colour that was live (HAProxy routes to the other one meanwhile:
    the deploy's smoke test goes through the preview frontend), then traffic moved there."""
    t = estate.t
    first = deploy(estate, ref, migrate=True, allow_destructive=True, snapshot=False, reconcile_first=False)
    result.deploys.append(first.to_json())
    if first.color != live:
        raise RebuildFailed(f"the first deploy went to {first.color}, expected {live}")
    result.sha = first.sha
    with estate.on(t.load_balancer) as lb, estate.progress.step(f"route traffic to {live}"):
        haproxy.set_live_color(lb, HaproxyPaths.from_topology(t), live, render_live_map(t, live))


def _verify_public(estate: Estate, live: str, result: EstateRebuildResult) -> None:
    t = estate.t
    url = f"{t.public_url}{t.app.health_path}"

    def probe() -> health.ProbeResult:
        answer = health.expect_commit(health.http_probe(url, headers={"Connection": "close"}, **health.visitor(t),
                                                        expect_status=t.app.health_status), result.sha or "")
        if answer.ok and answer.served_by != live:
            return dataclasses.replace(answer, ok=False, error=f"served by {answer.served_by}, not {live}")
        return answer

    with estate.progress.step(f"check {t.public_url} answers from {live}", long=True):
        answer = health.poll(probe, deadline_s=max(10.0, t.app.health_timeout / 2), interval_s=0.5)
    if not answer.ok:
        raise RebuildFailed(f"{url} did not answer from {live}: {answer.error or answer.status}")


def _record(estate: Estate, plan: EstatePlan, result: EstateRebuildResult) -> None:
    t = estate.t
    entry = {"type": "rebuild", "scope": "estate", "who": estate.who, "when": iso(utcnow()),
             "result": "ok" if result.ok else "failed", "backend": result.backend, "live": result.live,
             "sha": result.sha or plan.ref, "backup": result.database.get("file"),
             "backupSha256": result.database.get("sha256"), "journalCopy": plan.journal.file if plan.journal else None,
             "hostKeys": [k.to_json() for k in result.host_keys], "durationMs": int(result.duration_s * 1000),
             "error": result.error}
    try:
        with estate.on(t.load_balancer) as lb:
            journal = estate.journal(lb)
            state = journal.read()
            state = state.with_entry_on_top(entry, keep=t.journal.history_keep)
            journal.write(state, live=result.live)
    except BlueGreenError as exc:
        log.error("could not record the rebuild in the journal: %s", exc)


def _copy_off_host(estate: Estate) -> None:
    """The new history and the dumps this run took go off-host now, not at the next timer."""
    t = estate.t
    try:
        with estate.on(t.load_balancer) as lb:
            offsite.push_journal(t, lb)
        with estate.on(t.database_host) as db:
            copy_offsite(t, db, estate.progress)
    except BlueGreenError as exc:
        estate.progress.note(f"the journal was not copied off-host yet ({exc}); its path unit retries")
