"""`make demo`, the README's first command, tells its whole story on the lab.

It runs what `make demo` runs after set-up (`python -m bluegreen.lab.demo`) and reads its report:
every chapter in order, each with the outcome that makes the story true (a verified flip, no
failed request during the switch under load, the Server Action form rendered on one colour and
accepted by the other, the rollback), then the status block, where the deploys' time went, and
where each part runs. Two real Next.js builds: minutes, so one test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from bluegreen.lab.lab import Lab
from bluegreen.lab.paths import PROJECT_DIR

pytestmark = pytest.mark.integration

CHAPTERS = ("lab up", "deploy next-v1 to", "switch to", "render the Server Action form", "deploy next-v2 to",
            "under load", "submit that form after the switch", "rollback to")


@pytest.mark.timeout(1800)
def test_make_demo_tells_the_whole_story(lab: Lab) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run = subprocess.run([sys.executable, "-m", "bluegreen.lab.demo"], cwd=PROJECT_DIR, env=env,
                         capture_output=True, text=True, timeout=1700)
    out = run.stdout
    assert run.returncode == 0, f"demo failed:\n{run.stderr[-4000:]}\n{out[-2000:]}"
    story = out[out.index("The story:"):out.index("Request loop during the switch")].splitlines()[1:]
    lines = [line.strip() for line in story if line.strip()]
    assert len(lines) == len(CHAPTERS), lines
    for line, chapter in zip(lines, CHAPTERS, strict=True):
        assert chapter in line, (chapter, line)
    by_chapter = dict(zip(CHAPTERS, lines, strict=True))
    assert "verified True" in by_chapter["switch to"]
    assert re.search(r"\b0 failed of [1-9]\d* requests", by_chapter["under load"]), by_chapter["under load"]
    assert re.search(r"HTTP 200 from (blue|green), rows written 1$", by_chapter["submit that form after the switch"])
    for migration_chapter in ("deploy next-v1 to", "deploy next-v2 to"):
        assert "migrations ['" in by_chapter[migration_chapter]  # each release brings its migration
    # The closing report: status of both colours, where the deploys' time went, where things run.
    assert re.search(r"^stack lab: live (blue|green), declared \1, standby", out, re.M), out[:500]
    assert "Where the deploys' time went" in out and "next-v2 -> " in out
    assert "Proxmox VE API (fakepve)" in out and "CT 136 jw-haproxy" in out
