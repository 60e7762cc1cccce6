# -*- test-case-name: memux.test.test_engine -*-
"""
The memux session engine, sans I/O: bytes in, events out; commands in,
bytes out.  It holds every protocol rule, every flow-control decision and
the outbound scheduling, and knows nothing of Twisted, sockets or time.

Drive it with `MemuxEngine.receiveData` (returns events) and
`MemuxEngine.dataToSend` (returns bytes to write); commands such as
`MemuxEngine.sendData` queue output; `MemuxEngine.popEvents` returns events
that commands and `dataToSend` produced.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from memux._credit import (
    ChannelCountCredit,
    CreditTuning,
    CreditWindow,
    SendCredit,
    SessionCreditWindow,
)
from memux._scheduler import PriorityScheduler
from memux._wire import (
    DATA_END,
    DATA_FIN,
    DATA_OPEN,
    ChannelCreditFrame,
    CreditFrame,
    DataFrame,
    DropFrame,
    ErrorCode,
    FrameDecoder,
    FrameType,
    GoAwayFrame,
    OpenFrame,
    PingFrame,
    Preface,
    PriorityFrame,
    ProtocolError,
    ResetFrame,
    Settings,
    describeCode,
    encodeDataHeader,
    encodePreface,
)
from memux.codes import (
    ChannelClosedError,
    ChannelState,
    EngineError,
    SessionClosedError,
)
from memux.introspect import (
    FRAME_TYPES,
    RTT_BUCKETS,
    ChannelFigures,
    SessionCounters,
)
from memux.settings import (
    DEFAULT_URGENCY,
    DEFAULT_WEIGHT,
    MAX_OPEN_PAYLOAD,
    MAX_REASON_BYTES,
    Priority,
    SessionSettings,
    checkPriority,
)

__all__ = [
    "SessionSettings",
    "MemuxEngine",
    "Event",
    "PrefaceReceived",
    "ChannelOpened",
    "DataReceived",
    "RemoteHalfClosed",
    "LocalHalfClosed",
    "ChannelClosed",
    "ChannelReset",
    "MessagesDropped",
    "PingAcknowledged",
    "GoAwayReceived",
    "SessionTerminated",
    "PeerWarning",
]


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class PrefaceReceived:
    """
    The peer's preface arrived: from now on its settings are known.
    """

    settings: Settings


# Events made for every channel are not frozen, for speed (a frozen
# dataclass's __init__ costs a call per field): treat them as immutable.
# They stay hashable.
@dataclass(slots=True, unsafe_hash=True)
class ChannelOpened:
    """
    The peer opened a channel.  Accept it by using it, or refuse it with
    `MemuxEngine.refuseChannel`.
    """

    channel: int
    service: bytes
    metadata: bytes | None = None
    destination: tuple[str, int] | None = None
    lossy: bool = False

    # (Written out: see `DataFrame.__init__` in memux._wire.)
    def __init__(
        self,
        channel: int,
        service: bytes,
        metadata: bytes | None = None,
        destination: tuple[str, int] | None = None,
        lossy: bool = False,
    ) -> None:
        self.channel = channel
        self.service = service
        self.metadata = metadata
        self.destination = destination
        self.lossy = lossy


# Not frozen, for speed (one per chunk); treat it as immutable.
@dataclass(slots=True, repr=False)
class DataReceived:
    """
    A chunk arrived.  Report it consumed with `MemuxEngine.consumed` once
    the application has taken it: that is what grants more credit.
    """

    channel: int
    data: bytes
    endMessage: bool = False

    # (Written out: see `DataFrame.__init__` in memux._wire.)
    def __init__(self, channel: int, data: bytes, endMessage: bool = False) -> None:
        self.channel = channel
        self.data = data
        self.endMessage = endMessage

    def __repr__(self) -> str:
        return (
            f"DataReceived(channel={self.channel}, {len(self.data)} bytes,"
            f" endMessage={self.endMessage})"
        )


@dataclass(slots=True, unsafe_hash=True)
class RemoteHalfClosed:
    """
    The peer will send nothing more on this channel (its FIN arrived).
    """

    channel: int

    # (Written out: see `DataFrame.__init__` in memux._wire.)
    def __init__(self, channel: int) -> None:
        self.channel = channel


@dataclass(slots=True, unsafe_hash=True)
class LocalHalfClosed:
    """
    Our FIN on this channel has been handed out by `dataToSend`.
    """

    channel: int

    # (Written out: see `DataFrame.__init__` in memux._wire.)
    def __init__(self, channel: int) -> None:
        self.channel = channel


@dataclass(slots=True, unsafe_hash=True)
class ChannelClosed:
    """
    Both directions of the channel ended cleanly.
    """

    channel: int

    # (Written out: see `DataFrame.__init__` in memux._wire.)
    def __init__(self, channel: int) -> None:
        self.channel = channel


@dataclass(frozen=True, slots=True)
class ChannelReset:
    """
    The channel was reset: by the peer (``remote``), or by this side because
    the peer broke a channel-level rule.  Code REFUSED means the peer never
    processed the channel, so reopening it elsewhere is safe.
    """

    channel: int
    code: int
    reason: str
    remote: bool = True


@dataclass(frozen=True, slots=True)
class MessagesDropped:
    """
    The peer discarded ``count`` whole messages on a lossy channel.
    """

    channel: int
    count: int


@dataclass(frozen=True, slots=True)
class PingAcknowledged:
    """
    The answer to one of our pings arrived.
    """

    payload: bytes


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """
    The peer will process no channel we open above ``lastChannel``.
    """

    lastChannel: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class SessionTerminated:
    """
    The session is over: this side found the peer in breach of the protocol
    (``remote`` false: a GOAWAY saying so is queued) or the peer sent a
    GOAWAY with an error code (``remote`` true).  Write out what
    `dataToSend` still returns, then close the connection.
    """

    code: int
    reason: str
    remote: bool


@dataclass(frozen=True, slots=True)
class PeerWarning:
    """
    The peer does something legal but almost surely not what it means, and
    which will stall the session or a channel: worth a log line.  Each kind
    is reported once per session.
    """

    message: str


Event = (
    PrefaceReceived
    | ChannelOpened
    | DataReceived
    | RemoteHalfClosed
    | LocalHalfClosed
    | ChannelClosed
    | ChannelReset
    | MessagesDropped
    | PingAcknowledged
    | GoAwayReceived
    | SessionTerminated
    | PeerWarning
)


# ---------------------------------------------------------------- channels


# The states, as names the hot paths read fast (a module global and an
# identity test, not an Enum class attribute).
_IDLE: Final = ChannelState.IDLE

#: Every engine's `MemuxEngine._pendingOpens` until it opens a channel;
#: never appended to.
_NO_OPENS: Final[deque[Any]] = deque()
_OPEN: Final = ChannelState.OPEN
_HALF_CLOSED_LOCAL: Final = ChannelState.HALF_CLOSED_LOCAL
_HALF_CLOSED_REMOTE: Final = ChannelState.HALF_CLOSED_REMOTE
_CLOSED: Final = ChannelState.CLOSED

# What changes a channel's state (besides a RESET, sent or received, which
# closes it from any state: `_removeChannel`).
_ANNOUNCE: Final = "send the opening frame"
_SEND_FIN: Final = "send FIN"
_RECEIVE_FIN: Final = "receive FIN"

#: The spec's state table ("Channel states"), as the engine follows it: a
#: channel the peer opens starts OPEN (its opening frame with FIN is
#: opening, then FIN); one we open starts IDLE until announced.  The three
#: changes every channel makes (announce, send and receive FIN) are also
#: written inline where they happen; test_states walks the spec's own
#: table on a real engine, so both must agree with it.
_NEXT_STATE: dict[tuple[ChannelState, str], ChannelState] = {
    (_IDLE, _ANNOUNCE): _OPEN,
    (_OPEN, _SEND_FIN): _HALF_CLOSED_LOCAL,
    (_OPEN, _RECEIVE_FIN): _HALF_CLOSED_REMOTE,
    (_HALF_CLOSED_LOCAL, _RECEIVE_FIN): _CLOSED,
    (_HALF_CLOSED_REMOTE, _SEND_FIN): _CLOSED,
}


def _advance(ch: _Channel, event: str) -> ChannelState:
    """
    Move ``ch`` to its next state on ``event``; return it.  An event its
    state has no row for is a fault in the engine.
    """
    state = _NEXT_STATE.get((ch.state, event))
    if state is None:
        raise EngineError(f"channel {ch.id}: {event} in state {ch.state.name}")
    ch.state = state
    return state


class _Channel(SendCredit):
    """
    Per-channel state: the send queue and credit, the receive credit.

    A channel is its own `SendCredit` (``send`` is the channel itself, and
    ``offset`` and ``limit`` are its *send* credit): the send credit's
    owner and policy are that class's, without an object of their own for
    every channel (48 bytes, and a call to make it).  Not a slot pointing
    at itself: that reference cycle would leave every closed channel to
    the cyclic garbage collector.
    """

    __slots__ = (
        "dropAt",
        "dropCount",
        "finQueued",
        "id",
        "local",
        "lossy",
        "midMessage",
        "openFrame",
        "parked",
        "partialSince",
        "queue",
        "queued",
        "readStopped",
        "recv",
        "scheduled",
        "sessionHeld",
        "state",
        "turnEnd",
        "urgency",
        "weight",
    )

    def __init__(
        self,
        cid: int,
        local: bool,
        sendLimit: int,
        window: int,
        openFrame: bytes | None = None,
        lossy: bool = False,
    ) -> None:
        self.id = cid
        # A channel we open waits to be announced (IDLE); the peer's
        # already was.  Changed by `_advance` only, along `_NEXT_STATE`.
        self.state = _IDLE if local else _OPEN
        # The OPEN frame to send (named service), or None for the default
        # service, opened by the OPEN flag on the first DATA frame.
        self.openFrame = openFrame
        # Entries are [data, endOfMessage]; data is bytes or memoryview.
        # Created on first write: an empty deque costs ~600 bytes, and idle
        # channels should cost little.
        self.queue: deque[list[object]] | None = None
        self.queued = 0
        # `SendCredit.__init__`, inline (see the class docstring).
        self.offset = 0
        self.limit = sendLimit
        self.recv = CreditWindow(window)
        # Its output priority, and where its scheduler turn ends (an offset).
        self.urgency = DEFAULT_URGENCY
        self.weight = DEFAULT_WEIGHT
        self.turnEnd = 0
        self.dropCount = 0
        # The received offset at the peer's last DROP (-1: none yet): a DROP
        # with no data since the last one discards nothing new.
        self.dropAt = -1
        # When the message being reassembled here began (an order number),
        # for the deadlock breaker: the youngest partial message goes first.
        self.partialSince = 0
        # Bytes received here and not yet given back as session credit:
        # unconsumed ones (recv.held) plus any held in message reassembly.
        self.sessionHeld = 0
        # The flags, last and together: compiled, fields are laid out in the
        # order first assigned, and flags side by side share one word's
        # padding (40 bytes a channel less than when each sat between
        # pointers).
        self.local = local
        self.lossy = lossy
        self.finQueued = False
        self.scheduled = False
        self.parked = False  # waiting (in the scheduler) for session credit
        self.midMessage = False
        self.readStopped = False

    @property
    def send(self) -> SendCredit:
        """
        The channel's send credit: the channel itself (see the class
        docstring; hot paths read ``offset`` and ``limit`` directly).
        """
        return self


#: Most bytes of control frames the peer's traffic may make us queue
#: between two `MemuxEngine.dataToSend` calls (PING answers, RESETs): a
#: peer that sends and never reads cannot grow our memory.
MAX_CONTROL_BYTES: Final = 256 * 1024


def _cut(reason: str) -> str:
    raw = reason.encode("utf-8")
    if len(raw) <= MAX_REASON_BYTES:
        return reason
    return raw[:MAX_REASON_BYTES].decode("utf-8", "ignore")


def _isClientId(cid: int) -> bool:
    return cid & 1 == 1


def _ordinal(cid: int) -> int:
    return (cid - 1) >> 1


class MemuxEngine:
    """
    One memux session, from one side.

    :param client: whether this side initiated the underlying connection
        (it then opens odd channel ids, the other side even ones).
    """

    # Slots, not an instance dict: a session's engine and core each have
    # more attributes than CPython shares dict keys for (30), so each
    # dict took 1.5 KiB per session, and slot reads are the faster.
    __slots__ = (
        "bytesReceived",
        "bytesSent",
        "channelsAccepted",
        "channelsOpened",
        "client",
        "creditTuning",
        "urgentChannels",
        "receiverBehind",
        "framesReceived",
        "goAwayReceived",
        "goAwaySent",
        "goAwaySentCode",
        "peerSettings",
        "pingBytesReceived",
        "pingBytesSent",
        "prefaceReceived",
        "settings",
        "terminated",
        "uselessFrames",
        "weighted",
        "_channelCredit",
        "_channelCreditStalls",
        "_channels",
        "_chunkSize",
        "_channelsDue",
        "_control",
        "_controlBytes",
        "_controlReceived",
        "_creditDue",
        "_dataPieces",
        "_decoder",
        "_emptyDataFrames",
        "_events",
        "_framesSent",
        "_goAwaysReceived",
        "_goAwaysSent",
        "_highestLocalSent",
        "_highestPeer",
        "_hintsDue",
        "_lateFrames",
        "_loadBudget",
        "_localChannelLimit",
        "_maxUseless",
        "_midMessage",
        "_nextLocalId",
        "_partialsBegun",
        "_peerChannels",
        "_pendingOpens",
        "_reassemblyHeld",
        "_resetsReceived",
        "_resetsSent",
        "_scheduler",
        "_sessionCreditStalls",
        "_sessionRecv",
        "_sessionSend",
        "_warnedIncrement",
        "_workCounted",
    )

    def __init__(self, client: bool, settings: SessionSettings | None = None) -> None:
        self.client = client
        self.settings = settings or SessionSettings()
        self.peerSettings = Settings()  # the initial values, until the preface
        self.prefaceReceived = False
        self._decoder = FrameDecoder(self.settings.maxFrameSize)
        # Settings read for every channel or flush, copied here: compiled,
        # the settings (a class of an uncompiled module) are read by name.
        self._channelCredit = self.settings.channelCredit
        self._chunkSize = self.settings.chunkSize
        self._maxUseless = self.settings.maxUselessFrames
        self._channels: dict[int, _Channel] = {}
        self._events: list[Event] = []
        self._control: list[bytes] = [encodePreface(self.settings.toWire())]
        # Control frames the peer made us queue (PING answers, RESETs) since
        # the last dataToSend: bounded, see MAX_CONTROL_BYTES.
        self._controlBytes = 0
        # Credit to announce, coalesced: only the latest limit matters.
        self._creditDue: dict[int, int] = {}
        self._channelsDue = False
        # The order channels send in: a policy of its own (urgency classes,
        # weights within a class), its turns as long as our largest chunk.
        # (Typed as the class, not the `Scheduler` protocol: compiled, the
        # calls to it are then native.)
        self._scheduler: PriorityScheduler[_Channel] = PriorityScheduler(
            min(self.peerSettings.maxFrameSize, self.settings.chunkSize)
        )
        # PRIORITY hints to send (channel: urgency, weight), once the peer's
        # preface says it takes them.
        self._hintsDue: dict[int, Priority] = {}
        #: whether any channel has had a weight other than the default (the
        #: session core then refills producers by weight)
        self.weighted = False
        #: how many open channels are more urgent than the default (set so
        #: by us or by the peer's hint): while any is, the session core
        #: keeps its queues short (`memux._session.LATENCY_FLUSH_BYTES`)
        self.urgentChannels = 0
        #: whether our reads come back full (the front end reads in bulk):
        #: data waits for us in the connection, so in latency mode the less
        #: urgent channels get little credit (`LATENCY_WINDOW`); set by the
        #: session layer (`memux._session.SessionCore.readingInBulk`)
        self.receiverBehind = False
        # (Shared and empty until this side opens a channel: a deque costs
        # 760 bytes, and most sessions of a server never open one.)
        self._pendingOpens: deque[_Channel] = _NO_OPENS
        # Channels with a message partly sent (`_Channel.midMessage`): the
        # messages in progress, which a new one must not crowd out (see
        # `_admits`).
        self._midMessage: set[_Channel] = set()
        # Channel ids.
        self._nextLocalId = 1 if client else 2
        self._highestLocalSent = 0  # highest local id whose opening went out
        self._highestPeer = 0  # highest id the peer opened
        # Channel-count credit: what we may open, what we let the peer open.
        self._localChannelLimit = self.peerSettings.initialMaxChannels
        self._peerChannels = ChannelCountCredit(self.settings.maxChannels)
        # Session credit.
        self._sessionSend = SendCredit(self.peerSettings.initialSessionCredit)
        self._sessionRecv = SessionCreditWindow(self.settings.sessionCredit)
        #: receive-window auto-tuning for the channels (None: off), fed its
        #: clock and round trips by the session layer (`CreditTuning`)
        self.creditTuning: CreditTuning | None = None
        if self.settings.channelCreditLimit > self.settings.channelCredit:
            self.creditTuning = CreditTuning(
                self.settings.channelCredit, self.settings.channelCreditLimit
            )
        self._reassemblyHeld = 0  # held in message reassembly, all channels
        self._partialsBegun = 0  # messages that began in reassembly, so far
        # Flood limit: frames that do no work spend this allowance; DATA
        # payload moved (counted lazily from the credit offsets) refills it.
        self._loadBudget = self.settings.maxUselessFrames
        self._workCounted = 0
        # Frames for a channel just closed (RESET, CREDIT, DROP) are the
        # normal race of the peer's frame with our FIN or RESET, at most a
        # few per channel: each channel that ends earns one such frame free
        # of the allowance above (up to maxUselessFrames banked), so only
        # a peer sending more of them than it closes channels spends it.
        self._lateFrames = 0
        self.uselessFrames = 0  # counter, for introspection
        # Lifecycle.
        self._warnedIncrement = False  # see _onCredit
        self.goAwaySent: int | None = None  # the lastChannel we announced
        self.goAwayReceived: int | None = None
        #: the code of the last GOAWAY we sent, if any
        self.goAwaySentCode: int | None = None
        self.terminated = False
        # Counters, for introspection.
        self.bytesSent = 0
        self.bytesReceived = 0
        self.framesReceived = 0
        self.channelsOpened = 0
        self.channelsAccepted = 0
        #: bytes of PING frames (probes and answers) sent and received,
        #: counted in ``bytesSent`` and ``bytesReceived`` too: what liveness
        #: and round-trip sampling cost, apart from the data's framing
        self.pingBytesSent = 0
        self.pingBytesReceived = 0
        # Counters for `counters` (introspection and metrics), kept where
        # each is cheap: frames sent by type nibble (control frames counted
        # once per `piecesToSend`, DATA by its pieces), frames received
        # other than DATA by class (DATA is the rest of framesReceived),
        # RESETs and GOAWAYs by code, and stalls on credit.
        self._framesSent = [0] * 16
        self._dataPieces = 0  # DATA headers and payloads sent (see counters)
        self._emptyDataFrames = 0  # of those headers, with no payload
        self._controlReceived: dict[type, int] = {}
        self._resetsSent: dict[int, int] = {}
        self._resetsReceived: dict[int, int] = {}
        self._goAwaysSent: dict[int, int] = {}
        self._goAwaysReceived: dict[int, int] = {}
        self._channelCreditStalls = 0
        self._sessionCreditStalls = 0

    # ------------------------------------------------------------ queries

    def isLocal(self, channel: int) -> bool:
        """
        Whether ``channel`` is (or would be) opened by this side.
        """
        return _isClientId(channel) == self.client

    def isOpen(self, channel: int) -> bool:
        """
        Whether ``channel`` is open (in either direction).
        """
        return channel in self._channels

    def finSent(self, channel: int) -> bool:
        """
        Whether our FIN on ``channel`` has been handed out (or the channel is
        no longer open).
        """
        ch = self._channels.get(channel)
        return ch is None or ch.state is _HALF_CLOSED_LOCAL

    def hasOpenChannels(self) -> bool:
        """
        Whether any channel is open (in either direction).
        """
        return bool(self._channels)

    def channelState(self, channel: int) -> ChannelState:
        """
        The state of ``channel`` (spec: "Channel states"): IDLE for an id
        not opened yet (or one of ours not yet announced), CLOSED for one
        that was opened, or skipped, and has ended.
        """
        ch = self._channels.get(channel)
        if ch is not None:
            state: ChannelState = ch.state
            return state
        if self.isLocal(channel):
            opened = channel < self._nextLocalId
        else:
            opened = channel <= self._highestPeer
        return _CLOSED if opened else _IDLE

    def openChannels(self) -> list[int]:
        """
        The ids of the channels that are open (in any half).
        """
        return list(self._channels)

    def queuedBytes(self, channel: int) -> int:
        """
        Payload bytes queued on ``channel`` and not yet handed out.
        """
        ch = self._channels.get(channel)
        return ch.queued if ch is not None else 0

    def heldBytes(self, channel: int) -> int:
        """
        Bytes received on ``channel`` and not yet reported consumed.
        """
        ch = self._channels.get(channel)
        return ch.recv.held if ch is not None else 0

    def sendCredit(self, channel: int) -> int:
        """
        How many more payload bytes the peer has invited on ``channel``
        (ignoring the session-wide limit).
        """
        ch = self._channels.get(channel)
        return ch.send.available if ch is not None else 0

    @property
    def sessionSendCredit(self) -> int:
        """
        How many more payload bytes the peer has invited on the session.
        """
        return self._sessionSend.available

    def channelFigures(self) -> Iterator[ChannelFigures]:
        """
        The figures of every open channel, for introspection (read-only).
        """
        names = _STATE_NAMES
        for cid, ch in self._channels.items():
            recv = ch.recv
            yield ChannelFigures(
                cid,
                names[ch.state],
                ch.local,
                ch.lossy,
                ch.offset,
                recv.received,
                ch.queued,
                recv.received - recv.consumed,
                ch.limit - ch.offset,
                ch.limit,
                recv.limit - recv.received,
                recv.window,
            )

    def sessionCredit(self) -> tuple[int, int, int]:
        """
        The session's credit, for introspection: what we may still send,
        what the peer may still send, and our receive window.
        """
        send, recv = self._sessionSend, self._sessionRecv
        return (send.limit - send.offset, recv.limit - recv.received, recv.window)

    def counters(self) -> SessionCounters:
        """
        What this session has moved and met so far (see `SessionCounters`),
        read from the counters the engine keeps as it goes.
        """
        sent = {FRAME_TYPES[i]: n for i, n in enumerate(self._framesSent) if n}
        # Each DATA frame sent is a header and, unless empty, its payload.
        data = (self._dataPieces + self._emptyDataFrames) // 2
        if data:
            sent["DATA"] = data
        received: dict[str, int] = {}
        control = 0
        for cls, n in self._controlReceived.items():
            name = _FRAME_NAMES.get(cls, "UNKNOWN")
            received[name] = received.get(name, 0) + n
            control += n
        if self.framesReceived > control:
            received["DATA"] = self.framesReceived - control
        return SessionCounters(
            bytesSent=self.bytesSent,
            bytesReceived=self.bytesReceived,
            pingBytesSent=self.pingBytesSent,
            pingBytesReceived=self.pingBytesReceived,
            framesSent=sent,
            framesReceived=received,
            channelsOpened=self.channelsOpened,
            channelsAccepted=self.channelsAccepted,
            resetsSent={describeCode(c): n for c, n in self._resetsSent.items()},
            resetsReceived={
                describeCode(c): n for c, n in self._resetsReceived.items()
            },
            goAwaysSent={describeCode(c): n for c, n in self._goAwaysSent.items()},
            goAwaysReceived={
                describeCode(c): n for c, n in self._goAwaysReceived.items()
            },
            channelCreditStalls=self._channelCreditStalls,
            sessionCreditStalls=self._sessionCreditStalls,
            uselessFrames=self.uselessFrames,
            # (Round trips are the session core's: it times the PINGs.)
            rttCounts=[0] * (len(RTT_BUCKETS) + 1),
            rttSum=0.0,
        )

    def hasDataToSend(self) -> bool:
        """
        Whether `dataToSend` would return anything now.
        """
        if self._control:
            return True
        if self.terminated:
            return False
        if self._scheduler.line or self._creditDue or self._channelsDue:
            return True
        if self._hintsDue and self._sendableHints():
            return True
        # (`_sendableOpens`, inline: asked after every flush.)
        pending = self._pendingOpens
        return bool(pending) and _ordinal(pending[0].id) < self._localChannelLimit

    # ------------------------------------------------------------ commands

    def openChannel(
        self,
        service: bytes = b"",
        metadata: bytes | None = None,
        destination: tuple[str, int] | None = None,
        lossy: bool = False,
    ) -> int:
        """
        Open a channel, without a round trip; return its id at once.

        The opening frame goes out with the first data, or on its own at
        the next `dataToSend`; if the peer's channel-count credit is
        exhausted it waits, in order, until the peer grants more.
        """
        if self.terminated:
            raise SessionClosedError("the session is terminated")
        if self.goAwayReceived is not None:
            raise SessionClosedError(
                "the peer sent GOAWAY: no new channels on this session"
            )
        cid = self._nextLocalId
        openFrame = None
        if service or metadata is not None or destination is not None or lossy:
            openFrame = OpenFrame(cid, service, metadata, destination, lossy).encode()
            if len(openFrame) > MAX_OPEN_PAYLOAD:
                raise ValueError(
                    f"service, metadata and destination take {len(openFrame)} bytes;"
                    f" an OPEN frame may take at most {MAX_OPEN_PAYLOAD}"
                )
        self._nextLocalId += 2
        ch = _Channel(
            cid,
            True,
            self.peerSettings.initialChannelCredit,
            self._channelCredit,
            openFrame,
            lossy,
        )
        self._channels[cid] = ch
        pending = self._pendingOpens
        if pending is _NO_OPENS:
            pending = self._pendingOpens = deque()
        pending.append(ch)
        self.channelsOpened += 1
        return cid

    def sendData(self, channel: int, data: bytes, endMessage: bool = False) -> int:
        """
        Queue ``data`` on ``channel``; ``endMessage`` ends the message with
        it (with empty ``data``: ends the message in progress, or sends an
        empty message).  It goes out as credit and scheduling allow.

        :returns: the payload bytes now queued on ``channel`` (what
            `queuedBytes` would say), for the caller's backpressure.
        """
        ch = self._channels.get(channel)
        if ch is None or ch.finQueued:
            ch = self._sendable(channel)  # raises the right error
        n = len(data)
        q = ch.queue
        if q is None:
            q = ch.queue = deque()
        if n == 0:
            if not endMessage:
                return ch.queued
            if q and not q[-1][1]:
                q[-1][1] = True
            else:
                q.append([b"", True])
        else:
            q.append([data, endMessage])
            ch.queued += n
        if not ch.scheduled and ch.state is not _IDLE:
            self._scheduler.add(ch)
        return ch.queued

    def closeChannel(self, channel: int, stopReading: bool = False) -> None:
        """
        Half-close: send FIN after whatever is queued on ``channel``.  With
        ``stopReading``, also `stopReading` (a full close, in one call).
        """
        ch = self._channels.get(channel)
        if ch is None:
            return
        if stopReading:
            ch.readStopped = True
        if ch.finQueued:
            return
        ch.finQueued = True
        if not ch.scheduled and ch.state is not _IDLE:
            self._scheduler.add(ch)

    def setPriority(
        self,
        channel: int,
        urgency: object,
        weight: object = DEFAULT_WEIGHT,
        hint: bool = True,
    ) -> None:
        """
        Send ``channel``'s data at ``urgency`` (0, the most urgent, to 7)
        and ``weight`` (1 to 256) from now on; with ``hint``, ask the peer
        to send its data on the channel so too (a PRIORITY frame, if the
        peer's preface says it takes them, once it has said so).

        :raises TypeError: ``urgency`` or ``weight`` is not an integer.
        :raises ValueError: either is out of range.
        :raises ChannelClosedError: the channel is not open.
        """
        # ``object``, not ``int``: compiled (mypyc), an ``int`` parameter
        # would turn True into 1 before `checkPriority` could refuse it.
        priority = checkPriority(urgency, weight)
        ch = self._channels.get(channel)
        if ch is None:
            raise ChannelClosedError(channel, f"channel {channel} is not open")
        self._prioritize(ch, priority.urgency, priority.weight)
        if (
            hint
            and ch.state is not _HALF_CLOSED_REMOTE
            and (not self.prefaceReceived or self.peerSettings.priorityHints)
        ):
            self._hintsDue[channel] = priority

    def priority(self, channel: int) -> Priority:
        """
        The priority ``channel``'s data is sent at (the default for a
        channel that is not open).
        """
        ch = self._channels.get(channel)
        if ch is None:
            return Priority()
        return Priority(ch.urgency, ch.weight)

    def stopReading(self, channel: int) -> None:
        """
        The application will read nothing more on ``channel`` (it closed
        both ways).  If data still arrives once our FIN is out, discard it
        and answer with RESET NO_ERROR, as TCP answers data after close()
        with RST; before that it is delivered as usual, for the closed
        reader to discard.  A peer that just closes in turn costs no extra
        frame.  Credit still follows what the application consumes (or
        discards): a peer with more queued than its credit would otherwise
        wait for ever, never learning of the close, and its FIN with it.
        """
        ch = self._channels.get(channel)
        if ch is not None:
            ch.readStopped = True

    def resetChannel(
        self, channel: int, code: int = ErrorCode.CANCEL, reason: str = ""
    ) -> None:
        """
        Abort ``channel`` both ways: discard what is queued, send RESET.
        """
        ch = self._channels.get(channel)
        if ch is None:
            return
        if ch.state is not _IDLE:
            self._control.append(ResetFrame(channel, code, _cut(reason)).encode())
            _count(self._resetsSent, code)
        # else: the peer never heard of it; its id is simply skipped.
        self._removeChannel(ch)

    def _queuePeerInduced(self, frame: bytes) -> None:
        """
        Queue a frame the peer's traffic calls for; a peer that makes us
        queue more than MAX_CONTROL_BYTES without reading them is flooding.
        """
        if self.terminated:
            return
        self._control.append(frame)
        self._controlBytes += len(frame)
        if self._controlBytes > MAX_CONTROL_BYTES:
            self._fail(
                ErrorCode.EXCESSIVE_LOAD,
                "peer makes us queue control frames it does not read",
            )

    def refuseChannel(self, channel: int, reason: str) -> None:
        """
        Refuse a channel the peer opened: RESET with code REFUSED, which
        promises that nothing was processed.
        """
        ch = self._channels.get(channel)
        if ch is None or ch.local:
            return
        self._removeChannel(ch)
        self._queuePeerInduced(
            ResetFrame(channel, ErrorCode.REFUSED, _cut(reason)).encode()
        )
        _count(self._resetsSent, ErrorCode.REFUSED)
        # An opening that did no work: a storm of them (to no service, or
        # to one that declines) spends the same allowance as rapid resets.
        self._useless("refused channel")

    def consumed(self, channel: int, n: int, holdSession: bool = False) -> None:
        """
        The application has taken ``n`` bytes delivered on ``channel``:
        grant credit for them, per the policy in `CreditWindow`.

        With ``holdSession`` the bytes are only moved into the application's
        message reassembly: the channel gets its credit back, but they keep
        counting against the session (so the session credit still bounds
        all memory held) until `releaseSession`.
        """
        ch = self._channels.get(channel)
        if ch is None or n <= 0:
            # Its unconsumed bytes went back to the session when it closed.
            return
        # `CreditWindow.consume`, twice, inline: this runs for every chunk
        # delivered, and the windows' `grantAt` says when a grant is due
        # (`CreditWindow.due`, `SessionCreditWindow.due`; a property test
        # holds this copy equal to them).
        recv = ch.recv
        consumed = recv.consumed + n
        if consumed > recv.received:
            raise EngineError(
                f"consumed {consumed} bytes but only {recv.received} arrived"
            )
        recv.consumed = consumed
        if consumed >= recv.grantAt:
            before = recv.limit
            # In latency mode, while data waits for us, little of a less
            # urgent channel's data may be on its way (`LATENCY_WINDOW`).
            limit = recv.grant(
                self.creditTuning,
                self.receiverBehind
                and self.urgentChannels > 0
                and ch.urgency >= DEFAULT_URGENCY,
            )
            if limit > before and ch.state is not _HALF_CLOSED_REMOTE:
                self._creditDue[channel] = limit
        if holdSession:
            # Checked at the next dataToSend (see _checkReassemblyDeadlock),
            # once the application has had the chance to release a message
            # this completed.
            if ch.sessionHeld == recv.received - consumed + n:
                # Nothing in reassembly here yet: a message begins.
                self._partialsBegun += 1
                ch.partialSince = self._partialsBegun
            self._reassemblyHeld += n
        else:
            ch.sessionHeld -= n
            session = self._sessionRecv
            # Within the session's received bytes: the channel's were.
            session.consumed += n
            consumed = session.consumed
            if consumed + session.received >= session.grantAt and (
                consumed + session.window > session.limit
            ):
                self._creditDue[0] = session.grant()

    def releaseSession(self, channel: int, n: int) -> None:
        """
        ``n`` bytes held in reassembly on ``channel`` were delivered (or
        discarded): give them back as session credit.
        """
        ch = self._channels.get(channel)
        if ch is None or n <= 0:
            return
        n = min(n, ch.sessionHeld - ch.recv.held)
        ch.sessionHeld -= n
        self._reassemblyHeld -= n
        self._consumeSession(n)

    def _checkReassemblyDeadlock(self) -> None:
        """
        If the session's credit is spent and everything held is partial
        messages, nothing more will be consumed, so no message can ever
        complete.  If they fill the whole window, reset the channel whose
        message began last (the others started first, so finish first; a
        memux sender never gets here, see `_admits`, nor does one message
        alone unless it is larger than the whole window); the credit that
        frees is granted by the caller (`CreditWindow.due`).
        """
        window = self._sessionRecv
        if window.limit > window.received:
            return  # the peer can still send: not stuck
        if self._reassemblyHeld < window.held:
            return  # some held bytes will be consumed by a paused reader
        if window.held >= window.window:
            partial = [
                c for c in self._channels.values() if c.sessionHeld > c.recv.held
            ]
            if partial:
                victim = max(partial, key=lambda c: c.partialSince)
                self._channelError(
                    victim,
                    ErrorCode.EXCESSIVE_LOAD,
                    "partial messages fill the session's memory",
                )

    def discardQueuedMessages(self, channel: int, keepNewest: bool = False) -> int:
        """
        On a lossy channel, discard every queued message not yet begun (but
        the newest complete one, with ``keepNewest``) and tell the peer with
        a DROP frame.  Return how many were discarded.
        """
        ch = self._sendable(channel)
        if not ch.lossy:
            raise EngineError(f"channel {channel} is not lossy")
        # Split the queue into messages; the last may be unfinished.
        messages: list[list[list[object]]] = []
        current: list[list[object]] = []
        for item in ch.queue or ():
            current.append(item)
            if item[1]:
                messages.append(current)
                current = []
        kept: deque[list[object]] = deque()
        dropped = 0
        last = len(messages) - 1
        for i, message in enumerate(messages):
            if (i == 0 and ch.midMessage) or (keepNewest and i == last):
                kept.extend(message)  # begun on the wire, or the freshest
            else:
                dropped += 1
        kept.extend(current)  # still being written by the application
        ch.queue = kept
        ch.queued = 0
        for item in kept:
            ch.queued += len(item[0])  # type: ignore[arg-type]
        if dropped:
            ch.dropCount += dropped
            self._schedule(ch)
        return dropped

    def ping(self, payload: bytes = b"") -> None:
        """
        Send a PING; its answer arrives as `PingAcknowledged`.
        """
        self._checkUsable()
        frame = PingFrame(payload).encode()
        self.pingBytesSent += len(frame)
        self._control.append(frame)

    def goAway(self, code: int = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """
        Announce that we will process no channel the peer opens from now on.
        Existing channels carry on.  With an error code the session ends:
        write out `dataToSend`, then close the connection.
        """
        if self.terminated:
            return
        if self.goAwaySent is None or self._highestPeer < self.goAwaySent:
            self.goAwaySent = self._highestPeer
        self._control.append(GoAwayFrame(self.goAwaySent, code, _cut(reason)).encode())
        self.goAwaySentCode = code
        _count(self._goAwaysSent, code)
        if code != ErrorCode.NO_ERROR:
            self.terminated = True

    # ------------------------------------------------------------ input

    def receiveData(self, data: bytes, maxFrames: int | None = None) -> list[Event]:
        """
        Process bytes from the peer; return the events they caused (and any
        produced since the last call).

        With ``maxFrames`` (at least 1), at most that many frames (the
        preface counts as one) are decoded and processed: the rest of the
        input is held, ahead of the next call's, while `inputPending` says
        so (``receiveData(b"", n)`` goes on).  The caller so bounds the work
        each call does, however many tiny frames a read holds.
        """
        if maxFrames is not None and maxFrames < 1:
            raise ValueError(f"maxFrames must be at least 1, not {maxFrames}")
        if not self.terminated:
            self.bytesReceived += len(data)
            try:
                if maxFrames is None:
                    frames = self._decoder.receive(data)
                else:
                    frames = self._decoder.receive(data, maxFrames)
                handlers = _FRAME_HANDLERS
                control = self._controlReceived
                for frame in frames:
                    if type(frame) is DataFrame:
                        # (A method call, not a local alias of the bound
                        # method: compiled, that is a native call.)
                        self._onData(frame)
                    else:
                        t = type(frame)
                        # (Counted here, not per DATA frame: see counters.)
                        control[t] = control.get(t, 0) + 1
                        handlers.get(t, _onUnknown)(self, frame)
                    if self.terminated:
                        break
                self.framesReceived += len(frames)
            except ProtocolError as e:
                self._fail(e.code, e.message)
        return self.popEvents()

    @property
    def inputPending(self) -> bool:
        """
        Whether input held back by ``maxFrames`` waits for `receiveData`.
        """
        return self._decoder.backlogged and not self.terminated

    def refillLoadBudget(self) -> None:
        """
        Give the peer its full allowance of frames that do no work again.
        The Twisted layer calls this now and then (the engine knows no
        time): a limit on bursts, not on a slow trickle of PINGs.
        """
        self._loadBudget = self.settings.maxUselessFrames

    def _useless(self, what: str) -> None:
        """
        The peer sent a frame that does no work: spend one from the
        allowance, which DATA payload moved since the last time refills.
        """
        self.uselessFrames += 1
        settings = self.settings
        work = self._sessionSend.offset + self._sessionRecv.received
        earned = (work - self._workCounted) // settings.usefulBytesPerFrame
        if earned:
            self._workCounted += earned * settings.usefulBytesPerFrame
            self._loadBudget = min(settings.maxUselessFrames, self._loadBudget + earned)
        self._loadBudget -= 1
        if self._loadBudget < 0 and not self.terminated:
            self._fail(
                ErrorCode.EXCESSIVE_LOAD,
                f"too many frames that do no work (the last: {what})",
            )

    def popEvents(self) -> list[Event]:
        """
        Return and forget the events produced so far.
        """
        events = self._events
        self._events = []
        return events

    def _fail(self, code: int, reason: str) -> None:
        """
        The peer broke a session-level rule: queue GOAWAY and stop.
        """
        self.goAway(code, reason)
        self.terminated = True
        self._events.append(SessionTerminated(code, reason, remote=False))

    def _onOpen(self, f: OpenFrame) -> None:
        ch = self._acceptOpen(f.channel)
        if ch is not None:
            ch.lossy = f.lossy
            self._events.append(
                ChannelOpened(f.channel, f.service, f.metadata, f.destination, f.lossy)
            )

    def _onReset(self, r: ResetFrame) -> None:
        ch = self._known(r.channel)
        if ch is None:
            self._late("RESET of a closed channel")
            return
        if not ch.local and ch.offset == 0 and ch.state is _OPEN:
            # Opened, then reset before we answered: rapid reset
            # (CVE-2023-44487) makes us start work and throw it away.
            self._useless("RESET of a channel before any answer")
        _count(self._resetsReceived, r.code)
        self._removeChannel(ch)
        self._events.append(ChannelReset(r.channel, r.code, r.reason, True))

    def _onPing(self, p: PingFrame) -> None:
        # (Its size as encoded: PINGs are few, so no shortcut.)
        self.pingBytesReceived += len(p.encode())
        if p.ack:
            self._events.append(PingAcknowledged(p.payload))
        else:
            self._useless("PING")
            answer = PingFrame(p.payload, ack=True).encode()
            self.pingBytesSent += len(answer)
            self._queuePeerInduced(answer)

    def _onChannelCredit(self, c: ChannelCreditFrame) -> None:
        if c.limit > self._localChannelLimit:
            self._localChannelLimit = c.limit
        else:
            self._useless("CHANNELS raising no limit")

    def _onDrop(self, d: DropFrame) -> None:
        ch = self._known(d.channel)
        if ch is None:
            self._late("DROP on a closed channel")
            return
        if not ch.lossy:
            self._channelError(
                ch, ErrorCode.PROTOCOL_ERROR, "DROP on a channel that is not lossy"
            )
            return
        # A sender adds up what it discards until its next data goes out
        # (spec: "DROP"): a DROP with nothing received since the last one
        # tells nothing new.  (A count of 0 the decoder already refuses.)
        received = ch.recv.received
        if received == ch.dropAt:
            self._useless("DROP with no data since the last")
        ch.dropAt = received
        self._events.append(MessagesDropped(d.channel, d.count))

    def _onPriority(self, p: PriorityFrame) -> None:
        if not self.settings.acceptPriorityHints:
            # We said we do not take them: as any extension frame.
            self._useless("PRIORITY, which we do not take")
            return
        ch = self._channels.get(p.channel)
        if ch is None or ch.state is _IDLE:
            # (Advisory: a hint for no open channel is ignored, never an
            # error; it may race the channel's close.)
            self._late("PRIORITY for a channel not open")
            return
        if ch.urgency == p.urgency and ch.weight == p.weight:
            self._useless("PRIORITY changing nothing")
            return
        if ch.scheduled and ch.urgency != p.urgency:
            # Moving a channel in line costs a search of the line: a peer
            # that keeps moving ours spends the allowance (legitimate
            # peers change a priority now and then, not in bursts).
            self._useless("PRIORITY moving a channel with data queued")
            if self.terminated:
                return
        self._prioritize(ch, p.urgency, p.weight)

    def _prioritize(self, ch: _Channel, urgency: int, weight: int) -> None:
        """
        Give ``ch`` a new urgency and weight (ours or the peer's hint),
        keeping count of the channels more urgent than the default.
        """
        urgent = urgency < DEFAULT_URGENCY
        if urgent is not (ch.urgency < DEFAULT_URGENCY):
            self.urgentChannels += 1 if urgent else -1
        self._scheduler.setPriority(ch, urgency, weight)
        if weight != DEFAULT_WEIGHT:
            self.weighted = True

    def _late(self, what: str) -> None:
        """
        A frame for a channel that is closed: free if it may be racing the
        close of a channel (see ``_lateFrames``), else one that does no work.
        """
        if self._lateFrames:
            self._lateFrames -= 1
        else:
            self._useless(what)

    def _onPreface(self, preface: Preface) -> None:
        peer = preface.settings
        self.peerSettings = peer
        self.prefaceReceived = True
        # Until now we assumed the initial values; the peer's settings can
        # only be larger (spec: "Settings"), and no CREDIT can precede the
        # preface, so every limit simply moves up to the announced value.
        self._sessionSend.raiseTo(peer.initialSessionCredit)
        self._scheduler.quantum = min(peer.maxFrameSize, self.settings.chunkSize)
        if not peer.priorityHints:
            self._hintsDue.clear()  # it would ignore them
        self._localChannelLimit = max(self._localChannelLimit, peer.initialMaxChannels)
        for ch in self._channels.values():
            if ch.send.raiseTo(peer.initialChannelCredit):
                if ch.queue:
                    self._schedule(ch)
        self._unblockSession()
        self._events.append(PrefaceReceived(peer))

    def _acceptOpen(self, cid: int) -> _Channel | None:
        """
        Validate and create a channel the peer opens; None if we ignore it
        because of our GOAWAY.
        """
        # (`isLocal` and `_ordinal`, inline: this runs for every channel.)
        if (cid & 1 == 1) == self.client:
            raise ProtocolError(
                ErrorCode.PROTOCOL_ERROR, f"peer opened channel {cid} of our parity"
            )
        if cid <= self._highestPeer:
            raise ProtocolError(
                ErrorCode.PROTOCOL_ERROR,
                f"peer reopened channel {cid} (ids must increase)",
            )
        ordinal = (cid - 1) >> 1
        peerChannels = self._peerChannels
        if ordinal >= peerChannels.limit:
            raise ProtocolError(
                ErrorCode.CHANNEL_LIMIT_ERROR,
                f"peer opened channel {cid} beyond its channel credit",
            )
        self._highestPeer = cid
        if self.goAwaySent is not None:
            # Not processed; the peer learns that from our GOAWAY.
            return None
        ch = _Channel(
            cid,
            False,
            self.peerSettings.initialChannelCredit,
            self._channelCredit,
        )
        self._channels[cid] = ch
        self.channelsAccepted += 1
        # An open uses credit up too (ids skipped below it with it): a peer
        # that has churned through channels without running low, then opens
        # many at once, gets its credit from here, not from a close.
        if peerChannels.opened(ordinal) is not None:
            self._channelsDue = True
        return ch

    def _known(self, cid: int) -> _Channel | None:
        """
        The open channel ``cid``, or None for one that is closed; a channel
        that was never opened is a protocol error.
        """
        ch = self._channels.get(cid)
        if ch is not None:
            if ch.state is _IDLE:
                raise ProtocolError(
                    ErrorCode.PROTOCOL_ERROR,
                    f"frame for channel {cid} before its opening",
                )
            return ch
        if self.isLocal(cid):
            if cid > self._highestLocalSent:
                raise ProtocolError(
                    ErrorCode.PROTOCOL_ERROR, f"frame for unopened channel {cid}"
                )
        elif cid > self._highestPeer:
            raise ProtocolError(
                ErrorCode.PROTOCOL_ERROR, f"frame for unopened channel {cid}"
            )
        return None

    def _onData(self, f: DataFrame) -> None:
        """
        A DATA frame: first the common case, a chunk on an open channel, in
        few steps; then any other (opening, FIN, empty, overrunning, or for
        a channel that is closed or closing).  One method, not two: every
        channel's opening and FIN come this way.
        """
        data = f.data
        n = len(data)
        cid = f.channel
        ch = self._channels.get(cid)
        if (
            n
            and ch is not None
            and not (f.open or f.fin or ch.readStopped)
            and (ch.state is _OPEN or ch.state is _HALF_CLOSED_LOCAL)
        ):
            session = self._sessionRecv
            recv = ch.recv
            if (
                session.received + n <= session.limit
                and recv.received + n <= recv.limit
            ):
                session.received += n
                recv.received += n
                ch.sessionHeld += n
                self._events.append(DataReceived(cid, data, f.end))
                return
        if not n and not (f.open or f.end or f.fin):
            self._useless("empty DATA")
            if self.terminated:
                return
        events = self._events
        if f.open:
            ch = self._acceptOpen(cid)
            if ch is not None:
                events.append(ChannelOpened(cid, b""))
        elif ch is None or ch.state is _IDLE:
            ch = self._known(cid)
        session = self._sessionRecv
        if session.received + n > session.limit:
            raise ProtocolError(
                ErrorCode.FLOW_CONTROL_ERROR, "peer overran the session credit"
            )
        session.received += n
        if ch is None:
            # A closed (or ignored) channel: drop the bytes, keep the
            # session's credit flowing.
            self._consumeSession(n)
            return
        if ch.state is _HALF_CLOSED_REMOTE:
            self._consumeSession(n)
            self._channelError(ch, ErrorCode.PROTOCOL_ERROR, "DATA after FIN")
            return
        if ch.readStopped and ch.state is _HALF_CLOSED_LOCAL and (n or f.end):
            # Only once our FIN is out: before that the application still
            # waits for it (LocalHalfClosed) to finish its close, so the
            # channel must live on; what arrives meanwhile is delivered as
            # usual and discarded by the closed reader, and earns no credit.
            self._consumeSession(n)
            if f.fin:
                # The peer has finished too: the channel simply closes (a
                # RESET would only meet a channel the peer has closed).
                _advance(ch, _RECEIVE_FIN)
                self._removeChannel(ch)
                events.append(RemoteHalfClosed(cid))
                events.append(ChannelClosed(cid))
                return
            self._removeChannel(ch)
            self._queuePeerInduced(
                ResetFrame(cid, ErrorCode.NO_ERROR, "closed").encode()
            )
            return
        recv = ch.recv
        if recv.received + n > recv.limit:
            self._consumeSession(n)
            self._channelError(
                ch, ErrorCode.FLOW_CONTROL_ERROR, "peer overran the channel credit"
            )
            return
        recv.received += n
        ch.sessionHeld += n
        if n or f.end:
            events.append(DataReceived(cid, data, f.end))
        if f.fin:
            events.append(RemoteHalfClosed(cid))
            # (`_advance`, inline: every channel's end comes this way.)
            state = ch.state
            if state is _OPEN:
                ch.state = _HALF_CLOSED_REMOTE
            elif state is _HALF_CLOSED_LOCAL:
                ch.state = _CLOSED
                self._removeChannel(ch)
                events.append(ChannelClosed(cid))
            else:
                _advance(ch, _RECEIVE_FIN)  # no such row: raises

    def _onCredit(self, f: CreditFrame) -> None:
        if f.channel == 0:
            if self._sessionSend.raiseTo(f.limit):
                self._unblockSession()
            else:
                if f.limit < self._sessionSend.offset:
                    self._warnIncrement(
                        "the session", f.limit, self._sessionSend.offset
                    )
                self._useless("CREDIT raising no limit")
            return
        ch = self._known(f.channel)
        if ch is None:
            self._late("CREDIT for a closed channel")
            return
        if ch.state is _HALF_CLOSED_LOCAL:
            return  # a legitimate race with our FIN
        if not ch.raiseTo(f.limit):  # (ch.send: ch itself)
            if f.limit < ch.offset:
                self._warnIncrement(f"channel {ch.id}", f.limit, ch.offset)
            self._useless("CREDIT raising no limit")
            return
        if ch.queue:
            self._schedule(ch)

    def _warnIncrement(self, what: str, limit: int, sent: int) -> None:
        """
        A CREDIT below what we have already sent: no correct peer sends one
        over an ordered stream (each limit it announces is at least the
        last), but a peer that takes CREDIT for an increment, as HTTP/2's
        WINDOW_UPDATE is, does, and stalls once the initial credit is used.
        """
        if not self._warnedIncrement:
            self._warnedIncrement = True
            self._events.append(
                PeerWarning(
                    f"CREDIT for {what} of {limit} bytes, below the {sent} already"
                    " sent: it is ignored (CREDIT carries the new absolute limit,"
                    " not an increment), and what waits for credit stays unsent"
                )
            )

    def _onGoAway(self, f: GoAwayFrame) -> None:
        if self.goAwayReceived is not None:
            if f.lastChannel > self.goAwayReceived:
                raise ProtocolError(
                    ErrorCode.PROTOCOL_ERROR, "GOAWAY raised lastChannel"
                )
            if f.lastChannel == self.goAwayReceived and f.code == ErrorCode.NO_ERROR:
                self._useless("repeated GOAWAY")
        self.goAwayReceived = f.lastChannel
        _count(self._goAwaysReceived, f.code)
        self._events.append(GoAwayReceived(f.lastChannel, f.code, f.reason))
        reason = "not processed: the peer is going away"
        for ch in list(self._channels.values()):
            if ch.local and (ch.id > f.lastChannel or ch.state is _IDLE):
                self._removeChannel(ch)
                self._events.append(
                    ChannelReset(ch.id, ErrorCode.REFUSED, reason, True)
                )
        if f.code != ErrorCode.NO_ERROR:
            self.terminated = True
            self._events.append(
                SessionTerminated(
                    f.code,
                    f"the peer went away (GOAWAY {describeCode(f.code)}: {f.reason})",
                    True,
                )
            )

    def _channelError(self, ch: _Channel, code: ErrorCode, reason: str) -> None:
        self._queuePeerInduced(ResetFrame(ch.id, code, _cut(reason)).encode())
        _count(self._resetsSent, code)
        self._removeChannel(ch)
        self._events.append(ChannelReset(ch.id, code, reason, remote=False))

    # ------------------------------------------------------------ bookkeeping

    def _checkUsable(self) -> None:
        if self.terminated:
            raise SessionClosedError("the session is terminated")

    def _sendable(self, channel: int) -> _Channel:
        ch = self._channels.get(channel)
        if ch is None:
            raise ChannelClosedError(channel, f"channel {channel} is not open")
        if ch.finQueued:
            raise ChannelClosedError(
                channel, f"channel {channel} is closed for writing"
            )
        return ch

    def _schedule(self, ch: _Channel) -> None:
        if not ch.scheduled and ch.state is not _IDLE:
            self._scheduler.add(ch)

    def _unblockSession(self) -> None:
        scheduler = self._scheduler
        if scheduler.parked and self.sessionSendCredit > 0:
            scheduler.unpark()

    def _consumeSession(self, n: int) -> None:
        if n:
            limit = self._sessionRecv.consume(n)
            if limit is not None:
                self._creditDue[0] = limit

    def _removeChannel(self, ch: _Channel) -> None:
        # Runs for every channel: what is already clear is not cleared again.
        cid = ch.id
        del self._channels[cid]
        if self._creditDue:
            self._creditDue.pop(cid, None)
        if self._hintsDue:
            self._hintsDue.pop(cid, None)
        if ch.parked:
            self._scheduler.remove(ch)
        if ch.urgency < DEFAULT_URGENCY:
            self.urgentChannels -= 1
        if ch.queue is not None:
            ch.queue = None
            ch.queued = 0
        ch.dropCount = 0
        ch.finQueued = True
        if ch.midMessage:
            # Its message will not finish: what it held back is free.
            self._midMessage.discard(ch)
            self._unblockSession()
        state = ch.state
        if state is _IDLE:
            self._pendingOpens.remove(ch)
        ch.state = _CLOSED  # (on a RESET, or both FINs; `_advance` agrees)
        if (state is _HALF_CLOSED_LOCAL or state is _CLOSED or ch.offset) and (
            self._lateFrames < self._maxUseless
        ):
            # Only a channel we sent on can meet a frame of the peer's
            # racing its close (a rapid reset earns nothing here).
            self._lateFrames += 1
        held = ch.sessionHeld
        if held:
            # Whatever the application did not consume, or holds in
            # reassembly, returns to the session.  (None of it, when
            # nothing is held: sessionHeld counts recv.held too.)
            recv = ch.recv
            self._reassemblyHeld -= held - (recv.received - recv.consumed)
            self._consumeSession(held)
            ch.sessionHeld = 0
            recv.consumed = recv.received
        if not ch.local:
            # Keep the peer able to have ``maxChannels`` open at once: raise
            # its limit as its channels end, in batches (`ChannelCountCredit`),
            # and once per `dataToSend` at most.  None after our GOAWAY.
            peerChannels = self._peerChannels
            if self.goAwaySent is not None:
                peerChannels.open -= 1
            elif peerChannels.closed() is not None:
                self._channelsDue = True

    # ------------------------------------------------------------ output

    def _sendableHints(self) -> bool:
        """
        Whether a PRIORITY hint may go out now: after the peer's preface,
        for a channel it knows.
        """
        return self.prefaceReceived and any(
            self._channels[cid].state is not _IDLE for cid in self._hintsDue
        )

    def _sendHints(self, out: list[bytes]) -> int:
        """
        Append the PRIORITY hints due (those of channels announced); return
        their size.
        """
        size = 0
        channels = self._channels
        for cid, priority in list(self._hintsDue.items()):
            if channels[cid].state is not _IDLE:
                del self._hintsDue[cid]
                frame = PriorityFrame(cid, priority.urgency, priority.weight).encode()
                out.append(frame)
                size += len(frame)
        return size

    def _sendableOpens(self) -> bool:
        return bool(self._pendingOpens) and (
            _ordinal(self._pendingOpens[0].id) < self._localChannelLimit
        )

    def dataToSend(self, maxBytes: int = 1 << 20) -> bytes:
        """
        Return the next bytes to write: control frames and credit first,
        then channel openings in id order, then one chunk at a time from
        each ready channel in turn (the most urgent first, round robin by
        bytes and weight within an urgency), within the peer's credit.
        Stops adding DATA once about ``maxBytes`` are gathered.
        """
        return b"".join(self.piecesToSend(maxBytes))

    def piecesToSend(self, maxBytes: int = 1 << 20) -> list[bytes]:
        """
        `dataToSend` as a list of pieces to write in order (for
        ``writeSequence``): whole chunks are the application's own buffers,
        not copied here, so a transport that gathers its buffer anyway
        copies each byte once.
        """
        if self._reassemblyHeld:
            # Whenever partial messages hold session credit: any arrival or
            # consumption (not only a move into reassembly) can leave the
            # session stuck.
            self._checkReassemblyDeadlock()
        session = self._sessionRecv
        if session.received > session.consumed and session.due():
            # Bytes that arrived since the last consumption, for channels
            # whose readers are paused, can make a grant due: what other
            # channels consumed must still be granted again.
            self._creditDue[0] = session.grant()
        out = self._control
        self._control = []
        self._controlBytes = 0
        if self.terminated:
            # Only the GOAWAY (and what preceded it) goes out now.
            self.bytesSent += sum(map(len, out))
            _countControl(self._framesSent, out)
            return out
        if self._channelsDue:
            self._channelsDue = False
            out.append(ChannelCreditFrame(self._peerChannels.limit).encode())
        if self._creditDue:
            for cid, limit in self._creditDue.items():
                out.append(CreditFrame(cid, limit).encode())
            self._creditDue = {}
        if out:
            _countControl(self._framesSent, out)
        size = 0
        for piece in out:  # (not sum(map(len, out)): compiled, a native loop)
            size += len(piece)
        # DATA frames sent are counted from the pieces added below, once
        # per call rather than once per frame (see `counters`): every
        # piece but the OPEN and DROP frames is a DATA frame's header or
        # payload.
        framesSent = self._framesSent
        before = len(out) - framesSent[_OPEN_TYPE] - framesSent[_DROP_TYPE]
        maxChunk = min(self.peerSettings.maxFrameSize, self._chunkSize)
        if self._pendingOpens:
            size += self._sendOpens(out, maxChunk, maxBytes - size)
        if self._hintsDue and self.prefaceReceived:
            size += self._sendHints(out)  # (after the openings they name)
        scheduler = self._scheduler
        line = scheduler.line
        channels = self._channels
        blocked: list[_Channel] = []
        # (``while line``: a length asked in C, not a call, nor a last `next`
        # call that finds no channel.)
        while line and size < maxBytes:
            ch = scheduler.next()
            if ch is None:
                break
            if ch.id not in channels:
                continue
            # Send from this channel until it has nothing sendable, the
            # budget is spent, or another channel is waiting (then the
            # scheduler says whether its turn goes on: only when there is
            # competition).
            while True:
                if ch.dropCount and not ch.midMessage and self._dropSendable(ch):
                    # Between messages only, where the discarded ones were,
                    # and with the data that follows them if any: a channel
                    # out of credit adds up its discards meanwhile, so that
                    # a DROP tells the peer something new.
                    frame = DropFrame(ch.id, ch.dropCount).encode()
                    ch.dropCount = 0
                    out.append(frame)
                    self._framesSent[_DROP_TYPE] += 1
                    size += len(frame)
                if (
                    self._midMessage
                    and not ch.midMessage
                    and not self._admits(ch, maxChunk)
                ):
                    # A new message that would crowd out those in progress:
                    # it starts once the peer grants more session credit.
                    scheduler.park(ch)
                    break
                sent = self._sendChunk(ch, out, maxChunk)  # (native, compiled)
                size += sent
                if not (
                    ch.queue
                    or ch.dropCount
                    or (
                        ch.finQueued
                        and (ch.state is _OPEN or ch.state is _HALF_CLOSED_REMOTE)
                    )
                ):
                    break
                head = ch.queue[0][0] if ch.queue else b""
                if head and ch.offset >= ch.limit:  # (ch.send: ch itself)
                    self._channelCreditStalls += 1
                    break  # blocked on channel credit: CREDIT reschedules
                if head and self._sessionSend.offset >= self._sessionSend.limit:
                    self._sessionCreditStalls += 1
                    if sent:
                        blocked.append(ch)  # it had its turn: to the back
                    else:
                        scheduler.park(ch)
                    break
                if line or size >= maxBytes:
                    scheduler.yieldTurn(ch)
                    break
        for ch in blocked:
            scheduler.park(ch)
        self.bytesSent += size
        self._dataPieces += (
            len(out) - framesSent[_OPEN_TYPE] - framesSent[_DROP_TYPE] - before
        )
        return out

    def _admits(self, ch: _Channel, maxChunk: int) -> bool:
        """
        Whether ``ch`` may start its next message now, while others are in
        progress.  A message that cannot go out whole now (so would stay
        partial) starts only if the session credit left covers it besides
        the rest of every message in progress (of those that can progress:
        a channel out of credit, its reader paused, holds nothing back).

        So a receiver that reassembles messages gets whole ones in the order
        they started: many large messages sent at once, round robin, would
        otherwise all be partial when the session credit runs out, none
        could complete, and the receiver would have to reset some.  Byte
        streams (no end of message queued) are not held back.
        """
        q = ch.queue
        if not q or not q[0][1]:
            return True  # nothing, or a message whose size is not known yet
        n = len(q[0][0])  # type: ignore[arg-type]
        free = self._sessionSend.limit - self._sessionSend.offset
        if n <= maxChunk and n <= free and n <= ch.limit - ch.offset:
            return True  # goes out whole, now
        reserved = 0
        for other in self._midMessage:
            oq = other.queue
            if oq and oq[0][1] and other.offset < other.limit:
                reserved += len(oq[0][0])  # type: ignore[arg-type]
        return reserved == 0 or n <= free - reserved

    def _dropSendable(self, ch: _Channel) -> bool:
        """
        Whether a pending DROP on ``ch`` goes out now: with the data that
        follows it, if that is within credit (or the end of a message), or
        alone when nothing follows it yet.
        """
        q = ch.queue
        if q:
            return not q[0][0] or (
                ch.offset < ch.limit
                and self._sessionSend.offset < self._sessionSend.limit
            )
        return True

    def _sendOpens(self, out: list[bytes], maxChunk: int, budget: int) -> int:
        size = 0
        pending = self._pendingOpens
        limit = self._localChannelLimit
        # (`_ordinal`, inline: every channel we open passes here.)
        scheduler = self._scheduler
        while pending and (pending[0].id - 1) >> 1 < limit:
            ch = pending.popleft()
            ch.state = _OPEN  # (`_advance` from IDLE, inline: every channel)
            self._highestLocalSent = ch.id
            if ch.openFrame is not None:
                out.append(ch.openFrame)
                self._framesSent[_OPEN_TYPE] += 1
                size += len(ch.openFrame)
                ch.openFrame = None
            else:
                # Default service: the OPEN flag rides on the first chunk,
                # if the budget allows and no more urgent channel waits;
                # else on an empty frame.
                size += self._sendChunk(
                    ch,
                    out,
                    0
                    if size >= budget or (scheduler.line and scheduler.outranks(ch))
                    else maxChunk,
                    DATA_OPEN,
                )
            if (
                ch.queue
                or ch.dropCount
                or (
                    ch.finQueued
                    and (ch.state is _OPEN or ch.state is _HALF_CLOSED_REMOTE)
                )
            ):
                self._schedule(ch)
        return size

    def _sendChunk(
        self, ch: _Channel, out: list[bytes], maxFrame: int, flags: int = 0
    ) -> int:
        """
        Append at most one DATA frame for ``ch`` to ``out``; return its size.
        With ``flags`` (the OPEN flag) a frame is sent even if empty.
        """
        q = ch.queue
        chunk: bytes = b""
        n = 0  # len(chunk), all along
        end = False
        if q:
            item = q[0]
            data: bytes | memoryview = item[0]  # type: ignore[assignment]
            n = len(data)
            if n:
                # (`SendCredit.available`, twice, inline: once per chunk.)
                send: SendCredit = ch  # (`_Channel`: its own send credit)
                sessionSend = self._sessionSend
                allowed = send.limit - send.offset
                session = sessionSend.limit - sessionSend.offset
                if session < allowed:
                    allowed = session
                if maxFrame < allowed:
                    allowed = maxFrame
                if allowed >= n:
                    # The rest of a split chunk is a view: send it as bytes.
                    chunk = data if type(data) is bytes else bytes(data)
                    q.popleft()
                    end = item[1]  # type: ignore[assignment]
                elif allowed > 0:
                    view = data if type(data) is memoryview else memoryview(data)
                    # bytes: transports take only bytes (writeSequence).
                    chunk = bytes(view[:allowed])
                    item[0] = view[allowed:]
                    n = allowed
                elif not flags:
                    return 0
                else:
                    # The opening must go out now (ids are sent in order),
                    # with no payload.
                    n = 0
                if n:
                    ch.queued -= n
                    send.offset += n
                    sessionSend.offset += n
            else:
                q.popleft()
                end = True
        if end:
            flags |= DATA_END
            if ch.midMessage:
                ch.midMessage = False
                self._midMessage.discard(ch)
                self._unblockSession()  # a message waiting may start
        elif chunk and not ch.midMessage:
            ch.midMessage = True
            self._midMessage.add(ch)
        if (
            ch.finQueued
            and not q
            and (ch.state is _OPEN or ch.state is _HALF_CLOSED_REMOTE)
            and not ch.dropCount  # a DROP goes before the FIN
        ):
            flags |= DATA_FIN
        if not n and not flags:
            return 0
        cid = ch.id
        if n < 0x80 and cid < 0x200000:
            # `encodeDataHeader`, inline for small frames: a call less per
            # frame, and every channel's opening and FIN are small frames.
            if cid < 0x80:
                header = bytes((flags, cid, n))
            elif cid < 0x4000:
                header = bytes((flags, (cid & 0x7F) | 0x80, cid >> 7, n))
            else:
                low = (cid & 0x7F) | 0x80
                header = bytes((flags, low, ((cid >> 7) & 0x7F) | 0x80, cid >> 14, n))
        elif n < 0x4000 and cid < 0x80:
            # Medium frames (128 B to 16 KiB) on the first channels: as
            # inline, and as the decoder's fast path takes them.
            header = bytes((flags, cid, (n & 0x7F) | 0x80, n >> 7))
        else:
            header = encodeDataHeader(cid, n, flags)
        out.append(header)
        if n:
            out.append(chunk)
        else:
            # (DATA frames are counted by their pieces, per `piecesToSend`
            # call: one piece here, two for a frame with payload.)
            self._emptyDataFrames += 1
        if flags & DATA_FIN:
            # Our FIN is out (every channel's end comes this way).
            events = self._events
            events.append(LocalHalfClosed(cid))
            # (`_advance`, inline: every channel's end comes this way.)
            state = ch.state
            if state is _OPEN:
                ch.state = _HALF_CLOSED_LOCAL
            elif state is _HALF_CLOSED_REMOTE:
                ch.state = _CLOSED
                self._removeChannel(ch)
                events.append(ChannelClosed(cid))
            else:
                _advance(ch, _SEND_FIN)  # no such row: raises
        return len(header) + n


def _count(counts: dict[int, int], code: int) -> None:
    counts[code] = counts.get(code, 0) + 1


def _countControl(counts: list[int], frames: list[bytes]) -> None:
    # A control frame's type is the high nibble of its first byte (the
    # preface's magic, 0x89, counts as type 8: see `FRAME_TYPES`).
    for frame in frames:
        counts[frame[0] >> 4] += 1


#: The states' names (an Enum's ``value`` is a slow property).
_STATE_NAMES = {state: state.value for state in ChannelState}

_OPEN_TYPE: Final = FrameType.OPEN.value
_DROP_TYPE: Final = FrameType.DROP.value

#: Frame classes by the names `counters` gives them.
_FRAME_NAMES: dict[type, str] = {
    DataFrame: "DATA",
    OpenFrame: "OPEN",
    CreditFrame: "CREDIT",
    ResetFrame: "RESET",
    PingFrame: "PING",
    GoAwayFrame: "GOAWAY",
    ChannelCreditFrame: "CHANNELS",
    DropFrame: "DROP",
    Preface: "PREFACE",
}


def _onUnknown(engine: MemuxEngine, frame: object) -> None:
    # Unknown frame types are ignored (spec: "Extensibility").
    engine._useless("unknown frame type")


#: What handles each type of frame (DATA, most frames, `receiveData` calls
#: first, inline): a dispatch table, of the class's functions so that an
#: engine holds no cycle of bound methods.
_FRAME_HANDLERS: dict[type, Callable[[MemuxEngine, Any], None]] = {
    DataFrame: MemuxEngine._onData,
    CreditFrame: MemuxEngine._onCredit,
    OpenFrame: MemuxEngine._onOpen,
    ResetFrame: MemuxEngine._onReset,
    PingFrame: MemuxEngine._onPing,
    GoAwayFrame: MemuxEngine._onGoAway,
    ChannelCreditFrame: MemuxEngine._onChannelCredit,
    Preface: MemuxEngine._onPreface,
    DropFrame: MemuxEngine._onDrop,
    PriorityFrame: MemuxEngine._onPriority,
}
