"""The SSH executor against a real sshd on a loopback address: host keys, dropped connections,
~/.ssh/config aliases. Everything started here is stopped by its PID."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bluegreen.hosts.executor import SshExecutor, SshTarget, fingerprint, trust_host
from bluegreen.lab.services import ManagedProcess, host_public_key, start_sshd
from bluegreen.model.errors import HostKeyError, RemoteError

pytestmark = pytest.mark.integration

ADDRESS = "127.0.72.10"
PORT = 2222


@dataclass
class SshHost:
    base: Path
    identity: Path
    known_hosts: Path
    sshd: ManagedProcess
    host_key_dir: Path

    def target(self, **overrides: Any) -> SshTarget:
        pinned = SshTarget(address=ADDRESS, port=PORT, user="root", identity_file=str(self.identity),
                           known_hosts=str(self.known_hosts), connect_timeout=5.0, connect_attempts=1,
                           ssh_config=str(self.base / "no-ssh-config"))
        return dataclasses.replace(pinned, **overrides)

    def executor(self, **overrides: Any) -> SshExecutor:
        return SshExecutor(host="testhost (127.0.72.10)", target=self.target(**overrides), command_timeout=60)


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)


@pytest.fixture(scope="module")
def ssh_host() -> Iterator[SshHost]:
    base = Path(tempfile.mkdtemp(prefix="bg-ssh-", dir="/tmp"))
    identity = base / "client_key"
    _keygen(identity, "bluegreen-test-client")
    state = base / "sshd"
    sshd = start_sshd(name="ssh-test", address=ADDRESS, port=PORT, state_dir=state,
                      authorized_keys=identity.with_suffix(".pub"), log_file=base / "sshd.log",
                      pid_file=base / "sshd.pid")
    known_hosts = base / "known_hosts"
    trust_host(str(known_hosts), ADDRESS, PORT, host_public_key(state))
    try:
        yield SshHost(base, identity, known_hosts, sshd, state)
    finally:
        sshd.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_pinned_host_runs_commands_and_moves_files(ssh_host: SshHost) -> None:
    with closing(ssh_host.executor()) as ex:
        assert ex.run("echo hello; echo oops >&2", step="echo").stdout == "hello\n"
        target = ssh_host.base / "files" / "a.txt"
        ex.put(str(target), "content\n", step="put", mode=0o640)
        assert target.read_text() == "content\n"
        assert oct(target.stat().st_mode & 0o777) == "0o640"
        assert ex.get(str(target), step="get") == b"content\n"
        assert ex.get(str(ssh_host.base / "missing"), step="get") is None
        with pytest.raises(RemoteError) as err:
            ex.run("echo broken >&2; exit 3", step="failing step")
    assert err.value.host == "testhost (127.0.72.10)"
    assert err.value.step == "failing step"
    assert "exit code 3" in str(err.value) and "broken" in str(err.value)


def test_unknown_host_key_is_refused_with_a_clear_message(ssh_host: SshHost) -> None:
    empty = ssh_host.base / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError) as err, closing(ssh_host.executor(known_hosts=str(empty))) as ex:
        ex.run("true", step="should not run")
    message = str(err.value)
    assert "unknown" in message and "refusing to connect" in message
    assert f"{ADDRESS}:{PORT}" in message
    # The key it presents, as `ssh-keygen -lf` prints it, and the command that pins exactly it.
    shown = fingerprint(host_public_key(ssh_host.host_key_dir).split()[1])
    assert f"it presents ssh-ed25519 {shown}" in message and f"--fingerprint {shown}" in message
    assert empty.read_text() == "", "an unknown key must never be added silently"


def test_changed_host_key_is_refused(ssh_host: SshHost) -> None:
    other = ssh_host.base / "impostor_key"
    _keygen(other, "impostor")
    wrong = ssh_host.base / "wrong_known_hosts"
    trust_host(str(wrong), ADDRESS, PORT, " ".join(other.with_suffix(".pub").read_text().split()[:2]))
    before = wrong.read_text()
    with pytest.raises(HostKeyError) as err, closing(ssh_host.executor(known_hosts=str(wrong))) as ex:
        ex.run("true", step="should not run")
    assert "CHANGED" in str(err.value) and "refusing to connect" in str(err.value)
    # SHA256, as `trust` prints it; never the MD5 hex paramiko offers.
    real = fingerprint(host_public_key(ssh_host.host_key_dir).split()[1])
    pinned = fingerprint(other.with_suffix(".pub").read_text().split()[1])
    assert f"it now presents ssh-ed25519 {real}, pinned is ssh-ed25519 {pinned}" in str(err.value)
    assert not re.search(r"\b[0-9a-f]{32}\b", str(err.value))
    assert wrong.read_text() == before


def test_trusting_a_different_key_for_a_pinned_host_is_refused(ssh_host: SshHost) -> None:
    other = ssh_host.base / "second_key"
    _keygen(other, "second")
    with pytest.raises(HostKeyError):
        trust_host(str(ssh_host.known_hosts), ADDRESS, PORT,
                   " ".join(other.with_suffix(".pub").read_text().split()[:2]))


def test_wrong_client_key_is_a_clear_authentication_error(ssh_host: SshHost) -> None:
    stranger = ssh_host.base / "stranger_key"
    _keygen(stranger, "stranger")
    with pytest.raises(RemoteError) as err, closing(ssh_host.executor(identity_file=str(stranger))) as ex:
        ex.run("true", step="should not run")
    assert err.value.step == "connect"
    assert "authentication as root@127.0.72.10:2222 failed" in str(err.value)


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def _parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2:].split()[1])


def test_connection_dropped_mid_command_names_host_and_step(ssh_host: SshHost) -> None:
    pid_file = ssh_host.base / "long-command.pid"
    caught: list[BaseException] = []

    def long_command() -> None:
        try:
            with closing(ssh_host.executor()) as ex:
                # `exec` makes the recorded pid the sleeping command itself.
                ex.run(f"echo $$ > {pid_file}; exec sleep 120", step="long running step", timeout=60)
        except BaseException as exc:
            caught.append(exc)

    worker = threading.Thread(target=long_command)
    worker.start()
    command_pid = None
    session_pid = None
    try:
        deadline = time.monotonic() + 20
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert time.monotonic() < deadline, "the remote command never started"
            time.sleep(0.05)
        command_pid = int(pid_file.read_text())
        # The command's parent is the sshd process serving our session: kill it, as a network drop would.
        session_pid = _parent_of(command_pid)
        assert "sshd" in Path(f"/proc/{session_pid}/cmdline").read_text()
        assert session_pid != ssh_host.sshd.pid(), "must not be the listening sshd"
        os.kill(session_pid, signal.SIGKILL)
        worker.join(30)
        assert not worker.is_alive()
    finally:
        if command_pid is not None and _pid_alive(command_pid):
            os.kill(command_pid, signal.SIGKILL)
        worker.join(60)
    assert len(caught) == 1
    err = caught[0]
    assert isinstance(err, RemoteError)
    assert err.host == "testhost (127.0.72.10)"
    assert err.step == "long running step"
    assert "connection lost" in err.detail, err.detail
    assert ssh_host.sshd.alive(), "the listener serves other sessions on"


def test_stopped_sshd_is_a_remote_error_naming_the_host() -> None:
    base = Path(tempfile.mkdtemp(prefix="bg-ssh2-", dir="/tmp"))
    identity = base / "client_key"
    _keygen(identity, "client")
    address = "127.0.72.11"
    sshd = start_sshd(name="ssh-test-2", address=address, port=PORT, state_dir=base / "sshd",
                      authorized_keys=identity.with_suffix(".pub"), log_file=base / "sshd.log",
                      pid_file=base / "sshd.pid")
    try:
        known_hosts = base / "known_hosts"
        trust_host(str(known_hosts), address, PORT, host_public_key(base / "sshd"))
        target = SshTarget(address=address, port=PORT, identity_file=str(identity),
                           known_hosts=str(known_hosts), connect_timeout=3, connect_attempts=2,
                           ssh_config=str(base / "none"))
        ex = SshExecutor(host="second (127.0.72.11)", target=target)
        assert ex.run("echo up", step="before").stdout == "up\n"
        ex.close()
        assert sshd.stop()
        with pytest.raises(RemoteError) as err:
            ex.run("echo up", step="after the stop")
        assert err.value.host == "second (127.0.72.11)"
        assert err.value.step == "connect"
        assert f"cannot reach {address}:{PORT}" in str(err.value)
    finally:
        sshd.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_ssh_config_alias_supplies_address_port_user_and_key(ssh_host: SshHost) -> None:
    config = ssh_host.base / "ssh_config"
    config.write_text(
        "Host jw-test-alias\n"
        f"    HostName {ADDRESS}\n"
        f"    Port {PORT}\n"
        "    User root\n"
        f"    IdentityFile {ssh_host.identity}\n"
    )
    # Port, user and key are wrong on purpose: only the alias's entry can make this connect. The
    # address stays a loopback literal, so ignoring the config fails locally (no DNS lookup).
    target = SshTarget(address=ADDRESS, alias="jw-test-alias", port=1, user="nobody", identity_file=None,
                       known_hosts=str(ssh_host.known_hosts), connect_timeout=5, connect_attempts=1,
                       ssh_config=str(config))
    with closing(SshExecutor(host="alias", target=target)) as ex:
        result = ex.run("id -un; echo $SSH_CONNECTION", step="whoami")
    user, connection = result.stdout.splitlines()
    assert user == "root"
    assert connection.split()[2:] == [ADDRESS, str(PORT)]


def test_stack_alias_in_a_test_ssh_config_is_trusted_and_used(ssh_host: SshHost, tmp_path: Path) -> None:
    """`sshAlias` + `ssh.configFile` from the stack: `trust` pins the key under the HostName and Port
    the alias resolves to (not the stack's address and port), and the connection then verifies it."""
    import io
    import json

    import yaml

    from bluegreen.faces import cli
    from bluegreen.hosts.executor import connect, fingerprint
    from bluegreen.model.stackfile import load_stack

    config = tmp_path / "ssh_config"
    config.write_text(f"Host jwa\n    HostName {ADDRESS}\n    Port {PORT}\n    User root\n"
                      f"    IdentityFile {ssh_host.identity}\n")
    known = tmp_path / "known_hosts"
    # The stack's own address, port and user are wrong on purpose (an address nothing serves).
    stack = {"config": {
        "bluegreen:activeColor": "blue",
        "bluegreen:proxmox": {"node": "pve", "datastore": "local-lvm", "gateway": "127.0.72.1",
                              "endpoint": "https://127.0.72.5:8006/", "template": {"file": "t.tar.zst"}},
        "bluegreen:ssh": {"user": "nobody", "port": 1, "knownHosts": str(known), "configFile": str(config),
                          "publicKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests test"],
                          "connectTimeout": 5},
        "bluegreen:app": {"repo": "/nonexistent.git", "branch": "main"},
        "bluegreen:containers": [
            {"id": 131, "name": "db", "role": "database", "ip": "127.0.72.91/24", "sshAlias": "postgres"},
            {"id": 132, "name": "blue", "role": "app", "color": "blue", "ip": "127.0.72.92/24", "sshAlias": "jwa"},
            {"id": 134, "name": "green", "role": "app", "color": "green", "ip": "127.0.72.94/24"},
            {"id": 136, "name": "lb", "role": "loadbalancer", "ip": "127.0.72.96/24"}],
    }}
    (tmp_path / "stacks").mkdir()
    (tmp_path / "Pulumi.yaml").write_text("name: aliases-test\nruntime: python\nstackConfigDir: stacks\n")
    (tmp_path / "stacks/Pulumi.aliases.yaml").write_text(yaml.safe_dump(stack))
    key_type, key_b64 = host_public_key(ssh_host.host_key_dir).split()[:2]
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--cwd", str(tmp_path), "--stack", "aliases", "--json", "trust", "blue",
                     "--fingerprint", fingerprint(key_b64)], out=out, err=err)
    assert code == 0, err.getvalue()
    assert json.loads(out.getvalue())["hosts"][0]["added"] is True
    assert known.read_text().split() == [f"[{ADDRESS}]:{PORT}", key_type, key_b64]
    t = load_stack(tmp_path, "aliases")
    with closing(connect(t, t.app_host("blue"))) as ex:
        assert ex.run("echo $SSH_CONNECTION", step="where").stdout.split()[2:] == [ADDRESS, str(PORT)]
