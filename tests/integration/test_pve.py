"""PveClient against fakepve: the lab's server process, and an in-process fake for injected faults.

Everything listens on 127.0.3.5 on a port the system picks, with its own certificate and token
in a temporary directory, so these tests never touch a running lab or anything off loopback.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from proxmoxer import ProxmoxAPI

from bluegreen.hosts.pve import PveClient, Snapshot, from_topology, parse_endpoint, snapshot_name, snapshots_to_prune
from bluegreen.lab import pve as lab_pve
from bluegreen.lab.pve import InProcessPve, lab_client, serve_fakepve, start_fakepve
from bluegreen.lab.pve_server import container_create_params
from bluegreen.lab.services import LabError, ManagedProcess
from bluegreen.model.errors import ConfigError, ProxmoxError
from bluegreen.model.secrets import TOKEN_ENV, read_token
from bluegreen.model.sensitive import MASK, Sensitive
from bluegreen.model.stackfile import load_stack
from bluegreen.model.topology import Topology

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
HOST = "127.0.3.5"
VMIDS = (131, 132, 134, 136)
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def lab_topology(work: Path) -> Topology:
    """The lab stack, moved to a free port and a private token file."""
    t = load_stack(PROJECT, "lab")
    settings = dataclasses.replace(t.proxmox, endpoint=f"https://{HOST}:{free_port()}/",
                                   token_file=str(work / "token"), insecure=False)
    return dataclasses.replace(t, proxmox=settings)


def api_of(client_cfg: InProcessPve | tuple[Path, Topology]) -> ProxmoxAPI:
    """A raw proxmoxer client, for changing a container behind PveClient's back."""
    if isinstance(client_cfg, InProcessPve):
        endpoint, token_id, secret, ca = (client_cfg.endpoint, client_cfg.token_id,
                                          client_cfg.token_secret, client_cfg.ca_file)
    else:
        lab, t = client_cfg
        token_id, secret = read_token(t, environ={})
        endpoint, ca = t.proxmox.endpoint, lab_pve.ca_file(lab)
    host_port = endpoint.removeprefix("https://").rstrip("/")
    host, port = host_port.split(":")
    user, _, name = token_id.partition("!")
    return ProxmoxAPI(host, port=int(port), user=user, token_name=name, token_value=secret.reveal(),
                      verify_ssl=str(ca), timeout=10)


# --------------------------------------------------------------------------- the server process


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Topology]]:
    work = tmp_path_factory.mktemp("pve-lab")
    t = lab_topology(work)
    process = start_fakepve(work, t)
    try:
        yield work, t
    finally:
        process.stop()
    assert not process.alive()


@pytest.fixture(scope="module")
def client(lab: tuple[Path, Topology]) -> PveClient:
    return lab_client(*lab)


def test_the_four_containers_run_as_the_topology_describes(lab: tuple[Path, Topology],
                                                            client: PveClient) -> None:
    _, t = lab
    states = client.statuses([*VMIDS, 999])
    assert states[999].status == "missing"
    for c in t.containers:
        state = states[c.vmid]
        assert state.running, state
        assert state.name == c.name
        assert state.maxmem_bytes == c.memory * MIB
        assert state.mem_bytes > 0
        assert state.uptime_s >= 0
        assert state.lock is None
        assert client.container_status(c.vmid).name == c.name
    config = api_of(lab).nodes("pve").lxc(134).config.get()
    assert "ip=127.0.3.24/24" in config["net0"]
    assert config["tags"] == "app;green;jw-attendant"
    assert config["cores"] == 2


def test_the_server_writes_a_private_token_and_a_ca_clients_verify_with(lab: tuple[Path, Topology],
                                                                         client: PveClient) -> None:
    work, t = lab
    token_file = Path(t.proxmox.token_file or "")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token_id, secret = read_token(t, environ={})
    assert token_id == "root@pam!deploy"
    assert token_file.read_text().strip() == f"root@pam!deploy={secret.reveal()}"
    assert lab_pve.ca_file(work).is_file()
    assert client.version()
    # The system trust store does not know the lab's certificate: verification is really on.
    unverified = PveClient(t.proxmox.endpoint, "pve", token_id, secret, verify=True)
    with pytest.raises(ProxmoxError, match="certificate verify failed") as err:
        unverified.version()
    assert secret.reveal() not in str(err.value)


def test_snapshot_list_and_rollback_restore_the_container(lab: tuple[Path, Topology],
                                                          client: PveClient) -> None:
    client.snapshot(134, "bluegreen-before", "before the deploy")
    snaps = {s.name: s for s in client.snapshots(134)}
    assert snaps["bluegreen-before"].description == "before the deploy"
    assert snaps["bluegreen-before"].snaptime > 0

    api_of(lab).nodes("pve").lxc(134).config.put(hostname="changed-by-hand")
    assert client.container_status(134).name == "changed-by-hand"
    client.rollback(134, "bluegreen-before")
    state = client.container_status(134)
    assert state.name == "jw-green"
    # PVE stops a container to roll it back; it was running, so it runs again.
    assert state.running


def test_rollback_leaves_a_stopped_container_stopped_unless_asked(lab: tuple[Path, Topology],
                                                                 client: PveClient) -> None:
    client.snapshot(136, "bluegreen-lb")
    client.rollback(136, "bluegreen-lb", start=False)
    assert client.container_status(136).status == "stopped"
    client.rollback(136, "bluegreen-lb")
    assert client.container_status(136).status == "stopped"
    client.rollback(136, "bluegreen-lb", start=True)
    assert client.container_status(136).running


def test_prune_deletes_only_our_oldest_snapshots(client: PveClient) -> None:
    for name in ("bluegreen-p1", "bluegreen-p2", "by-hand", "bluegreen-p3", "bluegreen-p4"):
        client.snapshot(132, name)
    assert client.prune_snapshots(132, keep=2) == ["bluegreen-p1", "bluegreen-p2"]
    assert [s.name for s in client.snapshots(132)] == ["by-hand", "bluegreen-p3", "bluegreen-p4"]
    assert client.prune_snapshots(132, keep=2) == []
    assert client.prune_snapshots(132, keep=0) == ["bluegreen-p3", "bluegreen-p4"]
    assert [s.name for s in client.snapshots(132)] == ["by-hand"]
    with pytest.raises(ConfigError, match="expected 0 or more"):
        client.prune_snapshots(132, keep=-1)


def test_pve_errors_name_the_step_in_pve_words(client: PveClient) -> None:
    with pytest.raises(ProxmoxError) as err:
        client.container_status(999)
    assert str(err.value) == ("status of CT 999: 500 Internal Server Error: "
                              "Configuration file 'nodes/pve/lxc/999.conf' does not exist")
    with pytest.raises(ProxmoxError) as err:
        client.delete_snapshot(131, "never-made")
    assert str(err.value) == ("deleting snapshot 'never-made' of CT 131: task failed: "
                              "snapshot 'never-made' does not exist")
    client.snapshot(131, "bluegreen-twice")
    with pytest.raises(ProxmoxError, match="snapshot 'bluegreen-twice' of CT 131: task failed: "
                                           "snapshot name 'bluegreen-twice' already used"):
        client.snapshot(131, "bluegreen-twice")


def test_a_wrong_token_is_refused_in_pve_words_without_showing_it(lab: tuple[Path, Topology]) -> None:
    work, t = lab
    _, real = read_token(t, environ={})
    wrong = Sensitive("0badc0de-0000-4000-8000-000000000000")
    client = PveClient(t.proxmox.endpoint, "pve", "root@pam!deploy", wrong,
                       verify=str(lab_pve.ca_file(work)))
    with pytest.raises(ProxmoxError) as err:
        client.statuses(VMIDS)
    text = str(err.value)
    assert text.startswith("listing the containers of node pve: 401 Unauthorized: authentication failure")
    assert "root@pam!deploy" in text
    assert wrong.reveal() not in text and real.reveal() not in text
    assert wrong.reveal() not in repr(client)


def test_a_closed_port_is_reported_as_unreachable(tmp_path: Path) -> None:
    client = PveClient(f"https://{HOST}:{free_port()}/", "pve", "root@pam!deploy", Sensitive("s3cret-value"),
                       verify=True, timeout=5)
    with pytest.raises(ProxmoxError, match=r"reading the PVE version: cannot reach https://127\.0\.3\.5:\d+/"):
        client.version()


def test_bad_input_is_refused_before_any_request(client: PveClient) -> None:
    with pytest.raises(ConfigError, match="snapshot name 'has space'"):
        client.snapshot(134, "has space")
    with pytest.raises(ConfigError, match="snapshot name"):
        client.snapshot(134, "x" * 41)
    with pytest.raises(ConfigError, match="container id 7"):
        client.container_status(7)
    with pytest.raises(ConfigError, match="expected https://host:8006/"):
        PveClient("http://127.0.3.5:8006/", "pve", "root@pam!deploy", Sensitive("abcd"))
    with pytest.raises(ConfigError, match="not an API token id"):
        PveClient("https://127.0.3.5:8006/", "pve", "root-deploy", Sensitive("abcd"))
    with pytest.raises(ConfigError, match="no such file"):
        PveClient("https://127.0.3.5:8006/", "pve", "root@pam!deploy", Sensitive("abcd"),
                  verify="/nonexistent/ca.pem")


def test_a_restart_keeps_the_token_and_nothing_else(tmp_path: Path) -> None:
    t = lab_topology(tmp_path)
    process = start_fakepve(tmp_path, t)
    try:
        first = Path(t.proxmox.token_file or "").read_text()
        lab_client(tmp_path, t).snapshot(134, "bluegreen-gone")
        pid = process.pid()
        assert pid is not None
        assert process.stop()
        assert process.pid() is None
        # SIGTERM is handled: the server shut down on its own instead of being killed.
        assert "fakepve stopped" in lab_pve.log_file(tmp_path).read_text()

        process = start_fakepve(tmp_path, t)
        assert process.pid() not in (None, pid)
        assert Path(t.proxmox.token_file or "").read_text() == first
        client = lab_client(tmp_path, t)
        assert [s.name for s in client.snapshots(134)] == []
        assert all(s.running for s in client.statuses(VMIDS).values())
    finally:
        process.stop()
    assert not process.alive()


def test_start_fakepve_reports_a_server_that_cannot_start(tmp_path: Path) -> None:
    t = lab_topology(tmp_path)
    _, port = parse_endpoint(t.proxmox.endpoint)
    with socket.socket() as busy:
        busy.bind((HOST, port))
        busy.listen()
        try:
            with pytest.raises(LabError, match="fakepve exited before answering") as err:
                start_fakepve(tmp_path, t, timeout=30)
        finally:
            # Whatever happened, nothing this test started may outlive it.
            ManagedProcess("fakepve", lab_pve.pid_file(tmp_path)).stop()
    assert "address already in use" in str(err.value).lower()
    assert not lab_pve.pid_file(tmp_path).exists()


def test_start_fakepve_refuses_a_node_off_loopback(tmp_path: Path) -> None:
    t = load_stack(PROJECT, "prod")
    with pytest.raises(ConfigError, match="loopback"):
        start_fakepve(tmp_path, t)


# --------------------------------------------------------------------------- injected faults


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[InProcessPve]:
    with serve_fakepve(tmp_path / "pve", lab_topology(tmp_path), host=HOST) as served:
        yield served


def test_a_locked_container_fails_the_snapshot_naming_the_step(fake: InProcessPve) -> None:
    client = fake.client()
    fake.call(fake.pve.snapshot_lock, 134, "backup")
    assert client.container_status(134).lock == "backup"
    with pytest.raises(ProxmoxError) as err:
        client.snapshot(134, "bluegreen-locked")
    assert str(err.value) == "snapshot 'bluegreen-locked' of CT 134: task failed: CT is locked (backup)"
    fake.call(fake.pve.unlock, 134)
    client.snapshot(134, "bluegreen-locked")
    assert [s.name for s in client.snapshots(134)] == ["bluegreen-locked"]


def test_injected_task_errors_end_as_proxmox_errors(fake: InProcessPve) -> None:
    client = fake.client()
    fake.call(fake.pve.fail, "POST", "/nodes/pve/lxc/132/snapshot", error="snapshot_feature_not_available")
    with pytest.raises(ProxmoxError, match=r"^snapshot 'bluegreen-a' of CT 132: task failed: "
                                           r"snapshot feature is not available$"):
        client.snapshot(132, "bluegreen-a")

    client.snapshot(134, "bluegreen-r")
    fake.call(fake.pve.fail, "POST", "/nodes/pve/lxc/134/snapshot/bluegreen-r/rollback", error="locked",
              times=1)
    with pytest.raises(ProxmoxError, match=r"^rollback of CT 134 to snapshot 'bluegreen-r': task failed: "
                                           r"CT is locked \(backup\)$"):
        client.rollback(134, "bluegreen-r")
    client.rollback(134, "bluegreen-r")  # the fault was for one request only


def test_refusals_outside_a_task_keep_pve_status_and_words(fake: InProcessPve) -> None:
    client = fake.client()
    fake.call(fake.pve.fail, "POST", "/nodes/pve/lxc/134/snapshot", error="permission_denied")
    with pytest.raises(ProxmoxError) as err:
        client.snapshot(134, "bluegreen-x")
    assert str(err.value) == ("snapshot 'bluegreen-x' of CT 134: 403 Forbidden: "
                              "Permission check failed (/vms/134, VM.Snapshot)")
    fake.call(fake.pve.lose_quorum)
    with pytest.raises(ProxmoxError, match="cluster not ready - no quorum"):
        client.delete_snapshot(134, "bluegreen-x")
    fake.call(fake.pve.fail, "GET", "/nodes/pve/lxc", status=502, message="<html>Bad Gateway</html>",
              html=True)
    with pytest.raises(ProxmoxError, match="listing the containers of node pve: 502 Bad Gateway"):
        client.statuses(VMIDS)


def test_a_task_that_outlasts_its_deadline_is_reported(fake: InProcessPve) -> None:
    fake.call(fake.pve.ct_secs.__setitem__, "snapshot", 100_000)
    client = fake.client(task_timeout=0.3)
    with pytest.raises(ProxmoxError, match=r"snapshot 'bluegreen-slow' of CT 134: task UPID:pve:.* "
                                           r"still running after 0\.3s"):
        client.snapshot(134, "bluegreen-slow")


def test_an_api_that_does_not_answer_times_out(fake: InProcessPve) -> None:
    fake.call(fake.pve.flaky_network, hang_rate=1.0, hang_secs=20)
    client = fake.client(timeout=0.5)
    with pytest.raises(ProxmoxError, match=r"status of CT 134: no answer from .* within 0\.5s"):
        client.container_status(134)


def test_the_token_never_appears_in_errors_or_logs(fake: InProcessPve,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = fake.token_secret.reveal()
    client = fake.client()
    messages = []
    # A proxy that echoes the Authorization header back in its error page.
    fake.call(fake.pve.fail, "GET", "/version", status=500,
              message=f"bad header Authorization: PVEAPIToken={fake.token_id}={secret}")
    fake.call(fake.pve.fail, "POST", "/nodes/pve/lxc/131/snapshot", status=500,
              message=f"worker died holding {secret}")
    for action in (client.version, lambda: client.snapshot(131, "bluegreen-leak"),
                   lambda: client.container_status(999)):
        with pytest.raises(ProxmoxError) as err:
            action()
        messages.append(str(err.value))
    assert MASK in messages[0] and MASK in messages[1]
    assert all(secret not in m for m in messages)
    assert secret not in caplog.text
    assert secret not in repr(client)


# --------------------------------------------------------------------------- from stack config


def test_from_topology_reads_the_token_from_the_environment(fake: InProcessPve, tmp_path: Path) -> None:
    t = lab_topology(tmp_path)
    t = dataclasses.replace(t, proxmox=dataclasses.replace(t.proxmox, endpoint=fake.endpoint,
                                                           token_file=None))
    env = {TOKEN_ENV: f"{fake.token_id}={fake.token_secret.reveal()}"}
    client = from_topology(t, environ=env, ca_file=str(fake.ca_file))
    assert client.statuses(VMIDS)[132].running
    same = PveClient.from_topology(t, environ=env, ca_file=str(fake.ca_file))
    assert same.container_status(132).name == "jw-blue"

    mismatched = {TOKEN_ENV: f"root@pam!other={fake.token_secret.reveal()}"}
    with pytest.raises(ConfigError) as err:
        from_topology(t, environ=mismatched, ca_file=str(fake.ca_file))
    assert "'root@pam!other'" in str(err.value) and "'root@pam!deploy'" in str(err.value)
    assert fake.token_secret.reveal() not in str(err.value)

    with pytest.raises(ConfigError, match=f"{TOKEN_ENV}: expected user@realm!tokenid=secret") as err:
        from_topology(t, environ={TOKEN_ENV: "only-a-secret-value"})
    assert "only-a-secret-value" not in str(err.value)
    with pytest.raises(ConfigError, match="no Proxmox API token"):
        from_topology(t, environ={})


def test_from_topology_reads_either_form_of_token_file(fake: InProcessPve, tmp_path: Path) -> None:
    token_file = tmp_path / "token-file"
    t = lab_topology(tmp_path)
    t = dataclasses.replace(t, proxmox=dataclasses.replace(t.proxmox, endpoint=fake.endpoint,
                                                           token_file=str(token_file)))
    for text in (f"{fake.token_secret.reveal()}\n", f"{fake.token_id}={fake.token_secret.reveal()}\n"):
        token_file.write_text(text)
        assert from_topology(t, environ={}, ca_file=str(fake.ca_file)).version()

    bare = dataclasses.replace(t, proxmox=dataclasses.replace(t.proxmox, token_id=None))
    token_file.write_text(fake.token_secret.reveal())
    with pytest.raises(ConfigError, match=r"holds only a secret: set proxmox\.tokenId"):
        from_topology(bare, environ={})
    token_file.write_text("")
    with pytest.raises(ConfigError, match="the file is empty"):
        from_topology(t, environ={})
    token_file.unlink()
    with pytest.raises(ConfigError, match="No such file"):
        from_topology(t, environ={})


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_only_insecure_turns_verification_off(fake: InProcessPve, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    t = lab_topology(tmp_path)
    t = dataclasses.replace(t, proxmox=dataclasses.replace(t.proxmox, endpoint=fake.endpoint))
    env = {TOKEN_ENV: f"{fake.token_id}={fake.token_secret.reveal()}"}
    with pytest.raises(ProxmoxError, match="certificate verify failed"):
        from_topology(t, environ=env).version()

    insecure = dataclasses.replace(t, proxmox=dataclasses.replace(t.proxmox, insecure=True))
    with caplog.at_level(logging.WARNING, logger="bluegreen.pve"):
        assert from_topology(insecure, environ=env).version()
    assert "TLS verification of" in caplog.text and "is off" in caplog.text


# --------------------------------------------------------------------------- pure parts


def test_create_params_follow_the_topology(tmp_path: Path) -> None:
    t = load_stack(PROJECT, "lab")
    params = container_create_params(t, t.container(132))
    # What the program declares: the firewall on, nesting, the app's start-up order.
    assert params["net0"] == "name=eth0,bridge=vmbr0,firewall=1,ip=127.0.3.22/24,gw=127.0.3.1"
    assert (params["features"], params["startup"], params["onboot"]) == ("nesting=1", "order=2,up=5", 1)
    assert params["rootfs"] == "local-lvm:16"
    assert params["tags"] == "app;blue;jw-attendant"
    assert params["ostemplate"] == "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
    assert (params["hostname"], params["cores"], params["memory"], params["swap"]) == (
        "jw-blue", 2, 2048, 512)


def test_snapshot_names_fit_pve_limits() -> None:
    from datetime import datetime

    name = snapshot_name("deploy green v2.3.1 (abc1234) and a long tail", datetime(2025, 1, 2, 3, 4, 5))
    assert name.startswith("bluegreen-20250102030405-deploy-green-v2")
    assert len(name) <= 40
    assert snapshot_name("", datetime(2025, 1, 2, 3, 4, 5)) == "bluegreen-20250102030405"


def test_pruning_orders_same_second_snapshots_by_their_chain() -> None:
    snaps = [Snapshot("bluegreen-c", "", 100, "bluegreen-b"), Snapshot("bluegreen-a", "", 100, None),
             Snapshot("mine", "", 50, None), Snapshot("bluegreen-b", "", 100, "bluegreen-a")]
    assert [s.name for s in snapshots_to_prune(snaps, keep=1)] == ["bluegreen-a", "bluegreen-b"]
    assert snapshots_to_prune(snaps, keep=5) == []

