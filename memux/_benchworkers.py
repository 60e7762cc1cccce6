# -*- test-case-name: memux.test.test_bench -*-
"""
The child-process side of ``python -m memux.bench``: one server or one
client of one benchmark run, over loopback TCP.

    python -m memux._benchworkers server ROLE PARAMS
    python -m memux._benchworkers client ROLE PARAMS PORT

``ROLE`` names a scenario and what runs it (``bulk/memux``, ``bulk/tcp``,
...; see `ROLES`), ``PARAMS`` is a JSON object of the scenario's sizes and
the memux settings (``clientSettings``, ``serverSettings``).

The server listens on a free port of 127.0.0.1, prints ``{"port": N}`` on
a line of its own, and serves until SIGTERM (or until its parent goes
away).  The client connects, runs the workload, prints one JSON object of
results and exits.  Every timing is taken in the client, from its first
write to the receiver's acknowledgement of the last byte (or the last
reply), so no clock is compared across processes.

Writers respect backpressure in memux and in the baselines alike: they
register a streaming producer and stop writing while it is paused.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from twisted.internet import defer, task, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
)
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IListeningPort,
    IPushProducer,
    IReactorCore,
    IReactorTCP,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol, connectionDone
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from memux._engine import SessionSettings
from memux._wire import OpenFrame, encodePreface
from memux.interfaces import IChunkReceiver, IMessageReceiver
from memux.protocol import (
    ChannelTransport,
    MemuxProtocol,
    MultiplexingFactory,
    connectSession,
)

__all__ = ["ROLES", "main", "rssBytes"]

Params = dict[str, Any]
Result = dict[str, Any]

LOOPBACK = "127.0.0.1"


class Reactor(IReactorTCP, IReactorTime, IReactorCore):
    """
    The reactor interfaces the workers use (for typing only).
    """


def rssBytes(pid: int | str = "self", field: str = "VmRSS") -> int:
    """
    A process's resident set size in bytes (this one's, by default), or
    another memory ``field`` of its /proc/PID/status such as ``VmHWM``
    (Linux); -1 where that is not available.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def settledRss() -> int:
    """
    The resident set size after a full garbage collection.
    """
    gc.collect()
    return rssBytes()


# ---------------------------------------------------------------- helpers


class OneFactory(Factory):
    """
    A factory that builds its protocols by calling ``make``.
    """

    def __init__(self, make: Callable[[], Protocol]) -> None:
        self.make = make

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        """
        Build one protocol.
        """
        protocol = self.make()
        protocol.factory = self
        return protocol


@implementer(IPushProducer)
class Sender:
    """
    Write ``count`` chunks through ``write`` (for ever, with ``count``
    None) while ``consumer`` lets us: a streaming producer that stops
    writing as soon as it is paused.  The chunks are ``chunk`` over and
    over, or each of a list of chunks in turn.
    """

    def __init__(
        self,
        consumer: Any,
        write: Callable[[bytes], object],
        chunk: bytes | list[bytes],
        count: int | None,
    ) -> None:
        self.consumer = cast(IConsumer, consumer)
        self.write = write
        self.chunks = [chunk] if isinstance(chunk, bytes) else chunk
        self.next = 0
        self.remaining = count
        self.sent = 0
        self.paused = False
        self.stopped = False
        self._writing = False

    def start(self) -> None:
        """
        Register with the consumer and start writing.
        """
        self.consumer.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        """
        Stop writing until resumed.
        """
        self.paused = True

    def resumeProducing(self) -> None:
        """
        Write until paused or done.
        """
        self.paused = False
        if self._writing or self.stopped:
            return
        self._writing = True
        chunks, write, size = self.chunks, self.write, len(self.chunks[0])
        sources = len(chunks)
        try:
            while self.remaining != 0 and not self.paused and not self.stopped:
                if self.remaining is not None:
                    self.remaining -= 1
                write(chunks[self.next])
                self.next = (self.next + 1) % sources
                self.sent += size
        finally:
            self._writing = False
        if self.remaining == 0 and not self.stopped:
            self.stopped = True
            self.consumer.unregisterProducer()

    def stopProducing(self) -> None:
        """
        Write no more.
        """
        self.stopped = True


class LineReader(Protocol):
    """
    Collect bytes until a newline; fire ``line`` with the JSON object on
    that line and the time it arrived.
    """

    def __init__(self) -> None:
        self.buffer = b""
        self.line: defer.Deferred[tuple[float, Result]] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        """
        Look for the end of the line.
        """
        if self.line.called:
            return
        self.buffer += data
        if b"\n" in self.buffer:
            now = time.perf_counter()
            text, _, self.buffer = self.buffer.partition(b"\n")
            self.line.callback((now, json.loads(text)))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        A connection that ends before its line is an error.
        """
        if not self.line.called:
            self.line.errback(reason)


def replyLine(transport: Any, report: Result) -> None:
    """
    Write ``report`` as one JSON line.
    """
    transport.write(json.dumps(report).encode() + b"\n")


def clientSettings(params: Params) -> SessionSettings:
    """
    The client's memux settings for this run.
    """
    return SessionSettings(**params.get("clientSettings", {}))


def serverSettings(params: Params) -> SessionSettings:
    """
    The server's memux settings for this run.
    """
    return SessionSettings(**params.get("serverSettings", {}))


def tune(transport: object, params: Params) -> None:
    """
    With the ``nodelay`` parameter, turn Nagle's algorithm off on a TCP
    connection (before anything is sent: Twisted writes on the next
    reactor turn).
    """
    if params.get("nodelay"):
        cast(ITCPTransport, transport).setTcpNoDelay(True)


class NoDelayServer(tcp.Server):
    """
    An accepted TCP connection with Nagle's algorithm off.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setTcpNoDelay(True)


class NoDelayPort(tcp.Port):
    """
    A listening port whose connections have Nagle's algorithm off.
    """

    transport = NoDelayServer


async def session(reactor: Reactor, params: Params, port: int) -> MemuxProtocol:
    """
    Connect a memux session to the server.
    """
    endpoint = TCP4ClientEndpoint(reactor, LOOPBACK, port)
    s = await connectSession(endpoint, settings=clientSettings(params))
    tune(s.transport, params)
    return s


async def connectTcp(
    reactor: Reactor, params: Params, port: int, protocol: Protocol
) -> None:
    """
    Connect ``protocol`` to the server over plain TCP.
    """
    await connectProtocol(TCP4ClientEndpoint(reactor, LOOPBACK, port), protocol)
    tune(protocol.transport, params)


async def channel(session: MemuxProtocol, service: bytes, protocol: Protocol) -> None:
    """
    Open a channel for ``service`` on ``session`` and connect ``protocol``.
    """
    await session.openChannel(service, OneFactory(lambda: protocol))


def percentile(values: list[float], fraction: float) -> float:
    """
    The ``fraction`` percentile of ``values`` (nearest rank).
    """
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


# ---------------------------------------------------------------- receivers


class Sink(Protocol):
    """
    Count bytes; once ``expected`` have arrived, reply with one line (the
    acknowledgement the sender's clock stops on).
    """

    def __init__(self, expected: int | None) -> None:
        self.expected = expected
        self.received = 0

    def dataReceived(self, data: bytes) -> None:
        """
        Count, and acknowledge the last byte.
        """
        self.received += len(data)
        if self.expected is not None and self.received >= self.expected:
            self.expected = None
            replyLine(self.transport, {"received": self.received})


@implementer(IMessageReceiver)
class MessageAcker(Protocol):
    """
    Acknowledge each message with a one-byte message.
    """

    def messageReceived(self, message: bytes) -> None:
        """
        Acknowledge it.
        """
        cast(ChannelTransport, self.transport).writeMessage(b"a")


class StringAcker(Int32StringReceiver):
    """
    Acknowledge each string with a one-byte string.
    """

    MAX_LENGTH = 1 << 20

    def stringReceived(self, string: bytes) -> None:
        """
        Acknowledge it.
        """
        Int32StringReceiver.sendString(self, b"a")


@implementer(IMessageReceiver)
class MessageEcho(Protocol):
    """
    Send each message back.
    """

    def messageReceived(self, message: bytes) -> None:
        """
        Echo it.
        """
        cast(ChannelTransport, self.transport).writeMessage(message)


@implementer(IMessageReceiver)
class MessageReplier(Protocol):
    """
    Reply to one request with ``size`` bytes, then close.
    """

    def __init__(self, size: int) -> None:
        self.reply = b"r" * size

    def messageReceived(self, message: bytes) -> None:
        """
        Reply and close.
        """
        transport = cast(ChannelTransport, self.transport)
        transport.writeMessage(self.reply)
        transport.loseConnection()


class StreamReplier(Protocol):
    """
    Once ``size`` bytes have arrived, reply with ``size`` bytes and close.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.received = 0

    def dataReceived(self, data: bytes) -> None:
        """
        Reply once the request is whole.
        """
        before = self.received
        self.received += len(data)
        if before < self.size <= self.received and self.transport is not None:
            self.transport.write(b"r" * self.size)
            self.transport.loseConnection()


@implementer(IChunkReceiver)
class ChunkCounter(Protocol):
    """
    Count chunks and bytes; once ``expected`` bytes have arrived, reply
    with the session's counters as they stand.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = 0
        self.chunks = 0

    def chunkReceived(self, data: bytes, endOfMessage: bool) -> None:
        """
        Count; report at the end.
        """
        self.received += len(data)
        self.chunks += 1
        if self.received == self.expected:
            transport = cast(ChannelTransport, self.transport)
            counters = transport.session.counters()
            replyLine(
                transport,
                {"received": self.received, "chunks": self.chunks, **counters},
            )


class IdleTracker:
    """
    The server side of the idle-channels scenario: a control channel that
    reports the server's memory before and after ``expected`` idle
    channels are open.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.opened = 0
        self.control: Any = None

    def idleOpened(self) -> None:
        """
        One more idle channel is open; report once all are.
        """
        self.opened += 1
        if self.opened == self.expected:
            replyLine(self.control, {"rss": settledRss(), "opened": self.opened})


class IdleControl(Protocol):
    """
    The control channel: answer any line with the memory in use now.
    """

    def __init__(self, tracker: IdleTracker) -> None:
        self.tracker = tracker

    def connectionMade(self) -> None:
        """
        Be the channel reports go to.
        """
        self.tracker.control = self.transport

    def dataReceived(self, data: bytes) -> None:
        """
        Report the memory in use before the idle channels open.
        """
        replyLine(self.transport, {"rss": settledRss()})


class IdleChannel(Protocol):
    """
    A channel that is open and does nothing.
    """

    def __init__(self, tracker: IdleTracker) -> None:
        self.tracker = tracker

    def connectionMade(self) -> None:
        """
        Count it.
        """
        self.tracker.idleOpened()


# ---------------------------------------------------------------- servers


def memuxServer(params: Params, services: dict[bytes, Factory]) -> Factory:
    """
    A memux server for ``services`` with the run's server settings.
    """
    return MultiplexingFactory(services, settings=serverSettings(params))


def serveBulk(params: Params) -> Factory:
    """
    One sink channel that acknowledges all of ``total`` bytes.
    """
    return memuxServer(params, {b"sink": OneFactory(lambda: Sink(params["total"]))})


def serveBulkTcp(params: Params) -> Factory:
    """
    A TCP sink that acknowledges all of ``total`` bytes.
    """
    return OneFactory(lambda: Sink(params["total"]))


def serveFanout(params: Params) -> Factory:
    """
    Sink channels that each acknowledge their ``perChannel`` bytes.
    """
    return memuxServer(
        params, {b"sink": OneFactory(lambda: Sink(params["perChannel"]))}
    )


def serveFanoutTcp(params: Params) -> Factory:
    """
    A TCP sink that acknowledges the fan-out's bytes, all of them.
    """
    return OneFactory(lambda: Sink(params["channels"] * params["perChannel"]))


def serveSmall(params: Params) -> Factory:
    """
    A channel that acknowledges each message.
    """
    return memuxServer(params, {b"ack": Factory.forProtocol(MessageAcker)})


def serveSmallTcp(params: Params) -> Factory:
    """
    An Int32StringReceiver that acknowledges each string.
    """
    return Factory.forProtocol(StringAcker)


def serveChurn(params: Params) -> Factory:
    """
    The default service replies to one request and closes.
    """
    size = params["size"]
    return memuxServer(params, {b"": OneFactory(lambda: MessageReplier(size))})


def serveChurnTcp(params: Params) -> Factory:
    """
    Each connection replies to one request and closes.
    """
    size = params["size"]
    return OneFactory(lambda: StreamReplier(size))


def serveLatency(params: Params) -> Factory:
    """
    A sink for the bulk channel and an echo service for the pings.
    """
    return memuxServer(
        params,
        {
            b"sink": OneFactory(lambda: Sink(None)),
            b"echo": Factory.forProtocol(MessageEcho),
        },
    )


def serveIdle(params: Params) -> Factory:
    """
    A control channel and any number of idle channels.
    """
    tracker = IdleTracker(params["channels"])
    return memuxServer(
        params,
        {
            b"ctl": OneFactory(lambda: IdleControl(tracker)),
            b"idle": OneFactory(lambda: IdleChannel(tracker)),
        },
    )


def serveOverheadSmall(params: Params) -> Factory:
    """
    A channel that counts the small messages and reports the counters.
    """
    expected = params["messages"] * params["size"]
    return memuxServer(params, {b"count": OneFactory(lambda: ChunkCounter(expected))})


def serveOverheadBulk(params: Params) -> Factory:
    """
    A channel that counts the bulk bytes and reports the counters.
    """
    expected = params["total"]
    return memuxServer(params, {b"count": OneFactory(lambda: ChunkCounter(expected))})


# ---------------------------------------------------------------- clients


class Streamer(LineReader):
    """
    Write ``count`` chunks of ``size`` bytes as a byte stream, respecting
    backpressure; ``line`` fires with the receiver's acknowledgement.
    """

    def __init__(self, size: int, count: int | None, sources: int = 1) -> None:
        super().__init__()
        self.sender: Sender | None = None
        self.size = size
        self.count = count
        self.sources = sources
        self.started = 0.0

    def connectionMade(self) -> None:
        """
        Start writing, and the clock.
        """
        self.started = time.perf_counter()
        transport = self.transport
        assert transport is not None
        # Distinct buffers: which source bytes are in the CPU's cache
        # changes copy speeds more than anything memux does.
        chunks = [bytes((97 + i % 26,)) * self.size for i in range(self.sources)]
        self.sender = Sender(transport, transport.write, chunks, self.count)
        self.sender.start()


def throughput(payload: int, seconds: float) -> Result:
    """
    The result of a throughput run.
    """
    return {"value": payload / seconds / 1e6, "seconds": seconds, "bytes": payload}


async def runBulk(reactor: Reactor, params: Params, port: int) -> Result:
    """
    One channel writes ``total`` bytes in ``write``-byte writes.
    """
    s = await session(reactor, params, port)
    size = params["write"]
    streamer = Streamer(size, params["total"] // size)
    await channel(s, b"sink", streamer)
    ended, _ = await streamer.line
    return throughput(params["total"], ended - streamer.started)


async def runBulkTcp(reactor: Reactor, params: Params, port: int) -> Result:
    """
    A TCP connection writes ``total`` bytes in ``write``-byte writes.
    """
    size = params["write"]
    streamer = Streamer(size, params["total"] // size)
    await connectTcp(reactor, params, port, streamer)
    ended, _ = await streamer.line
    return throughput(params["total"], ended - streamer.started)


async def runFanout(reactor: Reactor, params: Params, port: int) -> Result:
    """
    ``channels`` channels each write ``perChannel`` bytes, all at once.
    """
    s = await session(reactor, params, port)
    size = params["write"]
    streamers = [
        Streamer(size, params["perChannel"] // size) for _ in range(params["channels"])
    ]
    for streamer in streamers:
        await channel(s, b"sink", streamer)
    lines = await defer.gatherResults([streamer.line for streamer in streamers])
    ended = max(when for when, _ in lines)
    started = streamers[0].started
    return throughput(params["channels"] * params["perChannel"], ended - started)


async def runFanoutTcp(reactor: Reactor, params: Params, port: int) -> Result:
    """
    One TCP connection writes the same bytes as the fan-out, in the same
    writes.
    """
    size = params["write"]
    total = params["channels"] * params["perChannel"]
    # The same bytes from as many buffers as the fan-out's channels, written
    # in turn as memux's scheduler interleaves them: a single buffer stays
    # in the CPU cache and copies several times faster than 200 do.
    streamer = Streamer(size, total // size, params["channels"])
    await connectTcp(reactor, params, port, streamer)
    ended, _ = await streamer.line
    return throughput(total, ended - streamer.started)


@implementer(IPushProducer)
class WindowedSender:
    """
    Send ``count`` messages through ``send`` with at most ``window``
    unacknowledged, stopping while paused; ``done`` fires with the time
    of the last acknowledgement.
    """

    def __init__(
        self, send: Callable[[bytes], object], size: int, count: int, window: int
    ) -> None:
        self.send = send
        self.payload = b"m" * size
        self.count = count
        self.window = window
        self.unsent = count
        self.inFlight = 0
        self.acked = 0
        self.paused = False
        self.done: defer.Deferred[float] = defer.Deferred()

    def fill(self) -> None:
        """
        Send until the window is full, we are paused, or all are sent.
        """
        while not self.paused and self.unsent and self.inFlight < self.window:
            self.unsent -= 1
            self.inFlight += 1
            self.send(self.payload)

    def ack(self) -> None:
        """
        One message was acknowledged.
        """
        self.inFlight -= 1
        self.acked += 1
        if self.acked == self.count:
            self.done.callback(time.perf_counter())
        else:
            self.fill()

    def pauseProducing(self) -> None:
        """
        Send nothing until resumed.
        """
        self.paused = True

    def resumeProducing(self) -> None:
        """
        Carry on sending.
        """
        self.paused = False
        self.fill()

    def stopProducing(self) -> None:
        """
        Send no more.
        """
        self.unsent = 0


@implementer(IMessageReceiver)
class MessageAckClient(Protocol):
    """
    Windowed messages over a memux channel.
    """

    def __init__(self, params: Params) -> None:
        self.params = params
        self.sender: WindowedSender | None = None
        self.started = 0.0

    def connectionMade(self) -> None:
        """
        Start sending.
        """
        transport = cast(ChannelTransport, self.transport)
        p = self.params
        self.sender = WindowedSender(
            transport.writeMessage, p["size"], p["messages"], p["window"]
        )
        transport.registerProducer(self.sender, True)
        self.started = time.perf_counter()
        self.sender.fill()

    def messageReceived(self, message: bytes) -> None:
        """
        An acknowledgement.
        """
        assert self.sender is not None
        self.sender.ack()


class StringAckClient(Int32StringReceiver):
    """
    Windowed strings over one TCP connection.
    """

    def __init__(self, params: Params) -> None:
        self.params = params
        self.sender: WindowedSender | None = None
        self.started = 0.0

    def connectionMade(self) -> None:
        """
        Start sending.
        """
        p = self.params
        self.sender = WindowedSender(
            self.sendString, p["size"], p["messages"], p["window"]
        )
        cast(IConsumer, self.transport).registerProducer(self.sender, True)
        self.started = time.perf_counter()
        self.sender.fill()

    def stringReceived(self, string: bytes) -> None:
        """
        An acknowledgement.
        """
        assert self.sender is not None
        self.sender.ack()


def messageRate(count: int, seconds: float) -> Result:
    """
    The result of a message-rate run.
    """
    return {"value": count / seconds, "seconds": seconds, "messages": count}


async def runSmall(reactor: Reactor, params: Params, port: int) -> Result:
    """
    ``messages`` small messages on one channel, ``window`` in flight, each
    acknowledged.
    """
    s = await session(reactor, params, port)
    client = MessageAckClient(params)
    await channel(s, b"ack", client)
    assert client.sender is not None
    ended = await client.sender.done
    return messageRate(params["messages"], ended - client.started)


async def runSmallTcp(reactor: Reactor, params: Params, port: int) -> Result:
    """
    The same with Int32StringReceiver on one TCP connection.
    """
    client = StringAckClient(params)
    await connectTcp(reactor, params, port, client)
    assert client.sender is not None
    ended = await client.sender.done
    return messageRate(params["messages"], ended - client.started)


class Exchanges:
    """
    Run ``total`` request/reply exchanges, ``inFlight`` at a time, each
    started by ``start``; ``done`` fires with the time the last ended.
    """

    def __init__(self, start: Callable[[Exchanges], object], params: Params) -> None:
        self.startOne = start
        self.total = params["exchanges"]
        self.inFlight = params["inFlight"]
        self.size = params["size"]
        self.request = b"q" * self.size
        self.params = params
        self.started = 0
        self.completed = 0
        self.errors: list[str] = []
        self.done: defer.Deferred[float] = defer.Deferred()

    def start(self) -> None:
        """
        Start the first ``inFlight`` exchanges.
        """
        for _ in range(min(self.inFlight, self.total)):
            self.launch()

    def launch(self) -> None:
        """
        Start one exchange.
        """
        self.started += 1
        self.startOne(self)

    def ended(self, error: str | None = None) -> None:
        """
        One exchange ended (with ``error``, if it failed); start the next.
        """
        self.completed += 1
        if error is not None and len(self.errors) < 10:
            self.errors.append(error)
        if self.started < self.total:
            self.launch()
        elif self.completed == self.total:
            self.done.callback(time.perf_counter())


@implementer(IMessageReceiver)
class ChannelExchange(Protocol):
    """
    One exchange on a channel of its own: request, reply, close.
    """

    def __init__(self, exchanges: Exchanges) -> None:
        self.exchanges = exchanges
        self.reply = -1

    def connectionMade(self) -> None:
        """
        Send the request.
        """
        cast(ChannelTransport, self.transport).writeMessage(self.exchanges.request)

    def messageReceived(self, message: bytes) -> None:
        """
        The reply: close the channel.
        """
        self.reply = len(message)
        cast(ChannelTransport, self.transport).loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        The exchange is over once the channel is closed.
        """
        ok = self.reply == self.exchanges.size
        self.exchanges.ended(None if ok else f"reply {self.reply}: {reason.value}")


class ConnectionExchange(Protocol):
    """
    One exchange on a TCP connection of its own: connect, request, reply,
    close.
    """

    def __init__(self, exchanges: Exchanges) -> None:
        self.exchanges = exchanges
        self.reply = 0

    def connectionMade(self) -> None:
        """
        Send the request.
        """
        assert self.transport is not None
        tune(self.transport, self.exchanges.params)
        self.transport.write(self.exchanges.request)

    def dataReceived(self, data: bytes) -> None:
        """
        Close once the reply is whole.
        """
        self.reply += len(data)
        if self.reply >= self.exchanges.size and self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        The exchange is over once the connection is closed.
        """
        ok = self.reply == self.exchanges.size
        self.exchanges.ended(None if ok else f"reply {self.reply}: {reason.value}")


class ExchangeConnector(ClientFactory):
    """
    Connects one `ConnectionExchange`; a failed connection ends it.
    """

    def __init__(self, exchanges: Exchanges) -> None:
        self.exchanges = exchanges

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        """
        The exchange's protocol.
        """
        return ConnectionExchange(self.exchanges)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        """
        Count the failure as an exchange that ended in error.
        """
        self.exchanges.ended(f"connect: {reason.value}")


def exchangeRate(exchanges: Exchanges, seconds: float) -> Result:
    """
    The result of a churn run.
    """
    return {
        "value": exchanges.total / seconds,
        "seconds": seconds,
        "exchanges": exchanges.total,
        "errors": exchanges.errors,
    }


async def runChurn(reactor: Reactor, params: Params, port: int) -> Result:
    """
    Each exchange opens a channel of the default service, sends a request,
    reads the reply and closes.
    """
    s = await session(reactor, params, port)

    def start(exchanges: Exchanges) -> None:
        d = s.openChannel(b"", OneFactory(lambda: ChannelExchange(exchanges)))
        d.addErrback(lambda f: exchanges.ended(f"open: {f.value}"))

    exchanges = Exchanges(start, params)
    started = time.perf_counter()
    exchanges.start()
    ended = await exchanges.done
    return exchangeRate(exchanges, ended - started)


async def runChurnTcp(reactor: Reactor, params: Params, port: int) -> Result:
    """
    Each exchange opens a TCP connection of its own.
    """

    def start(exchanges: Exchanges) -> None:
        reactor.connectTCP(LOOPBACK, port, ExchangeConnector(exchanges))

    exchanges = Exchanges(start, params)
    started = time.perf_counter()
    exchanges.start()
    ended = await exchanges.done
    return exchangeRate(exchanges, ended - started)


@implementer(IMessageReceiver)
class Pinger(Protocol):
    """
    Ping-pong ``size``-byte messages, one at a time, timing each.
    """

    def __init__(self, size: int) -> None:
        self.payload = b"p" * size
        self.times: list[float] = []
        self.remaining = 0
        self.sentAt = 0.0
        self.done: defer.Deferred[list[float]] = defer.Deferred()

    def run(self, count: int) -> defer.Deferred[list[float]]:
        """
        Ping ``count`` times; fire with the round-trip times in seconds.
        """
        self.times = []
        self.remaining = count
        self.done = defer.Deferred()
        self.ping()
        return self.done

    def ping(self) -> None:
        """
        Send one.
        """
        self.remaining -= 1
        self.sentAt = time.perf_counter()
        cast(ChannelTransport, self.transport).writeMessage(self.payload)

    def messageReceived(self, message: bytes) -> None:
        """
        The echo: time it, send the next.
        """
        self.times.append(time.perf_counter() - self.sentAt)
        if self.remaining > 0:
            self.ping()
        else:
            self.done.callback(self.times)


async def pingUnderLoad(
    reactor: Reactor, params: Params, port: int, loaded: bool
) -> Result:
    """
    Ping-pong on one channel, with (``loaded``) or without bulk traffic on
    another channel of the same session.
    """
    s = await session(reactor, params, port)
    bulk: Streamer | None = None
    if loaded:
        bulk = Streamer(params["write"], None)
        await channel(s, b"sink", bulk)
        bulk.line.addErrback(lambda _: None)  # the sink never answers
    pinger = Pinger(params["size"])
    await channel(s, b"echo", pinger)
    await task.deferLater(reactor, params["settle"], lambda: None)
    await pinger.run(params["warmup"])
    sentBefore = bulk.sender.sent if bulk and bulk.sender else 0
    started = time.perf_counter()
    times = await pinger.run(params["pings"])
    seconds = time.perf_counter() - started
    sent = (bulk.sender.sent if bulk and bulk.sender else 0) - sentBefore
    micro = [t * 1e6 for t in times]
    return {
        "value": percentile(micro, 0.99),
        "p50": percentile(micro, 0.50),
        "p90": percentile(micro, 0.90),
        "max": max(micro),
        "pings": len(micro),
        "seconds": seconds,
        "bulkMBps": sent / seconds / 1e6,
    }


async def runLatencyLoaded(reactor: Reactor, params: Params, port: int) -> Result:
    """
    Ping-pong while another channel carries bulk traffic.
    """
    return await pingUnderLoad(reactor, params, port, True)


async def runLatencyIdle(reactor: Reactor, params: Params, port: int) -> Result:
    """
    The same ping-pong with no other traffic.
    """
    return await pingUnderLoad(reactor, params, port, False)


async def runIdle(reactor: Reactor, params: Params, port: int) -> Result:
    """
    Open ``channels`` channels that stay idle; report both processes'
    memory before and after.
    """
    s = await session(reactor, params, port)
    control = LineReader()
    await channel(s, b"ctl", control)
    cast(ChannelTransport, control.transport).write(b"before\n")
    _, before = await control.line
    control.line = defer.Deferred()
    clientBefore = settledRss()
    count = params["channels"]
    factory = OneFactory(Protocol)
    started = time.perf_counter()
    for _ in range(count):
        s.openChannel(b"idle", factory)
    ended, after = await control.line
    clientAfter = settledRss()
    perChannel = (after["rss"] - before["rss"]) / count
    return {
        "memux": after["rss"] / 2**20,
        "baseline": before["rss"] / 2**20,
        "check": perChannel,
        "channels": count,
        "serverBytesPerChannel": perChannel,
        "clientBytesPerChannel": (clientAfter - clientBefore) / count,
        "clientRssBefore": clientBefore,
        "clientRssAfter": clientAfter,
        "openSeconds": ended - started,
        "opensPerSecond": count / (ended - started),
    }


def setupBytes(params: Params, opened: ChannelTransport) -> int:
    """
    What the session's setup costs in the data direction: the client's
    preface and the OPEN of the measured channel.
    """
    preface = encodePreface(clientSettings(params).toWire())
    return len(preface) + len(OpenFrame(opened.channel, opened.service).encode())


def overhead(counters: Result, payload: int, setup: int, seconds: float) -> Result:
    """
    The wire-overhead result from the receiver's counters: all bytes both
    ways against the payload, and the data direction's overhead beyond
    the one-time ``setup`` per chunk and in percent.
    """
    forward = counters["bytesReceived"]
    reverse = counters["bytesSent"]
    wire = forward + reverse
    chunks = counters["chunks"]
    steady = forward - setup - payload
    return {
        "memux": wire,
        "baseline": payload,
        "forwardBytes": forward,
        "reverseBytes": reverse,
        "setupBytes": setup,
        "chunks": chunks,
        "bytesPerChunk": steady / chunks,
        "overheadPercent": steady / payload * 100,
        "reverseBytesPerChunk": reverse / chunks,
        "totalOverheadPercent": (wire - payload) / payload * 100,
        "seconds": seconds,
    }


async def runOverheadSmall(reactor: Reactor, params: Params, port: int) -> Result:
    """
    ``messages`` small messages one way; count the bytes on the wire both
    ways.
    """
    s = await session(reactor, params, port)
    reader = LineReader()
    await channel(s, b"count", reader)
    transport = cast(ChannelTransport, reader.transport)
    payload = b"m" * params["size"]
    started = time.perf_counter()
    Sender(transport, transport.writeMessage, payload, params["messages"]).start()
    ended, counters = await reader.line
    total = params["messages"] * params["size"]
    setup = setupBytes(params, transport)
    result = overhead(counters, total, setup, ended - started)
    result["check"] = result["bytesPerChunk"]
    return result


async def runOverheadBulk(reactor: Reactor, params: Params, port: int) -> Result:
    """
    ``total`` bytes one way in ``write``-byte writes; count the bytes on the
    wire both ways.
    """
    s = await session(reactor, params, port)
    size = params["write"]
    streamer = Streamer(size, params["total"] // size)
    await channel(s, b"count", streamer)
    ended, counters = await streamer.line
    setup = setupBytes(params, cast(ChannelTransport, streamer.transport))
    result = overhead(counters, params["total"], setup, ended - streamer.started)
    result["check"] = result["overheadPercent"]
    return result


Runner = Callable[[Reactor, Params, int], Awaitable[Result]]

#: role -> (server factory, client workload)
ROLES: dict[str, tuple[Callable[[Params], Factory], Runner]] = {
    "bulk/memux": (serveBulk, runBulk),
    "bulk/tcp": (serveBulkTcp, runBulkTcp),
    "fanout/memux": (serveFanout, runFanout),
    "fanout/tcp": (serveFanoutTcp, runFanoutTcp),
    "small/memux": (serveSmall, runSmall),
    "small/tcp": (serveSmallTcp, runSmallTcp),
    "churn/memux": (serveChurn, runChurn),
    "churn/tcp": (serveChurnTcp, runChurnTcp),
    "latency/loaded": (serveLatency, runLatencyLoaded),
    "latency/idle": (serveLatency, runLatencyIdle),
    "idle/memux": (serveIdle, runIdle),
    "overhead-small/memux": (serveOverheadSmall, runOverheadSmall),
    "overhead-bulk/memux": (serveOverheadBulk, runOverheadBulk),
}


# ---------------------------------------------------------------- processes


def emit(obj: Result) -> None:
    """
    Print one JSON line for the parent.
    """
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def server(reactor: Reactor, role: str, params: Params) -> None:
    """
    Listen, say where, and serve until stopped (SIGTERM) or orphaned.
    """
    factory = ROLES[role][0](params)
    # A deep backlog, so the churn baseline's connections are not dropped.
    listening: IListeningPort
    if params.get("nodelay"):
        listening = NoDelayPort(0, factory, 1024, LOOPBACK, reactor)
        listening.startListening()
    else:
        endpoint = TCP4ServerEndpoint(reactor, 0, backlog=1024, interface=LOOPBACK)
        listening = await endpoint.listen(factory)
    parent = os.getppid()
    emit({"port": cast(IPv4Address, listening.getHost()).port})

    def orphaned() -> None:
        if os.getppid() != parent:
            reactor.stop()

    task.LoopingCall(orphaned).start(1.0, now=False)
    await defer.Deferred()  # until the reactor stops


async def client(reactor: Reactor, role: str, params: Params, port: int) -> None:
    """
    Run the workload and print its result.
    """
    result = await ROLES[role][1](reactor, params, port)
    result["reactor"] = type(reactor).__name__
    emit(result)


def main(argv: list[str]) -> None:
    """
    ``server ROLE PARAMS`` or ``client ROLE PARAMS PORT``.
    """
    observer = FilteringLogObserver(
        textFileLogObserver(sys.stderr),
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    kind, role, params = argv[0], argv[1], json.loads(argv[2])
    if role not in ROLES:
        raise SystemExit(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if kind == "server":
        task.react(server, (role, params))
    elif kind == "client":
        task.react(client, (role, params, int(argv[3])))
    raise SystemExit(f"unknown kind {kind!r}: server or client")


if __name__ == "__main__":
    main(sys.argv[1:])
