"""The local lab and its process management, against the real daemons."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from bluegreen.hosts.executor import SshExecutor, SshTarget
from bluegreen.lab.lab import Lab
from bluegreen.lab.paths import PROJECT_DIR
from bluegreen.lab.services import LabError, ManagedProcess, host_public_key, spawn, wait_port, write_pid_file
from bluegreen.model.errors import ConfigError, HostKeyError


def _is_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return state[state.rfind(")") + 2] in "ZX"


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process the code under test must never touch."""
    proc = subprocess.Popen(["sleep", "600"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- ManagedProcess


def test_spawned_process_is_recorded_verified_and_stopped_by_pid(tmp_path: Path) -> None:
    process = spawn("napper", ["sleep", "601"], pid_file=tmp_path / "napper.pid",
                    log_file=tmp_path / "napper.log")
    pid = process.pid()
    assert pid is not None
    assert json.loads((tmp_path / "napper.pid").read_text()) == {"pid": pid, "cmd": "sleep 601"}
    assert spawn("napper", ["sleep", "601"], pid_file=tmp_path / "napper.pid",
                 log_file=tmp_path / "napper.log").pid() == pid
    assert process.stop() is True
    assert _is_gone(pid)
    assert not (tmp_path / "napper.pid").exists()
    assert process.stop() is False


def test_a_recycled_pid_is_not_ours_and_is_never_signalled(tmp_path: Path,
                                                           sleeper: subprocess.Popen[bytes]) -> None:
    pid_file = tmp_path / "sshd.pid"
    write_pid_file(pid_file, sleeper.pid, "/usr/sbin/sshd -f /nowhere/sshd_config")
    process = ManagedProcess("sshd stale", pid_file)
    assert process.alive() is False
    assert process.stop() is False
    assert sleeper.poll() is None
    assert not pid_file.exists()


def test_plain_pid_files_need_an_expectation(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    pid_file = tmp_path / "daemon.pid"
    pid_file.write_text(f"{sleeper.pid}\n/some/data/dir\n")  # postmaster.pid-like: pid on line 1
    assert ManagedProcess("unverifiable", pid_file).pid() is None
    assert ManagedProcess("wrong", pid_file, expect="haproxy").pid() is None
    assert ManagedProcess("right", pid_file, expect="sleep 600").pid() == sleeper.pid
    assert ManagedProcess("env", pid_file, expect="sleep",
                          expect_env={"PM2_HOME": "/not/this/one"}).pid() is None


def test_a_process_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    script = "trap '' TERM; echo ready; while :; do sleep 0.1; done"
    process = spawn("stubborn", ["bash", "-c", script], pid_file=tmp_path / "stubborn.pid",
                    log_file=tmp_path / "stubborn.log", expect="trap '' TERM")
    pid = process.pid()
    assert pid is not None
    while "ready" not in (tmp_path / "stubborn.log").read_text():
        pass
    assert process.stop(timeout=0.5) is True
    assert _is_gone(pid)


def test_wait_port_names_what_did_not_come_up_with_the_log_tail(tmp_path: Path) -> None:
    log_file = tmp_path / "server.log"
    log_file.write_text("starting\nfatal: address already in use\n")
    with socket.socket() as s:
        s.bind(("127.0.3.99", 0))
        free_port = s.getsockname()[1]  # bound but not listening: connections are refused
        with pytest.raises(LabError) as err:
            wait_port("127.0.3.99", free_port, 0.2, what="the widget server", log_file=log_file)
    message = str(err.value)
    assert f"the widget server did not come up on 127.0.3.99:{free_port}" in message
    assert "fatal: address already in use" in message


def test_the_lab_refuses_a_stack_that_is_not_on_loopback() -> None:
    with pytest.raises(ConfigError) as err:
        Lab(PROJECT_DIR, stack="prod")
    assert "10.92.3.21" in str(err.value)
    assert "127.0.0.0/8" in str(err.value)


def test_lab_cli_reports_a_bad_stack_without_a_traceback() -> None:
    proc = subprocess.run([str(PROJECT_DIR / ".venv/bin/python"), "-m", "bluegreen.lab", "--stack", "prod",
                           "status"], capture_output=True, text=True, cwd=PROJECT_DIR, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: stack 'prod' is not a lab stack")
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


# --------------------------------------------------------------------------- the lab


def test_up_again_reuses_every_process(lab: Lab) -> None:
    before = {s.name: s.pid for s in lab.status() if s.running}
    info = lab.up()
    assert info.started == []
    assert set(info.reused) >= {f"sshd {c.name}" for c in lab.topology.containers}
    after = {s.name: s.pid for s in lab.status() if s.running}
    assert after == before


def test_every_host_answers_over_ssh_with_its_own_pinned_key(lab: Lab) -> None:
    t = lab.topology
    keys = set()
    for host in t.containers:
        expected_key = host_public_key(Path(host.path("/etc/ssh")))
        with closing(lab.executor(host)) as executor:
            result = executor.run("echo answered-by-$(id -un)", step="probe")
            assert result.stdout.strip() == "answered-by-root"
            transport = executor.connect().get_transport()
            assert transport is not None
            served = transport.get_remote_server_key()
        assert f"{served.get_name()} {served.get_base64()}" == expected_key
        keys.add(expected_key)
    assert len(keys) == len(t.containers)
    pinned = lab.paths.known_hosts.read_text().splitlines()
    # One pin per container, and one for the backup host (a machine of its own, `bluegreen:backup`).
    assert t.backup is not None
    backup_key = host_public_key(Path(t.backup.path("/etc/ssh")))
    assert sorted(pinned) == sorted([*(f"[{c.ip}]:{t.ssh.port} {host_public_key(Path(c.path('/etc/ssh')))}"
                                       for c in t.containers),
                                     f"[{t.backup.address}]:{t.backup.port} {backup_key}"])


def test_a_host_is_refused_when_its_key_is_not_pinned(lab: Lab, tmp_path: Path) -> None:
    host = lab.topology.app_host("blue")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    executor = SshExecutor(host="blue", target=SshTarget(
        host.ip, lab.topology.ssh.port, identity_file=str(lab.paths.identity),
        known_hosts=str(empty), connect_timeout=5, connect_attempts=1))
    with pytest.raises(HostKeyError):
        executor.run("true", step="probe")


def test_a_changed_host_key_is_re_pinned_only_in_the_labs_file(lab: Lab) -> None:
    host = lab.topology.app_host("green")
    real = host_public_key(Path(host.path("/etc/ssh")))
    port = lab.topology.ssh.port
    lines = lab.paths.known_hosts.read_text().splitlines()
    marker = f"[{host.ip}]:{port}"
    stale = [ln if ln.split()[0] != marker else f"{marker} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + "A" * 43
             for ln in lines]
    lab.paths.known_hosts.write_text("\n".join(stale) + "\n")
    with pytest.raises(HostKeyError):
        lab.executor(host).run("true", step="probe")
    lab._pin_host_key(host, real)
    assert sorted(lab.paths.known_hosts.read_text().splitlines()) == sorted(lines)
    with closing(lab.executor(host)) as executor:
        assert executor.run("echo ok", step="probe").stdout.strip() == "ok"


def test_status_lists_every_process_with_a_verified_pid(lab: Lab) -> None:
    t = lab.topology
    statuses = {s.name: s for s in lab.status()}
    expected = {*(f"sshd {c.name}" for c in t.containers), f"postgres {t.database_host.name}",
                f"haproxy {t.load_balancer.name}", "fakepve"}
    assert expected <= set(statuses)
    for name in expected:
        status = statuses[name]
        assert status.running, name
        assert status.pid is not None and not _is_gone(status.pid), name
    assert statuses[f"sshd {t.app_host('blue').name}"].listen == f"{t.app_host('blue').ip}:{t.ssh.port}"
    assert statuses[f"postgres {t.database_host.name}"].listen == f"{t.database_host.ip}:{t.database.port}"


def test_postgres_answers_as_the_postgres_user_on_the_database_host(lab: Lab) -> None:
    t = lab.topology
    socket_dir = t.database_host.path("/var/run/postgresql")
    with closing(lab.executor("database")) as executor:
        result = executor.run(
            f"runuser -u postgres -- psql -h {socket_dir} -p {t.database.port} -Atc 'show fsync'",
            step="psql")
    assert result.stdout.strip() == "off"


def test_secrets_are_private_and_the_app_env_points_at_the_database(lab: Lab) -> None:
    t = lab.topology
    password = lab.db_password()
    assert stat.S_IMODE(lab.paths.db_password.stat().st_mode) == 0o600
    for host in t.app_hosts.values():
        env = Path(host.path(f"{t.app.dir}/shared/.env"))
        assert stat.S_IMODE(env.stat().st_mode) == 0o600
        assert (f"DATABASE_URL=postgresql://{t.database.user}:{password.reveal()}@"
                f"{t.database_host.ip}:{t.database.port}/{t.database.name}") in env.read_text().splitlines()
    assert password.reveal() not in repr(lab.up())


def test_down_stops_exactly_what_the_lab_started_and_up_brings_it_back(
        lab: Lab, sleeper: subprocess.Popen[bytes]) -> None:
    with lab.exclusive():  # no other test session may start or use the lab in between
        if lab.other_sessions():
            pytest.skip(f"other test sessions use the lab right now (pids {lab.other_sessions()})")
        running = {s.name: s.pid for s in lab.status() if s.running}
        assert len(running) >= len(lab.topology.containers) + 3
        try:
            stopped = lab.down()
            assert sorted(stopped) == sorted(f"{name} (pid {pid})" for name, pid in running.items())
            for name, pid in running.items():
                assert pid is not None and _is_gone(pid), f"{name} still running"
            assert not any(s.running for s in lab.status())
            assert sleeper.poll() is None, "down() touched a process it did not start"
            assert lab.down() == []
        finally:
            info = lab.up()
    # PM2 daemons (if a deploy had started them) come back with the next deploy, not with up().
    daemons = sorted(name for name in running if not name.startswith("pm2 "))
    assert sorted(info.started) == daemons
    assert all(s.running for s in lab.status() if s.name in daemons)
    with closing(lab.executor("blue")) as executor:
        assert executor.run("echo back", step="probe").stdout.strip() == "back"
    assert sleeper.poll() is None
