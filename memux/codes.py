# -*- test-case-name: memux.test.test_wire -*-
"""
memux's codes, for everyone: the error codes RESET and GOAWAY carry, the
typed error for a peer that breaks the protocol, and the states of a
channel.  Pure: no Twisted, no I/O; the lowest layer, which tools import.
"""

from __future__ import annotations

from enum import Enum, IntEnum

__all__ = [
    "ChannelClosedError",
    "ChannelState",
    "EngineError",
    "ErrorCode",
    "ProtocolError",
    "SessionClosedError",
    "describeCode",
    "describeService",
]


class ErrorCode(IntEnum):
    """
    Error codes carried by RESET and GOAWAY frames (spec: "Error codes").
    """

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    CHANNEL_LIMIT_ERROR = 0x4
    FRAME_SIZE_ERROR = 0x5
    REFUSED = 0x6
    CANCEL = 0x7
    MESSAGE_TOO_LARGE = 0x8
    UNSUPPORTED_VERSION = 0x9
    EXCESSIVE_LOAD = 0xA
    SETTINGS_ERROR = 0xB
    IDLE_TIMEOUT = 0xC
    CONNECT_ERROR = 0xD


def describeCode(code: int) -> str:
    """
    Return the name of an error code, or ``UNKNOWN(0x..)`` for codes this
    version does not define (receivers must accept those).
    """
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"UNKNOWN(0x{code:x})"


def describeService(name: bytes) -> str:
    """
    A service name as user-visible text: quoted, decoded as UTF-8 (bytes
    that are not become backslash escapes), never a Python bytes repr;
    the empty name is the default service.
    """
    if not name:
        return "the default service"
    text = name.decode("utf-8", "backslashreplace")
    return f"'{text}'"


class ProtocolError(Exception):
    """
    The peer broke the protocol.  ``code`` is the `ErrorCode` to send in
    the GOAWAY (or RESET, for channel-level errors) that reports it.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class ChannelState(Enum):
    """
    The state of a channel, as the specification names them (section
    "Channel states"), from one side's point of view.
    """

    #: The id has not been opened (or, on this side, is opened but not yet
    #: announced to the peer).
    IDLE = "IDLE"
    #: Both halves are open.
    OPEN = "OPEN"
    #: This side has sent FIN: it sends no more DATA, but may still receive.
    HALF_CLOSED_LOCAL = "HALF_CLOSED_LOCAL"
    #: This side has received FIN: the peer sends no more DATA.
    HALF_CLOSED_REMOTE = "HALF_CLOSED_REMOTE"
    #: Both FINs exchanged, or a RESET sent or received, or skipped.
    CLOSED = "CLOSED"

    # Members are singletons compared by identity: hash them so too (Enum's
    # own hash is a Python call, and the engine's state table is looked up
    # at every change of state, thousands of times a second under churn).
    __hash__ = object.__hash__


class EngineError(ValueError):
    """
    The session engine was asked to do something it cannot in its state
    (misuse by its caller, not by the peer).  A `ValueError`, as for any
    argument a call cannot take.
    """


class ChannelClosedError(EngineError):
    """
    The channel is not open (never was, or ended), or no longer open for
    writing; ``channel`` is its id.
    """

    def __init__(self, channel: int, message: str) -> None:
        super().__init__(message)
        self.channel = channel


class SessionClosedError(EngineError):
    """
    The session takes no new channel (or command): it has ended, or the
    peer has sent GOAWAY.
    """
