# -*- test-case-name: memux.test.test_bench -*-
"""
The server side of each benchmark run: the protocols that receive and
answer (sinks, acknowledgers, echoes, repliers, counters, idle channels)
and, for each role, the factory the server worker listens with (see
`memux.bench.workers.ROLES`).
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.basic import Int32StringReceiver
from zope.interface import implementer

from memux.bench.peers import OneFactory, Params, replyLine, serverSettings
from memux.bench.processes import settledRss
from memux.interfaces import IChunkReceiver, IMessageReceiver
from memux.protocol import ChannelTransport, MultiplexingFactory

__all__ = [
    "serveBulk",
    "serveBulkTcp",
    "serveChurn",
    "serveChurnRequestReply",
    "serveChurnTcp",
    "serveFanout",
    "serveFanoutTcp",
    "serveIdle",
    "serveLatency",
    "serveLatencyTcp",
    "serveOverheadBulk",
    "serveOverheadSmall",
    "serveSmall",
    "serveSmallTcp",
]


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


class StringReplier(Int32StringReceiver):
    """
    Answer each string with a ``size``-byte string.
    """

    MAX_LENGTH = 1 << 20

    def __init__(self, size: int) -> None:
        self.reply = b"r" * size

    def stringReceived(self, string: bytes) -> None:
        """
        Reply.
        """
        Int32StringReceiver.sendString(self, self.reply)


class StreamService(Protocol):
    """
    A latency baseline's TCP connection: its first byte chooses the
    service, ``e`` (echo what follows, as it comes) or ``s`` (discard it).
    """

    echo: bool | None = None

    def dataReceived(self, data: bytes) -> None:
        """
        Choose, then echo or discard.
        """
        if self.echo is None:
            self.echo = data[:1] == b"e"
            data = data[1:]
        if self.echo and data and self.transport is not None:
            self.transport.write(data)


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


def serveChurnRequestReply(params: Params) -> Factory:
    """
    An Int32StringReceiver that answers each request with ``size`` bytes.
    """
    size = params["size"]
    return OneFactory(lambda: StringReplier(size))


def serveLatencyTcp(params: Params) -> Factory:
    """
    TCP connections that each echo or discard (`StreamService`).
    """
    return Factory.forProtocol(StreamService)


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
