"""
memux over TLS: the connection tuning reaches the TCP transport and socket
beneath Twisted's TLS layer (`memux.tuning`), the session keeps its writes
small over TLS, and the records of one read are worked on together.
"""

from __future__ import annotations

import socket
from typing import Any

from OpenSSL import SSL
from twisted.internet import defer, reactor
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import alsoProvides

from memux import MultiplexingFactory, _tuning, connectSession
from memux._session import BULK_FLUSH_BYTES, INPUT_STEP_FRAMES
from memux._tuning import (
    BULK_AFTER_READS,
    TLS_FLUSH_BYTES,
    DirectTLSWrite,
    InputSlice,
)
from memux._wire import DataFrame, OpenFrame, PingFrame
from memux.mptcp import pathInfo
from memux.protocol import MemuxProtocol
from memux.settings import DEFAULT_URGENCY, SessionSettings
from memux.test._fakes import (
    MessageRecorder,
    PausingTransport,
    PeerOnTransport,
    TCPLikeTransport,
    factoryOf,
)
from memux.test._helpers import HOSTNAME, Certificates, listenStartingTLS
from memux.tls import clientTLSOptions, serverTLSOptions, tlsServerFactory
from memux.tuning import (
    BULK_NOTSENT_LOWAT,
    BULK_READ_SIZE,
    NOTSENT_LOWAT,
    overTLS,
    socketLayer,
    tcpTransport,
    tuneLikeSession,
)

NOTSENT = getattr(socket, "TCP_NOTSENT_LOWAT", None)


class SocketTCP(TCPLikeTransport):
    """
    A TCP transport in memory over a real (unconnected) TCP socket, with
    Twisted's TCP read size: socket options set through it can be read
    back.
    """

    bufferSize = 64 * 1024

    def __init__(self) -> None:
        super().__init__()
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    def getHandle(self) -> socket.socket:
        return self.socket


def notSent(sock: socket.socket) -> int | None:
    """
    The socket's TCP_NOTSENT_LOWAT, where Linux has it.
    """
    if NOTSENT is None:
        return None
    return sock.getsockopt(socket.IPPROTO_TCP, NOTSENT)


class WrapperTests(SynchronousTestCase):
    """
    `memux.tuning` finds the TCP transport and its socket beneath Twisted's
    TLS layer and other wrappers, and tunes them, not the wrapper.
    """

    def setUp(self) -> None:
        self.certificates = Certificates(self.mktemp())
        self.tcp = SocketTCP()
        self.addCleanup(self.tcp.socket.close)

    def tlsOver(self, protocol: Protocol) -> TLSMemoryBIOProtocol:
        """
        A server-side TLS layer over `self.tcp` carrying ``protocol``.
        """
        options = serverTLSOptions(self.certificates.serverPEM)
        factory = TLSMemoryBIOFactory(
            options, False, Factory.forProtocol(lambda: protocol)
        )
        tls: TLSMemoryBIOProtocol = factory.buildProtocol(None)
        tls.makeConnection(self.tcp)
        return tls

    def test_socketLayerUnderTLS(self) -> None:
        """
        Under a TLS layer (whose ``getHandle()`` is its TLS connection),
        `socketLayer` finds the TCP transport and its socket, and
        `overTLS` tells the TLS layer from the TCP transport.
        """
        tls = self.tlsOver(Protocol())
        self.assertIsNot(tls.getHandle(), self.tcp.socket)
        self.assertEqual(socketLayer(tls), (self.tcp, self.tcp.socket))
        self.assertIs(tcpTransport(tls), self.tcp)
        self.assertTrue(overTLS(tls))
        self.assertFalse(overTLS(self.tcp))

    def test_socketLayerUnderForwardingWrapper(self) -> None:
        """
        A wrapper that passes ``getHandle()`` (and every other attribute)
        on from the transport beneath, as HAProxy's does, is looked
        through: the settings belong to the transport it wraps.
        """
        wrapper = ProtocolWrapper(WrappingFactory(Factory()), Protocol())
        wrapper.makeConnection(self.tcp)
        self.assertIs(wrapper.getHandle(), self.tcp.socket)
        self.assertEqual(socketLayer(wrapper), (self.tcp, self.tcp.socket))
        self.assertIs(tcpTransport(wrapper), self.tcp)
        self.assertFalse(overTLS(wrapper))

    def test_tuneLikeSessionUnderTLS(self) -> None:
        """
        `tuneLikeSession` on a TLS layer (a raw TLS baseline's transport)
        tunes the TCP transport and socket beneath it as it tunes a TCP
        transport, and sets nothing on the TLS layer itself.
        """
        tls = self.tlsOver(Protocol())
        tuneLikeSession(tls, bulk=True)
        self.assertGreaterEqual(self.tcp.SEND_LIMIT, BULK_FLUSH_BYTES)
        self.assertEqual(self.tcp.bufferSize, BULK_READ_SIZE)
        if NOTSENT is not None:
            self.assertEqual(notSent(self.tcp.socket), BULK_NOTSENT_LOWAT)
        self.assertNotIn("SEND_LIMIT", vars(tls))
        self.assertNotIn("bufferSize", vars(tls))

    def test_sessionTunesTCPUnderTLS(self) -> None:
        """
        A memux session over TLS raises the send limit of the TCP transport
        beneath and limits its socket's unsent bytes, switches that limit
        for bulk mode, and keeps its writes to `TLS_FLUSH_BYTES` in bulk
        mode too.
        """
        session = MultiplexingFactory({}, reactor=Clock()).buildProtocol(None)
        self.tlsOver(session)
        self.assertGreaterEqual(self.tcp.SEND_LIMIT, BULK_FLUSH_BYTES)
        if NOTSENT is not None:
            self.assertEqual(notSent(self.tcp.socket), NOTSENT_LOWAT)
        session._core._bulkMode(True)
        if NOTSENT is not None:
            self.assertEqual(notSent(self.tcp.socket), BULK_NOTSENT_LOWAT)
        self.assertEqual(session._core._flushBytes, TLS_FLUSH_BYTES)

    def test_pathInfoSeesSocketUnderTLS(self) -> None:
        """
        `memux.mptcp.pathInfo`, which shares the walk, finds the TCP socket
        beneath the TLS layer, and the TLS layer.
        """
        tls = self.tlsOver(Protocol())
        path = pathInfo(tls)
        self.assertEqual((path.kind, path.tls), ("TCP", True))


def settingsOf(transport: Any) -> dict[str, Any]:
    """
    The settings of a TCP transport (its send limit and read size) and of
    its socket (TCP_NODELAY, TCP_NOTSENT_LOWAT).
    """
    handle: socket.socket = transport.getHandle()
    return {
        "nodelay": handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
        "notsent": notSent(handle),
        "sendLimit": transport.SEND_LIMIT,
        "bufferSize": transport.bufferSize,
    }


class LoopbackTests(TestCase):
    """
    Over real TLS on loopback, a session's TCP connection is tuned as over
    plain TCP.
    """

    async def session(self, tls: bool) -> MemuxProtocol:
        """
        A session to a memux server on 127.0.0.1, over TLS or not.
        """
        server = MultiplexingFactory({})
        factory: Any = server
        client: Any = None
        if tls:
            certificates = Certificates(self.mktemp())
            factory = tlsServerFactory(
                factory, serverTLSOptions(certificates.serverPEM)
            )
            client = clientTLSOptions(HOSTNAME, certificates.caPEM)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            factory
        )
        self.addCleanup(port.stopListening)
        endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        if client is not None:
            endpoint = wrapClientTLS(client, endpoint)
        session = await connectSession(endpoint)
        self.addCleanup(self.closeAll, server, session)
        await session.ping()  # (over TLS: the handshake is done)
        return session

    def closeAll(
        self, server: MultiplexingFactory, client: MemuxProtocol
    ) -> defer.Deferred[list[None]]:
        """
        Close ``client``'s connection; fire once it and every session of
        ``server`` have seen it close.
        """
        sessions = [client, *server.connectedSessions()]
        client.loseConnection()
        return defer.gatherResults([s.whenClosed() for s in sessions])

    @defer.inlineCallbacks
    def test_directWritesOverPlainTCPOnly(self) -> Any:
        """
        A session writes its flushes to the socket itself over plain TCP
        only: over TLS every byte must go through the TLS layer.
        """
        plain = yield defer.ensureDeferred(self.session(False))
        secure = yield defer.ensureDeferred(self.session(True))
        self.assertIs(plain._directSocket, plain.transport.getHandle())
        self.assertIsNone(secure._directSocket)
        self.assertIsNone(plain._tlsWrite)

    @defer.inlineCallbacks
    def test_flushNotHeldOverTLS(self) -> Any:
        """
        Over TLS, what a session flushes is sent in the same turn: neither
        Twisted's TLS layer, which holds small writes until the next turn
        to join them, holds the session's (which are joined already), so
        a flush in the middle of a long read is not kept from the peer
        until the read is done, nor the TCP transport beneath, which would
        send them only when the reactor next polls.
        """
        secure = yield defer.ensureDeferred(self.session(True))
        layer: Any = secure.transport
        yield self.flushReaches(secure, layer.transport)

    def flushReaches(self, session: MemuxProtocol, beneath: Any) -> Any:
        """
        Check that what ``session`` flushes (a PING) leaves at once: sent
        to the socket by the TLS layer's write itself, held neither by that
        layer nor by ``beneath``, its TCP transport; return the PING's
        answer (which proves it was sent).
        """
        direct = session._tlsWrite
        assert isinstance(direct, DirectTLSWrite)
        self.assertFalse(beneath._tempDataLen or beneath.dataBuffer)
        pong = session.ping()
        session._core.flush()
        self.assertEqual((beneath._tempDataLen, beneath.dataBuffer), (0, b""))
        layer: Any = direct._tls
        self.assertFalse(layer._aggregator._buffer)
        return pong

    @defer.inlineCallbacks
    def test_directRecordsQueueBehindHeldOnes(self) -> Any:
        """
        Over TLS, a flush's records are sent directly only while the TCP
        transport holds none: else they go behind what it holds, so the
        peer gets every record in order.
        """
        secure = yield defer.ensureDeferred(self.session(True))
        beneath: Any = secure.transport
        beneath = beneath.transport
        direct = secure._tlsWrite
        assert isinstance(direct, DirectTLSWrite)
        # A first PING written through the TLS layer's plain write: its
        # record waits in the TCP transport for the reactor's next turn.
        secure._tlsWrite = direct._plain
        first = secure.ping()
        secure._core.flush()
        secure._tlsWrite = direct
        held = beneath._tempDataLen
        self.assertGreater(held, 0)
        second = secure.ping()
        secure._core.flush()
        self.assertGreater(beneath._tempDataLen, held)
        rtts = yield defer.gatherResults([first, second])
        self.assertEqual(len(rtts), 2)

    @defer.inlineCallbacks
    def test_flushNotHeldAfterStartTLS(self) -> Any:
        """
        On a TCP connection that started TLS on itself (`ssl.Port`'s), the
        TLS layer is the transport's protocol: found there too, and the
        session's flushes are sent at once as well.
        """
        certificates = Certificates(self.mktemp())
        server: Any = MultiplexingFactory({})
        port = listenStartingTLS(self, reactor, server, certificates)
        endpoint = wrapClientTLS(
            clientTLSOptions(HOSTNAME, certificates.caPEM),
            TCP4ClientEndpoint(reactor, "127.0.0.1", port),
        )
        client = yield connectSession(endpoint)
        self.addCleanup(self.closeAll, server, client)
        yield client.ping()
        [session] = server.connectedSessions()
        self.assertTrue(session.transport.TLS)
        yield self.flushReaches(session, session.transport)

    @defer.inlineCallbacks
    def test_tunedAsOverTCP(self) -> Any:
        """
        The TCP transport beneath a session's TLS layer has the send limit,
        read size and socket options of a session's plain TCP connection.
        """
        plain = yield defer.ensureDeferred(self.session(False))
        secure = yield defer.ensureDeferred(self.session(True))
        self.assertIsInstance(secure.transport, TLSMemoryBIOProtocol)
        beneath: Any = secure.transport
        beneath = beneath.transport
        self.assertEqual(settingsOf(beneath), settingsOf(plain.transport))
        self.assertTrue(settingsOf(beneath)["nodelay"])
        self.assertGreaterEqual(settingsOf(beneath)["sendLimit"], BULK_FLUSH_BYTES)


class FakeEngine:
    """
    An OpenSSL connection's part that `DirectTLSWrite` uses: ``send``
    "encrypts" into a memory BIO that ``bio_read`` empties.
    """

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.bio = b""

    def send(self, data: bytes) -> int:
        """
        Take all of ``data`` as one record, or raise ``error``.
        """
        if self.error is not None:
            raise self.error
        self.bio += b"<" + data + b">"
        return len(data)

    def bio_read(self, size: int) -> bytes:
        """
        At most ``size`` bytes of the records made so far.
        """
        taken, self.bio = self.bio[:size], self.bio[size:]
        return taken


class FakeLayer:
    """
    What `DirectTLSWrite` reads of Twisted's TLS layer, in a state where it
    may write directly: handshake done, nothing held.
    """

    _handshakeDone = True
    _lostTLSConnection = False
    disconnecting = False

    def __init__(self, engine: FakeEngine) -> None:
        self._tlsConnection = engine
        self._appSendBuffer: list[bytes] = []
        self.transport = FakeTCP()


class FakeTCP:
    """
    A TCP transport of Twisted's as `DirectTLSWrite` sees it: what it
    holds, and what was written to it.
    """

    _tempDataLen = 0
    dataBuffer = b""
    connected = 1
    disconnecting = False
    _writeDisconnecting = False

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        """
        Keep ``data``, as the transport would until the reactor's turn.
        """
        self.written.append(data)


class DirectTLSWriteTests(SynchronousTestCase):
    """
    `DirectTLSWrite` sends a small flush's records itself only where that
    keeps every byte in order, and leaves everything else to the TLS
    layer's plain write and the TCP transport.
    """

    def writer(
        self, error: Exception | None = None
    ) -> tuple[DirectTLSWrite, FakeLayer, socket.socket, list[bytes]]:
        """
        A direct write over fakes and a socket pair; its layer, the pair's
        other end, and what went to the plain write.
        """
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        ours.setblocking(False)
        theirs.setblocking(False)
        layer = FakeLayer(FakeEngine(error))
        plain: list[bytes] = []
        write = DirectTLSWrite(layer, layer.transport, ours, plain.append)
        return write, layer, theirs, plain

    def test_recordsSentAtOnce(self) -> None:
        """
        With nothing held anywhere, the records of a flush go to the socket
        in the call, none to the transport or the plain write.
        """
        write, layer, theirs, plain = self.writer()
        write(b"flush")
        self.assertEqual(theirs.recv(100), b"<flush>")
        self.assertEqual((plain, layer.transport.written), ([], []))

    def test_kernelsRestToTransport(self) -> None:
        """
        What the kernel does not take goes to the TCP transport, whole.
        """
        write, layer, theirs, plain = self.writer()
        sock = write._socket
        while True:
            try:
                sock.send(b"x" * 65536)
            except BlockingIOError:
                break
        write(b"flush")
        self.assertEqual(layer.transport.written, [b"<flush>"])
        self.assertEqual(plain, [])

    def test_heldDataKeepsItsPlace(self) -> None:
        """
        While the TLS layer or the TCP transport holds data, or before the
        handshake is done, a flush goes to the plain write (behind what is
        held), never straight to the socket.
        """
        states: list[tuple[str, str, object]] = [
            ("layer", "_appSendBuffer", [b"held"]),
            ("layer", "_handshakeDone", False),
            ("layer", "_lostTLSConnection", True),
            ("layer", "disconnecting", True),
            ("tcp", "_tempDataLen", 4),
            ("tcp", "dataBuffer", b"held"),
            ("tcp", "connected", 0),
            ("tcp", "disconnecting", True),
            ("tcp", "_writeDisconnecting", True),
        ]
        for owner, name, value in states:
            write, layer, theirs, plain = self.writer()
            setattr(layer if owner == "layer" else layer.transport, name, value)
            write(b"flush")
            self.assertEqual(plain, [b"flush"], name)
            self.assertRaises(BlockingIOError, theirs.recv, 100)

    def test_bulkThroughLayer(self) -> None:
        """
        A flush larger than `DIRECT_WRITE_BYTES` (bulk data) goes to the
        plain write, as over plain TCP it goes through the transport.
        """
        write, layer, theirs, plain = self.writer()
        data = b"x" * (_tuning.DIRECT_WRITE_BYTES + 1)
        write(data)
        self.assertEqual(plain, [data])
        self.assertRaises(BlockingIOError, theirs.recv, 100)

    def test_engineErrorLeftToLayer(self) -> None:
        """
        When the TLS engine refuses the data (it wants to read first, or
        has failed), the plain write gets it, to meet the same state and
        handle it as the layer always does; nothing is sent.
        """
        for error in (SSL.WantReadError(), SSL.Error("failed")):
            write, layer, theirs, plain = self.writer(error)
            write(b"flush")
            self.assertEqual(plain, [b"flush"])
            self.assertEqual(layer.transport.written, [])
            self.assertRaises(BlockingIOError, theirs.recv, 100)

    def test_onlyOverTwistedTCP(self) -> None:
        """
        Over a transport that is not a TCP connection of Twisted's (here a
        memory transport) there is no direct write: the session gets the
        TLS layer's plain write.
        """
        server = TLSMemoryBIOFactory(
            serverTLSOptions(Certificates(self.mktemp()).serverPEM),
            False,
            Factory.forProtocol(Protocol),
        )
        layer = server.buildProtocol(None)
        assert layer is not None
        layer.makeConnection(StringTransport())
        self.assertIsNone(DirectTLSWrite.over(layer, layer.write))
        write = _tuning.tlsWriter(layer)
        self.assertIsNotNone(write)
        self.assertNotIsInstance(write, DirectTLSWrite)


class RecordTransport(PausingTransport):
    """
    A connection that says it is TLS (as a TCP transport that started TLS
    does), counting the writes it is given.
    """

    def __init__(self) -> None:
        super().__init__()
        alsoProvides(self, ISSLTransport)
        self.writes: list[int] = []

    def write(self, data: bytes) -> None:
        self.writes.append(len(data))
        super().write(data)

    def writeSequence(self, data: Any) -> None:
        joined = b"".join(data)
        self.writes.append(len(joined))
        PausingTransport.write(self, joined)


class CountingTransport(PausingTransport):
    """
    A plain TCP-like connection counting the writes it is given.
    """

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[int] = []

    def write(self, data: bytes) -> None:
        self.writes.append(len(data))
        super().write(data)

    def writeSequence(self, data: Any) -> None:
        joined = b"".join(data)
        self.writes.append(len(joined))
        super().write(joined)


class RecordsTests(SynchronousTestCase):
    """
    Over TLS, Twisted hands the session a read one 16 KiB record at a time;
    the session feeds the first at once and the rest of the read together
    on the next reactor turn.  Over plain TCP each read is fed at once.
    """

    def peer(self, transport: Any, **settings: Any) -> PeerOnTransport:
        """
        A server session on ``transport`` with a recording ``rec`` service.
        """
        self.clock = Clock()
        self.recorders: list[MessageRecorder] = []
        factory = MultiplexingFactory(
            {b"rec": factoryOf(self.recorders, MessageRecorder)},
            reactor=self.clock,
            settings=SessionSettings(**settings),
        )
        return PeerOnTransport(factory.buildProtocol(None), self.clock, transport)

    def pings(self, peer: PeerOnTransport, count: int) -> list[bytes]:
        """
        Deliver ``count`` PINGs, each in a read (a record) of its own, in
        one reactor turn; return the payloads of the answers written so far.
        """
        for n in range(count):
            peer.session.dataReceived(PingFrame(b"%d" % n).encode())
        return [f.payload for f in peer.read() if isinstance(f, PingFrame)]

    def test_recordsOfOneReadTogether(self) -> None:
        """
        Over TLS, the first record of a turn is answered at once; the later
        ones are answered together, in one write, when the reactor turns.
        """
        transport = RecordTransport()
        peer = self.peer(transport)
        del transport.writes[:]
        self.assertEqual(self.pings(peer, 4), [b"0"])
        self.assertEqual(len(transport.writes), 1)
        self.clock.advance(0)
        answers = [f.payload for f in peer.read() if isinstance(f, PingFrame)]
        self.assertEqual(answers, [b"1", b"2", b"3"])
        self.assertEqual(len(transport.writes), 2)

    def test_plainTCPReadsAtOnce(self) -> None:
        """
        Over plain TCP, each read is answered as it is fed, one write each,
        with nothing left for a later turn.
        """
        transport = CountingTransport()
        peer = self.peer(transport)
        del transport.writes[:]
        self.assertEqual(self.pings(peer, 4), [b"0", b"1", b"2", b"3"])
        self.assertEqual(len(transport.writes), 4)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def heldPings(self, steps: int) -> tuple[PeerOnTransport, list[int]]:
        """
        A session whose writes go straight to its TLS layer (as
        `tlsWriter`'s do, here a transport counting them), fed one read of
        ``steps`` steps of PINGs; slices of input work end by their step
        count only (no time limit, so that this runs alike on any machine).
        Return it, and the writes so far (after the read's first step).
        """
        self.patch(_tuning, "INPUT_SLICE_SECONDS", 3600.0)
        self.patch(_tuning, "OUTPUT_DELAY_SECONDS", 3600.0)
        transport = CountingTransport()
        peer = self.peer(transport)
        peer.session._tlsWrite = transport.write
        del transport.writes[:]
        count = steps * INPUT_STEP_FRAMES
        peer.session.dataReceived(
            b"".join(PingFrame(b"%d" % n).encode() for n in range(count))
        )
        return peer, transport.writes

    def answers(self, peer: PeerOnTransport) -> list[bytes]:
        """
        The payloads of the PING answers written since the last call.
        """
        return [f.payload for f in peer.read() if isinstance(f, PingFrame)]

    def test_stepsOfHeldInputWrittenTogether(self) -> None:
        """
        Over TLS, the answers of a read's first step are written at once;
        those of the steps of held input that follow, in one write when
        the held input is done, not one write (one TLS record) per step.
        """
        peer, writes = self.heldPings(5)
        self.assertEqual(len(writes), 1)
        self.assertEqual(len(self.answers(peer)), INPUT_STEP_FRAMES)
        while self.clock.getDelayedCalls():
            self.clock.advance(0)
        self.assertEqual(len(writes), 2)
        expected = [b"%d" % n for n in range(INPUT_STEP_FRAMES, 5 * INPUT_STEP_FRAMES)]
        self.assertEqual(self.answers(peer), expected)
        # Nothing left waiting for a slice's end, holding the session.
        self.assertEqual(InputSlice.atEnd, [])

    def test_sliceEndWritesGathered(self) -> None:
        """
        Each slice of input work (a reactor turn's share, here two steps)
        ends with one write of what its steps gathered, so the reactor
        sends it when it next polls, while the rest of the input waits
        for later slices.
        """
        self.patch(_tuning, "INPUT_SLICE_STEPS", 2)
        peer, writes = self.heldPings(7)
        self.assertEqual(len(writes), 1)
        while self.clock.getDelayedCalls():
            self.clock.advance(0)
        # (6 held steps: 3 slices.)
        self.assertEqual(len(writes), 1 + 3)
        self.assertEqual(
            self.answers(peer), [b"%d" % n for n in range(7 * INPUT_STEP_FRAMES)]
        )

    def test_gatheredWrittenFirst(self) -> None:
        """
        What steps gathered is written before any other write (nothing is
        reordered) and before the connection is closed; an abort discards
        it with the rest of what is unsent.
        """
        transport = CountingTransport()
        peer = self.peer(transport)
        session = peer.session
        session._tlsWrite = transport.write
        host = session._core.host
        del transport.writes[:]
        session._gather(b"a")
        session._gather(b"bb")
        host.write([b"ccc"])
        self.assertEqual(transport.writes, [3, 3])  # (b"abb", then b"ccc")
        self.assertEqual(transport.value()[-6:], b"abbccc")
        session._gather(b"dddd")
        host.closeConnection()
        self.assertEqual(transport.writes, [3, 3, 4])
        transport.writes.clear()
        session._gather(b"eeeee")
        host.abortConnection()
        self.assertIsNone(session._gathered)
        # (Nor is the session left waiting for a slice's end, held there.)
        self.assertEqual(InputSlice.atEnd, [])
        session._writeGathered()
        self.assertEqual(transport.writes, [])

    def test_recordsBeforeEndDelivered(self) -> None:
        """
        Records that arrived before the connection was lost, still waiting
        for the turn, are delivered before the channel hears of the end.
        """
        peer = self.peer(RecordTransport())
        peer.session.dataReceived(OpenFrame(1, b"rec").encode())
        peer.session.dataReceived(DataFrame(1, b"first", end=True).encode())
        peer.session.dataReceived(DataFrame(1, b"second", end=True).encode())
        peer.session.connectionLost(Failure(ConnectionDone()))
        [recorder] = self.recorders
        self.assertEqual(recorder.messages, [b"first", b"second"])
        self.assertIsNotNone(recorder.lost)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_bulkReadingOverTLS(self) -> None:
        """
        Reads whose records add up to the read size (less what a read's
        records lose to framing and cut-off) count as full: after
        `BULK_AFTER_READS` of them the TCP transport reads in bulk.
        """
        transport = RecordTransport()
        peer = self.peer(
            transport, channelCredit=32 * 1024 * 1024, sessionCredit=64 * 1024 * 1024
        )
        peer.session.dataReceived(OpenFrame(1, b"rec").encode())
        self.clock.advance(0)
        payload = b"x" * 16000
        stream = b"".join(
            DataFrame(1, payload, end=True).encode()
            for _ in range(4 * BULK_AFTER_READS)
        )
        # Each read: four records of about 16 KB, under the 64 KiB read
        # size but more than a record less than it.
        records = [stream[i : i + 16000] for i in range(0, len(stream), 16000)]
        for n in range(BULK_AFTER_READS):
            self.assertEqual(transport.bufferSize, 64 * 1024)
            for record in records[4 * n : 4 * n + 4]:
                peer.session.dataReceived(record)
            self.clock.advance(0)
        self.assertEqual(transport.bufferSize, BULK_READ_SIZE)

    def test_latencyKeepsTLSReadsSmall(self) -> None:
        """
        Over TLS, while an urgent channel is open (latency mode), full reads
        no longer switch the TCP transport to bulk reads, and reading in
        bulk already stops; when no channel is urgent any more, reads go
        back to bulk.
        """
        transport = RecordTransport()
        peer = self.peer(
            transport, channelCredit=32 * 1024 * 1024, sessionCredit=64 * 1024 * 1024
        )
        peer.session.dataReceived(OpenFrame(1, b"rec").encode())
        peer.session.dataReceived(OpenFrame(3, b"rec").encode())
        self.clock.advance(0)
        core = peer.session._core
        payload = b"x" * 16000
        stream = b"".join(
            DataFrame(1, payload, end=True).encode()
            for _ in range(8 * BULK_AFTER_READS)
        )
        records = [stream[i : i + 16000] for i in range(0, len(stream), 16000)]

        def fullReads(first: int, count: int) -> None:
            for n in range(first, first + count):
                for record in records[4 * n : 4 * n + 4]:
                    peer.session.dataReceived(record)
                self.clock.advance(0)

        fullReads(0, BULK_AFTER_READS)
        self.assertEqual(transport.bufferSize, BULK_READ_SIZE)
        core.channels[3].setPriority(0)  # urgent: latency mode
        self.clock.advance(0)
        self.assertTrue(core.latency)
        self.assertEqual(transport.bufferSize, 64 * 1024)
        fullReads(BULK_AFTER_READS, BULK_AFTER_READS)
        self.assertEqual(transport.bufferSize, 64 * 1024)
        core.channels[3].setPriority(DEFAULT_URGENCY)  # not urgent now
        self.clock.advance(0)
        self.assertFalse(core.latency)
        self.assertEqual(transport.bufferSize, BULK_READ_SIZE)

    def test_smallWritesInBulkOverTLS(self) -> None:
        """
        Over TLS, a bulk sender's writes to the connection stay within
        `TLS_FLUSH_BYTES` (and a few frame headers) once the session is in
        bulk mode, and the connection takes `BULK_READ_SIZE` before it
        pauses the session (several writes per send); a small write ends
        bulk mode and sets the connection's size back.  Over plain TCP the
        writes grow to the bulk flush size and the connection's size stays.
        """
        for transport, limit in (
            (RecordTransport(), TLS_FLUSH_BYTES + 1024),
            (CountingTransport(), None),
        ):
            peer = self.peer(transport)
            peer.session.dataReceived(OpenFrame(1, b"rec").encode())
            core = peer.session._core
            channel = core.channels[1]
            for _ in range(200):
                channel.write(b"y" * 65536)
                self.clock.advance(0)
                transport.send()
            self.assertTrue(core.bulk)
            del transport.writes[:]
            for _ in range(50):
                for _ in range(8):
                    channel.write(b"y" * 65536)
                self.clock.advance(0)
                transport.send()
            if limit is None:
                self.assertGreater(max(transport.writes), 2 * TLS_FLUSH_BYTES)
                self.assertEqual(transport.bufferSize, 64 * 1024)
            else:
                self.assertLessEqual(max(transport.writes), limit)
                self.assertEqual(transport.bufferSize, BULK_READ_SIZE)
            while core.engine.hasDataToSend():
                transport.send()
                self.clock.advance(0)
            channel.write(b"small")
            self.clock.advance(0)
            self.assertFalse(core.bulk)
            self.assertEqual(transport.bufferSize, 64 * 1024)
