"""What an approved deploy plan pins: the commit and the pending migrations (name, checksum)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bluegreen.model.errors import BlueGreenError, ConfigError


class PlanMismatch(BlueGreenError):
    """The commit or the pending migrations differ from the approved deploy plan."""


# =========================================================================== pure: the deploy pin


@dataclass(frozen=True)
class PendingMigration:
    name: str
    checksum: str
    sql: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "checksum": self.checksum, "sql": self.sql}


@dataclass(frozen=True)
class DeployPin:
    """What an approved deploy plan pinned: the commit and the pending migrations (name, checksum)."""

    ref: str
    sha: str
    pending: tuple[tuple[str, str], ...]

    @classmethod
    def from_plan_json(cls, data: Mapping[str, Any]) -> DeployPin:
        sha, ref = data.get("sha"), data.get("ref")
        pending = data.get("pendingMigrations")
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{40}", sha):
            raise ConfigError("approved plan: sha is missing or not a full commit sha "
                              "(write it with `bluegreen plan --deploy --json`)")
        if not isinstance(ref, str) or not isinstance(pending, list):
            raise ConfigError("approved plan: ref and pendingMigrations are required")
        pairs = []
        for i, item in enumerate(pending):
            if not (isinstance(item, dict) and isinstance(item.get("name"), str)
                    and isinstance(item.get("checksum"), str)):
                raise ConfigError(f"approved plan: pendingMigrations[{i}] needs a name and a checksum")
            pairs.append((item["name"], item["checksum"]))
        return cls(ref=ref, sha=sha, pending=tuple(sorted(pairs)))


def describe_pending(pending: Iterable[tuple[str, str]]) -> str:
    items = [f"{name} (sha256 {checksum[:12]})" for name, checksum in pending]
    return ", ".join(items) if items else "none"


def check_pin(pin: DeployPin | None, *, sha: str, pending: Iterable[tuple[str, str]] | None) -> None:
    """Refuse a run whose commit or pending migrations differ from the approved plan, showing both."""
    if pin is None:
        return
    now = tuple(sorted(pending)) if pending is not None else None
    if sha == pin.sha and (now is None or now == pin.pending):
        return
    lines = ["refusing to deploy: this is not the plan that was approved.",
             f"  approved: {pin.ref} at {pin.sha[:12]}, pending migrations: {describe_pending(pin.pending)}",
             f"  now:      {pin.ref} at {sha[:12]}, pending migrations: "
             + (describe_pending(now) if now is not None else "(not read)")]
    if sha != pin.sha:
        lines.append(f"{pin.ref} moved since the approval.")
    else:
        lines.append("the pending migrations changed since the approval (a migration was applied, "
                     "added or edited).")
    lines.append("Nothing was changed. Review the new plan (`bluegreen plan --deploy`) and approve it again.")
    raise PlanMismatch("\n".join(lines))


def migration_files(ls_tree: str) -> list[str]:
    """Migration names from `git ls-tree -r --name-only <sha> -- prisma/migrations/`."""
    names = []
    for line in ls_tree.splitlines():
        parts = line.strip().split("/")
        if len(parts) == 4 and parts[:2] == ["prisma", "migrations"] and parts[3] == "migration.sql":
            names.append(parts[2])
    return sorted(set(names))
