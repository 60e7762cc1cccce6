# -*- test-case-name: memux.test.test_wire -*-
"""
The memux wire format: varints, the preface, frames and an incremental decoder.

Pure functions and plain data, no Twisted and no I/O.  Everything here is
normative in ``doc/spec.rst``; the section names in comments refer to it.

Every frame is ``type-byte | channel (varint) | length (varint) | payload``.
The type byte holds the frame type in its high nibble and four flag bits in
its low nibble, so the flags that matter on the hot path (end of message,
half-close, open) cost no extra byte.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from memux.codes import ErrorCode, ProtocolError, describeCode

__all__ = [
    "ALPN",
    "MAGIC",
    "VERSION",
    "ErrorCode",
    "FrameType",
    "ProtocolError",
    "describeCode",
    "Settings",
    "Preface",
    "DataFrame",
    "OpenFrame",
    "CreditFrame",
    "ResetFrame",
    "PingFrame",
    "GoAwayFrame",
    "ChannelCreditFrame",
    "DropFrame",
    "PriorityFrame",
    "UnknownFrame",
    "Frame",
    "FrameDecoder",
    "encodeVarint",
    "decodeVarint",
    "encodePreface",
]

#: The first eight bytes each side sends (spec: "Preface").  The leading
#: 0x89 is not ASCII (so not an HTTP/1 method, "PRI" of HTTP/2 or "SSH-")
#: and not 0x16 (a TLS handshake record); CR LF, 0x1A, LF detect newline
#: translation, as in PNG.
MAGIC = b"\x89MUX\r\n\x1a\n"

#: The protocol version this module speaks.
VERSION = 1

#: The ALPN protocol identifier of memux version 1 (spec: "Connection roles
#: and ALPN").
ALPN = b"memux/1"

#: Largest value a varint may carry: 2**63 - 1, nine bytes of seven bits.
MAX_VARINT = (1 << 63) - 1

#: Largest settings block a preface may carry, in bytes.
MAX_SETTINGS_BLOCK = 1024

#: Largest PING payload, in bytes.
MAX_PING_PAYLOAD = 64

#: Largest service name and destination host, in bytes.
MAX_NAME_LENGTH = 255


class FrameType(IntEnum):
    """
    Frame types: the high nibble of the type byte (spec: "Frames").
    Types 0x8 to 0xF are reserved; receivers ignore frames of those types.
    """

    DATA = 0x0
    OPEN = 0x1
    CREDIT = 0x2
    RESET = 0x3
    PING = 0x4
    GOAWAY = 0x5
    CHANNELS = 0x6
    DROP = 0x7


# Flag bits, the low nibble of the type byte.
DATA_END: Final = 0x1  #: this chunk ends a message
DATA_FIN: Final = 0x2  #: the sender sends nothing more on this channel
DATA_OPEN: Final = 0x4  #: this frame opens the channel for the default service
OPEN_METADATA: Final = 0x1  #: the OPEN payload carries metadata
OPEN_DESTINATION: Final = 0x2  #: the OPEN payload carries a destination host/port
OPEN_LOSSY: Final = 0x4  #: the channel allows load shedding (DROP frames)
PING_ACK: Final = 0x1  #: this PING answers one from the peer

#: The frame type of extension frames (spec: "Reserved and extension
#: frames"), whose payload starts with an extended type.
EXTENSION = 0xF
#: The extended type of PRIORITY (spec: "Priority hints").
EXT_PRIORITY = 0x1


# ---------------------------------------------------------------- varints


def encodeVarint(value: int) -> bytes:
    """
    Encode a non-negative integer as an unsigned LEB128 varint: seven bits a
    byte, least significant group first, high bit set on all but the last.
    """
    if value < 0x80:
        if value < 0:
            raise ValueError(f"varint must be non-negative, not {value}")
        return bytes((value,))
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    if value > MAX_VARINT:
        raise ValueError(f"varint must be at most 2**63-1, not {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decodeVarint(buf: bytes | bytearray, pos: int = 0) -> tuple[int, int] | None:
    """
    Decode a varint from ``buf`` at ``pos``.

    :returns: ``(value, nextPos)``, or ``None`` when ``buf`` ends before the
        varint does.
    :raises ProtocolError: the varint is longer than nine bytes or not in its
        shortest form.
    """
    end = len(buf)
    if pos < end and buf[pos] < 0x80:
        return buf[pos], pos + 1
    if pos + 1 < end and 0 < buf[pos + 1] < 0x80:
        # Two bytes, the next most common case (channels 128..16383).
        return (buf[pos] & 0x7F) | (buf[pos + 1] << 7), pos + 2
    if pos + 2 < end and buf[pos + 1] >= 0x80 and 0 < buf[pos + 2] < 0x80:
        # Three bytes (channels 16384..2097151: long-lived sessions).
        return (
            (buf[pos] & 0x7F) | ((buf[pos + 1] & 0x7F) << 7) | (buf[pos + 2] << 14),
            pos + 3,
        )
    value = 0
    shift = 0
    i = pos
    while i < end:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if b == 0:
                raise ProtocolError(
                    ErrorCode.PROTOCOL_ERROR, "varint not in its shortest form"
                )
            return value, i
        if i - pos == 9:
            raise ProtocolError(
                ErrorCode.PROTOCOL_ERROR, "varint longer than nine bytes"
            )
        shift += 7
    return None


def _field(payload: bytes, pos: int, what: str) -> tuple[int, int]:
    """
    Decode a varint that must lie wholly inside a frame's payload.
    """
    r = decodeVarint(payload, pos)
    if r is None:
        raise ProtocolError(ErrorCode.PROTOCOL_ERROR, f"{what} runs past the frame")
    return r


def _bytesField(payload: bytes, pos: int, what: str, limit: int) -> tuple[bytes, int]:
    """
    Decode a length-prefixed byte string inside a frame's payload.
    """
    n, pos = _field(payload, pos, what + " length")
    if n > limit:
        raise ProtocolError(
            ErrorCode.PROTOCOL_ERROR, f"{what} of {n} bytes exceeds {limit}"
        )
    if pos + n > len(payload):
        raise ProtocolError(ErrorCode.PROTOCOL_ERROR, f"{what} runs past the frame")
    return payload[pos : pos + n], pos + n


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(
            ErrorCode.PROTOCOL_ERROR, f"{what} is not valid UTF-8"
        ) from None


# ---------------------------------------------------------------- settings


class SettingId(IntEnum):
    """
    Identifiers of the settings carried in the preface (spec: "Settings").
    """

    MAX_FRAME_SIZE = 0x1
    INITIAL_CHANNEL_CREDIT = 0x2
    INITIAL_SESSION_CREDIT = 0x3
    INITIAL_MAX_CHANNELS = 0x4
    MAX_MESSAGE_SIZE = 0x5
    PRIORITY_HINTS = 0x6


#: Initial value, lower bound and upper bound of each setting.  Until a
#: side has read its peer's preface it assumes the initial values, which is
#: why no setting (but the advisory MAX_MESSAGE_SIZE) may go below them.
SETTING_BOUNDS: dict[SettingId, tuple[int, int, int]] = {
    SettingId.MAX_FRAME_SIZE: (16384, 16384, (1 << 24) - 1),
    SettingId.INITIAL_CHANNEL_CREDIT: (65536, 65536, MAX_VARINT),
    SettingId.INITIAL_SESSION_CREDIT: (262144, 262144, MAX_VARINT),
    SettingId.INITIAL_MAX_CHANNELS: (100, 100, MAX_VARINT),
    SettingId.MAX_MESSAGE_SIZE: (0, 0, MAX_VARINT),
    SettingId.PRIORITY_HINTS: (0, 0, 1),
}

_SETTING_ATTRS = {
    SettingId.MAX_FRAME_SIZE: "maxFrameSize",
    SettingId.INITIAL_CHANNEL_CREDIT: "initialChannelCredit",
    SettingId.INITIAL_SESSION_CREDIT: "initialSessionCredit",
    SettingId.INITIAL_MAX_CHANNELS: "initialMaxChannels",
    SettingId.MAX_MESSAGE_SIZE: "maxMessageSize",
    SettingId.PRIORITY_HINTS: "priorityHints",
}


@dataclass(frozen=True)
class Settings:
    """
    One side's session settings, fixed for the life of the session.  Each
    limits what the *peer* may send to the side that announces it.

    The defaults here are the protocol's initial values; `memux`'s own
    defaults (larger) live in ``memux._engine.DEFAULT_SETTINGS``.
    """

    maxFrameSize: int = 16384
    initialChannelCredit: int = 65536
    initialSessionCredit: int = 262144
    initialMaxChannels: int = 100
    #: advisory: the largest message this side accepts; 0 means unstated
    maxMessageSize: int = 0
    #: 1: this side accepts PRIORITY frames (spec: "Priority hints")
    priorityHints: int = 0

    def __post_init__(self) -> None:
        for sid, attr in _SETTING_ATTRS.items():
            value = getattr(self, attr)
            _, low, high = SETTING_BOUNDS[sid]
            if not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{attr} must be an integer in [{low}, {high}]")

    def encode(self) -> bytes:
        """
        Encode as a settings block: pairs of varints (id, value), in id
        order, omitting settings at their initial value.
        """
        out = bytearray()
        for sid, attr in _SETTING_ATTRS.items():
            value = getattr(self, attr)
            if value != SETTING_BOUNDS[sid][0]:
                out += encodeVarint(sid)
                out += encodeVarint(value)
        return bytes(out)

    @classmethod
    def decode(cls, block: bytes) -> Settings:
        """
        Decode a settings block; unknown ids are ignored, repeated ids and
        out-of-range values are a `~memux.codes.ProtocolError` (SETTINGS_ERROR).
        """
        values: dict[str, int] = {}
        seen: set[int] = set()
        pos = 0
        while pos < len(block):
            sid, pos = _field(block, pos, "setting id")
            value, pos = _field(block, pos, "setting value")
            if sid in seen:
                raise ProtocolError(
                    ErrorCode.SETTINGS_ERROR, f"setting 0x{sid:x} repeated"
                )
            seen.add(sid)
            try:
                known = SettingId(sid)
            except ValueError:
                continue
            _, low, high = SETTING_BOUNDS[known]
            if not low <= value <= high:
                raise ProtocolError(
                    ErrorCode.SETTINGS_ERROR,
                    f"{known.name} = {value} outside [{low}, {high}]",
                )
            values[_SETTING_ATTRS[known]] = value
        return cls(**values)


@dataclass(frozen=True)
class Preface:
    """
    The peer's preface: the version it speaks and its settings.
    """

    version: int
    settings: Settings


def encodePreface(settings: Settings, version: int = VERSION) -> bytes:
    """
    Encode the preface: magic, version, settings block length, settings.
    """
    block = settings.encode()
    return MAGIC + encodeVarint(version) + encodeVarint(len(block)) + block


def _describeForeign(data: bytes) -> str:
    """
    Say what a stream that does not start with the memux magic looks like,
    so that a misdirected client gets a useful error.
    """
    if data[:1] == b"\x16":
        return "a TLS handshake (TLS to a port that does not speak it?)"
    if data[:2] == b"\x15\x03":
        return "a TLS alert (TLS to a port that does not speak it?)"
    if data.startswith(b"PRI * HTTP/2"):
        return "an HTTP/2 preface"
    if data.startswith(b"SSH-"):
        return "an SSH banner"
    head = data.split(b" ", 1)[0]
    if head in (b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"CONNECT"):
        return "an HTTP/1 request"
    if head.startswith(b"HTTP/"):
        return "an HTTP/1 response"
    return f"bytes {data[:8]!r}"


# ---------------------------------------------------------------- frames


# Not frozen: a frozen dataclass pays object.__setattr__ per field, and this
# is built once per chunk received.  Treat it as immutable all the same.
@dataclass(slots=True)
class DataFrame:
    """
    A chunk of a message on a channel (spec: "DATA").
    """

    channel: int
    data: bytes = b""
    end: bool = False
    fin: bool = False
    open: bool = False

    # Written out, not generated: compiled (mypyc), a dataclass's generated
    # ``__init__`` stays interpreted Python, called through ``tp_init`` with
    # an argument tuple and setting each field through its descriptor (some
    # 1,500 instructions a frame); this one is a native call.
    def __init__(
        self,
        channel: int,
        data: bytes = b"",
        end: bool = False,
        fin: bool = False,
        open: bool = False,
    ) -> None:
        self.channel = channel
        self.data = data
        self.end = end
        self.fin = fin
        self.open = open

    def encode(self) -> bytes:
        flags = (
            (DATA_END if self.end else 0)
            | (DATA_FIN if self.fin else 0)
            | (DATA_OPEN if self.open else 0)
        )
        return encodeDataHeader(self.channel, len(self.data), flags) + self.data


def encodeDataHeader(channel: int, length: int, flags: int) -> bytes:
    """
    Encode the header of a DATA frame whose payload the caller sends after
    it (the hot path: no payload copy).
    """
    if length < 0x80:
        if channel < 0x80:
            return bytes((flags, channel, length))
        if channel < 0x4000:
            return bytes((flags, (channel & 0x7F) | 0x80, channel >> 7, length))
        if channel < 0x200000:
            # Three-byte ids: a long-lived session's churn gets there.
            return bytes(
                (
                    flags,
                    (channel & 0x7F) | 0x80,
                    ((channel >> 7) & 0x7F) | 0x80,
                    channel >> 14,
                    length,
                )
            )
    return bytes((flags,)) + encodeVarint(channel) + encodeVarint(length)


def _frame(ftype: int, flags: int, channel: int, payload: bytes) -> bytes:
    return (
        bytes(((ftype << 4) | flags,))
        + encodeVarint(channel)
        + encodeVarint(len(payload))
        + payload
    )


@dataclass(frozen=True, slots=True)
class OpenFrame:
    """
    Open a channel for a named service (spec: "OPEN").
    """

    channel: int
    service: bytes
    metadata: bytes | None = None
    destination: tuple[str, int] | None = None
    lossy: bool = False

    def encode(self) -> bytes:
        service = self.service
        n = len(service)
        cid = self.channel
        if n < 0x7F and cid < 0x4000 and self.metadata is None:
            if self.destination is None:
                # The common opening, inline (one per channel opened): a
                # short name, no metadata or destination, a one- or
                # two-byte channel id; the payload's length is one byte.
                typeByte = 0x10 | (OPEN_LOSSY if self.lossy else 0)  # OPEN
                if cid < 0x80:
                    head = bytes((typeByte, cid, n + 1, n))
                else:
                    low = (cid & 0x7F) | 0x80
                    head = bytes((typeByte, low, cid >> 7, n + 1, n))
                return head + service
        if n > MAX_NAME_LENGTH:
            raise ValueError("service name longer than 255 bytes")
        flags = OPEN_LOSSY if self.lossy else 0
        payload = encodeVarint(len(self.service)) + self.service
        if self.metadata is not None:
            flags |= OPEN_METADATA
            payload += encodeVarint(len(self.metadata)) + self.metadata
        if self.destination is not None:
            flags |= OPEN_DESTINATION
            host, port = self.destination
            rawHost = host.encode("utf-8")
            if len(rawHost) > MAX_NAME_LENGTH or not 0 <= port <= 0xFFFF:
                raise ValueError(f"bad destination {self.destination!r}")
            payload += encodeVarint(len(rawHost)) + rawHost + encodeVarint(port)
        return _frame(FrameType.OPEN, flags, self.channel, payload)


@dataclass(frozen=True, slots=True)
class CreditFrame:
    """
    Raise the limit on the data offset the peer may send to, on a channel
    or (channel 0) on the whole session (spec: "CREDIT").
    """

    channel: int
    limit: int

    def encode(self) -> bytes:
        return _frame(FrameType.CREDIT, 0, self.channel, encodeVarint(self.limit))


@dataclass(frozen=True, slots=True)
class ResetFrame:
    """
    Abort a channel in both directions, with a code and reason (spec:
    "RESET").  Code REFUSED is a refusal: the channel was not processed.
    """

    channel: int
    code: int
    reason: str = ""

    def encode(self) -> bytes:
        payload = encodeVarint(self.code) + self.reason.encode("utf-8")
        return _frame(FrameType.RESET, 0, self.channel, payload)


@dataclass(frozen=True, slots=True)
class PingFrame:
    """
    A liveness and round-trip probe, or (``ack``) its answer (spec: "PING").
    """

    payload: bytes = b""
    ack: bool = False

    def encode(self) -> bytes:
        if len(self.payload) > MAX_PING_PAYLOAD:
            raise ValueError("PING payload longer than 64 bytes")
        return _frame(FrameType.PING, PING_ACK if self.ack else 0, 0, self.payload)


@dataclass(frozen=True, slots=True)
class GoAwayFrame:
    """
    The sender will process no channel the receiver opens above
    ``lastChannel`` (spec: "GOAWAY").
    """

    lastChannel: int
    code: int = ErrorCode.NO_ERROR
    reason: str = ""

    def encode(self) -> bytes:
        payload = (
            encodeVarint(self.lastChannel)
            + encodeVarint(self.code)
            + self.reason.encode("utf-8")
        )
        return _frame(FrameType.GOAWAY, 0, 0, payload)


@dataclass(frozen=True, slots=True)
class ChannelCreditFrame:
    """
    Raise the cumulative number of channels the peer may open (spec:
    "CHANNELS").
    """

    limit: int

    def encode(self) -> bytes:
        return _frame(FrameType.CHANNELS, 0, 0, encodeVarint(self.limit))


@dataclass(frozen=True, slots=True)
class DropFrame:
    """
    The sender discarded ``count`` whole messages on a lossy channel (spec:
    "DROP").
    """

    channel: int
    count: int

    def encode(self) -> bytes:
        return _frame(FrameType.DROP, 0, self.channel, encodeVarint(self.count))


@dataclass(frozen=True, slots=True)
class PriorityFrame:
    """
    A priority hint (spec: "Priority hints"): the sender asks the receiver
    to send its data on ``channel`` at ``urgency`` (0 to 7, most urgent
    first) and ``weight`` (1 to 256).  An extension frame (type 0xF): a
    receiver that does not know it ignores it.
    """

    channel: int
    urgency: int
    weight: int

    def encode(self) -> bytes:
        payload = (
            encodeVarint(EXT_PRIORITY)
            + encodeVarint(self.urgency)
            + encodeVarint(self.weight)
        )
        return _frame(EXTENSION, 0, self.channel, payload)


def _parsePriority(channel: int, payload: bytes) -> PriorityFrame | None:
    """
    The PRIORITY frame in an extension frame's ``payload`` (its extended
    type read), or None if it does not match the layout (spec: such a
    frame is ignored, as an unknown extension frame).
    """
    try:
        urgency, pos = _field(payload, 1, "urgency")
        weight, pos = _field(payload, pos, "weight")
    except ProtocolError:
        return None
    if pos != len(payload) or channel == 0 or urgency > 7 or not 1 <= weight <= 256:
        return None
    return PriorityFrame(channel, urgency, weight)


@dataclass(frozen=True, slots=True)
class UnknownFrame:
    """
    A frame of a reserved type, which receivers ignore.
    """

    type: int
    flags: int
    channel: int
    payload: bytes = field(default=b"")

    def encode(self) -> bytes:
        return _frame(self.type, self.flags, self.channel, self.payload)


Frame = (
    DataFrame
    | OpenFrame
    | CreditFrame
    | ResetFrame
    | PingFrame
    | GoAwayFrame
    | ChannelCreditFrame
    | DropFrame
    | PriorityFrame
    | UnknownFrame
)


def _needChannel(ftype: FrameType, channel: int) -> None:
    if channel == 0:
        raise ProtocolError(
            ErrorCode.PROTOCOL_ERROR, f"{ftype.name} frame on channel 0"
        )


def _needSession(ftype: FrameType, channel: int) -> None:
    if channel != 0:
        raise ProtocolError(
            ErrorCode.PROTOCOL_ERROR, f"{ftype.name} frame on channel {channel}"
        )


def _single(ftype: FrameType, payload: bytes) -> int:
    """
    Decode a payload that is exactly one varint.
    """
    value, pos = _field(payload, 0, ftype.name + " value")
    if pos != len(payload):
        raise ProtocolError(
            ErrorCode.PROTOCOL_ERROR, f"{ftype.name} frame has trailing bytes"
        )
    return value


def parseFrame(typeByte: int, channel: int, payload: bytes) -> Frame:
    """
    Build the frame object for a frame whose header has been read.

    :raises ProtocolError: the payload is malformed for its type.
    """
    t = typeByte >> 4
    flags = typeByte & 0x0F
    if t == FrameType.DATA:
        _needChannel(FrameType.DATA, channel)
        return DataFrame(
            channel,
            payload,
            bool(flags & DATA_END),
            bool(flags & DATA_FIN),
            bool(flags & DATA_OPEN),
        )
    if t == FrameType.CREDIT:
        return CreditFrame(channel, _single(FrameType.CREDIT, payload))
    if t == FrameType.OPEN:
        _needChannel(FrameType.OPEN, channel)
        if not flags & (OPEN_METADATA | OPEN_DESTINATION) and payload:
            n = payload[0]
            if n < 0x80 and len(payload) == n + 1:
                # The common opening (one per channel): a short name alone.
                lossy = bool(flags & OPEN_LOSSY)
                return OpenFrame(channel, payload[1:], None, None, lossy)
        service, pos = _bytesField(payload, 0, "service name", MAX_NAME_LENGTH)
        metadata: bytes | None = None
        destination: tuple[str, int] | None = None
        if flags & OPEN_METADATA:
            metadata, pos = _bytesField(payload, pos, "metadata", len(payload))
        if flags & OPEN_DESTINATION:
            rawHost, pos = _bytesField(
                payload, pos, "destination host", MAX_NAME_LENGTH
            )
            port, pos = _field(payload, pos, "destination port")
            if port > 0xFFFF:
                raise ProtocolError(
                    ErrorCode.PROTOCOL_ERROR, f"destination port {port} > 65535"
                )
            destination = (_utf8(rawHost, "destination host"), port)
        if pos != len(payload):
            raise ProtocolError(
                ErrorCode.PROTOCOL_ERROR, "OPEN frame has trailing bytes"
            )
        return OpenFrame(
            channel, service, metadata, destination, bool(flags & OPEN_LOSSY)
        )
    if t == FrameType.RESET:
        _needChannel(FrameType.RESET, channel)
        code, pos = _field(payload, 0, "RESET code")
        return ResetFrame(channel, code, _utf8(payload[pos:], "RESET reason"))
    if t == FrameType.PING:
        _needSession(FrameType.PING, channel)
        if len(payload) > MAX_PING_PAYLOAD:
            raise ProtocolError(
                ErrorCode.FRAME_SIZE_ERROR, f"PING payload of {len(payload)} bytes > 64"
            )
        return PingFrame(payload, bool(flags & PING_ACK))
    if t == FrameType.GOAWAY:
        _needSession(FrameType.GOAWAY, channel)
        last, pos = _field(payload, 0, "GOAWAY last channel")
        code, pos = _field(payload, pos, "GOAWAY code")
        return GoAwayFrame(last, code, _utf8(payload[pos:], "GOAWAY reason"))
    if t == FrameType.CHANNELS:
        _needSession(FrameType.CHANNELS, channel)
        return ChannelCreditFrame(_single(FrameType.CHANNELS, payload))
    if t == FrameType.DROP:
        _needChannel(FrameType.DROP, channel)
        count = _single(FrameType.DROP, payload)
        if count == 0:
            raise ProtocolError(ErrorCode.PROTOCOL_ERROR, "DROP of zero messages")
        return DropFrame(channel, count)
    if t == EXTENSION and payload[:1] == b"\x01":  # (EXT_PRIORITY)
        priority = _parsePriority(channel, payload)
        if priority is not None:
            return priority
    return UnknownFrame(t, flags, channel, payload)


# ---------------------------------------------------------------- decoder


class FrameDecoder:
    """
    Incremental decoder of one direction of a session: the preface, then
    frames.  Input may be split at any byte.

    `receive` returns the complete items (a `Preface` first, then frames)
    and keeps any partial one for the next call.  Any malformed input raises
    `ProtocolError`; after that the decoder must not be used again.

    Memory held is bounded: at most one frame of ``maxFrameSize`` payload
    plus its header, or one preface; and, after a `receive` cut short by its
    ``limit``, the rest of the input it was given.
    """

    def __init__(
        self, maxFrameSize: int = SETTING_BOUNDS[SettingId.MAX_FRAME_SIZE][0]
    ) -> None:
        self.maxFrameSize = maxFrameSize
        # A frame whose header has arrived but not all its payload:
        # (type byte, channel, length), and the payload pieces so far, as
        # views of the reads they came in.  They are joined once, when the
        # frame is complete: a large frame costs one copy, not one per read.
        self._frame: tuple[int, int, int] | None = None
        self._pieces: list[bytes | memoryview] = []
        self._have = 0
        # A header (or preface) cut short: a few bytes, prefixed to the next
        # read.
        self._head = b""
        self._prefaceDone = False
        #: whether the last `receive` stopped at its ``limit`` with input
        #: left over, held: ``receive(b"")`` goes on with it
        self.backlogged = False
        # That input: the read it stopped in, and where (not a copy of the
        # rest: a flood is worked through in many calls).
        self._rest = b""
        self._restPos = 0

    @property
    def buffered(self) -> int:
        """
        How many bytes of a partial item (or of a backlog) are held.
        """
        return self._have + len(self._head) + len(self._rest) - self._restPos

    def receive(self, data: bytes, limit: int = sys.maxsize) -> list[Preface | Frame]:
        """
        Feed bytes; return the items they complete, at most ``limit`` (at
        least 1).  Input past the last item returned is held, ahead of the
        next call's, and `backlogged` says so.
        """
        out: list[Preface | Frame] = []
        pos = 0
        if self.backlogged:
            # Go on where the last call stopped, at a frame boundary.
            self.backlogged = False
            buf = self._rest
            if data:
                buf = buf[self._restPos :] + data
            else:
                pos = self._restPos
            self._rest = b""
            self._restPos = 0
        elif self._frame is not None:
            typeByte, channel, length = self._frame
            need = length - self._have
            if len(data) < need:
                self._pieces.append(memoryview(data))
                self._have += len(data)
                return out
            self._pieces.append(memoryview(data)[:need])
            payload = b"".join(self._pieces)
            self._frame = None
            self._pieces = []
            self._have = 0
            if typeByte < 0x10 and channel:
                # DATA (the bulk path), as parseFrame would build it.
                out.append(
                    DataFrame(
                        channel,
                        payload,
                        bool(typeByte & DATA_END),
                        bool(typeByte & DATA_FIN),
                        bool(typeByte & DATA_OPEN),
                    )
                )
            else:
                out.append(parseFrame(typeByte, channel, payload))
            pos = need
            buf = data
        elif self._head:
            buf = self._head + data
            self._head = b""
        else:
            buf = data
        if not self._prefaceDone:
            r = self._preface(buf)
            if r is None:
                self._head = bytes(buf)
                return out
            preface, pos = r
            out.append(preface)
            self._prefaceDone = True
        end = len(buf)
        maxSize = self.maxFrameSize
        while pos < end:
            if len(out) >= limit:
                # A flood of small frames is decoded a slice at a time,
                # never the whole read at once.
                self._rest = buf
                self._restPos = pos
                self.backlogged = True
                return out
            start = pos
            typeByte = buf[pos]
            # Fast path: one-byte channel and length (small frames on the
            # first 63 channels of each side).
            if pos + 2 < end and buf[pos + 1] < 0x80 and buf[pos + 2] < 0x80:
                channel = buf[pos + 1]
                length = buf[pos + 2]
                pos += 3
            elif (
                pos + 3 < end
                and buf[pos + 1] >= 0x80
                and 0 < buf[pos + 2] < 0x80
                and buf[pos + 3] < 0x80
            ):
                # Two-byte channel id (128..16383), small frame.
                channel = (buf[pos + 1] & 0x7F) | (buf[pos + 2] << 7)
                length = buf[pos + 3]
                pos += 4
            elif (
                pos + 3 < end
                and buf[pos + 1] < 0x80
                and buf[pos + 2] >= 0x80
                and 0 < buf[pos + 3] < 0x80
            ):
                # One-byte channel, two-byte length (128 B to 16 KiB):
                # medium messages, and small ones batched into a chunk.
                channel = buf[pos + 1]
                length = (buf[pos + 2] & 0x7F) | (buf[pos + 3] << 7)
                pos += 4
                if length > maxSize:
                    raise ProtocolError(
                        ErrorCode.FRAME_SIZE_ERROR,
                        f"frame of {length} bytes exceeds the maximum of {maxSize}",
                    )
            elif (
                pos + 4 < end
                and buf[pos + 1] >= 0x80
                and buf[pos + 2] >= 0x80
                and 0 < buf[pos + 3] < 0x80
                and buf[pos + 4] < 0x80
            ):
                # Three-byte channel id (16384..2097151: a long session's
                # churn gets there), small frame.
                channel = (
                    (buf[pos + 1] & 0x7F)
                    | ((buf[pos + 2] & 0x7F) << 7)
                    | (buf[pos + 3] << 14)
                )
                length = buf[pos + 4]
                pos += 5
            elif (
                pos + 4 < end
                and buf[pos + 1] < 0x80
                and buf[pos + 2] >= 0x80
                and buf[pos + 3] >= 0x80
                and 0 < buf[pos + 4] < 0x80
            ):
                # One-byte channel, three-byte length: bulk chunks (16 KiB
                # to 2 MiB).
                channel = buf[pos + 1]
                length = (
                    (buf[pos + 2] & 0x7F)
                    | ((buf[pos + 3] & 0x7F) << 7)
                    | (buf[pos + 4] << 14)
                )
                pos += 5
                if length > maxSize:
                    raise ProtocolError(
                        ErrorCode.FRAME_SIZE_ERROR,
                        f"frame of {length} bytes exceeds the maximum of {maxSize}",
                    )
            else:
                r1 = decodeVarint(buf, pos + 1)
                if r1 is None:
                    self._head = buf[start:]
                    return out
                channel, p = r1
                r2 = decodeVarint(buf, p)
                if r2 is None:
                    self._head = buf[start:]
                    return out
                length, pos = r2
                if length > maxSize:
                    raise ProtocolError(
                        ErrorCode.FRAME_SIZE_ERROR,
                        f"frame of {length} bytes exceeds the maximum of {maxSize}",
                    )
            if pos + length > end:
                # The payload continues in later reads.
                self._frame = (typeByte, channel, length)
                self._pieces = [memoryview(buf)[pos:]]
                self._have = end - pos
                return out
            payload = buf[pos : pos + length]
            pos += length
            if typeByte < 0x10:
                # DATA: inline, it is the hot path.
                if channel == 0:
                    raise ProtocolError(
                        ErrorCode.PROTOCOL_ERROR, "DATA frame on channel 0"
                    )
                out.append(
                    DataFrame(
                        channel,
                        payload,
                        bool(typeByte & DATA_END),
                        bool(typeByte & DATA_FIN),
                        bool(typeByte & DATA_OPEN),
                    )
                )
            else:
                out.append(parseFrame(typeByte, channel, payload))
        return out

    def _preface(self, buf: bytes) -> tuple[Preface, int] | None:
        n = min(len(buf), len(MAGIC))
        if buf[:n] != MAGIC[:n]:
            raise ProtocolError(
                ErrorCode.PROTOCOL_ERROR,
                "not a memux peer: the stream starts with " + _describeForeign(buf),
            )
        if len(buf) < len(MAGIC):
            return None
        r = decodeVarint(buf, len(MAGIC))
        if r is None:
            return None
        version, pos = r
        if version < 1:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_VERSION, f"peer announces memux version {version}"
            )
        # A peer announcing a higher version falls back to ours (spec:
        # "Versions"); the preface layout is the same in every version.
        r = decodeVarint(buf, pos)
        if r is None:
            return None
        blockLength, pos = r
        if blockLength > MAX_SETTINGS_BLOCK:
            raise ProtocolError(
                ErrorCode.SETTINGS_ERROR,
                f"settings block of {blockLength} bytes exceeds {MAX_SETTINGS_BLOCK}",
            )
        if pos + blockLength > len(buf):
            return None
        settings = Settings.decode(bytes(buf[pos : pos + blockLength]))
        return Preface(version, settings), pos + blockLength
