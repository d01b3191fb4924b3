"""Moving an app host from the estate's hand-kept layout to the release layout, standby first.

Today's app hosts keep a git working copy (`app.workingCopy`, /opt/jw-attendant-scheduler):
developers commit and push from it, the app's settings are in `.env` inside it, and a PM2 process
started by hand runs from it. Deploys need `releases/`, `current` and `shared/.env`, which live
beside the working copy under `app.dir`, never inside it or instead of it. The first deploy to a
colour converts that host:

1. refuse when the colour serves live traffic (deploys only ever touch the standby);
2. the release directory (`app.dir`) with `releases/ shared/ logs/`, owned by the deploy user;
3. `.env` copied, byte for byte, to `shared/.env` (0600, the deploy user's) when that has none;
   the working copy keeps its own, so it stays usable as before;
4. right before the ecosystem starts the new release, the hand-started PM2 processes running
   from the working copy are deleted, so the ecosystem's process takes the app's name and port (a
   description of each is kept in `shared/`); a deploy that fails earlier leaves them serving.

The working copy itself is never moved, changed or deleted: its branch, origin, commits and
uncommitted changes stay where the team looks for them. Each step checks what is already done,
so a run interrupted anywhere is finished by the next. The steps are one bash script (pure,
built here) run through the executor; it prints one `convert: ...` line per change.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from bluegreen.hosts.executor import Executor
from bluegreen.model.errors import ConfigError, RemoteError
from bluegreen.model.topology import Container, Topology
from bluegreen.render.commands import AppPaths, pm2_owner_command
from bluegreen.render.shell import sh

LEGACY_PM2_RECORD = "legacy-pm2.json"
# Where an earlier bluegreen moved a working copy aside (it no longer does).
OLD_ASIDE_SUFFIX = ".working-copy"
# The convert script's exit code for a layout it must not touch (the message is on stderr).
REFUSED = 3


@dataclass(frozen=True)
class ConvertResult:
    color: str
    converted: bool
    changes: tuple[str, ...]
    working_copy: str | None

    def to_json(self) -> dict[str, object]:
        return {"color": self.color, "converted": self.converted, "changes": list(self.changes),
                "workingCopy": self.working_copy}


def needs_conversion_command(paths: AppPaths) -> str:
    """Exit 0 when the host still lacks (part of) the release layout."""
    app = paths.app_dir
    parts = [f"[ -e {sh(app + '/.git')} ]", f"[ ! -d {sh(paths.releases)} ]", f"[ ! -d {sh(paths.shared)} ]"]
    if paths.working_copy:
        parts.append(f"{{ [ -e {sh(paths.working_copy + '/.env')} ] && [ ! -e {sh(paths.env_file)} ]; }}")
    return " || ".join(parts)


def convert_script(t: Topology, paths: AppPaths) -> str:
    """Steps 2-3 as one idempotent bash script (see the module docstring)."""
    app = paths.app_dir.rstrip("/")
    work = paths.working_copy or ""
    user = t.app.deploy_user or t.ssh.user
    q = shlex.quote
    return "\n".join([
        "set -euo pipefail",
        "changed() { printf 'convert: %s\\n' \"$*\"; }",
        f"APP={q(app)}",
        f"WORK={q(work)}",
        f"OWNER={q(user)}",
        'GROUP=$(id -gn "$OWNER")',
        # A stack written before releases moved beside the working copy names the working copy
        # itself as app.dir: refused, never converted in place.
        'if [ -e "$APP/.git" ]; then',
        f'  echo "$APP is a git working copy: releases live beside it, not in it; set app.dir to'
        f' a directory beside it (e.g. $APP-deploy) and app.workingCopy: $APP" >&2; exit {REFUSED}',
        "fi",
        f'if [ -n "$WORK" ] && [ ! -e "$WORK/.git" ] && [ -e "$WORK{OLD_ASIDE_SUFFIX}/.git" ]; then',
        f'  echo "an earlier bluegreen moved the working copy aside to $WORK{OLD_ASIDE_SUFFIX}; move'
        f' it back to $WORK (and what is at $WORK out of the way) first" >&2; exit {REFUSED}',
        "fi",
        'if [ ! -d "$APP" ]; then',
        '  install -d -m 0755 -o "$OWNER" -g "$GROUP" "$APP"',
        '  changed "created $APP (releases live here, beside the working copy)"',
        "fi",
        "for d in releases shared logs; do",
        '  mode=0755; [ "$d" = shared ] && mode=0750',
        '  if [ ! -d "$APP/$d" ]; then install -d -m "$mode" -o "$OWNER" -g "$GROUP" "$APP/$d";'
        ' changed "created $APP/$d"; fi',
        "done",
        # 3. .env copied unchanged; the working copy keeps its own.
        'if [ -n "$WORK" ] && [ -e "$WORK/.env" ] && [ ! -e "$APP/shared/.env" ]; then',
        '  tmp="$APP/shared/.env.convert-tmp"',
        '  cp -- "$WORK/.env" "$tmp" && chown "$OWNER:$GROUP" "$tmp" && chmod 0600 "$tmp"',
        '  mv -f -- "$tmp" "$APP/shared/.env"',
        '  changed "copied $WORK/.env to $APP/shared/.env unchanged (the working copy keeps its own)"',
        "fi",
    ]) + "\n"


def replace_processes_script(t: Topology, paths: AppPaths) -> str:
    """Step 4: the PM2 processes started by hand from the working copy, described in shared/ and
    deleted (run right before the ecosystem starts the release, so a deploy that fails earlier
    leaves the old process serving the standby as before). They are looked for in every PM2
    daemon of the host (`pm2_owner_command`: as root by hand, or as another user), not only in the
    deploy user's: the estate started them as it did."""
    app, work = paths.app_dir.rstrip("/"), (paths.working_copy or "").rstrip("/")
    if not work:
        return "true\n"  # no working copy: nothing was started by hand from one
    q = shlex.quote
    # PM2 processes whose working directory is the working copy (or a directory in it).
    select = ("import json,sys; work=sys.argv[1]; "
              "procs=json.loads(sys.stdin.read() or '[]'); "
              "[print(p['pm_id']) for p in procs if "
              "str(p.get('pm2_env',{}).get('pm_cwd','')).rstrip('/') == work or "
              "str(p.get('pm2_env',{}).get('pm_cwd','')).startswith(work+'/')]")
    record = ("import json,sys; work=sys.argv[1]; "
              "procs=json.loads(sys.stdin.read() or '[]'); "
              "print(json.dumps([{k: p.get('pm2_env',{}).get(k) for k in "
              "('name','pm_cwd','pm_exec_path','args','exec_mode','instances')} for p in procs if "
              "str(p.get('pm2_env',{}).get('pm_cwd','')).rstrip('/') == work or "
              "str(p.get('pm2_env',{}).get('pm_cwd','')).startswith(work+'/')], indent=2))")
    return "\n".join([
        "set -euo pipefail",
        "changed() { printf 'convert: %s\\n' \"$*\"; }",
        f"APP={q(app)}",
        f"WORK={q(work)}",
        f"LOGIN={q(t.ssh.user)}",
        'pm2_as() {  # user home args...',
        '  local user=$1 home=$2; shift 2',
        '  if [ "$user" = "$LOGIN" ]; then env PM2_HOME="$home" pm2 "$@"',
        '  else runuser -u "$user" -- env PM2_HOME="$home" pm2 "$@"; fi',
        "}",
        f"owners=$({pm2_owner_command(None)})",
        # 4. the hand-started processes, recorded then deleted, in whichever PM2 runs them.
        'while read -r user home; do',
        '  [ -n "$user" ] || continue',
        '  procs=$(pm2_as "$user" "$home" jlist)',
        f'  ids=$(printf "%s" "$procs" | python3 -c {q(select)} "$WORK")',
        '  [ -n "$ids" ] || continue',
        f'  printf "%s" "$procs" | python3 -c {q(record)} "$WORK" > "$APP/shared/{LEGACY_PM2_RECORD}"',
        '  for id in $ids; do pm2_as "$user" "$home" delete "$id" >/dev/null; done',
        '  pm2_as "$user" "$home" save --force >/dev/null',
        '  chmod 600 "$home/dump.pm2"',
        f'  changed "replaced the hand-started PM2 process(es) $(echo $ids) of $user ($home) (described in'
        f' $APP/shared/{LEGACY_PM2_RECORD})"',
        'done <<< "$owners"',
    ]) + "\n"


def replace_hand_started(t: Topology, host: Container, executor: Executor) -> tuple[str, ...]:
    """Step 4 on one host; what it did (nothing when no hand-started process is left)."""
    paths = AppPaths.of(t, host)
    result = executor.run(replace_processes_script(t, paths), step="replace the hand-started PM2 process")
    prefix = "convert: "
    return tuple(line[len(prefix):] for line in result.stdout.splitlines() if line.startswith(prefix))


def convert_host(t: Topology, host: Container, executor: Executor, *, live_color: str) -> ConvertResult:
    """Convert one app host if it still lacks the release layout; refused on the live colour."""
    if host.color is None:
        raise ConfigError(f"{host.label} is not an app host")
    paths = AppPaths.of(t, host)
    if not executor.run(needs_conversion_command(paths), step="look for the old layout", check=False).ok:
        return ConvertResult(host.color, False, (), paths.working_copy)
    if host.color == live_color:
        raise ConfigError(
            f"{host.label} serves live traffic and still lacks the release layout beside its working "
            f"copy; it is converted by its first deploy after a switch made it the standby")
    result = executor.run(convert_script(t, paths), step="convert to the release layout", check=False)
    if result.exit_code == REFUSED:
        raise ConfigError(f"{host.label}: {result.stderr.strip()}")
    if not result.ok:
        raise RemoteError(host.label, "convert to the release layout",
                          (result.stderr or result.stdout).strip() or f"exit code {result.exit_code}")
    prefix = "convert: "
    changes = tuple(line[len(prefix):] for line in result.stdout.splitlines() if line.startswith(prefix))
    return ConvertResult(host.color, True, changes, paths.working_copy)
