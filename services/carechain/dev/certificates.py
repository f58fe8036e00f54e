"""A local certificate authority for development networks and tests (``carechain up --tls``)."""

from __future__ import annotations

import datetime
import ipaddress
import pathlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from carechain.core.crypto import write_private_file


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate and its key on disk."""

    cert_file: pathlib.Path
    key_file: pathlib.Path



class LocalCertificateAuthority:
    """A throw-away CA (ECDSA P-256) under a directory, issuing server+client certificates."""

    VALIDITY = datetime.timedelta(days=365)

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        self.ca_file = directory / "ca.pem"
        self._ca_key_file = directory / "ca-key.pem"
        if not self.ca_file.exists():
            self._create()

    def _create(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CareChain local CA")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + self.VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256())
        )
        write_private_file(self._ca_key_file, _key_pem(key))
        self.ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self, name: str, dns_names: list[str], ip_addresses: list[str] = ("127.0.0.1",), *,
        common_name: str | None = None,
    ) -> IssuedCertificate:
        """A certificate for name (files ``<name>.pem``, ``<name>-key.pem``), valid as TLS server and client,
        for the given DNS names and IPs.

        Its common name is name unless given; ``common_name=""`` leaves it out (subject O=CareChain, OU=name):
        etcd's gRPC gateway refuses client certificates with one when its authentication is on.
        """
        ca_key = serialization.load_pem_private_key(self._ca_key_file.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        alt_names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        common_name = name if common_name is None else common_name
        subject = (
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]) if common_name
            else x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CareChain"),
                            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, name)])
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + self.VALIDITY)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        issued = IssuedCertificate(self.directory / f"{name}.pem", self.directory / f"{name}-key.pem")
        write_private_file(issued.key_file, _key_pem(key))
        issued.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return issued



def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
