# -*- test-case-name: memux.test.test_engine -*-
"""
Tests for L{memux._engine}, the sans-IO session engine, and the credit
policy in L{memux._credit}.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from memux._credit import (
    ChannelCountCredit,
    CreditWindow,
    SendCredit,
    SessionCreditWindow,
)
from memux._engine import (
    ChannelClosed,
    ChannelOpened,
    ChannelReset,
    DataReceived,
    Event,
    GoAwayReceived,
    LocalHalfClosed,
    MemuxEngine,
    MessagesDropped,
    PeerWarning,
    PingAcknowledged,
    PrefaceReceived,
    RemoteHalfClosed,
    SessionSettings,
    SessionTerminated,
)
from memux._wire import (
    VERSION,
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
from memux.codes import ChannelClosedError, EngineError, SessionClosedError
from memux.test._fakes import ANY_FRAME_SIZE, RawPeer, messageBody, splitAt

T = TypeVar("T")

#: The smallest settings the protocol allows: small windows make credit
#: exhaustion easy to reach.
SMALLEST = SessionSettings(
    maxFrameSize=16384, channelCredit=65536, sessionCredit=262144, maxChannels=100
)


def ofType(items: Iterable[object], kind: type[T]) -> list[T]:
    """
    The items of C{items} (events or frames) that are instances of C{kind}.
    """
    return [e for e in items if isinstance(e, kind)]


def received(events: list[Event], channel: int) -> bytes:
    """
    Every byte delivered on C{channel} by the L{DataReceived} events in
    C{events}.
    """
    return b"".join(
        e.data for e in events if isinstance(e, DataReceived) and e.channel == channel
    )


def messages(events: list[Event], channel: int) -> list[bytes]:
    """
    The complete messages delivered on C{channel} by C{events}.
    """
    out: list[bytes] = []
    current = b""
    for e in events:
        if isinstance(e, DataReceived) and e.channel == channel:
            current += e.data
            if e.endMessage:
                out.append(current)
                current = b""
    return out


def transcript(events: list[Event], channel: int) -> list[bytes | int]:
    """
    What the application on C{channel} learns, in order: each complete
    message as C{bytes}, each drop notice as its count.
    """
    out: list[bytes | int] = []
    current = b""
    for e in events:
        if isinstance(e, DataReceived) and e.channel == channel:
            current += e.data
            if e.endMessage:
                out.append(current)
                current = b""
        elif isinstance(e, MessagesDropped) and e.channel == channel:
            out.append(e.count)
    return out


def dataFrames(frames: list[Preface | Frame]) -> list[DataFrame]:
    """
    The DATA frames among C{frames}.
    """
    return [f for f in frames if isinstance(f, DataFrame)]


class Pair:
    """
    A client and a server engine wired back to back.  Bytes move only when
    a test says so, so it controls the interleaving; every event and every
    frame crossing the wire is recorded.
    """

    def __init__(
        self,
        clientSettings: SessionSettings | None = None,
        serverSettings: SessionSettings | None = None,
    ) -> None:
        self.client = MemuxEngine(True, clientSettings)
        self.server = MemuxEngine(False, serverSettings)
        self.clientEvents: list[Event] = []
        self.serverEvents: list[Event] = []
        #: Everything each side put on the wire, decoded.
        self.clientFrames: list[Preface | Frame] = []
        self.serverFrames: list[Preface | Frame] = []
        self._clientDecoder = FrameDecoder(ANY_FRAME_SIZE)
        self._serverDecoder = FrameDecoder(ANY_FRAME_SIZE)

    def clientToServer(self, maxBytes: int = 1 << 30) -> bytes:
        """
        Move what the client has to send to the server; return the bytes.
        """
        data = self.client.dataToSend(maxBytes)
        self.clientEvents += self.client.popEvents()
        self.clientFrames += self._clientDecoder.receive(data)
        self.serverEvents += self.server.receiveData(data)
        return data

    def serverToClient(self, maxBytes: int = 1 << 30) -> bytes:
        """
        Move what the server has to send to the client; return the bytes.
        """
        data = self.server.dataToSend(maxBytes)
        self.serverEvents += self.server.popEvents()
        self.serverFrames += self._serverDecoder.receive(data)
        self.clientEvents += self.client.receiveData(data)
        return data

    def pump(self) -> None:
        """
        Move bytes both ways until neither side has anything to send.
        """
        for _ in range(10000):
            moved = self.clientToServer()
            moved = self.serverToClient() or moved
            if not moved:
                return
        raise AssertionError("the engines never went quiet")

    def takeClientEvents(self) -> list[Event]:
        """
        Return and forget the client's recorded events.
        """
        events, self.clientEvents = self.clientEvents, []
        return events

    def takeServerEvents(self) -> list[Event]:
        """
        Return and forget the server's recorded events.
        """
        events, self.serverEvents = self.serverEvents, []
        return events


# ---------------------------------------------------------------- credit policy


class CreditWindowTests(SynchronousTestCase):
    """
    Tests for L{CreditWindow}, the policy deciding when credit is granted.
    """

    def test_initial(self) -> None:
        """
        A new window's limit is the window: that much may arrive before any
        CREDIT.
        """
        w = CreditWindow(65536)
        self.assertEqual((w.limit, w.received, w.consumed, w.held), (65536, 0, 0, 0))

    def test_receiveWithinLimit(self) -> None:
        """
        Receiving up to the limit is accounted; one byte more is refused and
        not accounted.
        """
        w = CreditWindow(100)
        self.assertTrue(w.receive(60))
        self.assertTrue(w.receive(40))
        self.assertFalse(w.receive(1))
        self.assertEqual(w.received, 100)
        self.assertEqual(w.held, 100)

    def test_grantOnConsumption(self) -> None:
        """
        No new limit is due until half a window has been consumed; then the
        limit becomes consumed + window, so the receiver never holds more
        than a window.
        """
        w = CreditWindow(100)
        w.receive(100)
        self.assertIsNone(w.consume(49))
        self.assertEqual(w.consume(1), 150)
        self.assertEqual(w.limit, 150)
        self.assertTrue(w.receive(50))
        self.assertFalse(w.receive(1))
        self.assertLessEqual(w.held, w.window)

    def test_overConsumption(self) -> None:
        """
        Consuming more than arrived raises L{ValueError} and changes
        nothing.
        """
        w = CreditWindow(100)
        w.receive(10)
        self.assertRaises(ValueError, w.consume, 11)
        self.assertEqual(w.consumed, 0)

    @given(st.lists(st.tuples(st.booleans(), st.integers(0, 300)), max_size=60))
    def test_neverHoldsMoreThanWindow(self, ops: list[tuple[bool, int]]) -> None:
        """
        Whatever the sequence of receipts (within the limit) and
        consumptions, the receiver holds at most a window and the limit
        never goes down.
        """
        w = CreditWindow(256)
        for isReceive, n in ops:
            before = w.limit
            if isReceive:
                w.receive(min(n, w.limit - w.received))
            else:
                w.consume(min(n, w.held))
            self.assertGreaterEqual(w.limit, before)
            self.assertLessEqual(w.held, w.window)
            self.assertLessEqual(w.limit - w.consumed, w.window)


class SessionCreditWindowTests(SynchronousTestCase):
    """
    Tests for L{SessionCreditWindow}: the session's credit, part of which
    stalled channels may hold.
    """

    def test_likeChannelWhenNothingHeld(self) -> None:
        """
        With everything consumed, a new limit is due after half a window,
        as for a channel.
        """
        w = SessionCreditWindow(100)
        w.receive(49)
        self.assertIsNone(w.consume(49))
        w.receive(1)
        self.assertEqual(w.consume(1), 150)

    def test_stalledBytesDoNotStallTheRest(self) -> None:
        """
        With 60 of 100 bytes held by a stalled channel, the 40 others
        consume are granted again (a fixed half window, 50, would never be
        reached), and the window still bounds what is held.
        """
        w = SessionCreditWindow(100)
        w.receive(100)
        self.assertEqual(w.consume(40), 140)
        self.assertTrue(w.receive(40))
        self.assertEqual(w.consume(40), 180)
        self.assertEqual(w.held, 60)
        self.assertLessEqual(w.limit - w.consumed, w.window)

    @given(st.lists(st.tuples(st.booleans(), st.integers(0, 300)), max_size=80))
    def test_neverStallsWithRoom(self, ops: list[tuple[bool, int]]) -> None:
        """
        Whatever happens, the receiver holds at most a window, the limit
        never goes down, and a peer out of credit is never left so while
        the receiver has room (something consumed since the last grant).
        """
        w = SessionCreditWindow(256)
        for isReceive, n in ops:
            before = w.limit
            if isReceive:
                w.receive(min(n, w.limit - w.received))
            else:
                w.consume(min(n, w.held))
            if w.received > w.consumed and w.due():
                w.grant()  # as the engine does before each write
            self.assertGreaterEqual(w.limit, before)
            self.assertLessEqual(w.held, w.window)
            self.assertLessEqual(w.limit - w.consumed, w.window)
            if w.received == w.limit:
                self.assertEqual(w.held, w.window)


class SendCreditTests(SynchronousTestCase):
    """
    Tests for L{SendCredit}: how far the peer invites us to send.
    """

    def test_raiseOnlyUp(self) -> None:
        """
        A limit is raised only by a higher one (CREDIT is idempotent), and
        spending moves the offset.
        """
        c = SendCredit(100)
        self.assertEqual(c.available, 100)
        c.spend(60)
        self.assertEqual(c.available, 40)
        self.assertFalse(c.raiseTo(90))
        self.assertTrue(c.raiseTo(160))
        self.assertEqual((c.offset, c.limit, c.available), (60, 160, 100))


class InlineCreditTests(SynchronousTestCase):
    """
    The engine applies the credit policy inline on its hot path; this holds
    that copy equal to its owners, L{CreditWindow} and
    L{SessionCreditWindow}.
    """

    @settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.lists(
            st.tuples(st.sampled_from([1, 3, 5]), st.booleans(), st.integers(1, 16384)),
            max_size=60,
        )
    )
    def test_engineEqualsOwners(self, ops: list[tuple[int, bool, int]]) -> None:
        """
        Over any receipts and consumptions on three channels, the limits the
        engine grants (channels and session) are those the policy objects
        grant when given the same receipts and consumptions.
        """
        engine = MemuxEngine(False, SMALLEST)
        raw = RawPeer(engine)
        channels = {c: CreditWindow(SMALLEST.channelCredit) for c in (1, 3, 5)}
        session = SessionCreditWindow(SMALLEST.sessionCredit)
        for cid in channels:
            raw.send(OpenFrame(cid, b"s"))
        for cid, isReceive, n in ops:
            mirror = channels[cid]
            if isReceive:
                n = min(
                    n, mirror.limit - mirror.received, session.limit - session.received
                )
                if n:
                    raw.send(DataFrame(cid, b"d" * n))
                    mirror.receive(n)
                    session.receive(n)
            else:
                n = min(n, mirror.held)
                if n:
                    engine.consumed(cid, n)
                    mirror.consume(n)
                    session.consume(n)
            raw.read()  # the engine may grant on writing, as here:
            if session.received > session.consumed and session.due():
                session.grant()
            self.assertEqual(engine._sessionRecv.limit, session.limit)
            for c, window in channels.items():
                self.assertEqual(engine._channels[c].recv.limit, window.limit)


class EngineMisuseTests(SynchronousTestCase):
    """
    Misuse of the engine by its caller raises typed errors (all
    L{ValueError}s, as for any argument a call cannot take).
    """

    def test_writeToClosedChannel(self) -> None:
        """
        Writing on a channel that is not open, or closed for writing,
        raises L{ChannelClosedError} naming the channel.
        """
        engine = MemuxEngine(True)
        with self.assertRaises(ChannelClosedError) as unknown:
            engine.sendData(7, b"x")
        self.assertEqual(unknown.exception.channel, 7)
        cid = engine.openChannel()
        engine.closeChannel(cid)
        with self.assertRaises(ChannelClosedError) as closed:
            engine.sendData(cid, b"x")
        self.assertEqual(closed.exception.channel, cid)
        self.assertIsInstance(closed.exception, ValueError)

    def test_openOnEndedSession(self) -> None:
        """
        Opening a channel once the session is over, or after the peer's
        GOAWAY, raises L{SessionClosedError}; a ping on an ended session
        too.
        """
        engine = MemuxEngine(True)
        RawPeer(engine).send(GoAwayFrame(0, ErrorCode.NO_ERROR))
        self.assertRaises(SessionClosedError, engine.openChannel)
        engine.goAway(ErrorCode.INTERNAL_ERROR)
        self.assertRaises(SessionClosedError, engine.openChannel)
        self.assertRaises(SessionClosedError, engine.ping)

    def test_overConsumption(self) -> None:
        """
        Reporting more consumed than arrived raises L{EngineError}.
        """
        engine = MemuxEngine(False)
        RawPeer(engine).send(DataFrame(1, b"ab", open=True))
        self.assertRaises(EngineError, engine.consumed, 1, 3)


# ---------------------------------------------------------------- preface


class PrefaceTests(SynchronousTestCase):
    """
    Both sides send their preface at once and learn the peer's settings.
    """

    def test_prefaceFirst(self) -> None:
        """
        A new engine has its preface, carrying its settings, to send before
        anything else.
        """
        s = SessionSettings(maxFrameSize=32768, maxChannels=200)
        engine = MemuxEngine(False, s)
        self.assertTrue(engine.hasDataToSend())
        self.assertEqual(engine.dataToSend(), encodePreface(s.toWire()))
        self.assertFalse(engine.hasDataToSend())
        self.assertEqual(engine.dataToSend(), b"")

    def test_exchange(self) -> None:
        """
        After the exchange each side has a L{PrefaceReceived} with the
        peer's settings, and knows them.
        """
        clientSettings = SessionSettings(maxFrameSize=20000, channelCredit=100000)
        serverSettings = SessionSettings(sessionCredit=1 << 23, maxChannels=300)
        pair = Pair(clientSettings, serverSettings)
        pair.pump()
        self.assertEqual(
            pair.takeClientEvents(), [PrefaceReceived(serverSettings.toWire())]
        )
        self.assertEqual(
            pair.takeServerEvents(), [PrefaceReceived(clientSettings.toWire())]
        )
        self.assertTrue(pair.client.prefaceReceived)
        self.assertEqual(pair.client.peerSettings, serverSettings.toWire())
        self.assertEqual(pair.server.peerSettings, clientSettings.toWire())

    def test_settingsRange(self) -> None:
        """
        L{SessionSettings} below the protocol's minimums are refused.
        """
        self.assertRaises(ValueError, SessionSettings, maxChannels=99)
        self.assertRaises(ValueError, SessionSettings, maxFrameSize=1000)
        self.assertRaises(ValueError, SessionSettings, channelCredit=1000)
        self.assertRaises(ValueError, SessionSettings, maxMessageSize=0)

    def test_foreignPeer(self) -> None:
        """
        A peer that does not speak memux ends the session with a
        PROTOCOL_ERROR saying what it looks like, and a GOAWAY is queued.
        """
        engine = MemuxEngine(False)
        events = engine.receiveData(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        [terminated] = events
        assert isinstance(terminated, SessionTerminated)
        self.assertEqual(terminated.code, ErrorCode.PROTOCOL_ERROR)
        self.assertFalse(terminated.remote)
        self.assertIn("HTTP/1 request", terminated.reason)
        self.assertTrue(engine.terminated)
        items = FrameDecoder(ANY_FRAME_SIZE).receive(engine.dataToSend())
        self.assertEqual(len(items), 2)
        [goAway] = ofType(items, GoAwayFrame)
        self.assertEqual(
            (goAway.lastChannel, goAway.code), (0, ErrorCode.PROTOCOL_ERROR)
        )

    def test_unsupportedVersion(self) -> None:
        """
        A peer announcing version 0 ends the session with
        UNSUPPORTED_VERSION.
        """
        engine = MemuxEngine(True)
        events = engine.receiveData(encodePreface(Settings(), version=0))
        self.assertEqual(
            [(e.code, e.remote) for e in ofType(events, SessionTerminated)],
            [(ErrorCode.UNSUPPORTED_VERSION, False)],
        )

    def test_higherVersion(self) -> None:
        """
        A peer announcing a higher version is accepted.
        """
        engine = MemuxEngine(True)
        events = engine.receiveData(encodePreface(Settings(), version=VERSION + 1))
        self.assertEqual(events, [PrefaceReceived(Settings())])
        self.assertFalse(engine.terminated)

    def test_inputIgnoredAfterTermination(self) -> None:
        """
        Once the session is terminated, further input produces nothing.
        """
        engine = MemuxEngine(False)
        engine.receiveData(b"SSH-2.0-x\r\n")
        self.assertEqual(engine.receiveData(encodePreface(Settings())), [])
        self.assertRaises(ValueError, engine.openChannel)
        self.assertRaises(ValueError, engine.ping)


# ---------------------------------------------------------------- opening


class OpenTests(SynchronousTestCase):
    """
    Opening channels: no round trip, few bytes.
    """

    def test_openingsQueuedPerEngine(self) -> None:
        """
        Engines that have opened no channel share one empty queue of
        openings (memory: most sessions of a server never open one); the
        first channel an engine opens gets it a queue of its own, and the
        others' stays empty.  Openings queued by both sides of a pair
        reach the other side, each once.
        """
        pair = Pair()
        idle = MemuxEngine(True)
        self.assertIs(pair.client._pendingOpens, idle._pendingOpens)
        first = pair.client.openChannel(b"a")
        self.assertIsNot(pair.client._pendingOpens, idle._pendingOpens)
        self.assertEqual(len(idle._pendingOpens), 0)
        self.assertEqual(len(pair.server._pendingOpens), 0)
        second = pair.server.openChannel(b"b")
        pair.pump()
        opened = ofType(pair.serverEvents, ChannelOpened)
        self.assertEqual([(e.channel, e.service) for e in opened], [(first, b"a")])
        opened = ofType(pair.clientEvents, ChannelOpened)
        self.assertEqual([(e.channel, e.service) for e in opened], [(second, b"b")])
        self.assertEqual(len(idle._pendingOpens), 0)

    def test_channelIdsOfEveryLength(self) -> None:
        """
        Channels whose ids take one to four bytes on the wire open, carry a
        message each way and close, each in one DATA frame encoded as
        L{DataFrame.encode} encodes it.
        """
        many = SessionSettings(maxChannels=1 << 22)
        pair = Pair(many, many)
        pair.pump()  # the prefaces: the client may open 2**22 channels
        for first in [1, 127, 16383, (1 << 21) - 1]:
            # Skip ahead (ids need only increase) to where the id's varint
            # grows a byte.
            pair.client._nextLocalId = first
            ids = [first, first + 2]
            for cid in ids:
                self.assertEqual(pair.client.openChannel(), cid)
                pair.client.sendData(cid, b"q" * 100, True)
                pair.client.closeChannel(cid)
            sent = pair.clientToServer()
            for cid in ids:
                self.assertIn(
                    DataFrame(cid, b"q" * 100, True, True, True).encode(), sent
                )
                pair.server.sendData(cid, b"r" * 100, True)
                pair.server.closeChannel(cid)
            replies = pair.serverToClient()
            for cid in ids:
                self.assertIn(DataFrame(cid, b"r" * 100, True, True).encode(), replies)
                self.assertEqual(messages(pair.serverEvents, cid), [b"q" * 100])
                self.assertEqual(messages(pair.clientEvents, cid), [b"r" * 100])
                self.assertIn(ChannelClosed(cid), pair.clientEvents)
                self.assertIn(ChannelClosed(cid), pair.serverEvents)
            self.assertEqual(pair.client.openChannels(), [])
            self.assertEqual(pair.server.openChannels(), [])

    def test_frameHeadersOfEverySize(self) -> None:
        """
        A message of each size where the length's varint grows a byte (the
        engine writes the headers of small and medium frames inline, not
        through L{encodeDataHeader}), on channels whose ids take one and
        two bytes, goes out as L{DataFrame.encode} encodes it and arrives
        whole.
        """
        pair = Pair()
        pair.pump()
        for first in [1, 201]:  # ids of one byte, then of two
            pair.client._nextLocalId = first
            for size in [1, 127, 128, 129, 4096, 16383, 16384]:
                cid = pair.client.openChannel()
                pair.client.sendData(cid, b"m" * size, True)
                sent = pair.clientToServer()
                frame = DataFrame(cid, b"m" * size, True, open=True)
                self.assertIn(frame.encode(), sent)
                self.assertEqual(messages(pair.serverEvents, cid), [b"m" * size])
                pair.serverToClient()  # (credit)

    def test_zeroRoundTripOpen(self) -> None:
        """
        The client's first output after opening a channel, writing a
        100-byte message and closing is its preface and one DATA frame with
        OPEN, END and FIN: the preface plus 103 bytes.
        """
        pair = Pair()
        cid = pair.client.openChannel()
        self.assertEqual(cid, 1)
        pair.client.sendData(cid, b"x" * 100, endMessage=True)
        pair.client.closeChannel(cid)
        data = pair.clientToServer()
        preface = encodePreface(pair.client.settings.toWire())
        self.assertEqual(
            data,
            preface + DataFrame(1, b"x" * 100, end=True, fin=True, open=True).encode(),
        )
        self.assertEqual(len(data), len(preface) + 103)
        self.assertEqual(pair.takeClientEvents(), [LocalHalfClosed(1)])
        self.assertEqual(
            pair.takeServerEvents(),
            [
                PrefaceReceived(pair.client.settings.toWire()),
                ChannelOpened(1, b""),
                DataReceived(1, b"x" * 100, True),
                RemoteHalfClosed(1),
            ],
        )

    def test_openAlone(self) -> None:
        """
        A channel opened with nothing to send goes out as an empty DATA
        frame with the OPEN flag: three bytes.
        """
        pair = Pair()
        pair.pump()
        pair.client.openChannel()
        self.assertEqual(pair.clientToServer(), b"\x04\x01\x00")
        self.assertEqual(pair.takeServerEvents()[-1], ChannelOpened(1, b""))

    def test_emptyOpenFrameIsDefault(self) -> None:
        """
        An OPEN frame with an empty service name and no options opens the
        default service, exactly like DATA with OPEN.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        self.assertEqual(raw.send(OpenFrame(1, b"")), [ChannelOpened(1, b"")])
        self.assertEqual(raw.send(DataFrame(3, open=True)), [ChannelOpened(3, b"")])

    def test_namedService(self) -> None:
        """
        A channel opened for a named service, with metadata, a destination
        and load shedding, reaches the peer as L{ChannelOpened} carrying all
        of them; its data follows the OPEN frame.
        """
        pair = Pair()
        cid = pair.client.openChannel(
            b"tunnel", b"token=1", ("example.com", 443), lossy=True
        )
        pair.client.sendData(cid, b"hello", endMessage=True)
        pair.clientToServer()
        self.assertEqual(
            pair.clientFrames[1:],
            [
                OpenFrame(1, b"tunnel", b"token=1", ("example.com", 443), True),
                DataFrame(1, b"hello", end=True),
            ],
        )
        self.assertEqual(
            pair.takeServerEvents()[1:],
            [
                ChannelOpened(1, b"tunnel", b"token=1", ("example.com", 443), True),
                DataReceived(1, b"hello", True),
            ],
        )

    def test_namedServicePlain(self) -> None:
        """
        A named service without options opens with an OPEN frame and no
        flags; the peer sees no metadata or destination.
        """
        pair = Pair()
        pair.client.openChannel(b"echo")
        pair.pump()
        self.assertEqual(pair.clientFrames[1:], [OpenFrame(1, b"echo")])
        self.assertEqual(pair.serverEvents[1:], [ChannelOpened(1, b"echo")])

    def test_serverOpens(self) -> None:
        """
        The server opens channels too, with even ids, and the client is told.
        """
        pair = Pair()
        cid = pair.server.openChannel(b"push")
        pair.server.sendData(cid, b"news", endMessage=True)
        pair.pump()
        self.assertEqual(cid, 2)
        self.assertEqual(
            pair.clientEvents[1:],
            [ChannelOpened(2, b"push"), DataReceived(2, b"news", True)],
        )

    def test_channelIds(self) -> None:
        """
        The client opens odd ids and the server even ones, each strictly
        increasing, and an id skipped by a reset is never reused.
        """
        pair = Pair()
        self.assertEqual([pair.client.openChannel() for _ in range(3)], [1, 3, 5])
        self.assertEqual([pair.server.openChannel() for _ in range(3)], [2, 4, 6])
        pair.client.resetChannel(5)
        self.assertEqual(pair.client.openChannel(), 7)
        self.assertTrue(pair.client.isLocal(7))
        self.assertFalse(pair.client.isLocal(6))
        self.assertTrue(pair.server.isLocal(6))

    def test_openAndSendInEitherOrder(self) -> None:
        """
        Both sides may open channels before either has the other's preface;
        everything arrives.
        """
        pair = Pair()
        a = pair.client.openChannel()
        b = pair.server.openChannel(b"svc")
        pair.client.sendData(a, b"from client", True)
        pair.server.sendData(b, b"from server", True)
        pair.pump()
        self.assertEqual(messages(pair.serverEvents, a), [b"from client"])
        self.assertEqual(messages(pair.clientEvents, b), [b"from server"])


# ---------------------------------------------------------------- messages


class MessageTests(SynchronousTestCase):
    """
    Message boundaries and chunking.
    """

    def test_boundaries(self) -> None:
        """
        Pieces written with C{endMessage=False} join the message that the
        next C{endMessage=True} ends; message boundaries survive.
        """
        pair = Pair()
        cid = pair.client.openChannel()
        pair.client.sendData(cid, b"he")
        pair.client.sendData(cid, b"llo", endMessage=True)
        pair.client.sendData(cid, b"world", endMessage=True)
        pair.client.sendData(cid, b"!")
        pair.client.sendData(cid, b"", endMessage=True)
        pair.pump()
        self.assertEqual(messages(pair.serverEvents, cid), [b"hello", b"world", b"!"])
        # The empty end marker was folded into the queued piece.
        self.assertEqual(
            dataFrames(pair.clientFrames)[-1], DataFrame(1, b"!", end=True)
        )

    def test_emptyMessage(self) -> None:
        """
        An empty message is delivered as an empty chunk ending a message.
        """
        pair = Pair()
        cid = pair.client.openChannel()
        pair.client.sendData(cid, b"", endMessage=True)
        pair.client.sendData(cid, b"", endMessage=True)
        pair.pump()
        self.assertEqual(messages(pair.serverEvents, cid), [b"", b""])

    def test_endAfterSentPiece(self) -> None:
        """
        Ending a message whose pieces have all gone out sends an empty chunk
        with END.
        """
        pair = Pair()
        cid = pair.client.openChannel()
        pair.client.sendData(cid, b"part")
        pair.pump()
        pair.client.sendData(cid, b"", endMessage=True)
        pair.pump()
        self.assertEqual(dataFrames(pair.clientFrames)[-1], DataFrame(1, b"", end=True))
        self.assertEqual(messages(pair.serverEvents, cid), [b"part"])

    def test_emptyWriteIgnored(self) -> None:
        """
        Writing nothing without ending a message sends nothing.
        """
        pair = Pair()
        pair.pump()
        cid = pair.client.openChannel()
        pair.pump()
        pair.client.sendData(cid, b"")
        self.assertEqual(pair.clientToServer(), b"")

    def test_chunkingBeforePeerPreface(self) -> None:
        """
        Until the peer's preface arrives, chunks are at most the initial
        maximum frame size, 16384 bytes.
        """
        pair = Pair(serverSettings=SessionSettings(maxFrameSize=65536))
        cid = pair.client.openChannel()
        pair.client.sendData(cid, b"a" * 40000, endMessage=True)
        pair.clientToServer()
        self.assertEqual(
            [(len(f.data), f.end, f.open) for f in dataFrames(pair.clientFrames)],
            [(16384, False, True), (16384, False, False), (7232, True, False)],
        )
        self.assertEqual(messages(pair.serverEvents, cid), [b"a" * 40000])

    def test_chunkingAfterPeerPreface(self) -> None:
        """
        Once the peer's preface is in, chunks are as large as its announced
        maximum frame size.
        """
        pair = Pair(
            serverSettings=SessionSettings(maxFrameSize=32768, channelCredit=262144)
        )
        pair.pump()
        cid = pair.client.openChannel()
        message = bytes(range(256)) * 273 + b"tail"
        pair.client.sendData(cid, message, endMessage=True)
        pair.pump()
        self.assertEqual(
            [len(f.data) for f in dataFrames(pair.clientFrames)],
            [32768, 32768, len(message) - 65536],
        )
        self.assertEqual(messages(pair.serverEvents, cid), [message])

    def test_localChunkSize(self) -> None:
        """
        Chunks are capped by our own C{chunkSize} as well as by the peer's
        maximum frame size, so one channel cannot hog the connection for
        long.
        """
        pair = Pair(
            SessionSettings(chunkSize=1000),
            SessionSettings(maxFrameSize=65536),
        )
        pair.pump()
        cid = pair.client.openChannel()
        pair.client.sendData(cid, b"c" * 2500, True)
        pair.pump()
        self.assertEqual(
            [len(f.data) for f in dataFrames(pair.clientFrames)], [1000, 1000, 500]
        )
        self.assertRaises(ValueError, SessionSettings, chunkSize=0)

    def test_sendOnUnknownChannel(self) -> None:
        """
        Writing to a channel that is not open raises L{ValueError}; closing
        or resetting one does nothing.
        """
        engine = MemuxEngine(True)
        self.assertRaises(ValueError, engine.sendData, 1, b"x")
        engine.closeChannel(1)
        engine.resetChannel(1)
        engine.consumed(1, 10)
        self.assertEqual(engine.popEvents(), [])


# ---------------------------------------------------------------- closing


class CloseTests(SynchronousTestCase):
    """
    Half-close per direction, and the full close after both FINs.
    """

    def test_halfClose(self) -> None:
        """
        A FIN from one side gives the peer L{RemoteHalfClosed} and the
        sender L{LocalHalfClosed}; the other direction still works; the
        channel is closed (L{ChannelClosed} on both sides) only once both
        FINs have passed.
        """
        pair = Pair()
        cid = pair.client.openChannel()
        pair.client.sendData(cid, b"request", True)
        pair.client.closeChannel(cid)
        pair.pump()
        self.assertEqual(
            ofType(pair.takeClientEvents(), LocalHalfClosed), [LocalHalfClosed(cid)]
        )
        self.assertEqual(
            pair.takeServerEvents()[1:],
            [
                ChannelOpened(cid, b""),
                DataReceived(cid, b"request", True),
                RemoteHalfClosed(cid),
            ],
        )
        self.assertTrue(pair.client.isOpen(cid))
        self.assertTrue(pair.server.isOpen(cid))
        self.assertRaises(ValueError, pair.client.sendData, cid, b"more")

        pair.server.sendData(cid, b"response", True)
        pair.pump()
        self.assertEqual(
            pair.takeClientEvents(), [DataReceived(cid, b"response", True)]
        )
        pair.server.closeChannel(cid)
        pair.pump()
        self.assertEqual(
            pair.takeServerEvents(), [LocalHalfClosed(cid), ChannelClosed(cid)]
        )
        self.assertEqual(
            pair.takeClientEvents(), [RemoteHalfClosed(cid), ChannelClosed(cid)]
        )
        self.assertEqual(pair.client.openChannels(), [])
        self.assertEqual(pair.server.openChannels(), [])

    def test_finRidesOnLastChunk(self) -> None:
        """
        A FIN queued after data goes out on the last DATA frame, not alone.
        """
        pair = Pair()
        pair.pump()
        cid = pair.server.openChannel()
        pair.server.sendData(cid, b"a" * 100000, True)
        pair.server.closeChannel(cid)
        pair.pump()
        frames = dataFrames(pair.serverFrames)
        self.assertEqual(
            [(f.end, f.fin) for f in frames], [(False, False), (True, True)]
        )

    def test_closeTwice(self) -> None:
        """
        Closing a channel twice sends one FIN.
        """
        pair = Pair()
        cid = pair.client.openChannel()
        pair.client.closeChannel(cid)
        pair.client.closeChannel(cid)
        pair.pump()
        self.assertEqual([f.fin for f in dataFrames(pair.clientFrames)], [True])

    def test_dataAfterFin(self) -> None:
        """
        DATA after the peer's FIN resets the channel with PROTOCOL_ERROR;
        the session carries on.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        raw.send(DataFrame(1, b"a", fin=True, open=True))
        events = raw.send(DataFrame(1, b"b"))
        self.assertEqual(
            [(e.channel, e.code, e.remote) for e in ofType(events, ChannelReset)],
            [(1, ErrorCode.PROTOCOL_ERROR, False)],
        )
        self.assertFalse(engine.terminated)

    def test_dataBeforeOurFinAfterStopReading(self) -> None:
        """
        After stopReading and closeChannel, DATA that arrives before our
        FIN has gone out is passed on as usual (for the application to
        discard) and keeps the channel: the queued data and FIN still go
        out, with L{LocalHalfClosed}.  Only DATA after our FIN is answered
        with RESET NO_ERROR.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        raw.send(DataFrame(1, b"request", open=True))
        raw.read()
        engine.sendData(1, b"reply", True)
        engine.stopReading(1)
        engine.closeChannel(1)
        events = raw.send(DataFrame(1, b"in flight"))
        self.assertEqual(events, [DataReceived(1, b"in flight", False)])
        engine.consumed(1, len(b"request") + len(b"in flight"))
        frames = raw.read()
        self.assertIn(DataFrame(1, b"reply", end=True, fin=True), frames)
        self.assertEqual(ofType(frames, ResetFrame), [])
        self.assertEqual(
            ofType(engine.popEvents(), LocalHalfClosed), [LocalHalfClosed(1)]
        )
        self.assertEqual(raw.send(DataFrame(1, b"too late")), [])
        self.assertEqual(
            ofType(raw.read(), ResetFrame),
            [ResetFrame(1, ErrorCode.NO_ERROR, "closed")],
        )
        self.assertFalse(engine.isOpen(1))

    def test_finishingDataAfterOurFinCloses(self) -> None:
        """
        DATA that arrives after our full close's FIN but carries the peer's
        FIN too is discarded and simply closes the channel, with no RESET:
        the peer has finished, so a RESET would only meet a channel it has
        closed (a wasted frame that its flood limit would count).
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        raw.send(DataFrame(1, b"request", open=True))
        engine.consumed(1, len(b"request"))
        engine.stopReading(1)
        engine.closeChannel(1)
        raw.read()
        self.assertEqual(engine.popEvents(), [LocalHalfClosed(1)])
        events = raw.send(DataFrame(1, b"last words", end=True, fin=True))
        self.assertEqual(events, [RemoteHalfClosed(1), ChannelClosed(1)])
        self.assertEqual(raw.read(), [])
        self.assertFalse(engine.isOpen(1))
        self.assertEqual(engine.heldBytes(1), 0)

    def test_noCreditAfterFin(self) -> None:
        """
        Consuming data that arrived before the peer's FIN grants no more
        credit on that channel: the peer will not send again.
        """
        engine = MemuxEngine(False, SMALLEST)
        raw = RawPeer(engine)
        raw.send(DataFrame(1, b"a" * 60000, fin=True, open=True))
        raw.read()
        engine.consumed(1, 60000)
        self.assertEqual(
            [f for f in raw.read() if isinstance(f, CreditFrame) and f.channel == 1], []
        )


# ---------------------------------------------------------------- reset


class ResetTests(SynchronousTestCase):
    """
    Resetting and refusing channels.
    """

    def test_resetReachesPeer(self) -> None:
        """
        A reset with a code and reason reaches the peer as a remote
        L{ChannelReset}; both sides forget the channel and queued data is
        discarded.
        """
        pair = Pair(serverSettings=SMALLEST)
        cid = pair.client.openChannel()
        pair.client.sendData(cid, b"z" * 100000)
        pair.pump()
        pair.client.resetChannel(cid, ErrorCode.CANCEL, "changed my mind \u2603")
        self.assertEqual(pair.client.queuedBytes(cid), 0)
        pair.pump()
        self.assertEqual(
            pair.serverEvents[-1],
            ChannelReset(cid, ErrorCode.CANCEL, "changed my mind \u2603", True),
        )
        self.assertFalse(pair.client.isOpen(cid))
        self.assertFalse(pair.server.isOpen(cid))
        self.assertEqual(len(received(pair.serverEvents, cid)), 65536)
        # No RESET is ever sent in answer to a RESET.
        self.assertEqual(
            [f for f in pair.serverFrames if isinstance(f, ResetFrame)], []
        )

    def test_refuse(self) -> None:
        """
        Refusing a channel reaches the opener as L{ChannelReset} with code
        REFUSED and the reason.
        """
        pair = Pair()
        cid = pair.client.openChannel(b"nope")
        pair.pump()
        pair.server.refuseChannel(cid, "no such service")
        pair.pump()
        self.assertEqual(
            pair.clientEvents[-1],
            ChannelReset(cid, ErrorCode.REFUSED, "no such service", True),
        )
        self.assertEqual(pair.client.openChannels(), [])

    def test_resetBeforeOpenSent(self) -> None:
        """
        Resetting a channel whose opening never went out puts nothing on the
        wire for it; the next channel still opens.
        """
        pair = Pair()
        cid = pair.client.openChannel(b"svc")
        pair.client.sendData(cid, b"data", True)
        pair.client.resetChannel(cid)
        self.assertEqual(
            pair.clientToServer(), encodePreface(pair.client.settings.toWire())
        )
        self.assertEqual(pair.takeClientEvents(), [])
        nextId = pair.client.openChannel()
        pair.client.sendData(nextId, b"ok", True)
        pair.pump()
        self.assertEqual(messages(pair.serverEvents, nextId), [b"ok"])
        self.assertFalse(pair.server.terminated)

    def test_nothingAfterReset(self) -> None:
        """
        Once a channel is reset, no frame for it follows the RESET, even
        with data ready to go.
        """
        pair = Pair()
        pair.pump()
        cid = pair.client.openChannel()
        pair.client.sendData(cid, b"x" * 100000)
        pair.clientToServer(1)
        pair.client.resetChannel(cid)
        before = len(pair.clientFrames)
        pair.pump()
        after = [
            f for f in pair.clientFrames[before:] if getattr(f, "channel", 0) == cid
        ]
        self.assertEqual(after, [ResetFrame(cid, ErrorCode.CANCEL, "")])

    def test_nothingAfterResetOfLossyChannel(self) -> None:
        """
        A lossy channel with a DROP notice pending, then reset, sends the
        RESET and nothing after it on that channel (no DROP).
        """
        pair = Pair()
        cid = pair.client.openChannel(b"feed", lossy=True)
        pair.client.sendData(cid, b"a" * 100000, True)
        pair.client.sendData(cid, b"b", True)
        pair.clientToServer()
        self.assertEqual(pair.client.discardQueuedMessages(cid), 1)
        pair.client.resetChannel(cid)
        before = len(pair.clientFrames)
        pair.clientToServer()
        self.assertEqual(
            pair.clientFrames[before:], [ResetFrame(cid, ErrorCode.CANCEL, "")]
        )

    def test_longReason(self) -> None:
        """
        A reset reason longer than a frame may carry does not produce a
        frame the peer must reject: either the engine refuses it with
        L{ValueError} or the peer gets the reset and the session survives.
        """
        pair = Pair(clientSettings=SMALLEST)
        cid = pair.client.openChannel()
        pair.pump()
        try:
            pair.server.resetChannel(cid, ErrorCode.CANCEL, "why " * 5000)
        except ValueError:
            return
        pair.pump()
        self.assertEqual(ofType(pair.clientEvents, SessionTerminated), [])
        self.assertEqual(
            [(e.channel, e.code) for e in ofType(pair.clientEvents, ChannelReset)],
            [(cid, ErrorCode.CANCEL)],
        )

    def test_resetUnknownChannelFromPeer(self) -> None:
        """
        A RESET for a channel that was never opened is a PROTOCOL_ERROR.
        """
        engine = MemuxEngine(False)
        events = RawPeer(engine).send(ResetFrame(3, ErrorCode.CANCEL))
        self.assertEqual(
            [e.code for e in ofType(events, SessionTerminated)],
            [ErrorCode.PROTOCOL_ERROR],
        )


# ---------------------------------------------------------------- credit


class CreditTests(SynchronousTestCase):
    """
    Credit is granted as data is consumed; the sender never exceeds it.
    """

    def test_channelWindowStopsFlow(self) -> None:
        """
        A receiver that never consumes gets exactly one channel window, and
        grants nothing more: no CREDIT frame is sent on receipt.
        """
        pair = Pair(serverSettings=SMALLEST)
        pair.pump()
        cid = pair.client.openChannel()
        pair.client.sendData(cid, b"d" * 200000, True)
        pair.pump()
        self.assertEqual(len(received(pair.serverEvents, cid)), 65536)
        self.assertEqual(pair.server.heldBytes(cid), 65536)
        self.assertEqual(pair.client.sendCredit(cid), 0)
        self.assertEqual(pair.client.queuedBytes(cid), 200000 - 65536)
        self.assertEqual(
            [f for f in pair.serverFrames if isinstance(f, CreditFrame)], []
        )

    def test_consumptionGrantsCredit(self) -> None:
        """
        Consuming half a window grants a new limit (consumed + window), and
        the sender goes on to exactly that limit; consuming less grants
        nothing yet.
        """
        pair = Pair(serverSettings=SMALLEST)
        pair.pump()
        cid = pair.client.openChannel()
        pair.client.sendData(cid, b"d" * 200000, True)
        pair.pump()
        pair.server.consumed(cid, 32767)
        pair.pump()
        self.assertEqual(len(received(pair.serverEvents, cid)), 65536)
        pair.server.consumed(cid, 1)
        pair.pump()
        self.assertIn(CreditFrame(cid, 32768 + 65536), pair.serverFrames)
        self.assertEqual(len(received(pair.serverEvents, cid)), 32768 + 65536)
        self.assertEqual(pair.server.heldBytes(cid), 65536)
        # Consume everything as it comes: the whole message arrives.
        for _ in range(20):
            pair.server.consumed(cid, pair.server.heldBytes(cid))
            pair.pump()
        self.assertEqual(messages(pair.serverEvents, cid), [b"d" * 200000])

    def test_incrementingPeerWarned(self) -> None:
        """
        A peer that sends CREDIT as an increment (as HTTP/2's WINDOW_UPDATE
        is) announces limits below what was already sent: they are ignored,
        as the spec says, and the engine warns once (a
        L{PeerWarning}), since that peer's session stalls once its initial
        credit is used up.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine, Settings(initialSessionCredit=1 << 20))
        raw.send(OpenFrame(1, b"s"), OpenFrame(3, b"s"))
        engine.sendData(1, b"a" * 1000, True)
        raw.read()
        events = raw.send(CreditFrame(0, 500), CreditFrame(0, 500))
        [warning] = ofType(events, PeerWarning)
        self.assertIn("of 500 bytes, below the 1000 already sent", warning.message)
        self.assertIn("not an increment", warning.message)
        engine.sendData(3, b"b" * 100, True)
        raw.read()
        self.assertEqual(ofType(raw.send(CreditFrame(3, 50)), PeerWarning), [])
        self.assertEqual(engine.sessionSendCredit, (1 << 20) - 1100)

    def test_sessionWindowStopsFlow(self) -> None:
        """
        Over several channels, a receiver that never consumes gets exactly
        one session window in all; consuming on one channel lets the session
        flow again.
        """
        settings = SessionSettings(channelCredit=262144, sessionCredit=262144)
        pair = Pair(serverSettings=settings)
        pair.pump()
        a = pair.client.openChannel()
        b = pair.client.openChannel()
        pair.client.sendData(a, b"a" * 200000, True)
        pair.client.sendData(b, b"b" * 200000, True)
        pair.pump()
        total = len(received(pair.serverEvents, a)) + len(
            received(pair.serverEvents, b)
        )
        self.assertEqual(total, 262144)
        self.assertEqual(pair.client.sessionSendCredit, 0)
        pair.server.consumed(a, len(received(pair.serverEvents, a)))
        pair.pump()
        total = len(received(pair.serverEvents, a)) + len(
            received(pair.serverEvents, b)
        )
        self.assertGreater(total, 262144)
        self.assertLessEqual(
            pair.server.heldBytes(a) + pair.server.heldBytes(b), 262144
        )

    def test_overConsumption(self) -> None:
        """
        Reporting more bytes consumed than were delivered raises
        L{ValueError}.
        """
        pair = Pair()
        cid = pair.client.openChannel()
        pair.client.sendData(cid, b"abc", True)
        pair.pump()
        self.assertRaises(ValueError, pair.server.consumed, cid, 4)

    def test_creditIgnoredWhenLower(self) -> None:
        """
        Credit is an absolute offset: a CREDIT lower than (or equal to) the
        current limit changes nothing, so repeats and reordering are
        harmless.
        """
        engine = MemuxEngine(True)
        raw = RawPeer(engine)
        cid = engine.openChannel()
        raw.read()
        raw.send(
            CreditFrame(cid, 100000), CreditFrame(cid, 70000), CreditFrame(cid, 100000)
        )
        self.assertEqual(engine.sendCredit(cid), 100000)
        raw.send(CreditFrame(0, 300000), CreditFrame(0, 1000))
        self.assertEqual(engine.sessionSendCredit, 300000)

    def test_channelOverrun(self) -> None:
        """
        A peer that sends beyond a channel's credit gets that channel reset
        with FLOW_CONTROL_ERROR; the session survives.
        """
        engine = MemuxEngine(
            False, SessionSettings(maxFrameSize=65536, channelCredit=65536)
        )
        raw = RawPeer(engine)
        events = raw.send(DataFrame(1, b"x" * 65536, open=True))
        self.assertEqual(ofType(events, ChannelReset), [])
        events = raw.send(DataFrame(1, b"y"))
        [reset] = events
        assert isinstance(reset, ChannelReset)
        self.assertEqual(
            (reset.channel, reset.code, reset.remote),
            (1, ErrorCode.FLOW_CONTROL_ERROR, False),
        )
        self.assertFalse(engine.isOpen(1))
        self.assertIn(
            (1, ErrorCode.FLOW_CONTROL_ERROR),
            [(f.channel, f.code) for f in raw.read() if isinstance(f, ResetFrame)],
        )
        # The session carries on.
        self.assertFalse(engine.terminated)
        raw.send(PingFrame(b"alive"))
        self.assertEqual(raw.read(), [PingFrame(b"alive", ack=True)])
        self.assertEqual(
            raw.send(DataFrame(3, b"ok", end=True, open=True)),
            [ChannelOpened(3, b""), DataReceived(3, b"ok", True)],
        )

    def test_sessionOverrun(self) -> None:
        """
        A peer that sends beyond the session credit ends the session with
        FLOW_CONTROL_ERROR, and a GOAWAY saying so is queued.
        """
        engine = MemuxEngine(
            False,
            SessionSettings(
                maxFrameSize=65536, channelCredit=65536, sessionCredit=262144
            ),
        )
        raw = RawPeer(engine)
        for cid in [1, 3, 5, 7]:
            events = raw.send(DataFrame(cid, b"x" * 65536, open=True))
            self.assertEqual(ofType(events, SessionTerminated), [])
        events = raw.send(DataFrame(9, b"y", open=True))
        [terminated] = ofType(events, SessionTerminated)
        assert isinstance(terminated, SessionTerminated)
        self.assertEqual(
            (terminated.code, terminated.remote), (ErrorCode.FLOW_CONTROL_ERROR, False)
        )
        self.assertTrue(engine.terminated)
        self.assertEqual(
            [f.code for f in raw.read() if isinstance(f, GoAwayFrame)],
            [ErrorCode.FLOW_CONTROL_ERROR],
        )

    def test_sessionCreditReturnedOnClose(self) -> None:
        """
        Unconsumed bytes of a channel that is reset go back to the session:
        once half the session window is back, CREDIT for the session is
        sent.
        """
        engine = MemuxEngine(
            False,
            SessionSettings(
                maxFrameSize=65536, channelCredit=65536, sessionCredit=262144
            ),
        )
        raw = RawPeer(engine)
        for cid in [1, 3, 5, 7]:
            raw.send(DataFrame(cid, b"x" * 65536, open=True))
        raw.read()
        engine.resetChannel(1)
        engine.resetChannel(3)
        self.assertIn(CreditFrame(0, 131072 + 262144), raw.read())
        self.assertEqual(
            raw.send(DataFrame(9, b"y" * 65536, open=True))[0], ChannelOpened(9, b"")
        )
        self.assertFalse(engine.terminated)


class ReassemblyCreditTests(SynchronousTestCase):
    """
    Bytes moved into message reassembly (C{consumed(holdSession=True)}) give
    the channel its credit back but keep counting against the session until
    C{releaseSession}; a deadlock breaker resets a channel when partial
    messages alone fill the session.
    """

    def receiveMessage(self, size: int) -> tuple[Pair, int, list[bytes]]:
        """
        Send one message of C{size} bytes to a server with the smallest
        windows (session credit 262144) whose application reassembles it as
        the Twisted layer does: every chunk is consumed with
        C{holdSession=True} as it arrives, and the whole message released
        once its end arrives.  Return the pair, the channel and the
        messages delivered.
        """
        pair = Pair(serverSettings=SMALLEST)
        cid = pair.client.openChannel()
        pair.client.sendData(cid, bytes(range(256)) * (size // 256), True)
        delivered: list[bytes] = []
        partial = b""
        for _ in range(50):
            pair.pump()
            for e in pair.takeServerEvents():
                if isinstance(e, DataReceived):
                    pair.server.consumed(cid, len(e.data), holdSession=True)
                    partial += e.data
                    if e.endMessage:
                        pair.server.releaseSession(cid, len(partial))
                        delivered.append(partial)
                        partial = b""
                elif isinstance(e, (ChannelReset, SessionTerminated)):
                    pair.serverEvents.append(e)
        return pair, cid, delivered

    def test_messageLargerThanChannelWindow(self) -> None:
        """
        A message several channel windows long arrives whole: reassembly
        gives the channel its credit back.
        """
        pair, cid, delivered = self.receiveMessage(200192)
        self.assertEqual(delivered, [bytes(range(256)) * 782])
        self.assertEqual(ofType(pair.serverEvents, ChannelReset), [])

    def test_messageNearlyFillingSession(self) -> None:
        """
        A message that fits in the session window, even with less than one
        frame to spare, is delivered, not reset: the breaker must not fire
        while the message can still complete (here it has already
        completed when its last chunk is moved into reassembly).
        """
        for size in [255232, 262144]:
            pair, cid, delivered = self.receiveMessage(size)
            self.assertEqual(ofType(pair.serverEvents, ChannelReset), [], size)
            self.assertEqual([len(m) for m in delivered], [size])

    def test_deadlockBroken(self) -> None:
        """
        A message larger than the whole session window can never complete
        while it is held in reassembly: its channel is reset with
        EXCESSIVE_LOAD, and the session goes on.
        """
        pair, cid, delivered = self.receiveMessage(300032)
        self.assertEqual(delivered, [])
        [reset] = ofType(pair.serverEvents, ChannelReset)
        self.assertEqual(
            (reset.channel, reset.code, reset.remote),
            (cid, ErrorCode.EXCESSIVE_LOAD, False),
        )
        self.assertFalse(pair.server.terminated)
        other = pair.client.openChannel()
        pair.client.sendData(other, b"after", True)
        pair.pump()
        self.assertEqual(messages(pair.serverEvents, other), [b"after"])

    def test_youngestPartialReset(self) -> None:
        """
        Against a sender that starts every message at once (round robin,
        not holding new messages back as memux does), partial messages can
        fill the session window; the breaker then resets the channel whose
        message began last, and the earlier one completes.
        """
        engine = MemuxEngine(False, SMALLEST)
        raw = RawPeer(engine)
        first, second = 1, 3
        body = bytes(range(256)) * 800  # 200 KiB each: together over 256 KiB
        # The eager sender keeps to the credit it is granted: 64 KiB per
        # channel and 256 KiB for the session at the start.
        limit = {first: SMALLEST.channelCredit, second: SMALLEST.channelCredit}
        sessionLimit = SMALLEST.sessionCredit
        sent = {first: 0, second: 0}
        partial = {first: b"", second: b""}
        delivered: dict[int, bytes] = {}
        resets: list[ChannelReset] = []
        for _ in range(200):
            progressed = False
            for cid in (first, second):  # the first message begins first
                if cid in delivered or any(r.channel == cid for r in resets):
                    continue
                room = min(
                    limit[cid] - sent[cid],
                    sessionLimit - sum(sent.values()),
                    len(body) - sent[cid],
                    16384,
                )
                if room <= 0:
                    continue
                chunk = body[sent[cid] : sent[cid] + room]
                opening = sent[cid] == 0
                sent[cid] += room
                end = sent[cid] == len(body)
                progressed = True
                for e in raw.send(
                    DataFrame(cid, chunk, end=end, fin=end, open=opening)
                ):
                    if isinstance(e, DataReceived):
                        engine.consumed(e.channel, len(e.data), holdSession=True)
                        partial[e.channel] += e.data
                        if e.endMessage:
                            whole = partial[e.channel]
                            engine.releaseSession(e.channel, len(whole))
                            delivered[e.channel] = whole
                    elif isinstance(e, ChannelReset):
                        resets.append(e)
                for frame in raw.read():
                    if isinstance(frame, CreditFrame):
                        if frame.channel == 0:
                            sessionLimit = max(sessionLimit, frame.limit)
                        elif frame.channel in limit:
                            limit[frame.channel] = max(
                                limit[frame.channel], frame.limit
                            )
            if not progressed:
                break
        self.assertEqual(delivered, {first: body})
        [reset] = resets
        self.assertEqual(
            (reset.channel, reset.code), (second, ErrorCode.EXCESSIVE_LOAD)
        )


class MessageAdmissionTests(SynchronousTestCase):
    """
    A sender starts a message that cannot go out whole only if the session
    credit left covers it besides the messages in progress (L{_admits}), so
    a receiver that reassembles gets them whole, in the order they began.
    """

    def test_newMessageWaitsForCredit(self) -> None:
        """
        With one 200 KiB message in progress and 256 KiB of session credit,
        a second 200 KiB message waits; it starts once the first is
        consumed and the receiver grants more.
        """
        pair = Pair(serverSettings=SMALLEST)
        first, second = pair.client.openChannel(), pair.client.openChannel()
        body = b"m" * 204800
        pair.client.sendData(first, body, True)
        pair.clientToServer(16384)  # the first message begins
        pair.client.sendData(second, body, True)
        pair.clientToServer()
        self.assertEqual(received(pair.serverEvents, second), b"")
        seen: list[Event] = []
        for _ in range(20):
            events = pair.takeServerEvents()
            seen += events
            for e in events:
                if isinstance(e, DataReceived):
                    pair.server.consumed(e.channel, len(e.data))
            pair.pump()
        self.assertEqual(messages(seen, first), [body])
        self.assertEqual(messages(seen, second), [body])
        starts = [
            e.channel
            for e in seen
            if isinstance(e, DataReceived) and e.channel == second
        ]
        self.assertTrue(starts)
        firstEnd = max(
            i
            for i, e in enumerate(seen)
            if isinstance(e, DataReceived) and e.endMessage and e.channel == first
        )
        secondStart = min(
            i
            for i, e in enumerate(seen)
            if isinstance(e, DataReceived) and e.channel == second
        )
        self.assertLess(firstEnd, secondStart)

    def test_smallMessagesNotHeldBack(self) -> None:
        """
        A message that goes out whole at once is never held back, whatever
        is in progress.
        """
        pair = Pair(serverSettings=SMALLEST)
        big, small = pair.client.openChannel(), pair.client.openChannel()
        pair.client.sendData(big, b"b" * 204800, True)
        pair.clientToServer(16384)
        pair.client.sendData(small, b"hello", True)
        pair.clientToServer()
        self.assertEqual(messages(pair.serverEvents, small), [b"hello"])

    def test_streamsNotHeldBack(self) -> None:
        """
        Bytes written with no end of message (a byte stream) start at once.
        """
        pair = Pair(serverSettings=SMALLEST)
        big, stream = pair.client.openChannel(), pair.client.openChannel()
        pair.client.sendData(big, b"b" * 204800, True)
        pair.clientToServer(16384)
        pair.client.sendData(stream, b"s" * 204800)
        pair.clientToServer()
        self.assertTrue(received(pair.serverEvents, stream))


# ---------------------------------------------------------------- channel count


class ChannelCountTests(SynchronousTestCase):
    """
    The cumulative channel-count credit (CHANNELS).
    """

    def test_openWaitsForChannelCredit(self) -> None:
        """
        Opening beyond the peer's channel credit waits: the opening frame is
        not sent until the peer closes channels and grants more with
        CHANNELS.
        """
        pair = Pair(serverSettings=SMALLEST)
        ids = [pair.client.openChannel() for _ in range(101)]
        for cid in ids:
            pair.client.sendData(cid, b"m", True)
        pair.pump()
        opened = [e.channel for e in ofType(pair.serverEvents, ChannelOpened)]
        self.assertEqual(opened, ids[:100])
        self.assertTrue(pair.client.isOpen(ids[100]))
        self.assertNotIn(
            ids[100], {getattr(f, "channel", 0) for f in pair.clientFrames}
        )
        for cid in ids[:25]:
            pair.server.refuseChannel(cid, "busy")
        pair.pump()
        self.assertIn(ChannelCreditFrame(125), pair.serverFrames)
        self.assertEqual(
            pair.serverEvents[-2:],
            [ChannelOpened(ids[100], b""), DataReceived(ids[100], b"m", True)],
        )

    def test_cleanClosesGrantChannels(self) -> None:
        """
        Channels closed cleanly in both directions also return channel
        credit.
        """
        pair = Pair(serverSettings=SMALLEST)
        ids = [pair.client.openChannel(b"s") for _ in range(130)]
        pair.pump()
        self.assertEqual(len(ofType(pair.serverEvents, ChannelOpened)), 100)
        for cid in ids[:100]:
            pair.client.closeChannel(cid)
            pair.server.closeChannel(cid)
        pair.pump()
        self.assertEqual(len(ofType(pair.serverEvents, ChannelOpened)), 130)
        self.assertEqual(len(ofType(pair.serverEvents, ChannelClosed)), 100)
        self.assertEqual(len(ofType(pair.clientEvents, ChannelClosed)), 100)

    def test_defaultLimits(self) -> None:
        """
        With default settings a client can have at least 1024 channels open:
        100 go out before the server's preface (the protocol's initial
        value), the rest once it announces its limit; the next one waits.
        """
        pair = Pair()
        limit = pair.server.settings.maxChannels
        self.assertGreaterEqual(limit, 1024)
        ids = [pair.client.openChannel() for _ in range(limit + 6)]
        pair.clientToServer()
        self.assertEqual(len(ofType(pair.serverEvents, ChannelOpened)), 100)
        pair.pump()
        opened = ofType(pair.serverEvents, ChannelOpened)
        self.assertEqual(len(opened), limit)
        self.assertEqual(opened[-1], ChannelOpened(ids[limit - 1], b""))

    def test_rawPeerBeyondLimit(self) -> None:
        """
        A peer opening beyond its channel credit ends the session with
        CHANNEL_LIMIT_ERROR.
        """
        engine = MemuxEngine(False, SMALLEST)
        raw = RawPeer(engine)
        for cid in range(1, 200, 2):
            raw.send(DataFrame(cid, open=True))
        self.assertFalse(engine.terminated)
        events = raw.send(DataFrame(201, open=True))
        self.assertEqual(
            [e.code for e in ofType(events, SessionTerminated)],
            [ErrorCode.CHANNEL_LIMIT_ERROR],
        )

    def test_skippingIdsUsesCredit(self) -> None:
        """
        Ids count against the channel credit by position: jumping straight
        to the 101st id is a CHANNEL_LIMIT_ERROR, the 100th is accepted.
        """
        engine = MemuxEngine(False, SMALLEST)
        self.assertEqual(
            RawPeer(engine).send(OpenFrame(199, b"s")), [ChannelOpened(199, b"s")]
        )
        engine = MemuxEngine(False, SMALLEST)
        events = RawPeer(engine).send(OpenFrame(201, b"s"))
        self.assertEqual(
            [e.code for e in ofType(events, SessionTerminated)],
            [ErrorCode.CHANNEL_LIMIT_ERROR],
        )

    def test_sequentialChurnBatchesChannels(self) -> None:
        """
        Channels opened, used and closed one after another cost one
        CHANNELS frame per about half the concurrency allowed, not one per
        channel: 10,000 channels with the default 1024 cost at most 20.
        """
        pair = Pair()
        for _ in range(10_000):
            cid = pair.client.openChannel()
            pair.client.sendData(cid, b"m", True)
            pair.client.closeChannel(cid)
            pair.clientToServer()
            pair.server.closeChannel(cid)
            pair.pump()
        self.assertEqual(len(ofType(pair.serverEvents, ChannelOpened)), 10_000)
        self.assertEqual(len(ofType(pair.serverEvents, ChannelClosed)), 10_000)
        grants = ofType(pair.serverFrames, ChannelCreditFrame)
        self.assertLessEqual(len(grants), 20)
        self.assertGreaterEqual(len(grants), 10_000 // 1024)

    def test_burstAfterChurn(self) -> None:
        """
        A peer that churned through channels without running low on credit
        (so was granted none) and then opens as many as it may have at
        once gets them all opened: the opens themselves bring the grant.
        """
        pair = Pair(serverSettings=SMALLEST)
        for _ in range(40):
            cid = pair.client.openChannel()
            pair.client.closeChannel(cid)
            pair.clientToServer()
            pair.server.closeChannel(cid)
            pair.pump()
        self.assertEqual(ofType(pair.serverFrames, ChannelCreditFrame), [])
        burst = [pair.client.openChannel(b"s") for _ in range(100)]
        pair.pump()
        opened = [e.channel for e in ofType(pair.serverEvents, ChannelOpened)]
        self.assertEqual(opened[-100:], burst)

    def test_fullConcurrencyGrantsPerClose(self) -> None:
        """
        A peer with all its channels open gets a channel back for each one
        that closes, at once (no batching when it is short of credit).
        """
        pair = Pair(serverSettings=SMALLEST)
        ids = [pair.client.openChannel(b"s") for _ in range(101)]
        pair.pump()
        self.assertEqual(len(ofType(pair.serverEvents, ChannelOpened)), 100)
        pair.client.resetChannel(ids[0])
        pair.pump()
        self.assertEqual(len(ofType(pair.serverEvents, ChannelOpened)), 101)
        self.assertEqual(ofType(pair.serverFrames, ChannelCreditFrame)[-1].limit, 101)


class ChannelCountCreditTests(SynchronousTestCase):
    """
    The channel-count policy, L{ChannelCountCredit}.
    """

    @given(
        st.integers(min_value=1, max_value=64),
        st.lists(st.tuples(st.booleans(), st.integers(0, 3)), max_size=300),
    )
    def test_peerCanAlwaysOpen(
        self, concurrency: int, steps: list[tuple[bool, int]]
    ) -> None:
        """
        Whatever the peer opens (skipping ids or not) and closes, it may
        always open at least C{min(concurrency - open, concurrency // 2 +
        1)} more channels, and never has more than C{concurrency} open;
        the limit never falls.
        """
        credit = ChannelCountCredit(concurrency)
        # ``opened`` and ``closed`` apply `due` inline: a twin that takes
        # each step as a plain update and asks `due` must agree with them.
        twin = ChannelCountCredit(concurrency)
        opened = 0
        for isOpen, skip in steps:
            limit = credit.limit
            if isOpen:
                ordinal = credit.used + skip
                if ordinal >= credit.limit or opened >= concurrency:
                    continue  # the peer has no credit for it
                announced = credit.opened(ordinal)
                twin.used = ordinal + 1
                twin.open += 1
                opened += 1
            elif opened:
                announced = credit.closed()
                twin.open -= 1
                opened -= 1
            else:
                continue
            self.assertEqual(announced, twin.due())
            self.assertEqual(credit.limit, twin.limit)
            self.assertIsNone(credit.due())
            self.assertGreaterEqual(credit.limit, limit)
            self.assertEqual(credit.open, opened)
            self.assertGreaterEqual(
                credit.limit - credit.used,
                min(concurrency - opened, concurrency // 2 + 1),
            )
            self.assertLessEqual(credit.limit - credit.used + opened, concurrency)


# ---------------------------------------------------------------- ids


class ChannelIdRuleTests(SynchronousTestCase):
    """
    Breaches of the channel id rules end the session with PROTOCOL_ERROR;
    frames for channels that have closed are ignored.
    """

    def assertSessionError(
        self,
        raw: RawPeer,
        events: list[Event],
        code: ErrorCode = ErrorCode.PROTOCOL_ERROR,
    ) -> None:
        """
        Assert that C{events} end C{raw}'s engine's session with C{code} and
        that a GOAWAY with it is queued.
        """
        self.assertEqual(
            [(e.code, e.remote) for e in ofType(events, SessionTerminated)],
            [(code, False)],
        )
        self.assertTrue(raw.engine.terminated)
        frames = raw.read()
        self.assertEqual([f.code for f in frames if isinstance(f, GoAwayFrame)], [code])

    def test_reopen(self) -> None:
        """
        Opening an id twice, by either opening form, is a PROTOCOL_ERROR.
        """
        seconds: list[Frame] = [DataFrame(1, open=True), OpenFrame(1, b"s")]
        for second in seconds:
            engine = MemuxEngine(False)
            raw = RawPeer(engine)
            raw.send(DataFrame(1, open=True))
            self.assertSessionError(raw, raw.send(second))

    def test_decreasingId(self) -> None:
        """
        Opening an id below one already opened is a PROTOCOL_ERROR.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        raw.send(OpenFrame(5, b"s"))
        self.assertSessionError(raw, raw.send(OpenFrame(3, b"s")))

    def test_wrongParity(self) -> None:
        """
        A client opening an even id, or a server an odd one, is a
        PROTOCOL_ERROR.
        """
        raw = RawPeer(MemuxEngine(False))
        self.assertSessionError(raw, raw.send(DataFrame(2, open=True)))
        raw = RawPeer(MemuxEngine(True))
        self.assertSessionError(raw, raw.send(OpenFrame(1, b"s")))

    def test_neverOpened(self) -> None:
        """
        DATA, CREDIT, RESET and DROP for a channel never opened (by either
        side) are PROTOCOL_ERRORs.
        """
        frames: list[Frame] = [
            DataFrame(1, b"x"),
            CreditFrame(1, 100000),
            CreditFrame(2, 100000),
            ResetFrame(3, ErrorCode.CANCEL),
            DropFrame(5, 1),
        ]
        for frame in frames:
            raw = RawPeer(MemuxEngine(False))
            self.assertSessionError(raw, raw.send(frame))

    def test_skippedIds(self) -> None:
        """
        Opening a higher id skips the lower ones of that parity: frames for
        them are ignored like those of closed channels, and opening one of
        them later is a PROTOCOL_ERROR.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        self.assertEqual(raw.send(OpenFrame(5, b"s")), [ChannelOpened(5, b"s")])
        raw.read()
        self.assertEqual(
            raw.send(DataFrame(3, b"x"), CreditFrame(1, 100000), ResetFrame(3, 0)),
            [],
        )
        self.assertFalse(engine.terminated)
        self.assertEqual(raw.read(), [])
        self.assertSessionError(raw, raw.send(DataFrame(3, open=True)))

    def test_localChannelNotYetAnnounced(self) -> None:
        """
        A frame for a channel we opened but have not yet announced is a
        PROTOCOL_ERROR: the peer cannot know of it.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        engine.openChannel()
        self.assertSessionError(raw, raw.send(CreditFrame(2, 100000)))

    def test_closedChannelFramesIgnored(self) -> None:
        """
        DATA, CREDIT, RESET and DROP for a channel that has closed are
        ignored: no events, no error, nothing sent.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        raw.send(DataFrame(1, b"bye", end=True, fin=True, open=True))
        engine.closeChannel(1)
        raw.read()
        self.assertEqual(engine.popEvents(), [LocalHalfClosed(1), ChannelClosed(1)])
        raw.read()  # whatever the close itself caused (channel-count credit)
        frames: list[Frame] = [
            DataFrame(1, b"late"),
            CreditFrame(1, 1 << 20),
            DropFrame(1, 1),
            ResetFrame(1, ErrorCode.CANCEL),
        ]
        for frame in frames:
            self.assertEqual(raw.send(frame), [])
        self.assertFalse(engine.terminated)
        self.assertEqual(raw.read(), [])

    def test_closedChannelDataCountsForSession(self) -> None:
        """
        DATA for a closed channel still counts against the session credit:
        it can overrun it.  (The 64 KiB the reset channel held are granted
        again at once, so the peer may send exactly 64 KiB more.)
        """
        engine = MemuxEngine(
            False,
            SessionSettings(
                maxFrameSize=131072, channelCredit=65536, sessionCredit=262144
            ),
        )
        raw = RawPeer(engine)
        for cid in [1, 3, 5, 7]:
            raw.send(DataFrame(cid, b"x" * 65536, open=True))
        engine.resetChannel(1)
        self.assertEqual(
            engine._sessionRecv.limit - engine._sessionRecv.received, 65536
        )
        self.assertFalse(engine.terminated)
        self.assertSessionError(
            raw, raw.send(DataFrame(1, b"x" * 65537)), ErrorCode.FLOW_CONTROL_ERROR
        )

    def test_closedChannelDataReturnsSessionCredit(self) -> None:
        """
        DATA for a closed channel is dropped and its session credit given
        back at once.
        """
        engine = MemuxEngine(
            False, SessionSettings(maxFrameSize=65536, sessionCredit=262144)
        )
        raw = RawPeer(engine)
        raw.send(DataFrame(1, b"x", open=True))
        engine.resetChannel(1)
        raw.read()
        raw.send(DataFrame(1, b"y" * 65536), DataFrame(1, b"z" * 65536))
        self.assertEqual(raw.read(), [CreditFrame(0, 131073 + 262144)])


# ---------------------------------------------------------------- scheduling


class SchedulingTests(SynchronousTestCase):
    """
    Output scheduling: control first, then round robin by chunk.
    """

    def test_roundRobin(self) -> None:
        """
        With two channels having much queued, successive DATA frames
        alternate between them.
        """
        pair = Pair()
        a = pair.client.openChannel()
        b = pair.client.openChannel()
        pair.client.sendData(a, b"a" * 100000, True)
        pair.client.sendData(b, b"b" * 100000, True)
        pair.clientToServer()
        self.assertEqual([f.channel for f in dataFrames(pair.clientFrames)], [a, b] * 4)

    def test_roundRobinThree(self) -> None:
        """
        A channel with one short message takes its turn between two busy
        ones and then drops out of the rotation.
        """
        pair = Pair()
        pair.pump()
        a, b, c = (pair.client.openChannel() for _ in range(3))
        pair.client.sendData(a, b"a" * 100000, True)
        pair.client.sendData(b, b"b" * 100000, True)
        pair.client.sendData(c, b"c", True)
        pair.clientToServer()
        # After the pump the server's frame size is 65536: two chunks each.
        self.assertEqual(
            [f.channel for f in dataFrames(pair.clientFrames) if f.data],
            [a, b, c, a, b],
        )

    def test_roundRobinAcrossCalls(self) -> None:
        """
        Asked for little at a time, the engine still alternates channels
        from one call to the next.
        """
        pair = Pair(serverSettings=SMALLEST)
        pair.pump()
        a = pair.client.openChannel()
        b = pair.client.openChannel()
        pair.clientToServer()
        # 16384-byte chunks, 65536 bytes of credit: four chunks each.
        pair.client.sendData(a, b"a" * 100000, True)
        pair.client.sendData(b, b"b" * 100000, True)
        for _ in range(10):
            pair.clientToServer(1)
        self.assertEqual(
            [f.channel for f in dataFrames(pair.clientFrames) if f.data], [a, b] * 4
        )

    def test_roundRobinAcrossSessionStalls(self) -> None:
        """
        When the session credit runs out and comes back, the channels take
        up their turns where they left off: the DATA frames still alternate.
        """
        pair = Pair(
            serverSettings=SessionSettings(
                maxFrameSize=16384, channelCredit=1 << 20, sessionCredit=262144
            )
        )
        pair.pump()
        a = pair.client.openChannel()
        b = pair.client.openChannel()
        pair.client.sendData(a, b"a" * 600000, True)
        pair.client.sendData(b, b"b" * 600000, True)
        for _ in range(20):
            pair.pump()
            for cid in (a, b):
                pair.server.consumed(cid, pair.server.heldBytes(cid))
        sequence = [f.channel for f in dataFrames(pair.clientFrames) if f.data]
        self.assertEqual(sequence, [a, b] * (len(sequence) // 2))
        self.assertEqual(messages(pair.serverEvents, a), [b"a" * 600000])
        self.assertEqual(messages(pair.serverEvents, b), [b"b" * 600000])

    def test_maxBytes(self) -> None:
        """
        C{dataToSend} stops adding DATA once about C{maxBytes} are gathered.
        """
        pair = Pair(serverSettings=SessionSettings(maxFrameSize=65536))
        pair.pump()
        cid = pair.client.openChannel()
        pair.clientToServer()
        pair.client.sendData(cid, b"q" * 200000, True)
        data = pair.client.dataToSend(20000)
        self.assertGreaterEqual(len(data), 20000)
        self.assertLess(len(data), 20000 + 65536 + 20)

    def test_piecesToSend(self) -> None:
        """
        C{piecesToSend} gives the output as pieces a transport's
        C{writeSequence} accepts: all C{bytes} (the parts of a chunk split
        at the frame size too), whole chunks being the application's own
        buffers, uncopied; joined, they carry every message intact.
        """
        pair = Pair(serverSettings=SessionSettings(maxFrameSize=65536))
        pair.pump()
        cid = pair.client.openChannel()
        pair.clientToServer()
        whole = b"w" * 1000
        pair.client.sendData(cid, whole, True)
        # Larger than a frame (64 KiB): split.
        big = bytes(range(256)) * 400
        pair.client.sendData(cid, big, True)
        pieces = pair.client.piecesToSend()
        self.assertTrue(any(piece is whole for piece in pieces))
        self.assertEqual({type(piece) for piece in pieces}, {bytes})
        events = pair.server.receiveData(b"".join(pieces))
        self.assertEqual(messages(events, cid), [whole, big])

    def test_controlBeforeData(self) -> None:
        """
        PING acknowledgements and CREDIT frames go out before any DATA in
        the same output.
        """
        pair = Pair(serverSettings=SMALLEST)
        pair.pump()
        up = pair.client.openChannel()
        pair.client.sendData(up, b"u" * 40000, True)
        pair.clientToServer()
        down = pair.server.openChannel()
        pair.server.sendData(down, b"d" * 100000, True)
        pair.client.ping(b"hi")
        pair.clientToServer()
        pair.server.consumed(up, 40000)
        before = len(pair.serverFrames)
        pair.serverToClient()
        frames = pair.serverFrames[before:]
        kinds = [type(f) for f in frames]
        firstData = kinds.index(DataFrame)
        self.assertIn(PingFrame(b"hi", ack=True), frames[:firstData])
        self.assertIn(CreditFrame(up, 40000 + 65536), frames[:firstData])
        self.assertNotIn(DataFrame, kinds[:firstData])
        self.assertEqual(set(kinds[firstData:]), {DataFrame})


# ---------------------------------------------------------------- ping


class PingTests(SynchronousTestCase):
    """
    PING and its acknowledgement.
    """

    def test_ping(self) -> None:
        """
        A ping is answered automatically by the peer, and its answer reaches
        the sender as L{PingAcknowledged} with the same payload.
        """
        pair = Pair()
        pair.client.ping(b"12345678")
        pair.server.ping(b"")
        pair.pump()
        self.assertIn(PingAcknowledged(b"12345678"), pair.clientEvents)
        self.assertIn(PingAcknowledged(b""), pair.serverEvents)
        self.assertEqual(
            len(ofType(pair.clientEvents + pair.serverEvents, PingAcknowledged)), 2
        )

    def test_pingPayloadLimit(self) -> None:
        """
        A ping payload over 64 bytes is refused with L{ValueError}.
        """
        self.assertRaises(ValueError, MemuxEngine(True).ping, b"p" * 65)

    def test_unsolicitedAck(self) -> None:
        """
        A PING acknowledgement is reported even if unsolicited (the Twisted
        layer matches payloads); it is not answered.
        """
        engine = MemuxEngine(True)
        raw = RawPeer(engine)
        self.assertEqual(raw.send(PingFrame(b"x", ack=True)), [PingAcknowledged(b"x")])
        self.assertEqual(raw.read(), [])

    def test_answersBounded(self) -> None:
        """
        A peer that sends PINGs and never reads cannot make the engine queue
        answers without bound (spec, "Resource bounds": implementations MUST
        bound what they queue for the peer): 100000 PINGs would need 6.7 MB
        of answers; either the session ends with EXCESSIVE_LOAD or at most
        4 MiB are held.
        """
        engine = MemuxEngine(False)
        RawPeer(engine)
        frames = PingFrame(b"p" * 64).encode() * 10000
        events: list[Event] = []
        for _ in range(10):
            events += engine.receiveData(frames)
        if engine.terminated:
            self.assertEqual(
                [e.code for e in ofType(events, SessionTerminated)],
                [ErrorCode.EXCESSIVE_LOAD],
            )
        else:
            self.assertLessEqual(len(engine.dataToSend()), 4 << 20)


# ---------------------------------------------------------------- goaway


class GoAwayTests(SynchronousTestCase):
    """
    GOAWAY: graceful shutdown and session-level errors.
    """

    def test_goAwayReceived(self) -> None:
        """
        The peer gets L{GoAwayReceived} naming the last of its channels that
        will be processed; existing channels carry on in both directions.
        """
        pair = Pair()
        cid = pair.client.openChannel()
        pair.pump()
        pair.server.goAway(reason="draining")
        pair.pump()
        self.assertIn(
            GoAwayReceived(cid, ErrorCode.NO_ERROR, "draining"), pair.clientEvents
        )
        pair.client.sendData(cid, b"still", True)
        pair.server.sendData(cid, b"here", True)
        pair.pump()
        self.assertEqual(messages(pair.serverEvents, cid), [b"still"])
        self.assertEqual(messages(pair.clientEvents, cid), [b"here"])
        self.assertFalse(pair.client.terminated)

    def test_laterOpensIgnored(self) -> None:
        """
        Channels the peer opens after our GOAWAY (crossing it on the wire)
        are ignored, and the peer resets them with REFUSED when the GOAWAY
        arrives.
        """
        pair = Pair()
        first = pair.client.openChannel()
        pair.pump()
        pair.server.goAway()
        late = pair.client.openChannel(b"svc")
        pair.client.sendData(late, b"lost", True)
        before = len(pair.serverEvents)
        pair.clientToServer()
        self.assertEqual(pair.serverEvents[before:], [])
        self.assertFalse(pair.server.isOpen(late))
        pair.serverToClient()
        goAway, reset = pair.clientEvents[-2:]
        self.assertEqual(goAway, GoAwayReceived(first, ErrorCode.NO_ERROR, ""))
        assert isinstance(reset, ChannelReset)
        self.assertEqual(
            (reset.channel, reset.code, reset.remote), (late, ErrorCode.REFUSED, True)
        )
        self.assertFalse(pair.client.isOpen(late))
        self.assertFalse(pair.server.terminated)

    def test_pendingOpensRefused(self) -> None:
        """
        Local channels whose opening has not even gone out are refused too
        when a GOAWAY arrives.
        """
        pair = Pair()
        pair.pump()
        pair.server.goAway()
        pending = pair.client.openChannel()
        pair.serverToClient()
        self.assertEqual(
            [(e.channel, e.code) for e in ofType(pair.clientEvents, ChannelReset)],
            [(pending, ErrorCode.REFUSED)],
        )
        self.assertEqual(pair.clientToServer(), b"")

    def test_openAfterGoAway(self) -> None:
        """
        Opening a channel after the peer's GOAWAY raises L{ValueError}.
        """
        pair = Pair()
        pair.server.goAway()
        pair.pump()
        self.assertRaises(ValueError, pair.client.openChannel)

    def test_goAwayWithError(self) -> None:
        """
        A GOAWAY with an error code ends the session at both ends: the peer
        gets L{SessionTerminated} with C{remote} true.
        """
        pair = Pair()
        pair.pump()
        pair.server.goAway(ErrorCode.INTERNAL_ERROR, "out of memory")
        self.assertTrue(pair.server.terminated)
        pair.serverToClient()
        [terminated] = ofType(pair.clientEvents, SessionTerminated)
        assert isinstance(terminated, SessionTerminated)
        self.assertEqual(terminated.code, ErrorCode.INTERNAL_ERROR)
        self.assertTrue(terminated.remote)
        self.assertIn("out of memory", terminated.reason)
        self.assertTrue(pair.client.terminated)

    def test_raisingLastChannel(self) -> None:
        """
        A second GOAWAY raising the last channel is a PROTOCOL_ERROR.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        raw.send(GoAwayFrame(0))
        events = raw.send(GoAwayFrame(4))
        self.assertEqual(
            [e.code for e in ofType(events, SessionTerminated)],
            [ErrorCode.PROTOCOL_ERROR],
        )

    def test_secondGoAwayKeepsLastChannel(self) -> None:
        """
        A second GOAWAY (here: the graceful one followed by an error) names
        the same last channel as the first, even if the peer opened channels
        in between, which were ignored: the peer must not think them
        processed, nor see the last channel rise.
        """
        pair = Pair()
        pair.pump()
        pair.server.goAway()
        late = pair.client.openChannel()
        pair.client.sendData(late, b"x", True)
        pair.clientToServer()
        pair.server.goAway(ErrorCode.INTERNAL_ERROR, "bye")
        pair.serverToClient()
        self.assertEqual(
            [f.lastChannel for f in pair.serverFrames if isinstance(f, GoAwayFrame)],
            [0, 0],
        )
        [terminated] = ofType(pair.clientEvents, SessionTerminated)
        self.assertEqual(terminated.code, ErrorCode.INTERNAL_ERROR)

    def test_noDataAfterTermination(self) -> None:
        """
        Once the session has failed, C{dataToSend} hands out the GOAWAY and
        then no more DATA, however much was queued.
        """
        pair = Pair()
        pair.pump()
        cid = pair.client.openChannel()
        pair.client.sendData(cid, b"q" * 100000, True)
        pair.clientToServer(1)
        pair.client.receiveData(b"\x00\x00\x01x")  # DATA on channel 0
        self.assertTrue(pair.client.terminated)
        before = len(pair.clientFrames)
        pair.clientToServer()
        pair.clientToServer()
        self.assertEqual([type(f) for f in pair.clientFrames[before:]], [GoAwayFrame])
        self.assertFalse(pair.client.hasDataToSend())

    def test_noDataAfterRemoteTermination(self) -> None:
        """
        Once the peer has ended the session with an erroneous GOAWAY,
        C{dataToSend} hands out no more DATA: the peer processes nothing
        more and both sides close.
        """
        pair = Pair()
        pair.pump()
        cid = pair.client.openChannel()
        pair.client.sendData(cid, b"q" * 100000, True)
        pair.clientToServer(1)
        pair.server.goAway(ErrorCode.INTERNAL_ERROR, "bye")
        pair.serverToClient()
        self.assertTrue(pair.client.terminated)
        before = len(pair.clientFrames)
        pair.clientToServer()
        self.assertEqual(pair.clientFrames[before:], [])
        self.assertFalse(pair.client.hasDataToSend())


# ---------------------------------------------------------------- lossy


class LossyTests(SynchronousTestCase):
    """
    Load shedding on channels that opted in: DROP.
    """

    def test_discardWholeMessagesOnly(self) -> None:
        """
        C{discardQueuedMessages} drops only whole messages not yet begun:
        the one partly sent and the one still being written are kept.  The
        peer gets L{MessagesDropped} with the count at the point of the
        message sequence where the messages were dropped: after the partly
        sent message ends (a DROP is never sent in the middle of a message)
        and before the data that follows.
        """
        pair = Pair(serverSettings=SMALLEST)
        cid = pair.client.openChannel(b"feed", lossy=True)
        pair.client.sendData(cid, b"1" * 100000, True)
        pair.client.sendData(cid, b"two", True)
        pair.client.sendData(cid, b"three", True)
        pair.client.sendData(cid, b"four-")
        pair.pump()
        self.assertEqual(pair.serverEvents[1], ChannelOpened(cid, b"feed", lossy=True))
        self.assertEqual(len(received(pair.serverEvents, cid)), 65536)
        self.assertEqual(pair.client.discardQueuedMessages(cid), 2)
        self.assertEqual(pair.client.queuedBytes(cid), 100000 - 65536 + 5)
        pair.client.sendData(cid, b"end", True)
        for _ in range(5):
            pair.server.consumed(cid, pair.server.heldBytes(cid))
            pair.pump()
        self.assertEqual(
            transcript(pair.serverEvents, cid), [b"1" * 100000, 2, b"four-end"]
        )
        # On the wire: no DROP between the chunks of the first message.
        frames = [
            f
            for f in pair.clientFrames
            if isinstance(f, (DataFrame, DropFrame)) and f.channel == cid
        ]
        drop = frames.index(DropFrame(cid, 2))
        before = frames[drop - 1]
        assert isinstance(before, DataFrame)
        self.assertTrue(before.end)

    def test_discardBeforeOpenSent(self) -> None:
        """
        Messages discarded before the channel's opening went out are dropped
        too; the peer hears of the channel, then of the drop.
        """
        pair = Pair()
        cid = pair.client.openChannel(b"feed", lossy=True)
        pair.client.sendData(cid, b"a", True)
        pair.client.sendData(cid, b"b", True)
        self.assertEqual(pair.client.discardQueuedMessages(cid), 2)
        pair.client.sendData(cid, b"c", True)
        pair.pump()
        self.assertEqual(pair.serverEvents[1], ChannelOpened(cid, b"feed", lossy=True))
        self.assertEqual(transcript(pair.serverEvents, cid), [2, b"c"])

    def test_dropBeforeFin(self) -> None:
        """
        A DROP pending behind a partly sent message still goes out before
        the channel's FIN (a DROP after FIN is forbidden): closing the
        channel right after discarding delivers the partly sent message,
        then the drop notice, then the half-close.
        """
        pair = Pair(serverSettings=SMALLEST)
        cid = pair.client.openChannel(b"feed", lossy=True)
        pair.client.sendData(cid, b"1" * 100000, True)
        pair.client.sendData(cid, b"two", True)
        pair.pump()
        self.assertEqual(pair.client.discardQueuedMessages(cid), 1)
        pair.client.closeChannel(cid)
        for _ in range(5):
            pair.server.consumed(cid, pair.server.heldBytes(cid))
            pair.pump()
        self.assertEqual(transcript(pair.serverEvents, cid), [b"1" * 100000, 1])
        onChannel = [
            e
            for e in pair.serverEvents
            if isinstance(e, (MessagesDropped, RemoteHalfClosed))
        ]
        self.assertEqual(onChannel, [MessagesDropped(cid, 1), RemoteHalfClosed(cid)])
        frames = [
            f
            for f in pair.clientFrames
            if isinstance(f, (DataFrame, DropFrame)) and f.channel == cid
        ]
        self.assertEqual(frames[-1], DataFrame(cid, fin=True))
        self.assertEqual(frames[-2], DropFrame(cid, 1))

    def test_discardWhileOpeningWaitsForChannelCredit(self) -> None:
        """
        A lossy channel whose opening waits for the peer's channel-count
        credit keeps its DROP until the opening goes out: then the peer
        hears of the channel, of the drop, and of the message kept (the
        DROP goes where the discarded messages were, before it), never a
        frame before the channel's opening.
        """
        pair = Pair(serverSettings=SMALLEST)
        for _ in range(SMALLEST.maxChannels):
            pair.client.openChannel()
        pair.pump()
        cid = pair.client.openChannel(b"feed", lossy=True)
        pair.client.sendData(cid, b"a", True)
        pair.client.sendData(cid, b"b" * 100, True)
        pair.client.sendData(cid, b"c" * 100, True)
        self.assertEqual(pair.client.discardQueuedMessages(cid, keepNewest=True), 2)
        self.assertEqual(pair.clientToServer(), b"")  # still waiting
        pair.client.resetChannel(1)  # the server grants a channel back
        pair.pump()
        self.assertEqual(transcript(pair.serverEvents, cid), [2, b"c" * 100])
        frames = [
            f
            for f in pair.clientFrames
            if isinstance(f, (OpenFrame, DataFrame, DropFrame)) and f.channel == cid
        ]
        self.assertEqual(
            frames,
            [
                OpenFrame(cid, b"feed", lossy=True),
                DropFrame(cid, 2),
                DataFrame(cid, b"c" * 100, end=True),
            ],
        )

    def test_dropAfterMessageToStoppedReader(self) -> None:
        """
        A receiver that stops reading in the middle of a message still gets
        the rest of it before the DROP of the messages discarded after it
        (until its own FIN is out): the DROP falls between messages.
        """
        pair = Pair()
        cid = pair.client.openChannel(b"feed", lossy=True)
        pair.client.sendData(cid, b"first-")
        pair.pump()
        pair.server.stopReading(cid)
        pair.server.closeChannel(cid)
        pair.client.sendData(cid, b"end", True)
        pair.client.sendData(cid, b"second", True)
        self.assertEqual(pair.client.discardQueuedMessages(cid), 1)
        pair.takeServerEvents()
        pair.clientToServer()
        self.assertEqual(
            pair.takeServerEvents(),
            [DataReceived(cid, b"end", True), MessagesDropped(cid, 1)],
        )
        pair.server.consumed(cid, len(b"first-end"))
        pair.client.closeChannel(cid)
        pair.pump()
        self.assertEqual(pair.client.openChannels(), [])
        self.assertEqual(pair.server.openChannels(), [])

    def test_keepNewest(self) -> None:
        """
        With C{keepNewest}, the newest complete message is kept as well as
        the one partly sent and the one being written.
        """
        pair = Pair(serverSettings=SMALLEST)
        cid = pair.client.openChannel(b"feed", lossy=True)
        pair.client.sendData(cid, b"1" * 100000, True)
        for message in [b"2", b"3", b"4"]:
            pair.client.sendData(cid, message, True)
        pair.client.sendData(cid, b"5-")
        pair.pump()
        self.assertEqual(pair.client.discardQueuedMessages(cid, keepNewest=True), 2)
        pair.client.sendData(cid, b"end", True)
        for _ in range(5):
            pair.server.consumed(cid, pair.server.heldBytes(cid))
            pair.pump()
        self.assertEqual(
            transcript(pair.serverEvents, cid), [b"1" * 100000, 2, b"4", b"5-end"]
        )

    def test_nothingToDiscard(self) -> None:
        """
        With nothing queued, discarding drops nothing and sends nothing.
        """
        pair = Pair()
        cid = pair.client.openChannel(b"feed", lossy=True)
        pair.pump()
        self.assertEqual(pair.client.discardQueuedMessages(cid), 0)
        self.assertEqual(pair.clientToServer(), b"")

    def test_notLossy(self) -> None:
        """
        Discarding on a channel that is not lossy raises L{ValueError}.
        """
        engine = MemuxEngine(True)
        cid = engine.openChannel(b"svc")
        self.assertRaises(ValueError, engine.discardQueuedMessages, cid)

    def test_peerOpenedLossy(self) -> None:
        """
        The receiving side of a lossy channel may shed load on it too.
        """
        pair = Pair()
        cid = pair.client.openChannel(b"feed", lossy=True)
        pair.pump()
        pair.server.sendData(cid, b"x", True)
        self.assertEqual(pair.server.discardQueuedMessages(cid), 1)
        pair.pump()
        self.assertEqual(pair.clientEvents[-1], MessagesDropped(cid, 1))

    def test_dropOnNonLossyChannel(self) -> None:
        """
        A DROP on a channel that did not opt in resets it with
        PROTOCOL_ERROR; the session survives.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        raw.send(DataFrame(1, open=True))
        events = raw.send(DropFrame(1, 3))
        self.assertEqual(len(events), 1)
        self.assertEqual(
            [(e.channel, e.code, e.remote) for e in ofType(events, ChannelReset)],
            [(1, ErrorCode.PROTOCOL_ERROR, False)],
        )
        self.assertIsInstance(events[0], ChannelReset)
        self.assertEqual(
            [(f.channel, f.code) for f in raw.read() if isinstance(f, ResetFrame)],
            [(1, ErrorCode.PROTOCOL_ERROR)],
        )
        self.assertFalse(engine.terminated)

    def test_dropOnLossyChannel(self) -> None:
        """
        A DROP on a lossy channel is reported as L{MessagesDropped}.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        raw.send(OpenFrame(1, b"feed", lossy=True))
        self.assertEqual(raw.send(DropFrame(1, 7)), [MessagesDropped(1, 7)])


# ---------------------------------------------------------------- robustness


class ExtensibilityTests(SynchronousTestCase):
    """
    Room to grow, and limits on what the engine itself emits.
    """

    def test_unknownFrameTypesIgnored(self) -> None:
        """
        Frames of reserved types are ignored wherever they appear, on any
        channel, and are not answered.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        events = raw.send(
            UnknownFrame(0x8, 0, 0, b""),
            UnknownFrame(0xF, 0xF, 12345, b"x" * 100),
            DataFrame(1, b"after", end=True, open=True),
            UnknownFrame(0xA, 1, 1, b"ext"),
        )
        self.assertEqual(
            events, [ChannelOpened(1, b""), DataReceived(1, b"after", True)]
        )
        self.assertFalse(engine.terminated)
        self.assertEqual(raw.read(), [])

    def test_largeOpenMetadata(self) -> None:
        """
        Metadata too large for one frame does not produce a frame the peer
        must reject: either the engine refuses it with L{ValueError} or the
        peer accepts the channel.
        """
        pair = Pair(serverSettings=SMALLEST)
        try:
            cid = pair.client.openChannel(b"svc", metadata=b"m" * 20000)
        except ValueError:
            return
        pair.pump()
        self.assertEqual(ofType(pair.serverEvents, SessionTerminated), [])
        self.assertEqual(
            pair.serverEvents[-1], ChannelOpened(cid, b"svc", b"m" * 20000)
        )

    def test_longGoAwayReason(self) -> None:
        """
        A GOAWAY reason longer than a frame may carry does not make the peer
        reject the frame: either L{ValueError} or the peer gets the GOAWAY.
        """
        pair = Pair(clientSettings=SMALLEST)
        try:
            pair.server.goAway(ErrorCode.NO_ERROR, "going " * 5000)
        except ValueError:
            return
        pair.pump()
        self.assertEqual(ofType(pair.clientEvents, SessionTerminated), [])
        self.assertEqual(len(ofType(pair.clientEvents, GoAwayReceived)), 1)

    def test_counters(self) -> None:
        """
        The engine counts bytes and frames in and out, channels opened and
        accepted.
        """
        pair = Pair()
        cid = pair.client.openChannel()
        pair.client.sendData(cid, b"x", True)
        pair.pump()
        self.assertEqual(pair.client.bytesSent, pair.server.bytesReceived)
        self.assertEqual(pair.server.bytesSent, pair.client.bytesReceived)
        self.assertEqual(pair.client.channelsOpened, 1)
        self.assertEqual(pair.server.channelsAccepted, 1)
        self.assertEqual(pair.server.framesReceived, 2)


# ---------------------------------------------------------------- property


CLIENT = True
SERVER = False


#: Message sizes: tiny, small, up to a few frames, and around the smallest
#: channel window (65536).
messageSizes = st.one_of(
    st.integers(0, 16),
    st.integers(17, 2000),
    st.integers(2000, 70000),
    st.integers(60000, 70000),
)

sessionSettings = st.builds(
    SessionSettings,
    maxFrameSize=st.sampled_from([16384, 20000, 65536]),
    channelCredit=st.sampled_from([65536, 100000, 262144]),
    sessionCredit=st.sampled_from([262144, 400000, 4 << 20]),
    maxChannels=st.sampled_from([100, 1024]),
)


class SessionModel:
    """
    Two engines driven by random operations, with a model of what each
    application sent and received, checked as events arrive.
    """

    def __init__(
        self,
        test: SynchronousTestCase,
        clientSettings: SessionSettings,
        serverSettings: SessionSettings,
        resets: bool = False,
    ) -> None:
        self.test = test
        self.operations = self.baseOperations + (["opReset"] if resets else [])
        self.settings = {CLIENT: clientSettings, SERVER: serverSettings}
        self.engines = {
            CLIENT: MemuxEngine(True, clientSettings),
            SERVER: MemuxEngine(False, serverSettings),
        }
        #: Bytes each side has produced and the other not yet received.
        self.wire = {CLIENT: b"", SERVER: b""}
        #: Channels each side's application may write to, in order known.
        self.usable: dict[bool, list[int]] = {CLIENT: [], SERVER: []}
        self.writeClosed: dict[bool, set[int]] = {CLIENT: set(), SERVER: set()}
        self.finSent: set[tuple[bool, int]] = set()
        self.finReceived: set[tuple[bool, int]] = set()
        self.closed: dict[bool, set[int]] = {CLIENT: set(), SERVER: set()}
        #: Channels each side knows to be reset (by itself or its peer),
        #: and which sides reset each channel.
        self.dead: dict[bool, set[int]] = {CLIENT: set(), SERVER: set()}
        self.resetBy: dict[int, set[bool]] = defaultdict(set)
        #: Keyed by (sender, channel): what the sender wrote and the
        #: receiver got.
        self.partial: dict[tuple[bool, int], bytes] = defaultdict(bytes)
        self.sent: dict[tuple[bool, int], list[bytes]] = defaultdict(list)
        self.incoming: dict[tuple[bool, int], bytes] = defaultdict(bytes)
        self.got: dict[tuple[bool, int], list[bytes]] = defaultdict(list)
        #: Bytes delivered to a side's application and not yet consumed.
        self.unconsumed: dict[bool, dict[int, int]] = {
            CLIENT: defaultdict(int),
            SERVER: defaultdict(int),
        }
        self.services: dict[int, tuple[bytes, bytes | None]] = {}
        self.pings: dict[bool, list[bytes]] = {CLIENT: [], SERVER: []}
        self.counter = 0

    # ---------------------------------------------------------- operations

    def writable(self, side: bool) -> list[int]:
        """
        The channels C{side}'s application may still write to.
        """
        return [
            c
            for c in self.usable[side]
            if c not in self.writeClosed[side] and c not in self.dead[side]
        ]

    def pickSide(self, data: st.DataObject) -> bool:
        """
        Draw a side, preferring one that has a channel to write to.
        """
        side = data.draw(st.booleans(), label="client side")
        if not self.writable(side) and self.writable(not side):
            return not side
        return side

    def pick(self, data: st.DataObject, side: bool) -> int | None:
        """
        Draw a channel C{side} may still write to; open one if there is
        none (and the model allows more).
        """
        choices = self.writable(side)
        if not choices:
            if len(self.services) >= self.maxChannels:
                return None
            return self.open(data, side)
        return data.draw(st.sampled_from(choices), label="channel")

    #: The most channels one example opens.
    maxChannels = 40

    def opOpen(self, data: st.DataObject) -> None:
        if len(self.services) < self.maxChannels:
            self.open(data, data.draw(st.booleans(), label="client side"))

    def open(self, data: st.DataObject, side: bool) -> int:
        service = data.draw(
            st.sampled_from([b"", b"", b"echo", b"chat"]), label="service"
        )
        metadata = data.draw(st.none() | st.binary(max_size=8), label="metadata")
        cid = self.engines[side].openChannel(service, metadata)
        self.test.assertEqual(self.engines[side].isLocal(cid), True)
        self.test.assertNotIn(cid, self.services)
        self.services[cid] = (service, metadata)
        self.usable[side].append(cid)
        return cid

    def newMessage(self, side: bool, cid: int, size: int) -> bytes:
        self.counter += 1
        return messageBody(f"{int(side)}:{cid}:{self.counter}", size)

    def opSend(self, data: st.DataObject) -> None:
        side = self.pickSide(data)
        cid = self.pick(data, side)
        if cid is None:
            return
        size = data.draw(messageSizes, label="size")
        body = self.newMessage(side, cid, size)
        cuts = data.draw(st.lists(st.integers(0, size), max_size=4), label="cuts")
        pieces = splitAt(body, cuts)
        engine = self.engines[side]
        for piece in pieces[:-1]:
            engine.sendData(cid, piece)
        engine.sendData(cid, pieces[-1], endMessage=True)
        key = (side, cid)
        self.sent[key].append(self.partial.pop(key, b"") + body)

    def opWritePart(self, data: st.DataObject) -> None:
        side = self.pickSide(data)
        cid = self.pick(data, side)
        if cid is None:
            return
        size = data.draw(st.integers(1, 30000), label="size")
        body = self.newMessage(side, cid, size)
        self.engines[side].sendData(cid, body)
        self.partial[(side, cid)] += body

    def closeWrite(self, side: bool, cid: int) -> None:
        key = (side, cid)
        if key in self.partial:
            self.engines[side].sendData(cid, b"", endMessage=True)
            self.sent[key].append(self.partial.pop(key))
        self.engines[side].closeChannel(cid)
        self.writeClosed[side].add(cid)

    def opClose(self, data: st.DataObject) -> None:
        side = self.pickSide(data)
        choices = self.writable(side)
        if choices:
            self.closeWrite(side, data.draw(st.sampled_from(choices), label="channel"))

    def opConsume(self, data: st.DataObject) -> None:
        side = data.draw(st.booleans(), label="client side")
        held = [c for c, n in sorted(self.unconsumed[side].items()) if n]
        if not held:
            return
        cid = data.draw(st.sampled_from(held), label="channel")
        n = data.draw(st.integers(1, self.unconsumed[side][cid]), label="consume")
        self.engines[side].consumed(cid, n)
        self.unconsumed[side][cid] -= n

    def opReset(self, data: st.DataObject) -> None:
        side = data.draw(st.booleans(), label="client side")
        choices = [
            c
            for c in self.usable[side]
            if c not in self.dead[side] and c not in self.closed[side]
        ]
        if not choices:
            return
        cid = data.draw(st.sampled_from(choices), label="channel")
        self.engines[side].resetChannel(cid, ErrorCode.CANCEL, "model")
        self.dead[side].add(cid)
        self.resetBy[cid].add(side)
        self.unconsumed[side][cid] = 0
        self.partial.pop((side, cid), None)

    def opPing(self, data: st.DataObject) -> None:
        side = data.draw(st.booleans(), label="client side")
        payload = data.draw(st.binary(max_size=8), label="payload")
        self.engines[side].ping(payload)
        self.pings[side].append(payload)

    def produce(self, side: bool, maxBytes: int) -> bool:
        engine = self.engines[side]
        out = engine.dataToSend(maxBytes)
        events = engine.popEvents()
        self.handle(side, events)
        self.wire[side] += out
        return bool(out or events)

    def deliver(self, side: bool, n: int, cuts: list[int]) -> None:
        chunk, self.wire[side] = self.wire[side][:n], self.wire[side][n:]
        peer = self.engines[not side]
        for piece in splitAt(chunk, cuts):
            self.handle(not side, peer.receiveData(piece))

    def opProduce(self, data: st.DataObject) -> None:
        side = data.draw(st.booleans(), label="client side")
        maxBytes = data.draw(st.integers(1, 300000), label="maxBytes")
        self.produce(side, maxBytes)

    def opPump(self, data: st.DataObject) -> None:
        side = data.draw(st.booleans(), label="client side")
        maxBytes = data.draw(st.integers(1, 300000), label="maxBytes")
        self.produce(side, maxBytes)
        n = len(self.wire[side])
        if n:
            cuts = data.draw(st.lists(st.integers(0, n), max_size=5), label="cuts")
            self.deliver(side, n, cuts)

    def opDeliver(self, data: st.DataObject) -> None:
        side = data.draw(st.booleans(), label="client side")
        if not self.wire[side]:
            return
        n = data.draw(st.integers(1, len(self.wire[side])), label="bytes")
        cuts = data.draw(st.lists(st.integers(0, n), max_size=5), label="cuts")
        self.deliver(side, n, cuts)

    baseOperations = [
        "opOpen",
        "opSend",
        "opSend",
        "opWritePart",
        "opClose",
        "opConsume",
        "opConsume",
        "opPing",
        "opProduce",
        "opDeliver",
        "opDeliver",
        "opPump",
        "opPump",
    ]

    # ---------------------------------------------------------- checks

    def handle(self, side: bool, events: list[Event]) -> None:
        """
        Check C{events} that happened at C{side} against the model.
        """
        t = self.test
        peer = not side
        for e in events:
            if isinstance(e, PrefaceReceived):
                t.assertEqual(e.settings, self.settings[peer].toWire())
            elif isinstance(e, ChannelOpened):
                t.assertFalse(self.engines[side].isLocal(e.channel))
                t.assertEqual((e.service, e.metadata), self.services[e.channel])
                t.assertNotIn(e.channel, self.usable[side])
                self.usable[side].append(e.channel)
            elif isinstance(e, DataReceived):
                key = (peer, e.channel)
                t.assertIn(e.channel, self.usable[side])
                t.assertNotIn(e.channel, self.dead[side])
                t.assertNotIn(key, self.finReceived)
                self.incoming[key] += e.data
                if e.endMessage:
                    self.got[key].append(self.incoming.pop(key))
                self.unconsumed[side][e.channel] += len(e.data)
            elif isinstance(e, RemoteHalfClosed):
                key = (peer, e.channel)
                t.assertNotIn(key, self.finReceived)
                t.assertEqual(self.incoming.get(key, b""), b"")
                self.finReceived.add(key)
            elif isinstance(e, LocalHalfClosed):
                t.assertIn(e.channel, self.writeClosed[side])
                t.assertNotIn((side, e.channel), self.finSent)
                self.finSent.add((side, e.channel))
            elif isinstance(e, ChannelClosed):
                t.assertIn((side, e.channel), self.finSent)
                t.assertIn((peer, e.channel), self.finReceived)
                t.assertNotIn(e.channel, self.closed[side])
                self.closed[side].add(e.channel)
                # The engine gave the unconsumed bytes back to the session.
                self.unconsumed[side][e.channel] = 0
            elif isinstance(e, ChannelReset):
                # Only the peer's resets, each reported once.
                t.assertTrue(e.remote)
                t.assertEqual(e.code, ErrorCode.CANCEL)
                t.assertIn(peer, self.resetBy[e.channel])
                t.assertIn(e.channel, self.usable[side])
                t.assertNotIn(e.channel, self.dead[side])
                t.assertNotIn(e.channel, self.closed[side])
                self.dead[side].add(e.channel)
                self.unconsumed[side][e.channel] = 0
            elif isinstance(e, PingAcknowledged):
                t.assertTrue(self.pings[side], "unsolicited ping ack")
                t.assertEqual(e.payload, self.pings[side].pop(0))
            else:
                t.fail(f"unexpected event at {'client' if side else 'server'}: {e!r}")

    def checkInvariants(self) -> None:
        """
        Credit held: what each side holds unconsumed is what its application
        was given and has not consumed, and is within the windows.
        """
        t = self.test
        for side, engine in self.engines.items():
            s = self.settings[side]
            total = 0
            for cid in engine.openChannels():
                held = engine.heldBytes(cid)
                t.assertLessEqual(held, s.channelCredit)
                t.assertEqual(held, self.unconsumed[side][cid])
                total += held
                t.assertGreaterEqual(engine.sendCredit(cid), 0)
            t.assertLessEqual(total, s.sessionCredit)
            t.assertGreaterEqual(engine.sessionSendCredit, 0)
            t.assertFalse(engine.terminated)

    def drain(self) -> None:
        """
        Finish: close every channel, consume everything and move bytes until
        both sides are quiet.
        """
        for _ in range(10000):
            for side in (CLIENT, SERVER):
                for cid in self.writable(side):
                    self.closeWrite(side, cid)
                for cid, n in list(self.unconsumed[side].items()):
                    if n:
                        self.engines[side].consumed(cid, n)
                        self.unconsumed[side][cid] = 0
            moved = False
            for side in (CLIENT, SERVER):
                moved = self.produce(side, 1 << 30) or moved
                if self.wire[side]:
                    self.deliver(side, len(self.wire[side]), [])
                    moved = True
            self.checkInvariants()
            if not moved:
                return
        self.test.fail("the engines never went quiet")

    def checkDelivered(self) -> None:
        """
        Every message arrived whole and in order on its channel, every
        channel closed on both sides, nothing is left.
        """
        t = self.test
        for key in set(self.sent) | set(self.got):
            got = self.got[key]
            if key[1] in self.resetBy:
                # A reset cuts the sequence short, never reorders it.
                t.assertEqual(got, self.sent[key][: len(got)], key)
            else:
                t.assertEqual(got, self.sent[key], key)
        t.assertEqual(
            {k: v for k, v in self.incoming.items() if v and k[1] not in self.resetBy},
            {},
        )
        for side, engine in self.engines.items():
            t.assertEqual(engine.openChannels(), [])
            t.assertFalse(engine.hasDataToSend())
            # No session credit leaked: with everything consumed (or given
            # back when channels closed), the peer may send at least half
            # of this side's session window again.
            t.assertGreaterEqual(
                self.engines[not side].sessionSendCredit,
                self.settings[side].sessionCredit // 2,
            )
            # Every channel either closed cleanly on both sides or was
            # reset; each side ended every channel it knew.
            t.assertEqual(self.closed[side] | self.dead[side], set(self.usable[side]))
            t.assertLessEqual(set(self.services) - set(self.resetBy), self.closed[side])
            t.assertEqual(self.pings[side], [])


class SessionPropertyTests(SynchronousTestCase):
    """
    Property tests over random interleavings of two engines.
    """

    @given(sessionSettings, sessionSettings, st.data())
    @settings(
        max_examples=100,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    def test_randomInterleavings(
        self,
        clientSettings: SessionSettings,
        serverSettings: SessionSettings,
        data: st.DataObject,
    ) -> None:
        """
        Whatever the interleaving of opens (from either side, default and
        named services), messages of any size written in any pieces, closes,
        consumption, pings and partial, split deliveries: every channel
        delivers exactly the messages sent, whole and in order; the bytes
        held unconsumed never exceed the channel or session window; and once
        both sides have closed everything, no channel is left and no session
        credit has leaked.
        """
        runModel(SessionModel(self, clientSettings, serverSettings), data)

    @given(sessionSettings, sessionSettings, st.data())
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    def test_randomInterleavingsWithResets(
        self,
        clientSettings: SessionSettings,
        serverSettings: SessionSettings,
        data: st.DataObject,
    ) -> None:
        """
        With resets from either side mixed in: each peer learns of a reset
        once (unless the channel had already closed there, or was never
        announced), every direction delivers a prefix of what was sent,
        whole messages in order, and after the drain no channel and no
        session credit is left over.
        """
        runModel(SessionModel(self, clientSettings, serverSettings, True), data)


def runModel(model: SessionModel, data: st.DataObject) -> None:
    """
    Drive C{model} through a drawn number of random operations, checking
    the invariants after each, then drain it and check what was delivered.
    """
    steps = data.draw(st.integers(5, 80), label="steps")
    for _ in range(steps):
        op = data.draw(st.sampled_from(model.operations), label="op")
        getattr(model, op)(data)
        model.checkInvariants()
    model.drain()
    model.checkDelivered()
