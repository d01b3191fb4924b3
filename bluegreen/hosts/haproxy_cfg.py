"""The live colour of an HAProxy we did not write: a hand-made config without our map, where a
switch rewrites the public frontend's `use_backend` line and reloads (the estate as it runs today).

Pure parsers over the config text, plus reads through the executor. The colour is the one whose
backend counts a visitor's request (HAProxy's own counters, so what the running process does,
not what the file says); failing that, the one whose app host the routed backend points at.
Backend names do not matter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from bluegreen.model.topology import COLORS, Topology

_SECTION = re.compile(r"^(global|defaults|frontend|backend|listen|userlist|peers|resolvers|program)\b\s*(\S*)")
_BIND = re.compile(r"^bind\s+(?:ipv4@)?([^\s:]*):(\d+)")
_SERVER = re.compile(r"^server\s+\S+\s+(?:ipv4@)?([0-9.]+):(\d+)")


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


def backend_colors(config: str, t: Topology) -> dict[str, str]:
    """Each backend whose servers all sit on one colour's app host, by backend name."""
    result = {}
    for kind, name, _lines in sections(config):
        if kind not in ("backend", "listen"):
            continue
        addresses = {ip for ip, _port in backend_addresses(config, name)}
        colors = [c for c in COLORS if t.app_host(c).ip in addresses]
        if len(colors) == 1:
            result[name] = colors[0]
    return result


def served_color(before: Mapping[str, int], after: Mapping[str, int], colors: Mapping[str, str]) -> str | None:
    """The colour whose backend counted the requests between two `show stat` reads (only one
    colour's counters may move), else None."""
    moved = {colors[name] for name, total in after.items()
             if name in colors and total > before.get(name, total)}
    return moved.pop() if len(moved) == 1 else None


_BACKEND_LINE = re.compile(r"^\s*(use_backend|default_backend)\s+(\S+)", re.M)


def color_from_backend_names(config: str, public_port: int | None = None) -> str | None:
    """The colour a hand-written haproxy.cfg serves: the backend its public frontend routes to
    (`use_backend`/`default_backend`), when it names exactly one colour. None when unclear
    (a map-based config routes at runtime: ask the runtime API instead)."""
    frontends = _section_bodies(config, "frontend")
    colors: set[str] = set()
    for name, body in frontends.items():
        if public_port is not None and not re.search(rf"^\s*bind\s+\S*:{public_port}\b", body, re.M) \
                and not re.search(r"^\s*bind\s+\S*:443\b", body, re.M):
            continue
        if "preview" in name or "stats" in name:
            continue
        for _, backend in _BACKEND_LINE.findall(body):
            if "%[" in backend:
                return None  # routed at runtime (a map): only the runtime API knows
            for color in COLORS:
                if color in backend.lower():
                    colors.add(color)
    return colors.pop() if len(colors) == 1 else None


def _section_bodies(config: str, kind: str) -> dict[str, str]:
    sections: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    for line in config.splitlines():
        head = re.match(r"^(global|defaults|frontend|backend|listen|resolvers|peers|userlist|program)\b\s*(\S*)",
                        line)
        if head:
            if current is not None:
                sections[current] = "\n".join(lines)
            current = head.group(2) if head.group(1) == kind else None
            lines = []
        elif current is not None:
            lines.append(line)
    if current is not None:
        sections[current] = "\n".join(lines)
    return sections


# --------------------------------------------------------------------------- adopting a hand-written config

_HEADER = re.compile(r"^(global|defaults|frontend|backend|listen|userlist|peers|resolvers|program|cache|"
                     r"http-errors|ring|mailers|log-forward|crt-store|traces)\b")


def raw_sections(config: str) -> list[tuple[str, str, list[str]]]:
    """(kind, name, raw lines) per section, the text exactly as written: a section's lines run from
    the comments just above its header to its last directive ("" kind: what precedes the first)."""
    result: list[tuple[str, str, list[str]]] = [("", "", [])]
    for raw in config.splitlines():
        match = _HEADER.match(raw)
        if match:
            lead: list[str] = []
            previous = result[-1][2]
            while previous and (not previous[-1].strip() or previous[-1].lstrip().startswith("#")) \
                    and not previous[-1][:1].isspace():
                lead.insert(0, previous.pop())
            words = raw.split("#", 1)[0].split()
            result.append((match.group(1), words[1] if len(words) > 1 else "", [*lead, raw]))
        else:
            result[-1][2].append(raw)
    return result


@dataclass(frozen=True)
class HealthCheck:
    path: str | None  # what `option httpchk` asks for; None: no HTTP check (TCP only)
    statuses: str | None  # `http-check expect status` as written; None: HAProxy's default (2xx, 3xx)
    note: str | None = None


def health_check(config: str, t: Topology, color: str) -> HealthCheck:
    """The health check the hand-written config runs against `color`'s backend."""
    backend = next((name for name, c in backend_colors(config, t).items() if c == color), None)
    lines = next((body for kind, name, body in sections(config) if kind in ("backend", "listen") and name == backend),
                 None)
    if lines is None:
        return HealthCheck(None, None, f"no backend of {color}'s app host")
    path = statuses = note = None
    for line in lines:
        words = line.split()
        if words[:2] == ["option", "httpchk"]:
            rest = words[2:]
            # `option httpchk`, `option httpchk <uri>`, `option httpchk <method> <uri> [<version>]`
            path = rest[1] if len(rest) >= 2 else rest[0] if rest and rest[0].startswith("/") else "/"
        elif words[:2] == ["http-check", "send"] and "uri" in words:
            path = words[words.index("uri") + 1]
        elif words[:3] == ["http-check", "expect", "status"] and len(words) > 3:
            statuses = words[3]
        elif words[:2] == ["http-check", "expect"]:
            note = f"`{line}` cannot be expressed as app.healthStatus; the statuses default to 2xx and 3xx"
    return HealthCheck(path, statuses, note)


_ANY_ADDRESS = ("", "*", "0.0.0.0", "::")  # noqa: S104 - bind addresses as a config spells them


def _binds(lines: list[str]) -> list[tuple[str, int]]:
    return [(m.group(1), int(m.group(2))) for m in (_BIND.match(line.strip()) for line in lines) if m]


@dataclass
class OtherSites:
    """What of a hand-written config is not attendant's: carried over verbatim (`text`)."""

    text: str = ""
    carried: list[str] = field(default_factory=list)  # "frontend wiki_front", ...
    notes: list[str] = field(default_factory=list)


def other_sites(config: str, t: Topology) -> OtherSites:
    """Every section of a hand-written haproxy.cfg that serves something else than the app: the
    other sites' frontends, backends, listens (and the `defaults` they inherit), exactly as written.
    Left behind: `global`, the app's colour backends, and frontends on a port bluegreen's own
    config binds (public, HTTPS, preview, stats), which bluegreen's config replaces."""
    hp, lb = t.haproxy, t.load_balancer
    ours = {hp.public_port, hp.preview_port, hp.stats_port, *([hp.https_port] if hp.tls else [])}
    colours = set(backend_colors(config, t))
    result = OtherSites()
    pending_defaults: list[str] | None = None
    for kind, name, lines in raw_sections(config):
        body = [line.split("#", 1)[0].strip() for line in lines[1:]]
        if kind in ("", "global"):
            continue
        if kind == "defaults":
            pending_defaults = lines
            continue
        if kind in ("frontend", "listen"):
            taken = [(a, p) for a, p in _binds(body) if p in ours and a in (*_ANY_ADDRESS, lb.ip, t.private_ip)]
            if taken:
                others = [w for w in (line.split() for line in body) if w[:1] == ["use_backend"]
                          and len(w) > 2 and w[1] not in colours]
                if others:
                    result.notes.append(f"{kind} {name} also routes to {', '.join(sorted({w[1] for w in others}))} "
                                        "by rule; bluegreen's frontend replaces it, so add those rules to "
                                        "haproxy.extraConfig by hand")
                continue
        if kind in ("backend", "listen") and name in colours:
            continue
        if pending_defaults is not None:
            result.text += "\n".join(pending_defaults).rstrip("\n") + "\n"
            pending_defaults = None
        result.text += "\n".join(lines).rstrip("\n") + "\n"
        result.carried.append(f"{kind} {name}".strip())
    return result
