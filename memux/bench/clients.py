# -*- test-case-name: memux.test.test_bench -*-
"""
The client side of each benchmark run: the workloads the client worker
runs and times (see `memux.bench.workers.ROLES`), each returning its
result, and the protocols they are made of.  Every timing is taken here,
from the first write to the receiver's acknowledgement of the last byte
(or the last reply), so no clock is compared across processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.interfaces import IAddress, IConsumer, IPushProducer
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from memux.bench.frames import OpenFrame, encodePreface
from memux.bench.peers import (
    LineReader,
    OneFactory,
    Params,
    Result,
    Sender,
    channel,
    clientEndpoint,
    clientFactory,
    clientSettings,
    connectTcp,
    session,
    tune,
)
from memux.bench.processes import LOOPBACK, Reactor, settledRss
from memux.endpoints import SessionPool
from memux.interfaces import IMessageReceiver
from memux.protocol import ChannelTransport

__all__ = [
    "runBulk",
    "runBulkTcp",
    "runChurn",
    "runChurnRequestReply",
    "runChurnTcp",
    "runFanout",
    "runFanoutTcp",
    "runIdle",
    "runOverheadBulk",
    "runOverheadSmall",
    "runSmall",
    "runSmallTcp",
]


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
    Windowed strings over one TCP connection: ``count`` strings of ``size``
    bytes, ``window`` unanswered at most; each answer must be
    ``replySize`` bytes long (any, with None).
    """

    MAX_LENGTH = 1 << 20

    def __init__(
        self, size: int, count: int, window: int, replySize: int | None = None
    ) -> None:
        self.size = size
        self.count = count
        self.window = window
        self.replySize = replySize
        self.errors: list[str] = []
        self.sender: WindowedSender | None = None
        self.started = 0.0

    def connectionMade(self) -> None:
        """
        Start sending.
        """
        self.sender = WindowedSender(
            self.sendString, self.size, self.count, self.window
        )
        cast(IConsumer, self.transport).registerProducer(self.sender, True)
        self.started = time.perf_counter()
        self.sender.fill()

    def stringReceived(self, string: bytes) -> None:
        """
        An answer.
        """
        assert self.sender is not None
        if self.replySize is not None and len(string) != self.replySize:
            if len(self.errors) < 10:
                self.errors.append(f"reply of {len(string)} bytes")
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
    client = StringAckClient(params["size"], params["messages"], params["window"])
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
    # One factory and one errback for the run, as a client opening channels
    # at this rate would have: not two closures and a factory per exchange.
    factory = OneFactory(lambda: ChannelExchange(exchanges))

    def failed(f: Failure) -> None:
        exchanges.ended(f"open: {f.value}")

    def start(_: Exchanges) -> None:
        s.openChannel(b"", factory).addErrback(failed)

    exchanges = Exchanges(start, params)
    started = time.perf_counter()
    exchanges.start()
    ended = await exchanges.done
    return exchangeRate(exchanges, ended - started)


#: Over TLS, the exchanges of the connection-per-exchange reference (a TLS
#: handshake each, some 250 a second here) are at most this many: the same
#: rate, measured in seconds rather than minutes.
TLS_CONNECT_EXCHANGES = 1000


async def runChurnTcp(reactor: Reactor, params: Params, port: int) -> Result:
    """
    Each exchange opens a TCP connection of its own (over TLS, at most
    `TLS_CONNECT_EXCHANGES` of them).
    """
    if params.get("tls"):
        exchanges = min(params["exchanges"], TLS_CONNECT_EXCHANGES)
        params = {**params, "exchanges": exchanges}

    def start(exchanges: Exchanges) -> None:
        connector = clientFactory(params, ExchangeConnector(exchanges))
        reactor.connectTCP(LOOPBACK, port, connector)

    exchanges = Exchanges(start, params)
    started = time.perf_counter()
    exchanges.start()
    ended = await exchanges.done
    return exchangeRate(exchanges, ended - started)


async def runChurnSingle(reactor: Reactor, params: Params, port: int) -> Result:
    """
    The memux exchanges without multiplexing (MEMUX--): each channel rides
    a session and connection of its own, from a `SessionPool` with
    ``multiplex=False`` (over TLS, at most `TLS_CONNECT_EXCHANGES`).
    """
    if params.get("tls"):
        exchanges = min(params["exchanges"], TLS_CONNECT_EXCHANGES)
        params = {**params, "exchanges": exchanges}
    pool = SessionPool(reactor, settings=clientSettings(params), multiplex=False)
    endpoint = clientEndpoint(reactor, params, port)

    def start(exchanges: Exchanges) -> None:
        factory = OneFactory(lambda: ChannelExchange(exchanges))
        d = pool.openChannel(endpoint, b"", factory)
        d.addErrback(lambda f: exchanges.ended(f"open: {f.value}"))

    exchanges = Exchanges(start, params)
    started = time.perf_counter()
    exchanges.start()
    ended = await exchanges.done
    return exchangeRate(exchanges, ended - started)


async def runChurnRequestReply(reactor: Reactor, params: Params, port: int) -> Result:
    """
    The same exchanges as requests and replies on one persistent TCP
    connection (Int32StringReceiver), ``inFlight`` at a time: what churn
    costs against not opening anything.
    """
    size = params["size"]
    client = StringAckClient(size, params["exchanges"], params["inFlight"], size)
    await connectTcp(reactor, params, port, client)
    assert client.sender is not None
    ended = await client.sender.done
    seconds = ended - client.started
    return {
        "value": params["exchanges"] / seconds,
        "seconds": seconds,
        "exchanges": params["exchanges"],
        "errors": client.errors,
    }


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
    the one-time ``setup`` and PING frames, per chunk and in percent.
    """
    forward = counters["bytesReceived"]
    reverse = counters["bytesSent"]
    wire = forward + reverse
    chunks = counters["chunks"]
    # Beyond the setup, less the PINGs (the session's own round-trip
    # samples and their answers, a few per minute): the data's framing.
    probes = counters.get("pingBytesReceived", 0)
    steady = forward - setup - payload - probes
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
        "pingBytes": probes + counters.get("pingBytesSent", 0),
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
