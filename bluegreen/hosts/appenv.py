"""The app's settings file (`shared/.env`) on an app host: the stack's variables laid over the file
found there (`render.appenv.merge_env`: nothing the stack does not manage is lost), 0600, owned by
the deploy user."""

from __future__ import annotations

import posixpath

from bluegreen.hosts.executor import Executor
from bluegreen.model.sensitive import Sensitive
from bluegreen.model.topology import Container, Topology
from bluegreen.render.appenv import ENV_FILE_MODE, env_path, managed_as_found, merge_env
from bluegreen.render.shell import sh


def apply_env(executor: Executor, t: Topology, host: Container, managed: Sensitive) -> list[str]:
    """Bring shared/.env on `host` to the stack's managed variables, keeping everything else."""
    return write_env_file(executor, env_path(t, host), managed, t.app.deploy_user,
                          working_copy=working_copy_of(t, host))


def working_copy_of(t: Topology, host: Container) -> str | None:
    return host.path(t.app.working_copy) if t.app.working_copy else None


def settings_path(executor: Executor, path: str, working_copy: str | None) -> str:
    """Where the app's settings are now: the working copy's `.env` while the host has not been
    converted yet (no shared/.env beside the releases: the app still runs from the working copy),
    else `path`. Only ever read there: the team's working copy is theirs, and the first write
    goes to `path`, starting from that file (convert then finds shared/.env in place)."""
    if working_copy and executor.run(
            f"[ ! -e {sh(path)} ] && [ -e {sh(working_copy + '/.env')} ]", step="look for the old layout",
            check=False).ok:
        return f"{working_copy}/.env"
    return path


def read_env_file(executor: Executor, path: str) -> str | None:
    data = executor.get(path, step="read the app settings")
    return None if data is None else data.decode(errors="replace")


def write_env_file(executor: Executor, path: str, managed: Sensitive, owner: str, *,
                   working_copy: str | None = None) -> list[str]:
    """Merge `managed` into the file and write it to `path` if that changes it, mode 0600, owned
    by `owner`. On a host not converted yet the current settings are the working copy's `.env`
    (`settings_path`): read there, written to `path`, the working copy's file untouched. Returns
    what changed, never the content."""
    source = settings_path(executor, path, working_copy)
    current = read_env_file(executor, source)
    merged = merge_env(current, managed.reveal())
    if source == path and current is not None and current == merged:
        executor.run(sh("chmod", "600", path), step="app settings mode")
        return []
    folder = posixpath.dirname(path)
    executor.run(f"[ -d {sh(folder)} ] || " + sh("install", "-d", "-m", "700", "-o", owner, folder),
                 step="app settings folder")
    executor.put(path, merged, step="write the app settings", mode=ENV_FILE_MODE)
    executor.run(sh("chown", owner, path) + " && " + sh("chmod", "600", path),
                 step="app settings owner and mode")
    kept = "" if current is None else " (every variable the stack does not manage kept)"
    started = "" if source == path else f", starting from {source} (left as it is)"
    return [f"wrote {path} (mode 0600){kept}{started}"]


def observe_env_file(executor: Executor, path: str, managed: str, *, working_copy: str | None = None) -> str:
    """The managed variables as the host's file has them (refresh): equal to `managed` when the
    file matches the stack, whatever else the file holds."""
    return managed_as_found(read_env_file(executor, settings_path(executor, path, working_copy)), managed)
