# -*- test-case-name: memux.test.test_bench -*-
"""
The priority scenarios' client workloads (see `memux.bench.workers.ROLES`):

- *priority latency*: a 64-byte ping-pong on a channel at urgency 0 while
  ``bulk`` channels at the default priority saturate the same session
  (and, for reference, the same ping-pong at the default priority: round
  robin among them all);
- *weighted shares*: three channels of weights 16, 32 and 64 (1, 2 and 4
  times the default) in one urgency each have more queued than the session
  can send in the run (as a file server that writes whole files does), so
  that the session's output is what they compete for; each one's share of
  the bytes sent over ``seconds`` is compared with its weight's share.

Both use the latency scenario's server (a sink, an echo service).
"""

from __future__ import annotations

import time
from typing import cast

from twisted.internet import task
from twisted.internet.protocol import Protocol

from memux.bench.clients import Streamer
from memux.bench.latency import Pinger
from memux.bench.peers import OneFactory, Params, Result, session
from memux.bench.processes import Reactor
from memux.bench.report import percentile
from memux.protocol import ChannelTransport

__all__ = [
    "WEIGHTS",
    "runPriorityDefault",
    "runPriorityUrgent",
    "runWeightedProducers",
    "runWeightedShares",
    "sharesResult",
]

#: The weights of the weighted-shares channels: 1, 2 and 4 times the
#: default (16).
WEIGHTS = (16, 32, 64)


def given(protocol: Protocol) -> OneFactory:
    """
    A factory of ``protocol``.
    """
    return OneFactory(lambda: protocol)


async def pingBesideBulk(
    reactor: Reactor, params: Params, port: int, urgency: int | None
) -> Result:
    """
    Ping-pong on one channel (at ``urgency``; None: the default) while
    ``bulk`` channels of the same session write for ever.
    """
    s = await session(reactor, params, port)
    streamers = [Streamer(params["write"], None) for _ in range(params["bulk"])]
    for streamer in streamers:
        streamer.line.addErrback(lambda _: None)  # the sink never answers
        await s.openChannel(b"sink", given(streamer))
    pinger = Pinger(params["size"])
    await s.openChannel(b"echo", given(pinger), priority=urgency)
    await task.deferLater(reactor, params["settle"], lambda: None)
    await pinger.run(params["warmup"])

    def sent() -> int:
        return sum(st.sender.sent for st in streamers if st.sender is not None)

    sentBefore = sent()
    started = time.perf_counter()
    times = await pinger.run(params["pings"])
    seconds = time.perf_counter() - started
    micro = [t * 1e6 for t in times]
    return {
        "value": percentile(micro, 0.99),
        "p50": percentile(micro, 0.50),
        "p90": percentile(micro, 0.90),
        "p999": percentile(micro, 0.999),
        "max": max(micro),
        "pings": len(micro),
        "seconds": seconds,
        "bulkMBps": (sent() - sentBefore) / seconds / 1e6,
    }


async def runPriorityUrgent(reactor: Reactor, params: Params, port: int) -> Result:
    """
    Ping-pong at urgency 0 beside the bulk channels.
    """
    return await pingBesideBulk(reactor, params, port, 0)


async def runPriorityDefault(reactor: Reactor, params: Params, port: int) -> Result:
    """
    The same ping-pong at the default priority: round robin with the bulk.
    """
    return await pingBesideBulk(reactor, params, port, None)


async def runWeightedShares(reactor: Reactor, params: Params, port: int) -> Result:
    """
    Three channels of `WEIGHTS` each queue ``backlog`` bytes at once (one
    ``write``-byte buffer over and over: no copies), topped up to that
    whenever half of it has gone, so none ever runs dry however fast the
    machine; after ``settle`` seconds, count what each sends in
    ``seconds`` (written, less what is still queued).  ``memux`` is the
    heaviest channel's share in percent, ``baseline`` its weight's share,
    ``check`` the largest relative error of any share.
    """
    s = await session(reactor, params, port)
    transports: list[ChannelTransport] = []
    for weight in WEIGHTS:
        sink = Protocol()
        await s.openChannel(b"sink", given(sink), weight=weight)
        transports.append(cast(ChannelTransport, sink.transport))
    chunk = bytes(params["write"])
    backlog = params["backlog"]
    engine = s.engine
    written = [0] * len(transports)
    dry = [False]

    def topUp() -> None:
        for i, transport in enumerate(transports):
            queued = engine.queuedBytes(transport.channel)
            if queued == 0 and written[i]:
                dry[0] = True  # (it may have idled: the shares would lie)
            if queued < backlog // 2:
                for _ in range((backlog - queued) // len(chunk)):
                    transport.write(chunk)
                written[i] += (backlog - queued) // len(chunk) * len(chunk)

    topUp()
    refill = task.LoopingCall(topUp)
    refill.clock = reactor
    refill.start(0.01, now=False)
    await task.deferLater(reactor, params["settle"], lambda: None)

    def sent() -> list[int]:
        return [
            w - engine.queuedBytes(t.channel)
            for w, t in zip(written, transports, strict=True)
        ]

    dry[0] = False
    before = sent()
    started = time.perf_counter()
    await task.deferLater(reactor, params["seconds"], lambda: None)
    seconds = time.perf_counter() - started
    after = sent()
    refill.stop()
    if dry[0]:
        raise RuntimeError(
            f"a channel ran out of data in the run: raise backlog ({backlog})"
        )
    for transport in transports:
        transport.abortConnection()
    return sharesResult([a - b for a, b in zip(after, before, strict=True)], seconds)


def sharesResult(moved: list[int], seconds: float) -> Result:
    """
    The result of a shares run, from the bytes each of the `WEIGHTS`
    channels sent in ``seconds``.
    """
    total = sum(moved) or 1
    shares = [n / total for n in moved]
    expected = [w / sum(WEIGHTS) for w in WEIGHTS]
    errors = [abs(got / want - 1) for got, want in zip(shares, expected, strict=True)]
    result: Result = {
        "memux": 100 * shares[-1],
        "baseline": 100 * expected[-1],
        "check": max(errors),
        "MBps": total / seconds / 1e6,
    }
    for weight, share in zip(WEIGHTS, shares, strict=True):
        result[f"share{weight // 16}"] = 100 * share
    return result


async def runWeightedProducers(reactor: Reactor, params: Params, port: int) -> Result:
    """
    As `runWeightedShares`, but each channel is written by a streaming
    producer (`Streamer`, for ever, respecting backpressure) instead of
    queued at once; what each writes in the run is what it sends, but for
    its queue (at most a high-water mark).
    """
    s = await session(reactor, params, port)
    streamers = [Streamer(params["write"], None) for _ in WEIGHTS]
    for streamer, weight in zip(streamers, WEIGHTS, strict=True):
        streamer.line.addErrback(lambda _: None)  # the sink never answers
        await s.openChannel(b"sink", given(streamer), weight=weight)
    await task.deferLater(reactor, params["settle"], lambda: None)

    def written() -> list[int]:
        return [st.sender.sent if st.sender is not None else 0 for st in streamers]

    before = written()
    started = time.perf_counter()
    await task.deferLater(reactor, params["seconds"], lambda: None)
    seconds = time.perf_counter() - started
    after = written()
    return sharesResult([a - b for a, b in zip(after, before, strict=True)], seconds)
