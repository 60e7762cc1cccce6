"""
Tests for how L{memux.aio} tunes its connection as the Twisted front end
does (L{memux._iotuning}, shared by both): the socket options, reads of
64 KiB into a shared buffer and 256 KiB in bulk reading, a pause per large
write (so a bulk sender reaches bulk mode), and the bulk-reading rule; and
its own: writes straight to a plain TCP socket, pausing while the
transport holds what the kernel did not take.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from memux import _iotuning, _tuning, aio
from memux._iotuning import (
    BULK_AFTER_READS,
    BULK_LEAVE_READS,
    BULK_NOTSENT_LOWAT,
    BULK_READ_SIZE,
    LATENCY_NOTSENT_LOWAT,
    NOTSENT_LOWAT,
    READ_SIZE,
    SHORT_READ_COST,
    BulkReads,
)
from memux._wire import GoAwayFrame
from memux.aio import Channel, SessionLost
from memux.aio._session import (
    BULK_WRITE_BUFFER_HIGH,
    LATENCY_WRITE_BUFFER_HIGH,
    WRITE_BUFFER_HIGH,
)
from memux.codes import ErrorCode
from memux.settings import SessionSettings
from memux.test._helpers import HOSTNAME, Certificates, runAsyncio

LOCAL = "127.0.0.1"
NOTSENT = getattr(socket, "TCP_NOTSENT_LOWAT", None)


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    """Run C{main} in a fresh event loop."""
    return runAsyncio(main, timeout=60)


async def count(channel: Channel) -> None:
    """Read bytes to the end, then answer with how many, as a message."""
    n = 0
    while data := await channel.read(1 << 20):
        n += len(data)
    await channel.send_message(str(n).encode())


@asynccontextmanager
async def countSession(certs: Certificates, tls: bool) -> AsyncIterator[aio.Session]:
    """
    A client session to a C{count} server over loopback TCP, or over TLS
    with C{certs}' server certificate; aborted and the server closed after.
    """
    serverContext = clientContext = None
    if tls:
        serverContext = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certs.server.configure_cert(serverContext)
        clientContext = ssl.create_default_context()
        certs.ca.configure_trust(clientContext)
    server = await aio.serve({b"count": count}, LOCAL, 0, ssl=serverContext)
    try:
        session = await aio.connect(
            LOCAL,
            server.port,
            ssl=clientContext,
            server_hostname=HOSTNAME if tls else None,
        )
        try:
            yield session
        finally:
            session.abort()
            await session.wait_closed()
    finally:
        server.close()
        await server.drain(0)


@asynccontextmanager
async def resetByPeer() -> AsyncIterator[aio.Session]:
    """
    A client session over loopback TCP that does not read, whose peer (not
    a memux one) has reset the connection (SO_LINGER 0): only a write can
    meet the reset.
    """
    accepted: asyncio.Future[asyncio.StreamWriter] = asyncio.Future()

    async def accept(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        accepted.set_result(writer)

    listener = await asyncio.start_server(accept, LOCAL, 0)
    try:
        port = listener.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(LOCAL, port)
        session = aio.connect_streams(reader, writer)
        assert session.transport is not None
        session.transport.pause_reading()
        peer = await accepted
        peer.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0"
        )
        peer.transport.abort()
        await asyncio.sleep(0.2)
        yield session
    finally:
        listener.close()


class BulkReadsTests(SynchronousTestCase):
    """
    L{BulkReads}, the rule both front ends read in bulk by.
    """

    def test_after(self) -> None:
        """
        The C{BULK_AFTER_READS}th full read in a row switches to bulk
        reading, not one before; reads of at least the normal size keep it.
        """
        reads = BulkReads(READ_SIZE)
        for _ in range(BULK_AFTER_READS - 1):
            self.assertIsNone(reads.count(READ_SIZE))
        self.assertFalse(reads.bulk)
        self.assertIs(reads.count(READ_SIZE), True)
        self.assertTrue(reads.bulk)
        self.assertIsNone(reads.count(BULK_READ_SIZE))
        self.assertIsNone(reads.count(READ_SIZE))
        self.assertTrue(reads.bulk)

    def test_shortReadCost(self) -> None:
        """
        On the way to bulk reading, a shorter read takes back
        C{SHORT_READ_COST} full ones (never below none).
        """
        reads = BulkReads(READ_SIZE)
        for _ in range(BULK_AFTER_READS - 1):
            reads.count(READ_SIZE)
        self.assertIsNone(reads.count(READ_SIZE - 1))
        self.assertEqual(reads.fullReads, BULK_AFTER_READS - 1 - SHORT_READ_COST)
        for _ in range(10):
            reads.count(1)
        self.assertEqual(reads.fullReads, 0)
        for _ in range(BULK_AFTER_READS - 1):
            self.assertIsNone(reads.count(READ_SIZE))
        self.assertIs(reads.count(READ_SIZE), True)

    def test_leave(self) -> None:
        """
        In bulk reading, C{BULK_LEAVE_READS} shorter reads in a row switch
        back; fewer, then a full one, do not.
        """
        reads = BulkReads(READ_SIZE)
        for _ in range(BULK_AFTER_READS):
            reads.count(READ_SIZE)
        for _ in range(BULK_LEAVE_READS - 1):
            self.assertIsNone(reads.count(100))
        self.assertIsNone(reads.count(READ_SIZE))
        for _ in range(BULK_LEAVE_READS - 1):
            self.assertIsNone(reads.count(100))
        self.assertTrue(reads.bulk)
        self.assertIs(reads.count(100), False)
        self.assertFalse(reads.bulk)
        self.assertEqual((reads.fullReads, reads.shortReads), (0, 0))

    def test_twistedSide(self) -> None:
        """
        The Twisted front end's tuning (L{memux._tuning}) has the same
        names and values it always had, from the shared module.
        """
        expected = {
            "NOTSENT_LOWAT": 128 * 1024,
            "BULK_NOTSENT_LOWAT": 512 * 1024,
            "BULK_AFTER_READS": 16,
            "SHORT_READ_COST": 4,
            "BULK_LEAVE_READS": 3,
            "BULK_READ_SIZE": 256 * 1024,
            "SEND_HEADROOM": 16 * 1024,
            "INPUT_SLICE_SECONDS": 0.001,
            "INPUT_SLICE_STEPS": 16,
        }
        for name, value in expected.items():
            self.assertEqual(getattr(_tuning, name), value, name)
            self.assertEqual(getattr(_iotuning, name), value, name)


class _Pipe(asyncio.Transport):
    """
    One end of an in-memory connection between two asyncio protocols, that
    reads as a fast socket does: what arrives is handed over a read size
    at a time (the protocol's buffer, or 256 KiB to a plain protocol, as
    asyncio's own reads), and a shorter rest only once nothing more came
    for a turn of the loop.  C{reads} records each read: ("buffer" or
    "bytes", size).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.peer: _Pipe | None = None
        self.protocol: Any = None
        self.reads: list[tuple[str, int]] = []
        self._pending = bytearray()
        self._stale = False
        self._scheduled = False
        self._paused = False
        self._closing = False

    def connect(self, peer: _Pipe) -> None:
        self.peer = peer

    # asyncio.Transport
    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert self.peer is not None
        self.peer._arrive(bytes(data))

    def writelines(self, pieces: Any) -> None:
        self.write(b"".join(pieces))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_write_buffer_limits(
        self, high: int | None = None, low: int | None = None
    ) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def abort(self) -> None:
        self._closing = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol  # type: ignore[no-any-return]

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        self._schedule()

    def is_reading(self) -> bool:
        return not self._paused

    # reading
    def _arrive(self, data: bytes) -> None:
        self._pending += data
        self._stale = False
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._scheduled = False
        while self._pending and not self._paused and not self._closing:
            protocol = self.protocol
            if isinstance(protocol, asyncio.BufferedProtocol):
                buffer = memoryview(protocol.get_buffer(-1))
                size = len(buffer)
            else:
                size = BULK_READ_SIZE
            if len(self._pending) < size and not self._stale:
                self._stale = True  # wait a turn for more
                self._schedule()
                return
            n = min(size, len(self._pending))
            data = bytes(self._pending[:n])
            del self._pending[:n]
            if isinstance(protocol, asyncio.BufferedProtocol):
                buffer[:n] = data
                self.reads.append(("buffer", n))
                protocol.buffer_updated(n)
            else:
                self.reads.append(("bytes", n))
                protocol.data_received(data)


def pipedSessions() -> tuple[aio.Session, _Pipe, aio.Session, _Pipe]:
    """
    A client session and a server session (serving ``count``) joined by
    two `_Pipe` transports, in the running loop: (client, its transport,
    server, its transport).
    """
    loop = asyncio.get_running_loop()
    a, b = _Pipe(loop), _Pipe(loop)
    a.connect(b)
    b.connect(a)
    server = aio.Session({b"count": count}, client=False)
    client = aio.Session(client=True)
    b.set_protocol(server)
    a.set_protocol(client)
    server.connection_made(b)
    client.connection_made(a)
    return client, a, server, b


class ReadingTests(SynchronousTestCase):
    """
    A session reads 64 KiB at a time into a shared buffer, and 256 KiB at
    a time, asyncio's own reads, while the peer keeps the connection full.
    """

    def test_bulkReading(self) -> None:
        """
        Once reads that fill its buffer add up to C{BULK_AFTER_READS} (a
        shorter one on the way takes back some), the receiving session has
        its connection read 256 KiB at a time into bytes of their own
        (asyncio's reads for a plain protocol), and the data arrives whole;
        after C{BULK_LEAVE_READS} shorter reads in a row it reads into its
        buffer again.  The session core is told each switch (data waits
        for it: latency mode's credit cap).
        """

        async def main() -> None:
            client, a, server, b = pipedSessions()
            engine = server._core.engine
            # Each switch to bulk reading keeps the reads' memory in the
            # heap first (`keepReadsInHeap`): the reads so far, each time.
            kept: list[int] = []
            self.patch(
                aio._session, "keepReadsInHeap", lambda: kept.append(len(b.reads))
            )
            # After each read in bulk: (still reading in bulk, what the
            # engine was told).
            states: list[tuple[bool, bool]] = []
            bulkReceived = server._bulkReceived

            def spy(data: bytes) -> None:
                bulkReceived(data)
                states.append((b.protocol is not server, engine.receiverBehind))

            server._bulkReceived = spy  # type: ignore[method-assign]
            channel = await client.open_channel(b"count")
            block = os.urandom(1 << 16)
            for _ in range(512):  # 32 MiB
                await channel.write(block)
            channel.write_eof()
            self.assertEqual(await channel.receive_message(), b"%d" % (32 << 20))
            kinds = [kind for kind, _ in b.reads]
            self.assertIn("bytes", kinds)
            first = kinds.index("bytes")
            before = b.reads[:first]
            self.assertEqual(before[-1], ("buffer", READ_SIZE))
            self.assertGreaterEqual(
                before.count(("buffer", READ_SIZE)), BULK_AFTER_READS
            )
            self.assertGreater(
                sum(n for kind, n in b.reads if kind == "bytes"), 16 << 20
            )
            self.assertIn(("bytes", BULK_READ_SIZE), b.reads)
            self.assertEqual(kept[0], first)
            # Small exchanges now: short reads, and back to the buffer.
            for _ in range(BULK_LEAVE_READS + 1):
                await client.ping()
            self.assertIs(b.protocol, server)
            self.assertEqual(b.reads[-1][0], "buffer")
            self.assertIn((True, True), states)
            self.assertEqual(states[-1], (False, False))
            self.assertEqual([a for a, _ in states], [b for _, b in states])
            switches = [
                i
                for i in range(1, len(kinds))
                if kinds[i - 1 : i + 1] == ["buffer", "bytes"]
            ]
            self.assertEqual(kept, [first, *switches[1:]])
            client.abort()
            server.abort()

        run(main)


#: Run in a fresh process: allocate and free, in a loop, what a receiver
#: holds from one turn to the next (three 256 KiB reads), and print the
#: minor page faults this took before and after `keepReadsInHeap`.
_HEAP_SWING = """
import resource, sys
from memux._iotuning import BULK_READ_SIZE, keepReadsInHeap

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def swing():
    before = faults()
    for _ in range(200):
        held = [bytes(BULK_READ_SIZE) for _ in range(3)]
        del held
    return faults() - before

block = bytes(BULK_READ_SIZE)  # as the first bulk read does
del block
first = swing()
keepReadsInHeap()
print(first, swing())
"""


class HeapTests(SynchronousTestCase):
    """
    `keepReadsInHeap`: bulk reads' memory stays in the C library's heap.
    """

    def test_swingKeptInHeap(self) -> None:
        """
        With glibc, a receiver whose reads swing by three bulk reads a turn
        has the heap's top trimmed and faulted back in every turn (some 36
        page faults each); after `keepReadsInHeap` hardly ever.
        """
        import platform
        import subprocess
        import sys

        if platform.libc_ver()[0] != "glibc":
            raise SkipTest("the C library is not glibc")
        done = subprocess.run(
            [sys.executable, "-c", _HEAP_SWING],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        before, after = map(int, done.stdout.split())
        self.assertGreater(before, 200 * 10)
        self.assertLess(after, before / 20)


class EndedSessionTests(SynchronousTestCase):
    """
    What is asked of a session that the peer has ended.
    """

    def test_pingAfterPeerEndedSession(self) -> None:
        """
        Once the peer's GOAWAY with an error has ended the session,
        C{ping()} and C{open_channel()} raise the `SessionLost` its
        channels get, naming that GOAWAY, even before the connection has
        closed.
        """

        async def main() -> list[BaseException]:
            client, a, server, b = pipedSessions()
            await client.ping()
            client.data_received(
                GoAwayFrame(0, ErrorCode.IDLE_TIMEOUT, "idle for 0.5 s").encode()
            )
            errors: list[BaseException] = []
            for attempt in (client.ping, lambda: client.open_channel(b"count")):
                with self.assertRaises(SessionLost) as caught:
                    await attempt()
                errors.append(caught.exception)
            client.abort()
            server.abort()
            return errors

        for error in run(main):
            assert isinstance(error, SessionLost)
            self.assertEqual(error.code, ErrorCode.IDLE_TIMEOUT)
            self.assertIn("idle for 0.5 s", error.reason)


class TLSReadingTests(SynchronousTestCase):
    """
    Bulk reading over asyncio's TLS transport.
    """

    def test_bulkOverTLS(self) -> None:
        """
        32 MiB and back go through TLS sessions intact: both ends switch
        to reading in bulk (their TLS transport's protocol is then the
        stand-in) and back to their buffers once the transfer is over.
        """
        certs = Certificates(self.mktemp())

        async def echo(channel: Channel) -> None:
            while data := await channel.read(1 << 20):
                await channel.write(data)

        async def main() -> None:
            serverContext = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            certs.server.configure_cert(serverContext)
            clientContext = ssl.create_default_context()
            certs.ca.configure_trust(clientContext)
            server = await aio.serve({b"echo": echo}, LOCAL, 0, ssl=serverContext)
            try:
                session = await aio.connect(
                    LOCAL, server.port, ssl=clientContext, server_hostname=HOSTNAME
                )
                transport = session.transport
                assert transport is not None
                channel = await session.open_channel(b"echo")
                block = os.urandom(1 << 16)
                total = 32 << 20
                switched = []

                async def send() -> None:
                    for _ in range(total // len(block)):
                        await channel.write(block)
                    channel.write_eof()

                async def receive() -> bytes:
                    got = bytearray()
                    while data := await channel.read(1 << 20):
                        got += data
                        switched.append(transport.get_protocol())
                    return bytes(got)

                _, echoed = await asyncio.gather(send(), receive())
                self.assertEqual(echoed, block * (total // len(block)))
                self.assertTrue(any(p is not session for p in switched))
                for _ in range(BULK_LEAVE_READS + 1):
                    await session.ping()
                self.assertIs(transport.get_protocol(), session)
                session.close()
                await session.wait_closed()
            finally:
                server.close()
                await server.drain(0)

        run(main)


class SocketTests(SynchronousTestCase):
    """
    The TCP connection under an asyncio session is tuned as under a
    Twisted one.
    """

    def setUp(self) -> None:
        if NOTSENT is None:
            raise SkipTest("this system has no TCP_NOTSENT_LOWAT")

    def test_options(self) -> None:
        """
        Both sides set TCP_NODELAY and let the kernel hold at most
        C{NOTSENT_LOWAT} unsent bytes.
        """

        async def main() -> None:
            server = await aio.serve({b"count": count}, LOCAL, 0)
            try:
                session = await aio.connect(LOCAL, server.port)
                await session.ping()
                for s in (session, server.sessions[0]):
                    sock = s.get_extra_info("socket")
                    self.assertEqual(
                        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1
                    )
                    self.assertEqual(
                        sock.getsockopt(socket.IPPROTO_TCP, NOTSENT), NOTSENT_LOWAT
                    )
                session.abort()
                await session.wait_closed()
            finally:
                server.close()
                await server.drain(0)

        run(main)

    def test_bulkSender(self) -> None:
        """
        A session sending bulk data pauses after each write to its
        connection of more than 64 KiB until the loop's next turn, as the
        Twisted front end's transport pauses it: so it reaches bulk mode
        within the first 16 MiB (where asyncio's own pausing, on loopback,
        took over a hundred), and the kernel may then hold
        C{BULK_NOTSENT_LOWAT} unsent bytes.
        """

        async def main() -> None:
            server = await aio.serve({b"count": count}, LOCAL, 0)
            try:
                session = await aio.connect(LOCAL, server.port)
                channel = await session.open_channel(b"count")
                block = b"b" * (1 << 16)
                for _ in range(256):  # 16 MiB
                    await channel.write(block)
                self.assertTrue(session._core.bulk)
                sock = session.get_extra_info("socket")
                self.assertEqual(
                    sock.getsockopt(socket.IPPROTO_TCP, NOTSENT), BULK_NOTSENT_LOWAT
                )
                channel.write_eof()
                self.assertEqual(await channel.receive_message(), b"%d" % (16 << 20))
                session.abort()
                await session.wait_closed()
            finally:
                server.close()
                await server.drain(0)

        run(main)


class FirstReadTests(SynchronousTestCase):
    """
    What arrives on a channel before its handler first reads is kept for
    whichever way the handler reads it.
    """

    def _before(
        self,
        handler: Callable[[Channel], Awaitable[bytes]],
        messages: tuple[bytes, ...] = (b"first", b"x" * 200_000),
    ) -> bytes:
        """
        Open a channel, send C{messages} (by default a small one and one of
        several chunks) and the end, and let C{handler} read only once all
        have arrived; return what it answers.
        """
        arrived = asyncio.Event

        async def main() -> bytes:
            ready = arrived()

            async def service(channel: Channel) -> None:
                await ready.wait()
                await channel.send_message(await handler(channel))

            server = await aio.serve({b"s": service}, LOCAL, 0)
            try:
                session = await aio.connect(LOCAL, server.port)
                channel = await session.open_channel(b"s")
                for message in messages:
                    await channel.send_message(message)
                channel.write_eof()
                await session.ping()
                await session.ping()  # (the data is ahead of the answer)
                ready.set()
                answer = await channel.receive_message()
                assert answer is not None
                session.abort()
                await session.wait_closed()
                return answer
            finally:
                server.close()
                await server.drain(0)

        result: bytes = run(main)
        return result

    def test_messages(self) -> None:
        """
        Read as messages: the small one, then the large one whole.
        """

        async def handler(channel: Channel) -> bytes:
            messages = [m async for m in channel]
            return b",".join(b"%d" % len(m) for m in messages)

        self.assertEqual(self._before(handler), b"5,200000")

    def test_bytes(self) -> None:
        """
        Read as bytes: everything, in order.
        """

        async def handler(channel: Channel) -> bytes:
            data = await channel.read()
            return b"%d %s" % (len(data), data[:6])

        self.assertEqual(self._before(handler), b"200005 firstx")

    def test_emptyMessages(self) -> None:
        """
        Empty messages are messages to a reader of messages, and nothing
        to a reader of bytes (never a premature end).
        """

        async def messages(channel: Channel) -> bytes:
            return b",".join([b"%d" % len(m) async for m in channel])

        async def firstRead(channel: Channel) -> bytes:
            return await channel.read(100)

        sent = (b"", b"abc", b"")
        self.assertEqual(self._before(messages, sent), b"0,3,0")
        self.assertEqual(self._before(firstRead, sent), b"abc")


async def digest(channel: Channel) -> None:
    """Read bytes to the end, then answer with their SHA-256, as a message."""
    h = hashlib.sha256()
    while data := await channel.read(1 << 20):
        h.update(data)
    await channel.send_message(h.digest())


class DirectWriteTests(SynchronousTestCase):
    """
    Over plain TCP a session writes its flushes to the socket itself (one
    C{writev}, no joined copy); what the kernel does not take goes to the
    transport, and the session pauses until the transport has sent it.
    """

    def test_limits(self) -> None:
        """
        Over plain TCP the session pauses while its transport holds
        anything (write buffer limits 0), in bulk mode too; over TLS, whose
        transport it does not bypass, it pauses above C{WRITE_BUFFER_HIGH}
        (C{BULK_WRITE_BUFFER_HIGH} in bulk mode).
        """
        certs = Certificates(self.mktemp())

        async def limits(tls: bool) -> list[tuple[int, int]]:
            async with countSession(certs, tls) as session:
                transport = session.transport
                assert transport is not None
                seen = [transport.get_write_buffer_limits()]
                channel = await session.open_channel(b"count")
                block = b"b" * (1 << 16)
                for _ in range(256):  # 16 MiB: bulk mode (see test_bulkSender)
                    await channel.write(block)
                self.assertTrue(session._core.bulk)
                seen.append(transport.get_write_buffer_limits())
                channel.write_eof()
                self.assertEqual(await channel.receive_message(), b"%d" % (16 << 20))
                return seen

        self.assertEqual(run(lambda: limits(False)), [(0, 0), (0, 0)])
        self.assertEqual(
            run(lambda: limits(True)),
            [
                (WRITE_BUFFER_HIGH // 4, WRITE_BUFFER_HIGH),
                (BULK_WRITE_BUFFER_HIGH // 4, BULK_WRITE_BUFFER_HIGH),
            ],
        )

    def test_latencyMode(self) -> None:
        """
        While a channel more urgent than the default is open, the session
        is in latency mode: the kernel holds at most
        C{LATENCY_NOTSENT_LOWAT} unsent, and a TLS connection pauses above
        C{LATENCY_WRITE_BUFFER_HIGH} (plain TCP, written directly, keeps
        its limits of 0); once that channel is closed, the usual limits.
        """
        certs = Certificates(self.mktemp())

        async def modes(tls: bool) -> list[tuple[Any, ...]]:
            async with countSession(certs, tls) as session:
                transport = session.transport
                assert transport is not None
                sock = session._tcp

                def mode() -> tuple[Any, ...]:
                    unsent = sock.getsockopt(socket.IPPROTO_TCP, NOTSENT)
                    return (
                        session._core.latency,
                        unsent,
                        transport.get_write_buffer_limits(),
                    )

                seen = [mode()]
                urgent = await session.open_channel(b"count", priority=0)
                await urgent.write(b"u")
                await session.ping()
                seen.append(mode())
                urgent.write_eof()
                self.assertEqual(await urgent.receive_message(), b"1")
                await session.ping()
                seen.append(mode())
                return seen

        if NOTSENT is None:
            raise SkipTest("this system has no TCP_NOTSENT_LOWAT")
        self.assertEqual(
            run(lambda: modes(False)),
            [
                (False, NOTSENT_LOWAT, (0, 0)),
                (True, LATENCY_NOTSENT_LOWAT, (0, 0)),
                (False, NOTSENT_LOWAT, (0, 0)),
            ],
        )
        normal = (WRITE_BUFFER_HIGH // 4, WRITE_BUFFER_HIGH)
        latency = (LATENCY_WRITE_BUFFER_HIGH // 4, LATENCY_WRITE_BUFFER_HIGH)
        self.assertEqual(
            run(lambda: modes(True)),
            [
                (False, NOTSENT_LOWAT, normal),
                (True, LATENCY_NOTSENT_LOWAT, latency),
                (False, NOTSENT_LOWAT, normal),
            ],
        )

    def test_partialWrites(self) -> None:
        """
        While the peer does not read, the kernel takes only part of the
        session's writes and the transport holds the rest; once the peer
        reads again, all arrives intact and in order.
        """

        async def main() -> None:
            roomy = SessionSettings(channelCredit=32 << 20, sessionCredit=64 << 20)
            server = await aio.serve({b"digest": digest}, LOCAL, 0, settings=roomy)
            try:
                session = await aio.connect(LOCAL, server.port)
                await session.ping()
                (peer,) = server.sessions
                assert peer.transport is not None and session.transport is not None
                peer.transport.pause_reading()
                channel = await session.open_channel(b"digest")
                data = os.urandom(24 << 20)
                chunks = [data[i : i + 50_000] for i in range(0, len(data), 50_000)]

                async def send() -> None:
                    for chunk in chunks:
                        await channel.write(chunk)
                    channel.write_eof()

                sending = asyncio.ensure_future(send())
                held = 0
                for _ in range(500):
                    held = session.transport.get_write_buffer_size()
                    if held:
                        break
                    await asyncio.sleep(0.01)
                self.assertGreater(held, 0)
                peer.transport.resume_reading()
                await sending
                answer = await channel.receive_message()
                self.assertEqual(answer, hashlib.sha256(data).digest())
                session.close()
                await session.wait_closed()
            finally:
                server.close()
                await server.drain(0)

        run(main)

    def test_resetMidFlushQuiet(self) -> None:
        """
        A flush of many pieces that meets the peer's reset hands the
        transport its rest once, not piece by piece: asyncio logs no
        "socket.send() raised exception." (it does from the sixth write to
        a lost connection), and the ping and the channels waiting get
        L{SessionLost}.
        """
        records: list[logging.LogRecord] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                records.append(record)

        keep = Keep(logging.WARNING)
        log = logging.getLogger("asyncio")
        log.addHandler(keep)
        self.addCleanup(log.removeHandler, keep)

        async def main() -> None:
            async with resetByPeer() as session:
                # Twenty OPENs and a PING, written in one flush.
                waits: list[Awaitable[object]] = [
                    session.open_channel(b"s%d" % i) for i in range(20)
                ]
                waits.append(session.ping())
                results = await asyncio.gather(*waits, return_exceptions=True)
                await session.wait_closed()
                self.assertIsInstance(results[-1], SessionLost)
                channel = results[0]
                assert isinstance(channel, Channel)
                with self.assertRaises(SessionLost):
                    await channel.receive_message()

        run(main)
        self.assertEqual(
            [r.getMessage() for r in records if "send()" in r.getMessage()], []
        )

    def test_peerReset(self) -> None:
        """
        Once the peer has reset the connection, the session's next write
        (it does not read, so only a write can meet the reset) ends it with
        L{SessionLost} giving the error: a failed write to the socket is
        reported, not lost.
        """

        async def main() -> None:
            async with resetByPeer() as session:
                assert session.transport is not None
                self.assertFalse(session.transport.is_closing())
                with self.assertRaises(SessionLost) as caught:
                    await session.ping()
                await session.wait_closed()
                self.assertIs(caught.exception, session.lost_error)
                self.assertRegex(str(caught.exception), "reset|[Bb]roken pipe")

        run(main)
