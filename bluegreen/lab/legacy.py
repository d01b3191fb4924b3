"""`python -m bluegreen.lab up --legacy`: the estate as it runs today, built by hand on the lab's hosts.

The normal lab is built by `apply_estate` (what `pulumi up` does). This one is built the way the
operators built production, so the takeover of a running estate can be rehearsed on it:

- app hosts (blue 127.0.3.22, green 127.0.3.24): a git working copy of the sample repo at
  `app.workingCopy` on branch `production-gold-standard`, `.env` inside it with the settings a real
  app has (a DATABASE_URL with query parameters, NextAuth's URL and secret, mail settings, a time
  zone, ...: a dozen and more, secrets among them, written by hand: comments, quotes, `export`),
  built in place, started by hand as root under PM2 in fork mode: `pm2 start npm --name <app> --
  start`. The app has no /api/health (NO_HEALTH_ROUTE=1) and, signed out, `/` redirects (307) to
  its sign-in page as NextAuth does; the sign-in page answers 200.
- load balancer (127.0.3.26): a hand-written haproxy.cfg, TLS on :443 from the lab CA's bundle,
  :80 redirecting, backends `blue_servers`/`green_servers` checked with `option httpchk GET /`
  (HAProxy's default: 2xx and 3xx are up) and a frontend whose `use_backend` line the old switch
  rewrites; no map file. A second site beside attendant's: the circuit's wiki (`wiki_front` on
  :8081, `wiki_servers` -> a small web server on 127.0.3.28:8000). The old tool's journal
  /var/lib/jw-deployment/state.json (with history) and /usr/local/bin/jw-deployment-state.sh
  (get/set under flock) under the host's root.
- database (127.0.3.21): `jw_attendant_scheduler_staging` owned by the .env's user, with
  `_prisma_migrations` (0_baseline) and rows in `attendants`.
- fakepve: the four containers with hand-built settings: no start-up order, a description,
  on-boot on the database and load balancer only, nesting on.

Processes are the normal lab's (same pid files; the wiki's server is in the lab's registry), so
`python -m bluegreen.lab down` stops them.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bluegreen.hosts.hostconfig import pm2_home
from bluegreen.lab import found as here
from bluegreen.lab.estate_files import OPERATOR_DIR
from bluegreen.lab.lab import Lab
from bluegreen.lab.monitoring import start_receiver
from bluegreen.lab.paths import LEGACY_MARKER, PM2, LabInfo
from bluegreen.lab.pve import start_fakepve
from bluegreen.lab.repo import build_sample_repo
from bluegreen.lab.services import LabError, host_public_key, spawn, start_postgres, start_sshd, wait_port
from bluegreen.lab.tls import ensure_lab_tls
from bluegreen.model.sensitive import Sensitive
from bluegreen.model.stackfile import adopted_stack_file, load_stack
from bluegreen.model.topology import Container, Topology, other_color

log = logging.getLogger("bluegreen.lab.legacy")

BRANCH = "production-gold-standard"
# The second site on the load balancer: (frontend port, backend address, backend port).
WIKI = (8081, "127.0.3.28", 8000)
WIKI_PAGE = "<!doctype html><title>Circuit wiki</title><h1>Circuit wiki</h1><p>Assembly schedules.</p>\n"
# The wiki's web server: static files, HTTP/1.1 keep-alive, no request log (a load test would fill it).
WIKI_SERVER = """# jw-lab-wiki
import functools, http.server, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
address, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
http.server.ThreadingHTTPServer((address, port), functools.partial(Handler, directory=root)).serve_forever()
"""
DB_USER = "jw_scheduler"  # the estate's own user: only its .env names it
STATE_SCRIPT = "/usr/local/bin/jw-deployment-state.sh"
BACKENDS = {"blue": "blue_servers", "green": "green_servers"}
LIVE = "blue"
# What the old tool wrote: its exact shape (tests/fixtures/state.seed.json), millisecond
# timestamps, newest entry first. Its counter runs past what history still holds.
HISTORY = [
    {"from": "green", "to": "blue", "timestamp": "2025-10-25T12:00:00.000Z",
     "reason": "rollback: green answered 502 on /attendants"},
    {"from": "blue", "to": "green", "timestamp": "2025-10-21T17:40:51.004Z",
     "reason": "release of the shift-swap feature"},
    {"from": "green", "to": "blue", "timestamp": "2025-10-18T09:14:03.125Z", "reason": "monthly release"},
]
SWITCH_COUNT = 12
# Settings hand-built containers usually have (PVE's own parameter names).
CT_NOTES = {
    131: ("PostgreSQL 15 for JW Attendant Scheduler (built by hand)", True),
    132: ("JW Attendant Scheduler BLUE - pm2 jw-attendant-scheduler", False),
    134: ("JW Attendant Scheduler GREEN - pm2 jw-attendant-scheduler", False),
    136: ("HAProxy - attendant.cloudigan.net TLS, switch via jw-deployment-state.sh", True),
}


def legacy_state() -> dict[str, Any]:
    return {"prod": LIVE, "standby": other_color(LIVE),
            "lastSwitch": HISTORY[0]["timestamp"], "switchCount": SWITCH_COUNT, "history": HISTORY}


STATE_SCRIPT_TEXT = """#!/bin/bash
# jw-deployment-state.sh: the deployment state of the blue-green estate (written by hand).
#   jw-deployment-state.sh get [key]      print the state (or one key)
#   jw-deployment-state.sh set KEY VALUE  set prod|standby|lastSwitch|switchCount under the lock
#   jw-deployment-state.sh history        the switches, newest first
#   jw-deployment-state.sh switch [blue|green] [reason]
#                                         point use_backend at the colour, reload HAProxy, record it
set -euo pipefail
ROOT="${JW_ROOT:-%(root)s}"
STATE="$ROOT/var/lib/jw-deployment/state.json"
LOCK="$ROOT/var/lib/jw-deployment/state.lock"
CFG="$ROOT/etc/haproxy/haproxy.cfg"
MASTER="%(master)s"
exec 9>"$LOCK"
flock -w 10 9 || { echo "state is locked" >&2; exit 1; }
case "${1:-}" in
  get) if [ -n "${2:-}" ]; then jq -r --arg k "$2" '.[$k]' "$STATE"; else cat "$STATE"; fi ;;
  set) tmp="$STATE.tmp"
       jq --arg k "$2" --arg v "$3" 'if $k == "switchCount" then .[$k] = ($v|tonumber) else .[$k] = $v end' \\
          "$STATE" > "$tmp" && mv "$tmp" "$STATE" ;;
  history) jq -r '.history[] | "\\(.timestamp)  \\(.from) -> \\(.to)  \\(.reason // "")"' "$STATE" ;;
  switch) from=$(jq -r .prod "$STATE")
          to="${2:-}"; [ "$to" = --emergency ] && to=""
          [ -n "$to" ] || { [ "$from" = blue ] && to=green || to=blue; }
          # The old way: rewrite the frontend's use_backend line, reload through the master CLI.
          sed -i -E "s/^([[:space:]]*use_backend[[:space:]]+).*/\\1${to}_servers/" "$CFG"
          echo reload | socat stdio "UNIX-CONNECT:$MASTER" >/dev/null
          now=$(date -u +%%Y-%%m-%%dT%%H:%%M:%%S.%%3NZ); tmp="$STATE.tmp"
          jq --arg f "$from" --arg t "$to" --arg now "$now" --arg r "${3:-switch}" \\
             '.prod = $t | .standby = $f | .lastSwitch = $now | .switchCount += 1
              | .history = [{from: $f, to: $t, timestamp: $now, reason: $r}] + .history' \\
             "$STATE" > "$tmp" && mv "$tmp" "$STATE"
          echo "switched $from -> $to" ;;
  *) echo "usage: $0 get [key] | set KEY VALUE | history | switch [colour] [reason]" >&2; exit 2 ;;
esac
"""

# The operator's machine, as the seed describes it: Windsurf starts the old Node MCP server
# (`mcp-blue-green/server.js`), which switches through the script above over SSH. The lab keeps
# both under <lab>/operator/ (`bluegreen adopt --ide-config <lab>/operator/.codeium/windsurf/mcp_config.json`).
IDE_CONFIG = ".codeium/windsurf/mcp_config.json"


def old_mcp_config(server_js: str, haproxy_host: str) -> dict[str, Any]:
    return {"mcpServers": {"blue-green-deployment": {
        "command": "node", "args": [server_js], "env": {"HAPROXY_HOST": haproxy_host, "SSH_USER": "root"}}}}


OLD_MCP_SERVER_JS = """// mcp-blue-green/server.js (the seed's Node MCP server, abridged)
const { execSync } = require("child_process");
function ssh(cmd) { return execSync(`ssh root@${process.env.HAPROXY_HOST} '${cmd}'`).toString(); }
const tools = {
  get_deployment_status: () => ssh("jw-deployment-state.sh get"),
  switch_traffic: ({ emergency }) => ssh(`jw-deployment-state.sh switch${emergency ? " --emergency" : ""}`),
};
"""


def haproxy_cfg(t: Topology, live: str) -> str:
    """A config as an operator writes it: not ours, no map, `use_backend` rewritten by a switch."""
    lb, hp = t.load_balancer, t.haproxy
    crt = lb.path(hp.tls_cert or "/etc/haproxy/certs/site.pem")
    lines = [
        "global",
        "    log /dev/log local0",
        "    maxconn 2000",
        f"    stats socket {lb.path(hp.admin_socket)} mode 660 level admin",
        "",
        "defaults",
        "    mode http",
        "    timeout connect 5s",
        "    timeout client 30s",
        "    timeout server 30s",
        "",
        "frontend https_front",
        f"    bind {lb.ip}:{hp.public_port}",
        f"    bind {lb.ip}:{hp.https_port} ssl crt {crt}",
        "    http-request redirect scheme https unless { ssl_fc }",
        f"    use_backend {BACKENDS[live]}",
        "",
    ]
    for color, name in BACKENDS.items():
        host = t.app_host(color)
        lines += [f"backend {name}", "    option httpchk GET /",
                  f"    server {color}1 {host.ip}:{t.app.port} check", ""]
    port, address, backend_port = WIKI
    lines += [
        "# The circuit's wiki, added by hand in 2024: another site on this load balancer.",
        "frontend wiki_front",
        f"    bind {lb.ip}:{port}",
        "    default_backend wiki_servers",
        "",
        "backend wiki_servers",
        "    option httpchk GET /",
        f"    server wiki1 {address}:{backend_port} check   # the wiki's own container",
        "",
    ]
    return "\n".join(lines)


def dotenv_text(t: Topology, host: Container, password: Sensitive, secrets: dict[str, str]) -> str:
    """The app's .env as the operators keep it: by hand, with comments, quotes and `export`."""
    db = t.database
    return "\n".join([
        "# JW Attendant Scheduler - production settings (edited by hand; never commit this file)",
        f'DATABASE_URL="postgresql://{DB_USER}:{password.reveal()}@{t.database_host.ip}:{db.port}/{db.name}'
        '?schema=public&connection_limit=5"',
        f"PORT={t.app.port}",
        f"HOSTNAME={host.ip}",
        "NODE_ENV=production",
        "NO_HEALTH_ROUTE=1",
        "",
        "# NextAuth",
        f"NEXTAUTH_URL=https://{t.haproxy.server_name}",
        f"NEXTAUTH_SECRET={secrets['nextauth']}",
        "AUTH_TRUST_HOST=true",
        "",
        "# Mail: invitations and shift reminders",
        "EMAIL_SERVER_HOST=smtp.attendant.invalid",
        "EMAIL_SERVER_PORT=587",
        "EMAIL_SERVER_USER=scheduler@attendant.invalid",
        f"EMAIL_SERVER_PASSWORD='{secrets['mail']}'",
        'EMAIL_FROM="JW Attendant Scheduler <scheduler@attendant.invalid>"',
        "",
        "export TZ=America/Chicago   # the circuit's time zone",
        f"JWT_SIGNING_KEY={secrets['jwt']}",
        "",
    ])


class LegacyLab(Lab):
    """The lab's hosts and processes, with the estate built by hand instead of by apply_estate."""

    def __init__(self, *args: Any, reset: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.from_scratch = reset

    def _up(self, *, found: str | None = None, reset: bool = False) -> LabInfo:
        t, p = self.topology, self.paths
        found = found or self.found()
        marker = p.root / LEGACY_MARKER
        if self.from_scratch or reset or not marker.exists():
            # Whatever ran here before (the normal lab, an earlier rehearsal) goes: hosts and data,
            # the declared colour and the adopted stack it left in the lab's directory.
            self.clear_estate()
            self.topology = t = load_stack(self.project_dir, t.stack)
        for directory in (p.ssh, p.pve, p.pids, p.logs, p.secrets):
            directory.mkdir(parents=True, exist_ok=True)
        self._ensure_client_key()
        started: list[str] = []
        for host in t.containers:
            process = self.sshd(host)
            state_dir = Path(host.path("/etc/ssh"))
            start_sshd(name=host.name, address=host.ip, port=t.ssh.port, state_dir=state_dir,
                       authorized_keys=p.public_key, log_file=p.logs / f"sshd-{host.vmid}.log",
                       pid_file=process.pid_file, home=Path(host.path("/root")))
            self._pin_host_key(host, host_public_key(state_dir))
            started.append(process.name)
        fakepve = start_fakepve(p.root, t)
        self._register(fakepve, t.proxmox.endpoint)
        self._hand_built_containers()
        db = t.database_host
        start_postgres(name=db.name, data_dir=Path(db.path("/var/lib/postgresql/15/main")),
                       address=db.ip, port=t.database.port,
                       socket_dir=Path(db.path("/var/run/postgresql")),
                       hba_file=Path(db.path("/etc/postgresql/15/main/pg_hba.conf")),
                       log_file=p.logs / "postgres.log", pid_file=self.postgres().pid_file)
        password = self._db_password()
        self._database(password)
        build_sample_repo(p.sample_repo, self.project_dir / "sample-app")
        for color in ("blue", "green"):
            self._app_host(t.app_host(color), password)
        ensure_lab_tls(p.root / "tls", t)
        self._wiki()
        self._load_balancer()
        self._operator_machine()
        receiver = start_receiver(p.root, t)  # the stack's deployment events land somewhere
        if receiver is not None:
            self._register(*receiver)
        marker.write_text("built by bluegreen.lab.legacy\n")
        summary = here.legacy_summary(found, adopted_stack_file(self.project_dir, t.stack), reset=self.from_scratch)
        return LabInfo(lab_dir=str(p.root), stack=t.stack, public_url=t.public_url,
                       preview_url="(none: the legacy estate has no preview frontend)",
                       proxmox_endpoint=t.proxmox.endpoint,
                       ssh_hosts=[f"{c.name} {c.ip}:{t.ssh.port}" for c in t.containers],
                       started=started, reused=[], applied=["legacy estate built by hand"],
                       found=summary.found, state=summary.state, next_step=summary.next_step)

    # -- the pieces ---------------------------------------------------------------

    def _hand_built_containers(self) -> None:
        from proxmoxer import ProxmoxAPI

        from bluegreen.hosts.pve import parse_endpoint
        from bluegreen.model.secrets import read_token

        t = self.topology
        token_id, secret = read_token(t)
        host, port = parse_endpoint(t.proxmox.endpoint)
        user, _, name = token_id.partition("!")
        api = ProxmoxAPI(host, port=port, user=user, token_name=name, token_value=secret.reveal(),
                         verify_ssl=str(t.proxmox.ca_file), timeout=10)
        node = api.nodes(t.proxmox.node)
        for vmid, (description, onboot) in CT_NOTES.items():
            node.lxc(vmid).config.put(description=description, onboot=int(onboot), features="nesting=1")
            config = node.lxc(vmid).config.get()
            if config.get("startup"):
                node.lxc(vmid).config.put(delete="startup")

    def _psql(self, sql: str, database: str = "postgres") -> str:
        t = self.topology
        db = t.database_host
        proc = subprocess.run(
            ["runuser", "-u", "postgres", "--", "psql", "-X", "-At", "-v", "ON_ERROR_STOP=1",
             "-h", db.path("/var/run/postgresql"), "-p", str(t.database.port), "-d", database],
            input=sql, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise LabError(f"legacy database: {proc.stderr.strip()[-400:]}")
        return proc.stdout.strip()

    def _database(self, password: Sensitive) -> None:
        name = self.topology.database.name
        quoted = password.reveal().replace("'", "''")
        self._psql(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{DB_USER}') THEN "
                   f"CREATE ROLE {DB_USER} LOGIN; END IF; END $$;\n"
                   f"ALTER ROLE {DB_USER} PASSWORD '{quoted}';\n")
        if self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'") != "1":
            self._psql(f'CREATE DATABASE "{name}" OWNER {DB_USER};')
        self._psql(
            "CREATE TABLE IF NOT EXISTS _prisma_migrations (id varchar(36) PRIMARY KEY, "
            "checksum varchar(64) NOT NULL, finished_at timestamptz, migration_name varchar(255) NOT NULL, "
            "logs text, rolled_back_at timestamptz, started_at timestamptz NOT NULL DEFAULT now(), "
            "applied_steps_count integer NOT NULL DEFAULT 0);\n"
            "INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, applied_steps_count) "
            "SELECT 'b0a5e1in-0000-4000-8000-000000000000', repeat('0', 64), now(), '0_baseline', 1 "
            "WHERE NOT EXISTS (SELECT 1 FROM _prisma_migrations WHERE migration_name = '0_baseline');\n"
            "CREATE TABLE IF NOT EXISTS attendants (id serial PRIMARY KEY, name text NOT NULL, "
            "congregation text NOT NULL);\n"
            "INSERT INTO attendants (name, congregation) SELECT n, 'North' FROM "
            "unnest(ARRAY['A. Jones', 'B. Smith', 'C. Brown']) AS n "
            "WHERE NOT EXISTS (SELECT 1 FROM attendants);\n"
            f"ALTER TABLE attendants OWNER TO {DB_USER}; ALTER TABLE _prisma_migrations OWNER TO {DB_USER};\n",
            database=name)

    def _app_host(self, host: Container, password: Sensitive) -> None:
        t, p = self.topology, self.paths
        work = Path(host.path(t.app.working_copy or t.app.dir))
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        if not (work / ".git").exists():
            if work.exists():
                shutil.rmtree(work)
            work.parent.mkdir(parents=True, exist_ok=True)
            _run(["git", "clone", "--quiet", str(p.sample_repo), str(work)], env=env)
            _run(["git", "-C", str(work), "checkout", "--quiet", "-B", BRANCH, "origin/main"], env=env)
            _run(["git", "-C", str(work), "push", "--quiet", "origin", f"{BRANCH}:{BRANCH}"], env=env)
            _run(["git", "-C", str(work), "branch", "--quiet", f"--set-upstream-to=origin/{BRANCH}"], env=env)
        dotenv = work / ".env"
        if not dotenv.exists():  # the operators' file: kept as it is across `up --legacy`
            dotenv.write_text(dotenv_text(t, host, password, self._app_secrets()))
        dotenv.chmod(0o600)
        if not (work / "node_modules").exists():
            _run(["npm", "ci", "--prefer-offline", "--no-audit", "--no-fund"], cwd=work)
        _run(["npm", "run", "build"], cwd=work)
        home = pm2_home(t, host)
        pm2_env = {**os.environ, "PM2_HOME": home, "PORT": str(t.app.port), "HOSTNAME": host.ip,
                   "NO_HEALTH_ROUTE": "1"}
        listing = _run([PM2, "jlist"], env=pm2_env, check=False)
        if t.app.name not in listing:
            # Started by hand, as on the real hosts: fork mode, npm as the script.
            _run([PM2, "start", "npm", "--name", t.app.name, "--", "start"], cwd=work, env=pm2_env)
            _run([PM2, "save"], env=pm2_env)

    def _operator_machine(self) -> None:
        """The old MCP server and the Windsurf config that registers it, under <lab>/operator/."""
        home = self.paths.root / OPERATOR_DIR
        server = home / "mcp-blue-green/server.js"
        server.parent.mkdir(parents=True, exist_ok=True)
        server.write_text(OLD_MCP_SERVER_JS)
        config = home / IDE_CONFIG
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps(old_mcp_config(str(server), self.topology.load_balancer.ip), indent=2) + "\n")
    def _app_secrets(self) -> dict[str, str]:
        """The app's own secrets, the same on both colours (one app), made once per estate."""
        if not hasattr(self, "_secrets"):
            self._secrets = {"nextauth": base64.b64encode(secrets.token_bytes(32)).decode(),
                             "mail": f"{secrets.token_urlsafe(12)} {secrets.token_urlsafe(6)}",
                             "jwt": secrets.token_hex(32)}
        return self._secrets

    def _wiki(self) -> None:
        """The second site's backend: a small web server, registered so `lab down` stops it."""
        p = self.paths
        port, address, backend_port = WIKI
        site = p.root / "wiki"
        site.mkdir(parents=True, exist_ok=True)
        (site / "index.html").write_text(WIKI_PAGE)
        argv = [sys.executable, "-c", WIKI_SERVER, address, str(backend_port), str(site)]
        process = spawn("wiki (second site)", argv, pid_file=p.pids / "wiki.pid", log_file=p.logs / "wiki.log",
                        expect=f"{address} {backend_port} {site}")
        wait_port(address, backend_port, 30, what="the wiki's web server")
        self._register(process, f"{address}:{backend_port} (behind :{port})")

    def _load_balancer(self) -> None:
        t = self.topology
        lb, hp = t.load_balancer, t.haproxy
        cfg = Path(lb.path(hp.config_path))
        cfg.parent.mkdir(parents=True, exist_ok=True)
        if not cfg.exists():  # an existing one keeps what the last (old-tool) switch wrote
            cfg.write_text(haproxy_cfg(t, LIVE))
        state = Path(lb.path(t.journal.path))
        state.parent.mkdir(parents=True, exist_ok=True)
        if not state.exists():
            state.write_text(json.dumps(legacy_state(), indent=2) + "\n")
        script = Path(lb.path(STATE_SCRIPT))
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(STATE_SCRIPT_TEXT % {"root": lb.root, "master": lb.path(hp.master_socket)})
        script.chmod(0o755)
        if not self.haproxy().alive():
            for path in (hp.admin_socket, hp.master_socket, hp.pid_file):
                Path(lb.path(path)).parent.mkdir(parents=True, exist_ok=True)
            _run(["haproxy", "-c", "-q", "-f", str(cfg)])
            _run(["haproxy", "-W", "-S", f"{lb.path(hp.master_socket)},mode,600", "-f", str(cfg),
                  "-p", lb.path(hp.pid_file), "-D"])


def _run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
         check: bool = True) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise LabError(f"legacy lab: {shlex.join(argv[:4])} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    return proc.stdout
