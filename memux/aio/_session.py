# -*- test-case-name: memux.test.test_aio -*-
"""
The asyncio front end of memux: `Session`, an `asyncio.Protocol` that runs
the sans-IO session core (`memux._session.SessionCore`) over any asyncio
transport, and `Server`, which serves sessions.

This layer is an adapter, as `memux.protocol` is for Twisted: bytes go in
and out, one ``loop.call_at`` timer runs the core's deadlines, the loop's
turns schedule flushes and the slicing of input floods, channels get
asyncio handlers, and what the core reports is logged (``logging``,
logger ``memux.aio``).  The connection is tuned as the Twisted front end
tunes its own (`memux._iotuning`: unsent bytes in the kernel, read sizes
and bulk reading).  It imports no Twisted.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import threading
import time
from asyncio import selector_events
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from memux._channel import Ending
from memux._engine import ChannelOpened
from memux._iotuning import (
    BULK_NOTSENT_LOWAT,
    INPUT_SLICE_SECONDS,
    INPUT_SLICE_STEPS,
    LATENCY_NOTSENT_LOWAT,
    NOTSENT_LOWAT,
    READ_SIZE,
    BulkReads,
    isTCP,
    keepReadsInHeap,
    setNoDelay,
    setUnsentLimit,
)
from memux._session import (
    BULK_FLUSH_BYTES,
    FLUSH_BYTES,
    LATENCY_FLUSH_BYTES,
    Notice,
    SessionCore,
    chooseService,
)
from memux.aio._channel import Channel, ChannelReader, ChannelWriter, _AioChannel
from memux.aio._errors import ChannelRefused, SessionLost, errorFor
from memux.codes import ErrorCode, SessionClosedError, describeCode
from memux.introspect import SessionSnapshot
from memux.settings import (
    ALPN,
    DEFAULT_URGENCY,
    DEFAULT_WEIGHT,
    Priority,
    SessionSettings,
    Settings,
    checkPriority,
)

__all__ = ["ChannelRequest", "Server", "Services", "Session"]

_log = logging.getLogger("memux.aio")

#: The connection's write buffer above which it pauses the session (as
#: Twisted's TCP buffer does); four times more in bulk mode.  (Over a
#: connection the session writes to directly, see `Session._writeDirect`,
#: none: it pauses while the transport holds anything.)
WRITE_BUFFER_HIGH = 2 * FLUSH_BYTES
BULK_WRITE_BUFFER_HIGH = 2 * BULK_FLUSH_BYTES
#: ... and in latency mode (`memux._session.LATENCY_FLUSH_BYTES`).
LATENCY_WRITE_BUFFER_HIGH = 2 * LATENCY_FLUSH_BYTES


class _ReadBuffer(threading.local):
    """
    The buffer the connections of one thread's event loop read into
    (`Session.get_buffer`), `READ_SIZE` long.  Shared: a transport fills
    it and hands it over (``buffer_updated``) before it reads again, for
    any connection, and the session takes a copy at once.  (asyncio's own
    reads allocate `BULK_READ_SIZE` each, above the C library's mmap
    threshold: a short read maps, page-faults, shrinks and unmaps it
    afresh, some 18 us, ten times the read itself.)
    """

    def __init__(self) -> None:
        self.normal = memoryview(bytearray(READ_SIZE))


_reads = _ReadBuffer()


class _BulkReader(asyncio.Protocol):
    """
    A session's connection's protocol while the session reads in bulk
    (see `memux._iotuning.BULK_AFTER_READS`), standing in for it and
    passing everything on: asyncio then reads 256 KiB at a time (its own
    read size, which is `memux._iotuning.BULK_READ_SIZE`) into bytes of
    their own, which the session takes as they are.  The C library keeps
    full reads of that size in its heap, and each spares a copy out of
    the shared buffer (`_ReadBuffer`).
    """

    __slots__ = ("_s",)

    def __init__(self, session: Session) -> None:
        self._s = session

    def data_received(self, data: bytes) -> None:
        self._s._bulkReceived(data)

    def eof_received(self) -> bool | None:
        return self._s.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._s.connection_lost(exc)

    def pause_writing(self) -> None:
        self._s.pause_writing()

    def resume_writing(self) -> None:
        self._s.resume_writing()


#: A write to the connection of more than this pauses the session until
#: the loop's next turn (see `Session._yieldOutput`): Twisted's TCP
#: ``bufferSize``, past which its transport pauses the Twisted front end.
TURN_WRITE_BYTES = READ_SIZE

#: A flush of at most this many pieces (frame headers and chunks) goes
#: straight to a plain TCP socket with one ``writev`` (see
#: `Session._writeDirect`); more are joined by the transport as before.
#: (Far below the system's limit, IOV_MAX, 1024 on Linux.)
WRITEV_PIECES = 64

#: The transports whose writes go straight to their socket, which the
#: session then writes to itself (see `Session._writeDirect`): asyncio's
#: plain socket transport, this very class (not TLS, nor a subclass or any
#: other wrapper that may give its socket as extra info), where the
#: system has ``writev``.
_SOCKET_TRANSPORT: tuple[type, ...] = tuple(
    filter(None, [getattr(selector_events, "_SelectorSocketTransport", None)])
    if hasattr(os, "writev")
    else ()
)

#: What serves a channel: ``async def handler(channel)``.
Handler: TypeAlias = Callable[[Channel], Awaitable[object]]


@dataclass(frozen=True)
class ChannelRequest:
    """
    What the peer asked for when it opened a channel; passed to a services
    chooser, which returns a handler, or None (or raises `ChannelRefused`
    with a reason) to refuse.
    """

    service: bytes
    metadata: bytes | None
    destination: tuple[str, int] | None
    channel: int
    lossy: bool
    session: Session


#: A mapping of service name to handler, or a chooser.
Services: TypeAlias = (
    "Mapping[bytes, Handler] | Callable[[ChannelRequest], Handler | None]"
)


class _Soon:
    """
    A call the loop makes soon, as the core wants it: ``active()`` until
    it runs or is cancelled, ``cancel()``.
    """

    __slots__ = ("_f", "_args")

    def __init__(self, loop: asyncio.AbstractEventLoop, f: Any, args: Any) -> None:
        self._f: Any = f
        self._args = args
        loop.call_soon(self._run)

    def _run(self) -> None:
        f = self._f
        if f is not None:
            self._f = None
            f(*self._args)

    def active(self) -> bool:
        return self._f is not None

    def cancel(self) -> None:
        self._f = None


class _Host:
    """
    What `SessionCore` asks of its front end (`memux._session.SessionHost`),
    done with asyncio for one `Session`.
    """

    __slots__ = ("_s", "loop", "channelRequested", "notice")

    def __init__(self, session: Session, loop: asyncio.AbstractEventLoop) -> None:
        self._s = session
        self.loop = loop
        self.channelRequested = session._channelRequested
        self.notice = session._notice

    def now(self) -> float:
        return self.loop.time()

    def write(self, pieces: list[bytes]) -> None:
        s = self._s
        transport = s.transport
        if transport is None:
            return
        fd = s._fd
        if (
            fd is not None
            and len(pieces) <= WRITEV_PIECES
            and not transport.get_write_buffer_size()
            and not transport.is_closing()
        ):
            size = s._writeDirect(fd, pieces)
        else:
            transport.writelines(pieces)
            size = sum(map(len, pieces))
        if s._outputTurn is None and size > TURN_WRITE_BYTES:
            s._yieldOutput()

    def closeConnection(self) -> None:
        transport = self._s.transport
        if transport is not None:
            transport.close()

    def abortConnection(self) -> None:
        transport = self._s.transport
        if transport is not None:
            transport.abort()

    def connectionClosing(self) -> bool:
        transport = self._s.transport
        return transport is not None and transport.is_closing()

    def flushSoon(self) -> _Soon:
        return _Soon(self.loop, self._s._flushNow, ())

    def callSoon(self, f: Callable[..., object], *args: object) -> _Soon:
        return _Soon(self.loop, f, args)

    def wakeAt(self, deadline: float | None) -> None:
        s = self._s
        timer = s._timer
        if deadline is None:
            if timer is not None:
                timer.cancel()
            s._timer = s._timerAt = None
            return
        if s._timerAt is not None and s._timerAt <= deadline:
            return  # it wakes earlier anyway, and looks again then
        if timer is not None:
            timer.cancel()
        s._timerAt = deadline
        s._timer = self.loop.call_at(deadline, s._timerFired)

    def pingAnswered(self, payload: bytes, rtt: float) -> None:
        waiter = self._s._pings.pop(payload, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(rtt)

    def bulkMode(self, on: bool) -> None:
        s = self._s
        transport = s.transport
        if transport is not None:
            if s._fd is None:
                high = BULK_WRITE_BUFFER_HIGH if on else WRITE_BUFFER_HIGH
                transport.set_write_buffer_limits(high, high // 4)
            if s._tcp is not None:
                setUnsentLimit(s._tcp, BULK_NOTSENT_LOWAT if on else NOTSENT_LOWAT)

    def latencyMode(self, on: bool) -> None:
        s = self._s
        transport = s.transport
        if transport is not None:
            if s._fd is None:  # (written directly: the limits stay 0)
                high = LATENCY_WRITE_BUFFER_HIGH if on else WRITE_BUFFER_HIGH
                transport.set_write_buffer_limits(high, high // 4)
            if s._tcp is not None:
                setUnsentLimit(s._tcp, LATENCY_NOTSENT_LOWAT if on else NOTSENT_LOWAT)


def _describe(address: Any) -> str:
    """
    A socket address as the Twisted front end logs it: ``host:port``
    (``[host]:port`` for IPv6), a UNIX path, or "an unknown address".
    """
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(address, str) and address:
        return address
    return "an unknown address"


class Session(asyncio.BufferedProtocol):
    """
    One memux session over one connection, as an asyncio protocol (a
    `asyncio.BufferedProtocol`, which also takes bytes as
    `asyncio.Protocol` does, with `data_received`).
    `connect` and `serve` make them; `start_session` runs one over any
    asyncio transport.

    Channels the peer opens are served by ``services``: a mapping of
    service name (bytes) to ``async def handler(channel)``, or a chooser
    taking a `ChannelRequest` and returning a handler, or None (or raising
    `ChannelRefused`) to refuse.  A handler's channel is closed when it
    returns (reset if it raises).
    """

    def __init__(
        self,
        services: Services | None = None,
        *,
        client: bool = False,
        settings: SessionSettings | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if loop is None:
            loop = asyncio.get_running_loop()
        self._loop = loop
        self._services: Any = services if services is not None else {}
        self._chooser = callable(self._services) and not isinstance(
            self._services, Mapping
        )
        #: whether this side opened the connection (odd channel ids)
        self.client = client
        #: this side's settings
        self.settings = settings or SessionSettings()
        self._core = SessionCore(_Host(self, loop), client, self.settings)
        #: the connection (an asyncio transport), once made
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timerAt: float | None = None
        self._inputCall: asyncio.Handle | None = None
        # Output (see `_yieldOutput`): whether the connection paused us, and
        # the resumption due at the next turn after a large write.
        self._writePaused = False
        self._outputTurn: asyncio.Handle | None = None
        self._pings: dict[bytes, asyncio.Future[float]] = {}
        self._pingIds = itertools.count(1)
        self._closed: asyncio.Future[None] = loop.create_future()
        self._handlers: set[asyncio.Task[None]] = set()
        self._alpnError: str | None = None
        self._server: Server | None = None
        # The bulk-reading switch (see `buffer_updated`).
        self._bulkReads = BulkReads(READ_SIZE)
        # The connection's TCP socket, if it has one (see `_tune`).
        self._tcp: Any = None
        # Its file descriptor if the session writes to it directly (plain
        # TCP, see `_writeDirect`), else None.
        self._fd: int | None = None
        #: the error the session's channels and pings got when it ended,
        #: once it has
        self.lost_error: SessionLost | None = None

    def __repr__(self) -> str:
        side = "client" if self.client else "server"
        return f"<memux.aio.Session {side} {self.get_extra_info('peername')}>"

    # ------------------------------------------------------------ public

    @property
    def peer_settings(self) -> Settings:
        """
        The peer's settings (the protocol's initial values until its
        preface arrives).
        """
        return self._core.engine.peerSettings

    @property
    def connected(self) -> bool:
        """
        Whether the connection is up.
        """
        return self._core.connected

    def is_usable(self) -> bool:
        """
        Whether new channels may be opened: connected, and neither side
        has started to end the session.
        """
        return self._core.usable()

    def counters(self) -> dict[str, int]:
        """
        Bytes and frames moved, channels opened by each side and open now
        (as `memux.protocol.MemuxProtocol.counters`).
        """
        return self._core.summary()

    def snapshot(self, channels: bool = True) -> SessionSnapshot:
        """
        The session now, as plain data (`memux.introspect.SessionSnapshot`,
        JSON-ready with ``toJSON()``, the same as the Twisted front end's):
        its peer, path, settings, counters, round trip, GOAWAY state, and
        with ``channels`` each open channel's state, bytes, queue, credit
        and priority.
        """
        kind = "unknown"
        sock = self.get_extra_info("socket")
        if sock is not None:
            if sock.family == socket.AF_UNIX:
                kind = "UNIX"
            elif sock.family in (socket.AF_INET, socket.AF_INET6):
                # (IPPROTO_MPTCP is 262 on Linux; not every Python names it.)
                kind = "MPTCP" if sock.proto == 262 else "TCP"
        ssl = self.get_extra_info("ssl_object")
        alpn = ssl.selected_alpn_protocol() if ssl is not None else None
        return self._core.snapshot(
            peer=_describe(self.get_extra_info("peername")),
            host=_describe(self.get_extra_info("sockname")),
            transport=kind,
            tls=ssl is not None,
            alpn=alpn,
            channels=channels,
        )

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """
        What the connection says (``"peername"``, ``"sockname"``,
        ``"ssl_object"``, ...).
        """
        if self.transport is None:
            return default
        return self.transport.get_extra_info(name, default)

    async def open_channel(
        self,
        service: bytes | str = b"",
        *,
        metadata: bytes | None = None,
        destination: tuple[str, int] | None = None,
        lossy: bool = False,
        priority: int | None = None,
        weight: int | None = None,
    ) -> Channel:
        """
        Open a channel for ``service``.  It returns at once (no round
        trip); what is written goes out as the peer's credit allows.  If
        the peer refuses the channel, its reads and writes raise
        `ChannelRefused`.  ``lossy``: the sender may shed queued messages
        when the channel cannot keep up (the reader counts them in
        `Channel.dropped`).  ``priority`` (the urgency, 0 the most urgent,
        to 7) and ``weight`` (1 to 256) set the channel's priority from the
        start (see :doc:`/priorities`; `Channel.set_priority` changes it).

        :raises TypeError: ``priority`` or ``weight`` is not an integer.
        :raises ValueError: either is out of range.
        """
        chosen: Priority | None = None
        if priority is not None or weight is not None:
            chosen = checkPriority(
                DEFAULT_URGENCY if priority is None else priority,
                DEFAULT_WEIGHT if weight is None else weight,
            )
        if isinstance(service, str):
            service = service.encode("utf-8")
        elif not isinstance(service, bytes):
            raise TypeError(
                f"service must be bytes or str, not {type(service).__name__}"
            )
        core = self._core
        engine = core.engine
        if not core.connected or engine.terminated:
            raise self._notConnected()
        if engine.goAwayReceived is not None:
            raise ChannelRefused("the peer is going away", remote=True)
        try:
            cid = engine.openChannel(service, metadata, destination, lossy)
        except SessionClosedError as e:
            raise SessionLost(str(e)) from None
        if chosen is not None:
            engine.setPriority(cid, chosen.urgency, chosen.weight)
        c = _AioChannel(core, cid, service, lossy)
        core.register(c)
        core.flushSoon()
        return Channel(c, self, metadata, destination)

    async def open_streams(
        self,
        service: bytes | str = b"",
        *,
        metadata: bytes | None = None,
        destination: tuple[str, int] | None = None,
        limit: int = 2**16,
    ) -> tuple[ChannelReader, ChannelWriter]:
        """
        Open a channel and return it as a (reader, writer) pair, as
        `asyncio.open_connection` does for TCP (see `Channel.streams`).
        """
        channel = await self.open_channel(
            service, metadata=metadata, destination=destination
        )
        return channel.streams(limit)

    def _notConnected(self) -> BaseException:
        """
        The error for what is asked of a session that has ended, or is
        ending: the one its channels got (or will get, once its connection
        closes: the GOAWAY, timeout or violation that ended it); else that
        it is not connected.
        """
        if self.lost_error is not None:
            return self.lost_error
        terminated = self._core.terminatedWith
        if terminated is not None:
            error = errorFor(Ending("lost", *terminated))
            if error is not None:
                return error
        return SessionLost("the session is not connected")

    async def ping(self) -> float:
        """
        Send a PING; return the round-trip time in seconds.
        """
        if not self._core.connected or self._core.engine.terminated:
            raise self._notConnected()
        payload = next(self._pingIds).to_bytes(8, "big")
        waiter: asyncio.Future[float] = self._loop.create_future()
        self._pings[payload] = waiter
        self._core.ping(payload)
        return await waiter

    def goaway(
        self, code: int = ErrorCode.NO_ERROR, reason: str = ""
    ) -> Awaitable[None]:
        """
        Stop accepting channels from the peer (GOAWAY).  With NO_ERROR the
        channels open now carry on and the connection closes when the last
        one ends (graceful drain); with an error code it closes at once.
        Return a future that is done once the connection has closed.
        """
        if self._core.connected:
            self._core.goAway(code, reason)
        return asyncio.shield(self._closed)

    def close(self) -> None:
        """
        Close the connection now, after writing what can be written; open
        channels end with `SessionLost`.  (For a graceful end, `goaway`.)
        """
        self._core.loseConnection()

    def abort(self, reason: str = "aborted") -> None:
        """
        Abort the connection at once, discarding what is unsent; open
        channels end with `SessionLost` carrying ``reason``.
        """
        self._core.abort(None, reason)

    async def wait_closed(self) -> None:
        """
        Wait until the connection has closed (the reason is then in
        `lost_error`).
        """
        await asyncio.shield(self._closed)

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()

    # ------------------------------------------------------------ asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """
        Check the TLS ALPN choice, send our preface at once.
        """
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        ssl = transport.get_extra_info("ssl_object")
        if ssl is not None:
            chosen = ssl.selected_alpn_protocol()
            if chosen is not None and chosen != ALPN.decode():
                # The peer speaks something else over this TLS connection.
                self._alpnError = f"the peer chose ALPN {chosen!r}, not {ALPN!r}"
                transport.abort()
                return
        transport.set_write_buffer_limits(WRITE_BUFFER_HIGH, WRITE_BUFFER_HIGH // 4)
        self._tune(transport)
        if self._server is not None:
            self._server._sessionStarted(self)
        self._core.connectionMade()

    def _tune(self, transport: asyncio.Transport) -> None:
        """
        Tune a TCP connection as the Twisted front end does
        (`memux._tuning.tuneConnection`): TCP_NODELAY (asyncio sets it
        too), and the kernel's unsent bytes limited (`NOTSENT_LOWAT`).
        """
        sock = transport.get_extra_info("socket")
        if sock is not None and isTCP(sock):
            self._tcp = sock
            setNoDelay(sock)
            setUnsentLimit(sock, NOTSENT_LOWAT)
            if type(transport) in _SOCKET_TRANSPORT:
                self._fd = sock.fileno()
                transport.set_write_buffer_limits(0, 0)

    def _writeDirect(self, fd: int, pieces: list[bytes]) -> int:
        """
        Write ``pieces`` to the connection's socket ``fd`` (whose transport
        has nothing buffered) with one ``writev``; hand what the kernel did
        not take to the transport, which sends it once it can (and pauses
        the session meanwhile: its write buffer limit is 0).  Return how
        many bytes the pieces held.

        Why not the transport: asyncio's (before 3.12) joins a flush's
        pieces into one string, and where the kernel takes only part of it
        (as it does with its unsent bytes limited, see `NOTSENT_LOWAT`)
        copies the rest twice more into its buffer, and every later write
        once more while anything waits there: measured on a loopback bulk
        sender, writing straight to the socket took its user CPU per MB
        from about 400 to 220 us (Twisted's front end: 290).
        """
        size = sum(map(len, pieces))
        try:
            sent = os.writev(fd, pieces)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = 0  # (the transport meets the error too, and reports it)
        if sent < size:
            transport = self.transport
            assert transport is not None
            for piece in pieces:
                n = len(piece)
                if sent >= n:
                    sent -= n
                    continue
                transport.write(memoryview(piece)[sent:] if sent else piece)
                sent = 0
                if transport.is_closing():
                    # It met the connection's error (and will report it):
                    # the rest can go nowhere, and asyncio logs a warning
                    # for each write to a lost connection past the fifth.
                    break
        return size

    def get_buffer(self, sizehint: int) -> memoryview:
        """
        Where the connection reads into: 64 KiB of a buffer shared by the
        thread's connections.  (``sizehint`` is not used.)
        """
        return _reads.normal

    def buffer_updated(self, nbytes: int) -> None:
        """
        ``nbytes`` were read into the buffer: feed a copy of them to the
        core (`data_received`); after 16 full reads in a row (as the
        Twisted front end counts them), read in bulk: 256 KiB at a time,
        into bytes of their own.
        """
        data = _reads.normal[:nbytes].tobytes()
        reads = self._bulkReads
        if (reads.fullReads or nbytes >= READ_SIZE) and reads.count(nbytes):
            keepReadsInHeap()
            self._core.readingInBulk(True)
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.set_protocol(_BulkReader(self))
        self.data_received(data)

    def _bulkReceived(self, data: bytes) -> None:
        """
        A read in bulk reading (see `_BulkReader`): feed it; after
        `memux._iotuning.BULK_LEAVE_READS` shorter reads in a row, read
        into the shared buffer again.
        """
        if self._bulkReads.count(len(data)) is False:
            self._core.readingInBulk(False)
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.set_protocol(self)
        self.data_received(data)

    def data_received(self, data: bytes) -> None:
        """
        Feed the core.  A read of more than the core's input step is
        finished in later turns of the loop, with reading paused meanwhile,
        so one peer's flood does not stall the others.
        """
        core = self._core
        core.receiveData(data)
        if self._inputCall is None and core.engine.inputPending and core.connected:
            assert self.transport is not None
            self.transport.pause_reading()
            self._inputCall = self._loop.call_soon(self._inputStep)

    def _inputStep(self) -> None:
        """
        Work through held-back input for a slice of this turn
        (`INPUT_SLICE_STEPS` steps or `INPUT_SLICE_SECONDS`), then leave
        the rest to the next turn, after other sessions, or resume reading.
        """
        core = self._core
        engine = core.engine
        end = time.monotonic() + INPUT_SLICE_SECONDS
        for _ in range(INPUT_SLICE_STEPS):
            core.receiveData(b"")
            if not (core.connected and engine.inputPending):
                break
            if time.monotonic() >= end:
                break
        if core.connected and engine.inputPending:
            self._inputCall = self._loop.call_soon(self._inputStep)
            return
        self._inputCall = None
        transport = self.transport
        if core.connected and transport is not None and not transport.is_closing():
            transport.resume_reading()

    def eof_received(self) -> bool | None:
        """
        The peer closed its side of the connection: the session ends (what
        is unsent cannot matter to a peer that has gone).
        """
        return None

    def pause_writing(self) -> None:
        """
        The connection's buffer is full: the core stops writing to it.
        """
        self._writePaused = True
        if not self._core.outputPaused:
            self._core.pauseOutput()

    def resume_writing(self) -> None:
        """
        The connection drained: the core writes again (unless it waits for
        the next turn, see `_yieldOutput`).
        """
        self._writePaused = False
        if self._outputTurn is None:
            self._core.resumeOutput()

    def _yieldOutput(self) -> None:
        """
        A large write went to the connection: pause the core until the
        loop's next turn, as Twisted's TCP transport pauses its producer
        once more than its ``bufferSize`` waits, until it sent it at the
        next turn.  The application's writers run meanwhile, and the next
        flush takes what they wrote; and the core counts these pauses
        towards bulk mode (`memux._session.BULK_AFTER_FLUSHES`), as under
        Twisted.  (asyncio sends a write at once where the kernel takes it,
        and pauses only once the kernel takes no more: on loopback, with a
        reader that keeps up, hardly ever, and a bulk sender stayed in
        normal mode, half the pace on a 64 MiB transfer.)
        """
        core = self._core
        if not core.outputPaused:
            core.pauseOutput()
        self._outputTurn = self._loop.call_soon(self._turnResume)

    def _turnResume(self) -> None:
        self._outputTurn = None
        core = self._core
        if not self._writePaused and core.outputPaused and core.connected:
            core.resumeOutput()

    def connection_lost(self, exc: Exception | None) -> None:
        """
        Every open channel ends with `SessionLost`; pending pings fail.
        """
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timerAt = None
        if self._inputCall is not None:
            self._inputCall.cancel()
            self._inputCall = None
        if self._outputTurn is not None:
            self._outputTurn.cancel()
            self._outputTurn = None
        core = self._core
        if not core.connected and self._alpnError is not None:
            ending = Ending("lost", None, self._alpnError)
        else:
            why = str(exc) if exc is not None else "connection closed"
            ending = core.connectionLost(exc is None, why)
        lost = errorFor(ending)
        assert isinstance(lost, SessionLost)
        self.lost_error = lost
        _log.info(
            "memux session with %s ended: %s",
            self.get_extra_info("peername"),
            "closed cleanly" if core.terminatedWith is None and exc is None else lost,
        )
        if core.endingsUnlogged:
            _log.info(
                "... and %d more channel resets and refusals, not logged",
                core.endingsUnlogged,
            )
        core.endChannels(ending)
        pings, self._pings = self._pings, {}
        for waiter in pings.values():
            if not waiter.done():
                waiter.set_exception(lost)
        if not self._closed.done():
            self._closed.set_result(None)
        if self._server is not None:
            self._server._sessionEnded(self)

    # ------------------------------------------------------------ internals

    def _flushNow(self) -> None:
        core = self._core
        core.flushCall = None  # (this is it)
        core.flush()

    def _timerFired(self) -> None:
        self._timer = self._timerAt = None
        core = self._core
        core.handleTimer(self._loop.time())
        deadline = core.nextDeadline()
        if deadline is not None and core.connected:
            self._core.host.wakeAt(deadline)

    def _choose(self, event: ChannelOpened) -> Handler | str:
        """
        The handler for a channel the peer opened, or why it is refused
        (`chooseService`: the policy the Twisted front end uses too).
        """
        return chooseService(
            event,
            None if self._chooser else self._services,
            self._ask,
            ChannelRefused,
            self._choiceFailed,
        )

    def _ask(self, event: ChannelOpened) -> Handler | None:
        """
        Ask the chooser callable for a channel the peer opened.
        """
        request = ChannelRequest(
            event.service,
            event.metadata,
            event.destination,
            event.channel,
            event.lossy,
            self,
        )
        return self._services(request)  # type: ignore[no-any-return]

    def _choiceFailed(self, event: ChannelOpened) -> None:
        _log.exception("Error choosing a handler for channel %d", event.channel)

    def _channelRequested(self, event: ChannelOpened) -> _AioChannel | str:
        """
        The peer opened a channel: start its handler, or return why not
        (the core refuses it).
        """
        handler = self._choose(event)
        if isinstance(handler, str):
            if self._core.mayLogEnding():
                _log.info("Refused channel %d: %s", event.channel, handler)
            return handler
        core = self._core
        c = _AioChannel(core, event.channel, event.service, event.lossy)
        core.register(c)
        channel = Channel(c, self, event.metadata, event.destination)
        # Held here while it runs (the loop keeps only weak references);
        # it lets go itself (a done callback would cost a turn of its own).
        self._handlers.add(self._loop.create_task(self._serve(handler, channel)))
        return c

    async def _serve(self, handler: Handler, channel: Channel) -> None:
        """
        Run ``handler`` on ``channel``; close the channel when it returns,
        reset it (INTERNAL_ERROR) if it raises.
        """
        try:
            await handler(channel)
        except asyncio.CancelledError:
            channel.abort()
            raise
        except Exception:
            if channel._c._ending is None:
                _log.exception(
                    "Unhandled error in handler of memux channel %d; resetting it",
                    channel.id,
                )
                channel.reset(ErrorCode.INTERNAL_ERROR, "internal error")
            else:
                _log.info(
                    "Handler of memux channel %d ended with its channel",
                    channel.id,
                    exc_info=True,
                )
        else:
            channel.close()
        finally:
            self._handlers.discard(asyncio.current_task())

    def _notice(self, notice: Notice) -> None:
        """
        Log what the core reports: routine events at info or warning.
        """
        f = notice.fields
        peer = self.get_extra_info("peername")
        match notice.what:
            case "channel reset":
                ending: Ending = f["ending"]
                if self._core.mayLogEnding():
                    level = logging.INFO if ending.remote else logging.WARNING
                    _log.log(level, "%s (channel %d)", errorFor(ending), f["channel"])
            case "goaway received":
                g = f["goAway"]
                _log.info(
                    "Peer %s is going away (last channel %d, %s: %s)",
                    peer,
                    g.lastChannel,
                    describeCode(g.code),
                    g.reason,
                )
            case "session terminated":
                s = f["event"]
                _log.warning(
                    "memux session with %s terminated: %s: %s",
                    peer,
                    describeCode(s.code) if s.code is not None else "-",
                    s.reason,
                )
            case what:
                _log.info("memux session with %s: %s %s", peer, what, f)


class Server:
    """
    A listening memux server (from `serve`): each connection is a
    `Session` serving ``services``.  Close it with `close` (stops
    listening) and `drain` (ends the sessions gracefully).
    """

    def __init__(
        self, services: Services, settings: SessionSettings | None = None
    ) -> None:
        self._services = services
        self._settings = settings
        self._server: asyncio.Server | None = None
        self._sessions: set[Session] = set()
        self._draining = False
        self._idle: asyncio.Event | None = None

    def _newSession(self) -> Session:
        session = Session(self._services, client=False, settings=self._settings)
        session._server = self
        return session

    def _sessionStarted(self, session: Session) -> None:
        self._sessions.add(session)
        if self._draining:
            session.goaway(ErrorCode.NO_ERROR, "shutting down")

    def _sessionEnded(self, session: Session) -> None:
        self._sessions.discard(session)
        if not self._sessions and self._idle is not None:
            self._idle.set()

    @property
    def sockets(self) -> tuple[Any, ...]:
        """
        The listening sockets.
        """
        assert self._server is not None
        return tuple(self._server.sockets)

    @property
    def port(self) -> int:
        """
        The port of the first listening socket.
        """
        port: int = self.sockets[0].getsockname()[1]
        return port

    @property
    def sessions(self) -> list[Session]:
        """
        The sessions connected now.
        """
        return list(self._sessions)

    def close(self) -> None:
        """
        Stop listening (the sessions carry on; see `drain`).
        """
        assert self._server is not None
        self._server.close()

    async def wait_closed(self) -> None:
        """
        Wait until the listening sockets are closed.
        """
        assert self._server is not None
        await self._server.wait_closed()

    async def serve_forever(self) -> None:
        """
        Serve until cancelled.
        """
        assert self._server is not None
        await self._server.serve_forever()

    async def drain(self, timeout: float | None = None) -> None:
        """
        End every session gracefully: each sends GOAWAY NO_ERROR and closes
        once its open channels have ended; sessions still connected after
        ``timeout`` seconds are aborted.  Sessions accepted meanwhile are
        drained as they start.
        """
        self._draining = True
        if not self._sessions:
            return
        self._idle = asyncio.Event()
        for session in list(self._sessions):
            session.goaway(ErrorCode.NO_ERROR, "shutting down")
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            for session in list(self._sessions):
                session.abort(f"shutting down: still open {timeout:g} s after GOAWAY")
            await self._idle.wait()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.drain(0)
        await self.wait_closed()
