# -*- test-case-name: memux.test.test_bench -*-
"""
The priority scenarios' client workloads (see `memux.bench.workers.ROLES`):

- *priority latency*: a 64-byte ping-pong on a channel at urgency 0 while
  ``bulk`` channels at the default priority saturate the same session,
  against the same ping-pong with the bulk channels stopped (the idle
  reference), at the default priority beside them (round robin among them
  all), and on a connection of its own beside them: the phases alternate
  in blocks within one run, so each is measured under the same conditions
  (`runPriorityPhases`);
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
from memux.settings import DEFAULT_URGENCY

__all__ = [
    "PHASES",
    "WEIGHTS",
    "runPriorityPhases",
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


#: The phases of `runPriorityPhases`, by name: whether the bulk channels
#: write, and the urgency of the ping-pong channel (None: the ping-pong runs
#: on a second session, a connection of its own, at the default urgency).
PHASES: dict[str, tuple[bool, int | None]] = {
    "idle": (False, DEFAULT_URGENCY),
    "urgent": (True, 0),
    "roundRobin": (True, DEFAULT_URGENCY),
    "ownConnection": (True, None),
}


async def runPriorityPhases(reactor: Reactor, params: Params, port: int) -> Result:
    """
    The priority-latency measurement: one session, ``bulk`` channels
    writing for ever and a ping-pong channel, through the `PHASES` in
    turn, ``block`` pings at a time, until each phase has ``pings``:

    - *idle*: the bulk channels stopped (and drained);
    - *urgent*: beside them, the ping-pong channel at urgency 0;
    - *roundRobin*: beside them, at the default urgency;
    - *ownConnection*: beside them, the ping-pong on a second session of
      its own connection (as MEMUX-- would): nothing of the bulk is ahead
      of it in any queue, so this is the most any scheduling of one
      connection could achieve while the machine carries the bulk.

    The urgency is set on the channel (`ChannelTransport.setPriority`), so
    that the echo's replies are hinted to it too.  The order of the phases
    turns each round, so that none always follows the same one; each block
    starts after ``settle`` seconds (for the bulk to reach its pace again,
    memux's bulk mode among it) and ``warmup`` pings, both discarded.

    Comparing phases of one run, not runs of separate processes, is what
    makes the ratio honest: on a shared machine two processes' idle p99
    differed by 20 times from one run to the next.

    :returns: ``memux``, the urgent phase's p99 in microseconds;
        ``baseline``, the idle phase's; ``check``, their ratio; the p50 of
        each, and the other phases' p50 and p99; and the bulk rate in the
        urgent phase.
    """
    s = await session(reactor, params, port)
    streamers = [Streamer(params["write"], None) for _ in range(params["bulk"])]
    for streamer in streamers:
        streamer.line.addErrback(lambda _: None)  # the sink never answers
        await s.openChannel(b"sink", given(streamer))
    pinger = Pinger(params["size"])
    await s.openChannel(b"echo", given(pinger))
    transport = cast(ChannelTransport, pinger.transport)
    alone = Pinger(params["size"])
    await (await session(reactor, params, port)).openChannel(b"echo", given(alone))
    senders = [st.sender for st in streamers if st.sender is not None]
    times: dict[str, list[float]] = {phase: [] for phase in PHASES}
    bulkBytes = idleBytes = 0
    bulkSeconds = 0.0
    order = list(PHASES)
    block = max(1, min(params["block"], params["pings"]))
    while any(len(got) < params["pings"] for got in times.values()):
        for phase in order:
            wanted = min(block, params["pings"] - len(times[phase]))
            if wanted <= 0:
                continue
            bulk, urgency = PHASES[phase]
            for sender in senders:
                # Stopped, a Sender writes no more, even when resumed.
                sender.stopped = not bulk
                if bulk and not sender.paused:
                    sender.resumeProducing()
            transport.setPriority(DEFAULT_URGENCY if urgency is None else urgency)
            which = alone if urgency is None else pinger
            await task.deferLater(reactor, params["settle"], lambda: None)
            # (Idle: the first warm-up ping's echo comes after every bulk
            # byte written before it has been read: the way is clear.)
            await which.run(params["warmup"])
            before = sum(sender.sent for sender in senders)
            started = time.perf_counter()
            times[phase] += await which.run(wanted)
            written = sum(sender.sent for sender in senders) - before
            if phase == "urgent":
                bulkSeconds += time.perf_counter() - started
                bulkBytes += written
            elif phase == "idle":
                idleBytes += written
        order = order[1:] + order[:1]
    for sender in senders:
        sender.stopped = True
    micro = {phase: [t * 1e6 for t in got] for phase, got in times.items()}
    urgent, idle = micro["urgent"], micro["idle"]
    result: Result = {
        "memux": percentile(urgent, 0.99),
        "baseline": percentile(idle, 0.99),
        "p50": percentile(urgent, 0.50),
        "p90": percentile(urgent, 0.90),
        "p999": percentile(urgent, 0.999),
        "max": max(urgent),
        "idleP50": percentile(idle, 0.50),
        "rrP50": percentile(micro["roundRobin"], 0.50),
        "rrP99": percentile(micro["roundRobin"], 0.99),
        "ownP50": percentile(micro["ownConnection"], 0.50),
        "ownP99": percentile(micro["ownConnection"], 0.99),
        "pings": len(urgent),
        "idlePings": len(idle),
        # (0: the bulk channels wrote nothing while the idle phase pinged)
        "idleBulkBytes": idleBytes,
        "bulkMBps": bulkBytes / bulkSeconds / 1e6 if bulkSeconds else 0.0,
    }
    result["check"] = result["memux"] / result["baseline"]
    return result


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
