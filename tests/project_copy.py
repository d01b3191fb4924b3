"""A private copy of the project's stacks for tests that run the CLI in a subprocess (where
`tracked_stacks_only` cannot reach): the lab stack's declared-colour and adopted-stack files point
into the copy, so a lab on this machine (a switch, a takeover rehearsal) cannot change what the
copy says."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
_LAB_FILES = re.compile(r"^(\s*bluegreen:(?:activeColorFile|adoptedStackFile):\s*)(\S+)", re.M)


def project_copy(dest: Path) -> Path:
    shutil.copy(PROJECT / "Pulumi.yaml", dest / "Pulumi.yaml")
    shutil.copytree(PROJECT / "stacks", dest / "stacks")
    lab = dest / "stacks" / "Pulumi.lab.yaml"
    text, count = _LAB_FILES.subn(lambda m: f"{m.group(1)}{dest / 'lab-files' / Path(m.group(2)).name}",
                                  lab.read_text())
    assert count == 2, "the lab stack no longer names activeColorFile and adoptedStackFile"
    lab.write_text(text)
    return dest
