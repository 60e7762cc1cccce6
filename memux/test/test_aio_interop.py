"""
The asyncio front end (L{memux.aio}) against the Twisted one, on real
loopback sockets, both ways: asyncio clients of the ``twistd memux``
server (its service, run on the trial reactor, and once as a real
``twistd`` process), and Twisted clients (L{connectSession}) of an asyncio
server.  The asyncio side runs in a thread with an event loop of its own
while the reactor runs the Twisted side.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import sys
import threading
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorProcess,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from memux import ChannelRefused as TwistedChannelRefused
from memux import ChannelReset as TwistedChannelReset
from memux import MultiplexingFactory, aio, connectSession
from memux.aio import Channel, ErrorCode, SessionSettings
from memux.interfaces import IMessageReceiver
from memux.services import Chargen, Echo
from memux.test._fakes import EndingRecorder, MessageCollector, factoryOf
from memux.test._helpers import (
    HOSTNAME,
    ROOT,
    Certificates,
    CLIProcess,
    ServerTestCase,
    cliEnvironment,
    globalReactor,
    runAsyncio,
)
from memux.tls import clientTLSOptions, serverTLSOptions, tlsServerFactory

LOCAL = "127.0.0.1"
LISTEN = "tcp:0:interface=127.0.0.1"


def inThread(main: Any, timeout: float = 120) -> defer.Deferred[Any]:
    """
    Run C{main()} in a fresh asyncio loop in a thread; fire with its result.
    """
    return deferToThread(runAsyncio, main, timeout)


# ------------------------------------------------------------ Twisted services


class Resetter(Protocol):
    """
    Resets its channel with CONNECT_ERROR as soon as anything arrives.
    """

    def dataReceived(self, data: bytes) -> None:
        cast(Any, self.transport).resetChannel(ErrorCode.CONNECT_ERROR, "no route")


class Drainer(Protocol):
    """
    Drains its session's server (GOAWAY to every session) when opened.
    """

    def connectionMade(self) -> None:
        factory = cast(Any, self.transport).session.factory
        factory.drain(None)


class AsyncioClientTests(ServerTestCase):
    """
    An asyncio client against the Twisted server: ``twistd memux``'s
    service with its built-in echo, discard and chargen, and a
    L{MultiplexingFactory} with services of the tests' own.
    """

    timeout = 120

    def setUp(self) -> None:
        super().setUp()
        server = self.serve("--listen", LISTEN)
        self.port = self.tcpPort(server)

    async def test_echo(self) -> None:
        """
        Messages of any size keep their boundaries through the Twisted echo
        service; a byte stream comes back as bytes, line by line.
        """
        port = self.port

        async def main() -> tuple[bool, list[bytes]]:
            session = await aio.connect(LOCAL, port)
            channel = await session.open_channel(b"echo")
            sent = [b"one", b"", os.urandom(300_000), b"last"]
            for message in sent:
                await channel.send_message(message)
            got = [await channel.receive_message() for _ in sent]
            channel.close()
            reader, writer = await session.open_streams(b"echo")
            writer.write(b"line 1\nline 2\n")
            lines = [await reader.readline(), await reader.readline()]
            writer.close()
            await session.goaway()
            return got == sent, lines

        same, lines = await inThread(main)
        self.assertTrue(same)
        self.assertEqual(lines, [b"line 1\n", b"line 2\n"])

    async def test_discard(self) -> None:
        """
        4 MiB written to discard, then a close, end the channel cleanly.
        """
        port = self.port

        async def main() -> None:
            session = await aio.connect(LOCAL, port)
            channel = await session.open_channel(b"discard")
            for _ in range(64):
                await channel.write(b"d" * 65536)
            channel.close()
            await channel.wait_closed()
            await session.goaway()

        await inThread(main)

    async def test_chargen(self) -> None:
        """
        chargen's stream reads as the RFC 864 pattern, and stops (its
        channel's credit used up) while nobody reads.
        """
        port = self.port
        block = Chargen.block

        async def main() -> tuple[bytes, int]:
            session = await aio.connect(LOCAL, port)
            channel = await session.open_channel(b"chargen")
            data = await channel.readexactly(3 * len(block))
            await asyncio.sleep(0.3)
            received = session.counters()["bytesReceived"]
            await asyncio.sleep(0.3)
            growth = session.counters()["bytesReceived"] - received
            channel.close()
            await session.goaway()
            return data, growth

        data, growth = await inThread(main)
        self.assertEqual(data, block * 3)
        self.assertEqual(growth, 0)

    async def test_thousandChannels(self) -> None:
        """
        A thousand channels open at once on one session each get their own
        echo.
        """
        port = self.port

        async def main() -> list[bool]:
            session = await aio.connect(LOCAL, port)

            async def one(i: int) -> bool:
                channel = await session.open_channel(b"echo")
                await channel.send_message(b"%d" % i)
                ok = await channel.receive_message() == b"%d" % i
                channel.close()
                return ok

            results = await asyncio.gather(*map(one, range(1000)))
            await session.goaway()
            return list(results)

        self.assertEqual(await inThread(main), [True] * 1000)

    async def test_bulkWithBackpressure(self) -> None:
        """
        64 MiB go through the echo service and back intact, written while
        they are read, and the writer's queue in the core stays bounded:
        writes wait for credit instead of buffering.
        """
        port = self.port

        async def main() -> tuple[bytes, bytes, int, int]:
            session = await aio.connect(LOCAL, port)
            channel = await session.open_channel(b"echo")
            engine = session._core.engine
            sent = hashlib.sha256()
            highest = 0

            async def write() -> None:
                nonlocal highest
                block = os.urandom(1 << 16)
                for _ in range(1024):
                    sent.update(block)
                    await channel.write(block)
                    highest = max(highest, engine.queuedBytes(channel.id))
                channel.write_eof()

            async def read() -> bytes:
                got = hashlib.sha256()
                while data := await channel.read(1 << 20):
                    got.update(data)
                return got.digest()

            _, digest = await asyncio.gather(write(), read())
            await session.goaway()
            return sent.digest(), digest, highest, session._core.highWater

        sent, got, highest, highWater = await inThread(main)
        self.assertEqual(sent, got)
        self.assertLessEqual(highest, highWater + (1 << 16))

    async def test_refused(self) -> None:
        """
        A channel to a service the Twisted server lacks is refused, with
        its reason, as L{aio.ChannelRefused}.
        """
        port = self.port

        async def main() -> aio.ChannelRefused:
            session = await aio.connect(LOCAL, port)
            channel = await session.open_channel(b"nope")
            try:
                await channel.receive_message()
            except aio.ChannelRefused as e:
                return e
            finally:
                await session.goaway()
            raise AssertionError("not refused")

        refused = await inThread(main)
        self.assertEqual(refused.reason, "no service 'nope'")

    async def test_ping(self) -> None:
        """
        A PING to the Twisted server comes back: the round trip in seconds.
        """
        port = self.port

        async def main() -> float:
            session = await aio.connect(LOCAL, port)
            rtt = await session.ping()
            await session.goaway()
            return rtt

        rtt = await inThread(main)
        self.assertGreater(rtt, 0)

    async def test_halfClose(self) -> None:
        """
        After the asyncio side's C{write_eof}, the echo of what it wrote
        still arrives, then the end, and the channel ends cleanly.
        """
        port = self.port

        async def main() -> bytes:
            session = await aio.connect(LOCAL, port)
            channel = await session.open_channel(b"echo")
            await channel.write(b"half")
            channel.write_eof()
            data = await channel.read()
            await channel.wait_closed()
            await session.goaway()
            return data

        self.assertEqual(await inThread(main), b"half")

    async def test_resetBothWays(self) -> None:
        """
        A Twisted protocol's C{resetChannel(code, reason)} reaches the
        asyncio reader as L{aio.ChannelReset} with them, and an asyncio
        C{reset} reaches the Twisted protocol as its L{ChannelReset}.
        """
        recorders: list[EndingRecorder] = []
        factory = MultiplexingFactory(
            {
                b"reset": Factory.forProtocol(Resetter),
                b"record": factoryOf(recorders, EndingRecorder),
            }
        )
        port = await self.listenTCP(factory)

        async def main() -> tuple[int, str]:
            session = await aio.connect(LOCAL, port)
            channel = await session.open_channel(b"reset")
            await channel.write(b"x")
            try:
                await channel.read()
            except aio.ChannelReset as e:
                result = (e.code, e.reason)
            other = await session.open_channel(b"record")
            await other.write(b"y")
            await session.ping()
            other.reset(0x77, "mine")
            await session.ping()
            session.close()
            await session.wait_closed()
            return result

        self.assertEqual(await inThread(main), (ErrorCode.CONNECT_ERROR, "no route"))
        (recorder,) = recorders
        assert recorder.reason is not None
        error = recorder.reason.value
        self.assertIsInstance(error, TwistedChannelReset)
        self.assertEqual((error.code, error.reason), (0x77, "mine"))  # type: ignore
        self.assertEqual(recorder.data, b"y")
        await self.closeServerSessions()

    async def test_goaway(self) -> None:
        """
        When the Twisted server drains, the asyncio client sees GOAWAY: a
        new channel is refused, one already open carries on, and the
        session closes once it ends.
        """
        factory = MultiplexingFactory(
            {b"drain": Factory.forProtocol(Drainer), b"echo": self.echoFactory()}
        )
        port = await self.listenTCP(factory)

        async def main() -> tuple[bytes | None, str]:
            session = await aio.connect(LOCAL, port)
            echo = await session.open_channel(b"echo")
            await echo.send_message(b"before")
            await echo.receive_message()
            drain = await session.open_channel(b"drain")
            while session._core.goAwayReceived is None:
                await asyncio.sleep(0.01)
            try:
                await session.open_channel(b"echo")
            except aio.ChannelRefused:
                pass
            else:
                raise AssertionError("a channel opened after GOAWAY")
            await echo.send_message(b"after")
            answer = await echo.receive_message()
            echo.close()
            drain.close()
            await session.wait_closed()
            return answer, str(session.lost_error)

        answer, lost = await inThread(main)
        self.assertEqual(answer, b"after")
        self.assertIn("GOAWAY", lost)

    def echoFactory(self) -> Any:
        """
        The built-in echo service's factory.
        """
        return Factory.forProtocol(Echo)


class TLSTests(ServerTestCase):
    """
    TLS with ALPN memux/1 between the front ends, both ways.
    """

    timeout = 120

    def setUp(self) -> None:
        super().setUp()
        self.certs = Certificates(self.mktemp())

    async def test_asyncioClientTwistedServer(self) -> None:
        """
        An asyncio client with an C{ssl} context reaches the Twisted TLS
        server (L{memux.tls}), which selects ALPN memux/1; one that offers
        only another protocol is refused by the handshake.
        """
        factory = MultiplexingFactory({b"echo": Factory.forProtocol(Echo)})
        options = serverTLSOptions(self.certs.serverPEM)
        port = await self.listenTCP(tlsServerFactory(factory, options))
        certs = self.certs

        async def main() -> tuple[str, bytes | None, bool]:
            context = ssl.create_default_context()
            certs.ca.configure_trust(context)
            session = await aio.connect(
                LOCAL, port, ssl=context, server_hostname=HOSTNAME
            )
            alpn = session.get_extra_info("ssl_object").selected_alpn_protocol()
            channel = await session.open_channel(b"echo")
            await channel.send_message(b"secret")
            answer = await channel.receive_message()
            session.close()
            await session.wait_closed()
            # (Offering only h2: asyncio's own client, not memux.aio's,
            # which always offers memux/1.)
            other = ssl.create_default_context()
            certs.ca.configure_trust(other)
            other.set_alpn_protocols(["h2"])
            try:
                _, writer = await asyncio.open_connection(
                    LOCAL, port, ssl=other, server_hostname=HOSTNAME
                )
            except ssl.SSLError:
                refused = True
            else:
                refused = False
                writer.close()
            return alpn, answer, refused

        alpn, answer, refused = await inThread(main)
        self.assertEqual((alpn, answer, refused), ("memux/1", b"secret", True))
        await self.closeServerSessions()

    async def test_twistedClientAsyncioServer(self) -> None:
        """
        A Twisted TLS client (L{memux.tls.clientTLSOptions}) reaches an
        asyncio server with an C{ssl} context, which selects ALPN memux/1.
        """
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.certs.server.configure_cert(context)

        async def echo(channel: Channel) -> None:
            async for message in channel:
                await channel.send_message(message)

        server = AsyncioServer({b"echo": echo}, ssl=context)
        self.addCleanup(server.stop)
        options = clientTLSOptions(HOSTNAME, trustRoot=self.certs.caPEM)
        session: Any = await self.connect(
            wrapClientTLS(options, self.tcpEndpoint(server.port))
        )
        protocols: list[MessageCollector] = []
        proto = await session.openChannel(
            b"echo", factoryOf(protocols, MessageCollector)
        )
        proto.transport.writeMessage(b"secret")
        await proto.receivedAtLeast(6)
        self.assertEqual(proto.messages, [b"secret"])
        self.assertEqual(cast(Any, session.transport).negotiatedProtocol, b"memux/1")


class TwistdProcessTests(TestCase):
    """
    An asyncio client of a real ``twistd memux`` process.
    """

    timeout = 120

    async def test_twistd(self) -> None:
        """
        Against ``twistd -n memux``: echo, chargen and ping, then a GOAWAY
        that closes the session.
        """
        process = CLIProcess()
        transport = cast(IReactorProcess, globalReactor()).spawnProcess(
            process,
            sys.executable,
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
            + ["-n", "--pidfile=", "memux", "--listen", LISTEN],
            env=cliEnvironment(),
            path=str(ROOT),
        )

        def kill() -> defer.Deferred[Any] | None:
            if process.ended.called:
                return None
            transport.signalProcess("KILL")
            return process.ended

        self.addCleanup(kill)
        listening = await process.waitForStdout(
            rb"memux listening on 127\.0\.0\.1:(\d+)"
        )
        port = int(listening.group(1))

        async def main() -> tuple[bytes | None, bytes, float]:
            session = await aio.connect(LOCAL, port)
            echo = await session.open_channel(b"echo")
            await echo.send_message(b"to twistd")
            answer = await echo.receive_message()
            echo.close()
            chargen = await session.open_channel(b"chargen")
            line = await chargen.readuntil(b"\r\n")
            chargen.close()
            rtt = await session.ping()
            await session.goaway()
            return answer, line, rtt

        answer, line, rtt = await inThread(main)
        self.assertEqual(answer, b"to twistd")
        self.assertEqual(line, Chargen.block.split(b"\r\n")[0] + b"\r\n")
        self.assertGreater(rtt, 0)


# ------------------------------------------------------------ asyncio server


class AsyncioServer:
    """
    An asyncio memux server (L{aio.serve}) on an event loop of its own in a
    thread.
    """

    def __init__(
        self,
        services: Any,
        settings: SessionSettings | None = None,
        ssl: Any = None,
    ):
        self.loop = asyncio.new_event_loop()
        self.services = services
        self.settings = settings
        self.ssl = ssl
        self._ready = threading.Event()
        self.server: aio.Server | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self._ready.wait(30)
        if self.error is not None:
            raise self.error
        assert self.server is not None
        self.port: int = self.server.port

    def _run(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            self.server = loop.run_until_complete(
                aio.serve(self.services, LOCAL, 0, settings=self.settings, ssl=self.ssl)
            )
        except BaseException as e:
            self.error = e
        self._ready.set()
        if self.error is None:
            loop.run_forever()
            loop.run_until_complete(self._close())
        loop.close()

    async def _close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.drain(0)
        await self.server.wait_closed()
        handlers = asyncio.all_tasks() - {asyncio.current_task()}
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    def call(self, f: Any, *args: Any) -> Any:
        """
        Run C{f(*args)} on the server's loop; return its result.
        """
        done = threading.Event()
        result: list[Any] = []

        def run() -> None:
            try:
                result.append(f(*args))
            finally:
                done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(30)
        return result[0]

    def stop(self) -> defer.Deferred[None]:
        """
        Close the server and its sessions; stop the loop and the thread.
        """
        self.loop.call_soon_threadsafe(self.loop.stop)
        return deferToThread(self.thread.join, 30)


@implementer(IPushProducer, IMessageReceiver, IHalfCloseableProtocol)
class BulkWriter(Protocol):
    """
    Writes C{total} bytes of blocks as its channel's push producer, then
    half-closes; keeps what it receives as messages.
    """

    def __init__(self, total: int) -> None:
        self.left = total
        self.paused = False
        self.pauses = 0
        self.messages: list[bytes] = []
        self.reason: Failure | None = None

    def connectionMade(self) -> None:
        cast(Any, self.transport).registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        transport: Any = self.transport
        block = b"b" * 65536
        while self.left and not self.paused:
            transport.write(block)
            self.left -= len(block)
        if not self.left:
            transport.unregisterProducer()
            transport.loseWriteConnection()

    def stopProducing(self) -> None:
        self.left = 0

    def messageReceived(self, message: bytes) -> None:
        self.messages.append(message)

    def readConnectionLost(self) -> None:
        pass

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason


class TwistedClientTests(TestCase):
    """
    Twisted clients (L{connectSession}) of an asyncio server.
    """

    timeout = 120

    def setUp(self) -> None:
        self.reactor = globalReactor()
        self.seen: list[Any] = []
        seen = self.seen

        async def echo(channel: Channel) -> None:
            async for message in channel:
                await channel.send_message(message)

        async def echoBytes(channel: Channel) -> None:
            while data := await channel.read(65536):
                await channel.write(data)
            channel.write_eof()
            await channel.wait_closed()

        async def count(channel: Channel) -> None:
            n = 0
            while data := await channel.read(1 << 20):
                n += len(data)
            await channel.send_message(b"%d" % n)
            await channel.wait_closed()

        async def reset(channel: Channel) -> None:
            await channel.receive_message()
            channel.reset(ErrorCode.CONNECT_ERROR, "no route")

        async def watch(channel: Channel) -> None:
            try:
                await channel.receive_message()
                await channel.receive_message()
            except Exception as e:
                seen.append(e)

        async def stall(channel: Channel) -> None:
            seen.append(channel)
            await asyncio.sleep(3600)

        services = {
            b"echo": echo,
            b"bytes": echoBytes,
            b"count": count,
            b"reset": reset,
            b"watch": watch,
            b"stall": stall,
        }

        def choose(request: aio.ChannelRequest) -> Any:
            if request.service == b"private":
                raise aio.ChannelRefused("members only")
            return services.get(request.service)

        self.settings = SessionSettings(channelCredit=256 * 1024)
        self.server = AsyncioServer(choose, self.settings)
        self.addCleanup(self.server.stop)

    async def connect(self) -> Any:
        """
        A Twisted session to the asyncio server, closed at cleanup.
        """
        from twisted.internet.endpoints import TCP4ClientEndpoint

        session = await connectSession(
            TCP4ClientEndpoint(self.reactor, LOCAL, self.server.port)
        )

        def close() -> defer.Deferred[None]:
            if session.lostReason is None:
                session.loseConnection()
            return session.whenClosed()

        self.addCleanup(close)
        return session

    async def test_echo(self) -> None:
        """
        Messages from a Twisted client come back from an asyncio handler
        with their boundaries.
        """
        session = await self.connect()
        protocols: list[MessageCollector] = []
        proto = await session.openChannel(
            b"echo", factoryOf(protocols, MessageCollector)
        )
        proto.transport.writeMessage(b"first")
        proto.transport.writeMessage(b"x" * 100_000)
        proto.transport.writeMessage(b"")
        proto.transport.writeMessage(b"end")
        await proto.receivedAtLeast(len(b"first") + 100_000 + 3)
        self.assertEqual(proto.messages, [b"first", b"x" * 100_000, b"", b"end"])

    async def test_refusedWithReason(self) -> None:
        """
        The asyncio chooser's refusal reaches the Twisted protocol as its
        L{ChannelRefused} with the reason; so does an unknown service.
        """
        session = await self.connect()
        for service, reason in [
            (b"private", "members only"),
            (b"nope", "no service 'nope'"),
        ]:
            protocols: list[MessageCollector] = []
            proto = await session.openChannel(
                service, factoryOf(protocols, MessageCollector)
            )
            error = await proto.lost
            self.assertIsInstance(error, TwistedChannelRefused)
            self.assertEqual(error.reason, reason)

    async def test_resetBothWays(self) -> None:
        """
        An asyncio handler's C{reset(code, reason)} reaches the Twisted
        protocol as its L{ChannelReset}; a Twisted C{resetChannel} reaches
        the asyncio handler as L{aio.ChannelReset}.
        """
        session = await self.connect()
        protocols: list[MessageCollector] = []
        proto = await session.openChannel(
            b"reset", factoryOf(protocols, MessageCollector)
        )
        proto.transport.writeMessage(b"go")
        error = await proto.lost
        self.assertIsInstance(error, TwistedChannelReset)
        self.assertEqual(
            (error.code, error.reason), (ErrorCode.CONNECT_ERROR, "no route")
        )
        watched = await session.openChannel(
            b"watch", factoryOf(protocols, MessageCollector)
        )
        watched.transport.writeMessage(b"one")
        await session.ping()
        watched.transport.resetChannel(0x42, "bye")
        while not self.seen:
            await deferLater(self.reactor, 0.01)
        (seen,) = self.seen
        self.assertIsInstance(seen, aio.ChannelReset)
        self.assertEqual((seen.code, seen.reason), (0x42, "bye"))

    async def test_halfClose(self) -> None:
        """
        A Twisted protocol's half-close reaches the asyncio reader as the
        end of its input; the echo of what was sent, then the asyncio
        side's own FIN, come back, and the channel ends cleanly.
        """
        session = await self.connect()
        recorders: list[EndingRecorder] = []
        proto = await session.openChannel(
            b"bytes", factoryOf(recorders, EndingRecorder)
        )
        proto.transport.write(b"half and half")
        proto.transport.loseWriteConnection()
        while proto.reason is None:
            await deferLater(self.reactor, 0.01)
        self.assertEqual(proto.data, b"half and half")
        self.assertEqual(proto.events, ["FIN", "lost"])
        self.assertIsInstance(proto.reason.value, ConnectionDone)

    async def test_uploadWithBackpressure(self) -> None:
        """
        64 MiB from a Twisted push producer reach an asyncio reader whole;
        a handler that does not read holds no more than its channel's
        credit window, and its Twisted writer is paused.
        """
        session = await self.connect()
        protocols: list[BulkWriter] = []
        proto = await session.openChannel(
            b"count", factoryOf(protocols, lambda: BulkWriter(64 << 20))
        )
        while not proto.messages:
            await deferLater(self.reactor, 0.01)
        self.assertEqual(proto.messages, [b"%d" % (64 << 20)])
        stalled = await session.openChannel(
            b"stall", factoryOf(protocols, lambda: BulkWriter(64 << 20))
        )
        await deferLater(self.reactor, 0.5)
        self.assertTrue(stalled.paused)
        (channel,) = self.seen
        held = self.server.call(
            lambda: channel.session._core.engine.heldBytes(channel.id)
        )
        self.assertLessEqual(held, self.settings.channelCredit)
        self.assertGreater(held, 0)
        stalled.transport.abortConnection()

    async def test_ping(self) -> None:
        """
        A Twisted client's PING to the asyncio server is answered.
        """
        session = await self.connect()
        rtt = await session.ping()
        self.assertGreater(rtt, 0)

    async def test_goaway(self) -> None:
        """
        The asyncio server's drain sends GOAWAY: the Twisted client's open
        channel carries on, and the session closes once it has ended.
        """
        session = await self.connect()
        protocols: list[MessageCollector] = []
        proto = await session.openChannel(
            b"echo", factoryOf(protocols, MessageCollector)
        )
        proto.transport.writeMessage(b"before")
        await proto.receivedAtLeast(6)
        server = self.server
        draining = server.call(
            lambda: asyncio.ensure_future(cast(aio.Server, server.server).drain())
        )
        while session.engine.goAwayReceived is None:
            await deferLater(self.reactor, 0.01)
        self.assertFalse(session.isUsable())
        proto.transport.writeMessage(b"after")
        await proto.receivedAtLeast(11)
        proto.transport.loseConnection()
        await session.whenClosed()
        self.assertTrue(draining is not None)
        self.assertEqual(proto.messages, [b"before", b"after"])


def deferLater(reactor: Any, delay: float) -> defer.Deferred[None]:
    """
    A Deferred that fires after C{delay} seconds.
    """
    from twisted.internet.task import deferLater as later

    return later(reactor, delay, lambda: None)
