"""A throwaway PKI for TLS tests: a CA and the server and client certificates it signs.

Everything is written under one directory in the formats each side wants: PEM for
librdkafka and Python's ``ssl``, PKCS#12 key- and trust-stores for the Java broker.
EC P-256 keys, so generating a whole set takes milliseconds. Needs ``cryptography``.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertAuthority", "Issued"]

_VALID = datetime.timedelta(days=2)


_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _encryption(password: str | None) -> serialization.KeySerializationEncryption:
    return serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, on disk in every format a test may need."""

    name: str
    cert_pem: Path  # the leaf certificate
    chain_pem: Path  # leaf + CA
    key_pem: Path  # PKCS#8, encrypted with `key_password` when set
    key_password: str | None
    pkcs12: Path  # key + chain, for a Java keystore (type PKCS12)
    pkcs12_password: str

    def server_context(self) -> ssl.SSLContext:
        """A server-side context presenting this certificate (for an HTTPS stand-in)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.chain_pem, self.key_pem, password=self.key_password)
        return ctx


class CertAuthority:
    """A self-signed CA in `directory`; `ca_pem` is what clients trust."""

    def __init__(self, directory: Path, name: str = "test-ca") -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + _VALID)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_pem = directory / f"{name}.pem"
        self.ca_pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def truststore(self, password: str) -> Path:
        """A PKCS#12 trust store holding only this CA (Java's ``ssl.truststore.type=PKCS12``)."""
        path = self.directory / f"{self.name}.truststore.p12"
        path.write_bytes(
            pkcs12.serialize_java_truststore(
                [pkcs12.PKCS12Certificate(self.cert, self.name.encode())],
                serialization.BestAvailableEncryption(password.encode()),
            )
        )
        return path

    def issue(
        self,
        name: str,
        *,
        server: bool = True,
        client: bool = False,
        ips: tuple[str, ...] = ("127.0.0.1",),
        dns: tuple[str, ...] = ("localhost",),
        key_password: str | None = None,
        pkcs12_password: str = "changeit",
    ) -> Issued:
        """Sign a leaf certificate for `name` (SANs `ips` and `dns`) and write it out."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        sans += [x509.DNSName(d) for d in dns]
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + _VALID)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        pem = cert.public_bytes(serialization.Encoding.PEM)
        ca = self.cert.public_bytes(serialization.Encoding.PEM)
        out = self.directory
        (out / f"{name}.crt.pem").write_bytes(pem)
        (out / f"{name}.chain.pem").write_bytes(pem + ca)
        (out / f"{name}.key.pem").write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _encryption(key_password))
        )
        (out / f"{name}.p12").write_bytes(
            pkcs12.serialize_key_and_certificates(
                name.encode(), key, cert, [self.cert], serialization.BestAvailableEncryption(pkcs12_password.encode())
            )
        )
        return Issued(
            name=name,
            cert_pem=out / f"{name}.crt.pem",
            chain_pem=out / f"{name}.chain.pem",
            key_pem=out / f"{name}.key.pem",
            key_password=key_password,
            pkcs12=out / f"{name}.p12",
            pkcs12_password=pkcs12_password,
        )
