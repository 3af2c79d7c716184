"""Certificates for etcd members, signed by the cluster CA (RKE's kube-ca), with `cryptography`.

The source incident issued a learner's certificate by hand with openssl; this does the same in code:
a key, a certificate with the host's IP/DNS SANs and EKU serverAuth+clientAuth, signed by the CA.
Keys are PEM bytes held in memory; nothing here logs or formats them into messages.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from etcd_dr.errors import InputError


@dataclass(frozen=True, repr=False)
class CertKeyPair:
    """A PEM certificate and its PEM private key. repr() never shows the key."""

    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:
        return f"CertKeyPair(subject={self.certificate().subject.rfc4514_string()!r})"

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: what etcd and Go's TLS handle everywhere, and ~100x faster to generate than RSA-2048.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(pem: bytes):
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        # The message of the library can quote input; ours names only what it is.
        raise InputError("the CA key is not a readable unencrypted PEM private key") from e


def new_ca(common_name: str = "kube-ca", days: int = 3650) -> CertKeyPair:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertKeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def key_matches_cert(pair: CertKeyPair) -> bool:
    """True when the private key belongs to the certificate's public key."""
    pub = (
        pair.certificate()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    mine = (
        _load_key(pair.key_pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pub == mine


def issue_cert(
    ca: CertKeyPair,
    common_name: str,
    *,
    ips: Sequence[str] = (),
    dns: Sequence[str] = (),
    days: int = 3650,
    not_before: dt.datetime | None = None,
    server: bool = True,
    client: bool = True,
) -> CertKeyPair:
    """Sign a new key for common_name with the CA. not_before lets tests shift the validity window
    (NOTES: Go ignores libfaketime, so "not yet valid" is made by the certificate, not the clock)."""
    if not key_matches_cert(ca):
        raise InputError("the CA key does not match the CA certificate: pass the key that signed kube-ca.pem")
    sans: list[x509.GeneralName] = []
    for ip in ips:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError as e:
            raise InputError(f"SAN {ip!r} is not an IP address") from e
    sans += [x509.DNSName(d) for d in dns]
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
    ca_cert = ca.certificate()
    ca_key = _load_key(ca.key_pem)
    key = _new_key()
    start = not_before or (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    return CertKeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))
