"""The monitoring files that ship: alert rules (promtool check + promtool unit tests), the rendered
Prometheus configuration (promtool check config), the dashboard and the Alertmanager example."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bluegreen.model.errors import ConfigError
from bluegreen.model.stackfile import load_stack
from bluegreen.render.monitoring import (
    node_exporter_args,
    render_blackbox_config,
    render_node_exporter_defaults,
    render_prometheus_config,
)

PROJECT = Path(__file__).resolve().parents[2]
MONITORING = PROJECT / "monitoring"
RULES = MONITORING / "rules" / "bluegreen.rules.yml"
RULE_TESTS = MONITORING / "tests" / "bluegreen.rules.test.yml"
ALL_RULE_TESTS = sorted((MONITORING / "tests").glob("*.test.yml"))
DASHBOARD = MONITORING / "dashboards" / "bluegreen.json"
ISSUE_ALERTS = {"BlueGreenLive5xxRatioHigh", "BlueGreenLiveBackendDown", "BlueGreenStandbyBackendDown",
                "BlueGreenDeclaredColourDrift", "BlueGreenLastDeployFailed", "BlueGreenLockHeldTooLong",
                "BlueGreenLockStale", "BlueGreenNoRecentPreMigrationDump"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: scripts/setup.sh installs Debian's prometheus package"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, cwd=PROJECT)


def alerts() -> dict[str, dict]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def test_promtool_accepts_the_rules() -> None:
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    assert len(ALL_RULE_TESTS) == 2
    proc = promtool("test", "rules", *map(str, ALL_RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_unit_tests_fail_when_a_threshold_is_broken(tmp_path: Path) -> None:
    """The rule tests can fail: a 5xx threshold of 60% no longer fires on the 50% burst."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / RULES.name).write_text(RULES.read_text().replace("> 0.05", "> 0.6"))
    shutil.copy(RULE_TESTS, tmp_path / "tests" / RULE_TESTS.name)
    proc = promtool("test", "rules", str(tmp_path / "tests" / RULE_TESTS.name))
    assert proc.returncode != 0
    assert "BlueGreenLive5xxRatioHigh" in proc.stdout + proc.stderr


def test_every_alert_the_issue_asks_for_exists_and_is_unit_tested() -> None:
    tested = {case["alertname"] for f in ALL_RULE_TESTS for t in yaml.safe_load(f.read_text())["tests"]
              for case in t.get("alert_rule_test", []) if case["exp_alerts"]}
    assert set(alerts()) >= ISSUE_ALERTS
    assert set(alerts()) <= tested, f"alerts never seen firing in the promtool tests: {set(alerts()) - tested}"


@pytest.mark.parametrize("name", sorted(ISSUE_ALERTS | {"BlueGreenScrapeTargetDown"}))
def test_each_alert_says_what_to_run(name: str) -> None:
    rule = alerts()[name]
    assert rule["labels"]["severity"] in ("warning", "critical")
    assert rule["annotations"]["summary"]
    assert "`bluegreen " in rule["annotations"]["description"]


def test_critical_alerts_point_at_the_emergency_rollback() -> None:
    for name in ("BlueGreenLive5xxRatioHigh", "BlueGreenLiveBackendDown"):
        assert "`bluegreen rollback --emergency`" in alerts()[name]["annotations"]["description"]


def test_lab_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    t = load_stack(PROJECT, "lab")
    config = tmp_path / "prometheus.yml"
    config.write_text(render_prometheus_config(t, rule_files=[str(RULES)]))
    proc = promtool("check", "config", str(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = yaml.safe_load(config.read_text())
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    assert set(jobs) == {"prometheus", "haproxy", "node", "app_health"}
    assert jobs["haproxy"]["static_configs"][0]["targets"] == [f"{t.private_ip}:8404"]
    assert "basic_auth" not in jobs["haproxy"]
    assert [c["targets"][0] for c in jobs["node"]["static_configs"]] == [
        "127.0.3.21:9100", "127.0.3.22:9100", "127.0.3.24:9100", "127.0.3.26:9100"]
    assert [c["targets"][0] for c in jobs["app_health"]["static_configs"]] == [
        f"http://127.0.3.22:3000{t.app.health_path}", f"http://127.0.3.24:3000{t.app.health_path}"]
    assert {"target_label": "__address__", "replacement": "127.0.3.30:9115"} in jobs["app_health"]["relabel_configs"]
    assert doc["global"]["scrape_interval"] == "2s"


def test_prometheus_config_follows_an_internal_haproxy_exporter_and_an_alertmanager() -> None:
    t = load_stack(PROJECT, "lab")
    t = dataclasses.replace(t, monitoring=dataclasses.replace(t.monitoring, haproxy_metrics="127.0.3.27:9101",
                                                              blackbox=None, scrape_interval=15))
    doc = yaml.safe_load(render_prometheus_config(t, alertmanagers=["127.0.3.30:9093"]))
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    assert jobs["haproxy"]["static_configs"][0]["targets"] == ["127.0.3.27:9101"]
    assert "app_health" not in jobs
    assert doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.3.30:9093"]
    assert doc["global"]["scrape_interval"] == "15s"


def test_stats_basic_auth_reaches_prometheus_as_a_password_file_only() -> None:
    t = load_stack(PROJECT, "lab")
    t = dataclasses.replace(t, haproxy=dataclasses.replace(t.haproxy, stats_user="metrics",
                                                           stats_password_hash="$6$salt$hash"))
    with pytest.raises(ConfigError, match=r"haproxy\.statsAuth"):
        render_prometheus_config(t)
    text = render_prometheus_config(t, haproxy_password_file="/etc/prometheus/haproxy-stats.password")
    jobs = {j["job_name"]: j for j in yaml.safe_load(text)["scrape_configs"]}
    assert jobs["haproxy"]["basic_auth"] == {"username": "metrics",
                                             "password_file": "/etc/prometheus/haproxy-stats.password"}
    assert "$6$" not in text


def test_a_stack_without_a_prometheus_server_says_which_key_to_set() -> None:
    with pytest.raises(ConfigError, match=r"monitoring\.prometheus"):
        render_prometheus_config(load_stack(PROJECT, "prod"))


def test_node_exporter_listens_on_its_host_with_the_textfile_dir_under_the_host_root() -> None:
    t = load_stack(PROJECT, "lab")
    assert node_exporter_args(t, t.load_balancer) == [
        "--web.listen-address=127.0.3.26:9100",
        "--collector.textfile.directory=/var/tmp/jw-lab/ct136/var/lib/prometheus/node-exporter"]
    prod = load_stack(PROJECT, "prod")
    assert render_node_exporter_defaults(prod, prod.database_host).splitlines()[1] == (
        'ARGS="--web.listen-address=10.92.3.21:9100 '
        '--collector.textfile.directory=/var/lib/prometheus/node-exporter"')


def test_blackbox_config_is_a_2xx_http_module() -> None:
    doc = yaml.safe_load(render_blackbox_config())
    assert doc["modules"]["http_2xx"]["prober"] == "http"


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    return exprs + [a["expr"] for a in doc["annotations"]["list"]]


def test_dashboard_covers_what_the_issue_asks_for() -> None:
    doc = json.loads(DASHBOARD.read_text())
    joined = "\n".join(dashboard_exprs())
    for needle in ("bluegreen_live_color", "haproxy_backend_http_requests_total", 'code="5xx"',
                   "response_time", "bluegreen_lock_held", "bluegreen_switch_total",
                   "bluegreen_last_deploy_timestamp_seconds", "bluegreen_last_switch_timestamp_seconds"):
        assert needle in joined, needle
    assert {a["name"] for a in doc["annotations"]["list"]} >= {"Switches", "Deploys"}
    assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])


def test_alertmanager_example_routes_critical_alerts_and_keeps_urls_out_of_the_file() -> None:
    doc = yaml.safe_load((MONITORING / "alertmanager.example.yml").read_text())
    receivers = {r["name"] for r in doc["receivers"]}
    assert doc["route"]["receiver"] in receivers
    assert all(r["receiver"] in receivers for r in doc["route"]["routes"])
    for receiver in doc["receivers"]:
        for hook in receiver["webhook_configs"]:
            assert "url_file" in hook and "url" not in hook
    inhibited = {name for rule in doc["inhibit_rules"] for m in rule["target_matchers"] + rule["source_matchers"]
                 for name in [m.split('"')[1]]}
    assert inhibited <= set(alerts())
