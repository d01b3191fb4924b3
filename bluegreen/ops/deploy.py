"""`bluegreen deploy`: a git ref to the standby colour, never touching the live one.

The plan pins the commit and the pending migrations (an approved plan runs as shown or not at all);
the run (`deploy_run.DeployRun`) records each step so a failure restores the standby exactly, and
the journal gets one deploy entry whatever happens.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from bluegreen.hosts.executor import Executor
from bluegreen.hosts.journal import JournalNotOurs, append_side_command
from bluegreen.model.deploy_pin import DeployPin, PendingMigration, describe_pending
from bluegreen.model.errors import BlueGreenError, ConfigError, DeployError
from bluegreen.model.journal import DeployRecord, side_path
from bluegreen.model.placeholders import require_complete
from bluegreen.model.sensitive import redact
from bluegreen.model.timestamps import iso, utcnow
from bluegreen.model.topology import other_color
from bluegreen.ops.deploy_run import DeployResult, DeployRun
from bluegreen.ops.estate import Estate
from bluegreen.ops.gitaccess import git_access_all
from bluegreen.ops.migrate import failure_note, inspect_ref
from bluegreen.ops.notify import emits_deploy
from bluegreen.ops.reconcile import reconcile
from bluegreen.ops.signals import signals_deferred
from bluegreen.render import commands as cmd
from bluegreen.render.gitaccess import describe_problems

log = logging.getLogger("bluegreen.deploy")


@dataclass
class DeployPlan:
    color: str
    host: str
    ref: str
    migrate: bool
    allow_destructive: bool
    live: str
    steps: list[str]
    # Pinned for approvals: the commit the ref resolves to and what it would migrate.
    sha: str | None = None
    pending: list[PendingMigration] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"colour": self.color, "host": self.host, "ref": self.ref, "migrate": self.migrate,
                "allowDestructive": self.allow_destructive, "live": self.live, "steps": self.steps,
                "sha": self.sha, "pendingMigrations": [m.to_json() for m in self.pending]}

    def pin(self) -> DeployPin | None:
        if self.sha is None:
            return None
        return DeployPin(ref=self.ref, sha=self.sha,
                         pending=tuple(sorted((m.name, m.checksum) for m in self.pending)))


def plan_deploy(estate: Estate, ref: str | None = None, *, migrate: bool = False,
                allow_destructive: bool = False) -> DeployPlan:
    t = estate.t
    require_complete(t)  # "set app.repo: ..." before any host is contacted
    ref = cmd.validate_ref(ref or t.app.branch)
    with estate.on(t.load_balancer) as lb:
        live = estate.live_color(lb)
    standby = other_color(live)
    access = _preflight(estate, standby)
    steps = [
        f"lock the estate (on {t.load_balancer.label})",
        f"check git access on {standby} ({access})",
        f"snapshot CT {t.app_host(standby).vmid} in Proxmox (keep {t.proxmox.snapshot_keep})",
        f"fetch {ref} from {t.app.repo} into a new release on {standby}",
        "link shared .env; install dependencies (reused when package-lock.json is unchanged)",
        f"build ({t.app.build_command})",
        ("if migrations are pending: dump the database, refuse destructive changes"
         + (" (allowed)" if allow_destructive else "") + f", run `{t.app.migrate_command}`")
        if migrate else "refuse if migrations are pending (run with --migrate)",
        f"point current at the new release; reload PM2 on {standby}",
        f"wait for {t.app.health_path} on {standby} (deadline {t.app.health_timeout:g}s)",
        f"smoke test through the preview frontend {t.preview_url}",
        f"keep the last {t.app.keep_releases} releases; record the deploy; release the lock",
    ]
    sha, pending = inspect_ref(estate, standby, ref)
    steps.insert(2, f"pinned: {ref} is {sha}; pending migrations: "
                    + describe_pending((m.name, m.checksum) for m in pending)
                    + " (a run that finds another commit or other migrations is refused)")
    return DeployPlan(color=standby, host=t.app_host(standby).label, ref=ref, migrate=migrate,
                      allow_destructive=allow_destructive, live=live, steps=steps, sha=sha, pending=pending)


def _preflight(estate: Estate, standby: str) -> str:
    """Every app host asked whether it can fetch (as the deploy user, with its credentials): the
    standby's problems stop the plan; the live colour's are warned about (its next deploy, after a
    switch, would fail). What the standby uses, for the plan."""
    found = git_access_all(estate)
    for color, answer in sorted(found.items()):
        problem = answer if isinstance(answer, str) else (None if answer.ok else describe_problems(answer))
        if problem and color == standby:
            raise ConfigError(f"{problem}; nothing was changed")
        if problem:
            log.warning("%s (its next deploy, after a switch, would fail)", problem)
    mine = found[standby]
    assert not isinstance(mine, str)
    return f"as {mine.user} with {mine.credentials}" + ("" if mine.present else " (absent: not needed)")


@emits_deploy
def deploy(estate: Estate, ref: str | None = None, *, migrate: bool = False, allow_destructive: bool = False,
           snapshot: bool = True, approved: DeployPin | None = None, reconcile_first: bool = True) -> DeployResult:
    """`reconcile_first=False`: HAProxy's routing differs from the journal on purpose (`rebuild
    estate` routes to the colour it deploys second); nothing is recorded as a cut-off switch."""
    t = estate.t
    require_complete(t)  # "set app.repo: ..." before anything is touched
    ref = cmd.validate_ref(ref or t.app.branch)
    started = time.monotonic()
    with estate.holding("deploy"), estate.on(t.load_balancer) as lb:
        if reconcile_first:
            _reconcile_quietly(estate, lb)
        live = estate.live_color(lb)
        standby = other_color(live)
        result = DeployResult(ok=False, color=standby, ref=ref)
        run = DeployRun(estate, standby, ref, result, pin=approved)
        interrupted: KeyboardInterrupt | None = None
        try:
            run.execute(migrate=migrate, allow_destructive=allow_destructive, snapshot=snapshot)
            result.ok = True
        except BlueGreenError as exc:
            detail = exc.detail if isinstance(exc, DeployError) else str(exc)
            _restore_after_failure(estate, run, redact(detail, estate.secrets))
        except KeyboardInterrupt as exc:
            # SIGINT/SIGTERM: the same restore as a failed step, then the interrupt goes on.
            interrupted = exc
            _restore_after_failure(estate, run, "interrupted")
        finally:
            result.duration_s = time.monotonic() - started
            with signals_deferred():
                _record_deploy(estate, lb, result, live)
        if interrupted is not None:
            raise interrupted
        if not result.ok:
            if isinstance(run.failure, ConfigError):
                raise ConfigError(result.error or "bad input")
            raise DeployError(result.failed_step or "deploy", result.error or "failed", color=standby)
        return result


def _restore_after_failure(estate: Estate, run: DeployRun, error: str) -> None:
    result = run.result
    result.failed_step = run.step_name
    result.error = error
    with signals_deferred():
        run.restore()
    result.database = failure_note(estate, run)
    if result.database:
        result.error = f"{result.error}\n{result.database}"


def _reconcile_quietly(estate: Estate, lb: Executor) -> None:
    """A flip cut off before its record is recorded first (the deploy goes to the standby of what
    HAProxy really serves either way); a failure here is logged, never fatal to the deploy."""
    try:
        reconcile(estate, lb)
    except BlueGreenError as exc:
        log.warning("could not compare the live colour with the map file and the journal: %s", exc)


def _record_deploy(estate: Estate, lb: Executor, result: DeployResult, live: str) -> None:
    """One deploy entry, written as a compare-and-swap while the lock is ours; a deploy that lost
    its lock (pre-empted) appends it to the side file instead, which the next command folds in.
    A record that cannot be written is reported beside the deploy's own result."""
    record = DeployRecord(
        color=result.color, ref=result.ref, sha=result.sha, release=result.release, who=estate.who,
        when=iso(utcnow()), duration_ms=int(result.duration_s * 1000), result="ok" if result.ok else "failed",
        failed_step=result.failed_step, error=redact(result.error, estate.secrets) if result.error else None,
        backup=result.backup, backup_bytes=result.backup_bytes, migrations=tuple(result.migrations_applied),
        database=result.database)
    keep = estate.t.journal.history_keep
    try:
        estate.update_state(lb, lambda s: s.with_deploy_record(record, keep=keep), live)
        return
    except JournalNotOurs as exc:
        problem = f"the journal was not written: {exc}"
    except BlueGreenError as exc:
        problem = f"recording the deploy in the journal failed: {exc}"
    journal = estate.t.load_balancer.path(estate.t.journal.path)
    line = json.dumps({**record.to_dict(), "id": uuid.uuid4().hex}, separators=(",", ":"))
    try:
        lb.run(append_side_command(journal, line), step="record the deploy in the side journal")
        problem += f"; recorded in {side_path(journal)} instead (folded in by the next command)"
    except BlueGreenError as exc:
        problem += f"; the side journal could not take it either: {exc}"
    log.error("%s", problem)
    result.error = f"{result.error}; {problem}" if result.error else problem
