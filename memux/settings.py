# -*- test-case-name: memux.test.test_engine -*-
"""
memux's settings and limits, for everyone: `SessionSettings` (one side's
configuration of a session), the settings a peer announces (`Settings`),
and the protocol's fixed limits.  Pure: no Twisted, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from memux._wire import (
    ALPN,
    MAX_NAME_LENGTH,
    MAX_PING_PAYLOAD,
    OpenFrame,
    Settings,
)

__all__ = [
    "ALPN",
    "DEFAULT_URGENCY",
    "DEFAULT_WEIGHT",
    "MAX_URGENCY",
    "MAX_WEIGHT",
    "Priority",
    "checkPriority",
    "MAX_NAME_LENGTH",
    "MAX_OPEN_PAYLOAD",
    "MAX_PING_PAYLOAD",
    "MAX_REASON_BYTES",
    "SessionSettings",
    "Settings",
    "openFrameSize",
]

#: Reasons in RESET and GOAWAY frames are cut to this many bytes, so the
#: frame always fits the peer's MAX_FRAME_SIZE (at least 16384).
MAX_REASON_BYTES: Final = 1024

#: The largest OPEN frame payload: it may go out before the peer's preface,
#: so it must fit the initial MAX_FRAME_SIZE.
MAX_OPEN_PAYLOAD: Final = 16384


#: The urgency of a channel nobody gave one (as RFC 9218's default, 3):
#: urgencies run from 0, the most urgent, to `MAX_URGENCY`, the least.
DEFAULT_URGENCY: Final = 3
#: The least urgent urgency (a channel for background transfers).
MAX_URGENCY: Final = 7
#: The weight of a channel nobody gave one: within an urgency class,
#: channels share the output in proportion to their weights.
DEFAULT_WEIGHT: Final = 16
#: The largest weight (the smallest is 1).
MAX_WEIGHT: Final = 256


@dataclass(frozen=True, slots=True)
class Priority:
    """
    A channel's output priority: its urgency class (0, the most urgent, to
    7) and its weight within the class (1 to 256).  A more urgent channel
    always sends first; channels of one class share by bytes in proportion
    to their weights.  (Build valid ones with `checkPriority`.)
    """

    #: 0, the most urgent, to `MAX_URGENCY`
    urgency: int = DEFAULT_URGENCY
    #: 1 to `MAX_WEIGHT`: the share within the urgency
    weight: int = DEFAULT_WEIGHT


def checkPriority(urgency: object, weight: object = DEFAULT_WEIGHT) -> Priority:
    """
    ``urgency`` and ``weight`` as a `Priority`, if they are valid.

    :raises TypeError: if either is not an integer.
    :raises ValueError: if the urgency is not within 0 to `MAX_URGENCY`,
        or the weight not within 1 to `MAX_WEIGHT`.
    """
    for name, value in (("urgency", urgency), ("weight", weight)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    assert isinstance(urgency, int) and isinstance(weight, int)
    if not 0 <= urgency <= MAX_URGENCY:
        raise ValueError(
            f"urgency must be from 0 (most urgent) to {MAX_URGENCY}, not {urgency}"
        )
    if not 1 <= weight <= MAX_WEIGHT:
        raise ValueError(f"weight must be from 1 to {MAX_WEIGHT}, not {weight}")
    return Priority(urgency, weight)


def openFrameSize(
    service: bytes,
    metadata: bytes | None = None,
    destination: tuple[str, int] | None = None,
    lossy: bool = False,
) -> int:
    """
    The size of the frame that opens a channel for ``service`` with
    ``metadata`` and ``destination``: at most `MAX_OPEN_PAYLOAD`, else the
    channel cannot be opened.

    :raises ValueError: if a name is longer than `MAX_NAME_LENGTH` or the
        destination's port is out of range.
    """
    return len(OpenFrame(1, service, metadata, destination, lossy).encode())


@dataclass(frozen=True)
class SessionSettings:
    """
    One side's configuration of a session.  The first four are announced
    to the peer in the preface and bound what it may send us.
    """

    #: largest frame payload we accept
    maxFrameSize: int = 65536
    #: credit window per channel: the most unconsumed bytes held per channel.
    #: It caps one channel's throughput at window / round trip; 1 MiB keeps
    #: a single bulk channel within a few percent of raw TCP on loopback.
    channelCredit: int = 1024 * 1024
    #: the largest a channel's credit window grows to when it is held back
    #: by its window rather than by its reader (receive-window auto-tuning,
    #: see the spec's "Window auto-tuning"): a busy channel's window doubles
    #: while its grants come faster than every two round trips, and goes
    #: back to ``channelCredit`` once the channel idles.  None: half the
    #: session window (so one channel never takes all of it), at most 16
    #: MiB; equal to ``channelCredit``: no auto-tuning.  Memory stays
    #: bounded by ``sessionCredit`` whatever it is.  Local: not announced.
    maxChannelCredit: int | None = None
    #: credit window for the session: the most unconsumed bytes held in all
    #: channels together, whatever the peer does.  It is what bounds memory,
    #: so channels whose readers are paused share it: 32 fully stalled
    #: channels at the default windows before others slow down.
    sessionCredit: int = 32 * 1024 * 1024
    #: the most channels the peer may have open with us at once
    maxChannels: int = 1024
    #: the largest message delivered whole to an IMessageReceiver
    maxMessageSize: int = 16 * 1024 * 1024
    #: the largest chunk we send (and never more than the peer accepts):
    #: smaller interleaves channels more finely, larger costs less CPU
    chunkSize: int = 65536
    #: seconds a session may stay with no channel open before it is ended
    #: (GOAWAY IDLE_TIMEOUT); None: never.  Kept by the Twisted layer: the
    #: engine itself knows no time.
    idleTimeout: float | None = None
    #: frames that do no work (PINGs, empty DATA, CREDIT or CHANNELS that
    #: raise no limit, repeated GOAWAYs, unknown frame types, RESETs of
    #: channels the peer opened before we sent anything on them: "rapid
    #: reset") the peer may send in a burst.  Past it the session ends with
    #: GOAWAY EXCESSIVE_LOAD.  The allowance refills by one for every
    #: `usefulBytesPerFrame` DATA payload bytes moved either way (up to this
    #: many), and, in the Twisted layer, fully every LOAD_BUDGET_PERIOD
    #: seconds, so a keepalive PING now and then never trips it.
    maxUselessFrames: int = 1000
    #: DATA payload bytes, received or sent, that earn one more useless frame
    usefulBytesPerFrame: int = 1024
    #: seconds with nothing received after which the Twisted layer sends a
    #: PING; if again nothing at all arrives for as long, the peer is taken
    #: for dead: GOAWAY IDLE_TIMEOUT ("the peer unresponsive", in the spec)
    #: is sent and the connection closed.  None: never.  Kept by the Twisted
    #: layer.
    keepAliveInterval: float | None = None
    #: seconds the connection may take none of our output (its buffer full,
    #: the session paused, or a close waiting on unsent bytes) before the
    #: Twisted layer aborts it: a peer that stops reading (CVE-2019-9517)
    #: holds a connection and its buffers this long at most.  A connection
    #: resumes us only once its buffer has drained, so this also bounds how
    #: slowly a peer may read: about 192 KiB (Twisted's 64 KiB buffer plus one
    #: flush) per writeTimeout.  60 s, as nginx's send_timeout.  None: never.
    writeTimeout: float | None = 60.0
    #: seconds after the connection is made within which the peer's whole
    #: preface must arrive, else the Twisted layer aborts it (slowloris).
    #: Over TLS the session starts before the TLS handshake, so this bounds
    #: the handshake too.  20 s leaves room for a TCP sender's retransmission
    #: backoff (1+2+4+8 s) on a lossy link.  None: never.
    handshakeTimeout: float | None = 20.0
    #: whether the peer may ask us (with PRIORITY frames, see the spec's
    #: "Priority hints") to send a channel's data at another priority; we
    #: say so in our preface, and a peer told no sends none.  False: only
    #: our own application sets the priorities we send at.
    acceptPriorityHints: bool = True

    def __post_init__(self) -> None:
        self.toWire()  # validates ranges
        if self.maxChannelCredit is not None and not (
            self.channelCredit <= self.maxChannelCredit <= self.sessionCredit
        ):
            raise ValueError(
                "maxChannelCredit must be between channelCredit and sessionCredit"
                " (or None: the default)"
            )
        if self.maxMessageSize < 1:
            raise ValueError("maxMessageSize must be positive")
        if self.chunkSize < 1:
            raise ValueError("chunkSize must be positive")
        if self.idleTimeout is not None and not self.idleTimeout > 0:
            raise ValueError("idleTimeout must be positive (or None: never)")
        if self.maxUselessFrames < 1:
            raise ValueError("maxUselessFrames must be positive")
        if self.usefulBytesPerFrame < 1:
            raise ValueError("usefulBytesPerFrame must be positive")
        if self.keepAliveInterval is not None and not self.keepAliveInterval > 0:
            raise ValueError("keepAliveInterval must be positive (or None: never)")
        if self.writeTimeout is not None and not self.writeTimeout > 0:
            raise ValueError("writeTimeout must be positive (or None: never)")
        if self.handshakeTimeout is not None and not self.handshakeTimeout > 0:
            raise ValueError("handshakeTimeout must be positive (or None: never)")

    @property
    def channelCreditLimit(self) -> int:
        """
        The largest a channel's window grows to (`maxChannelCredit`, or its
        default).
        """
        if self.maxChannelCredit is not None:
            return self.maxChannelCredit
        return max(self.channelCredit, min(16 * 1024 * 1024, self.sessionCredit // 2))

    def toWire(self) -> Settings:
        """
        The settings announced in our preface.
        """
        return Settings(
            maxFrameSize=self.maxFrameSize,
            initialChannelCredit=self.channelCredit,
            initialSessionCredit=self.sessionCredit,
            initialMaxChannels=self.maxChannels,
            maxMessageSize=self.maxMessageSize,
            priorityHints=int(self.acceptPriorityHints),
        )
