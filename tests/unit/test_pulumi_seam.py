"""The Automation API seam, driven through Pulumi's own `PulumiCommand` seam.

No Pulumi CLI exists on this machine, so `FakePulumi` stands in for the binary: it records the exact
argv the Automation API asks for and answers the way pulumi 3.272 does. Everything above it (Stack,
LocalWorkspace, error classification) is Pulumi's real code.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pulumi
import pulumi.dynamic
import pytest
from pulumi.automation import CommandResult, PulumiCommand
from pulumi.automation.errors import create_command_error
from pulumi.resource import create_urn
from pulumi.runtime import settings
from semver import VersionInfo

from bluegreen.hosts.pulumi import (
    CONTAINER_TYPE,
    MISSING_CLI,
    ROUTING_RESOURCE_NAME,
    ROUTING_TYPE,
    PulumiSeam,
    cli_too_old,
    find_container_urn,
    routing_urn,
)
from bluegreen.model.errors import ConfigError, PulumiError
from bluegreen.model.sensitive import Sensitive

REPO = Path(__file__).resolve().parents[2]
EXPORT = REPO / "tests" / "fixtures" / "pulumi" / "stack-export.lab.json"
PROJECT = "jw-attendant-estate"
URN_PREFIX = f"urn:pulumi:lab::{PROJECT}::"
ROUTING_URN = f"{URN_PREFIX}{ROUTING_TYPE}::{ROUTING_RESOURCE_NAME}"
GREEN_URN = (f"{URN_PREFIX}bluegreen:estate:AppHost$bluegreen:proxmox:Container$"
             f"proxmoxve:index/containerLegacy:ContainerLegacy::jw-green")
PASSPHRASE = "correct-horse-battery-staple"
API_TOKEN = "root@pam!deploy=8d1f6c2e-3b4a-4e5f-9a7b-1c2d3e4f5a6b"  # inside the export fixture
ENV = {"PULUMI_CONFIG_PASSPHRASE": PASSPHRASE, "PULUMI_BACKEND_URL": "file:///var/lib/pulumi-state"}

ROUTING_LINE = (" ~  pulumi-python:dynamic/bluegreen:LiveColorRouting live-color-routing {} "
                "[diff: ~live_color,map_text]")
UP_STDOUT = f"""Updating (lab):

    pulumi:pulumi:Stack jw-attendant-estate-lab running
{ROUTING_LINE.format("updating (0s)")}
{ROUTING_LINE.format("updated (0.41s)")}
    pulumi:pulumi:Stack jw-attendant-estate-lab

Outputs:
    activeColor: "green"

Resources:
    ~ 1 updated
    15 unchanged

Duration: 3s"""

DIY_LOCKED = ("error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) "
              "to end or delete the lock file with `pulumi cancel`.\n"
              "  file:///var/lib/pulumi-state/.pulumi/locks/organization/jw-attendant-estate/lab/"
              "7a1c2b3d.json: created by root@ops-laptop (pid 4242) at 2025-09-15T12:00:00Z")


class FakePulumi(PulumiCommand):
    """Answers CLI invocations like the real binary; records each argv exactly."""

    def __init__(self, *, export_text: str | None = None,
                 failures: Mapping[str, tuple[int, str]] | None = None,
                 on_run: Callable[[list[str]], None] | None = None) -> None:
        # Not calling super().__init__: it runs `pulumi version`, and there is no pulumi here.
        self.command = "pulumi"
        self.version = VersionInfo.parse("3.272.0")
        self.calls: list[list[str]] = []
        self.cwds: list[str] = []
        self.envs: list[dict[str, str]] = []
        self.export_text = export_text if export_text is not None else EXPORT.read_text()
        self.failures = dict(failures or {})
        self.on_run = on_run
        self.active_color = "blue"
        self.last_message = ""

    def run(self, args: list[str], cwd: str, additional_env: Mapping[str, str],
            on_output: Callable[[str], Any] | None = None,
            on_error: Callable[[str], Any] | None = None) -> CommandResult:
        argv = list(args)
        # The flag PulumiCommand.run itself puts in front before it executes the binary.
        separator = argv.index("--") if "--" in argv else len(argv)
        if "--non-interactive" not in argv[:separator]:
            argv.insert(0, "--non-interactive")
        self.calls.append(argv)
        self.cwds.append(cwd)
        self.envs.append(dict(additional_env))
        if self.on_run is not None:
            self.on_run(argv)
        words = [a for a in argv if a != "--non-interactive"]
        verb = " ".join(words[:2]) if words[0] in ("stack", "config") else words[0]
        stdout, stderr, code = self._answer(verb, argv)
        if verb in self.failures:
            code, stderr = self.failures[verb]
            stdout = ""
        for line in stdout.splitlines():
            if on_output is not None:
                on_output(line)
        result = CommandResult(stdout=stdout, stderr=stderr, code=code)
        if code != 0:
            raise create_command_error(result)
        return result

    def _answer(self, verb: str, argv: list[str]) -> tuple[str, str, int]:
        if verb in ("stack select",):
            return "", "", 0
        if verb == "config set":
            self.active_color = argv[argv.index("--") + 1]
            return "", "", 0
        if verb == "up":
            self.last_message = argv[argv.index("--message") + 1]
            return UP_STDOUT.replace('"green"', json.dumps(self.active_color)), "", 0
        if verb == "refresh":
            self.last_message = "refresh"
            return "Refreshing (lab):\n\nResources:\n    16 unchanged\n\nDuration: 2s", "", 0
        if verb == "cancel":
            return "", "", 0
        if verb == "stack output":
            password = "s3cret-db-pass" if "--show-secrets" in argv else "[secret]"
            return json.dumps({"activeColor": self.active_color, "dbPassword": password,
                               "publicUrl": "http://127.0.3.26:80"}), "", 0
        if verb == "stack history":
            changes = {"same": 16} if self.last_message == "refresh" else {"update": 1, "same": 15}
            return json.dumps([{
                "version": 14, "kind": "refresh" if self.last_message == "refresh" else "update",
                "startTime": "2025-09-15T12:00:00.000Z", "endTime": "2025-09-15T12:00:03.000Z",
                "message": self.last_message, "environment": {"exec.kind": "auto.local"}, "config": {},
                "result": "succeeded", "resourceChanges": changes}]), "", 0
        if verb == "stack export":
            return self.export_text, "", 0
        return "", f"error: unknown command {' '.join(argv)!r}", 1


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copy(REPO / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    (tmp_path / "stacks").mkdir()
    shutil.copy(REPO / "stacks" / "Pulumi.lab.yaml", tmp_path / "stacks" / "Pulumi.lab.yaml")
    return tmp_path


def seam(project: Path, fake: FakePulumi) -> PulumiSeam:
    return PulumiSeam(project, "lab", pulumi_command=fake, env=ENV)


def tail_calls(fake: FakePulumi) -> list[list[str]]:
    """What `Stack.up`/`refresh` run after the operation itself to build their result."""
    return [
        ["--non-interactive", "stack", "output", "--json", "--stack", "lab"],
        ["--non-interactive", "stack", "output", "--json", "--show-secrets", "--stack", "lab"],
        ["--non-interactive", "stack", "history", "--json", "--show-secrets", "--page-size", "1",
         "--page", "1", "--stack", "lab"],
    ]


# --------------------------------------------------------------------------- URNs


class _NoopProvider(pulumi.dynamic.ResourceProvider):
    def create(self, props: Any) -> pulumi.dynamic.CreateResult:
        return pulumi.dynamic.CreateResult("routing", props)


class LiveColorRouting(pulumi.dynamic.Resource, module="bluegreen", name="LiveColorRouting"):
    """Declared exactly as components/hostconfig.py declares it."""

    def __init__(self, name: str) -> None:
        super().__init__(_NoopProvider(), name, {"live_color": "blue"})


class _Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


@pytest.fixture
def pulumi_mocks() -> Iterator[None]:
    # An earlier asyncio.run() (any test) leaves the main thread without a current loop, and the
    # Pulumi runtime needs one: a fresh one, closed afterwards (a loop left for the garbage
    # collector complains at interpreter exit, after pytest's summary).
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    settings.ROOT.set(None)
    pulumi.runtime.set_mocks(_Mocks(), project=PROJECT, stack="lab", preview=False)
    try:
        yield
    finally:
        # The root stack and config are process-wide: leave nothing for the next test.
        pulumi.runtime.set_all_config({}, [])
        settings.ROOT.set(None)
        asyncio.set_event_loop(None)
        loop.close()


@pulumi.runtime.test
def test_the_routing_urn_is_what_pulumi_gives_the_dynamic_resource(pulumi_mocks: None) -> pulumi.Output[None]:
    resource = LiveColorRouting(ROUTING_RESOURCE_NAME)

    def registered_type(mock_urn: str) -> str:
        # The mock engine prefixes the root stack's type; the real engine leaves the root stack out
        # of a top-level resource's URN. Either way the last segment is the type it registered.
        qualified_type = mock_urn.split("::")[2]
        assert qualified_type.split("$")[:-1] == ["pulumi:pulumi:Stack"]  # top-level: no other parent
        return qualified_type.split("$")[-1]

    registered = resource.urn.apply(registered_type)
    sdk_urn: pulumi.Output[str] = registered.apply(
        lambda typ: create_urn(ROUTING_RESOURCE_NAME, typ, project=PROJECT, stack="lab"))

    def check(args: list[str]) -> None:
        typ, urn = args
        assert typ == ROUTING_TYPE
        assert urn == routing_urn(PROJECT, "lab") == ROUTING_URN

    return pulumi.Output.all(registered, sdk_urn).apply(check)


def test_routing_urn_uses_the_bare_stack_name() -> None:
    assert routing_urn(PROJECT, "organization/jw-attendant-estate/prod") == (
        f"urn:pulumi:prod::{PROJECT}::pulumi-python:dynamic/bluegreen:LiveColorRouting::live-color-routing")


def test_the_container_urn_is_found_by_vmid_in_a_real_export_shape() -> None:
    deployment = json.loads(EXPORT.read_text())["deployment"]
    assert find_container_urn(deployment, 134) == GREEN_URN
    assert find_container_urn(deployment, 131).endswith("::jw-postgres")


def test_an_old_copy_pending_deletion_is_ignored() -> None:
    deployment = json.loads(EXPORT.read_text())["deployment"]
    old = next(r for r in deployment["resources"] if r["urn"] == GREEN_URN)
    deployment["resources"].append({**old, "id": "134-old", "delete": True})
    assert find_container_urn(deployment, 134) == GREEN_URN


def test_an_unknown_vmid_names_the_containers_the_stack_has() -> None:
    deployment = json.loads(EXPORT.read_text())["deployment"]
    with pytest.raises(PulumiError, match=r"no container with vmid 999 \(containers it manages: "
                                          r"131, 132, 134, 136\)"):
        find_container_urn(deployment, 999)


def test_two_containers_with_one_vmid_are_refused() -> None:
    deployment = json.loads(EXPORT.read_text())["deployment"]
    twin = {"urn": f"{URN_PREFIX}{CONTAINER_TYPE}::stray", "type": CONTAINER_TYPE, "inputs": {"vmId": 134.0}}
    deployment["resources"].append(twin)
    with pytest.raises(PulumiError, match="2 containers with vmid 134"):
        find_container_urn(deployment, 134)


# --------------------------------------------------------------------------- operations


def refresh_routing() -> list[str]:
    return ["--non-interactive", "refresh", "--skip-preview", "--yes", "--target", ROUTING_URN, "--color", "never",
            "--exec-kind", "auto.local", "--stack", "lab"]


def test_switch_reads_the_live_map_then_sets_the_colour_then_updates_only_the_routing(project: Path) -> None:
    fake = FakePulumi()
    lines: list[str] = []
    outcome = seam(project, fake).switch_to("green", on_output=lines.append)
    assert fake.calls == [
        ["--non-interactive", "stack", "select", "--stack", "lab"],
        ["--non-interactive", "stack", "export", "--show-secrets", "--stack", "lab"],
        # The routing state first follows HAProxy: after a flip made outside Pulumi the update
        # would otherwise compare the new colour with a stale recorded one and do nothing.
        refresh_routing(),
        tail_calls(fake)[2],  # a refresh reads only its history entry back
        ["config", "set", "bluegreen:activeColor", "--plaintext", "--stack", "lab", "--non-interactive",
         "--", "green"],
        ["--non-interactive", "up", "--yes", "--skip-preview", "--message",
         "bluegreen: switch the live colour to green", "--target", ROUTING_URN, "--target-dependents",
         "--color", "never", "--exec-kind", "auto.local", "--stack", "lab"],
        *tail_calls(fake),
    ]
    assert set(fake.cwds) == {str(project)}
    assert all(env["PULUMI_CONFIG_PASSPHRASE"] == PASSPHRASE for env in fake.envs)
    assert outcome.changes == {"update": 1, "same": 15}
    assert outcome.outputs["activeColor"] == "green"
    assert isinstance(outcome.outputs["dbPassword"], Sensitive)
    assert outcome.outputs["dbPassword"].reveal() == "s3cret-db-pass"
    assert ROUTING_LINE.format("updated (0.41s)") in lines


def test_a_stack_without_the_routing_resource_is_not_refreshed(project: Path) -> None:
    deployment = json.loads(EXPORT.read_text())
    deployment["deployment"]["resources"] = [r for r in deployment["deployment"]["resources"]
                                             if r["type"] != ROUTING_TYPE]
    fake = FakePulumi(export_text=json.dumps(deployment))
    seam(project, fake).switch_to("green")
    assert not [c for c in fake.calls if "refresh" in c]
    assert [c for c in fake.calls if "up" in c]


def test_targeted_up_names_exactly_the_targets(project: Path) -> None:
    fake = FakePulumi()
    targets = [GREEN_URN, f"{URN_PREFIX}bluegreen:hosts:HostConfiguration$pulumi-python:dynamic/bluegreen:Bootstrap"
                          "::jw-green-bootstrap"]
    outcome = seam(project, fake).up("replace container 134", targets=targets, replace=[GREEN_URN],
                                     message="bluegreen: replace container 134")
    assert fake.calls[1] == [
        "--non-interactive", "up", "--yes", "--skip-preview", "--message", "bluegreen: replace container 134",
        "--replace", GREEN_URN, "--target", targets[0], "--target", targets[1],
        "--color", "never", "--exec-kind", "auto.local", "--stack", "lab"]
    assert "--target-dependents" not in fake.calls[1]
    assert outcome.changes == {"update": 1, "same": 15}


def test_the_lock_token_and_run_variables_reach_the_cli_only_during_the_run(project: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from bluegreen.hosts.hostconfig import LOCK_TOKEN_ENV

    monkeypatch.delenv(LOCK_TOKEN_ENV, raising=False)
    seen: list[tuple[str | None, str | None]] = []

    def record(argv: list[str]) -> None:
        if "up" in argv:
            seen.append((os.environ.get(LOCK_TOKEN_ENV), os.environ.get("BLUEGREEN_REBUILD")))

    fake = FakePulumi(on_run=record)
    s = PulumiSeam(project, "lab", pulumi_command=fake, env=ENV, lock_token="0123456789abcdef")
    s.up("x", targets=[GREEN_URN], env={"BLUEGREEN_REBUILD": "134:replace"}, message="m")
    assert seen == [("0123456789abcdef", "134:replace")]
    assert LOCK_TOKEN_ENV not in os.environ and "BLUEGREEN_REBUILD" not in os.environ


def test_an_imported_container_is_found_by_its_import_id(project: Path) -> None:
    """An imported container's state has no vmId (bpg container.go 1230-1246: the importer sets only
    the id and the node): the import id, else the id, names it."""
    deployment = json.loads(EXPORT.read_text())["deployment"]
    for r in deployment["resources"]:
        if r["type"] == CONTAINER_TYPE:
            r["inputs"].pop("vmId", None)
            r["outputs"].pop("vmId", None)
            r["importID"] = f"pve/{r['id']}"
    assert find_container_urn(deployment, 134) == GREEN_URN
    for r in deployment["resources"]:
        r.pop("importID", None)
    assert find_container_urn(deployment, 134) == GREEN_URN


def test_refresh_and_outputs(project: Path) -> None:
    fake = FakePulumi()
    s = seam(project, fake)
    assert s.refresh() == {"same": 16}
    assert fake.calls[1] == ["--non-interactive", "refresh", "--skip-preview", "--yes", "--color", "never",
                             "--exec-kind", "auto.local", "--stack", "lab"]
    fake.calls.clear()
    s.refresh(targets=[ROUTING_URN])
    assert fake.calls[0] == refresh_routing()
    fake.calls.clear()
    outputs = s.outputs()
    assert fake.calls == tail_calls(fake)[:2]  # the stack is selected once per seam
    assert outputs["publicUrl"] == "http://127.0.3.26:80"
    assert isinstance(outputs["dbPassword"], Sensitive) and "s3cret" not in repr(outputs)


def test_no_operation_rewrites_the_project_or_stack_file(project: Path) -> None:
    before = {p: p.read_bytes() for p in (project / "Pulumi.yaml", project / "stacks" / "Pulumi.lab.yaml")}
    s = seam(project, FakePulumi())
    s.switch_to("green")
    s.up("x", targets=[GREEN_URN], replace=[GREEN_URN], message="m")
    s.refresh()
    s.outputs()
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in project.iterdir()) == ["Pulumi.yaml", "stacks"]


def test_a_rewritten_pulumi_yaml_is_put_back(project: Path) -> None:
    original = (project / "Pulumi.yaml").read_bytes()

    def clobber(argv: list[str]) -> None:
        if "up" in argv:  # what ProjectSettings would write: no stackConfigDir
            (project / "Pulumi.yaml").write_text("name: jw-attendant-estate\nruntime: python\n")

    seam(project, FakePulumi(on_run=clobber)).switch_to("green")
    assert (project / "Pulumi.yaml").read_bytes() == original


def test_a_locked_stack_says_so_in_the_clis_words_without_secrets(project: Path) -> None:
    fake = FakePulumi(failures={"up": (255, DIY_LOCKED + f"\n  passphrase was {PASSPHRASE}")})
    with pytest.raises(PulumiError) as err:
        seam(project, fake).switch_to("green")
    message = str(err.value)
    assert message.startswith("stack 'lab': switch to green refused: another update holds the stack's lock")
    assert "error: the stack is currently locked by 1 lock(s)" in message
    assert "bluegreen switch --direct" in message
    # `pulumi cancel` clears a crashed update's lock on both backends (pkg/backend/diy/backend.go,
    # CancelCurrentUpdate deletes the lock files); there is no `pulumi state unlock`.
    assert "`pulumi cancel --stack lab`" in message and "state unlock" not in message
    assert PASSPHRASE not in message


def test_a_failed_update_reports_the_cli_error_redacted(project: Path) -> None:
    stderr = ("Diagnostics:\n  pulumi:providers:proxmoxve (proxmoxve):\n"
              f"    error: 401 authentication failure (apiToken: {API_TOKEN})\n")
    fake = FakePulumi(failures={"up": (255, stderr)})
    with pytest.raises(PulumiError) as err:
        seam(project, fake).up("replace container 134", targets=[GREEN_URN], message="m")
    message = str(err.value)
    assert message.startswith("stack 'lab': replace container 134 failed: error: 401 authentication failure")
    assert "8d1f6c2e" not in message


def test_an_unknown_stack_is_explained(project: Path) -> None:
    fake = FakePulumi(failures={"stack select": (255, "error: no stack named 'lab' found")})
    with pytest.raises(PulumiError, match=r"stack 'lab' does not exist in this Pulumi backend .*"
                                          r"pulumi stack init lab"):
        seam(project, fake).switch_to("green")


def test_secrets_printed_by_the_cli_never_reach_the_output_callback(project: Path) -> None:
    class LeakyPulumi(FakePulumi):
        def _answer(self, verb: str, argv: list[str]) -> tuple[str, str, int]:
            if verb == "up":
                return f"warning: PULUMI_CONFIG_PASSPHRASE={PASSPHRASE}\nResources:\n    1 unchanged", "", 0
            return super()._answer(verb, argv)

    lines: list[str] = []
    seam(project, LeakyPulumi()).switch_to("green", on_output=lines.append)
    assert "warning: PULUMI_CONFIG_PASSPHRASE=[REDACTED]" in lines
    assert not any(PASSPHRASE in line for line in lines)


def test_a_passphrase_exported_in_the_shell_is_redacted_too(project: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "shell-exported-passphrase")
    stderr = "error: decrypting: passphrase shell-exported-passphrase is wrong"
    fake = FakePulumi(failures={"up": (1, stderr)})
    with pytest.raises(PulumiError) as err:
        PulumiSeam(project, "lab", pulumi_command=fake).switch_to("green")
    assert "shell-exported-passphrase" not in str(err.value)
    assert "error: decrypting: passphrase [REDACTED] is wrong" in str(err.value)


def test_output_the_sdk_cannot_read_is_a_clear_error(project: Path) -> None:
    class GarbledPulumi(FakePulumi):
        def _answer(self, verb: str, argv: list[str]) -> tuple[str, str, int]:
            if verb == "stack export":
                return "Logging in to the backend... {not json", "", 0
            return super()._answer(verb, argv)

    with pytest.raises(PulumiError, match="export the stack state: unexpected answer from the Pulumi CLI"):
        seam(project, GarbledPulumi()).export()


def test_without_the_cli_the_error_says_how_to_install_it_or_go_direct(
        project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("PATH", str(tmp_path_factory.mktemp("empty-path")))
    with pytest.raises(PulumiError) as err:
        PulumiSeam(project, "lab").switch_to("green")  # Pulumi's real PulumiCommand looks for the binary
    message = str(err.value)
    assert message == MISSING_CLI
    for part in ("Pulumi CLI is not installed", "https://get.pulumi.com", "bluegreen switch --direct"):
        assert part in message


def test_a_cli_that_vanishes_mid_operation_is_the_same_clear_error(project: Path) -> None:
    def vanish(argv: list[str]) -> None:
        if "up" in argv:
            raise FileNotFoundError(2, "No such file or directory", "pulumi")

    with pytest.raises(PulumiError, match="Pulumi CLI is not installed"):
        seam(project, FakePulumi(on_run=vanish)).switch_to("green")


def test_bad_input_is_refused_before_any_cli_call(project: Path,
                                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    fake = FakePulumi()
    with pytest.raises(ConfigError, match="cannot switch to 'purple'"):
        seam(project, fake).switch_to("purple")
    assert fake.calls == []
    empty = tmp_path_factory.mktemp("not-a-project")
    with pytest.raises(ConfigError, match="is not a Pulumi project"):
        PulumiSeam(empty, "lab", pulumi_command=fake)


def test_only_the_switchs_own_up_may_move_traffic(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI (and the routing provider it runs) inherits this process's environment: the switch's
    `up` carries the colour it switches to, nothing else does (providers.refuse_flip)."""
    import os

    from bluegreen.hosts.hostconfig import SWITCH_ENV

    monkeypatch.delenv(SWITCH_ENV, raising=False)
    seen: list[tuple[str, str | None]] = []
    fake = FakePulumi()
    fake.on_run = lambda argv: seen.append(("up" if "up" in argv else " ".join(argv[:2]),
                                            os.environ.get(SWITCH_ENV)))
    seam(project, fake).switch_to("green")
    assert ("up", "green") in seen
    assert SWITCH_ENV not in os.environ


# --------------------------------------------------------------------------- the CLI version


@pytest.mark.parametrize(("version", "missing"), [
    ("3.173.0", ["3.174.0", "3.207.0", "3.252.0"]),
    ("3.206.9", ["3.207.0", "3.252.0"]),
    ("3.251.0", ["3.252.0"]),
    ("3.252.0", []),
    ("3.272.0", []),
])
def test_the_cli_version_is_checked_by_what_each_release_brought(version: str, missing: list[str]) -> None:
    problem = cli_too_old(VersionInfo.parse(version))
    if not missing:
        assert problem is None
        return
    assert problem is not None and problem.startswith(f"the Pulumi CLI is {version}, too old")
    for needed in ("3.174.0", "3.207.0", "3.252.0"):
        assert (needed in problem) is (needed in missing)
    assert "bluegreen switch --direct" in problem


def test_an_old_cli_is_refused_before_any_command(project: Path) -> None:
    fake = FakePulumi()
    fake.version = VersionInfo.parse("3.200.0")
    with pytest.raises(PulumiError, match=r"the Pulumi CLI is 3.200.0, too old for this project: it needs 3.207.0 "
                                          r"for `replace_with`"):
        seam(project, fake).switch_to("green")
    assert fake.calls == []
    fake.version = None
    with pytest.raises(PulumiError, match="cannot tell the Pulumi CLI's version"):
        seam(project, fake).refresh()
