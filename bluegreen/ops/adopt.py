"""`bluegreen adopt`: write the running estate into the stack file, the way `pulumi import` writes code.

For every container of the stack it reads the configuration PVE holds (cores, memory, swap, root
disk, network, hostname, DNS, features, on-boot, start-up order, protection, description, tags,
mount points) and writes each value as a per-container stack value, with `existing: true`, so the
Pulumi program declares exactly what the provider reads back and the first `pulumi preview` shows
imports with no diff. From the estate itself it reads:

- the live colour: HAProxy's routing (runtime map, else the `use_backend`/`default_backend` of its
  config), else the journal's `prod`;
- the repository URL: `git remote get-url origin` of the working copy (`app.workingCopy`) on an
  app host, without any token pasted into it;
- everything of the app (`ops/adopt_app.py`): every `.env` variable (secrets as references to
  0600 files, never values in the stack file), the user that runs its PM2, the health check and
  the other sites of the hand-written haproxy.cfg;
- the estate's old tools, reported only: its switch script and the old MCP server
  (`ops/retire.py`, which `bluegreen retire-legacy` uses to make them harmless).

The stack file is rewritten round trip (ruamel.yaml), so its comments and layout survive; a second
run writes nothing. A stack that names `adoptedStackFile` (the lab) is written there instead, so a
rehearsal never rewrites a tracked file; its declared colour goes to `activeColorFile` if it has one.
Pure parts (PVE config -> stack values, the diff) are at the top.
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import logging
import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.hosts import haproxy as hr
from bluegreen.hosts.executor import connect
from bluegreen.hosts.haproxy_cfg import color_from_backend_names
from bluegreen.hosts.pve import from_topology
from bluegreen.model.ctread import stack_values
from bluegreen.model.errors import BlueGreenError, ConfigError, RemoteError
from bluegreen.model.journal import parse_state
from bluegreen.model.secrets import resolve_secrets
from bluegreen.model.stackfile import (
    adopted_stack_file,
    effective_stack_file,
    read_stack_config,
    set_active_color_in_file,
)
from bluegreen.model.topology import COLORS, NAMESPACE, Container, Topology
from bluegreen.ops.adopt_app import (
    AppFindings,
    AppValues,
    app_values,
    parse_database_url,
    read_app_host,
    read_load_balancer,
    secrets_dir_is_safe,
)
from bluegreen.ops.retire import find_legacy_tools
from bluegreen.render.workingcopy import without_userinfo

log = logging.getLogger("bluegreen.adopt")

# --------------------------------------------------------------------------- pure


def container_values(vmid: int, config: Mapping[str, Any], *, running: bool,
                     notes: list[str] | None = None) -> dict[str, Any]:
    """The stack values of one container, from PVE's `GET /nodes/{node}/lxc/{vmid}/config`: every
    value the provider's Read returns (`model.ctread.stack_values`: DNS inherited or not, every NIC,
    IPv6, mount-point options, sizes as PVE writes them), including PVE's "unset" readings (no
    start-up order -> `none`, no onboot -> false). What the program cannot declare goes to `notes`."""
    values, found_notes = stack_values(config, running=running, vmid=vmid)
    if notes is not None:
        notes.extend(found_notes)
    return values


def stack_values_for(container: Mapping[str, Any], found: Mapping[str, Any], *,
                     proxmox: Mapping[str, Any]) -> dict[str, Any]:
    """What to write into one container's stack entry: every found value, except the stack-wide
    ones (datastore, bridge, gateway, DNS) when they equal the stack-wide setting, and the
    hostname when it equals the entry's name."""
    stack_wide = {"datastore": proxmox.get("datastore"), "bridge": proxmox.get("bridge", "vmbr0"),
                  "gateway": proxmox.get("gateway"), "dnsServers": proxmox.get("dnsServers") or None,
                  "dnsDomain": proxmox.get("dnsDomain")}
    values: dict[str, Any] = {}
    for key, value in found.items():
        if key in stack_wide and value == stack_wide[key] and key not in container:
            continue
        if key == "hostname" and value == container.get("name") and "hostname" not in container:
            continue
        values[key] = value
    # A value an earlier run wrote that PVE no longer has (DNS now inherited, a NIC removed) goes,
    # or the entry would declare what is not there.
    for key in ADOPTED_KEYS:
        if key in container and key not in found:
            values[key] = REMOVE
    values["existing"] = True
    return values


# Every per-container key `container_values` may write (ctread.stack_values).
ADOPTED_KEYS = ("hostname", "ip", "bridge", "gateway", "firewall", "mac", "vlan", "mtu", "rate", "ip6", "gateway6",
                "interfaceName", "cores", "memory", "swap", "disk", "datastore", "dnsServers", "dnsDomain",
                "inheritDns", "onBoot", "started", "protection", "unprivileged", "description", "tags", "startup",
                "features", "extraInterfaces", "rootfs", "cpuLimit", "cpuUnits", "console", "devices", "lxcEnv",
                "osType", "mountPoints")
REMOVE = object()  # as a value to set: delete the key


def text_diff(before: str, after: str, path: str) -> str:
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        fromfile=f"{path} (now)", tofile=f"{path} (adopted)"))


# --------------------------------------------------------------------------- the stack file


def _yaml() -> Any:
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def update_stack_text(text: str, *, containers: Mapping[int, Mapping[str, Any]],
                      top: Mapping[str, Any], app: Mapping[str, Any], database: Mapping[str, Any],
                      haproxy: Mapping[str, Any] | None = None, env: Mapping[str, Any] | None = None) -> str:
    """The stack file's text with the adopted values set; comments, order and style kept.

    `containers` maps vmid to the keys to set in that entry; `top` sets `bluegreen:<key>` scalars;
    `app`/`database`/`haproxy` set keys inside `bluegreen:app` / `:database` / `:haproxy`; `env`
    sets variables of `bluegreen:app.env` one by one (a secret reference in flow style, a multi-line
    value as a literal block). A value equal to the one in the file is not touched, so a second run
    returns the text unchanged.
    """
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.scalarstring import LiteralScalarString

    y = _yaml()
    data = y.load(text)
    if not isinstance(data, Mapping) or not isinstance(data.get("config"), Mapping):
        raise ConfigError("the stack file has no `config:` mapping")
    config = data["config"]
    entries = config.get(f"{NAMESPACE}:containers")
    if not isinstance(entries, list):
        raise ConfigError(f"the stack file has no {NAMESPACE}:containers list")

    def to_node(value: Any, flow: bool) -> Any:
        if isinstance(value, Mapping):
            node = CommentedMap((k, to_node(v, flow)) for k, v in value.items())
            if flow:
                node.fa.set_flow_style()
            return node
        if isinstance(value, list):
            seq = CommentedSeq(to_node(v, flow) for v in value)
            if flow:
                seq.fa.set_flow_style()
            return seq
        return value

    def set_keys(target: Any, values: Mapping[str, Any], flow: bool) -> None:
        for key, value in values.items():
            if value is REMOVE:
                if key in target:
                    del target[key]
                continue
            if _same(target.get(key), value):
                continue
            if isinstance(value, str) and "\n" in value:
                target[key] = LiteralScalarString(value)  # haproxy.extraConfig, as it reads in the file
            else:
                target[key] = to_node(value, flow)

    for entry in entries:
        if not isinstance(entry, Mapping) or entry.get("id") is None:
            continue
        values = containers.get(int(entry["id"]))
        if values:
            set_keys(entry, values, flow=True)
    for key, value in top.items():
        full = f"{NAMESPACE}:{key}"
        if not _same(config.get(full), value):
            config[full] = value
    for section, values in ((f"{NAMESPACE}:app", app), (f"{NAMESPACE}:database", database),
                            (f"{NAMESPACE}:haproxy", haproxy or {})):
        if not values:
            continue
        target = config.get(section)
        if target is None:
            config[section] = target = CommentedMap()
        set_keys(target, values, flow=False)
    if env:
        app_section = config.get(f"{NAMESPACE}:app")
        if app_section is None:
            config[f"{NAMESPACE}:app"] = app_section = CommentedMap()
        if app_section.get("env") is None:
            app_section["env"] = CommentedMap()
        set_keys(app_section["env"], env, flow=True)
    out = io.StringIO()
    y.dump(data, out)
    new = out.getvalue()
    return text if _reparse(new) == _reparse(text) else new


def _same(a: Any, b: Any) -> bool:
    return _to_plain(a) == _to_plain(b)


def _to_plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    return value


def _reparse(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


# --------------------------------------------------------------------------- reading the estate


@dataclass
class Findings:
    """What adopt found; `notes` are the lines it prints."""

    containers: dict[int, dict[str, Any]] = field(default_factory=dict)
    live_color: str | None = None
    live_source: str | None = None
    repo: str | None = None
    branch: str | None = None  # the live colour's working copy's branch: what deploys default to
    database_user: str | None = None
    database_name: str | None = None
    app: AppFindings = field(default_factory=AppFindings)
    notes: list[str] = field(default_factory=list)
    legacy: dict[str, Any] | None = None  # the estate's old switch and MCP server (ops/retire.py)


@dataclass
class AdoptResult:
    stack_file: str
    findings: Findings
    diff: str
    written: bool
    dry_run: bool
    values: AppValues = field(default_factory=AppValues)
    colour_file: str | None = None  # the activeColorFile the live colour was (or would be) written to

    @property
    def changed(self) -> bool:
        return bool(self.diff)

    def to_json(self) -> dict[str, Any]:
        f = self.findings
        return {"ok": True, "stackFile": self.stack_file, "dryRun": self.dry_run, "changed": self.changed,
                "written": self.written, "diff": self.diff, "liveColor": f.live_color,
                "liveColorSource": f.live_source, "repo": f.repo, "branch": f.branch, "databaseUser": f.database_user,
                "databaseName": f.database_name, "containers": f.containers, "notes": f.notes,
                "deployUser": self.values.app.get("deployUser"), "healthPath": f.app.health_path,
                "healthStatus": f.app.health_status,
                # Names only: values may be secrets (and the plain ones are in the diff).
                "env": sorted({n for h in f.app.hosts.values() for n in (h.env or {})}),
                "secretFiles": sorted(self.values.secret_files), "colourFile": self.colour_file,
                "legacyTools": f.legacy}


ExecutorFactory = Callable[[Container], Any]


def read_live_color(t: Topology, executor: Any) -> tuple[str | None, str, str | None]:
    """HAProxy's live colour (runtime map, else its config's backend), else the journal's `prod`;
    with where it was read, and the config's text (None when there is none)."""
    lb = t.load_balancer
    try:
        data = executor.get(lb.path(t.haproxy.config_path), step="read haproxy.cfg")
    except RemoteError as exc:
        log.debug("cannot read haproxy.cfg: %s", exc)
        data = None
    cfg = data.decode(errors="replace") if data is not None else None
    try:
        return hr.live_color(executor, t), "HAProxy runtime map", cfg
    except BlueGreenError as exc:
        log.debug("no runtime live colour: %s", exc)
    if cfg is not None:
        color = color_from_backend_names(cfg)
        if color:
            return color, f"{t.haproxy.config_path} (use_backend)", cfg
    state = executor.get(lb.path(t.journal.path), step="read the journal")
    if state is not None:
        parsed = parse_state(state.decode(errors="replace"), source=t.journal.path,
                             declared_color=t.active_color)
        if parsed.prod in COLORS:
            return parsed.prod, f"{t.journal.path} (prod)", cfg
    return None, "nowhere (HAProxy and the journal name no colour)", cfg


def read_repo(t: Topology, host: Container, executor: Any) -> str | None:
    """The origin URL of the working copy (or of the mirror the release layout keeps)."""
    app_dir = host.path(t.app.dir)
    work = host.path(t.app.working_copy) if t.app.working_copy else None
    for candidate in (*filter(None, [work]), f"{app_dir}/repo.git"):
        quoted = shlex.quote(candidate)
        result = executor.run(f"git -c safe.directory={quoted} -C {quoted} remote get-url origin",
                              step="read the origin URL", check=False)
        if result.ok and result.stdout.strip():
            # A token pasted into the URL stays on the host: the stack gets the URL without it.
            return without_userinfo(result.stdout.strip())
    return None


def read_branch(t: Topology, host: Container, executor: Any) -> str | None:
    """The branch the team's working copy is on (None: no working copy, or a detached HEAD)."""
    if not t.app.working_copy:
        return None
    quoted = shlex.quote(host.path(t.app.working_copy))
    result = executor.run(f"git -c safe.directory={quoted} -C {quoted} symbolic-ref --quiet --short HEAD",
                          step="read the working copy's branch", check=False)
    return result.stdout.strip() or None if result.ok else None


def _note_branch(f: Findings, branches: dict[str, str | None], live: str | None) -> None:
    found = {c: b for c, b in branches.items() if b}
    if not found:
        return
    color = live if live in found else sorted(found)[0]
    f.branch = found[color]
    others = {c: b for c, b in found.items() if b != f.branch}
    f.notes.append(f"branch: {f.branch} ({color}'s working copy; deploys default to it)"
                   + "".join(f"; {c}'s working copy is on {b}" for c, b in sorted(others.items())))


def gather(t: Topology, *, pve: Any, connect: ExecutorFactory, ide_config: Path | None = None) -> Findings:
    f = Findings()
    for c in t.containers:
        config = pve.container_config(c.vmid)
        running = pve.container_status(c.vmid).running
        f.containers[c.vmid] = container_values(c.vmid, config, running=running, notes=f.notes)
        summary = f.containers[c.vmid]
        f.notes.append(f"CT {c.vmid} ({c.name}): {summary['cores']} cores, {summary['memory']} MB, "
                       f"disk {summary['datastore']}:{summary['disk']}G, {summary['ip']}, "
                       f"onboot {str(summary['onBoot']).lower()}, startup {summary['startup']}, "
                       f"{'running' if running else 'stopped'}")
    with connect(t.load_balancer) as lb:
        f.live_color, f.live_source, cfg = read_live_color(t, lb)
        legacy = find_legacy_tools(t, lb, ide_config)
    f.notes.append(f"live colour: {f.live_color or 'unknown'} (from {f.live_source})")
    f.legacy = legacy.to_json()
    f.notes += legacy.notes
    read_load_balancer(t, cfg, f.live_color, f.app)
    branches: dict[str, str | None] = {}
    for color in COLORS:
        host = t.app_host(color)
        try:
            with connect(host) as ex:
                repo = read_repo(t, host, ex)
                branches[color] = read_branch(t, host, ex)
                f.app.hosts[color] = read_app_host(t, host, ex)
        except RemoteError as exc:
            f.notes.append(f"{color}: cannot read the app host ({exc})")
            continue
        if repo and not f.repo:
            f.repo = repo
            f.notes.append(f"repository: {repo} (origin of {host.label}'s working copy)")
        env = f.app.hosts[color].env
        if env and env.get("DATABASE_URL") and not f.database_user:
            db = parse_database_url(env["DATABASE_URL"])
            f.database_user, f.database_name = db.user, db.name
    _note_branch(f, branches, f.live_color)
    f.notes += f.app.notes
    return f


def adopt(t: Topology, *, pve: Any, connect: ExecutorFactory, dry_run: bool = False,
          confirm: Callable[[str], None] | None = None, ide_config: Path | None = None) -> AdoptResult:
    """Read the estate, write the stack file (unless `dry_run`); `confirm(diff)` may refuse."""
    secrets_dir_is_safe(t, t.project_dir)
    f = gather(t, pve=pve, connect=connect, ide_config=ide_config)
    source = effective_stack_file(t.project_dir, t.stack)
    path = adopted_stack_file(t.project_dir, t.stack) or source
    text = source.read_text()
    raw = read_stack_config(t.project_dir, t.stack)
    proxmox = raw.get(f"{NAMESPACE}:proxmox") or {}
    entries = {int(e["id"]): e for e in raw.get(f"{NAMESPACE}:containers") or []
               if isinstance(e, Mapping) and e.get("id") is not None}
    per_container = {vmid: stack_values_for(entries.get(vmid, {}), found, proxmox=proxmox)
                     for vmid, found in f.containers.items()}
    values = app_values(t, f.app, f.live_color or t.active_color, _declared_secrets(t))
    f.notes += values.notes
    top = {"activeColor": f.live_color} if f.live_color else {}
    app = {**({"repo": f.repo} if f.repo else {}), **({"branch": f.branch} if f.branch else {}), **values.app}
    new = update_stack_text(text, containers=per_container, top=top, app=app, database=values.database,
                            haproxy=values.haproxy, env=values.env)
    colour_file = t.active_color_file if f.live_color and t.active_color_file else None
    diff = text_diff(text, new, str(path))
    if colour_file and t.active_color != f.live_color:
        diff += f"{colour_file}: {t.active_color} -> {f.live_color} (the declared live colour)\n"
    written = False
    if (diff or (path != source)) and not dry_run:
        if confirm is not None and diff:
            confirm(diff)
        values.write_secrets()  # first: the stack file then names only files that exist
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.adopt.tmp")
        tmp.write_text(new)
        os.replace(tmp, path)
        if colour_file and f.live_color:
            set_active_color_in_file(t.project_dir, t.stack, f.live_color)
        written = True
    return AdoptResult(stack_file=str(path), findings=f, diff=diff, written=written, dry_run=dry_run,
                       values=values, colour_file=colour_file)


def _declared_secrets(t: Topology) -> dict[str, Any]:
    """The `app.env` secrets the stack declares now, resolved where they can be (outside the
    engine: environment, files); one that cannot be resolved counts as not matching."""
    declared = [var for var in t.app.env if var.secret is not None]
    found: dict[str, Any] = {}
    for var in declared:
        single = dataclasses.replace(t, app=dataclasses.replace(t.app, env=(var,)))
        try:
            found.update(resolve_secrets(single))
        except ConfigError:
            continue
    return found


def run_adopt(t: Topology, *, dry_run: bool, confirm: Callable[[str], None] | None = None,
              ide_config: Path | None = None) -> AdoptResult:
    """`bluegreen adopt`: the stack's own PVE client and SSH connections."""
    return adopt(t, pve=from_topology(t), connect=lambda c: connect(t, c), dry_run=dry_run, confirm=confirm,
                 ide_config=ide_config)
