"""One deploy to the standby, step by step: each step recorded, so a failure is undone precisely.

Steps: git access checked (as the deploy user, with its credentials), snapshot, fetch (pinned
commit checked), export the release, a working copy where the host has none, install, build,
migrations (`ops.migrate`), point `current`, reload PM2, wait for health, smoke test through the
preview frontend, prune. `restore()` puts the standby back on its previous release; the live colour is
never touched.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bluegreen.hosts import health
from bluegreen.hosts.executor import Executor
from bluegreen.hosts.pve import snapshot_name
from bluegreen.model.deploy_pin import DeployPin
from bluegreen.model.errors import BlueGreenError, DeployError, RemoteError
from bluegreen.model.timestamps import utcnow
from bluegreen.model.topology import other_color
from bluegreen.ops.convert import convert_host, needs_conversion_command, replace_hand_started
from bluegreen.ops.estate import Estate
from bluegreen.ops.gitaccess import require_git_access
from bluegreen.ops.migrate import check_fetched, migrations_step, unknown_ref
from bluegreen.render import commands as cmd
from bluegreen.render import workingcopy
from bluegreen.render.shell import sh

log = logging.getLogger("bluegreen.deploy")
convert_log = logging.getLogger("bluegreen.convert")


@dataclass
class DeployResult:
    ok: bool
    color: str
    ref: str
    sha: str | None = None
    release: str | None = None
    previous_release: str | None = None
    dependencies: str | None = None
    migrations_applied: list[str] = field(default_factory=list)
    backup: str | None = None
    snapshot: str | None = None
    duration_s: float = 0.0
    failed_step: str | None = None
    error: str | None = None
    backup_bytes: int | None = None
    database: str | None = None  # what happened to the database when the deploy failed after its dump
    migrations_edited: list[str] = field(default_factory=list)
    working_copy: str | None = None  # what the deploy did about the host's working copy, if anything
    left: str | None = None  # a pre-empted deploy's standby that became live: what was left there

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "colour": self.color, "ref": self.ref, "sha": self.sha,
                "migrationsEdited": self.migrations_edited, "workingCopy": self.working_copy, "left": self.left,
                "release": self.release, "previousRelease": self.previous_release,
                "dependencies": self.dependencies, "migrationsApplied": self.migrations_applied,
                "backup": self.backup, "snapshot": self.snapshot,
                "durationSeconds": round(self.duration_s, 2),
                "failedStep": self.failed_step, "error": self.error,
                "backupBytes": self.backup_bytes, "database": self.database}


class DeployRun:
    """One deploy to the standby `color`; `result` is filled in as the steps go."""

    def __init__(self, estate: Estate, color: str, ref: str, result: DeployResult, *,
                 pin: DeployPin | None = None) -> None:
        self.estate = estate
        self.t = estate.t
        self.color = color
        self.host = self.t.app_host(color)
        self.paths = cmd.AppPaths.of(self.t, self.host)
        self.ref = ref
        self.result = result
        self.pin = pin  # the approved plan's commit and migrations
        self.step_name = "start"
        self.failure: BlueGreenError | None = None
        self.release: str | None = None
        self.previous: str | None = None
        self.pointed = False
        self.reloaded = False
        self.pending: list[str] = []  # migrations this run set out to apply

    @contextlib.contextmanager
    def step(self, name: str, *, long: bool = False) -> Iterator[None]:
        self.step_name = name
        try:
            self.estate.check_lock()  # a lock lost (broken, pre-empted) stops the deploy here
            with self.estate.progress.step(name, long=long):
                yield
        except BlueGreenError as exc:
            self.failure = exc
            raise

    def execute(self, *, migrate: bool, allow_destructive: bool, snapshot: bool) -> None:
        t, paths = self.t, self.paths
        user = t.app.deploy_user or t.ssh.user
        with self.step(f"check git access on {self.color} (as {user}, {paths.git_credentials})"):
            require_git_access(self.estate, self.color)
        if snapshot:
            with self.step(f"snapshot CT {self.host.vmid}", long=True):
                self.result.snapshot = self._snapshot()
        with self.estate.on(self.host) as ex:
            self._convert_layout(ex)
            with self.step(f"fetch {self.ref}", long=True):
                sha = self._fetch(ex)
            self._ensure_working_copy(ex)
            with self.step("install dependencies", long=True):
                out = ex.run(cmd.install_dependencies(t, paths, self.release or "", self.previous),
                             step="install dependencies")
                self.result.dependencies = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else None
            with self.step("build", long=True):
                ex.run(cmd.build(t, self.release or ""), step="build")
            with self.step("migrations"):
                migrations_step(self.estate, ex, self, migrate=migrate, allow_destructive=allow_destructive)
            with self.step("point current at the new release"):
                ex.run(cmd.point_current(paths, self.release or ""), step="point current")
                self.pointed = True
            with self.step(f"reload PM2 on {self.color}"):
                self.reloaded = True
                for change in replace_hand_started(t, self.host, ex):
                    convert_log.info("%s: %s", self.host.label, change)
                ex.run(cmd.pm2_reload(t, paths), step="pm2 reload")
            with self.step(f"wait for health on {self.color}", long=True):
                self._wait_healthy(sha)
            with self.step("smoke test through the preview frontend", long=True):
                self._smoke(sha)
            with self.step("prune old releases"):
                ex.run(cmd.prune_releases(paths, t.app.keep_releases, [self.release or "", self.previous or ""]),
                       step="prune releases")

    def _fetch(self, ex: Executor) -> str:
        """Fetch the ref, check it against the approved plan, export it as a new release."""
        t, paths, r = self.t, self.paths, self.result
        out = ex.run(cmd.fetch_ref(t, paths, self.ref), step="fetch", check=False)
        if out.exit_code != 0:
            detail = out.stderr.strip()
            if not detail:
                raise unknown_ref(t, ex, paths, self.ref)
            raise RemoteError(self.host.label, "fetch", detail)
        sha = out.stdout.strip().splitlines()[-1]
        r.sha = sha
        check_fetched(self.estate, ex, self, sha)
        current = cmd.parse_current(ex.run(cmd.read_current(paths), step="read release").stdout)
        self.previous = current.path
        r.previous_release = current.name
        name = cmd.release_name(sha, utcnow())
        self.release = paths.release(name)
        r.release = name
        ex.run(cmd.export_release(paths, self.release, sha, self.ref, owner=cmd.other_owner(t)),
               step="export release")
        return sha

    def _ensure_working_copy(self, ex: Executor) -> None:
        """A host without the team's working copy (rebuilt, or new) gets one on `app.branch`, from
        the mirror just fetched. Never fails the deploy: the release does not depend on it."""
        if self.paths.working_copy is None:
            return
        out = ex.run(workingcopy.create_command(self.t, self.paths, self.t.app.branch),
                     step="create the working copy", check=False)
        if not out.ok:
            self.result.working_copy = (f"could not create the working copy {self.paths.working_copy}: "
                                        f"{(out.stderr or out.stdout).strip()[-300:]}")
            log.warning("%s: %s", self.host.label, self.result.working_copy)
        elif "created" in out.stdout.split():
            self.result.working_copy = (f"created the working copy {self.paths.working_copy} on "
                                        f"{self.t.app.branch} (the host had none)")
            log.info("%s: %s", self.host.label, self.result.working_copy)

    def _convert_layout(self, ex: Executor) -> None:
        """The first deploy to a host still kept by hand (working copy, .env, hand-started PM2)
        gives it the release layout beside the working copy; see ops/convert.py."""
        if not ex.run(needs_conversion_command(self.paths), step="look for the old layout", check=False).ok:
            return
        with self.step(f"convert {self.color} to the release layout"):
            done = convert_host(self.t, self.host, ex, live_color=other_color(self.color))
            for change in done.changes:
                convert_log.info("%s: %s", self.host.label, change)

    def _snapshot(self) -> str:
        client = self.estate.pve()
        name = snapshot_name(f"{self.color}-{self.ref}", utcnow())
        client.snapshot(self.host.vmid, name, f"before deploy of {self.ref} by {self.estate.who}")
        client.prune_snapshots(self.host.vmid, keep=self.t.proxmox.snapshot_keep)
        return name

    def _wait_healthy(self, sha: str) -> None:
        t = self.t
        url = f"http://{self.host.ip}:{t.app.port}{t.app.health_path}"
        result = health.poll(lambda: health.expect_commit(health.http_probe(url, expect_status=t.app.health_status),
                                                          sha),
                             deadline_s=t.app.health_timeout, interval_s=0.5)
        if not result.ok:
            raise DeployError("health", f"{self.color} did not become healthy on {sha[:7]} within "
                              f"{t.app.health_timeout:g}s: {result.error or result.status}", color=self.color)

    def _smoke(self, sha: str) -> None:
        t = self.t
        url = f"{t.preview_url}{t.app.health_path}"

        def probe() -> health.ProbeResult:
            res = health.expect_commit(health.http_probe(url, headers={"Connection": "close"},
                                                         **health.visitor(t), expect_status=t.app.health_status),
                                       sha)
            if res.ok and res.served_by != self.color:
                return health.ProbeResult(ok=False, status=res.status, latency_ms=res.latency_ms,
                                          body=res.body, error=f"served by {res.served_by}",
                                          served_by=res.served_by)
            return res

        result = health.poll(probe, deadline_s=max(10.0, t.app.health_timeout / 2), interval_s=0.5)
        if not result.ok:
            raise DeployError("smoke test", f"the preview frontend {t.preview_url} did not serve "
                              f"{self.color} at {sha[:7]}: {result.error or result.status}", color=self.color)

    def restore(self) -> None:
        """Put the standby back on its previous release, unless it became live meanwhile (an
        emergency switch pre-empted this deploy): a live colour is never touched, only described."""
        t, paths = self.t, self.paths
        live = self._live_now()
        if live != other_color(self.color):
            self._leave_as_is(live)
            return
        try:
            with self.estate.on(self.host) as ex:
                if self.pointed:
                    if self.previous:
                        ex.run(cmd.point_current(paths, self.previous), step="restore current")
                    else:
                        ex.run(f"rm -f {sh(paths.current)}", step="restore current")
                if self.reloaded:
                    if self.previous:
                        ex.run(cmd.pm2_reload(t, paths), step="reload previous release")
                    else:
                        ex.run(cmd.pm2_stop(t, paths), step="stop failed first release")
                if self.release:
                    ex.run(cmd.remove_release(self.release), step="remove failed release")
        except BlueGreenError as exc:
            log.error("could not fully restore %s: %s", self.host.label, exc)
            self.result.error = f"{self.result.error}; restoring the previous release also failed: {exc}"

    def _live_now(self) -> str | None:
        """The live colour as HAProxy routes it now (None when it cannot be asked)."""
        try:
            with self.estate.on(self.t.load_balancer) as lb:
                return self.estate.live_color(lb)
        except BlueGreenError as exc:
            log.error("cannot read the live colour before restoring %s: %s", self.host.label, exc)
            return None

    def _leave_as_is(self, live: str | None) -> None:
        why = (f"{self.color} became live during the deploy" if live == self.color
               else f"whether {self.color} is live could not be told")
        release = self.release.rsplit("/", 1)[-1] if self.release else None
        previous = self.previous.rsplit("/", 1)[-1] if self.previous else None
        current = release if self.pointed else previous
        left = (f"{why}: left {self.color} as it is (current -> {current or 'nothing'}, PM2 "
                f"{'reloaded with ' + str(release) if self.reloaded else 'not reloaded by this deploy'}"
                f"{', release ' + str(release) + ' kept' if release else ''}); nothing was restored")
        log.warning("%s", left)
        self.result.left = left
        self.result.error = f"{self.result.error}; {left}" if self.result.error else left
