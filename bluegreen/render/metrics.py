"""Deploy, switch, lock and dump metrics for node_exporter's textfile collector, rendered by
prometheus_client (a registry of metric families and its text exposition) rather than by hand.

The renderers are pure and return text; it is written with `executor.put` (two small helpers at
the end do that for the lock and dump files), whose tmp-and-rename
keeps the collector from reading half a file. Three files, because three moments write them:
- `journal.metricsPath` (`bluegreen.prom`) on the HAProxy host: the journal, after every record;
- `bluegreen_lock.prom` next to it: the estate lock, when an operation takes and releases it;
- `bluegreen_dump.prom` in the same directory on the database host: the last good pre-migration dump.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bluegreen.model.errors import ConfigError
from bluegreen.model.journal import DEPLOY_RESULTS, State
from bluegreen.model.timestamps import parse_iso
from bluegreen.model.topology import COLORS, Container, Topology

LOCK_FILE = "bluegreen_lock.prom"
DUMP_FILE = "bluegreen_dump.prom"


class _Families(Collector):
    """A fixed set of families, collected once into a private registry (no process metrics)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        # A family with nothing to report (no deploy yet) is left out rather than shown empty.
        yield from (f for f in self.families if f.samples)


def _exposition(families: Iterable[Metric]) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry).decode()


def _check_color(value: str, what: str) -> None:
    if value not in COLORS:
        raise ConfigError(f"unknown {what} colour {value!r} (expected one of {', '.join(COLORS)})")


def render_metrics(state: State, *, live: str, generated_at: float, declared: str | None = None) -> str:
    """The journal as metrics. `live` is the colour HAProxy actually routes to (it can differ from
    the journal's `prod` after an emergency switch or drift), `declared` the stack's `activeColor`,
    `generated_at` is epoch seconds."""
    _check_color(live, "live")
    families: list[Metric] = []

    live_color = GaugeMetricFamily("bluegreen_live_color", "1 for the colour HAProxy routes live traffic to.",
                                   labels=["color"])
    for color in COLORS:
        live_color.add_metric([color], 1 if color == live else 0)
    families.append(live_color)

    if declared is not None:
        _check_color(declared, "declared")
        declared_color = GaugeMetricFamily("bluegreen_declared_color",
                                           "1 for the colour the stack file declares live (activeColor).",
                                           labels=["color"])
        for color in COLORS:
            declared_color.add_metric([color], 1 if color == declared else 0)
        families.append(declared_color)

    families.append(CounterMetricFamily("bluegreen_switch", "Switches of the live colour recorded in the journal.",
                                        value=state.switch_count))

    last_switch = GaugeMetricFamily("bluegreen_last_switch_timestamp_seconds",
                                    "When the live colour last changed (Unix time).")
    switched_at = parse_iso(state.last_switch) if state.last_switch else None
    if switched_at is not None:
        last_switch.add_metric([], switched_at)
    families.append(last_switch)

    duration = GaugeMetricFamily("bluegreen_last_deploy_duration_seconds",
                                 "How long the last deploy to each colour took.", labels=["color"])
    success = GaugeMetricFamily("bluegreen_last_deploy_success",
                                "1 if the last deploy to each colour succeeded, 0 if it failed.", labels=["color"])
    deployed_at = GaugeMetricFamily("bluegreen_last_deploy_timestamp_seconds",
                                    "When the last deploy to each colour happened (Unix time).", labels=["color"])
    for color in COLORS:
        last = state.last_deploy(color)
        if last is None:
            continue
        duration.add_metric([color], last.duration_ms / 1000)
        success.add_metric([color], 1 if last.ok else 0)
        when = parse_iso(last.when)
        if when is not None:
            deployed_at.add_metric([color], when)
    families += [duration, success, deployed_at]

    deploys = CounterMetricFamily("bluegreen_deploys", "Deploys per colour and result.", labels=["color", "result"])
    totals = state.deploy_totals()
    for color in COLORS:
        for result in DEPLOY_RESULTS:
            deploys.add_metric([color, result], totals.get(color, {}).get(result, 0))
    families.append(deploys)

    families.append(GaugeMetricFamily(
        "bluegreen_metrics_generated_timestamp_seconds",
        "When this file was written (Unix time); an old value means nobody refreshes it.", value=generated_at))
    return _exposition(families)


def render_lock_metrics(*, held: bool, operation: str | None, holder: str | None, since: float | None,
                        generated_at: float) -> str:
    """The estate lock: held or not, by whom, since when. A tool that dies holding the lock leaves
    `held 1` with an old `since`, which is what the stale-lock alert looks for."""
    held_family = GaugeMetricFamily("bluegreen_lock_held", "1 while an operation holds the estate lock.",
                                    labels=["operation", "holder"])
    held_family.add_metric([operation or "", holder or ""] if held else ["", ""], 1 if held else 0)
    since_family = GaugeMetricFamily("bluegreen_lock_acquired_timestamp_seconds",
                                     "When the current holder took the estate lock (Unix time).")
    if held and since is not None:
        since_family.add_metric([], since)
    written = GaugeMetricFamily("bluegreen_lock_metrics_generated_timestamp_seconds",
                                "When the lock metrics were written (Unix time).", value=generated_at)
    return _exposition([held_family, since_family, written])


def render_dump_metrics(*, path: str, taken_at: float) -> str:
    """The last good pre-migration dump of the database (written once `pg_dump` succeeded)."""
    family = GaugeMetricFamily("bluegreen_db_dump_last_success_timestamp_seconds",
                               "When the last good pre-migration database dump finished (Unix time).",
                               labels=["file"])
    family.add_metric([posixpath.basename(path)], taken_at)
    return _exposition([family])


def textfile_path(t: Topology, host: Container, name: str) -> str:
    """A file in the textfile collector directory of `host` (the directory of `journal.metricsPath`)."""
    return host.path(posixpath.join(posixpath.dirname(t.journal.metrics_path), name))
