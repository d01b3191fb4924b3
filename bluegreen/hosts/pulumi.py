"""Every Pulumi Automation API call the tool makes: declare the live colour and apply only the
routing resource (after reading the live map into the state), targeted updates for a rebuild,
refresh, read outputs; and the CLI version check every one of them starts with.

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
from bluegreen.model.resources import CONTAINER_TYPE, ROUTING_RESOURCE_NAME, ROUTING_TYPE, bare_stack
from bluegreen.model.resources import routing_urn as _routing_urn
from bluegreen.model.sensitive import Sensitive, redact
from bluegreen.model.topology import COLORS, Topology

if TYPE_CHECKING:
    from pulumi.automation import PulumiCommand, Stack

log = logging.getLogger("bluegreen.pulumi")

ACTIVE_COLOR_KEY = "bluegreen:activeColor"

# What the program and the automation rely on from the engine, by the release that brought it
# (pulumi/pulumi CHANGELOG.md): an import whose inputs differ is imported and then updated in the
# same run instead of failing (3.174.0, "Overhaul of how the import option works"); `replace_with`
# (3.207.0); an import id that differs from the resource's id ("pve/134" vs "134") is recorded, so
# the next update does not import again and delete what it imported (3.252.0, pulumi/pulumi#23834,
# pkg/resource/deploy/step_generator.go: `ImportID: new.ImportID` in the state after an import).
CLI_NEEDS: tuple[tuple[tuple[int, int, int], str], ...] = (
    ((3, 174, 0), "import-then-update of adopted containers"),
    ((3, 207, 0), "`replace_with`, which ties each host's configuration to its container"),
    ((3, 252, 0), "the import-id fix: without it every `pulumi up` imports the adopted containers again "
                  "and schedules the old copies for deletion"),
)
MIN_CLI = CLI_NEEDS[-1][0]

MISSING_CLI = (
    "the Pulumi CLI is not installed (no `pulumi` on PATH). Install it with "
    "`curl -fsSL https://get.pulumi.com | sh` (see https://www.pulumi.com/docs/install/) and open a "
    "new shell, or switch without Pulumi: `bluegreen switch --direct` flips HAProxy directly and "
    "records the colour in the stack file, so a later `pulumi up` changes nothing."
)

# Environment variables whose values must never appear in a message.
_SECRET_ENV = re.compile(r"PASSPHRASE|TOKEN|SECRET|PASSWORD|KEY", re.I)

T = TypeVar("T")


def routing_urn(project: str, stack: str) -> str:
    """The live-colour routing resource's URN: top-level (no parent types), fixed name."""
    return _routing_urn(bare_stack(stack), project)


def cli_too_old(version: Any) -> str | None:
    """Why this CLI version cannot run the program safely (None: it can)."""
    if version is None:
        return ("cannot tell the Pulumi CLI's version (PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK hides it?); "
                f"this project needs {'.'.join(map(str, MIN_CLI))} or newer")
    found = (int(version.major), int(version.minor), int(version.patch))
    missing = [f"{'.'.join(map(str, v))} for {why}" for v, why in CLI_NEEDS if found < v]
    if not missing:
        return None
    return (f"the Pulumi CLI is {'.'.join(map(str, found))}, too old for this project: it needs "
            + "; ".join(missing) + ". Upgrade it (`curl -fsSL https://get.pulumi.com | sh`, or your package "
            "manager), or switch without Pulumi: `bluegreen switch --direct`")


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
    """The container's vmid: its `vmId` input or output, else (an imported container, whose state
    has no `vmId`: the importer sets only the id and the node, bpg/terraform-provider-proxmox
    container.go 1230-1246) the import id `node/vmid`, else the id, which is the vmid."""
    for props in (resource.get("inputs") or {}, resource.get("outputs") or {}):
        value = props.get("vmId")
        try:
            if value is not None and not isinstance(value, bool):
                return int(float(value))
        except (TypeError, ValueError):
            continue
    for value in (str(resource.get("importID") or "").rpartition("/")[2], str(resource.get("id") or "")):
        if value.isdigit():
            return int(value)
    return None


def find_container(deployment: Mapping[str, Any], vmid: int) -> Mapping[str, Any] | None:
    """The state of the container with this vmid in a `stack export` deployment (None: none)."""
    matches = [r for r in _containers(deployment) if _vmid_of(r) == vmid]
    if len(matches) > 1:
        raise PulumiError(f"the stack has {len(matches)} containers with vmid {vmid}: "
                          + ", ".join(str(r.get("urn")) for r in matches))
    return matches[0] if matches else None


def _containers(deployment: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [r for r in deployment.get("resources") or []
            if isinstance(r, Mapping) and r.get("type") == CONTAINER_TYPE
            and not r.get("delete")]  # `delete: true` marks an old copy pending deletion


def find_urn(deployment: Mapping[str, Any], type_: str, name: str) -> str | None:
    """The URN of the live resource of this type and name in the state (None: not there)."""
    for r in deployment.get("resources") or []:
        if (isinstance(r, Mapping) and r.get("type") == type_ and not r.get("delete")
                and str(r.get("urn", "")).endswith(f"::{name}")):
            return str(r["urn"])
    return None


def find_container_urn(deployment: Mapping[str, Any], vmid: int, *, stack: str = "") -> str:
    """The URN of the container with this vmid in a `stack export` deployment."""
    found = find_container(deployment, vmid)
    if found is None:
        where = f"stack {stack!r}" if stack else "the stack"
        known = sorted({v for r in _containers(deployment) if (v := _vmid_of(r)) is not None})
        listed = ", ".join(map(str, known)) or "none"
        raise PulumiError(f"{where} has no container with vmid {vmid} (containers it manages: {listed}); "
                          f"run `pulumi up` so Pulumi creates or adopts it first")
    return str(found.get("urn"))


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
    """One stack of the project in `project_dir`, driven through the Automation API.

    `lock_token`: the token of the project lock the caller holds; every CLI run gets it
    (`LOCK_TOKEN_ENV`), so the program knows the lock is its caller's and runs.
    """

    def __init__(self, project_dir: str | Path, stack: str, *, pulumi_command: PulumiCommand | None = None,
                 env: Mapping[str, str] | None = None, secrets: Sequence[Sensitive | str] = (),
                 lock_token: str | None = None) -> None:
        self.project_dir = str(Path(project_dir).resolve())
        self.stack_name = stack
        self.project = read_project_name(self.project_dir)
        self._command = pulumi_command
        self._env = dict(env or {})
        self._lock_token = lock_token
        # The CLI inherits this process's environment too (an exported PULUMI_CONFIG_PASSPHRASE).
        inherited = {k: v for k, v in os.environ.items() if len(v) >= 8}
        self._secrets: list[Sensitive | str] = [
            *secrets, *(v for k, v in {**inherited, **self._env}.items() if _SECRET_ENV.search(k)),
            *([lock_token] if lock_token else [])]
        self._stack: Stack | None = None

    @property
    def routing_urn(self) -> str:
        return routing_urn(self.project, self.stack_name)

    # -- operations ---------------------------------------------------------------------

    def switch_to(self, color: str, *, on_output: Callable[[str], Any] | None = None,
                  message: str | None = None) -> UpdateOutcome:
        """Declare `color` live and apply only the routing resource (and what depends on it).

        The routing resource is refreshed first: its provider's diff compares the state's recorded
        outputs with the new inputs (pulumi/pulumi `sdk/python/lib/pulumi/dynamic/__main__.py` 102-103,
        `Diff` passes `request.olds`, the recorded outputs, to `diff`), so after a flip made outside
        Pulumi (`--direct`, `--emergency`, an automatic switch back) a state that still records the
        target colour would make this update a no-op and the switch fail forever. The refresh reads
        HAProxy's live map into the state (`LiveColorRoutingProvider.observe`), and the update then
        moves traffic if, and only if, HAProxy does not already route to `color`.
        """
        if color not in COLORS:
            raise ConfigError(f"cannot switch to {color!r} (expected one of {', '.join(COLORS)})")
        from pulumi.automation import ConfigValue

        # The routing provider refuses to move traffic in any other run (providers.refuse_flip);
        # the CLI it runs under inherits this process's environment.
        from bluegreen.hosts.hostconfig import SWITCH_ENV

        stack = self._open()
        with self._environment({SWITCH_ENV: color}):
            if find_urn(self.export(), ROUTING_TYPE, ROUTING_RESOURCE_NAME) is not None:
                self.refresh(targets=[self.routing_urn], on_output=on_output)
            self._call(f"set {ACTIVE_COLOR_KEY}",
                       lambda: stack.set_config(ACTIVE_COLOR_KEY, ConfigValue(value=color, secret=False)))
            return self.up(f"switch to {color}", targets=[self.routing_urn], target_dependents=True,
                           message=message or f"bluegreen: switch the live colour to {color}",
                           on_output=on_output)

    def export(self) -> Mapping[str, Any]:
        """The stack's state (`pulumi stack export --show-secrets`): its `deployment`."""
        stack = self._open()
        exported = self._call("export the stack state", stack.export_stack)
        return exported.deployment or {}

    def recreate_estate(self, replace_vmids: Sequence[int], *,
                        on_output: Callable[[str], Any] | None = None) -> UpdateOutcome:
        """After the node lost containers: `pulumi refresh` (what is gone leaves the state), then
        one `pulumi up` of the whole stack, replacing the containers of `replace_vmids` that the
        state still holds; the program recreates the rest and configures every host."""
        self.refresh(on_output=on_output)
        deployment = self.export()
        urns = []
        for vmid in replace_vmids:
            found = find_container(deployment, vmid)
            if found is None:
                log.info("container %d is no longer in the state: it is created, not replaced", vmid)
            else:
                urns.append(str(found.get("urn")))
        stack = self._open()
        with self._project_file_guard(), self._environment({}):
            result = self._call("recreate the estate", lambda: stack.up(
                replace=urns or None, message="bluegreen: rebuild the estate",
                on_output=self._redacting(on_output), color="never"))
        return UpdateOutcome(changes=_changes(result.summary), outputs=_plain_outputs(result.outputs))

    def up(self, doing: str, *, targets: Sequence[str], replace: Sequence[str] = (), message: str,
           env: Mapping[str, str] | None = None, target_dependents: bool = False,
           on_output: Callable[[str], Any] | None = None) -> UpdateOutcome:
        """`pulumi up --target ...` of exactly `targets` (and `--replace` of `replace`)."""
        stack = self._open()
        with self._project_file_guard(), self._environment(env or {}):
            result = self._call(doing, lambda: stack.up(
                target=list(targets), target_dependents=target_dependents or None,
                replace=list(replace) or None, message=message, on_output=self._redacting(on_output),
                color="never"))
        return UpdateOutcome(changes=_changes(result.summary), outputs=_plain_outputs(result.outputs))

    def refresh(self, *, targets: Sequence[str] = (), on_output: Callable[[str], Any] | None = None) -> dict[str, int]:
        """Read resources (all, or `targets`) back from the real world into the state; the changes."""
        stack = self._open()
        doing = "refresh " + (", ".join(t.rsplit("::", 1)[-1] for t in targets) if targets else "the stack")
        with self._project_file_guard(), self._environment({}):
            result = self._call(doing, lambda: stack.refresh(
                target=list(targets) or None, on_output=self._redacting(on_output), color="never"))
        return _changes(result.summary)

    def outputs(self) -> dict[str, Any]:
        stack = self._open()
        return _plain_outputs(self._call("read the stack outputs", stack.outputs))

    # -- plumbing -----------------------------------------------------------------------

    def _open(self) -> Stack:
        if self._stack is not None:
            return self._stack
        from pulumi import automation as auto

        try:
            # Our own check below names what an old CLI lacks; the SDK's would only name a number.
            command = self._command or auto.PulumiCommand(skip_version_check=True)
        except FileNotFoundError:
            raise PulumiError(MISSING_CLI) from None
        except auto.InvalidVersionError as exc:
            raise PulumiError(f"the installed Pulumi CLI does not fit this SDK: {exc}") from None
        problem = cli_too_old(getattr(command, "version", None))
        if problem:
            raise PulumiError(problem)
        # No project_settings/stack_settings on purpose: see the module docstring.
        opts = auto.LocalWorkspaceOptions(env_vars=self._env or None, pulumi_command=command)
        self._stack = self._call(f"select stack {self.stack_name!r}", lambda: auto.select_stack(
            self.stack_name, work_dir=self.project_dir, opts=opts))
        return self._stack

    @contextlib.contextmanager
    def _environment(self, values: Mapping[str, str]) -> Iterator[None]:
        """`values` (and the lock token) in this process's environment for the block: the CLI, and
        the program and providers it runs, inherit it (automation/_cmd.py: `{**os.environ, ...}`)."""
        from bluegreen.hosts.hostconfig import LOCK_TOKEN_ENV

        wanted = dict(values)
        if self._lock_token:
            wanted[LOCK_TOKEN_ENV] = self._lock_token
        previous = {k: os.environ.get(k) for k in wanted}
        os.environ.update(wanted)
        try:
            yield
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

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
                f"`pulumi cancel --stack {self.stack_name}` clears it (both Pulumi Cloud and a self-managed "
                f"backend). `bluegreen switch --direct` works meanwhile.") from None
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
