# -*- test-case-name: memux.test.test_metrics -*-
"""
Tests for L{memux.metrics}: the Prometheus collector, checked through
prometheus_client's own exposition and parser.
"""

from __future__ import annotations

import threading
from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python import threadable
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from memux.protocol import MemuxProtocol, MultiplexingFactory
from memux.services import Echo
from memux.settings import SessionSettings

try:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from memux.metrics import MemuxCollector, addTotals
except ImportError as e:  # pragma: no cover (the test extra installs it)
    MISSING = f"prometheus_client is not installed (memux[metrics]): {e}"
else:
    MISSING = ""


def scrape(registry: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    The samples of ``registry`` as Prometheus text, parsed back by
    prometheus_client: (name, sorted labels) -> value.
    """
    text = generate_latest(registry).decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class CollectorTests(SynchronousTestCase):
    """
    L{MemuxCollector} exposes what the factories' sessions did.
    """

    def setUp(self) -> None:
        if MISSING:
            raise SkipTest(MISSING)
        self.clock = Clock()
        self.factory = MultiplexingFactory(
            {b"echo": Factory.forProtocol(Echo)},
            settings=SessionSettings(maxUselessFrames=10),
            reactor=self.clock,
        )
        self.registry = CollectorRegistry()
        self.collector = MemuxCollector([self.factory])
        self.registry.register(self.collector)

    def connect(self) -> tuple[MemuxProtocol, MemuxProtocol, Any]:
        """
        A client session connected to the factory's, in memory.
        """
        client, server, pump = connectedServerAndClient(
            lambda: self.factory.buildProtocol(None),
            lambda: MemuxProtocol(client=True, reactor=self.clock),
            clock=self.clock,
        )
        return client, server, pump

    def test_sessionsAndChannels(self) -> None:
        """
        Sessions and channels open now and so far, bytes and frames by
        type and direction, refusals and the round-trip histogram, as the
        factory's totals say, through Prometheus text.
        """
        client, server, pump = self.connect()
        for service in (b"echo", b"echo", b"nothing"):
            d = client.openChannel(service, Factory.forProtocol(Protocol))
            d.result.transport.write(b"hello")  # type: ignore[attr-defined]
        server.ping()
        pump.flush()
        samples = scrape(self.registry)
        totals = self.factory.totals()
        self.assertEqual(samples[("memux_sessions_open", ())], 1)
        self.assertEqual(samples[("memux_sessions_total", ())], 1)
        self.assertEqual(samples[("memux_channels_open", ())], 2)
        self.assertEqual(samples[("memux_channels_total", (("opened_by", "peer"),))], 3)
        self.assertEqual(
            samples[("memux_channels_refused_total", (("direction", "sent"),))], 1
        )
        self.assertEqual(
            samples[
                (
                    "memux_channel_resets_total",
                    (("code", "REFUSED"), ("direction", "sent")),
                )
            ],
            1,
        )
        self.assertEqual(
            samples[("memux_bytes_total", (("direction", "received"),))],
            totals.counters.bytesReceived,
        )
        self.assertEqual(
            samples[
                ("memux_frames_total", (("direction", "received"), ("type", "OPEN")))
            ],
            3,
        )
        self.assertEqual(
            samples[("memux_frames_total", (("direction", "sent"), ("type", "DATA")))],
            2,  # the echoes
        )
        self.assertEqual(samples[("memux_ping_rtt_seconds_count", ())], 1)
        self.assertEqual(
            samples[("memux_ping_rtt_seconds_bucket", (("le", "+Inf"),))], 1
        )

    def test_endedAndCut(self) -> None:
        """
        Counters keep what ended sessions did; sessions cut for a PING
        flood count under C{EXCESSIVE_LOAD}, with the GOAWAY sent.
        """
        client, server, pump = self.connect()
        for _ in range(20):
            client.ping().addErrback(lambda _: None)
        pump.flush()
        self.assertFalse(server.connected)
        samples = scrape(self.registry)
        self.assertEqual(samples[("memux_sessions_open", ())], 0)
        self.assertEqual(
            samples[("memux_sessions_ended_total", (("cause", "EXCESSIVE_LOAD"),))], 1
        )
        self.assertEqual(
            samples[
                (
                    "memux_goaways_total",
                    (("code", "EXCESSIVE_LOAD"), ("direction", "sent")),
                )
            ],
            1,
        )
        self.assertGreater(samples[("memux_useless_frames_total", ())], 10)
        self.assertGreater(
            samples[("memux_bytes_total", (("direction", "received"),))], 0
        )

    def test_noChannelLabels(self) -> None:
        """
        No metric has a label naming a channel, a peer or a service: only
        the bounded sets of direction, type, code, cause, scope and side.
        """
        client, server, pump = self.connect()
        for _ in range(5):
            client.openChannel(b"echo", Factory.forProtocol(Protocol))
        pump.flush()
        labels = {name for key in scrape(self.registry) for name, _ in key[1]}
        self.assertLessEqual(
            labels, {"direction", "type", "code", "cause", "scope", "opened_by", "le"}
        )

    def test_registeredNames(self) -> None:
        """
        The collector declares its metric names, so registering it twice
        in one registry is refused as a duplicate.
        """
        self.assertRaises(ValueError, self.registry.register, MemuxCollector())

    def test_severalFactories(self) -> None:
        """
        A collector of several factories reports their sum.
        """
        other = MultiplexingFactory(reactor=self.clock)
        self.collector.add(other)
        self.connect()
        connectedServerAndClient(
            lambda: other.buildProtocol(None),
            lambda: MemuxProtocol(client=True, reactor=self.clock),
            clock=self.clock,
        )[2].flush()
        self.assertEqual(scrape(self.registry)[("memux_sessions_open", ())], 2)
        self.assertEqual(
            addTotals([self.factory.totals(), other.totals()]).sessionsStarted, 2
        )

    def test_otherThread(self) -> None:
        """
        Scraped from another thread than the reactor's, the collector reads
        the sessions in the reactor's thread (through
        C{blockingCallFromThread}), not in its own.
        """
        self.connect()
        seen: list[str] = []
        factory = self.factory
        totals = factory.totals

        def inThread() -> Any:
            seen.append(threading.current_thread().name)
            return totals()

        factory.totals = inThread  # type: ignore[method-assign]

        class Reactor:
            def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
                calls.append((f, args, kwargs))

        calls: list[Any] = []
        collector = MemuxCollector([factory], reactor=Reactor())  # type: ignore[arg-type]
        results: list[Any] = []
        previous = threadable.ioThread
        threadable.ioThread = threadable.getThreadID()
        self.addCleanup(setattr, threadable, "ioThread", previous)
        scraper = threading.Thread(
            target=lambda: results.append(collector.totals()), name="scraper"
        )
        scraper.start()
        while not calls:
            scraper.join(0.01)
        f, args, kwargs = calls.pop()
        f(*args, **kwargs)  # the reactor's turn, in this (its) thread
        scraper.join(10)
        self.assertEqual(seen, [threading.current_thread().name])
        self.assertEqual(results[0].sessionsOpen, 1)
