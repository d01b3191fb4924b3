"""The lab's own certificate authority and the certificate HAProxy serves for the public name.

The same approach as fakepve's `make_cert` (the `cryptography` package, EC P-256), but split into
a CA and a server certificate it signs, so clients trust the CA (`haproxy.caFile`) exactly as they
would trust a real issuer, and a client without it is refused. The CA lives in the lab dir
(`tls/ca.pem`, key `tls/ca.key` 0600); the server bundle (certificate, CA, key) is written where
the stack's `haproxy.tlsCert` says, under the load balancer's root.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from bluegreen.model.topology import Topology

CA_NAME = "jw-lab CA"
RENEW_BEFORE = datetime.timedelta(days=7)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), mode)
        out.write(data)
    os.replace(tmp, path)


def make_ca(directory: Path, *, days: int = 365) -> tuple[Path, Path]:
    """A fresh CA: (`ca.pem`, `ca.key`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    ca_pem, ca_key = directory / "ca.pem", directory / "ca.key"
    _write(ca_key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()), 0o600)
    _write(ca_pem, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return ca_pem, ca_key


def issue_bundle(ca_pem: Path, ca_key: Path, bundle: Path, names: list[str], *, days: int = 90) -> None:
    """A server certificate for `names` (DNS names or addresses) signed by the CA, written as
    HAProxy's PEM bundle: certificate, CA certificate, private key (mode 0600)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    if not isinstance(signer, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca_key}: expected an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                           critical=False)
            .sign(signer, hashes.SHA256()))
    _write(bundle, cert.public_bytes(serialization.Encoding.PEM)
           + ca_cert.public_bytes(serialization.Encoding.PEM)
           + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                               serialization.NoEncryption()), 0o600)


def _bundle_ok(bundle: Path, ca_pem: Path, names: list[str]) -> bool:
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(bundle.read_bytes())
        ca = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    except (OSError, ValueError):
        return False
    leaf = certs[0]
    if leaf.issuer != ca.subject:
        return False
    if leaf.not_valid_after_utc - datetime.datetime.now(datetime.UTC) < RENEW_BEFORE:
        return False
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have = {str(v) for v in san.get_values_for_type(x509.DNSName)}
    have |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    return set(names) <= have


def server_names(t: Topology) -> list[str]:
    """What the certificate names: the public name first, then the addresses clients connect to."""
    names = [t.haproxy.server_name, t.load_balancer.ip, t.private_ip]
    return list(dict.fromkeys(names))


def ensure_lab_tls(tls_dir: Path, t: Topology) -> Path | None:
    """The CA (made once) and a current server bundle for the stack; returns the CA file, or
    None when the stack serves no HTTPS. Nothing is rewritten while it is still good."""
    if t.haproxy.tls_cert is None:
        return None
    ca_pem, ca_key = tls_dir / "ca.pem", tls_dir / "ca.key"
    if not (ca_pem.exists() and ca_key.exists()):
        make_ca(tls_dir)
    bundle = Path(t.load_balancer.path(t.haproxy.tls_cert))
    names = server_names(t)
    if not _bundle_ok(bundle, ca_pem, names):
        issue_bundle(ca_pem, ca_key, bundle, names)
    return ca_pem
