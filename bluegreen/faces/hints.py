"""The next step after a failure whose message alone does not say it (pure).

Two cases every newcomer meets: the local lab is not running (every lab address refuses), and a
command without `--stack` ran on the default stack (prod), whose hosts cannot be reached from this
machine. The message stays as it is; the CLI prints the hint after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# What a connection that finds nobody there looks like, from paramiko, OpenSSH, httpx and urllib.
_NOBODY_THERE = re.compile(r"cannot reach|Connection refused|Unable to connect|Errno 111", re.I)
# ... and what one that cannot get there at all looks like (no route from this machine).
_NO_WAY_THERE = re.compile(r"Network is unreachable|No route to host|timed out|Errno 101|Errno 113|"
                           r"cannot reach", re.I)
# ... and a stack file that still lacks what only the estate can tell (`config check`, adopt).
_INCOMPLETE = re.compile(r"\bset [a-z]+\.[A-Za-z]+: |is not set\b")
LAB_ENVIRONMENT = "lab"


@dataclass(frozen=True)
class Situation:
    stack: str
    stack_given: bool  # --stack or $BLUEGREEN_STACK named it (else the default, prod)
    environment: str | None  # the stack's bluegreen:environment, when the stack could be read
    text: str  # the message (or, for status, every error it reported)


def next_step(s: Situation) -> str | None:
    if s.environment == LAB_ENVIRONMENT and (_NOBODY_THERE.search(s.text) or "No such file" in s.text):
        return (f"the lab is not running (nothing answers on its loopback addresses): start it with "
                f"`make lab-up`, or run `make demo` for the whole story; then `bluegreen status --stack {s.stack}`")
    if not s.stack_given and (_NO_WAY_THERE.search(s.text) or _INCOMPLETE.search(s.text)):
        why = ("whose hosts cannot be reached from here" if _NO_WAY_THERE.search(s.text)
               else "whose stack file is not complete yet")
        return (f"no --stack was given, so this ran on stack {s.stack} (the default; $BLUEGREEN_STACK is not "
                f"set), {why}. On the local lab: add `--stack lab`, or `export BLUEGREEN_STACK=lab` once")
    return None
