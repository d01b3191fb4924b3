"""A deploy user other than root, end to end on the lab: the estate configured as `pulumi up` does
(bootstrap, shared/.env, ecosystems), two deploys and a switch, everything the app is built and run
from owned by that user: release directories (node_modules included), its npm cache, its PM2 home
(0700, the dump inside 0600) and the PM2 daemon itself.

The lab's own estate runs as root; this file builds it again for a user of its own, then puts the
lab's estate back. Named to run late: it replaces the lab's estate while it runs.
"""

from __future__ import annotations

import pwd
import shutil
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bluegreen.hosts import haproxy as hr
from bluegreen.hosts.health import http_probe, visitor
from bluegreen.lab.lab import Lab
from bluegreen.model.stackfile import load_stack, stack_file
from bluegreen.model.topology import Topology
from bluegreen.ops.deploy import deploy
from bluegreen.ops.estate import Estate
from bluegreen.ops.switch import switch
from bluegreen.render.commands import AppPaths

from .support import clone_of_the_working_tree

pytestmark = pytest.mark.integration


def _owner(path: Path) -> str:
    return pwd.getpwuid(path.lstat().st_uid).pw_name


def _mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


@pytest.fixture(scope="module")
def user_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, str]]:
    user = f"bgu{uuid.uuid4().hex[:8]}"
    clone = clone_of_the_working_tree(tmp_path_factory.mktemp("deploy-user") / "clone")
    path = stack_file(clone, "lab")
    data = yaml.safe_load(path.read_text())
    data["config"]["bluegreen:app"]["deployUser"] = user
    del data["config"]["bluegreen:app"]["pm2Home"]  # the user's own ~/.pm2
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    # The estate's user exists, as it does on a real host; its npm cache is seeded from root's: a
    # real host reaches the registry, the lab has no route out.
    subprocess.run(["useradd", "--system", "--create-home", "--home-dir", f"/home/{user}", "--shell", "/bin/bash",
                    user], check=True, capture_output=True)
    home = Path(f"/home/{user}")
    # The lab's repository is a local directory owned by root (the estate's is a remote): git
    # refuses another user's repository unless that user declares it safe, as a real one would.
    repo = str(load_stack(clone, "lab").app.repo)
    subprocess.run(["runuser", "-u", user, "--", "git", "config", "--global", "--add", "safe.directory", repo],
                   check=True, capture_output=True)
    if Path("/root/.npm/_cacache").is_dir():
        shutil.copytree("/root/.npm/_cacache", home / ".npm/_cacache")
        subprocess.run(["chown", "-R", f"{user}:", str(home / ".npm")], check=True)
    the_lab = Lab(project_dir=clone)
    try:
        with the_lab.exclusive():
            was_running = Lab().is_running()
            Lab().clear_estate()  # the lab's own estate (its apps under root's PM2) goes first
            try:
                the_lab._up()
                yield the_lab, user
            finally:
                the_lab.clear_estate()
                for host in the_lab.topology.app_hosts.values():
                    shutil.rmtree(host.path(f"/home/{user}"), ignore_errors=True)
                if was_running:
                    Lab()._up()
    finally:
        subprocess.run(["userdel", "--remove", user], capture_output=True)


def _estate(lab: Lab) -> Estate:
    return Estate(load_stack(lab.project_dir, "lab"))


@pytest.mark.timeout(1200)
def test_a_non_root_deploy_user_runs_everything_it_owns(user_lab: tuple[Lab, str]) -> None:
    lab, user = user_lab
    first = deploy(_estate(lab), "main", migrate=True)
    assert first.ok, first.error
    switch(_estate(lab))
    second = deploy(_estate(lab), "main")
    assert second.ok, second.error
    t: Topology = load_stack(lab.project_dir, "lab")
    for color in ("blue", "green"):
        host = t.app_host(color)
        paths = AppPaths.of(t, host)
        release = Path(paths.current).resolve()
        # The release and everything in it (installed, built) is the deploy user's.
        assert release.parent == Path(paths.releases) and _owner(Path(paths.releases)) == user
        strangers = subprocess.run(["find", str(release), "!", "-user", user], capture_output=True, text=True,
                                   check=True).stdout.split()
        assert strangers == [], strangers[:5]
        assert (release / "node_modules" / "pg").is_dir()
        # Settings: 0600, the user's; shared/ 0700, closed to others.
        env = Path(paths.env_file)
        assert (_owner(env), _mode(env)) == (user, "0o600")
        assert (_owner(Path(paths.shared)), _mode(Path(paths.shared))) == (user, "0o700")
        # PM2's home and dump hold every secret of the app's environment: the user's alone.
        pm2_home = Path(paths.pm2_home)
        assert pm2_home == Path(host.path(f"/home/{user}/.pm2"))
        assert (_owner(pm2_home), _mode(pm2_home)) == (user, "0o700")
        dump = pm2_home / "dump.pm2"
        assert (_owner(dump), _mode(dump)) == (user, "0o600")
        daemon = int((pm2_home / "pm2.pid").read_text())
        assert _owner(Path(f"/proc/{daemon}")) == user
        assert http_probe(f"http://{host.ip}:{t.app.port}{t.app.health_path}").ok
    # npm ran as the user, with the user's cache.
    cache = Path(f"/home/{user}/.npm")
    foreign = subprocess.run(["find", str(cache), "!", "-user", user, "-print", "-quit"], capture_output=True,
                             text=True, check=True).stdout
    assert _owner(cache) == user and foreign == ""
    with lab.executor(t.load_balancer) as lb:
        live = hr.live_color(lb, t)
    served = http_probe(f"{t.public_url}{t.app.health_path}", **visitor(t))
    assert served.ok and served.served_by == live
