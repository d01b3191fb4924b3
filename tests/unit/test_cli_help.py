"""Every command of `bluegreen` and of `python -m bluegreen.lab` says what it does and shows an
example, and every example is a command line the parser accepts."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterator

import pytest

from bluegreen.faces.cli import build_parser
from bluegreen.faces.cli_help import COMMAND_HELP
from bluegreen.lab.__main__ import build_parser as build_lab_parser


def walk(parser: argparse.ArgumentParser, path: str = "") -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    """(path, parser, its one-line help in the parent's list) for every sub-command, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                key = f"{path} {name}".strip()
                yield key, sub, helps.get(name) or ""
                yield from walk(sub, key)


def example_lines(parser: argparse.ArgumentParser) -> list[str]:
    epilog = parser.epilog or ""
    assert epilog.startswith("Example"), parser.prog
    lines = [line.strip() for line in epilog.splitlines()[1:] if line.startswith("  ")]
    return [line.split("  #")[0].strip() for line in lines]


BLUEGREEN = list(walk(build_parser()))
LAB = list(walk(build_lab_parser()))


def test_the_walk_finds_every_command_including_nested_ones() -> None:
    names = {key for key, _, _ in BLUEGREEN}
    assert {"status", "deploy", "switch", "rollback", "lock release", "db restore", "config check"} <= names
    assert {key for key, _, _ in LAB} == {"up", "down", "status", "reset", "destroy", "apply", "lose-node"}
    assert set(COMMAND_HELP) == names  # no entry for a command that does not exist


@pytest.mark.parametrize(("key", "parser", "summary"), BLUEGREEN, ids=[k for k, _, _ in BLUEGREEN])
def test_each_bluegreen_command_has_help_a_description_and_an_example_that_parses(
        key: str, parser: argparse.ArgumentParser, summary: str) -> None:
    assert summary, f"{key}: no one-line help in `bluegreen {key.rsplit(' ', 1)[0]} --help`"
    assert parser.description and len(parser.description) > len(summary) / 2, key
    examples = example_lines(parser)
    assert examples, key
    for line in examples:
        words = shlex.split(line)
        program = next(i for i, w in enumerate(words) if w.rsplit("/", 1)[-1] == "bluegreen")
        assert program == 0 or words[0] == "sudo", line  # `sudo -u <approver> /path/to/bluegreen ...`
        words = words[program:]
        args = build_parser().parse_args(words[1:])  # exits 2 on an option that does not exist
        assert " ".join([args.command, *[str(getattr(args, f"{args.command}_command", "") or "")]]).strip() \
            .startswith(key.split()[0])
    assert "Example:" in parser.format_help()


@pytest.mark.parametrize(("key", "parser", "summary"), LAB, ids=[k for k, _, _ in LAB])
def test_each_lab_command_has_help_and_an_example_that_parses(key: str, parser: argparse.ArgumentParser,
                                                              summary: str) -> None:
    assert summary and parser.description, key
    for line in example_lines(parser):
        words = shlex.split(line)
        if words[:3] == ["python", "-m", "bluegreen.lab"]:
            assert build_lab_parser().parse_args(words[3:]).command == key
        else:
            assert words[0] == "bluegreen", line
            build_parser().parse_args(words[1:])


def test_global_options_go_before_or_after_the_lab_command() -> None:
    assert build_lab_parser().parse_args(["--stack", "prod", "status"]).stack == "prod"
    assert build_lab_parser().parse_args(["status", "--stack", "prod"]).stack == "prod"
    args = build_lab_parser().parse_args(["up", "--legacy", "--reset"])
    assert (args.command, args.legacy, args.reset, args.stack) == ("up", True, True, "lab")
