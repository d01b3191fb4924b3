"""The stack file `bluegreen adopt` writes, run through the real `__main__.py` under Pulumi's mocks.

A real fakepve (in this process, loopback, own CA) holds the lab's containers changed the way hand-
built containers are (no start-up order, notes, on-boot off on some, nesting and keyctl, a mount
point, other sizes); the estate's files (a hand-written haproxy.cfg, a git working copy with
`.env`) are real files read through the local executor. adopt writes the stack; the program must
then register every container as an import whose inputs equal what PVE reports, value by value
(parsed here independently of adopt), so a container rebuilt from its entry is the one that ran.
Since Pulumi 3.174 a value left to differ is no longer refused: the engine would update it in the
same run (test_first_up_adopted.py shows the first up through the engine stand-in); the program
therefore ignores every input of an adopted container but the three it manages in place.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bluegreen.hosts.executor import LocalExecutor
from bluegreen.lab.pve import serve_fakepve
from bluegreen.model.stackfile import effective_stack_file, load_stack, stack_file
from bluegreen.ops.adopt import adopt

from .conftest import PROJECT_DIR, PulumiHarness

HOST = "127.0.3.5"
TIMEOUTS = ["timeoutClone", "timeoutCreate", "timeoutDelete", "timeoutStart", "timeoutUpdate"]
PASSWORD = "Pa55-never-in-the-stack"

HAND_CHANGES: dict[int, dict[str, Any]] = {
    131: {"description": "PostgreSQL 15\nbuilt by hand 2024", "protection": 1, "memory": 3072,
          "features": "nesting=1"},
    132: {"onboot": 0, "description": "BLUE", "features": "nesting=1,keyctl=1", "cores": 3,
          "mp0": "local-lvm:4,mp=/srv/uploads,backup=1"},
    134: {"onboot": 0, "description": "GREEN", "features": "nesting=1,keyctl=1", "startup": "order=5,up=20"},
    136: {"description": "haproxy + state", "memory": 1024, "swap": 0},
}

LEGACY_HAPROXY = """global
    daemon
frontend https_in
    bind 127.0.3.26:443 ssl crt /etc/haproxy/certs/attendant.pem
    bind 127.0.3.26:80
    use_backend jw_green
backend jw_blue
    server blue 127.0.3.22:3000 check
backend jw_green
    server green 127.0.3.24:3000 check
"""


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _estate_files(root: Path) -> None:
    """The hand-built estate's files under each container's root."""
    cfg = root / "ct136/etc/haproxy/haproxy.cfg"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(LEGACY_HAPROXY)
    for vmid in (132, 134):
        app = root / f"ct{vmid}/opt/jw-attendant-scheduler"
        app.mkdir(parents=True)
        _git("init", "-q", "-b", "production-gold-standard", cwd=app)
        _git("remote", "add", "origin", "git@github.com:cloudigan/jw-attendant-scheduler.git", cwd=app)
        (app / ".env").write_text(
            f'DATABASE_URL="postgresql://jw_legacy:{PASSWORD}@127.0.3.21:5432/jw_attendant_scheduler_staging"\n'
            "NODE_ENV=production\n")


def _pve_expected(config: dict[str, Any]) -> dict[str, Any]:
    """What the provider reads back, parsed straight from PVE's answer (not through adopt)."""
    def kv(text: str) -> dict[str, str]:
        return dict(p.split("=", 1) for p in text.split(",") if "=" in p)

    net = kv(config["net0"])
    rootfs = config["rootfs"]
    expected: dict[str, Any] = {
        "cpu": {"cores": float(config["cores"])},
        "memory": {"dedicated": float(config["memory"]), "swap": float(config["swap"])},
        "disk": {"datastoreId": rootfs.split(":")[0], "size": float(kv(rootfs)["size"].rstrip("G"))},
        "startOnBoot": bool(int(config.get("onboot", 0))),
        "protection": bool(int(config.get("protection", 0))),
        "description": config.get("description"),
        "tags": sorted(config.get("tags", "").split(";")) if config.get("tags") else None,
        "unprivileged": bool(int(config.get("unprivileged", 0))),
        "features": {k: v == "1" for k, v in kv(config["features"]).items()} if config.get("features") else None,
        "hostname": config["hostname"],
        "ip": net["ip"], "gateway": net["gw"], "bridge": net["bridge"],
        "firewall": net.get("firewall") == "1", "mac": net["hwaddr"],
        "dns": config.get("nameserver", "").split(),
    }
    if config.get("startup"):
        s = kv(config["startup"])
        expected["startup"] = {"order": float(s["order"]), **({"upDelay": float(s["up"])} if "up" in s else {})}
    else:
        expected["startup"] = None
    mounts = sorted(k for k in config if k.startswith("mp"))
    expected["mountPoints"] = [{"volume": config[k].split(",")[0], "path": kv(config[k])["mp"],
                                "size": kv(config[k])["size"], "backup": kv(config[k]).get("backup") == "1"}
                               for k in mounts] or None
    return expected


def _actual(inputs: dict[str, Any]) -> dict[str, Any]:
    init = inputs["initialization"]
    nic = inputs["networkInterfaces"][0]
    return {
        "cpu": inputs["cpu"], "memory": inputs["memory"], "disk": inputs["disk"],
        "startOnBoot": inputs["startOnBoot"], "protection": inputs["protection"],
        "description": inputs.get("description"), "tags": inputs.get("tags"),
        "unprivileged": inputs["unprivileged"], "features": inputs.get("features"),
        "hostname": init["hostname"], "ip": init["ipConfigs"][0]["ipv4"]["address"],
        "gateway": init["ipConfigs"][0]["ipv4"]["gateway"], "bridge": nic["bridge"],
        "firewall": nic["firewall"], "mac": nic.get("macAddress"), "dns": init["dns"]["servers"],
        "startup": inputs.get("startup"),
        "mountPoints": [{k: mp.get(k) for k in ("volume", "path", "size", "backup")}
                        for mp in inputs["mountPoints"]] if inputs.get("mountPoints") else None,
    }


@pytest.fixture
def adopted_lab(tmp_path: Path) -> Any:
    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True)
    text = (PROJECT_DIR / "stacks/Pulumi.lab.yaml").read_text()
    text = text.replace("/var/tmp/jw-lab/ct", f"{tmp_path}/estate/ct")
    # Nothing of this test in the running lab's directory: its declared colour, adopted stack and
    # secrets go to the test's own (adopt writes all three there otherwise).
    for key in ("active-color", "adopted/Pulumi.lab.yaml", "secrets"):
        text = text.replace(f"/var/tmp/jw-lab/{key}", f"{tmp_path}/lab/{key}")
    (project / "stacks/Pulumi.lab.yaml").write_text(text)
    _estate_files(tmp_path / "estate")
    t = load_stack(project, "lab")
    t = dataclasses.replace(t, proxmox=dataclasses.replace(
        t.proxmox, endpoint=f"https://{HOST}:8006/", token_file=str(tmp_path / "pve/token")))
    (tmp_path / "pve").mkdir()
    with serve_fakepve(tmp_path / "pve", t, host=HOST, port=0) as pve:
        client = pve.client()
        for vmid, change in HAND_CHANGES.items():
            client._lxc(vmid).config.put(**change)
        client._lxc(131).config.put(delete="onboot")
        pve_configs = {vmid: client.container_config(vmid) for vmid in HAND_CHANGES}

        def connect(c: Any) -> LocalExecutor:
            return LocalExecutor(host=c.label)

        first = adopt(t, pve=client, connect=connect)
        second = adopt(load_stack(project, "lab"), pve=client, connect=connect)
    yield project, first, second, pve_configs
    # The lab writes its adopted stack beside itself, never into the tracked file.
    assert (tmp_path / "lab/adopted/Pulumi.lab.yaml").is_file()
    assert (tmp_path / "lab/secrets/database-password").read_text() == PASSWORD + "\n"


def adopted_text(project: Path) -> str:
    return effective_stack_file(project, "lab").read_text()


def test_adopt_reads_the_estate_and_writes_no_secret(adopted_lab: Any) -> None:
    project, first, second, _ = adopted_lab
    text = adopted_text(project)
    assert effective_stack_file(project, "lab") != stack_file(project, "lab")
    assert first.written and first.diff
    assert first.findings.live_color == "green" and "use_backend" in str(first.findings.live_source)
    assert first.findings.repo == "git@github.com:cloudigan/jw-attendant-scheduler.git"
    assert (first.findings.database_user, first.findings.database_name) == (
        "jw_legacy", "jw_attendant_scheduler_staging")
    assert PASSWORD not in text and PASSWORD not in str(first.to_json())
    assert text.startswith("# The same estate on one machine")  # comments kept
    config = yaml.safe_load(text)["config"]
    assert config["bluegreen:activeColor"] == "green"
    assert config["bluegreen:database"]["user"] == "jw_legacy"
    # Idempotent: the second run finds the file as it would write it.
    assert second.diff == "" and not second.written


def test_adopted_stack_registers_imports_equal_to_what_pve_reports(
        adopted_lab: Any, pulumi_harness: PulumiHarness, lab_key: str) -> None:
    project, _, _, pve_configs = adopted_lab
    config = dict(yaml.safe_load(adopted_text(project))["config"])
    config["proxmoxve:apiToken"] = "root@pam!deploy=mock-token-secret"
    config["bluegreen:ssh"]["publicKeys"] = [f"file:{lab_key}"]  # not the running lab's own key
    run = pulumi_harness.run("lab", config, secret_keys=("proxmoxve:apiToken",))
    assert run.error is None, run.error
    containers = run.containers()
    assert sorted(containers) == sorted(HAND_CHANGES)
    for vmid, reg in containers.items():
        assert reg.import_id == f"pve/{vmid}"
        assert reg.retain_on_delete is True
        for ignored in ("vmId", *TIMEOUTS, "operatingSystem", "initialization", "memory", "networkInterfaces"):
            assert ignored in reg.ignore_changes
        assert _actual(reg.inputs) == _pve_expected(pve_configs[vmid]), f"CT {vmid} would not import cleanly"
