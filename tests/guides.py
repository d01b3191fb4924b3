"""Reading the README and docs/*.md as tests see them (pure).

- `sh` fenced blocks are commands a user is told to run; tests/integration/test_zzz_docs.py runs
  them on the lab, word for word, in the order written (`doc_order`). `sh prod` blocks need the
  real estate: not run there (those of docs/QUICK_REFERENCE.md and docs/TROUBLESHOOTING.md are run
  by tests/integration/test_guides.py, translated to the lab). `text` blocks need values only the
  user has and are not run; a block without a language is output.
- A troubleshooting entry is a `###` section; its `Message: `...`` lines quote what the tool
  prints, `<...>` standing for what varies.
- `printed_by_the_code` checks a quoted message against the string literals of the product
  source (`bluegreen/`, the lab excluded): each literal stretch of the message must be made of
  the literal parts of the source's strings, the way messages are composed (an f-string's text
  around its values, a value that is itself a string, strings joined with `+` or `join`).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
README = PROJECT / "README.md"
QUICK_REFERENCE = PROJECT / "docs/QUICK_REFERENCE.md"
TROUBLESHOOTING = PROJECT / "docs/TROUBLESHOOTING.md"
PLACEHOLDER = re.compile(r"<[^<>]+>")
_FENCE = re.compile(r"^```(\w*)((?:[ \t]+[\w-]+)*)\s*$")
PROD = "prod"  # the flag of a block that needs the real estate


@dataclass
class Block:
    doc: str
    section: str
    lang: str
    lines: list[str]
    flags: frozenset[str] = frozenset()
    line: int = 0  # where its opening fence is (1-based)

    @property
    def prod(self) -> bool:
        return PROD in self.flags

    @property
    def shell_lines(self) -> list[str]:
        """Its command lines as written (trailing comments kept: the shell ignores them), a line
        ending in `\\` joined with the next, blank and comment-only lines left out."""
        out: list[str] = []
        pending = ""
        for line in self.lines:
            if pending:
                line = pending + line.lstrip()
                pending = ""
            if line.rstrip().endswith("\\"):
                pending = line.rstrip()[:-1] + " "
                continue
            if line.strip() and not line.strip().startswith("#"):
                out.append(line.strip())
        return out

    @property
    def commands(self) -> list[str]:
        """Its lines without blank ones and without trailing `# comments`."""
        out = []
        for line in self.lines:
            text = re.sub(r"\s+#\s.*$", "", line).strip()
            if text and not text.startswith("#"):
                out.append(text)
        return out


@dataclass
class Entry:
    title: str
    messages: list[str] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)


def blocks(path: Path) -> list[Block]:
    """Every fenced block with the heading it sits under."""
    found: list[Block] = []
    section = ""
    current: Block | None = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fence = _FENCE.match(line)
        if current is not None:
            if line.strip() == "```":
                found.append(current)
                current = None
            else:
                current.lines.append(line)
        elif fence:
            current = Block(path.name, section, fence.group(1) or "", [], frozenset(fence.group(2).split()),
                            number)
        elif line.startswith("#"):
            section = line.lstrip("#").strip()
    return found


def doc_order() -> list[Path]:
    """The README, then docs/*.md in the order the README first links them, then the others by
    name: the order a newcomer reads them in."""
    docs = sorted((PROJECT / "docs").glob("*.md"))
    linked = []
    for name in re.findall(r"\(docs/([A-Za-z_]+\.md)[)#]", README.read_text()):
        path = PROJECT / "docs" / name
        if path in docs and path not in linked:
            linked.append(path)
    return [README, *linked, *(d for d in docs if d not in linked)]


COMMAND_WORDS = ("bluegreen", "python", "make", "source", "curl", "ssh", "ssh-keygen", "pulumi", "promtool",
                 "sudo", "export", "bash", ".venv/bin/")


def looks_like_a_command(line: str) -> bool:
    word = line.strip().split(" ", 1)[0] if line.strip() else ""
    return word in COMMAND_WORDS or word.startswith(".venv/bin/") or bool(re.match(r"^[A-Z_]+=\S+ \w", line.strip()))


def unmarked_commands(path: Path) -> list[tuple[int, str]]:
    """Commands outside an `sh` block (an indented code block, or a fence without `sh`): a user is
    told to run them, but no test would. (line number, line)."""
    found: list[tuple[int, str]] = []
    lines = path.read_text().splitlines()
    in_fence, lang = False, ""
    for number, line in enumerate(lines, 1):
        fence = _FENCE.match(line)
        if fence and not in_fence:
            in_fence, lang = True, fence.group(1)
            continue
        if line.strip() == "```" and in_fence:
            in_fence = False
            continue
        if in_fence:
            if lang == "" and looks_like_a_command(line):  # `text`: values only the user has
                found.append((number, line))
            continue
        previous = lines[number - 2] if number > 1 else ""
        if line.startswith("    ") and not previous.strip() and looks_like_a_command(line):
            found.append((number, line))
    return found


def _code_span(text: str) -> str:
    """The content of the inline code span `text` starts with (one or two backticks)."""
    ticks = "``" if text.startswith("``") else "`"
    end = text.index(ticks, len(ticks))
    return text[len(ticks):end].strip()


def entries(path: Path = TROUBLESHOOTING) -> list[Entry]:
    found: list[Entry] = []
    for line in path.read_text().splitlines():
        if line.startswith("### "):
            found.append(Entry(line[4:].strip()))
        elif found and line.startswith("Message: "):
            found[-1].messages.append(_code_span(line[len("Message: "):]))
    by_title = {e.title: e for e in found}
    for block in blocks(path):
        if block.section in by_title:
            by_title[block.section].blocks.append(block)
    return found


def message_regex(message: str) -> re.Pattern[str]:
    """The message as a pattern over what the tool printed (placeholders match anything)."""
    parts = PLACEHOLDER.split(message)
    return re.compile(".+?".join(re.escape(p) for p in parts), re.DOTALL)


def fragments(message: str) -> list[str]:
    """The literal stretches between placeholders that say something (3+ non-space characters)."""
    return [f for f in PLACEHOLDER.split(message) if len(re.sub(r"\W", "", f)) >= 3]


def _literal_parts(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    return []


@lru_cache(maxsize=1)
def source_parts() -> tuple[frozenset[str], tuple[str, ...]]:
    """(every literal part, the same as a tuple) of the product's strings, the lab left out."""
    parts: set[str] = set()
    for path in sorted((PROJECT / "bluegreen").rglob("*.py")):
        if "lab" in path.relative_to(PROJECT / "bluegreen").parts[:1]:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            parts.update(p for p in _literal_parts(node) if p)
    return frozenset(parts), tuple(sorted(parts))


MAX_PIECES = 5


def printed_by_the_code(fragment: str) -> bool:
    """`fragment` is a substring of one literal part, or is made of at most MAX_PIECES pieces:
    the end of a part, whole parts (at least two characters each), the start of a part."""
    whole, ordered = source_parts()
    if any(fragment in part for part in ordered):
        return True
    n = len(fragment)
    # Breadth first over positions in the fragment, by pieces used so far.
    frontier = {i: 1 for i in range(1, n) if any(part.endswith(fragment[:i]) for part in ordered)}
    seen = dict(frontier)
    while frontier:
        following: dict[int, int] = {}
        for i, used in frontier.items():
            if used + 1 <= MAX_PIECES and any(part.startswith(fragment[i:]) for part in ordered):
                return True
            if used + 2 > MAX_PIECES:
                continue
            for j in range(i + 2, n):
                if fragment[i:j] in whole and seen.get(j, MAX_PIECES + 1) > used + 1:
                    seen[j] = following[j] = used + 1
        frontier = following
    return False


def ssh_aliases(path: Path = QUICK_REFERENCE) -> dict[str, int]:
    """The SSH alias table of the quick reference: alias -> vmid."""
    aliases = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^\|\s*`([a-z0-9-]+)`\s*\|\s*(\d{3})\s", line)
        if m:
            aliases[m.group(1)] = int(m.group(2))
    return aliases
