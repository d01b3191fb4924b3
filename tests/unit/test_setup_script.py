"""`scripts/setup.sh --check` names the Debian packages a machine lacks (a bare Debian 12 lacks make
and python3-venv among others) and the one apt-get line that installs them, installing nothing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "scripts" / "setup.sh"
# What the script itself runs besides the tools it checks for.
ITS_OWN = ("dirname", "awk", "id", "cat")
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"  # the system's tools, not a shim in front
CHECKED = ("make", "python3", "curl", "haproxy", "sshd", "socat", "git", "node", "npm", "ssh-keygen", "jq",
           "flock", "ip", "sudo", "prometheus", "promtool", "prometheus-node-exporter",
           "prometheus-blackbox-exporter")


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/bash", str(SETUP), "--check"], env={"PATH": str(path)}, capture_output=True,
                          text=True, timeout=60)


def bin_dir(tmp_path: Path, leave_out: set[str]) -> Path:
    found = tmp_path / "bin"
    found.mkdir()
    for tool in (*ITS_OWN, *CHECKED):
        where = shutil.which(tool, path=SYSTEM_PATH)
        if tool not in leave_out and where:
            (found / tool).symlink_to(where)
    return found


def test_everything_there_is_said_and_installs_nothing(tmp_path: Path) -> None:
    if any(shutil.which(t, path=SYSTEM_PATH) is None for t in CHECKED):
        pytest.skip("this machine itself lacks a package setup.sh installs")
    done = check(bin_dir(tmp_path, set()))
    assert done.returncode == 0, done.stderr
    assert "every Debian package is there" in done.stderr


def test_a_bare_machine_is_told_what_is_missing(tmp_path: Path) -> None:
    path = bin_dir(tmp_path, {"make", "python3", "curl", "jq"})
    # Debian's python3 without python3-venv: no ensurepip, so `python3 -m venv` cannot make a venv.
    (path / "python3").write_text('#!/bin/sh\ncase "$*" in *ensurepip*) exit 1 ;; esac\nexit 0\n')
    (path / "python3").chmod(0o755)
    done = check(path)
    assert done.returncode == 1
    missing = done.stderr.split("missing Debian packages: ", 1)[1].splitlines()[0].split()
    assert {"make", "python3-venv", "curl", "jq"} <= set(missing), done.stderr
    assert "python3" not in missing  # it is there, only its venv support is not
    assert f"apt-get install --no-install-recommends {' '.join(missing)}" in done.stderr
