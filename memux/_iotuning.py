# -*- test-case-name: memux.test.test_aio_tuning -*-
"""
How memux tunes a session's connection, without any event loop: the sizes
(unsent bytes the kernel may hold, reads, sends), the socket options, the
rule that switches reading to bulk size and back, and the slicing of a
flood of input over event-loop turns.  Both front ends
apply them: the Twisted one through `memux._tuning`, the asyncio one
(`memux.aio`) directly.  Each was measured (see doc/performance.rst); none
changes what goes on the wire.
"""

from __future__ import annotations

import socket
from typing import Any

__all__ = [
    "BULK_AFTER_READS",
    "BULK_LEAVE_READS",
    "BULK_NOTSENT_LOWAT",
    "BULK_READ_SIZE",
    "LATENCY_NOTSENT_LOWAT",
    "INPUT_SLICE_SECONDS",
    "INPUT_SLICE_STEPS",
    "NOTSENT_LOWAT",
    "READ_SIZE",
    "SEND_HEADROOM",
    "SHORT_READ_COST",
    "BulkReads",
    "isTCP",
    "keepReadsInHeap",
    "setNoDelay",
    "setUnsentLimit",
]

#: Unsent bytes the kernel may hold for a memux connection (Linux
#: TCP_NOTSENT_LOWAT).  Without a limit the socket buffer (megabytes on
#: fast links) fills with one channel's bulk data, and a small message on
#: another channel waits behind all of it: head-of-line blocking that memux's
#: scheduler cannot see.  With it, the backlog stays in memux, which
#: interleaves channels.  Four times as much in bulk mode (see
#: `memux._session.BULK_AFTER_FLUSHES`).
NOTSENT_LOWAT = 128 * 1024
#: The unsent limit in bulk mode.
BULK_NOTSENT_LOWAT = 4 * NOTSENT_LOWAT
#: The unsent limit in latency mode (`memux._session.LATENCY_FLUSH_BYTES`):
#: about one flush.
LATENCY_NOTSENT_LOWAT = 32 * 1024

#: A session's read size outside bulk reading: Twisted's TCP
#: ``bufferSize``.  (Below the C library's mmap threshold: a larger buffer
#: allocated per read is mapped and unmapped, page by page, every time.)
READ_SIZE = 64 * 1024

#: After this many reads that filled the connection's read size (64 KiB),
#: the peer is sending bulk data: the session reads `BULK_READ_SIZE` at a
#: time, which costs a quarter of the event-loop turns and Python calls per
#: byte.  `BulkReads` defaults, the asyncio front end's rule: a shorter read
#: on the way there takes back `SHORT_READ_COST` of them, and in bulk
#: reading `BULK_LEAVE_READS` shorter ones in a row set the normal size
#: back (asyncio's reads leave a short one now and then in a steady
#: stream, and with "in a row" both ways its bulk reading never started).
#: The Twisted front end measured better without this hysteresis
#: (`memux._tuning.TWISTED_SHORT_READ_COST`).
BULK_AFTER_READS = 16
SHORT_READ_COST = 4
BULK_LEAVE_READS = 3
#: The read size of a session in bulk reading (after ``BULK_AFTER_READS``
#: full reads).
BULK_READ_SIZE = 256 * 1024

#: The block `keepReadsInHeap` allocates and frees once per process.
HEAP_WARMUP = 1024 * 1024

_heapWarmed = False


def keepReadsInHeap() -> None:
    """
    Once per process, before reading in bulk: allocate and free a block of
    `HEAP_WARMUP` bytes, so that the C library keeps the memory of bulk
    reads in its heap instead of handing it back to the system each time.

    Why: glibc serves a block above its mmap threshold (128 KiB at first)
    with a mapping of its own, and once such a block is freed raises the
    threshold to its size and the heap's trim threshold to twice that.
    Bulk reads (`BULK_READ_SIZE`) alone raise them to 256 and 512 KiB.  A
    receiver whose live reads and the chunks cut from them swing by more
    than 512 KiB from one event-loop turn to the next (an asyncio reader
    takes its chunks a turn after they arrive) then has the heap's top
    trimmed and faulted back in, page by page, over and over: measured on
    a loopback bulk transfer with the asyncio front end, a third of the
    runs took 23,000 to 163,000 minor page faults per GiB and ran at 0.55
    to 0.8 times the others' pace; after this, every run took about 4,300
    and none was slow.  The cost: the heap may keep up to 2 MiB free.
    (Other C libraries ignore this; it does them no harm.)
    """
    global _heapWarmed
    if not _heapWarmed:
        _heapWarmed = True
        block = bytes(HEAP_WARMUP)
        del block


#: Room for frame headers above `memux._session.BULK_FLUSH_BYTES` in one
#: send(): a flush split over several send()s costs the last one's few
#: bytes a send() (and the peer a wakeup) of their own.
SEND_HEADROOM = 16 * 1024


#: Per turn of the event loop, a session's held-back input (a read of more
#: than `memux._session.INPUT_STEP_FRAMES` frames) is worked through a
#: step at a time for this many seconds at most (or `INPUT_SLICE_STEPS`
#: steps), then waits for the next turn, after other sessions' (round robin
#: among a Twisted factory's sessions): about the most one session's flood
#: delays another session's reply.
INPUT_SLICE_SECONDS = 0.001
INPUT_SLICE_STEPS = 16


class BulkReads:
    """
    The bulk-reading switch of one connection (see `BULK_AFTER_READS`):
    told the size of each read (`count`), it says when to read
    `BULK_READ_SIZE` at a time and when to go back.

    :ivar fullRead: the size from which a read counts as full: the normal
        read size (less over TLS, where framing takes some of a read).
    """

    __slots__ = ("fullRead", "fullReads", "shortReads", "shortReadCost", "leaveReads")

    def __init__(
        self,
        fullRead: int,
        shortReadCost: int = SHORT_READ_COST,
        leaveReads: int = BULK_LEAVE_READS,
    ) -> None:
        self.fullRead = fullRead
        #: full reads a shorter one takes back on the way to bulk reading
        self.shortReadCost = shortReadCost
        #: shorter reads in a row that end bulk reading
        self.leaveReads = leaveReads
        #: full reads in a row (at `BULK_AFTER_READS` and beyond: reading
        #: in bulk)
        self.fullReads = 0
        #: in bulk reading: shorter reads in a row
        self.shortReads = 0

    @property
    def bulk(self) -> bool:
        """
        Whether the connection reads in bulk now.
        """
        return self.fullReads >= BULK_AFTER_READS

    def count(self, size: int) -> bool | None:
        """
        Count a read of ``size`` bytes; return True if reading switches to
        bulk now, False if it switches back now, else None.
        """
        if size >= self.fullRead:
            # A read of at least the normal size (in bulk, of up to the
            # bulk size): the peer keeps the connection full.
            self.fullReads += 1
            self.shortReads = 0
            return True if self.fullReads == BULK_AFTER_READS else None
        if not self.fullReads:
            return None
        # Shorter: the peer may be done, or this is the tail of a burst
        # (see `BULK_AFTER_READS`).
        if self.fullReads < BULK_AFTER_READS:
            self.fullReads = max(0, self.fullReads - self.shortReadCost)
            return None
        self.shortReads += 1
        if self.shortReads == self.leaveReads:
            self.fullReads = self.shortReads = 0
            return False
        return None


def isTCP(handle: Any) -> bool:
    """
    Whether ``handle`` (a socket, or asyncio's wrapper of one) is a TCP (or
    Multipath TCP) stream socket, whose options below apply.
    """
    try:
        return bool(
            handle.family in (socket.AF_INET, socket.AF_INET6)
            and handle.type == socket.SOCK_STREAM
        )
    except (AttributeError, OSError):
        return False


def setNoDelay(handle: Any) -> None:
    """
    Set TCP_NODELAY on ``handle``, a TCP socket: memux already gathers a
    turn's writes into one; Nagle's algorithm on top only delays small
    messages (and acknowledgements) by up to a round trip, making
    throughput erratic.
    """
    try:
        handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass  # closed meanwhile


def setUnsentLimit(handle: Any, limit: int = NOTSENT_LOWAT) -> None:
    """
    Let the kernel hold at most ``limit`` unsent bytes of ``handle``, a
    socket (where the system has TCP_NOTSENT_LOWAT, and it is TCP).
    """
    option = getattr(socket, "TCP_NOTSENT_LOWAT", None)
    if option is None:
        return
    try:
        if handle.family in (socket.AF_INET, socket.AF_INET6):
            handle.setsockopt(socket.IPPROTO_TCP, option, limit)
    except OSError:
        pass  # not a TCP socket after all (raw, or closed meanwhile)
