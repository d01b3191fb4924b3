"""Operations announce themselves: the pre-deploy hook, deployment events, the post-switch hook."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from bluegreen.hosts.events import HookError, deploy_event, make_event, publish, run_hook, switch_event, switch_kind
from bluegreen.model.errors import BlueGreenError, DeployError
from bluegreen.model.sensitive import redact
from bluegreen.model.topology import Topology
from bluegreen.ops.estate import Estate

log = logging.getLogger("bluegreen.events")

F = TypeVar("F", bound=Callable[..., Any])


def emits_deploy(method: F) -> F:
    """Decorate `ops.deploy.deploy`: the pre-deploy hook first (its failure stops the deploy), then
    one `deploy` event with the outcome, whether the deploy succeeded, failed or was refused."""

    @functools.wraps(method)
    def wrapper(estate: Estate, ref: str | None = None, *args: Any, **kwargs: Any) -> Any:
        t: Topology = estate.t
        started = time.time()
        ref_name = ref or t.app.branch
        try:
            if t.events.pre_deploy:
                run_hook(t, t.events.pre_deploy, "pre-deploy", {"ref": ref_name, "who": estate.who},
                         estate.secrets)
            result = method(estate, ref, *args, **kwargs)
        except BaseException as exc:
            step = exc.step if isinstance(exc, DeployError) else None
            error = redact(str(exc), estate.secrets) if isinstance(exc, BlueGreenError) else type(exc).__name__
            publish(t, deploy_event(t, estate.who, started, time.time(), ref=ref_name, error=error,
                                    failed_step=step, color=getattr(exc, "color", None)), estate.secrets)
            raise
        publish(t, deploy_event(estate.t, estate.who, started, time.time(), result=result), estate.secrets)
        return result

    return cast(F, wrapper)


def emits_switch(method: F) -> F:
    """Decorate `ops.switch.switch`: one event per switch, rollback or emergency flip, then the
    post-switch hook (reported, never raised: the switch has already happened)."""

    @functools.wraps(method)
    def wrapper(estate: Estate, *args: Any, **kwargs: Any) -> Any:
        t: Topology = estate.t
        emergency = bool(kwargs.get("emergency", False))
        kind = switch_kind(emergency=emergency, reason=str(kwargs.get("reason", "switch")))
        started = time.time()
        try:
            result = method(estate, *args, **kwargs)
        except BaseException as exc:
            error = redact(str(exc), estate.secrets) if isinstance(exc, BlueGreenError) else type(exc).__name__
            publish(t, switch_event(kind, t, estate.who, started, time.time(), emergency=emergency,
                                    error=error, to_color=kwargs.get("to_color")), estate.secrets)
            raise
        event = switch_event(kind, estate.t, estate.who, started, time.time(), emergency=emergency,
                             result=result)
        publish(estate.t, event, estate.secrets)
        if estate.t.events.post_switch:
            try:
                run_hook(estate.t, estate.t.events.post_switch, "post-switch", event, estate.secrets)
            except HookError as exc:
                log.warning("%s", exc)
                estate.progress.note(f"post-switch hook failed: {exc}")
        return result

    return cast(F, wrapper)


def switch_back(estate: Estate, *, from_color: str, to_color: str, why: str, started: float,
                emergency: bool = True) -> None:
    """The automatic switch back after a failed verification or watch: its own event."""
    t: Topology = estate.t
    publish(t, make_event("switch-back", stack=t.stack, who=estate.who, ok=True, started=started,
                          finished=time.time(), **{"from": from_color}, to=to_color, release=None, sha=None,
                          emergency=emergency, path="direct", reason=redact(why, estate.secrets), error=None),
            estate.secrets)
