"""Writing the app's settings file (`shared/.env`) on an app host: 0600, owned by the deploy user."""

from __future__ import annotations

import re

from bluegreen.hosts.executor import Executor
from bluegreen.model.sensitive import Sensitive
from bluegreen.model.topology import Container, Topology
from bluegreen.render.appenv import ENV_FILE_MODE, env_path
from bluegreen.render.shell import sh


def apply_env(executor: Executor, t: Topology, host: Container, content: Sensitive) -> list[str]:
    """Write shared/.env on `host` if it differs (0600, owned by the deploy user)."""
    return write_env_file(executor, env_path(t, host), content, t.app.deploy_user)


def write_env_file(executor: Executor, path: str, content: Sensitive, owner: str) -> list[str]:
    """Write the file if it differs, mode 0600, owned by `owner`. Returns what changed, never the
    content."""
    current = executor.get(path, step="read the app settings")
    if current is not None and current.decode(errors="replace") == content.reveal():
        executor.run(sh("chmod", "600", path), step="app settings mode")
        return []
    executor.put(path, content.reveal(), step="write the app settings", mode=ENV_FILE_MODE)
    executor.run(sh("chown", owner, path) + " && " + sh("chmod", "600", path),
                 step="app settings owner and mode")
    return [f"wrote {path} (mode 0600)"]


def values_of(content: str) -> list[Sensitive]:
    """Every value in a rendered file, for redaction (as written and unquoted)."""
    found: list[Sensitive] = []
    for line in content.splitlines():
        if "=" not in line or line.startswith("#"):
            continue
        raw = line.split("=", 1)[1]
        found.append(Sensitive(raw))
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            inner = re.sub(r'\\(n|"|\\)', lambda m: "\n" if m.group(1) == "n" else m.group(1), raw[1:-1])
            found.append(Sensitive(inner))
    return [v for v in found if v.reveal()]
