# -*- test-case-name: memux.test.test_introspect -*-
"""
Tests for live introspection: L{memux.introspect}'s plain data, and
C{session.snapshot()}, C{factory.snapshot()} and C{factory.totals()} on
sessions connected in memory.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.test.iosim import IOPump, connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from memux._engine import DataReceived, MemuxEngine
from memux.codes import ChannelState, ErrorCode
from memux.endpoints import MemuxClientEndpoint, SessionPool
from memux.introspect import (
    RTT_BUCKETS,
    ChannelSnapshot,
    FactorySnapshot,
    RttHistogram,
    SessionCounters,
    SessionSnapshot,
)
from memux.protocol import MemuxProtocol, MultiplexingFactory
from memux.services import Echo
from memux.settings import SessionSettings
from memux.test._helpers import runExample

SMALL_CREDIT = SessionSettings(channelCredit=65536, maxChannelCredit=65536)


class Sink(Protocol):
    """
    Keeps what it receives; may be told to pause its transport at once.
    """

    def __init__(self, pause: bool = False) -> None:
        self.pause = pause
        self.data = b""

    def connectionMade(self) -> None:
        if self.pause:
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.data += data


@implementer(IHalfCloseableProtocol)
class HalfSink(Sink):
    """
    A sink that stays open for writing when its peer half-closes.
    """

    def readConnectionLost(self) -> None:
        pass

    def writeConnectionLost(self) -> None:
        pass


class Pair:
    """
    A server factory's session and a client session, connected in memory.
    """

    def __init__(
        self,
        services: dict[bytes, Any],
        serverSettings: SessionSettings | None = None,
        clientSettings: SessionSettings | None = None,
    ) -> None:
        self.clock = Clock()
        self.factory = MultiplexingFactory(
            services, settings=serverSettings, reactor=self.clock
        )
        self.clientFactory = MultiplexingFactory(
            client=True, settings=clientSettings, reactor=self.clock
        )
        client, server, pump = connectedServerAndClient(
            lambda: self.factory.buildProtocol(None),
            lambda: self.clientFactory.buildProtocol(None),
            clock=self.clock,
        )
        self.client: MemuxProtocol = client
        self.server: MemuxProtocol = server
        self.pump: IOPump = pump

    def open(self, service: bytes, protocol: Protocol) -> Protocol:
        """
        Open a channel from the client, connected to ``protocol``.
        """
        d = self.client.openChannel(service, Factory.forProtocol(lambda: protocol))
        opened: Protocol = d.result  # type: ignore[assignment]
        return opened


class RttHistogramTests(SynchronousTestCase):
    """
    L{RttHistogram} counts round trips into buckets and smooths them.
    """

    def test_buckets(self) -> None:
        """
        Each sample lands in the first bucket whose bound is at least its
        value; one past the last bound lands in +Inf; the sum adds up.
        """
        h = RttHistogram()
        for rtt in (0.0001, RTT_BUCKETS[0], 0.003, 60.0):
            h.sample(rtt)
        self.assertEqual(h.counts[0], 2)
        self.assertEqual(h.counts[RTT_BUCKETS.index(0.005)], 1)
        self.assertEqual(h.counts[-1], 1)
        self.assertEqual(sum(h.counts), 4)
        self.assertAlmostEqual(h.total, 0.0001 + RTT_BUCKETS[0] + 0.003 + 60.0)
        self.assertEqual(h.last, 60.0)

    def test_smoothed(self) -> None:
        """
        The first sample is the smoothed round trip; later ones move it by
        an eighth of their difference (RFC 6298).
        """
        h = RttHistogram()
        self.assertIsNone(h.smoothed)
        h.sample(0.008)
        self.assertEqual(h.smoothed, 0.008)
        h.sample(0.016)
        self.assertAlmostEqual(h.smoothed or 0.0, 0.009)


class CountersTests(SynchronousTestCase):
    """
    L{SessionCounters} add up, key by key.
    """

    def test_add(self) -> None:
        """
        Adding counters adds each number, each dict entry (names seen on
        either side) and each histogram bucket.
        """
        a = dataclasses.replace(
            SessionCounters.zero(),
            bytesSent=10,
            framesSent={"DATA": 2, "OPEN": 1},
            resetsSent={"CANCEL": 1},
            rttCounts=[1] + [0] * len(RTT_BUCKETS),
            rttSum=0.5,
        )
        b = dataclasses.replace(
            SessionCounters.zero(),
            bytesSent=5,
            framesSent={"DATA": 3, "PING": 1},
            rttCounts=[0] * len(RTT_BUCKETS) + [2],
            rttSum=1.0,
        )
        total = a + b
        self.assertEqual(total.bytesSent, 15)
        self.assertEqual(total.framesSent, {"DATA": 5, "OPEN": 1, "PING": 1})
        self.assertEqual(total.resetsSent, {"CANCEL": 1})
        self.assertEqual(total.rttCounts, [1] + [0] * (len(RTT_BUCKETS) - 1) + [2])
        self.assertEqual(total.rttSum, 1.5)
        self.assertEqual(a.bytesSent, 10, "adding changes neither side")


class SnapshotTests(SynchronousTestCase):
    """
    C{session.snapshot()} and C{factory.snapshot()} describe sessions and
    their channels as they are, as plain data.
    """

    def test_channels(self) -> None:
        """
        Each open channel appears with its id, service, state by the spec's
        name, the side that opened it, and the payload bytes each way.
        """
        pair = Pair({b"echo": Factory.forProtocol(Echo)})
        sink = pair.open(b"echo", Sink())
        sink.transport.write(b"x" * 300)  # type: ignore[union-attr]
        pair.pump.flush()
        [mine] = pair.client.snapshot().channels
        self.assertEqual(mine.channel, 1)
        self.assertEqual(mine.service, "echo")
        self.assertEqual(mine.state, ChannelState.OPEN.value)
        self.assertTrue(mine.local)
        self.assertEqual((mine.bytesSent, mine.bytesReceived), (300, 300))
        self.assertEqual((mine.queuedBytes, mine.heldBytes), (0, 0))
        [theirs] = pair.server.snapshot().channels
        self.assertFalse(theirs.local)
        self.assertEqual((theirs.bytesSent, theirs.bytesReceived), (300, 300))
        # The default priority (see doc/priorities.rst).
        self.assertEqual((mine.priority, mine.weight), (3, 16))

    def test_halfClosed(self) -> None:
        """
        A channel this side has half-closed is HALF_CLOSED_LOCAL here and
        HALF_CLOSED_REMOTE at the peer.
        """
        pair = Pair({b"sink": Factory.forProtocol(HalfSink)})
        sink = pair.open(b"sink", HalfSink())
        sink.transport.loseWriteConnection()  # type: ignore[union-attr]
        pair.pump.flush()
        [mine] = pair.client.snapshot().channels
        [theirs] = pair.server.snapshot().channels
        self.assertEqual(mine.state, "HALF_CLOSED_LOCAL")
        self.assertEqual(theirs.state, "HALF_CLOSED_REMOTE")

    def test_creditAndQueue(self) -> None:
        """
        A writer to a reader that paused has its bytes beyond the channel
        window queued, no send credit left, and its producer paused once
        the queue is past the high-water mark; the paused reader holds a
        window's worth, and leaves the peer no credit.
        """
        paused = Sink(pause=True)
        pair = Pair(
            {b"sink": Factory.forProtocol(lambda: paused)},
            serverSettings=SMALL_CREDIT,
        )
        writer = pair.open(b"sink", Sink())

        class Producer:
            def pauseProducing(self) -> None:
                pass

            def resumeProducing(self) -> None:
                pass

            def stopProducing(self) -> None:
                pass

        writer.transport.registerProducer(Producer(), True)  # type: ignore[union-attr]
        writer.transport.write(b"y" * 300_000)  # type: ignore[union-attr]
        pair.pump.flush()
        [mine] = pair.client.snapshot().channels
        self.assertEqual(mine.bytesSent, 65536)
        self.assertEqual(mine.queuedBytes, 300_000 - 65536)
        self.assertEqual(mine.sendCredit, 0)
        self.assertEqual(mine.sendLimit, 65536)
        self.assertTrue(mine.writingPaused)
        self.assertFalse(mine.readingPaused)
        [theirs] = pair.server.snapshot().channels
        self.assertTrue(theirs.readingPaused)
        self.assertEqual(theirs.heldBytes, 65536)
        self.assertEqual(theirs.receiveCredit, 0)
        self.assertEqual(theirs.receiveWindow, 65536)
        counters = pair.client.snapshot().counters
        self.assertGreaterEqual(counters.channelCreditStalls, 1)

    def test_priority(self) -> None:
        """
        A channel's priority (urgency and weight) shows as set with
        C{setPriority}, on this side and, through the hint, on the peer's.
        """
        pair = Pair({b"echo": Factory.forProtocol(Echo)})
        sink = pair.open(b"echo", Sink())
        transport: Any = sink.transport
        transport.setPriority(1, 64)
        pair.pump.flush()
        [mine] = pair.client.snapshot().channels
        self.assertEqual((mine.priority, mine.weight), (1, 64))
        [theirs] = pair.server.snapshot().channels
        self.assertEqual((theirs.priority, theirs.weight), (1, 64))

    def test_session(self) -> None:
        """
        A session's snapshot says which side it is, how long it has been
        connected, both sides' settings, that it is usable, and after a
        PING its round trip.
        """
        pair = Pair({}, clientSettings=SessionSettings(maxFrameSize=32768))
        pair.clock.advance(5)
        pair.client.ping()
        pair.clock.advance(0.25)
        pair.pump.flush()
        s = pair.client.snapshot()
        self.assertTrue(s.client)
        self.assertEqual(s.age, 5.25)
        self.assertEqual(s.settings["maxFrameSize"], 32768)
        self.assertEqual(s.peerSettings["maxFrameSize"], 65536)
        self.assertTrue(s.prefaceReceived)
        self.assertTrue(s.usable)
        self.assertIsNone(s.goAwaySent)
        self.assertEqual(s.rtt, 0.25)
        self.assertEqual(sum(s.counters.rttCounts), 1)
        self.assertFalse(pair.server.snapshot().client)

    def test_keepAliveRtt(self) -> None:
        """
        A server with keepalives (which sends the only PINGs of an idle
        session) knows its round trip from their answers.
        """
        pair = Pair({}, serverSettings=SessionSettings(keepAliveInterval=10.0))
        pair.clock.advance(10)  # nothing heard: a PING goes out
        pair.clock.advance(10)
        pair.pump.flush()
        s = pair.server.snapshot()
        self.assertIsNotNone(s.rtt)
        self.assertEqual(sum(s.counters.rttCounts), 1)
        self.assertTrue(pair.server.connected)

    def test_goAway(self) -> None:
        """
        The side that sent GOAWAY shows its code; the peer shows the code,
        last channel and reason it received, and is no longer usable.
        """
        pair = Pair({b"echo": Factory.forProtocol(Echo)})
        pair.open(b"echo", Sink())
        pair.pump.flush()
        pair.server.goAway(ErrorCode.NO_ERROR, "maintenance")
        pair.pump.flush()
        mine, theirs = pair.server.snapshot(), pair.client.snapshot()
        self.assertEqual(mine.goAwaySent, "NO_ERROR")
        self.assertTrue(mine.draining)
        self.assertEqual(theirs.goAwayReceived, "NO_ERROR")
        self.assertEqual(theirs.goAwayReceivedLastChannel, 1)
        self.assertEqual(theirs.goAwayReceivedReason, "maintenance")
        self.assertFalse(theirs.usable)
        self.assertEqual(mine.counters.goAwaysSent, {"NO_ERROR": 1})
        self.assertEqual(theirs.counters.goAwaysReceived, {"NO_ERROR": 1})

    def test_framesAndResets(self) -> None:
        """
        Frames are counted by type each way, and refusals as RESET frames
        with code REFUSED at both ends.
        """
        pair = Pair({b"echo": Factory.forProtocol(Echo)})
        pair.open(b"echo", Sink()).transport.write(b"z")  # type: ignore[union-attr]
        pair.open(b"nothing", Sink())
        pair.pump.flush()
        mine = pair.client.snapshot().counters
        theirs = pair.server.snapshot().counters
        self.assertEqual(mine.framesSent["OPEN"], 2)
        self.assertEqual(mine.framesSent["DATA"], 1)
        self.assertEqual(mine.framesSent["PREFACE"], 1)
        self.assertEqual(theirs.framesReceived["OPEN"], 2)
        self.assertEqual(theirs.framesReceived["DATA"], 1)
        self.assertEqual(theirs.framesSent["DATA"], 1)  # the echo
        self.assertEqual(theirs.resetsSent, {"REFUSED": 1})
        self.assertEqual(mine.resetsReceived, {"REFUSED": 1})
        self.assertEqual(mine.framesReceived["RESET"], 1)
        self.assertEqual(mine.channelsOpened, 2)
        self.assertEqual(theirs.channelsAccepted, 2)

    def test_json(self) -> None:
        """
        A factory's snapshot goes through JSON and back unchanged, and
        C{toJSON} gives what C{dataclasses.asdict} does.
        """
        echo = Factory.forProtocol(Echo)
        pair = Pair({b"echo": echo, b"\xffbad": echo})
        pair.open(b"echo", Sink()).transport.write(b"\xff" * 10)  # type: ignore[union-attr]
        pair.client.openChannel(b"\xffbad", Factory.forProtocol(Sink))
        pair.client.ping()
        pair.pump.flush()
        snap = pair.factory.snapshot()
        text = json.dumps(snap.toJSON())
        self.assertEqual(FactorySnapshot.fromJSON(json.loads(text)), snap)
        self.assertEqual(snap.toJSON(), dataclasses.asdict(snap))
        client = pair.client.snapshot()
        self.assertEqual(
            SessionSnapshot.fromJSON(json.loads(json.dumps(client.toJSON()))), client
        )
        self.assertIn("\\xffbad", [c.service for c in client.channels])

    def test_fromValues(self) -> None:
        """
        L{ChannelSnapshot.fromValues} makes the same snapshot as its
        constructor, as frozen.
        """
        values = (7, "s", "OPEN", True, False, 1, 2, 3, 4, 5, 6, 7, 8, False, True)
        fast = ChannelSnapshot.fromValues((*values, None, None))
        self.assertEqual(fast, ChannelSnapshot(*values))
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, fast, "state", "x")

    def test_withoutChannels(self) -> None:
        """
        C{snapshot(channels=False)} leaves the channels out, and nothing else.
        """
        pair = Pair({b"echo": Factory.forProtocol(Echo)})
        pair.open(b"echo", Sink())
        pair.pump.flush()
        self.assertEqual(pair.factory.snapshot(False).sessions[0].channels, [])
        self.assertEqual(len(pair.factory.snapshot().sessions[0].channels), 1)


class TotalsTests(SynchronousTestCase):
    """
    C{factory.totals()} adds up what its sessions did, ended ones too, and
    says why they ended.
    """

    def test_endedSessionsKeepCounting(self) -> None:
        """
        The counters of a session that ended stay in the totals (they never
        drop), and the session is counted as ended, cleanly.
        """
        pair = Pair({b"echo": Factory.forProtocol(Echo)})
        pair.open(b"echo", Sink()).transport.write(b"a" * 50)  # type: ignore[union-attr]
        pair.pump.flush()
        before = pair.factory.totals()
        self.assertEqual((before.sessionsOpen, before.sessionsStarted), (1, 1))
        self.assertEqual(before.channelsOpen, 1)
        pair.client.loseConnection()
        pair.pump.flush()
        after = pair.factory.totals()
        self.assertEqual((after.sessionsOpen, after.channelsOpen), (0, 0))
        self.assertEqual(after.sessionsStarted, 1)
        self.assertGreaterEqual(after.counters.bytesSent, before.counters.bytesSent)
        self.assertEqual(after.counters.channelsAccepted, 1)
        self.assertEqual(after.sessionsEnded, {"closed": 1})

    def test_idleTimeout(self) -> None:
        """
        A session the server ends for idleness counts as C{idle_timeout}.
        """
        pair = Pair({}, serverSettings=SessionSettings(idleTimeout=30.0))
        pair.clock.advance(31)
        pair.pump.flush()
        self.assertFalse(pair.server.connected)
        self.assertEqual(pair.factory.totals().sessionsEnded, {"idle_timeout": 1})
        self.assertEqual(
            pair.factory.totals().counters.goAwaysSent, {"IDLE_TIMEOUT": 1}
        )

    def test_excessiveLoad(self) -> None:
        """
        A session cut for a flood of PINGs counts as C{EXCESSIVE_LOAD}.
        """
        pair = Pair({}, serverSettings=SessionSettings(maxUselessFrames=10))
        for _ in range(20):
            pair.client.ping().addErrback(lambda _: None)
        pair.pump.flush()
        self.assertFalse(pair.server.connected)
        totals = pair.factory.totals()
        self.assertEqual(totals.sessionsEnded, {"EXCESSIVE_LOAD": 1})
        self.assertEqual(totals.counters.goAwaysSent, {"EXCESSIVE_LOAD": 1})
        self.assertEqual(
            pair.clientFactory.totals().sessionsEnded, {"peer_EXCESSIVE_LOAD": 1}
        )


class ExampleTests(SynchronousTestCase):
    """
    examples/snapshot.py, which doc/operations.rst points to, runs.
    """

    def test_snapshotExample(self) -> None:
        """
        The example sees its three echo channels from the server's side,
        with the bytes each carried, and the same through the status site's
        /metrics and /sessions.
        """
        out = runExample("snapshot.py")
        self.assertIn("server: 1 session, from 127.0.0.1", out)
        self.assertIn("channel 5 echo OPEN: 30000 bytes in, 30000 out", out)
        self.assertIn("metrics: memux_channels_open 3.0", out)
        self.assertIn("/sessions: channels open 3", out)


class PoolSnapshotTests(SynchronousTestCase):
    """
    A client L{SessionPool} snapshots the sessions it holds.
    """

    def test_pool(self) -> None:
        """
        C{pool.snapshot()} has one snapshot per connected session of the
        pool, client side, with the channels opened through it: IDLE until
        their opening goes out, then OPEN.
        """
        reactor = MemoryReactorClock()
        pool = SessionPool(reactor)
        endpoint = MemuxClientEndpoint(pool, "tcp:example.com:7400", b"echo")
        self.assertEqual(pool.snapshot(), [])
        endpoint.connect(Factory.forProtocol(Sink))
        endpoint.connect(Factory.forProtocol(Sink))
        host, port, factory, _, _ = reactor.tcpClients[-1]
        wrapper: Any = factory.buildProtocol(IPv4Address("TCP", host, port))
        wrapper.makeConnection(StringTransport())
        [session] = pool.snapshot()
        self.assertTrue(session.client)
        self.assertEqual([c.service for c in session.channels], ["echo", "echo"])
        # Not announced yet (the flush is for the next reactor turn): IDLE.
        self.assertEqual([c.state for c in session.channels], ["IDLE", "IDLE"])
        reactor.advance(0)
        [session] = pool.snapshot()
        self.assertEqual([c.state for c in session.channels], ["OPEN", "OPEN"])


#: What one step of `FrameCountTests` does: (what, which side, a number).
_STEP = st.tuples(
    st.sampled_from(["open", "send", "end", "close", "reset", "drop", "ping", "pump"]),
    st.booleans(),
    st.integers(0, 200_000),
)


class FrameCountTests(SynchronousTestCase):
    """
    The engine counts DATA frames sent by their pieces, once per
    C{piecesToSend} (not once per frame): the counts must still be exact.
    """

    @settings(max_examples=150, deadline=None)
    @given(st.lists(_STEP, max_size=60))
    def test_sentIsReceived(self, steps: list[tuple[str, bool, int]]) -> None:
        """
        Under any mix of openings (named and default services, lossy),
        data, ends of messages, closes, resets, discards, PINGs and partial
        deliveries, every frame type each side counts as sent, the other
        counts as received, once all is delivered.
        """
        engines = [MemuxEngine(True), MemuxEngine(False)]
        mine: list[list[int]] = [[], []]  # channels each side opened
        lossy: set[int] = set()
        closed: set[int] = set()  # by this side

        def deliver(side: int, maxBytes: int) -> None:
            data = engines[side].dataToSend(maxBytes)
            peer = engines[1 - side]
            for e in peer.receiveData(data):
                if isinstance(e, DataReceived):
                    peer.consumed(e.channel, len(e.data))

        for what, side, n in steps:
            engine, own = engines[side], mine[side]
            cid = own[n % len(own)] if own else None
            if what == "open":
                service = b"" if n % 2 else b"svc"
                own.append(engine.openChannel(service, lossy=n % 3 == 0))
                if n % 3 == 0:
                    lossy.add(own[-1])
            elif what in ("send", "end") and cid is not None:
                if engine.isOpen(cid) and not engine.finSent(cid):
                    try:
                        engine.sendData(cid, b"x" * (n % 70_000), what == "end")
                    except ValueError:
                        pass  # closed for writing already
            elif what == "close" and cid is not None:
                engine.closeChannel(cid)
                closed.add(cid)
            elif what == "reset" and cid is not None:
                engine.resetChannel(cid)
                closed.add(cid)
            elif what == "drop":
                candidates = sorted(
                    c
                    for c in own
                    if c in lossy and c not in closed and engine.isOpen(c)
                )
                if candidates:
                    # Two messages more, so that there is something to drop.
                    cid = candidates[n % len(candidates)]
                    engine.sendData(cid, b"d" * (n % 3000), True)
                    engine.sendData(cid, b"e" * (n % 5000), True)
                    engine.discardQueuedMessages(cid, keepNewest=n % 2 == 0)
            elif what == "ping":
                engine.ping(n.to_bytes(8, "big"))
            elif what == "pump":
                deliver(side, 1 + n)
        for _ in range(1000):
            if not (engines[0].hasDataToSend() or engines[1].hasDataToSend()):
                break
            deliver(0, 1 << 20)
            deliver(1, 1 << 20)
        for one in (0, 1):
            self.assertFalse(engines[one].terminated)
            sent = engines[one].counters()
            received = engines[1 - one].counters()
            self.assertEqual(sent.framesSent, received.framesReceived)
            self.assertEqual(sent.bytesSent, received.bytesReceived)
            for kind in sent.framesSent:
                event(f"sent {kind}")

    def test_drops(self) -> None:
        """
        A DROP frame, and the DATA frames around it, are counted on both
        sides (a case the property above reaches only now and then).
        """
        client, server = MemuxEngine(True), MemuxEngine(False)
        cid = client.openChannel(b"", lossy=True)
        for _ in range(3):
            client.sendData(cid, b"m" * 10, True)
        self.assertEqual(client.discardQueuedMessages(cid, keepNewest=True), 2)
        server.receiveData(client.dataToSend())
        client.receiveData(server.dataToSend())
        sent, received = client.counters(), server.counters()
        self.assertEqual(
            sent.framesSent, {"PREFACE": 1, "OPEN": 1, "DATA": 1, "DROP": 1}
        )
        self.assertEqual(received.framesReceived, sent.framesSent)
