"""What the program reads from the running estate before it registers anything.

- **The colour HAProxy routes to now**, so protection follows the colour that serves, not the
  declared one (they differ after an emergency flip or an automatic switch back): a serving
  container's reboot- and replace-causing fields are ignored (`model.ctinputs.lifecycle`).
  Unreadable (the load balancer does not exist yet, SSH fails): both colours are protected.
- **The project lock** (`journal.lockPath` on the load balancer): a `pulumi up` while a deploy,
  switch or rebuild holds it would race that operation, so the program refuses to run, naming
  the holder. The automation's own runs under its lock pass the lock's token (`LOCK_TOKEN_ENV`).

`READER` is the one place that connects; tests replace it (nothing under Pulumi's mocks may
reach a real address).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from bluegreen.hosts import haproxy
from bluegreen.hosts.executor import connect
from bluegreen.hosts.hostconfig import LOCK_TOKEN_ENV
from bluegreen.hosts.lock import LockManager
from bluegreen.model.errors import BlueGreenError, LockedError
from bluegreen.model.lock import FORCE_RELEASE_HINT, LockStatus, describe_locked
from bluegreen.model.topology import Topology

log = logging.getLogger("bluegreen.program")
__all__ = ("LOCK_TOKEN_ENV", "READER", "LiveEstate", "read_live_estate", "refuse_if_locked", "require_engine")


@dataclass(frozen=True)
class LiveEstate:
    live_color: str | None  # None: could not be read
    source: str  # where it was read, or why not
    lock: LockStatus | None  # None: free (or unreadable, see lock_error)
    lock_error: str | None = None


def read_live_estate(t: Topology) -> LiveEstate:
    """One SSH connection to the load balancer: the live colour and the lock."""
    lb = t.load_balancer
    try:
        with connect(t, lb) as ex:
            try:
                color: str | None = haproxy.live_color(ex, t)
                source = f"HAProxy on {lb.label}"
            except BlueGreenError as exc:
                color, source = None, f"HAProxy on {lb.label} did not say ({exc})"
            try:
                status = LockManager(ex, lb.path(t.journal.lock_path)).status()
                return LiveEstate(color, source, status)
            except BlueGreenError as exc:
                return LiveEstate(color, source, None, lock_error=str(exc))
    except BlueGreenError as exc:
        return LiveEstate(None, f"{lb.label} unreachable ({exc})", None, lock_error=str(exc))


READER: Callable[[Topology], LiveEstate] = read_live_estate


def refuse_if_locked(t: Topology, estate: LiveEstate, *, own_token: str | None = None) -> None:
    """Raise `LockedError` while another operation holds the project lock."""
    status = estate.lock
    if status is None:
        return
    token = own_token if own_token is not None else os.environ.get(LOCK_TOKEN_ENV)
    if token and status.info.token == token:
        return  # the automation's own run, under its own lock
    path = t.load_balancer.path(t.journal.lock_path)
    raise LockedError(
        f"refusing to run while '{status.info.operation}' holds the project lock: {describe_locked(status, path)} "
        f"(`bluegreen lock status --stack {t.stack}` shows it; `{FORCE_RELEASE_HINT}` breaks a stale one)")


# The engine behaviours the program relies on (bluegreen/hosts/pulumi.py, CLI_NEEDS).
ENGINE_RANGE = ">=3.252.0"


def require_engine(require: Callable[[str], None] | None = None) -> None:
    """Refuse to run under a Pulumi CLI older than `ENGINE_RANGE`, saying what it lacks. The engine
    itself answers (`pulumi.require_pulumi_version`, the `RequirePulumiVersion` RPC); Pulumi's mock
    engine has no such RPC, so under mocks there is nothing to ask."""
    import pulumi
    from pulumi.runtime import settings
    from pulumi.runtime.mocks import MockEngine

    from bluegreen.hosts.pulumi import CLI_NEEDS
    from bluegreen.model.errors import PulumiError

    if require is None:
        if isinstance(settings.get_engine(), MockEngine):
            return
        require = pulumi.require_pulumi_version
    try:
        require(ENGINE_RANGE)
    except Exception as exc:  # the SDK raises a plain Exception (or a gRPC error) for this
        needs = "; ".join(f"{'.'.join(map(str, v))} for {why}" for v, why in CLI_NEEDS)
        raise PulumiError(f"the Pulumi CLI running this program is too old ({exc}): this project needs "
                          f"{needs}. Upgrade the CLI (`curl -fsSL https://get.pulumi.com | sh`)") from None
