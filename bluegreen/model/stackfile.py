"""Stack files (`stacks/Pulumi.<stack>.yaml`): reading them, and recording the declared live colour.

A stack may name an `adoptedStackFile` (the lab: a file in its own directory): `bluegreen adopt`
writes the adopted stack there instead of the tracked file, and once it exists it IS the stack
for every command, so rehearsing a takeover never rewrites a file of the repository. A fresh lab
(`lab up`, `lab up --legacy --reset`) removes it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError as RuamelYAMLError

from bluegreen.model.config import config_getter, from_config
from bluegreen.model.errors import ConfigError, Problem, ValidationError
from bluegreen.model.reader import json_kind
from bluegreen.model.topology import COLORS, NAMESPACE, Topology


def stack_file(project_dir: str | os.PathLike[str], stack: str) -> Path:
    return Path(project_dir) / "stacks" / f"Pulumi.{stack}.yaml"


def available_stacks(project_dir: str | os.PathLike[str]) -> list[str]:
    folder = Path(project_dir) / "stacks"
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in folder.glob("Pulumi.*.yaml"))


def _resolve(project_dir: str | os.PathLike[str], value: Any) -> Path | None:
    if not isinstance(value, str) or not value.strip():
        return None
    expanded = os.path.expanduser(value)
    return Path(expanded if os.path.isabs(expanded) else Path(project_dir).resolve() / expanded)


def adopted_stack_file(project_dir: str | os.PathLike[str], stack: str) -> Path | None:
    """Where `bluegreen adopt` writes this stack (`bluegreen:adoptedStackFile`), or None: the
    stack file itself."""
    return _resolve(project_dir, _read_file(stack_file(project_dir, stack), project_dir, stack)
                    .get(f"{NAMESPACE}:adoptedStackFile"))


def effective_stack_file(project_dir: str | os.PathLike[str], stack: str) -> Path:
    """The file that is the stack now: the adopted copy once it exists, else the stack file."""
    adopted = adopted_stack_file(project_dir, stack)
    return adopted if adopted is not None and adopted.is_file() else stack_file(project_dir, stack)


def read_stack_config(project_dir: str | os.PathLike[str], stack: str) -> dict[str, Any]:
    return _read_file(effective_stack_file(project_dir, stack), project_dir, stack)


def _read_file(path: Path, project_dir: str | os.PathLike[str], stack: str) -> dict[str, Any]:
    if not path.is_file():
        known = ", ".join(available_stacks(project_dir)) or "none"
        raise ConfigError(f"unknown stack {stack!r}: {path} does not exist (stacks here: {known})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValidationError(str(path), [Problem("(top level)", f"expected a mapping, got {json_kind(data)}")])
    config = data.get("config", {})
    if not isinstance(config, Mapping):
        raise ValidationError(str(path), [Problem("config", f"expected a mapping, got {json_kind(config)}")])
    return dict(config)


def load_stack(project_dir: str | os.PathLike[str], stack: str) -> Topology:
    """Read and validate `stacks/Pulumi.<stack>.yaml`."""
    config = read_stack_config(project_dir, stack)
    return from_config(config_getter(config), stack=stack, project_dir=project_dir,
                       source=str(effective_stack_file(project_dir, stack)))


def set_active_color_in_file(project_dir: str | os.PathLike[str], stack: str, color: str) -> None:
    """Record the live colour in the stack file through a round-trip YAML edit (ruamel.yaml): the
    value changes, comments, key order and quoting elsewhere stay as they were.

    A stack that names an `activeColorFile` (the lab: a file in its own directory, outside the
    repository) keeps its declared colour there instead, so running it never edits a tracked file.
    """
    if color not in COLORS:
        raise ConfigError(f"unknown colour {color!r}")
    raw_overlay = read_stack_config(project_dir, stack).get(f"{NAMESPACE}:activeColorFile")
    overlay = _resolve(project_dir, raw_overlay)
    if overlay is not None:
        target = Path(overlay)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp_overlay = target.with_name(f".{target.name}.tmp")
        tmp_overlay.write_text(color + "\n")
        os.replace(tmp_overlay, target)
        return
    key = f"{NAMESPACE}:activeColor"

    def change(path: Path, config: MutableMapping[str, Any]) -> bool:
        if key not in config:
            raise ConfigError(f"{path}: no '{key}' line to update")
        if config[key] == color:
            return False
        config[key] = color
        return True

    _edit_stack(project_dir, stack, "record the live colour", change)


def set_container_existing(project_dir: str | os.PathLike[str], stack: str, vmid: int,
                           value: bool | str) -> None:
    """Set `existing` of one container's entry (`True`, `"rebuilding"`, or `False`, which removes the
    key: a container the program owns), through a round-trip YAML edit that keeps everything else,
    written atomically. Used by `bluegreen rebuild standby` to move an adopted container to owned."""
    def change(path: Path, config: MutableMapping[str, Any]) -> bool:
        entries = config.get(f"{NAMESPACE}:containers")
        entry = next((e for e in entries or [] if isinstance(e, MutableMapping) and str(e.get("id")) == str(vmid)),
                     None)
        if entry is None:
            raise ConfigError(f"{path}: no container with id {vmid} in {NAMESPACE}:containers")
        if value is False:
            return entry.pop("existing", None) is not None
        if entry.get("existing") == value:
            return False
        entry["existing"] = value
        return True

    _edit_stack(project_dir, stack, f"record CT {vmid} as {value!r}", change)


def set_proxmox_fingerprint_in_file(project_dir: str | os.PathLike[str], stack: str, fingerprint: str) -> Path:
    """Pin the node certificate: `bluegreen:proxmox.fingerprint` set (round trip, comments kept).
    An `insecure: true` beside it goes: the pin is what is checked from now on."""
    key = f"{NAMESPACE}:proxmox"

    def change(path: Path, config: MutableMapping[str, Any]) -> bool:
        proxmox = config.get(key)
        if not isinstance(proxmox, MutableMapping):
            raise ConfigError(f"{path}: no '{key}' mapping to pin the certificate in")
        proxmox["fingerprint"] = fingerprint
        proxmox.pop("insecure", None)
        config.pop("proxmoxve:insecure", None)
        return True

    return _edit_stack(project_dir, stack, "pin the Proxmox certificate", change)


def _edit_stack(project_dir: str | os.PathLike[str], stack: str, why: str,
                change: Callable[[Path, MutableMapping[str, Any]], bool]) -> Path:
    """A round-trip YAML edit of the stack file in effect (the adopted copy once there is one):
    `change` edits its config mapping and says whether it changed anything; comments, key order
    and quoting elsewhere stay as they were; written atomically, and only when changed."""
    path = effective_stack_file(project_dir, stack)
    rt = _round_trip_yaml()
    try:
        data = rt.load(path.read_text())
    except (OSError, RuamelYAMLError) as exc:
        raise ConfigError(f"{path}: cannot read it to {why}: {exc}") from None
    config = data.get("config") if isinstance(data, Mapping) else None
    if not isinstance(config, MutableMapping):
        raise ConfigError(f"{path}: no 'config' mapping to {why} in")
    if not change(path, config):
        return path
    out = io.StringIO()
    rt.dump(data, out)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(out.getvalue())
    os.replace(tmp, path)
    return path


def _round_trip_yaml() -> YAML:
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 4096  # never re-wrap long flow mappings (the container lines)
    rt.indent(mapping=2, sequence=4, offset=2)  # the layout of the stack files in stacks/
    return rt
