# -*- test-case-name: memux.test.test_cli -*-
"""
Why a session ended, in one sentence for the user: a TLS handshake
refused (an untrusted or mismatched certificate, a client certificate
required), a server that is not memux (or speaks TLS to a ``tcp:``
REMOTE), a GOAWAY with its code and reason; never an OpenSSL error tuple,
an exception's repr or a "clean" close.

An `Ending` also says whether the memux handshake ever completed: if it
did not, the commands say "cannot connect", as for a connection refused.
"""

from __future__ import annotations

import datetime
import re
import weakref
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from memux.codes import describeCode
from memux.error import SessionLost
from memux.protocol import MemuxProtocol

#: seconds to wait for a server to answer a TLS ClientHello (see `speaksTLS`)
PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class TLSTarget:
    """
    What a ``tls:`` REMOTE checks and presents, for messages.

    :ivar hostname: the name the server's certificate must be valid for.
    :ivar ca: the CA certificate file (or directory) given, if any: else
        the system's CAs are trusted.
    :ivar cert: the client certificate file given, if any.
    :ivar plain: the same server without TLS, as a REMOTE, if it can be
        written (not with ``endpoint=``).
    """

    hostname: str
    ca: str | None = None
    cert: str | None = None
    plain: str | None = None


@dataclass(frozen=True)
class Ending:
    """
    Why a session ended.

    :ivar connecting: the memux handshake never completed (the peer's
        preface never arrived): "cannot connect", not "session lost".
    :ivar text: why, in a sentence.
    :ivar silent: the server sent nothing at all over a connection without
        TLS: it may be a TLS server (see `speaksTLS`).
    """

    connecting: bool
    text: str
    silent: bool = False


#: the certificate each watched session's server presented (see `watch`)
_certificates: weakref.WeakKeyDictionary[MemuxProtocol, x509.Certificate | None] = (
    weakref.WeakKeyDictionary()
)


def watch(session: MemuxProtocol) -> None:
    """
    Keep what `describeEnding` will need of ``session`` that Twisted
    forgets as soon as the connection is gone: the TLS connection, and
    with it the certificate the server presented.
    """

    def closed(_: object) -> None:
        _certificates[session] = _peerCertificate(session)

    session.whenClosed().addCallback(closed)


def sessionLost(session: MemuxProtocol) -> SessionLost | None:
    """
    The `SessionLost` that ``session``'s channels and pings got when it
    ended (`MemuxProtocol.lostError`), or ``None`` while it has not.
    """
    return session.lostError


def describeLost(error: SessionLost) -> str:
    """
    ``error``'s reason: a GOAWAY's names its code; the code this side ended
    a session with (PROTOCOL_ERROR for a peer that is not memux, say) adds
    nothing to its reason.
    """
    text = error.reason.rstrip(".")
    if text:
        return text
    if error.code is not None:
        return f"the session ended ({describeCode(error.code)})"
    return "the session ended"


def describeEnding(
    session: MemuxProtocol,
    remoteText: str,
    tls: TLSTarget | None = None,
    lost: SessionLost | None = None,
) -> Ending:
    """
    Why ``session``, to REMOTE ``remoteText``, ended; ``lost`` is the
    `SessionLost` a channel or ping of it got, if any.
    """
    counters = session.counters()
    # The preface counts as a frame: none means no memux handshake.
    connecting = counters["framesReceived"] == 0
    reason = session.lostReason
    if reason is not None and reason.value is not None:
        text = _describeTLS(reason.value, session, tls)
        if text is not None:
            return Ending(connecting, text)
    if lost is None:
        lost = sessionLost(session)
    if lost is None:
        # Closed, and nothing says why: not the peer's GOAWAY, nor ours.
        lost = SessionLost("the server closed the connection")
    text = describeLost(lost)
    if not connecting:
        return Ending(False, text)
    if lost.reason.startswith("not a memux peer") and _tlsRecord.search(lost.reason):
        return Ending(True, _speaksTLS(remoteText))
    overTLS = isinstance(session.transport, TLSMemoryBIOProtocol)
    silent = counters["bytesReceived"] == 0 and not overTLS
    if silent and reason is not None and reason.check(ConnectionDone):
        text = "the server closed the connection before the memux handshake"
    return Ending(True, text, silent)


async def explainEnding(
    session: MemuxProtocol,
    endpoint: IStreamClientEndpoint,
    remoteText: str,
    clock: IReactorTime,
    tls: TLSTarget | None = None,
    lost: SessionLost | None = None,
) -> Ending:
    """
    `describeEnding`, and if the server said nothing at all, whether it
    answers a TLS ClientHello on a new connection through ``endpoint``: a
    TLS server reached with ``tcp:`` closes (or waits) without a word.
    """
    ending = describeEnding(session, remoteText, tls, lost)
    if ending.silent and await speaksTLS(endpoint, clock):
        return Ending(True, _speaksTLS(remoteText))
    return ending


def tlsForm(remoteText: str) -> str | None:
    """
    REMOTE ``remoteText`` with TLS: ``tls:`` instead of ``tcp:``, if it is a
    ``tcp:`` one.
    """
    kind, _, rest = remoteText.partition(":")
    if kind.lower() not in ("tcp", "tcp6") or not rest:
        return None
    bracketed = re.match(r"^\[([^\]]+)\](:.*)$", rest)
    if bracketed is not None:
        # The "tcp:[::1]:7400" that names a bare "[::1]:7400".
        return "tls:" + bracketed[1].replace(":", "\\:") + bracketed[2]
    return "tls:" + rest


def _speaksTLS(remoteText: str) -> str:
    form = tlsForm(remoteText)
    return "the server seems to speak TLS: " + (
        f"for TLS, write {form}" if form else "for TLS, use a tls: REMOTE"
    )


#: the start of a TLS record (handshake or alert) as the wire module
#: describes a stream it did not expect
_tlsRecord = re.compile(r"a TLS handshake|a TLS alert|bytes b'\\x1[56]\\x03")

#: OpenSSL's reasons that say the server did not answer in TLS at all
_NOT_TLS = (
    "wrong version number",
    "packet length too long",
    "record layer failure",
    "http request",
    "unknown protocol",
)

#: alerts by which a server refuses a client certificate
_CLIENT_CERTIFICATE_ALERTS = (
    "bad certificate",
    "certificate unknown",
    "certificate expired",
    "certificate revoked",
    "unsupported certificate",
    "access denied",
)


def _describeTLS(
    error: BaseException, session: MemuxProtocol, tls: TLSTarget | None
) -> str | None:
    """
    A sentence for a TLS error (most often, a handshake refused), or
    ``None`` if ``error`` is not one.
    """
    if isinstance(error, VerificationError):
        return _wrongName(error, _peerCertificate(session), tls)
    if not isinstance(error, SSL.Error):
        return None
    reasons = _sslReasons(error)

    def saying(*words: str) -> str | None:
        for reason in reasons:
            for word in words:
                if word in reason:
                    return word
        return None

    if saying("certificate verify failed"):
        return _untrusted(_peerCertificate(session), tls)
    if saying("alert certificate required", "peer did not return a certificate"):
        return "the server requires a client certificate: give one with --cert"
    given = f" in {tls.cert}" if tls is not None and tls.cert else ""
    if saying("alert unknown ca"):
        return (
            f"the server does not trust the client certificate{given}:"
            " it is not issued by a CA the server accepts"
        )
    alert = saying(*_CLIENT_CERTIFICATE_ALERTS)
    if alert:
        return f"the server refused the client certificate{given} ({alert})"
    if saying("alert no application protocol"):
        return "the server does not speak memux/1: it refused that ALPN protocol"
    if saying(*_NOT_TLS):
        plain = tls.plain if tls is not None else None
        advice = f": for plain TCP, write {plain}" if plain else ""
        return "the server does not seem to speak TLS" + advice
    if saying("unexpected eof"):
        return "the server closed the connection during the TLS handshake"
    for reason in reasons:
        if "alert " in reason:
            return "the server ended the TLS handshake: alert " + repr(
                reason.split("alert ", 1)[1]
            )
    return "TLS failed: " + "; ".join(reasons or [str(error)])


def _sslReasons(error: SSL.Error) -> list[str]:
    """
    The reasons in pyOpenSSL's error: its argument is a list of (library,
    function, reason) tuples.
    """
    reasons = []
    for arg in error.args:
        for item in arg if isinstance(arg, list) else [arg]:
            if isinstance(item, tuple) and item:
                reasons.append(str(item[-1]))
            elif isinstance(item, str):
                reasons.append(item)
    return reasons


def _peerCertificate(session: MemuxProtocol) -> x509.Certificate | None:
    """
    The certificate the server presented, if the session ran over TLS and
    it got that far: read from the TLS connection, which keeps it after
    the handshake failed, until the connection is gone (see `watch`).
    """
    if session in _certificates:
        return _certificates[session]
    transport = session.transport
    if not isinstance(transport, TLSMemoryBIOProtocol):
        return None
    handle = transport.getHandle()
    if not isinstance(handle, SSL.Connection):
        return None
    chain = handle.get_peer_cert_chain()
    return chain[0].to_cryptography() if chain else None


def _untrusted(certificate: x509.Certificate | None, tls: TLSTarget | None) -> str:
    """
    Why the server's certificate was not trusted, as far as can be told.
    """
    name = tls.hostname if tls is not None else "the server"
    head = f"certificate for {name} is not trusted: "
    if tls is not None and tls.ca:
        trusted = f"a CA in {tls.ca}"
    else:
        trusted = "a CA the system trusts (give its CA certificate with --ca FILE)"
    if certificate is None:
        return head + f"it does not chain to {trusted}"
    now = datetime.datetime.now(datetime.timezone.utc)
    if certificate.not_valid_after_utc < now:
        return head + f"it expired on {certificate.not_valid_after_utc:%Y-%m-%d}"
    if certificate.not_valid_before_utc > now:
        return (
            head + f"it is not valid until {certificate.not_valid_before_utc:%Y-%m-%d}"
        )
    if certificate.issuer == certificate.subject:
        issued = f"it is self-signed ('{certificate.subject.rfc4514_string()}')"
    else:
        issued = f"it is issued by '{certificate.issuer.rfc4514_string()}'"
    return head + f"{issued}, which does not chain to {trusted}"


def _wrongName(
    error: VerificationError,
    certificate: x509.Certificate | None,
    tls: TLSTarget | None,
) -> str:
    """
    The names the server's certificate is for, and the one checked.
    """
    if tls is not None:
        wanted = tls.hostname
    else:
        ids = [getattr(e, "mismatched_id", None) for e in error.errors]
        found = [getattr(i, "hostname", None) or getattr(i, "ip", None) for i in ids]
        wanted = ", ".join(
            f.decode() if isinstance(f, bytes) else str(f) for f in found if f
        )
    names = _certificateNames(certificate) if certificate is not None else []
    if not names:
        return f"certificate is not for {wanted}"
    return f"certificate is for {', '.join(names)}, not {wanted}"


def _certificateNames(certificate: x509.Certificate) -> list[str]:
    """
    The names and addresses a certificate is for: its subjectAltName (what
    clients check), else its common name.
    """
    try:
        extension = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except x509.ExtensionNotFound:
        common = certificate.subject.get_attributes_for_oid(x509.OID_COMMON_NAME)
        return [str(a.value) for a in common]
    names: list[Any] = extension.value.get_values_for_type(x509.DNSName)
    addresses: list[Any] = extension.value.get_values_for_type(x509.IPAddress)
    return [str(n) for n in names + addresses]


class _TLSProbe(Protocol):
    """
    Sends a TLS ClientHello; ``answer`` fires with whether the reply starts
    as a TLS record (a handshake or an alert) does.
    """

    def __init__(self) -> None:
        self.answer: defer.Deferred[bool] = defer.Deferred()
        self._head = b""

    def connectionMade(self) -> None:
        """
        Say hello, as a TLS client does first.
        """
        assert self.transport is not None
        self.transport.write(_clientHello())

    def dataReceived(self, data: bytes) -> None:
        """
        Judge by the first two bytes: a record type, then major version 3.
        """
        self._head += data
        if len(self._head) >= 2:
            self._finish(self._head[0] in (0x15, 0x16) and self._head[1] == 3)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Closed without a TLS answer.
        """
        self._finish(False)

    def _finish(self, speaksTLS: bool) -> None:
        if not self.answer.called:
            self.answer.callback(speaksTLS)
        transport: Any = self.transport
        if transport is not None and transport.connected:
            transport.abortConnection()


def _clientHello() -> bytes:
    """
    The first flight of a TLS client: a ClientHello, from OpenSSL.
    """
    connection = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
    connection.set_connect_state()
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass
    hello: bytes = connection.bio_read(65536)
    return hello


async def speaksTLS(
    endpoint: IStreamClientEndpoint,
    clock: IReactorTime,
    timeout: float = PROBE_TIMEOUT,
) -> bool:
    """
    Whether the server at ``endpoint`` answers a TLS ClientHello in TLS,
    within ``timeout`` seconds.
    """
    probe = _TLSProbe()
    try:
        await connectProtocol(endpoint, probe)
    except Exception:
        return False
    probe.answer.addTimeout(timeout, clock)
    try:
        return await probe.answer
    except defer.TimeoutError:
        probe._finish(False)
        return False
