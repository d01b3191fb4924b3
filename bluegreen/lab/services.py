"""The lab's local daemons (sshd per host, PostgreSQL, any spawned helper), each stopped by its PID.

A pid is only trusted together with what we expect its command line to contain: a pid file that
outlived its process may name a recycled pid, and signalling that would hit an unrelated process.
Pid files come in two formats: our own JSON `{"pid": N, "cmd": "<substring of its cmdline>"}`,
and the plain "first line is the pid" files that sshd (PidFile), haproxy (-p), PM2 (pm2.pid)
and PostgreSQL (postmaster.pid) write themselves; for those the caller names the expectation.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bluegreen.model.errors import BlueGreenError

log = logging.getLogger("bluegreen.lab")

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
POSTGRES_USER = "postgres"
HOST_KEY_NAME = "ssh_host_ed25519_key"


class LabError(BlueGreenError):
    """A lab process could not be started, reached or stopped."""


def log_tail(path: Path | None, lines: int = 20) -> str:
    """The end of a log file, for error messages ("" if there is none)."""
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _with_tail(message: str, log_file: Path | None) -> str:
    tail = log_tail(log_file)
    return f"{message}\n--- last lines of {log_file} ---\n{tail}" if tail else message


def _cmdline(pid: int) -> str | None:
    """The command line of a live (non-zombie) process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # The state letter follows the parenthesised comm, which may itself contain spaces or ')'.
    state = stat[stat.rfind(")") + 2:stat.rfind(")") + 3]
    if state in ("Z", "X"):
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


@dataclass
class ManagedProcess:
    """A daemon known by its pid file. `expect` is required for plain pid files (see module doc).

    `expect_env` adds environment variables the process must have been started with: some
    daemons retitle themselves into a truncated command line (PM2's "God Daemon (/long/pa"),
    and their environment is what tells two instances apart.
    """

    name: str
    pid_file: Path
    expect: str | None = None
    stop_signal: int = signal.SIGTERM
    expect_env: Mapping[str, str] | None = None

    def _read(self) -> tuple[int, str | None] | None:
        try:
            text = self.pid_file.read_text()
        except OSError:
            return None
        text = text.strip()
        if not text:
            return None
        if text.startswith("{"):
            try:
                data = json.loads(text)
                return int(data["pid"]), str(data["cmd"]) if data.get("cmd") else self.expect
            except (ValueError, KeyError, TypeError):
                return None
        first = text.splitlines()[0].strip()
        return (int(first), self.expect) if first.isdigit() else None

    def pid(self) -> int | None:
        """The pid of the running process, or None when it is not running (or is not ours)."""
        entry = self._read()
        if entry is None:
            return None
        pid, expected = entry
        if pid <= 1:
            return None
        cmdline = _cmdline(pid)
        if cmdline is None:
            _reap(pid)
            return None
        if expected is None:
            # Nothing to check against: never treat an unverifiable pid as ours.
            log.warning("%s: pid file %s gives no command to verify pid %d against; ignoring it",
                        self.name, self.pid_file, pid)
            return None
        if expected not in cmdline:
            return None
        if self.expect_env:
            environ = _environ(pid)
            if any(environ.get(k) != v for k, v in self.expect_env.items()):
                return None
        return pid

    def alive(self) -> bool:
        return self.pid() is not None

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the process (stop_signal, then SIGKILL after `timeout`); True if it was running."""
        pid = self.pid()
        if pid is None:
            self._forget()
            return False
        log.info("stopping %s (pid %d)", self.name, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, self.stop_signal)
        if not self._wait_gone(pid, timeout):
            log.warning("%s (pid %d) did not stop within %gs; killing it", self.name, pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not self._wait_gone(pid, 5.0):
                raise LabError(f"{self.name} (pid {pid}) survived SIGKILL")
        self._forget()
        return True

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            _reap(pid)
            if _cmdline(pid) is None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _forget(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()


def write_pid_file(pid_file: Path, pid: int, cmd: str) -> None:
    """Record a pid with the substring its command line must contain (atomic)."""
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = pid_file.with_name(f".{pid_file.name}.tmp")
    tmp.write_text(json.dumps({"pid": pid, "cmd": cmd}) + "\n")
    os.replace(tmp, pid_file)


def servers_get_default_signals() -> None:
    """Started in the background (nohup, a CI job), a process ignores SIGINT and so would every
    server it starts: PM2 stops an app with SIGINT, PostgreSQL shuts down fast on it. A Python
    handler instead of "ignored" is reset to the default on exec, so the servers get it back."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        with contextlib.suppress(ValueError):  # not the main thread: nothing to change from here
            signal.signal(signal.SIGINT, signal.default_int_handler)


def spawn(name: str, argv: Sequence[str], *, pid_file: Path, log_file: Path, expect: str | None = None,
          env: Mapping[str, str] | None = None, cwd: Path | None = None) -> ManagedProcess:
    """Start a foreground program detached (own session, output to `log_file`) and record its pid.

    `expect` is the part of its command line that identifies this instance (default: argv joined),
    e.g. a config path when several instances of one program run side by side.
    """
    process = ManagedProcess(name, pid_file)
    if process.alive():
        return process
    log_file.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    with open(log_file, "ab") as out:
        try:
            child = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                     env=full_env, cwd=cwd, start_new_session=True)
        except OSError as exc:
            raise LabError(f"cannot start {name} ({argv[0]}): {exc.strerror}") from None
    write_pid_file(pid_file, child.pid, expect or " ".join(argv))
    # Until the child has exec'd, /proc shows the parent's command line and `alive()` is False:
    # wait for the exec (or the exit), so callers never take a starting process for a dead one.
    deadline = time.monotonic() + 30.0  # seconds only on a machine under heavy load
    while not process.alive() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    # The Popen object is dropped on purpose: the pid file, not this interpreter, owns the process.
    # (Only now: a returncode set before the loop made poll() answer at once, and the wait void.)
    if child.returncode is None:
        child.returncode = 0  # silences "subprocess still running" at interpreter exit
    return process


def wait_port(address: str, port: int, timeout: float, *, what: str | None = None,
              log_file: Path | None = None, process: ManagedProcess | None = None) -> None:
    """Wait until `address:port` accepts TCP connections; LabError (with the log tail) if it does not."""
    label = what or f"{address}:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=1.0):
                return
        except OSError as exc:
            last = exc.strerror or str(exc)
        if process is not None and not process.alive():
            raise LabError(_with_tail(f"{label} exited before listening on {address}:{port}", log_file))
        if time.monotonic() >= deadline:
            raise LabError(_with_tail(
                f"{label} did not come up on {address}:{port} within {timeout:g}s ({last})", log_file))
        time.sleep(0.05)


def _run(argv: Sequence[str], what: str, *, log_file: Path | None = None,
         env: Mapping[str, str] | None = None, timeout: float = 60.0) -> str:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})}, errors="replace")
    except FileNotFoundError:
        raise LabError(f"{what}: {argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise LabError(_with_tail(f"{what}: timed out after {timeout:g}s", log_file)) from None
    if proc.returncode != 0:
        output = (proc.stderr.strip() or proc.stdout.strip() or "no output")[-2000:]
        raise LabError(_with_tail(f"{what} failed (exit code {proc.returncode}): {output}", log_file))
    return proc.stdout


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise LabError(f"{what} needs root (it runs daemons as other users on 127.x addresses)")


# --------------------------------------------------------------------------- sshd


def ensure_host_key(state_dir: Path, comment: str) -> Path:
    """The host's ed25519 key, generated once: regenerating it would invalidate pinned known_hosts."""
    key = state_dir / HOST_KEY_NAME
    if not key.exists() or not key.with_suffix(".pub").exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        for stale in (key, key.with_suffix(".pub")):
            stale.unlink(missing_ok=True)
        _run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
             f"generating the host key of {comment}")
    return key


def host_public_key(state_dir: Path) -> str:
    """`ssh-ed25519 AAAA...` of the host key in `state_dir` (without its comment)."""
    path = state_dir / f"{HOST_KEY_NAME}.pub"
    try:
        fields = path.read_text().split()
    except OSError as exc:
        raise LabError(f"cannot read the host key {path}: {exc.strerror}") from None
    if len(fields) < 2:
        raise LabError(f"{path} is not an OpenSSH public key")
    return f"{fields[0]} {fields[1]}"


def render_sshd_config(*, address: str, port: int, host_key: Path, pid_file: Path,
                       authorized_keys: Path, session_env: Mapping[str, str] | None = None) -> str:
    """sshd_config for one lab host: key-only root login on its own address; `session_env` is set
    in every session (sshd's SetEnv)."""
    setenv = " ".join(f'"{name}={value}"' for name, value in (session_env or {}).items())
    return "\n".join([
        f"ListenAddress {address}:{port}",
        f"HostKey {host_key}",
        f"PidFile {pid_file}",
        f"AuthorizedKeysFile {authorized_keys}",
        "PubkeyAuthentication yes",
        "AuthenticationMethods publickey",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        # Keys and the config live under /var/tmp, which sshd's ownership checks would reject.
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "PermitUserEnvironment no",
        "X11Forwarding no",
        # Tests and deploys open many connections to one host at once.
        "MaxStartups 100:30:200",
        "MaxSessions 64",
        "Subsystem sftp internal-sftp",
        *([f"SetEnv {setenv}"] if setenv else []),
        "LogLevel INFO",
        "",
    ])


def host_session_env(home: Path) -> dict[str, str]:
    """A lab host's root sessions: HOME is the host's own /root, not this machine's (whose shell
    start-up files, pyenv's among them, would cost every remote command ~80 ms and are not the
    host's); npm keeps this machine's cache, which setup warmed, so installs stay offline."""
    npm_cache = os.environ.get("NPM_CONFIG_CACHE") or str(Path.home() / ".npm")
    return {"HOME": str(home), "NPM_CONFIG_CACHE": npm_cache}


def sshd_process(name: str, state_dir: Path, pid_file: Path | None = None) -> ManagedProcess:
    """The sshd of one lab host (running or not), as `start_sshd` starts it."""
    # The listener retitles itself "sshd: /usr/sbin/sshd -f <config> [listener] ...": the config
    # path tells this host's sshd apart from every other one.
    return ManagedProcess(f"sshd {name}", pid_file or state_dir / "sshd.pid",
                          expect=f"{SSHD} -f {state_dir / 'sshd_config'}")


def start_sshd(*, name: str, address: str, port: int, state_dir: Path, authorized_keys: Path,
               log_file: Path, pid_file: Path | None = None, timeout: float = 15.0,
               home: Path | None = None) -> ManagedProcess:
    """An sshd for one lab host, reusing a running one (reloaded if its config changed); `home`:
    the host's /root, the sessions' HOME (see `host_session_env`)."""
    _require_root(f"sshd for {name}")
    state_dir.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_path = pid_file or state_dir / "sshd.pid"
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    host_key = ensure_host_key(state_dir, name)
    config = state_dir / "sshd_config"
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
    text = render_sshd_config(address=address, port=port, host_key=host_key, pid_file=pid_path,
                              authorized_keys=authorized_keys,
                              session_env=host_session_env(home) if home is not None else None)
    changed = not config.exists() or config.read_text() != text
    if changed:
        config.write_text(text)
    process = sshd_process(name, state_dir, pid_path)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
    _run([SSHD, "-t", "-f", str(config)], f"checking the sshd config of {name}")
    pid = process.pid()
    if pid is not None:
        if changed:
            log.info("sshd %s: config changed, reloading (pid %d)", name, pid)
            os.kill(pid, signal.SIGHUP)
        wait_port(address, port, timeout, what=f"sshd of {name}", log_file=log_file, process=process)
        return process
    log.info("starting sshd %s on %s:%d", name, address, port)
    _run([SSHD, "-f", str(config), "-E", str(log_file)], f"starting sshd for {name}", log_file=log_file)
    _wait_for(process, timeout, f"sshd of {name}", log_file)
    wait_port(address, port, timeout, what=f"sshd of {name}", log_file=log_file, process=process)
    return process


def _wait_for(process: ManagedProcess, timeout: float, what: str, log_file: Path) -> None:
    deadline = time.monotonic() + timeout
    while not process.alive():
        if time.monotonic() >= deadline:
            raise LabError(_with_tail(f"{what} did not start within {timeout:g}s", log_file))
        time.sleep(0.05)


# --------------------------------------------------------------------------- PostgreSQL

BASE_PG_HBA = """\
# Lab base: the postgres OS user over the local socket only. The estate's provider adds the
# app hosts (scram-sha-256 over TCP) when it applies the database configuration.
local   all             all                                     trust
"""


def _chown_postgres(*paths: Path) -> None:
    for path in paths:
        shutil.chown(path, POSTGRES_USER, POSTGRES_USER)


def _check_reachable_by_postgres(path: Path) -> None:
    """initdb's "Permission denied" does not say which ancestor is closed; this does."""
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if not mode & 0o001 and parent.owner() != POSTGRES_USER:
            raise LabError(f"{path}: the {POSTGRES_USER} user cannot enter {parent} "
                           f"(mode {mode & 0o777:o}); use a data directory under a world-searchable path")


def _as_postgres(argv: Sequence[str]) -> list[str]:
    return ["runuser", "-u", POSTGRES_USER, "--", *argv]


def start_postgres(*, name: str, data_dir: Path, address: str, port: int, socket_dir: Path,
                   log_file: Path, hba_file: Path | None = None, pid_file: Path | None = None,
                   timeout: float = 60.0) -> ManagedProcess:
    """PostgreSQL 15 on `address:port`, initialised once; reuses a running server.

    `hba_file` (default `<data_dir>/pg_hba.conf`) is seeded with a local-socket-only base when
    missing and never overwritten: the provider owns its content afterwards. `pid_file` (default
    postmaster.pid) receives our JSON pid record so the lab can list it with its other processes.
    """
    _require_root(f"PostgreSQL for {name}")
    # Stop with SIGINT (fast shutdown): SIGTERM would wait for every client to disconnect.
    postmaster = ManagedProcess(f"postgres {name}", data_dir / "postmaster.pid",
                                expect=str(data_dir), stop_signal=signal.SIGINT)
    process = (ManagedProcess(f"postgres {name}", pid_file, stop_signal=signal.SIGINT)
               if pid_file else postmaster)
    hba = hba_file or data_dir / "pg_hba.conf"
    for directory in (data_dir, socket_dir, log_file.parent, hba.parent):
        directory.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    _check_reachable_by_postgres(data_dir)
    if not log_file.exists():
        log_file.touch()
    _chown_postgres(data_dir, socket_dir, log_file)
    if not (data_dir / "PG_VERSION").exists():
        log.info("initialising PostgreSQL for %s in %s", name, data_dir)
        _run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data_dir), "-U", POSTGRES_USER,
                           "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"]),
             f"initdb for {name}")
    if not hba.exists():
        hba.write_text(BASE_PG_HBA)
        _chown_postgres(hba)
    running = postmaster.pid()
    if running is None:
        options = " ".join([
            f"-p {port}", f"-k {socket_dir}", f"-c listen_addresses={address}",
            f"-c hba_file={hba}", "-c fsync=off", "-c full_page_writes=off",
            "-c synchronous_commit=off",
        ])
        log.info("starting PostgreSQL %s on %s:%d", name, address, port)
        _run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data_dir), "-l", str(log_file), "-w",
                           "-t", str(int(timeout)), "-o", options, "start"]),
             f"starting PostgreSQL for {name}", log_file=log_file, timeout=timeout + 10)
        running = postmaster.pid()
        if running is None:
            raise LabError(_with_tail(f"PostgreSQL for {name} exited right after starting", log_file))
    wait_port(address, port, timeout, what=f"PostgreSQL of {name}", log_file=log_file, process=postmaster)
    if pid_file is not None:
        write_pid_file(pid_file, running, str(data_dir))
    return process
