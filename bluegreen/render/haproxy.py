"""haproxy.cfg and the live-colour map for the load balancer.

Both colour backends are always present and health-checked; which one the public frontend uses
is decided per request by the map file, so a flip is a runtime `set map` and never a reload.
"""

from __future__ import annotations

from bluegreen.model.errors import ConfigError
from bluegreen.model.topology import COLORS, Topology, other_color
from bluegreen.render import GENERATED_BY, http_path, plain_path, plain_word

# Old workers otherwise linger forever on a client that never closes its connection, and each
# reload would add one more; five minutes is far beyond any request the app serves.
HARD_STOP_AFTER = "5m"
MAP_KEYS = ("live", "preview")
KEEP_ALIVE = (
    # Keep-alive on both sides: http-server-close would buy nothing for reloads (it only closes
    # the server side) and cost a new connection to Node per request. What keeps keep-alive
    # clients safe across a reload is idle-close-on-response: the old worker answers in-flight
    # requests with `Connection: close` instead of dropping the idle connection under a client
    # that is about to reuse it.
    "    option http-keep-alive",
    "    option idle-close-on-response",
    # Idle server connections are shared between clients ("safe": a client's first request always
    # gets a connection of its own). The app keeps an idle connection open far longer
    # (render/pm2.py APP_KEEP_ALIVE_TIMEOUT_MS) than HAProxy keeps it in its idle pool, so it is
    # HAProxy that closes idle connections, never the app under a request being sent (issue 21).
    # Should one still close empty, an idempotent request is retried on a new connection; others
    # are not (each backend disables it: a POST is never sent twice).
    "    http-reuse safe",
    "    retry-on conn-failure empty-response",
)


def backend_name(color: str) -> str:
    if color not in COLORS:
        raise ConfigError(f"unknown colour {color!r} (expected one of {', '.join(COLORS)})")
    return f"bk_{color}"


def render_live_map(t: Topology, live_color: str) -> str:
    """The map file: `live` names the live colour's backend, `preview` the standby's."""
    live = backend_name(live_color)
    preview = backend_name(other_color(live_color))
    return f"{MAP_KEYS[0]} {live}\n{MAP_KEYS[1]} {preview}\n"


def render_haproxy_cfg(t: Topology) -> str:
    lb = t.load_balancer
    hp = t.haproxy
    map_path = plain_path(lb.path(hp.map_path), "haproxy.mapPath")
    admin_socket = plain_path(lb.path(hp.admin_socket), "haproxy.adminSocket")
    health = http_path(t.app.health_path, "app.healthPath")
    server_name = plain_word(hp.server_name, "haproxy.serverName")
    live_default, preview_default = backend_name(COLORS[0]), backend_name(COLORS[1])

    lines = [
        f"# {GENERATED_BY}",
        f"# stack {t.stack}: load balancer {lb.label}, serving {server_name}",
        "# The master CLI and master-worker mode come from the command line (-W -S <masterSocket>).",
        "",
        "global",
        "    log /dev/log local0",
        f"    maxconn {hp.maxconn}",
        "    user haproxy",
        "    group haproxy",
        f"    stats socket {admin_socket} mode 600 level admin expose-fd listeners",
        "    stats timeout 30s",
        f"    hard-stop-after {HARD_STOP_AFTER}",
        *(["    ssl-default-bind-options ssl-min-ver TLSv1.2"] if hp.tls else []),
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option dontlognull",
        "    option forwardfor",
        *KEEP_ALIVE,
        "    option redispatch",
        "    retries 2",
        "    timeout connect 5s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 10s",
        "    timeout queue 30s",
        "    timeout check 3s",
        # A dead colour is noticed in about four seconds, a recovered one in about two.
        "    default-server inter 2s fastinter 1s downinter 2s fall 2 rise 2",
        *_userlist(t),
        "",
        *_public_frontend(t, map_path, live_default),
        "",
        "frontend fe_preview",
        f"    bind {_private_ip(t)}:{hp.preview_port}{_ssl(t)}",
        f"    use_backend %[str({MAP_KEYS[1]}),map({map_path},{preview_default})]",
        "",
        "frontend fe_stats",
        f"    bind {_private_ip(t)}:{hp.stats_port}",
        # Scrapes every few seconds would drown the request log; failures still show.
        "    option dontlog-normal",
        *_stats_auth(t),
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    stats enable",
        "    stats uri /stats",
        "    stats refresh 10s",
    ]
    for color in COLORS:
        host = t.app_host(color)
        lines += [
            "",
            f"backend {backend_name(color)}",
            f"    option httpchk GET {health}",
            f"    http-check expect status {_statuses(t)}",
            f"    http-response set-header X-Served-By {color}",
            "    http-request disable-l7-retry unless METH_GET",
            f"    server {color} {host.ip}:{t.app.port} check",
        ]
    return "\n".join(lines) + "\n" + _other_sites(t)


def _statuses(t: Topology) -> str:
    """The statuses the tool's own probes accept, in HAProxy's list-of-codes-or-ranges spelling."""
    text = str(t.app.health_status)
    if not text.replace(",", "").replace("-", "").isdigit():
        raise ConfigError(f"app.healthStatus: {text!r} is not a list of HTTP statuses")
    return text


OTHER_SITES_HEADER = ("# Other sites on this load balancer, carried over verbatim from the hand-written "
                      "haproxy.cfg\n# (haproxy.extraConfig in the stack file, written by `bluegreen adopt`).")


def _other_sites(t: Topology) -> str:
    """`haproxy.extraConfig` after everything of ours: a `defaults` section in it applies only to
    the sections that follow it, so ours keep their own defaults."""
    extra = t.haproxy.extra_config.strip("\n")
    if not extra.strip():
        return ""
    return f"\n{OTHER_SITES_HEADER}\n{extra}\n"


# ------------------------------------------------------------------- HTTPS (issue 10)

STATS_USERLIST = "stats_users"


def _private_ip(t: Topology) -> str:
    return plain_word(t.private_ip, "haproxy.privateAddress")


def _ssl(t: Topology) -> str:
    """` ssl crt <bundle>` on a bind line when the stack names a certificate, else nothing."""
    if t.haproxy.tls_cert is None:
        return ""
    return f" ssl crt {plain_path(t.load_balancer.path(t.haproxy.tls_cert), 'haproxy.tlsCert')}"


def _public_frontend(t: Topology, map_path: str, live_default: str) -> list[str]:
    lb, hp = t.load_balancer, t.haproxy
    route = f"    use_backend %[str({MAP_KEYS[0]}),map({map_path},{live_default})]"
    if not hp.tls:
        return ["frontend fe_public", f"    bind {lb.ip}:{hp.public_port}", route]
    return [
        "frontend fe_public",
        f"    bind {lb.ip}:{hp.public_port}",
        f"    bind {lb.ip}:{hp.https_port}{_ssl(t)}",
        # Plain HTTP only ever answers with the way to HTTPS.
        "    http-request redirect scheme https code 301 unless { ssl_fc }",
        "    http-request set-header X-Forwarded-Proto https",
        route,
    ]


def _userlist(t: Topology) -> list[str]:
    hp = t.haproxy
    if hp.stats_user is None or hp.stats_password_hash is None:
        return []
    user = plain_word(hp.stats_user, "haproxy.statsAuth.user")
    hashed = hp.stats_password_hash
    if any(ch.isspace() or ch in "\"'#" for ch in hashed):
        raise ConfigError("haproxy.statsAuth.passwordHash: must be a crypt(3) hash without spaces or quotes")
    return ["", f"userlist {STATS_USERLIST}", f"    user {user} password {hashed}"]


def _stats_auth(t: Topology) -> list[str]:
    if t.haproxy.stats_user is None:
        return []
    return [f"    http-request auth realm stats unless {{ http_auth({STATS_USERLIST}) }}"]
