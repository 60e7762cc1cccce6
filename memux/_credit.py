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

__all__ = ["ChannelCountCredit", "CreditWindow", "SendCredit", "SessionCreditWindow"]


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

    __slots__ = ("window", "limit", "received", "consumed", "grantAt")

    def __init__(self, window: int) -> None:
        self.window = window
        self.limit = window
        self.received = 0
        self.consumed = 0
        #: Once ``consumed`` reaches this, a new limit is due (`grant`).
        #: Kept as a plain number so the per-message path is one comparison.
        self.grantAt = window - window // 2

    def receive(self, n: int) -> bool:
        """
        Account for ``n`` bytes arriving; return C{False} (and account for
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

    def consume(self, n: int) -> int | None:
        """
        Account for ``n`` bytes consumed by the application.

        @return: the new limit to announce, or C{None} when none is due yet.
        """
        consumed = self.consumed + n
        if consumed > self.received:
            raise ValueError(
                f"consumed {consumed} bytes but only {self.received} arrived"
            )
        self.consumed = consumed
        if self.due():
            return self.grant()
        return None

    def due(self) -> bool:
        """
        Whether a new limit is due.
        """
        return self.consumed >= self.grantAt

    def grant(self) -> int:
        """
        Raise the limit to a full window past what is consumed; return it.
        """
        self.limit = self.consumed + self.window
        self.grantAt = self.limit - self.window // 2
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

    def grant(self) -> int:
        """
        Raise the limit to a full window past what is consumed; return it.
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
        self.used = ordinal + 1
        self.open += 1
        return self.due()

    def closed(self) -> int | None:
        """
        One of the peer's channels closed.  Return a new limit to announce,
        or None.
        """
        self.open -= 1
        return self.due()

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
