# -*- test-case-name: memux.test.test_soak -*-
"""
The soak test's stream operations, each on a channel of its own: streams
echoed (`EchoStream`) and half-closed (`HalfClose`), uploads to ``discard``
(`Upload`), downloads from ``chargen`` (`Download`), and aborts in the
middle of a message (`AbortEcho`) or a stream (`AbortDownload`).  Their
bytes are written by a `PatternWriter`, at random sizes.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from zope.interface import implementer

from memux.bench.report import KiB, MiB
from memux.bench.soakbase import (
    ECHO_PERIOD,
    Pattern,
    StreamCheck,
    logUniform,
    pieceSize,
)
from memux.bench.soakops import ChannelOp, Owner
from memux.interfaces import IChunkReceiver

__all__ = [
    "AbortDownload",
    "AbortEcho",
    "Download",
    "EchoStream",
    "HalfClose",
    "PatternWriter",
    "Upload",
]


@implementer(IPushProducer)
class PatternWriter:
    """
    Writes ``total`` bytes of ``pattern`` from position ``start`` to an
    operation's channel while the channel lets it (a streaming producer), in
    pieces of random sizes, ending a message after a piece with probability
    ``ends``; calls ``done`` after the last.
    """

    def __init__(
        self,
        op: ChannelOp,
        pattern: Pattern,
        start: int,
        total: int,
        ends: float,
        done: Callable[[], object],
    ) -> None:
        self.op = op
        self.pattern = pattern
        self.start = start
        self.total = total
        self.ends = ends
        self.done = done
        self.sent = 0
        self.paused = False
        self.stopped = False
        self.writing = False

    def begin(self) -> None:
        """
        Register and start writing.
        """
        assert self.op.channel is not None
        self.op.channel.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        """
        Stop writing until resumed.
        """
        self.paused = True

    def resumeProducing(self) -> None:
        """
        Write until paused or done.
        """
        self.paused = False
        if self.writing or self.stopped:
            return
        self.writing = True
        op, channel, rng = self.op, self.op.channel, self.op.rng
        assert channel is not None
        before = self.sent
        try:
            while not self.paused and not self.stopped and self.sent < self.total:
                size = min(self.total - self.sent, pieceSize(rng))
                data = self.pattern.slice(self.start + self.sent, size)
                self.sent += size
                if rng.random() < self.ends:
                    channel.writeMessage(data)
                else:
                    channel.write(data)
        finally:
            self.writing = False
        if self.sent > before:
            op.client.tally.bytesOut += self.sent - before
            op.progress()
        if self.sent >= self.total and not self.stopped:
            self.stopped = True
            channel.unregisterProducer()
            self.done()

    def stopProducing(self) -> None:
        """
        Write no more.
        """
        self.stopped = True


class EchoStream(ChannelOp):
    """
    Stream 1 KiB to 8 MiB to ``echo`` through a producer (random write
    sizes, random message ends) and read it back as a byte stream, checked
    as it arrives.
    """

    kind = "echo-stream"
    reads = True
    #: the probability that a write ends a message
    ends = 0.1

    def __init__(self, owner: Owner) -> None:
        super().__init__(owner)
        self.total = self.size()
        self.check = StreamCheck(self.client.echo, self.rng.randrange(ECHO_PERIOD))
        self.writer = PatternWriter(
            self, self.client.echo, self.check.start, self.total, self.ends, self.sent
        )
        self.inbound = self.total
        self.cost = 2 * self.total

    def size(self) -> int:
        """
        How much to stream.
        """
        return logUniform(self.rng, KiB, 8 * MiB)

    def go(self) -> None:
        """
        Start writing.
        """
        self.writer.begin()

    def sent(self) -> None:
        """
        All written.
        """
        self.phase = "reading the echo"

    def dataReceived(self, data: bytes) -> None:
        """
        Check the echo; close once it is all back.
        """
        if self.ended:
            return
        self.received(data)
        error = self.check.feed(data)
        if error is not None:
            self.corrupt(f"echo {error}")
        elif self.check.position > self.total:
            self.corrupt(
                f"{self.check.position:,} B echoed; {self.total:,} B were sent"
            )
        elif self.check.position == self.total:
            self.allBack()

    def allBack(self) -> None:
        """
        The whole echo is in.
        """
        self.close()

    def missing(self) -> str | None:
        """
        Bytes not yet back.
        """
        if self.check.position < self.total:
            return f"{self.check.position:,} of {self.total:,} B echoed"
        return None

    def describe(self) -> str:
        """
        Its progress.
        """
        return (
            f"{self.phase}, {self.writer.sent:,} of {self.total:,} B written"
            f"{' (writer paused)' if self.writer.paused else ''},"
            f" {self.check.position:,} B echoed"
        )


@implementer(IHalfCloseableProtocol)
class HalfClose(EchoStream):
    """
    Write 0 B to 4 MiB to ``echo``, half-close (``loseWriteConnection``),
    read the echo to its end of file, and expect the channel then to end
    cleanly by itself.
    """

    kind = "half-close"
    eof = False

    def size(self) -> int:
        """
        Sometimes nothing at all.
        """
        return 0 if self.rng.random() < 0.1 else logUniform(self.rng, 1, 4 * MiB)

    def go(self) -> None:
        """
        Write, or half-close at once.
        """
        if self.total:
            self.writer.begin()
        else:
            self.sent()

    def sent(self) -> None:
        """
        Half-close.
        """
        self.phase = "half-closed, reading the echo to EOF"
        self.progress()
        assert self.channel is not None
        self.channel.loseWriteConnection()

    def allBack(self) -> None:
        """
        The end of file must follow.
        """

    def readConnectionLost(self) -> None:
        """
        The echo's end of file: all of it must be in.
        """
        self.progress()
        self.eof = True
        if self.check.position != self.total:
            self.corrupt(
                f"end of file after {self.check.position:,} of {self.total:,} B"
            )
            return
        self.phase = "EOF read, waiting for the channel to end"

    def writeConnectionLost(self) -> None:
        """
        Our FIN went out.
        """
        self.progress()

    def missing(self) -> str | None:
        """
        The end of file.
        """
        return super().missing() or (None if self.eof else "no end of file")


class Upload(EchoStream):
    """
    Stream 1 KiB to 16 MiB to ``discard`` and close; the close must be
    clean.
    """

    kind = "discard"
    service = b"discard"
    reads = False
    ends = 0.2

    def __init__(self, owner: Owner) -> None:
        super().__init__(owner)
        self.cost = self.total

    def size(self) -> int:
        """
        Up to 16 MiB.
        """
        return logUniform(self.rng, KiB, 16 * MiB)

    def sent(self) -> None:
        """
        Close after the last byte.
        """
        self.close()

    def dataReceived(self, data: bytes) -> None:
        """
        ``discard`` sends nothing.
        """
        if not self.ended:
            self.corrupt(f"discard sent {len(data):,} B")

    def missing(self) -> str | None:
        """
        Nothing comes back.
        """
        if self.writer.sent < self.total:
            return f"only {self.writer.sent:,} of {self.total:,} B written"
        return None


class Download(ChannelOp):
    """
    Read 1 KiB to 16 MiB from ``chargen``, checked against RFC 864's
    pattern as it arrives, then close.
    """

    kind = "chargen"
    service = b"chargen"
    reads = True

    def __init__(self, owner: Owner) -> None:
        super().__init__(owner)
        self.total = self.size()
        self.check = StreamCheck(self.client.chargen)
        self.inbound = self.cost = self.total

    def size(self) -> int:
        """
        Up to 16 MiB.
        """
        return logUniform(self.rng, KiB, 16 * MiB)

    def go(self) -> None:
        """
        Sometimes write a little (chargen must ignore it).
        """
        if self.rng.random() < 0.3:
            assert self.channel is not None
            self.channel.write(b"ignored" * self.rng.randint(1, 100))

    def dataReceived(self, data: bytes) -> None:
        """
        Check; close once enough is in.
        """
        if self.ended or self.phase != "running":
            return
        self.received(data)
        error = self.check.feed(data)
        if error is not None:
            self.corrupt(f"chargen {error}")
        elif self.check.position >= self.total:
            self.enough()

    def enough(self) -> None:
        """
        Read enough.
        """
        self.close()

    def missing(self) -> str | None:
        """
        Bytes not yet read.
        """
        if self.check.position < self.total:
            return f"{self.check.position:,} of {self.total:,} B read"
        return None

    def describe(self) -> str:
        """
        Its progress.
        """
        return f"{self.phase}, {self.check.position:,} of {self.total:,} B read"


class AbortDownload(Download):
    """
    Read part of ``chargen``'s stream, checked, then abort the channel.
    """

    kind = "abort-chargen"

    def size(self) -> int:
        """
        Up to 4 MiB.
        """
        return logUniform(self.rng, 1, 4 * MiB)

    def enough(self) -> None:
        """
        Abort.
        """
        self.abort()


@implementer(IChunkReceiver)
class AbortEcho(ChannelOp):
    """
    Write part of one message (never ended) to ``echo``, then abort: at
    once, or once part of the echo is back.  The echo's chunks are checked,
    and none may end a message.
    """

    kind = "abort-echo"
    reads = True

    def __init__(self, owner: Owner) -> None:
        super().__init__(owner)
        rng = self.rng
        size = logUniform(rng, 64 * KiB, 4 * MiB)
        self.written = rng.randint(1, size)
        self.waitFor = rng.randint(1, self.written) if rng.random() < 0.5 else 0
        self.check = StreamCheck(self.client.echo, rng.randrange(ECHO_PERIOD))
        self.writer = PatternWriter(
            self, self.client.echo, self.check.start, self.written, 0.0, self.sent
        )
        self.inbound = self.waitFor
        self.cost = 2 * self.written

    def go(self) -> None:
        """
        Start writing.
        """
        self.writer.begin()

    def sent(self) -> None:
        """
        All of it written: abort now, unless waiting for the echo.
        """
        self.phase = "written"
        if not self.waitFor:
            self.abort()

    def chunkReceived(self, data: bytes, endOfMessage: bool) -> None:
        """
        Check the echo; abort once ``waitFor`` bytes are back.
        """
        if self.ended or self.aborting:
            return
        self.received(data)
        if endOfMessage:
            self.corrupt(
                f"the echo of a message never ended ended after"
                f" {self.check.position + len(data):,} B"
            )
            return
        error = self.check.feed(data)
        if error is not None:
            self.corrupt(f"echo {error}")
        elif self.check.position > self.written:
            self.corrupt(f"{self.check.position:,} B echoed of {self.written:,} B")
        elif self.waitFor and self.check.position >= self.waitFor:
            self.abort()

    def missing(self) -> str | None:
        """
        It should never end cleanly.
        """
        return "no abort"

    def describe(self) -> str:
        """
        Its progress.
        """
        return (
            f"{self.phase}, {self.writer.sent:,} of {self.written:,} B written,"
            f" {self.check.position:,} B echoed, aborting at {self.waitFor:,}"
        )
