"""HTTPS on the lab's HAProxy, with the lab's own CA: verified by every client, never ignored."""

from __future__ import annotations

import socket

import pytest

from bluegreen.hosts import health
from bluegreen.hosts.health import http_probe, visitor
from bluegreen.lab.lab import Lab
from bluegreen.lab.loadgen import RequestLoop
from bluegreen.model.stackfile import load_stack

pytestmark = pytest.mark.integration


def test_the_public_frontend_serves_https_verified_against_the_lab_ca(lab: Lab) -> None:
    t = load_stack(lab.project_dir, "lab")
    assert t.public_url == "https://127.0.3.26:443" and t.tls_server_name == "attendant.lab"
    probe = http_probe(f"{t.public_url}/", **visitor(t), timeout=5)
    assert probe.error is None or probe.status is not None, probe.error
    assert probe.status is not None  # an HTTP answer came back over a verified TLS connection


def test_port_80_only_redirects_to_https(lab: Lab) -> None:
    t = load_stack(lab.project_dir, "lab")
    url = f"http://{t.load_balancer.ip}:{t.haproxy.public_port}/attendants?week=3"
    client = health._client(None)
    response = client.get(url, headers={"Host": "attendant.lab"}, timeout=5)
    assert response.status_code == 301
    assert response.headers["location"] == "https://attendant.lab/attendants?week=3"
    assert "x-served-by" not in response.headers  # no app answered over plain HTTP


@pytest.mark.parametrize(("ca", "name", "why"), [
    (None, "attendant.lab", "CERTIFICATE_VERIFY_FAILED"),  # the system's CAs do not know the lab CA
    ("lab", "not-attendant.example", "CERTIFICATE_VERIFY_FAILED"),  # the certificate is for another name
])
def test_a_client_that_cannot_verify_the_certificate_is_refused(lab: Lab, ca: str | None, name: str,
                                                                why: str) -> None:
    t = load_stack(lab.project_dir, "lab")
    ca_file = t.haproxy.ca_file if ca == "lab" else None
    probe = http_probe(f"{t.public_url}/", ca_file=ca_file, server_name=name, timeout=5)
    assert probe.status is None and not probe.ok
    assert why in (probe.error or ""), probe.error


def test_preview_and_stats_listen_only_on_the_private_address(lab: Lab) -> None:
    t = load_stack(lab.project_dir, "lab")
    assert t.private_ip != t.load_balancer.ip
    for port in (t.haproxy.preview_port, t.haproxy.stats_port):
        with socket.socket() as s, pytest.raises(ConnectionRefusedError):
            s.settimeout(3)
            s.connect((t.load_balancer.ip, port))
        with socket.create_connection((t.private_ip, port), timeout=3):
            pass
    probe = http_probe(f"{t.preview_url}/", **visitor(t), timeout=5)
    assert probe.status is not None, probe.error  # the preview is HTTPS too, same certificate


def test_the_request_loop_speaks_verified_https(lab: Lab) -> None:
    t = load_stack(lab.project_dir, "lab")
    with RequestLoop.visitor(t, "/", clients=2, max_requests=40) as loop:
        loop.wait_for(40, timeout=20)
    report = loop.report
    assert report.total == 40
    assert [s.error for s in report.samples if s.error] == []
    refused = RequestLoop(f"{t.public_url}/", clients=1, max_requests=3, server_name="attendant.lab")
    with refused:
        refused.wait_for(3, timeout=20)
    assert refused.report.total == 3
    assert all(s.error == "SSLCertVerificationError" for s in refused.report.samples)
