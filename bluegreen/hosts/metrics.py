"""Metric textfiles written on the hosts for node_exporter (lock held, last verified dump)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from bluegreen.model.errors import BlueGreenError
from bluegreen.model.topology import Topology
from bluegreen.render.metrics import DUMP_FILE, LOCK_FILE, render_dump_metrics, render_lock_metrics, textfile_path

if TYPE_CHECKING:
    from bluegreen.hosts.executor import Executor

log = logging.getLogger("bluegreen.metrics")


# Operations long enough that a crash inside them is worth an alert on the lock they hold. Quick
# switches and emergency flips do not pay two extra SSH round trips for it.
LOCK_METRICS_OPERATIONS = frozenset({"deploy", "rebuild standby", "rollback --snapshot"})


def write_lock_metrics(ex: Executor, t: Topology, *, held: bool, operation: str, holder: str) -> None:
    """Write the lock's metrics on the HAProxy host (atomically, through `ex.put`); a failure is
    logged, never raised: metrics must not fail the operation they describe."""
    now = time.time()
    text = render_lock_metrics(held=held, operation=operation, holder=holder, since=now, generated_at=now)
    try:
        ex.put(textfile_path(t, t.load_balancer, LOCK_FILE), text, step="write lock metrics", mode=0o644)
    except BlueGreenError as exc:
        log.warning("could not write the lock metrics: %s", exc)


def write_dump_metrics(ex: Executor, t: Topology, path: str) -> None:
    """Record a good pre-migration dump on the database host (its node exporter serves it)."""
    text = render_dump_metrics(path=path, taken_at=time.time())
    try:
        ex.put(textfile_path(t, t.database_host, DUMP_FILE), text, step="write dump metrics", mode=0o644)
    except BlueGreenError as exc:
        log.warning("could not write the dump metrics: %s", exc)
