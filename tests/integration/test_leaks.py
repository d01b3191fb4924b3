"""No secret leaves by value (issue 24), on the lab: a build and a migration that print every secret
the stack knows, in several shapes, then fail; every output stream of the CLI (with and without
--json), the journal, the metrics, the events the webhook receiver got, the MCP server's results
and its log, and the files our tool writes on the hosts are searched for each value in each
spelling. Zero hits. And the files that must hold secrets are 0600 in 0700 directories.

The CLI runs without BLUEGREEN_DB_PASSWORD: it learns the database password from the app hosts'
.env, as it must on the estate. The Proxmox token and the webhook URL are not on the app hosts, so
the commits carry them (a repository that holds a secret is a leak waiting to happen too).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TextIO

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp import types as mcp_types
from mcp.client.session import ClientRequestContext

from bluegreen.lab.lab import Lab
from bluegreen.lab.monitoring import events_record
from bluegreen.lab.receiver import read_events
from bluegreen.lab.repo import publish_variant
from bluegreen.model.secrets import read_token
from bluegreen.model.sensitive import spellings
from bluegreen.model.topology import Topology
from bluegreen.ops.deploy import deploy
from bluegreen.ops.estate import Estate
from bluegreen.ops.status import lock_status, status
from bluegreen.render import commands as cmd
from bluegreen.render.commands import default_pm2_home

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"
BLUEGREEN = REPO / ".venv" / "bin" / "bluegreen"

LEAK_JS = r"""'use strict';
// Prints every secret it can find, in every shape a careless build or migration would, then fails.
const fs = require('node:fs');
const env = fs.readFileSync('.env', 'utf8');
const url = /^DATABASE_URL=(\S+)/m.exec(env)[1].replace(/^"|"$/g, '');
const password = decodeURIComponent(/:\/\/[^:]+:([^@]+)@/.exec(url)[1]);
const key = /^NEXT_SERVER_ACTIONS_ENCRYPTION_KEY="?([^"\n]+)"?$/m.exec(env)[1];
const baked = __BAKED__;
const all = [password, key, ...baked];
for (const s of all) {
  console.log(s);
  console.log('SECRET_TOKEN=' + s);
  console.error('password ' + s);
  console.error(JSON.stringify({ password: s, nested: { value: s } }));
  console.error('NEXT_SERVER_ACTIONS_ENCRYPTION_KEY=' + s);
  console.error('encoded ' + encodeURIComponent(s));
  console.error('  at connect (' + url + ')');
}
console.error('__WHAT__ failed: the secrets above were printed on purpose');
process.exit(1);
"""


def leak_script(what: str, baked: list[str]) -> str:
    return LEAK_JS.replace("__BAKED__", json.dumps(baked)).replace("__WHAT__", what)


@pytest.fixture(scope="module")
def secrets(lab: Lab) -> dict[str, str]:
    """Every secret the lab's stack knows, by name."""
    t = lab.topology
    _, token = read_token(t)
    webhook = (lab.paths.secrets / "webhook-url").read_text().strip()
    return {"database password": lab.db_password().reveal(),
            "server actions key": lab.paths.server_actions_key.read_text().strip(),
            "proxmox token": token.reveal(), "webhook url": webhook,
            "webhook token": (lab.paths.secrets / "webhook-token").read_text().strip()}


def hits(text: str, secrets: dict[str, str]) -> list[str]:
    """Which secrets appear in `text`, in any spelling."""
    return [name for name, value in secrets.items() if any(form in text for form in spellings(value))]


@pytest.fixture(scope="module")
def estate(lab: Lab) -> Topology:
    t = lab.topology
    service = Estate(t)
    deadline = time.monotonic() + 300
    while lock_status(Estate(t)) is not None:
        assert time.monotonic() < deadline, "the lab's lock stayed held"
        time.sleep(1)
    report = status(service)
    if not (report.colors[report.standby].healthy and report.colors[report.standby].release):
        deploy(service, "v1", migrate=True)
    return t


@pytest.fixture(scope="module")
def branches(lab: Lab, secrets: dict[str, str]) -> dict[str, str]:
    baked = [secrets["proxmox token"], secrets["webhook url"], secrets["webhook token"]]
    build = publish_variant(lab.paths.sample_repo, base="v1", branch="t-leak-build", message="a build that leaks",
                            changes={"scripts/build.js": leak_script("build", baked)})
    migration = publish_variant(
        lab.paths.sample_repo, base="v1", branch="t-leak-migration", message="a migration that leaks",
        changes={"scripts/migrate.js": leak_script("migration", baked),
                 "prisma/migrations/20990101000000_leak/migration.sql":
                     f"-- a repository that holds a secret: {secrets['proxmox token']}\nSELECT 1;\n"})
    assert build and migration
    return {"build": "t-leak-build", "migration": "t-leak-migration"}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BLUEGREEN_DB_PASSWORD" and not k.startswith("BLUEGREEN_SECRET")}
    return subprocess.run([str(BLUEGREEN), *args, "--stack", "lab", "--cwd", str(REPO)], capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL, env=env)


@contextlib.asynccontextmanager
async def mcp_session(errlog: TextIO) -> AsyncIterator[ClientSession]:
    async def accept(context: ClientRequestContext, params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
        return mcp_types.ElicitResult(action="accept", content={"approve": True})

    params = StdioServerParameters(command=str(PYTHON),
                                   args=["-m", "bluegreen", "mcp", "--stack", "lab", "--cwd", str(REPO)],
                                   env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, cwd=str(REPO))
    async with stdio_client(params, errlog=errlog) as (read, write), \
            ClientSession(read, write, elicitation_callback=accept) as session:
        await session.initialize()
        yield session


def text_of(result: mcp_types.CallToolResult) -> str:
    parts = [c.text for c in result.content if isinstance(c, mcp_types.TextContent)]
    return "\n".join(parts) + json.dumps(result.structured_content or {})


@pytest.fixture(scope="module")
def outputs(lab: Lab, estate: Topology, branches: dict[str, str], tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[dict[str, str]]:
    """Everything the leaky runs produced, by where it went."""
    seen: dict[str, str] = {}
    before = len(read_events(events_record(lab.paths.root)))
    for run, extra in (("build", []), ("build --json", ["--json"]), ("migration --json", ["--json", "--migrate"]),
                       ("migration", ["--migrate"])):
        done = cli("deploy", "--ref", branches[run.split()[0]], "--yes", *extra)
        assert done.returncode != 0, f"the leaky {run} succeeded?"
        seen[f"deploy {run}: stdout"], seen[f"deploy {run}: stderr"] = done.stdout, done.stderr
    for command in (["history"], ["history", "--json"], ["status", "--json"], ["status"], ["db", "backups", "--json"],
                    ["lock", "status", "--json"]):
        done = cli(*command)
        seen[f"{' '.join(command)}: stdout"], seen[f"{' '.join(command)}: stderr"] = done.stdout, done.stderr
    errlog_path = tmp_path_factory.mktemp("leaks") / "mcp-server.log"

    async def assistant() -> dict[str, str]:
        with errlog_path.open("w") as errlog:
            async with mcp_session(errlog) as session:
                deployed = await session.call_tool("deploy_to_standby", {"ref": branches["build"]})
                return {"mcp deploy_to_standby": text_of(deployed),
                        "mcp history": text_of(await session.call_tool("get_deployment_history", {"limit": 10})),
                        "mcp status": text_of(await session.call_tool("get_deployment_status", {}))}

    seen.update(anyio.run(assistant))
    seen["mcp server stderr"] = errlog_path.read_text()
    # Events go out from a detached process: wait for the five failed deploys to arrive.
    deadline = time.monotonic() + 60
    while len(read_events(events_record(lab.paths.root))) < before + 5 and time.monotonic() < deadline:
        time.sleep(0.5)
    record = events_record(lab.paths.root)
    seen["webhook events received"] = record.read_text() if record.exists() else ""
    yield seen


def test_the_leaky_runs_failed_where_they_should(outputs: dict[str, str]) -> None:
    assert "build failed: the secrets above were printed on purpose" in outputs["deploy build: stderr"]
    assert "migration failed: the secrets above were printed on purpose" in outputs["deploy migration: stderr"]
    assert "[REDACTED]" in outputs["deploy build: stderr"] and "[REDACTED]" in outputs["deploy migration: stderr"]
    result = json.loads(outputs["deploy build --json: stdout"].strip().splitlines()[-1])
    assert result["ok"] is False and "[REDACTED]" in result["error"]
    assert "build failed" in outputs["mcp deploy_to_standby"]
    assert "t-leak-build" in outputs["history --json: stdout"] and "t-leak-migration" in outputs["history: stderr"]
    assert outputs["webhook events received"].count("t-leak-") >= 5


def test_no_output_stream_holds_a_secret(outputs: dict[str, str], secrets: dict[str, str]) -> None:
    found = {where: hits(text, secrets) for where, text in outputs.items()}
    assert {where: names for where, names in found.items() if names} == {}


def host_files(lab: Lab, t: Topology) -> dict[str, Path]:
    """The files our tool writes on the hosts that must never hold a secret."""
    lb, db = t.load_balancer, t.database_host
    journal = Path(lb.path(t.journal.path))
    files = {"journal": journal, "journal side file": journal.with_name(journal.name + ".pending"),
             "lock": Path(lb.path(t.journal.lock_path))}
    for host in (lb, db, *t.app_hosts.values()):
        metrics = Path(host.path(t.journal.metrics_path)).parent
        files.update({f"{host.label} metrics {p.name}": p for p in metrics.glob("*.prom")})
    files.update({f"dump sidecar {p.name}": p for p in Path(db.path(t.database.backup_dir)).glob("*.json")})
    return files


def test_no_file_our_tool_writes_holds_a_secret(lab: Lab, estate: Topology, outputs: dict[str, str],
                                                secrets: dict[str, str]) -> None:
    files = host_files(lab, estate)
    assert any(p.exists() for p in files.values())
    found = {name: hits(p.read_text(errors="replace"), secrets) for name, p in files.items() if p.exists()}
    assert {name: names for name, names in found.items() if names} == {}
    assert "[REDACTED]" in files["journal"].read_text()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_that_hold_secrets_are_private_on_every_host(lab: Lab, estate: Topology,
                                                          outputs: dict[str, str]) -> None:
    t = estate
    homes = {host.label: Path(host.path(default_pm2_home(t))) for host in t.app_hosts.values()}
    # A colour that never ran a release has no PM2 home yet; the one the leaky deploys went to has.
    assert any((home / "dump.pm2").exists() for home in homes.values())
    for host in t.app_hosts.values():
        paths = cmd.AppPaths.of(t, host)
        home = homes[host.label]
        if home.exists():
            assert mode(home) == 0o700, host.label
        if (home / "dump.pm2").exists():
            assert mode(home / "dump.pm2") == 0o600, host.label
        assert mode(Path(paths.shared)) == 0o700 and mode(Path(paths.env_file)) == 0o600, host.label
    backups = Path(t.database_host.path(t.database.backup_dir))
    dumps = list(backups.glob("*.dump"))
    assert dumps, "the migration deploys took no dump"
    assert mode(backups) == 0o700 and all(mode(d) == 0o600 for d in dumps)
    journal = Path(t.load_balancer.path(t.journal.path))
    assert mode(journal) == 0o600 and mode(journal.parent) == 0o700
