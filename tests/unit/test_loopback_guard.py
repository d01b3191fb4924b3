"""The tests' loopback guard (tests/loopback_guard): checked without sending anything anywhere."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from bluegreen_loopback_guard import outside_loopback


@pytest.mark.parametrize(("family", "address", "refused"), [
    (socket.AF_INET, ("127.0.3.26", 443), None),
    (socket.AF_INET, ("127.255.255.254", 22), None),
    (socket.AF_INET6, ("::1", 22, 0, 0), None),
    (socket.AF_INET6, ("::ffff:127.0.3.22", 3000, 0, 0), None),
    (socket.AF_INET, ("10.92.3.26", 22), "10.92.3.26"),  # the prod stack's load balancer
    (socket.AF_INET, ("10.92.0.5", 8006), "10.92.0.5"),  # the prod Proxmox node
    (socket.AF_INET, ("192.168.1.1", 80), "192.168.1.1"),
    (socket.AF_INET6, ("::ffff:10.92.3.21", 5432, 0, 0), "::ffff:10.92.3.21"),
    (socket.AF_INET6, ("fe80::1%eth0", 22, 0, 0), "fe80::1"),
    (socket.AF_UNIX, "/run/haproxy/admin.sock", None),
])
def test_only_loopback_addresses_pass(family: int, address: object, refused: str | None) -> None:
    assert outside_loopback(family, address) == refused


def test_the_guard_is_installed_here_and_in_every_python_process_the_tests_start() -> None:
    assert socket.socket.connect.__module__ == "bluegreen_loopback_guard"
    child = subprocess.run([sys.executable, "-c", "import socket; print(socket.socket.connect.__module__)"],
                           capture_output=True, text=True, timeout=60, check=True)
    assert child.stdout.strip() == "bluegreen_loopback_guard"
