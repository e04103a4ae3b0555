"""The lab's certificates pass strict validation (OpenSSL's -x509_strict, Python's
ssl.VERIFY_X509_STRICT, the default of Python 3.13), and a lab directory made before they did
is healed by the lab: a CA without key identifiers is replaced, every leaf issued again."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from georelay_lab import certs
from georelay_lab.gateway import GatewayServer
from georelay_testing.fleet import require_program

NAMES = ["us-east-1-fast.example.com", "us-east-1-slow.example.com"]


def leaf_only(pem: bytes) -> bytes:
    end = b"-----END CERTIFICATE-----\n"
    return pem.split(end)[0] + end


def legacy_authority() -> certs.Authority:
    """A CA as the lab made them before 0.2.0: no key identifiers."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "georelay lab-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return certs.Authority(cert, key)


def legacy_leaf(ca: certs.Authority, names: list[str]) -> bytes:
    """A server PEM as the lab issued them before 0.2.0 (no SKI, no AKI, no keyUsage)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca.key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM) + ca.pem + key_pem


def openssl_strict(ca_pem: Path, leaf_pem: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_program("openssl"), "verify", "-x509_strict", "-purpose",
                           "sslserver", "-CAfile", str(ca_pem), str(leaf_pem)],
                          capture_output=True, text=True, timeout=30, check=False)


@contextmanager
def gateway(pem: Path) -> Iterator[tuple[str, int]]:
    """The lab's stand-in gateway (the server the proxies talk to) on a free loopback port."""
    server = GatewayServer(("127.0.0.1", 0), "us-east-1", NAMES, str(pem))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def strict_handshake(address: tuple[str, int], ca_pem: Path, strict: bool = True) -> str:
    ctx = ssl.create_default_context(cafile=str(ca_pem))
    if strict:
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    with socket.create_connection(address, timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=NAMES[0]) as tls:
        return tls.version() or ""


def test_openssl_x509_strict_accepts_the_lab_ca_and_its_leaf(tmp_path: Path) -> None:
    ca = certs.authority(tmp_path)
    pem = tmp_path / "gw.pem"
    assert certs.ensure_server_pem(ca, pem, NAMES)
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(leaf_only(pem.read_bytes()))
    got = openssl_strict(tmp_path / "lab-ca.pem", leaf)
    assert got.returncode == 0 and got.stdout.strip().endswith("OK"), got.stdout + got.stderr
    cert = x509.load_pem_x509_certificate(leaf.read_bytes())
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature


def test_openssl_x509_strict_rejects_what_the_lab_issued_before(tmp_path: Path) -> None:
    """The check above can fail: the pre-0.2.0 certificates are refused, by name."""
    ca = legacy_authority()
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(leaf_only(legacy_leaf(ca, NAMES)))
    got = openssl_strict(tmp_path / "ca.pem", leaf)
    assert got.returncode != 0
    assert "Missing Authority Key Identifier" in got.stdout + got.stderr, got.stdout + got.stderr


def test_python_strict_verification_accepts_a_handshake_with_the_lab_leaf(
        tmp_path: Path) -> None:
    ca = certs.authority(tmp_path)
    pem = tmp_path / "gw.pem"
    certs.ensure_server_pem(ca, pem, NAMES)
    with gateway(pem) as address:
        assert strict_handshake(address, tmp_path / "lab-ca.pem").startswith("TLSv1.")


def test_python_strict_verification_refuses_the_pre_0_2_leaf(tmp_path: Path) -> None:
    ca = legacy_authority()
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    pem = tmp_path / "gw.pem"
    pem.write_bytes(legacy_leaf(ca, NAMES))
    with gateway(pem) as address:
        assert strict_handshake(address, tmp_path / "ca.pem", strict=False)  # lax: fine
        with pytest.raises(ssl.SSLCertVerificationError, match="Key Identifier"):
            strict_handshake(address, tmp_path / "ca.pem")


def test_an_old_lab_directory_is_healed(tmp_path: Path) -> None:
    """A .lab made before 0.2.0: its CA is replaced and its leaves are issued again, by the
    new CA, so `make demo` on an old checkout ends up with certificates that pass."""
    old = legacy_authority()
    certs.save_authority(old, tmp_path, "lab-ca")
    pem = tmp_path / "gw.pem"
    pem.write_bytes(legacy_leaf(old, NAMES))
    assert certs.names_of(pem) is None  # lacking the identifiers, it does not count

    ca = certs.authority(tmp_path)
    assert ca.cert.public_key() != old.cert.public_key()
    assert certs.is_strict_authority(ca.cert)
    assert certs.load_authority(tmp_path, "lab-ca") is not None
    assert certs.authority(tmp_path).cert == ca.cert  # made once, then kept
    assert certs.ensure_server_pem(ca, pem, NAMES)
    assert not certs.ensure_server_pem(ca, pem, NAMES)  # and then kept
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(leaf_only(pem.read_bytes()))
    got = openssl_strict(tmp_path / "lab-ca.pem", leaf)
    assert got.returncode == 0, got.stdout + got.stderr


def test_a_leaf_of_another_ca_is_issued_again(tmp_path: Path) -> None:
    ca = certs.authority(tmp_path / "a")
    other = certs.authority(tmp_path / "b")
    pem = tmp_path / "gw.pem"
    assert certs.ensure_server_pem(other, pem, NAMES)
    assert certs.names_of(pem) == NAMES
    assert certs.names_of(pem, ca) is None
    assert certs.ensure_server_pem(ca, pem, NAMES)
    assert certs.names_of(pem, ca) == NAMES
