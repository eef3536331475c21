"""Credentials for a run: a certificate authority and one certificate per node, made with the
`cryptography` package (no crypto by hand here).

Each node's certificate carries its name as the subject's common name (`user0/audio`,
`relay`, `edge`, `launcher`), which the relay and the edge read back from the TLS session
(`protos.tls.peer_name`). Names without a slash are also DNS names in the certificate's
subject alternative names, so a client can check that it reached the relay or the edge
(`grpc.ssl_target_name_override`). Keys are ECDSA P-256; every certificate serves for both
TLS client and server authentication.

Files in the credentials directory: `ca.pem` (the CA certificate; its key is never written:
a new set of nodes needs a new CA), and `<name>.pem`, `<name>.key` per node, with `/` in the
name written as `_` and keys readable by their owner only.
"""
from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "ca.pem"
VALID_DAYS = 30


def file_stem(name: str) -> str:
    """A node name as a file name: `user0/audio` -> `user0_audio`."""
    return name.replace("/", "_")


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _builder(subject: str, issuer: str, public_key, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))  # small clock skew between machines
            .not_valid_after(now + datetime.timedelta(days=days)))


def make_ca(days: int = VALID_DAYS) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    name = "tokcom run CA"
    cert = (_builder(name, name, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, name: str,
          days: int = VALID_DAYS) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM) for node `name`, signed by the CA."""
    if not name or any(c.isspace() for c in name):
        raise ValueError(f"node name {name!r}: expected a name such as 'relay' or 'user0/audio'")
    key = _key()
    builder = (_builder(name, ca_cert.subject.rfc4514_string().removeprefix("CN="), key.public_key(), days)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                     ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if "/" not in name:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_credentials(directory: str | Path, names: list[str], days: int = VALID_DAYS) -> Path:
    """A new CA and a certificate for each of `names` in `directory` (earlier files replaced)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca_key, ca_cert = make_ca(days)
    _write(directory / CA_FILE, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    for name in names:
        key_pem, cert_pem = issue(ca_key, ca_cert, name, days)
        _write(directory / f"{file_stem(name)}.key", key_pem, 0o600)
        _write(directory / f"{file_stem(name)}.pem", cert_pem, 0o644)
    return directory
