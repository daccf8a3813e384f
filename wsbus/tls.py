"""The private certificate authority of ``wsbus serve --share``.

The hub creates a CA once (an EC P-256 key, ten years) and keeps it in its data
directory (``share/``, mode 0700, every key 0600). From it, it issues its own
certificate for the names it is reached by (``--advertise``; by default the host
name, ``localhost``, loopback and this machine's addresses), renewed when the names
change or when fewer than 30 days are left. Clients trust the CA, not the hub
certificate: ``wsbus join`` fetches it from ``/ca.pem`` and accepts it only if its
SHA-256 fingerprint matches the invite code.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import os
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import WsbusError
from .files import private_dir, write_atomic

__all__ = [
    "SharePaths",
    "ShareTLSError",
    "default_names",
    "ensure_ca",
    "ensure_hub_cert",
    "fingerprint",
    "format_fingerprint",
]

CA_DAYS = 3650
HUB_DAYS = 397  # what browsers accept for a leaf; renewed well before
RENEW_DAYS = 30


class ShareTLSError(WsbusError):
    """The CA or the hub certificate could not be made or read; the message says why."""


class SharePaths:
    """Where the CA and the hub certificate live (``<data dir>/share``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ca_cert = folder / "ca.pem"
        self.ca_key = folder / "ca-key.pem"
        self.hub_cert = folder / "hub.pem"  # the hub certificate, then the CA: a chain
        self.hub_key = folder / "hub-key.pem"
        self.hub_info = folder / "hub.json"  # what `wsbus token invite` reads


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def fingerprint(pem: bytes) -> str:
    """The SHA-256 of a PEM certificate's DER form, lowercase hex (64 digits)."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as err:
        raise ShareTLSError(f"not a PEM certificate: {err}") from None
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def format_fingerprint(hex_digest: str) -> str:
    """``AB:CD:…`` as ``openssl x509 -fingerprint -sha256`` prints it."""
    upper = hex_digest.upper()
    return ":".join(upper[i : i + 2] for i in range(0, len(upper), 2))


def ensure_ca(paths: SharePaths) -> bytes:
    """The CA certificate (PEM), created on first use. Never replaced once made:
    every joined machine trusts it."""
    try:
        private_dir(paths.folder)
        os.chmod(paths.folder, 0o700)  # it holds the CA's key, whoever made it
        if paths.ca_cert.exists() and paths.ca_key.exists():
            return paths.ca_cert.read_bytes()
        if paths.ca_cert.exists() or paths.ca_key.exists():
            half = paths.ca_key if paths.ca_cert.exists() else paths.ca_cert
            raise ShareTLSError(
                f"{half} is missing but its pair is there: restore it, or remove "
                f"{paths.folder} to make a new CA (every machine must then join again)"
            )
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wsbus"),
                x509.NameAttribute(
                    NameOID.COMMON_NAME, f"wsbus hub CA ({socket.gethostname()[:40]})"
                ),
            ]
        )
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        write_atomic(paths.ca_key, _key_pem(key))
        pem = cert.public_bytes(serialization.Encoding.PEM)
        write_atomic(paths.ca_cert, pem)
        return pem
    except OSError as err:
        raise ShareTLSError(
            f"cannot keep the hub's CA in {paths.folder}: {err.strerror or err}"
        ) from None


def _san(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n.strip("[]"))))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def _current_names(cert: x509.Certificate) -> set[str] | None:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(
        ext.get_values_for_type(x509.DNSName)
    )


def _wanted(names: Sequence[str]) -> set[str]:
    return {str(g.value) for g in _san(names)}


def ensure_hub_cert(paths: SharePaths, names: Sequence[str]) -> tuple[Path, Path]:
    """The hub's certificate chain and key for ``names``, issued by the CA; reissued
    when the names changed or the certificate expires within 30 days."""
    ca_pem = ensure_ca(paths)
    try:
        if paths.hub_cert.exists() and paths.hub_key.exists():
            current = x509.load_pem_x509_certificate(paths.hub_cert.read_bytes())
            fresh = current.not_valid_after_utc - _now() > datetime.timedelta(days=RENEW_DAYS)
            if fresh and _current_names(current) == _wanted(names):
                return paths.hub_cert, paths.hub_key
        ca_cert = x509.load_pem_x509_certificate(ca_pem)
        loaded = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ShareTLSError(f"{paths.ca_key} is not the EC key wsbus made")
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        first = names[0] if names else "localhost"
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first[:64])]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=HUB_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(loaded.public_key()), False
            )
            .sign(loaded, hashes.SHA256())
        )
        write_atomic(paths.hub_key, _key_pem(key))
        write_atomic(paths.hub_cert, cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
        return paths.hub_cert, paths.hub_key
    except (OSError, ValueError) as err:
        why = getattr(err, "strerror", None) or str(err)
        raise ShareTLSError(f"cannot issue the hub certificate in {paths.folder}: {why}") from None


def _outbound_address(family: socket.AddressFamily, probe: str) -> str | None:
    """The address this machine would use to reach ``probe`` (a UDP ``connect``
    picks the route; no packet is sent)."""
    with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((probe, 9))
        addr = s.getsockname()[0]
        return str(addr)
    return None


def default_names() -> list[str]:
    """The names a hub is reached by: host name, fully qualified name, ``localhost``,
    loopback, and this machine's addresses (no link-local ones)."""
    host = socket.gethostname()
    names: list[str] = [host]
    with contextlib.suppress(OSError):
        fqdn = socket.getfqdn()
        if "." in fqdn:
            names.append(fqdn)
    names += ["localhost", "127.0.0.1", "::1"]
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP):
            names.append(str(info[4][0]))
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        addr = _outbound_address(family, probe)
        if addr:
            names.append(addr)
    kept: list[str] = []
    for n in names:
        n = n.split("%")[0]
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(n).is_link_local:
                continue
        if n and n not in kept:
            kept.append(n)
    return kept
