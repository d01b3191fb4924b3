"""The app's settings file (`shared/.env`) on an app host: the stack's variables laid over the file
found there (`render.appenv.merge_env`: nothing the stack does not manage is lost), 0600, owned by
the deploy user."""

from __future__ import annotations

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
    converted yet (no shared/.env beside the releases: the app still runs from the working copy,
    and its first deploy copies that file, byte for byte, to shared/.env), else `path`."""
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
    """Merge `managed` into the file and write it if that changes it, mode 0600, owned by `owner`
    (on a host in the old layout, the working copy's `.env`: `settings_path`). Returns what
    changed, never the content."""
    path = settings_path(executor, path, working_copy)
    current = read_env_file(executor, path)
    merged = merge_env(current, managed.reveal())
    if current is not None and current == merged:
        executor.run(sh("chmod", "600", path), step="app settings mode")
        return []
    executor.put(path, merged, step="write the app settings", mode=ENV_FILE_MODE)
    executor.run(sh("chown", owner, path) + " && " + sh("chmod", "600", path),
                 step="app settings owner and mode")
    kept = "" if current is None else " (every variable the stack does not manage kept)"
    return [f"wrote {path} (mode 0600){kept}"]


def observe_env_file(executor: Executor, path: str, managed: str, *, working_copy: str | None = None) -> str:
    """The managed variables as the host's file has them (refresh): equal to `managed` when the
    file matches the stack, whatever else the file holds."""
    return managed_as_found(read_env_file(executor, settings_path(executor, path, working_copy)), managed)
