"""Command lines for app and database hosts, built and never run here (the service runs them).

Every function is pure: topology (and a few values) in, a shell command string out, every
argument quoted. Paths go through `Container.path` so the lab's per-host roots work.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from bluegreen.model.errors import ConfigError
from bluegreen.model.topology import Container, Topology
from bluegreen.render.shell import sh

# Git refs as users type them: branches, tags, shas, `HEAD~1`. Never an option (leading dash).
_REF = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/@^~{}-]{0,199}$")


def validate_ref(ref: str) -> str:
    if not _REF.match(ref) or ".." in ref or ref.endswith((".lock", "/", ".")):
        raise ConfigError(f"invalid git ref {ref!r}: expected a branch, tag or commit sha")
    return ref


@dataclass(frozen=True)
class AppPaths:
    """Where one app host keeps its releases (rooted for the lab)."""

    app_dir: str
    releases: str
    current: str
    shared: str
    env_file: str
    mirror: str
    ecosystem: str
    fault_file: str
    pm2_home: str
    # The team's git working copy beside the releases (None: the stack names none).
    working_copy: str | None = None
    # The deploy user's git credential store, used by every fetch (`app.gitCredentials`).
    git_credentials: str = ""

    @classmethod
    def of(cls, t: Topology, host: Container) -> AppPaths:
        app_dir = host.path(t.app.dir)
        return cls(app_dir=app_dir, releases=f"{app_dir}/releases", current=f"{app_dir}/current",
                   shared=f"{app_dir}/shared", env_file=f"{app_dir}/shared/.env",
                   mirror=f"{app_dir}/repo.git", ecosystem=f"{app_dir}/ecosystem.config.js",
                   fault_file=f"{app_dir}/shared/fault", pm2_home=host.path(default_pm2_home(t)),
                   working_copy=host.path(t.app.working_copy) if t.app.working_copy else None,
                   git_credentials=host.path(git_credentials_path(t)))

    def release(self, name: str) -> str:
        return f"{self.releases}/{name}"


def deploy_home(t: Topology) -> str:
    """The deploy user's home (unrooted), as Debian's adduser makes it."""
    user = t.app.deploy_user or t.ssh.user
    return "/root" if user == "root" else f"/home/{user}"


def default_pm2_home(t: Topology) -> str:
    """PM2's home on an app host (unrooted): `app.pm2Home`, else the deploy user's `~/.pm2`."""
    if t.app.pm2_home:
        return t.app.pm2_home
    if not t.app.deploy_user:
        raise ConfigError("app.deployUser is not set: the user that runs the app's PM2 "
                          "(`bluegreen adopt` reads it from the estate)")
    return f"{deploy_home(t)}/.pm2"


def git_credentials_path(t: Topology) -> str:
    """`app.gitCredentials` (`~/` is the deploy user's home), else `~/.git-credentials`."""
    configured = t.app.git_credentials or "~/.git-credentials"
    return deploy_home(t) + configured[1:] if configured.startswith("~/") else configured


def git_as_deploy_user(t: Topology, paths: AppPaths, git_args: str) -> str:
    """`git <git_args>` with the deploy user's credential store (after any helper they configured
    themselves), never prompting: a missing or wrong token fails at once, named."""
    helper = f"store --file={sh(paths.git_credentials)}"
    return f"env GIT_TERMINAL_PROMPT=0 git -c credential.helper={sh(helper)} {git_args}"


def release_name(sha: str, now: datetime) -> str:
    return f"{now.strftime('%Y%m%d%H%M%S')}-{sha[:7]}"


# Where the login user keeps its caches and settings: not passed on to the deploy user, whose own
# (under its HOME, which runuser sets) it must use and own.
LOGIN_USER_DIRS = ("NPM_CONFIG_CACHE", "npm_config_cache", "NPM_CONFIG_USERCONFIG", "npm_config_userconfig",
                   "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME")


def as_deploy_user(t: Topology, command: str) -> str:
    """Run as the deploy user when we log in as someone else (root in the containers)."""
    if t.app.deploy_user in ("", t.ssh.user):
        return command
    unset = [arg for name in LOGIN_USER_DIRS for arg in ("-u", name)]
    return sh("runuser", "-u", t.app.deploy_user, "--", "env", *unset, "bash", "-c", command)


def fetch_ref(t: Topology, paths: AppPaths, ref: str) -> str:
    """Keep a mirror of the app repository on the host, update it, print the ref's commit sha.

    Runs as the deploy user with its git credentials (`git_as_deploy_user`); a mirror an earlier
    version made as the login user is handed to the deploy user first.
    """
    validate_ref(ref)
    mirror = sh(paths.mirror)
    user = t.app.deploy_user
    hand_over = ""
    if user and user != t.ssh.user:
        hand_over = (f"if [ -d {mirror} ] && [ \"$(stat -c %U {mirror})\" != {sh(user)} ]; then "
                     f"chown -R {sh(user)}: {mirror}; fi; ")
    git = lambda args: git_as_deploy_user(t, paths, args)  # noqa: E731
    fetch = (
        f"set -e; if [ ! -d {mirror} ]; then "
        f"{git(f'clone --quiet --mirror {sh(t.app.repo)} {mirror}')}; else "
        f"git --git-dir={mirror} remote set-url origin {sh(t.app.repo)}; "
        f"{git(f'--git-dir={mirror} fetch --quiet --prune --force origin')}; fi; "
        f"git --git-dir={mirror} rev-parse --verify --quiet {sh(ref + '^{commit}')}"
    )
    return f"set -e; {hand_over}{as_deploy_user(t, fetch)}"


def list_refs(t: Topology, paths: AppPaths) -> str:
    """The mirror's branches and tags (full ref names, one a line), for an unknown ref's message."""
    return as_deploy_user(t, f"git --git-dir={sh(paths.mirror)} for-each-ref --format='%(refname)' "
                             "refs/heads refs/tags")


def unknown_ref_message(ref: str, repo: str | None, listing: str, most: int = 12) -> str:
    """`unknown git ref 'x' in REPO; it has branches a, b and tags c, d` from `list_refs` output."""
    names = [line.strip() for line in listing.splitlines() if line.strip()]
    kinds = []
    for prefix, kind in (("refs/heads/", "branches"), ("refs/tags/", "tags")):
        found = sorted(n[len(prefix):] for n in names if n.startswith(prefix))
        if found:
            more = f" and {len(found) - most} more" if len(found) > most else ""
            kinds.append(f"{kind} {', '.join(found[:most])}{more}")
    there = f"; it has {' and '.join(kinds)}" if kinds else "; it has no branch or tag yet"
    return f"unknown git ref {ref!r} in {repo}{there} (or give a commit sha)"


def export_release(paths: AppPaths, release: str, sha: str, ref: str, owner: str | None = None) -> str:
    """Unpack one commit into a new release directory (no .git: a release never changes), owned
    by `owner` (the deploy user, who installs and builds in it) when that is not who logs in."""
    chown = f"; chown -hR {sh(owner)}:\"$(id -gn {sh(owner)})\" {sh(release)}" if owner else ""
    return (
        f"set -e; mkdir -p {sh(release)}; "
        f"git --git-dir={sh(paths.mirror)} archive --format=tar {sh(sha)} | tar -x --no-same-owner -C {sh(release)}; "
        f"printf '%s\\n' {sh(sha)} > {sh(release + '/REVISION')}; "
        f"printf '%s\\n' {sh(ref)} > {sh(release + '/REF')}; "
        f"ln -sfn {sh(paths.env_file)} {sh(release + '/.env')}{chown}"
    )


def other_owner(t: Topology) -> str | None:
    """The deploy user when commands run as someone else (root logs in), else None."""
    return t.app.deploy_user if t.app.deploy_user not in ("", t.ssh.user) else None


def read_current(paths: AppPaths) -> str:
    """Print the release `current` points at, its REVISION and REF (empty lines when none)."""
    cur = paths.current
    return (
        f"if [ -L {sh(cur)} ]; then readlink -f {sh(cur)}; "
        f"cat {sh(cur + '/REVISION')} 2>/dev/null || echo; cat {sh(cur + '/REF')} 2>/dev/null || echo; "
        f"else echo; echo; echo; fi"
    )


@dataclass(frozen=True)
class CurrentRelease:
    path: str | None
    sha: str | None
    ref: str | None

    @property
    def name(self) -> str | None:
        return self.path.rsplit("/", 1)[-1] if self.path else None


def parse_current(stdout: str) -> CurrentRelease:
    """What `read_current` printed; tolerant of missing lines (a release without REF, say)."""
    path, sha, ref = ([line.strip() for line in stdout.split("\n")] + ["", "", ""])[:3]
    return CurrentRelease(path or None, sha or None, ref or None)


def install_dependencies(t: Topology, paths: AppPaths, release: str, previous: str | None) -> str:
    """Reuse the previous release's node_modules (hard links) when the lockfile is unchanged."""
    install = as_deploy_user(t, f"cd {sh(release)} && {t.app.install_command}")
    if not previous:
        return f"set -e; {install}; echo installed"
    lock_new, lock_old = f"{release}/package-lock.json", f"{previous}/package-lock.json"
    return (
        f"set -e; if [ -f {sh(lock_new)} ] && [ -d {sh(previous + '/node_modules')} ] && "
        f"cmp -s {sh(lock_new)} {sh(lock_old)}; then "
        f"cp -al {sh(previous + '/node_modules')} {sh(release + '/node_modules')}; echo reused; "
        f"else {install}; echo installed; fi"
    )


# Settings from the release's `.env` (the shared one) that the build itself needs, exported for it.
# NEXT_SERVER_ACTIONS_ENCRYPTION_KEY: Next.js derives Server Action ids from it, so both colours
# must build with the same key or a page rendered by one fails when submitted to the other.
BUILD_ENV_KEYS = ("NEXT_SERVER_ACTIONS_ENCRYPTION_KEY",)


def export_build_env(release: str, keys: Iterable[str] = BUILD_ENV_KEYS) -> str:
    """Export `keys` from `<release>/.env` when it sets them (last line wins, one pair of quotes
    stripped); the values stay on the host, never in the command line."""
    env_file = sh(f"{release}/.env")
    parts = []
    for key in keys:
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
            raise ConfigError(f"{key!r} is not an environment variable name")
        parts.append(
            f"v=$(sed -n -e 's/^[[:space:]]*\\(export[[:space:]]\\+\\)\\?{key}[[:space:]]*=[[:space:]]*//p' "
            f"{env_file} 2>/dev/null | tail -n 1 | sed -e 's/[[:space:]]*$//' "
            f"-e 's/^\"\\(.*\\)\"$/\\1/' -e \"s/^'\\(.*\\)'$/\\1/\"); "
            f"if [ -n \"$v\" ]; then export {key}=\"$v\"; fi; unset v")
    return "; ".join(parts)


def build(t: Topology, release: str) -> str:
    return as_deploy_user(t, f"{export_build_env(release)}; cd {sh(release)} && {t.app.build_command}")


def list_migrations(release: str) -> str:
    folder = f"{release}/prisma/migrations"
    return (f"if [ -d {sh(folder)} ]; then cd {sh(folder)} && "
            f"for d in */; do [ -f \"$d/migration.sql\" ] && echo \"${{d%/}}\"; done; fi; true")


def migration_checksums(release: str) -> str:
    """`name sha256` of every migration.sql in the release (Prisma's checksum of the file)."""
    folder = f"{release}/prisma/migrations"
    return (f"if [ -d {sh(folder)} ]; then cd {sh(folder)} && for d in */; do "
            f"[ -f \"$d/migration.sql\" ] && printf '%s %s\\n' \"${{d%/}}\" "
            f"\"$(sha256sum < \"$d/migration.sql\" | cut -d' ' -f1)\"; done; fi; true")


def migrate(t: Topology, release: str) -> str:
    return as_deploy_user(t, f"cd {sh(release)} && {t.app.migrate_command}")


def point_current(paths: AppPaths, release: str) -> str:
    """Atomically repoint `current` (rename over the old link, never a moment without one)."""
    tmp = f"{paths.app_dir}/.current.tmp"
    return f"ln -sfn {sh(release)} {sh(tmp)} && mv -Tf {sh(tmp)} {sh(paths.current)}"


def pm2_invocation(args: Iterable[str], *, pm2_home: str, run_as: str, login_user: str) -> str:
    """`pm2 ...` with its home, as the deploy user. The scheduling policy only matters to a daemon
    started by this call: the OS, not round-robin, spreads connections so draining works."""
    args = list(args)
    command = sh("env", f"PM2_HOME={pm2_home}", "NODE_CLUSTER_SCHED_POLICY=none", "pm2", *args)
    if run_as and run_as != login_user:
        command = sh("runuser", "-u", run_as, "--") + " " + command
    if args[:1] == ["save"]:
        # The dump holds every process's environment (DATABASE_URL, the Server Actions key).
        command = f"{command} && {secure_pm2_home(pm2_home)}"
    return command


def secure_pm2_home(pm2_home: str) -> str:
    """PM2's home 0700 (its logs quote what the app prints) and its dumps 0600: `pm2 save`
    writes them with the default umask."""
    home = sh(pm2_home)
    return (f"chmod 700 {home} && for f in {home}/dump.pm2 {home}/dump.pm2.bak; do "
            f'if [ -f "$f" ]; then chmod 600 "$f"; fi; done')


def pm2(t: Topology, paths: AppPaths, *args: str) -> str:
    return pm2_invocation(args, pm2_home=paths.pm2_home, run_as=t.app.deploy_user, login_user=t.ssh.user)


def pm2_save(t: Topology, paths: AppPaths) -> str:
    """`pm2 save`, its dump (every process's environment, secrets included) left 0600
    (`pm2_invocation` adds `secure_pm2_home` to every save)."""
    return pm2(t, paths, 'save', '--force')


def pm2_reload(t: Topology, paths: AppPaths) -> str:
    return (f"cd {sh(paths.app_dir)} && {pm2(t, paths, 'startOrReload', paths.ecosystem, '--update-env')}"
            f" && {pm2_save(t, paths)}")


def pm2_stop(t: Topology, paths: AppPaths) -> str:
    """Used when a first deploy fails: no previous release to go back to, so nothing runs."""
    return f"{pm2(t, paths, 'delete', t.app.name)} >/dev/null 2>&1 || true; {pm2_save(t, paths)}"


def pm2_jlist(t: Topology, paths: AppPaths) -> str:
    # Without a daemon `jlist` would start one; report "no daemon" instead.
    pid_file = f"{paths.pm2_home}/pm2.pid"
    return (f"if [ -f {sh(pid_file)} ] && kill -0 \"$(cat {sh(pid_file)})\" 2>/dev/null; "
            f"then {pm2(t, paths, 'jlist')}; else echo '[]'; fi")


def prune_releases(paths: AppPaths, keep: int, protect: list[str]) -> str:
    """Delete the oldest releases beyond `keep`, never one in `protect` (current, previous)."""
    guard = " ".join(f"! -path {sh(p)}" for p in protect if p)
    return (
        f"cd {sh(paths.releases)} 2>/dev/null || exit 0; "
        f"ls -1d */ 2>/dev/null | sed 's#/$##' | sort | head -n -{int(keep)} | "
        f"while read -r r; do p={sh(paths.releases)}/\"$r\"; "
        f"if [ -n \"$(find \"$p\" -maxdepth 0 {guard})\" ]; then rm -rf -- \"$p\"; echo \"$r\"; fi; done"
    )


def remove_release(release: str) -> str:
    return f"rm -rf -- {sh(release)}"


# ---------------------------------------------------------------- database host


def psql(t: Topology, db_host: Container, sql: str, *, database: str | None = None,
         timeout_s: int | None = None) -> str:
    """psql as postgres over the unix socket; with `timeout_s`, libpq's connect timeout and the
    server's statement timeout, and `timeout` around it all (a stopped server hangs a connect)."""
    socket_dir = db_host.path("/var/run/postgresql")
    bounded: list[str] = []
    if timeout_s is not None:
        bounded = ["timeout", "-k", "1", str(2 * timeout_s + 2), "env", f"PGCONNECT_TIMEOUT={timeout_s}",
                   f"PGOPTIONS=-c statement_timeout={timeout_s * 1000}"]
    return sh("runuser", "-u", "postgres", "--", *bounded, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
              "-h", socket_dir, "-p", str(t.database.port), "-d", database or t.database.name,
              "-At", "-F", "\x1f", "-c", sql)


def backup_path(t: Topology, db_host: Container, color: str, sha: str, now: datetime) -> str:
    stamp = now.strftime("%Y%m%d%H%M%S")
    return f"{db_host.path(t.database.backup_dir)}/{stamp}-{color}-{sha[:7]}.dump"


def dump_database(t: Topology, db_host: Container, target: str) -> str:
    """pg_dump to a temp name, renamed only when complete: a failed dump leaves no partial file."""
    socket_dir = db_host.path("/var/run/postgresql")
    folder = db_host.path(t.database.backup_dir)
    tmp = f"{target}.partial"
    dump = sh("runuser", "-u", "postgres", "--", "pg_dump", "-Fc", "-h", socket_dir,
              "-p", str(t.database.port), "-f", tmp, t.database.name)
    # 0600 in a 0700 directory: a dump holds every row (and the password hashes of the roles).
    return (f"set -e; umask 077; install -d -o postgres -g postgres -m 0700 {sh(folder)}; "
            f"if ! {dump}; then rm -f {sh(tmp)}; exit 1; fi; chmod 600 {sh(tmp)}; mv {sh(tmp)} {sh(target)}")


def prune_backups(t: Topology, db_host: Container) -> str:
    folder = db_host.path(t.database.backup_dir)
    keep = int(t.database.backup_keep)
    return (f"cd {sh(folder)} 2>/dev/null || exit 0; ls -1t -- *.dump 2>/dev/null | "
            f"tail -n +{keep + 1} | while read -r f; do rm -f -- \"$f\"; echo \"$f\"; done")


def deploy_plan(t: Topology, host: Container) -> list[tuple[str, str]]:
    """(step, command) of a deploy of the configured branch to `host`, for `bluegreen plan`.

    Offline: the commit and release name are only known at deploy time, so they are shown as
    placeholders; the previous release is whatever `current` points at then.
    """
    paths = AppPaths.of(t, host)
    release = paths.release("<YYYYmmddHHMMSS>-<sha7>")
    previous = f"{paths.releases}/<previous>"
    db = t.database_host
    return [
        ("fetch the ref", fetch_ref(t, paths, t.app.branch)),
        ("export the release", export_release(paths, release, "<sha>", t.app.branch)),
        ("install dependencies", install_dependencies(t, paths, release, previous)),
        ("build", build(t, release)),
        ("list migrations", list_migrations(release)),
        ("back up the database (on the database host, only with pending migrations)",
         dump_database(t, db, f"{db.path(t.database.backup_dir)}/<YYYYmmddHHMMSS>-{host.color}-<sha7>.dump")),
        ("migrate (only with --migrate and pending migrations)", migrate(t, release)),
        ("point current at the release", point_current(paths, release)),
        ("reload PM2", pm2_reload(t, paths)),
        ("prune old releases", prune_releases(paths, t.app.keep_releases, [release, previous])),
    ]


def pm2_owner_command(app_dir: str | None) -> str:
    """Print `<user> <PM2 home>` of every PM2 daemon on this host (its mount namespace: a lab world
    sees no other world's) that runs a process from `app_dir` or its working copy set aside, or of
    every one when `app_dir` is None. Who runs the app's PM2, as it was started (by hand, by a
    unit); reads /proc only: the owner of each `PM2 vX: God Daemon` process, its PM2_HOME (else
    the owner's ~/.pm2), and the working directory of its children."""
    lines = [
        'ns=$(readlink /proc/self/ns/mnt)',
        "declare -A daemons=()",
        "for d in /proc/[0-9]*; do",
        '  cmd=$(tr "\\0" " " 2>/dev/null < "$d/cmdline") || continue',
        '  case "$cmd" in "PM2 v"*": God Daemon"*) ;; *) continue ;; esac',
        '  [ "$(readlink "$d/ns/mnt" 2>/dev/null)" = "$ns" ] && daemons[${d#/proc/}]=1',
        "done",
        'owner() {  # pid: "user home" of that daemon',
        '  local user home',
        '  user=$(stat -c %U "/proc/$1" 2>/dev/null) || return 0',
        '  home=$(tr "\\0" "\\n" 2>/dev/null < "/proc/$1/environ" | sed -n "s/^PM2_HOME=//p" | head -n 1)',
        '  [ -n "$home" ] || home="$(getent passwd "$user" | cut -d: -f6)/.pm2"',
        '  printf "%s %s\\n" "$user" "$home"',
        "}",
    ]
    if app_dir is None:
        return "\n".join([*lines, 'for pid in "${!daemons[@]}"; do owner "$pid"; done | sort -u'])
    app = sh(app_dir.rstrip("/"))
    return "\n".join([
        f"app=$(readlink -f {app} 2>/dev/null || printf %s {app})",
        *lines,
        "for d in /proc/[0-9]*; do",
        '  ppid=$(sed -n "s/^PPid:[[:space:]]*//p" 2>/dev/null < "$d/status") || continue',
        '  [ -n "$ppid" ] && [ -n "${daemons[$ppid]:-}" ] || continue',
        '  cwd=$(readlink -f "$d/cwd" 2>/dev/null) || continue',
        '  case "$cwd/" in "$app"/*|"$app".working-copy/*) owner "$ppid" ;; esac',
        "done | sort -u",
    ])


def parse_pm2_owners(stdout: str) -> list[tuple[str, str]]:
    """(user, PM2 home) pairs `pm2_owner_command` printed."""
    pairs = []
    for line in stdout.splitlines():
        user, _, home = line.strip().partition(" ")
        if user and home.startswith("/"):
            pairs.append((user, home))
    return pairs
