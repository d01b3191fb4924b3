"""The PM2 ecosystem file for the app on one colour's host.

The app's own settings (DATABASE_URL and other secrets) live in `{app.dir}/shared/.env` on the
host. The ecosystem file reads that file itself when PM2 loads it, so secrets never pass through
this renderer, the Pulumi state or our logs.
"""

from __future__ import annotations

import json
import shlex

from bluegreen.model.errors import ConfigError
from bluegreen.model.topology import Topology
from bluegreen.render import GENERATED_BY, plain_word

# Next.js never calls process.send('ready'), so with wait_ready PM2 waits this long before it
# counts a new instance as up: enough for `next start` to bind, short enough for a reload.
LISTEN_TIMEOUT_MS = 10_000
# Next.js drains in-flight requests on SIGINT with no deadline of its own; PM2 sends SIGKILL after
# this. HAProxy gives up on a response after 30 s, so nothing worth waiting for outlives it.
KILL_TIMEOUT_MS = 35_000
# How long the app keeps an idle keep-alive connection open. Node's default (5 s) is shorter than
# HAProxy may keep an idle server connection in its pool for reuse: the app then closes one at
# the instant HAProxy sends a request on it, and the client sees its connection closed with
# nothing (a browser retries a GET, never a Server Action's POST). 65 s outlasts HAProxy's pool
# (idle connections beyond the need are purged by halves every 5 s) by far, so HAProxy is always
# the one that closes.
APP_KEEP_ALIVE_TIMEOUT_MS = 65_000
KEEP_ALIVE_FLAG = "--keepAliveTimeout"

# A small dotenv reader: `KEY=VALUE`, optional `export `, # comments, single or double quotes
# (\n and \" inside double quotes). No ${VAR} expansion: the values PM2 passes win over Next's
# own reading of .env, so what is written is exactly what the app gets.
_ENV_READER = r"""function readEnvFile(path) {
  let text;
  try {
    text = fs.readFileSync(path, "utf8");
  } catch (err) {
    if (err.code === "ENOENT") {
      throw new Error(`${path} is missing: the app's settings (DATABASE_URL, ...) belong there`);
    }
    throw err;
  }
  const env = {};
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (m === null) continue;
    let value = m[2];
    const quote = value[0];
    if ((quote === '"' || quote === "'") && value.length >= 2 && value.endsWith(quote)) {
      value = value.slice(1, -1);
      if (quote === '"') value = value.replace(/\\(n|"|\\)/g, (_, c) => (c === "n" ? "\n" : c));
    } else {
      value = value.replace(/\s+#.*$/, "");
    }
    env[m[1]] = value;
  }
  return env;
}"""


def keep_alive_args(script: str, args: list[str]) -> list[str]:
    """`next start` (the stack's default script, Next's own CLI) with the keep-alive timeout
    flag unless the stack's args already set one; any other script reads KEEP_ALIVE_TIMEOUT."""
    is_next_cli = script.rstrip("/").rsplit("/", 1)[-1] == "next" and args[:1] == ["start"]
    if not is_next_cli or any(a == KEEP_ALIVE_FLAG or a.startswith(KEEP_ALIVE_FLAG + "=") for a in args):
        return args
    return [*args, KEEP_ALIVE_FLAG, str(APP_KEEP_ALIVE_TIMEOUT_MS)]


def env_file_path(t: Topology, color: str) -> str:
    return t.app_host(color).path(f"{t.app.dir}/shared/.env")


def render_ecosystem(t: Topology, color: str) -> str:
    hosts = t.app_hosts
    if color not in hosts:
        raise ConfigError(f"no app host of colour {color!r} (this stack has: {', '.join(sorted(hosts))})")
    host = hosts[color]
    name = plain_word(t.app.name, "app.name")
    app_dir = t.app.dir.rstrip("/")
    try:
        args = shlex.split(t.app.start_args)
    except ValueError as exc:
        raise ConfigError(f"app.startArgs: {t.app.start_args!r} is not valid shell words: {exc}") from None
    app = {
        "name": name,
        "cwd": host.path(f"{app_dir}/current"),
        "script": t.app.start_script,
        "args": keep_alive_args(t.app.start_script, args),
        "exec_mode": "cluster",
        "instances": t.app.instances,
        "wait_ready": True,
        "listen_timeout": LISTEN_TIMEOUT_MS,
        "kill_timeout": KILL_TIMEOUT_MS,
        "autorestart": True,
        "exp_backoff_restart_delay": 200,
        "merge_logs": True,
        "out_file": host.path(f"{app_dir}/logs/{name}.out.log"),
        "error_file": host.path(f"{app_dir}/logs/{name}.err.log"),
        "log_date_format": "YYYY-MM-DDTHH:mm:ss.SSSZ",
    }
    # Ours win over the .env file: HAProxy expects the app exactly on this address and port.
    managed_env = {
        "NODE_ENV": t.app.node_env,
        "PORT": str(t.app.port),
        "HOSTNAME": host.ip,
        "BLUEGREEN_COLOR": color,
        # Read by Next's standalone server.js (and the lab's apps); `next start` gets the flag.
        "KEEP_ALIVE_TIMEOUT": str(APP_KEEP_ALIVE_TIMEOUT_MS),
    }
    return "\n".join([
        f"// {GENERATED_BY}",
        f"// stack {t.stack}: {t.app.name} on {host.label}",
        '"use strict";',
        'const fs = require("fs");',
        "",
        _ENV_READER,
        "",
        f"const app = {json.dumps(app, indent=2)};",
        f"app.env = Object.assign(readEnvFile({json.dumps(env_file_path(t, color))}), "
        f"{json.dumps(managed_env, indent=2)});",
        "",
        "module.exports = { apps: [app] };",
        "",
    ])
