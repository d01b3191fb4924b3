"""Deploy and switch metrics in Prometheus text exposition format, for node_exporter's textfile
collector (`journal.metricsPath` on the HAProxy host). Pure: the caller writes the text with
`executor.put`, whose tmp-and-rename keeps the collector from reading half a file.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import ConfigError
from .journal import DEPLOY_RESULTS, State, parse_iso
from .topology import COLORS


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.header = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        self.samples: list[str] = []
        self.name = name

    def sample(self, value: float, **labels: str) -> None:
        self.samples.append(f"{self.name}{_labels(**labels)} {_number(value)}")


def render_metrics(state: State, *, live: str, generated_at: float) -> str:
    """The journal as metrics. `live` is the colour HAProxy actually routes to (it can differ from
    the journal's `prod` after an emergency switch or drift), `generated_at` is epoch seconds."""
    if live not in COLORS:
        raise ConfigError(f"unknown live colour {live!r} (expected one of {', '.join(COLORS)})")
    families: list[_Family] = []

    def family(name: str, kind: str, help_text: str) -> _Family:
        families.append(_Family(name, kind, help_text))
        return families[-1]

    live_color = family("bluegreen_live_color", "gauge", "1 for the colour HAProxy routes live traffic to.")
    for color in COLORS:
        live_color.sample(1 if color == live else 0, color=color)

    family("bluegreen_switch_total", "counter",
           "Switches of the live colour recorded in the journal.").sample(state.switch_count)

    last_switch = family("bluegreen_last_switch_timestamp_seconds", "gauge",
                         "When the live colour last changed (Unix time).")
    switched_at = parse_iso(state.last_switch) if state.last_switch else None
    if switched_at is not None:
        last_switch.sample(switched_at)

    duration = family("bluegreen_last_deploy_duration_seconds", "gauge",
                      "How long the last deploy to each colour took.")
    success = family("bluegreen_last_deploy_success", "gauge",
                     "1 if the last deploy to each colour succeeded, 0 if it failed.")
    deployed_at = family("bluegreen_last_deploy_timestamp_seconds", "gauge",
                         "When the last deploy to each colour happened (Unix time).")
    for color in COLORS:
        last = state.last_deploy(color)
        if last is None:
            continue
        duration.sample(last.duration_ms / 1000, color=color)
        success.sample(1 if last.ok else 0, color=color)
        when = parse_iso(last.when)
        if when is not None:
            deployed_at.sample(when, color=color)

    deploys = family("bluegreen_deploys_total", "counter", "Deploys per colour and result.")
    totals = state.deploy_totals()
    for color in COLORS:
        for result in DEPLOY_RESULTS:
            deploys.sample(totals.get(color, {}).get(result, 0), color=color, result=result)

    family("bluegreen_metrics_generated_timestamp_seconds", "gauge",
           "When this file was written (Unix time); an old value means nobody refreshes it.").sample(
        generated_at)
    return _join(families)


def _join(families: Iterable[_Family]) -> str:
    # A family with nothing to report (no deploy yet) is left out rather than shown empty.
    return "".join(line + "\n" for f in families if f.samples for line in (*f.header, *f.samples))
