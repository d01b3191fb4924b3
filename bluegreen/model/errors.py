"""One exception root; the CLI and MCP server turn these into messages and exit codes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class BlueGreenError(Exception):
    """Root of every foreseeable failure. `str(err)` is a complete, user-facing message."""

    exit_code = 1


def add_problem(error: BaseException, problem: str) -> BaseException:
    """Report `problem` (a lock release or a journal write that failed on the way out) beside
    `error`, never instead of it: the message gains it; the type and exit code stay the error's."""
    if isinstance(error, BlueGreenError):
        error.args = (f"{error}; and {problem}",)
    else:
        error.add_note(problem)
    return error


class ConfigError(BlueGreenError):
    """Bad input: a malformed stack file, an unknown stack, a bad argument. Exit code 2."""

    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One validation problem: where (a key path like `containers[2].ip`) and what is wrong."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class ValidationError(ConfigError):
    """Every problem found in a stack file at once, each naming its key."""

    def __init__(self, source: str, problems: Iterable[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{source}: {count} {noun}:\n{lines}")


class RemoteError(BlueGreenError):
    """A command or file operation on a host failed. Names the host and the step."""

    def __init__(self, host: str, step: str, detail: str) -> None:
        self.host = host
        self.step = step
        self.detail = detail
        super().__init__(f"{host}: {step} failed: {detail}")


class HostKeyError(RemoteError):
    """The host's SSH key is unknown or changed: refused, never added silently."""


class LockedError(BlueGreenError):
    """Another operation holds the deployment lock."""


class DeployError(BlueGreenError):
    """A deploy step failed; the standby was put back on its previous release."""

    def __init__(self, step: str, detail: str, *, color: str | None = None) -> None:
        self.step = step
        self.detail = detail
        self.color = color
        where = f" on {color}" if color else ""
        super().__init__(f"deploy{where} failed at step '{step}': {detail}")


class SwitchError(BlueGreenError):
    """A switch was refused or failed; the live colour is unchanged unless the message says so."""


class ProxmoxError(BlueGreenError):
    """The Proxmox VE API refused or failed a request; the message is PVE's own words."""


class PulumiError(BlueGreenError):
    """The Pulumi CLI is missing or an Automation API call failed."""
