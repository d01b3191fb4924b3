"""The README and docs/*.md, checked offline before tests/integration/test_zzz_docs.py runs them.

Every command a reader is told to run sits in an `sh` block (run on the lab, word for word) or an
`sh prod` block (needs the real estate); none hides in an indented block or an unmarked fence. The
lab blocks name the lab and nothing outside it; every `bluegreen`, `python -m bluegreen.lab` and
`make` line names a command and options that exist; every doc and message invokes the tools one
way (`bluegreen` and `python` with the virtualenv active)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from bluegreen.faces.cli import build_parser
from bluegreen.lab.__main__ import build_parser as build_lab_parser
from tests.guides import PLACEHOLDER, PROJECT, README, Block, blocks, doc_order, unmarked_commands

DOCS = doc_order()
SH_BLOCKS = [b for d in DOCS for b in blocks(d) if b.lang == "sh"]
MAKE_TARGETS = set(re.findall(r"^([a-z][a-z-]*):", (PROJECT / "Makefile").read_text(), re.M))


def _id(b: Block) -> str:
    return f"{b.doc}:{b.line}"


def test_every_doc_is_read_in_the_order_a_newcomer_reads_them() -> None:
    assert DOCS[0] == README and set(DOCS[1:]) == set((PROJECT / "docs").glob("*.md"))
    names = [d.name for d in DOCS]
    assert names.index("OPERATIONS.md") < names.index("MONITORING.md") < names.index("TROUBLESHOOTING.md")


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_no_command_hides_outside_an_sh_block(doc: Path) -> None:
    assert unmarked_commands(doc) == [], "fence them as ```sh (run on the lab) or ```sh prod (needs the estate)"


def test_an_indented_or_unmarked_command_is_caught(tmp_path: Path) -> None:
    doc = tmp_path / "X.md"
    doc.write_text("Run:\n\n    bluegreen status --stack prod\n\nor\n\n```\nmake demo\n```\n\n```text\n"
                   "pulumi config set bluegreen:activeColor <colour>\n```\n")
    assert unmarked_commands(doc) == [(3, "    bluegreen status --stack prod"), (8, "make demo")]


def test_the_readme_runs_the_demo_and_the_lab_blocks_run_the_takeover_rehearsal() -> None:
    lab = [line for b in SH_BLOCKS if not b.prod for line in b.shell_lines]
    assert lab[0].startswith("make demo") and any(line.startswith("make test") for line in lab)
    assert any("up --legacy --reset" in line for line in lab) and any(line.startswith("make lab-reset") for line in lab)
    assert any("rollback --with-database" in line and "--stack lab" in line for line in lab)
    assert sum(b.prod for b in SH_BLOCKS) >= 20  # the guides' estate commands, marked


@pytest.mark.parametrize("block", [b for b in SH_BLOCKS if not b.prod], ids=_id)
def test_a_lab_block_names_the_lab_and_nothing_outside_it(block: Block) -> None:
    text = "\n".join(block.lines)
    assert "--stack prod" not in text and "10.92." not in text, "a block that needs prod is marked ```sh prod"
    for line in block.shell_lines:
        if line.startswith("bluegreen "):
            assert "--stack lab" in line, line
        assert ".venv/bin/" not in line or line.startswith("source .venv/bin/activate"), line


def _words(line: str) -> list[str]:
    return shlex.split(PLACEHOLDER.sub("SHA256:x", line), comments=True)


@pytest.mark.parametrize("block", SH_BLOCKS, ids=_id)
def test_every_command_names_what_exists(block: Block) -> None:
    for line in block.shell_lines:
        words = _words(line)
        if words and words[0] == "sudo":
            words = words[words.index("bluegreen"):] if "bluegreen" in words else []
        if words[:1] == ["bluegreen"]:
            build_parser().parse_args(words[1:])  # exits 2 on a command or option that does not exist
        elif words[:3] == ["python", "-m", "bluegreen.lab"]:
            build_lab_parser().parse_args(words[3:])
        elif words[:1] == ["make"]:
            assert set(words[1:]) <= MAKE_TARGETS, line


ONE_WAY = re.compile(r"(?<![\w/])\.venv/bin/(bluegreen|python)\b")


def test_docs_and_messages_invoke_the_tools_one_way() -> None:
    """`bluegreen` and `python` with the virtualenv active; absolute paths only where a program
    starts it outside your shell (an MCP client's config, sudo)."""
    found = []
    for path in [*DOCS, *sorted((PROJECT / "bluegreen").rglob("*.py"))]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if ONE_WAY.search(line):
                found.append(f"{path.relative_to(PROJECT)}:{number}: {line.strip()}")
    assert found == []
