"""Pulumi program: the JW Attendant Scheduler estate on Proxmox VE (see docs/DESIGN.md).

Thin on purpose: the stack config becomes a validated `Topology`, the components register the
resources, the topology gives the outputs. Bad config fails before any resource is registered,
as one message naming every bad key and no traceback (`pulumi.RunError`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pulumi
import pulumi_proxmoxve as proxmoxve

from bluegreen.hosts.hostconfig import SWITCH_ENV
from bluegreen.model.config import from_config, pulumi_getter, read_public_keys
from bluegreen.model.ctinputs import REBUILD_ENV, lifecycle, parse_rebuild
from bluegreen.model.errors import BlueGreenError, ConfigError
from bluegreen.model.placeholders import require_complete
from bluegreen.model.secrets import TOKEN_ENV, read_token
from bluegreen.model.tlspin import bundle_covers, provider_trust_bundle
from bluegreen.model.topology import Topology
from components import live as live_estate
from components.estate import build_estate, stack_outputs
from components.hostconfig import app_env_secrets, configure_hosts, database_password

PROJECT_DIR = Path(__file__).resolve().parent


def load_topology() -> Topology:
    get = pulumi_getter(pulumi.Config("bluegreen").get,
                        lambda namespace, key: pulumi.Config(namespace).get(key))
    return from_config(get, stack=pulumi.get_stack(), project_dir=PROJECT_DIR)


def api_token(topology: Topology) -> pulumi.Output[str]:
    """`proxmoxve:apiToken` (a secret), else the token the automation uses: `PROXMOX_VE_API_TOKEN`
    or `proxmox.tokenId` + `proxmox.tokenFile` (the lab writes its token to a file)."""
    configured = pulumi.Config("proxmoxve").get_secret("apiToken")
    if configured is not None:
        return configured
    if not os.environ.get(TOKEN_ENV) and not topology.proxmox.token_file:
        stack = topology.stack
        raise ConfigError(
            f"proxmoxve:apiToken is not set for stack {stack!r}: run pulumi config set --secret "
            f"proxmoxve:apiToken 'USER@REALM!NAME=SECRET' --stack {stack} (or set {TOKEN_ENV})")
    token_id, secret = read_token(topology)
    return pulumi.Output.secret(f"{token_id}={secret.reveal()}")


def read_estate(topology: Topology) -> live_estate.LiveEstate:
    """The colour HAProxy serves and the project lock; refuses while another operation holds it."""
    found = live_estate.READER(topology)
    live_estate.refuse_if_locked(topology, found)
    if found.live_color is None:
        pulumi.log.warn(f"the live colour could not be read ({found.source}): both colours are treated as "
                        "serving, so no reboot or replacement of either is applied in this run")
    elif found.live_color != topology.active_color:
        pulumi.log.warn(f"HAProxy serves {found.live_color} but bluegreen:activeColor declares "
                        f"{topology.active_color}: {found.live_color} is protected as the serving colour")
    return found
def provider_insecure(topology: Topology) -> bool:
    """The provider verifies the node's certificate unless the stack explicitly says not to.

    The provider (Go) has no fingerprint pin or CA option: it trusts what Go trusts, the system CAs
    or the PEM bundle named by SSL_CERT_FILE in the environment of `pulumi` (which this program and
    the provider share). `bluegreen trust --proxmox` writes the node's certificate for exactly that
    (see docs/SECURITY.md); the automation sets SSL_CERT_FILE itself.
    """
    configured = pulumi.Config("proxmoxve").get_bool("insecure")
    insecure = topology.proxmox.insecure if configured is None else configured
    if insecure:
        pulumi.log.warn(f"INSECURE: TLS verification of the Proxmox API {topology.proxmox.endpoint} is OFF "
                        "(proxmox.insecure / proxmoxve:insecure): anyone on the path can read the API token. "
                        "Pin the node with `bluegreen trust --proxmox` and remove the setting.")
        return True
    bundle = provider_trust_bundle(topology)
    if bundle and not bundle_covers(os.environ.get("SSL_CERT_FILE"), bundle):
        pulumi.log.warn(f"the Proxmox provider verifies {topology.proxmox.endpoint} with the system CAs only; "
                        f"run pulumi with SSL_CERT_FILE={bundle} so that it trusts the node's certificate")
    return False


def main() -> None:
    try:
        live_estate.require_engine()  # the engine behaviours this program relies on, by CLI version
        topology = load_topology()
        require_complete(topology)  # before any resource: "set KEY: ..." for what is missing
        public_keys = read_public_keys(topology.ssh)
        token = api_token(topology)
        db_password = database_password(topology)
        app_secrets = app_env_secrets(topology)
        found = read_estate(topology)
        rebuild = parse_rebuild(os.environ.get(REBUILD_ENV))
        switch_run = bool(os.environ.get(SWITCH_ENV))
        for c in topology.containers:  # a rebuild left half-way refuses here, before any resource
            lifecycle(topology, c, live=found.live_color, rebuild=rebuild, switch_run=switch_run)
    except BlueGreenError as err:
        raise pulumi.RunError(str(err)) from None

    provider = proxmoxve.Provider(
        "proxmoxve",
        endpoint=topology.proxmox.endpoint,
        insecure=provider_insecure(topology),
        api_token=token,
    )
    estate = build_estate(topology, provider, public_keys=public_keys, live=found.live_color,
                          rebuild=rebuild, switch_run=switch_run)
    # Each host is configured over SSH once its container exists: the same renderers and
    # providers the automation and the lab use, so they can never disagree.
    configure_hosts(topology, estate, db_password, app_secrets=app_secrets, live=found.live_color)

    for name, value in stack_outputs(topology).items():
        pulumi.export(name, value)


if __name__ == "__main__":
    main()
