# -*- test-case-name: memux.test.test_aio -*-
"""
The asyncio front end's errors: the same kinds, names, attributes and
words as `memux.error`'s, but built on Python's own `ConnectionError`
family rather than Twisted's ``ConnectionLost`` (which `memux.error`'s
subclass, so this front end cannot raise them without importing Twisted).
"""

from __future__ import annotations

from memux._channel import Ending
from memux.codes import ErrorCode, describeCode

__all__ = [
    "ChannelRefused",
    "ChannelReset",
    "MessageTooLarge",
    "SessionLost",
    "errorFor",
]


class ChannelReset(ConnectionResetError):
    """
    The channel was reset, with the wire error ``code`` and ``reason``.
    ``remote`` says whether the peer reset it or this side did (because
    the peer broke a channel-level rule, or the application called
    `Channel.reset`).
    """

    def __init__(self, code: int, reason: str = "", remote: bool = True) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason
        self.remote = remote

    def __str__(self) -> str:
        who = "peer" if self.remote else "this side"
        text = f"channel reset by {who}: {describeCode(self.code)}"
        return f"{text}: {self.reason}" if self.reason else text


class ChannelRefused(ChannelReset):
    """
    The peer refused the channel (unknown service, not allowed, going
    away).  Nothing was processed, so opening it again elsewhere is safe.
    A services chooser raises it to refuse a channel with a reason.
    """

    def __init__(self, reason: str = "", remote: bool = True) -> None:
        super().__init__(ErrorCode.REFUSED, reason, remote)

    def __str__(self) -> str:
        return f"channel refused: {self.reason}" if self.reason else "channel refused"


class MessageTooLarge(ChannelReset):
    """
    A message on the channel exceeded the maximum message size; the
    channel was reset with code MESSAGE_TOO_LARGE.
    """

    def __init__(self, reason: str = "", remote: bool = False) -> None:
        super().__init__(ErrorCode.MESSAGE_TOO_LARGE, reason, remote)


class SessionLost(ConnectionError):
    """
    The session carrying the channel ended before the channel did.
    ``code`` is the wire error code when the session ended on an error
    (a protocol violation, a GOAWAY with an error), else None.
    """

    def __init__(self, reason: str = "", code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code

    def __str__(self) -> str:
        text = "memux session lost"
        if self.code is not None:
            text += f" ({describeCode(self.code)})"
        return f"{text}: {self.reason}" if self.reason else text


def errorFor(ending: Ending) -> BaseException | None:
    """
    The error a channel that ended so raises to its application: None for
    a clean end, else the typed error (never a clean end for an abnormal
    one).
    """
    kind = ending.kind
    if kind == "done":
        return None
    if kind == "aborted":
        return ConnectionAbortedError("the channel was aborted by this side")
    if kind == "failed":
        cause = ending.cause
        if isinstance(cause, BaseException):
            return cause
        return ChannelReset(ErrorCode.INTERNAL_ERROR, "internal error", remote=False)
    if kind == "lost":
        return SessionLost(ending.reason, ending.code)
    code = ending.code
    assert code is not None
    if code == ErrorCode.REFUSED:
        return ChannelRefused(ending.reason, ending.remote)
    if code == ErrorCode.MESSAGE_TOO_LARGE:
        return MessageTooLarge(ending.reason, ending.remote)
    return ChannelReset(code, ending.reason, ending.remote)
