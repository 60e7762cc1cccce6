# -*- test-case-name: memux.test.test_status -*-
"""
Tests for the status site (L{memux.status}), C{twistd memux --status} and
C{memux stat}: units in memory, and end to end with the real C{twistd
memux} on loopback.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
from typing import Any, cast

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProcessTransport, IReactorProcess
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, Cooperator, deferLater
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from memux._cli._common import UsageError as CLIUsageError
from memux._cli._stat import _Always, formatStatus, statusEndpoint
from memux.introspect import FactorySnapshot
from memux.protocol import MemuxProtocol, MultiplexingFactory, connectSession
from memux.services import Echo
from memux.status import NO_METRICS, MetricsPage, SessionsResource, statusSite
from memux.tap import Options, _StatusEndpoint
from memux.test._helpers import ROOT, CLIProcess, freePort, globalReactor, spawnCLI

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as e:  # pragma: no cover (the test extra installs it)
    MISSING = f"prometheus_client is not installed (memux[metrics]): {e}"
else:
    MISSING = ""


def render(
    resource: Any, path: bytes = b"", args: dict[bytes, list[bytes]] | None = None
) -> tuple[int, dict[bytes, bytes], bytes]:
    """
    Render ``resource`` for a GET: (status code, headers, body).
    """
    request = DummyRequest([path])
    request.args = args or {}
    body = resource.render(request)
    if body == NOT_DONE_YET:
        # Written in turns of the resource's cooperator: run them all.
        clock = resource.clock
        while not request.finished:
            clock.advance(0)
        body = b"".join(request.written)
    headers = {
        name.lower(): values[-1]
        for name, values in request.responseHeaders.getAllRawHeaders()
    }
    return request.responseCode or 200, headers, body


class Turns:
    """
    A Cooperator's scheduler whose turns run one at a time, when
    C{advance} says (a L{Clock} would run the turns a turn schedules in
    the same C{advance}).
    """

    def __init__(self) -> None:
        self.calls: list[Turn] = []

    def schedule(self, f: Any) -> Turn:
        turn = Turn(f)
        self.calls.append(turn)
        return turn

    def advance(self, seconds: float) -> None:
        """
        Run the turns scheduled so far (not those they schedule).
        """
        calls, self.calls = self.calls, []
        for turn in calls:
            if not turn.cancelled:
                turn.f()


class Turn:
    """
    One turn of L{Turns}.
    """

    def __init__(self, f: Any) -> None:
        self.f = f
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Sink(Protocol):
    """
    Takes what it is given.
    """


def servedFactory() -> tuple[MultiplexingFactory, MemuxProtocol, Any]:
    """
    A server factory with one session (and one open echo channel from its
    client), in memory.
    """
    clock = Clock()
    factory = MultiplexingFactory({b"echo": Factory.forProtocol(Echo)}, reactor=clock)
    client, server, pump = connectedServerAndClient(
        lambda: factory.buildProtocol(None),
        lambda: MemuxProtocol(client=True, reactor=clock),
        clock=clock,
    )
    d = client.openChannel(b"echo", Factory.forProtocol(Sink))
    d.result.transport.write(b"ping" * 100)  # type: ignore[attr-defined]
    pump.flush()
    return factory, client, pump


class SiteTests(SynchronousTestCase):
    """
    The pages of the status site.
    """

    def sessionsPage(self, factories: list[MultiplexingFactory]) -> SessionsResource:
        """
        C{/sessions} of C{factories}, written one step per turn of its
        C{turns} (a L{Turns}).
        """
        turns = Turns()
        cooperator = Cooperator(
            terminationPredicateFactory=lambda: lambda: True,
            scheduler=cast(Any, turns.schedule),
        )
        page = SessionsResource(factories, cooperator)
        page.clock = turns  # type: ignore[attr-defined]
        return page

    def test_sessions(self) -> None:
        """
        C{/sessions} is the JSON of each factory's snapshot, which reads
        back as one; C{?channels=0} leaves the channels out.
        """
        factory, _, _ = servedFactory()
        code, headers, body = render(self.sessionsPage([factory]))
        self.assertEqual(code, 200)
        self.assertEqual(headers[b"content-type"], b"application/json")
        [snap] = [FactorySnapshot.fromJSON(x) for x in json.loads(body)]
        self.assertEqual(snap, dataclasses.replace(factory.snapshot(), time=snap.time))
        [session] = snap.sessions
        [channel] = session.channels
        self.assertEqual((channel.service, channel.bytesReceived), ("echo", 400))
        code, _, body = render(self.sessionsPage([factory]), args={b"channels": [b"0"]})
        [bare] = json.loads(body)
        self.assertEqual(bare["sessions"][0]["channels"], [])

    def test_sessionsInTurns(self) -> None:
        """
        C{/sessions} writes one session per turn of its cooperator, so a
        big server's reactor runs in between; several factories make one
        list.
        """
        first, _, _ = servedFactory()
        second, _, _ = servedFactory()
        extra = MemuxProtocol(client=True, reactor=Clock())
        connectedServerAndClient(
            lambda: second.buildProtocol(None), lambda: extra, clock=Clock()
        )
        page = self.sessionsPage([first, second])
        request = DummyRequest([b""])
        self.assertEqual(page.render(request), NOT_DONE_YET)
        clock: Turns = page.clock  # type: ignore[attr-defined]
        turns = 0
        while not request.finished:
            clock.advance(0)
            turns += 1
        self.assertGreaterEqual(turns, 3)
        data = json.loads(b"".join(request.written))
        self.assertEqual([len(f["sessions"]) for f in data], [1, 2])

    def test_sessionsClientGone(self) -> None:
        """
        A client that goes away while C{/sessions} is written stops the
        writing; nothing more is written, and nothing fails.
        """
        factory, _, _ = servedFactory()
        extra = MemuxProtocol(client=True, reactor=Clock())
        connectedServerAndClient(
            lambda: factory.buildProtocol(None), lambda: extra, clock=Clock()
        )
        page = self.sessionsPage([factory])
        request = DummyRequest([b""])
        page.render(request)
        clock: Turns = page.clock  # type: ignore[attr-defined]
        clock.advance(0)
        written = len(request.written)
        request.processingFailed(Failure(ConnectionDone()))
        for _ in range(5):
            clock.advance(0)
        self.assertEqual(len(request.written), written)
        self.assertFalse(request.finished)

    def test_metrics(self) -> None:
        """
        C{/metrics} is Prometheus text (OpenMetrics when asked for).
        """
        if MISSING:
            raise SkipTest(MISSING)
        factory, _, _ = servedFactory()
        site = statusSite([factory])
        page = site.resource.getChildWithDefault(b"metrics", DummyRequest([]))
        code, headers, body = render(page)
        self.assertEqual(code, 200)
        self.assertTrue(headers[b"content-type"].startswith(b"text/plain"))
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        self.assertEqual(families["memux_channels_open"].samples[0].value, 1)
        request = DummyRequest([])
        request.requestHeaders.setRawHeaders(
            b"accept", [b"application/openmetrics-text; version=1.0.0"]
        )
        body = page.render(request)
        self.assertIn(
            b"application/openmetrics-text",
            request.responseHeaders.getRawHeaders(b"content-type", [b""])[0],
        )
        self.assertTrue(body.endswith(b"# EOF\n"))

    def test_noPrometheus(self) -> None:
        """
        Without prometheus_client, C{/metrics} answers 501 and says what to
        install.
        """
        code, _, body = render(MetricsPage(None))
        self.assertEqual(code, 501)
        self.assertEqual(body, NO_METRICS)
        self.assertIn(b"memux[metrics]", body)


class FormatTests(SynchronousTestCase):
    """
    C{memux stat}'s table.
    """

    def test_table(self) -> None:
        """
        A session line (peer, state) is followed by a line per channel with
        its id, service, state and bytes.
        """
        factory, client, _ = servedFactory()
        text = formatStatus([factory.snapshot()], "tcp:127.0.0.1:9400")
        lines = text.splitlines()
        self.assertIn("tcp:127.0.0.1:9400", lines[0])
        self.assertIn("1 session", lines[0])
        self.assertIn("1 channel", lines[0])
        self.assertEqual(lines[1].split()[0], "Peer")
        self.assertIn("usable", lines[2])
        self.assertEqual(lines[3].split()[:3], ["Chan", "Service", "State"])
        self.assertEqual(lines[4].split()[:5], ["1", "echo", "OPEN", "400B", "400B"])

    def test_endpoints(self) -> None:
        """
        ENDPOINT is a client endpoint string, a bare HOST:PORT (TCP) or a
        path (a UNIX socket); anything else is a usage error.
        """
        reactor = globalReactor()
        self.assertIsInstance(
            statusEndpoint(reactor, "127.0.0.1:9400"), TCP4ClientEndpoint
        )
        self.assertIsInstance(
            statusEndpoint(reactor, "tcp:127.0.0.1:9400"), TCP4ClientEndpoint
        )
        self.assertIsInstance(
            statusEndpoint(reactor, "/run/s.sock"), UNIXClientEndpoint
        )
        self.assertRaises(CLIUsageError, statusEndpoint, reactor, "nonsense:x")


class OptionTests(SynchronousTestCase):
    """
    C{twistd memux --status}.
    """

    def test_offByDefault(self) -> None:
        """
        Without C{--status} there is no status site.
        """
        options = Options()
        options.parseOptions([])
        self.assertIsNone(options["status"])

    def test_badEndpoint(self) -> None:
        """
        A C{--status} that is not a server endpoint is refused, naming it.
        """
        options = Options()
        e = self.assertRaises(UsageError, options.parseOptions, ["--status", "frob:1"])
        self.assertIn("--status 'frob:1' is not a server endpoint", str(e))


class TwistdStatusTests(TestCase):
    """
    The real C{twistd memux --status} on loopback, with clients opening
    channels, read by HTTP and by C{memux stat}.
    """

    timeout = 120

    async def test_endToEnd(self) -> None:
        """
        With channels open, C{/metrics} (parsed by prometheus_client)
        counts the session and its channels, C{/sessions} lists them, and
        C{memux stat} prints them, as a table and with C{--json}.
        """
        if MISSING:
            raise SkipTest(MISSING)
        reactor = globalReactor()
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        port, statusPort = freePort(), freePort()
        server = CLIProcess(stdin=None)
        transport = cast(IReactorProcess, reactor).spawnProcess(
            server,
            sys.executable,
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                "memux",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--status",
                f"tcp:{statusPort}:interface=127.0.0.1",
            ],
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            path=directory,
        )

        def stop() -> Any:
            if server.ended.called:
                return None
            transport.signalProcess("TERM")
            return server.ended

        self.addCleanup(stop)
        await server.waitForStdout(rb"memux status \(/metrics, /sessions\) on 127")
        session = await connectSession(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port), reactor=reactor
        )
        self.addCleanup(session.loseConnection)
        for _ in range(3):
            p = await session.openChannel(b"echo", Factory.forProtocol(Sink))
            p.transport.write(b"x" * 1000)  # type: ignore[attr-defined]
        await session.openChannel(b"nothing", Factory.forProtocol(Sink))
        await session.ping()
        await deferLater(reactor, 0.2, lambda: None)

        agent = Agent.usingEndpointFactory(
            reactor, _Always(TCP4ClientEndpoint(reactor, "127.0.0.1", statusPort))
        )

        async def get(path: bytes) -> bytes:
            response = await agent.request(b"GET", b"http://status" + path)
            self.assertEqual(response.code, 200)
            body: bytes = await readBody(response)
            return body

        text = (await get(b"/metrics")).decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }
        self.assertEqual(samples[("memux_sessions_open", ())], 1)
        self.assertEqual(samples[("memux_channels_open", ())], 3)
        self.assertEqual(samples[("memux_channels_total", (("opened_by", "peer"),))], 4)
        self.assertEqual(
            samples[("memux_channels_refused_total", (("direction", "sent"),))], 1
        )
        self.assertGreaterEqual(
            samples[("memux_bytes_total", (("direction", "received"),))], 3000
        )

        [snap] = [
            FactorySnapshot.fromJSON(x) for x in json.loads(await get(b"/sessions"))
        ]
        [s] = snap.sessions
        self.assertEqual(s.transport, "TCP")
        self.assertEqual(s.peer.split(":")[0], "127.0.0.1")
        self.assertEqual(
            sorted((c.channel, c.service, c.bytesReceived) for c in s.channels),
            [(1, "echo", 1000), (3, "echo", 1000), (5, "echo", 1000)],
        )

        out, err, code = await spawnCLI(self, "stat", f"127.0.0.1:{statusPort}").ended
        self.assertEqual(code, 0, err)
        lines = out.decode().splitlines()
        self.assertIn("1 session", lines[0])
        channels = [line.split() for line in lines if line.startswith("    ")]
        self.assertEqual(
            [c[:3] for c in channels[1:]], [[str(i), "echo", "OPEN"] for i in (1, 3, 5)]
        )
        self.assertEqual({c[3] for c in channels[1:]}, {"1000B"})

        out, err, code = await spawnCLI(
            self, "stat", "--json", f"tcp:127.0.0.1:{statusPort}"
        ).ended
        self.assertEqual(code, 0, err)
        [again] = [FactorySnapshot.fromJSON(x) for x in json.loads(out)]
        self.assertEqual(again.totals.channelsOpen, 3)

        watching = spawnCLI(
            self, "stat", "--watch", "-i", "0.1", "--json", f"127.0.0.1:{statusPort}"
        )
        await watching.waitForStdout(rb"(.+\n){3}")
        cast(IProcessTransport, watching.transport).signalProcess("INT")
        out, err, code = await watching.ended
        self.assertEqual(code, 0, err)
        lines = out.decode().splitlines()
        self.assertGreaterEqual(len(lines), 3)
        for line in lines:
            [snap] = [FactorySnapshot.fromJSON(x) for x in json.loads(line)]
            self.assertEqual(snap.totals.sessionsOpen, 1)

    async def test_unreachable(self) -> None:
        """
        C{memux stat} at an endpoint where nothing listens exits with
        status 3 (cannot connect) and says so on standard error.
        """
        out, err, code = await spawnCLI(self, "stat", f"127.0.0.1:{freePort()}").ended
        self.assertEqual(code, 3)
        self.assertEqual(out, b"")
        self.assertIn(b"memux stat: cannot read", err)


class StatusListeningTests(SynchronousTestCase):
    """
    Where C{twistd memux --status} listens is logged, with a warning when
    other hosts can reach it.
    """

    def listened(self, address: Any) -> list[dict[str, Any]]:
        """
        The events logged when the status endpoint listens at C{address}.
        """
        events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

        class Port:
            def getHost(self) -> Any:
                return address

        _StatusEndpoint(None, "tcp:9400")._listening(Port())  # type: ignore[arg-type]
        return [e for e in events if e.get("log_namespace") == "memux.tap"]

    def test_loopback(self) -> None:
        """
        On a loopback address (IPv4 or IPv6) or a UNIX socket: one info
        line naming the address, no warning.
        """
        for address in (
            IPv4Address("TCP", "127.0.0.1", 9400),
            IPv6Address("TCP", "::1", 9400),
            UNIXAddress(b"/run/memux/status.sock"),
        ):
            [event] = self.listened(address)
            self.assertEqual(event["log_level"], LogLevel.info)
            self.assertIn("memux status (/metrics, /sessions) on", formatEvent(event))

    def test_everywhere(self) -> None:
        """
        On every address (C{tcp:9400} with no interface), or any address
        that is not loopback, a warning says so.
        """
        for host in ("0.0.0.0", "::", "192.0.2.7"):
            events = self.listened(IPv4Address("TCP", host, 9400))
            self.assertEqual(
                [e["log_level"] for e in events], [LogLevel.info, LogLevel.warn]
            )
            self.assertIn(f"listens on {host}, reachable", formatEvent(events[1]))
