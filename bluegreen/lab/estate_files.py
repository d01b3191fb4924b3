"""What the lab's estate leaves in the lab's directory, and removing it (`lab up` over another
estate, `lab up --legacy --reset`, `make lab-reset`).

The estate is the hosts' data (releases, working copies, HAProxy, the journal, PostgreSQL, PM2, the
old tool's scripts), its dumps here and on the backup host, and what was declared or adopted about
it outside the hosts: the declared colour, the adopted stack, the secrets adopt read from its
`.env`. The lab's own keys, CA, Proxmox token and generated secrets are not the estate's: they stay.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bluegreen.lab.paths import LEGACY_MARKER, LabPaths
from bluegreen.model.topology import Topology

# Under each host's root: everything a deploy, `apply` or the legacy lab writes there.
HOST_DIRS = ("/etc/haproxy", "/var/lib/jw-deployment", "/var/lib/bluegreen", "/var/lib/postgresql",
             "/root/.pm2", "/usr/local/bin")
OPERATOR_DIR = "operator"  # the legacy estate's operator machine (its IDE config, the old MCP server)


def remove_estate_files(t: Topology, p: LabPaths, adopted_stack: Path | None) -> None:
    """The estate's files and data (either kind); the processes must be stopped first."""
    (p.root / LEGACY_MARKER).unlink(missing_ok=True)
    shutil.rmtree(p.root / OPERATOR_DIR, ignore_errors=True)
    # What was declared or adopted about the estate that goes: the next one starts from the stack
    # file as the repository has it (the colour it declares, no adopted stack, none of the
    # secrets adopt read from the old estate's .env).
    for declared in (t.active_color_file, adopted_stack, p.secrets / "database-password"):
        if declared is not None and Path(declared).is_relative_to(p.root):
            Path(declared).unlink(missing_ok=True)
    shutil.rmtree(p.secrets / "app-env", ignore_errors=True)
    # Its dumps too, here and on the backup host: a dump of another estate's database is not one
    # to restore into the next (`db restore` and `rebuild estate` take the newest).
    shutil.rmtree(t.database_host.path(t.database.backup_dir), ignore_errors=True)
    if t.backup is not None and Path(t.backup.root).is_relative_to(p.root):
        shutil.rmtree(t.backup.path(t.backup.dir), ignore_errors=True)
    # fakepve keeps nothing across a restart (containers are provisioned anew); its CA and token
    # stay, so no client ever meets a certificate it was not given.
    work = [t.app.working_copy, t.app.working_copy + ".working-copy"] if t.app.working_copy else []
    for host in t.containers:
        for rel in (t.app.dir, *work, *HOST_DIRS):
            shutil.rmtree(host.path(rel), ignore_errors=True)
