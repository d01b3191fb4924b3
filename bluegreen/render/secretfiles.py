"""The files on each host that hold secrets, and a script that keeps them 0600 in 0700 directories.

App hosts: PM2's home (its logs quote what the app prints) and its dumps (`pm2 save` writes every
process's environment: DATABASE_URL, the Server Actions key), `shared/` and its `.env`, the `.env`
of a working copy still kept by hand. Database host: the dump directory and the dumps. Load
balancer: the journal's directory, the journal and the lock.

The script only ever removes permission bits; a file owned by another user than the one that
must read it is reported, not changed (making it 0600 would lock its reader out). With
`BLUEGREEN_CHECK_ONLY=1` it changes nothing and prints what it would do: the Pulumi bootstrap
provider runs it that way on every `up` to find drift, the bootstrap itself runs it for real.
Every line it prints starts with `bootstrap: `, like the bootstrap's own.
"""

from __future__ import annotations

import posixpath
import shlex

from bluegreen.model.topology import Container, Topology
from bluegreen.render.commands import default_pm2_home

CHECK_ONLY_ENV = "BLUEGREEN_CHECK_ONLY"

_FUNCTIONS = r"""
# Tighten PATH to at most MODE (bits are only ever removed); OWNER: who must keep reading it.
secure_path() {  # path mode owner
  local path=$1 mode=$2 owner=$3 cur new who
  [ -e "$path" ] && [ ! -L "$path" ] || return 0
  cur=$(stat -c '%a' "$path")
  new=$(printf '%o' $(( 8#$cur & 8#$mode )))
  [ "$new" != "$cur" ] || return 0
  who=$(stat -c '%U' "$path")
  # Safe only when the one who must read it owns it (root reads anything anyway).
  if [ "$who" != "$owner" ] && [ "$owner" != root ]; then
    printf 'bootstrap: NOT APPLIED: %s holds secrets and is mode %s, but belongs to %s, not %s: %s\n' \
      "$path" "$cur" "$who" "$owner" "chown $owner and chmod $mode it"
    return 0
  fi
  if [ -n "${BLUEGREEN_CHECK_ONLY:-}" ]; then
    printf 'bootstrap: would set %s on %s (now %s; it holds secrets)\n' "$new" "$path" "$cur"
    return 0
  fi
  chmod "$new" "$path"
  printf 'bootstrap: set %s on %s (was %s; it holds secrets)\n' "$new" "$path" "$cur"
}
secure_glob() {  # dir pattern mode owner
  local f
  for f in "$1"/$2; do secure_path "$f" "$3" "$4"; done
}"""


def _q(value: str) -> str:
    return shlex.quote(value)


def secret_paths(t: Topology, host: Container) -> list[tuple[str, str, str, bool]]:
    """(path or directory, mode, owner, is a glob over the directory's dumps) for `host`."""
    if host.role == "app":
        user = t.app.deploy_user or "root"  # unset: default_pm2_home says so
        home = host.path(default_pm2_home(t))
        app_dir = t.app.dir.rstrip("/")
        # The team's working copy keeps its own .env (the estate's settings, read by adopt).
        work = (t.app.working_copy or app_dir).rstrip("/")
        return [(home, "700", user, False), (f"{home}/dump.pm2", "600", user, False),
                (f"{home}/dump.pm2.bak", "600", user, False),
                (host.path(f"{app_dir}/shared"), "700", user, False),
                (host.path(f"{app_dir}/shared/.env"), "600", user, False),
                *[(host.path(f"{d}/.env"), "600", user, False) for d in dict.fromkeys((app_dir, work))]]
    if host.role == "database":
        folder = host.path(t.database.backup_dir)
        return [(folder, "700", "postgres", False), (folder, "600", "postgres", True)]  # not the sidecars
    journal = host.path(t.journal.path)
    return [(posixpath.dirname(journal), "700", "root", False), (journal, "600", "root", False),
            (host.path(t.journal.lock_path), "600", "root", False)]


def render_secret_modes(t: Topology, host: Container) -> str:
    """The script (bash) that keeps `host`'s secret files 0600 in 0700 directories."""
    lines = ["#!/usr/bin/env bash", f"# bluegreen: the files of {host.label} that hold secrets.",
             "set -uo pipefail", _FUNCTIONS.strip()]
    for path, mode, owner, glob in secret_paths(t, host):
        if glob:
            lines += [f"secure_glob {_q(path)} '*.dump' {mode} {_q(owner)}",
                      f"secure_glob {_q(path)} '*.dump.partial' {mode} {_q(owner)}"]
        else:
            lines.append(f"secure_path {_q(path)} {mode} {_q(owner)}")
    lines.append("exit 0")
    return "\n".join(lines) + "\n"
