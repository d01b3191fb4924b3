"""The executor protocol over ONE OpenSSH connection and ONE remote shell for a whole command."""

from __future__ import annotations

import contextlib
import math
import os
import re
import select
import shlex
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

from bluegreen.hosts.executor import CommandResult
from bluegreen.model.errors import ConfigError, RemoteError
from bluegreen.model.sensitive import Sensitive, as_secret_set, redact
from bluegreen.model.topology import Container, Topology
from bluegreen.render.shell import atomic_write_command, env_prefix, read_file_command

# --------------------------------------------------------------------------- OpenSSH executor


def _ssh_aliases(config: Path) -> set[str]:
    """Literal `Host` names of ~/.ssh/config (patterns are OpenSSH's own business)."""
    try:
        text = config.read_text()
    except OSError:
        return set()
    names: set[str] = set()
    for line in text.splitlines():
        m = re.match(r"^\s*Host\s+(.+)$", line, re.I)
        if m:
            names.update(n for n in m.group(1).split() if not any(ch in n for ch in "*?!"))
    return names


def ssh_argv(t: Topology, host: Container) -> list[str]:
    """The OpenSSH client's options for one estate host (pure): host key checked against the
    tool's known_hosts, never added. A host whose alias (`sshAlias`, else its name) the stack's
    `ssh.configFile` names is reached through that entry (HostName, Port, User, IdentityFile), as
    every other connection is (`executor.resolve_target`); the key is then checked under the
    address and port the alias resolves to, which is where `bluegreen trust` pins it."""
    s = t.ssh
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={os.path.expanduser(s.known_hosts)}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no",
            "-o", f"ConnectTimeout={max(1, math.ceil(s.connect_timeout))}",
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR",
            "-T"]
    config = Path(os.path.expanduser(s.config_file))
    alias = host.settings.ssh_alias or host.name
    if alias in _ssh_aliases(config):
        return [*argv, "-F", str(config), alias]
    if config.is_file():
        # Another user's settings for this address (a `Host 10.92.3.22` entry) still apply.
        argv += ["-F", str(config)]
    argv += ["-p", str(s.port), "-l", s.user]
    if s.identity_file:
        argv += ["-i", os.path.expanduser(s.identity_file), "-o", "IdentitiesOnly=yes"]
    return [*argv, host.ip]


class OpenSshExecutor:
    """The executor protocol over ONE OpenSSH connection and ONE remote shell for the whole command.

    The remote `bash` reads scripts from our pipe; each call is a script whose exit code and
    stderr come back after a marker line that carries a random token. A call is then as cheap as
    the work it does: no new connection, no new session, no key exchange.
    """

    def __init__(self, t: Topology, host: Container, *, command_timeout: float | None = None,
                 secrets: Iterable[Sensitive] = ()) -> None:
        if shutil.which("ssh") is None:
            raise ConfigError("the OpenSSH client (`ssh`) is not installed; install openssh-client")
        self.host = host.label
        self.command_timeout = command_timeout or t.ssh.command_timeout
        self.secrets = as_secret_set(secrets)  # shared with the estate: it keeps growing
        self._mutex = threading.Lock()  # one script at a time down the one session
        self._argv = ssh_argv(t, host)
        self._marker = f"--bluegreen-{uuid.uuid4().hex}--"
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""

    def _session(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            # A session of its own: Ctrl-C at the terminal must not kill a flip half way.
            self._proc = subprocess.Popen(
                [*self._argv, "exec bash --noprofile --norc"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
            assert self._proc.stdin is not None
            self._proc.stdin.write(b'__e=$(mktemp) || exit 99; trap \'rm -f "$__e"\' EXIT\n')
            self._proc.stdin.flush()
        return self._proc

    def start(self) -> None:
        """Begin connecting now (the login proceeds while the caller does other work)."""
        with self._mutex, contextlib.suppress(OSError):
            self._session()

    def _read_until(self, proc: subprocess.Popen[bytes], needle: bytes, deadline: float, step: str) -> bytes:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while needle not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self._kill()
                raise RemoteError(self.host, step, "timed out")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                detail = self._ssh_error()
                self._kill()
                raise RemoteError(self.host, step if self._buffer or detail else "connect",
                                  f"connection lost: {detail or 'ssh exited'}")
            self._buffer += chunk
        head, _, self._buffer = self._buffer.partition(needle)
        return head

    def _ssh_error(self) -> str:
        proc = self._proc
        if proc is None or proc.stderr is None:
            return ""
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        text = proc.stderr.read().decode(errors="replace").strip() if proc.poll() is not None else ""
        if "host key" in text.lower() or "REMOTE HOST IDENTIFICATION" in text:
            text += " (refusing: check the key, then pin it with `bluegreen trust`)"
        return text[-1000:]

    def run(self, command: str, *, step: str, check: bool = True, timeout: float | None = None,
            input: str | bytes | None = None, env: Mapping[str, str] | None = None) -> CommandResult:
        with self._mutex:
            try:
                return self._run(command, step=step, check=check, timeout=timeout, input=input, env=env)
            except RemoteError as exc:
                raise type(exc)(exc.host, exc.step, redact(exc.detail, self.secrets)) from None

    def _run(self, command: str, *, step: str, check: bool, timeout: float | None,
             input: str | bytes | None, env: Mapping[str, str] | None) -> CommandResult:
        proc = self._session()
        full = env_prefix(env) + command
        data = input.decode(errors="replace") if isinstance(input, bytes) else input
        feed = f"printf %s {shlex.quote(data)} | " if data is not None else ""
        stdin = "" if data is not None else " </dev/null"
        mark = self._marker
        script = (f"{feed}bash -c {shlex.quote(full)}{stdin} 2>\"$__e\"; __rc=$?; "
                  f"printf '\\n%s %s\\n' {mark} \"$__rc\"; cat \"$__e\"; printf '\\n%s\\n' {mark}-end\n")
        started = time.monotonic()
        deadline = started + (timeout or self.command_timeout)
        assert proc.stdin is not None
        try:
            proc.stdin.write(script.encode())
            proc.stdin.flush()
        except OSError:
            detail = self._ssh_error()
            self._kill()
            raise RemoteError(self.host, "connect", f"connection lost: {detail or 'ssh exited'}") from None
        out = self._read_until(proc, f"\n{mark} ".encode(), deadline, step)
        code_line = self._read_until(proc, b"\n", deadline, step)
        err = self._read_until(proc, f"\n{mark}-end\n".encode(), deadline, step)
        code = int(code_line.strip() or b"1")
        result = CommandResult(redact(full, self.secrets), code, out.decode(errors="replace"),
                               err.decode(errors="replace"), time.monotonic() - started)
        if check and code != 0:
            raise RemoteError(self.host, step, f"exit code {code}: "
                              f"{(result.stderr.strip() or result.stdout.strip() or 'no output')[-2000:]}")
        return result

    def put(self, path: str, content: str | bytes, *, step: str, mode: int = 0o644) -> None:
        self.run(atomic_write_command(path, mode), step=step, input=content)

    def get(self, path: str, *, step: str) -> bytes | None:
        result = self.run(read_file_command(path), step=step, check=False)
        if result.exit_code == 3:
            return None
        if result.exit_code != 0:
            raise RemoteError(self.host, step, f"cannot read {path}: {result.stderr.strip()[-500:]}")
        return result.stdout.encode()

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()  # our own child, by its handle
        if proc is not None:
            proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()

    def close(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.write(b"exit 0\n")
                proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._kill()

    def __enter__(self) -> OpenSshExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
