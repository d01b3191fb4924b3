"""What `bluegreen COMMAND --help` says beyond the options: what the command does and an example.

Every command and sub-command has an entry (`tests/unit/test_cli_help.py` walks the parser and
fails on one without). Examples run on the local lab (`--stack lab`, after `make demo`); on the
estate the same commands take `--stack prod` (the default).
"""

from __future__ import annotations

import argparse
import textwrap

# "command" or "command sub-command": (what it does, example lines)
COMMAND_HELP: dict[str, tuple[str, tuple[str, ...]]] = {
    "status": ("Live and standby colours as HAProxy serves them, the declared colour, each colour's health, "
               "release, PM2 and HAProxy state, the database's migrations and last good dump, Proxmox, the "
               "last switch and the lock. Exit 1 when the live colour is unknown or unhealthy.",
               ("bluegreen status --stack lab",)),
    "deploy": ("Deploys a git ref to the standby colour only (the live colour is never touched): snapshot, "
               "fetch, install, build, migrations (with --migrate, after a verified dump), PM2 reload, health "
               "and a smoke test through the preview frontend. A failure puts the standby back.",
               ("bluegreen deploy --stack lab --ref next-v2 --migrate --yes",)),
    "switch": ("Moves live traffic to the standby colour after checking it serves a healthy release, "
               "verifies that new requests reach it and watches it, switching back by itself if it breaches.",
               ("bluegreen switch --stack lab --yes", "bluegreen switch --stack lab --to blue --yes")),
    "rollback": ("Switches back to the colour that was live before the last switch (it still runs its "
                 "release). --with-database also restores the dump taken before the rolled-back release's "
                 "migrations; --snapshot restores the standby container from its deploy snapshot instead.",
                 ("bluegreen rollback --stack lab --yes", "bluegreen rollback --with-database --stack lab")),
    "rebuild": ("`standby`: replaces the standby container and deploys the live release to it. `estate`: "
                "every container, the database and the journal back from the off-host copies after the "
                "node is lost.",
                ("bluegreen rebuild standby --stack lab --yes", "bluegreen rebuild estate --stack lab")),
    "history": ("The journal's switches and deploys, newest first (reading on into its archive).",
                ("bluegreen history --stack lab --limit 5",)),
    "lock": ("The deployment lock every deploy, switch and rebuild holds.", ("bluegreen lock status --stack lab",)),
    "lock status": ("Who holds the deployment lock, for what, since when, and whether it looks alive or stale.",
                    ("bluegreen lock status --stack lab",)),
    "lock release": ("Breaks a stale lock (its holder is gone). Only when you are sure nothing runs.",
                     ("bluegreen lock release --force --stack lab",)),
    "config": ("The stack file, checked offline.", ("bluegreen config check --stack lab",)),
    "config check": ("Validates the stack file without contacting anything, lists what is still to set "
                     "(exit 2) and prints the estate it describes.", ("bluegreen config check --stack lab",)),
    "plan": ("Every file and command `pulumi up` would apply to each host (or one), offline; --deploy: the "
             "deploy plan pinned to a commit and its pending migrations; --changes: each container compared "
             "with Proxmox.", ("bluegreen plan loadbalancer --stack lab",
                               "bluegreen plan --deploy --ref next-v2 --migrate --stack lab")),
    "trust": ("Shows each host's SSH key fingerprint and pins it after you confirm it (or --fingerprint); "
              "--proxmox pins the Proxmox node's certificate.", ("bluegreen trust green --stack lab --yes",)),
    "mcp": ("Runs the MCP server on stdio for an AI assistant (docs/MCP.md); changes wait for a person's "
            "approval.", ("bluegreen mcp --stack lab",)),
    "approve": ("Approves one deploy, switch or rollback an MCP server is waiting for: shows its plan and "
                "asks y/N, on a terminal, as the approver account (docs/MCP.md).",
                ("sudo -u bluegreen-approver /opt/bluegreen/venv/bin/bluegreen approve K7QF-3MXD --stack prod",)),
    "adopt": ("Writes the running estate into the stack file (containers from Proxmox, the live colour, the "
              "repository, the deploy user, the app's .env, the health check, other sites on the load "
              "balancer), so the first `pulumi up` changes nothing.",
              ("bluegreen adopt --dry-run --stack lab", "bluegreen adopt --yes --stack lab")),
    "retire-legacy": ("Replaces the estate's old jw-deployment-state.sh with one whose switch goes the new "
                      "way (get, set and history keep working); prints the IDE entry for the MCP server.",
                      ("bluegreen retire-legacy --dry-run --stack lab",)),
    "db": ("The database's dumps, here and on the backup host.", ("bluegreen db backups --stack lab",)),
    "db backups": ("Every dump on the database host and the backup host side by side: when, size, kind, "
                   "verified, GOOD (taken before a migration that succeeded), copied off-host.",
                   ("bluegreen db backups --stack lab",)),
    "db backup": ("A verified dump now, copied to the backup host (what the nightly timer runs).",
                  ("bluegreen db backup --stack lab",)),
    "db offsite-setup": ("Authorizes the database and HAProxy hosts on the backup host, each for one forced "
                         "command, and pins its key on them (once, after the `pulumi up` that added "
                         "bluegreen:backup).", ("bluegreen db offsite-setup --stack lab",)),
    "db restore": ("Restores a dump (default: the last good one) in one transaction, after a fresh dump that "
                   "undoes it; refused while the live release needs migrations the dump predates.",
                   ("bluegreen db restore --stack lab",)),
}


def _example(lines: tuple[str, ...]) -> str:
    return "Example:\n" + "\n".join(f"  {line}" for line in lines)


def document(parser: argparse.ArgumentParser, path: str = "") -> None:
    """Give every sub-command of `parser` its description and example (a KeyError names one that has
    none). Descriptions are wrapped here; the epilog's example lines are kept as written."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for name, sub in action.choices.items():
            key = f"{path} {name}".strip()
            what, example = COMMAND_HELP[key]
            sub.description = textwrap.fill(what, width=88)
            sub.epilog = _example(example)
            sub.formatter_class = argparse.RawDescriptionHelpFormatter
            document(sub, key)
