# -*- test-case-name: memux.test.test_tap -*-
"""
The built-in services a memux server offers: ``echo``, ``discard`` and
``chargen`` (after RFC 862, 863 and 864).

They are plain Twisted protocols, so they also run over TCP unchanged; over a
memux channel they are handy for trying a session out and for measuring it.
"""

from __future__ import annotations

from functools import partial
from typing import cast

from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from memux.interfaces import IChannelTransport, IChunkReceiver

__all__ = ["Chargen", "Discard", "Echo", "builtinServices"]


@implementer(IChunkReceiver)
class Echo(Protocol):
    """
    Send back everything received, as it arrives.

    Over a memux channel it receives chunks, so message boundaries survive
    the round trip (each chunk goes back as it comes, and the end of each
    message ends the echoed message) while messages of any size stream
    through without being reassembled; byte-stream peers get bytes back.
    """

    def connectionMade(self) -> None:
        """
        Register the transport as the producer of its own output, where it
        can be, so that a peer which sends without reading is throttled
        (reading pauses while the echoes cannot be sent) instead of filling
        this side's buffers.
        """
        transport = self.transport
        if IConsumer.providedBy(transport) and IPushProducer.providedBy(transport):
            IConsumer(transport).registerProducer(IPushProducer(transport), True)

    def dataReceived(self, data: bytes) -> None:
        """Echo ``data``."""
        assert self.transport is not None
        self.transport.write(data)

    def chunkReceived(self, data: bytes, endOfMessage: bool) -> None:
        """Echo ``data``, ending the echoed message where the received one ends."""
        if endOfMessage:
            IChannelTransport(self.transport).writeMessage(data)
        else:
            self.dataReceived(data)


class Discard(Protocol):
    """
    Drop everything received.  As a plain protocol it gets bytes as they
    arrive, so messages of any size are discarded without being reassembled.
    """

    def dataReceived(self, data: bytes) -> None:
        """Ignore ``data``."""


def _chargenPeriod(lineLength: int = 72) -> bytes:
    """
    One full period of the RFC 864 pattern: each line holds ``lineLength``
    consecutive printable ASCII characters, starting one character later
    than the line before, and ends with CRLF.
    """
    printable = bytes(range(0x20, 0x7F))
    ring = printable * 2
    return b"".join(
        ring[start : start + lineLength] + b"\r\n" for start in range(len(printable))
    )


@implementer(IPushProducer)
class Chargen(Protocol):
    """
    The RFC 864 character generator: stream lines of rotating printable
    ASCII until the connection closes, discarding whatever is received.

    It registers itself on its transport as a streaming producer and writes
    one block of the pattern per reactor turn while it is not paused, so it
    never outruns the transport's flow control (TCP's buffers, or a memux
    channel's credit) by more than one block.

    :ivar clock: what schedules the next block; the global reactor if
        ``None``.
    :ivar interval: seconds between blocks; ``0`` means one block per
        reactor turn.
    """

    #: one whole period of the pattern (95 lines of 74 bytes), so successive
    #: blocks continue the pattern seamlessly.
    block = _chargenPeriod()

    def __init__(self, clock: IReactorTime | None = None, interval: float = 0) -> None:
        self.clock = clock
        self.interval = interval
        self._paused = False
        self._stopped = False
        self._nextWrite: IDelayedCall | None = None

    def connectionMade(self) -> None:
        """Register as the transport's producer and start writing."""
        IConsumer(self.transport).registerProducer(self, True)
        self._writeBlock()

    def dataReceived(self, data: bytes) -> None:
        """RFC 864: received data is thrown away."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Stop writing for good."""
        self.stopProducing()

    def pauseProducing(self) -> None:
        """Stop writing until `resumeProducing`."""
        self._paused = True
        self._cancelNextWrite()

    def resumeProducing(self) -> None:
        """Start writing again, after ``interval``."""
        self._paused = False
        self._scheduleWrite()

    def stopProducing(self) -> None:
        """Never write again."""
        self._stopped = True
        self._cancelNextWrite()

    def _writeBlock(self) -> None:
        self._nextWrite = None
        if self._paused or self._stopped:
            return
        assert self.transport is not None
        # write() may pause us synchronously (TCP does when its buffer fills);
        # _scheduleWrite checks again.
        self.transport.write(self.block)
        self._scheduleWrite()

    def _scheduleWrite(self) -> None:
        if self._paused or self._stopped or self._nextWrite is not None:
            return
        self._nextWrite = self._clock().callLater(self.interval, self._writeBlock)

    def _cancelNextWrite(self) -> None:
        if self._nextWrite is not None:
            self._nextWrite.cancel()
            self._nextWrite = None

    def _clock(self) -> IReactorTime:
        if self.clock is None:
            # Imported here so that importing this module installs no reactor.
            from twisted.internet import reactor

            return cast(IReactorTime, reactor)
        return self.clock


def builtinServices(clock: IReactorTime | None = None) -> dict[bytes, IProtocolFactory]:
    """
    A fresh mapping of the built-in service names to factories, in the form
    `memux.MultiplexingFactory` takes.

    :param clock: what paces `Chargen`; the global reactor if ``None``.
    """
    return {
        b"echo": Factory.forProtocol(Echo),
        b"discard": Factory.forProtocol(Discard),
        b"chargen": Factory.forProtocol(partial(Chargen, clock)),
    }
