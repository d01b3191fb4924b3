"""Every Pulumi Automation API call the tool makes: declare the live colour and apply only the
routing resource, replace one container, refresh, read outputs.

The workspace is the project directory as it is: no project or stack settings are handed to the
Automation API, because `LocalWorkspace` would rewrite Pulumi.yaml from its `ProjectSettings`,
which have no `stackConfigDir`, and so move every stack's config out from under the CLI. As a
second line of defence, each operation restores Pulumi.yaml if anything changed it anyway.
`pulumi` is imported lazily: the CLI's other commands should not pay for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from bluegreen.model.errors import ConfigError, PulumiError
from bluegreen.model.sensitive import Sensitive, redact
from bluegreen.model.topology import COLORS, Topology

if TYPE_CHECKING:
    from pulumi.automation import PulumiCommand, Stack

log = logging.getLogger("bluegreen.pulumi")

ACTIVE_COLOR_KEY = "bluegreen:activeColor"
ROUTING_RESOURCE_NAME = "live-color-routing"
# `class LiveColorRouting(pulumi.dynamic.Resource, module="bluegreen", name="LiveColorRouting")`:
# dynamic.Resource.__init_subclass__ names it `dynamic/<module>:<name>` and registers it under the
# `pulumi-python:` package.
ROUTING_TYPE = "pulumi-python:dynamic/bluegreen:LiveColorRouting"
CONTAINER_TYPE = "proxmoxve:index/containerLegacy:ContainerLegacy"

MISSING_CLI = (
    "the Pulumi CLI is not installed (no `pulumi` on PATH). Install it with "
    "`curl -fsSL https://get.pulumi.com | sh` (see https://www.pulumi.com/docs/install/) and open a "
    "new shell, or switch without Pulumi: `bluegreen switch --direct` flips HAProxy directly and "
    "records the colour in the stack file, so a later `pulumi up` changes nothing."
)

# Environment variables whose values must never appear in a message.
_SECRET_ENV = re.compile(r"PASSPHRASE|TOKEN|SECRET|PASSWORD|KEY", re.I)

T = TypeVar("T")


def _stack_part(stack: str) -> str:
    """URNs carry the bare stack name, also for `org/project/stack` names."""
    return stack.rsplit("/", 1)[-1]


def routing_urn(project: str, stack: str) -> str:
    """The live-colour routing resource's URN: top-level (no parent types), fixed name."""
    return f"urn:pulumi:{_stack_part(stack)}::{project}::{ROUTING_TYPE}::{ROUTING_RESOURCE_NAME}"


def read_project_name(project_dir: str | Path) -> str:
    """The `name:` of Pulumi.yaml, read without going through the Automation API."""
    path = Path(project_dir) / "Pulumi.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: {project_dir} is not a Pulumi project") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the project name: {exc}") from None
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: has no project `name`")
    return name


def _vmid_of(resource: Mapping[str, Any]) -> int | None:
    for props in (resource.get("inputs") or {}, resource.get("outputs") or {}):
        value = props.get("vmId")
        try:
            return int(float(value)) if value is not None and not isinstance(value, bool) else None
        except (TypeError, ValueError):
            continue
    return None


def find_container_urn(deployment: Mapping[str, Any], vmid: int, *, stack: str = "") -> str:
    """The URN of the container with this vmid in a `stack export` deployment."""
    containers = [r for r in deployment.get("resources") or []
                  if isinstance(r, Mapping) and r.get("type") == CONTAINER_TYPE
                  and not r.get("delete")]  # `delete: true` marks an old copy pending deletion
    matches = [str(r.get("urn")) for r in containers if _vmid_of(r) == vmid]
    where = f"stack {stack!r}" if stack else "the stack"
    if not matches:
        known = sorted({v for r in containers if (v := _vmid_of(r)) is not None})
        listed = ", ".join(map(str, known)) or "none"
        raise PulumiError(f"{where} has no container with vmid {vmid} (containers it manages: {listed}); "
                          f"run `pulumi up` so Pulumi creates or adopts it first")
    if len(matches) > 1:
        raise PulumiError(f"{where} has {len(matches)} containers with vmid {vmid}: {', '.join(matches)}")
    return matches[0]


def _cli_message(text: str) -> str:
    """What the CLI said: its `error:` lines if any, else the tail of stderr (or stdout)."""
    stdout, _, stderr = text.partition("\n stderr: ")
    body = stderr if stderr.strip() else stdout.partition("\n stdout: ")[2] or text
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error:")]
    chosen = errors or lines[-12:]
    return " ".join(chosen)[-1500:] or "no output"


@dataclass(frozen=True)
class UpdateOutcome:
    changes: dict[str, int] = field(default_factory=dict)  # e.g. {"update": 1, "same": 14}
    outputs: dict[str, Any] = field(default_factory=dict)  # secret outputs are Sensitive


def provider_tls_env(t: Topology) -> dict[str, str]:
    """SSL_CERT_FILE for the `pulumi` CLI the seam runs, so that the Proxmox provider (which has no
    pin or CA option of its own) verifies the node against its pinned certificate or caFile; an
    SSL_CERT_FILE the person exported is left alone."""
    from bluegreen.model.tlspin import provider_trust_bundle

    bundle = provider_trust_bundle(t)
    if not bundle or os.environ.get("SSL_CERT_FILE"):
        return {}
    return {"SSL_CERT_FILE": bundle}


class PulumiSeam:
    """One stack of the project in `project_dir`, driven through the Automation API."""

    def __init__(self, project_dir: str | Path, stack: str, *, pulumi_command: PulumiCommand | None = None,
                 env: Mapping[str, str] | None = None, secrets: Sequence[Sensitive | str] = ()) -> None:
        self.project_dir = str(Path(project_dir).resolve())
        self.stack_name = stack
        self.project = read_project_name(self.project_dir)
        self._command = pulumi_command
        self._env = dict(env or {})
        # The CLI inherits this process's environment too (an exported PULUMI_CONFIG_PASSPHRASE).
        inherited = {k: v for k, v in os.environ.items() if len(v) >= 8}
        self._secrets: list[Sensitive | str] = [
            *secrets, *(v for k, v in {**inherited, **self._env}.items() if _SECRET_ENV.search(k))]
        self._stack: Stack | None = None

    @property
    def routing_urn(self) -> str:
        return routing_urn(self.project, self.stack_name)

    # -- operations ---------------------------------------------------------------------

    def switch_to(self, color: str, *, on_output: Callable[[str], Any] | None = None,
                  message: str | None = None) -> UpdateOutcome:
        """Declare `color` live and apply only the routing resource (and what depends on it)."""
        if color not in COLORS:
            raise ConfigError(f"cannot switch to {color!r} (expected one of {', '.join(COLORS)})")
        from pulumi.automation import ConfigValue

        stack = self._open()
        self._call(f"set {ACTIVE_COLOR_KEY}",
                   lambda: stack.set_config(ACTIVE_COLOR_KEY, ConfigValue(value=color, secret=False)))
        # The routing provider refuses to move traffic in any other run (providers.refuse_flip);
        # the CLI it runs under inherits this process's environment.
        from bluegreen.hosts.hostconfig import SWITCH_ENV

        previous = os.environ.get(SWITCH_ENV)
        os.environ[SWITCH_ENV] = color
        try:
            return self._up(f"switch to {color}", target=self.routing_urn, replace=False,
                            message=message or f"bluegreen: switch the live colour to {color}",
                            on_output=on_output)
        finally:
            if previous is None:
                os.environ.pop(SWITCH_ENV, None)
            else:
                os.environ[SWITCH_ENV] = previous

    def replace_container(self, vmid: int, *, on_output: Callable[[str], Any] | None = None) -> UpdateOutcome:
        """Recreate one container (and whatever depends on it) from its declaration."""
        stack = self._open()
        exported = self._call("export the stack state", stack.export_stack)
        urn = find_container_urn(exported.deployment or {}, vmid, stack=self.stack_name)
        log.info("replacing %s", urn)
        return self._up(f"replace container {vmid}", target=urn, replace=True,
                        message=f"bluegreen: replace container {vmid}", on_output=on_output)

    def refresh(self, *, on_output: Callable[[str], Any] | None = None) -> dict[str, int]:
        """Read every resource back from the real world into the state; returns the changes."""
        stack = self._open()
        with self._project_file_guard():
            result = self._call("refresh", lambda: stack.refresh(
                on_output=self._redacting(on_output), color="never"))
        return _changes(result.summary)

    def outputs(self) -> dict[str, Any]:
        stack = self._open()
        return _plain_outputs(self._call("read the stack outputs", stack.outputs))

    # -- plumbing -----------------------------------------------------------------------

    def _up(self, doing: str, *, target: str, replace: bool, message: str,
            on_output: Callable[[str], Any] | None) -> UpdateOutcome:
        stack = self._open()
        with self._project_file_guard():
            result = self._call(doing, lambda: stack.up(
                target=[target], target_dependents=True, replace=[target] if replace else None,
                message=message, on_output=self._redacting(on_output), color="never"))
        return UpdateOutcome(changes=_changes(result.summary),
                             outputs=_plain_outputs(result.outputs))

    def _open(self) -> Stack:
        if self._stack is not None:
            return self._stack
        from pulumi import automation as auto

        try:
            command = self._command or auto.PulumiCommand()
        except FileNotFoundError:
            raise PulumiError(MISSING_CLI) from None
        except auto.InvalidVersionError as exc:
            raise PulumiError(f"the installed Pulumi CLI does not fit this SDK: {exc}") from None
        # No project_settings/stack_settings on purpose: see the module docstring.
        opts = auto.LocalWorkspaceOptions(env_vars=self._env or None, pulumi_command=command)
        self._stack = self._call(f"select stack {self.stack_name!r}", lambda: auto.select_stack(
            self.stack_name, work_dir=self.project_dir, opts=opts))
        return self._stack

    def _call(self, doing: str, action: Callable[[], T]) -> T:
        from pulumi.automation import errors as perr

        try:
            return action()
        except FileNotFoundError:
            raise PulumiError(MISSING_CLI) from None
        except perr.ConcurrentUpdateError as exc:
            raise PulumiError(
                f"stack {self.stack_name!r}: {doing} refused: another update holds the stack's lock "
                f"({self._clean(_cli_message(str(exc)))}). Wait for it to finish; if it crashed, "
                f"`pulumi cancel` (Pulumi Cloud) or `pulumi state unlock` (self-managed backend) clears "
                f"it. `bluegreen switch --direct` works meanwhile.") from None
        except perr.StackNotFoundError as exc:
            raise PulumiError(
                f"stack {self.stack_name!r} does not exist in this Pulumi backend "
                f"({self._clean(_cli_message(str(exc)))}); log in to the right backend or create it "
                f"with `pulumi stack init {self.stack_name}`") from None
        except perr.CommandError as exc:
            raise PulumiError(f"stack {self.stack_name!r}: {doing} failed: "
                              f"{self._clean(_cli_message(str(exc)))}") from None
        except (ValueError, KeyError) as exc:  # JSON the SDK could not read: a CLI it does not know
            raise PulumiError(f"stack {self.stack_name!r}: {doing}: unexpected answer from the Pulumi "
                              f"CLI ({type(exc).__name__}: {self._clean(str(exc))[:300]})") from None

    def _clean(self, text: str) -> str:
        return redact(text, self._secrets)

    def _redacting(self, on_output: Callable[[str], Any] | None) -> Callable[[str], Any] | None:
        if on_output is None:
            return None
        return lambda line: on_output(self._clean(line))

    @contextlib.contextmanager
    def _project_file_guard(self) -> Iterator[None]:
        path = Path(self.project_dir) / "Pulumi.yaml"
        before = path.read_bytes()
        try:
            yield
        finally:
            if path.read_bytes() != before:
                path.write_bytes(before)
                log.warning("restored %s: the Automation API had rewritten it", path)


def _changes(summary: Any) -> dict[str, int]:
    changes = getattr(summary, "resource_changes", None) or {}
    return {str(getattr(op, "value", op)): int(count) for op, count in changes.items()}


def _plain_outputs(outputs: Mapping[str, Any]) -> dict[str, Any]:
    plain: dict[str, Any] = {}
    for key, output in outputs.items():
        value = getattr(output, "value", output)
        if getattr(output, "secret", False):
            plain[key] = Sensitive(value if isinstance(value, str) else repr(value))
        else:
            plain[key] = value
    return plain
