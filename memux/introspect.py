# -*- test-case-name: memux.test.test_introspect -*-
"""
Live introspection of memux sessions, as plain data: what
``session.snapshot()`` and ``factory.snapshot()`` return (`SessionSnapshot`,
`ChannelSnapshot`, `FactorySnapshot`) and the counters behind metrics
(`SessionCounters`, `Totals`).

Every class here is a frozen dataclass of JSON types only (str, int,
float, bool, None, lists and dicts of them), so ``toJSON()`` (or
``dataclasses.asdict``) gives what ``json.dumps`` takes, and ``fromJSON``
reads it back.  Pure: no Twisted, no I/O; the session core fills these
from the counters it keeps anyway, so a snapshot costs nothing until it
is taken.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = [
    "FRAME_TYPES",
    "RTT_BUCKETS",
    "ChannelSnapshot",
    "FactorySnapshot",
    "RttHistogram",
    "SessionCounters",
    "SessionSnapshot",
    "Totals",
]

#: Frame type names by the high nibble of their type byte (spec: "Frames");
#: ``PREFACE`` is the preface (its magic's first byte, 0x89, has nibble 8),
#: ``UNKNOWN`` the reserved types a receiver ignores.
FRAME_TYPES: tuple[str, ...] = (
    "DATA",
    "OPEN",
    "CREDIT",
    "RESET",
    "PING",
    "GOAWAY",
    "CHANNELS",
    "DROP",
    "PREFACE",
    *("UNKNOWN",) * 7,
)

#: Upper bounds, in seconds, of the round-trip histogram's buckets (the
#: last bucket, +Inf, is implicit): loopback to intercontinental.
RTT_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def _add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, n in b.items():
        out[k] = out.get(k, 0) + n
    return out


class RttHistogram:
    """
    Round-trip samples of one session, counted into `RTT_BUCKETS` (and
    smoothed, RFC 6298's 1/8, into ``smoothed``): a handful of integers,
    updated once per PING answered, never per frame.
    """

    __slots__ = ("counts", "total", "smoothed", "last")

    def __init__(self) -> None:
        #: samples per bucket, the last one past every bound (+Inf)
        self.counts = [0] * (len(RTT_BUCKETS) + 1)
        #: the sum of every sample, in seconds
        self.total = 0.0
        #: the smoothed round trip in seconds (None: no sample yet)
        self.smoothed: float | None = None
        #: the latest sample (None: no sample yet)
        self.last: float | None = None

    def sample(self, rtt: float) -> None:
        """
        Count a round trip of ``rtt`` seconds.
        """
        self.counts[bisect.bisect_left(RTT_BUCKETS, rtt)] += 1
        self.total += rtt
        self.last = rtt
        s = self.smoothed
        self.smoothed = rtt if s is None else s + (rtt - s) / 8


class ChannelFigures(NamedTuple):
    """
    One open channel as the engine sees it (what `ChannelSnapshot` is made
    of, with what the channel object adds): a tuple, cheap to make for
    every channel of every session.  Between the engine and the session
    core: not in ``__all__``.
    """

    channel: int
    state: str
    local: bool
    lossy: bool
    bytesSent: int
    bytesReceived: int
    queuedBytes: int
    heldBytes: int
    sendCredit: int
    sendLimit: int
    receiveCredit: int
    receiveWindow: int


@dataclass(frozen=True)
class SessionCounters:
    """
    What one session (or, added up, many: `Totals`) has moved and met.
    Frame and code counts are keyed by name (`FRAME_TYPES`,
    `memux.codes.ErrorCode` names); a name never seen is absent.
    """

    #: bytes written to and read from the connection (frames and preface)
    bytesSent: int
    bytesReceived: int
    #: of those, bytes of PING frames (liveness and round-trip probes)
    pingBytesSent: int
    pingBytesReceived: int
    framesSent: dict[str, int]
    framesReceived: dict[str, int]
    #: channels opened by this side, and by the peer
    channelsOpened: int
    channelsAccepted: int
    #: RESET frames by code (REFUSED: refusals), sent and received
    resetsSent: dict[str, int]
    resetsReceived: dict[str, int]
    goAwaysSent: dict[str, int]
    goAwaysReceived: dict[str, int]
    #: times a channel with data queued had to wait for the peer's credit
    #: on that channel, or on the whole session
    channelCreditStalls: int
    sessionCreditStalls: int
    #: frames of the peer's that did no work (PINGs, rapid resets...),
    #: which the flood limit counts
    uselessFrames: int
    #: round trips sampled: samples per `RTT_BUCKETS` bucket (+Inf last),
    #: their sum in seconds
    rttCounts: list[int]
    rttSum: float

    @classmethod
    def zero(cls) -> SessionCounters:
        """
        Counters of nothing yet.
        """
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            kind = str(f.type)
            if kind.startswith("dict"):
                values[f.name] = {}
            elif kind.startswith("list"):
                values[f.name] = [0] * (len(RTT_BUCKETS) + 1)
            else:
                values[f.name] = 0
        return cls(**values)

    def __add__(self, other: SessionCounters) -> SessionCounters:
        if not isinstance(other, SessionCounters):
            return NotImplemented
        values: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, dict):
                values[f.name] = _add(a, b)
            elif isinstance(a, list):
                values[f.name] = [x + y for x, y in zip(a, b, strict=True)]
            else:
                values[f.name] = a + b
        return SessionCounters(**values)

    def toJSON(self) -> dict[str, Any]:
        """
        As a dict of JSON types.
        """
        return dataclasses.asdict(self)

    @classmethod
    def fromJSON(cls, data: dict[str, Any]) -> SessionCounters:
        """
        Read back what `toJSON` gave.
        """
        return cls(**data)


@dataclass(frozen=True)
class Totals:
    """
    What a factory's sessions did, ended and connected ones together (the
    counters only grow: a session that ends keeps counting in here), and
    how many are open now: what metrics are read from.
    """

    counters: SessionCounters
    #: sessions connected now, and since the factory was made
    sessionsOpen: int
    sessionsStarted: int
    #: channels open now, over every connected session
    channelsOpen: int
    #: sessions that ended, by cause: ``closed`` (cleanly), ``lost`` (the
    #: connection failed), ``handshake_timeout``, ``idle_timeout``,
    #: ``keepalive_timeout``, ``write_timeout``, or the error code the
    #: session ended on (``EXCESSIVE_LOAD``, ``PROTOCOL_ERROR``...)
    sessionsEnded: dict[str, int]

    def toJSON(self) -> dict[str, Any]:
        """
        As a dict of JSON types.
        """
        return dataclasses.asdict(self)

    @classmethod
    def fromJSON(cls, data: dict[str, Any]) -> Totals:
        """
        Read back what `toJSON` gave.
        """
        values = dict(data)
        values["counters"] = SessionCounters.fromJSON(values["counters"])
        return cls(**values)


@dataclass(frozen=True)
class ChannelSnapshot:
    """
    One open channel at one moment.  Byte counts are of payload.
    """

    #: the channel id (odd: opened by the client side)
    channel: int
    #: the service name, decoded as UTF-8 (undecodable bytes as ``\\x``
    #: escapes); empty for the default service
    service: str
    #: the state, by the spec's name (a `memux.codes.ChannelState` value)
    state: str
    #: whether this side opened it
    local: bool
    lossy: bool
    bytesSent: int
    bytesReceived: int
    #: written by the application, not yet sent (waiting for credit or
    #: for its turn)
    queuedBytes: int
    #: received, not yet consumed by the application
    heldBytes: int
    #: how much more the peer invites us to send, and up to which offset
    sendCredit: int
    sendLimit: int
    #: how much more we invite the peer to send, and the window we grant
    #: it (auto-tuning may grow it)
    receiveCredit: int
    receiveWindow: int
    #: whether the application paused reading (its transport's producer)
    readingPaused: bool
    #: whether memux paused the application's producer (queue full)
    writingPaused: bool
    #: the channel's scheduling urgency (0, the most urgent, to 7) and
    #: weight within its urgency (see :doc:`/priorities`)
    priority: int | None = None
    weight: int | None = None

    def toJSON(self) -> dict[str, Any]:
        """
        As a dict of JSON types.
        """
        # (Not `dataclasses.asdict`, which copies each field deeply: a
        # server's snapshot holds many channels of plain fields.)
        return dict(self.__dict__)

    @classmethod
    def fromValues(cls, values: Iterable[Any]) -> ChannelSnapshot:
        """
        A snapshot of the field values ``values``, in the order of the
        fields, unchecked: how the session core makes one per channel, at
        a third of the cost of the frozen ``__init__`` (which sets each
        field through ``object.__setattr__``).
        """
        snapshot = _new(cls)
        snapshot.__dict__.update(zip(_CHANNEL_FIELDS, values, strict=True))
        return snapshot

    @classmethod
    def fromJSON(cls, data: dict[str, Any]) -> ChannelSnapshot:
        """
        Read back what `toJSON` gave.
        """
        return cls(**data)


_CHANNEL_FIELDS = tuple(f.name for f in dataclasses.fields(ChannelSnapshot))
_new = object.__new__


@dataclass(frozen=True)
class SessionSnapshot:
    """
    One session at one moment, and its open channels.
    """

    #: the peer's address, and ours, as logged (``host:port``, a path...)
    peer: str
    host: str
    #: whether this side initiated the connection
    client: bool
    #: seconds since the connection was made
    age: float
    #: what carries the session: ``TCP``, ``UNIX``, ``MPTCP`` or
    #: ``unknown``; whether under TLS, and the ALPN protocol it chose
    transport: str
    tls: bool
    alpn: str | None
    #: MPTCP subflows in use (None: not MPTCP, or not known)
    subflows: int | None
    #: the settings each side announced (`memux.settings.Settings` fields)
    settings: dict[str, int]
    peerSettings: dict[str, int]
    #: whether the peer's preface has arrived
    prefaceReceived: bool
    #: whether new channels may be opened (no GOAWAY, not closing)
    usable: bool
    #: the GOAWAY we sent (its code's name), if any, and the peer's:
    #: its code, last channel and reason
    goAwaySent: str | None
    goAwayReceived: str | None
    goAwayReceivedLastChannel: int | None
    goAwayReceivedReason: str | None
    #: whether the session drains (GOAWAY sent, closing once idle)
    draining: bool
    #: whether the connection has paused our output (its buffer is full)
    outputPaused: bool
    #: the smoothed round trip and the latest, in seconds (None: no PING
    #: answered yet)
    rtt: float | None
    lastRtt: float | None
    #: session credit: what we may send, what the peer may send, and the
    #: receive window that bounds its memory here
    sendCredit: int
    receiveCredit: int
    receiveWindow: int
    counters: SessionCounters
    channels: list[ChannelSnapshot]

    def toJSON(self) -> dict[str, Any]:
        """
        As a dict of JSON types.
        """
        out = {f: getattr(self, f) for f in _SESSION_FIELDS}
        out["counters"] = self.counters.toJSON()
        out["settings"] = dict(self.settings)
        out["peerSettings"] = dict(self.peerSettings)
        out["channels"] = [c.toJSON() for c in self.channels]
        return out

    @classmethod
    def fromJSON(cls, data: dict[str, Any]) -> SessionSnapshot:
        """
        Read back what `toJSON` gave.
        """
        values = dict(data)
        values["counters"] = SessionCounters.fromJSON(values["counters"])
        values["channels"] = [ChannelSnapshot.fromJSON(c) for c in values["channels"]]
        return cls(**values)


_SESSION_FIELDS = tuple(f.name for f in dataclasses.fields(SessionSnapshot))


@dataclass(frozen=True)
class FactorySnapshot:
    """
    Every connected session of a factory (a server, or a client pool) at
    one moment, and its totals.
    """

    #: when it was taken, in seconds since the epoch
    time: float
    #: whether the factory drains (``twistd memux`` shutting down)
    draining: bool
    #: the most sessions connected at once (see ``peakSessions``)
    peakSessions: int
    totals: Totals
    sessions: list[SessionSnapshot]

    def toJSON(self) -> dict[str, Any]:
        """
        As a dict of JSON types (``json.dumps`` takes it).
        """
        return {
            "time": self.time,
            "draining": self.draining,
            "peakSessions": self.peakSessions,
            "totals": self.totals.toJSON(),
            "sessions": [s.toJSON() for s in self.sessions],
        }

    @classmethod
    def fromJSON(cls, data: dict[str, Any]) -> FactorySnapshot:
        """
        Read back what `toJSON` gave (the ``/sessions`` page of a status
        endpoint, for instance).
        """
        values = dict(data)
        values["totals"] = Totals.fromJSON(values["totals"])
        values["sessions"] = [SessionSnapshot.fromJSON(s) for s in values["sessions"]]
        return cls(**values)
