# -*- test-case-name: memux.test.test_protocol -*-
"""
How the Twisted front end tunes the connection under a session, in one
place: socket options, Twisted's send and read sizes, joining writes, and
the slicing of a flood of input over reactor turns.  Each was measured
(see doc/performance.rst); none changes what goes on the wire.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, ClassVar

from twisted.internet import ssl, tcp
from twisted.internet.interfaces import IReactorTime, ISSLTransport
from twisted.internet.task import Cooperator
from twisted.protocols import tls

# The sizes and socket options, shared with the asyncio front end (which
# must not import Twisted), are `memux._iotuning`'s.
from memux._iotuning import (
    BULK_AFTER_READS,
    BULK_LEAVE_READS,
    BULK_NOTSENT_LOWAT,
    BULK_READ_SIZE,
    INPUT_SLICE_SECONDS,
    INPUT_SLICE_STEPS,
    LATENCY_NOTSENT_LOWAT,
    NOTSENT_LOWAT,
    SEND_HEADROOM,
    SHORT_READ_COST,
    BulkReads,
    isTCP,
    keepReadsInHeap,
    setUnsentLimit,
)
from memux._session import BULK_FLUSH_BYTES

__all__ = [
    "BulkReads",
    "DIRECT_WRITE_BYTES",
    "directSocket",
    "keepReadsInHeap",
    "BULK_AFTER_READS",
    "BULK_LEAVE_READS",
    "BULK_NOTSENT_LOWAT",
    "LATENCY_NOTSENT_LOWAT",
    "BULK_READ_SIZE",
    "GATHER_PIECES",
    "INPUT_SLICE_SECONDS",
    "INPUT_SLICE_STEPS",
    "NOTSENT_LOWAT",
    "OUTPUT_DELAY_SECONDS",
    "SHORT_READ_COST",
    "TLS_FLUSH_BYTES",
    "TLS_RECORD_BYTES",
    "TWISTED_BULK_LEAVE_READS",
    "TWISTED_SHORT_READ_COST",
    "InputSlice",
    "connectionLayers",
    "limitUnsent",
    "newInputCooperator",
    "overTLS",
    "sendDirect",
    "socketLayer",
    "tcpTransport",
    "tlsLayer",
    "tlsWriter",
    "tuneConnection",
    "whenTLSClosing",
]

#: The bulk-reading rule of the Twisted front end (`BulkReads`): a shorter
#: read on the way to bulk reading starts the count again, and one in bulk
#: reading ends it.  The asyncio front end's hysteresis (`SHORT_READ_COST`,
#: `BULK_LEAVE_READS`) made both modes of Twisted's bimodal fan-out slower:
#: over 9 alternated runs its median was 0.75 of this rule's (1,787
#: against 2,377 MB/s), and bulk 0.91.
TWISTED_SHORT_READ_COST = BULK_AFTER_READS
TWISTED_BULK_LEAVE_READS = 1

#: Over TLS, the most the session hands the connection per write, in bulk
#: mode too (`memux._session.SessionCore.limitFlushes`).  Twisted's TLS
#: layer joins a write's pieces into one string and its TCP transport
#: joins what a turn wrote into another: from a 512 KiB bulk flush, blocks
#: above the C library's mmap threshold, allocated and freed (so
#: page-faulted in afresh) on every flush.
TLS_FLUSH_BYTES = 64 * 1024

#: The most plaintext a TLS record carries.  Twisted's TLS layer delivers a
#: read one record at a time; the reads of a turn over TLS add up to the
#: TCP read less what the records' framing took and a record cut by the
#: read's end, so a read counts as full (see `BULK_AFTER_READS`) from one
#: record less than the read size.
TLS_RECORD_BYTES = 16 * 1024

#: A flush of more pieces (frame headers and chunks) than this is joined
#: into one write; fewer go to ``writeSequence`` as they are.
GATHER_PIECES = 8

#: A slice that has worked this long ends at the next step that wrote, so
#: that the reactor sends what it wrote (see `InputSlice.wrote`).  Not
#: after every step: a step of small messages is a few tens of
#: microseconds, and a reactor turn for each would cost more than the
#: parallel work gains.
OUTPUT_DELAY_SECONDS = 0.0004


#: How many layers `connectionLayers` looks through at most: TLS over
#: HAProxy's wrapper over TCP under a session is four.
MAX_LAYERS = 8


def connectionLayers(connection: object) -> Iterator[object]:
    """
    ``connection`` and what it runs over: a session's or a wrapper's (TLS,
    HAProxy) ``transport``, and so on down.
    """
    seen: set[int] = set()
    layer: object = connection
    while layer is not None and id(layer) not in seen and len(seen) < MAX_LAYERS:
        seen.add(id(layer))
        yield layer
        layer = getattr(layer, "transport", None)


def _ownSocket(layer: object) -> socket.socket | None:
    """
    The socket ``layer`` is, or whose ``getHandle()`` it is, or that it
    holds itself as ``socket`` (a Twisted TCP transport after
    ``startTLS``, whose handle is then its TLS connection).
    """
    if isinstance(layer, socket.socket):
        return layer
    getHandle = getattr(layer, "getHandle", None)
    if getHandle is not None:
        try:
            handle = getHandle()
        except Exception:
            handle = None
        if isinstance(handle, socket.socket):
            return handle
    # Its own attribute only: a wrapper's would be forwarded from beneath.
    held = getattr(layer, "__dict__", {}).get("socket")
    return held if isinstance(held, socket.socket) else None


def socketLayer(connection: object) -> tuple[Any, socket.socket] | None:
    """
    The transport under (or at) ``connection`` that owns its socket, and
    the socket; None if there is none (a pipe, a memory transport).

    That transport (Twisted's TCP transport) is where the send limit and
    the read size are: a TLS layer's ``getHandle()`` is its TLS connection,
    so the search looks on beneath it, and a wrapper that passes
    ``getHandle()`` on from beneath (HAProxy's) is passed for the
    transport it wraps.
    """
    found: tuple[Any, socket.socket] | None = None
    for layer in connectionLayers(connection):
        handle = _ownSocket(layer)
        if found is not None and handle is not found[1]:
            break  # beneath the socket's owner
        if handle is not None:
            found = (layer, handle)
    return found


def tcpTransport(connection: Any) -> Any:
    """
    The transport whose send limit (``SEND_LIMIT``) and read size
    (``bufferSize``) are ``connection``'s: the one that owns its socket
    (see `socketLayer`), or ``connection`` itself if none does.
    """
    found = socketLayer(connection)
    return connection if found is None else found[0]


#: The transports whose socket a session writes to itself (`directSocket`):
#: Twisted's own TCP connections, these very classes (not a subclass,
#: which may write differently).
_DIRECT_TRANSPORTS = (tcp.Server, tcp.Client)


#: The largest flush a session writes to its socket itself (see
#: `directSocket`).  A larger one, bulk data, goes through the transport,
#: which sends it when the reactor next polls: sent at once, bulk data ran
#: 1.5 times as fast beside a ping-pong on another channel (1,836 against
#: 1,260 MB/s), but filled the receiver's socket buffer, and the ping's p99
#: went from 1.5 to 3.0 times its idle p99 (the target is 2).
DIRECT_WRITE_BYTES = 64 * 1024


def directSocket(connection: object) -> socket.socket | None:
    """
    The socket a session may write its flushes (of at most
    `DIRECT_WRITE_BYTES`) to itself, while its transport holds nothing
    (``connection``: the session's transport): that of a plain TCP
    connection of Twisted's, not over TLS; else None.

    Why: Twisted's TCP transport sends a write only when the reactor next
    polls, so each flush costs it a turn, two ``epoll_ctl`` calls (to
    watch for writability and to stop) and the Python in between, and the
    peer waits for that turn.  What the kernel takes at once needs none of
    it; the rest goes to the transport as before, which then paces the
    session (its producer) as it always has.  The kernel takes no more
    than it would from the transport: with the unsent bytes limited
    (`limitUnsent`), a send takes at most that much more.
    """
    if overTLS(connection):
        return None
    sock = _tcpSocket(connection, _DIRECT_TRANSPORTS)
    if sock is None:
        return None
    if not hasattr(sock, "sendmsg"):
        return None  # (Windows has no sendmsg: the transport writes there)
    return sock


def _tcpSocket(transport: object, kinds: tuple[type, ...]) -> socket.socket | None:
    """
    The TCP socket of ``transport`` if it is one of Twisted's TCP
    connections of exactly these ``kinds`` (not a subclass, which may write
    differently); else None.
    """
    sock = getattr(transport, "socket", None)
    if type(transport) not in kinds or not isinstance(sock, socket.socket):
        return None
    return sock if isTCP(sock) else None


def sendDirect(sock: socket.socket, pieces: list[bytes]) -> list[bytes]:
    """
    Send ``pieces`` on ``sock`` (non-blocking) with one call, as far as the
    kernel takes them; return what it did not take, in order.  An error
    sends nothing: the transport meets it again with the rest, and ends
    the connection with it as for any write.
    """
    try:
        if len(pieces) == 1:
            sent = sock.send(pieces[0])
        else:
            sent = sock.sendmsg(pieces)
    except OSError:  # (BlockingIOError included: the kernel took nothing)
        return pieces
    rest: list[bytes] = []
    for piece in pieces:
        n = len(piece)
        if sent >= n:
            sent -= n
            continue
        rest.append(piece[sent:] if sent else piece)
        sent = 0
    return rest


def overTLS(connection: object) -> bool:
    """
    Whether ``connection`` runs over TLS: one of its layers is a TLS
    transport (Twisted's TLS layer, or a transport that started TLS).
    """
    return any(
        ISSLTransport.providedBy(layer) for layer in connectionLayers(connection)
    )


#: Twisted's TLS transport that gathers small writes until the next reactor
#: turn (`tlsWriter`); None in a Twisted without it.
_GATHERING_TLS: type | None = getattr(tls, "BufferingTLSTransport", None)


def tlsWriter(connection: object) -> Callable[[bytes], None] | None:
    """
    A write to the TLS layer under ``connection`` that skips Twisted's
    gathering of small writes, or None where there is no such layer.

    Why: Twisted's TLS transport (``BufferingTLSTransport``) holds a write
    of less than 64 kB until the next reactor turn, to join it with later
    ones.  A session already writes once per flush, so the hold only
    delays: a flush written in the middle of a long read (see
    `memux._session.SessionCore.flush`) then waited for the whole read,
    and the peer sat idle meanwhile.  Churn over TLS (100 exchanges in
    flight) went from 61,491 to 85,071 exchanges a second (5 runs
    alternated, with `memux.protocol.MemuxProtocol._gather`, which keeps
    small messages from paying a write per step instead), and the idle
    round trip's p99 from 685 to 392 us.  The TLS layer's own write is
    the plain one of the class it extends: the same encryption and the
    same buffers, with nothing held.  Only the session writes to its
    connection, so nothing is gathered there for these writes to overtake.

    Where the TLS layer runs over a TCP connection of Twisted's, the write
    also sends its records itself (`DirectTLSWrite`), as a session does
    over plain TCP (`directSocket`).
    """
    gathering = _GATHERING_TLS
    found = tlsLayer(connection)
    if found is None or type(found) is not gathering:
        return None
    plain = partial(tls.TLSMemoryBIOProtocol.write, found)
    return DirectTLSWrite.over(found, plain) or plain


def tlsLayer(connection: object) -> tls.TLSMemoryBIOProtocol | None:
    """
    Twisted's TLS layer under (or at) ``connection``: a wrapping one, or
    the protocol of a TCP transport that started TLS (``listenSSL``,
    ``connectSSL``, ``startTLS``); None if there is none.
    """
    for layer in connectionLayers(connection):
        inner = getattr(layer, "protocol", None) if getattr(layer, "TLS", 0) else None
        for candidate in (layer, inner):
            if isinstance(candidate, tls.TLSMemoryBIOProtocol):
                return candidate
    return None


def whenTLSClosing(layer: tls.TLSMemoryBIOProtocol, notify: Callable[[], None]) -> None:
    """
    Call ``notify`` whenever ``layer`` (Twisted's TLS layer) is closed with
    ``loseConnection`` while it still holds a producer.

    Why: closed so, Twisted's TLS layer closes only once its producer
    unregisters, and tells the producer nothing.  A session is its
    connection's producer for as long as it lives, and sees a close made
    under it (``session.transport.loseConnection()``) only when it next
    flushes: an idle session closed so stayed open for ever (found by the
    soak test over TLS).  ``loseConnection`` is wrapped on this one layer
    object (a TCP transport that started TLS passes its own on to it).
    """
    close: Callable[[], None] = layer.loseConnection

    def loseConnection() -> None:
        close()
        if getattr(layer, "_producer", None) is not None:
            notify()

    layer.loseConnection = loseConnection  # type: ignore[method-assign]


#: The TCP transports whose socket the TLS layer's records may be sent to
#: directly (`DirectTLSWrite`): as `_DIRECT_TRANSPORTS`, and those of
#: ``listenSSL`` and ``connectSSL``, which start TLS on themselves and
#: write as their base classes do.
_DIRECT_TLS_TRANSPORTS = (*_DIRECT_TRANSPORTS, ssl.Server, ssl.Client)

#: What `DirectTLSWrite` reads of Twisted's TLS layer (not public API: a
#: Twisted without any of them gets the plain write).
_TLS_STATE = ("_handshakeDone", "_appSendBuffer", "_lostTLSConnection")

#: Room in a read of the TLS layer's output for the records' framing (22 B
#: per 16 KiB record in TLS 1.3) and anything the TLS engine queued before.
_RECORDS_ROOM = 32 * 1024


class DirectTLSWrite:
    """
    The TLS layer's write of a small flush (at most `DIRECT_WRITE_BYTES`),
    with its records sent to the socket at once while nothing waits in the
    TLS layer or the TCP transport beneath; else (and for what the kernel
    does not take) the layer's plain write and the transport, as before.

    Why: the TLS layer's records go to Twisted's TCP transport, which sends
    them when the reactor next polls, so each flush over TLS cost two
    ``epoll_ctl`` calls (to watch for writability and to stop), a turn and
    the Python in between, as over plain TCP before `directSocket`:
    ``epoll_ctl`` alone was 7.5% of a small-message client's time over
    TLS, and 1.0% over TCP.  The encryption is the layer's own (its
    OpenSSL connection, as its write would use it); order is kept because
    nothing is sent this way while the layer or the transport holds data,
    or before the handshake is done, and an error from the TLS engine is
    left to the layer's write, which meets it again and handles it as
    ever.
    """

    __slots__ = ("_tls", "_tcp", "_socket", "_plain", "_raw")

    def __init__(
        self,
        layer: Any,
        transport: Any,
        sock: socket.socket,
        plain: Callable[[bytes], None],
    ) -> None:
        self._tls = layer
        self._tcp = transport
        self._socket = sock
        self._plain = plain
        # The layer's own way to its transport (`_BypassTLS` after startTLS).
        self._raw: Callable[[bytes], object] = layer.transport.write

    @classmethod
    def over(
        cls, layer: tls.TLSMemoryBIOProtocol, plain: Callable[[bytes], None]
    ) -> DirectTLSWrite | None:
        """
        The direct write for ``layer`` (writing through ``plain``), or None
        where its transport is not a TCP connection of Twisted's.
        """
        below: Any = layer.transport
        transport = getattr(below, "_connection", below)  # (after startTLS)
        sock = _tcpSocket(transport, _DIRECT_TLS_TRANSPORTS)
        if (
            sock is None
            or not all(hasattr(layer, name) for name in _TLS_STATE)
            or getattr(layer, "_tlsConnection", None) is None
        ):
            return None
        return cls(layer, transport, sock, plain)

    def __call__(self, data: bytes) -> None:
        layer = self._tls
        transport = self._tcp
        if (
            len(data) > DIRECT_WRITE_BYTES
            or not layer._handshakeDone
            or layer._appSendBuffer
            or layer._lostTLSConnection
            or layer.disconnecting
            or transport._tempDataLen
            or transport.dataBuffer
            or not transport.connected
            or transport.disconnecting
            or transport._writeDisconnecting
        ):
            self._plain(data)
            return
        engine = layer._tlsConnection
        try:
            # (All of it: with a memory BIO, OpenSSL never writes part.)
            taken = engine.send(data)
        except Exception:
            # Not taken: the layer's write meets the same state and deals
            # with it (keeps the data for after a renegotiation, or ends
            # the connection with the error).
            self._plain(data)
            return
        records: bytes = engine.bio_read(len(data) + _RECORDS_ROOM)
        for rest in sendDirect(self._socket, [records]):
            self._raw(rest)
        if taken < len(data):
            self._plain(data[taken:])


def limitUnsent(transport: Any, limit: int = NOTSENT_LOWAT) -> None:
    """
    Let the kernel hold at most ``limit`` unsent bytes of the TCP socket
    under ``transport`` (where it has one, and the system has the option).
    """
    option = getattr(socket, "TCP_NOTSENT_LOWAT", None)
    if option is None:
        return
    found = socketLayer(transport)
    if found is not None:
        setUnsentLimit(found[1], limit)


def tuneConnection(transport: Any) -> int | None:
    """
    Tune a new session's connection; return its read size (Twisted's TCP
    ``bufferSize``) if it has one below `BULK_READ_SIZE`, else None.
    Under a wrapper such as TLS, the TCP transport beneath it is tuned
    (see `socketLayer`): the wrapper has none of these settings.

    - TCP_NODELAY: memux already gathers a turn's writes into one; Nagle's
      algorithm on top only delays small messages (and acknowledgements)
      by up to a round trip, making throughput erratic.
    - `limitUnsent`.
    - Twisted's TCP sends at most ``SEND_LIMIT`` (128 KiB) per send(); a
      flush is up to `BULK_FLUSH_BYTES` of payload plus frame headers, and
      a flush split over several send()s costs the last one's few bytes a
      send() (and the peer a wakeup) of their own, and the producer a turn.
    """
    setNoDelay = getattr(transport, "setTcpNoDelay", None)
    if setNoDelay is not None:
        try:
            setNoDelay(True)
        except Exception:  # not a TCP socket after all (UNIX, pipes)
            pass
    limitUnsent(transport)
    transport = tcpTransport(transport)
    limit = getattr(transport, "SEND_LIMIT", None)
    if type(limit) is int and limit < BULK_FLUSH_BYTES + SEND_HEADROOM:
        transport.SEND_LIMIT = BULK_FLUSH_BYTES + SEND_HEADROOM
    readSize = getattr(transport, "bufferSize", None)
    if type(readSize) is int and 0 < readSize < BULK_READ_SIZE:
        return readSize
    return None


class InputSlice:
    """
    A `Cooperator` termination predicate: true once this turn's share of
    input work (`INPUT_SLICE_SECONDS`, `INPUT_SLICE_STEPS`) is used up, or
    once a step has written (`wrote`).
    """

    #: Set by a step that wrote: the slice ends there, so that the reactor
    #: sends it (Twisted writes when it next polls, after the calls then
    #: due, such as the next slice) and the peer works on it while we work
    #: on the rest.  One flag for all: the reactor runs one slice at a time.
    wrote = False

    #: What to call when a slice ends: sessions over TLS that gathered the
    #: writes of its steps (see `memux.protocol.MemuxProtocol._gather`)
    #: write them then, all in one, in time for the reactor's next poll.
    atEnd: ClassVar[list[Callable[[], None]]] = []

    def __init__(self) -> None:
        InputSlice.wrote = False  # (a new turn: the last slice's was sent)
        now = time.monotonic()
        self._end = now + INPUT_SLICE_SECONDS
        self._sendAt = now + OUTPUT_DELAY_SECONDS
        self._steps = INPUT_SLICE_STEPS

    def __call__(self) -> bool:
        now = time.monotonic()
        if InputSlice.wrote and now >= self._sendAt:
            InputSlice.wrote = False
            end = True
        else:
            self._steps -= 1
            end = self._steps <= 0 or now >= self._end
        if end and InputSlice.atEnd:
            calls = InputSlice.atEnd
            InputSlice.atEnd = []
            for call in calls:
                call()
        return end


def newInputCooperator(reactor: IReactorTime) -> Cooperator:
    """
    A Cooperator for sessions' held-back input: a slice each reactor turn.
    """
    return Cooperator(
        terminationPredicateFactory=InputSlice,
        scheduler=lambda tick: reactor.callLater(0, tick),
    )
