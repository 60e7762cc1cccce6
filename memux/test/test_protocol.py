"""
Tests for memux.protocol: sessions, channel transports, the message API,
errors and backpressure, over in-memory connections (twisted.test.iosim).
"""

from __future__ import annotations

import gc
import socket
import weakref
from collections.abc import Callable
from typing import Any, cast
from unittest import SkipTest

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    ILoggingContext,
    IProtocol,
    IPushProducer,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.test.iosim import FakeTransport, connect
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import classImplements, directlyProvides, implementer
from zope.interface.verify import verifyObject

from memux import (
    ChannelAddress,
    ChannelEndpoint,
    ChannelRefused,
    ChannelRequest,
    ChannelReset,
    ErrorCode,
    IChunkReceiver,
    IMessageReceiver,
    MemuxProtocol,
    SessionLost,
)
from memux import protocol as protocolModule
from memux._channel import ChannelCore
from memux._engine import SessionSettings
from memux._session import (
    BULK_AFTER_FLUSHES,
    BULK_FLUSH_BYTES,
    FLUSH_BYTES,
    FLUSH_ROUNDS,
    LATENCY_FLUSH_BYTES,
    WRITE_HIGH_WATER,
)
from memux._tuning import (
    BULK_AFTER_READS,
    BULK_NOTSENT_LOWAT,
    BULK_READ_SIZE,
    LATENCY_NOTSENT_LOWAT,
    NOTSENT_LOWAT,
    TWISTED_BULK_LEAVE_READS,
    TWISTED_SHORT_READ_COST,
)
from memux._wire import (
    DataFrame,
    GoAwayFrame,
    OpenFrame,
    PriorityFrame,
    ResetFrame,
)
from memux.codes import ChannelState
from memux.error import MessageTooLarge
from memux.interfaces import IChannelTransport, IDropReceiver
from memux.protocol import ChannelTransport, MultiplexingFactory
from memux.settings import DEFAULT_URGENCY
from memux.test._fakes import (
    MessageRecorder,
    PausingTransport,
    PeerOnTransport,
    Recorder,
    RecordingProducer,
    TCPLikeTransport,
    factoryOf,
    reactorTurn,
)
from memux.testing import connectedSessions


@implementer(IChunkReceiver)
class ChunkRecorder(Recorder):
    """
    Records chunks and their end-of-message flags.
    """

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[tuple[bytes, bool]] = []

    def chunkReceived(self, data: bytes, endOfMessage: bool) -> None:
        self.chunks.append((data, endOfMessage))


@implementer(IHalfCloseableProtocol)
class HalfCloseRecorder(Recorder):
    """
    Records half-close notifications.
    """

    def readConnectionLost(self) -> None:
        self.events.append("readLost")

    def writeConnectionLost(self) -> None:
        self.events.append("writeLost")


@implementer(IDropReceiver, IMessageReceiver)
class DropRecorder(MessageRecorder):
    """
    Records drop notices among messages.
    """

    def messagesDropped(self, count: int) -> None:
        self.events.append(f"dropped {count}")


class ChunkEcho(Protocol):
    """
    Echo bytes straight back.
    """

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


def channelOf(proto: Protocol) -> ChannelTransport:
    """
    The channel transport ``proto`` is connected to.
    """
    assert isinstance(proto.transport, ChannelTransport)
    return proto.transport


class SessionTestCase(SynchronousTestCase):
    """
    Shared set-up: a client and server session connected in memory, the
    server offering ``echo`` (bytes) and ``record`` services.
    """

    serverSettings: SessionSettings | None = None
    clientSettings: SessionSettings | None = None

    def setUp(self) -> None:
        self.clock = Clock()
        self.serverProtocols: list[Any] = []
        self.serverClass: type = Recorder
        self.services: dict[bytes, Any] = {
            b"echo": Factory.forProtocol(ChunkEcho),
            b"record": factoryOf(self.serverProtocols, Recorder),
            b"messages": factoryOf(self.serverProtocols, MessageRecorder),
            b"chunks": factoryOf(self.serverProtocols, ChunkRecorder),
            b"half": factoryOf(self.serverProtocols, HalfCloseRecorder),
            b"drops": factoryOf(self.serverProtocols, DropRecorder),
        }
        self.client, self.server, self.pump = connectedSessions(
            self.services,
            serverSettings=self.serverSettings,
            clientSettings=self.clientSettings,
            clock=self.clock,
        )

    def open(self, service: bytes, cls: type = Recorder, **kw: Any) -> Any:
        """
        Open a channel from the client and return its protocol.
        """
        made: list[Any] = []
        return self.successResultOf(
            self.client.openChannel(service, factoryOf(made, cls), **kw)
        )

    def opened(self, d: Deferred[IProtocol]) -> Recorder:
        """
        The Recorder an already-fired openChannel or connect Deferred gave.
        """
        proto = self.successResultOf(d)
        assert isinstance(proto, Recorder)
        return proto


class TransportInitTests(SynchronousTestCase):
    """
    `ChannelTransport.__init__` copies `ChannelCore.__init__` inline (a
    call less per channel); this holds the copy equal to the original.
    """

    def test_sameAsCore(self) -> None:
        """
        For every delivery mode, lossy or not, with or without a protocol,
        a channel transport starts with exactly the state the core's own
        initializer gives.
        """
        from zope.interface import implementer, providedBy

        from memux.interfaces import IChunkReceiver, IMessageReceiver
        from memux.transport import ChannelTransport, _deliveryMode

        @implementer(IMessageReceiver)
        class Messages(Protocol):
            def messageReceived(self, message: bytes) -> None:
                pass

        @implementer(IChunkReceiver)
        class Chunks(Protocol):
            def chunkReceived(self, data: bytes, endOfMessage: bool) -> None:
                pass

        # Every field: the instance's dict, and (compiled, where the core's
        # fields are slots, not in the dict) the core class's fields.
        fields = {
            name
            for name, value in vars(ChannelCore).items()
            if not name.startswith("__") and not callable(value)
        }

        def state(transport: ChannelTransport) -> dict[str, Any]:
            names = fields | set(vars(transport))
            return {name: getattr(transport, name, None) for name in names}

        session = MemuxProtocol({})
        for lossy in (False, True):
            for protocol in (None, Protocol(), Messages(), Chunks()):
                made = ChannelTransport(session, 5, b"svc", lossy, protocol)
                mode = 0
                if protocol is not None:
                    mode = _deliveryMode(providedBy(protocol))
                reference = ChannelTransport.__new__(ChannelTransport)
                ChannelCore.__init__(
                    reference, session._core, 5, b"svc", lossy, protocol, mode
                )
                self.assertEqual(state(made), state(reference), (lossy, protocol))
                self.assertIs(made.session, session)
            self.assertEqual(made._mode, 2)  # (the chunk receiver's)


class OpenTests(SessionTestCase):
    """
    Opening channels and serving them.
    """

    def test_openFiresAtOnce(self) -> None:
        """
        openChannel's Deferred fires before any byte has crossed the
        connection: opening costs no round trip.
        """
        d = self.client.openChannel(b"echo", Factory.forProtocol(Recorder))
        proto = self.opened(d)
        self.assertTrue(proto.made)
        self.assertEqual(self.server.counters()["channelsAccepted"], 0)

    def test_echo(self) -> None:
        """
        Bytes written on a channel reach the service's protocol and its
        reply comes back on the same channel.
        """
        proto = self.open(b"echo")
        proto.transport.write(b"hello, ")
        proto.transport.writeSequence([b"wor", b"ld"])
        self.pump.flush()
        self.assertEqual(proto.received, b"hello, world")

    def test_serverOpensToClient(self) -> None:
        """
        The server side may open channels to the client too; they get even
        ids and reach the client's services.
        """
        got: list[Recorder] = []
        client, server, pump = connectedSessions(
            {}, {b"record": factoryOf(got, Recorder)}, clock=self.clock
        )
        proto = self.opened(
            server.openChannel(b"record", Factory.forProtocol(Recorder))
        )
        channelOf(proto).write(b"from the server")
        pump.flush()
        self.assertEqual(len(got), 1)
        self.assertEqual(got[0].received, b"from the server")
        self.assertEqual(channelOf(proto).channel % 2, 0)

    def test_manyChannelsInterleave(self) -> None:
        """
        Several channels carry independent streams at once, each delivered
        whole and in order.
        """
        protos = [self.open(b"echo") for _ in range(20)]
        for i, p in enumerate(protos):
            p.transport.write(b"%d:" % i + b"x" * (1000 * i))
        self.pump.flush()
        for i, p in enumerate(protos):
            self.assertEqual(p.received, b"%d:" % i + b"x" * (1000 * i))

    def test_unknownServiceRefused(self) -> None:
        """
        A channel for a service the peer does not offer ends with
        ChannelRefused carrying the peer's reason; the session lives on.
        """
        proto = self.open(b"no-such-service")
        self.pump.flush()
        self.assertIsNotNone(proto.lost)
        assert proto.lost is not None
        proto.lost.trap(ChannelRefused)
        self.assertIn("no-such-service", str(proto.lost.value))
        self.assertEqual(proto.lost.value.code, ErrorCode.REFUSED)
        other = self.open(b"echo")
        other.transport.write(b"still up")
        self.pump.flush()
        self.assertEqual(other.received, b"still up")

    def test_state(self) -> None:
        """
        A channel transport tells its state, named as in the spec: OPEN,
        then HALF_CLOSED_LOCAL once its FIN is out, CLOSED once both are.
        """
        proto = self.open(b"half", HalfCloseRecorder)
        self.pump.flush()
        self.assertEqual(proto.transport.state, ChannelState.OPEN)
        server = self.serverProtocols[0]
        self.assertEqual(server.transport.state, ChannelState.OPEN)
        proto.transport.loseWriteConnection()
        self.pump.flush()
        self.assertEqual(proto.transport.state, ChannelState.HALF_CLOSED_LOCAL)
        self.assertEqual(server.transport.state, ChannelState.HALF_CLOSED_REMOTE)
        server.transport.loseConnection()
        self.pump.flush()
        self.assertEqual(proto.transport.state, ChannelState.CLOSED)
        self.assertEqual(server.transport.state, ChannelState.CLOSED)

    def test_refusalReasonReadable(self) -> None:
        """
        The reason a refused channel carries names the service as text, never
        as a Python bytes repr: quoted, undecodable bytes escaped, and the
        empty name as the default service.
        """
        reasons = []
        for service in (b"admin", b"adm\xffin", b""):
            proto = self.open(service)
            self.pump.flush()
            assert proto.lost is not None
            proto.lost.trap(ChannelRefused)
            reasons.append(proto.lost.value.reason)
        self.assertEqual(
            reasons,
            ["no service 'admin'", "no service 'adm\\xffin'", "no default service"],
        )

    def test_servicesCallable(self) -> None:
        """
        A callable services argument gets a ChannelRequest with the service,
        metadata and destination, and refuses by returning None.
        """
        requests: list[ChannelRequest] = []

        def choose(request: ChannelRequest) -> Any:
            requests.append(request)
            if request.metadata == b"let me in":
                return Factory.forProtocol(ChunkEcho)
            return None

        client, server, pump = connectedSessions(choose, clock=self.clock)
        ok = self.opened(
            client.openChannel(
                b"svc", Factory.forProtocol(Recorder), metadata=b"let me in"
            )
        )
        no = self.opened(
            client.openChannel(
                b"svc", Factory.forProtocol(Recorder), destination=("example.com", 80)
            )
        )
        channelOf(ok).write(b"ping")
        pump.flush()
        self.assertEqual(ok.received, b"ping")
        assert no.lost is not None
        no.lost.trap(ChannelRefused)
        self.assertEqual([r.service for r in requests], [b"svc", b"svc"])
        self.assertEqual(requests[1].destination, ("example.com", 80))
        self.assertIs(requests[0].session, server)

    def test_factoryDeclines(self) -> None:
        """
        A service factory whose buildProtocol returns None refuses the
        channel with a reason.
        """

        class Declining(Factory):
            def buildProtocol(self, addr: Any) -> None:
                return None

        self.services[b"declines"] = Declining()
        proto = self.open(b"declines")
        self.pump.flush()
        assert proto.lost is not None
        proto.lost.trap(ChannelRefused)
        self.assertIn("declined", str(proto.lost.value))

    def test_openChannelRejectsText(self) -> None:
        """
        A service name given as text instead of bytes fails with TypeError.
        """
        self.failureResultOf(
            self.client.openChannel("echo", Factory.forProtocol(Recorder)),  # type: ignore[arg-type]
            TypeError,
        )

    def test_channelEndpoint(self) -> None:
        """
        ChannelEndpoint is an IStreamClientEndpoint whose connect opens a
        channel for its service.
        """
        endpoint = ChannelEndpoint(self.client, b"echo")
        verifyObject(IStreamClientEndpoint, endpoint)
        proto = self.opened(endpoint.connect(Factory.forProtocol(Recorder)))
        channelOf(proto).write(b"via endpoint")
        self.pump.flush()
        self.assertEqual(proto.received, b"via endpoint")

    def test_waitsForChannelCredit(self) -> None:
        """
        Opening more channels than the peer's channel credit allows does not
        fail: the extra channels wait and go through as others close.
        """
        got: list[Recorder] = []
        client, server, pump = connectedSessions(
            {b"record": factoryOf(got, Recorder)},
            serverSettings=SessionSettings(maxChannels=100),
            clock=self.clock,
        )
        protos = [
            self.opened(client.openChannel(b"record", Factory.forProtocol(Recorder)))
            for _ in range(130)
        ]
        for i, p in enumerate(protos):
            channelOf(p).write(b"%d" % i)
        pump.flush()
        self.assertEqual(len(got), 100)
        for p in protos[:60]:
            channelOf(p).loseConnection()
        pump.flush()
        self.assertEqual(len(got), 130)
        self.assertEqual(got[-1].received, b"129")


class TransportTests(SessionTestCase):
    """
    The channel transport as a drop-in Twisted transport.
    """

    def test_interfaces(self) -> None:
        """
        The channel transport provides ITransport, IConsumer, IPushProducer,
        ILoggingContext and IChannelTransport.
        """
        proto = self.open(b"echo")
        for iface in (
            ITransport,
            IConsumer,
            IPushProducer,
            ILoggingContext,
            IChannelTransport,
        ):
            self.assertTrue(verifyObject(iface, proto.transport))

    def test_addresses(self) -> None:
        """
        getPeer and getHost give ChannelAddresses with the channel, the
        service, and the host and port of the underlying connection, so code
        written for TCP addresses keeps working.
        """
        clientAddr = IPv4Address("TCP", "127.0.0.1", 50123)
        serverAddr = IPv4Address("TCP", "127.0.0.1", 7400)
        client = MemuxProtocol(client=True, reactor=self.clock)
        server = MemuxProtocol(self.services, reactor=self.clock)
        pump = connect(
            server,
            FakeTransport(server, True, hostAddress=serverAddr, peerAddress=clientAddr),
            client,
            FakeTransport(
                client, False, hostAddress=clientAddr, peerAddress=serverAddr
            ),
            clock=self.clock,
        )
        proto = self.opened(
            client.openChannel(b"record", Factory.forProtocol(Recorder))
        )
        pump.flush()
        peer = channelOf(proto).getPeer()
        host = channelOf(proto).getHost()
        self.assertIsInstance(peer, ChannelAddress)
        self.assertEqual(
            (peer.channel, peer.service, peer.host, peer.port),
            (1, b"record", "127.0.0.1", 7400),
        )
        self.assertEqual((host.host, host.port), ("127.0.0.1", 50123))
        self.assertEqual(peer.session, serverAddr)
        serverSide = self.serverProtocols[0].transport
        self.assertEqual(serverSide.getHost().port, 7400)
        self.assertEqual(
            serverSide.getPeer(),
            ChannelAddress(1, b"record", clientAddr, "127.0.0.1", 50123),
        )

    def test_connectedFlags(self) -> None:
        """
        connected, disconnecting and disconnected follow the channel's life.
        """
        proto = self.open(b"record")
        t = proto.transport
        self.assertEqual(
            (t.connected, t.disconnecting, t.disconnected), (True, False, False)
        )
        t.loseConnection()
        self.assertTrue(t.disconnecting)
        self.pump.flush()
        self.assertEqual((t.connected, t.disconnected), (False, True))

    def test_logPrefix(self) -> None:
        """
        logPrefix names the protocol and the channel, also once the channel
        is closed.
        """
        proto = self.open(b"record")
        self.assertEqual(proto.transport.logPrefix(), "Recorder,memux:1")
        proto.transport.loseConnection()
        self.pump.flush()
        assert proto.lost is not None
        self.assertEqual(proto.transport.logPrefix(), "Recorder,memux:1")

    def test_closedTransportKeepsOnlyCoreFields(self) -> None:
        """
        A closed channel's transport holds nothing but `ChannelCore` fields
        (its protocol's name for `logPrefix` included), so that compiled,
        where those are the struct's slots, no channel gets an attribute
        dict of its own as it closes (one allocated and freed per channel
        under churn).
        """
        proto = self.open(b"record")
        transport = proto.transport
        transport.loseConnection()
        self.pump.flush()
        assert proto.lost is not None
        # The core's fields: its class's, and (pure Python, where they are
        # not slots) those its initializer sets.
        fields = {name for name in vars(ChannelCore) if not name.startswith("__")}
        reference = ChannelTransport.__new__(ChannelTransport)
        ChannelCore.__init__(reference, transport._core, 1, b"", True, proto, 1)
        fields |= set(vars(reference))
        self.assertEqual(set(vars(transport)) - fields, set())
        self.assertEqual(transport.logPrefix(), "Recorder,memux:1")

    def test_closedChannelFreedAtOnce(self) -> None:
        """
        Once a channel is closed and its protocol has heard, the protocol
        (and its transport) are freed as soon as nothing else refers to
        them, without waiting for a pass of the garbage collector: the
        transport lets go of the protocol, as Twisted's TCP transport does.
        """
        proto: Any = self.successResultOf(
            self.client.openChannel(b"record", Factory.forProtocol(Recorder))
        )
        self.pump.flush()
        server = self.serverProtocols.pop()
        refs = [weakref.ref(proto), weakref.ref(proto.transport)]
        refs += [weakref.ref(server), weakref.ref(server.transport)]
        wasEnabled = gc.isenabled()
        gc.disable()  # so only reference counting can free them
        try:
            proto.transport.loseConnection()
            self.pump.flush()
            assert proto.lost is not None and server.lost is not None
            self.assertIsNone(proto.transport.protocol)
            del proto, server
            self.assertEqual([ref() for ref in refs], [None] * 4)
        finally:
            if wasEnabled:
                gc.enable()

    def test_closedChannelStateFreedAtOnce(self) -> None:
        """
        The engines' state of a closed channel (its queue and credit) is
        freed by reference counting too: nothing in it refers back to
        itself, so churn leaves no work to the garbage collector.
        """
        from memux._engine import _Channel

        def channels() -> int:
            return sum(type(o) is _Channel for o in gc.get_objects())

        wasEnabled = gc.isenabled()
        gc.collect()
        gc.disable()  # so only reference counting can free them
        try:
            before = channels()
            proto: Any = self.successResultOf(
                self.client.openChannel(b"record", Factory.forProtocol(Recorder))
            )
            proto.transport.write(b"some data")
            self.pump.flush()
            self.assertEqual(channels(), before + 2)  # one in each engine
            proto.transport.loseConnection()
            self.pump.flush()
            assert proto.lost is not None
            self.serverProtocols.clear()
            del proto
            self.assertEqual(channels(), before)
        finally:
            if wasEnabled:
                gc.enable()

    def test_loseConnection(self) -> None:
        """
        loseConnection sends what was written, then both sides get
        ConnectionDone; connectionLost is never called from inside
        loseConnection.
        """
        proto = self.open(b"record")
        proto.transport.write(b"last words")
        proto.transport.loseConnection()
        self.assertIsNone(proto.lost)
        self.pump.flush()
        assert proto.lost is not None
        proto.lost.trap(ConnectionDone)
        server = self.serverProtocols[0]
        self.assertEqual(server.received, b"last words")
        assert server.lost is not None
        server.lost.trap(ConnectionDone)
        self.assertEqual(self.client.engine.openChannels(), [])
        self.assertEqual(self.server.engine.openChannels(), [])

    def test_abortConnection(self) -> None:
        """
        abortConnection resets the channel: ConnectionAborted locally (not
        synchronously), ChannelReset with code CANCEL at the peer, and
        unsent data is discarded.
        """
        proto = self.open(b"record")
        self.pump.flush()
        proto.transport.write(b"never sent")
        proto.transport.abortConnection()
        self.assertIsNone(proto.lost)
        self.pump.flush()
        assert proto.lost is not None
        proto.lost.trap(ConnectionAborted)
        server = self.serverProtocols[0]
        self.assertEqual(server.received, b"")
        assert server.lost is not None
        server.lost.trap(ChannelReset)
        self.assertEqual(server.lost.value.code, ErrorCode.CANCEL)

    def test_writeAfterLoseIgnored(self) -> None:
        """
        As with TCP, writes after loseConnection are ignored rather than
        raising.
        """
        proto = self.open(b"record")
        proto.transport.loseConnection()
        proto.transport.write(b"too late")
        self.pump.flush()
        self.assertEqual(self.serverProtocols[0].received, b"")

    def test_peerCloseEndsPlainProtocol(self) -> None:
        """
        A protocol that cannot half-close gets connectionLost(ConnectionDone)
        when the peer closes, after everything the peer sent; what it wrote
        before is still delivered.
        """
        proto = self.open(b"record")
        self.pump.flush()
        server = self.serverProtocols[0]
        proto.transport.write(b"request")
        self.pump.flush()
        server.transport.write(b"response")
        server.transport.loseConnection()
        self.pump.flush()
        self.assertEqual(proto.received, b"response")
        assert proto.lost is not None
        proto.lost.trap(ConnectionDone)
        self.assertEqual(proto.events[-2:], ["data", "lost"])

    def test_halfClose(self) -> None:
        """
        loseWriteConnection sends FIN: the peer's IHalfCloseableProtocol gets
        readConnectionLost and can still reply; the writer gets
        writeConnectionLost; when both halves are closed both get
        ConnectionDone.
        """
        proto = self.open(b"half", HalfCloseRecorder)
        proto.transport.write(b"question")
        proto.transport.loseWriteConnection()
        self.pump.flush()
        self.assertIn("writeLost", proto.events)
        server = self.serverProtocols[0]
        self.assertEqual(server.received, b"question")
        self.assertEqual(server.events[-1], "readLost")
        self.assertIsNone(server.lost)
        server.transport.write(b"answer")
        server.transport.loseWriteConnection()
        self.pump.flush()
        self.assertEqual(proto.received, b"answer")
        self.assertEqual(proto.events[-2:], ["readLost", "lost"])
        assert proto.lost is not None and server.lost is not None
        proto.lost.trap(ConnectionDone)
        server.lost.trap(ConnectionDone)


class MessageTests(SessionTestCase):
    """
    Message boundaries: writeMessage, endMessage, IMessageReceiver,
    IChunkReceiver.
    """

    def test_interfacesDeclaredLater(self) -> None:
        """
        How a channel delivers (bytes, messages or chunks) follows what its
        protocol provides when the channel opens: also when the protocol's
        class declares an interface after earlier channels of that class,
        and when one instance declares its own.
        """

        class Late(Protocol):
            def __init__(self) -> None:
                self.got: list[tuple[str, bytes]] = []

            def dataReceived(self, data: bytes) -> None:
                self.got.append(("bytes", data))

            def messageReceived(self, message: bytes) -> None:
                self.got.append(("message", message))

            def chunkReceived(self, data: bytes, end: bool) -> None:
                self.got.append(("chunk", data))

        def chunky() -> Late:
            p = Late()
            directlyProvides(p, IChunkReceiver)
            return p

        built: list[Late] = []
        self.services[b"late"] = factoryOf(built, Late)
        self.services[b"chunky"] = factoryOf(built, chunky)

        def send(service: bytes, message: bytes) -> list[tuple[str, bytes]]:
            self.open(service).transport.writeMessage(message)
            self.pump.flush()
            return built[-1].got

        self.assertEqual(send(b"late", b"one"), [("bytes", b"one")])
        self.assertEqual(send(b"chunky", b"two"), [("chunk", b"two")])
        self.assertEqual(send(b"late", b"three"), [("bytes", b"three")])
        classImplements(Late, IMessageReceiver)
        self.assertEqual(send(b"late", b"four"), [("message", b"four")])

    def test_messages(self) -> None:
        """
        writeMessage sends whole messages and an IMessageReceiver gets each
        one whole, including empty ones and ones larger than a frame.
        """
        proto = self.open(b"messages")
        big = bytes(range(256)) * 1000
        for m in [b"one", b"", big, b"four"]:
            proto.transport.writeMessage(m)
        self.pump.flush()
        self.assertEqual(self.serverProtocols[0].messages, [b"one", b"", big, b"four"])

    def test_writeThenEndMessage(self) -> None:
        """
        write() appends to the current message and endMessage() ends it.
        """
        proto = self.open(b"messages")
        proto.transport.write(b"par")
        proto.transport.write(b"ts")
        proto.transport.endMessage()
        proto.transport.endMessage()
        self.pump.flush()
        self.assertEqual(self.serverProtocols[0].messages, [b"parts", b""])

    def test_chunks(self) -> None:
        """
        An IChunkReceiver gets chunks as they arrive, with the end of each
        message flagged, so messages of any size can be streamed.
        """
        proto = self.open(b"chunks")
        proto.transport.write(b"a" * 100)
        proto.transport.writeMessage(b"b" * 100)
        self.pump.flush()
        chunks = self.serverProtocols[0].chunks
        self.assertEqual(b"".join(c for c, _ in chunks), b"a" * 100 + b"b" * 100)
        self.assertTrue(chunks[-1][1])
        self.assertFalse(any(end for _, end in chunks[:-1]))

    def test_plainProtocolGetsBytes(self) -> None:
        """
        A plain protocol sees messages as a byte stream.
        """
        proto = self.open(b"record")
        proto.transport.writeMessage(b"ab")
        proto.transport.writeMessage(b"cd")
        self.pump.flush()
        self.assertEqual(self.serverProtocols[0].received, b"abcd")

    def test_finEndsMessage(self) -> None:
        """
        Closing a channel ends the message in progress: it is delivered
        complete.
        """
        proto = self.open(b"messages")
        proto.transport.write(b"unterminated")
        proto.transport.loseConnection()
        self.pump.flush()
        self.assertEqual(self.serverProtocols[0].messages, [b"unterminated"])

    def test_resetDiscardsPartialMessage(self) -> None:
        """
        A message cut off by a reset is never delivered as complete.
        """
        proto = self.open(b"messages")
        proto.transport.write(b"partial")
        self.pump.flush()
        proto.transport.abortConnection()
        self.pump.flush()
        server = self.serverProtocols[0]
        self.assertEqual(server.messages, [])
        assert server.lost is not None
        server.lost.trap(ChannelReset)

    def test_sessionLostDiscardsPartialMessage(self) -> None:
        """
        A message cut off by the loss of the connection is never delivered
        as complete, even when the part that arrived was held while the
        reader was paused: the protocol gets the whole messages before it,
        then SessionLost.
        """
        proto = self.open(b"messages")
        proto.transport.writeMessage(b"whole")
        self.pump.flush()
        server = self.serverProtocols[0]
        server.transport.pauseProducing()
        proto.transport.write(b"partial")
        self.pump.flush()
        assert self.client.transport is not None
        self.client.transport.loseConnection()
        self.pump.flush()
        server.transport.resumeProducing()
        self.clock.advance(0)
        self.assertEqual(server.messages, [b"whole"])
        assert server.lost is not None
        server.lost.trap(SessionLost)


class ConcurrentMessagesTests(SynchronousTestCase):
    """
    Many large messages sent at once on many channels to a receiver that
    reassembles them (an L{IMessageReceiver}) are all delivered, in turn,
    with the default settings: none is reset for memory, and the memory
    held never exceeds the session credit.
    """

    def deliver(self, count: int, size: int) -> None:
        """
        Send C{count} messages of C{size} bytes, one per channel, at once;
        check each arrives whole and the receiver's session never holds
        more than its session credit.
        """
        clock = Clock()
        received: list[Any] = []
        peaks = [0]

        class Measuring(MessageRecorder):
            def messageReceived(self, message: bytes) -> None:
                # A message is delivered before its bytes are reported
                # consumed: what the session holds now includes it.
                peaks.append(server.engine._sessionRecv.held)
                super().messageReceived(message)

        client, server, pump = connectedSessions(
            {b"m": factoryOf(received, Measuring)}, clock=clock
        )
        for n in range(count):
            proto: Any = self.successResultOf(
                client.openChannel(b"m", Factory.forProtocol(Protocol))
            )
            IChannelTransport(proto.transport).writeMessage(bytes([n % 256]) * size)
        for _ in range(100_000):
            if not pump.pump() and not clock.getDelayedCalls():
                break
            clock.advance(0)
        peak = max(peaks)
        self.assertEqual(
            sorted(len(m) for r in received for m in r.messages), [size] * count
        )
        for n, recorder in enumerate(received):
            self.assertIsNone(recorder.lost)
            self.assertEqual(recorder.messages, [bytes([n % 256]) * size])
        self.assertLessEqual(peak, server.settings.sessionCredit)
        self.assertGreater(peak, 0)

    def test_fortyTwoMiBMessages(self) -> None:
        """
        40 messages of 2 MiB (80 MiB, against 32 MiB of session credit).
        """
        self.deliver(40, 2 * 1024 * 1024)

    def test_twoHundredOneMiBMessages(self) -> None:
        """
        200 messages of 1 MiB.
        """
        self.deliver(200, 1024 * 1024)


class MessageLimitTests(SessionTestCase):
    """
    The maximum message size for IMessageReceivers.
    """

    serverSettings = SessionSettings(maxMessageSize=1000)

    def test_tooLarge(self) -> None:
        """
        A message over the maximum resets that channel with
        MESSAGE_TOO_LARGE: the receiver gets MessageTooLarge, the sender
        ChannelReset with the code, and other channels carry on.
        """
        proto = self.open(b"messages")
        other = self.open(b"messages")
        proto.transport.writeMessage(b"x" * 1000)
        proto.transport.writeMessage(b"x" * 1001)
        other.transport.writeMessage(b"fine")
        self.pump.flush()
        server, otherServer = self.serverProtocols
        self.assertEqual(server.messages, [b"x" * 1000])
        assert server.lost is not None and proto.lost is not None
        server.lost.trap(MessageTooLarge)
        proto.lost.trap(ChannelReset)
        self.assertEqual(proto.lost.value.code, ErrorCode.MESSAGE_TOO_LARGE)
        self.assertEqual(otherServer.messages, [b"fine"])
        self.assertIsNone(otherServer.lost)


class ErrorTests(SessionTestCase):
    """
    Errors reach protocols typed, and stay at the level they belong to.
    """

    def test_peerReset(self) -> None:
        """
        A reset by the peer reaches connectionLost as ChannelReset with the
        peer's code and reason.
        """
        proto = self.open(b"record")
        self.pump.flush()
        server = self.serverProtocols[0]
        self.server.engine.resetChannel(server.transport.channel, 0x42, "app said no")
        self.server._core.flushSoon()
        self.pump.flush()
        assert proto.lost is not None
        proto.lost.trap(ChannelReset)
        self.assertEqual(
            (proto.lost.value.code, proto.lost.value.reason), (0x42, "app said no")
        )
        self.assertTrue(proto.lost.value.remote)

    def test_protocolExceptionResetsOnlyItsChannel(self) -> None:
        """
        An exception raised by one channel's protocol resets that channel
        only (logged as an error); the session and other channels carry on.
        """

        class Exploding(Recorder):
            def dataReceived(self, data: bytes) -> None:
                raise RuntimeError("boom")

        self.services[b"explode"] = Factory.forProtocol(Exploding)
        bad = self.open(b"explode")
        good = self.open(b"echo")
        bad.transport.write(b"trigger")
        good.transport.write(b"fine")
        self.pump.flush()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        assert bad.lost is not None
        bad.lost.trap(ChannelReset)
        self.assertEqual(bad.lost.value.code, ErrorCode.INTERNAL_ERROR)
        self.assertEqual(good.received, b"fine")
        good.transport.write(b" still")
        self.pump.flush()
        self.assertEqual(good.received, b"fine still")

    def test_sessionLost(self) -> None:
        """
        When the connection goes, every open channel's protocol gets
        SessionLost and pending pings fail with it.
        """
        protos = [self.open(b"record") for _ in range(3)]
        self.pump.flush()
        ping = self.client.ping()
        assert self.client.transport is not None
        self.client.transport.loseConnection()
        self.pump.flush()
        for p in protos + self.serverProtocols:
            assert p.lost is not None
            p.lost.trap(SessionLost)
        self.failureResultOf(ping, SessionLost)
        self.failureResultOf(
            self.client.openChannel(b"record", Factory.forProtocol(Recorder)),
            SessionLost,
        )

    def test_garbageFromPeer(self) -> None:
        """
        Bytes that are not memux end the session with a GOAWAY naming the
        error, and the channels get SessionLost carrying the code.
        """
        proto = self.open(b"record")
        self.pump.flush()
        self.server.dataReceived(b"\x0f\x01\xff\xff\xff\xff\x0f")  # huge frame
        self.pump.flush()
        assert proto.lost is not None
        proto.lost.trap(SessionLost)
        server = self.serverProtocols[0]
        assert server.lost is not None
        server.lost.trap(SessionLost)
        self.assertEqual(server.lost.value.code, ErrorCode.FRAME_SIZE_ERROR)

    def test_notMemux(self) -> None:
        """
        A peer that speaks HTTP to a memux port gets a GOAWAY, and the
        session ends with an error saying what the bytes looked like.
        """
        client, server, pump = connectedSessions(
            self.services, clock=self.clock, greet=False
        )
        server.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        pump.flush()
        self.assertIsNotNone(server.lostReason)
        self.assertIn("HTTP/1 request", str(server._core.terminatedWith))


class BackpressureTests(SessionTestCase):
    """
    Credit-based backpressure, end to end.
    """

    def test_pausedChannelDoesNotStallOthers(self) -> None:
        """
        While channel A's consumer is paused, channel B keeps flowing at
        full rate; A holds no more than the credit it granted, delivers
        nothing while paused, and on resume gets everything in order.
        """
        window = self.server.settings.channelCredit
        a = self.open(b"record")
        b = self.open(b"record")
        self.pump.flush()
        serverA, serverB = self.serverProtocols
        serverA.transport.pauseProducing()
        payload = bytes(range(256)) * 4096  # 1 MiB
        a.transport.write(payload)
        b.transport.write(payload)
        self.pump.flush()
        self.assertEqual(serverB.received, payload)
        self.assertEqual(serverA.received, b"")
        held = self.server.engine.heldBytes(serverA.transport.channel)
        self.assertLessEqual(held, window)
        self.assertEqual(held, window)
        serverA.transport.resumeProducing()
        self.pump.flush()
        self.assertEqual(serverA.received, payload)

    def test_pausedTransportCallsNothing(self) -> None:
        """
        A paused channel transport calls nothing on its protocol, not even
        the end of input; both come on resume.
        """
        proto = self.open(b"record")
        self.pump.flush()
        server = self.serverProtocols[0]
        server.transport.pauseProducing()
        proto.transport.write(b"held")
        proto.transport.loseConnection()
        self.pump.flush()
        self.assertEqual(server.events, ["made"])
        server.transport.resumeProducing()
        self.pump.flush()
        self.assertEqual(server.events, ["made", "data", "lost"])
        self.assertEqual(server.received, b"held")

    def test_producerPausedByCredit(self) -> None:
        """
        A push producer on a channel is paused when the peer stops granting
        credit (its reader is paused) and resumed when credit returns.
        """
        proto = self.open(b"record")
        self.pump.flush()
        server = self.serverProtocols[0]
        server.transport.pauseProducing()
        producer = RecordingProducer()
        proto.transport.registerProducer(producer, True)
        chunk = b"z" * 16384
        written = 0
        while not producer.paused and written < 10 * 1024 * 1024:
            proto.transport.write(chunk)
            written += len(chunk)
            self.pump.flush()
        self.assertTrue(producer.paused)
        self.assertEqual(producer.calls, ["pause"])
        window = self.server.settings.channelCredit
        self.assertLessEqual(written, window + WRITE_HIGH_WATER + len(chunk))
        server.transport.resumeProducing()
        self.pump.flush()
        self.assertEqual(producer.calls, ["pause", "resume"])
        self.assertEqual(len(server.received), written)

    def test_connectionPausePropagates(self) -> None:
        """
        When the connection pauses the session (its buffer is full), the
        producer of a channel that writes is paused (at that write: idle
        channels' producers are left alone), and nothing more is written to
        the connection; on resume the producer is resumed.
        """
        proto = self.open(b"record")
        idle = self.open(b"record")
        self.pump.flush()
        producer = RecordingProducer()
        idleProducer = RecordingProducer()
        proto.transport.registerProducer(producer, True)
        idle.transport.registerProducer(idleProducer, True)
        self.client.pauseProducing()
        proto.transport.write(b"queued")
        self.assertEqual(producer.calls, ["pause"])
        self.assertEqual(idleProducer.calls, [])
        self.clock.advance(0)
        transport = self.client.transport
        assert isinstance(transport, FakeTransport)
        self.assertEqual(transport.getOutBuffer(), None)
        self.client.resumeProducing()
        self.assertEqual(producer.calls, ["pause", "resume"])
        self.pump.flush()
        self.assertEqual(self.serverProtocols[0].received, b"queued")

    def test_producerRegisteredWhilePaused(self) -> None:
        """
        A producer registered while the connection is paused starts paused.
        """
        proto = self.open(b"record")
        self.client.pauseProducing()
        producer = RecordingProducer()
        proto.transport.registerProducer(producer, True)
        self.assertTrue(producer.paused)

    def test_producerStartingItselfPausedAgain(self) -> None:
        """
        A producer paused as it registers (the connection is paused) that
        then starts itself anyway (``registerProducer``, then
        ``resumeProducing``: a common idiom) is paused again at its next
        write, and at every one after while the connection stays paused,
        so that it cannot queue without end; on resume it is resumed.
        """
        proto = self.open(b"record")
        self.pump.flush()
        self.client.pauseProducing()
        producer = RecordingProducer()
        proto.transport.registerProducer(producer, True)
        self.assertEqual(producer.calls, ["pause"])
        producer.resumeProducing()  # (its own start: not memux's resume)
        proto.transport.write(b"x" * 1024)
        self.assertTrue(producer.paused)
        self.assertEqual(producer.calls, ["pause", "resume", "pause"])
        self.client.resumeProducing()
        self.assertFalse(producer.paused)
        self.assertEqual(producer.calls[-1], "resume")
        self.pump.flush()
        self.assertEqual(self.serverProtocols[0].received, b"x" * 1024)

    def test_channelSetsPerSession(self) -> None:
        """
        A session's sets of paused producers, pull producers and lossy
        channels are its own once it has any (sessions without share one
        empty set: memory); what one session adds is not seen by another,
        and a paused producer is still resumed when the connection drains.
        """
        core, other = self.client._core, self.server._core
        shared = other.pausedProducers
        self.assertIs(core.pausedProducers, shared)
        self.assertIs(core._pullProducers, shared)
        self.assertIs(core._lossy, shared)
        proto = self.open(b"record")
        pulled = self.open(b"record")
        self.open(b"record", lossy=True)
        self.pump.flush()
        producer = RecordingProducer()
        proto.transport.registerProducer(producer, True)
        pulled.transport.registerProducer(RecordingProducer(), False)
        self.client.pauseProducing()
        proto.transport.write(b"queued")
        self.assertEqual(len(core.pausedProducers), 1)
        self.assertEqual(len(core._pullProducers), 1)
        self.assertEqual(len(core._lossy), 1)
        self.assertEqual(other.pausedProducers, set())
        self.assertEqual(other._pullProducers, set())
        # (The peer's end of a lossy channel is lossy too: a set of its own.)
        self.assertEqual(len(other._lossy), 1)
        self.assertIsNot(other._lossy, core._lossy)
        self.assertEqual(shared, set())
        self.client.resumeProducing()
        self.assertEqual(producer.calls, ["pause", "resume"])

    def test_producerStoppedOnClose(self) -> None:
        """
        A registered producer is stopped when the channel ends.
        """
        proto = self.open(b"record")
        producer = RecordingProducer()
        proto.transport.registerProducer(producer, True)
        proto.transport.abortConnection()
        self.pump.flush()
        self.assertEqual(producer.calls[-1], "stop")

    def test_doubleRegisterRaises(self) -> None:
        """
        Registering a second producer without unregistering the first is an
        error, as on TCP.
        """
        proto = self.open(b"record")
        proto.transport.registerProducer(RecordingProducer(), True)
        self.assertRaises(
            RuntimeError, proto.transport.registerProducer, RecordingProducer(), True
        )

    def test_pullProducer(self) -> None:
        """
        A pull producer is asked for more data whenever the channel can take
        it, until it unregisters.
        """

        class Pull:
            def __init__(self, transport: ChannelTransport) -> None:
                self.transport = transport
                self.left = 5

            def resumeProducing(self) -> None:
                self.transport.write(b"%d" % self.left)
                self.left -= 1
                if not self.left:
                    self.transport.unregisterProducer()

            def stopProducing(self) -> None:
                pass

        proto = self.open(b"record")
        proto.transport.registerProducer(Pull(proto.transport), False)
        for _ in range(10):
            self.pump.flush()
        self.assertEqual(self.serverProtocols[0].received, b"54321")

    def test_memoryBoundedAgainstFastSender(self) -> None:
        """
        However much a peer writes to a channel whose reader is paused, the
        receiving session holds at most the channel's credit window.
        """
        proto = self.open(b"record")
        self.pump.flush()
        server = self.serverProtocols[0]
        server.transport.pauseProducing()
        for _ in range(64):
            proto.transport.write(b"q" * 65536)
        self.pump.flush()
        channel = server.transport.channel
        self.assertEqual(
            self.server.engine.heldBytes(channel), self.server.settings.channelCredit
        )
        self.assertEqual(
            self.client.engine.queuedBytes(proto.transport.channel),
            64 * 65536 - self.server.settings.channelCredit,
        )


class StalledReadersTests(SessionTestCase):
    """
    However many channels have paused (or slow) readers, channels whose
    readers keep reading keep making progress: stalled channels hold their
    own credit, never the whole session's.
    """

    def test_manyPausedReaders(self) -> None:
        """
        With 20 paused readers each holding a full channel window (20 MiB,
        over half of the 32 MiB session credit), 64 MiB more still flow on
        another channel whose reader reads; once resumed, the paused ones
        get all their data too.
        """
        window = self.server.settings.channelCredit
        paused = [self.open(b"record") for _ in range(20)]
        self.pump.flush()
        for recorder in self.serverProtocols:
            recorder.transport.pauseProducing()
        for proto in paused:
            proto.transport.write(b"p" * (2 * window))
        self.pump.flush()
        held = self.server.engine._sessionRecv.held
        self.assertEqual(held, 20 * window)
        self.assertGreater(held, self.server.settings.sessionCredit // 2)
        reading = self.open(b"record")
        chunk = b"r" * 65536
        for _ in range(1024):  # 64 MiB
            reading.transport.write(chunk)
            self.pump.flush()
        server = self.serverProtocols[-1]
        self.assertEqual(len(server.received), 1024 * 65536)
        for recorder in self.serverProtocols[:20]:
            recorder.transport.resumeProducing()
        self.pump.flush()
        self.assertEqual(
            [len(r.received) for r in self.serverProtocols[:20]], [2 * window] * 20
        )


class LossyTests(SessionTestCase):
    """
    Load shedding on channels opened as lossy.
    """

    def test_shedsWholeMessagesAndTellsReceiver(self) -> None:
        """
        On a lossy channel whose peer is not reading, queued messages are
        discarded whole instead of stalling the writer, and the receiver is
        told how many, at the point in the stream where they were lost.
        """
        proto = self.open(b"drops", lossy=True)
        self.pump.flush()
        server = self.serverProtocols[0]
        server.transport.pauseProducing()
        message = b"m" * 16384
        for _ in range(200):  # 3 MiB, over the 1 MiB the reader invited
            proto.transport.writeMessage(message)
            self.pump.flush()
        server.transport.resumeProducing()
        self.pump.flush()
        drops = [e for e in server.events if e.startswith("dropped")]
        self.assertTrue(drops)
        dropped = sum(int(e.split()[1]) for e in drops)
        self.assertEqual(len(server.messages) + dropped, 200)
        self.assertTrue(all(m == message for m in server.messages))


class SessionTests(SessionTestCase):
    """
    Session-level operations: ping, goaway, counters.
    """

    def test_ping(self) -> None:
        """
        ping() fires with the round-trip time.
        """
        d = self.client.ping()
        self.clock.advance(0.25)
        self.pump.flush()
        self.assertEqual(self.successResultOf(d), 0.25)

    def test_pingAfterPeerEndedSession(self) -> None:
        """
        Once the peer's GOAWAY with an error has ended the session, ping()
        and openChannel() fail with the `SessionLost` its channels get,
        naming that GOAWAY, even before the connection has closed; and
        with the same error after it has.
        """
        self.client.dataReceived(
            GoAwayFrame(0, ErrorCode.IDLE_TIMEOUT, "idle for 0.5 s").encode()
        )
        self.assertTrue(self.client.connected)
        errors = [
            self.failureResultOf(self.client.ping(), SessionLost).value,
            self.failureResultOf(
                self.client.openChannel(b"echo", Factory.forProtocol(Protocol)),
                SessionLost,
            ).value,
        ]
        for error in errors:
            self.assertEqual(error.code, ErrorCode.IDLE_TIMEOUT)
            self.assertIn("idle for 0.5 s", str(error))
        self.pump.flush()
        self.assertFalse(self.client.connected)
        after = self.failureResultOf(self.client.ping(), SessionLost).value
        self.assertIs(after, self.client.lostError)
        self.assertEqual(after.code, ErrorCode.IDLE_TIMEOUT)

    def test_counters(self) -> None:
        """
        counters() reports bytes and channels.
        """
        proto = self.open(b"echo")
        proto.transport.write(b"x" * 1000)
        self.pump.flush()
        c = self.client.counters()
        self.assertGreater(c["bytesSent"], 1000)
        self.assertGreater(c["bytesReceived"], 1000)
        self.assertEqual((c["channelsOpened"], c["channelsOpen"]), (1, 1))
        self.assertEqual(self.server.counters()["channelsAccepted"], 1)

    def test_pingCounters(self) -> None:
        """
        counters() counts the bytes of PING frames apart (they are in the
        byte totals too): the probe one way, its answer the other.
        """
        before = self.client.counters()
        self.client.ping()
        self.pump.flush()
        c, s = self.client.counters(), self.server.counters()
        frame = 3 + 8  # header and the 8-byte payload
        self.assertEqual(c["pingBytesSent"] - before["pingBytesSent"], frame)
        self.assertEqual(c["pingBytesReceived"] - before["pingBytesReceived"], frame)
        self.assertEqual(s["pingBytesReceived"], c["pingBytesSent"])
        self.assertEqual(s["pingBytesSent"], c["pingBytesReceived"])
        self.assertGreaterEqual(c["bytesSent"] - before["bytesSent"], frame)

    def test_peerSettings(self) -> None:
        """
        After the preface exchange each side knows the other's settings.
        """
        self.assertEqual(
            self.client.peerSettings.initialChannelCredit,
            self.server.settings.channelCredit,
        )

    def test_gracefulGoAway(self) -> None:
        """
        goAway lets open channels finish, refuses new ones as safe to retry,
        and closes the connection when the last channel ends.
        """
        proto = self.open(b"record")
        self.pump.flush()
        done = self.server.goAway()
        self.pump.flush()
        refused = self.client.openChannel(b"record", Factory.forProtocol(Recorder))
        self.failureResultOf(refused, ChannelRefused)
        proto.transport.write(b"still working")
        self.pump.flush()
        self.assertEqual(self.serverProtocols[0].received, b"still working")
        self.assertNoResult(done)
        proto.transport.loseConnection()
        self.pump.flush()
        self.successResultOf(done)
        self.assertFalse(self.client.connected)

    def test_isUsable(self) -> None:
        """
        A session is usable for new channels while connected and until
        either side sends GOAWAY (the one check the session pool and the
        command line share).
        """
        self.assertTrue(self.client.isUsable() and self.server.isUsable())
        self.server.goAway()
        self.assertFalse(self.server.isUsable())
        self.pump.flush()
        self.assertFalse(self.client.isUsable())  # GOAWAY received
        self.client.loseConnection()
        self.pump.flush()
        self.assertFalse(self.client.isUsable())

    def test_goAwayWaitsForPeersFin(self) -> None:
        """
        A channel the server closed (its FIN out, its protocol told) is
        still open until the client's FIN: a graceful goAway waits for it,
        so the client finishes the channel cleanly, not with SessionLost.
        """
        proto = self.open(b"record", HalfCloseRecorder)
        self.pump.flush()
        self.serverProtocols[0].transport.loseConnection()
        self.pump.flush()
        self.assertEqual(proto.events, ["made", "readLost"])
        done = self.server.goAway()
        self.pump.flush()
        self.assertNoResult(done)
        self.assertTrue(self.client.connected)
        proto.transport.write(b"late reply")
        proto.transport.loseConnection()
        self.pump.flush()
        self.successResultOf(done)
        assert proto.lost is not None
        proto.lost.trap(ConnectionDone)

    def test_destinationRefusedByServiceMap(self) -> None:
        """
        With a plain mapping of services, a channel naming a destination is
        refused, whatever its service name: forwarding takes a services
        callable that chooses what to allow (spec: "Tunnelling and open
        proxies").
        """
        proto = self.open(b"record", destination=("127.0.0.1", 7))
        self.pump.flush()
        assert proto.lost is not None
        proto.lost.trap(ChannelRefused)
        self.assertEqual(
            proto.lost.value.reason, "this session forwards to no destination"
        )
        self.assertEqual(self.serverProtocols, [])

    def test_goAwayThenCloseTellsChannels(self) -> None:
        """
        Channels cut off when a peer that sent GOAWAY NO_ERROR closes the
        connection hear of the GOAWAY, its code and reason.
        """
        proto = self.open(b"record")
        self.pump.flush()
        self.server.goAway(reason="shutting down")
        self.pump.flush()
        self.server.abortConnection()
        self.pump.flush()
        assert proto.lost is not None
        proto.lost.trap(SessionLost)
        self.assertEqual(
            proto.lost.value.reason,
            "the peer went away (GOAWAY NO_ERROR: shutting down)",
        )

    def test_goAwayRefusesChannelsInFlight(self) -> None:
        """
        A channel the client opened that crossed the server's GOAWAY is
        reported to its opener as refused (safe to retry).
        """
        self.server.goAway()
        proto = self.open(b"record")
        self.pump.flush()
        assert proto.lost is not None
        proto.lost.trap(ChannelRefused)
        self.assertEqual(self.serverProtocols, [])


class LoseConnectionTests(SessionTestCase):
    """
    Closing a whole session from this side.
    """

    def test_sessionLoseConnection(self) -> None:
        """
        session.loseConnection() writes what is pending, closes the
        connection (unregistering as its producer first), and the channels
        on both sides end with SessionLost.
        """
        proto = self.open(b"record")
        proto.transport.write(b"last words")
        self.client.loseConnection()
        self.assertIsNone(self.client.transport.producer)  # type: ignore[union-attr]
        self.pump.flush()
        self.assertFalse(self.client.connected)
        self.assertEqual(self.serverProtocols[0].received, b"last words")
        assert proto.lost is not None
        proto.lost.trap(SessionLost)
        self.assertEqual(proto.lost.value.reason, "the session was closed")
        server = self.serverProtocols[0].lost
        server.trap(SessionLost)
        # Never "closed cleanly": for the channels cut off it was not.
        self.assertEqual(
            server.value.reason, "the peer closed the connection without GOAWAY"
        )


class IdleTimeoutTests(SynchronousTestCase):
    """
    SessionSettings.idleTimeout ends sessions that have no channel open.
    """

    def test_idleSessionEnds(self) -> None:
        """
        A session with no channel open for idleTimeout seconds is ended
        with GOAWAY IDLE_TIMEOUT, and the connection closes.
        """
        clock = Clock()
        client, server, pump = connectedSessions(
            {}, serverSettings=SessionSettings(idleTimeout=30), clock=clock
        )
        clock.advance(29)
        pump.flush()
        self.assertTrue(server.connected)
        clock.advance(1)
        pump.flush()
        self.assertFalse(server.connected)
        self.assertFalse(client.connected)
        assert client.lostReason is not None
        self.assertEqual(client.engine.goAwayReceived, 0)

    def test_openChannelKeepsSessionAlive(self) -> None:
        """
        While a channel is open the session is not idle, however quiet;
        the timeout starts again when the last channel ends.
        """
        clock = Clock()
        client, server, pump = connectedSessions(
            {b"record": Factory.forProtocol(Recorder)},
            serverSettings=SessionSettings(idleTimeout=30),
            clock=clock,
        )
        proto = self.successResultOf(
            client.openChannel(b"record", Factory.forProtocol(Recorder))
        )
        assert isinstance(proto, Recorder)
        pump.flush()
        clock.advance(100)
        pump.flush()
        self.assertTrue(server.connected)
        channelOf(proto).loseConnection()
        pump.flush()
        clock.advance(29)
        pump.flush()
        self.assertTrue(server.connected)
        clock.advance(1)
        pump.flush()
        self.assertFalse(server.connected)

    def test_noTimeoutByDefault(self) -> None:
        """
        By default (idleTimeout None) an idle session stays up.
        """
        clock = Clock()
        client, server, pump = connectedSessions({}, clock=clock)
        clock.advance(10**6)
        pump.flush()
        self.assertTrue(server.connected)

    def test_badTimeout(self) -> None:
        """
        A zero or negative idleTimeout is refused.
        """
        self.assertRaises(ValueError, SessionSettings, idleTimeout=0)
        self.assertRaises(ValueError, SessionSettings, idleTimeout=-1)


@implementer(IMessageReceiver)
class MessageEchoer(Protocol):
    """
    Sends each message back.
    """

    def messageReceived(self, message: bytes) -> None:
        assert isinstance(self.transport, ChannelTransport)
        self.transport.writeMessage(message)


class SessionOnTransportTestCase(SynchronousTestCase):
    """
    A server session offering ``echo`` (of messages) on a
    C{transportClass}, after a greedy preface from the peer.
    """

    transportClass: type[TCPLikeTransport] = TCPLikeTransport

    def setUp(self) -> None:
        self.clock = Clock()
        factory = MultiplexingFactory(
            {b"echo": Factory.forProtocol(MessageEchoer)}, reactor=self.clock
        )
        self.peer = PeerOnTransport(
            factory.buildProtocol(None), self.clock, self.transportClass()
        )
        self.session = self.peer.session
        self.transport = cast(TCPLikeTransport, self.peer.transport)
        self.decoder = self.peer.decoder
        self.frames = self.peer.read


class FlushTests(SessionOnTransportTestCase):
    """
    When a session writes to its connection: in the turn that made the
    data, without waiting for a reactor turn of its own, and in sends the
    connection need not split.
    """

    def test_replyWrittenWithinRead(self) -> None:
        """
        A reply written while a read is handled is on the connection when
        dataReceived returns, with nothing left scheduled for it.
        """
        self.session.dataReceived(
            OpenFrame(1, b"echo").encode() + DataFrame(1, b"ping", end=True).encode()
        )
        replies = [f for f in self.frames() if isinstance(f, DataFrame)]
        self.assertEqual(
            [(f.channel, f.data, f.end) for f in replies], [(1, b"ping", True)]
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_resumedProducerWrittenAtOnce(self) -> None:
        """
        When the connection resumes the session, a channel producer paused
        for the connection writes again, and what it writes goes to the
        connection in the same call; a producer that always has more is
        cut off after FLUSH_ROUNDS rounds, the rest left for the next turn.
        """
        self.session.dataReceived(OpenFrame(1, b"echo").encode())
        transport = self.session._core.channels[1]
        chunk = b"x" * (WRITE_HIGH_WATER // 2)

        @implementer(IPushProducer)
        class Writer:
            resumed = 0

            def pauseProducing(self) -> None:
                pass

            def resumeProducing(self) -> None:
                self.resumed += 1
                transport.write(chunk)
                transport.write(chunk)

            def stopProducing(self) -> None:
                pass

        writer = Writer()
        self.session.pauseProducing()
        transport.registerProducer(writer, True)
        writer.resumeProducing()
        self.clock.advance(0)
        self.assertEqual(self.frames(), [])
        self.session.resumeProducing()
        sent = sum(len(f.data) for f in self.frames() if isinstance(f, DataFrame))
        self.assertEqual(writer.resumed, 1 + FLUSH_ROUNDS)
        self.assertEqual(sent, FLUSH_ROUNDS * 2 * len(chunk))
        flushes = [
            c
            for c in self.clock.getDelayedCalls()
            if getattr(getattr(c, "func", None), "__func__", None)
            is MemuxProtocol._flushNow
        ]
        self.assertEqual(len(flushes), 1)  # the rest: next turn
        reactorTurn(self.clock)
        sent = sum(len(f.data) for f in self.frames() if isinstance(f, DataFrame))
        self.assertEqual(sent, FLUSH_ROUNDS * 2 * len(chunk))

    def test_flushFitsOneSend(self) -> None:
        """
        A connection with Twisted's send limit may send a whole flush,
        frame headers included, in one send.
        """
        self.assertGreaterEqual(self.transport.SEND_LIMIT, FLUSH_BYTES + 1024)

    def test_largerSendLimitKept(self) -> None:
        """
        A connection whose send limit is already larger keeps it.
        """
        transport = TCPLikeTransport()
        transport.SEND_LIMIT = 1 << 20
        MemuxProtocol(reactor=self.clock).makeConnection(transport)
        self.assertEqual(transport.SEND_LIMIT, 1 << 20)


class EndlessWriter:
    """
    A streaming producer that writes 64 KiB at a time to a channel until
    it is paused.
    """

    def __init__(self, transport: ChannelCore) -> None:
        self.transport = transport
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused:
            self.transport.write(b"b" * 65536)

    def stopProducing(self) -> None:
        pass


class BulkModeTests(SessionOnTransportTestCase):
    """
    A session that only moves bulk data hands its connection larger
    flushes; a small message brings the normal size back at once.
    """

    transportClass = PausingTransport

    def startBulk(self) -> PausingTransport:
        """
        Open a channel whose producer writes for ever; return the transport.
        """
        self.session.dataReceived(
            OpenFrame(1, b"echo").encode() + OpenFrame(3, b"echo").encode()
        )
        channel = self.session._core.channels[1]
        writer = EndlessWriter(channel)
        channel.registerProducer(writer, True)
        writer.resumeProducing()
        self.clock.advance(0)
        assert isinstance(self.transport, PausingTransport)
        return self.transport

    def test_bulkAfterFullFlushes(self) -> None:
        """
        Flushes are about FLUSH_BYTES until the connection has paused the
        session BULK_AFTER_FLUSHES times with no small write meanwhile;
        then about BULK_FLUSH_BYTES.
        """
        transport = self.startBulk()
        sizes = [transport.send() for _ in range(BULK_AFTER_FLUSHES + 3)]
        # Frame headers: under 1 %.
        for size in sizes[: BULK_AFTER_FLUSHES - 1]:
            self.assertGreaterEqual(size, FLUSH_BYTES)
            self.assertLessEqual(size, FLUSH_BYTES * 1.01)
        for size in sizes[BULK_AFTER_FLUSHES + 1 :]:
            self.assertGreaterEqual(size, BULK_FLUSH_BYTES)
            self.assertLessEqual(size, BULK_FLUSH_BYTES * 1.01)

    def test_smallWriteEndsBulkMode(self) -> None:
        """
        In bulk mode, a small message on another channel makes the next
        flush a normal one again, with that message in it.
        """
        transport = self.startBulk()
        for _ in range(BULK_AFTER_FLUSHES + 2):
            transport.send()
        self.session._core.channels[3].writeMessage(b"ping")
        transport.send()
        data = transport.value()
        self.assertLessEqual(len(data), FLUSH_BYTES * 1.01)
        self.assertIn(
            DataFrame(3, b"ping", end=True),
            [f for f in self.decoder.receive(data) if isinstance(f, DataFrame)],
        )

    def test_smallWritesKeepNormalMode(self) -> None:
        """
        While small messages keep coming, bulk data on another channel
        keeps going out in normal-sized flushes.
        """
        transport = self.startBulk()
        for _ in range(2 * BULK_AFTER_FLUSHES):
            self.session._core.channels[3].writeMessage(b"ping")
            self.assertLessEqual(transport.send(), FLUSH_BYTES * 1.01)

    def test_unsentLimitFollowsMode(self) -> None:
        """
        On a TCP socket, bulk mode lets the kernel hold BULK_NOTSENT_LOWAT
        unsent bytes, and leaving it NOTSENT_LOWAT again.
        """
        option = getattr(socket, "TCP_NOTSENT_LOWAT", None)
        if option is None:
            raise SkipTest("no TCP_NOTSENT_LOWAT here")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        transport = self.startBulk()
        transport.getHandle = lambda: sock  # type: ignore[attr-defined]

        def unsent() -> int:
            return sock.getsockopt(socket.IPPROTO_TCP, option)

        for _ in range(BULK_AFTER_FLUSHES + 2):
            transport.send()
        self.assertEqual(unsent(), BULK_NOTSENT_LOWAT)
        self.session._core.channels[3].writeMessage(b"ping")
        transport.send()
        self.assertEqual(unsent(), NOTSENT_LOWAT)

    def unsentLimit(self, transport: PausingTransport) -> Callable[[], int]:
        """
        Put a real TCP socket under ``transport``; return how to read its
        TCP_NOTSENT_LOWAT.
        """
        option = getattr(socket, "TCP_NOTSENT_LOWAT", None)
        if option is None:
            raise SkipTest("no TCP_NOTSENT_LOWAT here")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        transport.getHandle = lambda: sock  # type: ignore[attr-defined]
        return lambda: sock.getsockopt(socket.IPPROTO_TCP, option)

    def test_latencyModeWhileUrgentChannelOpen(self) -> None:
        """
        While a channel more urgent than the default is open, bulk data on
        another goes out a chunk per flush, bulk mode never starts, and
        the kernel may hold only LATENCY_NOTSENT_LOWAT unsent bytes; with
        the urgency back at the default, the normal limit returns and so,
        after its BULK_AFTER_FLUSHES full flushes, does bulk mode.
        """
        transport = self.startBulk()
        unsent = self.unsentLimit(transport)
        core = self.session._core
        channel = core.channels[3]
        assert isinstance(channel, ChannelTransport)
        channel.setPriority(0)
        transport.send()  # (what was written before)
        self.assertLess(LATENCY_FLUSH_BYTES, 65536)
        for _ in range(2 * BULK_AFTER_FLUSHES):
            # One 64 KiB chunk (the smallest a flush can hold) and its header.
            self.assertLessEqual(transport.send(), 65536 * 1.01)
            self.assertEqual(unsent(), LATENCY_NOTSENT_LOWAT)
        self.assertFalse(core.bulk)
        self.assertTrue(core.latency)
        channel.setPriority(DEFAULT_URGENCY)
        transport.send()
        self.assertEqual((core.latency, unsent()), (False, NOTSENT_LOWAT))
        sizes = [transport.send() for _ in range(BULK_AFTER_FLUSHES + 3)]
        self.assertGreaterEqual(sizes[-1], BULK_FLUSH_BYTES)
        self.assertEqual(unsent(), BULK_NOTSENT_LOWAT)

    def test_latencyModeLeavesBulkMode(self) -> None:
        """
        A session already in bulk mode leaves it at its next flush once
        the peer hints that one of its channels is urgent, and stays out of
        it until that channel is gone (here, reset by the peer).
        """
        transport = self.startBulk()
        unsent = self.unsentLimit(transport)
        core = self.session._core
        for _ in range(BULK_AFTER_FLUSHES + 2):
            transport.send()
        self.assertTrue(core.bulk)
        self.session.dataReceived(PriorityFrame(3, 1, 16).encode())
        transport.send()  # (what was written before)
        self.assertLessEqual(transport.send(), 65536 * 1.01)
        self.assertEqual((core.bulk, core.latency), (False, True))
        self.assertEqual(unsent(), LATENCY_NOTSENT_LOWAT)
        self.session.dataReceived(ResetFrame(3, 0, "gone").encode())
        transport.send()
        self.assertEqual((core.latency, unsent()), (False, NOTSENT_LOWAT))

    def bulkReads(self, count: int) -> list[bytes]:
        """
        ``count`` reads of the connection's normal read size, from a peer
        streaming messages to the echo service.
        """
        transport = self.transport
        assert isinstance(transport, PausingTransport)
        normal = transport.bufferSize
        frames = count * normal // 4000 + 40
        wire = OpenFrame(1, b"echo").encode() + b"".join(
            DataFrame(1, b"%4000d" % n, end=True).encode() for n in range(frames)
        )
        return [wire[i : i + normal] for i in range(0, len(wire), normal)][:count]

    def test_bulkReadingKeepsHeap(self) -> None:
        """
        The session keeps the memory of bulk reads in the heap
        (`memux._tuning.keepReadsInHeap`) as it switches to reading
        BULK_READ_SIZE at a time, not before.
        """
        kept: list[int] = []
        transport = self.transport
        assert isinstance(transport, PausingTransport)
        self.patch(
            protocolModule, "keepReadsInHeap", lambda: kept.append(transport.bufferSize)
        )
        reads = self.bulkReads(BULK_AFTER_READS)
        for read in reads[:-1]:
            self.session.dataReceived(read)
            transport.clear()
        self.assertEqual(kept, [])
        normal = transport.bufferSize
        self.session.dataReceived(reads[-1])
        self.assertEqual(kept, [normal])
        self.assertEqual(transport.bufferSize, BULK_READ_SIZE)

    def test_bulkReadSize(self) -> None:
        """
        After BULK_AFTER_READS reads that fill the connection's read size,
        the session has it read BULK_READ_SIZE at a time; reads of at least
        the normal size keep it so, as do fewer than TWISTED_BULK_LEAVE_READS
        shorter ones in a row; that many set it back.  The engine is told
        while (data waits for it: latency mode's credit cap).
        """
        transport = self.transport
        assert isinstance(transport, PausingTransport)
        engine = self.session._core.engine
        normal = transport.bufferSize
        reads = self.bulkReads(BULK_AFTER_READS + 4 + 2 * TWISTED_BULK_LEAVE_READS)
        for read in reads[: BULK_AFTER_READS - 1]:
            self.session.dataReceived(read)
            transport.clear()
        self.assertEqual(transport.bufferSize, normal)
        self.assertFalse(engine.receiverBehind)
        self.session.dataReceived(reads[BULK_AFTER_READS - 1])
        self.assertEqual(transport.bufferSize, BULK_READ_SIZE)
        self.assertTrue(engine.receiverBehind)
        rest = iter(reads[BULK_AFTER_READS:])
        self.session.dataReceived(next(rest))
        self.assertEqual(transport.bufferSize, BULK_READ_SIZE)

        def shortReads(count: int) -> None:
            # One read's bytes, as ``count`` shorter reads.
            read = next(rest)
            cuts = [i * 1000 for i in range(count)] + [len(read)]
            for start, end in zip(cuts, cuts[1:], strict=False):
                self.session.dataReceived(read[start:end])

        shortReads(TWISTED_BULK_LEAVE_READS - 1)  # the tail of a burst
        self.assertEqual(transport.bufferSize, BULK_READ_SIZE)
        self.session.dataReceived(next(rest))  # full again: the count restarts
        shortReads(TWISTED_BULK_LEAVE_READS - 1)
        self.assertEqual(transport.bufferSize, BULK_READ_SIZE)
        self.assertTrue(engine.receiverBehind)
        self.session.dataReceived(next(rest)[:1000])
        self.assertEqual(transport.bufferSize, normal)
        self.assertFalse(engine.receiverBehind)

    def test_shortReadRestartsBulkCount(self) -> None:
        """
        On the way to bulk reading, a shorter read starts the count again
        (TWISTED_SHORT_READ_COST takes back every full read so far): then
        BULK_AFTER_READS full reads in a row are needed.
        """
        self.assertEqual(TWISTED_SHORT_READ_COST, BULK_AFTER_READS)
        transport = self.transport
        assert isinstance(transport, PausingTransport)
        normal = transport.bufferSize
        reads = iter(self.bulkReads(2 * BULK_AFTER_READS))
        for _ in range(BULK_AFTER_READS - 1):
            self.session.dataReceived(next(reads))
            transport.clear()
        read = next(reads)
        self.session.dataReceived(read[:1000])  # short: the count restarts
        self.session.dataReceived(read[1000:])  # short too
        for _ in range(BULK_AFTER_READS - 1):
            self.session.dataReceived(next(reads))
            transport.clear()
        self.assertEqual(transport.bufferSize, normal)
        self.session.dataReceived(next(reads))
        self.assertEqual(transport.bufferSize, BULK_READ_SIZE)
