"""Moving an app host from the estate's hand-kept layout to the release layout, standby first.

Today's app hosts keep a git working copy at the app dir (developers commit and push from it),
the app's settings in `.env` inside it, and a PM2 process started by hand from it. Deploys need
`releases/`, `current` and `shared/.env`. The first deploy to a colour converts that host:

1. refuse when the colour serves live traffic (it is converted after a switch made it standby);
2. the working copy moves aside to `<app dir>.working-copy` (never deleted: commits, branches,
   git credentials and remotes stay as they are), and the app dir is recreated empty;
3. `.env` moves, byte for byte, to `shared/.env` (the ecosystem reads it from there);
4. an ecosystem file we wrote into the working copy earlier goes back to the app dir;
5. the hand-started PM2 processes running from the working copy are deleted, so the ecosystem's
   process takes the app's name and port (a description of each is kept in `shared/`).

Each step checks what is already done, so a run interrupted anywhere is finished by the next.
The steps are one bash script (pure, built here) run through the executor; it prints one
`convert: ...` line per change.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from .commands import AppPaths, pm2
from .errors import ConfigError
from .executor import Executor, sh
from .topology import Container, Topology

WORKING_COPY_SUFFIX = ".working-copy"
LEGACY_PM2_RECORD = "legacy-pm2.json"


@dataclass(frozen=True)
class ConvertResult:
    color: str
    converted: bool
    changes: tuple[str, ...]
    working_copy: str

    def to_json(self) -> dict[str, object]:
        return {"color": self.color, "converted": self.converted, "changes": list(self.changes),
                "workingCopy": self.working_copy}


def working_copy_path(paths: AppPaths) -> str:
    return paths.app_dir.rstrip("/") + WORKING_COPY_SUFFIX


def needs_conversion_command(paths: AppPaths) -> str:
    """Exit 0 when the host still has (part of) the old layout to convert."""
    aside = working_copy_path(paths)
    return (f"[ -e {sh(paths.app_dir + '/.git')} ] || "
            f"{{ [ -d {sh(aside)} ] && {{ [ ! -d {sh(paths.releases)} ] || [ -e {sh(aside + '/.env')} ]; }}; }}")


def convert_script(t: Topology, paths: AppPaths) -> str:
    """The conversion as one idempotent bash script (see the module docstring)."""
    app, aside = paths.app_dir.rstrip("/"), working_copy_path(paths)
    q = shlex.quote
    jlist = pm2(t, paths, "jlist")
    # PM2 processes whose working directory is the working copy (where it is now or was).
    select = ("import json,sys; aside,app=sys.argv[1],sys.argv[2]; "
              "procs=json.loads(sys.stdin.read() or '[]'); "
              "[print(p['pm_id']) for p in procs if "
              "str(p.get('pm2_env',{}).get('pm_cwd','')).rstrip('/') in (aside,app) or "
              "str(p.get('pm2_env',{}).get('pm_cwd','')).startswith(aside+'/')]")
    record = ("import json,sys; aside,app=sys.argv[1],sys.argv[2]; "
              "procs=json.loads(sys.stdin.read() or '[]'); "
              "print(json.dumps([{k: p.get('pm2_env',{}).get(k) for k in "
              "('name','pm_cwd','pm_exec_path','args','exec_mode','instances')} for p in procs if "
              "str(p.get('pm2_env',{}).get('pm_cwd','')).rstrip('/') in (aside,app) or "
              "str(p.get('pm2_env',{}).get('pm_cwd','')).startswith(aside+'/')], indent=2))")
    pid_file = f"{paths.pm2_home}/pm2.pid"
    return "\n".join([
        "set -euo pipefail",
        "changed() { printf 'convert: %s\\n' \"$*\"; }",
        f"APP={q(app)}",
        f"ASIDE={q(aside)}",
        # 2. the working copy aside, the app dir recreated (an interruption between the two is
        #    finished here: ASIDE exists, APP does not).
        'if [ -e "$APP/.git" ]; then',
        '  if [ -e "$ASIDE" ]; then echo "convert: $ASIDE already exists beside a working copy at $APP;'
        ' move one of them by hand" >&2; exit 3; fi',
        '  mv "$APP" "$ASIDE"',
        '  changed "kept the working copy aside at $ASIDE (not deleted)"',
        "fi",
        'if [ ! -d "$APP" ]; then',
        '  install -d -m 0755 -o "$(stat -c %u "$ASIDE")" -g "$(stat -c %g "$ASIDE")" "$APP"',
        '  changed "created $APP"',
        "fi",
        'for d in releases shared logs; do',
        '  if [ ! -d "$APP/$d" ]; then install -d -m 0755 "$APP/$d"; changed "created $APP/$d"; fi',
        "done",
        # 3. .env, moved unchanged (mv keeps bytes, owner and mode).
        'if [ -e "$ASIDE/.env" ]; then',
        '  if [ -e "$APP/shared/.env" ]; then',
        '    if cmp -s "$ASIDE/.env" "$APP/shared/.env"; then rm -f "$ASIDE/.env"; else',
        '      echo "convert: $APP/shared/.env and $ASIDE/.env differ; keep the right one in shared/" >&2; exit 3; fi',
        "  else",
        '    mv "$ASIDE/.env" "$APP/shared/.env"',
        '    changed "moved .env to $APP/shared/.env unchanged"',
        "  fi",
        "fi",
        # 4. our ecosystem file, if it was written into the working copy before the conversion.
        f'if [ -e "$ASIDE/{paths.ecosystem.rsplit("/", 1)[-1]}" ] && [ ! -e {q(paths.ecosystem)} ] && '
        f'grep -q "generated by bluegreen" "$ASIDE/{paths.ecosystem.rsplit("/", 1)[-1]}"; then',
        f'  mv "$ASIDE/{paths.ecosystem.rsplit("/", 1)[-1]}" {q(paths.ecosystem)}',
        f'  changed "moved the ecosystem file to {paths.ecosystem}"',
        "fi",
        # 5. the hand-started processes, recorded then deleted.
        f'if [ -f {q(pid_file)} ] && kill -0 "$(cat {q(pid_file)})" 2>/dev/null; then',
        f"  procs=$({jlist})",
        f'  ids=$(printf "%s" "$procs" | python3 -c {q(select)} "$ASIDE" "$APP")',
        '  if [ -n "$ids" ]; then',
        f'    printf "%s" "$procs" | python3 -c {q(record)} "$ASIDE" "$APP" > "$APP/shared/{LEGACY_PM2_RECORD}"',
        "    for id in $ids; do",
        "      " + pm2(t, paths, "delete", "__ID__").replace("__ID__", '"$id"') + " >/dev/null",
        "    done",
        f"    {pm2(t, paths, 'save', '--force')} >/dev/null",
        f'    changed "replaced the hand-started PM2 process(es) $(echo $ids) (described in'
        f' $APP/shared/{LEGACY_PM2_RECORD})"',
        "  fi",
        "fi",
    ]) + "\n"


def convert_host(t: Topology, host: Container, executor: Executor, *, live_color: str) -> ConvertResult:
    """Convert one app host if it still has the old layout; refused on the live colour."""
    if host.color is None:
        raise ConfigError(f"{host.label} is not an app host")
    paths = AppPaths.of(t, host)
    aside = working_copy_path(paths)
    if not executor.run(needs_conversion_command(paths), step="look for the old layout", check=False).ok:
        return ConvertResult(host.color, False, (), aside)
    if host.color == live_color:
        raise ConfigError(
            f"{host.label} serves live traffic and still has the old layout (a working copy at "
            f"{t.app.dir}); it is converted by its first deploy after a switch made it the standby")
    result = executor.run(convert_script(t, paths), step="convert to the release layout")
    prefix = "convert: "
    changes = tuple(line[len(prefix):] for line in result.stdout.splitlines() if line.startswith(prefix))
    return ConvertResult(host.color, True, changes, aside)
