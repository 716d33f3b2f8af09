"""Throwaway certificates: the simulator's own TLS chain and client certificates for apps.

Everything here is generated in memory at start and never cached across processes: a test run
must not depend on files left behind by an earlier one.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import os
import tempfile
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "ServerTLS",
    "make_certificate",
    "make_pfx",
    "make_server_tls",
    "thumbprints",
]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificate(
    common_name: str,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[str, str]:
    """Make a self-signed RSA 2048 certificate for an app's client assertion.

    Args:
        common_name: Subject and issuer CN, e.g. ``"avepoint-connector"``.
        not_before: Start of validity (UTC); default one hour ago.
        not_after: End of validity (UTC); default one year from now. Pass a past
            moment to get an expired certificate.

    Returns:
        ``(private_key_pem, certificate_pem)``, both as text (PKCS#8 key, unencrypted).
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = _now()
    start = not_before or now - dt.timedelta(hours=1)
    end = not_after or now + dt.timedelta(days=365)
    if end <= start:
        # cryptography refuses an empty validity window; keep the order, it is what matters.
        start = end - dt.timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


def make_pfx(private_key_pem: str, certificate_pem: str, password: str | None) -> bytes:
    """Bundle a key and its certificate as PKCS#12 (what AvePoint's portal hands out as .pfx).

    Args:
        private_key_pem: Unencrypted PEM private key.
        certificate_pem: PEM certificate matching the key.
        password: Passphrase protecting the bundle; ``None`` or ``""`` for none.

    Returns:
        The PKCS#12 bytes.
    """
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    cert = x509.load_pem_x509_certificate(certificate_pem.encode())
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("only RSA and EC keys can be bundled")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    return pkcs12.serialize_key_and_certificates(b"client", key, cert, None, encryption)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprints(certificate: x509.Certificate) -> tuple[str, str]:
    """Return the JWT header thumbprints of a certificate.

    Args:
        certificate: The certificate.

    Returns:
        ``(x5t, x5t#S256)``: base64url SHA-1 and SHA-256 digests of the DER bytes.
    """
    return (
        _b64url(certificate.fingerprint(hashes.SHA1())),
        _b64url(certificate.fingerprint(hashes.SHA256())),
    )


@dataclass(frozen=True)
class ServerTLS:
    """The server's TLS material, written to a private temporary folder."""

    ca_file: str
    cert_file: str
    key_file: str
    folder: str
    server_public_key: ec.EllipticCurvePublicKey

    def cleanup(self) -> None:
        """Remove the files (best effort; the folder is a throwaway anyway)."""
        for path in (self.ca_file, self.cert_file, self.key_file):
            with contextlib.suppress(OSError):
                os.remove(path)
        with contextlib.suppress(OSError):
            os.rmdir(self.folder)


def make_server_tls(hostnames: tuple[str, ...] = ("localhost",)) -> ServerTLS:
    """Make a throwaway CA and a server certificate for 127.0.0.1 and localhost.

    EC P-256 keys: they take a millisecond to generate, where RSA takes tens.

    Args:
        hostnames: DNS names to put in the SAN besides the loopback IPs.

    Returns:
        The PEM files, the CA one being what clients pass as ``verify=``.
    """
    now = _now()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("AvePoint simulator throwaway CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    san += [x509.DNSName(h) for h in hostnames]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder = tempfile.mkdtemp(prefix="avepoint-sim-")
    ca_file = os.path.join(folder, "ca.pem")
    cert_file = os.path.join(folder, "server.pem")
    key_file = os.path.join(folder, "server.key")
    with open(ca_file, "wb") as fh:
        fh.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    with open(cert_file, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_file, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    os.chmod(key_file, 0o600)
    return ServerTLS(ca_file, cert_file, key_file, folder, key.public_key())
