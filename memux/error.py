# -*- test-case-name: memux.test.test_protocol -*-
"""
Typed errors that reach channel protocols through ``connectionLost`` and
Deferreds.  Each carries the wire error code where there is one.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionLost

from memux.codes import ErrorCode, ProtocolError, describeCode, describeService

__all__ = [
    "ChannelRefused",
    "ChannelReset",
    "MessageTooLarge",
    "ProtocolError",
    "SessionLost",
    "describeService",
]


class ChannelReset(ConnectionLost):
    """
    The channel was reset.  ``remote`` says whether the peer reset it or
    this side did (because the peer broke a channel-level rule).
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


class SessionLost(ConnectionLost):
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
