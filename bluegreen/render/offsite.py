"""The off-host copies as text: the scripts on both ends, the systemd units, the key line (pure).

Two hosts push to the backup host (`bluegreen:backup`), each with a key of its own that the
backup host accepts only for one forced command:
- the database host (`bluegreen-offsite sync|dump|pull`): every verified dump and its sidecar,
  each checked on arrival against the sha256 taken on the database host; `dump` is the scheduled
  verified dump (a systemd timer, `backup.schedule`); `pull` fetches a copy back (a rebuild);
- the HAProxy host (`bluegreen-offsite journal`): the journal and the TLS certificate bundle (no
  code can recreate it), each time one changes (a systemd path unit, plus an hourly timer should a
  push fail); `tls-restore` puts the bundle back on a rebuilt HAProxy host.
The backup host's `receive` script (in `backup.dir`, so no root is needed there) is the only thing
those keys can run: the database key may store, list, fetch and prune dumps, the journal key may
store copies of the journal and the bundle and fetch the bundle; neither can delete a copy outside
retention. The operator's own key reaches it unrestricted (listing both places, re-checking
checksums, reading the journal copy).

Retention is counted on both hosts by `PRUNE_FUNCTIONS`, the shell twin of
`model.dumps.retention`: the newest `keep` of each class (good / scheduled / other), by name
(names start with a UTC timestamp); files of other names are never touched.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from bluegreen.model.errors import ConfigError
from bluegreen.model.topology import BackupSettings, Container, Topology
from bluegreen.render import GENERATED_BY
from bluegreen.render.dbcommands import tables_query
from bluegreen.render.offsite_scripts import (
    DATABASE_BODY,
    DUMP_NAME,
    JOURNAL_BODY,
    PRUNE_FUNCTIONS,
    RECEIVE_BODY,
    REMOTE,
)

OFFSITE_SCRIPT = "/usr/local/sbin/bluegreen-offsite"
OFFSITE_DIR = "/etc/bluegreen/offsite"  # the pushing host's key and the backup host's pinned key
UNIT_DIR = "/etc/systemd/system"
DUMP_UNIT = "bluegreen-dump"
JOURNAL_UNIT = "bluegreen-journal-offsite"
RECEIVE = ".bluegreen/receive"  # inside backup.dir
ROLES = ("database", "journal")
EXIT_MISMATCH = 3  # a checksum did not match: nothing was stored or replaced
EXIT_UNREACHABLE = 4  # the backup host did not answer


def _q(value: str | int) -> str:
    return shlex.quote(str(value))


def require_backup(t: Topology) -> BackupSettings:
    if t.backup is None:
        raise ConfigError(f"stack {t.stack} names no second place for its backups: set bluegreen:backup "
                          "(host, dir; see docs/OPERATIONS.md, 'Backups off the database host')")
    return t.backup


def receive_path(b: BackupSettings) -> str:
    return b.path(f"{b.dir.rstrip('/')}/{RECEIVE}")


def key_path(host: Container) -> str:
    return host.path(f"{OFFSITE_DIR}/id_ed25519")


def known_hosts_path(host: Container) -> str:
    return host.path(f"{OFFSITE_DIR}/known_hosts")


def key_marker(t: Topology, role: str) -> str:
    """The comment that names a pushing host's line in the backup host's authorized_keys."""
    return f"bluegreen-offsite:{t.stack}:{role}"


def authorized_key_line(t: Topology, role: str, public_key: str) -> str:
    """`restrict,command="<receive> <role>" <type> <key> <marker>`: that key runs one script."""
    if role not in ROLES:
        raise ConfigError(f"unknown off-host role {role!r}")
    fields = public_key.split()
    if len(fields) < 2 or not fields[0].startswith(("ssh-", "ecdsa-")):
        raise ConfigError(f"not an OpenSSH public key: {public_key[:40]!r}")
    command = f"{receive_path(require_backup(t))} {role}"
    if '"' in command or "\\" in command:
        raise ConfigError(f"backup.dir: {command!r} cannot be quoted in authorized_keys")
    return f'restrict,command="{command}" {fields[0]} {fields[1]} {key_marker(t, role)}'


def authorize_command(t: Topology, role: str, public_key: str) -> str:
    """On the backup host: replace the role's line in ~/.ssh/authorized_keys; prints `changed`."""
    line = authorized_key_line(t, role, public_key)
    marker = key_marker(t, role)
    return (f"set -euo pipefail; umask 077; d=\"$HOME/.ssh\"; ak=\"$d/authorized_keys\"; "
            f"install -d -m 0700 \"$d\"; touch \"$ak\"; "
            f"if grep -qxF -- {_q(line)} \"$ak\"; then exit 0; fi; "
            f"{{ grep -v -- {_q(' ' + marker + '$')} \"$ak\" || true; printf '%s\\n' {_q(line)}; }} "
            f"> \"$ak.bluegreen\"; "
            f"if cmp -s \"$ak\" \"$ak.bluegreen\"; then rm -f \"$ak.bluegreen\"; "
            f"else chmod 0600 \"$ak.bluegreen\"; mv -f \"$ak.bluegreen\" \"$ak\"; echo changed; fi")


def known_hosts_text(b: BackupSettings, keys: list[str]) -> str:
    """The pushing host's pin of the backup host: the keys the operator's known_hosts pins."""
    field = b.address if b.port == 22 else f"[{b.address}]:{b.port}"
    return "".join(f"{field} {key}\n" for key in keys)


# --------------------------------------------------------------------------- the backup host


def render_receive(t: Topology) -> str:
    """The backup host's end: `receive ROLE [VERB ARGS]` (a forced command reads the verb from
    SSH_ORIGINAL_COMMAND). Verbs: put NAME SHA256 (stdin), sums, list, get NAME, verify NAME,
    prune, journal-put|tls-put SHA256 (stdin), journals|tls-copies, journal-get|tls-get NAME."""
    b = require_backup(t)
    folder = b.path(b.dir)
    return "\n".join([
        "#!/bin/bash",
        f"# {GENERATED_BY}",
        f"# stack {t.stack}: the backup host's end of the off-host copies (bluegreen/render/offsite.py).",
        "set -euo pipefail",
        "umask 077",
        f"DIR={_q(folder)}",
        f"KEEP={int(b.keep)}",
        f"JOURNAL_KEEP={int(b.journal_keep)}",
        RECEIVE_BODY.replace("@DUMP@", DUMP_NAME).replace("@MISMATCH@", str(EXIT_MISMATCH)),
        PRUNE_FUNCTIONS,
        "main \"$@\"",
        "",
    ])


def receive_command(t: Topology, *args: str) -> str:
    """The operator's call of the backup host's script."""
    return " ".join([_q(receive_path(require_backup(t))), "operator", *(_q(a) for a in args)])


# --------------------------------------------------------------------------- the pushing hosts


@dataclass(frozen=True)
class DumpSettings:
    """What the database host's script needs to take and verify a dump itself."""

    socket_dir: str
    port: int
    database: str
    folder: str
    keep: int


def render_offsite_script(t: Topology, host: Container) -> str:
    """`bluegreen-offsite` on the database host (sync, dump, pull) or the HAProxy host (journal)."""
    b = require_backup(t)
    if host.role not in ("database", "loadbalancer"):
        raise ConfigError(f"{host.label}: only the database and HAProxy hosts push off-host copies")
    lines = [
        "#!/bin/bash",
        f"# {GENERATED_BY}",
        f"# stack {t.stack}: off-host copies from {host.label} to {b.label} (bluegreen/render/offsite.py).",
        "set -euo pipefail",
        "umask 077",
        f"KEY={_q(key_path(host))}",
        f"KNOWN={_q(known_hosts_path(host))}",
        f"DEST=({_q('-p')} {int(b.port)} {_q(f'{b.user}@{b.address}')})",
        REMOTE,
    ]
    if host.role == "loadbalancer":
        tls = host.path(t.haproxy.tls_cert) if t.haproxy.tls_cert else ""
        lines += [f"JOURNAL={_q(host.path(t.journal.path))}", f"TLS={_q(tls)}",
                  JOURNAL_BODY.replace("@MISMATCH@", str(EXIT_MISMATCH))]
    else:
        db = DumpSettings(socket_dir=host.path("/var/run/postgresql"), port=t.database.port,
                          database=t.database.name, folder=host.path(t.database.backup_dir),
                          keep=t.database.backup_keep)
        lines += [f"BACKUPS={_q(db.folder)}", f"LOCAL_KEEP={int(db.keep)}", f"DATABASE={_q(db.database)}",
                  "psql_q() {",
                  f"  (cd / && runuser -u postgres -- psql -X -At -v ON_ERROR_STOP=1 -h {_q(db.socket_dir)} "
                  f"-p {int(db.port)} -d \"$DATABASE\" \"$@\")",
                  "}",
                  "pg_dump_to() {",
                  f"  (cd / && runuser -u postgres -- pg_dump -Fc -h {_q(db.socket_dir)} -p {int(db.port)} "
                  "-f \"$1\" \"$DATABASE\")",
                  "}",
                  f"TABLES_SQL={_q(tables_query())}",
                  PRUNE_FUNCTIONS,
                  DATABASE_BODY.replace("@DUMP@", DUMP_NAME).replace("@UNREACHABLE@", str(EXIT_UNREACHABLE))
                  .replace("@MISMATCH@", str(EXIT_MISMATCH))]
    lines += ["main \"$@\"", ""]
    return "\n".join(lines)


def offsite_command(host: Container, *args: str) -> str:
    return " ".join([_q(host.path(OFFSITE_SCRIPT)), *(_q(a) for a in args)])


# --------------------------------------------------------------------------- systemd units


def render_units(t: Topology, host: Container) -> dict[str, str]:
    """The unit files (name -> text) the bootstrap installs on a pushing host."""
    b = require_backup(t)
    script = host.path(OFFSITE_SCRIPT)
    head = f"# {GENERATED_BY}\n"
    if host.role == "database":
        return {
            f"{DUMP_UNIT}.service": head + "\n".join([
                "[Unit]",
                f"Description=bluegreen: a verified dump of {t.database.name}, copied to {b.label}",
                "After=postgresql.service network-online.target",
                "Wants=network-online.target",
                "",
                "[Service]",
                "Type=oneshot",
                f"Environment=BLUEGREEN_BY={DUMP_UNIT}.timer",
                f"ExecStart={script} dump",
                "Nice=10",
                "IOSchedulingClass=idle",
                ""]),
            f"{DUMP_UNIT}.timer": head + "\n".join([
                "[Unit]",
                f"Description=bluegreen: scheduled verified dump of {t.database.name}",
                "",
                "[Timer]",
                f"OnCalendar={b.schedule}",
                "Persistent=true",
                "",
                "[Install]",
                "WantedBy=timers.target",
                ""]),
        }
    if host.role == "loadbalancer":
        return {
            f"{JOURNAL_UNIT}.service": head + "\n".join([
                "[Unit]",
                f"Description=bluegreen: copy the deployment journal to {b.label}",
                "After=network-online.target",
                "",
                "[Service]",
                "Type=oneshot",
                f"ExecStart={script} journal",
                ""]),
            f"{JOURNAL_UNIT}.path": head + "\n".join([
                "[Unit]",
                "Description=bluegreen: copy the deployment journal off-host whenever it changes",
                "",
                "[Path]",
                f"PathChanged={host.path(t.journal.path)}",
                *([f"PathChanged={host.path(t.haproxy.tls_cert)}"] if t.haproxy.tls_cert else []),
                "",
                "[Install]",
                "WantedBy=paths.target",
                ""]),
            f"{JOURNAL_UNIT}.timer": head + "\n".join([
                "[Unit]",
                "Description=bluegreen: copy the deployment journal off-host hourly (should a push fail)",
                "",
                "[Timer]",
                "OnCalendar=hourly",
                "Persistent=true",
                "",
                "[Install]",
                "WantedBy=timers.target",
                ""]),
        }
    return {}


def bootstrap_lines(t: Topology, host: Container) -> list[str]:
    """What the bootstrap of a pushing host adds: its key, the script, the units (enabled only
    where systemd runs; the lab's stand-in reads the unit files)."""
    if t.backup is None or host.role not in ("database", "loadbalancer"):
        return []
    role = "database" if host.role == "database" else "journal"
    key = key_path(host)
    script = host.path(OFFSITE_SCRIPT)
    unit_dir = host.path(UNIT_DIR)
    units = render_units(t, host)
    enable = [name for name in units if not name.endswith(".service")]
    lines = [
        f"install -d -m 0700 {_q(host.path(OFFSITE_DIR))}",
        f"if [ ! -f {_q(key)} ]; then",
        f"  ssh-keygen -q -t ed25519 -N '' -C {_q(f'{key_marker(t, role)}:{host.name}')} -f {_q(key)}",
        f"  changed {_q('generated the off-host copy key ' + key)}",
        "fi",
        f"if ensure_file {_q(script)} {_q(render_offsite_script(t, host).rstrip(chr(10)))}; then "
        f"chmod 0755 {_q(script)}; fi",
        "units_changed=0",
    ]
    for name, text in units.items():
        lines.append(f"if ensure_file {_q(unit_dir + '/' + name)} {_q(text.rstrip(chr(10)))}; then units_changed=1; fi")
    lines += [
        "if [ -d /run/systemd/system ]; then",
        "  if [ \"$units_changed\" = 1 ]; then systemctl daemon-reload; fi",
        *[f"  if ! systemctl is-enabled --quiet {name} 2>/dev/null || [ \"$units_changed\" = 1 ]; then "
          f"systemctl enable --now {name} >/dev/null 2>&1 && changed {_q('enabled ' + name)}; fi"
          for name in enable],
        "fi",
    ]
    return lines
