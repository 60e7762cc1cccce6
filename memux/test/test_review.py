# -*- test-case-name: memux.test.test_review -*-
"""
Review tests: each one pins a behaviour that the spec (doc/spec.rst), the
design rules (DESIGN.md) or Twisted's transport and producer contracts
require of the engine or of the Twisted layer.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from memux._engine import (
    ChannelReset as ChannelResetEvent,
)
from memux._engine import (
    MemuxEngine,
    SessionSettings,
    SessionTerminated,
)
from memux._wire import (
    CreditFrame,
    DataFrame,
    DropFrame,
    ErrorCode,
    GoAwayFrame,
    PingFrame,
    Settings,
)
from memux.error import ChannelReset
from memux.interfaces import IMessageReceiver
from memux.test._fakes import (
    MessageRecorder,
    Recorder,
    RecordingProducer,
    factoryOf,
)
from memux.test._fakes import RawPeer as EngineRawPeer
from memux.testing import connectedSessions


class RawPeer(EngineRawPeer):
    """
    The hand-driven peer of L{memux.test._fakes}, also recording every
    event the engine produces (including those from dataToSend).
    """

    def __init__(self, engine: MemuxEngine, settings: Settings | None = None) -> None:
        super().__init__(engine, settings)
        self.events: list[Any] = list(self.events)

    def send(self, *frames: Any) -> list[Any]:
        """
        Feed frames to the engine; return (and record) the events.
        """
        events = super().send(*frames)
        self.events += events
        return events

    def read(self, maxBytes: int = 1 << 40) -> list[Any]:
        """
        Decode what the engine sends now (prefaces left out).
        """
        frames = super().read(maxBytes)
        self.events += self.engine.popEvents()
        return frames


def transcript(frames: list[Any], channel: int) -> list[str | int]:
    """
    What a receiver learns on C{channel} from C{frames}, in order: each
    complete message summarised as C{"<length>*<first byte>"}, each DROP as
    its count.
    """
    out: list[str | int] = []
    current = b""
    for f in frames:
        if isinstance(f, DataFrame) and f.channel == channel:
            current += f.data
            if f.end or (f.fin and current):
                out.append(f"{len(current)}*{current[:1].decode()}")
                current = b""
        elif isinstance(f, DropFrame) and f.channel == channel:
            out.append(f.count)
    return out


class EngineSchedulingTests(SynchronousTestCase):
    """
    Outbound scheduling in the engine: output size, chunk size, fairness.
    """

    def test_dataToSendBoundsOpensByMaxBytes(self) -> None:
        """
        dataToSend(maxBytes) stops adding DATA once about maxBytes are
        gathered, also for the first chunks that ride on default-service
        openings: twenty new channels with 16 KiB each do not all go out in
        one call of dataToSend(1000).
        """
        engine = MemuxEngine(True)
        raw = RawPeer(engine)
        raw.read()
        for _ in range(20):
            cid = engine.openChannel()
            engine.sendData(cid, b"x" * 16384, True)
        data = engine.dataToSend(1000)
        self.assertLessEqual(len(data), 1000 + 16384 + 64)

    def test_chunkSizeIndependentOfPeerMaxFrameSize(self) -> None:
        """
        A peer announcing a huge MAX_FRAME_SIZE does not make the sender cut
        huge chunks (spec, "Messages and chunks": chunks SHOULD stay small,
        e.g. 16384 bytes, whatever the peer's MAX_FRAME_SIZE): a 100-byte
        message on channel B is not held up behind megabytes of channel A,
        and dataToSend(65536) returns about 64 KiB, not 4 MiB.
        """
        engine = MemuxEngine(True)
        big = 1 << 40
        raw = RawPeer(
            engine,
            Settings(
                maxFrameSize=(1 << 24) - 1,
                initialChannelCredit=big,
                initialSessionCredit=big,
            ),
        )
        a = engine.openChannel(b"a")
        b = engine.openChannel(b"b")
        raw.read()
        engine.sendData(a, b"A" * (4 << 20), True)
        engine.sendData(b, b"B" * 100, True)
        data = engine.dataToSend(65536)
        frames = raw.decoder.receive(data)
        self.assertLessEqual(len(data), 2 * 65536)
        # One chunk of A (at most the local chunk size, 64 KiB) may go
        # first; B's message follows in the next turn, not after 4 MiB.
        data = engine.dataToSend(65536)
        frames += raw.decoder.receive(data)
        self.assertLessEqual(len(data), 2 * 65536)
        self.assertIn(DataFrame(b, b"B" * 100, end=True), frames)

    def test_scarceSessionCreditSharedRoundRobin(self) -> None:
        """
        When session credit comes back in small steps (a peer granting per
        message consumed), the channels waiting for it take turns: none is
        starved while another keeps getting every byte.
        """
        engine = MemuxEngine(True)
        raw = RawPeer(engine, Settings(initialChannelCredit=1 << 30))
        channels = [engine.openChannel() for _ in range(3)]
        for cid in channels:
            engine.sendData(cid, b"x" * (1 << 20), True)
        raw.read()  # spends the initial session credit (262144)
        self.assertEqual(engine.sessionSendCredit, 0)
        limit = 262144
        got: dict[int, int] = {cid: 0 for cid in channels}
        for _ in range(30):
            limit += 1000
            raw.send(CreditFrame(0, limit))
            for f in raw.read():
                if isinstance(f, DataFrame) and f.data:
                    got[f.channel] += len(f.data)
        self.assertEqual(sum(got.values()), 30 * 1000)
        for cid in channels:
            self.assertGreater(got[cid], 0, f"channel {cid} starved: {got}")


class EngineLossyTests(SynchronousTestCase):
    """
    Load shedding: DROP placement.
    """

    def test_dropNotSentInsideMessage(self) -> None:
        """
        A DROP is sent only between messages, never while a message is
        partly sent (spec, "Load shedding and DROP"): messages discarded
        behind a message that has begun on the wire are reported after that
        message's last chunk, so the receiver learns of them where they
        were lost.
        """
        engine = MemuxEngine(True)
        raw = RawPeer(engine)
        cid = engine.openChannel(b"lossy", lossy=True)
        first = b"a" * 100000  # more than the initial channel credit
        engine.sendData(cid, first, True)
        engine.sendData(cid, b"b" * 10, True)
        engine.sendData(cid, b"c" * 10, True)
        frames = raw.read()
        self.assertEqual(engine.sendCredit(cid), 0)
        self.assertEqual(engine.discardQueuedMessages(cid), 2)
        raw.send(CreditFrame(cid, 1 << 20))
        frames += raw.read()
        self.assertEqual(transcript(frames, cid), ["100000*a", 2])


class EngineGoAwayTests(SynchronousTestCase):
    """
    GOAWAY and queued opens.
    """

    def test_queuedOpenNotSentAfterGoAwayWithLargeLastChannel(self) -> None:
        """
        After receiving GOAWAY a side opens no new channel: an open still
        queued (not yet on the wire) is failed as refused and never sent,
        even when the GOAWAY's last channel is above its id (a first GOAWAY
        announcing a shutdown with a generous last channel, spec "GOAWAY and
        graceful shutdown").
        """
        engine = MemuxEngine(True)
        raw = RawPeer(engine)
        raw.read()
        cid = engine.openChannel(b"svc")
        engine.sendData(cid, b"request", True)
        raw.send(GoAwayFrame(1001, ErrorCode.NO_ERROR, "shutting down"))
        frames = raw.read()
        self.assertEqual(
            [f for f in frames if getattr(f, "channel", 0) == cid], [], frames
        )
        resets = [e for e in raw.events if isinstance(e, ChannelResetEvent)]
        self.assertEqual(
            [(e.channel, e.code) for e in resets], [(cid, ErrorCode.REFUSED)]
        )


class EngineOutputBoundTests(SynchronousTestCase):
    """
    What a peer that does not read can make us queue.
    """

    def test_pingAnswersBounded(self) -> None:
        """
        A peer that floods PINGs and never reads cannot make the engine hold
        an unbounded queue of answers (spec, "PING" and "Resource bounds":
        MUST bound, else end the session with EXCESSIVE_LOAD): after 200000
        PINGs either the session ended with EXCESSIVE_LOAD or less than
        1 MiB of answers is queued.
        """
        engine = MemuxEngine(False)
        raw = RawPeer(engine)
        ping = PingFrame(b"12345678").encode()
        for _ in range(20):
            raw.events += engine.receiveData(ping * 10000)
        terminated = [e for e in raw.events if isinstance(e, SessionTerminated)]
        if terminated:
            self.assertEqual(terminated[0].code, ErrorCode.EXCESSIVE_LOAD)
        else:
            self.assertLess(len(engine.dataToSend(1 << 40)), 1 << 20)


@implementer(IHalfCloseableProtocol, IMessageReceiver)
class PausingHalfCloser(MessageRecorder):
    """
    A message receiver that can half-close, and pauses its transport in
    messageReceived (it wants one message at a time).
    """

    def messageReceived(self, message: bytes) -> None:
        super().messageReceived(message)
        cast(Any, self.transport).pauseProducing()

    def readConnectionLost(self) -> None:
        self.events.append("readLost")

    def writeConnectionLost(self) -> None:
        self.events.append("writeLost")


@implementer(IHalfCloseableProtocol)
class AbortOnReadLost(Recorder):
    """
    Aborts its channel when the peer half-closes.
    """

    def readConnectionLost(self) -> None:
        self.events.append("readLost")
        cast(Any, self.transport).abortConnection()
        self.events.append("aborted")

    def writeConnectionLost(self) -> None:
        self.events.append("writeLost")


class TwistedLayerTestCase(SynchronousTestCase):
    """
    A client and a server session in memory; the server's channel protocols
    are kept in C{self.served}.
    """

    serverSettings: SessionSettings | None = None

    def setUp(self) -> None:
        self.clock = Clock()
        self.served: list[Any] = []
        self.services = {
            b"record": factoryOf(self.served, Recorder),
            b"messages": factoryOf(self.served, MessageRecorder),
            b"pausing": factoryOf(self.served, PausingHalfCloser),
            b"abortOnReadLost": factoryOf(self.served, AbortOnReadLost),
        }
        self.client, self.server, self.pump = connectedSessions(
            self.services, serverSettings=self.serverSettings, clock=self.clock
        )

    def open(self, service: bytes, cls: type = Recorder, **kw: Any) -> Any:
        return self.successResultOf(
            self.client.openChannel(service, factoryOf([], cls), **kw)
        )


class StrictProducerTests(TwistedLayerTestCase):
    """
    A paused channel transport calls nothing on its protocol until resumed.
    """

    def test_pauseInLastMessageDefersReadConnectionLost(self) -> None:
        """
        A FIN that ends a message in progress delivers that message; if the
        protocol pauses its transport in messageReceived, readConnectionLost
        waits for resumeProducing.
        """
        proto = self.open(b"pausing")
        proto.transport.write(b"unterminated")
        proto.transport.loseWriteConnection()
        self.pump.flush()
        server = self.served[0]
        self.assertEqual(server.messages, [b"unterminated"])
        self.assertEqual(server.events, ["made", "message"])
        server.transport.resumeProducing()
        self.pump.flush()
        self.assertEqual(server.events, ["made", "message", "readLost"])

    def test_resetWhilePausedWaitsForResume(self) -> None:
        """
        A RESET that arrives while the channel is paused calls nothing on
        the protocol (no connectionLost while paused); connectionLost with
        ChannelReset comes on resumeProducing.
        """
        proto = self.open(b"messages")
        self.pump.flush()
        server = self.served[0]
        server.transport.pauseProducing()
        proto.transport.writeMessage(b"held")
        self.pump.flush()
        proto.transport.abortConnection()
        self.pump.flush()
        self.assertEqual(server.events, ["made"])
        self.assertIsNone(server.lost)
        server.transport.resumeProducing()
        self.pump.flush()
        self.assertEqual(server.events[-1], "lost")
        self.assertIsNotNone(server.lost)
        assert server.lost is not None
        server.lost.trap(ChannelReset)

    def test_resetKeepsCompleteMessagesHeldWhilePaused(self) -> None:
        """
        RESET discards only a partial message (spec, "Messages and chunks"
        and "Channel states"): complete messages that arrived before it and
        were held because the channel was paused are still delivered on
        resumeProducing, before connectionLost with ChannelReset.
        """
        proto = self.open(b"messages")
        self.pump.flush()
        server = self.served[0]
        server.transport.pauseProducing()
        proto.transport.writeMessage(b"held")
        proto.transport.write(b"partial")
        self.pump.flush()
        proto.transport.abortConnection()
        self.pump.flush()
        server.transport.resumeProducing()
        self.pump.flush()
        self.assertEqual(server.messages, [b"held"])
        self.assertEqual(server.events, ["made", "message", "lost"])


class ReentrancyTests(TwistedLayerTestCase):
    """
    Protocols that act on their transport from inside callbacks.
    """

    def test_abortInReadConnectionLost(self) -> None:
        """
        A protocol that calls abortConnection from readConnectionLost gets
        connectionLost once, with ConnectionAborted (its channel was reset,
        the peer sees CANCEL), and not before abortConnection has returned.
        """
        proto = self.open(b"abortOnReadLost")
        proto.transport.write(b"request")
        proto.transport.loseWriteConnection()
        self.pump.flush()
        server = self.served[0]
        self.assertEqual(server.events[:3], ["made", "data", "readLost"])
        self.assertEqual(server.events[3], "aborted")
        self.assertIsNotNone(server.lost)
        assert server.lost is not None
        server.lost.trap(ConnectionAborted)
        self.assertIsNotNone(proto.lost)
        assert proto.lost is not None
        proto.lost.trap(ChannelReset)
        self.assertEqual(proto.lost.value.code, ErrorCode.CANCEL)


class OpenChannelFailureTests(TwistedLayerTestCase):
    """
    openChannel when the application's factory or protocol fails.
    """

    def test_buildProtocolRaises(self) -> None:
        """
        If the factory's buildProtocol raises, openChannel returns a failed
        Deferred and leaves no channel open in the engine (no OPEN goes out
        for a channel nobody serves).
        """

        class Broken(Factory):
            def buildProtocol(self, addr: Any) -> Protocol:
                raise RuntimeError("factory broke")

        d = self.client.openChannel(b"record", Broken())
        self.failureResultOf(d, RuntimeError)
        self.assertEqual(self.client.engine.openChannels(), [])
        self.pump.flush()
        self.assertEqual(self.served, [])

    def test_connectionMadeRaises(self) -> None:
        """
        If the new protocol's connectionMade raises, openChannel returns a
        failed Deferred (it does not raise) and the channel is not left
        open in the engine or in the session's transports.
        """

        class Broken(Recorder):
            def connectionMade(self) -> None:
                raise RuntimeError("connectionMade broke")

        d = self.client.openChannel(b"record", Factory.forProtocol(Broken))
        self.failureResultOf(d, RuntimeError)
        self.pump.flush()
        self.assertEqual(self.client.engine.openChannels(), [])
        self.assertEqual(self.client.counters()["channelsOpen"], 0)


class LossyLayerTests(TwistedLayerTestCase):
    """
    Load shedding in the Twisted layer.
    """

    def test_largeMessageNotShedWithoutLoad(self) -> None:
        """
        On a lossy channel whose peer reads promptly and has credit to
        spare, a single message larger than the write high-water mark is
        sent, not discarded: shedding is for load, not for size.
        """
        proto = self.open(b"messages", lossy=True)
        self.pump.flush()
        message = b"m" * 100000
        proto.transport.writeMessage(message)
        self.pump.flush()
        self.assertEqual([len(m) for m in self.served[0].messages], [100000])


class ChannelCountTests(TwistedLayerTestCase):
    """
    Channel-count credit as the peer's channels close.
    """

    serverSettings = SessionSettings(maxChannels=100)

    def test_maxChannelsConcurrentKeptAvailable(self) -> None:
        """
        maxChannels is the number of channels the peer may have open at
        once (DESIGN: "at least 1024 concurrent channels" by default): with
        100 open and one closed, the peer may open another at once (the
        101st channel is served while 99 others are still open).
        """
        protos = [self.open(b"record") for _ in range(100)]
        for p in protos:
            p.transport.write(b"hello")
        self.pump.flush()
        self.assertEqual(len(self.served), 100)
        protos[0].transport.loseConnection()
        self.pump.flush()
        late = self.open(b"record")
        late.transport.write(b"late")
        self.pump.flush()
        self.assertEqual(len(self.served), 101)
        self.assertEqual(b"".join(self.served[100].data), b"late")


class ReassemblyMemoryTests(TwistedLayerTestCase):
    """
    The session credit bounds what a receiver holds, whatever the peer does.
    """

    serverSettings = SessionSettings(
        channelCredit=65536, sessionCredit=1 << 20, maxMessageSize=16 << 20
    )

    def test_partialMessagesBoundedBySessionCredit(self) -> None:
        """
        Partial messages being reassembled for IMessageReceivers count
        against the session credit until they are delivered: a peer that
        starts large messages on many channels and never ends them cannot
        make the receiver hold more than the session credit (1 MiB here)
        in all.
        """
        protos = [self.open(b"messages") for _ in range(8)]
        written = 1 << 20
        for p in protos:
            p.transport.write(b"p" * written)  # never ended
        engine = self.server.engine
        for _ in range(20):
            self.pump.flush()
            # Held unconsumed plus held in reassembly, across all channels.
            self.assertLessEqual(engine._sessionRecv.held, 1 << 20)
            self.assertLessEqual(
                sum(len(b"".join(p._partial)) for p in self._serverTransports()),
                1 << 20,
            )
        # No deadlock: channels whose partial messages filled the session
        # were reset (EXCESSIVE_LOAD) so the others could go on.
        reset = [p for p in protos if p.lost is not None]
        self.assertTrue(reset)
        for p in reset:
            assert p.lost is not None
            p.lost.trap(ChannelReset)
            self.assertEqual(p.lost.value.code, ErrorCode.EXCESSIVE_LOAD)

    def _serverTransports(self) -> list[Any]:
        return [p.transport for p in self.served if p.transport is not None]


@implementer(IHalfCloseableProtocol)
class HalfRecorder(Recorder):
    """
    Records half-closes; keeps its own half open until told otherwise.
    """

    def readConnectionLost(self) -> None:
        self.events.append("readLost")

    def writeConnectionLost(self) -> None:
        self.events.append("writeLost")


class LoseConnectionCompletionTests(TwistedLayerTestCase):
    """
    loseConnection always ends in connectionLost, whatever state the
    channel's halves are in.
    """

    def test_loseConnectionAfterLoseWriteConnection(self) -> None:
        """
        loseWriteConnection then loseConnection (as with TCP: shutdown the
        write side, later close) ends the channel locally: connectionLost
        (ConnectionDone) follows though the peer keeps its half open.  As
        with TCP, the peer learns only when it writes again: that data is
        answered with RESET NO_ERROR, and then both engines forget the
        channel.
        """
        self.services[b"half"] = factoryOf(self.served, HalfRecorder)
        proto = self.open(b"half", HalfRecorder)
        proto.transport.write(b"request")
        proto.transport.loseWriteConnection()
        self.pump.flush()
        self.assertEqual(self.served[0].events, ["made", "data", "readLost"])
        proto.transport.loseConnection()
        self.pump.flush()
        self.assertIsNotNone(proto.lost)
        assert proto.lost is not None
        proto.lost.trap(ConnectionDone)
        self.assertEqual(self.client.counters()["channelsOpen"], 0)
        server = self.served[0]
        self.assertIsNone(server.lost)  # its half is still open
        server.transport.write(b"late reply")
        self.pump.flush()
        assert server.lost is not None
        server.lost.trap(ChannelReset)
        self.assertEqual(server.lost.value.code, ErrorCode.NO_ERROR)
        self.assertEqual(self.client.engine.openChannels(), [])
        self.assertEqual(self.server.engine.openChannels(), [])

    def test_loseConnectionWhilePeerStillSending(self) -> None:
        """
        Data the peer sent before it saw our close, arriving after
        loseConnection but before our FIN has gone out, is discarded and
        does not stop the close: the FIN still goes out (with what was
        written before it), connectionLost(ConnectionDone) follows, and
        both sessions forget the channel.  (The engine used to drop the
        channel silently here, so the protocol waited forever.)
        """
        proto = self.open(b"record")
        self.pump.flush()
        server = self.served[0]
        server.transport.write(b"in flight")
        self.clock.advance(0)  # the server's DATA is on the wire
        proto.transport.write(b"last words")
        proto.transport.loseConnection()
        # The DATA arrives before the client's flush sends its FIN.
        self.pump.pump(advanceClock=False)
        self.pump.flush()
        self.assertEqual(proto.received, b"")
        self.assertIsNotNone(proto.lost)
        assert proto.lost is not None
        proto.lost.trap(ConnectionDone)
        self.assertEqual(server.received, b"last words")
        self.assertIsNotNone(server.lost)
        self.assertEqual(self.client.engine.openChannels(), [])
        self.assertEqual(self.server.engine.openChannels(), [])

    def closedWhilePaused(self) -> tuple[Any, Any]:
        """
        Open a channel, pause the server's end, write to it and close it
        from the client: the data, FIN and close are held at the server.
        Return the client's and the server's protocols.
        """
        proto = self.open(b"record")
        self.pump.flush()
        server = self.served[0]
        server.transport.pauseProducing()
        proto.transport.write(b"held")
        proto.transport.loseConnection()
        self.pump.flush()
        return proto, server

    def test_loseConnectionWhilePausedAfterPeerClosed(self) -> None:
        """
        A paused protocol whose peer has closed the channel (data held, FIN
        and close already in) and that then calls loseConnection gets
        connectionLost(ConnectionDone) (once, not from inside the call),
        and the session forgets the channel.
        """
        proto, server = self.closedWhilePaused()
        self.assertIsNotNone(proto.lost)
        assert proto.lost is not None
        proto.lost.trap(ConnectionDone)
        self.assertEqual(server.events, ["made"])
        server.transport.loseConnection()
        self.assertIsNone(server.lost)
        self.pump.flush()
        self.assertIsNotNone(server.lost)
        assert server.lost is not None
        server.lost.trap(ConnectionDone)
        self.assertEqual(server.events, ["made", "lost"])
        self.assertEqual(self.server.counters()["channelsOpen"], 0)

    def test_goAwayDrainsAfterPausedChannelClosed(self) -> None:
        """
        goAway's graceful drain completes once the last channel is closed,
        including a channel that was paused when the peer closed it and
        that the application then closed itself.
        """
        proto, server = self.closedWhilePaused()
        done = self.server.goAway()
        server.transport.resumeProducing()
        server.transport.loseConnection()
        self.pump.flush()
        self.successResultOf(done)


class LossyBackpressureTests(TwistedLayerTestCase):
    """
    Lossy channels still bound what they buffer.
    """

    def test_lossyProducerPausedWhenMessageCannotBeShed(self) -> None:
        """
        On a lossy channel whose peer does not read, a producer writing one
        long message (write() without endMessage: nothing whole to shed) is
        paused like on any other channel, so the send queue stays bounded.
        """
        proto = self.open(b"record", lossy=True)
        self.pump.flush()
        server = self.served[0]
        server.transport.pauseProducing()
        producer = RecordingProducer()
        proto.transport.registerProducer(producer, True)
        chunk = b"s" * 65536
        for _ in range(200):
            if producer.paused:
                break
            proto.transport.write(chunk)
            self.pump.flush()
        self.assertTrue(producer.paused)
        queued = self.client.engine.queuedBytes(proto.transport.channel)
        self.assertLess(queued, 2 * 1024 * 1024)


class PausedReassemblyTests(TwistedLayerTestCase):
    """
    Coverage: FIN in the middle of a message while the reader is paused.
    """

    def test_finMidMessageWhilePaused(self) -> None:
        """
        A FIN that arrives mid-message while the reader is paused calls
        nothing; on resumeProducing the bytes held are delivered as one
        complete message, then the channel ends with ConnectionDone.
        """
        proto = self.open(b"messages")
        self.pump.flush()
        server = self.served[0]
        server.transport.pauseProducing()
        proto.transport.write(b"first ")
        self.pump.flush()
        proto.transport.write(b"second")
        proto.transport.loseConnection()
        self.pump.flush()
        self.assertEqual(server.events, ["made"])
        server.transport.resumeProducing()
        self.pump.flush()
        self.assertEqual(server.messages, [b"first second"])
        self.assertEqual(server.events, ["made", "message", "lost"])
        self.assertIsNotNone(server.lost)
        assert server.lost is not None
        server.lost.trap(ConnectionDone)
