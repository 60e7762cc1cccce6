# -*- test-case-name: memux.test.test_engine -*-
"""
The credit ("invitation") policy: when a receiver grants more credit.

This is the one place that decides it (`CreditWindow` for channels,
`SessionCreditWindow` for the session).  Credit is granted as the
application *consumes* data, never merely on receipt, so a slow reader
stalls only its own channel and a receiver never holds more than one
window of unconsumed data per channel (and per session).
"""

from __future__ import annotations

from typing import ClassVar, Final

__all__ = [
    "ChannelCountCredit",
    "CreditTuning",
    "CreditWindow",
    "LATENCY_WINDOW",
    "SendCredit",
    "SessionCreditWindow",
]

#: In latency mode, while a channel more urgent than the default is open
#: (`memux._engine.MemuxEngine.urgentChannels`) and the receiver falls
#: behind (`memux._engine.MemuxEngine.receiverBehind`: its reads come back
#: full), the most credit a less urgent channel is granted past what its
#: reader consumed.  Its data in the connection's queues, which no
#: scheduler can reorder, stays this small, so an urgent message waits
#: behind little.  Measured
#: with ten bulk channels beside a ping-pong at urgency 0: 64 KiB gave the
#: ping's p99 372 us against 475 with full windows, and bulk did not
#: slow; 32 KiB did worse on both (doc/priorities.rst).
LATENCY_WINDOW: Final = 64 * 1024


class CreditTuning:
    """
    Auto-tuning of a session's channel windows (receiver-side advice in
    the spec, "Window auto-tuning"; no wire change): the time and round-trip
    samples the channels' `CreditWindow` grants are judged by, and the rule.

    A channel whose grants come faster than every `GROW_WITHIN_RTTS` round
    trips is held back by its window (the sender waits for credit each
    round trip) rather than by its reader or the link: its window doubles,
    up to ``maximum``.  Grants that come less often than every
    `SHRINK_AFTER_SECONDS` (an idle or slow channel) set it back to
    ``initial``.  With no round-trip sample yet, nothing grows; the session
    takes one (a PING) when `wantsRtt` says so.

    Memory stays bounded by the session window, which channels share and
    which does not grow: ``maximum`` is at most the session window, and a
    grown window only lets one busy channel use more of it.

    The session layer feeds ``now`` (its clock, once per read and per
    delivery turn) and `sample` (every PING's round trip), and sends a PING
    when `wantsRtt` says so.  Grants in the
    same instant (one read, or a reader catching up) carry no timing and
    never grow a window.
    """

    __slots__ = (
        "initial",
        "maximum",
        "now",
        "rtt",
        "nextSample",
        "pinging",
        "wantsRtt",
    )

    # ClassVar: class constants, which mypyc (see doc/performance.rst)
    # would otherwise compile as instance attributes with defaults.
    #: grow a window whose grants come faster than this many round trips
    GROW_WITHIN_RTTS: ClassVar[int] = 2
    #: set a window back to the initial size after this long with no grant
    SHRINK_AFTER_SECONDS: ClassVar[float] = 1.0
    #: take a fresh round-trip sample at most this often (while granting)
    SAMPLE_EVERY_SECONDS: ClassVar[float] = 10.0

    def __init__(self, initial: int, maximum: int) -> None:
        self.initial = initial
        self.maximum = max(initial, maximum)
        #: the session's clock, as last fed
        self.now = 0.0
        #: the smoothed round trip in seconds (None: no sample yet)
        self.rtt: float | None = None
        #: when a round-trip sample is next wanted
        self.nextSample = 0.0
        #: whether the session has a sample under way
        self.pinging = False
        #: whether the session should take a round-trip sample (send a
        #: PING) now: a window was granted, and the last sample, if any, is
        #: old (set here, cleared by the session as it sends the PING)
        self.wantsRtt = False

    def sample(self, rtt: float) -> None:
        """
        A round trip took ``rtt`` seconds: smooth it in (RFC 6298's 1/8).
        """
        self.rtt = rtt if self.rtt is None else self.rtt + (rtt - self.rtt) / 8
        self.pinging = False
        self.nextSample = self.now + self.SAMPLE_EVERY_SECONDS

    def resized(self, window: int, lastGrant: float) -> int:
        """
        The window for a grant made now, the previous one at
        ``lastGrant``.
        """
        now = self.now
        if not self.pinging and now >= self.nextSample:
            self.wantsRtt = True
        interval = now - lastGrant
        rtt = self.rtt
        if interval > self.SHRINK_AFTER_SECONDS:
            return self.initial
        if (
            rtt is not None
            and 0 < interval < self.GROW_WITHIN_RTTS * rtt
            and window < self.maximum
        ):
            return min(2 * window, self.maximum)
        return window


class CreditWindow:
    """
    Receive-side credit for one channel.

    The limit is an absolute offset: the peer may send until it has sent
    ``limit`` bytes in all.  ``received - consumed`` is what the receiver
    holds; it never exceeds ``window``.

    A new limit (``consumed + window``) is announced once the application
    has consumed half a window since the last announcement: few CREDIT
    frames, never a tiny one, and the sender never idles while the receiver
    keeps up.
    """

    __slots__ = (
        "window",
        "limit",
        "received",
        "consumed",
        "grantAt",
        "lastGrant",
    )

    def __init__(self, window: int) -> None:
        self.window = window
        self.limit = window
        self.received = 0
        self.consumed = 0
        #: Once ``consumed`` reaches this, a new limit is due (`grant`).
        #: Kept as a plain number so the per-message path is one comparison.
        self.grantAt = window - window // 2
        #: when the last limit was granted, by the session's clock (for
        #: `CreditTuning`; 0: never, so the first grant never grows it)
        self.lastGrant = 0.0

    def receive(self, n: int) -> bool:
        """
        Account for ``n`` bytes arriving; return ``False`` (and account for
        nothing) when they overrun the credit granted.
        """
        if self.received + n > self.limit:
            return False
        self.received += n
        return True

    @property
    def held(self) -> int:
        """
        Bytes received but not yet consumed.
        """
        return self.received - self.consumed

    def consume(self, n: int, tuning: CreditTuning | None = None) -> int | None:
        """
        Account for ``n`` bytes consumed by the application (the window
        auto-tuned by ``tuning``, if given: see `grant`).

        :returns: the new limit to announce, or ``None`` when none is due yet.
        """
        consumed = self.consumed + n
        if consumed > self.received:
            raise ValueError(
                f"consumed {consumed} bytes but only {self.received} arrived"
            )
        self.consumed = consumed
        if self.due():
            return self.grant(tuning)
        return None

    def due(self) -> bool:
        """
        Whether a new limit is due.
        """
        return self.consumed >= self.grantAt

    def grant(self, tuning: CreditTuning | None = None, latency: bool = False) -> int:
        """
        Raise the limit to a full window past what is consumed; return it.
        With ``tuning`` (the session's, kept there rather than in every
        channel's window), the window is resized first.  With ``latency``
        (in the session's latency mode, for a channel less urgent than one
        open), at most `LATENCY_WINDOW` past what is consumed; the window
        is then neither resized (the timing of such grants says nothing of
        it) nor lost: it is what the grants after latency mode offer.  A
        limit is never lowered, so a grant may leave it as it was.
        """
        window = self.window
        if latency:
            if LATENCY_WINDOW < window:
                window = LATENCY_WINDOW
        elif tuning is not None:
            window = self.window = tuning.resized(window, self.lastGrant)
        if tuning is not None:
            self.lastGrant = tuning.now
        limit = self.consumed + window
        if limit > self.limit:
            self.limit = limit
        self.grantAt = limit - window // 2
        return self.limit


class SessionCreditWindow(CreditWindow):
    """
    Receive-side credit for the whole session, which channels share.

    Part of it may be held by channels whose readers are paused.  The new
    limit (``consumed + window``) is announced once it would raise the
    limit by at least half the credit it would leave the peer: with nothing
    held, as for a channel, after half a window consumed; with bytes held,
    after proportionally less, so that what the other channels consume is
    always granted again.  (A fixed half window is never reached once more
    than half the window is held: a few stalled channels would stall the
    whole session.)  The receiver still never holds more than a window.
    """

    __slots__ = ()

    def __init__(self, window: int) -> None:
        super().__init__(window)
        self.grantAt = window  # 2 * limit - window

    def due(self) -> bool:
        """
        Whether a new limit is due: ``consumed + window - limit`` (what it
        would add) is at least half of ``consumed + window - received``
        (the credit it would leave the peer), and more than nothing.  That
        is ``consumed + received >= 2 * limit - window``: kept as
        ``grantAt``.
        """
        consumed = self.consumed
        return (
            consumed + self.received >= self.grantAt
            and consumed + self.window > self.limit
        )

    def grant(self, tuning: CreditTuning | None = None, latency: bool = False) -> int:
        """
        Raise the limit to a full window past what is consumed; return it.
        (Never auto-tuned nor capped: ``tuning`` and ``latency`` are
        ignored.)
        """
        self.limit = self.consumed + self.window
        self.grantAt = 2 * self.limit - self.window
        return self.limit


class SendCredit:
    """
    Send-side credit, for one channel or the whole session: how far the
    peer has invited us to send (``limit``, an absolute offset it raises
    with CREDIT) and how far we have (``offset``).
    """

    __slots__ = ("offset", "limit")

    def __init__(self, limit: int) -> None:
        self.offset = 0
        self.limit = limit

    @property
    def available(self) -> int:
        """
        How many more payload bytes the peer invites.
        """
        return self.limit - self.offset

    def raiseTo(self, limit: int) -> bool:
        """
        The peer allows up to ``limit``: raise the limit to it if that is
        higher (CREDIT frames are idempotent, spec: "CREDIT"); return
        whether it was.
        """
        if limit > self.limit:
            self.limit = limit
            return True
        return False

    def spend(self, n: int) -> None:
        """
        ``n`` payload bytes were sent (within the limit).
        """
        self.offset += n


class ChannelCountCredit:
    """
    The channel-count credit granted to the peer (spec: "Channel-count
    credit"): a cumulative limit on the ordinals of the channels it opens,
    kept so that it can always have ``concurrency`` channels open at once.

    A new limit is announced only once the peer's remaining credit (the
    limit less the ordinals it has used) has fallen to half of
    ``concurrency``: sequential churn then costs one CHANNELS frame per
    about ``concurrency / 2`` channels, not one per channel, while a peer
    with half or more of its channels open gets credit back as each one
    closes.  So at every moment the peer may open at least
    ``min(concurrency - open, concurrency // 2 + 1)`` more channels.
    """

    __slots__ = ("concurrency", "limit", "used", "open")

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        #: the limit announced (initially the preface's)
        self.limit = concurrency
        #: ordinals the peer has used: the highest it opened, plus one
        self.used = 0
        #: the peer's channels open now
        self.open = 0

    def opened(self, ordinal: int) -> int | None:
        """
        The peer opened the channel of ``ordinal`` (ids skipped below it
        are used up too).  Return a new limit to announce, or None.
        """
        # (`due`, inline here and in `closed`: once per channel each.)
        self.used = used = ordinal + 1
        self.open = open_ = self.open + 1
        concurrency = self.concurrency
        target = used + concurrency - open_
        if target > self.limit and self.limit - used <= concurrency // 2:
            self.limit = target
            return target
        return None

    def closed(self) -> int | None:
        """
        One of the peer's channels closed.  Return a new limit to announce,
        or None.
        """
        self.open = open_ = self.open - 1
        used = self.used
        concurrency = self.concurrency
        target = used + concurrency - open_
        if target > self.limit and self.limit - used <= concurrency // 2:
            self.limit = target
            return target
        return None

    def due(self) -> int | None:
        """
        The new limit, if one is due now (see the class docstring), else
        None.
        """
        used = self.used
        target = used + self.concurrency - self.open
        if target > self.limit and self.limit - used <= self.concurrency // 2:
            self.limit = target
            return target
        return None
