"""One truth for the live colour: HAProxy's runtime map, its map file and the journal compared,
and what lags brought in line with what HAProxy serves (never the other way round: that would
move traffic nobody asked to move).

`read_truth` only reads (status uses it); `reconcile` runs at the start of every command that
holds the deployment lock (switch, rollback, deploy): a map file a reload would act on is
rewritten, a flip that was cut off before its record is recorded (`found`, `verified` only when
the caller saw the public frontend answer from that colour), and in `switch.mode: direct` the
stack file's declared colour follows.
"""

from __future__ import annotations

import logging

from bluegreen.hosts import haproxy
from bluegreen.hosts.executor import Executor
from bluegreen.hosts.haproxy_cli import LIVE_KEY, HaproxyPaths, color_of
from bluegreen.model.errors import BlueGreenError, RemoteError
from bluegreen.model.stackfile import set_active_color_in_file
from bluegreen.model.timestamps import iso, utcnow
from bluegreen.model.truth import LiveTruth, map_file_color, with_found_switch
from bluegreen.ops.estate import Estate

log = logging.getLogger("bluegreen.reconcile")


def read_truth(estate: Estate, lb: Executor) -> LiveTruth:
    """Runtime map, map file and journal, read (nothing changed). A journal that cannot be read
    is left out (None); an unreadable runtime map raises: without it nothing can be compared."""
    t = estate.t
    paths = HaproxyPaths.from_topology(t)
    try:
        runtime = color_of(haproxy.read_map(lb, paths).get(LIVE_KEY, ""))
        has_map = True
    except RemoteError as exc:
        if "Unknown map identifier" not in exc.detail:
            raise
        # A hand-written config (the estate before its takeover): no map to compare with.
        runtime, has_map = haproxy.live_color_from_config(lb, t), False
    on_disk = map_file_color(haproxy.read_map_file(lb, paths)) if has_map else None
    try:
        journal: str | None = estate.read_state(lb).prod
    except BlueGreenError as exc:
        log.warning("cannot read the journal to compare it with HAProxy: %s", exc)
        journal = None
    return LiveTruth(runtime=runtime, map_file=on_disk, journal=journal, has_map=has_map)


def reconcile(estate: Estate, lb: Executor, *, verified: bool = False) -> list[str]:
    """Bring the map file, the journal and (direct mode) the declared colour in line with the
    colour HAProxy serves; what was done, one line each (also shown as progress notes)."""
    t = estate.t
    truth = read_truth(estate, lb)
    live = truth.runtime
    done: list[str] = []
    if live is None:
        return done
    if truth.has_map and truth.map_file != live and haproxy.keep_runtime_routing(lb, HaproxyPaths.from_topology(t)):
        done.append(f"the map file named {truth.map_file or 'no live colour'}: rewritten to {live}, what "
                    "HAProxy serves, so a reload keeps it")
    if truth.journal is not None and truth.journal != live:
        keep = t.journal.history_keep
        estate.update_state(lb, lambda s: s if s.prod == live else with_found_switch(
            s, live, who=estate.who, when=iso(utcnow()), verified=verified, keep=keep), live)
        done.append(f"HAProxy serves {live} but the journal said {truth.journal}: recorded the switch "
                    f"{truth.journal} -> {live} that was cut off before its record"
                    + ("" if verified else " (verified: false)"))
    if t.switch.mode == "direct" and t.active_color != live:
        set_active_color_in_file(t.project_dir, t.stack, live)
        estate.declare(live)
        done.append(f"the stack declared {t.active_color}: now {live}")
    for line in done:
        log.warning("%s", line)
        estate.progress.note(line)
    return done
