"""A `pulumi` CLI for the Automation API that runs the real `__main__.py` under Pulumi's mocks and
hands what it registers to the engine stand-in (tests/pulumi/engine.py).

It answers the commands the seam (bluegreen/hosts/pulumi.py) runs: `stack select`, `stack export`,
`config set` (written into the stack file, as the CLI does), `up` (with `--target`, `--replace`,
`--target-dependents`), `refresh`, `stack output`, `stack history`. The program reads the
environment the seam sets for the run (`BLUEGREEN_SWITCH_TO`, `BLUEGREEN_REBUILD`, the lock token),
like the real CLI's program process inherits it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pulumi.automation import CommandResult, PulumiCommand
from pulumi.automation.errors import create_command_error
from semver import VersionInfo

from bluegreen.model.stackfile import stack_file

from .conftest import DECLARED, PROJECT, PulumiHarness
from .engine import Engine, EngineError, Step, goals


class EngineCli(PulumiCommand):
    def __init__(self, harness: PulumiHarness, engine: Engine, project_dir: Path, *,
                 secrets: Mapping[str, str], live: Callable[[], Any] = lambda: DECLARED,
                 lock: Callable[[], Any] = lambda: None, version: str = "3.272.0") -> None:
        # Not calling super().__init__: it runs `pulumi version`, and there is no pulumi here.
        self.command = "pulumi"
        self.version = VersionInfo.parse(version)
        self.harness = harness
        self.engine = engine
        self.project_dir = project_dir
        self.secrets = dict(secrets)
        self.live = live
        self.lock = lock
        self.calls: list[list[str]] = []
        self.last: list[Step] = []
        self.last_kind = "update"

    # -- the program ----------------------------------------------------------------------------

    def config(self, stack: str) -> dict[str, Any]:
        data = yaml.safe_load(stack_file(self.project_dir, stack).read_text())
        return {**data["config"], **self.secrets}

    def program(self, stack: str) -> Any:
        run = self.harness.run(stack, self.config(stack), secret_keys=tuple(self.secrets), live=self.live(),
                               lock=self.lock())
        if run.error is not None:
            raise EngineError(str(run.error))
        return goals(run, stack=stack, project=PROJECT)

    # -- the CLI --------------------------------------------------------------------------------

    def run(self, args: list[str], cwd: str, additional_env: Mapping[str, str],
            on_output: Callable[[str], Any] | None = None,
            on_error: Callable[[str], Any] | None = None) -> CommandResult:
        argv = [a for a in args if a != "--non-interactive"]
        self.calls.append(argv)
        stack = argv[argv.index("--stack") + 1] if "--stack" in argv else "prod"
        saved = dict(os.environ)
        os.environ.update(additional_env)
        try:
            stdout = self._answer(argv, stack)
        except EngineError as exc:
            result = CommandResult(stdout="", stderr=f"error: {exc}", code=255)
            raise create_command_error(result) from None
        finally:
            os.environ.clear()
            os.environ.update(saved)
        for line in stdout.splitlines():
            if on_output is not None:
                on_output(line)
        return CommandResult(stdout=stdout, stderr="", code=0)

    def _answer(self, argv: list[str], stack: str) -> str:
        verb = " ".join(argv[:2]) if argv[0] in ("stack", "config") else argv[0]
        if verb == "stack select":
            return ""
        if verb == "stack export":
            return json.dumps({"version": 3, "deployment": self.engine.export()})
        if verb == "config set":
            key, value = argv[2], argv[argv.index("--") + 1]
            path = stack_file(self.project_dir, stack)
            data = yaml.safe_load(path.read_text())
            data["config"][key] = value
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            return ""
        if verb == "up":
            targets = [argv[i + 1] for i, a in enumerate(argv) if a == "--target"]
            replace = [argv[i + 1] for i, a in enumerate(argv) if a == "--replace"]
            self.last = self.engine.up(self.program(stack), targets=targets, replace=replace,
                                       target_dependents="--target-dependents" in argv)
            self.last_kind = "update"
            return "\n".join(f"    {s.op} {s.urn}" for s in self.last)
        if verb == "refresh":
            targets = [argv[i + 1] for i, a in enumerate(argv) if a == "--target"]
            self.last = self.engine.refresh(targets)
            self.last_kind = "refresh"
            return "\n".join(f"    {s.op} {s.urn}" for s in self.last)
        if verb == "stack output":
            return "{}"
        if verb == "stack history":
            return json.dumps([{"version": len(self.engine.runs), "kind": self.last_kind,
                                "startTime": "2026-12-06T12:00:00.000Z", "endTime": "2026-12-06T12:00:01.000Z",
                                "message": "", "environment": {}, "config": {}, "result": "succeeded",
                                "resourceChanges": self.engine.summary(self.last)}])
        raise EngineError(f"unknown command {' '.join(argv)!r}")
