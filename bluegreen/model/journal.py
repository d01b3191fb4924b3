"""The deployment journal (`state.json` on the HAProxy host) as data.

The journal is the user's existing format, read as is and extended, never reshaped:
`{"prod", "standby", "lastSwitch", "switchCount", "history": [newest first]}`. Unknown keys, at
the top and inside history entries, survive a read/write round trip. History entries without a
`"type"` are switches (that is all the old tool wrote); new ones carry `"type": "switch"` or
`"type": "deploy"`. Parsing and extending are pure (here, with the entries an emergency writes
and how a side file's entries fold in); `hosts.journal` reads and writes it through an `Executor`.

History is complete: the file keeps the newest `journal.historyKeep` entries, and older ones are
moved (never dropped) to an archive beside it (`archive_path`: JSON lines, oldest first). A state
carries the entries it moved out in `archived` until the writer has appended them there.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bluegreen.model.errors import (
    ConfigError,
    Problem,
    ValidationError,
)
from bluegreen.model.lock import LockInfo
from bluegreen.model.sensitive import redact_tree
from bluegreen.model.timestamps import iso_utc, parse_iso
from bluegreen.model.topology import COLORS, other_color

log = logging.getLogger("bluegreen.journal")

DEFAULT_HISTORY_KEEP = 200
DEPLOY_RESULTS = ("ok", "failed")

# Key order of a journal we create from scratch; an existing file keeps its own order.
_KNOWN_KEYS = ("prod", "standby", "lastSwitch", "switchCount", "deployCounts", "history")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class SwitchRecord:
    from_color: str
    to_color: str
    timestamp: str
    reason: str = ""
    who: str | None = None
    emergency: bool = False
    duration_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"type": "switch", "from": self.from_color, "to": self.to_color,
                "timestamp": self.timestamp, "reason": self.reason, "who": self.who,
                "emergency": self.emergency, "durationMs": self.duration_ms}

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> SwitchRecord:
        return cls(from_color=str(entry.get("from", "")), to_color=str(entry.get("to", "")),
                   timestamp=str(entry.get("timestamp", "")), reason=str(entry.get("reason") or ""),
                   who=_opt_str(entry.get("who")), emergency=entry.get("emergency") is True,
                   duration_ms=_opt_int(entry.get("durationMs")))


@dataclass(frozen=True)
class DeployRecord:
    color: str
    ref: str
    sha: str | None  # None when the deploy failed before the ref resolved
    release: str | None
    who: str
    when: str
    duration_ms: int
    result: str
    failed_step: str | None = None
    error: str | None = None  # the caller redacts it before it gets here
    # The database side (ops.migrate): the dump taken before migrating, what was applied, and what
    # happened to the database when the deploy failed after its dump.
    backup: str | None = None
    backup_bytes: int | None = None
    migrations: tuple[str, ...] = ()
    database: str | None = None

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise ConfigError(f"deploy record: unknown colour {self.color!r} "
                              f"(expected one of {', '.join(COLORS)})")
        if self.result not in DEPLOY_RESULTS:
            raise ConfigError(f"deploy record: result must be one of {', '.join(DEPLOY_RESULTS)}, "
                              f"got {self.result!r}")

    @property
    def ok(self) -> bool:
        return self.result == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "deploy", "color": self.color, "ref": self.ref, "sha": self.sha,
                "release": self.release, "who": self.who, "when": self.when,
                "durationMs": self.duration_ms, "result": self.result,
                "failedStep": self.failed_step, "error": self.error,
                # Only deploys that dumped the database carry these, so older entries keep their shape.
                **({"backup": self.backup, "backupBytes": self.backup_bytes,
                    "migrationsApplied": list(self.migrations), "database": self.database}
                   if self.backup or self.migrations or self.database else {})}

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> DeployRecord | None:
        """None for an entry too damaged to describe a deploy (history is never fatal)."""
        color, result = entry.get("color"), entry.get("result")
        if color not in COLORS or result not in DEPLOY_RESULTS:
            return None
        return cls(color=str(color), ref=str(entry.get("ref") or ""), sha=_opt_str(entry.get("sha")),
                   release=_opt_str(entry.get("release")), who=str(entry.get("who") or ""),
                   when=str(entry.get("when") or ""), duration_ms=_opt_int(entry.get("durationMs")) or 0,
                   result=str(result), failed_step=_opt_str(entry.get("failedStep")),
                   error=_opt_str(entry.get("error")), backup=_opt_str(entry.get("backup")),
                   backup_bytes=_opt_int(entry.get("backupBytes")),
                   migrations=tuple(str(m) for m in entry.get("migrationsApplied") or []
                                    if isinstance(entry.get("migrationsApplied"), list)),
                   database=_opt_str(entry.get("database")))


JournalRecord = SwitchRecord | DeployRecord


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def entry_type(entry: Mapping[str, Any]) -> str:
    return str(entry.get("type") or "switch")


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class State:
    """One journal. History is newest first, like the file the user already has."""

    prod: str
    standby: str
    last_switch: str | None = None
    switch_count: int = 0
    history: tuple[Mapping[str, Any], ...] = ()
    deploy_counts: Mapping[str, Mapping[str, int]] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = _KNOWN_KEYS
    # Entries moved out of `history` (oldest first), to be appended to the archive by the writer.
    archived: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def fresh(cls, declared_color: str) -> State:
        if declared_color not in COLORS:
            raise ConfigError(f"unknown colour {declared_color!r} (expected one of {', '.join(COLORS)})")
        return cls(prod=declared_color, standby=other_color(declared_color))

    def with_entry_on_top(self, entry: Mapping[str, Any], *, keep: int | None = DEFAULT_HISTORY_KEEP) -> State:
        """`entry` as the newest history entry; entries beyond `keep` move to `archived` (None: the
        file keeps them all until the next write that trims)."""
        history, moved = _trim((entry, *self.history), keep)
        return replace(self, history=history, archived=(*self.archived, *moved))

    def with_switch(self, to_color: str, *, when: str | float, who: str | None, reason: str = "",
                    emergency: bool = False, duration_ms: int | None = None,
                    from_color: str | None = None, keep: int | None = DEFAULT_HISTORY_KEEP) -> State:
        """`when` is epoch seconds or an ISO timestamp; `from_color` defaults to the journal's prod."""
        if to_color not in COLORS:
            raise ConfigError(f"cannot record a switch to {to_color!r} (expected one of {', '.join(COLORS)})")
        stamp = _stamp(when)
        record = SwitchRecord(from_color=from_color or self.prod, to_color=to_color, timestamp=stamp,
                              reason=reason, who=who, emergency=emergency, duration_ms=duration_ms)
        return replace(self, prod=to_color, standby=other_color(to_color), last_switch=stamp,
                       switch_count=self.switch_count + 1).with_entry_on_top(record.to_dict(), keep=keep)

    def with_deploy(self, *, color: str, ref: str, sha: str | None, release: str | None, who: str,
                    when: str | float, duration_ms: int, result: str, failed_step: str | None = None,
                    error: str | None = None, keep: int = DEFAULT_HISTORY_KEEP, backup: str | None = None,
                    backup_bytes: int | None = None, migrations: Sequence[str] = (),
                    database: str | None = None) -> State:
        """Record a deploy to `color`; `error` must already be redacted."""
        return self.with_deploy_record(
            DeployRecord(color=color, ref=ref, sha=sha, release=release, who=who, when=_stamp(when),
                         duration_ms=duration_ms, result=result, failed_step=failed_step, error=error,
                         backup=backup, backup_bytes=backup_bytes, migrations=tuple(migrations),
                         database=database),
            keep=keep)

    def with_deploy_record(self, record: DeployRecord, *, keep: int | None = DEFAULT_HISTORY_KEEP) -> State:
        counts = {c: dict(r) for c, r in self.deploy_totals().items()}
        counts.setdefault(record.color, {})
        counts[record.color][record.result] = counts[record.color].get(record.result, 0) + 1
        return replace(self, deploy_counts=counts).with_entry_on_top(record.to_dict(), keep=keep)

    def records(self) -> list[JournalRecord]:
        """History as records, newest first; entries of unknown types are left out."""
        out: list[JournalRecord] = []
        for entry in self.history:
            kind = entry_type(entry)
            if kind == "switch":
                out.append(SwitchRecord.from_dict(entry))
            elif kind == "deploy":
                deploy = DeployRecord.from_dict(entry)
                if deploy is not None:
                    out.append(deploy)
        return out

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` history entries, newest first, as plain dicts."""
        return [dict(e) for e in self.history[:max(0, limit)]]

    def previous_live(self, live: str) -> str | None:
        """The colour that was live before `live` became live (from the newest switch to it)."""
        for record in self.records():
            if isinstance(record, SwitchRecord) and record.to_color == live:
                return record.from_color if record.from_color in COLORS else None
        return None

    def last_deploy(self, color: str) -> DeployRecord | None:
        for record in self.records():
            if isinstance(record, DeployRecord) and record.color == color:
                return record
        return None

    def deploy_totals(self) -> dict[str, dict[str, int]]:
        """Deploys per colour and result. Kept as running totals in the file because history is
        trimmed; a journal written by the old tool starts from what its history shows."""
        if self.deploy_counts is not None:
            return {c: dict(r) for c, r in self.deploy_counts.items()}
        counts: dict[str, dict[str, int]] = {}
        for record in self.records():
            if isinstance(record, DeployRecord):
                per = counts.setdefault(record.color, {})
                per[record.result] = per.get(record.result, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        known: dict[str, Any] = {
            "prod": self.prod, "standby": self.standby, "lastSwitch": self.last_switch,
            "switchCount": self.switch_count, "history": [dict(e) for e in self.history],
        }
        if self.deploy_counts is not None:
            known["deployCounts"] = {c: dict(r) for c, r in self.deploy_counts.items()}
        merged = {**self.extra, **known}
        out = {key: merged[key] for key in self.key_order if key in merged}
        for key in (*_KNOWN_KEYS, *self.extra):
            if key in merged:
                out.setdefault(key, merged[key])
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"


def _stamp(when: str | float) -> str:
    if isinstance(when, str):
        epoch = parse_iso(when)
        if epoch is None:
            raise ConfigError(f"expected an ISO timestamp, got {when!r}")
        return iso_utc(epoch)
    return iso_utc(when)


def _trim(history: tuple[Mapping[str, Any], ...],
          keep: int | None) -> tuple[tuple[Mapping[str, Any], ...], tuple[Mapping[str, Any], ...]]:
    """(the newest `keep` entries, the older ones oldest first: what moves to the archive)."""
    if keep is None:
        return history, ()
    if keep < 1:
        raise ConfigError(f"journal.historyKeep must be at least 1, got {keep}")
    return history[:keep], tuple(reversed(history[keep:]))


ARCHIVE_SUFFIX = ".archive.jsonl"


def archive_path(journal_path: str) -> str:
    """The archive beside the journal: `state.json` -> `state.archive.jsonl`."""
    stem = journal_path[:-len(".json")] if journal_path.endswith(".json") else journal_path
    return stem + ARCHIVE_SUFFIX


def archive_lines(entries: Sequence[Mapping[str, Any]]) -> str:
    """Entries as the archive holds them: one JSON object per line, oldest first."""
    return "".join(json.dumps(dict(e), ensure_ascii=False, separators=(",", ":")) + "\n" for e in entries)


def json_lines(text: str, what: str) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, in file order; a damaged line is skipped and logged."""
    entries = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            log.warning("%s line %d is not JSON; skipped", what, n)
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def parse_archive(text: str) -> list[dict[str, Any]]:
    """The archive's entries, newest first (as history is); a damaged line is skipped and logged."""
    return json_lines(text, "journal archive")[::-1]


def parse_state(text: str | None, *, source: str = "state.json", declared_color: str = "blue") -> State:
    """Read a journal; a missing file (None) starts a fresh one from the declared live colour."""
    if text is None:
        return State.fresh(declared_color)
    if not text.strip():
        raise ConfigError(f"{source}: the journal file is empty; restore it from a backup or delete it "
                          f"to start a fresh journal (the live colour is then taken from the stack)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                          f"fix the file by hand or move it aside to start a fresh journal") from None
    if not isinstance(data, dict):
        problem = Problem("(top level)", f"expected a JSON object, got {_json_kind(data)}")
        raise ValidationError(source, [problem])

    problems: list[Problem] = []
    prod = data.get("prod")
    if prod not in COLORS:
        problems.append(Problem("prod", f"expected one of {', '.join(COLORS)}, got {prod!r}"))
        prod = COLORS[0]
    standby = data.get("standby", other_color(str(prod)))
    if standby not in COLORS:
        problems.append(Problem("standby", f"expected one of {', '.join(COLORS)}, got {standby!r}"))
    elif standby == prod:
        problems.append(Problem("standby", f"is the same colour as prod ({prod!r})"))
    last_switch = data.get("lastSwitch")
    if last_switch is not None and (not isinstance(last_switch, str) or parse_iso(last_switch) is None):
        problems.append(Problem("lastSwitch", f"expected an ISO timestamp or null, got {last_switch!r}"))
    switch_count = data.get("switchCount", 0)
    if isinstance(switch_count, bool) or not isinstance(switch_count, int) or switch_count < 0:
        problems.append(Problem("switchCount", f"expected a whole number >= 0, got {switch_count!r}"))
        switch_count = 0
    history = data.get("history", [])
    if not isinstance(history, list):
        problems.append(Problem("history", f"expected a list, got {_json_kind(history)}"))
        history = []
    for i, entry in enumerate(history):
        if not isinstance(entry, dict):
            problems.append(Problem(f"history[{i}]", f"expected an object, got {_json_kind(entry)}"))
        elif not isinstance(entry.get("type", "switch"), str):
            problems.append(Problem(f"history[{i}].type", f"expected a string, got {entry['type']!r}"))
    counts = data.get("deployCounts")
    if counts is not None and not _valid_counts(counts):
        problems.append(Problem("deployCounts",
                                'expected {"<colour>": {"ok": <count>, "failed": <count>}}'))
        counts = None
    if problems:
        raise ValidationError(source, problems)
    return State(
        prod=str(prod), standby=str(standby), last_switch=last_switch, switch_count=switch_count,
        history=tuple(history), deploy_counts=counts,
        extra={k: v for k, v in data.items() if k not in _KNOWN_KEYS},
        key_order=tuple(data),
    )


def _valid_counts(counts: Any) -> bool:
    return isinstance(counts, dict) and all(
        c in COLORS and isinstance(per, dict) and all(
            r in DEPLOY_RESULTS and isinstance(n, int) and not isinstance(n, bool) and n >= 0
            for r, n in per.items())
        for c, per in counts.items())


def _json_kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), f"the number {value!r}" if isinstance(value, (int, float)) else repr(value))


def scrub_errors(state: State, secrets: Iterable[Any]) -> State:
    """Every string of every history entry, archived ones included (an `error` quotes remote
    output, a `reason` what a person typed), redacted before it is stored: by the values given,
    then by shape."""
    values = list(secrets)
    return replace(state, history=tuple(redact_tree(e, values) if isinstance(e, Mapping) else e
                                        for e in state.history),
                   archived=tuple(redact_tree(e, values) if isinstance(e, Mapping) else e
                                  for e in state.archived))


SIDE_SUFFIX = ".pending"


# --------------------------------------------------------------------------- pure pieces


def side_path(journal_path: str) -> str:
    return journal_path + SIDE_SUFFIX


def switch_entry(*, from_color: str, to_color: str, when: float, who: str, reason: str,
                 duration_ms: int, preempted: LockInfo | None, path: str) -> dict[str, Any]:
    """The journal entry of an emergency flip (the same shape as any switch, plus who was
    pre-empted and an id that lets a side-file copy be folded in exactly once)."""
    entry: dict[str, Any] = {
        "type": "switch", "from": from_color, "to": to_color,
        "timestamp": iso_utc(when), "reason": reason,
        "who": who, "emergency": True, "durationMs": duration_ms, "path": path,
        "id": uuid.uuid4().hex,
    }
    if preempted is not None:
        entry["preempted"] = {"holder": preempted.holder, "host": preempted.host, "pid": preempted.pid,
                              "operation": preempted.operation}
    return entry


def with_entry(state: State, entry: Mapping[str, Any], keep: int | None) -> State:
    """`state` with an emergency switch entry on top (prod and counters follow it). `keep=None`
    trims nothing (a writer that cannot archive leaves the trimming to the next normal write)."""
    updated = state.with_switch(str(entry["to"]), when=str(entry["timestamp"]), who=entry.get("who"),
                                reason=str(entry.get("reason") or ""), emergency=True,
                                duration_ms=entry.get("durationMs"), from_color=str(entry["from"]),
                                keep=keep)
    top = {**updated.history[0], **{k: v for k, v in entry.items() if k not in updated.history[0]}}
    return replace(updated, history=(top, *updated.history[1:]))


def parse_side(text: str) -> list[dict[str, Any]]:
    """Side-file lines, oldest first; a line that does not parse is skipped (and logged)."""
    return [entry for entry in json_lines(text, "side journal")
            if (entry.get("to") in COLORS and entry.get("from") in COLORS)
            or (entry_type(entry) == "deploy" and entry.get("color") in COLORS)]


def fold(state: State, entries: list[dict[str, Any]], keep: int | None) -> State:
    """The journal with side-file entries it does not hold yet (by id) added, oldest first."""
    known = {e.get("id") for e in state.history if isinstance(e, Mapping) and e.get("id")}
    for entry in entries:
        if entry.get("id") in known:
            continue
        if entry_type(entry) == "deploy":
            # A deploy that lost its lock records here instead of writing the journal.
            record = DeployRecord.from_dict(entry)
            if record is not None:
                state = state.with_deploy_record(record, keep=keep)
                state = replace(state, history=({**entry, **state.history[0]}, *state.history[1:]))
            continue
        state = with_entry(state, entry, keep)
    return state


def unfinished_release(state: State, color: str, release: str) -> str | None:
    """Why `release` (what `current` points at on `color`) must not be promoted, or None.

    Refused: a release whose newest deploy record failed (or was interrupted), and a release no
    record names that is newer than the colour's newest good deploy (a deploy killed before it
    could record anything). Older unrecorded releases (an old tool, trimmed history) pass.
    """
    deploys = [r for r in state.records() if isinstance(r, DeployRecord) and r.color == color]
    named = next((r for r in deploys if r.release == release), None)
    if named is not None:
        if named.ok:
            return None
        return (f"the deploy of {release} to {color} did not finish ok (step "
                f"'{named.failed_step}': {named.error}); deploy again, or --emergency to override")
    good = next((r for r in deploys if r.ok and r.release), None)
    if good is not None and good.release and release[:14].isdigit() and release[:14] > good.release[:14]:
        return (f"{color} points at {release}, which no deploy recorded as finished (newer than the last "
                f"good deploy {good.release}: an interrupted deploy?); deploy again, or --emergency")
    return None
