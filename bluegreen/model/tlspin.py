"""The Proxmox node's TLS trust, pure: certificate fingerprints (as `bluegreen trust --proxmox`
shows and pins them) and the PEM bundle the Pulumi provider is pointed at with SSL_CERT_FILE."""

from __future__ import annotations

import os
import re
from pathlib import Path

from bluegreen.model.errors import ConfigError
from bluegreen.model.topology import Topology

_HEX_FINGERPRINT = re.compile(r"(?:sha256(?:\s*fingerprint)?[:\s=]*)?((?:[0-9a-f]{2}:?){32})", re.I)


def normalize_fingerprint(text: str, *, source: str = "proxmox.fingerprint") -> str:
    """`SHA256:AB:CD:...`, `AB:CD:...` or `abcd...` (the node certificate's SHA-256, as the PVE
    GUI and `openssl x509 -fingerprint -sha256` print it) as 64 lowercase hex digits."""
    match = _HEX_FINGERPRINT.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"{source}: {text!r} is not a SHA-256 certificate fingerprint "
                          "(expected 32 hex pairs, e.g. AB:CD:...; `bluegreen trust --proxmox` shows it)")
    return match.group(1).replace(":", "").lower()


def show_fingerprint(hexdigest: str) -> str:
    """`SHA256:AB:CD:...`, the form `trust --proxmox` prints and the stack file keeps."""
    return "SHA256:" + ":".join(hexdigest[i:i + 2] for i in range(0, len(hexdigest), 2)).upper()




def pinned_certificate_path(t: Topology) -> str:
    """Where `bluegreen trust --proxmox` keeps the node's pinned certificate (PEM), beside the SSH
    known_hosts: the bundle the Pulumi provider is given as SSL_CERT_FILE."""
    folder = os.path.dirname(os.path.expanduser(t.ssh.known_hosts)) or "."
    return os.path.join(folder, f"proxmox-{t.stack}.pem")


def provider_trust_bundle(t: Topology) -> str | None:
    """The PEM bundle the Pulumi provider must trust for the node: the pinned certificate's bundle
    (written by `trust --proxmox`: the system CAs plus the node's certificate), else proxmox.caFile."""
    pinned = pinned_certificate_path(t)
    if t.proxmox.fingerprint and os.path.isfile(pinned):
        return pinned
    return t.proxmox.ca_file


def bundle_covers(bundle: str | None, wanted: str) -> bool:
    """Whether the PEM file `bundle` holds every certificate of the PEM file `wanted`."""
    if not bundle:
        return False
    try:
        have = Path(bundle).read_text(errors="replace")
        need = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----",
                          Path(wanted).read_text(errors="replace"), re.S)
    except OSError:
        return False
    return bool(need) and all(cert in have for cert in need)
