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
from cryptography.exceptions import InvalidSignature
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


def _new_key(rsa_bits: int | None = None) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    # P-256: what etcd and Go's TLS handle everywhere, and ~100x faster to generate than RSA-2048.
    # RSA where a reader insists on it: RKE's own certificates are RSA and it type-asserts an RSA
    # key for external etcd (pki/services.go: clientKey.(*rsa.PrivateKey)).
    if rsa_bits is not None:
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(pem: bytes, *, validate: bool = True):
    # validate=False: only the public half is compared (RKE's RSA keys: OpenSSL's full check of
    # each costs ~0.1 s on this machine, for nothing when no signature is made)
    try:
        return serialization.load_pem_private_key(
            pem, password=None, unsafe_skip_rsa_key_validation=not validate
        )
    except (ValueError, TypeError) as e:
        # The message of the library can quote input; ours names only what it is.
        raise InputError("the CA key is not a readable unencrypted PEM private key") from e


def new_ca(common_name: str = "kube-ca", days: int = 3650, *, rsa_bits: int | None = None) -> CertKeyPair:
    key = _new_key(rsa_bits)
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
        _load_key(pair.key_pem, validate=False)
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
    rsa_bits: int | None = None,
    organization: str | None = None,
) -> CertKeyPair:
    """Sign a new key for common_name with the CA. not_before lets tests shift the validity window
    (NOTES: Go ignores libfaketime, so "not yet valid" is made by the certificate, not the clock).
    rsa_bits: an RSA key of that size instead of P-256; organization: the subject's O (RKE's kube-node
    is O=system:nodes)."""
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
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        subject.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    key = _new_key(rsa_bits)
    start = not_before or (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
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


# ---------------------------------------------------------------------------------------------
# Checks (pure): what a host's TLS stack would say about a certificate, before it is written.

_ISO = "%Y-%m-%dT%H:%M:%SZ"


def check_ca(ca: CertKeyPair, where: str = "the CA") -> None:
    """Refuse a CA whose key does not belong to its certificate, or that is no CA at all."""
    try:
        cert = ca.certificate()
    except ValueError:
        raise InputError(f"{where}: the CA certificate is not a PEM certificate") from None
    if not key_matches_cert(ca):
        raise InputError(
            f"{where}: the CA key does not match the CA certificate; give the key that signed kube-ca.pem "
            "(RKE keeps it in cluster.rkestate)"
        )
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise InputError(f"{where}: {cert.subject.rfc4514_string()} is not a CA certificate (no CA:TRUE)")


def signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """True when ca_cert's key signed cert (and cert names ca_cert as its issuer)."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def validity_problem(cert: x509.Certificate, now: dt.datetime) -> str | None:
    """Go's TLS error for cert at `now` (the clock of the host that will check it), or None when
    it is valid then. Pure: feed it the host's time."""
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < nb:
        return (
            "x509: certificate has expired or is not yet valid: "
            f"current time {now.strftime(_ISO)} is before {nb.strftime(_ISO)}"
        )
    if now > na:
        return (
            "x509: certificate has expired or is not yet valid: "
            f"current time {now.strftime(_ISO)} is after {na.strftime(_ISO)}"
        )
    return None


def cert_sans(cert: x509.Certificate) -> tuple[frozenset[str], frozenset[str]]:
    """(IP SANs, DNS SANs) of cert, IPs in canonical form."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset(), frozenset()
    ips = frozenset(ipaddress.ip_address(i).compressed for i in san.get_values_for_type(x509.IPAddress))
    return ips, frozenset(d.lower() for d in san.get_values_for_type(x509.DNSName))


def cert_usages(cert: x509.Certificate) -> frozenset[str]:
    """EKU names: 'serverAuth', 'clientAuth'."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return frozenset()
    names = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth", ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}
    return frozenset(names[o] for o in eku if o in names)


def member_pair_problem(
    pair: CertKeyPair,
    ca_cert: x509.Certificate,
    *,
    ips: Sequence[str],
    dns: Sequence[str],
    now: dt.datetime,
) -> str | None:
    """Why `pair` is not a usable etcd member certificate for these SANs under this CA at `now`
    (a host's clock), or None when it is. Checked on every new certificate before it is written,
    and on an existing one to decide whether it can be kept."""
    try:
        cert = pair.certificate()
    except ValueError:
        return "the certificate is not PEM"
    try:
        if not key_matches_cert(pair):
            return "the key does not match the certificate"
    except InputError:
        return "the key is not a readable PEM private key"
    if not signed_by(cert, ca_cert):
        return f"it is not signed by {ca_cert.subject.rfc4514_string()}"
    have_ips, have_dns = cert_sans(cert)
    missing = sorted(
        {ipaddress.ip_address(i).compressed for i in ips} - have_ips | {d.lower() for d in dns} - have_dns
    )
    if missing:
        return f"its SANs lack {', '.join(missing)}"
    lacking = {"serverAuth", "clientAuth"} - cert_usages(cert)
    if lacking:
        return f"its extended key usage lacks {', '.join(sorted(lacking))}"
    return validity_problem(cert, now)
