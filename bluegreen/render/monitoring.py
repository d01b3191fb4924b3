"""Monitoring of the estate, rendered from the topology: the Prometheus server's configuration and
each host's node exporter arguments. Pure: text and argument lists out, nothing touched.

What Prometheus scrapes (all named by the stack, nothing guessed):
- `haproxy`: HAProxy's built-in exporter (`/metrics` on the stats frontend, or
  `monitoring.haproxyMetrics` when it listens elsewhere): per-colour requests, 5xx, response time,
  backend state;
- `node`: Debian's prometheus-node-exporter on every container; its textfile collector serves the
  tool's own metrics (journal, lock, dumps) written next to `journal.metricsPath`;
- `app_health`: the app's health endpoint on each colour through a blackbox exporter
  (`monitoring.blackboxExporter`), since a JSON health answer is not a Prometheus target itself.
"""

from __future__ import annotations

import posixpath
from typing import Any

import yaml

from bluegreen.model.errors import ConfigError
from bluegreen.model.topology import Container, Topology
from bluegreen.render import GENERATED_BY

NODE_EXPORTER = "prometheus-node-exporter"
NODE_EXPORTER_DEFAULTS = "/etc/default/prometheus-node-exporter"
BLACKBOX_MODULE = "http_2xx"


def _duration(seconds: float) -> str:
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{int(seconds * 1000)}ms"


def textfile_dir(t: Topology) -> str:
    """The textfile collector directory (the directory of `journal.metricsPath`), as on a real host."""
    return posixpath.dirname(t.journal.metrics_path)


def node_exporter_args(t: Topology, host: Container) -> list[str]:
    """The node exporter's flags on `host`: its own address, and the textfile directory (under the
    host's root, which is `/` on a real container)."""
    return [f"--web.listen-address={host.ip}:{t.monitoring.node_exporter_port}",
            f"--collector.textfile.directory={host.path(textfile_dir(t))}"]


def render_node_exporter_defaults(t: Topology, host: Container) -> str:
    """`/etc/default/prometheus-node-exporter`, which Debian's unit reads (`ARGS`)."""
    return f'# {GENERATED_BY}\nARGS="{" ".join(node_exporter_args(t, host))}"'


def haproxy_metrics_target(t: Topology) -> str:
    """Where HAProxy's exporter listens: `monitoring.haproxyMetrics`, else the stats frontend on
    the load balancer's private address (`haproxy.privateAddress`, else its address)."""
    return t.monitoring.haproxy_metrics or f"{t.private_ip}:{t.haproxy.stats_port}"


def _haproxy_job(t: Topology, password_file: str | None) -> dict[str, Any]:
    job: dict[str, Any] = {"job_name": "haproxy", "metrics_path": "/metrics",
                           "static_configs": [{"targets": [haproxy_metrics_target(t)],
                                               "labels": {"host": t.load_balancer.name}}]}
    if t.haproxy.stats_user is not None:
        if password_file is None:
            raise ConfigError("haproxy.statsAuth: the stats frontend asks for a password; give Prometheus "
                              "the file holding it (render_prometheus_config(..., haproxy_password_file=PATH))")
        job["basic_auth"] = {"username": t.haproxy.stats_user, "password_file": password_file}
    return job


def render_prometheus_config(t: Topology, *, rule_files: list[str] | None = None,
                             alertmanagers: list[str] | None = None,
                             haproxy_password_file: str | None = None) -> str:
    """prometheus.yml for the server the stack names in `monitoring.prometheus`. The stats password
    (when `haproxy.statsAuth` is set) stays in a file on the Prometheus host: only its path is here."""
    if t.monitoring.prometheus is None:
        raise ConfigError("monitoring.prometheus: the stack names no Prometheus server (expected host:port)")
    interval = _duration(t.monitoring.scrape_interval)
    node_targets = [{"targets": [f"{c.ip}:{t.monitoring.node_exporter_port}"],
                     "labels": {"host": c.name, "role": c.role, **({"color": c.color} if c.color else {})}}
                    for c in t.containers]
    jobs: list[dict[str, Any]] = [
        {"job_name": "prometheus", "static_configs": [{"targets": [t.monitoring.prometheus]}]},
        _haproxy_job(t, haproxy_password_file),
        {"job_name": "node", "static_configs": node_targets},
    ]
    if t.monitoring.blackbox is not None:
        jobs.append({
            "job_name": "app_health", "metrics_path": "/probe", "params": {"module": [BLACKBOX_MODULE]},
            "static_configs": [{"targets": [f"http://{c.ip}:{t.app.port}{t.app.health_path}"],
                                "labels": {"color": color, "host": c.name}}
                               for color, c in sorted(t.app_hosts.items())],
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": t.monitoring.blackbox},
            ],
        })
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval,
                   "external_labels": {"stack": t.stack}},
        "rule_files": list(rule_files or []),
        "scrape_configs": jobs,
    }
    if alertmanagers:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]}
    return f"# {GENERATED_BY}\n" + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def render_blackbox_config() -> str:
    """The blackbox exporter's module for the app's health endpoint: a 2xx within 5 s."""
    config = {"modules": {BLACKBOX_MODULE: {"prober": "http", "timeout": "5s",
                                            "http": {"valid_status_codes": [200], "method": "GET",
                                                     "preferred_ip_protocol": "ip4"}}}}
    return f"# {GENERATED_BY}\n" + yaml.safe_dump(config, sort_keys=False)
