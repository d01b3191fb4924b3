"""The rendered files, judged by the programs that read them: haproxy, bash, psql/PostgreSQL, PM2.

Every host is rooted under a temp dir (dataclasses.replace on the topology), so nothing here
touches the lab's or the machine's own files, and nothing contacts a non-loopback address: the
prod config is only parsed by `haproxy -c`, which does not bind (shown below).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import grp
import http.client
import ipaddress
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bluegreen.lab.tls import ensure_lab_tls
from bluegreen.model.sensitive import Sensitive
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import Topology
from bluegreen.render.bootstrap import render_bootstrap
from bluegreen.render.haproxy import render_haproxy_cfg, render_live_map
from bluegreen.render.pm2 import render_ecosystem
from bluegreen.render.postgres import merge_managed_block, render_database_sql, render_pg_hba

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# Addresses no lab process uses, so these tests run beside a running lab.
TEST_NET = "127.0.47"


# --------------------------------------------------------------------------- helpers


def rooted(t: Topology, base: Path) -> Topology:
    return dataclasses.replace(t, containers=tuple(
        dataclasses.replace(c, root=str(base / f"ct{c.vmid}")) for c in t.containers))


def readdressed(t: Topology, addresses: dict[int, str], **haproxy: Any) -> Topology:
    t = dataclasses.replace(t, containers=tuple(
        dataclasses.replace(c, interface=ipaddress.IPv4Interface(f"{addresses[c.vmid]}/24"))
        if c.vmid in addresses else c for c in t.containers))
    return dataclasses.replace(t, haproxy=dataclasses.replace(t.haproxy, **haproxy)) if haproxy else t


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def wait_until(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` (readiness, not timing)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (OSError, http.client.HTTPException, ValueError) as exc:
            last, result = exc, None
        if result:
            return result
        time.sleep(0.1)
    pytest.fail(f"{what} never happened (last error: {last!r})")


def http_get(address: str, port: int, path: str = "/",
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(address, port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kwargs)


def write_lb_files(t: Topology, live: str) -> Path:
    lb = t.load_balancer
    cfg = Path(lb.path(t.haproxy.config_path))
    map_file = Path(lb.path(t.haproxy.map_path))
    for path in (cfg, map_file, Path(lb.path(t.haproxy.admin_socket))):
        path.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(render_haproxy_cfg(t))
    map_file.write_text(render_live_map(t, live))
    if t.haproxy.tls_cert:  # the bundle the config names, from a CA made for the test
        ensure_lab_tls(Path(lb.path("/tls-ca")), t)
    return cfg


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A process nobody reaps yet is already dead.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return True


# --------------------------------------------------------------------------- haproxy -c


@pytest.mark.parametrize("name", ["prod", "lab"])
def test_haproxy_accepts_the_rendered_config_without_warnings(name: str, tmp_path: Path) -> None:
    t = rooted(load_stack(PROJECT, name), tmp_path)
    if name == "prod":  # what config check asks for, with stats behind basic auth as well
        hashed = run(["openssl", "passwd", "-6", "-salt", "saltsalt", "not-a-real-password"]).stdout.strip()
        t = dataclasses.replace(t, haproxy=dataclasses.replace(
            t.haproxy, private_address="10.92.9.26", stats_user="ops", stats_password_hash=hashed))
    assert t.haproxy.tls_cert
    cfg = write_lb_files(t, t.active_color)
    # -dW turns warnings into errors, so the config is accepted exactly as rendered.
    proc = run(["haproxy", "-dW", "-c", "-f", str(cfg)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Configuration file is valid" in proc.stdout


def test_haproxy_check_reads_the_map_but_binds_nothing(tmp_path: Path) -> None:
    t = rooted(load_stack(PROJECT, "prod"), tmp_path)
    cfg = write_lb_files(t, "blue")
    lb_ip = t.load_balancer.ip
    assert f"bind {lb_ip}:{t.haproxy.public_port}" in cfg.read_text()
    # 10.92.3.26 is not an address of this machine: a bind would fail, so `-c` passing above
    # means it never binds (and never connects: checks only start with a running worker).
    with socket.socket() as s, pytest.raises(OSError) as err:
        s.bind((lb_ip, 0))
    assert err.value.errno == errno.EADDRNOTAVAIL
    Path(t.load_balancer.path(t.haproxy.map_path)).unlink()
    proc = run(["haproxy", "-dW", "-c", "-f", str(cfg)])
    assert proc.returncode != 0
    assert "failed to open pattern file" in proc.stderr


# --------------------------------------------------------------------------- haproxy running


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Health checks hang up once they have the status line: not an error worth a traceback."""


class _Backend:
    """A stand-in app host: answers the health path and `/` with its colour, records requests."""

    def __init__(self, address: str, port: int, color: str) -> None:
        seen: list[str] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.path)
                body = color.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = _QuietServer((address, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def admin(sock_path: str, command: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(sock_path)
        s.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def test_haproxy_routes_by_the_map_and_health_checks_both_colours(tmp_path: Path) -> None:
    lb_ip, blue_ip, green_ip = f"{TEST_NET}.26", f"{TEST_NET}.22", f"{TEST_NET}.24"
    app_port = free_port(blue_ip)
    t = readdressed(rooted(load_stack(PROJECT, "lab"), tmp_path),
                    {136: lb_ip, 132: blue_ip, 134: green_ip},
                    public_port=free_port(lb_ip), preview_port=free_port(lb_ip), stats_port=free_port(lb_ip),
                    tls_cert=None, private_address=None,  # plain HTTP here: test_https covers TLS
                    stats_user="ops", stats_password_hash=run(
                        ["openssl", "passwd", "-6", "-salt", "saltsalt", "metrics-pass"]).stdout.strip())
    t = dataclasses.replace(t, app=dataclasses.replace(t.app, port=app_port))
    cfg = write_lb_files(t, "blue")
    backends = [_Backend(blue_ip, app_port, "blue"), _Backend(green_ip, app_port, "green")]
    master_sock = tmp_path / "master.sock"
    proc = subprocess.Popen(["haproxy", "-W", "-S", f"{master_sock},mode,600", "-f", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        admin_sock = t.load_balancer.path(t.haproxy.admin_socket)
        hp = t.haproxy

        def both_up() -> bool:
            rows = [line.split(",") for line in admin(admin_sock, "show stat").splitlines()]
            status = {(r[0], r[1]): r[17] for r in rows if len(r) > 17}
            return status.get(("bk_blue", "blue")) == "UP" and status.get(("bk_green", "green")) == "UP"

        wait_until("both colour servers UP", both_up)
        assert all(t.app.health_path in b.seen for b in backends)

        status, headers, body = http_get(lb_ip, hp.public_port)
        assert (status, headers["x-served-by"], body) == (200, "blue", b"blue")
        status, headers, body = http_get(lb_ip, hp.preview_port)
        assert (status, headers["x-served-by"], body) == (200, "green", b"green")

        map_path = t.load_balancer.path(hp.map_path)
        admin(admin_sock, f"set map {map_path} live bk_green")
        admin(admin_sock, f"set map {map_path} preview bk_blue")
        assert http_get(lb_ip, hp.public_port)[1]["x-served-by"] == "green"
        assert http_get(lb_ip, hp.preview_port)[1]["x-served-by"] == "blue"

        # Stats and metrics behind basic auth: refused without it, served with it.
        assert http_get(lb_ip, hp.stats_port, "/metrics")[0] == 401
        auth = {"Authorization": "Basic " + base64.b64encode(b"ops:metrics-pass").decode()}
        assert http_get(lb_ip, hp.stats_port, "/metrics", {"Authorization": "Basic b3BzOndyb25n"})[0] == 401
        status, _, metrics = http_get(lb_ip, hp.stats_port, "/metrics", auth)
        assert status == 200 and b'haproxy_backend_status{proxy="bk_blue",state="UP"} 1' in metrics
        assert http_get(lb_ip, hp.stats_port, "/stats", auth)[0] == 200
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
        for backend in backends:
            backend.close()
    # Expected alerts only: no syslog socket on this machine (containers have journald's), and
    # the worker ending on our SIGTERM.
    alerts = [line for line in output.splitlines() if "[ALERT]" in line
              and "failed in logger" not in line and "exited with code 143" not in line]
    assert alerts == [], output


# --------------------------------------------------------------------------- bootstrap


def tree(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every path under root with what a change would touch: mode, owner, group, mtime."""
    result = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        result[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
    return result


def guard_path(tmp_path: Path) -> dict[str, str]:
    """PATH where installing anything fails loudly: these hosts already have every package."""
    guard = tmp_path / "guard-bin"
    guard.mkdir(exist_ok=True)
    for tool in ("apt-get", "npm", "useradd"):
        script = guard / tool
        script.write_text(f"#!/bin/sh\necho 'bootstrap must not run {tool} here' >&2\nexit 97\n")
        script.chmod(0o755)
    return {**os.environ, "PATH": f"{guard}:{os.environ['PATH']}"}


def bootstrap(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run(["bash", "-s"], input=script, env=env)


def owner_mode(path: str) -> tuple[str, str, str]:
    st = os.stat(path)
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, f"{stat.S_IMODE(st.st_mode):04o}"


@pytest.mark.parametrize("vmid", [131, 132, 134, 136])
def test_bootstrap_of_each_lab_role_is_idempotent(vmid: int, tmp_path: Path) -> None:
    t = rooted(load_stack(PROJECT, "lab"), tmp_path / "hosts")
    host = t.container(vmid)
    script = render_bootstrap(t, host)
    env = guard_path(tmp_path)

    first = bootstrap(script, env)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    created = [line.removeprefix("bootstrap: created ") for line in lines if line.startswith("bootstrap: created ")]
    # The load balancer also gets the estate's state script, under its own root, where it has none.
    installed = [line for line in lines if line.startswith("bootstrap: installed ")]
    assert installed == (["bootstrap: installed /usr/local/bin/jw-deployment-state.sh"] if vmid == 136 else [])
    if vmid == 136:
        assert os.access(host.path("/usr/local/bin/jw-deployment-state.sh"), os.X_OK)
    assert created and all(host.path("/") in p for p in created), first.stdout
    assert all(Path(p).is_dir() for p in created)
    root = Path(host.root)
    before = tree(root)

    second = bootstrap(script, env)
    assert second.returncode == 0, second.stderr
    assert second.stdout == ""
    assert tree(root) == before

    expected = {
        131: {"/var/backups/jw-attendant": ("postgres", "postgres", "0700"),
              "/var/run/postgresql": ("postgres", "postgres", "2775")},
        132: {f"{t.app.dir}/{d}": ("root", "root", "0700" if d == "shared" else "0755")
              for d in ("releases", "shared", "logs")},
        136: {"/etc/haproxy": ("root", "root", "0755"), "/run/haproxy": ("root", "root", "0755"),
              "/var/lib/jw-deployment": ("root", "root", "0700"),  # the journal and the lock: secrets
              "/var/lib/prometheus/node-exporter": ("root", "root", "0755")},
    }
    expected[134] = expected[132]
    for path, want in expected[vmid].items():
        assert owner_mode(host.path(path)) == want, path


def test_bootstrap_repairs_drifted_owner_and_mode(tmp_path: Path) -> None:
    t = rooted(load_stack(PROJECT, "lab"), tmp_path / "hosts")
    db = t.database_host
    script = render_bootstrap(t, db)
    env = guard_path(tmp_path)
    assert bootstrap(script, env).returncode == 0
    backups, sockets = db.path(t.database.backup_dir), db.path("/var/run/postgresql")
    os.chmod(backups, 0o2755)  # a set-gid bit plain `chmod 700` would leave in place
    os.chown(sockets, 0, 0)
    repaired = bootstrap(script, env)
    assert repaired.returncode == 0, repaired.stderr
    assert repaired.stdout.splitlines() == [f"bootstrap: set postgres:postgres 0700 on {backups}",
                                            f"bootstrap: set postgres:postgres 2775 on {sockets}"]
    assert owner_mode(backups) == ("postgres", "postgres", "0700")
    assert owner_mode(sockets) == ("postgres", "postgres", "2775")
    assert bootstrap(script, env).stdout == ""


def test_bootstrap_installs_only_the_missing_packages(tmp_path: Path) -> None:
    """On a host without haproxy and socat the script asks apt-get for exactly those.

    apt-get here is a recording stand-in: installing packages is not something a test may do to
    this machine. Only the tools the script needs are on PATH, so haproxy and socat are missing.
    """
    # Without a backup host: its SSH client and key generation are another test's (test_offsite.py).
    t = rooted(dataclasses.replace(load_stack(PROJECT, "lab"), backup=None), tmp_path / "hosts")
    bare = tmp_path / "bare-bin"
    bare.mkdir()
    for tool in ("install", "stat", "id", "chown", "chmod", "getent", "cut"):
        found = shutil.which(tool)
        assert found, tool
        (bare / tool).symlink_to(found)
    record = tmp_path / "apt-calls"
    apt = bare / "apt-get"
    apt.write_text(f'#!/bin/bash\nprintf "%s\\n" "$*" >> {record}\n')
    apt.chmod(0o755)
    proc = subprocess.run([shutil.which("bash") or "bash", "-s"], input=render_bootstrap(t, t.load_balancer),
                          capture_output=True, text=True, env={"PATH": str(bare)}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert record.read_text().splitlines() == [
        "update -qq", "install -y -qq --no-install-recommends haproxy socat jq util-linux prometheus-node-exporter"]
    assert "bootstrap: installed haproxy socat jq util-linux prometheus-node-exporter" in proc.stdout.splitlines()


def test_bootstrap_creates_a_missing_deploy_user_once(tmp_path: Path) -> None:
    user = f"bgt{uuid.uuid4().hex[:8]}"
    lab = load_stack(PROJECT, "lab")
    t = rooted(dataclasses.replace(lab, app=dataclasses.replace(lab.app, deploy_user=user, pm2_home=None)),
               tmp_path / "hosts")
    host = t.app_host("blue")
    script = render_bootstrap(t, host)
    try:
        first = bootstrap(script)
        assert first.returncode == 0, first.stderr
        assert f"bootstrap: created user {user}" in first.stdout.splitlines()
        assert pwd.getpwnam(user).pw_dir == f"/home/{user}"
        assert owner_mode(host.path(f"{t.app.dir}/shared")) == (user, user, "0700")
        second = bootstrap(script)
        assert (second.returncode, second.stdout) == (0, "")
    finally:
        run(["userdel", "--remove", user])


# --------------------------------------------------------------------------- PostgreSQL


@dataclasses.dataclass
class Postgres:
    base: Path
    port: int
    pid: int

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def psql(self, sql: str, database: str = "postgres") -> subprocess.CompletedProcess[str]:
        return run(["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-h", str(self.base),
                    "-p", str(self.port), "-d", database, "-At", "-f", "-"], input=sql)

    def query(self, sql: str, database: str = "postgres") -> str:
        proc = self.psql(sql, database)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    # Under /tmp (world-searchable), not pytest's root-only tmp: initdb runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="bg-render-pg-"))
    shutil.chown(base, "postgres", "postgres")
    port = free_port("127.0.0.1")
    as_pg = ["runuser", "-u", "postgres", "--"]
    pid = None
    try:
        init = run([*as_pg, str(PG_BIN / "initdb"), "-D", str(base / "data"), "-U", "postgres",
                    "-A", "trust", "--no-sync", "-E", "UTF8"])
        assert init.returncode == 0, init.stderr
        # Every statement logged, so the password's absence from the log means something.
        options = (f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c log_statement=all -c log_min_error_statement=error")
        start = run([*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(base / "data"), "-l", str(base / "server.log"),
                     "-w", "-o", options, "start"])
        assert start.returncode == 0, start.stderr
        pid = int((base / "data" / "postmaster.pid").read_text().splitlines()[0])
        yield Postgres(base, port, pid)
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGINT)  # fast shutdown
            deadline = time.monotonic() + 60
            while not pid_gone(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        shutil.rmtree(base, ignore_errors=True)


PASSWORD = "pa'ss\\wo\"rd $bluegreen$ :x ü;--"


def test_database_sql_applies_twice_and_the_app_user_logs_in(postgres: Postgres) -> None:
    lab = load_stack(PROJECT, "lab")
    sql = render_database_sql(lab, Sensitive(PASSWORD))
    first = postgres.psql(sql)
    assert first.returncode == 0, first.stderr
    second = postgres.psql(sql)
    assert second.returncode == 0, second.stderr
    # log_statement=all: the CREATE ran on the first pass only.
    assert postgres.log.read_text().count('statement: CREATE DATABASE "jw_attendant_scheduler_staging"') == 1

    assert postgres.query("SELECT rolcanlogin, rolsuper, rolpassword LIKE 'SCRAM-SHA-256$%' "
                          "FROM pg_authid WHERE rolname = 'jw_app'") == "t|f|t"
    assert postgres.query("SELECT pg_get_userbyid(datdba) FROM pg_database "
                          "WHERE datname = 'jw_attendant_scheduler_staging'") == "jw_app"
    assert postgres.query("SELECT count(*) FROM pg_database WHERE datname = 'jw_attendant_scheduler_staging'") == "1"

    # Blue stands on 127.0.0.1 here, so the rendered rule is the one that admits this client.
    local = readdressed(lab, {132: "127.0.0.1"})
    hba = postgres.data / "pg_hba.conf"
    original = hba.read_text()
    try:
        hba.write_text(merge_managed_block(original, render_pg_hba(local)))
        assert postgres.query("SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL") == "0"
        assert postgres.query("SELECT pg_reload_conf()") == "t"

        def login(password: str) -> subprocess.CompletedProcess[str]:
            return run(["psql", "-X", "-w", "-At", "-h", "127.0.0.1", "-p", str(postgres.port),
                        "-U", "jw_app", "-d", "jw_attendant_scheduler_staging", "-c", "SELECT current_user"],
                       env={**os.environ, "PGPASSWORD": password})

        ok = login(PASSWORD)
        assert (ok.returncode, ok.stdout.strip()) == (0, "jw_app"), ok.stderr
        # initdb's own `host all all 127.0.0.1/32 trust` comes after the block: a wrong password
        # being refused shows the managed block is first and scram is enforced.
        wrong = login(PASSWORD + "x")
        assert wrong.returncode != 0
        assert "password authentication failed" in wrong.stderr
    finally:
        hba.write_text(original)
        postgres.query("SELECT pg_reload_conf()")

    log = postgres.log.read_text()
    assert "CREATE DATABASE" in log  # statements were being logged
    assert "pa''ss" not in log and "wo\"rd" not in log


@pytest.mark.parametrize("name", ["prod", "lab"])
def test_pg_hba_block_parses_in_postgres(name: str, postgres: Postgres) -> None:
    t = load_stack(PROJECT, name)
    if not t.database.user:  # prod: the user `bluegreen adopt` reads from the app's .env
        t = dataclasses.replace(t, database=dataclasses.replace(t.database, user="jw_reader"))
    hba = postgres.data / "pg_hba.conf"
    original = hba.read_text()
    try:
        merged = merge_managed_block(original, render_pg_hba(t))
        assert merge_managed_block(merged, render_pg_hba(t)) == merged
        hba.write_text(merged)
        # pg_hba_file_rules parses the file on disk: no reload, the running rules stay as they were.
        rows = postgres.query("SELECT type, database[1], user_name[1], address, auth_method, error "
                              "FROM pg_hba_file_rules ORDER BY line_number LIMIT 3")
    finally:
        hba.write_text(original)
    blue, green = t.app_host("blue").ip, t.app_host("green").ip
    method = "md5" if t.database_host.existing else "scram-sha-256"  # prod's database is adopted
    assert rows.splitlines() == [
        "local|all|postgres||peer|",
        f"host|{t.database.name}|{t.database.user}|{blue}|{method}|",
        f"host|{t.database.name}|{t.database.user}|{green}|{method}|",
    ]


def test_an_adopted_databases_md5_role_keeps_logging_in_under_the_managed_block(postgres: Postgres) -> None:
    """A legacy role whose password is stored as MD5 (the default before PostgreSQL 14) must still
    log in once the managed block sits first: a scram-sha-256 rule would lock it out, the md5 rule
    an adopted database gets admits it, and still runs SCRAM for a SCRAM-stored password."""
    lab = load_stack(PROJECT, "lab")
    legacy, modern = "jw_legacy_md5", "jw_modern_scram"
    for role, encryption in ((legacy, "md5"), (modern, "scram-sha-256")):
        postgres.query(f"SET password_encryption = '{encryption}'; DROP ROLE IF EXISTS {role}; "
                       f"CREATE ROLE {role} LOGIN PASSWORD 'Pa55-{role}'")
    assert postgres.query(f"SELECT rolpassword LIKE 'md5%' FROM pg_authid WHERE rolname = '{legacy}'") == "t"
    hba = postgres.data / "pg_hba.conf"
    original = hba.read_text()

    def login(role: str) -> subprocess.CompletedProcess[str]:
        return run(["psql", "-X", "-w", "-At", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", role,
                    "-d", "postgres", "-c", "SELECT current_user"], env={**os.environ, "PGPASSWORD": f"Pa55-{role}"})

    def with_block(t: Topology, role: str) -> subprocess.CompletedProcess[str]:
        # The managed rules, admitting `role` to `postgres` from 127.0.0.1 (blue stands there).
        t = dataclasses.replace(readdressed(t, {132: "127.0.0.1"}),
                                database=dataclasses.replace(t.database, name="postgres", user=role))
        hba.write_text(merge_managed_block(original, render_pg_hba(t)))
        assert postgres.query("SELECT pg_reload_conf()") == "t"
        return login(role)

    adopted = dataclasses.replace(lab, containers=tuple(dataclasses.replace(c, existing=True) for c in lab.containers))
    created = dataclasses.replace(lab, containers=tuple(dataclasses.replace(c, existing=False) for c in lab.containers))
    try:
        for role in (legacy, modern):
            result = with_block(adopted, role)
            assert (result.returncode, result.stdout.strip()) == (0, role), result.stderr
        refused = with_block(created, legacy)  # what a scram-sha-256 rule does to the legacy role
        assert refused.returncode != 0 and "password authentication failed" in refused.stderr
    finally:
        hba.write_text(original)
        postgres.query("SELECT pg_reload_conf()")
        postgres.query(f"DROP ROLE IF EXISTS {legacy}; DROP ROLE IF EXISTS {modern}")


# --------------------------------------------------------------------------- PM2

SERVER_JS = """\
const http = require("http");
const keys = ["NODE_ENV", "PORT", "HOSTNAME", "BLUEGREEN_COLOR", "GREETING", "QUOTED", "SINGLE",
              "EXPORTED", "WITH_COMMENT", "DATABASE_URL"];
const server = http.createServer((req, res) => {
  const env = {};
  for (const k of keys) env[k] = process.env[k] === undefined ? null : process.env[k];
  res.setHeader("Content-Type", "application/json");
  res.end(JSON.stringify({ pid: process.pid, env }));
});
server.listen(Number(process.env.PORT), process.env.HOSTNAME, () => {
  if (process.send) process.send("ready");
});
process.on("SIGINT", () => server.close(() => process.exit(0)));
"""

ENV_FILE = """\
# the app's settings; comments and blank lines are skipped

GREETING=hello world
QUOTED="say \\"hi\\"\\nbye"
SINGLE='kept $AS is'
export EXPORTED=yes
WITH_COMMENT=value # not part of it
DATABASE_URL=postgresql://jw_app:s3cr3t@127.0.3.21:5432/jw_attendant
PORT=9999
"""


@pytest.fixture
def pm2_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "pm2"
    home.mkdir()
    try:
        yield home
    finally:
        # `pm2 kill` stops the daemon of this PM2_HOME (and its apps) through its own pid file.
        run(["pm2", "kill"], env={**os.environ, "PM2_HOME": str(home)})


def test_pm2_runs_the_rendered_ecosystem_with_env_from_the_env_file(tmp_path: Path, pm2_home: Path) -> None:
    ip = f"{TEST_NET}.22"
    lab = load_stack(PROJECT, "lab")
    t = readdressed(rooted(lab, tmp_path / "hosts"), {132: ip})
    t = dataclasses.replace(t, app=dataclasses.replace(t.app, port=free_port(ip)))
    host = t.app_host("blue")
    app_dir = Path(host.path(t.app.dir))
    release = app_dir / "releases" / "r1"
    release.mkdir(parents=True)
    (release / "server.js").write_text(SERVER_JS)
    (app_dir / "current").symlink_to(release)
    (app_dir / "shared").mkdir()
    (app_dir / "shared" / ".env").write_text(ENV_FILE)
    ecosystem = app_dir / "ecosystem.config.js"
    ecosystem.write_text(render_ecosystem(t, "blue"))

    env = {**os.environ, "PM2_HOME": str(pm2_home)}
    started = run(["pm2", "start", str(ecosystem)], env=env)
    assert started.returncode == 0, started.stdout + started.stderr

    def answer() -> dict[str, Any]:
        status, _, body = http_get(ip, t.app.port)
        return json.loads(body) if status == 200 else {}

    reply = wait_until("the app answering on its port", answer)
    assert reply["env"] == {
        "NODE_ENV": "production", "PORT": str(t.app.port), "HOSTNAME": ip, "BLUEGREEN_COLOR": "blue",
        "GREETING": "hello world", "QUOTED": 'say "hi"\nbye', "SINGLE": "kept $AS is",
        "EXPORTED": "yes", "WITH_COMMENT": "value",
        "DATABASE_URL": "postgresql://jw_app:s3cr3t@127.0.3.21:5432/jw_attendant",
    }

    listed = run(["pm2", "jlist"], env=env)
    processes = json.loads(listed.stdout.strip().splitlines()[-1])
    assert [p["name"] for p in processes] == [t.app.name] * t.app.instances
    for p in processes:
        assert p["pm2_env"]["exec_mode"] == "cluster_mode"
        assert p["pm2_env"]["status"] == "online"
        assert p["pm2_env"]["pm_cwd"] == str(app_dir / "current")
    assert reply["pid"] in {p["pid"] for p in processes}
    assert (app_dir / "logs" / f"{t.app.name}.out.log").exists()


def test_ecosystem_without_env_file_fails_with_a_clear_message(tmp_path: Path) -> None:
    t = rooted(load_stack(PROJECT, "lab"), tmp_path / "hosts")
    ecosystem = tmp_path / "ecosystem.config.js"
    ecosystem.write_text(render_ecosystem(t, "green"))
    proc = run(["node", "-e", "require(process.argv[1])", str(ecosystem)])
    assert proc.returncode != 0
    assert f"{t.app_host('green').path(t.app.dir)}/shared/.env is missing" in proc.stderr
