"""What `python -m bluegreen.lab up` found in the lab's directory, what the lab is now, and the one
command that moves on from there (pure, apart from `what_is_here`, which only looks at two files).

The lab's directory outlives every run, so `up` meets one of four estates: none yet (a new lab), the
lab's own (built as `pulumi up` builds it), the hand-built legacy estate (`up --legacy`), or that
legacy estate adopted (`bluegreen adopt` wrote the adopted stack). `make lab-reset` brings any of
them back to a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bluegreen.model.topology import other_color

NEW = "new"
OWN = "own"
LEGACY = "legacy"
ADOPTED = "adopted"

RESET = "make lab-reset"
DEMO = "make demo"
FIRST_DEPLOY = "bluegreen --stack lab deploy --ref next-v1 --migrate --yes"
ADOPT = "bluegreen --stack lab adopt --yes"
REHEARSAL = 'docs/OPERATIONS.md, "Rehearse it first"'


@dataclass(frozen=True)
class Summary:
    found: str  # what was there before this `up`
    state: str  # what the lab is now
    next_step: str  # the command that moves on, with a word on why


def what_is_here(lab_root: Path, legacy_marker: str, adopted_stack: Path | None, known_hosts: Path) -> str:
    """NEW, OWN, LEGACY or ADOPTED, from the files a previous run left in the lab's directory."""
    if (lab_root / legacy_marker).exists():
        return ADOPTED if adopted_stack is not None and adopted_stack.is_file() else LEGACY
    return OWN if known_hosts.exists() else NEW


FOUND = {
    NEW: "nothing: a new lab",
    OWN: "the lab's own estate",
    LEGACY: "the hand-built legacy estate",
    ADOPTED: "the legacy estate, adopted",
}


def own_summary(found: str, releases: dict[str, str | None], live: str, *, reset: bool = False) -> Summary:
    """After `up` (and `reset`): the lab's own estate, serving what its colours run."""
    replaced = found in (LEGACY, ADOPTED) or (reset and found != NEW)
    before = FOUND[found] + (": replaced by a new lab estate" if replaced else "")
    standby = other_color(live)
    if not any(releases.values()):
        return Summary(before, "no release yet: neither colour runs the app, the public site answers 503",
                       f"`{DEMO}` (the whole story), or `{FIRST_DEPLOY}` then "
                       "`bluegreen --stack lab switch --yes`")
    state = (f"{live} live ({releases.get(live) or 'no release'}), {standby} standby "
             f"({releases.get(standby) or 'no release'})")
    if not releases.get(live):
        return Summary(before, state, f"`bluegreen --stack lab switch --yes` ({standby} has a release)")
    return Summary(before, state, "`bluegreen --stack lab status`; a new lab: `make lab-reset`")


def legacy_summary(found: str, adopted_stack: Path | None, *, reset: bool) -> Summary:
    """After `up --legacy`: the hand-built estate, adopted or not yet."""
    before = FOUND[found] + (" (rebuilt from scratch: --reset)" if reset and found != NEW else "")
    if found == ADOPTED and not reset:
        return Summary(before, f"the legacy estate, adopted: the lab's stack is now {adopted_stack}",
                       f"the next step of the rehearsal ({REHEARSAL}); start it over with "
                       "`python -m bluegreen.lab up --legacy --reset`, the lab's own estate back with "
                       f"`{RESET}`")
    return Summary(before, "the hand-built legacy estate (production as it runs today), not adopted",
                   f"`{ADOPT}` ({REHEARSAL}); the lab's own estate back with `{RESET}`")


def format_summary(s: Summary) -> list[str]:
    return [f"  found:   {s.found}", f"  now:     {s.state}", f"  next:    {s.next_step}"]
