# -*- test-case-name: memux.test.test_close -*-
"""
Every way of closing a session finishes: `MemuxProtocol.loseConnection`,
and ``loseConnection()`` on the session's own connection (TCP or TLS),
even while channels wait for credit that can no longer arrive.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from memux import (
    IChannelTransport,
    IMessageReceiver,
    MemuxProtocol,
    MultiplexingFactory,
)
from memux._session import INPUT_STEP_FRAMES
from memux.protocol import connectSession
from memux.services import builtinServices
from memux.test._fakes import PausingTransport, PeerOnTransport
from memux.test._helpers import HOSTNAME, Certificates, listenStartingTLS
from memux.tls import clientTLSOptions, serverTLSOptions, tlsServerFactory

#: How much each channel uploads: far more than the credit the server
#: grants, so channels wait for credit when the connection is closed.
UPLOAD = 8 * 1024 * 1024
CHANNELS = 20


class ClosedUnderUsTests(SynchronousTestCase):
    """
    A connection closed with its own ``loseConnection()`` while the session
    is its paused producer: Twisted's TCP resumes the producer when its
    buffer drains instead of closing; the session must then close it.
    """

    def test_resumeOnClosingConnectionCloses(self) -> None:
        """
        Resumed by a connection that is closing, with channels waiting for
        credit, the session writes what it can, unregisters as producer and
        closes the connection, and its write timeout keeps counting.
        """
        clock = Clock()
        factory = MultiplexingFactory(builtinServices(clock), reactor=clock)
        transport = PausingTransport()
        peer = PeerOnTransport(factory.buildProtocol(None), clock, transport)
        session = peer.session
        proto: Any = self.successResultOf(
            session.openChannel(b"echo", Factory.forProtocol(Protocol))
        )
        IChannelTransport(proto.transport).write(b"u" * UPLOAD)
        clock.advance(0)
        self.assertIs(transport.producer, session)
        transport.loseConnection()
        transport.send()  # drained: Twisted resumes its producer
        self.assertIsNone(transport.producer)
        self.assertTrue(transport.disconnecting)
        # A close that never completes (the peer reads nothing more) is
        # still bounded: the resume did not reset the write timeout.
        timeout = session.settings.writeTimeout
        assert timeout is not None
        clock.advance(timeout - 1)
        self.assertFalse(transport.disconnected)
        clock.advance(1)
        self.assertTrue(transport.disconnected)  # aborted


#: How many messages `Burst` writes at once: several steps of held input.
BURST = 10 * INPUT_STEP_FRAMES


class Burst(Protocol):
    """
    Write `BURST` small messages at once, then nothing.
    """

    def connectionMade(self) -> None:
        """
        Write them.
        """
        transport = IChannelTransport(self.transport)
        for _ in range(BURST):
            transport.writeMessage(b"m" * 10)


@implementer(IMessageReceiver)
class CloseOnFirst(Protocol):
    """
    Close the session (C{how}: C{"session"} or C{"transport"}) at the
    message after the first step of input (see `INPUT_STEP_FRAMES`).
    """

    def __init__(self, session: MemuxProtocol, how: str) -> None:
        self.session = session
        self.how = how
        self.received = 0
        self.closed = False
        self.heldAtClose = False

    def messageReceived(self, message: bytes) -> None:
        """
        Close, once.
        """
        self.received += 1
        if self.closed or self.received <= INPUT_STEP_FRAMES:
            return
        self.closed = True
        self.heldAtClose = self.session._readingPaused
        if self.how == "session":
            self.session.loseConnection()
        else:
            transport: Any = self.session.transport
            transport.loseConnection()


class RealCloseTests(TestCase):
    """
    Over loopback TCP and TLS, a client session with many channels blocked
    on credit closes, whichever way it is closed.
    """

    timeout = 60

    def setUp(self) -> None:
        """
        Use the real reactor.
        """
        from twisted.internet import reactor

        self.reactor: Any = reactor

    async def serve(self, tls: bool) -> IStreamClientEndpoint:
        """
        A server with the built-in services on a loopback port (TLS if
        C{tls}) until cleanup; return an endpoint reaching it.
        """
        sessions = MultiplexingFactory(builtinServices(self.reactor))
        self.serverSessions = sessions
        return await self.serveWith(sessions, tls)

    async def serveWith(
        self, sessions: MultiplexingFactory, tls: bool
    ) -> IStreamClientEndpoint:
        """
        Serve C{sessions} on a loopback port (TLS if C{tls}) until cleanup;
        return an endpoint reaching it.
        """
        factory: Any = sessions
        certs: Certificates | None = None
        if tls:
            certs = Certificates(self.mktemp())
            factory = tlsServerFactory(factory, serverTLSOptions(certs.serverPEM))
        port = await TCP4ServerEndpoint(self.reactor, 0, interface="127.0.0.1").listen(
            factory
        )
        self.addCleanup(port.stopListening)
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        endpoint: IStreamClientEndpoint = TCP4ClientEndpoint(
            self.reactor, "127.0.0.1", address.port
        )
        if certs is not None:
            endpoint = wrapClientTLS(clientTLSOptions(HOSTNAME, certs.caPEM), endpoint)
        return endpoint

    async def uploading(self, tls: bool) -> MemuxProtocol:
        """
        A client session whose channels to echo each have more queued than
        their credit allows; aborted at cleanup if still connected.
        """
        session = await connectSession(await self.serve(tls), reactor=self.reactor)

        def abort() -> None:
            if session.connected:
                session.abortConnection()

        self.addCleanup(abort)
        for _ in range(CHANNELS):
            proto: Any = await session.openChannel(
                b"echo", Factory.forProtocol(Protocol)
            )
            IChannelTransport(proto.transport).write(b"u" * UPLOAD)
        # Let data flow until the session is paused by its connection.
        for _ in range(200):
            if session._core.outputPaused:
                break
            await self.turn(0.01)
        return session

    def turn(self, seconds: float) -> Deferred[None]:
        """
        Fire after C{seconds} of the real reactor.
        """
        d: Deferred[None] = Deferred()
        self.reactor.callLater(seconds, d.callback, None)
        return d

    async def closes(self, session: MemuxProtocol, how: str) -> None:
        """
        Close C{session} C{how} and wait (at most 20 s) for it to close.
        """
        if how == "session":
            session.loseConnection()
        else:
            transport: Any = session.transport
            transport.loseConnection()
        await session.whenClosed().addTimeout(20, self.reactor)
        self.assertFalse(session.connected)
        # The server's side of the session sees the close and ends too.
        for server in self.serverSessions.connectedSessions():
            await server.whenClosed().addTimeout(20, self.reactor)

    async def test_tcpConnectionClosed(self) -> None:
        """
        C{session.transport.loseConnection()} over TCP closes.
        """
        await self.closes(await self.uploading(tls=False), "transport")

    async def test_tcpSessionClosed(self) -> None:
        """
        C{session.loseConnection()} over TCP closes.
        """
        await self.closes(await self.uploading(tls=False), "session")

    async def test_tlsConnectionClosed(self) -> None:
        """
        C{session.transport.loseConnection()} over TLS closes.
        """
        await self.closes(await self.uploading(tls=True), "transport")

    async def test_tlsSessionClosed(self) -> None:
        """
        C{session.loseConnection()} over TLS closes.
        """
        await self.closes(await self.uploading(tls=True), "session")

    async def idle(self, tls: bool) -> MemuxProtocol:
        """
        A client session with nothing to do (its first round trip done).
        """
        session = await connectSession(await self.serve(tls), reactor=self.reactor)

        def abort() -> None:
            if session.connected:
                session.abortConnection()

        self.addCleanup(abort)
        await session.ping()
        await self.turn(0.1)  # (what the round trip asked for is done)
        return session

    async def test_tcpIdleConnectionClosed(self) -> None:
        """
        C{session.transport.loseConnection()} over TCP closes an idle
        session.
        """
        await self.closes(await self.idle(tls=False), "transport")

    async def test_tlsIdleConnectionClosed(self) -> None:
        """
        C{session.transport.loseConnection()} over TLS closes an idle
        session too: no flush is under way to notice the close, and
        Twisted's TLS layer waits for its producer (the session) to let go
        before it closes.
        """
        await self.closes(await self.idle(tls=True), "transport")

    async def test_startedTLSIdleConnectionClosed(self) -> None:
        """
        On a TCP connection that started TLS on itself (`ssl.Port`'s),
        C{session.transport.loseConnection()} closes an idle session: the
        transport passes the close on to its TLS layer, which waits for
        the session to let go as a wrapping TLS layer does.
        """
        certs = Certificates(self.mktemp())
        sessions = MultiplexingFactory(builtinServices(self.reactor))
        port = listenStartingTLS(self, self.reactor, sessions, certs)
        endpoint = wrapClientTLS(
            clientTLSOptions(HOSTNAME, certs.caPEM),
            TCP4ClientEndpoint(self.reactor, "127.0.0.1", port),
        )
        client = await connectSession(endpoint, reactor=self.reactor)

        def abort() -> None:
            if client.connected:
                client.abortConnection()

        self.addCleanup(abort)
        await client.ping()
        await self.turn(0.1)
        [server] = sessions.connectedSessions()
        transport: Any = server.transport
        self.assertTrue(transport.TLS)
        transport.loseConnection()
        await server.whenClosed().addTimeout(20, self.reactor)
        await client.whenClosed().addTimeout(20, self.reactor)

    async def closedDuringHeldInput(self, tls: bool, how: str) -> None:
        """
        A server channel writes many small messages at once, so that the
        client's session holds the read's input and pauses reading; the
        client closes (C{how}) from a message of a later step of that
        input.  Check that both ends close.
        """
        sessions = MultiplexingFactory(
            {b"burst": Factory.forProtocol(Burst)}, reactor=self.reactor
        )
        endpoint = await self.serveWith(sessions, tls)
        session = await connectSession(endpoint, reactor=self.reactor)

        def abort() -> None:
            if session.connected:
                session.abortConnection()

        self.addCleanup(abort)
        closer = CloseOnFirst(session, how)
        await session.openChannel(b"burst", Factory.forProtocol(lambda: closer))
        await session.whenClosed().addTimeout(20, self.reactor)
        self.assertTrue(closer.heldAtClose)  # (what this test is about)
        for server in sessions.connectedSessions():
            await server.whenClosed().addTimeout(20, self.reactor)

    async def test_tlsClosedDuringHeldInput(self) -> None:
        """
        Over TLS, a session closed while its input is held (its reading
        paused) still closes: the TLS layer's close waits for the peer's
        close_notify, so reading must go on.
        """
        await self.closedDuringHeldInput(tls=True, how="session")

    async def test_tlsTransportClosedDuringHeldInput(self) -> None:
        """
        The same, closed with C{session.transport.loseConnection()}.
        """
        await self.closedDuringHeldInput(tls=True, how="transport")

    async def test_tcpClosedDuringHeldInput(self) -> None:
        """
        Over TCP, a session closed while its input is held closes.
        """
        await self.closedDuringHeldInput(tls=False, how="session")
