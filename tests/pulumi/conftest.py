"""Run the real `__main__.py` against Pulumi's mock engine and record everything it registers.

The mocks answer every engine call, so nothing here reaches a network: no Proxmox, no Pulumi
service. What the tests see is what the Pulumi engine would receive: input properties (with
secrets in their envelope), resource options (import ids, ignore_changes, protect, dependencies,
provider references) and the outputs each component registers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import runpy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime import rpc, settings
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs

PROJECT_DIR = Path(__file__).resolve().parents[2]
MAIN = PROJECT_DIR / "__main__.py"
PROJECT = "jw-attendant-estate"

CONTAINER = "proxmoxve:index/containerLegacy:ContainerLegacy"
DOWNLOAD = "proxmoxve:download/file:File"
PROVIDER = "pulumi:providers:proxmoxve"

# Pulumi's marker for a secret value in serialized properties.
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
SIG_KEY = "4dabf18193072939515e22adb298388d"


@dataclass
class Registration:
    """One RegisterResource call as the engine would see it."""

    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    inputs: dict[str, Any]
    provider: str
    import_id: str
    ignore_changes: list[str]
    protect: bool
    retain_on_delete: bool
    dependencies: list[str]
    id: str = ""
    delete_before_replace: bool = False
    replace_with: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    additional_secret_outputs: list[str] = field(default_factory=list)


def unwrap_secret(value: Any) -> tuple[bool, Any]:
    """(is it a secret?, its value) for a property as the mock engine received it."""
    if isinstance(value, Mapping) and value.get(SIG_KEY) == SECRET_SIG:
        return True, value.get("value")
    return False, value


def _type_of(urn: str) -> str:
    return urn.split("::")[2].split("$")[-1]


class RecordingMocks(pulumi.runtime.Mocks):
    """Answers like the provider would: ids as PVE forms them, inputs echoed as outputs."""

    def __init__(self) -> None:
        self.resources: list[MockResourceArgs] = []

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        self.resources.append(args)
        if not args.custom:
            return "", {}
        if args.typ == CONTAINER:
            return str(int(args.inputs["vmId"])), dict(args.inputs)
        if args.typ == DOWNLOAD:
            i = args.inputs
            return f"{i['datastoreId']}:{i['contentType']}/{i['fileName']}", dict(args.inputs)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        raise AssertionError(f"the program made an unexpected provider call: {args.token}")


class RecordingMonitor(MockMonitor):
    """Keeps the resource options of each registration, which `Mocks.new_resource` never sees."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = []
        self.component_outputs: dict[str, dict[str, Any]] = {}

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.registrations.append(Registration(
                type=request.type, name=request.name, urn=response.urn, parent=request.parent,
                custom=bool(request.custom), inputs=rpc.deserialize_properties(request.object),
                provider=request.provider, import_id=request.importId,
                ignore_changes=list(request.ignoreChanges), protect=bool(request.protect),
                retain_on_delete=bool(request.retainOnDelete),
                dependencies=list(request.dependencies), id=response.id,
                delete_before_replace=bool(request.deleteBeforeReplace),
                replace_with=list(request.replace_with),
                additional_secret_outputs=list(request.additionalSecretOutputs)))
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        self.component_outputs[request.urn] = rpc.deserialize_properties(request.outputs)
        return super().RegisterResourceOutputs(request)


@dataclass
class ProgramRun:
    stack: str
    registrations: list[Registration]
    resource_args: list[MockResourceArgs]
    exports: dict[str, Any]
    error: pulumi.RunError | None

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]

    def containers(self) -> dict[int, Registration]:
        return {int(r.inputs["vmId"]): r for r in self.of_type(CONTAINER)}

    def by_urn(self, urn: str) -> Registration:
        # The mock monitor names children by their parent's last type only, while dependencies
        # carry the SDK's full type chain: match on the resource's own type and name.
        wanted = (_type_of(urn), urn.rsplit("::", 1)[-1])
        return next(r for r in self.registrations if (r.type, r.name) == wanted)

    def parent_of(self, reg: Registration) -> Registration:
        return self.by_urn(reg.parent)

    def dependency_names(self, reg: Registration) -> set[tuple[str, str]]:
        return {(_type_of(d), d.rsplit("::", 1)[-1]) for d in reg.dependencies}


TEST_DB_PASSWORD = "db-pass-for-mock-tests-only"


# What `bluegreen adopt` writes into the prod stack from the estate (and the one value the operator
# names): the shipped file leaves them out, and the program refuses to run without them.
PROD_FILLED = {"bluegreen:app": {"repo": "git@example.invalid:org/app.git", "deployUser": "root"},
               "bluegreen:database": {"user": "jw_reader"}}


def stack_config(stack: str, *, filled: bool = True) -> dict[str, Any]:
    """The `config:` mapping of `stacks/Pulumi.<stack>.yaml`, as parsed YAML; for prod with the
    values adopt fills in, unless `filled=False`."""
    data = yaml.safe_load((PROJECT_DIR / "stacks" / f"Pulumi.{stack}.yaml").read_text())
    config = dict(data["config"])
    if stack == "prod" and filled:
        for key, extra in PROD_FILLED.items():
            config[key] = {**config[key], **extra}
    return config


def as_engine_config(config: Mapping[str, Any]) -> dict[str, str]:
    """What the CLI hands the program: strings as they are, everything else as JSON text."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


DECLARED = object()  # `live=DECLARED`: HAProxy serves the colour the stack declares
REAL = object()  # `live=REAL`: the program reads the real load balancer (integration tests only)


class PulumiHarness:
    """Runs `__main__.py` under fresh mocks for a given stack and config.

    The program reads the live colour and the project lock from the load balancer before it
    registers anything (components/live.py); here that reader is replaced, so nothing connects:
    `live` is what HAProxy "serves" (None: unreadable), `lock` the lock it "finds".
    """

    def run(self, stack: str, config: Mapping[str, Any], *, secret_keys: tuple[str, ...] = (),
            live: Any = DECLARED, lock: Any = None) -> ProgramRun:
        from components import live as live_estate

        def reader(t: Any) -> Any:
            serving = t.active_color if live is DECLARED else live
            return live_estate.LiveEstate(serving, "the test harness" if serving else "unreadable (test harness)",
                                          lock)

        live_estate.READER = live_estate.read_live_estate if live is REAL else reader
        # Each run is a new program: a new root stack resource, new config, a new monitor.
        settings.ROOT.set(None)
        mocks = RecordingMocks()
        monitor = RecordingMonitor(mocks)
        pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
        # The database password is required; tests that are not about it get one.
        if "bluegreen:databasePassword" not in config and not config.get("__no_db_password__"):
            config = {**config, "bluegreen:databasePassword": TEST_DB_PASSWORD}
            secret_keys = (*secret_keys, "bluegreen:databasePassword")
        # Likewise the secret the lab stack's app.env references (shared/.env).
        if "bluegreen:nextServerActionsKey" not in config:
            config = {**config, "bluegreen:nextServerActionsKey": "actions-key-for-mock-tests"}
            secret_keys = (*secret_keys, "bluegreen:nextServerActionsKey")
        config = {k: v for k, v in config.items() if k != "__no_db_password__"}
        pulumi.runtime.set_all_config(as_engine_config(config), list(secret_keys))
        root = settings.get_root_resource()
        assert isinstance(root, pulumi.runtime.stack.Stack)
        exports: dict[str, Any] = {}

        @pulumi.runtime.test
        def program() -> pulumi.Output[Any]:
            runpy.run_path(str(MAIN), run_name="__main__")
            return pulumi.Output.from_input(root.outputs).apply(exports.update)

        error: pulumi.RunError | None = None
        try:
            program()
        except pulumi.RunError as err:
            error = err
        for reg in monitor.registrations:
            reg.outputs = monitor.component_outputs.get(reg.urn, {})
        return ProgramRun(stack=stack, registrations=monitor.registrations, resource_args=mocks.resources,
                          exports=exports, error=error)


def _no_connection(t: Any) -> Any:
    raise AssertionError(f"the program tried to read the live estate of stack {t.stack} outside the harness")


@contextlib.contextmanager
def pulumi_session() -> Iterator[PulumiHarness]:
    """A harness, and afterwards nothing of it left in the process."""
    from components import live as live_estate

    live_estate.READER = _no_connection
    # Pulumi's mocks need a current event loop; any earlier asyncio.run() in this process (the
    # MCP tests use the SDK's client) leaves the main thread without one.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield PulumiHarness()
    finally:
        asyncio.set_event_loop(None)
        loop.close()
        # Config and the root stack are process-wide: leave nothing for the next test.
        pulumi.runtime.set_all_config({}, [])
        settings.ROOT.set(None)
        live_estate.READER = live_estate.read_live_estate


@pytest.fixture(autouse=True)
def pulumi_harness() -> Iterator[PulumiHarness]:
    with pulumi_session() as harness:
        yield harness


@pytest.fixture
def lab_key(tmp_path: Path) -> str:
    """A public key file standing in for the lab's generated one (`file:` entries are read)."""
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBfakeLabKeyForTestsOnly00000000000000000 lab@test"
    path = tmp_path / "id_ed25519.pub"
    path.write_text(key + "\n")
    return str(path)


@pytest.fixture(autouse=True)
def _tracked_stacks(tracked_stacks_only: None) -> None:
    """The program runs on the repository's stacks as tracked (see `tracked_stacks_only`)."""
