# -*- test-case-name: memux.test.test_engine -*-
"""
The credit ("invitation") policy: when a receiver grants more credit.

This is the one place that decides it.  Credit is granted as the
application *consumes* data, never merely on receipt, so a slow reader
stalls only its own channel and a receiver never holds more than one
window of unconsumed data per channel (and per session).
"""

from __future__ import annotations

__all__ = ["CreditWindow"]


class CreditWindow:
    """
    Receive-side credit for one channel, or for the whole session.

    The limit is an absolute offset: the peer may send until it has sent
    ``limit`` bytes in all.  ``received - consumed`` is what the receiver
    holds; it never exceeds ``window``.

    A new limit is announced once the application has consumed half a
    window since the last announcement: few CREDIT frames, and the sender
    never idles while the receiver keeps up.
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
        if consumed >= self.grantAt:
            return self.grant()
        return None

    def grant(self) -> int:
        """
        Raise the limit to a full window past what is consumed (due once
        ``consumed`` reaches ``grantAt``, half a window since the last
        announcement); return it.
        """
        self.limit = self.consumed + self.window
        self.grantAt = self.limit - self.window // 2
        return self.limit
