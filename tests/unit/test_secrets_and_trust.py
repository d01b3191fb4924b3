"""Issue 24's pure parts: every secret the stack knows, scrubbed by value and by shape from
everything the CLI writes; the lock token kept out of reports; the Proxmox certificate pinned
(checked in the handshake, before the token goes out); template downloads only over https with a
checksum; approval files and host keys shown the way people check them."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, cast

import pytest

from bluegreen.hosts.pve import PveClient, certificate_fingerprint, fetch_certificate
from bluegreen.model.config import config_getter, from_config
from bluegreen.model.errors import ProxmoxError, ValidationError
from bluegreen.model.lock import LockInfo
from bluegreen.model.secrets import secrets_in_env_text, stack_secrets
from bluegreen.model.sensitive import MASK, SecretSet, Sensitive, redact, redact_tree
from bluegreen.model.stackfile import load_stack, read_stack_config, set_proxmox_fingerprint_in_file
from bluegreen.model.tlspin import normalize_fingerprint, show_fingerprint
from bluegreen.model.topology import AppEnvVar, Topology

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "db-Pa55w0rd/with+odd&chars"
KEY = "q8Xc1mHc3Zl0p9Yx4s2A+7bVvF0=="


# ------------------------------------------------------------------------ by value and by shape


@pytest.mark.parametrize("shape", [
    "{value}", "NEXT_SERVER_ACTIONS_ENCRYPTION_KEY={value}", "password {value}", '{{"password":"{value}"}}',
    "postgresql://jw_app:{quoted}@10.0.0.1:5432/db", "DATABASE_URL='postgresql://u:{quoted}@h/d'",
    "line one\n  at {value} (stack)", '{{"error": "{json}"}}',
])
@pytest.mark.parametrize("value", [PASSWORD, KEY, 'quote"and\\backslash-secret'])
def test_a_known_secret_leaves_in_no_spelling(shape: str, value: str) -> None:
    from urllib.parse import quote

    text = shape.format(value=value, quoted=quote(value, safe=""), json=json.dumps(value)[1:-1])
    cleaned = redact(text, SecretSet([value]))
    for spelling in (value, quote(value, safe=""), json.dumps(value)[1:-1]):
        assert spelling not in cleaned
    assert MASK in cleaned


@pytest.mark.parametrize(("text", "leak"), [
    ('{"password": "unknown-pw-1"}', "unknown-pw-1"),
    ("{'db_password': 'unknown-pw-2'}", "unknown-pw-2"),
    ("NEXT_SERVER_ACTIONS_ENCRYPTION_KEY=c2VjcmV0LWtleQ==", "c2VjcmV0LWtleQ"),
    ("export STRIPE_SECRET=sk_live_abcdef", "sk_live_abcdef"),
    ("GITHUB_TOKEN=ghp_abcdef123", "ghp_abcdef123"),
    ("redis://default:unknown-pw-3@cache:6379", "unknown-pw-3"),
])
def test_shapes_are_a_second_net(text: str, leak: str) -> None:
    assert leak not in redact(text)


@pytest.mark.parametrize("text", ["passwordEnv: BLUEGREEN_DB_PASSWORD", "tokenId: root@pam!deploy",
                                  "deploy v2 (3f2a9c1) to green", "the API token root@pam!x was refused"])
def test_shapes_leave_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


def test_redacted_json_stays_json() -> None:
    value = {"error": 'KEY="abc" {"password":"p\\w"} token=ab\\c', "list": ['x_TOKEN="q"', PASSWORD]}
    text = json.dumps(value)
    for cleaned in (redact(text, [Sensitive(PASSWORD)]), json.dumps(redact_tree(value, [Sensitive(PASSWORD)]))):
        assert PASSWORD not in cleaned
        json.loads(cleaned)


def test_a_secret_set_grows_and_everyone_holding_it_sees_the_new_value() -> None:
    shared = SecretSet(["first-secret"])
    holders = [shared, SecretSet(shared)]
    shared.add("learned-later", "", None, "abc")  # empty, missing and too short values are ignored
    assert len(shared) == 2 and "learned-later" in shared
    assert redact("learned-later", holders[0]) == MASK
    assert "abc" not in shared


# ------------------------------------------------------------------------ what the stack knows


def lab_with_secrets(tmp_path: Path) -> Any:
    config = copy.deepcopy(read_stack_config(REPO, "lab"))
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    hook_file = tmp_path / "hook"
    hook_file.write_text("https://hooks.example.test/services/T000/B000/abcdefghijklmnopqrstu?token=webhook-tok-123\n")
    token_file = tmp_path / "token"
    token_file.write_text("pve-token-secret-uuid\n")
    config["bluegreen:app"]["env"] = {"NEXT_SERVER_ACTIONS_ENCRYPTION_KEY": {"secret": "k", "file": str(key_file)}}
    config["bluegreen:events"]["webhooks"] = [{"name": "x", "urlFile": str(hook_file)}]
    config["bluegreen:proxmox"]["tokenFile"] = str(token_file)
    return from_config(config_getter(config), stack="lab", project_dir=REPO)


def test_stack_secrets_gather_every_secret_the_stack_knows(tmp_path: Path) -> None:
    t = lab_with_secrets(tmp_path)
    env = {"BLUEGREEN_DB_PASSWORD": PASSWORD, "PULUMI_CONFIG_PASSPHRASE": "pass-phrase", "HOME": "/root"}
    known = stack_secrets(t, env)
    for value in (PASSWORD, KEY, "pass-phrase", "pve-token-secret-uuid", "webhook-tok-123",
                  "abcdefghijklmnopqrstu"):
        assert value in known, value
    assert "/root" not in known


def test_stack_secrets_never_fail_for_what_is_missing() -> None:
    t = adopted_prod()
    assert len(stack_secrets(t, {})) == 0


def test_an_env_file_gives_its_secret_values(tmp_path: Path) -> None:
    text = (f"# Written by bluegreen\nDATABASE_URL=postgresql://jw_app:db-pw%2Fx@127.0.3.21:5432/db\n"
            f'NEXT_SERVER_ACTIONS_ENCRYPTION_KEY="{KEY}"\nNODE_ENV=production\nPORT=3000\n'
            "export SESSION_SECRET='s3ss10n secret'\nCUSTOM=declared-secret-value\n"
            # Named like secrets, holding settings: the estate's .env has them (never masked).
            "AUTH_TRUST_HOST=true\nAUTH_URL=https://jw.example.org/auth\nTOKEN_TTL=3600\nAPI_KEY=off\n")
    t = lab_with_secrets(tmp_path)
    custom = AppEnvVar(name="CUSTOM", secret="c")
    t = dataclasses.replace(t, app=dataclasses.replace(t.app, env=(*t.app.env, custom)))
    found = secrets_in_env_text(text, t)
    assert set(found) == {"db-pw/x", KEY, "s3ss10n secret", "declared-secret-value"}


@pytest.mark.parametrize("value", ["true", "False", "null", "on", "no"])
def test_a_flag_is_never_a_secret_by_value(value: str) -> None:
    secrets = SecretSet([value])
    assert len(secrets) == 0
    assert redact('{"ok": true, "noop": false, "error": null}', secrets) == '{"ok": true, "noop": false, "error": null}'


def test_a_json_result_stays_json_whatever_the_secrets_are() -> None:
    from bluegreen.faces.cli_support import Output, RedactingStream

    secrets = SecretSet(["20261206", "colour-secret"])
    out = io.StringIO()
    o = Output(True, cast(TextIO, RedactingStream(out, secrets)), io.StringIO(), secrets)
    o.result({"ok": True, "release": 20261206, "note": "colour-secret here", "count": 3}, "human")
    assert json.loads(out.getvalue()) == {"ok": True, "release": MASK, "note": f"{MASK} here", "count": 3}


# ------------------------------------------------------------------------ the CLI scrubs everything


def test_every_write_of_the_cli_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    from bluegreen.faces import cli

    monkeypatch.setenv("BLUEGREEN_DB_PASSWORD", PASSWORD)

    def leaky(args: Any, t: Any, o: Any, p: Any) -> int:
        import logging

        p.note(f"progress quoting {PASSWORD}")
        logging.getLogger("bluegreen.test").warning("log line quoting %s", PASSWORD)
        o.say(f"said {PASSWORD}")
        o.result({"nested": [f"json {PASSWORD}"]}, f"human {PASSWORD}")
        raise ProxmoxError(f"failed with {PASSWORD}")

    monkeypatch.setattr(cli, "handler_for", lambda args: leaky)
    for as_json in (False, True):
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(["status", "--stack", "lab", "--cwd", str(REPO), *(["--json"] if as_json else [])],
                        out=out, err=err)
        assert code == 1
        written = out.getvalue() + err.getvalue()
        assert PASSWORD not in written and "failed with [REDACTED]" in written
        if as_json:  # the result, then the error, each valid JSON
            result, _, error = out.getvalue().partition("\n{")
            assert json.loads(result) == {"nested": ["json [REDACTED]"]}
            assert json.loads("{" + error)["error"] == "failed with [REDACTED]"


# ------------------------------------------------------------------------ lock token, template


def test_the_lock_token_stays_in_the_lock_file() -> None:
    info = LockInfo(holder="ops@laptop", host="laptop", pid=42, operation="deploy", started=1.0, heartbeat=2.0,
                    token="f00dfeedcafe")
    assert "token" not in info.to_json() and "f00dfeedcafe" not in json.dumps(info.to_json())
    assert LockInfo.from_file(info.to_file()).token == "f00dfeedcafe"


@pytest.mark.parametrize(("template", "problem"), [
    ({"url": "http://download.proxmox.com/t.tar.zst", "checksum": "ab" * 64, "checksumAlgorithm": "sha512"},
     "proxmox.template.url"),
    ({"url": "https://download.proxmox.com/t.tar.zst"}, "proxmox.template.checksum"),
    ({"url": "https://download.proxmox.com/t.tar.zst", "checksum": "ab" * 16, "checksumAlgorithm": "md5"},
     "proxmox.template.checksumAlgorithm"),
    ({"url": "https://download.proxmox.com/t.tar.zst", "checksum": "ab" * 64, "checksumAlgorithm": "sha512"},
     None),
])
def test_template_downloads_need_https_and_a_checksum(template: dict[str, str], problem: str | None) -> None:
    config = copy.deepcopy(read_stack_config(REPO, "prod"))
    config["bluegreen:proxmox"]["template"].update(template)
    try:
        from_config(config_getter(config), stack="prod", project_dir=REPO)
    except ValidationError as err:
        assert problem in [p.key for p in err.problems]
    else:
        assert problem is None


def test_the_prod_stack_verifies_proxmox() -> None:
    config = read_stack_config(REPO, "prod")
    assert "proxmoxve:insecure" not in config and "insecure" not in config["bluegreen:proxmox"]
    assert adopted_prod().proxmox.insecure is False


# ------------------------------------------------------------------------ the Proxmox certificate


@pytest.mark.parametrize("text", ["SHA256:" + ":".join(["AB"] * 32), ":".join(["ab"] * 32), "ab" * 32,
                                  "sha256 Fingerprint=" + ":".join(["AB"] * 32)])
def test_fingerprints_in_every_common_spelling(text: str) -> None:
    assert normalize_fingerprint(text) == "ab" * 32
    assert show_fingerprint("ab" * 32) == "SHA256:" + ":".join(["AB"] * 32)


def test_a_bad_fingerprint_names_the_key() -> None:
    config = copy.deepcopy(read_stack_config(REPO, "prod"))
    config["bluegreen:proxmox"]["fingerprint"] = "SHA256:not-one"
    with pytest.raises(ValidationError, match=r"proxmox\.fingerprint"):
        from_config(config_getter(config), stack="prod", project_dir=REPO)


def test_pinning_writes_the_stack_file_and_drops_insecure(tmp_path: Path) -> None:
    (tmp_path / "stacks").mkdir()
    (tmp_path / "Pulumi.yaml").write_text((REPO / "Pulumi.yaml").read_text())
    text = (REPO / "stacks" / "Pulumi.prod.yaml").read_text().replace(
        "    node: pve\n", "    node: pve\n    insecure: true # old\n")
    (tmp_path / "stacks" / "Pulumi.prod.yaml").write_text(text)
    set_proxmox_fingerprint_in_file(tmp_path, "prod", show_fingerprint("cd" * 32))
    written = (tmp_path / "stacks" / "Pulumi.prod.yaml").read_text()
    assert "insecure" not in written.split("config:")[1].split("bluegreen:ssh")[0]
    assert "# TLS to the Proxmox API is verified" in written  # comments survive
    assert load_stack(tmp_path, "prod").proxmox.fingerprint == "cd" * 32


class TlsServer:
    """A TLS server on loopback with a fresh self-signed certificate; it records what it receives."""

    def __init__(self, tmp_path: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pve-test")])
        now = datetime.now(UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(1).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
                .sign(key, hashes.SHA256()))
        (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
        self.der = cert.public_bytes(serialization.Encoding.DER)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(2)
                    data = tls.recv(65536)
                    self.received += data
                    if data:
                        body = b'{"data": {"version": "8.2.4"}}'
                        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                    + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            except (OSError, ssl.SSLError):
                continue

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsServer]:
    server = TlsServer(tmp_path)
    yield server
    server.close()


def test_the_certificate_is_read_from_the_handshake_alone(tls_server: TlsServer) -> None:
    der = fetch_certificate(f"https://127.0.0.1:{tls_server.port}/")
    assert der == tls_server.der and tls_server.received == b""


def test_a_pinned_node_is_used_and_another_certificate_gets_nothing(tls_server: TlsServer) -> None:
    endpoint = f"https://127.0.0.1:{tls_server.port}/"
    secret = Sensitive("pve-token-secret-never-sent")
    pinned = PveClient(endpoint, "pve", "root@pam!deploy", secret, fingerprint=certificate_fingerprint(tls_server.der))
    assert pinned.version() == "8.2.4"
    assert b"pve-token-secret-never-sent" in tls_server.received  # the pin let the request through
    tls_server.received = b""
    wrong = PveClient(endpoint, "pve", "root@pam!deploy", secret, fingerprint="00" * 32)
    with pytest.raises(ProxmoxError, match="not the one pinned") as info:
        wrong.version()
    assert "pve-token-secret-never-sent" not in str(info.value)
    assert tls_server.received == b""  # refused in the handshake: not a byte of the request was sent
    unpinned = PveClient(endpoint, "pve", "root@pam!deploy", secret)  # system CAs: a self-signed node fails
    with pytest.raises(ProxmoxError, match="trust --proxmox"):
        unpinned.version()
    assert tls_server.received == b""


# ------------------------------------------------------------------------ secret files on the hosts


def adopted_prod() -> Topology:
    """prod as adopted from an estate whose PM2 runs as `jwapp` (the tracked file names no user)."""
    t = load_stack(REPO, "prod")
    return dataclasses.replace(t, app=dataclasses.replace(t.app, deploy_user="jwapp"))


def test_secret_files_are_tightened_and_drift_is_found_without_changing_anything(tmp_path: Path) -> None:
    import os
    import stat
    import subprocess

    from bluegreen.render.secretfiles import render_secret_modes

    prod = adopted_prod()  # deploy user jwapp, PM2 home /home/jwapp/.pm2
    host = dataclasses.replace(prod.app_host("green"), root=str(tmp_path))
    files = {"home/jwapp/.pm2": 0o755, "home/jwapp/.pm2/dump.pm2": 0o644,
             "opt/jw-attendant-scheduler-deploy/shared": 0o750, "opt/jw-attendant-scheduler-deploy/shared/.env": 0o640}
    for rel, mode in files.items():
        path = tmp_path / rel
        if rel.endswith((".pm2", "shared")):
            path.mkdir(parents=True)
        else:
            path.write_text("DATABASE_URL=postgresql://u:pw@h/d\n")
        path.chmod(mode)
    script = render_secret_modes(prod, host)
    me = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    script = script.replace(" jwapp\n", f" {me}\n")  # the files belong to whoever runs the test

    def run(**env: str) -> list[str]:
        done = subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True, check=True,
                              env={**os.environ, **env})
        return done.stdout.splitlines()

    drift = run(BLUEGREEN_CHECK_ONLY="1")
    assert len(drift) == 4 and all(line.startswith("bootstrap: would set") for line in drift)
    assert {rel: stat.S_IMODE((tmp_path / rel).stat().st_mode) for rel in files} == files  # untouched
    assert len(run()) == 4
    assert {rel: stat.S_IMODE((tmp_path / rel).stat().st_mode) for rel in files} == {
        "home/jwapp/.pm2": 0o700, "home/jwapp/.pm2/dump.pm2": 0o600,
        "opt/jw-attendant-scheduler-deploy/shared": 0o700, "opt/jw-attendant-scheduler-deploy/shared/.env": 0o600}
    assert run() == [] and run(BLUEGREEN_CHECK_ONLY="1") == []


def test_a_secret_file_its_reader_does_not_own_is_reported_not_locked(tmp_path: Path) -> None:
    import subprocess

    from bluegreen.render.secretfiles import render_secret_modes

    prod = adopted_prod()
    host = dataclasses.replace(prod.app_host("green"), root=str(tmp_path))
    env_file = tmp_path / "opt/jw-attendant-scheduler/.env"
    env_file.parent.mkdir(parents=True)
    env_file.write_text("DATABASE_URL=x\n")
    env_file.chmod(0o644)
    out = subprocess.run(["bash", "-s"], input=render_secret_modes(prod, host), capture_output=True,
                         text=True, check=True).stdout
    assert "NOT APPLIED" in out and "not jwapp: chown jwapp and chmod 600 it" in out
    assert env_file.stat().st_mode & 0o777 == 0o644


def test_pm2_save_and_dumps_leave_private_files() -> None:
    from bluegreen.render import commands as cmd

    t = adopted_prod()
    paths = cmd.AppPaths.of(t, t.app_host("green"))
    assert "chmod 700 /home/jwapp/.pm2 && for f in /home/jwapp/.pm2/dump.pm2" in cmd.pm2_reload(t, paths)
    dump = cmd.dump_database(t, t.database_host, "/var/backups/jw-attendant/x.dump")
    assert "umask 077" in dump and "-m 0700" in dump and "chmod 600" in dump
