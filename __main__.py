"""Pulumi program: the JW Attendant Scheduler estate on Proxmox VE (see docs/DESIGN.md).

Thin on purpose: the stack config becomes a validated `Topology`, the components register the
resources, the topology gives the outputs. Bad config fails before any resource is registered,
as one message naming every bad key and no traceback (`pulumi.RunError`).
"""

from __future__ import annotations

from pathlib import Path

import pulumi
import pulumi_proxmoxve as proxmoxve

from bluegreen.errors import BlueGreenError, ConfigError
from bluegreen.topology import Topology, from_config, pulumi_getter, read_public_keys
from components.estate import build_estate, stack_outputs

PROJECT_DIR = Path(__file__).resolve().parent


def load_topology() -> Topology:
    get = pulumi_getter(pulumi.Config("bluegreen").get,
                        lambda namespace, key: pulumi.Config(namespace).get(key))
    return from_config(get, stack=pulumi.get_stack(), project_dir=PROJECT_DIR)


def token_from_file_text(token_id: str, text: str) -> str:
    """A token file holds the secret alone or the whole `USER@REALM!NAME=SECRET` (as PVE prints it)."""
    text = text.strip()
    return text if text.startswith(f"{token_id}=") else f"{token_id}={text}"


def api_token(topology: Topology) -> pulumi.Output[str]:
    """`proxmoxve:apiToken` (a secret), else `proxmox.tokenId` + `proxmox.tokenFile` (the lab
    writes its token to a file, as the automation reads it)."""
    configured = pulumi.Config("proxmoxve").get_secret("apiToken")
    if configured is not None:
        return configured
    px = topology.proxmox
    if px.token_id and px.token_file:
        try:
            text = Path(px.token_file).read_text()
        except OSError as exc:
            raise ConfigError(f"proxmox.tokenFile: cannot read {px.token_file}: {exc.strerror}") from None
        return pulumi.Output.secret(token_from_file_text(px.token_id, text))
    raise ConfigError(
        f"proxmoxve:apiToken is not set for stack {topology.stack!r}: run "
        f"pulumi config set --secret proxmoxve:apiToken 'USER@REALM!NAME=SECRET' --stack {topology.stack}")


def main() -> None:
    try:
        topology = load_topology()
        public_keys = read_public_keys(topology.ssh)
        token = api_token(topology)
    except BlueGreenError as err:
        raise pulumi.RunError(str(err)) from None

    configured_insecure = pulumi.Config("proxmoxve").get_bool("insecure")
    provider = proxmoxve.Provider(
        "proxmoxve",
        endpoint=topology.proxmox.endpoint,
        insecure=topology.proxmox.insecure if configured_insecure is None else configured_insecure,
        api_token=token,
    )
    build_estate(topology, provider, public_keys=public_keys)

    # ---- HOST CONFIGURATION SLOT --------------------------------------------------------------
    # The lead adds here: keep the Estate that build_estate returns and call
    # configure_hosts(topology, estate) from components/hostconfig.py.
    # -------------------------------------------------------------------------------------------

    for name, value in stack_outputs(topology).items():
        pulumi.export(name, value)


if __name__ == "__main__":
    main()
