"""A copy of the lab's project declared the way prod runs (the Pulumi engine's tests and the
automation-switch benchmark both need it): switches go through Pulumi, the declared colour lives in
the stack file (no `activeColorFile`), and every container is adopted with the settings the lab
gave it, so the first `up` writes nothing to the lab's node."""

from __future__ import annotations

from pathlib import Path

import yaml


def declare_like_prod(project: Path, stack: str, live: str) -> None:
    path = project / "stacks" / f"Pulumi.{stack}.yaml"
    data = yaml.safe_load(path.read_text())
    config = data["config"]
    config.pop("bluegreen:activeColorFile", None)
    config["bluegreen:activeColor"] = live
    config["bluegreen:switch"]["mode"] = "automation"
    config["bluegreen:switch"]["watchSeconds"] = 0
    for entry in config["bluegreen:containers"]:
        entry.update({"existing": True, "onBoot": True, "startup": "none", "protection": False})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
