"""`bluegreen retire-legacy` (and what `adopt` reports): the estate's old switch made harmless.

The seed's team switches with `jw-deployment-state.sh switch` on the HAProxy host, by hand or
through the old Node MCP server (`mcp-blue-green/server.js`, registered in Windsurf's
`~/.codeium/windsurf/mcp_config.json`). That switch rewrites `use_backend` in haproxy.cfg; after
the takeover HAProxy routes by its live-colour map, so one old habit would break routing and make
the journal lie.

`find_legacy_tools` (read-only; `adopt` runs it too) says what is there: the script and what its
commands do, a copy of the old server on the load balancer, and the entries of the operator's IDE
config that start the old server (and, where its source is readable, how it switches).
`retire_legacy` replaces the script, under the deployment lock, with the thin one of
`hosts/legacy_switch.py` (same commands, bluegreen's journal and flip); the estate's own is kept
beside it as `jw-deployment-state.sh.pre-bluegreen`, never deleted. The IDE config is the
operator's own file: it is read and the entry to put in its place is printed, never rewritten.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.hosts.executor import Executor
from bluegreen.hosts.legacy_switch import BACKUP_SUFFIX, render_thin_script
from bluegreen.model.errors import ConfigError, RemoteError
from bluegreen.model.legacy import McpEntry, classify_script, describe_server_js, old_mcp_servers, replacement_entry
from bluegreen.model.topology import Topology
from bluegreen.ops.estate import Estate
from bluegreen.render.bootstrap import STATE_SCRIPT
from bluegreen.render.shell import sh

log = logging.getLogger("bluegreen.retire")

WINDSURF_CONFIG = "~/.codeium/windsurf/mcp_config.json"
# Where a copy of the old server may sit on the load balancer (bounded search, never the whole disk).
_SEARCH_DIRS = ("/opt", "/root", "/home", "/usr/local", "/srv")


@dataclass
class LegacyTools:
    script: str
    script_kind: str | None = None  # None: no script there
    commands: list[str] = field(default_factory=list)
    does: list[str] = field(default_factory=list)
    backup: bool = False
    servers_on_lb: list[str] = field(default_factory=list)
    ide_config: str | None = None
    ide_entries: list[McpEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def needs_retiring(self) -> bool:
        return self.script_kind == "estate" and "switch" in self.commands

    def to_json(self) -> dict[str, Any]:
        return {"script": self.script, "scriptKind": self.script_kind, "commands": self.commands,
                "does": self.does, "backupKept": self.backup, "serversOnLoadBalancer": self.servers_on_lb,
                "ideConfig": self.ide_config, "ideEntries": [e.to_json() for e in self.ide_entries],
                "needsRetiring": self.needs_retiring, "notes": self.notes}


def default_ide_config() -> Path | None:
    """Windsurf's config of the user running bluegreen, if there is one."""
    path = Path(WINDSURF_CONFIG).expanduser()
    return path if path.is_file() else None


def _read_ide_config(found: LegacyTools, ide_config: Path) -> None:
    found.ide_config = str(ide_config)
    try:
        text = ide_config.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the IDE config {ide_config}: {exc.strerror}") from None
    for entry in old_mcp_servers(text, str(ide_config)):
        does: tuple[str, ...] = ()
        if entry.server_js:
            try:
                does = describe_server_js(Path(entry.server_js).expanduser().read_text(errors="replace"))
            except OSError:
                does = (f"(its source {entry.server_js} is not readable here)",)
        found.ide_entries.append(McpEntry(entry.name, entry.command, entry.args, entry.server_js, does))


def find_legacy_tools(t: Topology, lb: Executor, ide_config: Path | None = None) -> LegacyTools:
    """What of the estate's own tools is there (read-only), with one note per finding."""
    lb_host = t.load_balancer
    script = lb_host.path(STATE_SCRIPT)
    found = LegacyTools(script=STATE_SCRIPT)
    text = lb.get(script, step="read jw-deployment-state.sh")
    if text is not None:
        kind = classify_script(text.decode(errors="replace"))
        found.script_kind, found.commands, found.does = kind.kind, list(kind.commands), list(kind.does)
    found.backup = lb.get(script + BACKUP_SUFFIX, step="look for the kept old script") is not None
    roots = " ".join(sh(lb_host.path(d)) for d in _SEARCH_DIRS)
    out = lb.run(f"find {roots} -maxdepth 4 -path '*/mcp-blue-green/server.js' 2>/dev/null | head -n 5; true",
                 step="look for the old MCP server", check=False)
    found.servers_on_lb = [line for line in out.stdout.splitlines() if line.strip()]
    ide = ide_config or default_ide_config()
    if ide is not None:
        _read_ide_config(found, ide)
    found.notes = _notes(t, found)
    return found


def _notes(t: Topology, found: LegacyTools) -> list[str]:
    notes = []
    where = f"{t.load_balancer.label}:{found.script}"
    if found.script_kind is None:
        notes.append(f"old switch: none ({where} does not exist)")
    elif found.script_kind == "thin":
        notes.append(f"old switch: retired ({where} is bluegreen's thin script"
                     + (f"; the estate's own is kept as {found.script}{BACKUP_SUFFIX})" if found.backup else ")"))
    elif found.script_kind == "bootstrap":
        notes.append(f"old switch: none ({where} is bluegreen's get/set script)")
    else:
        what = "; ".join(found.does) or "its commands: " + ", ".join(found.commands)
        notes.append(f"old switch: {where} ({', '.join(found.commands)}): {what}"
                     + (f" -- after the takeover its switch breaks routing: run `bluegreen retire-legacy "
                        f"--stack {t.stack}`" if found.needs_retiring else ""))
    for path in found.servers_on_lb:
        notes.append(f"old MCP server on {t.load_balancer.label}: {path}")
    if found.ide_config and not found.ide_entries:
        notes.append(f"IDE config {found.ide_config}: no entry starts the old MCP server")
    for entry in found.ide_entries:
        how = "; ".join(entry.does) or "how it switches is unknown"
        advice = ("remove the entry now: a switch that edits haproxy.cfg breaks routing"
                  if any("use_backend" in d for d in entry.does)
                  else "replace the entry with bluegreen's (docs/MCP.md, `bluegreen retire-legacy` prints it)")
        notes.append(f"old MCP server in {found.ide_config}: \"{entry.name}\" runs {entry.command} "
                     f"{' '.join(entry.args)} ({how}); {advice}")
    return notes


@dataclass
class RetireResult:
    found: LegacyTools
    dry_run: bool
    changes: list[str]
    replacement: dict[str, Any]
    check: str | None = None  # what the new script answered to `get prod`

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "dryRun": self.dry_run, "changes": self.changes, "found": self.found.to_json(),
                "replacementEntry": self.replacement, "check": self.check}


def retire_legacy(estate: Estate, *, ide_config: Path | None = None, dry_run: bool = False,
                  python: str | None = None) -> RetireResult:
    """Replace the estate's switch script with the thin one (kept beside it), under the lock."""
    t = estate.t
    lb_host = t.load_balancer
    script = lb_host.path(STATE_SCRIPT)
    replacement = {"bluegreen-" + t.stack: replacement_entry(python=python or sys.executable,
                                                           project_dir=str(t.project_dir), stack=t.stack)}
    thin = render_thin_script(t)
    with estate.holding("retire legacy tools"), estate.on(lb_host) as lb:
        found = find_legacy_tools(t, lb, ide_config)
        current = lb.get(script, step="read jw-deployment-state.sh")
        changes: list[str] = []
        if current is not None and current.decode(errors="replace") == thin:
            return RetireResult(found, dry_run, changes, replacement, check=None)
        if current is not None and found.script_kind != "thin" and not found.backup:
            changes.append(f"keep the estate's script as {STATE_SCRIPT}{BACKUP_SUFFIX}")
            if not dry_run:
                lb.run(sh("cp", "-p", "--", script, script + BACKUP_SUFFIX), step="keep the old script")
        changes.append(f"install the thin {STATE_SCRIPT} (get, set, history; switch through bluegreen's flip)")
        if dry_run:
            return RetireResult(found, dry_run, changes, replacement)
        lb.put(script, thin, step="install the thin jw-deployment-state.sh", mode=0o755)
        answer = lb.run(f"{sh(script)} get prod", step="check the new script", check=False)
        if not answer.ok:
            raise RemoteError(lb_host.label, "check the new script",
                              f"{STATE_SCRIPT} get prod failed: {(answer.stderr or answer.stdout).strip()}")
        log.info("%s: installed the thin %s", lb_host.label, STATE_SCRIPT)
        return RetireResult(found, dry_run, changes, replacement, check=answer.stdout.strip())


def replacement_json(result: RetireResult) -> str:
    return json.dumps({"mcpServers": result.replacement}, indent=2)
