"""Configure every host as `pulumi up` would, without the engine (the lab, `plan`, a rebuilt host)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from bluegreen.hosts import haproxy_cli as hr
from bluegreen.hosts.appenv import apply_env
from bluegreen.hosts.executor import Executor, connect
from bluegreen.hosts.hostconfig import (
    apply_bootstrap,
    apply_ecosystem,
    apply_haproxy_config,
    apply_postgres,
    apply_routing,
    bootstrap_command,
    candidate_path,
    pm2_command,
    psql_command,
)
from bluegreen.hosts.providers import (
    bootstrap_props,
    ecosystem_props,
    haproxy_config_props,
    postgres_props,
    routing_props,
)
from bluegreen.model.secrets import Secrets
from bluegreen.model.sensitive import MASK, Sensitive
from bluegreen.model.topology import COLORS, Container, Topology
from bluegreen.render.appenv import render_env
from bluegreen.render.shell import sh

log = logging.getLogger("bluegreen.configure")


ExecutorSource = Callable[[Container], Executor] | Mapping[int, Executor]


def apply_estate(t: Topology, db_password: Sensitive, *,
                 executor_for: ExecutorSource | None = None) -> list[str]:
    """Apply the whole host configuration, as `pulumi up` would, without the engine.

    Order: bootstrap every host -> PostgreSQL -> HAProxy config (+ start) -> routing to
    `t.active_color` -> PM2 ecosystems. Returns what changed, one line per change, each naming its
    host. `executor_for` gives the executor for a container (a callable, or a mapping by vmid);
    executors given are left open for their owner, ones made here are closed here.
    """
    own: dict[int, Executor] = {}

    def on(container: Container) -> Executor:
        if executor_for is None:
            if container.vmid not in own:
                own[container.vmid] = connect(t, container, secrets=[db_password])
            return own[container.vmid]
        if isinstance(executor_for, Mapping):
            return executor_for[container.vmid]
        return executor_for(container)

    changes: list[str] = []

    def record(container: Container, what: str, done: list[str]) -> None:
        for line in done:
            log.info("%s: %s: %s", container.label, what, line)
            changes.append(f"{container.label}: {what}: {line}")

    try:
        for container in t.containers:
            props = bootstrap_props(t, container)
            record(container, "bootstrap",
                   apply_bootstrap(on(container), props["script"], props["script_path"],
                                   secret_modes=props["secret_modes"]))
        db = t.database_host
        pg = postgres_props(t, db_password)
        record(db, "postgres", apply_postgres(on(db), sql=pg["sql"], hba_block=pg["hba"],
                                              socket_dir=pg["socket_dir"], port=pg["port"]))
        lb = t.load_balancer
        hp = haproxy_config_props(t)
        paths = hr.HaproxyPaths.from_topology(t)
        record(lb, "haproxy", apply_haproxy_config(on(lb), paths, hp["config"], hp["initial_map"],
                                                   declared_in=hp["declared_in"]))
        rt = routing_props(t)
        record(lb, "routing", apply_routing(on(lb), paths, rt["live_color"], rt["map_text"],
                                            declared_in=rt["declared_in"]))
        for color in COLORS:
            host = t.app_host(color)
            eco = ecosystem_props(t, color)
            record(host, "pm2", apply_ecosystem(on(host), text=eco["ecosystem"], path=eco["path"],
                                                pm2_home=eco["pm2_home"], app_dir=eco["app_dir"],
                                                run_as=eco["run_as"], login_user=t.ssh.user,
                                                reload=eco["reload"]))
    finally:
        for executor in own.values():
            executor.close()
    return changes


def _file(step: str, path: str, content: str) -> dict[str, str]:
    return {"kind": "file", "step": step, "path": path, "content": content}


def _command(step: str, command: str) -> dict[str, str]:
    return {"kind": "command", "step": step, "command": command}


def plan_estate(t: Topology) -> dict[str, list[dict[str, str]]]:
    """Per host label, the files `apply_estate` writes and the commands it runs, in its order.

    Pure. The database password shows as a mask. Commands marked "if ..." in their step run
    only when that condition holds on the host.
    """
    plan: dict[str, list[dict[str, str]]] = {c.label: [] for c in t.containers}
    for container in t.containers:
        props = bootstrap_props(t, container)
        plan[container.label] += [
            _file("bootstrap script (runs if it differs from the one recorded)",
                  f"{props['script_path']}", props["script"]),
            _command("bootstrap", bootstrap_command(f"{props['script_path']}.pending")),
        ]
    db = t.database_host
    pg = postgres_props(t, Sensitive(MASK))
    plan[db.label] += [
        _file("database SQL (sent to psql on stdin)", "(stdin)", pg["sql"]),
        _command("apply the database SQL", psql_command(pg["socket_dir"], pg["port"], "-f", "-")),
        _file("managed block merged into pg_hba.conf (psql: SHOW hba_file)", "(pg_hba.conf)", pg["hba"]),
        _command("reload PostgreSQL (if pg_hba.conf changed)",
                 psql_command(pg["socket_dir"], pg["port"], "-At", "-c", "SELECT pg_reload_conf()")),
    ]
    lb = t.load_balancer
    hp = haproxy_config_props(t)
    paths = hr.HaproxyPaths.from_topology(t)
    candidate = candidate_path(paths.config)
    rt = routing_props(t)
    plan[lb.label] += [
        _file("initial live-colour map (if missing)", paths.map, hp["initial_map"]),
        _file("HAProxy configuration candidate (if it differs)", candidate, hp["config"]),
        _command("validate the HAProxy configuration", hr.check_config_command(candidate)),
        _command("install the HAProxy configuration", sh("mv", "-f", candidate, paths.config)),
        _command("reload HAProxy (if running)", hr.runtime_command(paths.master_socket, [hr.RELOAD])),
        *([_command("start HAProxy (if not running, on a systemd host)",
                    hr.systemd_start_command(paths.service))] if paths.service else []),
        _command("start HAProxy (if not running" + (", without systemd)" if paths.service else ")"),
                 hr.start_command(paths)),
        _command(f"route live traffic to {t.active_color}",
                 hr.runtime_command(paths.admin_socket,
                                    [hr.set_map(paths.map, k, v)
                                     for k, v in hr.routing_entries(t.active_color).items()])),
        _file("live-colour map", paths.map, rt["map_text"]),
    ]
    for color in COLORS:
        host = t.app_host(color)
        eco = ecosystem_props(t, color)
        save = _command("save the PM2 process list", pm2_command(["save"], pm2_home=eco["pm2_home"],
                                                                 run_as=eco["run_as"], login_user=t.ssh.user))
        reload = _command("reload the app (if the file changed and a release is deployed)",
                          pm2_command(["startOrReload", eco["path"]], pm2_home=eco["pm2_home"],
                                      run_as=eco["run_as"], login_user=t.ssh.user))
        plan[host.label] += [_file("PM2 ecosystem", eco["path"], eco["ecosystem"]),
                             *([reload, save] if eco["reload"] else [])]
    return plan


def configure_app_host(t: Topology, host: Container, executor: Executor, secrets: Secrets) -> list[str]:
    """What `pulumi up` configures on one app host: bootstrap, shared/.env, PM2 ecosystem."""
    changes: list[str] = []
    boot = bootstrap_props(t, host)
    changes += [f"bootstrap: {c}" for c in apply_bootstrap(executor, boot["script"], boot["script_path"])]
    content = render_env(t, secrets.db_password, secrets.app)
    changes += [f"app settings: {c}" for c in apply_env(executor, t, host, content)]
    color = host.color or ""
    eco = ecosystem_props(t, color)
    changes += [f"pm2: {c}" for c in apply_ecosystem(
        executor, text=eco["ecosystem"], path=eco["path"], pm2_home=eco["pm2_home"],
        app_dir=eco["app_dir"], run_as=eco["run_as"], login_user=t.ssh.user, reload=True)]
    return changes
