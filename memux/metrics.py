# -*- test-case-name: memux.test.test_metrics -*-
"""
Prometheus metrics for memux servers and clients, with ``prometheus_client``
(``pip install 'memux[metrics]'``).

`MemuxCollector` is a custom collector: at each scrape it reads
`MultiplexingFactory.totals` of the factories it watches (the counters
every session keeps anyway), so metrics cost nothing per frame, and a
scrape costs a few microseconds per connected session, none per channel.
No metric has a per-channel or per-peer label.

    from prometheus_client import REGISTRY
    from memux.metrics import MemuxCollector

    collector = MemuxCollector([factory])
    REGISTRY.register(collector)

``twistd memux --status`` does this, and serves the result on
``/metrics`` (see `memux.status`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import accumulate
from typing import cast

from twisted.internet.interfaces import IReactorFromThreads
from twisted.python import threadable

from memux.introspect import RTT_BUCKETS, SessionCounters, Totals
from memux.protocol import MultiplexingFactory

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
except ImportError as e:  # pragma: no cover (the test extra installs it)
    raise ImportError(
        "memux.metrics needs prometheus_client: pip install 'memux[metrics]'"
    ) from e

__all__ = ["MemuxCollector", "addTotals"]


def addTotals(totals: Iterable[Totals]) -> Totals:
    """
    Several factories' `Totals`, added up.
    """
    counters = SessionCounters.zero()
    open_ = started = channels = 0
    ended: dict[str, int] = {}
    for t in totals:
        counters = counters + t.counters
        open_ += t.sessionsOpen
        started += t.sessionsStarted
        channels += t.channelsOpen
        for cause, n in t.sessionsEnded.items():
            ended[cause] = ended.get(cause, 0) + n
    return Totals(counters, open_, started, channels, ended)


class MemuxCollector:
    """
    The metrics of the sessions of ``factories`` (`MultiplexingFactory`
    instances; more with `add`), all together, read at each scrape.

    A scrape from another thread than the reactor's (as
    ``prometheus_client``'s own HTTP server and its Twisted
    ``MetricsResource`` do) reads the sessions in the reactor's thread,
    through ``reactor``, so it never sees them change under it.
    """

    def __init__(
        self,
        factories: Iterable[MultiplexingFactory] = (),
        reactor: IReactorFromThreads | None = None,
    ) -> None:
        self.factories = list(factories)
        self._reactor = reactor

    def add(self, factory: MultiplexingFactory) -> None:
        """
        Watch ``factory``'s sessions too.
        """
        self.factories.append(factory)

    def totals(self) -> Totals:
        """
        The watched factories' `Totals`, added up, read in the reactor's
        thread.
        """
        if threadable.ioThread is None or threadable.isInIOThread():
            return addTotals(f.totals() for f in self.factories)
        from twisted.internet.threads import blockingCallFromThread

        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = cast(IReactorFromThreads, globalReactor)
        return blockingCallFromThread(reactor, self.totals)

    def describe(self) -> list[Metric]:
        """
        The metrics, with no values: what a registry checks names with.
        """
        return list(_families(Totals(SessionCounters.zero(), 0, 0, 0, {})))

    def collect(self) -> Iterator[Metric]:
        """
        The metrics, as at this moment.
        """
        return _families(self.totals())


def _families(t: Totals) -> Iterator[Metric]:
    """
    The metrics of ``t``.
    """
    c = t.counters
    yield GaugeMetricFamily(
        "memux_sessions_open", "memux sessions connected now", t.sessionsOpen
    )
    yield CounterMetricFamily(
        "memux_sessions", "memux sessions connected so far", t.sessionsStarted
    )
    ended = CounterMetricFamily(
        "memux_sessions_ended",
        "memux sessions ended, by cause: closed, lost, a timeout"
        " (handshake_timeout, idle_timeout, keepalive_timeout, write_timeout),"
        " or the error code this side ended it with (EXCESSIVE_LOAD:"
        " cut for abuse), or the peer's (peer_CODE)",
        labels=["cause"],
    )
    for cause, n in sorted(t.sessionsEnded.items()):
        ended.add_metric([cause], n)
    yield ended
    yield GaugeMetricFamily(
        "memux_channels_open", "memux channels open now", t.channelsOpen
    )
    channels = CounterMetricFamily(
        "memux_channels",
        "memux channels opened so far, by the side that opened them",
        labels=["opened_by"],
    )
    channels.add_metric(["local"], c.channelsOpened)
    channels.add_metric(["peer"], c.channelsAccepted)
    yield channels
    refused = CounterMetricFamily(
        "memux_channels_refused",
        "memux channels refused (RESET REFUSED), by direction of the refusal",
        labels=["direction"],
    )
    refused.add_metric(["sent"], c.resetsSent.get("REFUSED", 0))
    refused.add_metric(["received"], c.resetsReceived.get("REFUSED", 0))
    yield refused
    yield _byCode(
        "memux_channel_resets",
        "memux RESET frames (refusals included), by code and direction",
        c.resetsSent,
        c.resetsReceived,
    )
    yield _byCode(
        "memux_goaways",
        "memux GOAWAY frames, by code and direction",
        c.goAwaysSent,
        c.goAwaysReceived,
    )
    sizes = CounterMetricFamily(
        "memux_bytes",
        "bytes memux wrote to and read from its connections (frames)",
        labels=["direction"],
    )
    sizes.add_metric(["sent"], c.bytesSent)
    sizes.add_metric(["received"], c.bytesReceived)
    yield sizes
    pings = CounterMetricFamily(
        "memux_ping_bytes",
        "of memux_bytes, the bytes of PING frames (liveness and round trips)",
        labels=["direction"],
    )
    pings.add_metric(["sent"], c.pingBytesSent)
    pings.add_metric(["received"], c.pingBytesReceived)
    yield pings
    frames = CounterMetricFamily(
        "memux_frames",
        "memux frames (and prefaces), by type and direction",
        labels=["type", "direction"],
    )
    for direction, counts in (("sent", c.framesSent), ("received", c.framesReceived)):
        for kind, n in sorted(counts.items()):
            frames.add_metric([kind, direction], n)
    yield frames
    stalls = CounterMetricFamily(
        "memux_credit_stalls",
        "times a memux channel with data queued had to wait for the peer's"
        " credit, on that channel or on the whole session",
        labels=["scope"],
    )
    stalls.add_metric(["channel"], c.channelCreditStalls)
    stalls.add_metric(["session"], c.sessionCreditStalls)
    yield stalls
    yield CounterMetricFamily(
        "memux_useless_frames",
        "frames from peers that did no work (the flood limit counts them)",
        c.uselessFrames,
    )
    bounds = [*(f"{b:g}" for b in RTT_BUCKETS), "+Inf"]
    cumulative = list(accumulate(c.rttCounts))
    rtt = HistogramMetricFamily(
        "memux_ping_rtt_seconds",
        "round trips of memux PINGs (keepalives, window tuning, ping())",
    )
    rtt.add_metric([], list(zip(bounds, cumulative, strict=True)), c.rttSum)
    yield rtt


def _byCode(
    name: str, documentation: str, sent: dict[str, int], received: dict[str, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=["code", "direction"])
    for direction, counts in (("sent", sent), ("received", received)):
        for code, n in sorted(counts.items()):
            family.add_metric([code, direction], n)
    return family
