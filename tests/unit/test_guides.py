"""The two guides the seed promises, checked offline: every troubleshooting entry quotes a message
the code really prints and says what to run; every command parses. (tests/integration/test_guides.py
runs the commands on the lab and provokes most messages.)"""

from __future__ import annotations

import shlex

import pytest

from bluegreen.faces.cli import build_parser
from tests.guides import (
    PLACEHOLDER,
    QUICK_REFERENCE,
    TROUBLESHOOTING,
    Entry,
    blocks,
    entries,
    fragments,
    message_regex,
    printed_by_the_code,
    ssh_aliases,
)

# The estate's errors the issue names: each must have an entry.
REQUIRED = ("lock is held", "DRIFT", "journal is unreadable", "host key changed", "P3009", "Health never passes",
            "DOWN", "Proxmox is unreachable")
KNOWN_PROGRAMS = ("bluegreen", "ssh", "ssh-keygen", "curl")


def test_every_required_failure_has_an_entry() -> None:
    titles = [e.title for e in entries()]
    for wanted in REQUIRED:
        assert any(wanted.lower() in title.lower() for title in titles), (wanted, titles)


@pytest.mark.parametrize("entry", entries(), ids=lambda e: e.title)
def test_each_entry_quotes_messages_the_code_prints_and_says_what_to_run(entry: Entry) -> None:
    assert entry.messages, f"{entry.title}: no Message: line"
    assert any(b.lang == "sh" and b.commands for b in entry.blocks), f"{entry.title}: nothing to run"
    for message in entry.messages:
        message_regex(message)  # a valid pattern
        missing = [f for f in fragments(message) if not printed_by_the_code(f)]
        assert not missing, f"{entry.title}: not printed by the code: {missing}"


def test_a_message_the_code_never_prints_is_caught() -> None:
    assert printed_by_the_code("the deployment lock (")
    assert not printed_by_the_code("the flux capacitor overheated; recalibrate the warp coil")
    assert not printed_by_the_code("the deployment lock is held by the moon")


def _sh_commands() -> list[str]:
    return [c for path in (QUICK_REFERENCE, TROUBLESHOOTING) for b in blocks(path) if b.lang == "sh"
            for c in b.commands]


def test_every_command_is_one_the_lab_test_runs_and_bluegreen_ones_parse() -> None:
    aliases = ssh_aliases()
    assert aliases == {"jwa": 132, "jwg": 134, "haproxy": 136, "postgres": 131}
    for command in _sh_commands():
        if command.startswith("cd ") or command.startswith("git "):
            continue  # inside an `ssh ALIAS` session block
        command = PLACEHOLDER.sub("SHA256:x", command)
        program = shlex.split(command)[0]
        assert program in KNOWN_PROGRAMS, command
        if program == "ssh":
            assert shlex.split(command)[1] in aliases, command
        if program == "bluegreen":
            words = shlex.split(command)[1:]
            build_parser().parse_args(words)  # exits 2 on a command or option that does not exist
            assert "--stack" in words and words[words.index("--stack") + 1] == "prod", command


def test_the_quick_reference_names_the_four_phrases_beside_their_commands() -> None:
    text = QUICK_REFERENCE.read_text()
    for phrase, command in (("Check deployment status", "bluegreen status"),
                            ("Deploy to standby", "bluegreen deploy"),
                            ("Switch traffic", "bluegreen switch --yes"),
                            ("Switch traffic with emergency mode", "bluegreen switch --emergency")):
        row = next(line for line in text.splitlines() if f'"{phrase}"' in line)
        assert command in row, (phrase, row)
