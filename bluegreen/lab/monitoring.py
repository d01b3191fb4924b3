"""The lab's monitoring: a node exporter per host, a blackbox exporter, a real Prometheus and a
webhook receiver, all on loopback, each started once and stopped by its PID like the lab's other
servers (the lab registers what `start_monitoring` returns).

Prometheus gets the configuration `render.monitoring` renders for the stack plus the repository's
alert rules (`monitoring/rules/`), so the lab proves the files that ship.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import sys
import urllib.request
from pathlib import Path

from bluegreen.lab.services import LabError, ManagedProcess, spawn, wait_port
from bluegreen.model.errors import ConfigError
from bluegreen.model.topology import Topology
from bluegreen.render.monitoring import node_exporter_args, render_blackbox_config, render_prometheus_config

log = logging.getLogger("bluegreen.lab")

NODE_EXPORTER_BIN = "prometheus-node-exporter"
BLACKBOX_BIN = "prometheus-blackbox-exporter"
PROMETHEUS_BIN = "prometheus"
RECEIVER_NAME = "webhook receiver"
RECEIVER_PORT = 9095
# Collectors the lab needs (the tool's textfile, and a few host basics for the dashboard): eight
# labs share two cores, so the exporters do not walk every /proc and /sys file each 2 s.
LAB_COLLECTORS = ("--collector.disable-defaults", "--collector.textfile", "--collector.loadavg",
                  "--collector.meminfo", "--collector.time")
START_TIMEOUT = 30.0


def monitoring_dir(lab_dir: Path) -> Path:
    return lab_dir / "monitoring"


def rules_dir(project_dir: Path) -> Path:
    return project_dir / "monitoring" / "rules"


def events_record(lab_dir: Path) -> Path:
    """Where the lab's receiver appends the events it gets (JSON lines)."""
    return monitoring_dir(lab_dir) / "events.jsonl"


def webhook_url_file(lab_dir: Path) -> Path:
    return lab_dir / "secrets" / "webhook-url"


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise LabError(f"{binary} is not installed (scripts/setup.sh installs it)")
    return path


def receiver_address(t: Topology) -> str:
    if t.monitoring.prometheus is None:
        raise ConfigError(f"stack {t.stack!r}: the lab needs monitoring.prometheus (its monitoring address)")
    return f"{_split(t.monitoring.prometheus)[0]}:{RECEIVER_PORT}"


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.touch(mode=0o600)
    tmp.write_text(text)
    tmp.replace(path)


def _receiver_token(lab_dir: Path, t: Topology) -> Path:
    """The receiver's token and the secret webhook URL holding it (written once, kept)."""
    token_file = lab_dir / "secrets" / "webhook-token"
    if not token_file.exists():
        _write_secret(token_file, secrets.token_urlsafe(18) + "\n")
    url = f"http://{receiver_address(t)}/events/{token_file.read_text().strip()}\n"
    url_file = webhook_url_file(lab_dir)
    if not url_file.exists() or url_file.read_text() != url:
        _write_secret(url_file, url)
    return token_file


def _reload_prometheus(address: str) -> None:
    request = urllib.request.Request(f"http://{address}/-/reload", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - a loopback http URL
        if response.status != 200:
            raise LabError(f"Prometheus on {address} refused to reload its configuration ({response.status})")


def start_monitoring(lab_dir: Path, t: Topology, project_dir: Path) -> list[tuple[ManagedProcess, str]]:
    """Start (or reuse) every monitoring process; returns each with the address it listens on."""
    if t.monitoring.prometheus is None:
        return []
    base = monitoring_dir(lab_dir)
    base.mkdir(parents=True, exist_ok=True)
    pids, logs = lab_dir / "pids", lab_dir / "logs"
    started: list[tuple[ManagedProcess, str, str, int]] = []

    def run(name: str, argv: list[str], key: str, address: str) -> None:
        slug = name.replace(" ", "-")
        process = spawn(name, argv, pid_file=pids / f"{slug}.pid", log_file=logs / f"{slug}.log", expect=key)
        host, port = _split(address)
        started.append((process, address, host, port))

    exporter = _need(NODE_EXPORTER_BIN)
    for host in t.containers:
        args = node_exporter_args(t, host)
        Path(args[1].split("=", 1)[1]).mkdir(parents=True, exist_ok=True)  # the textfile directory
        run(f"node-exporter {host.name}", [exporter, *args, *LAB_COLLECTORS], args[0],
            f"{host.ip}:{t.monitoring.node_exporter_port}")

    if t.monitoring.blackbox is not None:
        config = base / "blackbox.yml"
        config.write_text(render_blackbox_config())
        run("blackbox-exporter", [_need(BLACKBOX_BIN), f"--config.file={config}",
                                  f"--web.listen-address={t.monitoring.blackbox}"],
            f"--web.listen-address={t.monitoring.blackbox}", t.monitoring.blackbox)

    rules = sorted(str(p) for p in rules_dir(project_dir).glob("*.rules.yml"))
    config = base / "prometheus.yml"
    text = render_prometheus_config(t, rule_files=rules)
    changed = not config.exists() or config.read_text() != text
    config.write_text(text)
    prometheus = t.monitoring.prometheus
    was_running = ManagedProcess("prometheus", pids / "prometheus.pid").alive()
    run("prometheus", [_need(PROMETHEUS_BIN), f"--config.file={config}",
                       f"--storage.tsdb.path={base / 'prometheus-data'}", "--storage.tsdb.retention.time=2d",
                       f"--web.listen-address={prometheus}", "--web.enable-lifecycle"],
        f"--config.file={config}", prometheus)

    started.append((*_spawn_receiver(lab_dir, t), *_split(receiver_address(t))))

    for process, _address, host_ip, port in started:
        wait_port(host_ip, port, START_TIMEOUT, what=process.name, process=process,
                  log_file=logs / f"{process.name.replace(' ', '-')}.log")
    if was_running and changed:
        log.info("prometheus: configuration changed, reloading")
        _reload_prometheus(prometheus)
    return [(process, address) for process, address, _, _ in started]


def _spawn_receiver(lab_dir: Path, t: Topology) -> tuple[ManagedProcess, str]:
    token = _receiver_token(lab_dir, t)
    name = RECEIVER_NAME.replace(" ", "-")
    process = spawn(RECEIVER_NAME, [sys.executable, "-m", "bluegreen.lab.receiver", "--listen", receiver_address(t),
                                    "--record", str(events_record(lab_dir)), "--token-file", str(token)],
                    pid_file=lab_dir / "pids" / f"{name}.pid", log_file=lab_dir / "logs" / f"{name}.log",
                    expect="bluegreen.lab.receiver")
    return process, receiver_address(t)


def start_receiver(lab_dir: Path, t: Topology) -> tuple[ManagedProcess, str] | None:
    """The webhook receiver alone (the legacy lab: an estate without the lab's monitoring still
    sends the stack's events somewhere that answers, instead of warning on every operation)."""
    if t.monitoring.prometheus is None or not t.events.webhooks:
        return None
    (lab_dir / "pids").mkdir(parents=True, exist_ok=True)
    (lab_dir / "logs").mkdir(parents=True, exist_ok=True)
    process, address = _spawn_receiver(lab_dir, t)
    host, port = _split(address)
    wait_port(host, port, START_TIMEOUT, what=process.name, process=process,
              log_file=lab_dir / "logs" / f"{RECEIVER_NAME.replace(' ', '-')}.log")
    return process, address


def stop_receiver(lab_dir: Path) -> bool:
    """Stop the webhook receiver (tests of a dead receiver); True if it was running."""
    return ManagedProcess(RECEIVER_NAME, lab_dir / "pids" / f"{RECEIVER_NAME.replace(' ', '-')}.pid").stop()
