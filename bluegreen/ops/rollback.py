"""Rollback: to the colour live before the last switch; with its snapshot; or with the database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bluegreen.hosts.database import migrations_in_dump, read_backups
from bluegreen.model.dumps import RestoreRefused, dump_before_release, human_bytes
from bluegreen.model.errors import BlueGreenError, ProxmoxError
from bluegreen.model.topology import other_color
from bluegreen.model.truth import rollback_target
from bluegreen.ops.estate import Estate
from bluegreen.ops.restore import applied_names, live_release_migrations, restore
from bluegreen.ops.switch import SwitchResult, emergency_switch, switch


def rollback(estate: Estate, *, emergency: bool = False, direct: bool = False, watch: bool = False) -> SwitchResult:
    """Back to the colour that was live before the last switch (it still runs its release)."""
    if emergency:
        return emergency_switch(estate, rollback=True, to_color=None)  # needs no readable journal
    with estate.pooled(), estate.on(estate.t.load_balancer) as lb:
        try:
            live = estate.live_color(lb)
            # From the journal, not from HAProxy: a rollback that moved traffic but was cut off before
            # its record is, when repeated, a no-op (its target is live) rather than a flip back.
            previous = rollback_target(estate.read_state(lb), live)
        except BlueGreenError as exc:
            exc.args = (f"{exc}. Traffic did not move",)
            raise
        return switch(estate, direct=direct, watch=watch, to_color=previous, reason="rollback")


def rollback_snapshot(estate: Estate) -> dict[str, Any]:
    """Restore the standby container from its newest deploy snapshot."""
    with estate.holding("rollback --snapshot"), estate.on(estate.t.load_balancer) as lb:
        standby = other_color(estate.live_color(lb))
        vmid = estate.t.app_host(standby).vmid
        client = estate.pve()
        ours = [s for s in client.snapshots(vmid) if s.name.startswith("bluegreen-")]
        if not ours:
            raise ProxmoxError(f"CT {vmid} ({standby}) has no bluegreen snapshot to restore")
        newest = ours[-1]  # snapshots() is oldest first, ties broken by parent links
        with estate.progress.step(f"restore CT {vmid} from snapshot {newest.name}", long=True):
            client.rollback(vmid, newest.name)
        return {"ok": True, "colour": standby, "vmid": vmid, "snapshot": newest.name}


# --------------------------------------------------------------------------- rollback --with-database


@dataclass
class RollbackDbPlan:
    from_color: str
    to_color: str
    from_release: str | None
    from_sha: str | None
    to_release: str | None
    to_sha: str | None
    dump: dict[str, Any] | None
    undoes: list[str]
    applied_now: list[str]
    steps: list[str]
    problems: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"from": self.from_color, "colour": self.to_color, "fromRelease": self.from_release,
                "fromSha": self.from_sha, "release": self.to_release, "sha": self.to_sha,
                "dump": self.dump, "undoesMigrations": self.undoes, "appliedNow": self.applied_now,
                "steps": self.steps, "problems": self.problems}


def plan_rollback_with_database(estate: Estate) -> RollbackDbPlan:
    t = estate.t
    with estate.on(t.load_balancer) as lb:
        live = estate.live_color(lb)
        state = estate.read_state(lb)
    target = state.previous_live(live) or other_color(live)
    problems: list[str] = []
    from_release, from_sha, _ = live_release_migrations(estate, live)
    to_release, to_sha, to_needs = live_release_migrations(estate, target)
    if not to_release:
        problems.append(f"{target} serves no release to roll back to")
    with estate.on(t.database_host) as db:
        backups = read_backups(t, db)
        applied_now = applied_names(estate, db)
        chosen = dump_before_release(backups, live, from_sha) if from_sha else None
        in_dump = migrations_in_dump(db, chosen.path) if chosen else []
    undoes = sorted(set(applied_now) - set(in_dump)) if chosen else []
    if chosen is None:
        problems.append(f"the live release {from_release} on {live} applied no migration this tool recorded "
                        f"a dump for: there is nothing to restore. Use `bluegreen rollback` (code only).")
    else:
        missing = sorted(set(to_needs) - set(in_dump))
        if missing:
            runs_as_is = set(to_needs) <= set(applied_now)
            problems.append(f"{target}'s release {to_release} itself needs migration(s) the dump predates "
                            f"({', '.join(missing)}): restoring would break it"
                            + (f". {target} runs on the database as it is: `bluegreen rollback --stack {t.stack}` "
                               "switches back without touching it" if runs_as_is else ""))
    steps = [f"switch live traffic {live} -> {target} (release {to_release}, {(to_sha or '')[:7]}); "
             f"{live} keeps running {from_release}"]
    if chosen is not None:
        steps += [
            "take a fresh verified dump of the database (the undo of this restore)",
            f"restore {chosen.file} ({human_bytes(chosen.bytes)}, taken {chosen.created} before deploying "
            f"{(from_sha or '')[:7]} to {live}) in ONE transaction (pg_restore --clean --if-exists): undoes "
            f"migration(s) {', '.join(undoes) or 'none'}; rows written since {chosen.created} are lost "
            f"from the live database (they stay in the fresh dump)",
            "print the command that undoes the restore",
        ]
    return RollbackDbPlan(from_color=live, to_color=target, from_release=from_release, from_sha=from_sha,
                          to_release=to_release, to_sha=to_sha, dump=chosen.to_json() if chosen else None,
                          undoes=undoes, applied_now=applied_now, steps=steps, problems=problems)


def rollback_with_database(estate: Estate, plan: RollbackDbPlan, *, direct: bool = False) -> dict[str, Any]:
    """Switch to the previous colour, then restore the dump the plan named, in that order."""
    if plan.problems or plan.dump is None:
        raise RestoreRefused("refusing to roll back with the database: " + "; ".join(plan.problems))
    switched = switch(estate, direct=direct, watch=False, to_color=plan.to_color, reason="rollback --with-database")
    if not switched.ok:
        return {"ok": False, "switch": switched.to_json(), "restore": None,
                "error": f"the switch failed, so the database was not restored: {switched.error}"}
    try:
        restored = restore(estate, plan.dump["file"], check_live=False, expect_applied=plan.applied_now,
                           reason="rollback --with-database")
    except BlueGreenError as exc:
        raise BlueGreenError(f"{plan.to_color} is live again (the code is rolled back), but the database "
                             f"was NOT restored: {exc}") from None
    return {"ok": True, "switch": switched.to_json(), "restore": restored.to_json(),
            "undoCommand": restored.undo_command}
