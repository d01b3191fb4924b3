"""The real Next.js app in the lab (`sample-next/`, refs `next-v1`/`next-v2`): its Server Action
form, submitted the way the browser does, and where a deploy's time went.

A Server Component's `<form action={fn}>` renders a hidden `$ACTION_ID_<id>` field; the browser
posts the form to the page with that id in a `Next-Action` header, which runs the action. The id
is fixed at build time from NEXT_SERVER_ACTIONS_ENCRYPTION_KEY, the action's export name and its
file's path (absolute with webpack, project-relative with Turbopack), so a form rendered by one
colour and posted to the other after a switch only works when both were built with the same key
(and, with webpack, in the same directory).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bluegreen.hosts import health
from bluegreen.hosts.health import SERVED_BY_HEADER
from bluegreen.model.errors import BlueGreenError
from bluegreen.model.progress import StepRecord
from bluegreen.model.topology import Topology

NEXT_REFS = ("next-v1", "next-v2")
_ACTION_FIELD = re.compile(r'<input[^>]*\bname="(\$ACTION_ID_[0-9a-f]+)"')
_COLOR = re.compile(r'<span id="color">([a-z]+)</span>')
BUILD_TIMINGS = ".next/bluegreen-build.json"


class NextAppError(BlueGreenError):
    """The real app's page or form did not look or behave as expected."""


@dataclass(frozen=True)
class ActionForm:
    """The Server Action form of one rendered page."""

    field: str  # `$ACTION_ID_<hex>`
    color: str | None  # the colour that rendered it (from the page)
    served_by: str | None  # HAProxy's X-Served-By for that response

    @property
    def action_id(self) -> str:
        return self.field.removeprefix("$ACTION_ID_")


def parse_action_form(html: str) -> tuple[str, str | None]:
    """The `$ACTION_ID_...` field name and the rendering colour from the home page's HTML."""
    fields = _ACTION_FIELD.findall(html)
    if len(fields) != 1:
        raise NextAppError(f"expected one Server Action form on the page, found {len(fields)}")
    color = _COLOR.search(html)
    return fields[0], color.group(1) if color else None


def _client(ca_file: str | None) -> httpx.Client:
    # https through HAProxy: verify the lab's (or the system's) CA, as every other client does.
    return httpx.Client(verify=health.ssl_context(ca_file), trust_env=False)


def _tls(url: str, server_name: str | None, headers: dict[str, str]) -> dict[str, Any]:
    if server_name and url.startswith("https:"):
        headers.setdefault("Host", server_name)
        return {"sni_hostname": server_name}
    return {}


def render_form(url: str, *, ca_file: str | None = None, server_name: str | None = None,
                timeout: float = 10.0) -> ActionForm:
    """GET the home page and take its Server Action form."""
    headers = {"Connection": "close"}
    extensions = _tls(url, server_name, headers)
    with _client(ca_file) as client:
        resp = client.get(url, timeout=timeout, headers=headers, extensions=extensions)
    if resp.status_code != 200:
        raise NextAppError(f"GET {url}: HTTP {resp.status_code}")
    name, color = parse_action_form(resp.text)
    return ActionForm(field=name, color=color, served_by=resp.headers.get(SERVED_BY_HEADER))


@dataclass(frozen=True)
class Submission:
    status: int
    served_by: str | None
    body: str


def submit(url: str, form: ActionForm, values: Mapping[str, str], *, ca_file: str | None = None,
           server_name: str | None = None, timeout: float = 20.0) -> Submission:
    """POST the form as the browser does with JavaScript on: header `Next-Action: <id>`, and the
    FormData argument encoded as React's `encodeReply` does (the fields as `_1_<name>`, then the
    root `0` = `["$K1"]`). The no-JavaScript form post (`$ACTION_ID_<id>` field) fails on Next
    15.5.29's Turbopack builds ("Cannot read properties of undefined (reading 'bind')", seen on
    the lab)."""
    # The root part comes last, as React writes it: the server decodes the stream in order, and a
    # `$K1` reference only sees the `_1_` fields that came before it.
    parts = {**{f"_1_{k}": (None, v) for k, v in values.items()}, "0": (None, '["$K1"]')}
    headers = {"Connection": "close", "Next-Action": form.action_id, "Accept": "text/x-component"}
    extensions = _tls(url, server_name, headers)
    with _client(ca_file) as client:
        resp = client.post(url, files=parts, timeout=timeout, headers=headers, extensions=extensions)
    return Submission(resp.status_code, resp.headers.get(SERVED_BY_HEADER), resp.text[:2000])


# --------------------------------------------------------------------------- deploy timings

PHASES = ("install", "generate", "build", "migrate", "reload", "health")


@dataclass
class DeployTimings:
    """Where one deploy's wall time went: the app's own commands, and the tool around them."""

    total: float
    phases: dict[str, float] = field(default_factory=dict)
    tool: float = 0.0  # everything else: SSH round trips, git, snapshot, checks, backups, prune

    def to_json(self) -> dict[str, float]:
        return {**{k: round(v, 2) for k, v in self.phases.items()}, "tool": round(self.tool, 2),
                "total": round(self.total, 2)}


def split_deploy(steps: Iterable[StepRecord], total: float,
                 build_timings: Mapping[str, float] | None = None) -> DeployTimings:
    """Sort one deploy's progress steps into install / generate / build / migrate / reload / health.

    The build step runs `prisma generate` and `next build`; the app's build script times both
    (`build_timings`), so the step is split between them and what is left over (npm, node start-up)
    stays with `build`. Only the migration command itself counts as migrate: the reading of
    `_prisma_migrations` and the backup before it are the tool's work.
    """
    phases = dict.fromkeys(PHASES, 0.0)
    for s in steps:
        name = s.name
        if name == "install dependencies":
            phases["install"] += s.seconds
        elif name == "build":
            phases["build"] += s.seconds
        elif name.startswith("apply ") and "migration" in name:
            phases["migrate"] += s.seconds
        elif name.startswith("reload PM2"):
            phases["reload"] += s.seconds
        elif name.startswith("wait for health"):
            phases["health"] += s.seconds
    if build_timings and phases["build"]:
        generate = float(build_timings.get("generateSeconds", 0.0))
        phases["generate"] = min(generate, phases["build"])
        phases["build"] -= phases["generate"]
    tool = max(0.0, total - sum(phases.values()))
    return DeployTimings(total=total, phases=phases, tool=tool)


def read_build_timings(t: Topology, color: str, release: str) -> dict[str, float] | None:
    """The timings the app's build script wrote into the release (lab hosts are local dirs)."""
    host = t.app_host(color)
    path = Path(host.path(f"{t.app.dir}/releases/{release}/{BUILD_TIMINGS}"))
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return {k: float(v) for k, v in data.items() if isinstance(v, int | float)}


def format_timings(rows: Mapping[str, DeployTimings]) -> str:
    """A table: one row per deploy, one column per phase, seconds."""
    header = ["deploy", *PHASES, "tool", "total"]
    width = max([len(header[0]), *(len(k) for k in rows)])
    lines = [f"  {header[0]:<{width}}  " + "  ".join(f"{h:>8}" for h in header[1:])]
    for name, timing in rows.items():
        values = [timing.phases.get(p, 0.0) for p in PHASES] + [timing.tool, timing.total]
        lines.append(f"  {name:<{width}}  " + "  ".join(f"{v:8.1f}" for v in values))
    return "\n".join(lines)
