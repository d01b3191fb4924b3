"""docs/QUICK_REFERENCE.md and docs/TROUBLESHOOTING.md, run on the lab.

Every `sh` block of both guides runs, in the order written, after one fixed translation from the
prod stack to the lab stack (the guides are written for prod): `--stack prod` -> `--stack lab`,
each container's prod address -> its lab address (port 22 -> the lab's 2222 where SSH addresses
are named), the Proxmox endpoint and `ssh.knownHosts` -> the lab's; `ssh ALIAS CMD` runs CMD on that
lab host (aliases from the quick reference's table), with the estate's absolute paths rooted under
the lab host's root. A command that still names a 10.92.x.x address after translation is never run.

The estate is set up as after the takeover: deploys take `production-gold-standard`, each app host
has the team's working copy on it, both colours serve a release, and `bluegreen retire-legacy` has
run. Most troubleshooting entries are provoked for real first (a held lock, drift, a broken journal,
a changed host key, a DOWN standby, an unreachable Proxmox, a loose credential store, a working copy
with unpushed work, a stack naming the working copy as app.dir, the old switch script), the message
checked against what the tool printed, then the entry's commands run in that state and the fault is
shown fixed. tests/unit/test_guides.py checks every quoted message against the product source.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bluegreen.faces import cli
from bluegreen.hosts.executor import connect, fetch_host_key, fingerprint, ssh_target
from bluegreen.hosts.haproxy import backend_states
from bluegreen.hosts.lock import LockManager
from bluegreen.lab.lab import Lab
from bluegreen.lab.legacy import STATE_SCRIPT_TEXT
from bluegreen.model.stackfile import load_stack, set_active_color_in_file
from bluegreen.model.topology import Container, Topology, other_color
from bluegreen.ops.estate import Estate
from bluegreen.ops.status import read_working_copy, status
from bluegreen.render import commands as cmd
from bluegreen.render import workingcopy
from bluegreen.render.bootstrap import STATE_SCRIPT
from tests.guides import PLACEHOLDER, QUICK_REFERENCE, Block, blocks, entries, message_regex, ssh_aliases
from tests.integration.support import copy_project, live_color, wait_backends_up

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
BRANCH = "production-gold-standard"
ROOTED = re.compile(r"(?<![\w/.-])(/(?:opt|var/lib/jw-deployment|etc/haproxy|run/haproxy|var/backups|usr/local/bin)"
                    r"(?:/[^\s'\"]*)?)")
SCRIPT_NAME = re.compile(r"(?<![\w/.-])jw-deployment-state\.sh\b")
GIT_IDENTITY = ("export GIT_AUTHOR_NAME=Developer GIT_AUTHOR_EMAIL=dev@example.invalid "
                "GIT_COMMITTER_NAME=Developer GIT_COMMITTER_EMAIL=dev@example.invalid")


@dataclass
class Ran:
    command: str
    code: int
    out: str  # stdout and stderr
    stdout: str = ""


class Guide:
    """Runs the guides' commands on the lab (see the module docstring)."""

    def __init__(self, lab: Lab, copy: Path) -> None:
        self.lab, self.copy = lab, copy
        self.prod = load_stack(PROJECT, "prod")
        self.aliases = ssh_aliases()
        self.fills: dict[str, str] = {}

    @property
    def t(self) -> Topology:
        return load_stack(self.copy, "lab")

    def translate(self, text: str) -> str:
        t, prod = self.t, self.prod
        text = text.replace("--stack prod", f"--stack {t.stack}")
        for c in prod.containers:
            lab_ip = t.find_host(str(c.vmid)).ip
            text = re.sub(rf"(-[FR]\s+)'?{re.escape(c.ip)}'?", rf"\g<1>'[{lab_ip}]:{t.ssh.port}'", text)
            text = text.replace(c.ip, lab_ip)
        text = text.replace(prod.proxmox.endpoint.rstrip("/"), t.proxmox.endpoint.rstrip("/"))
        text = text.replace(prod.ssh.known_hosts.replace(str(Path.home()), "~"), t.ssh.known_hosts)
        for placeholder, value in self.fills.items():
            text = text.replace(placeholder, value)
        assert "10.92." not in text, f"a prod address survived translation: {text}"
        assert not PLACEHOLDER.search(text), f"unfilled placeholder: {text}"
        return text

    def bluegreen(self, command: str, *, cwd: Path | None = None) -> Ran:
        argv = shlex.split(self.translate(command))[1:]
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(["--cwd", str(cwd or self.copy), *argv], out=out, err=err)
        return Ran(command, code, out.getvalue() + err.getvalue(), out.getvalue())

    def host(self, alias: str) -> Container:
        return self.t.find_host(str(self.aliases[alias]))

    def on_host(self, alias: str, script: str, *, label: str | None = None) -> Ran:
        host = self.host(alias)
        rooted = SCRIPT_NAME.sub(host.path(STATE_SCRIPT), self.translate(script))
        rooted = ROOTED.sub(lambda m: host.path(m.group(1)), rooted)
        with self.lab.executor(host) as ex:
            done = ex.run(f"{GIT_IDENTITY}\n{rooted}", step="a guide's command", check=False, timeout=300)
        return Ran(label or script, done.exit_code, done.stdout + done.stderr)

    def local(self, command: str) -> Ran:
        done = subprocess.run(["bash", "-c", self.translate(command)], capture_output=True, text=True,
                              timeout=120)
        return Ran(command, done.returncode, done.stdout + done.stderr)

    def run(self, block: Block) -> list[Ran]:
        commands = block.commands
        if commands and shlex.split(commands[0]) in [["ssh", a] for a in self.aliases]:
            return [self.on_host(shlex.split(commands[0])[1], "set -e\n" + "\n".join(commands[1:]))]
        ran = []
        for command in commands:
            words = shlex.split(command)
            if words[0] == "bluegreen":
                ran.append(self.bluegreen(command))
            elif words[0] == "ssh":
                ran.append(self.on_host(words[1], " ".join(words[2:]), label=command))
            else:
                ran.append(self.local(command))
        return ran

    def live(self) -> str:
        return live_color(self.t)


def _serve_both(g: Guide) -> None:
    """Both colours serving a release, as after the takeover (a fresh lab world has none)."""
    for _ in range(2):
        colors = status(Estate(g.t)).colors
        if all(c.release and c.healthy for c in colors.values()):
            return
        # A fresh lab world's database has none of the sample app's migrations yet.
        for command in ("bluegreen deploy --yes --migrate --stack prod", "bluegreen switch --yes --stack prod"):
            ran = g.bluegreen(command)
            assert ran.code == 0, ran.out[-3000:]


def _working_copies(g: Guide) -> None:
    """The team's working copy on each app host, on production-gold-standard (others removed)."""
    t = g.t
    for host in t.app_hosts.values():
        paths = cmd.AppPaths.of(t, host)
        with g.lab.executor(host) as ex:
            found = read_working_copy(ex, paths)
            if found.state == "present" and found.branch == BRANCH:
                continue
            assert paths.working_copy is not None
            ex.run(f"rm -rf -- {shlex.quote(paths.working_copy)}", step="remove a lab-made working copy")
            ex.run(cmd.fetch_ref(t, paths, BRANCH), step="fetch")
            ex.run(workingcopy.create_command(t, paths, BRANCH), step="create the working copy")


@pytest.fixture(scope="module")
def guide(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guide]:
    copy = copy_project(PROJECT, tmp_path_factory.mktemp("guides"))
    stack = copy / "stacks/Pulumi.lab.yaml"
    stack.write_text(stack.read_text().replace("    branch: main\n", f"    branch: {BRANCH}\n"))
    repo = lab.paths.sample_repo
    subprocess.run(["git", "--git-dir", str(repo), "update-ref", f"refs/heads/{BRANCH}", "refs/heads/main"],
                   check=True)
    g = Guide(lab, copy)
    t = g.t
    script = Path(t.load_balancer.path(STATE_SCRIPT))
    kept = script.read_bytes() if script.exists() else None
    try:
        _working_copies(g)
        _serve_both(g)
        ran = g.bluegreen("bluegreen retire-legacy --yes --stack prod")
        assert ran.code == 0, ran.out
        yield g
    finally:
        if kept is not None:
            script.write_bytes(kept)
        Path(f"{script}.pre-bluegreen").unlink(missing_ok=True)
        for ref in (f"refs/heads/{BRANCH}", "refs/heads/wip/before-rebuild"):
            subprocess.run(["git", "--git-dir", str(repo), "update-ref", "-d", ref], capture_output=True)


def test_the_quick_reference_runs_on_the_lab(guide: Guide) -> None:
    t = guide.t
    green = guide.host("jwg")
    assert t.app.working_copy is not None
    Path(green.path(t.app.working_copy), "CHANGELOG-shift-swap.md").write_text("confirm by email\n")  # an edit
    for block in blocks(QUICK_REFERENCE):
        if block.lang != "sh":
            continue
        for ran in guide.run(block):
            assert ran.code == 0, f"{block.section}: `{ran.command}` exited {ran.code}:\n{ran.out[-3000:]}"
    # The push from green's working copy reached origin; status says it is up to date with it.
    with guide.lab.executor(green) as ex:
        wc = read_working_copy(ex, cmd.AppPaths.of(t, green))
    origin = subprocess.run(["git", "--git-dir", str(guide.lab.paths.sample_repo), "rev-parse", BRANCH],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert (wc.head, wc.ahead, wc.behind, wc.unsaved) == (origin, 0, 0, [])
    assert guide.on_host("haproxy", "jw-deployment-state.sh get prod").out.strip() == guide.live()


# --------------------------------------------------------------------------- provoking each fault

Provocation = Callable[[Guide, list[str]], contextlib.AbstractContextManager[None]]


@contextlib.contextmanager
def lock_held(g: Guide, printed: list[str]) -> Iterator[None]:
    t = g.t
    with connect(t, t.load_balancer) as ex:
        path = t.load_balancer.path(t.journal.lock_path)
        holder = LockManager(ex, path)
        holder.acquire("deploy", who="ops@laptop")
        try:
            ran = g.bluegreen("bluegreen deploy --yes --stack prod")
            assert ran.code == 1
            printed.append(ran.out)
            yield
            assert LockManager(ex, path).status() is None  # the entry's fix released it
        finally:
            holder.force_release()


@contextlib.contextmanager
def drift(g: Guide, printed: list[str]) -> Iterator[None]:
    live = g.live()
    set_active_color_in_file(g.copy, "lab", other_color(live))
    try:
        printed.append(g.bluegreen("bluegreen status --stack prod").out)
        yield
    finally:
        set_active_color_in_file(g.copy, "lab", live)


@contextlib.contextmanager
def journal_broken(g: Guide, printed: list[str]) -> Iterator[None]:
    t = g.t
    path = Path(t.load_balancer.path(t.journal.path))
    kept = path.read_bytes()
    path.write_text('{"prod": "blue", "history": [\n')
    try:
        ran = g.bluegreen("bluegreen history --stack prod")
        assert ran.code != 0
        printed.append(ran.out)
        yield
    finally:
        path.write_bytes(kept)
    assert g.bluegreen("bluegreen history --stack prod").code == 0


@contextlib.contextmanager
def host_key_changed(g: Guide, printed: list[str], tmp: Path) -> Iterator[None]:
    t = g.t
    green = t.app_host("green")
    known = Path(t.ssh.known_hosts)
    kept = known.read_text()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "other")], check=True)
    other_key = (tmp / "other.pub").read_text().split()[:2]
    marker = f"[{green.ip}]:{t.ssh.port} "
    known.write_text("".join(f"{marker}{' '.join(other_key)}\n" if line.startswith(marker) else f"{line}\n"
                             for line in kept.splitlines()))
    g.fills["<SHA256 from the node>"] = fingerprint(fetch_host_key(ssh_target(t, green))[1])
    try:
        printed.append(g.bluegreen("bluegreen status --stack prod").out)
        yield
        after = json.loads(g.bluegreen("bluegreen --json status --stack prod").stdout)
        assert after["colors"]["green"]["reachable"] and not after["colors"]["green"]["errors"]
    except BaseException:
        known.write_text(kept)
        raise


@contextlib.contextmanager
def standby_down(g: Guide, printed: list[str]) -> Iterator[None]:
    t = g.t
    standby = t.app_host(other_color(g.live()))
    paths = cmd.AppPaths.of(t, standby)
    with g.lab.executor(standby) as ex:
        ex.run(cmd.pm2(t, paths, "stop", t.app.name), step="stop the standby's app")
        try:
            with connect(t, t.load_balancer) as lb:
                for _ in range(120):
                    if str(backend_states(lb, t).get(standby.color or "", {}).get("status", "")).startswith("DOWN"):
                        break
                    subprocess.run(["sleep", "0.5"], check=True)
            ran = g.bluegreen("bluegreen switch --yes --stack prod")
            assert ran.code == 1
            printed.append(ran.out)
            printed.append(g.on_host("haproxy", "jw-deployment-state.sh switch").out)
            yield
        finally:
            ex.run(cmd.pm2_reload(t, paths), step="start the standby's app again")
    wait_backends_up(t)


@contextlib.contextmanager
def pve_unreachable(g: Guide, printed: list[str], tmp: Path) -> Iterator[None]:
    other = tmp / "pve-down"
    shutil.copytree(g.copy, other)
    stack = other / "stacks/Pulumi.lab.yaml"
    endpoint = g.t.proxmox.endpoint
    unused = endpoint.replace(":8006", ":8007")
    stack.write_text(stack.read_text().replace(endpoint, unused))
    printed.append(g.bluegreen("bluegreen status --stack prod", cwd=other).out)
    yield


@contextlib.contextmanager
def loose_credentials(g: Guide, printed: list[str]) -> Iterator[None]:
    t = g.t
    standby = t.app_host(other_color(g.live()))
    store = Path(cmd.AppPaths.of(t, standby).git_credentials)
    assert not store.exists()
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text("https://deploy:not-a-token@git.invalid\n")
    store.chmod(0o644)
    try:
        ran = g.bluegreen("bluegreen plan --deploy --stack prod")
        assert ran.code == 2 and "not-a-token" not in ran.out
        printed.append(ran.out)
        yield
    finally:
        store.unlink()
    assert g.bluegreen("bluegreen plan --deploy --stack prod").code == 0


@contextlib.contextmanager
def unpushed_work(g: Guide, printed: list[str]) -> Iterator[None]:
    if g.live() == "green":  # the guide's host is jwg: make it the standby
        assert g.bluegreen("bluegreen switch --yes --stack prod").code == 0
    t = g.t
    green = t.app_host("green")
    assert t.app.working_copy is not None
    Path(green.path(t.app.working_copy), "notes-before-rebuild.md").write_text("only here\n")
    ran = g.bluegreen("bluegreen rebuild standby --yes --stack prod")
    assert ran.code == 2
    printed.append(ran.out)
    yield
    with g.lab.executor(green) as ex:
        assert read_working_copy(ex, cmd.AppPaths.of(t, green)).unsaved == []  # a rebuild may go ahead


@contextlib.contextmanager
def working_copy_as_app_dir(g: Guide, printed: list[str], tmp: Path) -> Iterator[None]:
    old = tmp / "old-stack"
    shutil.copytree(g.copy, old)
    stack = old / "stacks/Pulumi.lab.yaml"
    t = g.t
    assert t.app.working_copy is not None
    text = stack.read_text().replace(f"    workingCopy: {t.app.working_copy}\n", "    workingCopy: none\n")
    stack.write_text(text.replace(f"    dir: {t.app.dir}\n", f"    dir: {t.app.working_copy}\n"))
    ran = g.bluegreen("bluegreen deploy --yes --stack prod", cwd=old)
    assert ran.code == 2
    printed.append(ran.out)
    for host in t.app_hosts.values():  # nothing was fetched or made in a working copy
        work = Path(host.path(t.app.working_copy))
        assert not (work / "repo.git").exists() and not (work / "releases").exists()
    yield


@contextlib.contextmanager
def old_switch_script(g: Guide, printed: list[str]) -> Iterator[None]:
    t = g.t
    lb = t.load_balancer
    script, backup = Path(lb.path(STATE_SCRIPT)), Path(lb.path(STATE_SCRIPT) + ".pre-bluegreen")
    kept, kept_backup = script.read_bytes(), backup.read_bytes() if backup.exists() else None
    old = STATE_SCRIPT_TEXT % {"root": lb.root, "master": lb.path(t.haproxy.master_socket)}
    script.write_text(old)
    backup.unlink(missing_ok=True)
    try:
        printed.append(g.bluegreen("bluegreen adopt --dry-run --stack prod").out)
        yield
        assert backup.read_text() == old and "generated by bluegreen retire-legacy" in script.read_text()
        printed.append(g.on_host("haproxy", f"jw-deployment-state.sh set prod {other_color(g.live())}").out)
    finally:
        script.write_bytes(kept)
        if kept_backup is not None:
            backup.write_bytes(kept_backup)


def _provocations(tmp: Path) -> dict[str, Callable[[Guide, list[str]], contextlib.AbstractContextManager[None]]]:
    return {
        "The deployment lock is held": lock_held,
        "DRIFT: HAProxy and the stack file disagree": drift,
        "The journal is unreadable": journal_broken,
        "A host key changed": lambda g, p: host_key_changed(g, p, tmp),
        "HAProxy sees the standby DOWN": standby_down,
        "Proxmox is unreachable": lambda g, p: pve_unreachable(g, p, tmp),
        "A host cannot fetch the app (git credentials)": loose_credentials,
        "A working copy holds work found nowhere else": unpushed_work,
        "The stack names the working copy as app.dir": lambda g, p: working_copy_as_app_dir(g, p, tmp),
        "The old switch script is still there": old_switch_script,
    }


# While a fault is provoked, these looks show the symptom: they fail, as the guide says they do.
LOOKS_THAT_FAIL = {
    "The journal is unreadable": {"ssh haproxy jq -e . /var/lib/jw-deployment/state.json"},
    "A host cannot fetch the app (git credentials)": {"bluegreen plan --deploy --stack prod"},
}


def test_every_troubleshooting_entry_runs_and_its_messages_are_what_the_tool_prints(
        guide: Guide, tmp_path: Path) -> None:
    provoke = _provocations(tmp_path)
    for entry in entries():
        printed: list[str] = []
        context = provoke[entry.title](guide, printed) if entry.title in provoke else contextlib.nullcontext()
        with context:
            ran = [r for block in entry.blocks if block.lang == "sh" for r in guide.run(block)]
        failing = LOOKS_THAT_FAIL.get(entry.title, set()) if entry.title in provoke else set()
        for r in ran:
            assert (r.code != 0) == (r.command in failing), \
                f"{entry.title}: `{r.command}` exited {r.code}:\n{r.out[-1500:]}"
        if entry.title in provoke:
            matched = [m for m in entry.messages if any(message_regex(m).search(p) for p in printed)]
            assert entry.messages[0] in matched, f"{entry.title}: the tool printed\n{printed}"
            assert len(matched) >= len(printed), f"{entry.title}: only {matched} in what it printed:\n{printed}"
    assert set(provoke) <= {e.title for e in entries()}
