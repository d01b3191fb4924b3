"""A bash script per host role that brings a fresh Debian container to what deploys expect.

The script is idempotent: it installs a package only when its command is missing, creates what
does not exist and corrects ownership only where it differs. It prints one `bootstrap: ...` line
per change, so a run that prints nothing changed nothing. Every path goes through
`container.path()`, so the lab's hosts (each under its own root) get the same script.
"""

from __future__ import annotations

import posixpath
import re
import shlex

from bluegreen.model.errors import ConfigError
from bluegreen.model.topology import Container, Topology
from bluegreen.render import GENERATED_BY
from bluegreen.render.commands import default_pm2_home
from bluegreen.render.monitoring import (
    NODE_EXPORTER,
    NODE_EXPORTER_DEFAULTS,
    render_node_exporter_defaults,
    textfile_dir,
)
from bluegreen.render.offsite import bootstrap_lines as offsite_lines
from bluegreen.render.secretfiles import render_secret_modes

PG_BIN = "/usr/lib/postgresql/15/bin"
PG_SOCKET_DIR = "/var/run/postgresql"
PM2_PACKAGE = "pm2@7"
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")

# (command whose absence means "install", Debian package)
PACKAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "database": ((f"{PG_BIN}/postgres", "postgresql-15"),),
    "app": (("node", "nodejs"), ("npm", "npm"), ("git", "git")),
    "loadbalancer": (("haproxy", "haproxy"), ("socat", "socat"), ("jq", "jq"), ("flock", "util-linux")),
}
# Every host runs Debian's node exporter (its textfile collector serves the tool's own metrics).
NODE_EXPORTER_PACKAGE = (NODE_EXPORTER, NODE_EXPORTER)

_PRELUDE = r"""set -euo pipefail

changed() { printf 'bootstrap: %s\n' "$*"; }

ensure_packages() {  # probe:package ...
  local pair
  local -a missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
    changed "installed ${missing[*]}"
  fi
}

ensure_user() {  # name
  if [ "$1" != root ] && ! id -u "$1" >/dev/null 2>&1; then
    useradd --system --create-home --home-dir "/home/$1" --shell /bin/bash "$1"
    changed "created user $1"
  fi
}

# A directory we own outright: created if missing, owner and mode corrected if they drifted.
ensure_dir() {  # path owner mode(four octal digits)
  local path=$1 owner=$2 mode=$3 group
  group=$(id -gn "$owner")
  if [ ! -d "$path" ]; then
    install -d -o "$owner" -g "$group" -m "$mode" "$path"
    changed "created $path"
  elif [ "$(stat -c '%U:%G %04a' "$path")" != "$owner:$group $mode" ]; then
    chown "$owner:$group" "$path"
    # Five digits: GNU chmod keeps a directory's set-id bits unless they are spelled out.
    chmod "0$mode" "$path"
    changed "set $owner:$group $mode on $path"
  fi
}

# A directory other packages may own too (/etc/haproxy, node-exporter's textfile dir): only
# created when missing, never re-owned.
ensure_dir_exists() {  # path
  if [ ! -d "$1" ]; then
    install -d -m 0755 "$1"
    changed "created $1"
  fi
}

# A small file we own outright; prints nothing and returns 1 when it already holds that text.
ensure_file() {  # path content
  if [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; then
    return 1
  fi
  install -d -m 0755 "$(dirname "$1")"
  printf '%s\n' "$2" > "$1.tmp" && mv "$1.tmp" "$1"
  changed "wrote $1"
}"""


PG_CONF_NAME = "bluegreen.conf"


def _q(value: str) -> str:
    return shlex.quote(value)


def _deploy_user(t: Topology) -> str:
    user = t.app.deploy_user
    if not _USER.fullmatch(user):
        raise ConfigError(f"app.deployUser: {user!r} is not a valid Unix user name")
    return user


def _pm2_startup_home(t: Topology, host: Container) -> str | None:
    """The `--hp` for `pm2 startup` (its unit sets PM2_HOME=<hp>/.pm2), or None for the user's home."""
    if t.app.pm2_home is None:
        return None
    home = posixpath.normpath(t.app.pm2_home)
    if posixpath.basename(home) != ".pm2":
        raise ConfigError(
            f"app.pm2Home: {t.app.pm2_home!r} must end in /.pm2: `pm2 startup` can only resurrect "
            "the processes of a PM2 home named .pm2 inside the directory it is given")
    return host.path(posixpath.dirname(home))


def _restart_or_report(t: Topology, service: str, why: str) -> list[str]:
    """A change that only a restart applies: restarted with `allowRestart`, else reported with the
    command to run (a serving host is never restarted by surprise). `why` may use "$pending"."""
    if t.allow_restart:
        return [f"systemctl restart {service}",
                f'changed "restarted {service} ({why}; bluegreen:allowRestart is true)"']
    return [f'changed "NOT APPLIED: {why} needs a restart of {service}; run \'systemctl restart {service}\' '
            'in a quiet moment (or set bluegreen:allowRestart: true)"']


def _database(t: Topology, host: Container) -> list[str]:
    # Debian's cluster listens on localhost only; the app hosts connect to the container address.
    # Only where systemd runs the cluster (the lab starts PostgreSQL with its own settings). A
    # server that already listens there (an adopted one: its apps connect today) is left alone;
    # otherwise the setting is written, reloaded with pg_reload_conf(), and what still needs a
    # restart (pg_settings.pending_restart) is reported, or restarted only with allowRestart.
    listen = f"listen_addresses = 'localhost,{host.ip}'  # {GENERATED_BY}"
    conf = host.path(f"/etc/postgresql/15/main/conf.d/{PG_CONF_NAME}")
    return [
        f"ensure_dir {_q(host.path(t.database.backup_dir))} postgres 0700",
        f"ensure_dir {_q(host.path(PG_SOCKET_DIR))} postgres 2775",
        "pg_q() {",
        f"  (cd / && runuser -u postgres -- psql -X -At -h {_q(host.path(PG_SOCKET_DIR))} "
        f'-p {t.database.port} -d postgres -c "$1")',
        "}",
        "if [ -d /run/systemd/system ]; then",
        "  listening=$(pg_q 'SHOW listen_addresses' 2>/dev/null | tr -d ' ') || listening=''",
        f'  if [[ ",$listening," != *",*,"* && ",$listening," != *",{host.ip},"* ]] && '
        f"ensure_file {_q(conf)} {_q(listen)}; then",
        "    pg_q 'SELECT pg_reload_conf()' >/dev/null",
        "    pending=$(pg_q \"SELECT string_agg(name, ', ') FROM pg_settings WHERE pending_restart\")",
        '    if [ -n "$pending" ]; then',
        *["      " + line for line in _restart_or_report(t, "postgresql", "PostgreSQL setting(s) $pending")],
        "    fi",
        "  fi",
        "fi",
    ]


def _app(t: Topology, host: Container) -> list[str]:
    user = _deploy_user(t)
    app_dir = t.app.dir.rstrip("/")
    hp = _pm2_startup_home(t, host)
    home = _q(hp) if hp else f'"$(getent passwd {_q(user)} | cut -d: -f6)"'
    service = f"pm2-{user}.service"
    return [
        f"command -v pm2 >/dev/null 2>&1 || "
        f"{{ npm install -g {PM2_PACKAGE}; changed {_q('installed ' + PM2_PACKAGE)}; }}",
        f"ensure_user {_q(user)}",
        # Releases live beside the team's working copy (app.workingCopy), which bootstrap never
        # touches. A git working copy at app.dir itself (a stack that still names it there) is left
        # as it is, owner included; the first deploy refuses it with the fix (convert.py).
        f"if [ ! -e {_q(host.path(app_dir + '/.git'))} ]; then",
        f"  ensure_dir {_q(host.path(app_dir))} {_q(user)} 0755",
        f"  ensure_dir {_q(host.path(app_dir + '/releases'))} {_q(user)} 0755",
        # shared/ holds .env with the database password.
        f"  ensure_dir {_q(host.path(app_dir + '/shared'))} {_q(user)} 0700",
        f"  ensure_dir {_q(host.path(app_dir + '/logs'))} {_q(user)} 0755",
        "fi",
        # PM2's home holds its dump (the processes' environment: DATABASE_URL and the secrets):
        # the deploy user's own, closed to everyone else.
        f"ensure_dir {_q(host.path(default_pm2_home(t)))} {_q(user)} 0700",
        f"for f in {_q(host.path(default_pm2_home(t)))}/dump.pm2 {_q(host.path(default_pm2_home(t)))}/dump.pm2.bak; do",
        '  if [ -f "$f" ] && [ "$(stat -c %a "$f")" != 600 ]; then chmod 600 "$f"; changed "set 0600 on $f"; fi',
        "done",
        # Only a host booted by systemd can resurrect PM2 at boot; elsewhere (the lab) a no-op.
        "if [ -d /run/systemd/system ]; then",
        f"  if ! systemctl is-enabled --quiet {_q(service)} 2>/dev/null; then",
        f"    pm2 startup systemd -u {_q(user)} --hp {home}",
        f"    changed {_q('enabled ' + service)}",
        "  fi",
        "fi",
    ]


def _loadbalancer(t: Topology, host: Container) -> list[str]:
    hp, jn = t.haproxy, t.journal
    files = (hp.config_path, hp.map_path, hp.admin_socket, hp.master_socket,
             jn.path, jn.lock_path, jn.metrics_path)
    dirs = sorted({host.path(posixpath.dirname(f)) for f in files})
    # Debian's unit runs `haproxy -Ws ... $EXTRAOPTS` from /etc/default/haproxy: that is where the
    # master CLI socket (hitless reloads, `show proc`) is declared on a systemd host.
    extra = f'EXTRAOPTS="-S {host.path(hp.master_socket)},mode,600"'
    master = _q(host.path(hp.master_socket))
    # A master CLI already open there means reloads are hitless as things are: nothing to change.
    # Otherwise the unit's options are written for its next start; HAProxy is restarted only with
    # allowRestart (a restart drops the connections it holds).
    script = host.path(STATE_SCRIPT)
    return [f"ensure_dir_exists {_q(d)}" for d in dirs] + [
        # The estate's own state script is kept as it is; ours only where there is none.
        f"if [ ! -e {_q(script)} ]; then",
        f"  install -d -m 0755 {_q(posixpath.dirname(script))}",
        f"  printf '%s\\n' {_q(render_state_script(t, host))} > {_q(script)}",
        f"  chmod 0755 {_q(script)}",
        f"  changed {_q('installed ' + STATE_SCRIPT)}",
        "fi",
        "if [ -d /run/systemd/system ]; then",
        f"  if [ ! -S {master} ] && ensure_file /etc/default/haproxy {_q(extra)}; then",
        *["    " + line for line in _restart_or_report(t, "haproxy",
                                                      f"opening the HAProxy master CLI on {hp.master_socket}")],
        "  fi",
        "fi",
    ]


def _node_exporter(t: Topology, host: Container) -> list[str]:
    """The node exporter on its container address, textfile collector at the metrics directory;
    enabled and (re)started only where systemd runs (the lab starts it itself)."""
    defaults = render_node_exporter_defaults(t, host)
    service = f"{NODE_EXPORTER}.service"
    return [
        f"ensure_dir_exists {_q(host.path(textfile_dir(t)))}",
        "if [ -d /run/systemd/system ]; then",
        f"  if ensure_file {NODE_EXPORTER_DEFAULTS} {_q(defaults)}; then systemctl restart {service}; fi",
        f"  if ! systemctl is-enabled --quiet {service} 2>/dev/null; then",
        f"    systemctl enable --now {service}",
        f"    changed {_q('enabled ' + service)}",
        "  fi",
        "fi",
    ]


STATE_SCRIPT = "/usr/local/bin/jw-deployment-state.sh"

# Installed only where the estate has no state script of its own: the same interface as the
# operators' tool (get [key] / set KEY VALUE) under the same lock (flock on state.lock beside the
# journal), which the journal's own writes take too.
_STATE_SCRIPT_TEXT = """#!/bin/bash
# jw-deployment-state.sh: installed by bluegreen where the estate had none; the interface and
# lock of the estate's own tool
#   jw-deployment-state.sh get [key]      print the state (or one key)
#   jw-deployment-state.sh set KEY VALUE  set prod|standby|lastSwitch|switchCount under the lock
set -euo pipefail
STATE={state}
LOCK={lock}
exec 9>"$LOCK"
flock -w 10 9 || {{ echo "state is locked" >&2; exit 1; }}
case "${{1:-}}" in
  get) if [ -n "${{2:-}}" ]; then jq -r --arg k "$2" '.[$k]' "$STATE"; else cat "$STATE"; fi ;;
  set) [ $# -eq 3 ] || {{ echo "usage: $0 set KEY VALUE" >&2; exit 2; }}
       tmp="$STATE.tmp"
       jq --arg k "$2" --arg v "$3" 'if $k == "switchCount" then .[$k] = ($v|tonumber) else .[$k] = $v end' \\
          "$STATE" > "$tmp" && mv "$tmp" "$STATE" ;;
  *) echo "usage: $0 get [key] | set KEY VALUE" >&2; exit 2 ;;
esac"""


def render_state_script(t: Topology, host: Container) -> str:
    state = host.path(t.journal.path)
    lock = posixpath.join(posixpath.dirname(state), "state.lock")
    return _STATE_SCRIPT_TEXT.format(state=_q(state), lock=_q(lock))


_ROLES = {"database": _database, "app": _app, "loadbalancer": _loadbalancer}


def render_bootstrap(t: Topology, container: Container) -> str:
    if container.role not in _ROLES:
        raise ConfigError(f"no bootstrap for role {container.role!r} of {container.label}")
    if container not in t.containers:
        raise ConfigError(f"{container.label} is not a container of stack {t.stack!r}")
    # Hosts that push copies off-host (bluegreen:backup) need an SSH client and flock.
    pushing = t.backup is not None and container.role in ("database", "loadbalancer")
    extra = (("ssh", "openssh-client"), ("flock", "util-linux")) if pushing else ()
    packages = " ".join(_q(f"{probe}:{package}")
                        for probe, package in dict.fromkeys((*PACKAGES[container.role], *extra,
                                                             NODE_EXPORTER_PACKAGE)))
    lines = [
        "#!/usr/bin/env bash",
        f"# {GENERATED_BY}",
        f"# stack {t.stack}: bootstrap of {container.label}, role {container.role}; safe to run again.",
        _PRELUDE,
        "",
        f"ensure_packages {packages}",
        *_ROLES[container.role](t, container),
        *_node_exporter(t, container),
        *offsite_lines(t, container),
        # The files that hold secrets: 0600 in 0700 directories (also checked on every `up`).
        "\"$BASH\" <<'BLUEGREEN_SECRET_MODES'",
        render_secret_modes(t, container).rstrip("\n"),
        "BLUEGREEN_SECRET_MODES",
    ]
    return "\n".join(lines) + "\n"
