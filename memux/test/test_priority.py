# -*- test-case-name: memux.test.test_priority -*-
"""
Output priorities: L{memux._scheduler.PriorityScheduler} alone, the
engine's chunk order for given priorities (sans-IO: which chunks come out
in which order), the PRIORITY hint frame between engines and with a peer
that ignores it, and the Twisted API (C{openChannel(priority=...)},
C{setPriority}, C{ChannelEndpoint}, the C{memux:} endpoint string).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.test.iosim import IOPump
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from memux._cli import buildParser, main, makeCommand
from memux._cli._common import ChannelCommand, ExitStatus, Reporter
from memux._credit import LATENCY_WINDOW
from memux._engine import (
    DataReceived,
    Event,
    MemuxEngine,
    PingAcknowledged,
)
from memux._scheduler import _UNIT_WEIGHT, PriorityScheduler, RoundRobinScheduler
from memux._wire import (
    CreditFrame,
    DataFrame,
    Frame,
    FrameDecoder,
    PingFrame,
    Preface,
    PriorityFrame,
    UnknownFrame,
    encodePreface,
)
from memux.codes import ChannelClosedError
from memux.endpoints import EndpointDescriptionError, parseStreamClient
from memux.protocol import ChannelEndpoint, MemuxProtocol
from memux.settings import (
    DEFAULT_URGENCY,
    DEFAULT_WEIGHT,
    Priority,
    SessionSettings,
    checkPriority,
)
from memux.test._fakes import (
    ANY_FRAME_SIZE,
    PausingTransport,
    PeerOnTransport,
    Recorder,
    TCPLikeTransport,
    factoryOf,
    reactorTurn,
)
from memux.testing import StringChannelTransport, connectedSessions
from memux.transport import ChannelTransport
from memux.tunnel import LocalForwardingFactory

#: Small frames and windows, so a few kilobytes make several chunks.
SMALL = SessionSettings(
    maxFrameSize=16384, chunkSize=16384, channelCredit=1 << 20, sessionCredit=1 << 22
)
CHUNK = 16384


@dataclass(eq=False)
class Item:
    """
    A stand-in channel: what a scheduler reads and keeps.
    """

    id: int
    urgency: int = DEFAULT_URGENCY
    weight: int = DEFAULT_WEIGHT
    scheduled: bool = False
    parked: bool = False
    offset: int = 0
    turnEnd: int = 0


def drain(
    s: PriorityScheduler[Item] | RoundRobinScheduler[Item],
    backlog: dict[Item, list[int]],
    limit: int = 1000,
) -> list[tuple[int, int]]:
    """
    Play the engine's part: take the next channel, send its next chunk
    (``backlog``: each channel's chunk sizes still to send), and yield its
    turn while it has more and another channel waits (as the engine does);
    return the (channel id, chunk size) sent, in order.
    """
    sent: list[tuple[int, int]] = []
    while s and len(sent) < limit:
        ch = s.next()
        assert ch is not None
        while True:
            n = backlog[ch].pop(0)
            ch.offset += n
            sent.append((ch.id, n))
            if not backlog[ch]:
                break
            if s:
                s.yieldTurn(ch)
                break
    return sent


def bytesBy(sent: list[tuple[int, int]]) -> dict[int, int]:
    """
    Bytes sent per channel id.
    """
    totals: dict[int, int] = {}
    for cid, n in sent:
        totals[cid] = totals.get(cid, 0) + n
    return totals


class SchedulerTests(SynchronousTestCase):
    """
    L{PriorityScheduler} on its own.
    """

    def setUp(self) -> None:
        self.s: PriorityScheduler[Item] = PriorityScheduler(CHUNK)

    def test_unitWeightIsTheDefault(self) -> None:
        """
        A channel of the default weight gets exactly one quantum a turn.
        """
        self.assertEqual(_UNIT_WEIGHT, DEFAULT_WEIGHT)

    def test_mostUrgentFirst(self) -> None:
        """
        Whatever order channels are put in line, they come out most urgent
        first, and in the order they came within an urgency.
        """
        items = [Item(1, 5), Item(3, 0), Item(5, 3), Item(7, 0), Item(9, 7)]
        items += [Item(11, 3)]
        for ch in items:
            self.s.add(ch)
        order = [self.s.next() for _ in items]
        self.assertEqual([ch.id for ch in order if ch is not None], [3, 7, 5, 11, 1, 9])
        self.assertIsNone(self.s.next())

    def test_lessUrgentWaits(self) -> None:
        """
        A less urgent channel sends nothing while a more urgent one has
        chunks to send, however many.
        """
        bulk, urgent = Item(1, 3), Item(3, 1)
        backlog = {bulk: [CHUNK] * 3, urgent: [CHUNK] * 5}
        self.s.add(bulk)
        self.s.add(urgent)
        self.assertEqual([cid for cid, _ in drain(self.s, backlog)], [3] * 5 + [1] * 3)

    def test_urgentArrivalGoesFirst(self) -> None:
        """
        A channel put in line while others wait goes ahead of every less
        urgent one, behind those as urgent as it.
        """
        a, b, c = Item(1, 3), Item(3, 3), Item(5, 2)
        for ch in (a, b):
            self.s.add(ch)
        first = self.s.next()
        self.s.add(c)
        assert first is not None
        first.offset += CHUNK
        self.s.yieldTurn(first)
        self.assertEqual([self.s.next(), self.s.next(), self.s.next()], [c, b, a])

    def test_weightsShareBytes(self) -> None:
        """
        Within an urgency, backlogged channels share bytes in proportion to
        their weights: weights 64, 32 and 16 send 4, 2 and 1 chunks a round.
        """
        a, b, c = Item(1, weight=64), Item(3, weight=32), Item(5, weight=16)
        backlog = {ch: [CHUNK] * 40 for ch in (a, b, c)}
        for ch in (a, b, c):
            self.s.add(ch)
        sent = drain(self.s, backlog, limit=14)
        self.assertEqual(
            [cid for cid, _ in sent], [1, 1, 1, 1, 3, 3, 5, 1, 1, 1, 1, 3, 3, 5]
        )

    def test_smallChunksShareByBytes(self) -> None:
        """
        A channel sending small chunks beside one sending whole ones gets
        as many bytes a round, not as many chunks.
        """
        small, big = Item(1), Item(3)
        backlog = {small: [1024] * 64, big: [CHUNK] * 4}
        self.s.add(small)
        self.s.add(big)
        sent = drain(self.s, backlog)
        firstBig = [cid for cid, _ in sent].index(3)
        self.assertEqual(firstBig, 16)  # 16 x 1 KiB: one quantum
        self.assertEqual(bytesBy(sent[: firstBig + 1]), {1: CHUNK, 3: CHUNK})

    def test_debtIsCarried(self) -> None:
        """
        A light channel that sent a whole chunk, more than its turn, skips
        the turns that chunk borrowed: weight 4 against 16 sends one chunk
        for every four of the other.
        """
        light, heavy = Item(1, weight=4), Item(3)
        backlog = {light: [CHUNK] * 10, heavy: [CHUNK] * 10}
        self.s.add(light)
        self.s.add(heavy)
        sent = [cid for cid, _ in drain(self.s, backlog, limit=10)]
        self.assertEqual(sent, [1, 3, 3, 3, 3, 1, 3, 3, 3, 3])

    def test_aloneIsFree(self) -> None:
        """
        What a channel sent while it was alone in line is not held against
        it: once another arrives, it waits one turn at most.
        """
        a, b = Item(1), Item(3)
        self.s.add(a)
        ch = self.s.next()
        assert ch is a
        a.offset += 100 * CHUNK  # alone: the engine never yields its turn
        self.s.add(a)
        self.s.add(b)
        sent = drain(self.s, {a: [CHUNK] * 3, b: [CHUNK] * 3})
        self.assertEqual([cid for cid, _ in sent], [3, 1, 3, 1, 3, 1])

    def test_setPriorityMovesInLine(self) -> None:
        """
        A channel in line given another urgency moves to the back of its new
        class; one not in line keeps its new priority for when it comes.
        """
        a, b, c = Item(1), Item(3), Item(5)
        for ch in (a, b, c):
            self.s.add(ch)
        self.s.setPriority(c, 0, 16)
        self.s.setPriority(a, 3, 64)  # same class: keeps its place
        self.assertEqual((a.urgency, a.weight), (3, 64))
        self.assertEqual([self.s.next(), self.s.next(), self.s.next()], [c, a, b])
        d = Item(7)
        self.s.setPriority(d, 1, 8)
        self.s.add(b)
        self.s.add(d)
        self.assertEqual([self.s.next(), self.s.next()], [d, b])

    def test_park(self) -> None:
        """
        Parked channels wait apart and come back in line by urgency when
        unparked; a removed one does not come back.
        """
        a, b, c = Item(1, 5), Item(3, 1), Item(5, 0)
        for ch in (a, b, c):
            self.s.park(ch)
        self.assertTrue(self.s.parked)
        self.assertIsNone(self.s.next())
        self.s.remove(c)
        self.s.unpark()
        self.assertFalse(self.s.parked)
        self.assertEqual([self.s.next(), self.s.next(), self.s.next()], [b, a, None])

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.tuples(st.integers(0, 5), st.integers(1, 6)), min_size=1, max_size=40
        )
    )
    def test_roundRobinAtTheDefault(self, arrivals: list[tuple[int, int]]) -> None:
        """
        With every channel at the default priority and sending whole chunks
        (bulk), the order is round robin by chunk, exactly as
        L{RoundRobinScheduler}'s, whatever the order and timing of arrivals.
        """
        orders = []
        schedulers: list[PriorityScheduler[Item] | RoundRobinScheduler[Item]]
        schedulers = [PriorityScheduler(CHUNK), RoundRobinScheduler(CHUNK)]
        for s in schedulers:
            items = [Item(2 * i + 1) for i in range(6)]
            backlog: dict[Item, list[int]] = {ch: [] for ch in items}
            sent: list[tuple[int, int]] = []
            for which, chunks in arrivals:
                ch = items[which]
                backlog[ch] += [CHUNK] * chunks
                s.add(ch)
                sent += drain(s, backlog, limit=2)  # some now, the rest later
            sent += drain(s, backlog)
            orders.append(sent)
        self.assertEqual(orders[0], orders[1])

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(st.integers(1, 3 * CHUNK), min_size=2, max_size=4),
        st.lists(st.sampled_from([4, 16, 64, 256]), min_size=4, max_size=4),
    )
    def test_noStarvationInAClass(self, sizes: list[int], weights: list[int]) -> None:
        """
        Within a class, whatever the chunk sizes and weights, no backlogged
        channel starves: between two of its chunks the others send at most
        a turn and a chunk each, for each round it waits (one, or as many
        as its last chunk borrowed from its turns).
        """
        items = [Item(2 * i + 1, weight=w) for i, w in enumerate(weights[: len(sizes)])]
        backlog = {ch: [min(n, CHUNK)] * 30 for ch, n in zip(items, sizes, strict=True)}
        s: PriorityScheduler[Item] = PriorityScheduler(CHUNK)
        for ch in items:
            s.add(ch)
        sent = drain(s, backlog, limit=60)

        def turn(ch: Item) -> int:
            return max(1, CHUNK * ch.weight // 16)

        for ch in items:
            rounds = -(-CHUNK // turn(ch)) + 1
            bound = rounds * sum(turn(o) + CHUNK for o in items if o is not ch)
            gap = 0
            for cid, n in sent:
                if cid == ch.id:
                    gap = 0
                elif backlog[ch]:
                    gap += n
                    self.assertLessEqual(gap, bound)


# ---------------------------------------------------------------- engines


class Wire:
    """
    A client and a server engine back to back; bytes move when a test says
    so.  Frames the client sends pass ``dropFromClient`` first: those it
    returns true for never reach the server (a peer that ignores them).
    """

    def __init__(
        self,
        clientSettings: SessionSettings | None = SMALL,
        serverSettings: SessionSettings | None = SMALL,
        dropFromClient: Callable[[Preface | Frame], bool] | None = None,
    ) -> None:
        self.client = MemuxEngine(True, clientSettings)
        self.server = MemuxEngine(False, serverSettings)
        self.dropFromClient = dropFromClient
        self.clientFrames: list[Preface | Frame] = []
        self.serverFrames: list[Preface | Frame] = []
        self.serverEvents: list[Event] = []
        self.clientEvents: list[Event] = []
        self._fromClient = FrameDecoder(ANY_FRAME_SIZE)
        self._fromServer = FrameDecoder(ANY_FRAME_SIZE)

    def clientToServer(self, maxBytes: int = 1 << 30) -> list[Preface | Frame]:
        """
        Move what the client has to send (about ``maxBytes``); return its
        frames.
        """
        data = self.client.dataToSend(maxBytes)
        self.clientEvents += self.client.popEvents()
        frames = self._fromClient.receive(data)
        self.clientFrames += frames
        if self.dropFromClient is not None:
            drop = self.dropFromClient
            data = b"".join(
                encodePreface(f.settings, f.version)
                if isinstance(f, Preface)
                else f.encode()
                for f in frames
                if not drop(f)
            )
        self.serverEvents += self.server.receiveData(data)
        return frames

    def serverToClient(self) -> list[Preface | Frame]:
        """
        Move what the server has to send; return its frames.
        """
        data = self.server.dataToSend()
        self.serverEvents += self.server.popEvents()
        frames = self._fromServer.receive(data)
        self.serverFrames += frames
        self.clientEvents += self.client.receiveData(data)
        return frames

    def pump(self) -> None:
        """
        Move bytes both ways until neither side has anything to send.
        """
        for _ in range(1000):
            if not (self.clientToServer() or self.serverToClient()):
                return
        raise AssertionError("the engines never went quiet")


def chunkOrder(frames: list[Preface | Frame]) -> list[int]:
    """
    The channel of each DATA frame with payload, in order.
    """
    return [f.channel for f in frames if isinstance(f, DataFrame) and f.data]


def delivered(events: list[Event], channel: int) -> bytes:
    """
    Every byte delivered on ``channel``.
    """
    return b"".join(
        e.data for e in events if isinstance(e, DataReceived) and e.channel == channel
    )


class EngineOrderTests(SynchronousTestCase):
    """
    Which chunks the engine sends, in which order, for given priorities.
    """

    def setUp(self) -> None:
        self.wire = Wire()
        self.wire.pump()  # prefaces read: 16 KiB chunks both ways

    def open(self, count: int) -> list[int]:
        """
        Open ``count`` channels and announce them.
        """
        ids = [self.wire.client.openChannel() for _ in range(count)]
        self.wire.clientToServer()
        return ids

    def test_urgentBeforeBulk(self) -> None:
        """
        A channel at urgency 0 has all its queued chunks sent before those
        of channels at the default urgency queued before it; then the
        others take turns as before.
        """
        a, b, u = self.open(3)
        client = self.wire.client
        client.setPriority(u, 0)
        client.sendData(a, b"a" * 3 * CHUNK, True)
        client.sendData(b, b"b" * 3 * CHUNK, True)
        client.sendData(u, b"u" * 2 * CHUNK, True)
        self.assertEqual(
            chunkOrder(self.wire.clientToServer()), [u, u, a, b, a, b, a, b]
        )

    def test_openingWaitsForUrgent(self) -> None:
        """
        A new channel's first chunk, which usually rides on its opening,
        does not go before a more urgent channel's queued data: the opening
        goes alone, its data in turn.
        """
        (u,) = self.open(1)
        client = self.wire.client
        client.setPriority(u, 1)
        client.sendData(u, b"u" * 2 * CHUNK, True)
        late = client.openChannel()
        client.sendData(late, b"l" * CHUNK, True)
        frames = self.wire.clientToServer()
        self.assertEqual(chunkOrder(frames), [u, u, late])
        self.assertIn(DataFrame(late, b"", open=True), frames)

    def test_controlFirst(self) -> None:
        """
        Control frames (a PING's answer) still go out before the most
        urgent channel's data.
        """
        (u,) = self.open(1)
        self.wire.client.setPriority(u, 0)
        self.wire.server.receiveData(PingFrame(b"p").encode())
        server = self.wire.server
        cid = server.openChannel()
        server.setPriority(cid, 0)
        server.sendData(cid, b"x" * CHUNK, True)
        frames = self.wire.serverToClient()
        kinds = [type(f) for f in frames]
        self.assertLess(kinds.index(PingFrame), kinds.index(DataFrame))

    def test_raisedMidStream(self) -> None:
        """
        A channel made urgent while others' chunks wait sends its own next,
        from the next output on.
        """
        a, b = self.open(2)
        client = self.wire.client
        client.sendData(a, b"a" * 4 * CHUNK, True)
        client.sendData(b, b"b" * 4 * CHUNK, True)
        self.assertEqual(chunkOrder(self.wire.clientToServer(2 * CHUNK)), [a, b])
        client.setPriority(b, 1)
        self.assertEqual(chunkOrder(self.wire.clientToServer()), [b, b, b, a, a, a])

    def test_weights(self) -> None:
        """
        Three bulk channels of weights 64, 32 and 16 in one urgency send 4,
        2 and 1 chunks a round.
        """
        a, b, c = self.open(3)
        client = self.wire.client
        for cid, weight in ((a, 64), (b, 32), (c, 16)):
            client.setPriority(cid, DEFAULT_URGENCY, weight)
            client.sendData(cid, bytes(20 * CHUNK), True)
        order = chunkOrder(self.wire.clientToServer(14 * CHUNK))
        self.assertEqual(order[:14], [a] * 4 + [b] * 2 + [c] + [a] * 4 + [b] * 2 + [c])

    def test_defaultIsRoundRobin(self) -> None:
        """
        With every channel at the default priority, bulk channels take
        turns chunk by chunk and a short message takes its turn between
        them, as round robin always did.
        """
        a, b, c = self.open(3)
        client = self.wire.client
        client.sendData(a, b"a" * 3 * CHUNK, True)
        client.sendData(b, b"b" * 3 * CHUNK, True)
        client.sendData(c, b"c", True)
        self.assertEqual(chunkOrder(self.wire.clientToServer()), [a, b, c, a, b, a, b])

    def test_priorityReported(self) -> None:
        """
        C{priority} reports what C{setPriority} set, the default for a
        channel never set and for one not open.
        """
        a, b = self.open(2)
        self.wire.client.setPriority(a, 1, 200)
        self.assertEqual(self.wire.client.priority(a), Priority(1, 200))
        self.assertEqual(self.wire.client.priority(b), Priority(3, 16))
        self.assertEqual(self.wire.client.priority(99), Priority())

    def test_badPriority(self) -> None:
        """
        A bad urgency or weight raises a typed error naming it; a channel
        not open raises L{ChannelClosedError}.
        """
        (a,) = self.open(1)
        client = self.wire.client
        e = self.assertRaises(ValueError, client.setPriority, a, 8)
        self.assertIn("urgency must be from 0", str(e))
        e = self.assertRaises(ValueError, client.setPriority, a, 1, 0)
        self.assertIn("weight must be from 1 to 256", str(e))
        self.assertRaises(TypeError, client.setPriority, a, "1")
        self.assertRaises(TypeError, client.setPriority, a, True)
        self.assertRaises(ChannelClosedError, client.setPriority, 99, 1)


class HintTests(SynchronousTestCase):
    """
    The PRIORITY hint: the receiver of a channel's data asks its sender
    for a priority.
    """

    def test_hintHonoured(self) -> None:
        """
        A priority set on one side goes to the peer in a PRIORITY frame
        (after the channel's opening), and the peer then sends the
        channel's data at it.
        """
        wire = Wire()
        wire.pump()
        cid = wire.client.openChannel()
        wire.client.setPriority(cid, 0, 32)
        frames = wire.clientToServer()
        self.assertIn(PriorityFrame(cid, 0, 32), frames)
        self.assertLess(
            [type(f) for f in frames].index(DataFrame),
            frames.index(PriorityFrame(cid, 0, 32)),
        )
        self.assertEqual(wire.server.priority(cid), Priority(0, 32))
        other = wire.server.openChannel()
        wire.server.sendData(other, bytes(2 * CHUNK), True)
        wire.server.sendData(cid, bytes(2 * CHUNK), True)
        self.assertEqual(chunkOrder(wire.serverToClient()), [cid, cid, other, other])

    def test_hintWaitsForPreface(self) -> None:
        """
        A priority set before the peer's preface is read is hinted once it
        is (and if the peer takes hints); not before.
        """
        wire = Wire()
        cid = wire.client.openChannel()
        wire.client.setPriority(cid, 2)
        wire.client.sendData(cid, b"hello", True)
        first = wire.clientToServer()
        self.assertNotIn(PriorityFrame(cid, 2, 16), first)
        wire.serverToClient()
        self.assertTrue(wire.client.hasDataToSend())
        self.assertEqual(wire.clientToServer(), [PriorityFrame(cid, 2, 16)])
        self.assertEqual(wire.server.priority(cid), Priority(2, 16))

    def test_refusingServerGetsNoHints(self) -> None:
        """
        A server with C{acceptPriorityHints=False} says so in its preface
        (exactly as a peer that knows nothing of hints), and the client
        then sends it no PRIORITY frame; its own priority still applies to
        what it sends.
        """
        wire = Wire(serverSettings=SessionSettings(acceptPriorityHints=False))
        wire.pump()
        self.assertEqual(wire.client.peerSettings.priorityHints, 0)
        cid = wire.client.openChannel()
        wire.client.setPriority(cid, 0)
        wire.client.sendData(cid, b"x", True)
        wire.pump()
        self.assertEqual(
            [f for f in wire.clientFrames if isinstance(f, PriorityFrame)], []
        )
        self.assertEqual(wire.client.priority(cid), Priority(0, 16))
        self.assertEqual(wire.server.priority(cid), Priority())

    def test_refusingServerIgnoresHints(self) -> None:
        """
        A server that takes no hints ignores a PRIORITY frame sent anyway,
        as any extension frame: the channel's priority stays its own, and
        the session goes on.
        """
        wire = Wire(serverSettings=SessionSettings(acceptPriorityHints=False))
        wire.pump()
        cid = wire.client.openChannel()
        wire.client.sendData(cid, b"x", True)
        wire.clientToServer()
        events = wire.server.receiveData(PriorityFrame(cid, 0, 64).encode())
        self.assertEqual(events, [])
        self.assertEqual(wire.server.priority(cid), Priority())
        self.assertFalse(wire.server.terminated)

    def test_hintFloodEndsSession(self) -> None:
        """
        A peer that keeps moving a channel with data queued from one urgency
        to another spends the allowance of frames that do no work, and the
        session ends (EXCESSIVE_LOAD) rather than reorder its queue for ever;
        hints that move nothing queued cost nothing.
        """
        wire = Wire(serverSettings=SessionSettings(maxUselessFrames=10))
        wire.pump()
        cid = wire.client.openChannel()
        wire.client.sendData(cid, b"x", True)
        wire.clientToServer()
        for urgency in range(20):
            wire.server.receiveData(PriorityFrame(cid, urgency % 7, 16).encode())
        self.assertFalse(wire.server.terminated)  # nothing of ours queued
        other = wire.server.openChannel()
        wire.server.sendData(other, bytes(10), True)
        wire.server.sendData(cid, bytes(10), True)
        for urgency in range(20):
            wire.server.receiveData(PriorityFrame(cid, urgency % 2, 16).encode())
        self.assertTrue(wire.server.terminated)

    def test_noEcho(self) -> None:
        """
        A side told a priority by a hint sends no hint back.
        """
        wire = Wire()
        wire.pump()
        cid = wire.client.openChannel()
        wire.client.setPriority(cid, 1)
        wire.pump()
        self.assertEqual(
            [f for f in wire.serverFrames if isinstance(f, PriorityFrame)], []
        )

    def test_hintForClosedChannelIgnored(self) -> None:
        """
        A hint for a channel that has closed (a race with its close) is
        ignored, and the session goes on.
        """
        wire = Wire()
        wire.pump()
        cid = wire.client.openChannel()
        wire.client.sendData(cid, b"x", True)
        wire.client.closeChannel(cid)
        wire.pump()
        wire.server.closeChannel(cid)
        wire.pump()
        self.assertFalse(wire.server.isOpen(cid))
        wire.server.receiveData(PriorityFrame(cid, 0, 16).encode())
        self.assertFalse(wire.server.terminated)

    def test_malformedIsAnUnknownFrame(self) -> None:
        """
        A PRIORITY payload that does not match the layout, or whose values
        are out of range, decodes as an unknown extension frame: ignored.
        """
        decoder = FrameDecoder(ANY_FRAME_SIZE)
        decoder.receive(encodePreface(SMALL.toWire()))
        for payload in (
            b"\x01\x08\x10",
            b"\x01\x00\x00",
            b"\x01\x00",
            b"\x01\x00\x10\x00",
        ):
            raw = UnknownFrame(15, 0, 1, payload).encode()
            self.assertEqual(decoder.receive(raw), [UnknownFrame(15, 0, 1, payload)])

    def test_peerIgnoringHintsInteroperates(self) -> None:
        """
        A peer that never sees the hints (it ignores extension frames, as
        version 1 requires of one that does not know them) gets every
        message intact and in order, and both sessions go on cleanly.
        """
        wire = Wire(dropFromClient=lambda f: isinstance(f, PriorityFrame))
        wire.pump()
        ids = [wire.client.openChannel() for _ in range(3)]
        for i, cid in enumerate(ids):
            wire.client.setPriority(cid, i, 8 << i)
            for n in range(5):
                wire.client.sendData(cid, bytes([cid]) * (n * 9000 + 1), True)
            wire.client.closeChannel(cid)
        for _ in range(20):
            wire.pump()
            for cid in ids:
                wire.server.consumed(cid, wire.server.heldBytes(cid))
        self.assertTrue(any(isinstance(f, PriorityFrame) for f in wire.clientFrames))
        for cid in ids:
            expected = b"".join(bytes([cid]) * (n * 9000 + 1) for n in range(5))
            self.assertEqual(delivered(wire.serverEvents, cid), expected)
            self.assertEqual(wire.server.priority(cid), Priority())
        self.assertFalse(wire.server.terminated or wire.client.terminated)
        wire.client.ping(b"ok")
        wire.pump()
        self.assertIn(PingAcknowledged(b"ok"), wire.clientEvents)


class UrgentCountTests(SynchronousTestCase):
    """
    The engine's count of open channels more urgent than the default
    (`MemuxEngine.urgentChannels`), which puts the session in latency mode.
    """

    def urgentOpen(self, engine: MemuxEngine, channels: list[int]) -> int:
        """
        How many of ``channels`` are open with an urgency under the default.
        """
        return sum(
            1
            for cid in channels
            if engine.isOpen(cid) and engine.priority(cid).urgency < DEFAULT_URGENCY
        )

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["open", "urgency", "close", "reset", "peerReset"]),
                st.integers(0, 7),
                st.integers(0, 20),
            ),
            max_size=120,
        )
    )
    def test_countMatchesChannels(self, steps: list[tuple[str, int, int]]) -> None:
        """
        Whatever channels open, change urgency (here or by the peer's
        hint), close or are reset by either side, each engine's count is
        the number of its open channels more urgent than the default.
        """
        wire = Wire()
        wire.pump()
        opened: list[int] = []
        for op, urgency, pick in steps:
            if op == "open" or not opened:
                opened.append(wire.client.openChannel())
                wire.pump()
                continue
            cid = opened[pick % len(opened)]
            if not wire.client.isOpen(cid):
                continue
            if op == "urgency":
                wire.client.setPriority(cid, urgency)
            elif op == "close":
                wire.client.closeChannel(cid)
                if wire.server.isOpen(cid):
                    wire.server.closeChannel(cid)
            elif op == "reset":
                wire.client.resetChannel(cid)
            elif wire.server.isOpen(cid):
                wire.server.resetChannel(cid)
            wire.pump()
            for engine in (wire.client, wire.server):
                self.assertEqual(engine.urgentChannels, self.urgentOpen(engine, opened))

    def test_latencyWindow(self) -> None:
        """
        While the peer has hinted a channel urgent and data waits for the
        receiver (it reads in bulk), the receiver grants a less urgent
        channel at most LATENCY_WINDOW past what its reader consumed
        (never lowering a limit), the urgent channel its full window; a
        receiver that keeps up, or one with no urgent channel open, grants
        full windows.
        """
        MiB = 1 << 20
        settings = SessionSettings(channelCredit=MiB, sessionCredit=1 << 24)
        wire = Wire(settings, settings)
        wire.pump()
        urgent = wire.client.openChannel()
        bulk = wire.client.openChannel()
        wire.client.setPriority(urgent, 0)
        wire.client.sendData(urgent, b"u", True)

        def grants(consume: int) -> dict[int, int]:
            wire.server.consumed(bulk, consume)
            frames = wire.serverToClient()
            return {f.channel: f.limit for f in frames if isinstance(f, CreditFrame)}

        wire.client.sendData(bulk, bytes(MiB), False)
        wire.pump()
        self.assertEqual(wire.server.urgentChannels, 1)
        wire.server.consumed(urgent, 1)
        # Keeping up: a full window.
        self.assertEqual(grants(MiB), {bulk: 2 * MiB})
        # Behind: LATENCY_WINDOW past what is consumed.
        wire.server.receiverBehind = True  # (set by the session core)
        wire.client.sendData(bulk, bytes(MiB), False)
        wire.pump()
        self.assertEqual(grants(MiB), {bulk: 2 * MiB + LATENCY_WINDOW})
        # The peer never has more than LATENCY_WINDOW of it on its way.
        wire.client.sendData(bulk, bytes(MiB), False)
        wire.pump()
        self.assertEqual(
            len(delivered(wire.serverEvents, bulk)), 2 * MiB + LATENCY_WINDOW
        )
        # The urgent channel ends: full windows again.
        wire.client.resetChannel(urgent)
        wire.pump()
        self.assertEqual(wire.server.urgentChannels, 0)
        self.assertEqual(grants(LATENCY_WINDOW), {bulk: 3 * MiB + LATENCY_WINDOW})

    def test_longChurnOfUrgentChannels(self) -> None:
        """
        Through 20,000 urgent channels opened and closed in turn (ids far
        past their first power-of-two boundaries), the count goes up and
        down with them and ends at zero on both sides.
        """
        wire = Wire()
        wire.pump()
        for i in range(20_000):
            cid = wire.client.openChannel()
            wire.client.setPriority(cid, i % DEFAULT_URGENCY)
            wire.client.sendData(cid, b"x", True)
            wire.pump()
            self.assertEqual(
                (wire.client.urgentChannels, wire.server.urgentChannels), (1, 1)
            )
            wire.client.closeChannel(cid)
            wire.server.closeChannel(cid)
            wire.pump()
        self.assertGreater(cid, 1 << 15)
        self.assertEqual(
            (wire.client.urgentChannels, wire.server.urgentChannels), (0, 0)
        )


# ---------------------------------------------------------------- Twisted API


class APITests(SynchronousTestCase):
    """
    Priorities through the Twisted API.
    """

    def openChannel(
        self, **kwargs: Any
    ) -> tuple[ChannelTransport, ChannelTransport, IOPump]:
        """
        Open a channel between two sessions in memory with ``kwargs``; return
        the transports of its two ends, and the pump.
        """
        built: list[Recorder] = []
        client, server, pump = connectedSessions({b"x": factoryOf(built)})
        proto = self.successResultOf(
            client.openChannel(b"x", Factory.forProtocol(Recorder), **kwargs)
        )
        here = cast(ChannelTransport, cast(Recorder, proto).transport)
        here.write(b"hi")
        pump.flush()
        return here, cast(ChannelTransport, built[0].transport), pump

    def test_openChannelWithPriority(self) -> None:
        """
        C{openChannel(priority=, weight=)} sets the channel's priority from
        the start, visible on its transport at both ends (the peer took the
        hint).
        """
        here, there, pump = self.openChannel(priority=1, weight=40)
        self.assertEqual(here.priority, Priority(1, 40))
        self.assertEqual(there.priority, Priority(1, 40))

    def test_setPriority(self) -> None:
        """
        C{transport.setPriority} changes a channel's priority at any time,
        at both ends; bad values raise typed errors, and one on a channel
        that has ended is ignored.
        """
        here, there, pump = self.openChannel()
        self.assertEqual(here.priority, Priority())
        here.setPriority(6, 2)
        pump.flush()
        self.assertEqual(here.priority, Priority(6, 2))
        self.assertEqual(there.priority, Priority(6, 2))
        self.assertRaises(ValueError, here.setPriority, -1)
        self.assertRaises(TypeError, here.setPriority, 1.5)
        here.loseConnection()
        pump.flush()
        here.setPriority(0)  # ended: nothing to do
        self.assertRaises(ValueError, here.setPriority, 9)

    def test_openChannelBadPriority(self) -> None:
        """
        A bad priority fails C{openChannel}'s Deferred with a typed error,
        and opens nothing.
        """
        client, server, pump = connectedSessions({b"x": Factory.forProtocol(Protocol)})
        f = self.failureResultOf(
            client.openChannel(b"x", Factory.forProtocol(Protocol), priority=8),
            ValueError,
        )
        self.assertIn("urgency", str(f.value))
        weight: Any = "9"
        self.failureResultOf(
            client.openChannel(b"x", Factory.forProtocol(Protocol), weight=weight),
            TypeError,
        )
        self.assertEqual(client.counters()["channelsOpened"], 0)

    def test_channelEndpoint(self) -> None:
        """
        C{ChannelEndpoint(priority=, weight=)} opens each channel at that
        priority; a bad one is refused when the endpoint is made.
        """
        client, server, pump = connectedSessions({b"x": Factory.forProtocol(Protocol)})
        endpoint = ChannelEndpoint(client, b"x", priority=0, weight=100)
        proto = self.successResultOf(endpoint.connect(Factory.forProtocol(Protocol)))
        transport = cast(ChannelTransport, cast(Protocol, proto).transport)
        self.assertEqual(transport.priority, Priority(0, 100))
        self.assertRaises(ValueError, ChannelEndpoint, client, b"x", priority=10)

    def test_endpointString(self) -> None:
        """
        A C{memux:} description takes C{priority=} and C{weight=}; bad ones
        are an L{EndpointDescriptionError} naming the argument.
        """
        reactor = MemoryReactorClock()
        endpoint = parseStreamClient(
            reactor, r"tcp:127.0.0.1:7400", service="echo", priority="1", weight="32"
        )
        self.assertEqual((endpoint.priority, endpoint.weight), (1, 32))
        e = self.assertRaises(
            EndpointDescriptionError,
            parseStreamClient,
            reactor,
            r"tcp:127.0.0.1:7400",
            service="echo",
            priority="urgent",
        )
        self.assertIn("priority must be a whole number", str(e))
        e = self.assertRaises(
            EndpointDescriptionError,
            parseStreamClient,
            reactor,
            r"tcp:127.0.0.1:7400",
            service="echo",
            weight="1000",
        )
        self.assertIn("weight must be from 1 to 256", str(e))

    def test_stringTransport(self) -> None:
        """
        The testing fake records a priority as a channel checks it.
        """
        transport = StringChannelTransport()
        self.assertEqual(transport.priority, Priority())
        transport.setPriority(2, 5)
        self.assertEqual(transport.priority, Priority(2, 5))
        self.assertRaises(ValueError, transport.setPriority, 2, 300)

    def test_checkPriority(self) -> None:
        """
        L{checkPriority} gives a L{Priority} for valid values, a typed error
        naming the bad one otherwise.
        """
        self.assertEqual(checkPriority(0, 256), Priority(0, 256))
        self.assertEqual(checkPriority(7), Priority(7, DEFAULT_WEIGHT))
        self.assertRaises(ValueError, checkPriority, 7, 257)
        self.assertRaises(TypeError, checkPriority, None)


class CommandLineTests(SynchronousTestCase):
    """
    C{memux connect} and C{memux forward} take C{--priority} and
    C{--weight}.
    """

    def make(self, *argv: str) -> ChannelCommand:
        """
        The command C{argv} makes.
        """
        args = buildParser().parse_args(list(argv))
        command = makeCommand(
            args, MemoryReactorClock(), Reporter(io.StringIO(), "memux")
        )
        assert isinstance(command, ChannelCommand)
        return command

    def test_options(self) -> None:
        """
        Both commands keep the priority given, and None (the default)
        without one.
        """
        for name in ("connect", "forward"):
            local = ["tcp:0:interface=127.0.0.1"] if name == "forward" else []
            command = self.make(name, *local, "h:1", "echo", "--priority", "0")
            self.assertEqual((command.priority, command.weight), (0, None))
            command = self.make(name, *local, "h:1", "echo", "--weight", "200")
            self.assertEqual((command.priority, command.weight), (None, 200))
            command = self.make(name, *local, "h:1", "echo")
            self.assertEqual((command.priority, command.weight), (None, None))

    def test_outOfRange(self) -> None:
        """
        A priority or weight out of range is a usage error naming the range.
        """
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        for argv, message in [
            (["--priority", "8"], "argument --priority: must be from 0 to 7, not 8"),
            (["--weight", "0"], "argument --weight: must be from 1 to 256, not 0"),
            (["--priority", "high"], "argument --priority: not a whole number"),
        ]:
            with self.assertRaises(SystemExit) as caught:
                main(["connect", "h:1", "echo", *argv])
            self.assertEqual(caught.exception.code, ExitStatus.USAGE)
            self.assertIn(message, err.getvalue())

    def test_forwardedChannels(self) -> None:
        """
        L{LocalForwardingFactory} (what C{memux forward} serves with) opens
        each local connection's channel at its priority, at both ends.
        """
        served: list[Recorder] = []
        client, server, pump = connectedSessions({b"svc": factoryOf(served)})
        factory = LocalForwardingFactory(
            lambda: defer.succeed(client), b"svc", priority=1, weight=48
        )
        protocol = factory.buildProtocol(None)
        local = StringTransport()
        protocol.makeConnection(local)
        protocol.dataReceived(b"up")
        pump.flush()
        there = cast(ChannelTransport, served[0].transport)
        self.assertEqual(there.priority, Priority(1, 48))


@implementer(IPushProducer)
class Writer:
    """
    A streaming producer that writes ``chunk`` to ``transport`` for as long
    as it is not paused, from the start.
    """

    def __init__(self, transport: ChannelTransport, chunk: bytes) -> None:
        self.transport = transport
        self.chunk = chunk
        self.paused = False
        transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        """
        Stop writing.
        """
        self.paused = True

    def resumeProducing(self) -> None:
        """
        Write until paused.
        """
        self.paused = False
        for _ in range(10000):
            if self.paused:
                return
            self.transport.write(self.chunk)
        raise AssertionError("never paused")

    def stopProducing(self) -> None:
        """
        Stop for good.
        """
        self.paused = True


class ProducerShareTests(SynchronousTestCase):
    """
    Channels fed by streaming producers share a connection that pushes back
    as their weights say.
    """

    def shares(
        self, weights: list[int], rounds: int = 400, pushBack: bool = True
    ) -> list[float]:
        """
        Each of ``weights``' channel's share of the bytes a session sends
        over a connection that takes 64 KiB a round and pauses the session
        past that (or, without ``pushBack``, takes all), its producers
        writing 16 KiB chunks.
        """
        clock = Clock()
        session = MemuxProtocol(None, client=True, reactor=clock)
        transport: TCPLikeTransport = (
            PausingTransport() if pushBack else TCPLikeTransport()
        )
        peer = PeerOnTransport(session, clock, transport)
        ids = []
        for weight in weights:
            proto = self.successResultOf(
                session.openChannel(b"", Factory.forProtocol(Protocol), weight=weight)
            )
            channel = cast(ChannelTransport, cast(Protocol, proto).transport)
            Writer(channel, bytes(16384))
            ids.append(channel.channel)
        counts = dict.fromkeys(ids, 0)
        for i in range(rounds):
            reactorTurn(clock)
            for frame in peer.read():
                if isinstance(frame, DataFrame) and i >= rounds // 4:
                    counts[frame.channel] += len(frame.data)
            if isinstance(transport, PausingTransport):
                transport.send()
        total = sum(counts.values())
        return [counts[cid] / total for cid in ids]

    def test_weighted(self) -> None:
        """
        Producers of weights 16, 32 and 64 get 1/7, 2/7 and 4/7 of a
        saturated connection, within 10%.
        """
        for got, want in zip(self.shares([16, 32, 64]), [1, 2, 4], strict=True):
            self.assertLess(abs(got / (want / 7) - 1), 0.1, (got, want))

    def test_equal(self) -> None:
        """
        At the default weight they share equally.
        """
        for got in self.shares([16, 16, 16]):
            self.assertLess(abs(got * 3 - 1), 0.1, got)

    def test_onlyUnderPushBack(self) -> None:
        """
        A connection that takes all the producers write is no competition:
        each channel gets what its producer writes, whatever its weight
        (no producer is held back for the sake of weights).
        """
        for got in self.shares([16, 64], rounds=100, pushBack=False):
            self.assertLess(abs(got * 2 - 1), 0.1, got)
