"""`bluegreen approve CODE`: a person approves one pending MCP request, as the approver account.

Run through `sudo -u <approver> bluegreen approve CODE --stack S`: sudo asks for the person's own
password, which the assistant does not have, and only the approver account can write the grants
directory the server trusts. Run as anyone else it refuses and says how to run it. It shows the
request's plan exactly as it will be checked (the whole plan and estate JSON, not only the
summary), asks y/N on a terminal, and writes a grant bound to the digest and nonce of what was
shown, naming the person (sudo's `SUDO_USER`) and the terminal; any answer but `y` declines it.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from bluegreen.faces.approval import ApprovalError, describe_plan  # the same words the MCP client saw
from bluegreen.faces.approval_store import (
    APPROVALS_DIR_ENV,
    Grant,
    Request,
    approver_grants_dir,
    default_root,
    normalize_code,
    person_at_terminal,
    read_request,
    sweep_grants,
    write_grant,
)
from bluegreen.faces.cli_support import Output, stack_name
from bluegreen.model.errors import ConfigError
from bluegreen.model.timestamps import iso_utc

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """No terminal control sequences from a stored plan: they could hide or rewrite what is shown."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def render_request(request: Request, now: float) -> str:

    body = json.dumps({"tool": request.tool, "arguments": dict(request.args), "plan": request.plan,
                       "estate": request.estate}, indent=2, sort_keys=True)
    left = max(0, round(request.expires_at - now))
    return "\n".join([
        f"Approval {request.code} for stack {request.stack}: {request.tool}",
        f"requested {iso_utc(request.created_at)}, expires in {left}s",
        "",
        printable(describe_plan(request.tool, request.plan)),
        "",
        "Exactly this will be checked before it runs (anything different makes the approval stale):",
        printable(body),
    ])


def _terminal(stdin: TextIO) -> str | None:
    try:
        return os.ttyname(stdin.fileno())
    except (OSError, ValueError, AttributeError):
        return None


def approve(code: str, stack: str, *, environ: Mapping[str, str], stdin: TextIO, err: TextIO,
            root: Path | None = None, now: float | None = None) -> dict[str, Any]:
    import time

    root = root or default_root(environ, stack)
    clock = time.time() if now is None else now
    grants = approver_grants_dir(root, normalize_code(code))  # refuses unless this is the approver account
    sweep_grants(grants, clock)
    request = read_request(root, code, stack, clock)
    if (grants / f"{request.code}.grant.json").exists():
        raise ApprovalError(f"approval code {request.code} was already answered; call the tool again "
                            "in the MCP client")
    err.write(render_request(request, clock) + "\n\n")
    if not stdin.isatty():
        raise ConfigError("bluegreen approve needs a person at a terminal (stdin is not a TTY); "
                          "nothing was approved")
    err.write(f"Approve {request.code} ({request.tool}) and let the MCP client run it? [y/N] ")
    err.flush()
    yes = stdin.readline().strip().lower() in ("y", "yes")
    # Re-read: it may have expired or been withdrawn while the person read the plan.
    current = read_request(root, request.code, stack, time.time() if now is None else now)
    if current.digest != request.digest or current.nonce != request.nonce:
        raise ApprovalError(f"approval request {request.code} changed while it was shown; nothing was "
                            "approved")
    approver = pwd.getpwuid(os.getuid()).pw_name
    grant = Grant(code=request.code, digest=request.digest, nonce=request.nonce, approved=yes,
                  approved_by=person_at_terminal(environ, approver), terminal=_terminal(stdin),
                  approved_at=time.time() if now is None else now, via="terminal")
    write_grant(grants, grant)
    if not yes:
        raise ConfigError(f"not approved: approval code {request.code} declined, nothing will run")
    return {"ok": True, "code": grant.code, "tool": request.tool, "arguments": dict(request.args),
            "approvedBy": grant.approved_by, "terminal": grant.terminal,
            "expiresInSeconds": max(0, round(request.expires_at - grant.approved_at))}


def cmd_approve(args: argparse.Namespace, o: Output) -> int:
    """`bluegreen approve CODE`: needs only the stack's name, not the project."""
    environ = dict(os.environ)
    if args.approvals_dir:
        environ[APPROVALS_DIR_ENV] = args.approvals_dir
    done = approve(args.code, stack_name(args), environ=environ, stdin=sys.stdin, err=o.err)
    o.result(done, f"approved {done['code']}: call {done['tool']} again in the MCP client within "
             f"{done['expiresInSeconds']}s")
    return 0
