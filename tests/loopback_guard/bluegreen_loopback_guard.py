"""Rule 1 as a mechanism: no process the tests start may connect outside the loopback range.

`tests/conftest.py` installs this in the test process and puts this directory on PYTHONPATH, so
every Python process a test starts (the CLI, the MCP server, the lab's helpers) loads it through
`sitecustomize`. A connection to any other address (the prod stack's 10.92.x.x servers, say)
fails at once with ConnectionRefusedError instead of leaving the machine.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

_ORIGINAL_CONNECT = socket.socket.connect
_ORIGINAL_CONNECT_EX = socket.socket.connect_ex


def outside_loopback(family: int, address: Any) -> str | None:
    """The host of an INET address outside 127.0.0.0/8 and ::1, else None."""
    if family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple) or not address:
        return None
    host = str(address[0]).split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host  # connect() gets resolved addresses; a name here is not ours to guess at
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return None if ip.is_loopback else host


def _refuse(host: str) -> ConnectionRefusedError:
    return ConnectionRefusedError(f"loopback guard (tests): refused a connection to {host}, outside "
                                  "127.0.0.0/8; nothing run by the tests may reach a real server")


def _connect(self: socket.socket, address: Any) -> None:
    host = outside_loopback(self.family, address)
    if host is not None:
        raise _refuse(host)
    _ORIGINAL_CONNECT(self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    host = outside_loopback(self.family, address)
    if host is not None:
        raise _refuse(host)
    return _ORIGINAL_CONNECT_EX(self, address)


def install() -> None:
    socket.socket.connect = _connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign,assignment]


install()
