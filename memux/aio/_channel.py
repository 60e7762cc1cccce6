# -*- test-case-name: memux.test.test_aio -*-
"""
One channel of an asyncio memux session: `Channel` (messages, bytes,
backpressure) and the `ChannelReader`/`ChannelWriter` pair for code
written against asyncio's streams, over `_AioChannel`, the session core's
`ChannelCore` as this front end drives it.

Receive credit follows the application's reads: what arrives is handed to
the channel's buffer, and the peer granted credit for it, until the
buffer holds more than `READ_AHEAD` bytes unread; then the channel is
paused (the core holds what arrives, within the credit it granted, and
grants no more) until the application has read it below that.  Writes
queue in the core and wait while the channel's producer is paused (its
queue is full: no credit, or the connection is slow), so a writer is held
back rather than buffering without bound.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from memux._channel import ChannelCore, Ending
from memux.aio._errors import errorFor
from memux.codes import ChannelClosedError, ChannelState, ErrorCode
from memux.settings import DEFAULT_WEIGHT, Priority

if TYPE_CHECKING:
    from memux._session import SessionCore
    from memux.aio._session import Session

__all__ = ["Channel", "ChannelReader", "ChannelWriter"]

_log = logging.getLogger("memux.aio")

#: How many bytes `ChannelReader.readuntil` (and ``readline``) gathers
#: looking for its separator before it gives up, as asyncio's streams.
DEFAULT_LIMIT = 2**16

#: A channel's reader is handed what arrives (and the peer is granted
#: credit for it) until more than this many bytes, or this many messages,
#: wait in its buffer unread; then the core holds the rest, granting no
#: more, until the reader has taken the buffer below it.  One frame's
#: worth by default, so memory stays bounded as the session's settings
#: say, give or take two frames per channel (the last one delivered may be
#: a whole frame past it); a reader of small messages takes them from the
#: buffer without a round through the core for each; and a reader of 64
#: KiB chunks gets them two at a time from the core (one round through it
#: per 128 KiB, not per chunk).
READ_AHEAD = 64 * 1024
READ_AHEAD_ITEMS = 256

_BYTES, _MESSAGES = 0, 1


def _loopOf(core: SessionCore) -> asyncio.AbstractEventLoop:
    """
    The event loop of the session that ``core`` runs.
    """
    loop: asyncio.AbstractEventLoop = cast(Any, core.host).loop
    return loop


class _Writer:
    """
    The producer registered on every channel, so the core pauses and
    resumes it; `_AioChannel` overrides the hooks that would call it.
    """

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


_WRITER = _Writer()


class _AioChannel(ChannelCore):
    """
    The core's channel object for one asyncio channel; it is also its own
    receiving "protocol" (``dataReceived``, ``messageReceived``, the
    half-close and drop notices), which fills the buffer the application
    reads from.
    """

    # Until the application reads (which says whether it reads bytes or
    # messages), the core delivers as for messages (`_mode` 1): a whole
    # message reads the same either way, so it goes to the buffer at once
    # (a server's first request, with no round through the inbox); the
    # first piece of a message in pieces stops delivery (see `_assemble`),
    # and it waits in the core's inbox, with what follows, for the read.
    _chosen = False
    _eof = False
    _ending: Ending | None = None
    _readWaiter: asyncio.Future[None] | None = None
    _writeWaiter: asyncio.Future[None] | None = None
    _closedWaiter: asyncio.Future[None] | None = None
    #: messages the peer discarded on this (lossy) channel
    dropped = 0

    def __init__(self, core: SessionCore, channel: int, service: bytes, lossy: bool):
        ChannelCore.__init__(self, core, channel, service, lossy, mode=_MESSAGES)
        self.protocol = self
        # (Set here, not as class attributes: a compiled `ChannelCore`
        # reads its own fields, not a Python subclass's class attributes.)
        self.producer = _WRITER
        self.streamingProducer = True
        self._buffer: deque[bytes] = deque()
        self._buffered = 0
        if core.outputPaused:
            self._pauseProducer()

    # ------------------------------------------------------------ the core's

    def _halfCloser(self) -> Any:
        return self

    def _dropReceiver(self) -> Any:
        return self

    def _failed(self) -> Any:
        _log.exception("Error delivering on memux channel %d", self.channel)
        return sys.exc_info()[1]

    def _assemble(self, data: bytes, end: bool) -> None:
        if self._chosen:
            ChannelCore._assemble(self, data, end)
            return
        # Not read yet: whether these pieces make one message or part of a
        # byte stream is the reader's choice.  Held (first in the inbox: it
        # came before whatever is there), not consumed.
        self._paused = True
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.appendleft((data, end))

    def _dropPartial(self) -> None:
        if self._chosen:
            ChannelCore._dropPartial(self)
        # (Not read yet: all that is held is kept, as for bytes; a reader of
        # messages never gets a message's pieces without its end.)

    def _pauseProducer(self) -> None:
        if not self._producerPaused and self.producer is not None:
            self._producerPaused = True
            self._core.producerPaused(self)

    def _resumeProducer(self) -> None:
        if self._producerPaused:
            self._producerPaused = False
            self._wakeWriter()

    def _terminate(self, ending: Ending) -> None:
        ChannelCore._terminate(self, ending)
        self._ended(ending)

    def _resetNow(self, code: int, reason: str, ending: Ending) -> None:
        # Our own reset or abort: what was read but not taken goes too.
        self._buffer.clear()
        self._buffered = 0
        ChannelCore._resetNow(self, code, reason, ending)
        self._ended(ending)

    def _lose(self, ending: Ending) -> None:
        self._ending = ending
        # (The core let go of everything else; this breaks our own cycle,
        # so a closed channel is freed without the garbage collector.)
        self.protocol = None
        self._ended(ending)
        self._wakeReader()

    def _ended(self, ending: Ending) -> None:
        """
        The channel has ended (its end may still wait behind data held for
        the reader): writers and `Channel.wait_closed` learn of it now.
        """
        if self._ending is None:
            self._ending = ending
        self._wakeWriter()
        waiter = self._closedWaiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------ receiving

    def dataReceived(self, data: bytes) -> None:
        buffer = self._buffer
        buffer.append(data)
        self._buffered += len(data)
        if self._buffered > READ_AHEAD or len(buffer) >= READ_AHEAD_ITEMS:
            self._paused = True
        waiter = self._readWaiter
        if waiter is not None:
            self._readWaiter = None
            if not waiter.done():
                waiter.set_result(None)

    messageReceived = dataReceived

    def readConnectionLost(self) -> None:
        self._eof = True
        self._wakeReader()

    def writeConnectionLost(self) -> None:
        pass

    def messagesDropped(self, count: int) -> None:
        self.dropped += count

    def _wakeReader(self) -> None:
        waiter = self._readWaiter
        if waiter is not None:
            self._readWaiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _select(self, mode: int) -> None:
        if self._mode != mode:
            if self._chosen:
                raise RuntimeError(
                    "this channel is read as "
                    + ("messages" if self._mode else "bytes")
                    + ": read it one way only"
                )
            self._mode = mode
            if mode == _BYTES and b"" in self._buffer:
                # Empty messages that came before the first read are
                # nothing in a byte stream (and b"" would read as its end).
                self._buffer = deque(chunk for chunk in self._buffer if chunk)
        self._chosen = True

    def _atEnd(self) -> bool:
        """
        Whether nothing more will arrive; raise the error the channel ended
        with if it did not end cleanly.
        """
        if self._lost:
            ending = self._ending
            error = None if ending is None else errorFor(ending)
            if error is not None:
                raise error
            return True
        return self._eof

    async def _more(self) -> None:
        """
        Let the core deliver what it holds; if that is nothing, wait until
        something arrives (or the end).
        """
        had = self._buffered, len(self._buffer)
        self._paused = False
        if (
            (self._inbox or self._pendingLoss is not None)
            and self._deliverCall is None
            and not self._delivering
        ):
            self._deliver()  # (`ChannelCore._kick`, unpaused)
        if (self._buffered, len(self._buffer)) != had or self._eof or self._lost:
            return
        if self._readWaiter is not None:
            raise RuntimeError("another coroutine is already reading this channel")
        waiter = _loopOf(self._core).create_future()
        self._readWaiter = waiter
        try:
            await waiter
        finally:
            if self._readWaiter is waiter:
                self._readWaiter = None

    def _refill(self) -> None:
        """
        The reader took from a full buffer: let the core deliver more.
        """
        if self._buffered < READ_AHEAD and len(self._buffer) < READ_AHEAD_ITEMS:
            self._paused = False
            if (
                (self._inbox or self._pendingLoss is not None)
                and self._deliverCall is None
                and not self._delivering
            ):
                self._deliver()  # (`ChannelCore._kick`, unpaused)

    def _take(self, n: int) -> bytes:
        """
        Up to ``n`` bytes from the buffer (which holds some): a whole chunk
        where it fits, uncopied.
        """
        buffer = self._buffer
        chunk = buffer[0]
        if len(chunk) <= n:
            buffer.popleft()
            self._buffered -= len(chunk)
        else:
            buffer[0] = chunk[n:]
            self._buffered -= n
            chunk = chunk[:n]
        if self._paused and self._chosen:
            self._refill()
        return chunk

    def _joined(self) -> bytes:
        """
        Everything buffered, as one chunk (which stays buffered).
        """
        buffer = self._buffer
        if len(buffer) > 1:
            whole = b"".join(buffer)
            buffer.clear()
            buffer.append(whole)
        return buffer[0] if buffer else b""

    async def read(self, n: int) -> bytes:
        if not self._chosen or self._mode != _BYTES:
            self._select(_BYTES)
        if n == 0:
            return b""
        if n < 0:
            parts: list[bytes] = []
            while True:
                if self._buffer:
                    parts.extend(self._buffer)
                    self._buffer.clear()
                    self._buffered = 0
                elif self._atEnd():
                    return b"".join(parts)
                else:
                    await self._more()
        while not self._buffer:
            if self._atEnd():
                return b""
            await self._more()
        return self._take(n)

    async def readexactly(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        self._select(_BYTES)
        while self._buffered < n:
            if self._atEnd():
                partial = self._joined()
                self._buffer.clear()
                self._buffered = 0
                raise asyncio.IncompleteReadError(partial, n)
            await self._more()
        if n == 0:
            return b""
        if len(self._buffer[0]) < n:
            self._joined()
        return self._take(n)

    async def readuntil(self, separator: bytes, limit: int) -> bytes:
        if not separator:
            raise ValueError("Separator should be at least one-byte string")
        self._select(_BYTES)
        start = 0
        while True:
            data = self._joined()
            at = data.find(separator, start)
            if at >= 0:
                end = at + len(separator)
                if end > limit:
                    raise asyncio.LimitOverrunError(
                        "Separator is found, but chunk is longer than limit", at
                    )
                return self._take(end)
            if len(data) > limit:
                raise asyncio.LimitOverrunError(
                    "Separator is not found, and chunk exceed the limit", len(data)
                )
            if self._atEnd():
                self._buffer.clear()
                self._buffered = 0
                raise asyncio.IncompleteReadError(data, None)
            start = max(0, len(data) - len(separator) + 1)
            await self._more()

    async def receiveMessage(self) -> bytes | None:
        if not self._chosen or self._mode != _MESSAGES:
            self._select(_MESSAGES)
        while not self._buffer:
            if self._atEnd():
                return None
            await self._more()
        message = self._buffer.popleft()
        self._buffered -= len(message)
        if self._paused:
            self._refill()
        return message

    # ------------------------------------------------------------ sending

    def _wakeWriter(self) -> None:
        waiter = self._writeWaiter
        if waiter is not None:
            self._writeWaiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _writeError(self) -> Exception:
        ending = self._ending
        if ending is not None:
            error = errorFor(ending)
            if isinstance(error, Exception):
                return error
        return ChannelClosedError(self.channel, "the channel is closed for writing")

    async def drain(self) -> None:
        """
        Wait while the channel's queue is full; raise if the channel ended
        otherwise than cleanly.
        """
        while self._producerPaused:
            if self._ending is not None:
                break
            waiter = self._writeWaiter
            if waiter is None:
                waiter = self._writeWaiter = _loopOf(self._core).create_future()
            await waiter
        ending = self._ending
        if ending is not None and not ending.clean:
            raise self._writeError()

    async def closed(self) -> None:
        if self._ending is None:
            waiter = self._closedWaiter
            if waiter is None:
                waiter = self._closedWaiter = _loopOf(self._core).create_future()
            await waiter
        assert self._ending is not None
        error = errorFor(self._ending)
        if error is not None:
            raise error


class Channel:
    """
    One channel of a memux session (`Session.open_channel` opens one; a
    server's handler is given one).  Read it as messages
    (`receive_message`, ``async for message in channel``) or as bytes
    (`read`, `readexactly`, `readuntil`, or the `streams` pair), one way
    per channel; write messages (`send_message`) or bytes (`write`).

    Reading grants the peer credit for more: a channel nobody reads stops
    its sender once the credit window is used, and no other channel.
    Writes wait while the channel cannot send (no credit from the peer,
    or the connection is slow), so a fast writer is held back instead of
    filling memory.  A channel that ends otherwise than cleanly raises its
    typed error (`ChannelReset`, `ChannelRefused`, `MessageTooLarge`,
    `SessionLost`, or `ConnectionAbortedError` after `abort`) from the
    next read once the data before the end is read, and from writes.
    """

    __slots__ = ("_c", "session", "metadata", "destination")

    def __init__(
        self,
        core: _AioChannel,
        session: Session,
        metadata: bytes | None = None,
        destination: tuple[str, int] | None = None,
    ) -> None:
        self._c = core
        #: the session this channel belongs to
        self.session = session
        #: the metadata the channel was opened with (None: none)
        self.metadata = metadata
        #: the host and port the channel was opened to (tunnels), or None
        self.destination = destination

    def __repr__(self) -> str:
        return f"<memux.aio.Channel {self._c.channel} service={self._c.service!r}>"

    @property
    def id(self) -> int:
        """
        The channel's id in its session (odd: opened by the client).
        """
        return self._c.channel

    @property
    def service(self) -> bytes:
        """
        The service the channel was opened for.
        """
        return self._c.service

    @property
    def lossy(self) -> bool:
        """
        Whether the channel was opened with load shedding.
        """
        return self._c.lossy

    @property
    def dropped(self) -> int:
        """
        How many messages the peer discarded on this lossy channel so far
        (it sends a drop notice), not counting those not yet read past.
        """
        return self._c.dropped

    @property
    def state(self) -> ChannelState:
        """
        The channel's state, as the specification names them.
        """
        return self._c.state

    @property
    def priority(self) -> Priority:
        """
        The priority this channel's data is sent at: set by this side
        (`set_priority`, or `Session.open_channel`) or by the peer's hint.
        """
        return self._c.priority

    def set_priority(self, urgency: int, weight: int = DEFAULT_WEIGHT) -> None:
        """
        Send this channel's data at ``urgency`` (0, the most urgent, to 7)
        and ``weight`` (1 to 256, within its urgency) from now on, and ask
        the peer to do the same (see :doc:`/priorities`).  Ignored once the
        channel has ended.

        :raises TypeError: ``urgency`` or ``weight`` is not an integer.
        :raises ValueError: either is out of range.
        """
        self._c.setPriority(urgency, weight)

    # ------------------------------------------------------------ reading

    async def receive_message(self) -> bytes | None:
        """
        The next whole message (at most the session's maxMessageSize: a
        larger one resets the channel with `MessageTooLarge`); None once
        the peer has closed its side and everything before was read.
        """
        return await self._c.receiveMessage()

    def __aiter__(self) -> Channel:
        return self

    async def __anext__(self) -> bytes:
        c = self._c
        if c._buffer and c._chosen and c._mode == _MESSAGES:
            # (`receiveMessage`, inline: a coroutine less per message.)
            message = c._buffer.popleft()
            c._buffered -= len(message)
            if c._paused:
                c._refill()
            return message
        got = await c.receiveMessage()
        if got is None:
            raise StopAsyncIteration
        return got

    async def read(self, n: int = -1) -> bytes:
        """
        Up to ``n`` bytes (at least one, unless the peer closed its side:
        then ``b""``); with ``n`` negative, everything until the peer closes.
        """
        c = self._c
        if n > 0 and c._buffer and c._chosen and c._mode == _BYTES:
            return c._take(n)  # (`_AioChannel.read`, inline)
        return await c.read(n)

    async def readexactly(self, n: int) -> bytes:
        """
        Exactly ``n`` bytes; `asyncio.IncompleteReadError` if the peer
        closes first.
        """
        return await self._c.readexactly(n)

    async def readuntil(
        self, separator: bytes = b"\n", limit: int = DEFAULT_LIMIT
    ) -> bytes:
        """
        The bytes up to and including ``separator``, as
        `asyncio.StreamReader.readuntil`: `asyncio.LimitOverrunError`
        beyond ``limit`` bytes, `asyncio.IncompleteReadError` at the end.
        """
        return await self._c.readuntil(separator, limit)

    def streams(
        self, limit: int = DEFAULT_LIMIT
    ) -> tuple[ChannelReader, ChannelWriter]:
        """
        The channel as a (reader, writer) pair with the interfaces of
        `asyncio.StreamReader` and `asyncio.StreamWriter`, for code written
        against streams.  ``limit`` bounds ``readline`` and ``readuntil``.
        """
        self._c._select(_BYTES)
        return ChannelReader(self, limit), ChannelWriter(self)

    # ------------------------------------------------------------ writing

    async def write(self, data: bytes) -> None:
        """
        Send ``data`` as part of a byte stream (the current message, never
        ended); wait while the channel's queue is full.
        """
        c = self._c
        if c._writeClosed:
            raise c._writeError()
        ChannelCore.write(c, data)
        if c._producerPaused:
            await c.drain()

    async def send_message(self, message: bytes) -> None:
        """
        Send ``message`` as one whole message (it ends any message that
        `write` began); wait while the channel's queue is full.
        """
        c = self._c
        if c._writeClosed:
            raise c._writeError()
        c.writeMessage(message)
        if c._producerPaused:
            await c.drain()

    async def drain(self) -> None:
        """
        Wait until the channel may be written to again.
        """
        await self._c.drain()

    def write_eof(self) -> None:
        """
        Half-close: the peer reads the end after what was written; this
        side can still read.
        """
        self._c.loseWriteConnection()

    def close(self) -> None:
        """
        Close the channel: what was written is still sent, then the end;
        nothing more is read (what the peer sends after is discarded).
        """
        self._c.loseConnection()

    def reset(self, code: int = ErrorCode.CANCEL, reason: str = "") -> None:
        """
        Reset the channel at once with the wire error ``code`` and
        ``reason``, discarding what is unsent; the peer gets
        `ChannelReset` with them.
        """
        self._c.resetChannel(code, reason)

    def abort(self) -> None:
        """
        Reset the channel at once (code CANCEL), discarding what is
        unsent; this side's reads then raise `ConnectionAbortedError`.
        """
        self._c.abortConnection()

    def is_closing(self) -> bool:
        """
        Whether this side has closed the channel for writing, or it ended.
        """
        return self._c._writeClosed

    async def wait_closed(self) -> None:
        """
        Wait until the channel has ended: return if it ended cleanly (both
        sides closed, or this side's `close` completed), else raise its
        typed error.
        """
        await self._c.closed()


class ChannelReader:
    """
    A channel's reading side with the interface of `asyncio.StreamReader`
    (from `Channel.streams`): ``read``, ``readexactly``, ``readline``,
    ``readuntil``, ``at_eof``, ``exception`` and line iteration.
    """

    def __init__(self, channel: Channel, limit: int = DEFAULT_LIMIT) -> None:
        self._channel = channel
        self._c = channel._c
        self._limit = limit

    @property
    def channel(self) -> Channel:
        """
        The channel read.
        """
        return self._channel

    async def read(self, n: int = -1) -> bytes:
        """
        As `asyncio.StreamReader.read`.
        """
        return await self._c.read(n)

    async def readexactly(self, n: int) -> bytes:
        """
        As `asyncio.StreamReader.readexactly`.
        """
        return await self._c.readexactly(n)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """
        As `asyncio.StreamReader.readuntil`.
        """
        return await self._c.readuntil(separator, self._limit)

    async def readline(self) -> bytes:
        """
        As `asyncio.StreamReader.readline`: a line with its ``\\n``, or
        the rest at the end.
        """
        try:
            return await self._c.readuntil(b"\n", self._limit)
        except asyncio.IncompleteReadError as e:
            return e.partial
        except asyncio.LimitOverrunError as e:
            # As asyncio's: drop what was looked at, report the overrun.
            c = self._c
            data = c._joined()
            cut = data.find(b"\n")
            c._take(cut + 1 if cut >= 0 else e.consumed)
            raise ValueError(e.args[0]) from e

    def at_eof(self) -> bool:
        """
        Whether the peer closed its side and everything was read.
        """
        c = self._c
        return not c._buffer and (c._eof or c._lost)

    def exception(self) -> BaseException | None:
        """
        The error the channel ended with, if it ended so.
        """
        ending = self._c._ending
        return None if ending is None else errorFor(ending)

    def __aiter__(self) -> ChannelReader:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line


class ChannelWriter:
    """
    A channel's writing side with the interface of `asyncio.StreamWriter`
    (from `Channel.streams`): ``write`` queues, ``drain`` waits while the
    channel's queue is full (so call it after writes, as with asyncio).
    """

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._c = channel._c

    @property
    def channel(self) -> Channel:
        """
        The channel written (also ``transport``, as asyncio's writers
        have one).
        """
        return self._channel

    transport = channel

    def write(self, data: bytes) -> None:
        """
        Queue ``data``; `ChannelClosedError` (or the channel's typed
        error) once the channel is closed for writing.
        """
        c = self._c
        if c._writeClosed:
            raise c._writeError()
        ChannelCore.write(c, data)

    def writelines(self, data: Any) -> None:
        """
        Queue each of ``data`` in turn.
        """
        self.write(b"".join(data))

    async def drain(self) -> None:
        """
        Wait while the channel's queue is full; raise the channel's error
        if it ended otherwise than cleanly.
        """
        await self._c.drain()

    def can_write_eof(self) -> bool:
        """
        True: channels half-close.
        """
        return True

    def write_eof(self) -> None:
        """
        Half-close the channel (see `Channel.write_eof`).
        """
        self._c.loseWriteConnection()

    def close(self) -> None:
        """
        Close the channel (see `Channel.close`).
        """
        self._c.loseConnection()

    def is_closing(self) -> bool:
        """
        Whether the channel is closed for writing.
        """
        return self._c._writeClosed

    async def wait_closed(self) -> None:
        """
        Wait until the channel has ended (see `Channel.wait_closed`).
        """
        await self._c.closed()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """
        ``"channel"`` and ``"session"``, else what the session's
        connection says (``"peername"``, ``"ssl_object"``, ...).
        """
        if name == "channel":
            return self._channel
        if name == "session":
            return self._channel.session
        return self._channel.session.get_extra_info(name, default)
