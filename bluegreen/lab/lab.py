"""The whole estate of stack `lab` on this machine, brought up and down as one.

Each container is a loopback address with its own sshd and its own root directory; Proxmox is
fakepve; the database container runs a real PostgreSQL. After the processes are up, the estate's
configuration is applied exactly as `pulumi up` would (`ops.configure.apply_estate`), which also
starts HAProxy and writes the PM2 ecosystems. Every process is stopped by its PID; the lab's
data stays on disk between `down` and `up` so the next `up` is fast.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bluegreen.hosts import haproxy_cli as hr
from bluegreen.hosts.executor import Executor, SshExecutor, connect, known_hosts_line, trust_host
from bluegreen.hosts.hostconfig import pm2_home
from bluegreen.lab import found as here
from bluegreen.lab.estate_files import remove_estate_files
from bluegreen.lab.monitoring import start_monitoring
from bluegreen.lab.offsite import start_backup_host
from bluegreen.lab.paths import (
    LAB_DIR,
    LEGACY_MARKER,
    PM2,
    PROJECT_DIR,
    LabInfo,
    LabPaths,
    ProcessStatus,
    check_loopback_only,
)
from bluegreen.lab.pve import start_fakepve
from bluegreen.lab.repo import build_next_refs, build_sample_repo
from bluegreen.lab.services import (
    SSH_KEYGEN,
    LabError,
    ManagedProcess,
    host_public_key,
    sshd_process,
    start_postgres,
    start_sshd,
)
from bluegreen.lab.timers import start_timers
from bluegreen.lab.tls import ensure_lab_tls
from bluegreen.model.errors import ConfigError, HostKeyError
from bluegreen.model.secrets import ensure_secret_files
from bluegreen.model.sensitive import Sensitive
from bluegreen.model.stackfile import adopted_stack_file, load_stack, set_active_color_in_file
from bluegreen.model.topology import Container, Topology
from bluegreen.ops.configure import apply_estate
from bluegreen.render.commands import AppPaths, parse_current, pm2_jlist, pm2_reload, read_current

log = logging.getLogger("bluegreen.lab")


class Lab:
    """up/down/status of the local lab; safe to call from several processes (a file lock)."""

    def __init__(self, project_dir: Path | None = None, stack: str = "lab", lab_dir: Path = LAB_DIR) -> None:
        self.project_dir = Path(project_dir or PROJECT_DIR)
        self.topology = load_stack(self.project_dir, stack)
        self.paths = LabPaths(lab_dir)
        self._lock_depth = 0
        check_loopback_only(self.topology)
        self._check_stack_matches_lab_dir()

    def _check_stack_matches_lab_dir(self) -> None:
        t, p = self.topology, self.paths
        expected = {
            "ssh.identityFile": (t.ssh.identity_file, p.identity),
            "ssh.knownHosts": (t.ssh.known_hosts, p.known_hosts),
            "app.repo": (t.app.repo, p.sample_repo),
        }
        wrong = [f"{key} is {actual!r}, expected {str(want)!r}" for key, (actual, want) in expected.items()
                 if actual is None or Path(actual) != want]
        wrong += [f"container {c.vmid} has root {c.root!r}, expected a directory under {p.root}"
                  for c in t.containers if not Path(c.root).is_relative_to(p.root)]
        if wrong:
            raise ConfigError(f"stack {t.stack!r} does not match the lab in {p.root}: " + "; ".join(wrong))

    # ------------------------------------------------------------------ the processes

    def sshd(self, host: Container) -> ManagedProcess:
        return sshd_process(host.name, Path(host.path("/etc/ssh")), self.paths.pids / f"sshd-{host.vmid}.pid")

    def postgres(self) -> ManagedProcess:
        return ManagedProcess(f"postgres {self.topology.database_host.name}",
                              self.paths.pids / "postgres.pid", stop_signal=signal.SIGINT)

    def haproxy(self) -> ManagedProcess:
        lb = self.topology.load_balancer
        return ManagedProcess(f"haproxy {lb.name}", Path(lb.path(self.topology.haproxy.pid_file)),
                              expect=lb.path(self.topology.haproxy.config_path))

    def pm2_daemons(self) -> list[tuple[Path, ManagedProcess]]:
        result = []
        for color, host in sorted(self.topology.app_hosts.items()):
            home = Path(pm2_home(self.topology, host))
            result.append((home, ManagedProcess(f"pm2 {color} ({host.name})", home / "pm2.pid",
                                                expect="God Daemon", expect_env={"PM2_HOME": str(home)})))
        return result

    def _registry(self) -> list[dict[str, Any]]:
        try:
            entries = json.loads(self.paths.registry.read_text())
        except FileNotFoundError:
            return []
        except ValueError as exc:
            raise LabError(f"{self.paths.registry} is corrupt ({exc}); stop its processes by hand") from None
        return list(entries)

    def registered(self) -> list[ManagedProcess]:
        return [ManagedProcess(e["name"], Path(e["pid_file"]), e.get("expect"),
                               int(e.get("stop_signal", signal.SIGTERM)), e.get("expect_env"))
                for e in self._registry()]

    def _register(self, process: ManagedProcess, listen: str | None) -> None:
        entries = [e for e in self._registry() if e["name"] != process.name]
        entries.append({"name": process.name, "pid_file": str(process.pid_file), "expect": process.expect,
                        "stop_signal": int(process.stop_signal),
                        "expect_env": dict(process.expect_env) if process.expect_env else None,
                        "listen": listen})
        tmp = self.paths.registry.with_suffix(".tmp")
        tmp.write_text(json.dumps(entries, indent=2) + "\n")
        os.replace(tmp, self.paths.registry)

    def _listen(self) -> dict[str, str]:
        t = self.topology
        result = {self.sshd(c).name: f"{c.ip}:{t.ssh.port}" for c in t.containers}
        result[self.postgres().name] = f"{t.database_host.ip}:{t.database.port}"
        lb = t.load_balancer.ip
        result[self.haproxy().name] = (f"{lb}:{t.haproxy.public_port},{t.haproxy.preview_port},"
                                       f"{t.haproxy.stats_port}")
        if t.haproxy.tls:
            result[self.haproxy().name] = (f"{lb}:{t.haproxy.public_port},{t.haproxy.https_port} "
                                           f"{t.private_ip}:{t.haproxy.preview_port},{t.haproxy.stats_port}")
        result.update({e["name"]: e["listen"] for e in self._registry() if e.get("listen")})
        return result

    def processes(self) -> list[ManagedProcess]:
        """Every process the lab may have started, in the order they are stopped."""
        return [*(p for _, p in self.pm2_daemons()), self.haproxy(), self.postgres(),
                *(self.sshd(c) for c in self.topology.containers), *self.registered()]

    def status(self) -> list[ProcessStatus]:
        listen = self._listen()
        result = []
        for p in self.processes():
            pid = p.pid()
            result.append(ProcessStatus(p.name, pid, pid is not None, str(p.pid_file), listen.get(p.name)))
        return result

    def is_running(self) -> bool:
        """True when every process `up` starts itself (not PM2, which only deploys start) runs."""
        core = [self.haproxy(), self.postgres(), *(self.sshd(c) for c in self.topology.containers),
                *self.registered()]
        if (self.paths.root / LEGACY_MARKER).exists():
            return False  # the hand-built legacy estate runs here, not the lab's own
        return bool(self.registered()) and all(p.alive() for p in core)

    # ------------------------------------------------------------------ up

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lab's lock: no other process brings it up, down or into a session meanwhile.

        Re-entrant within one Lab object, so `up()`/`down()` can be called inside it (a test
        that takes the lab down and up again without another session slipping in between).
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.paths.root.chmod(0o755)  # the postgres user must be able to reach its data dir
        with open(self.paths.lock, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(fh, fcntl.LOCK_UN)

    def up(self) -> LabInfo:
        if os.geteuid() != 0:
            raise LabError("the lab needs root: it runs an sshd per host, PostgreSQL and HAProxy")
        with self.exclusive():
            if not self._live_leases():
                # Brought up by hand: no test session may stop it when it ends.
                self.paths.started_by_session.unlink(missing_ok=True)
            return self._up()

    def found(self) -> str:
        """Which estate the lab's directory holds now (`found.NEW`, `OWN`, `LEGACY`, `ADOPTED`)."""
        return here.what_is_here(self.paths.root, LEGACY_MARKER,
                                 adopted_stack_file(self.project_dir, self.topology.stack), self.paths.known_hosts)

    def reset(self) -> LabInfo:
        """Whatever the lab is now (the legacy estate, adopted or not, half-way through a rehearsal,
        after `lose-node`, after the demo), a new lab estate: its processes stopped by PID, the
        estate's files, data, dumps, declared colour and adopted stack removed, then `up`. The
        lab's keys, CA and secrets stay, so nothing that trusts them has to learn them again."""
        if os.geteuid() != 0:
            raise LabError("the lab needs root: it runs an sshd per host, PostgreSQL and HAProxy")
        with self.exclusive():
            found = self.found()
            self.topology = load_stack(self.project_dir, self.topology.stack)
            self.clear_estate()
            return self._up(found=found, reset=True)

    def _up(self, *, found: str | None = None, reset: bool = False) -> LabInfo:
        found = found or self.found()
        # Re-read the stack: a switch since this object was made changed the declared colour, and
        # applying a stale one would flip live traffic back.
        self.topology = load_stack(self.project_dir, self.topology.stack)
        t, p = self.topology, self.paths
        if (p.root / LEGACY_MARKER).exists():
            self.clear_estate()  # the legacy estate goes; the lab's own is built from scratch
            # ... from the stack as the repository has it (an adopted copy went with the estate).
            self.topology = t = load_stack(self.project_dir, t.stack)
        for directory in (p.ssh, p.pve, p.pids, p.logs, p.secrets):
            directory.mkdir(parents=True, exist_ok=True)
        for private in (p.ssh, p.secrets):
            private.chmod(0o700)
        self._ensure_client_key()
        started: list[str] = []
        reused: list[str] = []

        def note(process: ManagedProcess, was_running: bool) -> None:
            (reused if was_running else started).append(process.name)

        for host in t.containers:
            process = self.sshd(host)
            was_running = process.alive()
            state_dir = Path(host.path("/etc/ssh"))
            start_sshd(name=host.name, address=host.ip, port=t.ssh.port, state_dir=state_dir,
                       authorized_keys=p.public_key, log_file=p.logs / f"sshd-{host.vmid}.log",
                       pid_file=process.pid_file, home=Path(host.path("/root")))
            self._pin_host_key(host, host_public_key(state_dir))
            note(process, was_running)

        previous = {q.name: q.alive() for q in self.registered()}
        fakepve = start_fakepve(p.root, t)
        endpoint = urlsplit(t.proxmox.endpoint)
        self._register(fakepve, f"{endpoint.hostname}:{endpoint.port or 8006}")
        note(fakepve, previous.get(fakepve.name, False))

        postgres = self.postgres()
        was_running = postgres.alive()
        self.start_database()
        note(postgres, was_running)
        backup_host = self._start_backup_host()
        if backup_host is not None:
            note(backup_host, previous.get(backup_host.name, False))

        password = self._db_password()
        build_sample_repo(p.sample_repo, self.project_dir / "sample-app")
        build_next_refs(p.sample_repo, self.project_dir / "sample-next")
        ensure_secret_files(t)  # the lab generates the app.env secrets it names (shared/.env: AppEnv)

        ensure_lab_tls(p.root / "tls", t)  # the lab's CA and HAProxy's certificate bundle
        haproxy_was_running = self.haproxy().alive()
        executors: dict[int, Executor] = {c.vmid: self.executor(c) for c in t.containers}
        try:
            serving = self._serving(t, executors)
            applied = apply_estate(serving, password, executor_for=executors)
            releases = self._releases(executors)
            applied += self._resurrect_apps(executors, releases)
        finally:
            for executor in executors.values():
                executor.close()
        haproxy = self.haproxy()
        if not haproxy.alive():
            raise LabError(f"HAProxy is not running after applying the estate: {haproxy.pid_file} names "
                           f"no live process whose command line contains {haproxy.expect}")
        note(haproxy, haproxy_was_running)
        for process, listen in start_monitoring(p.root, t, self.project_dir):  # Prometheus & co.
            self._register(process, listen)
            note(process, previous.get(process.name, False))
        if t.backup is not None:  # the hosts' timers and path units (no systemd here)
            timers = start_timers(p.root, t)
            self._register(timers, None)
            note(timers, previous.get(timers.name, False))
        log.info("lab up: %d started, %d reused", len(started), len(reused))
        summary = here.own_summary(found, releases, serving.active_color, reset=reset)
        return LabInfo(lab_dir=str(p.root), stack=t.stack, public_url=t.public_url,
                       preview_url=t.preview_url, proxmox_endpoint=t.proxmox.endpoint,
                       ssh_hosts=[f"{c.name} {c.ip}:{t.ssh.port}" for c in t.containers],
                       started=started, reused=reused, applied=list(applied),
                       found=summary.found, state=summary.state, next_step=summary.next_step)

    @staticmethod
    def _serving(t: Topology, executors: dict[int, Executor]) -> Topology:
        """The topology with the colour HAProxy already serves, if it serves one: `apply_estate`
        never moves traffic (tests switch in their own copies of the stack file, so the repo's
        declared colour may lag behind a lab that kept running)."""
        import dataclasses

        from bluegreen.hosts.hostconfig import map_live_color, serving_color

        live, _ = serving_color(executors[t.load_balancer.vmid], hr.HaproxyPaths.from_topology(t), None)
        if live is None:
            # HAProxy is not running (the lab was down: a reboot of its hosts). It will come up
            # serving what its map file says, so that is the colour the lab serves.
            with contextlib.suppress(OSError):
                live = map_live_color(Path(t.load_balancer.path(t.haproxy.map_path)).read_text())
        if live is None or live == t.active_color:
            return t
        log.info("the lab serves %s while %s declares %s: kept %s (`bluegreen switch` moves it)",
                 live, t.active_color_file or f"stacks/Pulumi.{t.stack}.yaml", t.active_color, live)
        if t.active_color_file:  # the lab's own declared colour (outside the repo) follows it
            set_active_color_in_file(t.project_dir, t.stack, live)
        return dataclasses.replace(t, active_color=live)

    def start_database(self) -> ManagedProcess:
        """PostgreSQL of the database host (on a real host, its package starts the cluster)."""
        t, db = self.topology, self.topology.database_host
        postgres = self.postgres()
        start_postgres(name=db.name, data_dir=Path(db.path("/var/lib/postgresql/15/main")),
                       address=db.ip, port=t.database.port,
                       socket_dir=Path(db.path("/var/run/postgresql")),
                       hba_file=Path(db.path("/etc/postgresql/15/main/pg_hba.conf")),
                       log_file=self.paths.logs / "postgres.log", pid_file=postgres.pid_file)
        return postgres

    def _start_backup_host(self) -> ManagedProcess | None:
        """The second place for backups (`bluegreen:backup`): a machine of its own, not a container."""
        p = self.paths
        started = start_backup_host(self.topology, lab_root=p.root, pids=p.pids, logs=p.logs,
                                    client_key=p.public_key, known_hosts=p.known_hosts)
        if started is None:
            return None
        process, listen = started
        self._register(process, listen)
        return process

    def apply(self) -> list[str]:
        """The host configuration `pulumi up` applies, through the same providers' logic
        (`apply_estate`), on the running lab as its stack file now declares it; what changed."""
        with self.exclusive():
            return self._apply()

    def _apply(self) -> list[str]:
        # As the stack now is: `bluegreen adopt` may have written it since this object was made.
        self.topology = t = load_stack(self.project_dir, self.topology.stack)
        ensure_secret_files(t)
        self._start_backup_host()  # the off-host configuration reaches it (a legacy lab has none yet)
        executors: dict[int, Executor] = {c.vmid: self.executor(c) for c in t.containers}
        try:
            return apply_estate(t, self._db_password(), executor_for=executors)
        finally:
            for executor in executors.values():
                executor.close()

    def _releases(self, executors: dict[int, Executor]) -> dict[str, str | None]:
        """The release each colour's `current` points at (None: no release yet)."""
        t = self.topology
        found: dict[str, str | None] = {}
        for color, host in t.app_hosts.items():
            current = parse_current(executors[host.vmid].run(read_current(AppPaths.of(t, host)),
                                                             step="read release").stdout)
            found[color] = Path(current.path).name if current.path else None
        return found

    def _resurrect_apps(self, executors: dict[int, Executor], releases: dict[str, str | None]) -> list[str]:
        """A lab restart is a reboot of its hosts. On a real host PM2's start-up unit brings back
        the deployed release's app; the lab has no systemd, so it does the same here: any host
        with a release but no app online gets `pm2 startOrReload` (nothing else is touched)."""
        t = self.topology
        done = []
        for color, host in t.app_hosts.items():
            ex = executors[host.vmid]
            paths = AppPaths.of(t, host)
            if not releases.get(color):
                continue
            listing = ex.run(pm2_jlist(t, paths), step="pm2 jlist", check=False).stdout
            start = listing.find("[")
            try:
                apps = json.loads(listing[start:]) if start >= 0 else []
            except ValueError:
                apps = []
            if any((a.get("pm2_env") or {}).get("status") == "online" for a in apps if isinstance(a, dict)):
                continue
            ex.run(pm2_reload(t, paths), step="start the deployed release under PM2")
            done.append(f"{host.label}: started release {releases[color]} under PM2")
        return done

    def _ensure_client_key(self) -> None:
        p = self.paths
        if p.identity.exists() and p.public_key.exists():
            return
        for stale in (p.identity, p.public_key):
            stale.unlink(missing_ok=True)
        proc = subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "jw-lab-client",
                               "-f", str(p.identity)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise LabError(f"cannot create the lab's client key: {proc.stderr.strip()}")

    def _pin_host_key(self, host: Container, public_key: str) -> None:
        known_hosts = str(self.paths.known_hosts)
        port = self.topology.ssh.port
        try:
            trust_host(known_hosts, host.ip, port, public_key)
        except HostKeyError:
            # The lab owns this file and just generated the key itself: a mismatch means the
            # host's root was wiped, not an attack, so the old pin is replaced.
            log.warning("host key of %s changed (its root was recreated); re-pinning it", host.label)
            marker = known_hosts_line(host.ip, port, "x", "x").split()[0]
            kept = [line for line in self.paths.known_hosts.read_text().splitlines()
                    if line.split()[:1] != [marker]]
            self.paths.known_hosts.write_text("".join(f"{line}\n" for line in kept))
            trust_host(known_hosts, host.ip, port, public_key)

    def _db_password(self) -> Sensitive:
        path = self.paths.db_password
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(24) + "\n")
        path.chmod(0o600)
        value = path.read_text().strip()
        if not value:
            raise LabError(f"{path} is empty; delete it to have a new password generated")
        return Sensitive(value)

    def db_password(self) -> Sensitive:
        return self._db_password()

    def database_url(self, password: Sensitive) -> Sensitive:
        t = self.topology
        return Sensitive(f"postgresql://{t.database.user}:{password.reveal()}@{t.database_host.ip}:"
                         f"{t.database.port}/{t.database.name}")

    def server_actions_key(self) -> Sensitive:
        """The stack secret both colours build with (NEXT_SERVER_ACTIONS_ENCRYPTION_KEY): a form
        rendered by one colour can then be submitted to the other after a switch."""
        path = self.paths.server_actions_key
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        return Sensitive(path.read_text().strip())

    def executor(self, host: Container | str | int) -> SshExecutor:
        """An SSH executor for one lab host (by Container, vmid, name, colour or role)."""
        container = host if isinstance(host, Container) else self.topology.find_host(str(host))
        known = [self._db_password()] if self.paths.db_password.exists() else []
        if self.paths.server_actions_key.exists():
            known.append(self.server_actions_key())
        return connect(self.topology, container, secrets=known)

    # ------------------------------------------------------------------ down

    def down(self) -> list[str]:
        with self.exclusive():
            return self.stop_processes()

    def stop_processes(self) -> list[str]:
        """Stop every process the lab started, by PID (the caller holds the lab's lock)."""
        stopped: list[str] = []
        for home, daemon in self.pm2_daemons():
            pid = daemon.pid()
            if pid is None:
                continue
            stop_pm2(home, daemon)
            stopped.append(f"{daemon.name} (pid {pid})")
        rest = self.processes()[len(self.pm2_daemons()):]
        for process in rest:
            pid = process.pid()
            if process.stop():
                stopped.append(f"{process.name} (pid {pid})")
        log.info("lab down: stopped %d processes", len(stopped))
        return stopped

    def clear_estate(self) -> None:
        """Stop the lab and remove the estate's files and data (either kind): the next up builds
        anew. The lab's keys, CA and token stay."""
        self.stop_processes()
        remove_estate_files(self.topology, self.paths, adopted_stack_file(self.project_dir, self.topology.stack))

    def destroy(self) -> list[str]:
        """down(), then remove every file of the lab."""
        with self.exclusive():
            if self._live_leases():
                raise LabError("test sessions are using the lab right now; destroy it when they are done")
            stopped = self.stop_processes()
            for child in self.paths.root.iterdir():
                if child == self.paths.lock:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        return stopped

    # ------------------------------------------------------------------ shared sessions

    @contextlib.contextmanager
    def session(self) -> Iterator[LabInfo | None]:
        """Use the lab for the duration of a block (a test session), sharing it with others.

        Brings the lab up if it is not running. Stops it at the end only if a session started
        it and no other session is still using it; a lab started by hand is never stopped.
        """
        lease = self.paths.leases / f"{os.getpid()}.json"
        info: LabInfo | None = None
        with self.exclusive():
            if not self.is_running():
                already = {p.name for p in self.processes() if p.alive()}
                try:
                    info = self._up()
                except BaseException:
                    # A test session must not leave behind what it started, even half-way.
                    for process in self.processes():
                        if process.name not in already:
                            process.stop()
                    raise
                self.paths.started_by_session.write_text(f"{os.getpid()}\n")
            self.paths.leases.mkdir(exist_ok=True)
            lease.write_text(json.dumps({"pid": os.getpid(), "cmd": _own_cmdline()}) + "\n")
        try:
            yield info
        finally:
            with self.exclusive():
                lease.unlink(missing_ok=True)
                if not self._live_leases() and self.paths.started_by_session.exists():
                    self.stop_processes()
                    self.paths.started_by_session.unlink(missing_ok=True)

    def _live_leases(self) -> list[Path]:
        """Leases of sessions still running; those of crashed sessions are removed."""
        live = []
        for lease in sorted(self.paths.leases.glob("*.json")):
            if ManagedProcess("lease", lease).alive():
                live.append(lease)
            else:
                lease.unlink(missing_ok=True)
        return live

    def other_sessions(self) -> list[int]:
        """Pids of other processes using the lab through `session()` right now."""
        own = self.paths.leases / f"{os.getpid()}.json"
        return [int(p.stem) for p in self._live_leases() if p != own]


def stop_pm2(home: Path, daemon: ManagedProcess) -> None:
    """Stop one host's PM2 with its apps: `pm2 kill` talks only to the daemon of this home, then
    the daemon is stopped by its PID should it outlive that."""
    proc = subprocess.run([PM2, "kill"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PM2_HOME": str(home)}, errors="replace")
    if proc.returncode != 0:
        log.warning("pm2 kill for %s failed: %s", home, proc.stderr.strip()[-500:])
    daemon.stop()


def _own_cmdline() -> str:
    return Path("/proc/self/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
