"""MCP server on stdio: the deploy operations as tools for an AI assistant, over `Service`.

stdout is the protocol; every log line goes to stderr. Reading tools run directly. Mutating tools
are gated: called without `approval_token` they change nothing and return the plan with a
one-time token bound to that tool, its arguments and a fingerprint of the estate; called with
the token they re-plan, refuse if anything changed, and only then act. A client that supports
elicitation is asked for the person's confirmation instead (the token flow still works for it).

The service is synchronous: each call runs in a worker thread, and its progress events cross
back to the event loop to become `notifications/progress` for clients that sent a progressToken.
"""

from __future__ import annotations

import json
import logging
import math
import os
import traceback
from collections.abc import Callable, Mapping, Sequence
from importlib import import_module
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from mcp.server.mcpserver import AcceptedElicitation, Context, MCPServer
from mcp.types import CallToolResult, ContentBlock, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from .approval import DEFAULT_TTL_SECONDS, ApprovalBook, digest
from .errors import BlueGreenError, ConfigError
from .progress import RecordingProgress, StepRecord
from .sensitive import Sensitive, redact
from .topology import Topology

if TYPE_CHECKING:
    from .service import Service

log = logging.getLogger("bluegreen.mcp")

TTL_ENV = "BLUEGREEN_MCP_APPROVAL_TTL"
ELICITATION_ENV = "BLUEGREEN_MCP_ELICITATION"
# Values of these variables are secrets wherever they appear in a message.
SECRET_ENVS = ("PROXMOX_VE_API_TOKEN", "PULUMI_CONFIG_PASSPHRASE", "PGPASSWORD")

ServiceFactory = Callable[[RecordingProgress], "Service"]
T = TypeVar("T")


# ------------------------------------------------------------------------ pure helpers


def approval_ttl(environ: Mapping[str, str]) -> float:
    raw = environ.get(TTL_ENV, "").strip()
    if not raw:
        return DEFAULT_TTL_SECONDS
    try:
        ttl = float(raw)
    except ValueError:
        ttl = math.nan
    if not (math.isfinite(ttl) and ttl > 0):
        raise ConfigError(f"{TTL_ENV}={raw!r}: expected a positive number of seconds")
    return ttl


def elicitation_enabled(environ: Mapping[str, str]) -> bool:
    raw = environ.get(ELICITATION_ENV, "on").strip().lower()
    if raw in ("on", "1", "true", "yes", ""):
        return True
    if raw in ("off", "0", "false", "no"):
        return False
    raise ConfigError(f"{ELICITATION_ENV}={raw!r}: expected on or off")


def estate_facts(status: Mapping[str, Any], last_entry: Mapping[str, Any] | None) -> dict[str, Any]:
    """What an approval is bound to besides the plan: what would make the plan mean something else.

    From `status().to_json()`; volatile readings (latency, uptime, pm2 pids) stay out, or every
    token would go stale by itself.
    """
    standby = status.get("standby")
    color = (status.get("colors") or {}).get(standby) or {}
    return {"live": status.get("live"), "standby": standby, "standbyRelease": color.get("release"),
            "standbySha": color.get("sha"), "switchCount": status.get("switchCount"),
            "lastHistoryEntry": dict(last_entry) if last_entry else None}


def describe_plan(tool: str, plan: Mapping[str, Any]) -> str:
    """The plan in words, for the person approving it."""
    if tool == "deploy_to_standby":
        lines = [f"Deploy {plan.get('ref')} to the standby colour {plan.get('colour')} "
                 f"({plan.get('host')}); {plan.get('live')} stays live and untouched."]
        lines += [f"  - {step}" for step in plan.get("steps") or []]
        return "\n".join(lines)
    verb = "Roll back" if tool == "rollback" else "Switch"
    sha = str(plan.get("sha") or "")[:7] or "unknown"
    emergency = " EMERGENCY: checks skipped." if plan.get("emergency") else ""
    lines = [f"{verb} live traffic from {plan.get('from')} to {plan.get('colour')} "
             f"(release {plan.get('release') or 'none'}, commit {sha}, via {plan.get('path')}).{emergency}"]
    lines += [f"  check: {check}" for check in plan.get("checks") or []]
    lines += [f"  PROBLEM: {problem}" for problem in plan.get("problems") or []]
    return "\n".join(lines)


def progress_message(event: str, record: StepRecord) -> str:
    if event == "start":
        return f"{record.name} ..."
    if event == "end":
        return f"{'ok' if record.ok else 'FAILED'}: {record.name} ({record.seconds:.1f}s)"
    return record.name


def redact_tree(value: Any, secrets: Sequence[Sensitive]) -> Any:
    """Every string inside `value` redacted; keys and structure untouched, so JSON stays valid."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, Mapping):
        return {key: redact_tree(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(item, secrets) for item in value]
    return value


def ok_result(data: dict[str, Any], summary: str | None = None, *, secrets: Sequence[Sensitive] = (),
              is_error: bool = False) -> CallToolResult:
    """A result as text (for the model) and structured content (for programs), secrets scrubbed.

    Host output inside results (status errors, failed steps) can quote anything, credentials too.
    """
    text = json.dumps(redact_tree(data, secrets), indent=2, default=str)
    summary = redact(summary, secrets) if summary else None
    content: list[ContentBlock] = [TextContent(type="text", text=summary)] if summary else []
    content.append(TextContent(type="text", text=text))
    # Round-trip through JSON so structured content holds exactly what the text shows.
    return CallToolResult(content=content, structured_content=json.loads(text), is_error=is_error)


def error_result(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


class Confirmation(BaseModel):
    """The form shown to the person by clients that support elicitation."""

    approve: bool = Field(description="Run exactly this plan now")


# ------------------------------------------------------------------------ tools


class DeployTools:
    """The tools; each returns a `CallToolResult` and never raises for a foreseeable failure."""

    def __init__(self, topology: Topology, *, book: ApprovalBook,
                 service_factory: ServiceFactory | None = None, secrets: list[Sensitive] | None = None,
                 elicitation: bool = True) -> None:
        self.t = topology
        self.book = book
        self.secrets = list(secrets or [])
        self.elicitation = elicitation
        self._factory = service_factory or self._default_service

    def _default_service(self, progress: RecordingProgress) -> Service:
        from .service import Service

        return Service(self.t, progress=progress, secrets=self.secrets)

    # -- reading --------------------------------------------------------------------

    async def get_deployment_status(self, ctx: Context) -> CallToolResult:
        """Live and standby colours, health, releases (sha), PM2 processes, HAProxy backend
        states, database migrations, Proxmox container states, the lock and the last switch.
        The same data as `bluegreen status --json`. Changes nothing."""
        return await self._guard("get_deployment_status", self._status(ctx))

    async def _status(self, ctx: Context) -> CallToolResult:
        data = await self._in_thread(ctx, lambda svc: svc.status().to_json())
        return ok_result(data, secrets=self.secrets)

    async def get_deployment_history(
        self, ctx: Context,
        limit: Annotated[int, Field(ge=1, le=1000, description="how many entries, newest first")] = 20,
    ) -> CallToolResult:
        """Switches and deploys from the deployment journal, newest first. Changes nothing."""
        return await self._guard("get_deployment_history", self._history(ctx, limit))

    async def _history(self, ctx: Context, limit: int) -> CallToolResult:
        entries = await self._in_thread(ctx, lambda svc: svc.history(limit))
        return ok_result({"entries": entries, "count": len(entries)}, secrets=self.secrets)

    # -- gated --------------------------------------------------------------------

    async def deploy_to_standby(
        self, ctx: Context,
        ref: Annotated[str | None, Field(description="git branch, tag or sha (default: the stack's branch)")]
        = None,
        migrate: Annotated[bool, Field(description="back up the database and apply pending migrations")]
        = False,
        approval_token: Annotated[str | None, Field(description="the token returned with the plan")] = None,
    ) -> CallToolResult:
        """Deploy a git ref to the STANDBY colour (the live colour keeps serving): fetch, install,
        build, optionally migrate, reload PM2 on the standby, wait for health, smoke test through
        the preview frontend. Two steps: call it without approval_token to get the plan and a
        one-time token; show the plan to the person; only if they approve, call it again with
        the same arguments and approval_token. Does not switch traffic."""
        args = {"ref": ref, "migrate": migrate}
        return await self._guard("deploy_to_standby", self._gated(
            ctx, "deploy_to_standby", args, approval_token,
            plan=lambda svc: svc.plan_deploy(ref, migrate=migrate).to_json(),
            run=lambda svc: svc.deploy(ref, migrate=migrate).to_json()))

    async def switch_traffic(
        self, ctx: Context,
        emergency: Annotated[bool, Field(description="skip the pre-switch checks and flip at once")] = False,
        approval_token: Annotated[str | None, Field(description="the token returned with the plan")] = None,
    ) -> CallToolResult:
        """Move live traffic to the standby colour at HAProxy, then watch it and switch back
        automatically if it fails. Two steps: call it without approval_token to get the plan
        (target colour, release, checks, problems) and a one-time token; show it to the person;
        only if they approve, call it again with the same arguments and approval_token."""
        args = {"emergency": emergency}
        return await self._guard("switch_traffic", self._gated(
            ctx, "switch_traffic", args, approval_token,
            plan=lambda svc: svc.plan_switch(emergency=emergency).to_json(),
            run=lambda svc: svc.switch(emergency=emergency).to_json()))

    async def rollback(
        self, ctx: Context,
        approval_token: Annotated[str | None, Field(description="the token returned with the plan")] = None,
    ) -> CallToolResult:
        """Send live traffic back to the colour that was live before the last switch (it still
        runs its previous release). Two steps: call it without approval_token to get the plan and
        a one-time token; show it to the person; only if they approve, call it again with
        approval_token."""
        # With two colours the rollback target is always the other one; plan_switch shows it
        # with the same checks `Service.rollback` runs.
        return await self._guard("rollback", self._gated(
            ctx, "rollback", {}, approval_token,
            plan=lambda svc: svc.plan_switch().to_json(),
            run=lambda svc: svc.rollback().to_json()))

    async def _gated(self, ctx: Context, tool: str, args: dict[str, Any], token: str | None, *,
                     plan: Callable[[Service], dict[str, Any]],
                     run: Callable[[Service], dict[str, Any]]) -> CallToolResult:
        planned, facts = await self._plan(ctx, plan)
        plan_digest = digest({"plan": planned, "estate": facts})
        if token is None:
            if self._can_elicit(ctx):
                asked = await self._ask_person(ctx, tool, args, planned, facts, plan_digest,
                                               plan=plan, run=run)
                if asked is not None:
                    return asked
            approval = self.book.issue(tool, args, plan_digest, facts=facts)
            log.info("%s: plan returned with an approval token (valid %gs)", tool, approval.ttl_seconds)
            data = {"approved": False, "changed": False, "tool": tool, "arguments": args,
                    "plan": planned, "estate": facts, "approval": approval.to_json(),
                    "next": f"Nothing was changed. Show this plan to the person. Only if they approve "
                            f"it, call {tool} again with the same arguments and approval_token "
                            f"within {approval.ttl_seconds:g} seconds."}
            return ok_result(data, describe_plan(tool, planned), secrets=self.secrets)
        self.book.redeem(token, tool, args, plan_digest, facts=facts)
        log.info("%s: approval token accepted; running", tool)
        return await self._execute(ctx, tool, run)

    async def _plan(self, ctx: Context, plan: Callable[[Service], dict[str, Any]]
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
        def work(svc: Service) -> tuple[dict[str, Any], dict[str, Any]]:
            planned = plan(svc)
            entries = svc.history(1)
            return planned, estate_facts(svc.status().to_json(), entries[0] if entries else None)

        return await self._in_thread(ctx, work)

    async def _execute(self, ctx: Context, tool: str, run: Callable[[Service], dict[str, Any]]
                       ) -> CallToolResult:
        result = await self._in_thread(ctx, run)
        if result.get("ok", True):
            return ok_result(result, secrets=self.secrets)
        # A switch that ran but was undone (the watch failed) is reported, not raised.
        return ok_result(result, f"{tool} failed: {result.get('error') or 'see the result'}",
                         secrets=self.secrets, is_error=True)

    # -- elicitation ----------------------------------------------------------------

    def _can_elicit(self, ctx: Context) -> bool:
        if not self.elicitation:
            return False
        session = ctx.session
        caps = session.client_capabilities
        support = caps.elicitation if caps else None
        if support is None or (support.form is None and support.url is not None):
            return False
        return bool(session.can_send_request)

    async def _ask_person(self, ctx: Context, tool: str, args: dict[str, Any], planned: dict[str, Any],
                          facts: dict[str, Any], plan_digest: str, *,
                          plan: Callable[[Service], dict[str, Any]],
                          run: Callable[[Service], dict[str, Any]]) -> CallToolResult | None:
        """Ask through the client; None means the client could not ask, so use a token instead."""
        # The token binds the answer to this plan, so the estate is re-checked after the person
        # took their time to answer, exactly as in the token flow.
        approval = self.book.issue(tool, args, plan_digest, facts=facts)
        try:
            question = redact(describe_plan(tool, planned), self.secrets) + "\n\nApprove and run it now?"
            answer = await ctx.elicit(question, Confirmation)
        except Exception as exc:
            log.warning("%s: the client advertised elicitation but could not ask (%s); "
                        "returning a token instead", tool, type(exc).__name__)
            return None
        if not (isinstance(answer, AcceptedElicitation) and answer.data.approve):
            log.info("%s: the person did not approve (%s)", tool, answer.action)
            return ok_result({"approved": False, "changed": False, "tool": tool, "arguments": args,
                              "plan": planned, "estate": facts, "answer": answer.action},
                             f"Not approved ({answer.action}): nothing was changed.", secrets=self.secrets)
        replanned, refacts = await self._plan(ctx, plan)
        self.book.redeem(approval.token, tool, args, digest({"plan": replanned, "estate": refacts}),
                         facts=refacts)
        log.info("%s: approved by the person through the client; running", tool)
        return await self._execute(ctx, tool, run)

    # -- plumbing -------------------------------------------------------------------

    async def _in_thread(self, ctx: Context, work: Callable[[Service], T]) -> T:
        """Run `work` on a fresh Service in a worker thread; forward its progress as notifications.

        The worker never waits for the client: events go into an unbounded queue that a task
        on the event loop drains, so a slow client cannot stall a deploy half-way.
        """
        loop = anyio.lowlevel.current_token()
        send, receive = anyio.create_memory_object_stream[str](max_buffer_size=math.inf)

        def listener(event: str, record: StepRecord) -> None:
            message = redact(progress_message(event, record), self.secrets)
            try:
                anyio.from_thread.run_sync(send.send_nowait, message, token=loop)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, RuntimeError):
                log.debug("progress event dropped: %s", message)

        async def forward() -> None:
            count = 0
            async with receive:
                async for message in receive:
                    count += 1
                    try:
                        await ctx.report_progress(count, None, message)
                    except Exception as exc:  # the client went away: the operation goes on
                        log.debug("progress notification not sent: %s", type(exc).__name__)

        service = self._factory(RecordingProgress(listener=listener))
        failure: Exception | None = None
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(forward)
            try:
                # Not abandoned on cancel: a deploy or switch stopped half-way is worse than finished.
                result = await anyio.to_thread.run_sync(work, service)
            except Exception as exc:
                # Raised outside the task group, which would wrap it in an ExceptionGroup.
                failure = exc
            finally:
                send.close()
        if failure is not None:
            raise failure
        return result

    async def _guard(self, tool: str, call: Any) -> CallToolResult:
        """Turn every failure into a tool error: ours with their own message, others by type only."""
        try:
            result: CallToolResult = await call
            return result
        except BlueGreenError as exc:
            message = redact(str(exc), self.secrets)
            log.warning("%s: %s", tool, message)
            return error_result(message)
        except Exception as exc:
            log.error("%s: internal error: %s: %s", tool, type(exc).__name__, redact(str(exc), self.secrets))
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s", redact("".join(traceback.format_exception(exc)), self.secrets))
            return error_result(f"internal error: {type(exc).__name__}")


# ------------------------------------------------------------------------ server


def known_secrets(topology: Topology, environ: Mapping[str, str]) -> list[Sensitive]:
    """Secret values to scrub from every message, besides what `redact` recognises by shape."""
    found = [Sensitive(environ[name]) for name in SECRET_ENVS if environ.get(name)]
    try:
        from .pve import read_token

        found.append(read_token(topology, environ)[1])
    except BlueGreenError:
        pass  # no token configured: nothing of it to leak either
    return found


def build_server(tools: DeployTools) -> MCPServer:
    server: MCPServer = MCPServer(
        "bluegreen", title="JW Attendant Scheduler blue-green deploys",
        instructions=(f"Blue-green deploys of stack {tools.t.stack}. Read with get_deployment_status "
                      "and get_deployment_history. deploy_to_standby, switch_traffic and rollback "
                      "change production: call them first without approval_token, show the returned "
                      "plan to the person, and call again with the token only after they approve."),
        log_level="WARNING")
    reading = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    server.add_tool(tools.get_deployment_status, annotations=reading)
    server.add_tool(tools.get_deployment_history, annotations=reading)
    server.add_tool(tools.deploy_to_standby, annotations=ToolAnnotations(
        read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False))
    for switching in (tools.switch_traffic, tools.rollback):
        server.add_tool(switching, annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False))
    return server


def serve(topology: Topology, *, environ: Mapping[str, str] | None = None) -> None:
    """Run the MCP server on stdio until the client closes it."""
    env = os.environ if environ is None else environ
    # Imported here, before any worker thread exists: first imports racing in the status thread
    # pool can fail with importlib's _DeadlockError.
    import_module(".service", __package__)
    import_module(".pve", __package__)
    tools = DeployTools(topology, book=ApprovalBook(ttl=approval_ttl(env)),
                        secrets=known_secrets(topology, env), elicitation=elicitation_enabled(env))
    log.info("MCP server for stack %s on stdio", topology.stack)
    build_server(tools).run("stdio")
