"""Issue 21 on the lab: switches that never lie.

Each fault is injected into a real switch, emergency or deploy against the lab's HAProxy, sshd,
PM2 and PostgreSQL, and each test asserts the same five things: where live traffic is (HAProxy's
runtime map and the public frontend), what the map file says (what a reload would load), what
the journal says, who holds the lock, and what the user was told (traffic moved or not, what to
run next). Faults:

- the SSH connection to the load balancer cut right after the runtime map flipped, during a
  normal switch and during an emergency (the flip's remote script is slowed by two seconds
  between the runtime flip and the map file, so the cut lands exactly there);
- the CLI `kill -9`ed the moment the runtime map flips, then a plain HAProxy reload;
- an emergency switch to the standby while a deploy to it runs its PM2 reload;
- the journal's filesystem full during an emergency;
- PostgreSQL hung (SIGSTOP) while `status` runs, and SIGTERM to that `status`.

Tests work on a copy of the project (a switch records the live colour in the stack file).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bluegreen.hosts.executor import CommandResult, SshExecutor, connect
from bluegreen.hosts.journal import EstateJournal
from bluegreen.lab.lab import Lab
from bluegreen.model.errors import RemoteError
from bluegreen.model.journal import side_path
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import Container, Topology, other_color
from bluegreen.ops import emergency
from bluegreen.ops.estate import Estate
from bluegreen.ops.status import lock_release, lock_status, status
from bluegreen.ops.switch import switch
from bluegreen.render import commands as cmd
from tests.integration.support import InterceptingExecutor, copy_project, live_color, serve_both_colours
from tests.integration.test_emergency import (
    BLUEGREEN,
    STACK,
    cli,
    journal,
    journal_text,
    read_until,
    served_by_public,
    wait_free,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(lab.project_dir, tmp_path_factory.mktemp("truth-project"))


def topology(project: Path) -> Topology:
    return load_stack(project, STACK)


@pytest.fixture(scope="module")
def estate(project: Path) -> Path:
    """Both colours serve a release that deployed ok; the live one is healthy."""
    serve_both_colours(project, direct=True)
    return project


# --------------------------------------------------------------------------- the five truths


def runtime_live(t: Topology) -> str | None:
    """The live colour straight from HAProxy's admin socket (the lab's hosts are local paths)."""
    lb, hp = t.load_balancer, t.haproxy
    out = subprocess.run(["socat", "-", f"UNIX-CONNECT:{lb.path(hp.admin_socket)}"], capture_output=True,
                         text=True, input=f"show map {lb.path(hp.map_path)}\n", timeout=10)
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "live":
            return parts[2].removeprefix("bk_")
    return None


def map_file_live(t: Topology) -> str | None:
    text = Path(t.load_balancer.path(t.haproxy.map_path)).read_text()
    entries = dict(line.split()[:2] for line in text.splitlines() if len(line.split()) >= 2)
    return entries.get("live", "").removeprefix("bk_") or None


def lock_file(t: Topology) -> dict[str, Any] | None:
    return lock_status(Estate(t))


@contextlib.contextmanager
def releasing_our_lock(t: Topology, pids: tuple[int, ...] = ()) -> Iterator[None]:
    """Never leave the lab locked by this test (our pid, or a process we killed)."""
    try:
        yield
    finally:
        left = lock_file(t)
        if left is not None and left.get("pid") in (os.getpid(), *pids):
            lock_release(Estate(t), force=True)


def assert_settled(project: Path, color: str) -> None:
    """Runtime, public frontend, map file, journal and stack file all say `color`; lock free."""
    t = topology(project)
    assert runtime_live(t) == color
    assert served_by_public(t) == color
    assert map_file_live(t) == color, "the map file disagrees: a reload would move traffic"
    assert journal(t).prod == color, f"the journal says {journal(t).prod}"
    assert t.active_color == color
    assert lock_file(t) is None


def status_json(project: Path) -> tuple[int, dict[str, Any]]:
    done = cli(project, "status", "--json")
    assert "Traceback" not in done.stderr
    return done.returncode, json.loads(done.stdout)


def settle_with_switch_to(project: Path, color: str) -> dict[str, Any]:
    """The one command status names: a no-op for the traffic that records what lags."""
    done = cli(project, "switch", "--to", color, "--yes", "--no-watch", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["noop"] is True and data["colour"] == color, data
    return data


# --------------------------------------------------------------------------- 1, 2. SSH cut after the flip


@dataclass
class Cut:
    """The network to the load balancer, cut the moment its runtime map routes to `target`."""

    t: Topology
    target: str
    fired: bool = False
    active: bool = False


class CuttingExecutor(InterceptingExecutor):
    """Delegates to an SSH executor. The flip's remote script is slowed by 2 s right after its
    runtime `set map`s (before it reads the map back and writes the file); once HAProxy routes to
    the target, the connection is closed under it, and every later command fails as if the
    network were gone."""

    def __init__(self, inner: SshExecutor, cut: Cut) -> None:
        super().__init__(inner)
        self.cut = cut

    def before(self, step: str, operation: str) -> None:
        if self.cut.active:
            raise RemoteError(self.host, step, "connection lost: the test cut the network to the load balancer")

    def run(self, command: str, *, step: str, check: bool = True, timeout: float | None = None,
            input: str | None = None, env: Mapping[str, str] | None = None) -> CommandResult:
        self.before(step, "run")
        if self.cut.fired or not step.startswith("route traffic to"):
            return self.inner.run(command, step=step, check=check, timeout=timeout, input=input, env=env)
        self.cut.fired = True
        slowed = command.replace("after=$(ask", "sleep 2; after=$(ask", 1)
        assert slowed != command, "the flip script changed shape: the fault no longer lands after the flip"
        outcome: dict[str, Any] = {}

        def flip() -> None:
            try:
                outcome["result"] = self.inner.run(slowed, step=step, check=check, timeout=timeout, input=input,
                                                   env=env)
            except BaseException as exc:
                outcome["error"] = exc

        worker = threading.Thread(target=flip, daemon=True)
        worker.start()
        deadline = time.monotonic() + 30
        while runtime_live(self.cut.t) != self.cut.target:
            assert time.monotonic() < deadline, "the runtime map never flipped"
            time.sleep(0.01)
        transport = self.inner.connect().get_transport()
        assert transport is not None
        transport.close()  # the TCP connection goes: sshd hangs up on the remote script
        self.cut.active = True
        worker.join(60)
        error = outcome.get("error")
        if isinstance(error, RemoteError):
            raise error
        raise RemoteError(self.host, step, "connection lost: the test cut the network to the load balancer")


def cutting_factory(t: Topology, cut: Cut) -> Any:
    def make(container: Container) -> Any:
        inner = connect(t, container)
        return CuttingExecutor(inner, cut) if container.vmid == t.load_balancer.vmid else inner
    return make


def test_ssh_cut_right_after_the_runtime_flip_of_a_switch_is_found_out_and_settled(estate: Path) -> None:
    wait_free(topology(estate))
    t = topology(estate)
    old = live_color(t)
    new = other_color(old)
    journal_before = journal_text(t)
    cut = Cut(t, new)
    with releasing_our_lock(t):
        with pytest.raises(RemoteError) as raised:  # the cut itself, not a rewording of it
            switch(Estate(t, executor_factory=cutting_factory(t, cut)), direct=True, watch=False)
        message = str(raised.value)
        assert cut.active, "the flip never ran"
        # What the user is told: the cut, that traffic may have moved, and exactly what to run.
        assert "connection lost" in message and f"Traffic MAY have moved to {new}" in message, message
        assert f"bluegreen switch --to {new}" in message and "bluegreen status" in message, message
        assert "could not be released" in message and "lock release --force" in message, message
        time.sleep(2.5)  # the remote script, hung up on, carries on to the map file
        assert runtime_live(t) == new and served_by_public(t) == new
        assert map_file_live(t) == new, "the flip was cut between the runtime map and its file"
        assert journal_text(t) == journal_before, "a journal write happened over a cut connection?"
        held = lock_file(t)
        assert held is not None and held["pid"] == os.getpid() and held["operation"] == "switch", held
        # The next command finds out, names the mismatch and the one command that settles it.
        code, report = status_json(estate)
        assert code == 1
        truth = report["liveTruth"]
        assert truth["runtime"] == new and truth["mapFile"] == new and truth["journal"] == old, truth
        assert truth["resolve"] == f"bluegreen switch --to {new} --stack {STACK}", truth
        assert any("was not recorded" in m for m in truth["mismatches"]), truth
        released = cli(estate, "lock", "release", "--force", "--json")
        assert released.returncode == 0, released.stderr
    data = settle_with_switch_to(estate, new)
    assert any("already live" in n for n in data["notes"]) and any("recorded" in n for n in data["notes"]), data
    found = journal(t).history[0]
    assert (found["from"], found["to"], found.get("found"), found.get("verified")) == (old, new, True, True), found
    assert_settled(estate, new)
    # Repeating it once more is still a no-op, and records nothing new.
    before = journal_text(t)
    settle_with_switch_to(estate, new)
    assert journal_text(t) == before


def test_ssh_cut_right_after_the_runtime_flip_of_an_emergency_then_a_safe_retry(estate: Path) -> None:
    wait_free(topology(estate))
    t = topology(estate)
    old = live_color(t)
    new = other_color(old)
    journal_before = journal_text(t)
    cut = Cut(t, new)
    lb = CuttingExecutor(connect(t, t.load_balancer), cut)
    with releasing_our_lock(t):
        try:
            with pytest.raises(RemoteError) as raised:
                emergency.run(t, rollback=False, executor=lb)
        finally:
            lb.close()
        message = str(raised.value)
        assert f"Traffic MAY have moved to {new}" in message, message
        assert f"bluegreen switch --emergency --to {new}" in message, message
        assert "could not be released" in message and "lock release --force" in message, message
        time.sleep(2.5)
        assert runtime_live(t) == new and map_file_live(t) == new
        assert journal_text(t) == journal_before
        held = lock_file(t)
        assert held is not None and held["pid"] == os.getpid() and held["operation"] == "emergency switch", held
        # The retry the message offers: a no-op for the traffic (never a flip back), which records
        # the switch and takes over and releases the lock the cut one left.
        retry = cli(estate, "switch", "--emergency", "--to", new, "--yes", "--json")
        assert retry.returncode == 0, retry.stderr
        data = json.loads(retry.stdout)
        assert data["noop"] is True and data["colour"] == new and data["recordedIn"] == "journal", data
        assert data["preempted"]["pid"] == os.getpid(), data
    found = journal(t).history[0]
    assert (found["from"], found["to"], found.get("found"), found.get("verified")) == (old, new, True, True), found
    assert_settled(estate, new)


# --------------------------------------------------------------------------- 3. kill -9, then a reload


def plain_reload(t: Topology) -> None:
    """What an operator's `systemctl reload haproxy` does: the master's `reload`, nothing else."""
    lb, hp = t.load_balancer, t.haproxy
    master = f"UNIX-CONNECT:{lb.path(hp.master_socket)}"

    def reloads() -> int:
        out = subprocess.run(["socat", "-", master], input="show proc\n", capture_output=True, text=True,
                             timeout=10).stdout
        line = next(line for line in out.splitlines() if " master " in f" {line} ")
        return int(line.split()[2])

    before = reloads()
    subprocess.run(["socat", "-", master], input="reload\n", capture_output=True, text=True, timeout=30)
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(subprocess.SubprocessError, StopIteration, ValueError, IndexError):
            if reloads() > before:
                return
        assert time.monotonic() < deadline, "HAProxy did not reload"
        time.sleep(0.1)


def test_kill_9_at_the_flip_then_a_reload_keeps_the_flip_and_the_next_command_settles_it(estate: Path) -> None:
    wait_free(topology(estate))
    t = topology(estate)
    old = live_color(t)
    new = other_color(old)
    proc = subprocess.Popen([str(BLUEGREEN), "switch", "--direct", "--no-watch", "--yes", "--stack", STACK,
                             "--cwd", str(estate)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with releasing_our_lock(t, (proc.pid,)):
        try:
            deadline = time.monotonic() + 120
            while runtime_live(t) != new:
                assert proc.poll() is None, f"the switch ended without flipping: {proc.communicate()[1]}"
                assert time.monotonic() < deadline, "the switch never flipped"
                time.sleep(0.005)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
        time.sleep(1)  # the remote step, on the load balancer, outlives the killed client
        plain_reload(t)
        assert runtime_live(t) == new, "the reload undid the flip"
        assert served_by_public(t) == new and map_file_live(t) == new
        assert journal(t).prod == old
        held = lock_file(t)
        assert held is not None and held["pid"] == proc.pid and held["stale"] is True, held
        code, report = status_json(estate)
        assert code == 1 and report["live"] == new
        assert report["liveTruth"]["resolve"] == f"bluegreen switch --to {new} --stack {STACK}", report["liveTruth"]
        refused = cli(estate, "switch", "--to", new, "--yes", "--no-watch")
        assert refused.returncode == 1 and "lock release --force" in refused.stderr, refused.stderr
        assert "Traffic did not move" in refused.stderr, refused.stderr
        assert cli(estate, "lock", "release", "--force").returncode == 0
    settle_with_switch_to(estate, new)
    assert_settled(estate, new)


# --------------------------------------------------------------------------- 4. emergency during a deploy


def test_an_emergency_during_a_deploys_pm2_reload_leaves_the_now_live_colour_alone(estate: Path) -> None:
    wait_free(topology(estate))
    t = topology(estate)
    live = live_color(t)
    standby = other_color(live)
    host = t.app_host(standby)
    paths = cmd.AppPaths.of(t, host)
    proc = subprocess.Popen([str(BLUEGREEN), "deploy", "--ref", "main", "--yes", "--no-snapshot",
                             "--stack", STACK, "--cwd", str(estate)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        read_until(proc, f".. reload PM2 on {standby}", 600)
        flipped = cli(estate, "switch", "--emergency", "--to", standby, "--yes", "--json")
        assert flipped.returncode == 0, flipped.stderr
        data = json.loads(flipped.stdout)
        assert data["colour"] == standby and data["preempted"]["pid"] == proc.pid, data
        with connect(t, host) as ex:
            pointed = cmd.parse_current(ex.run(cmd.read_current(paths), step="read").stdout)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert f"{standby} became live during the deploy" in err and "left" in err and "as it is" in err, err
    with connect(t, host) as ex:
        after = cmd.parse_current(ex.run(cmd.read_current(paths), step="read").stdout)
        assert ex.run(f"test -d {cmd.sh(paths.release(pointed.name or '-'))}", step="t", check=False).ok, \
            "the pre-empted deploy removed the release the live colour serves"
    assert after.path == pointed.path, "the pre-empted deploy repointed `current` on the live colour"
    assert runtime_live(t) == standby and map_file_live(t) == standby and served_by_public(t) == standby
    state = journal(t)
    record = state.last_deploy(standby)
    assert record is not None and record.result == "failed" and "as it is" in (record.error or ""), record
    assert state.prod == standby
    assert lock_file(t) is None
    raw = journal_text(t)
    assert raw is not None
    assert os.stat(t.load_balancer.path(t.journal.path)).st_mode & 0o777 == 0o600


# --------------------------------------------------------------------------- 5. journal filesystem full


@contextlib.contextmanager
def full_filesystem(folder: Path, *, room_for: int = 1) -> Iterator[Path]:
    """A tmpfs over `folder` holding copies of its files, full: its blocks filled but for two
    pages, and no inode left but `room_for` (the one new small file the lock needs). Every other
    file created there fails with ENOSPC ("No space left on device"), exactly: block counts on
    tmpfs allow a little slack, inode counts do not."""
    existing = {p.name: (p.read_bytes(), p.stat().st_mode & 0o777) for p in folder.iterdir() if p.is_file()}
    size = sum(len(b) + 4096 for b, _ in existing.values()) + 256 * 4096
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "bluegreen-full",
                              str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        for name, (data, mode) in existing.items():
            (folder / name).write_bytes(data)
            os.chmod(folder / name, mode)
        for name in ("state.lock", "lock.json.mutex"):  # the flocks' files: opened, never created
            (folder / name).touch()
        fd = os.open(folder / ".filler", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        finally:
            os.close(fd)
        filler = folder / ".filler"
        os.truncate(filler, max(0, filler.stat().st_size - 2 * 4096))
        inodes = len(list(folder.iterdir())) + 1 + room_for  # the entries, the directory, the room
        subprocess.run(["mount", "-o", f"remount,nr_inodes={inodes}", str(folder)], check=True)
        yield folder
    finally:
        for attempt in range(20):
            if subprocess.run(["umount", str(folder)], capture_output=True).returncode == 0:
                break
            time.sleep(0.2 * (attempt + 1))
        else:
            subprocess.run(["umount", "-l", str(folder)], check=True)


def test_an_emergency_on_a_full_journal_filesystem_moves_traffic_releases_the_lock_and_says_so(
        estate: Path) -> None:
    wait_free(topology(estate))
    t = topology(estate)
    old = live_color(t)
    new = other_color(old)
    journal_path = Path(t.load_balancer.path(t.journal.path))
    if Path(side_path(str(journal_path))).exists():
        # An earlier test's record still waits in the side file (the next write folds it in): fold
        # it now, so that the full filesystem has no file an append could still grow.
        with connect(t, t.load_balancer) as lb:
            EstateJournal(lb, t).update(lambda s: s, live=old)
    assert not Path(side_path(str(journal_path))).exists()
    before = journal_path.read_bytes()
    with full_filesystem(journal_path.parent):
        done = cli(estate, "switch", "--emergency", "--yes", "--json")
        assert "Traceback" not in done.stderr
        assert done.returncode == 1, (done.stderr, done.stdout)
        data = json.loads(done.stdout)
        assert data["colour"] == new and data["ok"] is False and data["recordedIn"] is None, data
        assert "recording the switch failed" in data["error"] and "No space left" in data["error"], data
        assert "records it" in data["error"], data  # says what happens next; `colour` says where traffic is
        assert not Path(t.load_balancer.path(t.journal.lock_path)).exists(), "the emergency left its lock"
        assert journal_path.read_bytes() == before
        assert not Path(side_path(str(journal_path))).exists()
    assert runtime_live(t) == new and map_file_live(t) == new and served_by_public(t) == new
    assert journal_path.read_bytes() == before
    assert lock_file(t) is None
    code, report = status_json(estate)
    assert code == 1 and report["liveTruth"]["journal"] == old, report["liveTruth"]
    settle_with_switch_to(estate, new)
    assert_settled(estate, new)
    assert os.stat(journal_path).st_mode & 0o777 == 0o600


# --------------------------------------------------------------------------- 6. hung PostgreSQL


@contextlib.contextmanager
def hung_postgres(lab: Lab) -> Iterator[int]:
    pid = lab.postgres().pid()
    assert pid is not None, "PostgreSQL is not running"
    os.kill(pid, signal.SIGSTOP)  # the postmaster only: new connections hang, none is refused
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)


def test_status_with_a_hung_postgresql_answers_within_seconds_and_sigterm_ends_it_at_once(
        lab: Lab, estate: Path) -> None:
    wait_free(topology(estate))
    t = topology(estate)
    live = live_color(t)
    if journal(t).prod != live:  # an earlier failure left the journal behind: settle it first
        settle_with_switch_to(estate, live)
    with hung_postgres(lab):
        started = time.monotonic()
        code, report = status_json(estate)
        took = time.monotonic() - started
        assert took < 20, f"status took {took:.1f}s with PostgreSQL hung"
        assert code == 0, "production is served: a hung database alone does not fail status"
        assert report["live"] == live and report["colors"][live]["healthy"], report
        database = report["database"]
        assert database["reachable"] is False and database["error"], database
        # In process too (what MCP get_deployment_status runs): bounded by the same deadline.
        started = time.monotonic()
        in_process = status(Estate(t))
        assert time.monotonic() - started < 15 and in_process.live == live
        assert in_process.database["reachable"] is False
        # SIGTERM ends a status that waits on the hung database at once.
        proc = subprocess.Popen([str(BLUEGREEN), "status", "--stack", STACK, "--cwd", str(estate)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2.0)
        assert proc.poll() is None, "status finished before the database probe could hang"
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert time.monotonic() - signalled < 2.0, "status did not end at once on SIGTERM"
        assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err


def test_every_error_of_a_refused_switch_says_traffic_did_not_move(estate: Path) -> None:
    """A switch refused before any flip (the lock held by someone else) says nothing moved."""
    wait_free(topology(estate))
    t = topology(estate)
    live = live_color(t)
    with connect(t, t.load_balancer) as lb:
        held = Estate(t).lock(lb)
        held.acquire("maintenance", "bob@desk")
        try:
            refused = cli(estate, "switch", "--yes", "--no-watch")
        finally:
            held.release()
    assert refused.returncode == 1 and "held by" in refused.stderr, refused.stderr
    assert "Traffic did not move" in refused.stderr, refused.stderr
    assert runtime_live(t) == live
