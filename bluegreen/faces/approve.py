"""`bluegreen approve CODE`: a person at a terminal approves one pending MCP request.

Shows the request's plan exactly as it will be checked (the whole plan and estate JSON, not only
the summary), asks y/N, and only on a TTY; without one it refuses, so a program piping `y` into
it approves nothing. The grant it writes is bound to the digest of what was shown.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from bluegreen.faces.approval import ApprovalError
from bluegreen.faces.approval_store import ApprovalStore, Request, default_root
from bluegreen.faces.cli_support import Output, stack_name
from bluegreen.model.errors import ConfigError
from bluegreen.model.lock import default_holder
from bluegreen.model.timestamps import iso_utc

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """No terminal control sequences from a stored plan: they could hide or rewrite what is shown."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def render_request(request: Request, now: float) -> str:
    from bluegreen.faces.mcp_server import describe_plan  # the same words the MCP client saw

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


def approve(code: str, stack: str, *, environ: Mapping[str, str], stdin: TextIO, err: TextIO,
            store: ApprovalStore | None = None) -> dict[str, Any]:
    store = store or ApprovalStore(default_root(environ, stack), stack)
    store.ensure()
    request = store.get(code)
    if store.grant(request.code) is not None:
        raise ApprovalError(f"approval code {request.code} is already approved; call the tool again "
                            "in the MCP client")
    err.write(render_request(request, store.clock()) + "\n\n")
    if not stdin.isatty():
        raise ConfigError("bluegreen approve needs a person at a terminal (stdin is not a TTY); "
                          "nothing was approved")
    err.write(f"Approve {request.code} ({request.tool}) and let the MCP client run it? [y/N] ")
    err.flush()
    if stdin.readline().strip().lower() not in ("y", "yes"):
        store.discard(request.code)
        raise ConfigError(f"not approved: approval code {request.code} withdrawn, nothing will run")
    # Re-read: it may have expired or been withdrawn while the person read the plan.
    current = store.get(request.code)
    if current.digest != request.digest:
        raise ApprovalError(f"approval request {request.code} changed while it was shown; nothing was "
                            "approved")
    grant = store.approve(request, approved_by=f"{default_holder()} at a terminal", via="terminal")
    return {"ok": True, "code": grant.code, "tool": request.tool, "arguments": dict(request.args),
            "approvedBy": grant.approved_by, "expiresInSeconds": max(0, round(request.expires_at
                                                                          - store.clock()))}


def cmd_approve(args: argparse.Namespace, o: Output) -> int:
    """`bluegreen approve CODE`: needs only the stack's name, not the project."""
    done = approve(args.code, stack_name(args), environ=os.environ, stdin=sys.stdin, err=o.err)
    o.result(done, f"approved {done['code']}: call {done['tool']} again in the MCP client within "
             f"{done['expiresInSeconds']}s")
    return 0
