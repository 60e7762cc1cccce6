# -*- test-case-name: memux.test.test_tls -*-
"""
Tests for L{memux.tls}: TLS and mutual TLS for sessions, ALPN ``memux/1``,
TLS inside a channel, ``twistd memux --tls-cert``, and the TLS example.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

import trustme
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    UNIXClientEndpoint,
    connectProtocol,
    quoteStringArgument,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolNegotiationFactory,
)
from twisted.internet.protocol import Factory
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    PrivateCertificate,
    optionsForClientTLS,
)
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from memux import (
    ChannelEndpoint,
    IChannelTransport,
    MemuxProtocol,
    MultiplexingFactory,
    SessionLost,
)
from memux.services import Echo, builtinServices
from memux.test._fakes import Collector, MessageCollector
from memux.test._helpers import (
    HOSTNAME,
    LOCAL,
    ROOT,
    Certificates,
    RecordingMultiplexingFactory,
    ServerTestCase,
    logged,
)
from memux.tls import (
    ALPN,
    PEMSource,
    TLSConfigurationError,
    clientEndpointFromString,
    clientTLSOptions,
    serverTLSOptions,
    tlsServerFactory,
)

EXAMPLES = ROOT / "examples"


def encryptedKey(certificate: trustme.LeafCert) -> bytes:
    """
    C{certificate}'s private key in PEM, encrypted with a passphrase.
    """
    key = serialization.load_pem_private_key(
        certificate.private_key_pem.bytes(), password=None
    )
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


class ServerTLSOptionsTests(SynchronousTestCase):
    """
    Tests for L{serverTLSOptions}.
    """

    def setUp(self) -> None:
        """
        Make a CA and certificates.
        """
        self.certs = Certificates(self.mktemp())

    def test_alpn(self) -> None:
        """
        The ALPN identifier is C{memux/1}, as the spec registers it.
        """
        self.assertEqual(ALPN, b"memux/1")

    def test_pemBytes(self) -> None:
        """
        PEM bytes holding the key and certificate make server options that
        offer C{memux/1} and ask for no client certificate.
        """
        options = serverTLSOptions(self.certs.serverPEM)
        self.assertTrue(IOpenSSLServerConnectionCreator.providedBy(options))
        assert isinstance(options, CertificateOptions)
        self.assertEqual(options._acceptableProtocols, [ALPN])
        self.assertFalse(options.verify)

    def test_paths(self) -> None:
        """
        A certificate and a key may be given as paths, as C{str} or
        path-like, in one file or two.
        """
        pairs: list[tuple[PEMSource, PEMSource | None]] = [
            (self.certs.serverFile, None),
            (Path(self.certs.serverFile), None),
            (self.certs.serverCertFile, self.certs.serverKeyFile),
            (Path(self.certs.serverCertFile), Path(self.certs.serverKeyFile)),
        ]
        for certificate, key in pairs:
            options = serverTLSOptions(certificate, key)
            assert isinstance(options, CertificateOptions)
            self.assertIsNotNone(options.privateKey)

    def test_privateCertificate(self) -> None:
        """
        A L{PrivateCertificate} is accepted as it is; giving a separate key
        with it is a L{TypeError}.
        """
        private = PrivateCertificate.loadPEM(self.certs.serverPEM)
        options = serverTLSOptions(private)
        assert isinstance(options, CertificateOptions)
        self.assertIs(options.certificate, private.original)
        self.assertRaises(
            TypeError, serverTLSOptions, private, self.certs.serverKeyFile
        )

    def test_chain(self) -> None:
        """
        Certificates after the first are sent as the chain.
        """
        intermediate = self.certs.ca.create_child_ca()
        leaf = intermediate.issue_cert(HOSTNAME)
        options = serverTLSOptions(leaf.private_key_and_cert_chain_pem.bytes())
        assert isinstance(options, CertificateOptions)
        self.assertEqual(len(options.extraCertChain), 1)

    def test_mutual(self) -> None:
        """
        With a trust root, clients must present a certificate that it
        verifies; a PEM file of CA certificates may hold several.
        """
        both = self.certs.write(
            "cas.pem", self.certs.caPEM + trustme.CA().cert_pem.bytes()
        )
        for trustRoot in (self.certs.caPEM, self.certs.caFile, both):
            options = serverTLSOptions(self.certs.serverPEM, trustRoot=trustRoot)
            assert isinstance(options, CertificateOptions)
            self.assertTrue(options.verify)
            self.assertTrue(options.requireCertificate)

    def test_missingFile(self) -> None:
        """
        A file that cannot be read is a L{TLSConfigurationError} naming it.
        """
        missing = os.path.join(self.certs.directory, "missing.pem")
        e = self.assertRaises(TLSConfigurationError, serverTLSOptions, missing)
        self.assertIn(repr(missing), str(e))
        e = self.assertRaises(
            TLSConfigurationError,
            serverTLSOptions,
            self.certs.serverCertFile,
            missing,
        )
        self.assertIn(repr(missing), str(e))

    def test_notPEM(self) -> None:
        """
        A file without a PEM certificate is a L{TLSConfigurationError}
        naming it.
        """
        junk = self.certs.write("junk.pem", b"not a certificate")
        e = self.assertRaises(TLSConfigurationError, serverTLSOptions, junk)
        self.assertIn(f"no PEM certificate in {junk!r}", str(e))

    def test_noKey(self) -> None:
        """
        A certificate without a key, and none given, is a
        L{TLSConfigurationError} naming the file.
        """
        e = self.assertRaises(
            TLSConfigurationError, serverTLSOptions, self.certs.serverCertFile
        )
        self.assertIn(f"no PEM private key in {self.certs.serverCertFile!r}", str(e))

    def test_keyMismatch(self) -> None:
        """
        A key that does not belong to the certificate is a
        L{TLSConfigurationError}.
        """
        other = self.certs.write("other.pem", self.certs.client.private_key_pem.bytes())
        e = self.assertRaises(
            TLSConfigurationError, serverTLSOptions, self.certs.serverCertFile, other
        )
        self.assertIn(f"private key in {other!r} does not match", str(e))

    def test_encryptedKey(self) -> None:
        """
        An encrypted key is refused with a clear error rather than a
        passphrase prompt.
        """
        locked = self.certs.write("locked.pem", encryptedKey(self.certs.server))
        e = self.assertRaises(
            TLSConfigurationError, serverTLSOptions, self.certs.serverCertFile, locked
        )
        self.assertIn("is encrypted", str(e))

    def test_pemStr(self) -> None:
        """
        PEM data given as a C{str} (a path, by the API's rule) is a
        L{TypeError} saying so.
        """
        e = self.assertRaises(
            TypeError, serverTLSOptions, self.certs.serverPEM.decode("ascii")
        )
        self.assertIn("must be bytes", str(e))


class ClientTLSOptionsTests(SynchronousTestCase):
    """
    Tests for L{clientTLSOptions} and L{tlsServerFactory}.
    """

    def setUp(self) -> None:
        """
        Make a CA and certificates.
        """
        self.certs = Certificates(self.mktemp())

    def test_forms(self) -> None:
        """
        The trust root and client certificate may be PEM bytes, paths or
        Twisted objects; each gives client connection creator.
        """
        private = PrivateCertificate.loadPEM(self.certs.clientPEM)
        for trustRoot, certificate in [
            (None, None),
            (self.certs.caPEM, None),
            (self.certs.caFile, self.certs.clientFile),
            (Path(self.certs.caFile), self.certs.clientPEM),
            (private, private),
        ]:
            options = clientTLSOptions(HOSTNAME, trustRoot, certificate)
            self.assertTrue(IOpenSSLClientConnectionCreator.providedBy(options))

    def test_separateKey(self) -> None:
        """
        The client certificate's key may come separately; without a
        certificate in PEM a key is a L{TypeError}; a key that does not fit
        is a L{TLSConfigurationError}.
        """
        cert = self.certs.write(
            "client-cert.pem", self.certs.client.cert_chain_pems[0].bytes()
        )
        key = self.certs.write(
            "client-key.pem", self.certs.client.private_key_pem.bytes()
        )
        clientTLSOptions(HOSTNAME, self.certs.caPEM, cert, clientKey=key)
        self.assertRaises(
            TypeError, clientTLSOptions, HOSTNAME, self.certs.caPEM, clientKey=key
        )
        self.assertRaises(
            TLSConfigurationError,
            clientTLSOptions,
            HOSTNAME,
            self.certs.caPEM,
            cert,
            clientKey=self.certs.serverKeyFile,
        )

    def test_tlsServerFactory(self) -> None:
        """
        L{tlsServerFactory} wraps a factory in a L{TLSMemoryBIOFactory}
        whose connections take the server's side of TLS.
        """
        inner = Factory.forProtocol(Echo)
        wrapped = tlsServerFactory(inner, serverTLSOptions(self.certs.serverPEM))
        self.assertIsInstance(wrapped, TLSMemoryBIOFactory)
        self.assertIs(wrapped.wrappedFactory, inner)
        protocol = wrapped.buildProtocol(None)
        assert isinstance(protocol, TLSMemoryBIOProtocol)
        transport = StringTransport()
        protocol.makeConnection(transport)
        # A client would send its hello at once; a server waits for it.
        self.assertEqual(transport.value(), b"")
        protocol.connectionLost(Failure(ConnectionDone()))


class TLSSessionTestCase(ServerTestCase):
    """
    Serves the built-in services over TLS on a loopback TCP port.
    """

    def setUp(self) -> None:
        """
        Make a CA and certificates.
        """
        super().setUp()
        self.certs = Certificates(self.mktemp())

    async def serveTLS(self, trustRoot: bytes | None = None) -> int:
        """
        Serve the built-in services over TLS on a loopback port; return it.
        """
        factory = RecordingMultiplexingFactory(builtinServices(self.reactor))
        options = serverTLSOptions(self.certs.serverPEM, trustRoot=trustRoot)
        return await self.listenTCP(tlsServerFactory(factory, options))

    async def connectTLS(
        self, port: int, options: IOpenSSLClientConnectionCreator
    ) -> MemuxProtocol:
        """
        Connect a session over TLS with C{options}.
        """
        return await self.connect(wrapClientTLS(options, self.tcpEndpoint(port)))

    async def echo(self, session: MemuxProtocol) -> list[bytes]:
        """
        Send one message to echo; return the messages that come back.
        """
        proto = await session.openChannel(
            b"echo", Factory.forProtocol(MessageCollector)
        )
        assert isinstance(proto, MessageCollector)
        IChannelTransport(proto.transport).writeMessage(b"secret")
        await proto.receivedAtLeast(6)
        return proto.messages

    async def failedSession(
        self, port: int, options: IOpenSSLClientConnectionCreator
    ) -> BaseException:
        """
        Connect with C{options}, which the handshake must reject; return
        the reason the session was lost (what the channel opened meanwhile
        ends with is checked to say the same).
        """
        session = await self.connectTLS(port, options)
        proto = await session.openChannel(b"echo", Factory.forProtocol(Collector))
        assert isinstance(proto, Collector)
        IChannelTransport(proto.transport).writeMessage(b"secret")
        lost = await proto.lost
        await session.whenClosed()
        self.assertEqual(proto.received, b"")
        assert session.lostReason is not None and session.lostReason.value is not None
        self.assertIsInstance(lost, SessionLost)
        self.assertIn(str(session.lostReason.value), str(lost))
        return session.lostReason.value


class TLSTests(TLSSessionTestCase):
    """
    Sessions over TLS: verified, with ALPN C{memux/1}.
    """

    async def test_alpnNegotiated(self) -> None:
        """
        A client using L{clientTLSOptions} verifies the server, and both
        sides negotiate C{memux/1}; channels work.
        """
        port = await self.serveTLS()
        session = await self.connectTLS(
            port, clientTLSOptions(HOSTNAME, self.certs.caPEM)
        )
        self.assertEqual(await self.echo(session), [b"secret"])
        client = session.transport
        assert isinstance(client, TLSMemoryBIOProtocol)
        self.assertEqual(client.negotiatedProtocol, ALPN)
        [serverSession] = self.serverSessions
        server = serverSession.transport
        assert isinstance(server, TLSMemoryBIOProtocol)
        self.assertEqual(server.negotiatedProtocol, ALPN)

    async def test_noALPN(self) -> None:
        """
        A client that offers no ALPN is served (memux by prior agreement):
        nothing is negotiated and channels work.
        """
        port = await self.serveTLS()
        options = optionsForClientTLS(HOSTNAME, Certificate.loadPEM(self.certs.caPEM))
        session = await self.connectTLS(port, options)
        self.assertEqual(await self.echo(session), [b"secret"])
        client = session.transport
        assert isinstance(client, TLSMemoryBIOProtocol)
        self.assertIsNone(client.negotiatedProtocol)

    async def test_otherProtocolRefused(self) -> None:
        """
        A client offering only C{h2} is refused at once with the TLS alert
        C{no_application_protocol}; the server's session ends saying what
        the client offered.
        """
        port = await self.serveTLS()
        options = optionsForClientTLS(
            HOSTNAME, Certificate.loadPEM(self.certs.caPEM), acceptableProtocols=[b"h2"]
        )
        client = Collector()
        started = time.monotonic()
        await connectProtocol(wrapClientTLS(options, self.tcpEndpoint(port)), client)
        reason = await client.lost
        self.assertLess(time.monotonic() - started, 5)
        self.assertIsInstance(reason, SSL.Error)
        self.assertIn("no application protocol", str(reason))
        await self.closeServerSessions()
        [serverSession] = self.serverSessions
        assert serverSession.lostReason is not None
        why = str(serverSession.lostReason.value)
        self.assertIn("the client offered h2, this server speaks memux/1", why)

    async def test_serverCloses(self) -> None:
        """
        A session the server ends (here with C{goAway}) closes its TLS
        connection, although the session is registered as the connection's
        producer (Twisted's TLS waits for it to unregister).
        """
        port = await self.serveTLS()
        session = await self.connectTLS(
            port, clientTLSOptions(HOSTNAME, self.certs.caPEM)
        )
        await session.ping()
        [serverSession] = self.serverSessions
        await serverSession.goAway()
        await session.whenClosed()

    async def test_protocolViolationCloses(self) -> None:
        """
        A TLS client that speaks something else inside TLS is logged at
        warn and its connection closed.
        """
        events = self.captureLog()
        port = await self.serveTLS()
        client = Collector()
        await connectProtocol(
            wrapClientTLS(
                clientTLSOptions(HOSTNAME, self.certs.caPEM), self.tcpEndpoint(port)
            ),
            client,
        )
        assert client.transport is not None
        client.transport.write(b"SSH-2.0-OpenSSH_9.6\r\n")
        await client.lost
        [event] = logged(events, "Protocol violation by {peer}")
        self.assertEqual(event["log_level"], LogLevel.warn)

    async def test_hostnameMismatch(self) -> None:
        """
        A server whose certificate is not for the name the client expects
        is refused: the session ends with service_identity's
        L{VerificationError}, and so do its channels.
        """
        port = await self.serveTLS()
        reason = await self.failedSession(
            port, clientTLSOptions("elsewhere.test", self.certs.caPEM)
        )
        self.assertIsInstance(reason, VerificationError)
        self.assertIn("elsewhere.test", str(reason))

    async def test_untrustedServer(self) -> None:
        """
        A server certificate from a CA the client does not trust is
        refused.
        """
        port = await self.serveTLS()
        stranger = trustme.CA().cert_pem.bytes()
        reason = await self.failedSession(port, clientTLSOptions(HOSTNAME, stranger))
        self.assertIsInstance(reason, SSL.Error)
        self.assertIn("certificate verify failed", str(reason))


class MutualTLSTests(TLSSessionTestCase):
    """
    Servers that require client certificates (mutual TLS).
    """

    async def test_noClientCertificate(self) -> None:
        """
        A client without a certificate is refused: its session ends with
        the server's TLS alert and no channel data is processed.
        """
        port = await self.serveTLS(self.certs.caPEM)
        reason = await self.failedSession(
            port, clientTLSOptions(HOSTNAME, self.certs.caPEM)
        )
        self.assertIsInstance(reason, SSL.Error)
        self.assertIn("certificate required", str(reason))

    async def test_strangerCertificate(self) -> None:
        """
        A client certificate from a CA the server does not trust is
        refused.
        """
        port = await self.serveTLS(self.certs.caPEM)
        reason = await self.failedSession(
            port, clientTLSOptions(HOSTNAME, self.certs.caPEM, self.certs.strangerPEM)
        )
        self.assertIsInstance(reason, SSL.Error)
        self.assertIn("unknown ca", str(reason))

    async def test_validClientCertificate(self) -> None:
        """
        A client with a certificate from the trusted CA gets through; the
        server's session can see who it is.
        """
        port = await self.serveTLS(self.certs.caPEM)
        session = await self.connectTLS(
            port,
            clientTLSOptions(HOSTNAME, self.certs.caFile, self.certs.clientFile),
        )
        self.assertEqual(await self.echo(session), [b"secret"])
        [serverSession] = self.serverSessions
        server = serverSession.transport
        assert isinstance(server, TLSMemoryBIOProtocol)
        peer = server.getPeerCertificate().to_cryptography()
        self.assertIn("client.memux.test", str(peer.extensions))
        self.assertEqual(server.negotiatedProtocol, ALPN)


class ClientEndpointFromStringTests(TLSSessionTestCase):
    """
    L{clientEndpointFromString}: ``tls:`` descriptions that offer ALPN
    C{memux/1}, against a real TLS server on loopback.
    """

    def negotiated(self) -> list[bytes | None]:
        """
        The ALPN protocol each server session negotiated.
        """
        found: list[bytes | None] = []
        for session in self.serverSessions:
            transport = session.transport
            assert isinstance(transport, TLSMemoryBIOProtocol)
            found.append(transport.negotiatedProtocol)
        return found

    def serverNames(self) -> list[bytes | None]:
        """
        The name (SNI) each client asked the server for.
        """
        names: list[bytes | None] = []
        for session in self.serverSessions:
            transport = session.transport
            assert isinstance(transport, TLSMemoryBIOProtocol)
            handle = cast(SSL.Connection, transport.getHandle())
            names.append(handle.get_servername())
        return names

    async def test_tlsOffersALPN(self) -> None:
        """
        A ``tls:`` description with ``trustRoots=`` (a directory, as with
        Twisted) connects verified, and both sides negotiate C{memux/1}.
        """
        port = await self.serveTLS()
        roots = quoteStringArgument(self.certs.caDirectory)
        endpoint = clientEndpointFromString(
            self.reactor, f"tls:127.0.0.1:{port}:trustRoots={roots}"
        )
        session = await self.connect(endpoint)
        self.assertEqual(await self.echo(session), [b"secret"])
        client = session.transport
        assert isinstance(client, TLSMemoryBIOProtocol)
        self.assertEqual(client.negotiatedProtocol, ALPN)
        self.assertEqual(self.negotiated(), [ALPN])

    async def test_trustRootsFile(self) -> None:
        """
        ``trustRoots=`` may also name a PEM file of CA certificates.
        """
        port = await self.serveTLS()
        roots = quoteStringArgument(self.certs.caFile)
        endpoint = clientEndpointFromString(
            self.reactor, f"tls:127.0.0.1:{port}:trustRoots={roots}"
        )
        self.assertEqual(await self.echo(await self.connect(endpoint)), [b"secret"])
        self.assertEqual(self.negotiated(), [ALPN])

    async def test_endpointKeyword(self) -> None:
        """
        With ``endpoint=``, as with Twisted's ``tls:``, the session runs
        over that endpoint and HOST is only the name to verify (and send
        as SNI).
        """
        port = await self.serveTLS()
        roots = quoteStringArgument(self.certs.caFile)
        inner = quoteStringArgument(f"tcp:127.0.0.1:{port}")
        endpoint = clientEndpointFromString(
            self.reactor, f"tls:{HOSTNAME}:7400:trustRoots={roots}:endpoint={inner}"
        )
        self.assertEqual(await self.echo(await self.connect(endpoint)), [b"secret"])
        self.assertEqual(self.serverNames(), [HOSTNAME.encode()])
        self.assertEqual(self.negotiated(), [ALPN])

    async def test_mutualFromDescription(self) -> None:
        """
        ``certificate=`` and ``privateKey=`` present a client certificate
        to a server that requires one.
        """
        port = await self.serveTLS(self.certs.caPEM)
        q = quoteStringArgument
        endpoint = clientEndpointFromString(
            self.reactor,
            f"tls:127.0.0.1:{port}:trustRoots={q(self.certs.caFile)}"
            f":certificate={q(self.certs.clientCertFile)}"
            f":privateKey={q(self.certs.clientKeyFile)}",
        )
        self.assertEqual(await self.echo(await self.connect(endpoint)), [b"secret"])
        self.assertEqual(self.negotiated(), [ALPN])

    async def test_keywordArguments(self) -> None:
        """
        The keyword arguments give the CA, the client certificate and the
        name to verify and send as SNI, for a description without them.
        """
        port = await self.serveTLS(self.certs.caPEM)
        endpoint = clientEndpointFromString(
            self.reactor,
            f"tls:127.0.0.1:{port}",
            trustRoot=self.certs.caFile,
            clientCertificate=self.certs.clientCertFile,
            clientKey=self.certs.clientKeyFile,
            hostname=HOSTNAME,
        )
        self.assertEqual(await self.echo(await self.connect(endpoint)), [b"secret"])
        self.assertEqual(self.serverNames(), [HOSTNAME.encode()])
        self.assertEqual(self.negotiated(), [ALPN])

    async def test_hostnameChecked(self) -> None:
        """
        C{hostname} is the name the certificate must be valid for: another
        name fails the session.
        """
        port = await self.serveTLS()
        session = await self.connect(
            clientEndpointFromString(
                self.reactor,
                f"tls:127.0.0.1:{port}",
                trustRoot=self.certs.caFile,
                hostname="elsewhere.test",
            )
        )
        await session.whenClosed()
        assert session.lostReason is not None
        self.assertIsInstance(session.lostReason.value, VerificationError)


class PlainTwistedTLSServerTests(TLSSessionTestCase):
    """
    A server factory wrapped in Twisted's own TLS with no ALPN protocols
    (``ssl:`` endpoints, ``CertificateOptions``): Twisted then refuses
    every client offering ALPN unless the factory names a protocol, so
    L{MultiplexingFactory} does, for servers.
    """

    async def test_sslEndpointServesALPNClients(self) -> None:
        """
        A session factory behind a plain ``CertificateOptions`` TLS layer
        serves a client that offers C{memux/1}, which both negotiate.
        """
        factory = RecordingMultiplexingFactory(builtinServices(self.reactor))
        pem = PrivateCertificate.loadPEM(self.certs.serverPEM)
        options = CertificateOptions(
            privateKey=pem.privateKey.original, certificate=pem.original
        )
        port = await self.listenTCP(TLSMemoryBIOFactory(options, False, factory))
        session = await self.connectTLS(
            port, clientTLSOptions(HOSTNAME, self.certs.caPEM)
        )
        self.assertEqual(await self.echo(session), [b"secret"])
        client = session.transport
        assert isinstance(client, TLSMemoryBIOProtocol)
        self.assertEqual(client.negotiatedProtocol, ALPN)

    def test_onlyServersNegotiate(self) -> None:
        """
        Server factories name C{memux/1}; client ones name nothing, so
        their TLS options alone say what they offer.
        """
        self.assertEqual(
            IProtocolNegotiationFactory(MultiplexingFactory()).acceptableProtocols(),
            [ALPN],
        )
        self.assertIsNone(
            IProtocolNegotiationFactory(MultiplexingFactory(client=True), None)
        )


class ClientEndpointParsingTests(SynchronousTestCase):
    """
    L{clientEndpointFromString} reads Twisted's ``tls:`` arguments, leaves
    other descriptions to Twisted, and says what is wrong.
    """

    def setUp(self) -> None:
        """
        Make a CA and certificates; a memory reactor to connect with.
        """
        self.certs = Certificates(self.mktemp())
        self.reactor = MemoryReactorClock()

    def test_twistedArguments(self) -> None:
        """
        HOST, PORT, ``timeout=`` and ``bindAddress=`` mean what they mean
        to Twisted's ``tls:`` endpoint: where and how TCP connects.
        """
        for description, expected in [
            ("tls:127.0.0.1:7401", ("127.0.0.1", 7401, 30, None)),
            (
                "tls:127.0.0.1:7402:timeout=7:bindAddress=127.0.0.2",
                ("127.0.0.1", 7402, 7, ("127.0.0.2", 0)),
            ),
        ]:
            endpoint = clientEndpointFromString(self.reactor, description)
            endpoint.connect(Factory.forProtocol(Collector))
            self.reactor.advance(0)
            host, port, _, timeout, bindAddress = self.reactor.tcpClients[-1]
            self.assertEqual((host, port, timeout, bindAddress), expected)

    def test_otherTypes(self) -> None:
        """
        Other descriptions are Twisted's own (case does not matter to
        ``TLS:``); the keyword arguments are for ``tls:`` only.
        """
        endpoint = clientEndpointFromString(self.reactor, "tcp:127.0.0.1:7400")
        self.assertIsInstance(endpoint, TCP4ClientEndpoint)
        self.assertNotIsInstance(
            clientEndpointFromString(self.reactor, "TLS:127.0.0.1:7400"),
            TCP4ClientEndpoint,
        )
        with self.assertRaises(ValueError) as caught:
            clientEndpointFromString(
                self.reactor, "tcp:127.0.0.1:7400", trustRoot=self.certs.caFile
            )
        self.assertIn(
            "trustRoot applies only to a tls: endpoint", str(caught.exception)
        )

    def test_givenTwice(self) -> None:
        """
        A keyword argument for what the description already gives is a
        L{ValueError}.
        """
        description = f"tls:h:1:trustRoots={quoteStringArgument(self.certs.caFile)}"
        with self.assertRaises(ValueError) as caught:
            clientEndpointFromString(
                self.reactor, description, trustRoot=self.certs.caFile
            )
        self.assertIn("trustRoots= already", str(caught.exception))

    def test_malformed(self) -> None:
        """
        A ``tls:`` description without a port, with an argument Twisted's
        does not take, or with a port that is not a number, fails as
        Twisted's parser fails.
        """
        self.assertRaises(TypeError, clientEndpointFromString, self.reactor, "tls:h")
        self.assertRaises(
            TypeError, clientEndpointFromString, self.reactor, "tls:h:1:bogus=1"
        )
        self.assertRaises(ValueError, clientEndpointFromString, self.reactor, "tls:h:x")

    def test_fileErrors(self) -> None:
        """
        A CA, certificate or key that cannot be loaded is a
        L{TLSConfigurationError} naming the file or directory; so is a key
        without a certificate, and a directory without a ``*.pem`` CA.
        """
        missing = os.path.join(self.certs.directory, "missing.pem")
        empty = os.path.join(self.certs.directory, "empty")
        os.mkdir(empty)
        cases = [
            ({"trustRoot": missing}, "", missing),
            ({}, f":trustRoots={quoteStringArgument(missing)}", missing),
            ({}, f":trustRoots={quoteStringArgument(empty)}", empty),
            ({"clientCertificate": missing}, "", missing),
            ({}, f":certificate={quoteStringArgument(missing)}", missing),
            (
                {},
                f":privateKey={quoteStringArgument(self.certs.clientKeyFile)}",
                "client-key.pem",
            ),
            ({"clientCertificate": self.certs.caFile}, "", "ca.pem"),
        ]
        for keywords, extra, named in cases:
            with self.assertRaises(TLSConfigurationError) as caught:
                clientEndpointFromString(
                    self.reactor,
                    "tls:h:1" + extra,
                    **keywords,
                )
            self.assertIn(named, str(caught.exception))


class TLSInsideChannelTests(TLSSessionTestCase):
    """
    TLS end to end inside one channel, over a plain session.
    """

    async def test_tlsEcho(self) -> None:
        """
        A service wrapped with L{tlsServerFactory} speaks TLS inside its
        channel to a client that wraps a L{ChannelEndpoint} with
        C{wrapClientTLS}; the echo comes back decrypted.
        """
        tlsEcho = tlsServerFactory(
            Factory.forProtocol(Echo), serverTLSOptions(self.certs.serverPEM)
        )
        factory = RecordingMultiplexingFactory({b"tls-echo": tlsEcho})
        port = await self.listenTCP(factory)
        session = await self.connect(self.tcpEndpoint(port))
        endpoint = wrapClientTLS(
            clientTLSOptions(HOSTNAME, self.certs.caPEM),
            ChannelEndpoint(session, b"tls-echo"),
        )
        proto = Collector()
        await connectProtocol(endpoint, proto)
        assert proto.transport is not None
        proto.transport.write(b"inner secret")
        self.assertEqual(await proto.receivedAtLeast(12), b"inner secret")
        tls = proto.transport
        assert isinstance(tls, TLSMemoryBIOProtocol)
        self.assertEqual(tls.negotiatedProtocol, ALPN)
        tls.loseConnection()
        await proto.lost


class TwistdTLSTests(TLSSessionTestCase):
    """
    ``twistd memux --tls-cert ... --tls-ca ...`` serves mutual TLS over any
    endpoint.
    """

    async def test_unixSocket(self) -> None:
        """
        Over a UNIX socket, the server made from the TLS options requires a
        client certificate, then serves echo with ALPN C{memux/1}.
        """
        path = os.path.join(tempfile.mkdtemp(dir=os.getcwd()), "tls.sock")
        self.serve(
            "--listen",
            f"unix:{path}",
            "--tls-cert",
            self.certs.serverCertFile,
            "--tls-key",
            self.certs.serverKeyFile,
            "--tls-ca",
            self.certs.caFile,
        )
        endpoint = UNIXClientEndpoint(self.reactor, path)
        good = await self.connect(
            wrapClientTLS(
                clientTLSOptions(HOSTNAME, self.certs.caPEM, self.certs.clientPEM),
                endpoint,
            )
        )
        self.assertEqual(await self.echo(good), [b"secret"])
        assert isinstance(good.transport, TLSMemoryBIOProtocol)
        self.assertEqual(good.transport.negotiatedProtocol, ALPN)

        bad = await self.connect(
            wrapClientTLS(clientTLSOptions(HOSTNAME, self.certs.caPEM), endpoint)
        )
        await bad.whenClosed()
        assert bad.lostReason is not None
        self.assertIn("certificate required", str(bad.lostReason.value))

    async def test_tcpLogsTLS(self) -> None:
        """
        The server logs that it listens with TLS, and which CA it requires
        client certificates from.
        """
        events = self.captureLog()
        server = self.serve(
            "--listen",
            LOCAL,
            "--tls-cert",
            self.certs.serverFile,
            "--tls-ca",
            self.certs.caFile,
        )
        port = self.tcpPort(server)
        [listening] = logged(events, "memux listening on")
        self.assertEqual(listening["address"], f"127.0.0.1:{port}")
        self.assertEqual(listening["tls"], ", TLS")
        [tls] = logged(events, "memux TLS")
        self.assertIn(self.certs.caFile, tls["tls"])
        self.assertIn("client certificates required", tls["tls"])


class ExampleTests(SynchronousTestCase):
    """
    examples/tls_client.py against a real ``twistd -n memux`` serving
    mutual TLS.
    """

    def setUp(self) -> None:
        """
        Start ``twistd -n memux`` requiring client certificates, on a UNIX
        socket; it is stopped at cleanup.
        """
        self.script = EXAMPLES / "tls_client.py"
        if not self.script.exists():
            raise SkipTest(f"{self.script} is not here (installed without examples)")
        # Not under _trial_temp: a UNIX socket's path must be short.
        self.certs = Certificates(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.certs.directory, True)
        self.sock = os.path.join(self.certs.directory, "memux.sock")
        self.env = dict(os.environ, PYTHONPATH=str(ROOT))
        server = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                "memux",
                "--listen",
                f"unix:{self.sock}",
                "--tls-cert",
                self.certs.serverFile,
                "--tls-ca",
                self.certs.caFile,
            ],
            cwd=str(ROOT),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.addCleanup(self.stop, server)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.sock):
            if server.poll() is not None or time.monotonic() > deadline:
                log = server.stdout.read() if server.stdout else b""
                raise AssertionError(f"twistd did not start: {log!r}")
            time.sleep(0.05)

    def stop(self, server: subprocess.Popen[bytes]) -> None:
        """
        Stop twistd.
        """
        server.terminate()
        server.wait(30)
        if server.stdout:
            server.stdout.close()

    def runClient(self, *args: str) -> subprocess.CompletedProcess[str]:
        """
        Run tls_client.py with C{args} against the server.
        """
        return subprocess.run(
            [sys.executable, str(self.script), *args, f"unix:{self.sock}"],
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env,
            cwd=str(ROOT),
        )

    def test_tlsClientAgainstTwistd(self) -> None:
        """
        tls_client.py, run as doc/tls.rst shows, verifies the server,
        presents its certificate, negotiates memux/1, gets its message
        echoed and pings.
        """
        done = self.runClient(
            "--ca",
            self.certs.caFile,
            "--cert",
            self.certs.clientFile,
            "--hostname",
            HOSTNAME,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        lines = done.stdout.splitlines()
        self.assertEqual(lines[0], f"TLS to {HOSTNAME}: verified, ALPN memux/1")
        self.assertEqual(lines[1], "echo: hello over TLS")
        self.assertTrue(lines[2].startswith("ping: "), lines)

    def test_tlsClientWithoutCertificate(self) -> None:
        """
        Without a client certificate, tls_client.py is refused and exits
        with status 1, saying that a certificate is required.
        """
        done = self.runClient("--ca", self.certs.caFile, "--hostname", HOSTNAME)
        self.assertEqual(done.returncode, 1, done.stdout)
        self.assertEqual(done.stdout, "")
        self.assertIn("certificate required", done.stderr)
        self.assertTrue(done.stderr.startswith("tls_client: "), done.stderr)
