# -*- test-case-name: memux.test.test_bench -*-
"""
The certificate of ``python -m memux.bench --tls``: a self-signed ECDSA
P-256 certificate for ``localhost`` and 127.0.0.1, made at run time with
``cryptography`` (which ``twisted[tls]``, a dependency of memux, brings),
so the benchmark needs nothing beyond memux's own dependencies.  The
server presents it; clients trust it as their only CA.
"""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["HOSTNAME", "selfSignedPEM"]

#: The name the clients check the server's certificate against.
HOSTNAME = "localhost"


def selfSignedPEM() -> str:
    """
    A new self-signed certificate for `HOSTNAME` and 127.0.0.1, valid for a
    day, and its private key: PEM, the certificate first.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "memux bench")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(HOSTNAME),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem.decode("ascii")
