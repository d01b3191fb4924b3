"""Configure every host as `pulumi up` would, without the engine (the lab, `plan`, a rebuilt host)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bluegreen.hosts import haproxy_cli as hr
from bluegreen.hosts import offsite
from bluegreen.hosts.executor import Executor, connect
from bluegreen.hosts.hostconfig import bootstrap_command, candidate_path, pm2_command, psql_command
from bluegreen.hosts.resources import PROVIDERS, resource_props
from bluegreen.model.resources import host_resources
from bluegreen.model.secrets import Secrets, resolve_secrets
from bluegreen.model.sensitive import MASK, Sensitive
from bluegreen.model.topology import Container, Topology
from bluegreen.render.shell import sh

log = logging.getLogger("bluegreen.configure")


ExecutorSource = Callable[[Container], Executor] | Mapping[int, Executor]


def apply_estate(t: Topology, db_password: Sensitive, *, executor_for: ExecutorSource | None = None,
                 app_secrets: Mapping[str, Sensitive] | None = None) -> list[str]:
    """Apply the whole host configuration, as `pulumi up` would, without the engine: every
    resource of `host_resources` (the list the program registers), in its order, through the
    same providers' logic. Returns what changed, one line per change, each naming its host and
    resource. `executor_for` gives the executor for a container (a callable, or a mapping by
    vmid); executors given are left open for their owner, ones made here are closed here.
    `app_secrets`: the resolved `app.env` secrets (default: from the environment and files).
    """
    secrets = Secrets(db_password, resolve_secrets(t) if app_secrets is None else app_secrets)
    own: dict[int, Executor] = {}

    def on(container: Container) -> Executor:
        if executor_for is None:
            if container.vmid not in own:
                own[container.vmid] = connect(t, container, secrets=secrets.all())
            return own[container.vmid]
        if isinstance(executor_for, Mapping):
            return executor_for[container.vmid]
        return executor_for(container)

    changes: list[str] = []
    try:
        for resource in host_resources(t):
            props = resource_props(t, resource, secrets)
            for line in PROVIDERS[resource.kind]().configure(on(resource.host), props):
                log.info("%s: %s: %s", resource.host.label, resource.kind, line)
                changes.append(f"{resource.host.label}: {resource.kind}: {line}")
        db, lb = t.database_host, t.load_balancer
        changes += configure_offsite(t, [(db, on(db)), (lb, on(lb))], secrets=[db_password])
    finally:
        for executor in own.values():
            executor.close()
    return changes


def configure_offsite(t: Topology, pushers: list[tuple[Container, Executor]], *,
                      secrets: Iterable[Sensitive]) -> list[str]:
    """The cross-host part of the off-host copies (`bluegreen:backup`): the backup host's receive
    script, the pushing hosts' keys authorized there, its key pinned on them. Nothing without one."""
    if t.backup is None:
        return []
    with offsite.backup_executor(t, secrets) as backup:
        done = offsite.setup(t, backup, pushers)
    for line in done:
        log.info("%s: offsite: %s", t.backup.label, line)
    return [f"{t.backup.label}: offsite: {line}" for line in done]


def _file(step: str, path: str, content: str) -> dict[str, str]:
    return {"kind": "file", "step": step, "path": path, "content": content}


def _command(step: str, command: str) -> dict[str, str]:
    return {"kind": "command", "step": step, "command": command}


Plan = list[dict[str, str]]


def _plan_bootstrap(t: Topology, props: Mapping[str, Any]) -> Plan:
    return [_file("bootstrap script (runs if it differs from the one recorded)", props["script_path"],
                  props["script"]),
            _command("bootstrap", bootstrap_command(f"{props['script_path']}.pending"))]


def _plan_database(t: Topology, props: Mapping[str, Any]) -> Plan:
    return [
        _file("database SQL (sent to psql on stdin)", "(stdin)", props["sql"]),
        _command("apply the database SQL", psql_command(props["socket_dir"], props["port"], "-f", "-")),
        _file("managed block merged into pg_hba.conf (psql: SHOW hba_file)", "(pg_hba.conf)", props["hba"]),
        _command("reload PostgreSQL (if pg_hba.conf changed)",
                 psql_command(props["socket_dir"], props["port"], "-At", "-c", "SELECT pg_reload_conf()")),
    ]


def _plan_haproxy(t: Topology, props: Mapping[str, Any]) -> Plan:
    paths = hr.HaproxyPaths.from_topology(t)
    candidate = candidate_path(paths.config)
    return [
        _file("initial live-colour map (if missing)", paths.map, props["initial_map"]),
        _file("HAProxy configuration candidate (if it differs)", candidate, props["config"]),
        _command("validate the HAProxy configuration", hr.check_config_command(candidate)),
        _command("install the HAProxy configuration", sh("mv", "-f", candidate, paths.config)),
        _command("reload HAProxy (if running)", hr.runtime_command(paths.master_socket, [hr.RELOAD])),
        *([_command("start HAProxy (if not running, on a systemd host)",
                    hr.systemd_start_command(paths.service))] if paths.service else []),
        _command("start HAProxy (if not running" + (", without systemd)" if paths.service else ")"),
                 hr.start_command(paths)),
    ]


def _plan_routing(t: Topology, props: Mapping[str, Any]) -> Plan:
    paths = hr.HaproxyPaths.from_topology(t)
    color = props["live_color"]
    return [_command(f"route live traffic to {color}",
                     hr.runtime_command(paths.admin_socket, [hr.set_map(paths.map, k, v)
                                                             for k, v in hr.routing_entries(color).items()])),
            _file("live-colour map", paths.map, props["map_text"])]


def _plan_app_env(t: Topology, props: Mapping[str, Any]) -> Plan:
    return [_file("app settings managed by the stack, merged into the file on the host (every other "
                  "variable kept; the working copy's .env while the host keeps the old layout)",
                  props["path"], props["content"])]


def _plan_ecosystem(t: Topology, props: Mapping[str, Any]) -> Plan:
    def pm2(*args: str) -> str:
        return pm2_command(list(args), pm2_home=props["pm2_home"], run_as=props["run_as"], login_user=t.ssh.user)

    reload = [_command("reload the app (if the file changed and a release is deployed)",
                       pm2("startOrReload", props["path"])),
              _command("save the PM2 process list", pm2("save"))]
    return [_file("PM2 ecosystem", props["path"], props["ecosystem"]), *(reload if props["reload"] else [])]


_PLANS = {"bootstrap": _plan_bootstrap, "postgres-database": _plan_database, "haproxy-config": _plan_haproxy,
          "live-color-routing": _plan_routing, "app-env": _plan_app_env, "pm2-ecosystem": _plan_ecosystem}


def plan_estate(t: Topology) -> dict[str, Plan]:
    """Per host label, the files `apply_estate` writes and the commands it runs, in its order
    (`host_resources`: what the program registers). Pure. Secrets show as a mask. Commands marked
    "if ..." in their step run only when that condition holds on the host."""
    masked = Secrets(Sensitive(MASK), {var.name: Sensitive(MASK) for var in t.app.env if var.secret})
    plan: dict[str, Plan] = {c.label: [] for c in t.containers}
    for resource in host_resources(t):
        plan[resource.host.label] += _PLANS[resource.kind](t, resource_props(t, resource, masked))
    return plan


def configure_app_host(t: Topology, host: Container, executor: Executor, secrets: Secrets) -> list[str]:
    """What `pulumi up` configures on one (rebuilt) app host: its resources of `host_resources`
    (bootstrap, shared/.env, PM2 ecosystem), the ecosystem loaded whatever the colour."""
    changes: list[str] = []
    for resource in host_resources(t):
        if resource.host.vmid != host.vmid:
            continue
        props = {**resource_props(t, resource, secrets), **({"reload": True} if resource.kind == "pm2-ecosystem"
                                                             else {})}
        changes += [f"{resource.kind}: {c}" for c in PROVIDERS[resource.kind]().configure(executor, props)]
    return changes
