# -*- test-case-name: memux.test.test_helpers -*-
"""
In-memory fakes shared by memux's test modules: hand-driven peers,
transports, recording protocols and the data they exchange.  Helpers that
need files, subprocesses or the real reactor are in L{memux.test._helpers}.
Test modules import these from here, never from each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump
from zope.interface import implementer

from memux import IMessageReceiver, MemuxProtocol
from memux._engine import Event, MemuxEngine
from memux._wire import Frame, FrameDecoder, Preface, Settings, encodePreface

# ------------------------------------------------------------ engines


#: The largest frame size any peer may announce: decoders in the tests
#: accept whatever an engine sends.
ANY_FRAME_SIZE = (1 << 24) - 1


class RawPeer:
    """
    A hand-driven peer for one engine: it sends crafted frames (after a
    preface) and decodes what the engine sends back.
    """

    def __init__(
        self, engine: MemuxEngine, peerSettings: Settings | None = None
    ) -> None:
        self.engine = engine
        self.decoder = FrameDecoder(ANY_FRAME_SIZE)
        self.events = engine.receiveData(encodePreface(peerSettings or Settings()))

    def send(self, *frames: Frame) -> list[Event]:
        """
        Deliver C{frames} to the engine in one piece; return its events.
        """
        return self.engine.receiveData(b"".join(f.encode() for f in frames))

    def read(self, maxBytes: int = 1 << 30) -> list[Frame]:
        """
        Everything the engine has to send now (up to about C{maxBytes}),
        decoded, without its preface.
        """
        items = self.decoder.receive(self.engine.dataToSend(maxBytes))
        return [i for i in items if not isinstance(i, Preface)]


def messageBody(tag: str, size: int) -> bytes:
    """
    A message of C{size} bytes whose content says which message it is, so
    misordered or mixed-up data shows.
    """
    unit = f"<{tag}>".encode()
    return (unit * (size // len(unit) + 1))[:size]


def splitAt(data: bytes, cuts: list[int]) -> list[bytes]:
    """
    Split C{data} at the given positions (clamped, sorted, repeats allowed).
    """
    points = sorted(min(max(c, 0), len(data)) for c in cuts)
    pieces = []
    last = 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


# ------------------------------------------------------------ protocols


class Recorder(Protocol):
    """
    Records what happens to it.
    """

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.made = False
        self.lost: Failure | None = None
        self.events: list[str] = []

    def connectionMade(self) -> None:
        self.made = True
        self.events.append("made")

    def dataReceived(self, data: bytes) -> None:
        self.data.append(data)
        self.events.append("data")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason
        self.events.append("lost")

    @property
    def received(self) -> bytes:
        return b"".join(self.data)


@implementer(IMessageReceiver)
class MessageRecorder(Recorder):
    """
    Records whole messages.
    """

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[bytes] = []

    def messageReceived(self, message: bytes) -> None:
        self.messages.append(message)
        self.events.append("message")


@implementer(IPushProducer)
class RecordingProducer:
    """
    A push producer that records pause/resume/stop calls.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.paused = False
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


def factoryOf(instances: list[Any], cls: Callable[[], Any] = Recorder) -> Factory:
    """
    A factory that builds ``cls`` (a class, or any callable returning a
    protocol) and keeps what it built in ``instances``.
    """

    class RecordingFactory(Factory):
        def buildProtocol(self, addr: Any) -> Protocol:
            p = cls()
            p.factory = self
            instances.append(p)
            return p  # type: ignore[no-any-return]

    return RecordingFactory()


class Collector(Protocol):
    """
    A channel (or connection) protocol that keeps what it receives.

    @ivar received: everything received so far.
    @ivar lost: fires with the reason the connection ended (the exception).
    """

    def __init__(self) -> None:
        self.received = b""
        self.lost: Deferred[BaseException] = Deferred()
        self._waiting: list[tuple[int, Deferred[bytes]]] = []

    def dataReceived(self, data: bytes) -> None:
        """
        Keep C{data}; fire the waiters it satisfies.
        """
        self.received += data
        waiting, self._waiting = self._waiting, []
        for size, d in waiting:
            if len(self.received) >= size:
                d.callback(self.received)
            else:
                self._waiting.append((size, d))

    def receivedAtLeast(self, size: int) -> Deferred[bytes]:
        """
        Fire with everything received once it is at least C{size} bytes.
        """
        d: Deferred[bytes] = Deferred()
        self._waiting.append((size, d))
        self.dataReceived(b"")
        return d

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Fire L{lost}.
        """
        assert reason.value is not None
        self.lost.callback(reason.value)


@implementer(IMessageReceiver)
class MessageCollector(Collector):
    """
    A L{Collector} of whole messages.
    """

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[bytes] = []

    def messageReceived(self, message: bytes) -> None:
        """
        Keep C{message}, counting it as received bytes too.
        """
        self.messages.append(message)
        self.dataReceived(message)


# ------------------------------------------------------------ transports


def reactorTurn(clock: Clock) -> int:
    """
    Run the calls due on C{clock} now, as one turn of a real reactor does:
    not those they schedule for later turns (which C{Clock.advance(0)}
    would run too).  Return how many ran.
    """
    due = [c for c in clock.calls if c.getTime() <= clock.seconds()]
    for call in due:
        if call.active():
            clock.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)
    return len(due)


#: A peer's settings granting all the credit anyone could want.
GREEDY = Settings(initialChannelCredit=1 << 40, initialSessionCredit=1 << 40)


class TCPLikeTransport(StringTransport):
    """
    A L{StringTransport} with the send limit of Twisted's TCP transports.
    """

    SEND_LIMIT = 128 * 1024


class PausingTransport(TCPLikeTransport):
    """
    A L{TCPLikeTransport} that, as Twisted's TCP does, pauses its streaming
    producer once more than C{bufferSize} bytes wait, and resumes it once
    they have gone (L{send}).
    """

    bufferSize = 64 * 1024

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.value()) > self.bufferSize and self.producer is not None:
            self.producer.pauseProducing()

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def send(self) -> int:
        """
        Send all that waits; resume the producer; return how many bytes
        went.
        """
        sent = len(self.value())
        self.clear()
        assert self.producer is not None
        self.producer.resumeProducing()
        return sent


class PeerOnTransport:
    """
    A server session on C{transport} (a L{StringTransport} by default),
    after the peer's C{preface} (by default one granting all the credit it
    could want); L{read} decodes what the session writes.
    """

    def __init__(
        self,
        session: MemuxProtocol,
        clock: Clock,
        transport: StringTransport | None = None,
        preface: Settings = GREEDY,
    ) -> None:
        self.clock = clock
        self.session = session
        self.transport = transport if transport is not None else StringTransport()
        self.session.makeConnection(self.transport)
        self.session.dataReceived(encodePreface(preface))
        self.clock.advance(0)
        self.decoder = FrameDecoder(1 << 24)
        self.read()

    def read(self) -> list[Any]:
        """
        The frames the session wrote since the last call.
        """
        data = self.transport.value()
        self.transport.clear()
        return [f for f in self.decoder.receive(data) if not isinstance(f, Preface)]


# ------------------------------------------------------------ TCP, in memory


class FakeTCP(StringTransport):
    """
    A TCP connection's transport in memory that records how it was ended:
    C{calls} lists C{loseWriteConnection} (a FIN, write side only),
    C{loseConnection} (a FIN) and C{abortConnection} (an RST) in order.
    As with TCP, C{connectionLost} follows a close or an abort on the next
    turn of the clock (C{ConnectionAborted} if it was aborted meanwhile).
    """

    def __init__(self, clock: Clock) -> None:
        super().__init__(lenient=True)
        self.clock = clock
        self.calls: list[str] = []
        self.protocol: Any = None
        self._ending: Exception | None = None

    def loseWriteConnection(self) -> None:
        self.calls.append("loseWriteConnection")

    def loseConnection(self) -> None:
        self.calls.append("loseConnection")
        self._end(ConnectionDone())

    def abortConnection(self) -> None:
        self.calls.append("abortConnection")
        self._end(ConnectionAborted())

    def unregisterProducer(self) -> None:
        # TCP's is lenient: unregistering nothing is allowed.
        self.producer = None

    def peerFin(self) -> None:
        """
        The other end sent FIN.
        """
        cast(IHalfCloseableProtocol, self.protocol).readConnectionLost()

    def peerReset(self) -> None:
        """
        The other end sent RST.
        """
        self._ending = ConnectionLost()
        self._lost()

    def _end(self, error: Exception) -> None:
        self.disconnecting = True
        if self._ending is None:
            self.clock.callLater(0, self._lost)
        if self._ending is None or isinstance(error, ConnectionAborted):
            self._ending = error

    def _lost(self) -> None:
        if not self.disconnected:
            self.disconnected = True
            assert self._ending is not None
            self.protocol.connectionLost(Failure(self._ending))


@implementer(IHalfCloseableProtocol)
class EndingRecorder(Protocol):
    """
    A channel's protocol that records what it receives, each FIN (as
    C{"FIN"} in C{events}) and how the channel ended (C{reason}).  (Unlike
    L{Recorder}, it is half-closeable.)
    """

    def __init__(self) -> None:
        self.data = b""
        self.events: list[str] = []
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def readConnectionLost(self) -> None:
        self.events.append("FIN")

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.events.append("lost")
        self.reason = reason


def loseSessions(pump: IOPump) -> None:
    """
    The connection under the two sessions of C{pump} dies (a reset, a
    crashed peer): both get C{connectionLost(ConnectionLost)}.
    """
    for transport in (pump.clientIO, pump.serverIO):
        transport.disconnectReason = ConnectionLost()
    pump.clientIO.loseConnection()
    pump.flush()
