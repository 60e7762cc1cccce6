"""
Tests for channels without multiplexing ("MEMUX--"): L{SessionPool} and
L{MemuxClientEndpoint} with C{multiplex=False}, and the C{multiplex=}
argument of C{memux:} descriptions.

The channel behaviour a user relies on (echo, messages, half-close,
refusal, reset, a lost session, a failed connect, closing the pool) runs
in both modes from one mixin, over real loopback TCP: the application must
not see a difference.  What differs is checked too: without multiplexing
every channel has a session and connection of its own, closed once the
channel has ended.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from twisted.internet import defer
from twisted.internet.endpoints import (
    clientFromString,
    connectProtocol,
    serverFromString,
)
from twisted.internet.endpoints import quoteStringArgument as q
from twisted.internet.error import (
    ConnectionDone,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import IHalfCloseableProtocol, ITransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from memux.endpoints import (
    EndpointDescriptionError,
    MemuxClientEndpoint,
    SessionPool,
    defaultPool,
    memuxDescription,
)
from memux.error import ChannelRefused, ChannelReset, SessionLost
from memux.interfaces import IChannelTransport
from memux.protocol import ChannelTransport, MemuxProtocol
from memux.services import Echo
from memux.test._fakes import Collector, MessageCollector
from memux.test._helpers import (
    Certificates,
    RecordingMultiplexingFactory,
    ServerTestCase,
    freePort,
    runExample,
)
from memux.tls import ALPN


@implementer(IHalfCloseableProtocol)
class Farewell(Protocol):
    """
    A server channel that echoes, and once its peer has half-closed,
    answers C{b"bye"} and closes its own direction.
    """

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        assert self.transport is not None
        self.transport.write(b"bye")
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class Resetter(Protocol):
    """
    A server channel that resets itself as soon as it is open.
    """

    def connectionMade(self) -> None:
        cast(Any, self.transport).abortConnection()


class SessionKiller(Protocol):
    """
    A server channel that aborts its whole session's connection.
    """

    def connectionMade(self) -> None:
        cast(ChannelTransport, self.transport).session.abortConnection("killed")


@implementer(IHalfCloseableProtocol)
class HalfCloseCollector(Collector):
    """
    A L{Collector} that is half-closeable and records the peer's FIN.
    """

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def readConnectionLost(self) -> None:
        self.events.append("FIN")

    def writeConnectionLost(self) -> None:
        self.events.append("write closed")

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        self.events.append("lost")
        super().connectionLost(reason)


def sessionOf(proto: Protocol) -> MemuxProtocol:
    """
    The session of the channel C{proto} is connected to.
    """
    return cast(ChannelTransport, proto.transport).session


def services() -> dict[bytes, Factory]:
    """
    The test server's services.
    """
    return {
        b"echo": Factory.forProtocol(Echo),
        b"farewell": Factory.forProtocol(Farewell),
        b"reset": Factory.forProtocol(Resetter),
        b"kill": Factory.forProtocol(SessionKiller),
    }


if TYPE_CHECKING:
    _Base = ServerTestCase
else:
    _Base = object


class ChannelBehaviourMixin(_Base):
    """
    Channel behaviour through a L{SessionPool}, the same with and without
    multiplexing (C{multiplex}, set by the concrete classes).
    """

    multiplex: bool

    async def start(self) -> None:
        """
        Listen on loopback with the test services; make the pool (closed
        at cleanup, before the server's sessions are waited for).
        """
        self.server = RecordingMultiplexingFactory(services(), reactor=self.reactor)
        self.port = await self.listenTCP(self.server)
        self.pool = SessionPool(self.reactor, multiplex=self.multiplex)
        self.addCleanup(self.pool.closeAll)

    async def serverSessionsGone(self) -> None:
        """
        Wait until every session the server made has closed and the server
        factory has let go of it (just after its C{whenClosed} fires).
        """
        await self.closeServerSessions()
        await deferLater(self.reactor, 0, lambda: None)

    def endpoint(self, service: bytes, port: int | None = None) -> MemuxClientEndpoint:
        """
        An endpoint of the pool for C{service} on the test server.
        """
        return MemuxClientEndpoint(
            self.pool, self.tcpEndpoint(port or self.port), service
        )

    async def test_echo(self) -> None:
        """
        Bytes written on a channel come back from the echo service.
        """
        await self.start()
        proto = await connectProtocol(self.endpoint(b"echo"), Collector())
        cast(ITransport, proto.transport).write(b"hello, world")
        self.assertEqual(await proto.receivedAtLeast(12), b"hello, world")

    async def test_messages(self) -> None:
        """
        Message boundaries survive the round trip.
        """
        await self.start()
        proto = await connectProtocol(self.endpoint(b"echo"), MessageCollector())
        transport = IChannelTransport(proto.transport)
        for message in (b"one", b"", b"three" * 1000):
            transport.writeMessage(message)
        await proto.receivedAtLeast(3 + 5000)
        self.assertEqual(proto.messages, [b"one", b"", b"three" * 1000])

    async def test_halfClose(self) -> None:
        """
        After the client closes its direction, the server still sends on
        its own; the channel then ends cleanly (C{ConnectionDone}), FIN
        first.
        """
        await self.start()
        proto = await connectProtocol(self.endpoint(b"farewell"), HalfCloseCollector())
        transport = cast(Any, proto.transport)
        transport.write(b"hi ")
        transport.loseWriteConnection()
        reason = await proto.lost
        self.assertIsInstance(reason, ConnectionDone)
        self.assertEqual(proto.received, b"hi bye")
        self.assertEqual(proto.events, ["write closed", "FIN", "lost"])

    async def test_refused(self) -> None:
        """
        A channel for a service the server does not have ends with
        L{ChannelRefused}; the connect itself succeeds (no round trip).
        """
        await self.start()
        proto = await connectProtocol(self.endpoint(b"nothing"), Collector())
        reason = await proto.lost
        self.assertIsInstance(reason, ChannelRefused)
        assert isinstance(reason, ChannelRefused)
        self.assertTrue(reason.remote)

    async def test_reset(self) -> None:
        """
        A channel the server resets ends with L{ChannelReset} (not a
        refusal, not a clean end).
        """
        await self.start()
        proto = await connectProtocol(self.endpoint(b"reset"), Collector())
        reason = await proto.lost
        self.assertIsInstance(reason, ChannelReset)
        self.assertNotIsInstance(reason, ChannelRefused)

    async def test_sessionLost(self) -> None:
        """
        A channel whose session's connection is cut ends with
        L{SessionLost}.
        """
        await self.start()
        proto = await connectProtocol(self.endpoint(b"kill"), Collector())
        self.assertIsInstance(await proto.lost, SessionLost)

    async def test_connectFails(self) -> None:
        """
        When nothing listens, the connect fails with the connection's
        error.
        """
        await self.start()
        d = connectProtocol(self.endpoint(b"echo", freePort()), Collector())
        await self.assertFailure(d, ConnectionRefusedError)
        self.assertEqual(self.pool.sessions(), [])
        self.assertEqual(self.pool.singleSessions(), [])

    async def test_cancel(self) -> None:
        """
        Cancelling a connect before the connection is made stops the
        attempt: the connect fails with L{defer.CancelledError} and no
        session is left.
        """
        await self.start()
        d = connectProtocol(self.endpoint(b"echo"), Collector())
        d.cancel()
        await self.assertFailure(d, defer.CancelledError)
        self.assertEqual(self.pool.sessions(), [])
        self.assertEqual(self.pool.singleSessions(), [])
        self.assertEqual(self.pool._attempts, set())

    async def test_closeAll(self) -> None:
        """
        L{SessionPool.closeAll} ends the open channels with L{SessionLost},
        and every connection closes.
        """
        await self.start()
        protos = [
            await connectProtocol(self.endpoint(b"echo"), Collector()) for _ in range(2)
        ]
        await self.pool.closeAll()
        for proto in protos:
            self.assertIsInstance(await proto.lost, SessionLost)
        await self.serverSessionsGone()
        self.assertEqual(self.server.connectedSessions(), [])

    async def test_connections(self) -> None:
        """
        Three channels open at once ride one connection multiplexed, three
        connections without.
        """
        await self.start()
        endpoint = self.endpoint(b"echo")
        protos = await defer.gatherResults(
            [connectProtocol(endpoint, Collector()) for _ in range(3)]
        )
        for i, proto in enumerate(protos):
            cast(ITransport, proto.transport).write(b"%d" % i)
            self.assertEqual(await proto.receivedAtLeast(1), b"%d" % i)
        sessions = {sessionOf(p) for p in protos}
        expected = 1 if self.multiplex else 3
        self.assertEqual(len(sessions), expected)
        self.assertEqual(len(self.server.connectedSessions()), expected)
        self.assertEqual(self.server.totals().sessionsStarted, expected)
        if self.multiplex:
            self.assertEqual(self.pool.sessions(), list(sessions))
            self.assertEqual(self.pool.singleSessions(), [])
        else:
            self.assertEqual(self.pool.sessions(), [])
            self.assertEqual(set(self.pool.singleSessions()), sessions)
        self.assertEqual(len(self.pool.snapshot()), expected)

    async def test_afterTheChannel(self) -> None:
        """
        Once its channel has ended, a session of one channel closes its
        connection (on both sides: no connection is left open); a shared
        session stays open for the next channel.
        """
        await self.start()
        proto = await connectProtocol(self.endpoint(b"farewell"), Collector())
        session = sessionOf(proto)
        cast(ITransport, proto.transport).loseConnection()
        self.assertIsInstance(await proto.lost, ConnectionDone)
        if self.multiplex:
            # A turn for a close that should not happen to happen.
            await deferLater(self.reactor, 0.05, lambda: None)
            self.assertTrue(session.connected)
            self.assertEqual(len(self.server.connectedSessions()), 1)
            self.assertEqual(self.pool.sessions(), [session])
        else:
            await session.whenClosed()
            assert session.lostReason is not None
            self.assertIsInstance(session.lostReason.value, ConnectionDone)
            await self.serverSessionsGone()
            self.assertEqual(self.server.connectedSessions(), [])
            self.assertEqual(self.server.totals().sessionsEnded, {"closed": 1})
            self.assertEqual(self.pool.singleSessions(), [])

    async def test_afterRefusal(self) -> None:
        """
        After a refused channel, a session of one channel closes too.
        """
        await self.start()
        proto = await connectProtocol(self.endpoint(b"nothing"), Collector())
        session = sessionOf(proto)
        self.assertIsInstance(await proto.lost, ChannelRefused)
        if not self.multiplex:
            await session.whenClosed()
            await self.serverSessionsGone()
            self.assertEqual(self.server.connectedSessions(), [])
        else:
            self.assertTrue(session.isUsable())


class MultiplexedTests(ChannelBehaviourMixin, ServerTestCase):
    """
    The channel behaviour over one shared session (the default).
    """

    multiplex = True


class NotMultiplexedTests(ChannelBehaviourMixin, ServerTestCase):
    """
    The same behaviour with a session and connection per channel.
    """

    multiplex = False

    async def test_endpointOption(self) -> None:
        """
        C{multiplex=False} on one endpoint gives its channels sessions of
        their own even from a multiplexing pool, whose shared session other
        endpoints keep using.
        """
        await self.start()
        pool = SessionPool(self.reactor)
        self.addCleanup(pool.closeAll)
        inner = self.tcpEndpoint(self.port)
        alone = MemuxClientEndpoint(pool, inner, b"echo", multiplex=False)
        shared = MemuxClientEndpoint(pool, inner, b"echo")
        a = await connectProtocol(alone, Collector())
        b = await connectProtocol(alone, Collector())
        c = await connectProtocol(shared, Collector())
        d = await connectProtocol(shared, Collector())
        sa, sb, sc, sd = (sessionOf(p) for p in (a, b, c, d))
        self.assertIs(sc, sd)
        self.assertEqual(len({sa, sb, sc}), 3)
        self.assertEqual(pool.sessions(), [sc])
        self.assertEqual(set(pool.singleSessions()), {sa, sb})

    async def test_peerChannelsRefused(self) -> None:
        """
        A session of one channel accepts no channel from the peer (it sent
        GOAWAY with its opening): the peer's open fails.
        """
        await self.start()
        proto = await connectProtocol(self.endpoint(b"echo"), Collector())
        cast(ITransport, proto.transport).write(b"x")
        await proto.receivedAtLeast(1)
        [serverSession] = self.server.connectedSessions()
        self.assertFalse(serverSession.isUsable())
        back = serverSession.openChannel(b"echo", Factory.forProtocol(Collector))
        self.failureResultOf(back, ChannelRefused)

    async def test_tls(self) -> None:
        """
        Over a C{tls:} inner endpoint, each channel has a TLS connection of
        its own, negotiating ALPN C{memux/1}, and that connection closes
        (on both sides) once the channel has ended.
        """
        certificates = Certificates(self.mktemp())
        key = certificates.serverFile
        self.server = RecordingMultiplexingFactory(services(), reactor=self.reactor)
        port = await serverFromString(
            self.reactor,
            f"ssl:0:interface=127.0.0.1:privateKey={q(key)}:certKey={q(key)}",
        ).listen(self.server)
        self.addCleanup(port.stopListening)
        self.pool = SessionPool(self.reactor, multiplex=False)
        self.addCleanup(self.pool.closeAll)
        inner = (
            f"tls:127.0.0.1:{port.getHost().port}:trustRoots={q(certificates.caFile)}"
        )
        endpoint = MemuxClientEndpoint(self.pool, inner, b"farewell")
        protos = [await connectProtocol(endpoint, Collector()) for _ in range(2)]
        sessions = [sessionOf(p) for p in protos]
        for proto in protos:
            cast(ITransport, proto.transport).write(b"tls")
            await proto.receivedAtLeast(3)
        self.assertNotEqual(sessions[0], sessions[1])
        for session in sessions:
            transport: Any = session.transport
            self.assertEqual(transport.negotiatedProtocol, ALPN)
        for proto in protos:
            cast(ITransport, proto.transport).loseConnection()
            self.assertIsInstance(await proto.lost, ConnectionDone)
        for session in sessions:
            await session.whenClosed()
        await self.serverSessionsGone()
        self.assertEqual(self.server.connectedSessions(), [])
        self.assertEqual(self.server.totals().sessionsStarted, 2)

    async def test_description(self) -> None:
        """
        A C{memux:} description with C{multiplex=no} connects each channel
        over a connection of its own, from the reactor's default pool.
        """
        await self.start()
        self.addCleanup(defaultPool(self.reactor).closeAll)
        description = memuxDescription(
            f"tcp:127.0.0.1:{self.port}", "echo", multiplex=False
        )
        endpoint = clientFromString(self.reactor, description)
        protos = [await connectProtocol(endpoint, Collector()) for _ in range(2)]
        for proto in protos:
            cast(ITransport, proto.transport).write(b"ok")
            await proto.receivedAtLeast(2)
        self.assertEqual(self.server.totals().sessionsStarted, 2)
        self.assertEqual(defaultPool(self.reactor).sessions(), [])


class DescriptionTests(SynchronousTestCase):
    """
    The C{multiplex=} argument of C{memux:} client descriptions.
    """

    def parse(self, description: str) -> MemuxClientEndpoint:
        """
        Parse C{description} with the global reactor.
        """
        from twisted.internet import reactor

        return cast(MemuxClientEndpoint, clientFromString(reactor, description))

    def test_default(self) -> None:
        """
        Without C{multiplex=}, channels share the pooled session.
        """
        self.assertTrue(
            self.parse(r"memux:tcp\:127.0.0.1\:7400:service=echo").multiplex
        )

    def test_words(self) -> None:
        """
        C{no} and C{false} turn multiplexing off, C{yes} and C{true} leave
        it on, whatever their case.
        """
        base = r"memux:tcp\:127.0.0.1\:7400:service=echo:multiplex="
        for word, expected in [
            ("no", False),
            ("false", False),
            ("NO", False),
            ("yes", True),
            ("true", True),
            ("Yes", True),
        ]:
            self.assertIs(self.parse(base + word).multiplex, expected, word)

    def test_badValue(self) -> None:
        """
        Any other value is refused with L{EndpointDescriptionError} naming
        the argument, the words it takes and what was given.
        """
        for word in ("maybe", "", "0"):
            e = self.assertRaises(
                EndpointDescriptionError,
                self.parse,
                r"memux:tcp\:127.0.0.1\:7400:service=echo:multiplex=" + word,
            )
            self.assertIn("multiplex must be yes or no", str(e))
            self.assertIn(repr(word), str(e))

    def test_roundTrip(self) -> None:
        """
        L{memuxDescription} writes C{multiplex=no} only when asked, and
        what it writes parses back to the same setting.
        """
        off = memuxDescription("tcp:127.0.0.1:7400", "echo", multiplex=False)
        on = memuxDescription("tcp:127.0.0.1:7400", "echo")
        self.assertTrue(off.endswith(":multiplex=no"))
        self.assertNotIn("multiplex", on)
        self.assertFalse(self.parse(off).multiplex)
        self.assertTrue(self.parse(on).multiplex)

    def test_notABool(self) -> None:
        """
        L{MemuxClientEndpoint} and L{SessionPool} take C{multiplex} as a
        bool only (a string such as C{"no"} would otherwise count as true).
        """
        self.assertRaises(TypeError, SessionPool, multiplex="no")
        pool = SessionPool()
        self.assertRaises(
            TypeError,
            MemuxClientEndpoint,
            pool,
            "tcp:127.0.0.1:7400",
            b"echo",
            multiplex="no",
        )


class ExampleTests(SynchronousTestCase):
    """
    The runnable example of the documentation.
    """

    def test_example(self) -> None:
        """
        examples/nomux.py gets the same answers both ways, over one
        connection multiplexed and three without, and leaves none of the
        three open.
        """
        out = runExample("nomux.py")
        lines = out.splitlines()
        self.assertTrue(lines[0].endswith(":service=echo"), out)
        self.assertTrue(lines[3].endswith(":service=echo:multiplex=no"), out)
        answers = "  answers: channel 0, channel 1, channel 2"
        self.assertEqual([lines[1], lines[4]], [answers, answers], out)
        self.assertEqual(lines[2], "  connections: 1, still open: 1", out)
        self.assertEqual(lines[5], "  connections: 3, still open: 0", out)
