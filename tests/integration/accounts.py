"""OS accounts for the approval tests: the approver, and the person the MCP server and the assistant
run as; programs run as them on a pseudo-terminal, the way a person types.

The accounts are made with useradd for one test module and removed with userdel at its end (by
name, each name carrying this process's pid, so parallel test worlds never share one). The
venv's interpreter lives under /root (0700 here), so these accounts run Debian's python3.11 with
the venv's site-packages and this checkout on the path: the same code, the same libraries.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import select
import shlex
import shutil
import subprocess
import sys
import termios
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
SITE_PACKAGES = REPO / ".venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
SETUP_SCRIPT = REPO / "scripts" / "approver-setup.sh"


def accounts_available() -> str | None:
    """Why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (useradd, chown)"
    for tool in ("useradd", "userdel", "runuser", "sudo", "script", "chpasswd"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed"
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} is not installed"
    return None


def python_argv(*args: str) -> list[str]:
    """Run this checkout's code with the system interpreter, isolated from the caller's directory
    and environment (a planted `bluegreen/` where it runs is never imported)."""
    path = [str(SITE_PACKAGES), str(REPO)]
    return [SYSTEM_PYTHON, "-I", "-c",
            f"import sys; sys.path[:0] = {path!r}; from bluegreen.faces.cli import main; "
            "raise SystemExit(main())", *args]


def write_bluegreen_wrapper(path: Path) -> Path:
    """A root-owned `bluegreen` for the approver's sudo rule (it and its directories root's alone)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = " ".join(shlex.quote(a) for a in python_argv())
    path.write_text(f"#!/bin/sh\nexec {argv} \"$@\"\n")
    path.chmod(0o755)
    return path


@dataclass
class Account:
    name: str
    home: Path
    password: str

    @property
    def uid(self) -> int:
        return int(subprocess.run(["id", "-u", self.name], capture_output=True, text=True, check=True).stdout)


def make_account(name: str, home: Path, *, password: bool = True) -> Account:
    home.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/bash", name],
                   check=True, capture_output=True)
    secret = secrets.token_urlsafe(18) if password else ""
    if password:
        subprocess.run(["chpasswd"], input=f"{name}:{secret}\n", text=True, check=True, capture_output=True)
    return Account(name, home, secret)


def remove_account(name: str) -> None:
    subprocess.run(["userdel", "--force", name], capture_output=True)
    subprocess.run(["groupdel", name], capture_output=True)
    Path(f"/etc/sudoers.d/bluegreen-approve-{name}").unlink(missing_ok=True)


@contextlib.contextmanager
def accounts(*names: str) -> Iterator[None]:
    """Remove these accounts (and their sudo rules) at the end, whatever happened."""
    try:
        yield
    finally:
        for name in names:
            remove_account(name)


def setup_approvals(approver: str, user: str, stack: str, folder: Path, bluegreen: Path | None = None) -> Path:
    """scripts/approver-setup.sh, as an administrator runs it."""
    args = ["bash", str(SETUP_SCRIPT), approver, user, stack, str(folder)]
    if bluegreen is not None:
        args.append(str(bluegreen))
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return folder / stack


def _controlling_terminal() -> None:  # runs in the child, before exec
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def on_terminal(argv: Sequence[str], answers: Sequence[tuple[bytes, bytes]] = (), *,
                env: dict[str, str] | None = None, cwd: str | None = None,
                timeout: float = 120.0) -> tuple[int, str]:
    """Run `argv` with a new pseudo-terminal as its controlling terminal (what sudo asks its
    password on); each (prompt, reply) answers the next prompt when it appears. Returns the exit
    code and everything printed."""
    master, slave = os.openpty()
    proc = subprocess.Popen(list(argv), stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                            preexec_fn=_controlling_terminal, close_fds=True)
    os.close(slave)
    seen = b""
    pending = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if pending and pending[0][0] in seen:
                prompt, reply = pending.pop(0)
                seen = seen.replace(prompt, prompt + b" <answered>", 1)
                os.write(master, reply + b"\n")
            if proc.poll() is not None and not ready:
                break
        return proc.wait(timeout=30), seen.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
