# -*- test-case-name: memux.test.test_bench -*-
"""
The latency scenario's client workloads (see `memux.bench.workers.ROLES`):
a 64-byte ping-pong on a memux channel, or on a raw TCP connection, timed
one round trip at a time, with or without bulk traffic beside it (another
channel of the same session, or another TCP connection).
"""

from __future__ import annotations

import time
from typing import cast

from twisted.internet import defer, task
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from memux.bench.clients import Streamer
from memux.bench.peers import (
    OneFactory,
    Params,
    Result,
    channel,
    clientEndpoint,
    clientSettings,
    connectTcp,
    session,
)
from memux.bench.processes import Reactor
from memux.bench.report import percentile
from memux.endpoints import SessionPool
from memux.interfaces import IMessageReceiver
from memux.protocol import ChannelTransport

__all__ = [
    "ECHO",
    "SINK",
    "Pinger",
    "StreamPinger",
    "runLatencyIdle",
    "runLatencyLoaded",
    "runLatencySingle",
    "runLatencyTcpIdle",
    "runLatencyTcpLoaded",
]


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


class StreamPinger(Pinger):
    """
    `Pinger` on a TCP connection: ``size`` bytes out, then the same number
    back (echoed as they come), one ping at a time.
    """

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.received = 0

    def connectionMade(self) -> None:
        """
        Ask the server for its echo service.
        """
        assert self.transport is not None
        self.transport.write(ECHO)

    def ping(self) -> None:
        """
        Send one.
        """
        assert self.transport is not None
        self.remaining -= 1
        self.received = 0
        self.sentAt = time.perf_counter()
        self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        """
        Once the echo is whole, it is the answer (`Pinger.messageReceived`).
        """
        self.received += len(data)
        if self.received >= len(self.payload):
            self.messageReceived(b"")


#: the first byte of a latency baseline's TCP connection: which service
#: (see `memux.bench.servers.serveLatencyTcp`)
ECHO = b"e"
SINK = b"s"


class SinkStreamer(Streamer):
    """
    A `Streamer` for ever, to the sink service of a latency baseline.
    """

    def connectionMade(self) -> None:
        """
        Ask for the sink, then stream.
        """
        assert self.transport is not None
        self.transport.write(SINK)
        super().connectionMade()


async def pingUnderLoad(
    reactor: Reactor,
    params: Params,
    port: int,
    loaded: bool,
    tcp: bool = False,
    multiplex: bool = True,
) -> Result:
    """
    Ping-pong on one channel, with (``loaded``) or without bulk traffic on
    another channel of the same session; with ``tcp``, on one TCP
    connection, the bulk traffic on another; without ``multiplex``, on
    memux channels each on a session and connection of its own.
    """
    bulk: Streamer | None = None
    pinger: Pinger | StreamPinger
    if not multiplex:
        pool = SessionPool(reactor, settings=clientSettings(params), multiplex=False)
        endpoint = clientEndpoint(reactor, params, port)
        if loaded:
            streamer = bulk = Streamer(params["write"], None)
            await pool.openChannel(endpoint, b"sink", OneFactory(lambda: streamer))
        pinger = Pinger(params["size"])
        await pool.openChannel(endpoint, b"echo", OneFactory(lambda: pinger))
    elif tcp:
        if loaded:
            bulk = SinkStreamer(params["write"], None)
            await connectTcp(reactor, params, port, bulk, "bulk")
        pinger = StreamPinger(params["size"])
        await connectTcp(reactor, params, port, pinger)
    else:
        s = await session(reactor, params, port)
        if loaded:
            bulk = Streamer(params["write"], None)
            await channel(s, b"sink", bulk)
        pinger = Pinger(params["size"])
        await channel(s, b"echo", pinger)
    if bulk is not None:
        bulk.line.addErrback(lambda _: None)  # the sink never answers
    await task.deferLater(reactor, params["settle"], lambda: None)
    await pinger.run(params["warmup"])
    sentBefore = bulk.sender.sent if bulk and bulk.sender else 0
    started = time.perf_counter()
    times = await pinger.run(params["pings"])
    seconds = time.perf_counter() - started
    sent = (bulk.sender.sent if bulk and bulk.sender else 0) - sentBefore
    micro = [t * 1e6 for t in times]
    result: Result = {
        "value": percentile(micro, 0.99),
        "p50": percentile(micro, 0.50),
        "p90": percentile(micro, 0.90),
        "p999": percentile(micro, 0.999),
        "max": max(micro),
        "pings": len(micro),
        "seconds": seconds,
        "bulkMBps": sent / seconds / 1e6,
    }
    return result


async def runLatencyLoaded(reactor: Reactor, params: Params, port: int) -> Result:
    """
    Ping-pong while another channel carries bulk traffic.
    """
    return await pingUnderLoad(reactor, params, port, True)


async def runLatencySingle(reactor: Reactor, params: Params, port: int) -> Result:
    """
    Ping-pong on a channel while another carries bulk traffic, without
    multiplexing (MEMUX--): each channel on a connection of its own.
    """
    return await pingUnderLoad(reactor, params, port, True, multiplex=False)


async def runLatencyIdle(reactor: Reactor, params: Params, port: int) -> Result:
    """
    The same ping-pong with no other traffic.
    """
    return await pingUnderLoad(reactor, params, port, False)


async def runLatencyTcpLoaded(reactor: Reactor, params: Params, port: int) -> Result:
    """
    Ping-pong on a TCP connection while another carries bulk traffic.
    """
    return await pingUnderLoad(reactor, params, port, True, tcp=True)


async def runLatencyTcpIdle(reactor: Reactor, params: Params, port: int) -> Result:
    """
    Ping-pong on a TCP connection, with no other traffic.
    """
    return await pingUnderLoad(reactor, params, port, False, tcp=True)
