"""`bluegreen trust --proxmox`: show the Proxmox node's TLS certificate and pin it, as `trust` does
for SSH host keys.

The certificate is read from the handshake alone (no request, no token sent), shown with its
SHA-256 fingerprint, and pinned only once a person confirms it or it matches `--fingerprint`
given out of band. The pin goes into the stack file (`proxmox.fingerprint`: the automation checks
it on every connection, before the token is sent) and, for the Pulumi provider, into a PEM bundle
beside the SSH known_hosts: the system CAs plus this certificate, to be given as SSL_CERT_FILE.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from pathlib import Path
from typing import Any

from bluegreen.faces.cli_support import Output, confirm
from bluegreen.hosts.pve import certificate_fingerprint, fetch_certificate
from bluegreen.model.errors import ConfigError
from bluegreen.model.stackfile import set_proxmox_fingerprint_in_file
from bluegreen.model.tlspin import normalize_fingerprint, pinned_certificate_path, show_fingerprint
from bluegreen.model.topology import Topology


def describe_certificate(der: bytes) -> dict[str, Any]:
    """Subject, issuer, names and validity, for the person comparing it with the node's GUI."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    try:
        names = [str(n) for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]
    except x509.ExtensionNotFound:
        names = []
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "names": names, "notBefore": cert.not_valid_before_utc.isoformat(),
            "notAfter": cert.not_valid_after_utc.isoformat()}


def write_bundle(path: str, der: bytes) -> None:
    """The system CAs plus the node's certificate: SSL_CERT_FILE for `pulumi` (Go trusts a
    certificate that is itself in its roots), and the rest of the CLI's HTTPS keeps working."""
    system = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    try:
        others = Path(system).read_text()
    except OSError:
        others = ""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(others.rstrip("\n") + "\n" + ssl.DER_cert_to_PEM_cert(der))
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def trust_proxmox(args: argparse.Namespace, t: Topology, o: Output) -> int:
    der = fetch_certificate(t.proxmox.endpoint)
    digest = certificate_fingerprint(der)
    shown = show_fingerprint(digest)
    about = describe_certificate(der)
    o.say(f"proxmox {t.proxmox.endpoint}: certificate {shown}\n"
          f"  subject {about['subject']}; issuer {about['issuer']}\n"
          f"  names {', '.join(about['names']) or '-'}; valid {about['notBefore']} to {about['notAfter']}")
    if args.fingerprint:
        wanted = {normalize_fingerprint(f, source="--fingerprint") for f in args.fingerprint}
        if digest not in wanted:
            raise ConfigError(f"the node presented {shown}, which is not one of the fingerprints given: "
                              "refusing to pin it")
    elif t.proxmox.fingerprint == digest:
        o.say("already pinned")
    else:
        if t.proxmox.fingerprint:
            o.say(f"  the stack pins another certificate: {show_fingerprint(t.proxmox.fingerprint)}")
        confirm(f"pin this certificate for {t.proxmox.endpoint}?", yes=args.yes, stdin=sys.stdin, err=o.err)
    stack_path = set_proxmox_fingerprint_in_file(t.project_dir, t.stack, shown)
    bundle = pinned_certificate_path(t)
    write_bundle(bundle, der)
    o.result({"ok": True, "proxmox": {"endpoint": t.proxmox.endpoint, "fingerprint": shown, **about,
                                      "stackFile": str(stack_path), "bundle": bundle}},
             f"pinned {shown} in {stack_path} (proxmox.fingerprint); for `pulumi up` by hand: "
             f"SSL_CERT_FILE={bundle}")
    return 0
