"""`bluegreen db backups`, `db backup`, `db offsite-setup`: the dumps in both places.

`list_backups` reads the database host's backup directory and the backup host's copies and puts
them side by side (a copy is `copied` when the checksum recorded on arrival is the one taken when
the dump was verified; `--verify` also re-reads every copy there). `backup_now` runs what the
scheduled timer runs: a verified dump, then the copy off-host. `setup_offsite` is the cross-host
configuration the off-host copies need (run by the lab's `up`/`apply` and by `rebuild estate`
too; after a `pulumi up` that adds `bluegreen:backup`, run it once).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from bluegreen.hosts import offsite
from bluegreen.hosts.database import read_backups
from bluegreen.model.errors import BlueGreenError
from bluegreen.model.offsite import BackupRow, OffsiteCopy, merge
from bluegreen.ops.configure import configure_offsite
from bluegreen.ops.estate import Estate
from bluegreen.render.dbcommands import backup_folder
from bluegreen.render.offsite import require_backup

log = logging.getLogger("bluegreen.backups")


@dataclass
class BackupsReport:
    rows: list[BackupRow]
    local_folder: str
    offsite_folder: str | None
    offsite_label: str | None
    offsite_error: str | None = None
    local_error: str | None = None
    rechecked: dict[str, str] = field(default_factory=dict)  # file -> "ok" or the mismatch

    def to_json(self) -> list[dict[str, Any]]:
        out = []
        for row in self.rows:
            data = row.to_json()
            if row.file in self.rechecked:
                data["offsiteRecheck"] = self.rechecked[row.file]
            out.append(data)
        return out


def list_backups(estate: Estate, *, verify: bool = False) -> BackupsReport:
    """Both places; either may be unreachable (the other is still listed, with the reason)."""
    t = estate.t
    local = []
    report = BackupsReport(rows=[], local_folder=backup_folder(t), offsite_folder=None,
                           offsite_label=t.backup.label if t.backup else None)
    try:
        with estate.on(t.database_host) as db:
            local = read_backups(t, db)
    except BlueGreenError as exc:
        report.local_error = str(exc)
    copies: list[OffsiteCopy] = []
    if t.backup is not None:
        report.offsite_folder = t.backup.path(t.backup.dir)
        try:
            with offsite.backup_executor(t, estate.secrets) as backup:
                copies = offsite.list_copies(t, backup)
                if verify:
                    for copy in copies:
                        try:
                            offsite.verify_copy(t, backup, copy.file)
                            report.rechecked[copy.file] = "ok"
                        except offsite.OffsiteError as exc:
                            report.rechecked[copy.file] = str(exc)
        except BlueGreenError as exc:
            report.offsite_error = str(exc)
    report.rows = merge(local, copies)
    return report


@dataclass
class BackupNow:
    file: str
    offsite: offsite.OffsiteResult

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.offsite.ok, "file": self.file, "offsite": self.offsite.to_json()}


def backup_now(estate: Estate) -> BackupNow:
    """A verified dump now and its copy off-host (what the database host's timer runs)."""
    t = estate.t
    require_backup(t)
    with estate.on(t.database_host) as db, estate.progress.step("verified dump, copied off-host", long=True):
        name, result = offsite.take_scheduled_dump(t, db, estate.who)
    return BackupNow(file=name or "", offsite=result)


def setup_offsite(estate: Estate) -> list[str]:
    t = estate.t
    require_backup(t)
    with estate.on(t.database_host) as db, estate.on(t.load_balancer) as lb:
        return configure_offsite(t, [(t.database_host, db), (t.load_balancer, lb)], secrets=estate.secrets)
