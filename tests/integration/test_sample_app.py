"""The sample app the lab deploys, run for real: npm ci, build, migrate against PostgreSQL 15, serve.

A throwaway PostgreSQL (started with the lab's `start_postgres`, stopped by its PID) listens on
127.0.0.1 on a free port; the app connects as a password-protected role over TCP, as it does in
the lab. Every node process a test starts is stopped by that test's code by its PID.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from bluegreen.lab.services import ManagedProcess, start_postgres, wait_port

pytestmark = pytest.mark.integration

SAMPLE_APP = Path(__file__).resolve().parents[2] / "sample-app"
HOST = "127.0.0.1"
PSQL = "/usr/lib/postgresql/15/bin/psql"
APP_ROLE = "jw_app"
LOCK_ID = 72707369
INIT = "20250101000000_init"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
GENERATED = shutil.ignore_patterns("node_modules", "build", ".build-*", ".env")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def run(argv: list[str], cwd: Path, env: Mapping[str, str] | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def stop_by_pid(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """Stop a process this module started: SIGTERM to its pid, SIGKILL if it lingers."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


# --------------------------------------------------------------------------- PostgreSQL

@dataclass
class Postgres:
    socket_dir: Path
    port: int
    password: str

    def sql(self, database: str, query: str) -> str:
        done = subprocess.run(
            [PSQL, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir),
             "-p", str(self.port), "-U", "postgres", "-d", database, "-c", query],
            capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def url(self, database: str, password: str | None = None) -> str:
        return f"postgresql://{APP_ROLE}:{password or self.password}@{HOST}:{self.port}/{database}"


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    # Under /var/tmp, not pytest's tmp_path: the postgres user must be able to enter every parent.
    root = Path(tempfile.mkdtemp(prefix="jw-sample-app-pg-", dir="/var/tmp"))
    root.chmod(0o755)
    hba = root / "pg_hba.conf"
    hba.write_text("local all postgres trust\n"
                   f"host all {APP_ROLE} {HOST}/32 scram-sha-256\n")
    port = free_port()
    process: ManagedProcess | None = None
    try:
        process = start_postgres(name="sample-app tests", data_dir=root / "data", address=HOST, port=port,
                                 socket_dir=root / "run", log_file=root / "postgres.log", hba_file=hba)
        pg = Postgres(root / "run", port, secrets.token_urlsafe(18))
        pg.sql("postgres", f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{pg.password}'")
        yield pg
    finally:
        if process is not None:
            process.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database(postgres: Postgres) -> str:
    """A fresh database owned by the app's role; its name."""
    name = f"t_{secrets.token_hex(6)}"
    postgres.sql("postgres", f"CREATE DATABASE {name} OWNER {APP_ROLE}")
    return name


# --------------------------------------------------------------------------- the app

@pytest.fixture(scope="module")
def installed_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample app's sources with `npm ci` and a build done once for the whole module."""
    app = tmp_path_factory.mktemp("installed") / "app"
    shutil.copytree(SAMPLE_APP, app, ignore=GENERATED)
    for step in (["npm", "ci", "--no-audit", "--no-fund"], ["npm", "run", "build"]):
        done = run(step, app)
        assert done.returncode == 0, f"{step}: {done.stdout}\n{done.stderr}"
    return app


@pytest.fixture
def project(installed_app: Path, tmp_path: Path) -> Path:
    """A private copy of the installed app that a test may change (dependencies shared)."""
    copy = tmp_path / "app"
    shutil.copytree(installed_app, copy, ignore=shutil.ignore_patterns("node_modules"))
    (copy / "node_modules").symlink_to(installed_app / "node_modules")
    return copy


def add_migration(project: Path, name: str, sql: str) -> None:
    directory = project / "prisma" / "migrations" / name
    directory.mkdir(parents=True)
    (directory / "migration.sql").write_text(sql)


def migrate(project: Path, *args: str, url: str | None,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **(env or {})}
    full.pop("DATABASE_URL", None)
    if url is not None:
        full["DATABASE_URL"] = url
    return subprocess.run(["node", "scripts/migrate.js", *args], cwd=project, env=full,
                          capture_output=True, text=True, timeout=120)


def migration_rows(postgres: Postgres, database: str) -> list[dict[str, object]]:
    out = postgres.sql(database,
                       "SELECT coalesce(json_agg(m ORDER BY started_at), '[]') FROM _prisma_migrations m")
    rows: list[dict[str, object]] = json.loads(out)
    return rows


def tables(postgres: Postgres, database: str) -> set[str]:
    return set(postgres.sql(database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").split())


def columns(postgres: Postgres, database: str, table: str) -> set[str]:
    return set(postgres.sql(database, "SELECT column_name FROM information_schema.columns "
                                      f"WHERE table_name = '{table}'").split())


# --------------------------------------------------------------------------- migrate deploy

def test_deploy_applies_init_with_prismas_table_then_has_nothing_pending(
        project: Path, postgres: Postgres, database: str) -> None:
    first = migrate(project, "deploy", url=postgres.url(database))
    assert first.returncode == 0, first.stderr
    assert f"Applying migration `{INIT}`" in first.stdout
    assert {"Attendant", "Shift", "_prisma_migrations"} <= tables(postgres, database)

    layout = postgres.sql(database, """
        SELECT string_agg(concat_ws(' ', column_name, data_type, character_maximum_length, is_nullable,
                                    column_default), '; ' ORDER BY ordinal_position)
        FROM information_schema.columns WHERE table_name = '_prisma_migrations'""")
    assert layout == ("id character varying 36 NO; checksum character varying 64 NO; "
                      "finished_at timestamp with time zone YES; migration_name character varying 255 NO; "
                      "logs text YES; rolled_back_at timestamp with time zone YES; "
                      "started_at timestamp with time zone NO now(); applied_steps_count integer NO 0")
    (row,) = migration_rows(postgres, database)
    sql_bytes = (project / "prisma" / "migrations" / INIT / "migration.sql").read_bytes()
    assert row["migration_name"] == INIT
    assert row["checksum"] == hashlib.sha256(sql_bytes).hexdigest()
    assert row["finished_at"] is not None and row["rolled_back_at"] is None
    assert row["applied_steps_count"] == 1

    second = migrate(project, "deploy", url=postgres.url(database))
    assert second.returncode == 0, second.stderr
    assert "No pending migrations to apply." in second.stdout
    assert len(migration_rows(postgres, database)) == 1
    status = migrate(project, "status", url=postgres.url(database))
    assert status.returncode == 0 and "up to date" in status.stdout


def test_status_lists_pending_migrations_and_fails(project: Path, postgres: Postgres, database: str) -> None:
    add_migration(project, "20250301000000_more", 'CREATE TABLE "More" (id int);\n')
    status = migrate(project, "status", url=postgres.url(database))
    assert status.returncode == 1
    assert status.stdout.splitlines()[-2:] == [INIT, "20250301000000_more"]


def test_database_url_comes_from_dotenv_in_cwd_and_the_environment_wins(
        project: Path, postgres: Postgres, database: str) -> None:
    (project / ".env").write_text(f'# app settings\nDATABASE_URL="{postgres.url(database)}"\n')
    from_file = migrate(project, "deploy", url=None)
    assert from_file.returncode == 0, from_file.stderr
    assert [r["migration_name"] for r in migration_rows(postgres, database)] == [INIT]

    (project / ".env").write_text(f"DATABASE_URL={postgres.url('no_such_database')}\n")
    env_wins = migrate(project, "deploy", url=postgres.url(database))
    assert env_wins.returncode == 0, env_wins.stderr
    assert "No pending migrations to apply." in env_wins.stdout


def test_a_failing_migration_is_rolled_back_recorded_and_blocks_later_deploys(
        project: Path, postgres: Postgres, database: str) -> None:
    url = postgres.url(database)
    assert migrate(project, "deploy", url=url).returncode == 0
    add_migration(project, "20250301000000_broken",
                  'ALTER TABLE "Attendant" ADD COLUMN "badge" TEXT;\nSELECT * FROM "NoSuchTable";\n')
    add_migration(project, "20250401000000_later", 'CREATE TABLE "Later" (id int);\n')

    failed = migrate(project, "deploy", url=url)
    assert failed.returncode == 1
    assert "P3018" in failed.stderr and "20250301000000_broken" in failed.stderr
    assert "NoSuchTable" in failed.stderr
    # One simple query = one implicit transaction: the first statement is undone too.
    assert "badge" not in columns(postgres, database, "Attendant")
    assert "Later" not in tables(postgres, database)
    broken = [r for r in migration_rows(postgres, database) if r["migration_name"] == "20250301000000_broken"]
    assert len(broken) == 1
    assert broken[0]["finished_at"] is None and broken[0]["rolled_back_at"] is None
    assert "NoSuchTable" in str(broken[0]["logs"])

    blocked = migrate(project, "deploy", url=url)
    assert blocked.returncode == 1
    assert "P3009" in blocked.stderr and "20250301000000_broken" in blocked.stderr
    assert len(migration_rows(postgres, database)) == 2
    assert "Later" not in tables(postgres, database)

    # Recovery as in production: mark it rolled back, fix the file, deploy again.
    resolved = migrate(project, "resolve", "--rolled-back", "20250301000000_broken", url=url)
    assert resolved.returncode == 0, resolved.stderr
    (project / "prisma" / "migrations" / "20250301000000_broken" / "migration.sql").write_text(
        'ALTER TABLE "Attendant" ADD COLUMN "badge" TEXT;\n')
    fixed = migrate(project, "deploy", url=url)
    assert fixed.returncode == 0, fixed.stderr
    assert "badge" in columns(postgres, database, "Attendant")
    assert "Later" in tables(postgres, database)
    for result in (failed, blocked, resolved, fixed):
        assert postgres.password not in result.stdout + result.stderr


def test_a_second_migrator_waits_for_the_advisory_lock_and_gives_up_with_p1002(
        project: Path, postgres: Postgres, database: str) -> None:
    holder_script = (
        "const { Client } = require('pg');"
        "(async () => { const c = new Client({ connectionString: process.env.DATABASE_URL });"
        f" await c.connect(); await c.query('SELECT pg_advisory_lock({LOCK_ID})');"
        " console.log('locked');"
        " process.stdin.on('end', async () => { await c.end(); process.exit(0); }); process.stdin.resume();"
        "})();")
    holder = subprocess.Popen(["node", "-e", holder_script], cwd=project, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "DATABASE_URL": postgres.url(database)})
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        waited = migrate(project, "deploy", url=postgres.url(database),
                         env={"MIGRATE_LOCK_TIMEOUT_MS": "300"})
        assert waited.returncode == 1
        assert "P1002" in waited.stderr and f"pg_advisory_lock({LOCK_ID})" in waited.stderr
        assert "_prisma_migrations" not in tables(postgres, database)
    finally:
        if holder.stdin is not None:
            holder.stdin.close()
        stop_by_pid(holder)
    after = migrate(project, "deploy", url=postgres.url(database))
    assert after.returncode == 0, after.stderr


def test_bad_database_settings_give_clear_errors_without_the_password(
        project: Path, postgres: Postgres, database: str) -> None:
    wrong_password = "not-the-" + secrets.token_hex(4)
    cases = {
        "P1000": postgres.url(database, password=wrong_password),
        "P1003": postgres.url("no_such_database"),
        "P1001": f"postgresql://{APP_ROLE}:{wrong_password}@{HOST}:{free_port()}/{database}",
        "P1012": "mysql://someone:x@db/x",
    }
    for code, url in cases.items():
        result = migrate(project, "deploy", url=url)
        assert result.returncode == 1, code
        assert code in result.stderr, result.stderr
        assert wrong_password not in result.stdout + result.stderr
        assert "at /" not in result.stderr and "Error:" in result.stderr  # a message, not a stack trace
    missing = migrate(project, "deploy", url=None)
    assert missing.returncode == 1 and "DATABASE_URL" in missing.stderr
    usage = migrate(project, "frobnicate", url=postgres.url(database))
    assert usage.returncode == 1 and "usage:" in usage.stderr


# --------------------------------------------------------------------------- build

def test_build_writes_a_new_build_id_and_a_failed_build_keeps_the_last_one(project: Path) -> None:
    before = (project / "build" / "BUILD_ID").read_text()
    rebuilt = run(["npm", "run", "build"], project)
    assert rebuilt.returncode == 0, rebuilt.stderr
    good = (project / "build" / "BUILD_ID").read_text()
    assert good.strip() and good != before

    (project / "BUILD_SHOULD_FAIL").write_text("on purpose\n")
    marker = run(["npm", "run", "build"], project)
    assert marker.returncode == 1
    assert "BUILD_SHOULD_FAIL" in marker.stderr
    (project / "BUILD_SHOULD_FAIL").unlink()
    (project / "server.js").write_text("this is not javascript {\n")
    syntax = run(["npm", "run", "build"], project)
    assert syntax.returncode == 1
    assert "server.js does not parse" in syntax.stderr
    assert (project / "build" / "BUILD_ID").read_text() == good
    assert not list(project.glob(".build-*"))


# --------------------------------------------------------------------------- server

@dataclass
class Release:
    app_dir: Path
    release: Path

    @property
    def current(self) -> Path:
        return self.app_dir / "current"

    @property
    def shared(self) -> Path:
        return self.app_dir / "shared"


@pytest.fixture
def release(installed_app: Path, tmp_path: Path, postgres: Postgres, database: str) -> Release:
    """The deploy's host layout: releases/<id>/ with REVISION, shared/.env linked in, current -> release."""
    app_dir = tmp_path / "opt" / "jw-attendant-scheduler"
    target = app_dir / "releases" / f"20250101000000-{COMMIT[:7]}"
    shutil.copytree(installed_app, target, ignore=shutil.ignore_patterns("node_modules"))
    (target / "node_modules").symlink_to(installed_app / "node_modules")
    (target / "REVISION").write_text(COMMIT + "\n")
    (app_dir / "shared").mkdir()
    (app_dir / "shared" / ".env").write_text(f"DATABASE_URL={postgres.url(database)}\n")
    (target / ".env").symlink_to("../../shared/.env")
    (app_dir / "current").symlink_to(target.relative_to(app_dir))
    return Release(app_dir, target)


def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int
    log: Path

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        return get(self.port, path)

    def json(self, path: str) -> tuple[int, dict[str, object]]:
        status, _, body = self.get(path)
        return status, json.loads(body)

    def output(self) -> str:
        return self.log.read_text()


class StartServer(Protocol):
    def __call__(self, release: Release, env: Mapping[str, str] | None = None, *,
                 wait: bool = True) -> Server: ...


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    started: list[subprocess.Popen[str]] = []

    def start(release: Release, env: Mapping[str, str] | None = None, *, wait: bool = True) -> Server:
        port = free_port()
        log = tmp_path / f"server-{port}.log"
        full = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "APP_SHARED_DIR")}
        full.update({"PORT": str(port), "HOSTNAME": HOST, "BLUEGREEN_COLOR": "green", **(env or {})})
        with open(log, "w") as out:
            # As PM2 runs it: cwd is the `current` symlink, the script named through it.
            proc = subprocess.Popen(["node", str(release.current / "server.js")], cwd=release.current,
                                    env=full, stdout=out, stderr=subprocess.STDOUT, text=True)
        started.append(proc)
        server = Server(proc, port, log)
        if wait:
            wait_port(HOST, port, 30, what="sample app", log_file=log)
        return server

    yield start
    for proc in started:
        stop_by_pid(proc)


def test_health_names_version_commit_build_and_colour(release: Release, start_server: StartServer) -> None:
    server = start_server(release)
    status, headers, body = server.get("/api/health")
    assert status == 200
    assert headers["cache-control"] == "no-store"
    assert headers["content-type"].startswith("application/json")
    health = json.loads(body)
    build_id = (release.release / "build" / "BUILD_ID").read_text().strip()
    assert health["status"] == "ok"
    assert health["version"] == "1"
    assert health["commit"] == COMMIT
    assert health["buildId"] == build_id
    assert health["color"] == "green"
    assert health["pid"] == server.proc.pid

    page_status, page_headers, page = server.get("/")
    assert page_status == 200 and page_headers["content-type"].startswith("text/html")
    assert '<strong id="version">1</strong>' in page.decode()
    assert '<strong id="color">green</strong>' in page.decode()
    assert build_id in page.decode() and COMMIT in page.decode()
    assert server.get("/no/such/page")[0] == 404


def test_ready_checks_the_database_and_reports_failure_without_the_password(
        release: Release, start_server: StartServer, postgres: Postgres) -> None:
    server = start_server(release)
    status, ready = server.json("/api/ready")
    assert (status, ready["status"], ready["database"]) == (200, "ready", "ok")

    wrong = "wrong-" + secrets.token_hex(6)
    broken = start_server(release, {"DATABASE_URL": postgres.url("postgres", password=wrong)})
    status, _, raw = broken.get("/api/ready")
    assert status == 503
    assert json.loads(raw)["status"] == "unavailable"
    assert wrong not in raw.decode() and wrong not in broken.output()
    assert postgres.password not in raw.decode()
    # Liveness does not depend on the database.
    assert broken.json("/api/health")[0] == 200


def test_the_fault_file_in_shared_makes_every_request_fail(release: Release,
                                                           start_server: StartServer) -> None:
    server = start_server(release)
    fault = release.shared / "fault"
    fault.write_text("5xx\n")
    assert server.get("/api/health")[0] == 500
    assert server.get("/")[0] == 500
    assert server.get("/api/ready")[0] == 500
    fault.write_text("off\n")
    assert server.get("/api/health")[0] == 200
    fault.write_text("5xx")
    assert server.get("/api/health")[0] == 500
    fault.unlink()
    assert server.get("/api/health")[0] == 200


def test_app_shared_dir_overrides_where_the_fault_file_is(
        release: Release, start_server: StartServer, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    server = start_server(release, {"APP_SHARED_DIR": str(elsewhere)})
    (release.shared / "fault").write_text("5xx\n")
    assert server.get("/api/health")[0] == 200
    (elsewhere / "fault").write_text("5xx\n")
    assert server.get("/api/health")[0] == 500


def test_the_server_refuses_to_start_without_a_build(release: Release, start_server: StartServer) -> None:
    shutil.rmtree(release.release / "build")
    server = start_server(release, wait=False)
    assert server.proc.wait(timeout=30) == 1
    assert "Could not find a production build" in server.output()


def test_sigterm_drains_an_in_flight_request_then_exits(release: Release, start_server: StartServer) -> None:
    drain_ms = 1000
    server = start_server(release, {"DRAIN_MS": str(drain_ms)})
    slow = http.client.HTTPConnection(HOST, server.port, timeout=30)
    try:
        # The status line arrives at once and the body only after the drain has closed the listener.
        slow.request("GET", f"/api/slow?ms={drain_ms + 1500}")
        in_flight = slow.getresponse()
        assert in_flight.status == 200
        os.kill(server.proc.pid, signal.SIGTERM)

        # While draining, new requests are still served but told to close their connection.
        saw_close = False
        for _ in range(50):
            try:
                status, headers, _ = server.get("/api/health")
            except OSError:
                break
            if headers.get("connection") == "close":
                saw_close = status == 200
                break
        assert saw_close, server.output()

        assert in_flight.read() == f"done after {drain_ms + 1500} ms\n".encode()
    finally:
        slow.close()
    assert server.proc.wait(timeout=30) == 0
    output = server.output()
    assert "SIGTERM: draining" in output and "all connections closed" in output


# --------------------------------------------------------------------------- PM2

def test_pm2_cluster_mode_waits_for_ready_and_reloads_gracefully(release: Release, tmp_path: Path) -> None:
    pm2_home = tmp_path / "pm2"
    port = free_port()
    ecosystem = tmp_path / "ecosystem.config.js"
    ecosystem.write_text("module.exports = { apps: [{ " + ", ".join([
        "name: 'jw-sample'", f"cwd: {json.dumps(str(release.current))}", "script: 'server.js'",
        "exec_mode: 'cluster'", "instances: 2", "wait_ready: true", "listen_timeout: 10000",
        "kill_timeout: 5000",
        f"env: {{ PORT: '{port}', HOSTNAME: '{HOST}', BLUEGREEN_COLOR: 'blue', DRAIN_MS: '200' }}",
    ]) + " }] };\n")
    env = {"PM2_HOME": str(pm2_home)}
    daemon = ManagedProcess("pm2 daemon of the sample-app test", pm2_home / "pm2.pid", expect="PM2",
                            expect_env=env)
    workers: set[int] = set()

    def online() -> list[dict[str, object]]:
        listing = run(["pm2", "jlist"], tmp_path, env)
        apps = json.loads(listing.stdout[listing.stdout.index("["):])
        workers.update(int(a["pid"]) for a in apps if a["pid"])
        return [a for a in apps if a["pm2_env"]["status"] == "online"]

    try:
        started = run(["pm2", "start", str(ecosystem)], tmp_path, env)
        assert started.returncode == 0, started.stderr
        first = online()
        assert len(first) == 2
        assert {a["pm2_env"]["exec_mode"] for a in first} == {"cluster_mode"}  # type: ignore[index]
        status, _, body = get(port, "/api/health")
        health = json.loads(body)
        assert (status, health["color"], health["version"]) == (200, "blue", "1")

        reloaded = run(["pm2", "reload", str(ecosystem)], tmp_path, env)
        assert reloaded.returncode == 0, reloaded.stderr
        second = online()
        assert len(second) == 2
        assert {a["pid"] for a in second}.isdisjoint({a["pid"] for a in first})
        assert get(port, "/api/health")[0] == 200
        logs = "".join(p.read_text() for p in (pm2_home / "logs").glob("*-out-*.log"))
        assert "SIGINT: draining" in logs and "all connections closed" in logs
    finally:
        run(["pm2", "kill"], tmp_path, env)
        daemon.stop()
        leftovers = [pid for pid in workers if runs_from(pid, release.app_dir)]
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not daemon.alive()
    assert leftovers == [], "pm2 kill left workers running"


def runs_from(pid: int, directory: Path) -> bool:
    """Whether `pid` is still a process working in `directory` (never trust a bare, maybe recycled pid)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")).resolve().is_relative_to(directory.resolve())
    except OSError:
        return False
