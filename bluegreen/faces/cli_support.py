"""What every command of the CLI shares: output on stdout or stderr, confirmation, the estate handle."""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import TYPE_CHECKING, Any, TextIO

from bluegreen.faces.terminal import TerminalProgress
from bluegreen.model.errors import ConfigError
from bluegreen.model.sensitive import SecretSet, redact, redact_tree
from bluegreen.model.topology import Topology

if TYPE_CHECKING:
    from bluegreen.ops.estate import Estate

DEFAULT_STACK_ENV = "BLUEGREEN_STACK"


def stack_name(args: argparse.Namespace) -> str:
    """`--stack`, else $BLUEGREEN_STACK, else prod."""
    return args.stack or os.environ.get(DEFAULT_STACK_ENV) or "prod"


def stack_given(args: argparse.Namespace) -> bool:
    """Was the stack named (`--stack` or $BLUEGREEN_STACK), or is it the default?"""
    return bool(args.stack or os.environ.get(DEFAULT_STACK_ENV))


def hint_for(args: argparse.Namespace, t: Topology | None, text: str) -> str | None:
    """The next step after a failure whose message does not say it (`faces.hints`)."""
    from bluegreen.faces.hints import Situation, next_step

    return next_step(Situation(stack=stack_name(args), stack_given=stack_given(args),
                               environment=t.environment if t is not None else None, text=text))


class RedactingStream:
    """A text stream that scrubs every write of the run's secrets (by value, then by shape) before
    it reaches the real stream: results, progress, log lines and error messages alike."""

    def __init__(self, stream: TextIO, secrets: SecretSet) -> None:
        self.stream = stream
        self.secrets = secrets

    def write(self, text: str) -> int:
        self.stream.write(redact(text, self.secrets))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # isatty, flush, fileno, encoding, ...
        return getattr(self.stream, name)


class RedactingFilter(logging.Filter):
    """Log records scrubbed of the run's secrets whatever handler writes them."""

    def __init__(self, secrets: SecretSet) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self.secrets)
            record.exc_info = None
        return True


def redact_logs(secrets: SecretSet) -> None:
    """Every handler of the root logger scrubs what it writes with this run's secrets (a filter
    an earlier run in the same process left is replaced, not stacked)."""
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(old)
        handler.addFilter(RedactingFilter(secrets))


class Output:
    def __init__(self, as_json: bool, out: TextIO, err: TextIO, secrets: SecretSet | None = None) -> None:
        self.as_json = as_json
        # Every secret the run knows (`model.secrets.stack_secrets`, then what the estate learns
        # from the hosts): scrubbed from everything written to out and err.
        self.secrets = secrets if secrets is not None else SecretSet()
        self.out = out
        self.err = err

    def result(self, data: Any, human: str) -> None:
        if self.as_json:
            data = redact_tree(json.loads(json.dumps(data, default=str)), self.secrets)
            # Scrubbed value by value above; the redacting stream must not scrub the document's
            # text again (a secret that equals a JSON token would break the document).
            raw = self.out.stream if isinstance(self.out, RedactingStream) else self.out
            raw.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
        else:
            self.err.write(redact(human.rstrip(), self.secrets) + "\n")

    def say(self, text: str) -> None:
        self.err.write(redact(text.rstrip(), self.secrets) + "\n")


def confirm(question: str, *, yes: bool, stdin: TextIO, err: TextIO) -> None:
    if yes:
        return
    if not stdin.isatty():
        raise ConfigError(f"{question} needs confirmation: pass --yes when not running interactively")
    err.write(f"{question} [y/N] ")
    err.flush()
    if stdin.readline().strip().lower() not in ("y", "yes"):
        raise ConfigError("cancelled")


def format_status(data: dict[str, Any]) -> str:
    live = data["live"] or "unknown"
    lines = [f"stack {data['stack']}: live {live}, declared {data['declared']}, standby {data['standby']}"
             + ("  ** DRIFT: HAProxy and stack config disagree **" if data["drift"] else "")]
    if data.get("reconcile"):
        lines.append(f"  reconcile the declared colour with: {data['reconcile']}")
    truth = data.get("liveTruth") or {}
    for mismatch in truth.get("mismatches") or []:
        lines.append(f"  ** MISMATCH: {mismatch} **")
    if truth.get("resolve"):
        lines.append(f"  resolve with: {truth['resolve']}")
    lines.append(f"  {'colour':<7} {'host':<12} {'health':<14} {'release':<24} {'sha':<8} {'pm2':<16} haproxy")
    for color, c in data["colors"].items():
        health = f"{c['statusCode'] or '-'} {c['latencyMs'] or 0:.0f}ms" if c["healthy"] else \
            ("DOWN" if c["reachable"] else "UNREACHABLE")
        pm2 = ",".join(f"{p.get('status')}" for p in c["pm2"]) or "-"
        mark = "*" if color == data["live"] else " "
        lines.append(f"{mark} {color:<7} {c['host']:<12} {health:<14} {(c['release'] or '-'):<24} "
                     f"{(c['sha'] or '-')[:7]:<8} {pm2:<16} {(c['haproxy'] or {}).get('status', '-')}")
        if c.get("commit") == "commit not reported":
            lines.append("      commit not reported (the health answer names no commit)")
        for e in c["errors"]:
            lines.append(f"      ! {e}")
    db = data["database"]
    db_state = "reachable" if db.get("reachable") else f"UNREACHABLE ({db.get('error')})"
    lines.append(f"database {db.get('host')}: {db_state}; applied {db.get('applied', 0)}, "
                 f"pending {len(db.get('pending') or [])}"
                 + (f", FAILED {db['failed']}" if db.get("failed") else ""))
    good = db.get("lastGoodDump")
    lines.append(f"last good dump: {good['file']} ({good['bytes']} bytes, {good['createdAt']}, before "
                 f"{good.get('colour')} {str(good.get('sha') or '')[:7]})" if good else "last good dump: none")
    for color, c in data["colors"].items():
        wc = c.get("workingCopy")
        if wc and wc.get("state") != "unmanaged":
            lines.append(f"working copy on {color}: {wc['summary']}")
    pve = data.get("proxmox") or {}
    if pve.get("error"):
        lines.append(f"proxmox: {pve['error']}")
    elif pve:
        parts = [f"{vmid} {s.get('status')} up {int(s.get('uptime_s') or s.get('uptime') or 0)}s"
                 for vmid, s in sorted(pve.get("containers", {}).items())]
        lines.append(f"proxmox {pve.get('node')}: " + "; ".join(parts))
    lines.append(f"last switch {data['lastSwitch'] or 'never'}; switches {data['switchCount']}")
    lock = data["lock"]
    lines.append("lock: free" if not lock else
                 f"lock: held by {lock.get('holder')} ({lock.get('operation')}) since {lock.get('startedAt')}"
                 + (" - STALE" if lock.get("stale") else ""))
    lines.append(f"public {data['endpoints']['public']}  preview {data['endpoints']['preview']}")
    for e in data.get("errors", []):
        lines.append(f"! {e}")
    return "\n".join(lines)


def cli_estate(t: Topology, progress: TerminalProgress, o: Output) -> Estate:
    """The handle a command runs on. It shares the output's secrets (`stack_secrets`, filled in by
    `main` once the stack is loaded): what it learns from the hosts is scrubbed from the output too."""
    from bluegreen.ops.estate import Estate  # here, not at the top: the emergency path never needs it

    return Estate(t, progress=progress, secrets=o.secrets)
