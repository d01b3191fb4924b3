"""Which colour is live, as the three places that say it agree or not (pure).

HAProxy's runtime map is what serves: the truth. The map file is what a reload would load, and
the journal (`state.json`, with side-file entries folded in) is what every later command and
person reads. A flip changes the runtime and the file in one remote step and is then recorded;
a connection cut at the wrong moment can leave the journal behind (a flip not recorded), and
only a step killed half way can leave the file behind. `LiveTruth` names each disagreement, and
the one command that settles all of them: `switch --to <the colour HAProxy serves>`, which is a
no-op for the traffic and records or rewrites what lags.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

from bluegreen.model.journal import DEFAULT_HISTORY_KEEP, State
from bluegreen.model.topology import other_color

FOUND_REASON = "found live but not recorded (a switch cut off before its record)"


@dataclass(frozen=True)
class LiveTruth:
    runtime: str | None  # the colour HAProxy routes live traffic to in memory (None: unknown)
    map_file: str | None  # the colour the map file names (None: no map file or no live entry)
    journal: str | None  # the journal's live colour (None: unreadable)
    has_map: bool = True  # False: a hand-written config without our map (nothing to compare)

    def mismatches(self) -> list[str]:
        """Each disagreement with what HAProxy serves, in words that say what it would cause."""
        live = self.runtime
        if live is None:
            return []
        out = []
        if self.has_map and self.map_file != live:
            if self.map_file is None:
                out.append(f"HAProxy routes to {live} in memory but the map file has no live entry: a "
                           "reload would route by the configuration's default backend")
            else:
                out.append(f"HAProxy routes to {live} in memory but the map file names {self.map_file}: "
                           f"a reload would move live traffic to {self.map_file}")
        if self.journal is not None and self.journal != live:
            out.append(f"the journal says {self.journal} is live but HAProxy serves {live}: a switch to "
                       f"{live} was not recorded (cut off before its record)")
        return out

    @property
    def consistent(self) -> bool:
        return not self.mismatches()

    def resolve_command(self, stack: str) -> str | None:
        """The one command that settles every mismatch without moving traffic."""
        if self.consistent or self.runtime is None:
            return None
        return f"bluegreen switch --to {self.runtime} --stack {stack}"

    def to_json(self, stack: str) -> dict[str, Any]:
        return {"runtime": self.runtime, "mapFile": self.map_file if self.has_map else None,
                "journal": self.journal, "consistent": self.consistent, "mismatches": self.mismatches(),
                "resolve": self.resolve_command(stack)}


def map_file_color(entries: dict[str, str] | None) -> str | None:
    """The colour the map file's `live` entry names."""
    backend = (entries or {}).get("live", "")
    return backend.removeprefix("bk_") if backend.startswith("bk_") else None


def with_found_switch(state: State, live: str, *, who: str | None, when: str | float,
                      verified: bool = False, keep: int | None = DEFAULT_HISTORY_KEEP) -> State:
    """`state` with the switch to `live` that HAProxy shows but nobody recorded: marked `found`,
    and `verified` only once a request through the public frontend was answered by `live`."""
    updated = state.with_switch(live, from_color=state.prod, when=when, who=who, reason=FOUND_REASON,
                                keep=keep)
    top = {**updated.history[0], "found": True, "verified": verified, "id": uuid.uuid4().hex}
    return replace(updated, history=(top, *updated.history[1:]))


def with_fields(state: State, **fields: Any) -> State:
    """`state` with `fields` added to its newest history entry (`verified`, say)."""
    if not state.history:
        return state
    return replace(state, history=({**state.history[0], **fields}, *state.history[1:]))


def rollback_target(state: State | None, live: str) -> str:
    """Where `rollback` goes: the colour live before the last RECORDED switch, whatever HAProxy
    serves now. So a rollback that took effect but was not recorded is, when repeated, a no-op
    (its target is already live) instead of a flip back."""
    if state is None:
        return other_color(live)
    return state.previous_live(state.prod) or other_color(state.prod)
