"""Approvals only a person can give: the store, `bluegreen approve`, and the gated tools over it.

The tools run here against a fake service (the estate is a dict the test changes) and the real
store in a temporary directory. The approver account is played by `nobody` (files are chowned to
it, which needs root) or, where `bluegreen approve` itself runs, by the test's own account; the
real separate-account flow over stdio, with sudo, is tests/integration/test_approvals.py.
"""

from __future__ import annotations

import io
import json
import os
import pwd
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from mcp.types import CallToolResult, TextContent

from bluegreen.faces.approval import ApprovalError
from bluegreen.faces.approval_store import (
    APPROVALS_DIR_ENV,
    APPROVER_ENV,
    CODE_ALPHABET,
    ApprovalStore,
    Grant,
    Request,
    approver_from,
    approver_program,
    default_root,
    new_code,
    normalize_code,
    write_grant,
)
from bluegreen.faces.approve import approve, printable, render_request
from bluegreen.faces.exposure import mark_tree, quote_untrusted
from bluegreen.faces.mcp_server import DeployTools, Operations
from bluegreen.hosts.lock import create_exclusive_command
from bluegreen.model.errors import ConfigError
from bluegreen.model.journal import State, scrub_errors
from bluegreen.model.secrets import known_secrets
from bluegreen.model.sensitive import Sensitive
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import other_color

REPO = Path(__file__).resolve().parents[2]
APPROVER = "nobody"
needs_root = pytest.mark.skipif(os.getuid() != 0, reason="files owned by another account need root")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


PLAN = {"from": "blue", "colour": "green", "release": "r2", "sha": "2" * 40, "path": "direct",
        "emergency": False, "checks": ["green is healthy"], "problems": []}
ESTATE = {"live": "blue", "standby": "green", "standbyRelease": "r2", "standbySha": "2" * 40,
          "switchCount": 4, "lastHistoryEntry": None}


def shared_layout(base: Path, stack: str, approver_uid: int) -> Path:
    """What scripts/approver-setup.sh makes: <stack>/ root's, requests/ ours, grants/ the approver's."""
    root = base / stack
    (root / "requests").mkdir(parents=True)
    (root / "grants").mkdir()
    os.chmod(root / "requests", 0o2750)
    os.chmod(root / "grants", 0o2750)
    os.chown(root / "grants", approver_uid, -1)
    os.chmod(root, 0o755)
    if os.getuid() != 0:  # a stack directory we own would let us swap grants/: root makes it
        pytest.skip("needs root")
    return root


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def nobody() -> int:
    return pwd.getpwnam(APPROVER).pw_uid


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock, nobody: int) -> ApprovalStore:
    if os.getuid() != 0:
        pytest.skip("needs root")
    root = shared_layout(tmp_path / "approvals", "lab", nobody)
    store = ApprovalStore(root, "lab", approver=APPROVER, clock=clock)
    store.ensure()
    return store


def _request(store: ApprovalStore, tool: str = "switch_traffic", args: dict[str, Any] | None = None,
             plan: dict[str, Any] | None = None, ttl: float = 300) -> Request:
    return store.create(tool, {"emergency": False} if args is None else args, plan or PLAN, ESTATE,
                        "Switch live traffic from blue to green", ttl)


def as_approver(store: ApprovalStore, request: Request, *, approved: bool = True, nonce: str | None = None,
                digest: str | None = None, owner: str = APPROVER) -> Path:
    """What `bluegreen approve` writes as the approver account (played by `nobody`)."""
    grant = Grant(code=request.code, digest=digest or request.digest, approved_by="ops (as nobody)",
                  approved_at=store.clock(), via="terminal", nonce=request.nonce if nonce is None else nonce,
                  terminal="/dev/pts/7", approved=approved)
    write_grant(store.grants_dir, grant)
    path = store.grants_dir / f"{request.code}.grant.json"
    os.chown(path, pwd.getpwnam(owner).pw_uid, -1)
    return path


# ------------------------------------------------------------------------ codes and settings


def test_codes_are_short_readable_and_random() -> None:
    codes = {new_code() for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        assert re.fullmatch(rf"[{CODE_ALPHABET}]{{4}}-[{CODE_ALPHABET}]{{4}}", code)
    assert not set("01ILOSU5") & set(CODE_ALPHABET)


@pytest.mark.parametrize(("raw", "expected"), [
    ("K7QF-3MXD", "K7QF-3MXD"), ("k7qf3mxd", "K7QF-3MXD"), (" k7qf 3mxd ", "K7QF-3MXD"),
])
def test_codes_are_normalized(raw: str, expected: str) -> None:
    assert normalize_code(raw) == expected


@pytest.mark.parametrize("raw", ["", "K7QF-3MX", "K7QF-3MXD9", "K7QF-3MX0", "../../etc/passwd",
                                 "K7QF/3MXD", '{"approval": "K7QF-3MXD"}'])
def test_anything_else_is_not_a_code(raw: str) -> None:
    with pytest.raises(ApprovalError, match="is not an approval code"):
        normalize_code(raw)


@pytest.mark.parametrize(("environ", "expected"), [
    ({APPROVALS_DIR_ENV: "/srv/approvals"}, "/srv/approvals/prod"),
    ({"XDG_STATE_HOME": "/x/state"}, "/var/lib/bluegreen/approvals/prod"),
    ({}, "/var/lib/bluegreen/approvals/prod"),
])
def test_default_root(environ: dict[str, str], expected: str) -> None:
    assert str(default_root(environ, "prod")) == expected


@pytest.mark.parametrize("stack", ["../prod", "", ".hidden", "a/b"])
def test_a_stack_name_cannot_escape_the_store(stack: str) -> None:
    with pytest.raises(ConfigError, match="expected letters, digits"):
        default_root({}, stack)


def test_relative_approvals_dir_is_refused() -> None:
    with pytest.raises(ConfigError, match=f"{APPROVALS_DIR_ENV}='here': expected an absolute path"):
        default_root({APPROVALS_DIR_ENV: "here"}, "prod")


def test_the_approver_must_be_another_existing_account() -> None:
    assert approver_from({}) is None
    assert approver_from({APPROVER_ENV: APPROVER}) == APPROVER
    with pytest.raises(ConfigError, match="no such OS account"):
        approver_from({APPROVER_ENV: "no-such-user-xyz"})
    with pytest.raises(ConfigError, match="is the account this server runs as"):
        approver_from({APPROVER_ENV: pwd.getpwuid(os.getuid()).pw_name})


# ------------------------------------------------------------------------ the layout the server trusts


@needs_root
def test_requests_are_readable_by_the_approver_only(store: ApprovalStore) -> None:
    request = _request(store)
    path = store.requests_dir / f"{request.code}.request.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert json.loads(path.read_text())["nonce"] == request.nonce and len(request.nonce) == 32


@needs_root
@pytest.mark.parametrize("breakage", ["missing", "grants ours", "grants open", "stack dir ours"])
def test_a_layout_the_assistant_could_write_is_refused(tmp_path: Path, nobody: int, breakage: str) -> None:
    root = shared_layout(tmp_path / "approvals", "lab", nobody)
    if breakage == "missing":
        (root / "grants").rmdir()
    elif breakage == "grants ours":
        os.chown(root / "grants", os.getuid(), -1)
    elif breakage == "grants open":
        os.chmod(root / "grants", 0o777)
    else:
        os.chown(root, os.getuid(), -1)
        os.chmod(root, 0o775)
    with pytest.raises(ConfigError, match=r"approver-setup\.sh"):
        ApprovalStore(root, "lab", approver=APPROVER).ensure()


@needs_root
@pytest.mark.parametrize("forgery", ["owned by the server's user", "writable by others", "not JSON",
                                     "missing fields", "another nonce", "symlink", "hard link",
                                     "directory swapped"])
def test_an_untrusted_grant_is_ignored_not_fatal(store: ApprovalStore, tmp_path: Path, forgery: str) -> None:
    request = _request(store)
    path = store.grants_dir / f"{request.code}.grant.json"
    if forgery == "owned by the server's user":
        as_approver(store, request, owner=pwd.getpwuid(os.getuid()).pw_name)
    elif forgery == "writable by others":
        as_approver(store, request).chmod(0o666)
    elif forgery == "not JSON":
        path.write_text("{not json")
        os.chown(path, pwd.getpwnam(APPROVER).pw_uid, -1)
    elif forgery == "missing fields":
        path.write_text(json.dumps({"code": request.code, "digest": request.digest}))
        os.chown(path, pwd.getpwnam(APPROVER).pw_uid, -1)
    elif forgery == "another nonce":
        as_approver(store, request, nonce="0" * 32)
    elif forgery == "symlink":
        real = as_approver(store, request)
        real.rename(store.grants_dir / "elsewhere.json")
        path.symlink_to(store.grants_dir / "elsewhere.json")
    elif forgery == "hard link":
        real = as_approver(store, request)
        os.link(real, tmp_path / "second-name.json")
    else:
        as_approver(store, request)
        store.grants_dir.rename(tmp_path / "real-grants")
        store.grants_dir.mkdir()
        (tmp_path / "real-grants" / path.name).rename(path)
    assert store.grant(request.code) is None
    assert "was ignored" in store.ignored[request.code]
    with pytest.raises(ApprovalError, match="is not approved yet"):
        store.redeem(request, PLAN, ESTATE)


@needs_root
def test_the_approver_s_grant_is_trusted_once(store: ApprovalStore) -> None:
    request = _request(store)
    as_approver(store, request)
    grant = store.grant(request.code)
    assert grant is not None and grant.who() == "ops (as nobody) on /dev/pts/7"
    assert store.redeem(request, PLAN, ESTATE).code == request.code
    # Replayed: the request file written again with the same code and nonce, the grant still there.
    (store.requests_dir / f"{request.code}.request.json").write_text(json.dumps(request.to_file()))
    assert store.grant(request.code) is None
    with pytest.raises(ApprovalError, match="is unknown"):
        store.get(request.code)


@needs_root
def test_a_grant_copied_onto_a_new_request_does_not_count(store: ApprovalStore) -> None:
    first = _request(store)
    as_approver(store, first)
    store.redeem(first, PLAN, ESTATE)
    second = _request(store)
    copied = json.loads((store.grants_dir / f"{first.code}.grant.json").read_text())
    path = store.grants_dir / f"{second.code}.grant.json"
    path.write_text(json.dumps({**copied, "code": second.code}))
    os.chown(path, pwd.getpwnam(APPROVER).pw_uid, -1)
    assert store.grant(second.code) is None
    assert "another request" in store.ignored[second.code]


@needs_root
def test_a_declined_request_is_withdrawn(store: ApprovalStore) -> None:
    request = _request(store)
    as_approver(store, request, approved=False)
    with pytest.raises(ApprovalError, match="was declined by ops"):
        store.grant(request.code)
    with pytest.raises(ApprovalError, match="is unknown"):
        store.get(request.code)
    assert not (store.requests_dir / f"{request.code}.request.json").exists()


@dataclass
class Step:
    """One action on a request for switch_traffic(emergency=False) planned on PLAN/ESTATE."""

    action: str  # "redeem", "approve", "wait"
    seconds: float = 0.0
    plan: dict[str, Any] = field(default_factory=lambda: dict(PLAN))
    estate: dict[str, Any] = field(default_factory=lambda: dict(ESTATE))


OK = None
CASES: list[tuple[str, list[tuple[Step, str | None]]]] = [
    ("not approved", [(Step("redeem"), "is not approved yet")]),
    ("approved, same plan", [(Step("approve"), OK), (Step("redeem"), OK)]),
    ("approved, then used twice", [(Step("approve"), OK), (Step("redeem"), OK),
                                   (Step("redeem"), "is unknown")]),
    ("approved, then the standby got another release",
     [(Step("approve"), OK),
      (Step("redeem", estate={**ESTATE, "standbyRelease": "r3", "lastHistoryEntry": {"type": "deploy"}}),
       'no longer matches: standbyRelease: r2 -> r3; lastHistoryEntry: none -> {"type":"deploy"}; '
       'nothing was changed'),
      (Step("redeem"), "is unknown")]),
    ("approved, then the plan changed (another commit)",
     [(Step("approve"), OK), (Step("redeem", plan={**PLAN, "sha": "3" * 40}),
                              f"plan.sha: {'2' * 40} -> {'3' * 40}")]),
    ("approved just before expiry", [(Step("approve"), OK), (Step("wait", 299.0), OK), (Step("redeem"), OK)]),
    ("approved, then expired", [(Step("approve"), OK), (Step("wait", 300.0), OK),
                                (Step("redeem"), "expired (300s after it was issued)")]),
]


@needs_root
@pytest.mark.parametrize("steps", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_redeem(store: ApprovalStore, clock: FakeClock, steps: list[tuple[Step, str | None]]) -> None:
    request = _request(store)
    for step, refusal in steps:
        def act(step: Step = step) -> None:
            if step.action == "wait":
                clock.now += step.seconds
            elif step.action == "approve":
                as_approver(store, store.get(request.code))
            else:
                store.redeem(store.get(request.code), step.plan, step.estate)

        if refusal is OK:
            act()
        else:
            with pytest.raises(ApprovalError, match=re.escape(refusal)):
                act()


def test_a_dialog_approval_lives_in_memory_only(tmp_path: Path, clock: FakeClock) -> None:
    store = ApprovalStore(tmp_path / "none", "lab", clock=clock)  # no approver: nothing on disk
    request = _request(store)
    assert not (tmp_path / "none").exists()
    assert store.grant(request.code) is None
    store.approve_in_dialog(request, approved_by="the person in the dialog")
    assert store.redeem(request, PLAN, ESTATE).via == "elicitation"
    with pytest.raises(ApprovalError, match="is unknown"):
        store.get(request.code)
    assert not (tmp_path / "none").exists()


@needs_root
def test_pending_finds_only_live_requests_for_the_same_call(store: ApprovalStore, clock: FakeClock) -> None:
    old = _request(store, ttl=60)
    clock.now += 10
    new = _request(store)
    _request(store, args={"emergency": True})
    _request(store, tool="deploy_to_standby", args={"ref": "v1", "migrate": False})
    assert [r.code for r in store.pending("switch_traffic", {"emergency": False})] == [new.code, old.code]
    clock.now += 60
    assert [r.code for r in store.pending("switch_traffic", {"emergency": False})] == [new.code]
    assert not (store.requests_dir / f"{old.code}.request.json").exists()


# ------------------------------------------------------------------------ bluegreen approve


@pytest.fixture
def own_store(tmp_path: Path, clock: FakeClock) -> ApprovalStore:
    """A store whose approver is the account the test runs as: `bluegreen approve` runs here."""
    me = pwd.getpwuid(os.getuid()).pw_name
    root = tmp_path / "approvals" / "lab"
    (root / "requests").mkdir(parents=True)
    (root / "grants").mkdir()
    os.chmod(root / "grants", 0o750)
    if os.getuid() == 0:
        os.chmod(root, 0o755)
    return ApprovalStore(root, "lab", approver=me, clock=clock)


def _approve(store: ApprovalStore, code: str, answer: str = "y\n", environ: dict[str, str] | None = None,
             stdin: io.StringIO | None = None) -> dict[str, Any]:
    return approve(code, "lab", environ=environ or {"SUDO_USER": "ops"}, stdin=stdin or Tty(answer),
                   err=io.StringIO(), root=store.root, now=store.clock())


def test_approve_refuses_when_not_run_as_the_approver(tmp_path: Path, nobody: int, clock: FakeClock) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root")
    root = shared_layout(tmp_path / "approvals", "lab", nobody)
    store = ApprovalStore(root, "lab", approver=APPROVER, clock=clock)
    request = _request(store)
    with pytest.raises(ConfigError, match=r"given by the account that owns .* \(nobody\).*sudo -u nobody"):
        _approve(store, request.code)
    assert not list(store.grants_dir.iterdir())


def test_approve_refuses_without_a_tty(own_store: ApprovalStore) -> None:
    request = _request(own_store)
    with pytest.raises(ConfigError, match="needs a person at a terminal"):
        _approve(own_store, request.code, stdin=io.StringIO("y\n"))
    assert own_store.grant(request.code) is None


def test_approve_on_a_tty_shows_the_plan_and_grants_it(own_store: ApprovalStore) -> None:
    request = _request(own_store)
    err = io.StringIO()
    done = approve(request.code.lower(), "lab", environ={"SUDO_USER": "ops"}, stdin=Tty("y\n"), err=err,
                   root=own_store.root, now=own_store.clock())
    assert done["code"] == request.code and done["tool"] == "switch_traffic"
    shown = err.getvalue()
    assert f"Approve {request.code} (switch_traffic)" in shown
    assert '"standbyRelease": "r2"' in shown and "[y/N]" in shown
    assert request.nonce not in shown
    grant = own_store.grant(request.code)
    assert grant is not None and grant.digest == request.digest and grant.via == "terminal"
    assert grant.approved_by.startswith("ops (as ")
    path = own_store.grants_dir / f"{request.code}.grant.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.parametrize("answer", ["n\n", "\n", "yes please\n", ""])
def test_anything_but_yes_declines(own_store: ApprovalStore, answer: str) -> None:
    request = _request(own_store)
    with pytest.raises(ConfigError, match="not approved"):
        _approve(own_store, request.code, answer)
    with pytest.raises(ApprovalError, match="declined"):
        own_store.grant(request.code)
    with pytest.raises(ApprovalError, match="is unknown"):
        own_store.get(request.code)


def test_unknown_code(own_store: ApprovalStore) -> None:
    with pytest.raises(ApprovalError, match="approval code AAAA-BBBB is unknown"):
        _approve(own_store, "AAAA-BBBB")


def test_terminal_control_sequences_in_a_plan_are_shown_escaped(own_store: ApprovalStore) -> None:
    hostile = "\x1b[2J\x1b[1A looks fine"
    request = own_store.create("switch_traffic", {"emergency": False}, {**PLAN, "problems": [hostile]},
                               ESTATE, "x", 300)
    shown = render_request(request, own_store.clock())
    assert "\x1b" not in shown
    assert printable(hostile) == "\\x1b[2J\\x1b[1A looks fine"


# ------------------------------------------------------------------------ the gated tools


class Reported:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def to_json(self) -> dict[str, Any]:
        return self.data


@dataclass
class Estate:
    live: str = "blue"
    releases: dict[str, str] = field(default_factory=lambda: {"blue": "r1", "green": "r2"})
    switches: int = 0
    deploys: list[str] = field(default_factory=list)
    head: str = "1" * 40  # the commit the deploy's ref resolves to
    pins: list[Any] = field(default_factory=list)
    who: str = "ops@laptop"  # the MCP server sets who approved the run

    @property
    def standby(self) -> str:
        return other_color(self.live)


class FakeOps:
    """The operations as the tools call them, on the fake estate above."""

    @staticmethod
    def status(e: Estate) -> Reported:
        colors = {c: {"release": r, "sha": r * 20} for c, r in e.releases.items()}
        return Reported({"live": e.live, "standby": e.standby, "switchCount": e.switches, "colors": colors})

    @staticmethod
    def history(e: Estate, limit: int) -> list[dict[str, Any]]:
        return []

    @staticmethod
    def plan_switch(e: Estate, *, emergency: bool = False) -> Reported:
        standby = e.standby
        return Reported({"from": e.live, "colour": standby, "release": e.releases[standby],
                         "sha": e.releases[standby] * 20, "path": "direct", "emergency": emergency,
                         "checks": [], "problems": []})

    @staticmethod
    def switch(e: Estate, *, emergency: bool = False) -> Reported:
        old, e.live = e.live, e.standby
        e.switches += 1
        return Reported({"ok": True, "from": old, "colour": e.live})

    @staticmethod
    def plan_deploy(e: Estate, ref: str | None, *, migrate: bool = False) -> Reported:
        return Reported({"colour": e.standby, "ref": ref, "migrate": migrate, "live": e.live,
                         "steps": ["build"], "sha": e.head,
                         "pendingMigrations": [{"name": "20250101000000_add", "checksum": "ab" * 32}]})

    @staticmethod
    def deploy(e: Estate, ref: str | None, *, migrate: bool = False, approved: Any = None) -> Reported:
        e.deploys.append(str(ref))
        e.pins.append(approved)
        return Reported({"ok": True, "colour": e.standby, "ref": ref})


FAKE_OPS = Operations(status=FakeOps.status, history=FakeOps.history, plan_switch=FakeOps.plan_switch,
                      switch=FakeOps.switch, plan_deploy=FakeOps.plan_deploy, deploy=FakeOps.deploy,
                      rollback=FakeOps.switch)


class FakeCtx:
    def __init__(self) -> None:
        self.session = SimpleNamespace(client_capabilities=None, can_send_request=True)
        self.progress: list[str] = []

    async def report_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append(message or "")


def _tools(store: ApprovalStore, estate: Estate, secret: str = "hunter2-secret") -> DeployTools:
    return DeployTools(load_stack(REPO, "lab"), store=store, ttl=300,
                       estate_factory=lambda progress: estate,  # type: ignore[arg-type,return-value]
                       ops=FAKE_OPS,
                       secrets=[Sensitive(secret)], poll_seconds=0.01)


def _data(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, _text(result)
    assert result.structured_content is not None
    return result.structured_content


def _text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def _call(tools: DeployTools, tool: str, **kwargs: Any) -> CallToolResult:
    async def main() -> CallToolResult:
        result: CallToolResult = await getattr(tools, tool)(FakeCtx(), **kwargs)
        return result

    return anyio.run(main)


@needs_root
def test_tool_calls_alone_never_switch(store: ApprovalStore) -> None:
    estate = Estate()
    tools = _tools(store, estate)
    first = _call(tools, "switch_traffic")
    data = _data(first)
    code = data["approval"]["code"]
    assert (data["approved"], data["changed"]) == (False, False)
    assert store.get(code).nonce not in _text(first) + json.dumps(first.structured_content)
    # The approver's program by its absolute path: sudo's secure_path has no venv on it.
    assert f"sudo -u nobody {approver_program(store.root)} approve {code} --stack lab" in data["next"]
    assert approver_program(store.root).startswith("/")
    # Everything the model was given, fed back every way the tool accepts it.
    attempts = [{}, {"approval_code": code}, {"approval_code": code.lower()},
                {"approval_code": _text(first)[:500]}, {"approval_code": json.dumps(data["approval"])},
                {"emergency": True}, {"approval_code": code, "wait_seconds": 1}]
    for kwargs in attempts:
        result = _call(tools, "switch_traffic", **kwargs)
        assert result.is_error or _data(result)["changed"] is False
    assert (estate.live, estate.switches) == ("blue", 0)
    again = _data(_call(tools, "switch_traffic", approval_code=code))
    assert again["approval"]["code"] == code and again["approval"]["status"] == "waiting for a person"


@needs_root
def test_terminal_approval_then_the_next_call_switches_once(store: ApprovalStore) -> None:
    estate = Estate()
    tools = _tools(store, estate)
    code = _data(_call(tools, "switch_traffic"))["approval"]["code"]
    as_approver(store, store.get(code))
    done = _data(_call(tools, "switch_traffic"))
    assert done == {"ok": True, "from": "blue", "colour": "green"}
    assert (estate.live, estate.switches) == ("green", 1)
    # Spent: the next call is a new plan (green -> blue) with a new code, and switches nothing.
    fresh = _data(_call(tools, "switch_traffic"))
    assert fresh["approval"]["code"] != code and fresh["plan"]["colour"] == "blue"
    refused = _call(tools, "switch_traffic", approval_code=code)
    assert refused.is_error and "is unknown" in _text(refused)
    assert estate.switches == 1


@needs_root
def test_a_switch_code_does_not_approve_a_deploy(store: ApprovalStore) -> None:
    estate = Estate()
    tools = _tools(store, estate)
    code = _data(_call(tools, "switch_traffic"))["approval"]["code"]
    as_approver(store, store.get(code))
    refused = _call(tools, "deploy_to_standby", ref="v2", approval_code=code)
    assert refused.is_error
    assert _text(refused) == (f'approval code {code} was issued for switch_traffic with arguments '
                              '{"emergency":false}, not deploy_to_standby with arguments '
                              '{"migrate":false,"ref":"v2"}; a code approves only the call it was issued for')
    deploy = _data(_call(tools, "deploy_to_standby", ref="v2"))
    assert deploy["changed"] is False and deploy["approval"]["code"] != code
    assert estate.deploys == [] and estate.switches == 0


@needs_root
def test_an_approval_goes_stale_when_the_standby_release_changes(store: ApprovalStore) -> None:
    estate = Estate()
    tools = _tools(store, estate)
    code = _data(_call(tools, "switch_traffic"))["approval"]["code"]
    as_approver(store, store.get(code))
    estate.releases["green"] = "r3"
    stale = _call(tools, "switch_traffic")
    assert stale.is_error
    assert _text(stale).startswith(f"stale: approval {code} no longer matches: standbyRelease: r2 -> r3")
    assert (estate.live, estate.switches) == ("blue", 0)
    assert not list(store.requests_dir.glob(f"{code}.*"))


@needs_root
def test_an_unapproved_code_for_an_old_plan_is_withdrawn(store: ApprovalStore) -> None:
    estate = Estate()
    tools = _tools(store, estate)
    code = _data(_call(tools, "switch_traffic"))["approval"]["code"]
    estate.releases["green"] = "r3"
    fresh = _data(_call(tools, "switch_traffic", approval_code=code))
    assert fresh["approval"]["code"] != code and code in fresh["note"]
    with pytest.raises(ApprovalError, match="is unknown"):
        store.get(code)


@needs_root
def test_waiting_call_runs_once_the_person_approves(store: ApprovalStore) -> None:
    estate = Estate()
    tools = _tools(store, estate)
    code = _data(_call(tools, "switch_traffic"))["approval"]["code"]
    ctx = FakeCtx()

    async def main() -> CallToolResult:
        async def person() -> None:
            await anyio.sleep(0.2)
            as_approver(store, store.get(code))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(person)
            result: CallToolResult = await tools.switch_traffic(ctx, approval_code=code, wait_seconds=30)  # type: ignore[arg-type]
        return result

    done = _data(anyio.run(main))
    assert done["colour"] == "green" and estate.switches == 1
    assert any(f"waiting for approval {code}" in m for m in ctx.progress)


@needs_root
def test_secrets_never_reach_the_store_or_the_result(store: ApprovalStore) -> None:
    estate = Estate(releases={"blue": "r1", "green": "hunter2-secret"})
    tools = _tools(store, estate)
    result = _call(tools, "switch_traffic")
    assert "hunter2-secret" not in _text(result)
    assert "hunter2-secret" not in json.dumps(result.structured_content)
    for path in store.requests_dir.iterdir():
        assert "hunter2-secret" not in path.read_text()


@needs_root
def test_the_run_names_who_approved_it_on_which_terminal(store: ApprovalStore) -> None:
    estate = Estate()
    tools = _tools(store, estate)
    code = _data(_call(tools, "switch_traffic"))["approval"]["code"]
    as_approver(store, store.get(code))
    _data(_call(tools, "switch_traffic"))
    assert "approved by ops (as nobody) on /dev/pts/7 (terminal, code " + code in estate.who


def test_without_an_approver_or_a_dialog_nothing_can_approve(tmp_path: Path) -> None:
    estate = Estate()
    tools = _tools(ApprovalStore(tmp_path / "none", "lab"), estate)
    result = _call(tools, "switch_traffic")
    assert result.is_error and "no approver account is configured" in _text(result)
    assert (result.structured_content or {})["changed"] is False
    assert (estate.live, estate.switches) == ("blue", 0) and not (tmp_path / "none").exists()


class DialogCtx(FakeCtx):
    """A client with an approval dialog; the person's answer is `answer`."""

    def __init__(self, answer: bool) -> None:
        super().__init__()
        elicitation = SimpleNamespace(form=object(), url=None)
        self.session = SimpleNamespace(client_capabilities=SimpleNamespace(elicitation=elicitation),
                                       can_send_request=True)
        self.answer = answer
        self.asked: list[str] = []

    async def elicit(self, message: str, schema: Any) -> Any:
        from mcp.server.mcpserver import AcceptedElicitation

        self.asked.append(message)
        return AcceptedElicitation(data=schema(approve=self.answer))


@pytest.mark.parametrize("answer", [True, False])
def test_the_dialog_approves_in_memory(tmp_path: Path, answer: bool) -> None:
    estate = Estate()
    tools = _tools(ApprovalStore(tmp_path / "none", "lab"), estate)
    ctx = DialogCtx(answer)

    async def main() -> CallToolResult:
        result: CallToolResult = await tools.switch_traffic(ctx)  # type: ignore[arg-type]
        return result

    result = anyio.run(main)
    assert "Switch live traffic from blue to green" in ctx.asked[0]
    assert estate.switches == (1 if answer else 0)
    if answer:
        assert "the person at the MCP client" in estate.who
    else:
        assert _data(result)["changed"] is False
    assert not (tmp_path / "none").exists()


# ------------------------------------------------------------------------ exposure and the journal


def test_known_secrets_include_the_database_password() -> None:
    t = load_stack(REPO, "lab")
    env = {t.database.password_env: "db-pa55-word", "PGPASSWORD": "pg-pa55", "UNRELATED": "visible"}
    values = {s.reveal() for s in known_secrets(t, env)}
    assert {"db-pa55-word", "pg-pa55"} <= values and "visible" not in values


@pytest.mark.parametrize(("text", "expected"), [
    ("plain", "[untrusted-output]plain[/untrusted-output]"),
    ("a [/untrusted-output] b", "[untrusted-output]a [untrusted-output?] b[/untrusted-output]"),
    ("[ / UNTRUSTED-OUTPUT ]", "[untrusted-output][untrusted-output?][/untrusted-output]"),
])
def test_quote_untrusted(text: str, expected: str) -> None:
    assert quote_untrusted(text) == expected


def test_mark_tree_quotes_only_remote_output() -> None:
    data = {"ok": False, "colour": "green", "error": "npm ERR!", "colors": {"blue": {"errors": ["x"]}},
            "entries": [{"type": "deploy", "ref": "v2", "error": None}]}
    assert mark_tree(data) == {
        "ok": False, "colour": "green", "error": "[untrusted-output]npm ERR![/untrusted-output]",
        "colors": {"blue": {"errors": ["[untrusted-output]x[/untrusted-output]"]}},
        "entries": [{"type": "deploy", "ref": "v2", "error": None}]}


def test_journal_errors_are_redacted_before_they_are_stored() -> None:
    state = State.fresh("blue").with_deploy(
        color="green", ref="v2", sha=None, release=None, who="ops", when=0.0, duration_ms=1,
        result="failed", failed_step="build", error="leaked db-pa55-word and password=abc")
    scrubbed = scrub_errors(state, [Sensitive("db-pa55-word")])
    assert scrubbed.history[0]["error"] == "leaked [REDACTED] and password=[REDACTED]"
    assert scrubbed.history[0]["ref"] == "v2"


def test_lock_file_is_private() -> None:
    command = create_exclusive_command("/var/lib/bluegreen/lock.json")
    assert 'mkdir -p -m 700 -- "$d"' in command and 'chmod 600 -- "$t"' in command
    assert "644" not in command


def test_request_file_mode_survives_umask(own_store: ApprovalStore) -> None:
    old = os.umask(0)
    try:
        request = _request(own_store)
    finally:
        os.umask(old)
    assert stat.S_IMODE((own_store.requests_dir / f"{request.code}.request.json").stat().st_mode) == 0o640


def test_cli_approve_without_a_terminal_approves_nothing(own_store: ApprovalStore,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from bluegreen.faces.cli import main

    request = _request(own_store)
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    out, err = io.StringIO(), io.StringIO()
    args = ["approve", request.code, "--stack", "lab", "--approvals-dir", str(own_store.root.parent)]
    assert main(args, out=out, err=err) == 2
    assert "needs a person at a terminal" in err.getvalue()
    assert "Traceback" not in err.getvalue()
    assert own_store.grant(request.code) is None
    assert main(["approve", "not-a-code", "--stack", "lab", "--approvals-dir", str(own_store.root.parent)],
                out=out, err=err) == 1
    assert "'not-a-code' is not an approval code" in err.getvalue()


@needs_root
def test_an_approved_deploy_runs_pinned_to_the_commit_and_migrations_the_person_saw(store: ApprovalStore) -> None:
    estate = Estate()
    tools = _tools(store, estate)
    code = _data(_call(tools, "deploy_to_standby", ref="main", migrate=True))["approval"]["code"]
    as_approver(store, store.get(code))
    _data(_call(tools, "deploy_to_standby", ref="main", migrate=True))
    assert estate.deploys == ["main"]
    pin = estate.pins[0]
    assert (pin.ref, pin.sha, pin.pending) == ("main", "1" * 40, (("20250101000000_add", "ab" * 32),))


@needs_root
def test_a_declined_code_gives_way_to_a_new_plan_or_answers_the_call_that_names_it(store: ApprovalStore) -> None:
    estate = Estate()
    tools = _tools(store, estate)
    code = _data(_call(tools, "switch_traffic"))["approval"]["code"]
    as_approver(store, store.get(code), approved=False)
    fresh = _data(_call(tools, "switch_traffic"))
    assert fresh["approval"]["code"] != code and f"approval code {code} was declined by ops" in fresh["note"]
    named = _data(_call(tools, "switch_traffic"))["approval"]["code"]
    as_approver(store, store.get(named), approved=False)
    refused = _call(tools, "switch_traffic", approval_code=named)
    assert refused.is_error and f"approval code {named} was declined" in _text(refused)
    assert estate.switches == 0


@needs_root
def test_a_rewritten_request_file_is_written_again_and_an_approval_of_it_misses(store: ApprovalStore) -> None:
    estate = Estate()
    tools = _tools(store, estate)
    code = _data(_call(tools, "switch_traffic"))["approval"]["code"]
    path = store.requests_dir / f"{code}.request.json"
    tampered = {**json.loads(path.read_text()), "nonce": "f" * 32, "description": "harmless"}
    path.write_text(json.dumps(tampered))
    as_approver(store, Request.from_file(tampered))  # the person approved what the file showed
    again = _data(_call(tools, "switch_traffic", approval_code=code))
    assert again["changed"] is False and "written again" in again["note"] and "was ignored" in again["note"]
    assert json.loads(path.read_text())["nonce"] == store.get(code).nonce
    assert estate.switches == 0
