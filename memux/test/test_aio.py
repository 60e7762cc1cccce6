"""
Tests for L{memux.aio}, the asyncio front end, asyncio against asyncio on
real loopback sockets: each test runs in a fresh event loop of its own.
(Interoperation with the Twisted front end is in C{test_aio_interop}.)
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from memux import aio
from memux.aio import (
    Channel,
    ChannelRefused,
    ChannelRequest,
    ChannelReset,
    ErrorCode,
    MessageTooLarge,
    SessionLost,
    SessionSettings,
)
from memux.aio._channel import READ_AHEAD
from memux.test._helpers import (
    EXAMPLES,
    HOSTNAME,
    ROOT,
    Certificates,
    runAsyncio,
    runExample,
)

LOCAL = "127.0.0.1"


async def echoMessages(channel: Channel) -> None:
    """Send back each message received."""
    async for message in channel:
        await channel.send_message(message)


async def echoBytes(channel: Channel) -> None:
    """Send back the bytes received, then half-close."""
    while data := await channel.read(65536):
        await channel.write(data)
    channel.write_eof()
    await channel.wait_closed()


async def count(channel: Channel) -> None:
    """Read bytes to the end, then answer with how many, as a message."""
    n = 0
    while data := await channel.read(1 << 20):
        n += len(data)
    await channel.send_message(str(n).encode())


SERVICES = {b"echo": echoMessages, b"bytes": echoBytes, b"count": count}


@asynccontextmanager
async def served(
    services: Any = SERVICES,
    settings: SessionSettings | None = None,
    clientSettings: SessionSettings | None = None,
) -> AsyncIterator[tuple[aio.Server, aio.Session]]:
    """
    A server for C{services} on a loopback port and a session connected
    to it; both closed at the end.
    """
    server = await aio.serve(services, LOCAL, 0, settings=settings)
    try:
        session = await aio.connect(LOCAL, server.port, settings=clientSettings)
        try:
            yield server, session
        finally:
            session.abort()
            await session.wait_closed()
    finally:
        server.close()
        await server.drain(0)
        await server.wait_closed()


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    """Run C{main} in a fresh event loop."""
    return runAsyncio(main, timeout=60)


class ImportTests(SynchronousTestCase):
    """
    The asyncio front end stands without Twisted.
    """

    def test_noTwisted(self) -> None:
        """
        Importing C{memux.aio} (and using it: a session and a channel over
        a socket pair) imports no Twisted module, directly or through the
        core it is built on.
        """
        code = (
            "import asyncio, socket, sys\n"
            "import memux.aio\n"
            "async def main():\n"
            "    a, b = socket.socketpair()\n"
            "    s = await memux.aio.connect(sock=a)\n"
            "    c = await s.open_channel(b'x')\n"
            "    await c.send_message(b'hi')\n"
            "    s.close(); b.close()\n"
            "asyncio.run(main())\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in"
            " ('twisted', 'zope')))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            cwd="/",
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.strip(), "[]")


class MessageTests(SynchronousTestCase):
    """
    Messages and bytes between two asyncio sessions.
    """

    def test_messages(self) -> None:
        """
        Messages keep their boundaries both ways, whatever their size (the
        empty message too); C{async for} ends when the peer closes.
        """

        async def main() -> list[bytes]:
            async with served() as (_, session):
                channel = await session.open_channel(b"echo")
                sent = [b"one", b"", b"x" * 200_000, b"last"]
                for message in sent:
                    await channel.send_message(message)
                got = [await channel.receive_message() for _ in sent]
                channel.write_eof()
                rest = [m async for m in channel]
                self.assertEqual(rest, [])
                await channel.wait_closed()
                return got  # type: ignore[return-value]

        self.assertEqual(run(main), [b"one", b"", b"x" * 200_000, b"last"])

    def test_bytes(self) -> None:
        """
        C{read}, C{readexactly} and C{readuntil} read a byte stream; the
        end reads as C{b""}, and C{readexactly} past it raises
        L{asyncio.IncompleteReadError} with what there was.
        """

        async def main() -> None:
            async with served() as (_, session):
                channel = await session.open_channel("bytes")
                await channel.write(b"hello\nworld")
                self.assertEqual(await channel.readuntil(b"\n"), b"hello\n")
                self.assertEqual(await channel.readexactly(3), b"wor")
                channel.write_eof()
                self.assertEqual(await channel.read(), b"ld")
                self.assertEqual(await channel.read(10), b"")
                with self.assertRaises(asyncio.IncompleteReadError):
                    await channel.readexactly(1)
                await channel.wait_closed()

        run(main)

    def test_streams(self) -> None:
        """
        L{Channel.streams} (and L{aio.Session.open_streams}) give a reader
        and writer that work as asyncio's: lines, C{drain}, C{write_eof},
        C{at_eof}, C{wait_closed}, C{get_extra_info}; a line longer than
        the limit is a C{ValueError}, as with asyncio.
        """

        async def main() -> None:
            async with served() as (_, session):
                reader, writer = await session.open_streams(b"bytes", limit=10)
                writer.writelines([b"a\n", b"bc\n", b"0123456789abc\n", b"end"])
                await writer.drain()
                self.assertEqual(await reader.readline(), b"a\n")
                self.assertEqual([await reader.readline()], [b"bc\n"])
                with self.assertRaises(ValueError):
                    await reader.readline()
                self.assertTrue(writer.can_write_eof())
                writer.write_eof()
                self.assertEqual([line async for line in reader], [b"end"])
                self.assertTrue(reader.at_eof())
                self.assertEqual(
                    writer.get_extra_info("peername")[0],
                    LOCAL,
                )
                self.assertIs(writer.get_extra_info("session"), session)
                await writer.wait_closed()
                self.assertIsNone(reader.exception())

        run(main)

    def test_oneWayOfReading(self) -> None:
        """
        A channel is read either as messages or as bytes: mixing them is a
        C{RuntimeError}, not a silent loss of boundaries.
        """

        async def main() -> None:
            async with served() as (_, session):
                channel = await session.open_channel(b"echo")
                await channel.send_message(b"m")
                self.assertEqual(await channel.receive_message(), b"m")
                with self.assertRaises(RuntimeError):
                    await channel.read(1)

        run(main)

    def test_manyChannels(self) -> None:
        """
        A thousand channels at once on one session each carry their own
        messages.
        """

        async def main() -> None:
            async with served() as (_, session):
                channels = [await session.open_channel(b"echo") for _ in range(1000)]

                async def exchange(channel: Channel) -> bytes | None:
                    await channel.send_message(b"%d" % channel.id)
                    answer = await channel.receive_message()
                    channel.close()
                    return answer

                answers = await asyncio.gather(*map(exchange, channels))
                self.assertEqual(answers, [b"%d" % c.id for c in channels])
                self.assertEqual(len({c.id for c in channels}), 1000)

        run(main)


class PriorityTests(SynchronousTestCase):
    """
    Channel priorities from the asyncio front end.
    """

    def test_priority(self) -> None:
        """
        C{open_channel(priority=, weight=)} sets the channel's priority
        from the start and C{set_priority} changes it; the peer's channel
        object takes it from the hint (so the server's handler sees it);
        bad values raise C{ValueError} or C{TypeError} before anything is
        opened.
        """
        seen: list[tuple[int, int]] = []

        async def report(channel: Channel) -> None:
            await channel.receive_message()
            seen.append((channel.priority.urgency, channel.priority.weight))
            await channel.send_message(b"ok")

        async def main() -> None:
            async with served({b"report": report}) as (_, session):
                channel = await session.open_channel(b"report", priority=1, weight=64)
                self.assertEqual(
                    (channel.priority.urgency, channel.priority.weight), (1, 64)
                )
                await channel.send_message(b"which?")
                self.assertEqual(await channel.receive_message(), b"ok")
                channel.set_priority(6)
                self.assertEqual(
                    (channel.priority.urgency, channel.priority.weight), (6, 16)
                )
                with self.assertRaises(ValueError):
                    await session.open_channel(b"report", priority=8)
                with self.assertRaises(ValueError):
                    await session.open_channel(b"report", weight=0)
                with self.assertRaises(TypeError):
                    await session.open_channel(b"report", priority="1")  # type: ignore[arg-type]
                with self.assertRaises(ValueError):
                    channel.set_priority(-1)
                channel.close()

        run(main)
        self.assertEqual(seen, [(1, 64)])


class SnapshotTests(SynchronousTestCase):
    """
    C{Session.snapshot}, the same plain data as the Twisted front end's.
    """

    def test_snapshot(self) -> None:
        """
        A client session's snapshot names its peer and path, counts what
        went each way, and lists its open channels with their state,
        bytes and priority; it survives a JSON round trip.
        """

        async def main() -> None:
            async with served() as (server, session):
                channel = await session.open_channel(b"echo", priority=2)
                await channel.send_message(b"x" * 1000)
                self.assertEqual(await channel.receive_message(), b"x" * 1000)
                snap = session.snapshot()
                self.assertTrue(snap.client)
                self.assertEqual(snap.peer, f"{LOCAL}:{server.port}")
                self.assertEqual(snap.transport, "TCP")
                self.assertFalse(snap.tls)
                self.assertTrue(snap.usable)
                [mine] = snap.channels
                self.assertEqual(mine.channel, channel.id)
                self.assertEqual(mine.service, "echo")
                self.assertEqual(mine.state, "OPEN")
                self.assertEqual((mine.bytesSent, mine.bytesReceived), (1000, 1000))
                self.assertEqual(mine.priority, 2)
                self.assertEqual(session.snapshot(channels=False).channels, [])
                self.assertEqual(
                    json.loads(json.dumps(snap.toJSON()))["peer"], snap.peer
                )
                channel.close()

        run(main)


class BackpressureTests(SynchronousTestCase):
    """
    Credit is granted as the application reads, and writes wait for it.
    """

    def test_bulk(self) -> None:
        """
        64 MiB go through a channel intact while its queue in the core stays
        bounded: C{write} waits instead of buffering.
        """

        async def main() -> None:
            async with served() as (_, session):
                channel = await session.open_channel(b"count")
                block = os.urandom(1 << 16)
                highest = 0
                engine = session._core.engine
                for _ in range(1024):
                    await channel.write(block)
                    highest = max(highest, engine.queuedBytes(channel.id))
                channel.write_eof()
                self.assertEqual(await channel.receive_message(), b"%d" % (64 << 20))
                self.assertLessEqual(
                    highest, session._core.highWater + len(block), highest
                )

        run(main)

    def test_slowReaderStallsOnlyItsChannel(self) -> None:
        """
        A channel whose handler stops reading holds at most its credit
        window in the core and its read-ahead in its buffer on the
        receiving side, its writer waits, and another channel of the same
        session carries on meanwhile.
        """
        held: list[Channel] = []

        async def stall(channel: Channel) -> None:
            held.append(channel)
            await channel.read(1)
            await asyncio.sleep(3600)

        async def main() -> None:
            settings = SessionSettings(channelCredit=256 * 1024, maxChannelCredit=None)
            services = {**SERVICES, b"stall": stall}
            async with served(services, settings=settings) as (server, session):
                slow = await session.open_channel(b"stall")
                block = b"s" * 65536
                writing = asyncio.ensure_future(self._writeForever(slow, block))
                await asyncio.sleep(0.3)
                self.assertFalse(writing.done())
                fast = await session.open_channel(b"echo")
                await fast.send_message(b"still here")
                self.assertEqual(await fast.receive_message(), b"still here")
                (serverSession,) = server.sessions
                engine = serverSession._core.engine
                self.assertLessEqual(engine.heldBytes(slow.id), settings.channelCredit)
                self.assertGreater(engine.heldBytes(slow.id), 0)
                # What the handler's buffer took ahead of its reads is
                # bounded too: the read-ahead, give or take one chunk.
                buffered = held[0]._c._buffered
                self.assertLessEqual(
                    buffered, READ_AHEAD + settings.maxFrameSize, buffered
                )
                writing.cancel()

        run(main)

    async def _writeForever(self, channel: Channel, block: bytes) -> None:
        while True:
            await channel.write(block)


class EndingTests(SynchronousTestCase):
    """
    Every abnormal end reaches the application as its typed error.
    """

    def test_refused(self) -> None:
        """
        A channel to a service the server does not have is refused with
        the reason; a chooser refuses with its own reason by raising
        L{ChannelRefused}, and is given the request's service and metadata.
        """
        requests: list[ChannelRequest] = []

        def choose(request: ChannelRequest) -> Any:
            requests.append(request)
            if request.metadata == b"let me in":
                return echoMessages
            raise ChannelRefused("not you")

        async def main() -> None:
            async with served() as (_, session):
                channel = await session.open_channel(b"nope")
                with self.assertRaises(ChannelRefused) as e:
                    await channel.receive_message()
                self.assertEqual(e.exception.reason, "no service 'nope'")
                self.assertEqual(e.exception.code, ErrorCode.REFUSED)
                with self.assertRaises(ChannelRefused):
                    await channel.send_message(b"late")
            async with served(choose) as (_, session):
                refused = await session.open_channel(b"svc", metadata=b"me")
                with self.assertRaises(ChannelRefused) as e:
                    await refused.wait_closed()
                self.assertEqual(e.exception.reason, "not you")
                allowed = await session.open_channel(b"svc", metadata=b"let me in")
                await allowed.send_message(b"ok")
                self.assertEqual(await allowed.receive_message(), b"ok")

        run(main)
        self.assertEqual(
            [(r.service, r.metadata) for r in requests],
            [(b"svc", b"me"), (b"svc", b"let me in")],
        )

    def test_reset(self) -> None:
        """
        C{reset(code, reason)} reaches the peer's reads, after the data
        sent before it, as L{ChannelReset} with that code and reason.
        """
        seen: list[Any] = []

        async def resetter(channel: Channel) -> None:
            await channel.send_message(b"before")
            await channel.session.ping()  # "before" has arrived
            channel.reset(ErrorCode.CONNECT_ERROR, "no route")

        async def reader(channel: Channel) -> None:
            await channel.receive_message()
            try:
                await channel.receive_message()
            except ChannelReset as e:
                seen.append(e)

        async def main() -> None:
            async with served({b"reset": resetter, b"read": reader}) as (_, session):
                channel = await session.open_channel(b"reset")
                with self.assertRaises(ChannelReset):
                    await channel.wait_closed()
                # What arrived before the reset is read first.
                self.assertEqual(await channel.receive_message(), b"before")
                with self.assertRaises(ChannelReset) as e:
                    await channel.receive_message()
                self.assertEqual(
                    (e.exception.code, e.exception.reason, e.exception.remote),
                    (ErrorCode.CONNECT_ERROR, "no route", True),
                )
                other = await session.open_channel(b"read")
                await other.send_message(b"hi")
                await session.ping()  # the channel is open on the other side
                other.reset(0x77, "mine")
                with self.assertRaises(ChannelReset) as e:
                    await other.wait_closed()
                self.assertFalse(e.exception.remote)
                while not seen:
                    await asyncio.sleep(0.01)

        run(main)
        self.assertEqual((seen[0].code, seen[0].reason), (0x77, "mine"))

    def test_handlerFails(self) -> None:
        """
        A handler that raises resets its channel with INTERNAL_ERROR, not
        a clean end, and the session carries on.
        """

        async def broken(channel: Channel) -> None:
            raise ZeroDivisionError()

        async def main() -> None:
            async with served({b"broken": broken, b"echo": echoMessages}) as (
                _,
                session,
            ):
                channel = await session.open_channel(b"broken")
                with self.assertRaises(ChannelReset) as e:
                    await channel.read()
                self.assertEqual(e.exception.code, ErrorCode.INTERNAL_ERROR)
                echo = await session.open_channel(b"echo")
                await echo.send_message(b"fine")
                self.assertEqual(await echo.receive_message(), b"fine")

        run(main)
        self.flushLoggedErrors()

    def test_messageTooLarge(self) -> None:
        """
        A message over the reader's maxMessageSize resets the channel with
        L{MessageTooLarge}, on both sides.
        """

        async def main() -> None:
            small = SessionSettings(maxMessageSize=1000)
            async with served(clientSettings=small) as (_, session):
                channel = await session.open_channel(b"echo")
                await channel.send_message(b"y" * 5000)
                with self.assertRaises(MessageTooLarge):
                    await channel.receive_message()

        run(main)

    def test_sessionLost(self) -> None:
        """
        When the connection goes, a channel's reads raise L{SessionLost}
        (never a clean end), as do pings and new channels.
        """

        async def main() -> None:
            async with served() as (server, session):
                channel = await session.open_channel(b"echo")
                await channel.send_message(b"x")
                self.assertEqual(await channel.receive_message(), b"x")
                for peer in server.sessions:
                    peer.abort("gone")
                with self.assertRaises(SessionLost):
                    await channel.receive_message()
                await session.wait_closed()
                with self.assertRaises(SessionLost):
                    await session.ping()
                with self.assertRaises(SessionLost):
                    await session.open_channel(b"echo")

        run(main)

    def test_abort(self) -> None:
        """
        After C{abort}, this side's reads raise L{ConnectionAbortedError}
        and the peer sees a reset with code CANCEL.
        """

        async def main() -> None:
            async with served() as (_, session):
                channel = await session.open_channel(b"echo")
                channel.abort()
                with self.assertRaises(ConnectionAbortedError):
                    await channel.receive_message()
                with self.assertRaises(ConnectionAbortedError):
                    await channel.write(b"x")

        run(main)


class SessionTests(SynchronousTestCase):
    """
    Pings, GOAWAY and the session's timers.
    """

    def test_ping(self) -> None:
        """
        C{ping} returns the round trip, a positive number of seconds.
        """

        async def main() -> float:
            async with served() as (_, session):
                return await session.ping()

        rtt = run(main)
        self.assertGreater(rtt, 0)
        self.assertLess(rtt, 10)

    def test_goaway(self) -> None:
        """
        After the server's drain (GOAWAY NO_ERROR) a channel already open
        carries on, a new one is refused, and the session closes once the
        open one ends; the client learns it was a GOAWAY.
        """

        async def main() -> None:
            async with served() as (server, session):
                channel = await session.open_channel(b"echo")
                await channel.send_message(b"a")
                self.assertEqual(await channel.receive_message(), b"a")
                draining = asyncio.ensure_future(server.drain())
                while session._core.goAwayReceived is None:
                    await asyncio.sleep(0.01)
                self.assertFalse(session.is_usable())
                with self.assertRaises(ChannelRefused):
                    await session.open_channel(b"echo")
                await channel.send_message(b"b")
                self.assertEqual(await channel.receive_message(), b"b")
                channel.close()
                await draining
                await session.wait_closed()
                self.assertIn("GOAWAY", str(session.lost_error))

        run(main)

    def test_clientGoaway(self) -> None:
        """
        C{await session.goaway()} on an idle session returns once the
        connection has closed.
        """

        async def main() -> None:
            async with served() as (_, session):
                await session.goaway()
                self.assertFalse(session.connected)

        run(main)

    def test_idleTimeout(self) -> None:
        """
        The core's deadlines run on the loop's timer: a session with no
        channel for idleTimeout ends by itself.
        """

        async def main() -> None:
            idle = SessionSettings(idleTimeout=0.2)
            async with served(clientSettings=idle) as (_, session):
                await asyncio.wait_for(session.wait_closed(), 10)
                self.assertIsInstance(session.lost_error, SessionLost)

        run(main)

    def test_writeTimeout(self) -> None:
        """
        A server whose peer stops reading is paused by its connection, its
        handler's writes wait, and after writeTimeout it aborts the
        session: the client learns of it as L{SessionLost}.
        """
        wrote: list[int] = []

        async def flood(channel: Channel) -> None:
            block = b"f" * 65536
            while True:
                await channel.write(block)
                wrote.append(len(block))

        async def main() -> None:
            settings = SessionSettings(writeTimeout=0.5)
            # Credit enough for more than the sockets' buffers hold.
            roomy = SessionSettings(channelCredit=32 << 20, sessionCredit=64 << 20)
            async with served({b"flood": flood}, settings, roomy) as (
                server,
                session,
            ):
                channel = await session.open_channel(b"flood")
                await channel.read(1)
                assert session.transport is not None
                session.transport.pause_reading()
                (peer,) = server.sessions
                # (Its connection's pause: the core also pauses for a turn
                # after each large write, see Session._yieldOutput.)
                while not peer._writePaused:
                    await asyncio.sleep(0.01)
                before = len(wrote)
                await asyncio.sleep(0.2)
                # Paused: the handler's writes wait (a round or two of the
                # queue at most, not a flood into memory).
                self.assertLessEqual(len(wrote) - before, 8)
                await asyncio.wait_for(peer.wait_closed(), 10)
                self.assertIn("read nothing", str(peer.lost_error))
                session.transport.resume_reading()
                with self.assertRaises(SessionLost):
                    while True:
                        await channel.read(1 << 20)

        run(main)

    def test_streamsPair(self) -> None:
        """
        L{aio.connect_streams} runs a session over a connection made with
        asyncio's own streams, starting with the bytes its reader already
        holds.
        """

        async def main() -> None:
            server = await aio.serve(SERVICES, LOCAL, 0)
            try:
                reader, writer = await asyncio.open_connection(LOCAL, server.port)
                while not reader._buffer:  # type: ignore[attr-defined]
                    await asyncio.sleep(0.01)  # the server's preface is there
                session = aio.connect_streams(reader, writer)
                channel = await session.open_channel(b"echo")
                await channel.send_message(b"over streams")
                self.assertEqual(await channel.receive_message(), b"over streams")
                session.close()
                await session.wait_closed()
            finally:
                server.close()
                await server.drain(0)

        run(main)


class TLSTests(SynchronousTestCase):
    """
    TLS with ALPN memux/1 through the ssl module.
    """

    def test_tls(self) -> None:
        """
        A TLS session negotiates ALPN memux/1 and carries channels; a
        client that does not trust the server's certificate fails the
        handshake.
        """
        certs = Certificates(self.mktemp())

        async def main() -> None:
            serverContext = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            certs.server.configure_cert(serverContext)
            clientContext = ssl.create_default_context()
            certs.ca.configure_trust(clientContext)
            server = await aio.serve(SERVICES, LOCAL, 0, ssl=serverContext)
            try:
                session = await aio.connect(
                    LOCAL, server.port, ssl=clientContext, server_hostname=HOSTNAME
                )
                alpn = session.get_extra_info("ssl_object").selected_alpn_protocol()
                self.assertEqual(alpn, "memux/1")
                channel = await session.open_channel(b"echo")
                await channel.send_message(b"secret")
                self.assertEqual(await channel.receive_message(), b"secret")
                session.close()
                await session.wait_closed()
                with self.assertRaises(ssl.SSLError):
                    await aio.connect(
                        LOCAL, server.port, ssl=True, server_hostname=HOSTNAME
                    )
            finally:
                server.close()
                await server.drain(0)

        run(main)


class ExampleTests(SynchronousTestCase):
    """
    The asyncio examples run and say what they promise.
    """

    def test_clientAndServer(self) -> None:
        """
        examples/aio_echo_client.py, against examples/aio_server.py, gets
        its message echoed and its line shouted back.
        """
        script = EXAMPLES / "aio_server.py"
        if not script.exists():
            raise SkipTest("examples/ is not here")
        server = subprocess.Popen(
            [sys.executable, str(script), LOCAL, "0"],
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            self.assertTrue(line.startswith(f"memux listening on {LOCAL}:"), line)
            port = line.rsplit(":", 1)[1].strip()
            out = runExample("aio_echo_client.py", LOCAL, port)
            self.assertEqual(out, "hello\nSHOUT\n")
        finally:
            server.terminate()
            server.wait(30)
            if server.stdout:
                server.stdout.close()


class BenchTests(SynchronousTestCase):
    """
    C{python -m memux.bench.aio} measures each candidate in each scenario.
    """

    def test_everyCandidateRuns(self) -> None:
        """
        A run of each scenario with tiny sizes, for each candidate (the
        asyncio front end, asyncio streams, the Twisted front end), reports
        a positive figure from its client process.
        """
        from memux.bench import aio as bench

        tiny = {
            "bulk": {"total": 1 << 20},
            "small": {"messages": 300, "window": 50},
            "churn": {"exchanges": 100, "inFlight": 10},
        }
        self.assertEqual(set(tiny), set(bench.SCENARIOS))
        figures = {
            (candidate, scenario): bench.runOnce(candidate, scenario, params)
            for candidate in bench.CANDIDATES
            for scenario, params in tiny.items()
        }
        self.assertEqual(len(figures), 9)
        self.assertEqual([k for k, v in figures.items() if not v > 0], [])


class PropertyTests(SynchronousTestCase):
    """
    Whatever is sent through the asyncio front end arrives as it was sent
    (hypothesis chooses what, and how it is read).
    """

    @settings(max_examples=15, deadline=None)
    @given(
        messages=st.lists(
            st.integers(min_value=0, max_value=150_000), min_size=1, max_size=12
        ),
    )
    def test_messagesArriveWhole(self, messages: list[int]) -> None:
        """
        Messages of any sizes, through an echo and back, arrive whole, in
        order, with their boundaries, on several channels at once.
        """
        bodies = [os.urandom(n) for n in messages]

        async def main() -> list[list[bytes | None]]:
            async with served() as (_, session):

                async def one() -> list[bytes | None]:
                    channel = await session.open_channel(b"echo")
                    for body in bodies:
                        await channel.send_message(body)
                    got = [await channel.receive_message() for _ in bodies]
                    channel.close()
                    return got

                return list(await asyncio.gather(one(), one()))

        self.assertEqual(run(main), [bodies, bodies])

    @settings(max_examples=15, deadline=None)
    @given(
        writes=st.lists(
            st.integers(min_value=1, max_value=100_000), min_size=1, max_size=10
        ),
        reads=st.lists(st.integers(min_value=1, max_value=70_000), min_size=1),
    )
    def test_bytesArriveInOrder(self, writes: list[int], reads: list[int]) -> None:
        """
        A byte stream written in pieces of any sizes reads back the same,
        whatever the sizes of the reads (C{read} and C{readexactly} in
        turn), and then the end.
        """
        data = os.urandom(sum(writes))

        async def main() -> bytes:
            async with served() as (_, session):
                channel = await session.open_channel(b"bytes")
                at = 0
                for n in writes:
                    await channel.write(data[at : at + n])
                    at += n
                channel.write_eof()
                got = b""
                i = 0
                while len(got) < len(data):
                    n = min(reads[i % len(reads)], len(data) - len(got))
                    if i % 2:
                        got += await channel.readexactly(n)
                    else:
                        got += await channel.read(n)
                    i += 1
                self.assertEqual(await channel.read(), b"")
                return got

        self.assertEqual(run(main), data)
