# -*- test-case-name: memux.test.test_session -*-
"""
The memux session core, sans I/O: everything a session does between the
engine (protocol rules, credit, scheduling) and a front end (Twisted's
`memux.protocol`, an asyncio one): each channel's inbound side (what is
held while its reader is paused, message reassembly and its limit, the
order of data, drop notices, the peer's FIN and the end), its outbound
side (writes, closes, resets; when to pause and resume its producer; load
shedding on lossy channels), and the session's timers as deadlines (idle,
keepalive, handshake, write timeout, load budget).

It knows nothing of Twisted, sockets or a clock of its own.  The front end
is its `SessionHost`: it writes bytes, closes or aborts the connection,
calls back soon, reports, and tells the time; it feeds the core the bytes
received (`SessionCore.receiveData`), tells it when the connection pauses
and resumes its output, and runs `SessionCore.handleTimer` when
`SessionCore.nextDeadline` is due.  A front end's channel object is a
`ChannelCore` subclass: it adds the application-facing interfaces and maps
`Ending` values to its own errors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, Protocol, TypeVar

from memux._channel import CLEAN, SMALL_WRITE, ChannelCore, Delivery, Ending, Notice
from memux._credit import CreditTuning
from memux._engine import (
    ChannelClosed,
    ChannelOpened,
    ChannelReset,
    DataReceived,
    Event,
    GoAwayReceived,
    LocalHalfClosed,
    MemuxEngine,
    MessagesDropped,
    PeerWarning,
    PingAcknowledged,
    PrefaceReceived,
    RemoteHalfClosed,
    SessionTerminated,
)
from memux.codes import ErrorCode, describeCode, describeService
from memux.introspect import (
    ChannelSnapshot,
    RttHistogram,
    SessionCounters,
    SessionSnapshot,
)
from memux.settings import SessionSettings

__all__ = [
    "CLEAN",
    "ChannelCore",
    "Delivery",
    "Ending",
    "Notice",
    "SessionCore",
    "SessionHost",
    "SMALL_WRITE",
]

#: A channel's producer is paused once this many bytes wait in its send
#: queue (credit exhausted, or others' turn), and resumed below half of it:
#: the role Twisted's TCP bufferSize plays.  Above two 64 KiB writes, so a
#: bulk writer is not paused after every write.  (`BULK_HIGH_WATER` while
#: the session is in bulk mode, see `BULK_AFTER_FLUSHES`.)
WRITE_HIGH_WATER = 128 * 1024

#: How much the core hands the connection per write; the connection
#: pauses us when its own buffer fills, which keeps the rest in the engine
#: where the scheduler can still interleave channels fairly.  More than one
#: 64 KiB chunk plus header, so each pause/resume cycle moves two chunks.
FLUSH_BYTES = 128 * 1024

#: A session whose connection has paused it this many times in a row with
#: no small write (under `SMALL_WRITE` queued) on any channel meanwhile is
#: moving bulk data only: it switches to bulk mode, where each flush and
#: each channel's queue may be four times as large (`BULK_FLUSH_BYTES`,
#: `BULK_HIGH_WATER`, and in the front end the kernel's unsent bytes): a
#: quarter of the pause/resume cycles per byte, which cut the fan-out
#: client's CPU per 64 KiB from about 60 to 42 us on a 2-core machine.  The
#: next small write switches it back before the next flush: a small message
#: then waits behind at most the normal amounts, not the bulk ones.
BULK_AFTER_FLUSHES = 64
BULK_FLUSH_BYTES = 4 * FLUSH_BYTES
BULK_HIGH_WATER = 4 * WRITE_HIGH_WATER

#: While a channel more urgent than the default is open (set so by either
#: side: `MemuxEngine.urgentChannels`), the session is in latency mode: it
#: never enters bulk mode, and hands the connection at most this much per
#: write, and the front end lets the kernel hold less unsent
#: (`SessionHost.latencyMode`).  An urgent message then waits behind tens
#: of kilobytes of others' data, not megabytes: with ten bulk channels
#: beside a ping-pong at urgency 0, its p99 fell about fivefold, for some
#: tenth of the bulk throughput (doc/priorities.rst).
LATENCY_FLUSH_BYTES = 32 * 1024

#: How many times one flush lets paused producers write again and writes
#: what they wrote, when the connection keeps taking it; the rest waits for
#: the next turn, so one busy session cannot hold its event loop.
FLUSH_ROUNDS = 4

#: Seconds between refills of the peer's allowance of frames that do no
#: work (`SessionSettings.maxUselessFrames`): with the default allowance a
#: peer may send 100 such frames a second on average, in bursts of 1000,
#: far above any keepalive, far below a flood.
LOAD_BUDGET_PERIOD = 10.0

#: The payload of keepalive PINGs (their answers match no `ping` call).
KEEPALIVE_PAYLOAD = b"keepaliv"

#: The payloads of the PINGs that sample the round trip for the credit
#: auto-tuning start with this (then a count), never reported as a user's.
RTT_PING = b"memux-rtt:"


class _FlushMarker:
    """
    A `SessionCore.flushCall` that is no scheduled call: a flush is under
    way or sure to follow, so no other is to be asked for (what is written
    meanwhile goes out in that one), and writes need test only ``flushCall
    is None``.
    """

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def active(self) -> bool:
        return False

    def cancel(self) -> None:
        pass

    def __repr__(self) -> str:
        return self._name


#: The `SessionCore.flushCall` while a flush is under way.
FLUSHING = _FlushMarker("FLUSHING")
#: The `SessionCore.flushCall` while a read's events are handled: the flush
#: that `SessionCore.receiveData` makes next writes what they called for.
#: (Else every reply would ask the front end for a flush, a timed call it
#: then cancels: a handful of Python calls per round trip.)
AFTER_INPUT = _FlushMarker("AFTER_INPUT")

#: The empty set every session's sets of channels (`SessionCore.pausedProducers`
#: and others) start as, shared: never added to (`_added` makes a set of
#: its own first).
_NONE: Final[set[Any]] = set()


def _added(channels: set[ChannelCore], channel: ChannelCore) -> set[ChannelCore]:
    """
    ``channels`` with ``channel`` added: ``channels`` itself, or a new set
    if it is the shared `_NONE`.
    """
    if channels is _NONE:
        return {channel}
    channels.add(channel)
    return channels


#: Frames the engine decodes and acts on per step of a session's input.  A
#: read holding more (a flood of tiny frames, or deep pipelining) is
#: finished in later steps, which the front end spreads over turns of its
#: event loop (reading paused meanwhile), so that one peer's flood does not
#: stall other sessions.  Small enough that what a step writes (replies,
#: acks) reaches the peer early, which then works on it in parallel with
#: us: 32 frames gave churn 7.4x TCP against 5.7x for 64, and small
#: messages 0.94 against 0.95.
INPUT_STEP_FRAMES = 32

#: Channel resets and refusals logged per session; past it they are only
#: counted (`SessionCore.mayLogEnding`), and the count is logged once as the
#: session ends: a peer that churns through refused channels cannot fill
#: the log.
LOGGED_CHANNEL_ENDINGS = 20

_Chosen = TypeVar("_Chosen")


def chooseService(
    event: ChannelOpened,
    services: Mapping[bytes, _Chosen] | None,
    chooser: Callable[[ChannelOpened], _Chosen | None],
    refusal: type[Exception],
    failed: Callable[[ChannelOpened], None],
) -> _Chosen | str:
    """
    What serves a channel the peer opened, by the policy both front ends
    share, or why it is refused (the reason the peer is sent).

    ``services`` maps service names to what serves them (a map forwards to
    no destination); if it is None, ``chooser(event)`` is asked, and may
    return None or raise ``refusal`` (the front end's `ChannelRefused`,
    whose ``reason`` is sent) to refuse.  Any other exception is a fault of
    the chooser: ``failed(event)`` is called inside the ``except`` (to log
    it) and the peer is told only "internal error".
    """
    chosen: _Chosen | None
    if services is not None:
        if event.destination is not None:
            return "this session forwards to no destination"
        chosen = services.get(event.service)
    else:
        try:
            chosen = chooser(event)
        except refusal as refused:
            return getattr(refused, "reason", "") or "refused"
        except Exception:
            failed(event)
            return "internal error"
    if chosen is None:
        return (
            f"no service {describeService(event.service)}"
            if event.service
            else "no default service"
        )
    return chosen


class SessionHost(Protocol):
    """
    What the core needs of its front end.
    """

    def now(self) -> float:
        """
        The time, in seconds (any epoch, monotonic enough for timeouts).
        """

    def write(self, pieces: list[bytes]) -> None:
        """
        Write ``pieces`` to the connection, in order.  The connection may
        pause the core's output (`SessionCore.pauseOutput`) from inside.
        """

    def closeConnection(self) -> None:
        """
        Close the connection once what was written has gone.
        """

    def abortConnection(self) -> None:
        """
        Abort the connection at once, discarding what is unsent.
        """

    def connectionClosing(self) -> bool:
        """
        Whether the connection is being closed by someone else (its own
        ``loseConnection``, or a wrapper beneath such as TLS): then the
        session closes too (see `SessionCore.flush`).
        """

    def flushSoon(self) -> Delivery:
        """
        Call `SessionCore.flush` soon, not from inside this call; return a
        handle (as `callSoon`'s), which the core cancels when it flushes
        before.
        """

    def wakeAt(self, deadline: float | None) -> None:
        """
        Run `SessionCore.handleTimer` no later than ``deadline`` (a new
        deadline was armed; it may be earlier than the one waited for).
        None: no deadline is left, nothing need run.  (A deadline put off
        needs no call: the front end runs `handleTimer` when it planned
        to, which does what is due and says when next.)
        """

    def pingAnswered(self, payload: bytes, rtt: float) -> None:
        """
        The PING sent with ``payload`` was answered after ``rtt`` seconds.
        """

    def callSoon(self, f: Callable[..., object], *args: object) -> Delivery:
        """
        Call ``f(*args)`` soon, not from inside this call; return a handle
        with ``active()`` and ``cancel()``.
        """

    def notice(self, notice: Notice) -> None:
        """
        Report something worth a log line.
        """

    def channelRequested(self, event: ChannelOpened) -> ChannelCore | str:
        """
        The peer opened a channel: return its (connected) channel object,
        or the reason to refuse it.
        """

    def bulkMode(self, on: bool) -> None:
        """
        The session switched bulk mode on or off (see `BULK_AFTER_FLUSHES`):
        the front end may tune its connection to match.
        """

    def latencyMode(self, on: bool) -> None:
        """
        The session switched latency mode on or off (see
        `LATENCY_FLUSH_BYTES`): the front end keeps little unsent data in
        the kernel while it is on.
        """


class SessionCore:
    """
    One memux session from one side, sans I/O: the engine, the channels,
    the flush policy and the timers.  See the module docstring.
    """

    # Slots, not an instance dict: a session's engine and core each have
    # more attributes than CPython shares dict keys for (30), so each
    # dict took 1.5 KiB per session, and slot reads are the faster.
    __slots__ = (
        "bulk",
        "channels",
        "client",
        "connected",
        "draining",
        "endingsUnlogged",
        "engine",
        "flushCall",
        "goAwayReceived",
        "highWater",
        "host",
        "latency",
        "outputPaused",
        "owing",
        "pausedProducers",
        "rtt",
        "settings",
        "smallWrites",
        "startedAt",
        "terminatedWith",
        "timedOut",
        "_abortAt",
        "_blockedSince",
        "_closing",
        "_endedByPeer",
        "_endingsLogged",
        "_flushBytes",
        "_flushLimit",
        "_fullFlushes",
        "_handshakeBy",
        "_heard",
        "_idleSince",
        "_keepAliveAt",
        "_keepAlivePinged",
        "_loadBudgetRefill",
        "_lossy",
        "_pings",
        "_pullProducers",
        "_pushedBack",
        "_rttPings",
        "_smallSeen",
    )

    def __init__(
        self,
        host: SessionHost,
        client: bool,
        settings: SessionSettings | None = None,
    ) -> None:
        self.host = host
        self.client = client
        self.settings = settings or SessionSettings()
        self.engine = MemuxEngine(client, self.settings)
        self.channels: dict[int, ChannelCore] = {}
        #: Channels that delivered chunks in this batch of events and owe
        #: the engine their consumption (`ChannelCore._owed`): settled in
        #: one `MemuxEngine.consumed` call each at the end of the batch
        #: (`handleEvents`), not one per message.
        self.owing: list[ChannelCore] = []
        # Channels whose push producer we paused, and channels with a pull
        # producer: the only ones `_serviceProducers` needs to look at.
        # All three share `_NONE` until one is added to (`_added`): most
        # sessions never have any, and an empty set is 216 bytes.
        self.pausedProducers: set[ChannelCore] = _NONE
        self._pullProducers: set[ChannelCore] = _NONE
        self._lossy: set[ChannelCore] = _NONE
        self.connected = False
        self._closing = False
        #: the (code, reason) the session ended on, if it did otherwise than
        #: by its connection closing
        self.terminatedWith: tuple[int | None, str] | None = None
        #: the peer's GOAWAY, if any
        self.goAwayReceived: GoAwayReceived | None = None
        self.draining = False
        # Output.
        #: a flush asked of the front end, or `FLUSHING` while one is
        #: under way (it writes what is added meanwhile): None is the one
        #: value for which a write must ask for a flush (`flushSoon`)
        self.flushCall: Delivery = None
        self.outputPaused = False
        # Whether the connection has paused us since producers were last
        # serviced: then channels compete for its output.
        self._pushedBack = False
        # Bulk mode (see BULK_AFTER_FLUSHES): small writes so far, as last
        # seen by a flush, and pauses by the connection since.
        self._flushBytes = FLUSH_BYTES
        self._flushLimit = BULK_FLUSH_BYTES  # (see limitFlushes)
        self.highWater = WRITE_HIGH_WATER
        self.smallWrites = 0
        self._smallSeen = 0
        self._fullFlushes = 0
        self.bulk = False
        #: whether the session is in latency mode (`LATENCY_FLUSH_BYTES`)
        self.latency = False
        # Timers, as deadlines (None: not armed).
        self._idleSince: float | None = None
        self._handshakeBy: float | None = None
        self._keepAliveAt: float | None = None
        self._heard = False
        self._keepAlivePinged = False
        self._abortAt: float | None = None
        # SessionSettings.writeTimeout: since when the connection has taken
        # none of our output (None: it is taking it).
        self._blockedSince: float | None = None
        self._loadBudgetRefill = 0.0
        # Pings we sent, by payload: when.
        self._pings: dict[bytes, float] = {}
        self._rttPings = 0  # round-trip samples taken (see `_sampleRtt`)
        # Introspection (see `snapshotChannels`, `counters`).
        #: when the connection was made, by the host's clock (None: not yet)
        self.startedAt: float | None = None
        #: every PING's round trip (ours, the auto-tuning's, keepalives')
        self.rtt = RttHistogram()
        #: why the core ended the session, if a timer did: ``handshake``,
        #: ``idle``, ``keepalive`` or ``write`` followed by ``_timeout``
        self.timedOut: str | None = None
        self._endedByPeer = False
        # Channel resets and refusals logged so far, and those past
        # `LOGGED_CHANNEL_ENDINGS` (see `mayLogEnding`).
        self._endingsLogged = 0
        #: channel resets and refusals not logged (past
        #: `LOGGED_CHANNEL_ENDINGS`): the front end logs the count once, as
        #: the session ends
        self.endingsUnlogged = 0

    # ------------------------------------------------------------ lifecycle

    def connectionMade(self) -> None:
        """
        The connection is up: send our preface, start the clocks.
        """
        self.connected = True
        now = self.host.now()
        self.startedAt = now
        settings = self.settings
        if settings.handshakeTimeout is not None and not self.engine.prefaceReceived:
            self._handshakeBy = now + settings.handshakeTimeout
            self.host.wakeAt(self._handshakeBy)
        self._armIdle(now)
        self._loadBudgetRefill = now + LOAD_BUDGET_PERIOD
        if settings.keepAliveInterval is not None:
            self._keepAliveAt = now + settings.keepAliveInterval
            self.host.wakeAt(self._keepAliveAt)
        self.flush()

    def connectionLost(self, clean: bool, why: str) -> Ending:
        """
        The connection is gone (``clean``: it was closed, not lost; ``why``
        the connection's own words): no timer is left; return how the
        session ended, for `endChannels`.
        """
        self.connected = False
        self._handshakeBy = self._keepAliveAt = self._abortAt = None
        self._idleSince = self._blockedSince = None
        self._cancelFlush()
        if self.terminatedWith is not None:
            code, reason = self.terminatedWith
            return Ending("lost", code, reason)
        if not clean:
            return Ending("lost", None, why)
        # Never "closed cleanly": for the channels cut off it was not.
        g = self.goAwayReceived
        if g is not None:
            text = f"the peer went away (GOAWAY {describeCode(g.code)}"
            return Ending(
                "lost", None, f"{text}: {g.reason})" if g.reason else f"{text})"
            )
        if self._closing:
            return Ending("lost", None, "the session was closed")
        return Ending("lost", None, "the peer closed the connection without GOAWAY")

    def endChannels(self, ending: Ending) -> None:
        """
        End every open channel with ``ending`` (the session is lost).
        """
        channels = list(self.channels.values())
        paused = list(self.pausedProducers)
        self.channels.clear()
        self.pausedProducers.clear()
        self._pullProducers.clear()
        for channel in channels:
            channel._terminate(ending)
        for channel in paused:
            # Paused for the connection's sake, which nothing will now
            # resume; writes are discarded from here on.  A channel that is
            # its own producer (as Echo is) hears of the loss only so.
            channel._resumeProducer()

    # ------------------------------------------------------------ commands

    def mayLogEnding(self) -> bool:
        """
        Whether the front end should log one more channel reset or refusal:
        yes for the first `LOGGED_CHANNEL_ENDINGS` of the session; after
        that it is counted in `endingsUnlogged` instead.
        """
        if self._endingsLogged < LOGGED_CHANNEL_ENDINGS:
            self._endingsLogged += 1
            return True
        self.endingsUnlogged += 1
        return False

    def register(self, channel: ChannelCore) -> None:
        """
        Track ``channel``, a new channel object (ours or the peer's).
        """
        self.channels[channel.channel] = channel
        if self._idleSince is not None:
            self._idleSince = None
            self._disarmed()
        if channel.lossy:
            self._lossy = _added(self._lossy, channel)

    def ping(self, payload: bytes) -> None:
        """
        Send a PING with ``payload``; its answer is reported by
        `pingAnswered`.
        """
        self._pings[payload] = self.host.now()
        self.engine.ping(payload)
        self.flushSoon()

    def _sampleRtt(self, tuning: CreditTuning) -> None:
        """
        Take a round-trip sample for the credit auto-tuning: a PING of our
        own (`RTT_PING`), answered like any other.
        """
        tuning.pinging = True
        tuning.wantsRtt = False
        self._rttPings += 1
        payload = RTT_PING + self._rttPings.to_bytes(8, "big")
        self._pings[payload] = self.host.now()
        self.engine.ping(payload)

    def readingInBulk(self, on: bool) -> None:
        """
        The front end reads in bulk now (``on``: its reads come back full,
        data waits in the connection) or no longer: in latency mode, the
        less urgent channels' credit is then held short
        (`memux._credit.LATENCY_WINDOW`).
        """
        self.engine.receiverBehind = on

    def tickClock(self) -> None:
        """
        Feed the credit auto-tuning the time, from outside a read (where
        it is fed anyway): before delivering what a reader left waiting.
        """
        tuning = self.engine.creditTuning
        if tuning is not None:
            tuning.now = self.host.now()

    def goAway(self, code: int = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """
        Stop accepting channels from the peer (GOAWAY).  With NO_ERROR the
        open channels carry on and the connection closes once the last
        ends (drain); with an error code it closes at once.
        """
        self.engine.goAway(code, reason)
        self.draining = True
        self.flushSoon()

    def loseConnection(self) -> None:
        """
        Close the connection now, after writing what can be written.
        """
        if not self.connected:
            return
        self.flush()
        self._closeConnection()

    def abort(self, code: int | None, reason: str) -> None:
        """
        Abort the connection now; channels end with a lost session
        carrying ``code`` and ``reason`` unless the session already ended
        otherwise.
        """
        if not self.connected:
            return
        if self.terminatedWith is None and reason:
            self.terminatedWith = (code, reason)
        self.host.abortConnection()

    def usable(self) -> bool:
        """
        Whether new channels may be opened: connected and neither side has
        started to end the session.
        """
        engine = self.engine
        return (
            self.connected
            and not self._closing
            and not engine.terminated
            and engine.goAwayReceived is None
            and engine.goAwaySent is None
        )

    # ------------------------------------------------------------ input

    def receiveData(self, data: bytes) -> None:
        """
        Feed the engine a step (`INPUT_STEP_FRAMES` frames at most) of the
        bytes received (``b""``: go on with held input, see
        `inputPending`), act on its events, and write what they called for.
        """
        engine = self.engine
        if data:
            self._heard = True
            now = self.host.now()
            tuning = engine.creditTuning
            if tuning is not None:
                tuning.now = now
            if now >= self._loadBudgetRefill:
                self._loadBudgetRefill = now + LOAD_BUDGET_PERIOD
                engine.refillLoadBudget()
        events = engine.receiveData(data, INPUT_STEP_FRAMES)
        if events:
            if self.flushCall is None:
                self.flushCall = AFTER_INPUT
            try:
                self.handleEvents(events)
            except BaseException:
                if self.flushCall is AFTER_INPUT:
                    self.flushCall = None
                raise
        # Write now what the input called for (replies, credit): a turn
        # of its own for that would cost an event-loop iteration per read.
        self.flush()

    @property
    def inputPending(self) -> bool:
        """
        Whether input is held back for later steps (`receiveData(b"")`).
        """
        return self.engine.inputPending

    # ------------------------------------------------------------ output

    def pauseOutput(self) -> None:
        """
        The connection's buffer is full: stop writing to it.  Each channel
        that writes meanwhile has its producer paused at that write, so
        buffered bytes stay bounded (pausing every registered producer at
        once would cost O(channels) per pause, many times a second).  The
        write timeout starts counting.
        """
        self.outputPaused = True
        self._pushedBack = True
        self._fullFlushes += 1
        if self._fullFlushes == BULK_AFTER_FLUSHES and not self.latency:
            self._bulkMode(True)
        if self._blockedSince is None:
            self._outputBlocked()

    def resumeOutput(self) -> None:
        """
        The connection drained: write again, then resume producers.  (A
        connection being closed under us resumes us too, instead of
        closing: then the session closes, see `flush`, and the write
        timeout keeps counting.)
        """
        self.outputPaused = False
        if self._blockedSince is not None and not (
            self._closing or self.host.connectionClosing()
        ):
            # Disarmed, but the front end is not told: its wake-up, if no
            # other deadline needs it, fires once and finds nothing due.
            # A session its connection pauses and resumes hundreds of
            # times a second (bulk, fan-out) would otherwise have it set
            # and cancel a timer each time.
            self._blockedSince = None
        self.flush()

    @property
    def flushing(self) -> bool:
        """
        Whether a flush is under way.
        """
        return self.flushCall is FLUSHING

    def flushSoon(self) -> None:
        # One flush per turn: many writes share one write to the
        # connection, and a channel opened in this turn rides on its first
        # data.  (Not during a flush, whose `flushCall` is `FLUSHING`: it
        # writes what is added meanwhile.)  Channels check ``flushCall is
        # None`` inline before calling this: it runs for every write.
        if self.flushCall is None and self.connected:
            self.flushCall = self.host.flushSoon()

    def _flushed(self) -> None:
        if self.flushCall is FLUSHING:
            self.flushCall = None

    def _cancelFlush(self) -> None:
        call = self.flushCall
        if call is not None:
            self.flushCall = None
            if call.active():
                call.cancel()

    def flush(self) -> bool:
        """
        Write what the engine has for the connection, until it pauses us,
        then let paused producers write again, and write what they wrote:
        all now, so a bulk writer's next chunks do not wait for a turn of
        their own.  If the connection is being closed under us (see
        `SessionHost.connectionClosing`), write what can be written and
        close.  Re-entered (from a callback of the writes), it leaves the
        work to the flush under way.  Return whether data is left for
        another flush (one is asked for).
        """
        call = self.flushCall
        if call is FLUSHING:
            return False
        if call is AFTER_INPUT:
            self.flushCall = None  # (this is it)
        elif call is not None:
            self._cancelFlush()  # flushing now, ahead of the one asked for
        if not self.connected:
            return False
        engine = self.engine
        if engine.terminated:
            # The session is over: write the GOAWAY even if the connection
            # is paused (it buffers), then close.
            pieces = engine.piecesToSend(FLUSH_BYTES)
            if pieces:
                self.host.write(pieces)
            events = engine.popEvents()
            if events:
                self.handleEvents(events)
            self._closeConnection()
            return False
        if not self._closing and self.host.connectionClosing():
            # Someone closed our connection directly (Twisted's TCP then
            # resumes its paused producer instead of closing; TLS waits for
            # it to unregister): no credit can arrive any more, so write
            # what can be written and close as `loseConnection` does.
            self.flushCall = FLUSHING
            try:
                self._writeOut()
            finally:
                self._flushed()
            self._closeConnection()
            return False
        tuning = engine.creditTuning
        if tuning is not None and tuning.wantsRtt:
            self._sampleRtt(tuning)
        if self.smallWrites != self._smallSeen:
            self._smallSeen = self.smallWrites
            self._fullFlushes = 0
            if self.bulk:
                self._bulkMode(False)
        if (engine.urgentChannels > 0) is not self.latency:
            self._latencyMode(not self.latency)
        self.flushCall = FLUSHING
        more = False  # data left once the rounds are used up
        try:
            for _ in range(FLUSH_ROUNDS):
                drained = self._writeOut()
                if not self.connected:
                    return False
                if engine.terminated and not engine.hasDataToSend():
                    self._closeConnection()
                    return False
                if self.outputPaused:
                    break
                if self._lossy:
                    self._shedLoad()  # (may leave a DROP to send)
                    drained = False
                if self.pausedProducers or self._pullProducers:
                    self._serviceProducers()  # (they may write)
                    drained = False
                more = not drained and engine.hasDataToSend()
                if not more:
                    break
        finally:
            self._flushed()
        if not self.connected:
            return False
        if self.outputPaused:
            if self._lossy:
                self._shedLoad()
        elif more:
            self.flushSoon()  # rounds used up: the rest next turn
        if (
            self.draining
            and not self.channels
            and not engine.hasOpenChannels()
            and not engine.hasDataToSend()
        ):
            # (A channel closed with loseConnection lets go of its object
            # once our FIN is out, but is open until the peer's FIN.)
            self._closeConnection()
        return more

    def _writeOut(self) -> bool:
        """
        Hand the connection what the engine has, a flush's worth at a time,
        until it pauses us or nothing is left; act on the events.  Return
        True if nothing is left.
        """
        engine = self.engine
        host = self.host
        budget = self._flushBytes
        while not self.outputPaused:
            sent = engine.bytesSent
            pieces = engine.piecesToSend(budget)
            events = engine.popEvents()
            if pieces:
                host.write(pieces)
            if events:
                self.handleEvents(events)
            elif not pieces or (
                engine.bytesSent - sent < budget and not engine.hasDataToSend()
            ):
                # (Short of its budget, the engine has most likely given
                # all it has: asking it is cheaper than another round.)
                return True
            if not self.connected:
                return False
        return False

    def limitFlushes(self, limit: int) -> None:
        """
        Hand the connection at most about ``limit`` bytes per write, in
        bulk mode too: for a front end whose connection copies each write
        whole (Twisted's TLS joins a write's pieces, then its TCP transport
        joins a turn's records, and blocks above the C library's mmap
        threshold cost page faults on every flush).
        """
        self._flushLimit = limit
        self._flushBytes = min(self._flushBytes, limit)

    def _flushSize(self) -> int:
        """
        The most to hand the connection per write, in the present mode.
        """
        if self.latency:
            size = LATENCY_FLUSH_BYTES
        else:
            size = BULK_FLUSH_BYTES if self.bulk else FLUSH_BYTES
        return min(size, self._flushLimit)

    def _bulkMode(self, on: bool) -> None:
        """
        Switch bulk mode on or off (see `BULK_AFTER_FLUSHES`).
        """
        self.bulk = on
        self._flushBytes = self._flushSize()
        self.highWater = BULK_HIGH_WATER if on else WRITE_HIGH_WATER
        self.host.bulkMode(on)

    def _latencyMode(self, on: bool) -> None:
        """
        Switch latency mode on or off (see `LATENCY_FLUSH_BYTES`).
        """
        self.latency = on
        if on and self.bulk:
            self._bulkMode(False)
        # Bulk mode again only after as many full flushes as ever, counted
        # from now.
        self._fullFlushes = 0
        self._flushBytes = self._flushSize()
        self.host.latencyMode(on)

    def _closeConnection(self) -> None:
        """
        Close the connection once what is written has gone.
        """
        if self._closing or not self.connected:
            return
        self._closing = True
        self.host.closeConnection()
        # A peer that does not read never lets the close finish (TCP and
        # TLS wait for unsent bytes): that is output blocked too.
        if self.connected and self._blockedSince is None:
            self._outputBlocked()

    @property
    def closing(self) -> bool:
        """
        Whether the session has started to close its connection.
        """
        return self._closing

    def _shedLoad(self) -> None:
        """
        Lossy channels still over the high-water mark after a flush (so: not
        for size, for lack of credit or connection) discard the queued
        messages not yet begun but the newest, and tell the peer.  One long
        message cannot be shed; then its producer is paused as usual.
        """
        engine = self.engine
        for channel in list(self._lossy):
            cid = channel.channel
            if engine.queuedBytes(cid) < WRITE_HIGH_WATER:
                continue
            if engine.isOpen(cid) and not engine.finSent(cid):
                engine.discardQueuedMessages(cid, keepNewest=True)
            if (
                channel.producer is not None
                and engine.queuedBytes(cid) >= WRITE_HIGH_WATER
            ):
                channel._pauseProducer()

    def _serviceProducers(self) -> None:
        """
        Resume the producers we paused whose queue has drained, and ask pull
        producers for more: only those, not every registered producer.
        """
        low = self.highWater // 2
        queued = self.engine.queuedBytes
        pushedBack, self._pushedBack = self._pushedBack, False
        if pushedBack and self.engine.weighted and self.pausedProducers:
            self._refillByWeight(low)
        else:
            for channel in list(self.pausedProducers):
                if channel.producer is None:
                    self.pausedProducers.discard(channel)
                elif queued(channel.channel) < low:
                    self.pausedProducers.discard(channel)
                    channel._resumeProducer()
        for channel in list(self._pullProducers):
            if channel.producer is not None and queued(channel.channel) < low:
                channel._resumeProducer()

    def _refillByWeight(self, low: int) -> None:
        """
        Resume drained producers by weight.  The connection pushed back
        since producers were last serviced, so channels compete for its
        output, and some have weights other than the default.  A paused
        producer refills at most a high-water mark, and only once every
        channel's queue has gone out: resumed all together, producers would
        share equally whatever their weights.  So of the drained channels
        the heaviest are resumed now and the others as often as their
        weights say (a stride: each earns its weight per service, and is
        resumed once it has earned the heaviest one's); a flush soon after
        resumes the rest if the connection has room by then.
        """
        engine = self.engine
        queued = engine.queuedBytes
        due: list[tuple[ChannelCore, int]] = []
        for channel in list(self.pausedProducers):
            if channel.producer is None:
                self.pausedProducers.discard(channel)
            elif queued(channel.channel) < low:
                due.append((channel, engine.priority(channel.channel).weight))
        if not due:
            return
        top = max(weight for _, weight in due)
        skipped = False
        for channel, weight in due:
            refill = channel._refillOwed + weight
            if refill >= top:
                channel._refillOwed = refill - top
                self.pausedProducers.discard(channel)
                channel._resumeProducer()
            else:
                channel._refillOwed = refill
                skipped = True
        if skipped:
            self.host.callSoon(self.flush)

    def watchProducer(self, channel: ChannelCore) -> None:
        if not channel.streamingProducer:
            self._pullProducers = _added(self._pullProducers, channel)
        elif self.outputPaused:
            channel._pauseProducer()

    def producerPaused(self, channel: ChannelCore) -> None:
        """
        ``channel``'s push producer was paused: resume it once its queue
        drains (`_serviceProducers`).
        """
        self.pausedProducers = _added(self.pausedProducers, channel)

    def unwatchProducer(self, channel: ChannelCore) -> None:
        self.pausedProducers.discard(channel)
        self._pullProducers.discard(channel)

    # ------------------------------------------------------------ channels

    def channelGone(self, channel: ChannelCore) -> None:
        channels = self.channels
        channels.pop(channel.channel, None)
        if not channels:
            if self.connected:
                self._armIdle(self.host.now())
            if self.draining:
                self.flushSoon()
        # (Most channels are in none of these: skip the calls.)
        if self.pausedProducers:
            self.pausedProducers.discard(channel)
        if self._pullProducers:
            self._pullProducers.discard(channel)
        if self._lossy:
            self._lossy.discard(channel)

    def channelMaybeDone(self, channel: ChannelCore) -> None:
        """
        After the end of input: if the engine has closed the channel both
        ways (and nothing else ended it meanwhile), it is done.
        """
        cid = channel.channel
        if self.channels.get(cid) is channel and not self.engine.isOpen(cid):
            self.channelGone(channel)
            channel._terminate(CLEAN)

    def handleEvents(self, events: list[Event]) -> None:
        """
        Act on the engine's events: deliver to channels (`DataReceived`,
        the most frequent, first and inline), else by a dispatch table.
        """
        channels = self.channels
        try:
            for event in events:
                if type(event) is DataReceived:
                    channel = channels.get(event.channel)
                    if channel is not None:
                        channel._chunkArrived(event.data, event.endMessage)
                    else:
                        self.engine.consumed(event.channel, len(event.data))
                    continue
                t = type(event)
                # (Membership tests and subscripts, not ``dict.get``: no
                # call, for each of the eight or so events of every
                # channel's life.)
                if t in _CHANNEL_STEPS:
                    # A channel's FIN, ours or the peer's, or its clean end:
                    # straight to its channel object, as every channel has
                    # them.
                    anyEvent: Any = event
                    cid = anyEvent.channel
                    if cid in channels:
                        _CHANNEL_STEPS[t](channels[cid])
                elif t is ChannelOpened:
                    # The peer opened a channel: the host builds its
                    # protocol or says why not.  (Here rather than in the
                    # table: the peer opens every other channel, and a
                    # handler would be a call in between.)
                    opened: Any = event
                    made = self.host.channelRequested(opened)
                    if type(made) is str:
                        self.engine.refuseChannel(opened.channel, made)
                else:
                    _EVENT_HANDLERS[t](self, event)
        finally:
            if self.owing:
                # What the channels that delivered in this batch consumed
                # (`ChannelCore._owed`): the grants it makes due go out in
                # the flush that follows.
                owing, self.owing = self.owing, []
                consumed = self.engine.consumed
                for channel in owing:
                    n = channel._owed
                    channel._owed = 0
                    consumed(channel.channel, n)

    def _onChannelReset(self, event: ChannelReset) -> None:
        channel = self.channels.get(event.channel)
        if channel is None:
            return
        ending = Ending("reset", event.code, event.reason, event.remote)
        self.host.notice(
            Notice("channel reset", {"channel": event.channel, "ending": ending})
        )
        self.channelGone(channel)
        channel._terminate(ending)

    def _onMessagesDropped(self, event: MessagesDropped) -> None:
        channel = self.channels.get(event.channel)
        if channel is not None:
            channel._dropArrived(event.count)

    def _onPingAcknowledged(self, event: PingAcknowledged) -> None:
        started = self._pings.pop(event.payload, None)
        if started is not None:
            rtt = self.host.now() - started
            self.rtt.sample(rtt)
            tuning = self.engine.creditTuning
            if tuning is not None:
                tuning.sample(rtt)
            if event.payload != KEEPALIVE_PAYLOAD and not event.payload.startswith(
                RTT_PING
            ):
                self.host.pingAnswered(event.payload, rtt)

    def _onGoAwayReceived(self, event: GoAwayReceived) -> None:
        self.goAwayReceived = event
        self.host.notice(Notice("goaway received", {"goAway": event}))

    def _onSessionTerminated(self, event: SessionTerminated) -> None:
        self.terminatedWith = (event.code, event.reason)
        self._endedByPeer = event.remote
        self.host.notice(Notice("session terminated", {"event": event}))
        self.flushSoon()

    def _onPeerWarning(self, event: PeerWarning) -> None:
        self.host.notice(Notice("peer warning", {"message": event.message}))

    def _onPrefaceReceived(self, event: PrefaceReceived) -> None:
        if self._handshakeBy is not None:
            self._handshakeBy = None
            self._disarmed()

    def unansweredPings(self) -> list[bytes]:
        """
        Forget the PINGs still unanswered; return their payloads.
        """
        pings, self._pings = self._pings, {}
        return list(pings)

    # ------------------------------------------------------------ introspection

    def summary(self) -> dict[str, int]:
        """
        Bytes and frames moved (and of those, the bytes of PING frames),
        channels opened by each side and open now: what the front ends'
        ``counters()`` give.
        """
        e = self.engine
        return {
            "bytesSent": e.bytesSent,
            "bytesReceived": e.bytesReceived,
            "pingBytesSent": e.pingBytesSent,
            "pingBytesReceived": e.pingBytesReceived,
            "framesReceived": e.framesReceived,
            "channelsOpened": e.channelsOpened,
            "channelsAccepted": e.channelsAccepted,
            "channelsOpen": len(self.channels),
        }

    def snapshot(
        self,
        *,
        peer: str,
        host: str,
        transport: str = "unknown",
        tls: bool = False,
        alpn: str | None = None,
        subflows: int | None = None,
        channels: bool = True,
    ) -> SessionSnapshot:
        """
        The session now, as plain data; the front end says what carries
        it (``peer``, ``host``, ``transport``, ``tls``, ``alpn``,
        ``subflows``), the rest is the core's.  With ``channels``, each
        open channel too (`snapshotChannels`).
        """
        engine = self.engine
        goAway = self.goAwayReceived
        sent = engine.goAwaySentCode
        send, receive, window = engine.sessionCredit()
        rtt = self.rtt
        started = self.startedAt
        return SessionSnapshot(
            peer=peer,
            host=host,
            client=self.client,
            age=0.0 if started is None else self.host.now() - started,
            transport=transport,
            tls=tls,
            alpn=alpn,
            subflows=subflows,
            settings=dataclasses.asdict(self.settings.toWire()),
            peerSettings=dataclasses.asdict(engine.peerSettings),
            prefaceReceived=engine.prefaceReceived,
            usable=self.usable(),
            goAwaySent=None if sent is None else describeCode(sent),
            goAwayReceived=None if goAway is None else describeCode(goAway.code),
            goAwayReceivedLastChannel=None if goAway is None else goAway.lastChannel,
            goAwayReceivedReason=None if goAway is None else goAway.reason,
            draining=self.draining,
            outputPaused=self.outputPaused,
            rtt=rtt.smoothed,
            lastRtt=rtt.last,
            sendCredit=send,
            receiveCredit=receive,
            receiveWindow=window,
            counters=self.counters(),
            channels=self.snapshotChannels() if channels else [],
        )

    def snapshotChannels(self) -> list[ChannelSnapshot]:
        """
        Every open channel now, as plain data (read-only: nothing changes).
        """
        channels = self.channels
        make = ChannelSnapshot.fromValues
        out = []
        for f in self.engine.channelFigures():
            channel = channels.get(f.channel)
            if channel is None:
                # Closed by the application, waiting for the peer's FIN.
                service, reading, writing = "", False, False
            else:
                service = channel.service.decode("utf-8", "backslashreplace")
                reading = channel.readingPaused
                writing = channel.writingPaused
            priority = self.engine.priority(f.channel)
            out.append(
                make(
                    (
                        f[0],
                        service,
                        *f[1:],
                        reading,
                        writing,
                        priority.urgency,
                        priority.weight,
                    )
                )
            )
        return out

    def counters(self) -> SessionCounters:
        """
        What the session has moved and met so far (see `SessionCounters`).
        """
        rtt = self.rtt
        return dataclasses.replace(
            self.engine.counters(), rttCounts=list(rtt.counts), rttSum=rtt.total
        )

    def endCause(self, clean: bool) -> str:
        """
        Why the session ended (``clean``: its connection was closed, not
        lost), as `memux.introspect.Totals.sessionsEnded` counts it: a
        timeout, the error code it ended on (``peer_`` first when the
        peer's GOAWAY carried it), ``closed`` or ``lost``.
        """
        if self.timedOut is not None:
            return self.timedOut
        if self.terminatedWith is not None:
            code = self.terminatedWith[0]
            if code is None:
                return "lost"
            return ("peer_" if self._endedByPeer else "") + describeCode(code)
        return "closed" if clean else "lost"

    # ------------------------------------------------------------ timers

    def _armIdle(self, now: float) -> None:
        timeout = self.settings.idleTimeout
        if timeout is not None and self._idleSince is None:
            self._idleSince = now
            self.host.wakeAt(now + timeout)

    def _outputBlocked(self) -> None:
        """
        The connection stopped taking our output (it paused us, or a close
        waits on unsent bytes): start the writeTimeout clock.
        """
        timeout = self.settings.writeTimeout
        if timeout is not None:
            self._blockedSince = now = self.host.now()
            self.host.wakeAt(now + timeout)

    def _disarmed(self) -> None:
        """
        A deadline was disarmed: if none is left, the front end need not
        wake (only an earlier deadline makes it wake sooner).
        """
        if self.nextDeadline() is None:
            self.host.wakeAt(None)

    def deadlines(self) -> Iterator[float]:
        """
        Every deadline armed now.
        """
        settings = self.settings
        if self._handshakeBy is not None:
            yield self._handshakeBy
        if self._idleSince is not None and settings.idleTimeout is not None:
            yield self._idleSince + settings.idleTimeout
        if self._keepAliveAt is not None:
            yield self._keepAliveAt
        if self._abortAt is not None:
            yield self._abortAt
        if self._blockedSince is not None and settings.writeTimeout is not None:
            yield self._blockedSince + settings.writeTimeout

    def nextDeadline(self) -> float | None:
        """
        When `handleTimer` must next run (None: no timer is armed).
        """
        return min(self.deadlines(), default=None)

    def handleTimer(self, now: float) -> None:
        """
        Do what is due at ``now``: end a session whose peer sent no preface
        in time, or has had no channel open for the idle timeout, or read
        none of our output for the write timeout; keep a quiet session
        alive with PINGs, and end it if the peer answers nothing.
        """
        if not self.connected:
            return
        settings = self.settings
        if self._handshakeBy is not None and now >= self._handshakeBy:
            self._handshakeBy = None
            if not self.engine.prefaceReceived:
                self._handshakeExpired()
        if (
            self._idleSince is not None
            and settings.idleTimeout is not None
            and now >= self._idleSince + settings.idleTimeout
        ):
            self._idleSince = None
            if not self.channels:
                self._idleExpired()
        if self._keepAliveAt is not None and now >= self._keepAliveAt:
            self._keepAliveAt = None
            self._keepAliveExpired(now)
        if self._abortAt is not None and now >= self._abortAt:
            self._abortAt = None
            self.abort(None, "")
        blocked = self._blockedSince
        if (
            blocked is not None
            and settings.writeTimeout is not None
            and now >= blocked + settings.writeTimeout
        ):
            self._blockedSince = None
            self._writeExpired()

    def _handshakeExpired(self) -> None:
        timeout = self.settings.handshakeTimeout
        self.timedOut = "handshake_timeout"
        self.host.notice(Notice("handshake timeout", {"timeout": timeout}))
        reason = f"no preface from the peer in {timeout:g} s"
        self.terminatedWith = (ErrorCode.IDLE_TIMEOUT, reason)
        if self.outputPaused:
            # The connection takes nothing more: a GOAWAY would never go.
            self.abort(ErrorCode.IDLE_TIMEOUT, reason)
            return
        # Tell the peer why (it may be a memux peer on a slow link), then
        # close; a peer that does not read either is bounded by writeTimeout.
        self.engine.goAway(ErrorCode.IDLE_TIMEOUT, reason)
        self.flush()

    def _idleExpired(self) -> None:
        timeout = self.settings.idleTimeout
        self.timedOut = "idle_timeout"
        self.host.notice(Notice("idle timeout", {"timeout": timeout}))
        self.goAway(ErrorCode.IDLE_TIMEOUT, f"idle for {timeout:g} s")

    def _keepAliveExpired(self, now: float) -> None:
        """
        Another keepAliveInterval passed: if anything arrived meanwhile the
        peer is alive; else send a PING, and if it was already sent, end
        the session: the peer is dead or unreachable.
        """
        if self.engine.terminated:
            return
        interval = self.settings.keepAliveInterval or 0.0
        if self._heard:
            self._heard = False
            self._keepAlivePinged = False
        elif not self._keepAlivePinged:
            self._keepAlivePinged = True
            self._pings[KEEPALIVE_PAYLOAD] = now  # (timed too: `rtt`)
            self.engine.ping(KEEPALIVE_PAYLOAD)
            self.flushSoon()
        else:
            self.timedOut = "keepalive_timeout"
            self.host.notice(Notice("peer dead", {"silence": 2 * interval}))
            reason = f"no answer to PING in {interval:g} s"
            self.terminatedWith = (ErrorCode.IDLE_TIMEOUT, reason)
            self.goAway(ErrorCode.IDLE_TIMEOUT, reason)
            # A dead peer never reads the GOAWAY: do not wait for its
            # buffer to drain longer than another interval.
            if self.connected:
                self._abortAt = now + interval
                self.host.wakeAt(self._abortAt)
            return
        self._keepAliveAt = now + interval

    def _writeExpired(self) -> None:
        timeout = self.settings.writeTimeout
        self.timedOut = "write_timeout"
        self.host.notice(Notice("write timeout", {"timeout": timeout}))
        self.abort(ErrorCode.IDLE_TIMEOUT, f"the peer read nothing for {timeout:g} s")


#: What the events of a channel's life do to its channel object (DATA
#: apart, which `handleEvents` handles first, inline).
_CHANNEL_STEPS: dict[type, Callable[[ChannelCore], None]] = {
    RemoteHalfClosed: ChannelCore._remoteFin,
    LocalHalfClosed: ChannelCore._localFinSent,
    ChannelClosed: ChannelCore._closed,
}

#: What handles each other engine event (but `ChannelOpened`, handled in
#: `handleEvents`): a dispatch table of the class's functions.
_EVENT_HANDLERS: dict[type, Callable[[SessionCore, Any], None]] = {
    ChannelReset: SessionCore._onChannelReset,
    MessagesDropped: SessionCore._onMessagesDropped,
    PingAcknowledged: SessionCore._onPingAcknowledged,
    GoAwayReceived: SessionCore._onGoAwayReceived,
    SessionTerminated: SessionCore._onSessionTerminated,
    PeerWarning: SessionCore._onPeerWarning,
    PrefaceReceived: SessionCore._onPrefaceReceived,
}
