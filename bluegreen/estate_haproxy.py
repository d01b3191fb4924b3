"""The live colour of an HAProxy we did not write: a hand-made config without our map, where a
switch rewrites the public frontend's `use_backend` line and reloads (the estate as it runs today).

Pure parsers over the config text, plus one read through the executor. The colour is the one
whose app host address the routed backend's server points at, so backend names do not matter.
"""

from __future__ import annotations

import re

from .errors import RemoteError
from .executor import Executor
from .topology import COLORS, Topology

_SECTION = re.compile(r"^(global|defaults|frontend|backend|listen|userlist|peers|resolvers|program)\b\s*(\S*)")
_BIND = re.compile(r"^bind\s+(?:ipv4@)?([^\s:]*):(\d+)")
_SERVER = re.compile(r"^server\s+\S+\s+(?:ipv4@)?([0-9.]+):(\d+)")
STEP = "read the live colour from haproxy.cfg"


def sections(config: str) -> list[tuple[str, str, list[str]]]:
    """(kind, name, directive lines) for each section, comments and blank lines dropped."""
    result: list[tuple[str, str, list[str]]] = []
    for raw in config.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _SECTION.match(line)
        if match and not raw[:1].isspace():
            result.append((match.group(1), match.group(2), []))
        elif result:
            result[-1][2].append(line)
    return result


def routed_backend(config: str, ports: set[int]) -> str | None:
    """The backend a frontend (or listen) bound on one of `ports` sends every request to: its
    unconditional `use_backend`, else its `default_backend`. A listen section is its own backend."""
    for kind, name, lines in sections(config):
        if kind not in ("frontend", "listen"):
            continue
        bound = {int(m.group(2)) for m in (_BIND.match(line) for line in lines) if m}
        if not bound & ports:
            continue
        for line in lines:
            words = line.split()
            if words[0] == "use_backend" and len(words) == 2:
                return words[1]
        for line in lines:
            words = line.split()
            if words[0] == "default_backend" and len(words) == 2:
                return words[1]
        if kind == "listen":
            return name
    return None


def backend_addresses(config: str, backend: str) -> list[tuple[str, int]]:
    for kind, name, lines in sections(config):
        if kind in ("backend", "listen") and name == backend:
            return [(m.group(1), int(m.group(2))) for m in (_SERVER.match(line) for line in lines) if m]
    return []


def color_from_config(config: str, t: Topology) -> tuple[str | None, str]:
    """(colour, why): the colour the public frontend routes to, or None with the reason."""
    hp = t.haproxy
    backend = routed_backend(config, {hp.public_port, hp.https_port})
    if backend is None:
        return None, f"no frontend on port {hp.https_port} or {hp.public_port} names its backend"
    addresses = {ip for ip, _port in backend_addresses(config, backend)}
    colors = [c for c in COLORS if t.app_host(c).ip in addresses]
    if len(colors) != 1:
        return None, f"backend {backend} points at {sorted(addresses) or 'no server'}, not at one colour's host"
    return colors[0], f"the public frontend uses backend {backend}"


def live_color_from_config(executor: Executor, t: Topology) -> str:
    """The colour the running HAProxy serves, read from its config file (no map in this estate)."""
    path = t.load_balancer.path(t.haproxy.config_path)
    raw = executor.get(path, step=STEP)
    if raw is None:
        raise RemoteError(executor.host, STEP, f"{path} does not exist")
    color, why = color_from_config(raw.decode(errors="replace"), t)
    if color is None:
        raise RemoteError(executor.host, STEP, why)
    return color
