"""Trust that is verified (issue 24), on the lab: the Proxmox node's certificate shown and pinned by
`bluegreen trust --proxmox` and checked on every connection, and a host at an address without a
pin refused with its key shown, never trusted on first use by the bootstrap."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bluegreen.hosts.executor import fetch_host_key, fingerprint, ssh_target
from bluegreen.hosts.providers import BootstrapProvider, bootstrap_props
from bluegreen.hosts.pve import PveClient, certificate_fingerprint, fetch_certificate
from bluegreen.lab.lab import Lab
from bluegreen.model.errors import HostKeyError, ProxmoxError
from bluegreen.model.stackfile import load_stack
from bluegreen.model.tlspin import pinned_certificate_path, show_fingerprint
from bluegreen.ops.deploy import deploy
from bluegreen.ops.estate import Estate
from tests.integration.support import copy_project

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BLUEGREEN = REPO / ".venv" / "bin" / "bluegreen"


def cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BLUEGREEN), *args, "--stack", "lab", "--cwd", str(project)], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_trust_proxmox_shows_pins_and_the_pin_is_checked(lab: Lab, tmp_path: Path) -> None:
    project = copy_project(lab.project_dir, tmp_path)
    t = load_stack(project, "lab")
    real = show_fingerprint(certificate_fingerprint(fetch_certificate(t.proxmox.endpoint)))
    bundle = Path(pinned_certificate_path(t))
    try:
        refused = cli(project, "trust", "--proxmox", "--fingerprint", "AB" * 32)
        assert refused.returncode == 2 and f"presented {real}, which is not one of the fingerprints" in refused.stderr
        assert load_stack(project, "lab").proxmox.fingerprint is None and not bundle.exists()

        pinned = cli(project, "trust", "--proxmox", "--json", "--fingerprint", real)
        assert pinned.returncode == 0, pinned.stderr
        assert json.loads(pinned.stdout)["proxmox"]["fingerprint"] == real
        assert f"certificate {real}" in pinned.stderr
        t = load_stack(project, "lab")
        assert t.proxmox.fingerprint and show_fingerprint(t.proxmox.fingerprint) == real
        assert bundle.exists() and "BEGIN CERTIFICATE" in bundle.read_text()
        checked = cli(project, "config", "check")
        assert f"proxmox TLS: verified: certificate pinned ({real})" in checked.stderr

        # The pin is what is checked: the node's own certificate passes without the CA file, and a
        # pin of another certificate stops before anything (the token included) is sent.
        no_ca = dataclasses.replace(t, proxmox=dataclasses.replace(t.proxmox, ca_file=None))
        assert PveClient.from_topology(no_ca).version()
        other = dataclasses.replace(t, proxmox=dataclasses.replace(t.proxmox, fingerprint="00" * 32))
        with pytest.raises(ProxmoxError, match=r"not the one pinned in proxmox\.fingerprint") as info:
            PveClient.from_topology(other).version()
        assert "nothing was sent" in str(info.value)
    finally:
        bundle.unlink(missing_ok=True)


def test_a_host_without_a_pin_is_refused_with_its_key_shown_by_the_bootstrap(lab: Lab, tmp_path: Path) -> None:
    """What a bootstrap at a new address meets: no pin for it. An update (never a replace) connects
    strictly: the key is shown and must be pinned with `bluegreen trust`; nothing is pinned by itself."""
    t = lab.topology
    host = t.app_host("green")
    known = tmp_path / "known_hosts"
    shutil.copy(t.ssh.known_hosts, known)
    kept = [line for line in known.read_text().splitlines() if f"[{host.ip}]:" not in line]
    known.write_text("".join(f"{line}\n" for line in kept))
    props = bootstrap_props(t, host)
    props["connection"] = {**props["connection"], "known_hosts": str(known)}
    provider = BootstrapProvider()
    moved = {**props, "connection": {**props["connection"], "address": "127.0.3.99"}}
    assert provider.diff("id", moved, props).replaces == []  # the address changed: an update
    key_type, key_b64 = fetch_host_key(ssh_target(t, host))
    with pytest.raises(HostKeyError) as info:
        provider.update("id", moved, props)
    message = str(info.value)
    assert f"it presents {key_type} {fingerprint(key_b64)}" in message
    assert f"bluegreen trust green --fingerprint {fingerprint(key_b64)}" in message
    assert known.read_text() == "".join(f"{line}\n" for line in kept)


def test_every_up_finds_a_loosened_secret_file_and_the_update_tightens_it(lab: Lab) -> None:
    """The bootstrap provider's diff (run on every `up`) checks the host's secret files read-only;
    drift becomes an update, which tightens them."""
    import stat

    from bluegreen.render.commands import default_pm2_home

    t = lab.topology
    dumps = {color: Path(t.app_host(color).path(default_pm2_home(t))) / "dump.pm2" for color in t.app_hosts}
    if not any(d.exists() for d in dumps.values()):  # no colour has run a release yet
        deploy(Estate(t), "v1", migrate=True, snapshot=False)
    color = next(c for c, d in dumps.items() if d.exists())
    host, dump = t.app_host(color), dumps[color]
    props = bootstrap_props(t, host)
    provider = BootstrapProvider()
    assert not provider.diff("id", props, props).changes
    dump.chmod(0o644)  # `pm2 save` by hand, with the default umask
    try:
        drift = provider.diff("id", props, props)
        assert drift.changes and drift.changed == ["secret_modes"] and drift.replaces == []
        assert stat.S_IMODE(dump.stat().st_mode) == 0o644  # the diff changed nothing
        provider.update("id", props, props)
        assert stat.S_IMODE(dump.stat().st_mode) == 0o600
        assert not provider.diff("id", props, props).changes
    finally:
        dump.chmod(0o600)
