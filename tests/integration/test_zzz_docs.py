"""Documentation that is executed: every `sh` block of the README and docs/*.md, word for word, in the
order a newcomer reads them (`tests.guides.doc_order`: the README, then the docs it links), in one
terminal session on this world's lab, in the repository itself.

So `make demo` runs here, and only here, in the whole suite (what it tells is checked: its story
chapters, the switch under load without a failed request, the Server Action form accepted by the
other colour, the closing report); then the README's commands after it, with the demo's app; the
takeover rehearsal of docs/OPERATIONS.md on the lab as those leave it (green declared); `make
lab-reset` back to a new lab; the rebuild-after-losing-the-node rehearsal; the monitoring pages.
Blocks marked `sh prod` need the real estate: counted and named, not run (those of the quick
reference and the troubleshooting guide run translated to the lab in test_guides.py). `make test` is
not run: it is the suite this test is part of. A check after a block is keyed by the block's first
command, and a check whose block the docs no longer have fails the test, so a doc edit cannot
silently drop what is proved about it. The repository's `git status` is the same after as before.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bluegreen.hosts.executor import connect
from bluegreen.hosts.haproxy import live_color
from bluegreen.lab.lab import Lab
from bluegreen.model.stackfile import adopted_stack_file, load_stack
from bluegreen.ops.estate import Estate
from bluegreen.ops.status import history, status
from tests.guides import PROJECT, Block, blocks, doc_order

from .support import git

pytestmark = pytest.mark.integration

NOT_RUN = {"make test": "the test suite itself, which this test is part of"}
DEMO_CHAPTERS = ("lab up", "deploy next-v1 to", "switch to", "render the Server Action form", "deploy next-v2 to",
                 "under load", "submit that form after the switch", "rollback to")


@dataclass
class Ran:
    command: str
    code: int
    stdout: str
    stderr: str
    seconds: float


class Terminal:
    """One terminal session, as a newcomer has it: each line runs in bash in the directory and with
    the environment the line before left (so `source .venv/bin/activate` and `export` carry over),
    starting from this process's environment without a virtualenv on PATH."""

    def __init__(self, cwd: Path, state: Path, transcript: Path) -> None:
        self.state = state
        self.transcript = transcript
        state.mkdir(parents=True, exist_ok=True)
        venv_bin = str(Path(sys.executable).parent)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
        env["PYTHONUNBUFFERED"] = "1"
        self.env = env
        (state / "cwd").write_text(str(cwd))
        transcript.write_text("")

    def run(self, line: str, timeout: float) -> Ran:
        s = self.state
        script = (f'cd "$(cat {s}/cwd)"; [ -f {s}/env ] && . {s}/env\n{line}\n'
                  f'rc=$?; export -p > {s}/env; pwd > {s}/cwd; exit $rc\n')
        started = time.monotonic()
        done = subprocess.run(["bash", "-c", script], env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        ran = Ran(line, done.returncode, done.stdout, done.stderr, time.monotonic() - started)
        with self.transcript.open("a") as out:
            out.write(f"$ {line}\n{done.stdout}{done.stderr}[exit {done.returncode}, {ran.seconds:.1f}s]\n\n")
        return ran


def first_command(block: Block) -> str:
    return re.sub(r"\s+#\s.*$", "", block.shell_lines[0]).strip()


# --------------------------------------------------------------------------- what each block proves


def after_the_demo(ran: list[Ran]) -> None:
    demo = ran[0]
    out = demo.stdout
    story = out[out.index("The story:"):out.index("Request loop during the switch")].splitlines()[1:]
    lines = [line.strip() for line in story if line.strip()]
    assert len(lines) == len(DEMO_CHAPTERS), lines
    by_chapter = dict(zip(DEMO_CHAPTERS, lines, strict=True))
    for chapter, line in by_chapter.items():
        assert chapter in line, (chapter, line)
    assert "verified True" in by_chapter["switch to"]
    assert re.search(r"\b0 failed of [1-9]\d* requests", by_chapter["under load"]), by_chapter["under load"]
    assert re.search(r"HTTP 200 from (blue|green), rows written 1$", by_chapter["submit that form after the switch"])
    for migrating in ("deploy next-v1 to", "deploy next-v2 to"):
        assert "migrations ['" in by_chapter[migrating]  # each release brings its migration
    assert re.search(r"^stack lab: live (blue|green), declared \1, standby", out, re.M), out[:500]
    assert "Where the deploys' time went" in out and "next-v2 -> " in out
    assert "Proxmox VE API (fakepve)" in out and "CT 136 jw-haproxy" in out
    assert "/classic/alerts" in out and "source .venv/bin/activate" in out


def _estate() -> Estate:
    return Estate(load_stack(PROJECT, "lab"))


def after_the_readme_commands(ran: list[Ran]) -> None:
    restore = next(r for r in ran if "--with-database" in r.command)
    assert "is live again" in restore.stderr and "to undo this restore" in restore.stderr, restore.stderr[-2000:]
    report = status(_estate())
    assert report.live == report.declared == "green" and report.colors["green"].healthy
    assert report.colors["green"].ref == "next-v1" and report.colors["blue"].ref == "next-v2"
    assert report.database["applied"] == 2  # next-v2's migration undone by the restore, then applied again
    kinds = [e.get("type") for e in history(_estate(), limit=20)]
    assert "restore" in kinds


def after_the_rehearsal(ran: list[Ran]) -> None:
    up = next(r for r in ran if "up --legacy --reset" in r.command)
    assert "next:    `bluegreen --stack lab adopt --yes`" in up.stdout, up.stdout
    assert not any("not sent" in r.stderr for r in ran), "a deployment event was not sent"
    t = load_stack(PROJECT, "lab")
    adopted = adopted_stack_file(PROJECT, "lab")
    assert adopted is not None and adopted.is_file() and t.adopted_stack_file == str(adopted)
    assert t.app.deploy_user == "root" and t.app.health_path == "/"
    with connect(t, t.load_balancer) as lb:
        assert live_color(lb, t) == t.active_color == "blue"  # green, then blue again


def after_the_reset(ran: list[Ran]) -> None:
    assert "found:   the legacy estate, adopted: replaced by a new lab estate" in ran[0].stdout, ran[0].stdout
    assert "now:     no release yet" in ran[0].stdout and "`make demo`" in ran[0].stdout
    t = load_stack(PROJECT, "lab")
    adopted = adopted_stack_file(PROJECT, "lab")
    assert adopted is not None and not adopted.exists()
    assert t.active_color_file is not None and not Path(t.active_color_file).exists()  # declared: the tracked one
    report = status(_estate())
    assert report.live == report.declared == t.active_color
    assert not any(c.release for c in report.colors.values())
    assert report.database.get("lastGoodDump") is None  # the old estate's dumps went with it


def after_the_rebuild(ran: list[Ran]) -> None:
    report = status(_estate())
    assert report.live is not None and report.colors[report.live].healthy
    assert any(e.get("type") == "rebuild" for e in history(_estate(), limit=10))


BLOCK_CHECKS: dict[str, Callable[[list[Ran]], None]] = {
    "make demo": after_the_demo,
    "source .venv/bin/activate": after_the_readme_commands,
    "python -m bluegreen.lab down": after_the_rehearsal,
    "make lab-reset": after_the_reset,
    "bluegreen --stack lab deploy --yes --migrate": after_the_rebuild,
}


@pytest.mark.timeout(7200)
def test_every_documented_command_works_as_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = git(PROJECT, "status", "--porcelain", "--untracked-files=all")
    lab_logs = Lab().paths.logs
    lab_logs.mkdir(parents=True, exist_ok=True)
    terminal = Terminal(PROJECT, tmp_path / "terminal", lab_logs / "docs-transcript.txt")
    ran_count, blocks_run, checked = 0, 0, []
    not_run: list[str] = []
    prod: dict[str, int] = {}
    started = time.monotonic()
    for doc in doc_order():
        for block in blocks(doc):
            if block.lang != "sh":
                continue
            where = f"{doc.name}:{block.line}"
            if block.prod:
                prod[doc.name] = prod.get(doc.name, 0) + 1
                continue
            ran: list[Ran] = []
            for line in block.shell_lines:
                command = re.sub(r"\s+#\s.*$", "", line).strip()
                if command in NOT_RUN:
                    not_run.append(f"`{command}` ({where}): {NOT_RUN[command]}")
                    continue
                done = terminal.run(line, timeout=2700 if command == "make demo" else 1200)
                assert done.code == 0, (f"{where}: `{line}` exited {done.code} after {done.seconds:.0f}s:\n"
                                        f"{done.stdout[-3000:]}\n{done.stderr[-4000:]}")
                ran.append(done)
            ran_count += len(ran)
            blocks_run += 1
            check = BLOCK_CHECKS.get(first_command(block))
            if check is not None:
                check(ran)
                checked.append(first_command(block))
    assert sorted(checked) == sorted(BLOCK_CHECKS), f"the docs no longer run {set(BLOCK_CHECKS) - set(checked)}"
    assert git(PROJECT, "status", "--porcelain", "--untracked-files=all") == before
    with capsys.disabled():
        print(f"\ndocs: ran {ran_count} commands from {blocks_run} blocks in {time.monotonic() - started:.0f}s "
              f"(transcript: {terminal.transcript}); not run: {'; '.join(not_run)}; "
              f"{sum(prod.values())} blocks need prod, not run: "
              + ", ".join(f"{name} {count}" for name, count in prod.items()))
    assert ran_count >= 25 and not_run and sum(prod.values()) >= 20
