"""One executor protocol for every side effect on a host: run a command, put a file, read a file.

`SshExecutor` (paramiko, host keys pinned in a known_hosts file, `~/.ssh/config` aliases honoured,
one connection per host per operation) and `LocalExecutor` (subprocess) implement it. Commands are
strings built with `render.shell.sh()`, which quotes every argument. `hosts.openssh` implements
the same protocol over one OpenSSH session (the emergency and switch paths). Errors are `RemoteError`s naming the host
and the step, with secrets redacted.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

from bluegreen.model.errors import HostKeyError, RemoteError
from bluegreen.model.sensitive import SecretSet, Sensitive, as_secret_set, redact
from bluegreen.render.shell import env_prefix, sh

if TYPE_CHECKING:
    import paramiko

    from bluegreen.model.topology import Container, Topology

log = logging.getLogger("bluegreen.executor")


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@runtime_checkable
class Executor(Protocol):
    """Everything the tool does to a host goes through one of these."""

    host: str

    def run(self, command: str, *, step: str, check: bool = True, timeout: float | None = None,
            input: str | None = None, env: Mapping[str, str] | None = None) -> CommandResult: ...

    def put(self, path: str, content: str | bytes, *, step: str, mode: int = 0o644) -> None: ...

    def get(self, path: str, *, step: str) -> bytes | None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...


class DelegatingExecutor:
    """An executor that hands everything to `inner`: subclasses change what they need (a time
    limit on each command, a hook before each step) and keep the rest."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.host = inner.host

    def run(self, command: str, *, step: str, check: bool = True, timeout: float | None = None,
            input: str | None = None, env: Mapping[str, str] | None = None) -> CommandResult:
        return self.inner.run(command, step=step, check=check, timeout=timeout, input=input, env=env)

    def put(self, path: str, content: str | bytes, *, step: str, mode: int = 0o644) -> None:
        self.inner.put(path, content, step=step, mode=mode)

    def get(self, path: str, *, step: str) -> bytes | None:
        return self.inner.get(path, step=step)

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Base:
    host: str
    # A shared `SecretSet` stays shared (values the estate learns later are scrubbed too).
    secrets: Iterable[Sensitive] = field(default_factory=SecretSet)
    command_timeout: float = 900.0

    def __post_init__(self) -> None:
        self.secrets = as_secret_set(self.secrets)

    def _clean(self, text: str) -> str:
        return redact(text, self.secrets)

    def _finish(self, command: str, code: int, out: str, err: str, started: float, *,
                step: str, check: bool) -> CommandResult:
        result = CommandResult(self._clean(command), code, out, err, time.monotonic() - started)
        log.debug("%s: %s -> %d in %.2fs", self.host, step, code, result.duration)
        if check and code != 0:
            detail = (err.strip() or out.strip() or "no output")[-2000:]
            raise RemoteError(self.host, step, f"exit code {code}: {self._clean(detail)}")
        return result

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        pass


@dataclass
class LocalExecutor(_Base):
    """Runs on this machine with bash; used by tests and by the lab for its own bookkeeping."""

    host: str = "localhost"

    def run(self, command: str, *, step: str, check: bool = True, timeout: float | None = None,
            input: str | None = None, env: Mapping[str, str] | None = None) -> CommandResult:
        started = time.monotonic()
        full_env = {**os.environ, **(env or {})}
        try:
            proc = subprocess.run(["bash", "-c", command], input=input, capture_output=True,
                                  text=True, timeout=timeout or self.command_timeout, env=full_env,
                                  errors="replace", start_new_session=True)
        except subprocess.TimeoutExpired:
            raise RemoteError(self.host, step, f"timed out after {timeout or self.command_timeout:g}s") from None
        return self._finish(command, proc.returncode, proc.stdout, proc.stderr, started,
                            step=step, check=check)

    def put(self, path: str, content: str | bytes, *, step: str, mode: int = 0o644) -> None:
        data = content.encode() if isinstance(content, str) else content
        target = Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except OSError as exc:
            raise RemoteError(self.host, step, f"cannot write {path}: {exc.strerror}") from None

    def get(self, path: str, *, step: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RemoteError(self.host, step, f"cannot read {path}: {exc.strerror}") from None


@dataclass
class SshTarget:
    """Where and how to reach one host; `alias` is looked up in ~/.ssh/config first."""

    address: str
    port: int = 22
    user: str = "root"
    alias: str | None = None
    identity_file: str | None = None
    known_hosts: str = "~/.config/bluegreen/known_hosts"
    connect_timeout: float = 10.0
    connect_attempts: int = 3
    ssh_config: str = "~/.ssh/config"


def resolve_target(target: SshTarget) -> tuple[str, int, str, list[str]]:
    """Apply ~/.ssh/config (HostName, Port, User, IdentityFile) for the alias or the address."""
    import paramiko

    hostname, port, user = target.address, target.port, target.user
    identities = [os.path.expanduser(target.identity_file)] if target.identity_file else []
    config_path = Path(os.path.expanduser(target.ssh_config))
    if config_path.is_file():
        cfg = paramiko.SSHConfig.from_path(str(config_path))
        for name in filter(None, (target.alias, target.address)):
            if name not in cfg.get_hostnames():
                continue
            entry = cfg.lookup(name)
            hostname = entry.get("hostname", hostname)
            port = int(entry.get("port", port))
            user = entry.get("user", user)
            identities = [os.path.expanduser(p) for p in entry.get("identityfile", [])] or identities
            break
    return hostname, port, user, identities


@dataclass
class SshExecutor(_Base):
    """SSH via paramiko. Host keys must already be in `target.known_hosts` (see `trust_host`)."""

    target: SshTarget = field(default_factory=lambda: SshTarget("127.0.0.1"))
    _client: paramiko.SSHClient | None = field(default=None, init=False, repr=False)

    def connect(self) -> paramiko.SSHClient:
        if self._client is not None:
            return self._client
        import paramiko

        hostname, port, user, identities = resolve_target(self.target)
        known_hosts = os.path.expanduser(self.target.known_hosts)
        last: Exception | None = None
        for attempt in range(1, self.target.connect_attempts + 1):
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(_reject_showing_key())
            if os.path.exists(known_hosts):
                client.load_host_keys(known_hosts)
            try:
                client.connect(hostname, port=port, username=user,
                               key_filename=identities or None,  # type: ignore[arg-type]
                               timeout=self.target.connect_timeout,
                               banner_timeout=self.target.connect_timeout,
                               auth_timeout=self.target.connect_timeout,
                               allow_agent=True, look_for_keys=not identities)
            except paramiko.BadHostKeyException as exc:
                client.close()
                raise HostKeyError(
                    self.host, "connect",
                    f"the host key of {hostname}:{port} has CHANGED (it now presents {exc.key.get_name()} "
                    f"{fingerprint(exc.key.get_base64())}, pinned is {exc.expected_key.get_name()} "
                    f"{fingerprint(exc.expected_key.get_base64())}); refusing to connect. If the host "
                    f"was rebuilt, check the new fingerprint, remove its line from {known_hosts} and "
                    f"pin it with `bluegreen trust --fingerprint ...`") from None
            except _UnknownHostKey as exc:
                client.close()
                raise HostKeyError(
                    self.host, "connect",
                    f"the host key of {hostname}:{port} is unknown (not in {known_hosts}): it presents "
                    f"{exc.key_type} {exc.fingerprint}; refusing to connect. If that is the host's key "
                    f"(check it on the host: ssh-keygen -lf /etc/ssh/ssh_host_{exc.key_type.removeprefix('ssh-')}"
                    f"_key.pub), pin it with `bluegreen trust {self.host.split(' ', 1)[0]} --fingerprint "
                    f"{exc.fingerprint}`") from None
            except paramiko.SSHException as exc:
                client.close()
                if isinstance(exc, paramiko.AuthenticationException):
                    raise RemoteError(self.host, "connect",
                                      f"authentication as {user}@{hostname}:{port} failed: {exc}") from None
                last = exc
            except (OSError, EOFError) as exc:
                client.close()
                last = exc
            else:
                self._client = client
                return client
            if attempt < self.target.connect_attempts:
                time.sleep(min(0.2 * 2 ** attempt, 2.0))
        reason = getattr(last, "strerror", None) or str(last) or type(last).__name__
        raise RemoteError(self.host, "connect",
                          f"cannot reach {hostname}:{port} after {self.target.connect_attempts} attempts: {reason}")

    def run(self, command: str, *, step: str, check: bool = True, timeout: float | None = None,
            input: str | None = None, env: Mapping[str, str] | None = None) -> CommandResult:
        client = self.connect()
        full = env_prefix(env) + command
        started = time.monotonic()
        limit = timeout or self.command_timeout
        try:
            transport = client.get_transport()
            if transport is None or not transport.is_active():
                raise EOFError("connection closed")
            channel = transport.open_session(timeout=self.target.connect_timeout)
            channel.settimeout(limit)
            channel.exec_command(f"bash -c {shlex.quote(full)}")
            if input is not None:
                channel.sendall(input.encode())
            channel.shutdown_write()
            out, err = _drain(channel, limit, started)
            if not channel.exit_status_ready() and channel.closed:
                raise EOFError("connection closed before the command finished")
            code = channel.recv_exit_status()
            if code == -1:
                raise EOFError("connection dropped before the command finished")
        except TimeoutError:
            self._drop()
            raise RemoteError(self.host, step, f"timed out after {limit:g}s") from None
        except (OSError, EOFError, _paramiko_errors()) as exc:
            self._drop()
            reason = self._clean(str(exc)) or type(exc).__name__
            raise RemoteError(self.host, step, f"connection lost: {reason}") from None
        return self._finish(full, code, out.decode(errors="replace"), err.decode(errors="replace"),
                            started, step=step, check=check)

    def put(self, path: str, content: str | bytes, *, step: str, mode: int = 0o644) -> None:
        data = content.encode() if isinstance(content, str) else content
        target = PurePosixPath(path)
        tmp = str(target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"))
        self.run(sh("mkdir", "-p", str(target.parent)), step=step)
        try:
            sftp = self.connect().open_sftp()
            try:
                with sftp.open(tmp, "wb") as fh:
                    fh.write(data)
                sftp.chmod(tmp, mode)
                sftp.posix_rename(tmp, path)
            finally:
                sftp.close()
        except OSError as exc:
            self.run(sh("rm", "-f", tmp), step=step, check=False)
            raise RemoteError(self.host, step, f"cannot write {path}: {exc}") from None
        except (EOFError, _paramiko_errors()) as exc:
            self._drop()
            raise RemoteError(self.host, step, f"connection lost while writing {path}: {exc}") from None

    def get(self, path: str, *, step: str) -> bytes | None:
        try:
            sftp = self.connect().open_sftp()
            try:
                with sftp.open(path, "rb") as fh:
                    return bytes(fh.read())
            finally:
                sftp.close()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RemoteError(self.host, step, f"cannot read {path}: {exc}") from None
        except (EOFError, _paramiko_errors()) as exc:
            self._drop()
            raise RemoteError(self.host, step, f"connection lost while reading {path}: {exc}") from None

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        self._drop()


def _paramiko_errors() -> type[Exception]:
    import paramiko

    return paramiko.SSHException


# sshd may send a command's exit status before the last of its output (what is still in the pipe
# when the child is reaped): after the status, output is read on until the end-of-file, for at most
# this long (a command that leaves a daemon holding its stdout never sends one).
EOF_GRACE_S = 1.0


def _drain(channel: paramiko.Channel, limit: float, started: float) -> tuple[bytes, bytes]:
    out, err = bytearray(), bytearray()
    exited_at: float | None = None
    while True:
        now = time.monotonic()
        if now - started > limit:
            raise TimeoutError
        progressed = False
        while channel.recv_ready():
            out += channel.recv(65536)
            progressed = True
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)
            progressed = True
        pending = channel.recv_ready() or channel.recv_stderr_ready()
        if channel.closed and not pending:
            break
        if channel.exit_status_ready() and not pending:
            exited_at = now if exited_at is None else exited_at
            if channel.eof_received or now - exited_at >= EOF_GRACE_S:
                break
        if not progressed:
            time.sleep(0.005)
    return bytes(out), bytes(err)


class _UnknownHostKey(Exception):
    def __init__(self, key_type: str, key_base64: str) -> None:
        super().__init__(key_type)
        self.key_type = key_type
        self.fingerprint = fingerprint(key_base64)


def _reject_showing_key() -> paramiko.MissingHostKeyPolicy:
    """paramiko's RejectPolicy, keeping the key it refused so the message can show its fingerprint."""
    import paramiko

    class RejectShowingKey(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
            raise _UnknownHostKey(key.get_name(), key.get_base64())

    return RejectShowingKey()


def ssh_target(topology: Topology, container: Container) -> SshTarget:
    ssh = topology.ssh
    return SshTarget(address=container.ip, port=ssh.port, user=ssh.user,
                     alias=container.settings.ssh_alias or container.name,
                     identity_file=ssh.identity_file, known_hosts=ssh.known_hosts,
                     connect_timeout=ssh.connect_timeout, ssh_config=ssh.config_file)


def connect(topology: Topology, container: Container,
            secrets: Iterable[Sensitive] = ()) -> SshExecutor:
    """An executor for one host of the estate (not yet connected: it connects on first use)."""
    return SshExecutor(host=container.label, secrets=as_secret_set(secrets),
                       command_timeout=topology.ssh.command_timeout,
                       target=ssh_target(topology, container))


def known_hosts_line(address: str, port: int, key_type: str, key_base64: str) -> str:
    host = address if port == 22 else f"[{address}]:{port}"
    return f"{host} {key_type} {key_base64}"


def trust_host(known_hosts: str, address: str, port: int, public_key_line: str) -> bool:
    """Pin a host key read out of band (`ssh-ed25519 AAAA...`); returns False if already pinned.

    Refuses (HostKeyError) when a different key is already pinned for that host.
    """
    key_type, key_b64 = public_key_line.split()[:2]
    path = Path(os.path.expanduser(known_hosts))
    host = address if port == 22 else f"[{address}]:{port}"
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and host in parts[0].split(",") and parts[1] == key_type:
            if parts[2] == key_b64:
                return False
            raise HostKeyError(host, "trust", f"a different {key_type} key is already pinned in {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(known_hosts_line(address, port, key_type, key_b64) + "\n")
    return True


def fingerprint(key_base64: str) -> str:
    """OpenSSH's SHA256 fingerprint, as `ssh-keygen -lf` prints it."""
    import base64
    import hashlib

    digest = hashlib.sha256(base64.b64decode(key_base64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def fetch_host_key(target: SshTarget) -> tuple[str, str]:
    """The host's public key (type, base64), read from the SSH handshake without logging in.

    Nothing is trusted here: the caller shows the fingerprint and pins it only once a person (or
    a fingerprint given out of band) confirms it.
    """
    import paramiko

    hostname, port, _, _ = resolve_target(target)
    try:
        sock = socket.create_connection((hostname, port), timeout=target.connect_timeout)
    except OSError as exc:
        raise RemoteError(f"{hostname}:{port}", "read host key", exc.strerror or str(exc)) from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=target.connect_timeout)
        key = transport.get_remote_server_key()
        return key.get_name(), key.get_base64()
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise RemoteError(f"{hostname}:{port}", "read host key", str(exc)) from None
    finally:
        transport.close()


def run_all(executor: Executor, commands: Sequence[tuple[str, str]]) -> list[CommandResult]:
    """Run (step, command) pairs in order, stopping at the first failure."""
    return [executor.run(cmd, step=step) for step, cmd in commands]
