"""
Tests for the defences against hostile peers: flood limits in the engine
(frames that do no work, rapid reset), keepalive in the Twisted layer, and
the ``--keepalive`` option of ``twistd memux``.  Each attack is driven from
a crafted peer; see doc/security.rst for the table of attacks and defences.
"""

from __future__ import annotations

from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from memux._engine import (
    ChannelOpened,
    ChannelReset,
    DataReceived,
    Event,
    MemuxEngine,
    SessionSettings,
    SessionTerminated,
)
from memux._wire import (
    ChannelCreditFrame,
    CreditFrame,
    DataFrame,
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
from memux.protocol import KEEPALIVE_PAYLOAD, LOAD_BUDGET_PERIOD, MemuxProtocol
from memux.tap import Options
from memux.test.test_engine import RawPeer
from memux.test.test_protocol import Recorder
from memux.testing import connectedSessions

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


class PeerWire:
    """
    A MemuxProtocol (server side) on a StringTransport, with a Clock, fed
    crafted frames as a hostile or dead peer would send them.
    """

    def __init__(self, settings: SessionSettings | None = None) -> None:
        self.clock = Clock()
        self.recorders: list[Recorder] = []

        def build() -> Recorder:
            r = Recorder()
            self.recorders.append(r)
            return r

        self.session = MemuxProtocol(
            {b"svc": Factory.forProtocol(build)},
            settings=settings,
            reactor=self.clock,
        )
        self.transport = StringTransport()
        self.session.makeConnection(self.transport)
        self.decoder = FrameDecoder(1 << 24)
        self.session.dataReceived(encodePreface(Settings()))
        self.clock.advance(0)

    def send(self, *frames: Frame) -> None:
        """
        Deliver C{frames} in one piece and run the zero-delay calls.
        """
        self.session.dataReceived(b"".join(f.encode() for f in frames))
        self.clock.advance(0)

    def read(self) -> list[Frame]:
        """
        The frames the session wrote since the last call.
        """
        data = self.transport.value()
        self.transport.clear()
        return [f for f in self.decoder.receive(data) if not isinstance(f, Preface)]


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
