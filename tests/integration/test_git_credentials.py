"""Deploys fetch as the deploy user with its own credential store, checked before a deploy starts.

The lab's sample repository is served over HTTP with basic authentication (git's own client
speaking its dumb-HTTP protocol to a static server this test runs on a loopback address of its
own), the way GitHub asks for the team's token. Each app host's store is the deploy user's
`~/.git-credentials` (root in the lab: `<host root>/root/.git-credentials`).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from bluegreen.faces import cli
from bluegreen.lab.lab import Lab
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import other_color
from bluegreen.render import commands as cmd
from tests.integration.support import QuietServer, copy_project, live_color

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
ADDRESS = ("127.0.3.41", 8089)
USER, TOKEN = "x-access-token", "ghp_labtoken0123456789abcdef"


class TokenOnly(SimpleHTTPRequestHandler):
    """Static files to a client that sends the token; 401 asking for it otherwise."""

    def _allowed(self) -> bool:
        expected = "Basic " + base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()
        if self.headers.get("Authorization") == expected:
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def do_GET(self) -> None:
        if self._allowed():
            super().do_GET()

    def do_HEAD(self) -> None:
        if self._allowed():
            super().do_HEAD()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served(lab: Lab, tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "srv"
    repo = root / "app.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(lab.paths.sample_repo), str(repo)], check=True)
    subprocess.run(["git", "--git-dir", str(repo), "update-server-info"], check=True)
    server = QuietServer(ADDRESS, partial(TokenOnly, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{ADDRESS[0]}:{ADDRESS[1]}/app.git"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _plan(copy: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--cwd", str(copy), "--stack", "lab", "--json", "plan", "--deploy"], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _store(path: Path, token: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"http://{USER}:{token}@{ADDRESS[0]}:{ADDRESS[1]}\n")
    path.chmod(mode)


def test_the_fetch_uses_the_deploy_users_store_and_a_host_without_access_is_named(
        lab: Lab, served: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "project").mkdir()
    copy = copy_project(PROJECT, tmp_path / "project")
    stack = copy / "stacks/Pulumi.lab.yaml"
    stack.write_text(stack.read_text().replace(f"repo: {lab.paths.sample_repo}", f"repo: {served}"))
    t = load_stack(copy, "lab")
    assert t.app.repo == served
    standby = t.app_host(other_color(live_color(t)))
    live = t.app_host(live_color(t))
    stores = {h.label: Path(cmd.AppPaths.of(t, h).git_credentials) for h in (standby, live)}
    for path in stores.values():
        assert not path.exists()
    try:
        # No store: the standby is named, with git's own reason and where the store should be.
        code, out, err = _plan(copy)
        assert code == 2, err
        message = json.loads(out)["error"]
        assert f"{standby.label} cannot fetch the app as root" in message and "nothing was changed" in message
        assert "could not read Username" in message and f"no credential store at {stores[standby.label]}" in message

        # A wrong token: refused by the server, said so.
        _store(stores[standby.label], "ghp_wrong", 0o600)
        code, out, err = _plan(copy)
        assert code == 2 and "Authentication failed" in json.loads(out)["error"]

        # The right token, readable by others: refused for its mode, the token never shown.
        _store(stores[standby.label], TOKEN, 0o644)
        code, out, err = _plan(copy)
        assert code == 2 and "is mode 0644: it holds a token" in json.loads(out)["error"]
        assert TOKEN not in out + err

        # 0600: the plan fetches with it. The live colour, without a store, is only warned about.
        stores[standby.label].chmod(0o600)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="bluegreen.deploy"):
            code, out, err = _plan(copy)
        assert code == 0, err
        plan = json.loads(out)
        main = subprocess.run(["git", "--git-dir", str(lab.paths.sample_repo), "rev-parse", "main"],
                              capture_output=True, text=True, check=True).stdout.strip()
        assert plan["sha"] == main
        warned = caplog.text
        assert f"{live.label} cannot fetch the app as root" in warned and "next deploy, after a switch" in warned
        assert TOKEN not in out + err + warned
        mirror = cmd.AppPaths.of(t, standby).mirror
        origin = subprocess.run(["git", "--git-dir", mirror, "remote", "get-url", "origin"],
                                capture_output=True, text=True, check=True).stdout.strip()
        assert origin == served  # the token stays in the store, never in the mirror's config
    finally:
        for path in stores.values():
            path.unlink(missing_ok=True)
