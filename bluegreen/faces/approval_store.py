"""Approvals only a person can give, never the assistant, even one that runs programs as you.

A gated MCP call never hands the model anything that works by itself. The server keeps each
*request* (the tool, its arguments, the plan and the estate it was planned against) in its own
memory under a short code such as `K7QF-3MXD`, with a random *nonce* it never returns to the model,
and returns the plan and the code. The code only names the request. A person approves it:

- in the MCP client's own dialog (elicitation): the answer comes from the client's user interface,
  and the server approves the request in memory (no file anyone could write);
- in a terminal, as a separate OS account (the *approver*, reached with `sudo -u <approver>`, which
  asks for the person's own password): `bluegreen approve CODE` reads the request the server wrote
  for it (`requests/`), shows the plan, and writes a *grant* into `grants/`, a directory only the
  approver can write. The grant carries the request's digest and nonce, who approved and on which
  terminal.

The server runs the call only when it is made again, a grant exists that the approver account
owns (nobody else can write it), its nonce is the one this server issued for that code and has not
spent, and re-planning gives the same digest. A grant the server cannot trust or read is ignored
(and reported), never fatal. Requests live in memory: a request file rewritten by anyone changes
nothing the server checks, and a grant copied or replayed never matches an unspent nonce.

Shared layout (made once by an administrator, `scripts/approver-setup.sh`), under
`$BLUEGREEN_APPROVALS_DIR` (default `/var/lib/bluegreen/approvals`):

    <stack>/            root:root        0755
    <stack>/requests/   you:<approver>   2750   CODE.request.json 0640 (the server writes, the approver reads)
    <stack>/grants/     <approver>:you   2750   CODE.grant.json   0640 (the approver writes, the server reads)

Times are wall-clock epoch seconds (two processes share them).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import re
import secrets
import stat
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.faces.approval import ApprovalError, canonical, describe_changes, digest
from bluegreen.model.errors import ConfigError

log = logging.getLogger("bluegreen.approvals")

APPROVALS_DIR_ENV = "BLUEGREEN_APPROVALS_DIR"
APPROVER_ENV = "BLUEGREEN_APPROVER"
SHARED_ROOT = Path("/var/lib/bluegreen/approvals")
# No 0/O, 1/I/L, U or 5/S look-alikes: a person reads the code off one screen and types it.
CODE_ALPHABET = "ABCDEFGHJKMNPQRTVWXYZ2346789"
CODE_LENGTH = 8
_CODE_RE = re.compile(rf"^[{CODE_ALPHABET}]{{4}}-[{CODE_ALPHABET}]{{4}}$")
GRANT_MAX_BYTES = 64 * 1024

GATED_TOOLS = ("deploy_to_standby", "switch_traffic", "rollback")


def new_code(randbelow: Callable[[int], int] = secrets.randbelow) -> str:
    chars = "".join(CODE_ALPHABET[randbelow(len(CODE_ALPHABET))] for _ in range(CODE_LENGTH))
    return f"{chars[:4]}-{chars[4:]}"


def normalize_code(text: str) -> str:
    """`k7qf 3mxd`, `K7QF3MXD` and `K7QF-3MXD` are the same code; anything else is refused."""
    raw = re.sub(r"[\s-]", "", str(text)).upper()
    code = f"{raw[:4]}-{raw[4:]}"
    if len(raw) != CODE_LENGTH or not _CODE_RE.match(code):
        shown = str(text)[:40]
        raise ApprovalError(f"{shown!r} is not an approval code (expected 8 letters and digits "
                            "like K7QF-3MXD)")
    return code


def _stack_dir(stack: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}", stack):
        raise ConfigError(f"stack {stack!r}: expected letters, digits, '.', '_' or '-'")
    return stack


def default_root(environ: Mapping[str, str], stack: str) -> Path:
    """`$BLUEGREEN_APPROVALS_DIR/<stack>`, else `/var/lib/bluegreen/approvals/<stack>`."""
    name = _stack_dir(stack)
    override = environ.get(APPROVALS_DIR_ENV, "").strip()
    if override:
        base = Path(override).expanduser()
        if not base.is_absolute():
            raise ConfigError(f"{APPROVALS_DIR_ENV}={override!r}: expected an absolute path")
        return base / name
    return SHARED_ROOT / name


def approver_from(environ: Mapping[str, str]) -> str | None:
    """The approver account named by `BLUEGREEN_APPROVER` (checked: it exists and is not you)."""
    name = environ.get(APPROVER_ENV, "").strip()
    if not name:
        return None
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        raise ConfigError(f"{APPROVER_ENV}={name!r}: no such OS account (see docs/MCP.md: "
                          "scripts/approver-setup.sh makes one)") from None
    if uid == os.getuid():
        raise ConfigError(f"{APPROVER_ENV}={name!r} is the account this server runs as: approvals "
                          "must come from another account, or anything running as you could give them")
    return name


def request_digest(tool: str, args: Mapping[str, Any], plan: Any, estate: Any) -> str:
    """What a person approves: the call and the whole plan and estate it would act on."""
    return digest({"tool": tool, "arguments": dict(args), "plan": plan, "estate": estate})


@dataclass(frozen=True)
class Request:
    code: str
    stack: str
    tool: str
    args: Mapping[str, Any]
    plan: Mapping[str, Any]
    estate: Mapping[str, Any]
    description: str
    created_at: float
    expires_at: float
    # Random, issued by the server, copied into the grant by the approver; never shown to the model.
    nonce: str = field(default="", repr=False)

    @property
    def digest(self) -> str:
        return request_digest(self.tool, self.args, self.plan, self.estate)

    def same_call(self, tool: str, args: Mapping[str, Any]) -> bool:
        return self.tool == tool and canonical(self.args) == canonical(dict(args))

    def to_file(self) -> dict[str, Any]:
        return {"code": self.code, "stack": self.stack, "tool": self.tool, "arguments": dict(self.args),
                "plan": self.plan, "estate": self.estate, "description": self.description,
                "createdAt": self.created_at, "expiresAt": self.expires_at, "nonce": self.nonce}

    @classmethod
    def from_file(cls, data: Mapping[str, Any]) -> Request:
        try:
            return cls(code=str(data["code"]), stack=str(data["stack"]), tool=str(data["tool"]),
                       args=dict(data["arguments"]), plan=dict(data["plan"]), estate=dict(data["estate"]),
                       description=str(data["description"]), created_at=float(data["createdAt"]),
                       expires_at=float(data["expiresAt"]), nonce=str(data.get("nonce") or ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise ApprovalError(f"approval request is damaged ({type(exc).__name__}: {exc}); "
                                "ask for a new plan") from None


@dataclass(frozen=True)
class Grant:
    code: str
    digest: str
    approved_by: str
    approved_at: float
    via: str  # "terminal" or "elicitation"
    nonce: str = field(default="", repr=False)
    terminal: str | None = None  # the person's terminal (`/dev/pts/3`), for the journal
    approved: bool = True  # False: the person declined (the request is withdrawn)

    def to_file(self) -> dict[str, Any]:
        return {"code": self.code, "digest": self.digest, "nonce": self.nonce, "approved": self.approved,
                "approvedBy": self.approved_by, "terminal": self.terminal, "approvedAt": self.approved_at,
                "via": self.via}

    @classmethod
    def from_file(cls, data: Mapping[str, Any]) -> Grant:
        try:
            approved = data["approved"]
            if not isinstance(approved, bool):
                raise TypeError("approved is not true or false")
            terminal = data.get("terminal")
            return cls(code=str(data["code"]), digest=str(data["digest"]), nonce=str(data["nonce"]),
                       approved=approved, approved_by=str(data["approvedBy"]),
                       terminal=str(terminal) if terminal is not None else None,
                       approved_at=float(data["approvedAt"]), via=str(data["via"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ApprovalError(f"malformed ({type(exc).__name__}: {exc})") from None

    def who(self) -> str:
        """`alice at a terminal (/dev/pts/3, approver bluegreen-approver)`: for logs and the journal."""
        return self.approved_by + (f" on {self.terminal}" if self.terminal else "")


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def write_exclusive(path: Path, data: Mapping[str, Any], mode: int) -> None:
    """`data` as JSON at `path`, written under a temporary name and linked into place: never
    half-visible, never replacing an existing file (FileExistsError)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), mode)  # whatever the umask
            fh.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def read_json_file(path: Path, *, owner: int | None = None, max_bytes: int = GRANT_MAX_BYTES) -> dict[str, Any] | None:
    """A small JSON object from a regular file that is no symlink and has one name; with `owner`,
    only if that uid owns it and nobody else can write it. None if it does not exist;
    ApprovalError saying why it is not trusted or not readable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ApprovalError(f"cannot read it ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ApprovalError("not a regular file")
        if owner is not None:
            if info.st_uid != owner:
                raise ApprovalError(f"it belongs to {_user(info.st_uid)}, not to the approver {_user(owner)}")
            if stat.S_IMODE(info.st_mode) & 0o022:
                raise ApprovalError(f"others can write it (mode {stat.S_IMODE(info.st_mode):o})")
            if info.st_nlink != 1:
                raise ApprovalError("it has other names (hard links)")
        raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApprovalError("too large")
    try:
        data = json.loads(raw)
    except ValueError:
        raise ApprovalError("not JSON") from None
    if not isinstance(data, dict):
        raise ApprovalError("not a JSON object")
    return data


@dataclass
class _Live:
    request: Request
    dialog: Grant | None = None  # an approval given in the client's dialog (elicitation)


class ApprovalStore:
    """The server's side: its requests (in memory, and as files for the approver) and the
    grants it trusts (written by the approver account into a directory only it can write)."""

    def __init__(self, root: Path, stack: str, *, approver: str | None = None,
                 clock: Callable[[], float] = time.time, code_factory: Callable[[], str] = new_code) -> None:
        self.root = root
        self.stack = stack
        self.approver = approver
        self.clock = clock
        self._new_code = code_factory
        self._live: dict[str, _Live] = {}
        self._spent: set[str] = set()  # nonces of requests that ran, were declined or withdrawn
        self.ignored: dict[str, str] = {}  # code -> why its grant file was not trusted

    @property
    def requests_dir(self) -> Path:
        return self.root / "requests"

    @property
    def grants_dir(self) -> Path:
        return self.root / "grants"

    @property
    def terminal_approval(self) -> bool:
        return self.approver is not None

    def approve_command(self, code: str) -> str | None:
        if self.approver is None:
            return None
        extra = f" --approvals-dir {self.root.parent}" if self.root.parent != SHARED_ROOT else ""
        return f"sudo -u {self.approver} {approver_program(self.root)} approve {code} --stack {self.stack}{extra}"

    # -- the shared directories --------------------------------------------------------

    def ensure(self) -> None:
        """With an approver: check the layout the server relies on, or say how to make it."""
        if self.approver is None:
            return
        approver_uid = pwd.getpwnam(self.approver).pw_uid
        setup = (f"run scripts/approver-setup.sh {self.approver} {_user(os.getuid())} {self.stack} "
                 f"{self.root.parent} as root (docs/MCP.md)")
        for path, owner in ((self.requests_dir, os.getuid()), (self.grants_dir, approver_uid)):
            try:
                info = path.lstat()
            except OSError as exc:
                raise ConfigError(f"approvals directory {path}: {exc.strerror}; {setup}") from None
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != owner or stat.S_IMODE(info.st_mode) & 0o022:
                raise ConfigError(f"approvals directory {path} must be a directory of {_user(owner)} that "
                                  f"nobody else can write (it is {_user(info.st_uid)}, mode "
                                  f"{stat.S_IMODE(info.st_mode):o}); {setup}")
        parent = self.root.lstat()
        # Root owns it in the layout; a server running as root is warned about at start-up.
        if (parent.st_uid == os.getuid() != 0) or stat.S_IMODE(parent.st_mode) & 0o022:
            raise ConfigError(f"approvals directory {self.root} must not be writable by you or others "
                              f"(you could swap its grants/ for your own); {setup}")

    def _request_file(self, code: str) -> Path:
        return self.requests_dir / f"{code}.request.json"

    def _grant_file(self, code: str) -> Path:
        return self.grants_dir / f"{code}.grant.json"

    # -- requests ---------------------------------------------------------------------

    def create(self, tool: str, args: Mapping[str, Any], plan: Mapping[str, Any],
               estate: Mapping[str, Any], description: str, ttl: float) -> Request:
        self.sweep()
        now = self.clock()
        for _ in range(20):
            code = self._new_code()
            if code in self._live or (self.approver and self._grant_file(code).exists()):
                continue
            request = Request(code=code, stack=self.stack, tool=tool, args=dict(args), plan=dict(plan),
                              estate=dict(estate), description=description, created_at=now,
                              expires_at=now + ttl, nonce=secrets.token_hex(16))
            if self.approver is not None:
                try:
                    write_exclusive(self._request_file(code), request.to_file(), 0o640)
                except FileExistsError:
                    continue
                except OSError as exc:
                    raise ConfigError(f"cannot write approval request into {self.requests_dir}: "
                                      f"{exc.strerror}") from None
            self._live[code] = _Live(request)
            return request
        raise ApprovalError("could not pick a free approval code")  # pragma: no cover

    def get(self, code: str) -> Request:
        """The live request `code` names, or ApprovalError saying why there is none."""
        code = normalize_code(code)
        live = self._live.get(code)
        if live is None:
            raise ApprovalError(f"approval code {code} is unknown: it was never issued by this server for "
                                f"stack {self.stack}, or it was used, declined, or expired and cleaned up")
        request = live.request
        if self.clock() >= request.expires_at:
            self.discard(code)
            raise ApprovalError(f"approval code {code} expired "
                                f"({request.expires_at - request.created_at:g}s after it was issued); "
                                "ask for a new plan")
        return request

    def keep_request_file(self, code: str) -> bool:
        """Write the request file again if anyone changed or removed it (True then). Nothing the
        server checks comes from it, but the approver shows it: a rewritten one would only make
        the person's approval miss (its nonce or digest would not match)."""
        live = self._live.get(normalize_code(code))
        if live is None or self.approver is None:
            return False
        path = self._request_file(live.request.code)
        try:
            if read_json_file(path, max_bytes=4 * 1024 * 1024) == json.loads(json.dumps(
                    live.request.to_file(), default=str)):
                return False
        except ApprovalError:
            pass
        with contextlib.suppress(OSError):
            path.unlink()
        try:
            write_exclusive(path, live.request.to_file(), 0o640)
        except OSError as exc:
            log.warning("cannot write the approval request %s again: %s", path, exc)
            return False
        log.warning("the approval request file %s had been changed by someone else; written again", path)
        return True

    def pending(self, tool: str, args: Mapping[str, Any]) -> list[Request]:
        """Live requests for exactly this call, newest first."""
        found = []
        for code in list(self._live):
            try:
                request = self.get(code)
            except ApprovalError:
                continue
            if request.same_call(tool, args):
                found.append(request)
        return sorted(found, key=lambda r: r.created_at, reverse=True)

    def discard(self, code: str) -> None:
        """Withdraw a request: its nonce is spent, so no grant for it ever counts."""
        code = normalize_code(code)
        live = self._live.pop(code, None)
        if live is not None:
            self._spent.add(live.request.nonce)
        if self.approver is not None:
            with contextlib.suppress(OSError):
                self._request_file(code).unlink()

    def sweep(self) -> None:
        """Forget expired requests."""
        now = self.clock()
        for code, live in list(self._live.items()):
            if now >= live.request.expires_at:
                self.discard(code)

    # -- grants -----------------------------------------------------------------------

    def approve_in_dialog(self, request: Request, *, approved_by: str) -> Grant:
        """The person approved `request` in the client's dialog: held in memory, never a file."""
        live = self._live.get(request.code)
        if live is None or live.request.nonce != request.nonce:
            raise ApprovalError(f"approval code {request.code} is no longer pending")
        live.dialog = Grant(code=request.code, digest=request.digest, nonce=request.nonce,
                            approved_by=approved_by, approved_at=self.clock(), via="elicitation")
        return live.dialog

    def grant(self, code: str) -> Grant | None:
        """The approval of the live request `code`, or None. A grant file that is not the
        approver's own, is malformed, or names another request is ignored (and said why in
        `ignored`); a declined one withdraws the request (ApprovalError)."""
        code = normalize_code(code)
        live = self._live.get(code)
        if live is None:
            return None
        if live.dialog is not None:
            return live.dialog
        if self.approver is None:
            return None
        try:
            found = self._read_grant(code, live.request)
        except ApprovalError as exc:
            why = f"the grant file {self._grant_file(code)} was ignored: {exc}"
            if self.ignored.get(code) != why:
                log.warning("%s", why)
            self.ignored[code] = why
            return None
        if found is not None and not found.approved:
            self.discard(code)
            raise ApprovalError(f"approval code {code} was declined by {found.who()}; nothing was changed")
        return found

    def _read_grant(self, code: str, request: Request) -> Grant | None:
        approver_uid = pwd.getpwnam(str(self.approver)).pw_uid
        try:
            folder = self.grants_dir.lstat()
        except OSError as exc:
            raise ApprovalError(f"its directory is unreadable ({exc.strerror})") from None
        if not stat.S_ISDIR(folder.st_mode) or folder.st_uid != approver_uid or stat.S_IMODE(folder.st_mode) & 0o022:
            raise ApprovalError(f"its directory is not the approver's own (owner {_user(folder.st_uid)}, "
                                f"mode {stat.S_IMODE(folder.st_mode):o})")
        data = read_json_file(self._grant_file(code), owner=approver_uid)
        if data is None:
            return None
        grant = Grant.from_file(data)
        if grant.code != code or grant.nonce != request.nonce or request.nonce in self._spent:
            raise ApprovalError("it is for another request (code or nonce differ): a copy or a replay")
        return grant

    def redeem(self, request: Request, plan: Mapping[str, Any], estate: Mapping[str, Any]) -> Grant:
        """Spend the approval of `request` for a call that re-planned to `plan` on `estate`.

        Raises ApprovalError when there is no approval, or when the plan or estate changed since
        the person approved it (then the request is spent too: the plan it showed no longer exists).
        """
        grant = self.grant(request.code)
        if grant is None:
            raise ApprovalError(f"approval code {request.code} is not approved yet")
        live = self._live.get(request.code)
        if live is None or live.request.nonce != request.nonce or request.nonce in self._spent:
            raise ApprovalError(f"approval code {request.code} was already used")
        current = request_digest(request.tool, request.args, plan, estate)
        # Spent before it runs: exactly one call per approval, even one that then fails.
        self.discard(request.code)
        if grant.digest != request.digest or grant.digest != current:
            now = {**estate, **_prefixed(plan)}
            then = {**request.estate, **_prefixed(request.plan)}
            # In the order the server lists the facts (most telling first), not the file's order.
            ordered = {key: then.get(key) for key in now}
            ordered.update((key, value) for key, value in then.items() if key not in ordered)
            changes = describe_changes(ordered, now)
            raise ApprovalError(f"stale: approval {request.code} no longer matches: {changes}; "
                                "nothing was changed; ask for a new plan and approve that")
        return grant


def _prefixed(plan: Mapping[str, Any]) -> dict[str, Any]:
    return {f"plan.{key}": value for key, value in plan.items()}


# --------------------------------------------------------------------------- the approver's side


APPROVER_PROGRAM_FILE = "approve-with"  # written by scripts/approver-setup.sh: the program sudo allows


def approver_program(root: Path) -> str:
    """The absolute `bluegreen` the person runs as the approver: the one approver-setup.sh allowed in
    sudoers (recorded, root's, beside the stack's requests), else this installation's own. Never a
    bare name: sudo looks it up in its own secure_path, where a venv's script is not."""
    recorded = root / APPROVER_PROGRAM_FILE
    with contextlib.suppress(OSError, UnicodeDecodeError):
        info = recorded.lstat()
        if stat.S_ISREG(info.st_mode) and info.st_uid == 0 and not info.st_mode & 0o022:
            program = recorded.read_text().strip()
            if program.startswith("/") and "\n" not in program:
                return program
    own = Path(sys.executable).parent / "bluegreen"
    return str(own) if own.is_file() else "bluegreen"


def pending_codes(base: Path) -> dict[str, list[str]]:
    """Every stack's pending request codes under the shared approvals directory `base` (by file name:
    nothing in them is trusted here), for saying where a code the person typed is waiting."""
    found: dict[str, list[str]] = {}
    with contextlib.suppress(OSError):
        for requests in sorted(base.glob("*/requests")):
            with contextlib.suppress(OSError):
                codes = sorted(p.name.removesuffix(".request.json") for p in requests.glob("*.request.json"))
                if codes:
                    found[requests.parent.name] = codes
    return found


def where_pending(root: Path, code: str) -> str:
    """What the shared directory holds besides `root` (one stack's): the stack `code` waits in, or
    every stack's pending codes."""
    pending = pending_codes(root.parent)
    elsewhere = [stack for stack, codes in pending.items() if code in codes and stack != root.name]
    if elsewhere:
        return (f"it is pending for stack {elsewhere[0]}: `bluegreen approve {code} --stack {elsewhere[0]}` "
                "(as the approver account)")
    if not pending:
        return f"no MCP server is waiting for any approval under {root.parent}"
    return "pending there: " + "; ".join(f"stack {stack}: {', '.join(codes)}" for stack, codes in pending.items())


def approver_grants_dir(root: Path, code: str = "") -> Path:
    """The grants directory, checked to be this account's own (only the approver may write it)."""
    grants = root / "grants"
    try:
        info = grants.lstat()
    except OSError as exc:
        extra = f"; {where_pending(root, code)}" if code else ""
        raise ConfigError(f"approvals directory {grants} (stack {root.name}): {exc.strerror}; an approver "
                          f"is set up per stack with scripts/approver-setup.sh (see docs/MCP.md){extra}") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ConfigError(f"approvals for this stack are given by the account that owns {grants} "
                          f"({_user(info.st_uid)}), not by {_user(os.getuid())}: run `sudo -u "
                          f"{_user(info.st_uid)} bluegreen approve CODE ...`; nothing was approved")
    return grants


def read_request(root: Path, code: str, stack: str, now: float) -> Request:
    """The pending request `code` as the server wrote it for the approver."""
    code = normalize_code(code)
    path = root / "requests" / f"{code}.request.json"
    try:
        data = read_json_file(path, max_bytes=4 * 1024 * 1024)
    except ApprovalError as exc:
        raise ApprovalError(f"approval request {code}: {exc}") from None
    if data is None:
        raise ApprovalError(f"approval code {code} is unknown for stack {stack} (searched {root / 'requests'}): "
                            f"used, declined or expired; {where_pending(root, code)}")
    request = Request.from_file(data)
    if request.code != code or request.stack != stack:
        raise ApprovalError(f"approval request {code} is damaged (names {request.code}/{request.stack})")
    if now >= request.expires_at:
        raise ApprovalError(f"approval code {code} expired; ask the assistant for a new plan")
    return request


def write_grant(grants: Path, grant: Grant) -> None:
    try:
        write_exclusive(grants / f"{grant.code}.grant.json", grant.to_file(), 0o640)
    except FileExistsError:
        raise ApprovalError(f"approval code {grant.code} was already answered") from None


def sweep_grants(grants: Path, now: float, max_age: float = 3600.0) -> None:
    """The approver's own leftovers: grants older than any approval lives."""
    with contextlib.suppress(OSError):
        for path in grants.glob("*.grant.json"):
            with contextlib.suppress(OSError):
                if now - path.lstat().st_mtime > max_age:
                    path.unlink()


def person_at_terminal(environ: Mapping[str, str], approver: str) -> str:
    """Who is approving: the person sudo ran this for (its `SUDO_USER`), as the approver account."""
    person = environ.get("SUDO_USER") or "unknown (not started with sudo)"
    return f"{person} (as {approver})"
