"""Checks on the public TLS bundle: it parses, holds a key, covers every hostname, is valid."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from georelay_model.errors import Problem


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return [n.lower() for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return [str(a.value).lower() for a in
                cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def covers(pattern: str, hostname: str) -> bool:
    """RFC 6125 matching: exact, or a wildcard standing for exactly one left-most label."""
    if pattern == hostname:
        return True
    if pattern.startswith("*."):
        head, _, rest = hostname.partition(".")
        return bool(head) and rest == pattern[2:]
    return False


def pem_problems(path: str, hostnames: list[str], *, field: str = "georelay_tls_pem",
                 now: dt.datetime | None = None) -> list[Problem]:
    """Every reason the PEM at path cannot serve the hostnames (empty list: it can)."""
    where = "all"
    p = Path(path)
    if not p.is_file():
        return [Problem(where, field, f"{path} does not exist on the control node",
                        "point it at the PEM file holding certificate chain and key")]
    data = p.read_bytes()
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        return [Problem(where, field, f"{path} holds no PEM certificate",
                        "concatenate the certificate, its chain and the private key")]
    problems: list[Problem] = []
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        problems.append(Problem(where, field, f"{path} holds no unencrypted private key",
                                "append the private key (unencrypted) to the PEM"))
        key = None
    leaf = certs[0]
    if key is not None and key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
            leaf.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo):
        problems.append(Problem(where, field, "the private key does not belong to the first "
                                "certificate", "put the leaf certificate first, then its chain"))
    now = now or dt.datetime.now(dt.UTC)
    if leaf.not_valid_after_utc <= now:
        problems.append(Problem(where, field, f"the certificate expired on "
                                f"{leaf.not_valid_after_utc:%Y-%m-%d}", "renew it"))
    if leaf.not_valid_before_utc > now:
        problems.append(Problem(where, field, "the certificate is not valid yet (from "
                                f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M})",
                                "check the clock or the certificate"))
    names = _names(leaf)
    for hostname in hostnames:
        if not any(covers(n, hostname) for n in names):
            problems.append(Problem(where, field, f"the certificate does not cover {hostname} "
                                    f"(it names {', '.join(names) or 'nothing'})",
                                    "use a certificate whose SAN lists every public hostname"))
    return problems


def file_problems(path: str, field: str) -> list[Problem]:
    if Path(path).is_file():
        return []
    return [Problem("all", field, f"{path} does not exist on the control node",
                    "give the path of a PEM CA bundle")]
