"""
Tests for the defences against hostile peers: flood limits in the engine
(frames that do no work, rapid reset); keepalive, the write timeout (a peer
that does not read) and the handshake timeout (slowloris, TLS included) in
the Twisted layer; and the ``--keepalive`` option of ``twistd memux``.  Each
attack is driven from a crafted peer; see doc/security.rst for the table of
attacks and defences.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IConsumer, ITransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport, StringTransportWithDisconnection
from twisted.logger import LogLevel, capturedLogs
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer_only

from memux import _tuning
from memux._engine import (
    ChannelOpened,
    ChannelReset,
    DataReceived,
    Event,
    MemuxEngine,
    MessagesDropped,
    SessionSettings,
    SessionTerminated,
)
from memux._session import (
    INPUT_STEP_FRAMES,
    KEEPALIVE_PAYLOAD,
    LOAD_BUDGET_PERIOD,
    WRITE_HIGH_WATER,
)
from memux._tuning import INPUT_SLICE_STEPS
from memux._wire import (
    ChannelCreditFrame,
    CreditFrame,
    DataFrame,
    DropFrame,
    ErrorCode,
    Frame,
    FrameDecoder,
    GoAwayFrame,
    OpenFrame,
    PingFrame,
    Preface,
    ResetFrame,
    Settings,
    UnknownFrame,
    encodePreface,
)
from memux.error import SessionLost
from memux.interfaces import IChannelTransport
from memux.protocol import (
    LOGGED_CHANNEL_ENDINGS,
    ChannelTransport,
    MemuxProtocol,
    MultiplexingFactory,
    connectSession,
)
from memux.services import Chargen, Echo, builtinServices
from memux.tap import Options
from memux.test._fakes import (
    GREEDY,
    MessageCollector,
    MessageRecorder,
    PeerOnTransport,
    RawPeer,
    Recorder,
    reactorTurn,
)
from memux.test._helpers import HOSTNAME, Certificates
from memux.testing import connectedSessions
from memux.tls import clientTLSOptions, serverTLSOptions, tlsServerFactory

LIMIT = SessionSettings().maxUselessFrames
PER_FRAME = SessionSettings().usefulBytesPerFrame


def terminations(events: list[Event]) -> list[SessionTerminated]:
    """
    The SessionTerminated events among C{events}.
    """
    return [e for e in events if isinstance(e, SessionTerminated)]


def goAways(frames: list[Frame]) -> list[GoAwayFrame]:
    """
    The GOAWAY frames among C{frames}.
    """
    return [f for f in frames if isinstance(f, GoAwayFrame)]


class FloodLimitTests(SynchronousTestCase):
    """
    Frames that do no work spend an allowance (maxUselessFrames) that DATA
    payload refills; past it the session ends with GOAWAY EXCESSIVE_LOAD.
    """

    def assertExcessiveLoad(self, raw: RawPeer, events: list[Event]) -> None:
        """
        The session ended with EXCESSIVE_LOAD and the peer is told so.
        """
        ended = terminations(events)
        self.assertEqual([e.code for e in ended], [ErrorCode.EXCESSIVE_LOAD])
        self.assertFalse(ended[0].remote)
        self.assertTrue(raw.engine.terminated)
        frames = raw.read()
        self.assertEqual([g.code for g in goAways(frames)], [ErrorCode.EXCESSIVE_LOAD])

    def test_pingFlood(self) -> None:
        """
        maxUselessFrames PINGs are answered; one more ends the session with
        GOAWAY EXCESSIVE_LOAD, and no more answers are queued after it.
        """
        raw = RawPeer(MemuxEngine(False))
        events = raw.send(*[PingFrame(b"p")] * LIMIT)
        self.assertEqual(terminations(events), [])
        answers = [f for f in raw.read() if isinstance(f, PingFrame)]
        self.assertEqual(len(answers), LIMIT)
        events = raw.send(*[PingFrame(b"p")] * 10)
        self.assertExcessiveLoad(raw, events)
        self.assertEqual(raw.engine.uselessFrames, LIMIT + 1)

    def test_pingFloodInOneRead(self) -> None:
        """
        A flood in one piece is cut short at the limit: frames after the
        one that broke it are not even looked at.
        """
        raw = RawPeer(MemuxEngine(False))
        events = raw.send(*[PingFrame(b"p")] * (3 * LIMIT))
        self.assertExcessiveLoad(raw, events)
        self.assertEqual(raw.engine.uselessFrames, LIMIT + 1)

    def test_dataRefillsAllowance(self) -> None:
        """
        A peer doing useful work earns more: a channel carrying a PING for
        every usefulBytesPerFrame payload bytes runs far past
        maxUselessFrames PINGs, and all its data arrives.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        events = raw.send(OpenFrame(1, b"svc"))
        self.assertIsInstance(events[0], ChannelOpened)
        received = 0
        chunk = b"x" * PER_FRAME
        for _ in range(3 * LIMIT):
            events = raw.send(DataFrame(1, chunk), PingFrame(b"p"))
            for e in events:
                self.assertNotIsInstance(e, SessionTerminated)
                if isinstance(e, DataReceived):
                    received += len(e.data)
                    engine.consumed(1, len(e.data))
            raw.read()
        self.assertFalse(engine.terminated)
        self.assertEqual(received, 3 * LIMIT * PER_FRAME)

    def test_refillIsCapped(self) -> None:
        """
        Useful work earns at most maxUselessFrames: a peer cannot bank a
        bigger burst by sending a lot of data first.
        """
        settings = SessionSettings(maxUselessFrames=10, usefulBytesPerFrame=1)
        engine = MemuxEngine(False, settings)
        raw = RawPeer(engine)
        raw.send(OpenFrame(1, b"svc"), DataFrame(1, b"x" * 1000))
        self.assertEqual(terminations(raw.send(*[PingFrame()] * 10)), [])
        self.assertExcessiveLoad(raw, raw.send(PingFrame()))

    def test_refillLoadBudget(self) -> None:
        """
        refillLoadBudget (called by the Twisted layer on a clock) gives the
        full allowance back.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        raw.send(*[PingFrame()] * LIMIT)
        engine.refillLoadBudget()
        self.assertEqual(terminations(raw.send(*[PingFrame()] * LIMIT)), [])
        self.assertExcessiveLoad(raw, raw.send(PingFrame()))

    def test_pingAcksFree(self) -> None:
        """
        PING answers cost the peer nothing from the allowance: they demand
        no work of us.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        raw.send(*[PingFrame(b"a", ack=True)] * (2 * LIMIT))
        self.assertFalse(engine.terminated)
        self.assertEqual(engine.uselessFrames, 0)

    def test_emptyDataFlood(self) -> None:
        """
        Empty DATA frames without flags are useless: past the limit the
        session ends with EXCESSIVE_LOAD.
        """
        raw = RawPeer(MemuxEngine(False))
        raw.send(OpenFrame(1, b"svc"))
        self.assertEqual(terminations(raw.send(*[DataFrame(1)] * LIMIT)), [])
        self.assertExcessiveLoad(raw, raw.send(DataFrame(1)))

    def test_emptyFramesWithFlagsAreWork(self) -> None:
        """
        Empty DATA frames that open a channel, end a message (an empty
        message) or carry FIN do something, and are not counted.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        raw.send(DataFrame(1, open=True))
        raw.send(*[DataFrame(1, end=True)] * 10)
        raw.send(DataFrame(1, fin=True))
        self.assertEqual(engine.uselessFrames, 0)

    def test_sessionCreditFlood(self) -> None:
        """
        Session CREDIT frames that do not raise the limit are useless.
        """
        raw = RawPeer(MemuxEngine(False))
        limit = Settings().initialSessionCredit
        self.assertEqual(terminations(raw.send(*[CreditFrame(0, limit)] * LIMIT)), [])
        self.assertExcessiveLoad(raw, raw.send(CreditFrame(0, limit)))

    def test_channelCreditFlood(self) -> None:
        """
        Channel CREDIT frames that do not raise the channel's limit are
        useless; ones that raise it are not counted.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        raw.send(OpenFrame(1, b"svc"))
        limit = Settings().initialChannelCredit
        raw.send(*[CreditFrame(1, limit + i) for i in range(1, 2 * LIMIT)])
        self.assertEqual(engine.uselessFrames, 0)
        raw.send(*[CreditFrame(1, limit)] * LIMIT)
        self.assertFalse(engine.terminated)
        self.assertExcessiveLoad(raw, raw.send(CreditFrame(1, limit)))

    def test_channelsFlood(self) -> None:
        """
        CHANNELS frames that do not raise the channel-count limit are
        useless.
        """
        raw = RawPeer(MemuxEngine(False))
        limit = Settings().initialMaxChannels
        self.assertEqual(
            terminations(raw.send(*[ChannelCreditFrame(limit)] * LIMIT)), []
        )
        self.assertExcessiveLoad(raw, raw.send(ChannelCreditFrame(limit)))

    def test_unknownFrameFlood(self) -> None:
        """
        Frames of unknown types are ignored, but counted: past the limit
        the session ends with EXCESSIVE_LOAD.
        """
        raw = RawPeer(MemuxEngine(False))
        unknown = UnknownFrame(0xE, 0, 0, b"")
        self.assertEqual(terminations(raw.send(*[unknown] * LIMIT)), [])
        self.assertExcessiveLoad(raw, raw.send(unknown))

    def test_repeatedGoAwayFlood(self) -> None:
        """
        GOAWAY frames repeating the last one are useless.
        """
        raw = RawPeer(MemuxEngine(False))
        goAway = GoAwayFrame(0, ErrorCode.NO_ERROR, "")
        self.assertEqual(terminations(raw.send(*[goAway] * (LIMIT + 1))), [])
        self.assertExcessiveLoad(raw, raw.send(goAway))

    def test_rapidReset(self) -> None:
        """
        Rapid reset (CVE-2023-44487): channels the peer opens and resets
        before we sent anything on them are counted; past the limit the
        session ends with EXCESSIVE_LOAD.
        """
        raw = RawPeer(MemuxEngine(False))
        cid = 1
        for _ in range(LIMIT):
            events = raw.send(OpenFrame(cid, b"svc"), ResetFrame(cid, ErrorCode.CANCEL))
            self.assertEqual(terminations(events), [])
            raw.read()
            cid += 2
        events = raw.send(OpenFrame(cid, b"svc"), ResetFrame(cid, ErrorCode.CANCEL))
        self.assertExcessiveLoad(raw, events)

    def test_resetRacingCloseIsFree(self) -> None:
        """
        A RESET that crosses our close of the channel (the peer closed, our
        answer reached it after its FIN, it answered with RESET NO_ERROR as
        TCP answers data after close() with RST) is the normal race of a
        closing channel, not a frame that does no work: any number of
        channels closing so cost the peer nothing.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        cid = 1
        for _ in range(2 * LIMIT):
            raw.send(OpenFrame(cid, b"svc"), DataFrame(cid, b"q", end=True, fin=True))
            engine.sendData(cid, b"a", True)
            engine.closeChannel(cid)
            raw.read()
            self.assertFalse(engine.isOpen(cid))
            events = raw.send(ResetFrame(cid, ErrorCode.NO_ERROR, "closed"))
            self.assertEqual(terminations(events), [])
            cid += 2
        self.assertEqual(engine.uselessFrames, 0)

    def test_lateFrameFlood(self) -> None:
        """
        Frames for a closed channel (RESET, CREDIT, DROP) beyond the one per
        closed channel that may race its close are frames that do no work:
        past the limit the session ends with EXCESSIVE_LOAD.
        """
        for late in (
            ResetFrame(1, ErrorCode.CANCEL),
            CreditFrame(1, 1 << 30),
            DropFrame(1, 1),
        ):
            engine = MemuxEngine(False)
            raw = RawPeer(engine)
            raw.send(OpenFrame(1, b"svc", lossy=True), DataFrame(1, fin=True))
            engine.closeChannel(1)
            raw.read()
            self.assertFalse(engine.isOpen(1))
            self.assertEqual(terminations(raw.send(*[late] * (LIMIT + 1))), [])
            self.assertExcessiveLoad(raw, raw.send(late))

    def test_dropFlood(self) -> None:
        """
        DROP frames that tell nothing new (no data since the last DROP: a
        sender adds up its discards until its next data goes out) are frames
        that do no work; DROPs between data are not.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        raw.send(OpenFrame(1, b"svc", lossy=True), DropFrame(1, 1))
        self.assertEqual(engine.uselessFrames, 0)
        self.assertEqual(terminations(raw.send(*[DropFrame(1, 1)] * LIMIT)), [])
        self.assertExcessiveLoad(raw, raw.send(DropFrame(1, 1)))
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        raw.send(OpenFrame(1, b"svc", lossy=True))
        for _ in range(2 * LIMIT):
            events = raw.send(DataFrame(1, b"m", end=True), DropFrame(1, 2))
            self.assertEqual(events[-1], MessagesDropped(1, 2))
            engine.consumed(1, 1)
            raw.read()
        self.assertEqual(engine.uselessFrames, 0)

    def test_refusedOpenStorm(self) -> None:
        """
        Channels the application refuses (no such service) are counted as
        work for nothing, as rapid resets are: past the limit the session
        ends with EXCESSIVE_LOAD.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        cid = 1
        for _ in range(LIMIT):
            events = raw.send(OpenFrame(cid, b"nothing"))
            self.assertEqual(terminations(events), [])
            engine.refuseChannel(cid, "no service")
            raw.read()
            cid += 2
        raw.send(OpenFrame(cid, b"nothing"))
        engine.refuseChannel(cid, "no service")
        self.assertExcessiveLoad(raw, engine.popEvents())

    def test_tinyCreditIncrements(self) -> None:
        """
        Credit raised a byte at a time (CVE-2019-9511/9513 class) buys a
        byte at a time: each CREDIT frame earns one DATA frame of one byte,
        never more output, and moving payload it is work, so it does not
        end the session; the credit we grant is never so small (half a
        window at least, see CreditWindowTests).
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        raw.send(OpenFrame(1, b"svc"))
        raw.read()
        engine.sendData(1, b"x" * 200000)
        limit = sum(len(f.data) for f in raw.read() if isinstance(f, DataFrame))
        for _ in range(2 * LIMIT):
            limit += 1
            events = raw.send(CreditFrame(1, limit))
            self.assertEqual(terminations(events), [])
            frames = raw.read()
            self.assertEqual(
                [(type(f), len(f.data)) for f in frames if isinstance(f, DataFrame)],
                [(DataFrame, 1)],
            )
            self.assertEqual(len(frames), 1)

    def test_resetAfterAnswerIsWork(self) -> None:
        """
        A channel reset after we answered on it is ordinary cancellation,
        not counted; a request with payload earns its own reset.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        cid = 1
        for _ in range(2 * LIMIT):
            raw.send(OpenFrame(cid, b"svc"))
            engine.sendData(cid, b"answer")
            raw.read()
            events = raw.send(ResetFrame(cid, ErrorCode.CANCEL))
            self.assertIsInstance(events[-1], ChannelReset)
            cid += 2
        self.assertEqual(engine.uselessFrames, 0)
        for _ in range(2 * LIMIT):
            raw.send(
                DataFrame(cid, b"r" * PER_FRAME, open=True),
                ResetFrame(cid, ErrorCode.CANCEL),
            )
            raw.read()
            cid += 2
        self.assertFalse(engine.terminated)

    def test_channelAlongsideFloodBelowLimit(self) -> None:
        """
        A flood below the limit does not disturb a well-behaved channel:
        its messages arrive whole and its answers go out.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        raw.send(OpenFrame(1, b"svc"))
        events = raw.send(
            *[PingFrame()] * (LIMIT // 2),
            DataFrame(1, b"hello", end=True),
            *[DataFrame(1)] * (LIMIT // 2 - 1),
        )
        self.assertIn(b"hello", [e.data for e in events if isinstance(e, DataReceived)])
        engine.sendData(1, b"world", endMessage=True)
        frames = raw.read()
        self.assertIn(DataFrame(1, b"world", end=True), frames)
        self.assertFalse(engine.terminated)

    def test_controlBoundStillHolds(self) -> None:
        """
        With the allowance raised out of reach, the older defence still
        holds: PING answers the peer never reads are bounded by
        MAX_CONTROL_BYTES and the session ends with EXCESSIVE_LOAD.
        """
        engine = MemuxEngine(False, SessionSettings(maxUselessFrames=10**9))
        raw = RawPeer(engine)
        events = raw.send(*[PingFrame(b"12345678")] * 100000)
        self.assertEqual(
            [e.code for e in terminations(events)], [ErrorCode.EXCESSIVE_LOAD]
        )
        self.assertLess(len(engine.dataToSend(1 << 40)), 1 << 20)

    def test_settingsValidated(self) -> None:
        """
        maxUselessFrames and usefulBytesPerFrame must be positive,
        keepAliveInterval positive or None.
        """
        self.assertRaises(ValueError, SessionSettings, maxUselessFrames=0)
        self.assertRaises(ValueError, SessionSettings, usefulBytesPerFrame=0)
        self.assertRaises(ValueError, SessionSettings, keepAliveInterval=0)
        self.assertRaises(ValueError, SessionSettings, keepAliveInterval=-1)
        self.assertIsNone(SessionSettings().keepAliveInterval)


class PeerWire(PeerOnTransport):
    """
    A MemuxProtocol (server side) on a StringTransport, with a Clock, fed
    crafted frames as a hostile or dead peer would send them.
    """

    def __init__(self, settings: SessionSettings | None = None) -> None:
        self.recorders: list[Recorder] = []

        def build() -> Recorder:
            r = Recorder()
            self.recorders.append(r)
            return r

        clock = Clock()
        session = MemuxProtocol(
            {b"svc": Factory.forProtocol(build)}, settings=settings, reactor=clock
        )
        super().__init__(session, clock, preface=Settings())

    def send(self, *frames: Frame) -> None:
        """
        Deliver C{frames} in one piece and run the zero-delay calls.
        """
        self.session.dataReceived(b"".join(f.encode() for f in frames))
        self.clock.advance(0)


class CloseRaceChurnTests(SynchronousTestCase):
    """
    Channels closed by both sides at once, thousands in a row, as a client
    does that sends a request and closes without waiting for the answer:
    no frame of theirs counts as one that does no work.
    """

    def test_writeAndCloseToEcho(self) -> None:
        """
        A client that writes a message to the built-in echo and closes the
        channel in the same turn, 3 * maxUselessFrames times, keeps its
        session: each echo comes back with the server's FIN, after the
        client's own FIN, and closes the channel cleanly on both sides.
        """
        clock = Clock()
        client, server, pump = connectedSessions(builtinServices(clock), clock=clock)
        for n in range(3 * LIMIT):
            proto = self.successResultOf(
                client.openChannel(b"echo", Factory.forProtocol(Recorder))
            )
            assert isinstance(proto, Recorder)
            transport = IChannelTransport(proto.transport)
            transport.writeMessage(b"request %d" % n)
            transport.loseConnection()
            pump.flush()
            assert proto.lost is not None
            proto.lost.trap(ConnectionDone)
        self.assertTrue(client.connected and server.connected)
        self.assertEqual(server.engine.uselessFrames, 0)
        self.assertEqual(client.engine.uselessFrames, 0)
        self.assertEqual(server.engine.openChannels(), [])
        self.assertEqual(client.engine.openChannels(), [])


class IncrementingPeerTests(SynchronousTestCase):
    """
    A peer that takes CREDIT for an increment (HTTP/2's WINDOW_UPDATE) uses
    up the session credit it was given at start, then waits for ever: the
    server it talks to says why, once, in its log.
    """

    def test_warnedOnce(self) -> None:
        """
        Sequential 1 KiB echo channels, the client granting session credit
        as "n more bytes": the server logs, at warn and once, that CREDIT
        is an absolute limit.
        """
        clock = Clock()
        factory = MultiplexingFactory(builtinServices(clock), reactor=clock)
        peer = PeerOnTransport(factory.buildProtocol(None), clock)
        with capturedLogs() as events:
            for n in range(20):
                cid = 2 * n + 1
                peer.session.dataReceived(
                    OpenFrame(cid, b"echo").encode()
                    + DataFrame(cid, b"q" * 1024, end=True, fin=True).encode()
                )
                clock.advance(0)
                echoed = sum(
                    len(f.data) for f in peer.read() if isinstance(f, DataFrame)
                )
                peer.session.dataReceived(CreditFrame(0, echoed).encode())
        warnings = [e for e in events if "not an increment" in str(e.get("why"))]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["log_level"], LogLevel.warn)
        self.assertTrue(peer.session.connected)


class LoadBudgetClockTests(SynchronousTestCase):
    """
    The Twisted layer refills the flood allowance every LOAD_BUDGET_PERIOD
    seconds: a limit on bursts, not on a slow trickle.
    """

    def test_trickleAllowed(self) -> None:
        """
        maxUselessFrames PINGs in every period, over many periods, keep
        the session up.
        """
        wire = PeerWire()
        for _ in range(5):
            wire.send(*[PingFrame()] * LIMIT)
            wire.clock.advance(LOAD_BUDGET_PERIOD)
        self.assertFalse(wire.session.engine.terminated)
        self.assertFalse(wire.transport.disconnecting)

    def test_burstEnds(self) -> None:
        """
        More than maxUselessFrames PINGs within one period end the session:
        GOAWAY EXCESSIVE_LOAD is written and the connection closed.
        """
        wire = PeerWire()
        wire.send(*[PingFrame()] * LIMIT)
        wire.clock.advance(LOAD_BUDGET_PERIOD / 2)
        wire.send(PingFrame())
        self.assertEqual(
            [g.code for g in goAways(wire.read())], [ErrorCode.EXCESSIVE_LOAD]
        )
        self.assertTrue(wire.transport.disconnecting)


class KeepAliveTests(SynchronousTestCase):
    """
    SessionSettings.keepAliveInterval: PING a quiet peer, end the session
    with GOAWAY IDLE_TIMEOUT when nothing at all comes back.
    """

    def test_offByDefault(self) -> None:
        """
        By default no keepalive timer is armed and nothing is sent on a
        quiet session, however long.
        """
        wire = PeerWire()
        wire.read()
        self.assertEqual(wire.clock.getDelayedCalls(), [])
        wire.clock.advance(10**6)
        self.assertEqual(wire.read(), [])

    def test_pingsQuietPeer(self) -> None:
        """
        After keepAliveInterval with nothing received, a PING goes out.
        """
        wire = PeerWire(SessionSettings(keepAliveInterval=30))
        wire.read()
        wire.clock.advance(29)
        self.assertEqual(wire.read(), [])
        # The preface arrived in the first interval: the peer was heard.
        wire.clock.advance(1)
        self.assertEqual(wire.read(), [])
        wire.clock.advance(30)
        self.assertEqual(wire.read(), [PingFrame(KEEPALIVE_PAYLOAD)])

    def test_trafficPostponesPing(self) -> None:
        """
        While the peer keeps sending something, no keepalive PING is sent.
        """
        wire = PeerWire(SessionSettings(keepAliveInterval=30))
        wire.send(OpenFrame(1, b"svc"))
        wire.read()
        for _ in range(10):
            wire.clock.advance(20)
            wire.send(DataFrame(1, b"x"))
        self.assertNotIn(True, [isinstance(f, PingFrame) for f in wire.read()])

    def test_deadPeer(self) -> None:
        """
        If nothing at all arrives within another interval after the PING,
        the session writes GOAWAY IDLE_TIMEOUT and closes the connection
        (aborting it after one more interval if it has not gone), and open
        channels end with SessionLost carrying IDLE_TIMEOUT.
        """
        wire = PeerWire(SessionSettings(keepAliveInterval=30))
        wire.send(OpenFrame(1, b"svc"), DataFrame(1, b"hi"))
        [recorder] = wire.recorders
        self.assertEqual(recorder.received, b"hi")
        wire.read()
        wire.clock.pump([30, 30])
        self.assertEqual(wire.read(), [PingFrame(KEEPALIVE_PAYLOAD)])
        wire.clock.advance(30)
        self.assertEqual(
            [g.code for g in goAways(wire.read())], [ErrorCode.IDLE_TIMEOUT]
        )
        self.assertTrue(wire.transport.disconnecting)
        self.assertFalse(wire.transport.disconnected)
        wire.clock.advance(30)
        self.assertTrue(wire.transport.disconnected)  # aborted
        wire.session.connectionLost()
        assert recorder.lost is not None
        lost = recorder.lost.value
        assert isinstance(lost, SessionLost)
        self.assertEqual(lost.code, ErrorCode.IDLE_TIMEOUT)
        self.assertEqual(wire.clock.getDelayedCalls(), [])

    def test_answerKeepsSession(self) -> None:
        """
        A peer that answers the keepalive PING (or sends anything) keeps
        the session: the cycle starts over.
        """
        wire = PeerWire(SessionSettings(keepAliveInterval=30))
        wire.read()
        for _ in range(5):
            wire.clock.pump([30, 30])
            self.assertEqual(wire.read(), [PingFrame(KEEPALIVE_PAYLOAD)])
            wire.send(PingFrame(KEEPALIVE_PAYLOAD, ack=True))
        self.assertFalse(wire.transport.disconnecting)

    def test_liveSessionsWithChannel(self) -> None:
        """
        Two sessions with keepalive on both sides, connected in memory,
        stay up through many quiet intervals, and a channel between them
        still carries data afterwards.
        """
        clock = Clock()
        recorders: list[Recorder] = []

        def build() -> Recorder:
            r = Recorder()
            recorders.append(r)
            return r

        settings = SessionSettings(keepAliveInterval=5)
        client, server, pump = connectedSessions(
            {b"svc": Factory.forProtocol(build)},
            serverSettings=settings,
            clientSettings=settings,
            clock=clock,
        )
        pump.flush()
        mine = self.successResultOf(
            client.openChannel(b"svc", Factory.forProtocol(Recorder))
        )
        for _ in range(50):
            clock.advance(5)
            pump.flush()
        self.assertTrue(client.connected)
        self.assertTrue(server.connected)
        assert isinstance(mine, Recorder) and mine.transport is not None
        mine.transport.write(b"still here")
        pump.flush()
        self.assertEqual(recorders[0].received, b"still here")
        self.assertIsNone(recorders[0].lost)


class KeepAliveOptionTests(SynchronousTestCase):
    """
    ``twistd memux --keepalive``.
    """

    def parse(self, *argv: str) -> Options:
        """
        Parse C{argv} with fresh options.
        """
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_defaultOff(self) -> None:
        """
        Without --keepalive there is no keepalive.
        """
        self.assertIsNone(self.parse()["settings"].keepAliveInterval)

    def test_keepalive(self) -> None:
        """
        --keepalive sets keepAliveInterval; 0 means off.
        """
        self.assertEqual(
            self.parse("--keepalive", "45")["settings"].keepAliveInterval, 45
        )
        self.assertIsNone(self.parse("--keepalive", "0")["settings"].keepAliveInterval)

    def test_negative(self) -> None:
        """
        A negative --keepalive is a usage error.
        """
        self.assertRaises(UsageError, self.parse, "--keepalive", "-1")


# ---------------------------------------------------------------- output


#: what a peer that grants credit without limit announces


class StalledTransport(StringTransport):
    """
    A L{StringTransport} that, like Twisted's TCP transport, pauses its
    streaming producer once more than C{bufferSize} bytes wait in it, and
    resumes it only when the peer reads everything (L{readAll}): a peer
    that never calls it is a peer that never reads.

    @ivar largest: the most bytes that ever waited in it.
    """

    bufferSize = 64 * 1024

    def __init__(self) -> None:
        super().__init__()
        self.blocked = False
        self.largest = 0

    def write(self, data: bytes) -> None:
        """
        Buffer C{data}; pause the producer if the buffer is now full.
        """
        super().write(data)
        size = self.io.tell()
        self.largest = max(self.largest, size)
        if size > self.bufferSize and self.producer is not None and not self.blocked:
            self.blocked = True
            self.producer.pauseProducing()

    def writeSequence(self, data: Iterable[bytes]) -> None:
        """
        As L{write}, as Twisted's transports do.
        """
        self.write(b"".join(data))

    def readAll(self) -> bytes:
        """
        The peer reads everything written so far; the producer resumes.
        """
        data: bytes = self.value()
        self.clear()
        if self.blocked:
            self.blocked = False
            if self.producer is not None:
                self.producer.resumeProducing()
        return data


class RecordingChargen(Chargen):
    """
    L{Chargen} that keeps the reason it lost its channel.
    """

    lost: Failure | None = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Keep C{reason}, and stop.
        """
        self.lost = reason
        super().connectionLost(reason)


class RecordingEcho(Echo):
    """
    L{Echo} that keeps the reason it lost its channel.
    """

    lost: Failure | None = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Keep C{reason}.
        """
        self.lost = reason


class ServedPeer:
    """
    One server session built by C{factory} on C{transport}, fed crafted
    frames as a peer would send them, after a preface announcing
    C{settings} (none if L{None}).
    """

    def __init__(
        self,
        factory: MultiplexingFactory,
        transport: StringTransport,
        settings: Settings | None = GREEDY,
    ) -> None:
        self.session = factory.buildProtocol(None)
        self.transport = transport
        self.clock = cast(Clock, factory.reactor)
        self.decoder = FrameDecoder(1 << 24)
        self.session.makeConnection(transport)
        if settings is not None:
            self.session.dataReceived(encodePreface(settings))
        self.clock.advance(0)

    def send(self, *frames: Frame) -> None:
        """
        Deliver C{frames} in one piece and run the zero-delay calls.
        """
        self.session.dataReceived(b"".join(f.encode() for f in frames))
        self.clock.advance(0)

    def read(self) -> list[Frame]:
        """
        The frames the session wrote since the last call (the peer reads).
        """
        if isinstance(self.transport, StalledTransport):
            data = self.transport.readAll()
        else:
            data = self.transport.value()
            self.transport.clear()
        return [f for f in self.decoder.receive(data) if not isinstance(f, Preface)]

    def echo(self, channel: int, message: bytes) -> bytes:
        """
        Open C{channel} to the echo service, send C{message}, and return
        what comes back on it.
        """
        self.send(OpenFrame(channel, b"echo"), DataFrame(channel, message, end=True))
        self.clock.advance(0)
        return b"".join(
            f.data
            for f in self.read()
            if isinstance(f, DataFrame) and f.channel == channel
        )


class ServedServices:
    """
    The chargen and echo services over a Clock, keeping the protocols built.
    """

    def __init__(self, settings: SessionSettings) -> None:
        self.clock = Clock()
        self.chargens: list[RecordingChargen] = []
        self.echoes: list[RecordingEcho] = []

        def chargen() -> RecordingChargen:
            p = RecordingChargen(self.clock)
            self.chargens.append(p)
            return p

        def echo() -> RecordingEcho:
            p = RecordingEcho()
            self.echoes.append(p)
            return p

        self.factory = MultiplexingFactory(
            {
                b"chargen": Factory.forProtocol(chargen),
                b"echo": Factory.forProtocol(echo),
            },
            settings=settings,
            reactor=self.clock,
        )


def queuedBytes(session: MemuxProtocol) -> int:
    """
    Channel payload queued in C{session}'s engine and not yet written.
    """
    engine = session.engine
    return sum(engine.queuedBytes(c) for c in engine.openChannels())


class WriteTimeoutTests(SynchronousTestCase):
    """
    A peer that grants credit and sends requests but never reads what we
    send (CVE-2019-9517, "internal data buffering"): while the connection's
    buffer is full the session writes nothing more and its buffers stay
    bounded; after SessionSettings.writeTimeout without progress the
    connection is aborted.
    """

    def test_nonReadingPeer(self) -> None:
        """
        A peer that invites a terabyte of chargen, keeps sending echo
        requests and PINGs, and reads nothing: once the connection's buffer
        is full the session writes nothing more; what it holds stays under
        a megabyte; at writeTimeout (and not before) the connection is
        aborted, with a warning, and the channels end with SessionLost
        (IDLE_TIMEOUT).  A well-behaved session of the same server is
        served throughout.
        """
        served = ServedServices(SessionSettings())
        timeout = SessionSettings().writeTimeout
        assert timeout is not None
        attacker = ServedPeer(served.factory, StalledTransport())
        good = ServedPeer(served.factory, StringTransport(), Settings())
        attacker.send(OpenFrame(1, b"chargen"))
        transport = cast(StalledTransport, attacker.transport)
        self.assertTrue(transport.blocked)
        written = len(transport.value())
        cid = 3
        with capturedLogs() as events:
            for second in range(int(timeout) - 1):
                attacker.send(
                    OpenFrame(cid, b"echo"),
                    DataFrame(cid, b"e" * 1000, end=True),
                    *[PingFrame(b"p")] * 50,
                )
                cid += 2
                served.clock.advance(1)
                self.assertEqual(len(transport.value()), written)
                self.assertLess(queuedBytes(attacker.session), 512 * 1024)
                if second == 30:
                    self.assertEqual(good.echo(1, b"hello"), b"hello")
            self.assertFalse(transport.disconnected)
            served.clock.advance(1)
        self.assertTrue(transport.disconnected)  # aborted
        self.assertLess(transport.largest, 256 * 1024)
        warned = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warned), 1)
        self.assertIn("read none of our output", warned[0]["log_format"])
        attacker.session.connectionLost(Failure(ConnectionAborted()))
        served.clock.advance(0)
        self.assertLess(len(attacker.session.engine.dataToSend(1 << 40)), 1 << 20)
        [chargen] = served.chargens
        echoes = [
            e
            for e in served.echoes
            if cast(ChannelTransport, e.transport).session is attacker.session
        ]
        self.assertEqual(len(echoes), int(timeout) - 1)
        losses = [chargen.lost, *(e.lost for e in echoes)]
        for loss in losses:
            assert loss is not None
            lost = loss.value
            assert isinstance(lost, SessionLost)
            self.assertEqual(lost.code, ErrorCode.IDLE_TIMEOUT)
            self.assertIn("read nothing", lost.reason)
        self.assertEqual(good.echo(3, b"still here"), b"still here")
        self.assertFalse(good.transport.disconnecting)

    def test_progressKeepsSession(self) -> None:
        """
        A slow reader that takes what waits before each writeTimeout runs
        out keeps its session, however long the stream lasts.
        """
        served = ServedServices(SessionSettings(writeTimeout=60))
        peer = ServedPeer(served.factory, StalledTransport())
        peer.send(OpenFrame(1, b"chargen"))
        received = 0
        for _ in range(20):
            served.clock.advance(59)
            received += sum(
                len(f.data) for f in peer.read() if isinstance(f, DataFrame)
            )
            served.clock.advance(0)
        self.assertFalse(peer.transport.disconnecting)
        self.assertGreater(received, 20 * StalledTransport.bufferSize)

    def test_timeoutCountsFromLastPause(self) -> None:
        """
        What counts is the time since the connection last paused the
        session: a peer that drains the buffer at 50 s (which chargen fills
        again at once) is aborted at 110 s, not at 60 s.
        """
        served = ServedServices(SessionSettings(writeTimeout=60))
        peer = ServedPeer(served.factory, StalledTransport())
        peer.send(OpenFrame(1, b"chargen"))
        served.clock.advance(50)
        peer.read()
        served.clock.advance(0)
        transport = cast(StalledTransport, peer.transport)
        self.assertTrue(transport.blocked)
        served.clock.advance(59)
        self.assertFalse(transport.disconnected)
        served.clock.advance(1)
        self.assertTrue(transport.disconnected)

    def test_closeThatNeverFinishes(self) -> None:
        """
        A flood that ends the session (GOAWAY EXCESSIVE_LOAD) from a peer
        that does not read leaves a close waiting on unsent bytes for ever;
        it is aborted at writeTimeout.
        """
        served = ServedServices(SessionSettings(writeTimeout=60))
        peer = ServedPeer(served.factory, StalledTransport())
        peer.send(OpenFrame(1, b"chargen"))
        peer.send(*[PingFrame(b"p")] * (LIMIT + 1))
        transport = cast(StalledTransport, peer.transport)
        self.assertTrue(peer.session.engine.terminated)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        served.clock.advance(59)
        self.assertFalse(transport.disconnected)
        served.clock.advance(1)
        self.assertTrue(transport.disconnected)
        frames = peer.read()
        self.assertEqual([g.code for g in goAways(frames)], [ErrorCode.EXCESSIVE_LOAD])

    def test_cleanCloseCancelsTimer(self) -> None:
        """
        A session whose connection closes normally leaves no write timer
        (or any other) behind.
        """
        served = ServedServices(SessionSettings(writeTimeout=60))
        peer = ServedPeer(served.factory, StalledTransport())
        peer.send(OpenFrame(1, b"chargen"))
        peer.session.connectionLost(Failure(ConnectionDone()))
        served.clock.advance(0)
        self.assertEqual(served.clock.getDelayedCalls(), [])

    def test_none(self) -> None:
        """
        With writeTimeout None a connection that never drains is never
        aborted.
        """
        served = ServedServices(SessionSettings(writeTimeout=None))
        peer = ServedPeer(served.factory, StalledTransport())
        peer.send(OpenFrame(1, b"chargen"))
        served.clock.advance(10**6)
        self.assertFalse(peer.transport.disconnecting)
        self.assertTrue(cast(StalledTransport, peer.transport).blocked)

    def test_settingsValidated(self) -> None:
        """
        writeTimeout and handshakeTimeout must be positive or None, and are
        on by default.
        """
        for name in ("writeTimeout", "handshakeTimeout"):
            for bad in (0, -1):
                self.assertRaises(ValueError, SessionSettings, **{name: bad})
            off: dict[str, Any] = {name: None}
            self.assertIsNone(getattr(SessionSettings(**off), name))
        self.assertEqual(SessionSettings().writeTimeout, 60)
        self.assertEqual(SessionSettings().handshakeTimeout, 20)


# ---------------------------------------------------------------- preface

#: the start of a TLS ClientHello: a record header announcing 512 bytes,
#: a handshake header, the version and four bytes of the random
PARTIAL_CLIENT_HELLO = bytes.fromhex("1603010200010001fc0303a1b2c3d4")


class HandshakeTimeoutTests(SynchronousTestCase):
    """
    SessionSettings.handshakeTimeout: a connection whose peer has not sent
    its whole preface that long after it was made is ended (slowloris),
    with GOAWAY IDLE_TIMEOUT when the connection can still take it, which
    over TLS bounds the TLS handshake too.
    """

    def assertEndedWithGoAway(self, transport: StringTransport) -> None:
        """
        The session wrote GOAWAY IDLE_TIMEOUT after its preface and closed
        the connection (after what it wrote, not aborting it).
        """
        frames = FrameDecoder(1 << 24).receive(transport.value())
        self.assertIsInstance(frames[0], Preface)
        self.assertEqual(
            [(type(f), getattr(f, "code", None)) for f in frames[1:]],
            [(GoAwayFrame, ErrorCode.IDLE_TIMEOUT)],
        )
        self.assertTrue(transport.disconnecting)

    def connect(
        self, settings: SessionSettings | None = None, client: bool = False
    ) -> tuple[Clock, MemuxProtocol, StringTransport]:
        """
        A session (from a factory, as a server makes them) on a
        L{StringTransport}, to which the peer has sent nothing yet.
        """
        clock = Clock()
        factory = MultiplexingFactory(
            {b"svc": Factory.forProtocol(Recorder)},
            settings=settings,
            reactor=clock,
            client=client,
        )
        session = factory.buildProtocol(None)
        transport = StringTransport()
        session.makeConnection(transport)
        return clock, session, transport

    def test_silentPeer(self) -> None:
        """
        A peer that sends nothing is told GOAWAY IDLE_TIMEOUT and its
        connection closed at handshakeTimeout, not before, and it is logged
        at info.
        """
        clock, session, transport = self.connect()
        clock.advance(19.9)
        self.assertFalse(transport.disconnecting)
        with capturedLogs() as events:
            clock.advance(0.1)
        self.assertEndedWithGoAway(transport)
        [event] = [e for e in events if "no preface" in e["log_format"]]
        self.assertEqual(event["log_level"], LogLevel.info)

    def test_silentPeerNotReading(self) -> None:
        """
        When the connection takes nothing more (it paused the session), a
        GOAWAY could never reach the peer: the connection is aborted at
        handshakeTimeout.
        """
        clock, session, transport = self.connect()
        session.pauseProducing()
        clock.advance(20)
        self.assertTrue(transport.disconnected)  # aborted

    def test_dribbledPreface(self) -> None:
        """
        A peer dribbling its preface a byte at a time gains nothing: the
        time counts from the connection, whatever arrives meanwhile.
        """
        clock, session, transport = self.connect()
        preface = encodePreface(Settings())
        for i in range(7):  # at 0, 3, ... 18 s: still short of the whole
            self.assertFalse(transport.disconnecting)
            session.dataReceived(preface[i : i + 1])
            clock.advance(3)
        self.assertEndedWithGoAway(transport)
        self.assertFalse(session.engine.prefaceReceived)

    def test_prefaceInTime(self) -> None:
        """
        A preface that arrives just in time disarms the timer: the session
        stays up however long it lasts, with no timer left behind.
        """
        clock, session, transport = self.connect()
        clock.advance(19.9)
        session.dataReceived(encodePreface(Settings()))
        clock.advance(0)
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(10**6)
        self.assertFalse(transport.disconnecting)

    def test_channelsHearWhy(self) -> None:
        """
        A client whose server never sends its preface: the channel it
        opened meanwhile (no round trip needed) ends with SessionLost
        carrying IDLE_TIMEOUT and saying what was missing.
        """
        clock, session, transport = self.connect(client=True)
        recorder = self.successResultOf(
            session.openChannel(b"svc", Factory.forProtocol(Recorder))
        )
        clock.advance(20)
        self.assertTrue(transport.disconnecting)
        session.connectionLost(Failure(ConnectionDone()))
        clock.advance(0)
        assert isinstance(recorder, Recorder) and recorder.lost is not None
        lost = recorder.lost.value
        assert isinstance(lost, SessionLost)
        self.assertEqual(lost.code, ErrorCode.IDLE_TIMEOUT)
        self.assertIn("no preface", lost.reason)

    def test_none(self) -> None:
        """
        With handshakeTimeout None a silent peer is never aborted for it.
        """
        clock, session, transport = self.connect(SessionSettings(handshakeTimeout=None))
        clock.advance(10**6)
        self.assertFalse(transport.disconnecting)

    def test_tlsHandshakeBounded(self) -> None:
        """
        Over TLS the session starts as soon as the TCP connection is made,
        before the TLS handshake: a client that sends part of a ClientHello
        and stops is aborted at handshakeTimeout, TCP connection and all.
        """
        clock = Clock()
        certs = Certificates(self.mktemp())
        mux = MultiplexingFactory(builtinServices(clock), reactor=clock)
        tls = TLSMemoryBIOFactory(serverTLSOptions(certs.serverPEM), False, mux, clock)
        protocol = tls.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(PARTIAL_CLIENT_HELLO)
        [session] = mux.connectedSessions()
        self.assertFalse(session.engine.prefaceReceived)
        clock.advance(19)
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.disconnected)  # the TCP connection, aborted


# ---------------------------------------------------------------- real sockets


class WatchedFactory(MultiplexingFactory):
    """
    A L{MultiplexingFactory} that keeps its sessions and lets a test wait
    for the first time the connection pauses each.
    """

    def __init__(self, services: Any, settings: SessionSettings) -> None:
        from twisted.internet import reactor

        super().__init__(services, settings=settings, reactor=cast(Any, reactor))
        self.built: list[MemuxProtocol] = []
        self.paused: dict[MemuxProtocol, Deferred[None]] = {}

    def buildProtocol(self, addr: Any) -> MemuxProtocol:
        """
        Build a session whose first pause fires C{self.paused[session]}.
        """
        session = super().buildProtocol(addr)
        self.built.append(session)
        paused: Deferred[None] = Deferred()
        self.paused[session] = paused
        pause = session.pauseProducing

        def pauseProducing() -> None:
            pause()
            if not paused.called:
                paused.callback(None)

        session.pauseProducing = pauseProducing  # type: ignore[method-assign]
        return session


class CraftedPeer(Protocol):
    """
    A hostile peer on a real socket: it sends C{attack} once connected,
    then reads nothing more if C{read} is false.

    @ivar lost: fires with the reason (the exception) once the connection
        is lost.
    """

    def __init__(self, attack: bytes, read: bool) -> None:
        self.attack = attack
        self.read = read
        self.lost: Deferred[BaseException] = Deferred()

    def connectionMade(self) -> None:
        """
        Send the attack; stop reading unless told to read.
        """
        transport = cast(Any, self.transport)
        transport.write(self.attack)
        if not self.read:
            transport.pauseProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Fire L{lost}.
        """
        assert reason.value is not None
        self.lost.callback(reason.value)


class RealSocketTests(TestCase):
    """
    The write and handshake timeouts against crafted peers on real loopback
    sockets, with a well-behaved session served alongside.
    """

    timeout = 30

    def setUp(self) -> None:
        """
        Use the real reactor.
        """
        from twisted.internet import reactor

        self.reactor: Any = reactor

    async def listen(
        self, factory: MultiplexingFactory, certs: Certificates | None = None
    ) -> TCP4ClientEndpoint:
        """
        Serve C{factory} (over TLS with C{certs}' server certificate, if
        given) on a loopback port until cleanup, when every session it made
        is waited for; return an endpoint to reach it.
        """
        listening: Any = factory
        if certs is not None:
            listening = tlsServerFactory(factory, serverTLSOptions(certs.serverPEM))
        endpoint = TCP4ServerEndpoint(self.reactor, 0, interface="127.0.0.1")
        port = await endpoint.listen(listening)
        self.addCleanup(
            lambda: gatherResults([s.whenClosed() for s in factory.built])  # type: ignore[attr-defined]
        )
        self.addCleanup(port.stopListening)
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        return TCP4ClientEndpoint(self.reactor, "127.0.0.1", address.port)

    async def attack(
        self, endpoint: TCP4ClientEndpoint, data: bytes, read: bool
    ) -> CraftedPeer:
        """
        Connect a L{CraftedPeer} sending C{data}; it is aborted at cleanup.
        """
        peer = CraftedPeer(data, read)
        await connectProtocol(endpoint, peer)

        def abort() -> Deferred[BaseException]:
            if not peer.lost.called:
                cast(Any, peer.transport).abortConnection()
            return peer.lost

        self.addCleanup(abort)
        return peer

    async def goodSession(self, endpoint: Any) -> MemuxProtocol:
        """
        Connect a well-behaved client session; closed at cleanup.
        """
        session = await connectSession(endpoint, reactor=self.reactor)

        def close() -> Deferred[None]:
            session.loseConnection()
            return session.whenClosed()

        self.addCleanup(close)
        return session

    async def echo(self, session: MemuxProtocol, message: bytes) -> list[bytes]:
        """
        Send C{message} to the echo service on a new channel; return the
        messages that come back.
        """
        proto = await session.openChannel(
            b"echo", Factory.forProtocol(MessageCollector)
        )
        assert isinstance(proto, MessageCollector)
        IChannelTransport(proto.transport).writeMessage(message)
        await proto.receivedAtLeast(len(message))
        proto.transport.loseConnection()  # type: ignore[union-attr]
        return proto.messages

    async def test_nonReadingPeer(self) -> None:
        """
        A peer that invites a terabyte of chargen and never reads: its
        server session is paused by TCP with under WRITE_HIGH_WATER queued,
        and aborted after writeTimeout, its channel ending with
        SessionLost (IDLE_TIMEOUT); a well-behaved session is served while
        it is stalled and after.
        """
        chargens: list[RecordingChargen] = []

        def chargen() -> RecordingChargen:
            chargens.append(RecordingChargen(self.reactor))
            return chargens[-1]

        services = builtinServices(self.reactor)
        services[b"chargen"] = Factory.forProtocol(chargen)
        factory = WatchedFactory(services, SessionSettings(writeTimeout=1))
        endpoint = await self.listen(factory)
        good = await self.goodSession(endpoint)
        self.assertEqual(await self.echo(good, b"before"), [b"before"])
        await self.attack(
            endpoint, encodePreface(GREEDY) + OpenFrame(1, b"chargen").encode(), False
        )
        stalled = factory.built[-1]
        await factory.paused[stalled]
        self.assertLess(queuedBytes(stalled), WRITE_HIGH_WATER)
        self.assertEqual(await self.echo(good, b"during"), [b"during"])
        self.assertIsNone(stalled.lostReason)
        await stalled.whenClosed()
        assert stalled.lostReason is not None
        self.assertTrue(stalled.lostReason.check(ConnectionAborted))
        self.assertLess(queuedBytes(stalled), WRITE_HIGH_WATER)
        [protocol] = chargens
        assert protocol.lost is not None
        lost = protocol.lost.value
        assert isinstance(lost, SessionLost)
        self.assertEqual(lost.code, ErrorCode.IDLE_TIMEOUT)
        self.assertEqual(await self.echo(good, b"after"), [b"after"])
        self.assertTrue(good.connected)

    async def test_tlsHandshakeNeverCompleted(self) -> None:
        """
        Over TLS, a client that sends part of a ClientHello and stops is
        disconnected after handshakeTimeout; a well-behaved TLS client,
        connected meanwhile, is served before and after.
        """
        certs = Certificates(self.mktemp())
        factory = WatchedFactory(
            builtinServices(self.reactor), SessionSettings(handshakeTimeout=1)
        )
        endpoint = await self.listen(factory, certs)
        with capturedLogs() as events:
            peer = await self.attack(endpoint, PARTIAL_CLIENT_HELLO, True)
            good = await self.goodSession(
                wrapClientTLS(clientTLSOptions(HOSTNAME, certs.caPEM), endpoint)
            )
            self.assertEqual(await self.echo(good, b"during"), [b"during"])
            await peer.lost
            [stalled] = [s for s in factory.built if not s.engine.prefaceReceived]
            await stalled.whenClosed()
        [event] = [e for e in events if "no preface" in e["log_format"]]
        address: Any = stalled.transport.getPeer()  # type: ignore[union-attr]
        self.assertEqual(event["peer"], f"{address.host}:{address.port}")
        self.assertEqual(await self.echo(good, b"after"), [b"after"])
        self.assertTrue(good.connected)

    async def test_floodInOrder(self) -> None:
        """
        A peer sending thousands of tiny messages at once, over TCP and
        over TLS (whose reads end mid-frame and arrive as several records),
        has every one delivered in order while its input is handled a step
        at a time with reading paused between turns; then the session reads
        again.
        """
        certs = Certificates(self.mktemp())
        collectors: list[MessageCollector] = []

        def collect() -> MessageCollector:
            collectors.append(MessageCollector())
            return collectors[-1]

        factory = WatchedFactory(
            {b"collect": Factory.forProtocol(collect)}, SessionSettings()
        )
        messages = numbered(20 * INPUT_STEP_FRAMES * INPUT_SLICE_STEPS)
        flood = (
            encodePreface(GREEDY)
            + OpenFrame(1, b"collect").encode()
            + messageFrames(1, messages)
        )
        for tls in (False, True):
            endpoint: Any = await self.listen(factory, certs if tls else None)
            if tls:
                endpoint = wrapClientTLS(
                    clientTLSOptions(HOSTNAME, certs.caPEM), endpoint
                )
            peer = await self.attack(endpoint, flood, True)
            while not collectors:
                await deferLater(self.reactor, 0.01)
            collector = collectors.pop()
            await collector.receivedAtLeast(sum(map(len, messages)))
            self.assertEqual(collector.messages, messages)
            # Reading resumed: the server notices the peer going.
            cast(Any, peer.transport).abortConnection()
            await factory.built[-1].whenClosed()


def numbered(count: int, first: int = 0) -> list[bytes]:
    """
    C{count} distinct small messages, in order.
    """
    return [b"%06d" % n for n in range(first, first + count)]


def messageFrames(channel: int, messages: list[bytes]) -> bytes:
    """
    C{messages} as one DATA frame each on C{channel}, on the wire.
    """
    return b"".join(DataFrame(channel, m, end=True).encode() for m in messages)


@implementer_only(ITransport, IConsumer)
class UnpausableTransport(StringTransport):
    """
    A L{StringTransport} that does not claim to be an C{IPushProducer}: its
    reading cannot be paused.
    """


class SlicedPeer(PeerOnTransport):
    """
    A server session of C{factory} on C{transport}, after a preface, with
    a C{MessageRecorder} for each channel the peer opens.
    """

    def __init__(
        self,
        factory: MultiplexingFactory,
        recorders: list[MessageRecorder],
        transport: StringTransport | None = None,
    ) -> None:
        self.recorders = recorders
        super().__init__(
            factory.buildProtocol(None), cast(Clock, factory.reactor), transport
        )

    @property
    def messages(self) -> list[bytes]:
        """
        The messages delivered so far, on all channels, in order.
        """
        return [m for r in self.recorders for m in r.messages]

    def drain(self) -> int:
        """
        Run reactor turns until nothing is due; return how many it took.
        """
        turns = 0
        while reactorTurn(self.clock):
            turns += 1
        return turns


class InputSliceTests(SynchronousTestCase):
    """
    A read holding many frames is processed INPUT_STEP_FRAMES at a time:
    the first step at once, the rest in later reactor turns (a slice of
    INPUT_SLICE_STEPS steps per turn here, the time limits being set out of
    reach), with the connection's reading paused meanwhile.
    """

    def setUp(self) -> None:
        """
        A factory of sessions whose channels record their messages; only
        the step count limits a turn.
        """
        self.patch(_tuning, "INPUT_SLICE_SECONDS", 3600.0)
        self.patch(_tuning, "OUTPUT_DELAY_SECONDS", 3600.0)
        self.clock = Clock()
        self.recorders: list[MessageRecorder] = []

        def build() -> MessageRecorder:
            self.recorders.append(MessageRecorder())
            return self.recorders[-1]

        self.factory = MultiplexingFactory(
            {b"svc": Factory.forProtocol(build)}, reactor=self.clock
        )

    def flood(self, count: int, channel: int = 1) -> tuple[list[bytes], bytes]:
        """
        C{count} numbered messages, and the wire bytes opening C{channel}
        and carrying them.
        """
        messages = numbered(count)
        return messages, OpenFrame(channel, b"svc").encode() + messageFrames(
            channel, messages
        )

    def test_sliced(self) -> None:
        """
        The first step's frames are handled within dataReceived and reading
        is paused; each turn handles one slice more, in order; once all is
        handled reading resumes and nothing more is scheduled.
        """
        step, slice = INPUT_STEP_FRAMES, INPUT_STEP_FRAMES * INPUT_SLICE_STEPS
        messages, wire = self.flood(3 * slice)
        peer = SlicedPeer(self.factory, self.recorders)
        peer.session.dataReceived(wire)
        # The OPEN was one of the first step's frames.
        self.assertEqual(peer.messages, messages[: step - 1])
        self.assertEqual(peer.transport.producerState, "paused")
        self.assertTrue(peer.session.engine.inputPending)
        reactorTurn(self.clock)
        self.assertEqual(peer.messages, messages[: step - 1 + slice])
        self.assertEqual(peer.transport.producerState, "paused")
        peer.drain()
        self.assertEqual(peer.messages, messages)
        self.assertEqual(peer.transport.producerState, "producing")
        self.assertFalse(peer.session.engine.inputPending)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_smallReadAtOnce(self) -> None:
        """
        A read of no more than INPUT_STEP_FRAMES frames is handled within
        dataReceived, without pausing.
        """
        messages, wire = self.flood(INPUT_STEP_FRAMES - 1)
        peer = SlicedPeer(self.factory, self.recorders)
        peer.session.dataReceived(wire)
        self.assertEqual(peer.messages, messages)
        self.assertEqual(peer.transport.producerState, "producing")
        self.assertFalse(peer.session.engine.inputPending)

    def test_laterReadQueuesBehind(self) -> None:
        """
        Data arriving while input is held (more TLS records of one read, or
        a transport that cannot pause) comes after the held input, and each
        such read costs one step.
        """
        first, wire = self.flood(500)
        second = numbered(500, 500)
        peer = SlicedPeer(self.factory, self.recorders)
        peer.session.dataReceived(wire)
        peer.session.dataReceived(messageFrames(1, second))
        self.assertEqual(peer.messages, first[: 2 * INPUT_STEP_FRAMES - 1])
        peer.drain()
        self.assertEqual(peer.messages, first + second)
        self.assertEqual(peer.transport.producerState, "producing")

    def test_unpausableTransport(self) -> None:
        """
        Over a transport that is no IPushProducer, input is still sliced
        (nothing tries to pause it), and all arrives in order.
        """
        # More than two turns' worth of steps.
        messages, wire = self.flood(2 * INPUT_SLICE_STEPS * INPUT_STEP_FRAMES + 1)
        transport = UnpausableTransport()
        peer = SlicedPeer(self.factory, self.recorders, transport)
        peer.session.dataReceived(wire)
        self.assertEqual(len(peer.messages), INPUT_STEP_FRAMES - 1)
        self.assertGreater(peer.drain(), 1)
        self.assertEqual(peer.messages, messages)
        self.assertEqual(transport.producerState, "producing")

    def test_connectionLostWhileHeld(self) -> None:
        """
        When the connection is lost with input held, the rest is dropped:
        no channel hears of it, the channel ends with SessionLost, and no
        call stays scheduled.
        """
        messages, wire = self.flood(3 * INPUT_STEP_FRAMES * INPUT_SLICE_STEPS)
        peer = SlicedPeer(self.factory, self.recorders)
        peer.session.dataReceived(wire)
        reactorTurn(self.clock)
        delivered = list(peer.messages)
        peer.session.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(peer.drain(), 0)
        self.assertEqual(peer.messages, delivered)
        self.assertLess(len(delivered), len(messages))
        [recorder] = self.recorders
        assert recorder.lost is not None
        self.assertIsInstance(recorder.lost.value, SessionLost)

    def test_connectionLostWithinStep(self) -> None:
        """
        A connection lost during a step (a channel protocol closing the
        session, over a transport that reports the loss at once) ends the
        held input there, cleanly.
        """
        transport = StringTransportWithDisconnection()
        peer = SlicedPeer(self.factory, self.recorders, transport)
        transport.protocol = peer.session
        stopAt = 5 * INPUT_STEP_FRAMES
        messages, wire = self.flood(3 * INPUT_STEP_FRAMES * INPUT_SLICE_STEPS)

        def messageReceived(message: bytes) -> None:
            recorder.messages.append(message)
            if len(recorder.messages) == stopAt:
                peer.session.loseConnection()

        peer.session.dataReceived(wire[:-1])  # the OPEN builds the recorder
        [recorder] = self.recorders
        recorder.messageReceived = messageReceived  # type: ignore[method-assign]
        peer.drain()
        self.assertEqual(peer.messages, messages[:stopAt])
        self.assertFalse(peer.session.connected)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_terminatedWhileHeld(self) -> None:
        """
        A protocol violation past the first step ends the session when its
        turn comes: the steps before it are handled (as for a violation in
        a later read, frames decoded with it in its own step may not be),
        none after it; GOAWAY is written and the connection closed.
        """
        messages, wire = self.flood(3 * INPUT_STEP_FRAMES + 10)
        bad = DataFrame(0, b"x").encode()  # DATA on channel 0
        after = messageFrames(1, numbered(100, len(messages)))
        peer = SlicedPeer(self.factory, self.recorders)
        peer.session.dataReceived(wire + bad + after)
        self.assertEqual(peer.transport.producerState, "paused")
        peer.drain()
        delivered = peer.messages
        self.assertEqual(delivered, messages[: len(delivered)])
        self.assertGreaterEqual(len(delivered), 3 * INPUT_STEP_FRAMES - 1)
        self.assertTrue(peer.session.engine.terminated)
        self.assertEqual(
            [g.code for g in goAways(peer.read())], [ErrorCode.PROTOCOL_ERROR]
        )
        self.assertTrue(peer.transport.disconnecting)

    def echoFlood(self) -> tuple[SlicedPeer, list[bytes]]:
        """
        A session of an echo service that has read three steps' worth of
        messages (and an OPEN) in one read; and the messages.
        """
        factory = MultiplexingFactory(builtinServices(self.clock), reactor=self.clock)
        peer = SlicedPeer(factory, [])
        messages = numbered(3 * INPUT_STEP_FRAMES)
        peer.session.dataReceived(
            OpenFrame(1, b"echo").encode() + messageFrames(1, messages)
        )
        return peer, messages

    def test_stepAfterWritingWaitsATurn(self) -> None:
        """
        What a step writes (here, echo replies) goes out before the next
        step: after the read's first step, the next waits a reactor turn;
        in a slice that has run OUTPUT_DELAY_SECONDS, a step that wrote
        ends the slice.  All input is handled, in order.
        """
        self.patch(_tuning, "OUTPUT_DELAY_SECONDS", 0.0)
        peer, messages = self.echoFlood()
        engine = peer.session.engine
        self.assertEqual(engine.framesReceived, 1 + INPUT_STEP_FRAMES)
        replies = [f.data for f in peer.read() if isinstance(f, DataFrame)]
        self.assertEqual(replies, messages[: INPUT_STEP_FRAMES - 1])
        # The Cooperator's first turn only waits, and a turn goes by.
        for _ in range(2):
            reactorTurn(self.clock)
            self.assertEqual(engine.framesReceived, 1 + INPUT_STEP_FRAMES)
        for steps in [2, 3]:
            reactorTurn(self.clock)
            self.assertEqual(engine.framesReceived, 1 + steps * INPUT_STEP_FRAMES)
        peer.drain()
        replies += [f.data for f in peer.read() if isinstance(f, DataFrame)]
        self.assertEqual(replies, messages)
        self.assertFalse(engine.inputPending)

    def test_quickStepsShareASlice(self) -> None:
        """
        Steps that wrote within OUTPUT_DELAY_SECONDS of the slice's start
        do not end it: the rest of the read is handled in one turn.
        """
        self.patch(_tuning, "OUTPUT_DELAY_SECONDS", 3600.0)
        peer, messages = self.echoFlood()
        engine = peer.session.engine
        for _ in range(3):
            reactorTurn(self.clock)
        self.assertFalse(engine.inputPending)
        replies = [f.data for f in peer.read() if isinstance(f, DataFrame)]
        self.assertEqual(replies, messages)

    def test_goodSessionServedBetweenSlices(self) -> None:
        """
        Two sessions of one factory: while one works through a flood read
        in an earlier turn, the other's echo request, read in the next
        turn, is answered in the turn after, long before the flood is
        done; the flood's sessions share one slice per turn.
        """
        clock = self.clock
        factory = MultiplexingFactory(builtinServices(clock), reactor=clock)
        flooders = [SlicedPeer(factory, []) for _ in range(2)]
        good = SlicedPeer(factory, [])
        before = sum(f.session.engine.framesReceived for f in flooders)
        # To a service that does not reply: a step that writes waits a turn
        # before the next (see test_stepAfterWritingWaitsATurn).
        flood = OpenFrame(1, b"discard").encode() + messageFrames(1, numbered(5000))
        for flooder in flooders:
            flooder.session.dataReceived(flood)
        reactorTurn(clock)
        good.session.dataReceived(
            OpenFrame(1, b"echo").encode() + messageFrames(1, [b"ping"])
        )
        reactorTurn(clock)
        self.assertIn(DataFrame(1, b"ping", end=True), good.read())
        for flooder in flooders:
            self.assertTrue(flooder.session.engine.inputPending)
        # A first step each, then two turns of one slice for both together.
        handled = sum(f.session.engine.framesReceived for f in flooders) - before
        self.assertEqual(
            handled, 2 * INPUT_STEP_FRAMES + 2 * INPUT_STEP_FRAMES * INPUT_SLICE_STEPS
        )
        good.drain()
        for flooder in flooders:
            self.assertFalse(flooder.session.engine.inputPending)
            self.assertEqual(flooder.transport.producerState, "producing")


class InputLimitTests(SynchronousTestCase):
    """
    The sans-IO side of slicing: C{FrameDecoder.receive} and
    C{MemuxEngine.receiveData} with a limit.
    """

    @given(
        st.lists(st.binary(max_size=40), max_size=40),
        st.lists(st.integers(1, 8), min_size=1),
        st.lists(st.integers(0, 60), max_size=6),
        st.lists(st.booleans(), min_size=1),
    )
    @hypothesis_settings(max_examples=200, deadline=None)
    def test_decoderSameItems(
        self,
        payloads: list[bytes],
        limits: list[int],
        cuts: list[int],
        drains: list[bool],
    ) -> None:
        """
        However the stream is cut into reads, whatever the limits, and
        whether a read comes before the held input is all taken: a decoder
        returns the same items, in the same order, as without limits, never
        more than the limit per call; C{receive(b"")} goes on while
        C{backlogged}, and in the end nothing is held.
        """
        stream = encodePreface(Settings()) + b"".join(
            DataFrame(1 + n % 3, p, end=n % 2 == 0).encode()
            for n, p in enumerate(payloads)
        )
        expected = FrameDecoder().receive(stream)
        points = sorted(min(c * 7, len(stream)) for c in cuts)
        starts, ends = [0, *points], [*points, len(stream)]
        reads = [stream[a:b] for a, b in zip(starts, ends, strict=True)]
        decoder = FrameDecoder()
        got: list[Preface | Frame] = []

        def take(data: bytes) -> None:
            limit = limits[len(got) % len(limits)]
            items = decoder.receive(data, limit)
            self.assertLessEqual(len(items), limit)
            got.extend(items)

        for n, read in enumerate(reads):
            take(read)
            while drains[n % len(drains)] and decoder.backlogged:
                take(b"")
        while decoder.backlogged:
            take(b"")
        self.assertEqual(got, expected)
        self.assertEqual(decoder.buffered, 0)

    def test_engineMaxFrames(self) -> None:
        """
        With maxFrames the engine handles that many frames (the preface
        counting as one) and holds the rest, in order, ahead of later
        input; inputPending tells whether any is held.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        pings = [PingFrame(b"%07d" % n) for n in range(10)]
        engine.receiveData(b"".join(p.encode() for p in pings[:6]), 4)
        self.assertTrue(engine.inputPending)
        engine.receiveData(b"".join(p.encode() for p in pings[6:]), 4)
        self.assertTrue(engine.inputPending)
        engine.receiveData(b"", 4)
        self.assertFalse(engine.inputPending)
        answers = [f.payload for f in raw.read() if isinstance(f, PingFrame)]
        self.assertEqual(answers, [p.payload for p in pings])

    def test_engineMaxFramesBelowOne(self) -> None:
        """
        maxFrames under 1 is refused with ValueError.
        """
        self.assertRaises(ValueError, MemuxEngine(False).receiveData, b"", 0)

    def test_terminatedHoldsNothing(self) -> None:
        """
        Once the session has ended, held input is dropped: inputPending is
        false, and frames after the one that ended it were never decoded.
        """
        engine = MemuxEngine(False)
        RawPeer(engine)
        wire = b"".join(PingFrame().encode() for _ in range(LIMIT + 100))
        engine.receiveData(wire, 64)
        while engine.inputPending:
            engine.receiveData(b"", 64)
        self.assertTrue(engine.terminated)
        self.assertFalse(engine.inputPending)
        self.assertLess(engine.framesReceived, LIMIT + 64)


class ChannelEndingLogTests(SynchronousTestCase):
    """
    Channel resets and refusals are logged for the first
    LOGGED_CHANNEL_ENDINGS of a session, then only counted, and the count
    logged when the session ends.
    """

    def test_rapidResetLogBounded(self) -> None:
        """
        A peer resetting many channels at once, and opening channels to no
        service, gets LOGGED_CHANNEL_ENDINGS lines, then one line with the
        count of the rest when the session ends.
        """
        wire = PeerWire()
        extra = 30
        resets = LOGGED_CHANNEL_ENDINGS + extra
        frames: list[Frame] = []
        for n in range(resets):
            channel = 2 * n + 1
            frames += [
                OpenFrame(channel, b"svc"),
                ResetFrame(channel, ErrorCode.CANCEL),
            ]
        frames += [OpenFrame(2 * n + 1, b"nothing") for n in range(resets, resets + 5)]
        with capturedLogs() as events:
            wire.send(*frames)
            wire.session.connectionLost(Failure(ConnectionDone()))
        self.assertFalse(wire.session.engine.terminated)
        ended = [
            e
            for e in events
            if "(channel {channel})" in e["log_format"]
            or e["log_format"].startswith("Refused channel")
        ]
        self.assertEqual(len(ended), LOGGED_CHANNEL_ENDINGS)
        [summary] = [e for e in events if "not logged" in e["log_format"]]
        self.assertEqual(summary["count"], extra + 5)
        self.assertEqual(summary["log_level"], LogLevel.info)

    def test_fewEndingsNoSummary(self) -> None:
        """
        A session with few channel endings logs each, and no summary.
        """
        wire = PeerWire()
        with capturedLogs() as events:
            wire.send(OpenFrame(1, b"svc"), ResetFrame(1, ErrorCode.CANCEL))
            wire.session.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            len([e for e in events if "(channel {channel})" in e["log_format"]]), 1
        )
        self.assertEqual([e for e in events if "not logged" in e["log_format"]], [])
