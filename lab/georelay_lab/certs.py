"""A lab certificate authority and the certificates the demo and tests need.

Public names (fast.example.com) get one PEM for the proxies; each region's stand-in gateway
gets a PEM for its custom domains ({region}-fast.example.com). All are signed by a lab CA
that the proxies are told to trust (georelay_backend_ca) — never by anything real.

They carry what strict validators require (RFC 5280 profile; OpenSSL's -x509_strict,
Python 3.13's default ssl.VERIFY_X509_STRICT, sslyze): a Subject Key Identifier on the CA
and the leaves, an Authority Key Identifier naming the CA's key on every certificate the CA
signs (and on the CA itself), basicConstraints and keyUsage on both, extendedKeyUsage
serverAuth on the leaves. A lab directory made before they did is healed by the next
`georelay-lab up`: a CA without them is replaced, and so is every leaf it signed
(:func:`authority`, :func:`ensure_server_pem`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Authority:
    cert: x509.Certificate
    key: Key

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "georelay lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: Key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, key_cert_sign=ca, crl_sign=ca,
                         content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, encipher_only=False,
                         decipher_only=False)


def _ski(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def _aki(cert: x509.Certificate) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except x509.ExtensionNotFound:
        return None
    return ext.value.key_identifier


def new_authority(common_name: str = "georelay lab CA", days: int = 3650) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return Authority(cert, key)


def is_strict_authority(cert: x509.Certificate) -> bool:
    """Whether a CA certificate has what strict validators require of it (a lab CA made
    before the lab added them has no key identifiers)."""
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return basic.ca and usage.key_cert_sign and _ski(cert) is not None


def issue(ca: Authority, names: list[str], *, days: int = 90,
          not_before: dt.datetime | None = None) -> bytes:
    """A server certificate for names, as PEM: leaf, CA chain, then the private key."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(names[0])).issuer_name(ca.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca.key.public_key()), critical=False)
            .sign(ca.key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM) + ca.pem + _key_pem(key)


def save_authority(ca: Authority, directory: Path, stem: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stem}.pem").write_bytes(ca.pem)
    key_path = directory / f"{stem}.key"
    key_path.write_bytes(_key_pem(ca.key))
    key_path.chmod(0o600)


def load_authority(directory: Path, stem: str) -> Authority | None:
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    if not (cert_path.exists() and key_path.exists()):
        return None
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return Authority(x509.load_pem_x509_certificate(cert_path.read_bytes()), key)


def authority(directory: Path, stem: str = "lab-ca") -> Authority:
    """The lab CA in directory, created on first use, and made again when the one there
    lacks what strict validators require (its leaves are then issued again too:
    :func:`ensure_server_pem` sees they are not signed by the new CA)."""
    ca = load_authority(directory, stem)
    if ca is None or not is_strict_authority(ca.cert):
        ca = new_authority(f"georelay {stem}")
        save_authority(ca, directory, stem)
    return ca


def names_of(pem_path: Path, ca: Authority | None = None) -> list[str] | None:
    """The SAN names of a PEM's leaf, or None when it is missing, expires within a week,
    lacks the key identifiers strict validators require, or (with ca) was not signed by
    ca's key."""
    if not pem_path.exists():
        return None
    cert = x509.load_pem_x509_certificate(pem_path.read_bytes())
    if cert.not_valid_after_utc < dt.datetime.now(dt.UTC) + dt.timedelta(days=7):
        return None
    if _ski(cert) is None or _aki(cert) is None:
        return None
    if ca is not None and _aki(cert) != _ski(ca.cert):
        return None
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return list(san.value.get_values_for_type(x509.DNSName))


def ensure_server_pem(ca: Authority, path: Path, names: list[str]) -> bool:
    """Write a PEM for names at path unless one of ca covering exactly them, with the
    extensions strict validators require, exists. True if written."""
    if names_of(path, ca) == names:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(issue(ca, names))
    path.chmod(0o600)
    return True
