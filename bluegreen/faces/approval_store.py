"""Approvals only a person can give: a local store the MCP server and `bluegreen approve` share.

A gated MCP call never hands the model anything that works by itself. It writes a *request* (the
tool, its arguments, the plan and the estate it was planned against) under a short code such as
`K7QF-3MXD` and returns the plan and the code. The code only names the request. A person approves
it either in the MCP client's own dialog (elicitation) or in a terminal with `bluegreen approve
CODE`, which shows the plan and asks y/N on a TTY; either way a *grant* file is written beside the
request, bound to the digest of exactly what was shown. The server runs the call only when it is
made again, the grant exists, and re-planning gives the same digest: a code approved for one plan
never runs another, and a changed estate or input makes it stale.

Layout: `<root>/<CODE>.request.json` and `<root>/<CODE>.grant.json`, the directory 0700 and each
file 0600, owned by the user (anything else is refused). Times are wall-clock epoch seconds
(two processes share them). A grant is spent by renaming it away, which only one process can win.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bluegreen.faces.approval import ApprovalError, canonical, describe_changes, digest
from bluegreen.model.errors import ConfigError

APPROVALS_DIR_ENV = "BLUEGREEN_APPROVALS_DIR"
# No 0/O, 1/I/L, U or 5/S look-alikes: a person reads the code off one screen and types it.
CODE_ALPHABET = "ABCDEFGHJKMNPQRTVWXYZ2346789"
CODE_LENGTH = 8
_CODE_RE = re.compile(rf"^[{CODE_ALPHABET}]{{4}}-[{CODE_ALPHABET}]{{4}}$")

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


def default_root(environ: Mapping[str, str], stack: str) -> Path:
    """`$BLUEGREEN_APPROVALS_DIR/<stack>`, else `$XDG_STATE_HOME/bluegreen/approvals/<stack>`."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}", stack):
        raise ConfigError(f"stack {stack!r}: expected letters, digits, '.', '_' or '-'")
    override = environ.get(APPROVALS_DIR_ENV, "").strip()
    if override:
        base = Path(override).expanduser()
        if not base.is_absolute():
            raise ConfigError(f"{APPROVALS_DIR_ENV}={override!r}: expected an absolute path")
    else:
        state = environ.get("XDG_STATE_HOME", "").strip()
        home = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local" / "state"
        base = home / "bluegreen" / "approvals"
    return base / stack


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

    @property
    def digest(self) -> str:
        return request_digest(self.tool, self.args, self.plan, self.estate)

    def same_call(self, tool: str, args: Mapping[str, Any]) -> bool:
        return self.tool == tool and canonical(self.args) == canonical(dict(args))

    def to_file(self) -> dict[str, Any]:
        return {"code": self.code, "stack": self.stack, "tool": self.tool, "arguments": dict(self.args),
                "plan": self.plan, "estate": self.estate, "description": self.description,
                "createdAt": self.created_at, "expiresAt": self.expires_at}

    @classmethod
    def from_file(cls, data: Mapping[str, Any]) -> Request:
        try:
            return cls(code=str(data["code"]), stack=str(data["stack"]), tool=str(data["tool"]),
                       args=dict(data["arguments"]), plan=dict(data["plan"]), estate=dict(data["estate"]),
                       description=str(data["description"]), created_at=float(data["createdAt"]),
                       expires_at=float(data["expiresAt"]))
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

    def to_file(self) -> dict[str, Any]:
        return {"code": self.code, "digest": self.digest, "approvedBy": self.approved_by,
                "approvedAt": self.approved_at, "via": self.via}

    @classmethod
    def from_file(cls, data: Mapping[str, Any]) -> Grant:
        try:
            return cls(code=str(data["code"]), digest=str(data["digest"]),
                       approved_by=str(data["approvedBy"]), approved_at=float(data["approvedAt"]),
                       via=str(data["via"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ApprovalError(f"approval grant is damaged ({type(exc).__name__}: {exc}); "
                                "ask for a new plan") from None


class ApprovalStore:
    """Requests and grants of one stack, on the local disk, shared by processes of one user."""

    def __init__(self, root: Path, stack: str, *, clock: Callable[[], float] = time.time,
                 code_factory: Callable[[], str] = new_code) -> None:
        self.root = root
        self.stack = stack
        self.clock = clock
        self._new_code = code_factory

    # -- the directory ----------------------------------------------------------------

    def ensure(self) -> Path:
        """Create the directory 0700; refuse one another user owns or others can read or write."""
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = self.root.lstat()
        except OSError as exc:
            raise ConfigError(f"approvals directory {self.root}: {exc.strerror}") from None
        if not stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"approvals directory {self.root} is not a directory")
        if info.st_uid != os.getuid():
            raise ConfigError(f"approvals directory {self.root} belongs to uid {info.st_uid}, not to "
                              f"you (uid {os.getuid()}); refusing to trust approvals in it")
        if stat.S_IMODE(info.st_mode) & 0o077:
            with contextlib.suppress(OSError):
                os.chmod(self.root, 0o700)
            if stat.S_IMODE(self.root.lstat().st_mode) & 0o077:
                raise ConfigError(f"approvals directory {self.root} is open to other users "
                                  f"(mode {stat.S_IMODE(info.st_mode):o}); chmod 700 it")
        return self.root

    def _path(self, code: str, kind: str) -> Path:
        return self.root / f"{code}.{kind}.json"

    def _write_new(self, path: Path, data: Mapping[str, Any]) -> None:
        """Written 0600 under a temporary name, then linked into place: never half-visible, never
        replacing an existing file (link fails if the name exists)."""
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ApprovalError(f"cannot read {path.name}: {exc.strerror}") from None
        with os.fdopen(fd) as fh:
            info = os.fstat(fh.fileno())
            if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
                raise ApprovalError(f"{path} is not a private file of yours (mode "
                                    f"{stat.S_IMODE(info.st_mode):o}); refusing it")
            try:
                data = json.load(fh)
            except ValueError:
                raise ApprovalError(f"{path.name} is not JSON; ask for a new plan") from None
        if not isinstance(data, dict):
            raise ApprovalError(f"{path.name} is not a JSON object; ask for a new plan")
        return data

    def _remove(self, code: str) -> None:
        for kind in ("grant", "request", "spent"):
            with contextlib.suppress(FileNotFoundError):
                self._path(code, kind).unlink()

    # -- requests ---------------------------------------------------------------------

    def create(self, tool: str, args: Mapping[str, Any], plan: Mapping[str, Any],
               estate: Mapping[str, Any], description: str, ttl: float) -> Request:
        self.ensure()
        self.sweep()
        now = self.clock()
        for _ in range(20):
            request = Request(code=self._new_code(), stack=self.stack, tool=tool, args=dict(args),
                              plan=dict(plan), estate=dict(estate), description=description,
                              created_at=now, expires_at=now + ttl)
            try:
                self._write_new(self._path(request.code, "request"), request.to_file())
            except FileExistsError:
                continue
            return request
        raise ApprovalError("could not pick a free approval code")  # pragma: no cover

    def get(self, code: str) -> Request:
        """The live request `code` names, or ApprovalError saying why there is none."""
        code = normalize_code(code)
        data = self._read(self._path(code, "request"))
        if data is None:
            raise ApprovalError(f"approval code {code} is unknown: it was never issued for stack "
                                f"{self.stack}, or it was used, declined, or expired and cleaned up")
        request = Request.from_file(data)
        if request.code != code or request.stack != self.stack:
            raise ApprovalError(f"approval request {code} is damaged (names {request.code}/"
                                f"{request.stack}); ask for a new plan")
        if self.clock() >= request.expires_at:
            self._remove(code)
            raise ApprovalError(f"approval code {code} expired "
                                f"({request.expires_at - request.created_at:g}s after it was issued); "
                                "ask for a new plan")
        return request

    def pending(self, tool: str, args: Mapping[str, Any]) -> list[Request]:
        """Live requests for exactly this call, newest first."""
        found = []
        for path in self._listing("request"):
            try:
                request = self.get(path.name.split(".", 1)[0])
            except ApprovalError:
                continue
            if request.same_call(tool, args):
                found.append(request)
        return sorted(found, key=lambda r: r.created_at, reverse=True)

    def _listing(self, kind: str) -> Iterator[Path]:
        try:
            yield from sorted(self.root.glob(f"*.{kind}.json"))
        except OSError:
            return

    def discard(self, code: str) -> None:
        self._remove(normalize_code(code))

    def sweep(self) -> None:
        """Forget expired requests and the grants of requests that are gone."""
        now = self.clock()
        for path in self._listing("request"):
            code = path.name.split(".", 1)[0]
            try:
                data = self._read(path)
                expired = data is None or now >= float(data.get("expiresAt", 0))
            except (ApprovalError, TypeError, ValueError):
                expired = True
            if expired:
                self._remove(code)
        for path in self._listing("grant"):
            code = path.name.split(".", 1)[0]
            if not self._path(code, "request").exists():
                self._remove(code)

    # -- grants -----------------------------------------------------------------------

    def approve(self, request: Request, *, approved_by: str, via: str) -> Grant:
        """Grant exactly `request` as it was shown (its digest, recomputed from its content)."""
        grant = Grant(code=request.code, digest=request.digest, approved_by=approved_by,
                      approved_at=self.clock(), via=via)
        try:
            self._write_new(self._path(request.code, "grant"), grant.to_file())
        except FileExistsError:
            raise ApprovalError(f"approval code {request.code} is already approved") from None
        return grant

    def grant(self, code: str) -> Grant | None:
        data = self._read(self._path(normalize_code(code), "grant"))
        return Grant.from_file(data) if data is not None else None

    def redeem(self, request: Request, plan: Mapping[str, Any], estate: Mapping[str, Any]) -> Grant:
        """Spend the grant of `request` for a call that re-planned to `plan` on `estate`.

        Raises ApprovalError when there is no grant, or when the plan or estate changed since the
        person approved it (then the request is spent too: the plan it showed no longer exists).
        """
        grant = self.grant(request.code)
        if grant is None:
            raise ApprovalError(f"approval code {request.code} is not approved yet")
        current = request_digest(request.tool, request.args, plan, estate)
        if grant.digest != request.digest or grant.digest != current:
            self._remove(request.code)
            now = {**estate, **_prefixed(plan)}
            then = {**request.estate, **_prefixed(request.plan)}
            # In the order the server lists the facts (most telling first), not the file's order.
            ordered = {key: then.get(key) for key in now}
            ordered.update((key, value) for key, value in then.items() if key not in ordered)
            changes = describe_changes(ordered, now)
            raise ApprovalError(f"stale: approval {request.code} no longer matches: {changes}; "
                                "nothing was changed; ask for a new plan and approve that")
        try:
            # Exactly one caller wins the rename; a second server or a retry gets nothing.
            os.rename(self._path(request.code, "grant"), self._path(request.code, "spent"))
        except FileNotFoundError:
            raise ApprovalError(f"approval code {request.code} was already used") from None
        self._remove(request.code)
        return grant


def _prefixed(plan: Mapping[str, Any]) -> dict[str, Any]:
    return {f"plan.{key}": value for key, value in plan.items()}
