# -*- test-case-name: memux.test.test_tls -*-
"""
TLS for memux sessions, with the ALPN identifier ``memux/1``.

- `serverTLSOptions` makes the server side: a certificate (and its chain)
  and key, optionally a CA whose client certificates are required (mutual
  TLS).  It always offers ``memux/1``; a client that offers ALPN without it
  is refused with a ``no_application_protocol`` alert, and a client that
  offers no ALPN is accepted (memux by prior agreement).
- `clientTLSOptions` makes the client side, verifying the server's
  certificate and host name (service_identity) and offering ``memux/1``.
- `clientEndpointFromString` is `clientFromString` for memux sessions: its
  ``tls:`` endpoints offer ``memux/1`` too (Twisted's offer no ALPN).  The
  ``memux`` command and ``memux:`` endpoint strings make their sessions'
  endpoints with it.
- `tlsServerFactory` wraps any factory, so TLS runs over any listening
  endpoint (TCP, UNIX, ...); on the client, use
  `twisted.internet.endpoints.wrapClientTLS`.

Certificates, keys and CA certificates may be given as Twisted objects, as
PEM ``bytes``, or as the path (``str`` or `os.PathLike`) of a PEM file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
)
from OpenSSL import SSL, crypto
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.endpoints import (
    HostnameEndpoint,
    _parse,
    clientFromString,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    KeyPair,
    PrivateCertificate,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from twisted.protocols.tls import TLSMemoryBIOFactory

from memux.settings import ALPN

__all__ = [
    "ALPN",
    "PEMSource",
    "TLSConfigurationError",
    "TLSDescription",
    "clientEndpointFromString",
    "clientTLSOptions",
    "parseTLSDescription",
    "serverTLSOptions",
    "tlsServerFactory",
]


#: PEM data (``bytes``), or the path of a PEM file (``str`` or path-like).
PEMSource: TypeAlias = "bytes | str | os.PathLike[str]"

#: What may stand for a set of trusted CA certificates.
TrustSource: TypeAlias = "IOpenSSLTrustRoot | Certificate | PEMSource"


#: The private key types a certificate can be used with.
_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)


class TLSConfigurationError(ValueError):
    """
    A certificate, private key or CA certificate could not be loaded, or
    they do not fit together.  The message names the file where there is
    one.
    """


def serverTLSOptions(
    certificate: PrivateCertificate | PEMSource,
    privateKey: PEMSource | None = None,
    trustRoot: TrustSource | None = None,
) -> IOpenSSLServerConnectionCreator:
    """
    TLS options for a memux server.

    :param certificate: the server's certificate and key as a
        `~twisted.internet.ssl.PrivateCertificate`, or PEM holding its
        certificate first, then any intermediate certificates, and (unless
        ``privateKey`` is given) its private key.
    :param privateKey: PEM holding the private key, if not in
        ``certificate``.
    :param trustRoot: if given, clients must present a certificate signed
        by one of these CA certificates (mutual TLS); PEM may hold several.

    :raises TLSConfigurationError: if something cannot be loaded or the key
        does not match the certificate.
    """
    chain: list[crypto.X509] = []
    if isinstance(certificate, PrivateCertificate):
        if privateKey is not None:
            raise TypeError("privateKey must be None: a PrivateCertificate has one")
        leaf = certificate.original
        key = certificate.privateKey.original
    else:
        certificates = _loadCertificates(certificate, "certificate")
        leaf, chain = certificates[0], certificates[1:]
        key = _loadPrivateKey(certificate if privateKey is None else privateKey)
        _checkKeyMatches(leaf, key, privateKey)
    return _StrictALPNOptions(
        privateKey=key,
        certificate=leaf,
        extraCertChain=chain,
        acceptableProtocols=[ALPN],
        trustRoot=None if trustRoot is None else _trustRoot(trustRoot),
    )


def clientTLSOptions(
    hostname: str,
    trustRoot: TrustSource | None = None,
    clientCertificate: PrivateCertificate | PEMSource | None = None,
    *,
    clientKey: PEMSource | None = None,
) -> IOpenSSLClientConnectionCreator:
    """
    TLS options for a memux client: verify that the server's certificate
    is valid for ``hostname`` and offer ALPN ``memux/1``.

    :param hostname: the name (or IP address) the server's certificate must
        be valid for.
    :param trustRoot: the CA certificates to trust; the platform's if
        ``None``.
    :param clientCertificate: a certificate (and key) to present to a server
        that asks for one: a `~twisted.internet.ssl.PrivateCertificate`, or
        PEM holding the certificate and (unless ``clientKey`` is given) the
        key.
    :param clientKey: PEM holding the key of ``clientCertificate``, if not in
        it.

    :raises TLSConfigurationError: if something cannot be loaded.
    """
    client: PrivateCertificate | None
    if clientCertificate is None or isinstance(clientCertificate, PrivateCertificate):
        if clientKey is not None:
            raise TypeError("clientKey needs a clientCertificate in PEM")
        client = clientCertificate
    else:
        leaf = _loadCertificates(clientCertificate, "client certificate")[0]
        source = clientCertificate if clientKey is None else clientKey
        key = _loadPrivateKey(source)
        _checkKeyMatches(leaf, key, clientKey)
        client = PrivateCertificate.fromCertificateAndKeyPair(
            Certificate(leaf), KeyPair(key)
        )
    return optionsForClientTLS(
        hostname,
        trustRoot=None if trustRoot is None else _trustRoot(trustRoot),
        clientCertificate=client,
        acceptableProtocols=[ALPN],
    )


def clientEndpointFromString(
    reactor: Any,
    description: str,
    *,
    trustRoot: TrustSource | None = None,
    clientCertificate: PrivateCertificate | PEMSource | None = None,
    clientKey: PEMSource | None = None,
    hostname: str | None = None,
) -> IStreamClientEndpoint:
    """
    The client endpoint of ``description``, for a memux session: as
    `~twisted.internet.endpoints.clientFromString`, except that a ``tls:``
    endpoint offers ALPN ``memux/1``.

    Twisted's ``tls:`` parser cannot offer ALPN, so a ``tls:`` description
    is parsed here, with the same arguments (``HOST:PORT``, ``timeout=``,
    ``bindAddress=``, ``trustRoots=``, ``certificate=``, ``privateKey=``,
    ``endpoint=``), into `clientTLSOptions` over a
    `~twisted.internet.endpoints.HostnameEndpoint` (or the ``endpoint=``
    one).  ``trustRoots=`` is a directory of
    ``*.pem`` CA certificates, as with Twisted, or one PEM file.

    The keyword arguments, for a ``tls:`` description only, give what it
    does not: the CA certificates to trust and a client certificate (as
    for `clientTLSOptions`), and ``hostname``, the name the server's
    certificate must be valid for (also sent as SNI) instead of HOST.

    :raises TLSConfigurationError: if a file cannot be loaded.
    :raises ValueError: if a keyword argument is given for a description
        that is not ``tls:``, or that already gives the same.
    :raises Exception: what `~twisted.internet.endpoints.clientFromString`
        raises for a malformed description (`TypeError` for a missing or
        unknown argument, `ValueError` for a port that is not a number...).
    """
    given = {
        "trustRoot": trustRoot,
        "clientCertificate": clientCertificate,
        "clientKey": clientKey,
        "hostname": hostname,
    }
    parsed = parseTLSDescription(description)
    if parsed is None:
        extra = [name for name, value in given.items() if value is not None]
        if extra:
            verb = "applies" if len(extra) == 1 else "apply"
            raise ValueError(
                f"{', '.join(extra)} {verb} only to a tls: endpoint,"
                f" not {description!r}"
            )
        endpoint: IStreamClientEndpoint = clientFromString(reactor, description)
        return endpoint
    for keyword, name in (
        ("trustRoots", "trustRoot"),
        ("certificate", "clientCertificate"),
        ("privateKey", "clientKey"),
    ):
        if getattr(parsed, keyword) is not None and given[name] is not None:
            raise ValueError(
                f"{description!r} has {keyword}= already: give {name} once"
            )
    if trustRoot is None and parsed.trustRoots is not None:
        trustRoot = _trustRootFromPath(parsed.trustRoots)
    if clientCertificate is None:
        clientCertificate = parsed.certificate
    if clientKey is None:
        clientKey = parsed.privateKey
    if clientKey is not None and clientCertificate is None:
        raise TLSConfigurationError(
            f"a private key ({_describe(clientKey)}) needs its certificate"
        )
    options = clientTLSOptions(
        parsed.host if hostname is None else hostname,
        trustRoot,
        clientCertificate,
        clientKey=clientKey,
    )
    inner: IStreamClientEndpoint
    if parsed.endpoint is not None:
        inner = clientFromString(reactor, parsed.endpoint)
    else:
        inner = HostnameEndpoint(
            reactor,
            parsed.host,
            int(parsed.port),
            int(parsed.timeout),
            None if parsed.bindAddress is None else (parsed.bindAddress, 0),
        )
    return wrapClientTLS(options, inner)


def tlsServerFactory(
    factory: IProtocolFactory, options: IOpenSSLServerConnectionCreator
) -> TLSMemoryBIOFactory:
    """
    Wrap ``factory`` so that its connections run over TLS with ``options``
    (for example from `serverTLSOptions`), whatever endpoint listens with
    it.
    """
    return TLSMemoryBIOFactory(options, False, factory)


# ---------------------------------------------------------------- internals


@dataclass(frozen=True)
class TLSDescription:
    """
    The arguments of a ``tls:`` client description, named as Twisted's
    parser names them (so its descriptions mean the same here).
    """

    host: str
    port: str
    timeout: str = "30"
    bindAddress: str | None = None
    certificate: str | None = None
    privateKey: str | None = None
    trustRoots: str | None = None
    endpoint: str | None = None


class _NoApplicationProtocol(SSL.Error):
    """
    The client offered ALPN protocols, none of them ours.
    """


_ALPNSelect: TypeAlias = (
    "Callable[[SSL.Connection, list[bytes]], bytes | SSL._NoOverlappingProtocols]"
)


class _StrictALPNContext(SSL.Context):
    """
    A context whose ALPN selection refuses, with a ``no_application_protocol``
    alert, a client that offers protocols but none we speak.

    Twisted's own selection answers an empty protocol, which OpenSSL turns
    into an ``internal_error`` alert: a refusal, but a puzzling one.  An
    exception from the callback makes pyOpenSSL return
    ``SSL_TLSEXT_ERR_ALERT_FATAL``, which OpenSSL reports to the client as
    ``no_application_protocol`` (RFC 7301, section 3.2), and it surfaces
    on this side as the reason the connection was lost.
    """

    def set_alpn_select_callback(self, callback: _ALPNSelect) -> None:
        """
        Install ``callback``, made strict: no protocol in common is fatal.
        """

        def strict(
            connection: SSL.Connection, offered: list[bytes]
        ) -> bytes | SSL._NoOverlappingProtocols:
            chosen = callback(connection, offered)
            if not chosen or chosen is SSL.NO_OVERLAPPING_PROTOCOLS:
                raise _NoApplicationProtocol(
                    [
                        (
                            "memux",
                            "ALPN",
                            f"no application protocol in common: the client"
                            f" offered {_listProtocols(offered)},"
                            f" this server speaks {ALPN.decode()}",
                        )
                    ]
                )
            return chosen

        super().set_alpn_select_callback(strict)


class _StrictALPNOptions(CertificateOptions):
    """
    `~twisted.internet.ssl.CertificateOptions` whose contexts are
    `_StrictALPNContext` objects.

    This leans on Twisted's ``_contextFactory`` class attribute, the one way
    to change how its contexts select ALPN.  If Twisted drops it, clients
    without ``memux/1`` are still refused, with ``internal_error``.
    """

    _contextFactory = _StrictALPNContext


def _listProtocols(protocols: Sequence[bytes]) -> str:
    return ", ".join(p.decode("ascii", "replace") for p in protocols) or "nothing"


def _describe(source: PEMSource) -> str:
    if isinstance(source, bytes):
        return "the PEM data"
    return repr(os.fspath(source))


def _readPEM(source: PEMSource, what: str) -> bytes:
    if isinstance(source, bytes):
        return source
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        raise TypeError(f"PEM data must be bytes; a str is a path (the {what})")
    try:
        with open(source, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSConfigurationError(
            f"cannot read the {what} file {_describe(source)}: {e.strerror or e}"
        ) from e


def _loadCertificates(source: PEMSource, what: str) -> list[crypto.X509]:
    """
    Every certificate in ``source``, in order.
    """
    data = _readPEM(source, what)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise TLSConfigurationError(
            f"no PEM certificate in {_describe(source)} (the {what}): {e}"
        ) from e
    return [crypto.X509.from_cryptography(c) for c in certificates]


def _loadPrivateKey(source: PEMSource) -> crypto.PKey:
    """
    The (unencrypted) private key in ``source``, which may also hold
    certificates.
    """
    data = _readPEM(source, "private key")
    block = _pemBlock(data, b"PRIVATE KEY")
    if block is None:
        raise TLSConfigurationError(f"no PEM private key in {_describe(source)}")
    try:
        key = serialization.load_pem_private_key(block, password=None)
    except TypeError as e:
        # Never prompt for a passphrase: a server must start unattended.
        raise TLSConfigurationError(
            f"the private key in {_describe(source)} is encrypted; give an"
            f" unencrypted one (openssl pkey -in ENCRYPTED -out PLAIN)"
        ) from e
    except ValueError as e:
        raise TLSConfigurationError(
            f"cannot load the private key in {_describe(source)}: {e}"
        ) from e
    if not isinstance(key, _KEY_TYPES):
        raise TLSConfigurationError(
            f"the private key in {_describe(source)} is of a type TLS"
            f" certificates cannot use ({type(key).__name__})"
        )
    return crypto.PKey.from_cryptography_key(key)


def _pemBlock(data: bytes, label: bytes) -> bytes | None:
    """
    The first PEM block in ``data`` whose label ends with ``label`` (so
    ``PRIVATE KEY`` finds PKCS#8, RSA and EC keys, encrypted or not).
    """
    start = 0
    while True:
        begin = data.find(b"-----BEGIN ", start)
        if begin < 0:
            return None
        close = data.find(b"-----", begin + 11)
        if close < 0:
            return None
        name = data[begin + 11 : close]
        if name.endswith(label):
            end = data.find(b"-----END " + name + b"-----", close)
            if end < 0:
                return None
            return data[begin : end + len(name) + 14]
        start = close + 5


def _checkKeyMatches(
    certificate: crypto.X509, key: crypto.PKey, keySource: PEMSource | None
) -> None:
    def spki(k: CertificatePublicKeyTypes) -> bytes:
        return k.public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )

    privateKey = key.to_cryptography_key()
    assert isinstance(privateKey, _KEY_TYPES)
    if spki(certificate.to_cryptography().public_key()) != spki(
        privateKey.public_key()
    ):
        where = "" if keySource is None else f" in {_describe(keySource)}"
        subject = certificate.get_subject().CN or "no common name"
        raise TLSConfigurationError(
            f"the private key{where} does not match the certificate ({subject})"
        )


def parseTLSDescription(description: str) -> TLSDescription | None:
    """
    The arguments of ``description`` if it is a ``tls:`` one, else ``None``.

    :raises TypeError: if they are not those of Twisted's ``tls:`` (one
        missing, or one it does not know), as Twisted's parser raises.
    """
    # Twisted's own tokenizer (private, but unchanged since Twisted 10.2),
    # so that quoting means here what it means to clientFromString.
    args, kwargs = _parse(description)
    if not args or str(args[0]).lower() != "tls":
        return None
    return TLSDescription(*args[1:], **kwargs)


def _trustRootFromPath(path: str) -> IOpenSSLTrustRoot:
    """
    The CA certificates of ``trustRoots=``: every certificate of every
    ``*.pem`` file in a directory (Twisted's meaning), or of a file.
    """
    if not os.path.isdir(path):
        return _trustRoot(path)
    try:
        names = sorted(os.listdir(path))
    except OSError as e:
        raise TLSConfigurationError(
            f"cannot read the CA certificate directory {path!r}: {e.strerror or e}"
        ) from e
    certificates = [
        Certificate(c)
        for name in names
        if name.lower().endswith(".pem")
        for c in _loadCertificates(os.path.join(path, name), "CA certificate")
    ]
    if not certificates:
        # Twisted would trust nothing, and every handshake would fail.
        raise TLSConfigurationError(f"no *.pem CA certificate file in {path!r}")
    root: IOpenSSLTrustRoot = trustRootFromCertificates(certificates)
    return root


def _trustRoot(source: TrustSource) -> IOpenSSLTrustRoot:
    if isinstance(source, (bytes, str, os.PathLike)):
        certificates = _loadCertificates(source, "CA certificate")
        root: IOpenSSLTrustRoot = trustRootFromCertificates(
            [Certificate(c) for c in certificates]
        )
        return root
    return IOpenSSLTrustRoot(source)
