"""The second place: dumps and the journal copied off the database host, as data.

Losing the database container must not lose the database's backups with it. Every verified dump
(pre-migration, pre-restore, scheduled) is copied to a host of its own (`bluegreen:backup`),
checked there by sha256 against the checksum taken on the database host, and kept there by the
same per-class retention; the journal on the HAProxy host is copied there too, so `rebuild estate`
can bring back the history with the data.

This module is pure: the stack key, what the backup host's listing says, how the two places
compare, and which copy a rebuild restores. The scripts are rendered in `render.offsite`, run in
`hosts.offsite`; the operations are `ops.backups` and `ops.rebuild_estate`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bluegreen.model.dumps import (
    KIND_PRE_MIGRATION,
    KIND_SCHEDULED,
    Backup,
    DumpMeta,
    RestoreRefused,
)
from bluegreen.model.errors import ConfigError
from bluegreen.model.journal import DeployRecord, State
from bluegreen.model.reader import Reader
from bluegreen.model.topology import BackupSettings, DatabaseSettings, SshSettings

# What a rebuild restores by default: the newest verified dump of these kinds. A pre-restore dump
# holds the data a restore deliberately replaced, so it is restored only when named.
REBUILD_KINDS = (KIND_SCHEDULED, KIND_PRE_MIGRATION)
_KEYS = ("host", "port", "user", "dir", "keep", "schedule", "journalKeep", "sshAlias", "root")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


# --------------------------------------------------------------------------- the stack key


def read_backup(r: Reader, raw: Any, ssh: SshSettings, database: DatabaseSettings,
                resolve: Callable[[str | None], str | None]) -> BackupSettings | None:
    """`bluegreen:backup`: optional; without it dumps stay on the database host only."""
    if raw is None:
        return None
    b = r.obj(raw, "backup")
    address = r.str_(b, "host", "backup", required=True)
    if address:
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            r.problem("backup.host", f"expected the backup host's IPv4 address, got {address!r}")
    backup = BackupSettings(
        address=address,
        port=r.num(b, "port", "backup", ssh.port, minimum=1),
        user=r.str_(b, "user", "backup", ssh.user),
        dir=r.abs_path(b, "dir", "backup", "/var/backups/bluegreen"),
        keep=r.num(b, "keep", "backup", database.backup_keep, minimum=1),
        schedule=r.str_(b, "schedule", "backup", "*-*-* 03:15:00"),
        ssh_alias=r.opt_str(b, "sshAlias", "backup"),
        root=resolve(r.str_(b, "root", "backup", "/")) or "/",
        journal_keep=r.num(b, "journalKeep", "backup", 20, minimum=1),
    )
    if backup.keep < database.backup_keep:
        r.problem("backup.keep", f"must be at least database.backupKeep ({database.backup_keep}), got "
                                 f"{backup.keep}: the second place keeps at least what the first keeps")
    if not re.fullmatch(r"[A-Za-z0-9*:/,. ~-]+", backup.schedule):
        r.problem("backup.schedule", "expected a systemd calendar spec such as '*-*-* 03:15:00' or "
                                     f"'hourly', got {backup.schedule!r}")
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", backup.user):
        r.problem("backup.user", f"expected a Unix user name, got {backup.user!r}")
    if not re.fullmatch(r"/[A-Za-z0-9_./-]*", backup.dir) or "/../" in f"{backup.dir}/":
        r.problem("backup.dir", f"expected a plain absolute path (letters, digits, _ . - /), got {backup.dir!r}")
    for key in sorted(set(b) - set(_KEYS)):
        r.problem(f"backup.{key}", f"unknown key (expected one of {', '.join(_KEYS)})")
    return backup


# --------------------------------------------------------------------------- the backup host's listing


@dataclass(frozen=True)
class OffsiteCopy:
    """One dump on the backup host: the file, the sha256 recorded when it arrived (after checking
    it against the sender's), and its sidecar."""

    backup: Backup
    sha256: str | None

    @property
    def file(self) -> str:
        return self.backup.file

    @property
    def verified(self) -> bool:
        """Arrived whole: the checksum recorded there is the one the database host took."""
        meta = self.backup.meta
        return (self.sha256 is not None and meta is not None and meta.verified
                and meta.sha256 == self.sha256)

    def to_json(self) -> dict[str, Any]:
        return {**self.backup.to_json(), "sha256": self.sha256, "checksumMatches": self.verified}


def parse_offsite_listing(stdout: str, folder: str) -> list[OffsiteCopy]:
    """`name<TAB>size<TAB>mtime<TAB>sha256<TAB>base64(sidecar)` lines, newest first."""
    copies: list[OffsiteCopy] = []
    for line in stdout.splitlines():
        parts = line.split("\t")
        if len(parts) != 5 or not parts[0].endswith(".dump"):
            continue
        name, size, mtime, digest, encoded = parts
        try:
            backup = Backup(file=name, path=f"{folder}/{name}", bytes=int(size), mtime=float(mtime),
                            meta=_sidecar(encoded))
        except ValueError:
            continue
        copies.append(OffsiteCopy(backup=backup, sha256=digest if _SHA256.match(digest) else None))
    return sorted(copies, key=lambda c: c.backup.sort_key(), reverse=True)


def _sidecar(encoded: str) -> DumpMeta | None:
    if not encoded:
        return None
    try:
        data = json.loads(base64.b64decode(encoded, validate=True).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return DumpMeta.from_json(data) if isinstance(data, dict) else None


def parse_sync_report(stdout: str) -> dict[str, list[str]]:
    """What the pushing script printed: `copied|present|pruned|failed NAME [detail]` lines."""
    report: dict[str, list[str]] = {"copied": [], "present": [], "pruned": [], "failed": []}
    for line in stdout.splitlines():
        verb, _, rest = line.partition(" ")
        if verb in report and rest:
            report[verb].append(rest.strip())
    return report


# --------------------------------------------------------------------------- both places


@dataclass(frozen=True)
class BackupRow:
    """One dump as `bluegreen db backups` shows it: where it is, and whether the copies agree."""

    file: str
    local: Backup | None
    offsite: OffsiteCopy | None

    @property
    def newest(self) -> Backup:
        return self.local or self.offsite.backup  # type: ignore[union-attr]

    @property
    def offsite_state(self) -> str:
        """`copied` (checksums agree), `MISMATCH`, `not copied`, `unchecked` (no checksum to compare),
        `off-host only` (gone from the database host, kept on the backup host)."""
        if self.offsite is None:
            return "not copied"
        if self.local is None:
            return "off-host only" if self.offsite.verified else "off-host only, unchecked"
        local_sum = self.local.meta.sha256 if self.local.meta else None
        if local_sum is None or self.offsite.sha256 is None:
            return "unchecked"
        return "copied" if local_sum == self.offsite.sha256 else "MISMATCH"

    def to_json(self) -> dict[str, Any]:
        data = self.newest.to_json()
        data["local"] = self.local is not None
        data["offsite"] = self.offsite.to_json() if self.offsite else None
        data["offsiteState"] = self.offsite_state
        data["sha256"] = (self.newest.meta.sha256 if self.newest.meta else None)
        return data


def merge(local: Iterable[Backup], offsite: Iterable[OffsiteCopy]) -> list[BackupRow]:
    """Every dump of either place, newest first, the two copies of a file side by side."""
    here = {b.file: b for b in local}
    there = {c.file: c for c in offsite}
    rows = [BackupRow(file=name, local=here.get(name), offsite=there.get(name)) for name in {*here, *there}]
    return sorted(rows, key=lambda r: r.newest.sort_key(), reverse=True)


def pick_offsite(copies: Sequence[OffsiteCopy], wanted: str | None) -> OffsiteCopy:
    """The copy a rebuild restores: `wanted` (a file name or unique prefix), else the newest
    verified one of `REBUILD_KINDS`. Refused when the copy's checksum does not match."""
    if wanted is None:
        usable = [c for c in copies if c.verified and c.backup.meta is not None
                  and c.backup.meta.kind in REBUILD_KINDS]
        if not usable:
            raise RestoreRefused("the backup host holds no verified dump to restore (scheduled or "
                                 "pre-migration, its checksum matching the database host's); name one "
                                 "with --backup (see `bluegreen db backups`)")
        return max(usable, key=lambda c: c.backup.sort_key())
    name = wanted.rsplit("/", 1)[-1]
    found = [c for c in copies if c.file == name] or [c for c in copies if c.file.startswith(name)]
    if not found:
        raise ConfigError(f"no dump named {wanted!r} on the backup host (see `bluegreen db backups`)")
    if len(found) > 1:
        raise ConfigError(f"{wanted!r} matches {len(found)} dumps on the backup host: "
                          + ", ".join(c.file for c in found[:5]))
    chosen = found[0]
    if not chosen.verified:
        raise RestoreRefused(f"{chosen.file} on the backup host has no checksum matching the one taken "
                             "when it was verified; it cannot be trusted to restore")
    return chosen


# --------------------------------------------------------------------------- the journal's copies


@dataclass(frozen=True)
class JournalCopy:
    file: str
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "bytes": self.bytes, "sha256": self.sha256}


def parse_journal_listing(stdout: str) -> list[JournalCopy]:
    """`name<TAB>size<TAB>sha256` lines of the journal's copies, newest first."""
    out = []
    for line in stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1].isdigit() and _SHA256.match(parts[2]):
            out.append(JournalCopy(file=parts[0], bytes=int(parts[1]), sha256=parts[2]))
    return sorted(out, key=lambda c: c.file, reverse=True)


def fingerprint_lines(known_hosts_text: str, address: str, port: int) -> list[str]:
    """The pinned keys of `address:port` in a known_hosts file, as `type base64` pairs."""
    field = address if port == 22 else f"[{address}]:{port}"
    keys = []
    for line in known_hosts_text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and field in parts[0].split(","):
            keys.append(f"{parts[1]} {parts[2]}")
    return keys


def summary(rows: Sequence[BackupRow]) -> Mapping[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.offsite_state] = counts.get(row.offsite_state, 0) + 1
    return counts


# --------------------------------------------------------------------------- what a rebuild brings back


def release_to_restore(state: State, live: str) -> DeployRecord | None:
    """The release the live colour served: the newest deploy to it that finished ok (a failed one
    left it on its previous release)."""
    for record in state.records():
        if isinstance(record, DeployRecord) and record.color == live and record.ok and record.sha:
            return record
    return None


def history_kept(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]) -> bool:
    """Every entry of `before` is in `after`, in the same order (newer entries may come first)."""
    wanted = [json.dumps(e, sort_keys=True) for e in before]
    have = [json.dumps(e, sort_keys=True) for e in after]
    position = 0
    for entry in wanted:
        try:
            position = have.index(entry, position) + 1
        except ValueError:
            return False
    return True
