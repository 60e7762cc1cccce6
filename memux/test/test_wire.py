# -*- test-case-name: memux.test.test_wire -*-
"""
Tests for L{memux._wire}: varints, the preface, every frame type and the
incremental L{FrameDecoder}.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from memux._wire import (
    MAGIC,
    MAX_VARINT,
    VERSION,
    ChannelCreditFrame,
    CreditFrame,
    DataFrame,
    DropFrame,
    ErrorCode,
    Frame,
    FrameDecoder,
    FrameType,
    GoAwayFrame,
    OpenFrame,
    PingFrame,
    Preface,
    ProtocolError,
    ResetFrame,
    Settings,
    UnknownFrame,
    decodeVarint,
    encodeDataHeader,
    encodePreface,
    encodeVarint,
)

#: The preface of a side that announces the protocol's initial settings.
PREFACE = encodePreface(Settings())


def rawFrame(typeByte: int, channel: int, payload: bytes) -> bytes:
    """
    Build the bytes of a frame by hand, valid or not: the type byte, the
    channel and length varints, then the payload.
    """
    return (
        bytes((typeByte,))
        + encodeVarint(channel)
        + encodeVarint(len(payload))
        + payload
    )


def rawPreface(version: int, block: bytes) -> bytes:
    """
    Build a preface by hand with any version and settings block.
    """
    return MAGIC + encodeVarint(version) + encodeVarint(len(block)) + block


def settingsBlock(*pairs: tuple[int, int]) -> bytes:
    """
    Encode (id, value) pairs as a settings block, in the order given.
    """
    return b"".join(encodeVarint(i) + encodeVarint(v) for i, v in pairs)


def decodeAll(data: bytes, maxFrameSize: int = 16384) -> list[Preface | Frame]:
    """
    Decode C{data} in one piece with a fresh decoder.
    """
    return FrameDecoder(maxFrameSize).receive(data)


def decodeInPieces(pieces: list[bytes]) -> list[Preface | Frame]:
    """
    Feed C{pieces} one after another to a fresh decoder; return everything
    it produced.
    """
    decoder = FrameDecoder()
    out: list[Preface | Frame] = []
    for piece in pieces:
        out.extend(decoder.receive(piece))
    return out


# ---------------------------------------------------------------- strategies

channels = st.one_of(
    st.integers(1, 127), st.integers(128, 1 << 20), st.just(MAX_VARINT)
)
varints = st.one_of(st.integers(0, 300), st.integers(0, MAX_VARINT))
reasons = st.text(max_size=40)

dataFrames = st.builds(
    DataFrame,
    channel=channels,
    data=st.binary(max_size=300),
    end=st.booleans(),
    fin=st.booleans(),
    open=st.booleans(),
)
openFrames = st.builds(
    OpenFrame,
    channel=channels,
    service=st.binary(max_size=255),
    metadata=st.none() | st.binary(max_size=100),
    destination=st.none()
    | st.tuples(
        st.text(max_size=60).filter(lambda h: len(h.encode("utf-8")) <= 255),
        st.integers(0, 65535),
    ),
    lossy=st.booleans(),
)
creditFrames = st.builds(
    CreditFrame, channel=st.integers(0, 1000) | channels, limit=varints
)
resetFrames = st.builds(ResetFrame, channel=channels, code=varints, reason=reasons)
pingFrames = st.builds(PingFrame, payload=st.binary(max_size=64), ack=st.booleans())
goAwayFrames = st.builds(GoAwayFrame, lastChannel=varints, code=varints, reason=reasons)
channelCreditFrames = st.builds(ChannelCreditFrame, limit=varints)
dropFrames = st.builds(DropFrame, channel=channels, count=st.integers(1, MAX_VARINT))
unknownFrames = st.builds(
    UnknownFrame,
    type=st.integers(8, 15),
    flags=st.integers(0, 15),
    channel=st.integers(0, 1000),
    payload=st.binary(max_size=100),
)
frames = st.one_of(
    dataFrames,
    openFrames,
    creditFrames,
    resetFrames,
    pingFrames,
    goAwayFrames,
    channelCreditFrames,
    dropFrames,
    unknownFrames,
)
settingsValues = st.builds(
    Settings,
    maxFrameSize=st.integers(16384, (1 << 24) - 1),
    initialChannelCredit=st.integers(65536, MAX_VARINT),
    initialSessionCredit=st.integers(262144, MAX_VARINT),
    initialMaxChannels=st.integers(100, MAX_VARINT),
    maxMessageSize=st.integers(0, MAX_VARINT),
)


def splitAt(data: bytes, cuts: list[int]) -> list[bytes]:
    """
    Split C{data} at the given positions (any order, clamped, repeats
    allowed, so empty pieces occur too).
    """
    points = sorted(min(max(c, 0), len(data)) for c in cuts)
    pieces = []
    last = 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


@st.composite
def mutatedStreams(draw: st.DrawFn) -> bytes:
    """
    A valid preface and frame stream with a few bytes flipped, inserted or
    deleted.
    """
    data = bytearray(
        encodePreface(draw(settingsValues))
        + b"".join(f.encode() for f in draw(st.lists(frames, max_size=6)))
    )
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "set"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=3))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 3))]
    return bytes(data)


# ---------------------------------------------------------------- varints


class VarintTests(SynchronousTestCase):
    """
    Tests for L{encodeVarint} and L{decodeVarint}.
    """

    def assertProtocolError(self, data: bytes, code: ErrorCode) -> ProtocolError:
        """
        Assert that decoding a varint from C{data} raises L{ProtocolError}
        with C{code}.
        """
        e: ProtocolError = self.assertRaises(ProtocolError, decodeVarint, data)
        self.assertEqual(e.code, code)
        return e

    def test_boundaries(self) -> None:
        """
        Values at the edge of each byte count encode to the expected length
        and decode back, consuming exactly the encoding.
        """
        cases = [
            (0, 1),
            (1, 1),
            (127, 1),
            (128, 2),
            (16383, 2),
            (16384, 3),
            ((1 << 21) - 1, 3),
            (1 << 21, 4),
            ((1 << 56) - 1, 8),
            (1 << 56, 9),
            (MAX_VARINT, 9),
        ]
        for value, size in cases:
            encoded = encodeVarint(value)
            self.assertEqual(len(encoded), size, value)
            self.assertEqual(decodeVarint(encoded), (value, size))

    def test_knownEncodings(self) -> None:
        """
        Varints are unsigned LEB128: seven bits a byte, least significant
        group first, high bit on all but the last byte.
        """
        self.assertEqual(encodeVarint(0), b"\x00")
        self.assertEqual(encodeVarint(127), b"\x7f")
        self.assertEqual(encodeVarint(128), b"\x80\x01")
        self.assertEqual(encodeVarint(300), b"\xac\x02")
        self.assertEqual(encodeVarint(MAX_VARINT), b"\xff" * 8 + b"\x7f")

    def test_decodeAtPosition(self) -> None:
        """
        L{decodeVarint} decodes at the given position and returns the
        position just after the varint.
        """
        buf = b"xx" + encodeVarint(300) + b"yy"
        self.assertEqual(decodeVarint(buf, 2), (300, 4))
        self.assertEqual(decodeVarint(buf, 0), (ord("x"), 1))

    def test_negative(self) -> None:
        """
        Encoding a negative number raises L{ValueError}.
        """
        self.assertRaises(ValueError, encodeVarint, -1)
        self.assertRaises(ValueError, encodeVarint, -(1 << 70))

    def test_tooLarge(self) -> None:
        """
        Encoding a number above 2**63-1 raises L{ValueError}.
        """
        self.assertRaises(ValueError, encodeVarint, MAX_VARINT + 1)
        self.assertRaises(ValueError, encodeVarint, 1 << 64)

    def test_truncated(self) -> None:
        """
        A buffer that ends inside a varint decodes to C{None}: more bytes
        are needed.
        """
        self.assertIsNone(decodeVarint(b""))
        self.assertIsNone(decodeVarint(b"\x80"))
        self.assertIsNone(decodeVarint(b"\xff" * 8))
        self.assertIsNone(decodeVarint(b"\x01", 1))

    def test_nonMinimal(self) -> None:
        """
        A varint that is not in its shortest form (a trailing zero group)
        is a PROTOCOL_ERROR.
        """
        for data in [
            b"\x80\x00",
            b"\x81\x00",
            b"\xff\x80\x00",
            b"\x80\x80\x80\x00",
            b"\x80" * 8 + b"\x00",
        ]:
            e = self.assertProtocolError(data, ErrorCode.PROTOCOL_ERROR)
            self.assertIn("shortest", e.message)

    def test_tenBytes(self) -> None:
        """
        A varint of ten or more bytes is a PROTOCOL_ERROR, detected at the
        ninth continuation byte without waiting for more input.
        """
        self.assertProtocolError(b"\xff" * 9 + b"\x01", ErrorCode.PROTOCOL_ERROR)
        self.assertProtocolError(b"\xff" * 9, ErrorCode.PROTOCOL_ERROR)
        self.assertProtocolError(b"\x80" * 9 + b"\x01", ErrorCode.PROTOCOL_ERROR)

    @given(st.integers(0, MAX_VARINT), st.binary(max_size=4), st.binary(max_size=4))
    def test_roundTripProperty(self, value: int, before: bytes, after: bytes) -> None:
        """
        Every value in [0, 2**63-1] encodes to ceil(bits/7) bytes (at least
        one) and decodes back wherever it sits in a buffer.
        """
        encoded = encodeVarint(value)
        self.assertEqual(len(encoded), max(1, -(-value.bit_length() // 7)))
        self.assertEqual(
            decodeVarint(before + encoded + after, len(before)),
            (value, len(before) + len(encoded)),
        )


# ---------------------------------------------------------------- preface


class PrefaceTests(SynchronousTestCase):
    """
    Tests for the preface: L{encodePreface}, L{Settings} and the first item
    L{FrameDecoder} produces.
    """

    def assertPrefaceError(self, data: bytes, code: ErrorCode) -> ProtocolError:
        """
        Assert that a fresh decoder fed C{data} raises L{ProtocolError}
        with C{code}.
        """
        e: ProtocolError = self.assertRaises(
            ProtocolError, FrameDecoder().receive, data
        )
        self.assertEqual(e.code, code)
        return e

    def test_magic(self) -> None:
        """
        The magic is eight bytes starting with 0x89 (not ASCII, not a TLS
        record) and containing CR LF, 0x1A and LF.
        """
        self.assertEqual(MAGIC, b"\x89MUX\r\n\x1a\n")
        self.assertEqual(VERSION, 1)

    def test_defaultPreface(self) -> None:
        """
        With the initial settings the preface is the magic, version 1 and an
        empty settings block: ten bytes, which decode back.
        """
        self.assertEqual(PREFACE, MAGIC + b"\x01\x00")
        decoder = FrameDecoder()
        self.assertEqual(decoder.receive(PREFACE), [Preface(1, Settings())])
        self.assertEqual(decoder.buffered, 0)

    def test_nonDefaultSettings(self) -> None:
        """
        Settings away from their initial values are encoded, in id order,
        and decode to equal L{Settings}.
        """
        s = Settings(
            maxFrameSize=65536,
            initialChannelCredit=262144,
            initialSessionCredit=1 << 22,
            initialMaxChannels=1024,
            maxMessageSize=1 << 24,
        )
        block = s.encode()
        self.assertEqual(
            block,
            settingsBlock(
                (1, 65536), (2, 262144), (3, 1 << 22), (4, 1024), (5, 1 << 24)
            ),
        )
        self.assertEqual(decodeAll(encodePreface(s)), [Preface(1, s)])

    def test_initialValuesOmitted(self) -> None:
        """
        A setting at its initial value is left out of the settings block.
        """
        self.assertEqual(Settings().encode(), b"")
        self.assertEqual(
            Settings(maxFrameSize=20000).encode(), settingsBlock((1, 20000))
        )

    def test_explicitInitialValues(self) -> None:
        """
        A peer may still state a setting at its initial value explicitly.
        """
        block = settingsBlock((1, 16384), (4, 100))
        self.assertEqual(decodeAll(rawPreface(1, block)), [Preface(1, Settings())])

    def test_settingsConstructorRanges(self) -> None:
        """
        L{Settings} refuses values outside each setting's range.
        """
        self.assertRaises(ValueError, Settings, maxFrameSize=16383)
        self.assertRaises(ValueError, Settings, maxFrameSize=1 << 24)
        self.assertRaises(ValueError, Settings, initialChannelCredit=65535)
        self.assertRaises(ValueError, Settings, initialSessionCredit=262143)
        self.assertRaises(ValueError, Settings, initialMaxChannels=99)
        self.assertRaises(ValueError, Settings, maxMessageSize=-1)

    def test_unknownSettingIgnored(self) -> None:
        """
        Unknown setting ids, small or large, are ignored; the known ones
        around them still apply.
        """
        block = settingsBlock((0x7F, 5), (1, 20000), (0, 1), (1 << 40, MAX_VARINT))
        self.assertEqual(
            decodeAll(rawPreface(1, block)), [Preface(1, Settings(maxFrameSize=20000))]
        )

    def test_repeatedSetting(self) -> None:
        """
        A setting id that appears twice is a SETTINGS_ERROR, even with the
        same value.
        """
        self.assertPrefaceError(
            rawPreface(1, settingsBlock((2, 70000), (2, 70000))),
            ErrorCode.SETTINGS_ERROR,
        )

    def test_repeatedUnknownSetting(self) -> None:
        """
        Repeating an unknown setting id is also a SETTINGS_ERROR.
        """
        self.assertPrefaceError(
            rawPreface(1, settingsBlock((0x40, 1), (0x40, 2))), ErrorCode.SETTINGS_ERROR
        )

    def test_outOfRange(self) -> None:
        """
        A known setting below its initial value or above its maximum is a
        SETTINGS_ERROR.
        """
        for pair in [
            (1, 16383),
            (1, 1 << 24),
            (2, 65535),
            (3, 262143),
            (4, 99),
            (4, 0),
        ]:
            self.assertPrefaceError(
                rawPreface(1, settingsBlock(pair)), ErrorCode.SETTINGS_ERROR
            )

    def test_boundaryValuesAccepted(self) -> None:
        """
        Each setting's extreme values are accepted.
        """
        block = settingsBlock(
            (1, (1 << 24) - 1),
            (2, MAX_VARINT),
            (3, MAX_VARINT),
            (4, MAX_VARINT),
            (5, 0),
        )
        self.assertEqual(
            decodeAll(rawPreface(1, block)),
            [
                Preface(
                    1,
                    Settings(
                        maxFrameSize=(1 << 24) - 1,
                        initialChannelCredit=MAX_VARINT,
                        initialSessionCredit=MAX_VARINT,
                        initialMaxChannels=MAX_VARINT,
                    ),
                )
            ],
        )

    def test_truncatedSettingsBlock(self) -> None:
        """
        A settings block that ends between an id and its value, or inside a
        varint, is a PROTOCOL_ERROR.
        """
        e = self.assertRaises(
            ProtocolError, FrameDecoder().receive, rawPreface(1, b"\x01")
        )
        self.assertEqual(e.code, ErrorCode.PROTOCOL_ERROR)
        for block in [b"\x01\x80", b"\x80"]:
            e = self.assertRaises(
                ProtocolError, FrameDecoder().receive, rawPreface(1, block)
            )
            self.assertEqual(e.code, ErrorCode.PROTOCOL_ERROR)

    def test_settingsBlockTooLong(self) -> None:
        """
        A settings block longer than 1024 bytes is a SETTINGS_ERROR, raised
        as soon as its length is read, before the block arrives.
        """
        decoder = FrameDecoder()
        e = self.assertRaises(
            ProtocolError, decoder.receive, MAGIC + b"\x01" + encodeVarint(1025)
        )
        self.assertEqual(e.code, ErrorCode.SETTINGS_ERROR)

    def test_settingsBlockOfMaximumLength(self) -> None:
        """
        A settings block of exactly 1024 bytes (here: distinct unknown ids)
        is accepted.
        """
        pairs = [(128 + i, 0) for i in range(340)] + [(1000, 200)]
        block = settingsBlock(*pairs)
        self.assertEqual(len(block), 1024)
        self.assertEqual(decodeAll(rawPreface(1, block)), [Preface(1, Settings())])

    def test_versionZero(self) -> None:
        """
        A preface announcing version 0 is an UNSUPPORTED_VERSION error.
        """
        self.assertPrefaceError(rawPreface(0, b""), ErrorCode.UNSUPPORTED_VERSION)

    def test_higherVersion(self) -> None:
        """
        A preface announcing a higher version is accepted (the peer falls
        back to ours); the decoder reports the version and goes on to
        decode frames.
        """
        for version in [2, 1 << 40]:
            data = rawPreface(version, settingsBlock((1, 20000))) + PingFrame().encode()
            self.assertEqual(
                decodeAll(data),
                [Preface(version, Settings(maxFrameSize=20000)), PingFrame()],
            )

    def test_prefaceInPieces(self) -> None:
        """
        A preface with settings split at any position decodes the same,
        and nothing is produced until it is complete.
        """
        data = encodePreface(Settings(maxFrameSize=70000, initialMaxChannels=5000))
        expected = decodeAll(data)
        for i in range(len(data) + 1):
            decoder = FrameDecoder()
            first = decoder.receive(data[:i])
            if i < len(data):
                self.assertEqual(first, [])
            self.assertEqual(first + decoder.receive(data[i:]), expected, i)

    def test_framesAfterPrefaceInSameChunk(self) -> None:
        """
        Frames that arrive in the same chunk as the preface are decoded
        with it.
        """
        data = PREFACE + DataFrame(1, b"hi", open=True).encode() + PingFrame().encode()
        self.assertEqual(
            decodeAll(data),
            [Preface(1, Settings()), DataFrame(1, b"hi", open=True), PingFrame()],
        )


class ForeignStreamTests(SynchronousTestCase):
    """
    A stream that does not start with the memux magic is refused with a
    message saying what it looks like.
    """

    def refuse(self, data: bytes) -> str:
        """
        Feed C{data} to a fresh decoder, assert a PROTOCOL_ERROR, and return
        the error's message.
        """
        e: ProtocolError = self.assertRaises(
            ProtocolError, FrameDecoder().receive, data
        )
        self.assertEqual(e.code, ErrorCode.PROTOCOL_ERROR)
        self.assertIn("not a memux peer", e.message)
        return e.message

    def test_httpRequest(self) -> None:
        """
        An HTTP/1 request is recognised as such.
        """
        for method in [b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS"]:
            message = self.refuse(method + b" / HTTP/1.1\r\nHost: example.com\r\n\r\n")
            self.assertIn("HTTP/1 request", message)

    def test_httpResponse(self) -> None:
        """
        An HTTP/1 response (a client connected to a web server) is
        recognised as such.
        """
        self.assertIn("HTTP/1 response", self.refuse(b"HTTP/1.1 400 Bad Request\r\n"))

    def test_tlsClientHello(self) -> None:
        """
        A TLS handshake record (0x16 0x03 0x01 ...) is recognised as TLS.
        """
        message = self.refuse(
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 32
        )
        self.assertIn("TLS", message)

    def test_sshBanner(self) -> None:
        """
        An SSH identification banner is recognised as SSH.
        """
        self.assertIn("SSH", self.refuse(b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3\r\n"))

    def test_http2Preface(self) -> None:
        """
        The HTTP/2 connection preface is recognised as HTTP/2.
        """
        self.assertIn("HTTP/2", self.refuse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))

    def test_otherBytes(self) -> None:
        """
        Anything else is shown as its first bytes.
        """
        self.assertIn("hello wo", self.refuse(b"hello world\n"))

    def test_nearlyMagic(self) -> None:
        """
        A magic mangled by newline translation, or with its last byte
        wrong, is refused as soon as the wrong byte arrives.
        """
        self.refuse(b"\x89MUX\n\x1a\n\x01\x00")
        self.refuse(b"\x89MUX\r\n\x1a\x00")
        decoder = FrameDecoder()
        self.assertEqual(decoder.receive(MAGIC[:4]), [])
        self.assertRaises(ProtocolError, decoder.receive, b"\n")

    def test_partialMagicWaits(self) -> None:
        """
        A correct but incomplete magic is buffered, not refused.
        """
        decoder = FrameDecoder()
        for i in range(len(MAGIC)):
            self.assertEqual(decoder.receive(MAGIC[i : i + 1]), [])
        self.assertEqual(decoder.receive(b"\x01\x00"), [Preface(1, Settings())])


# ---------------------------------------------------------------- frames


class FrameRoundTripTests(SynchronousTestCase):
    """
    Every frame type and flag combination encodes and decodes back.
    """

    def assertRoundTrip(self, frame: Frame, maxFrameSize: int = 16384) -> None:
        """
        Assert that C{frame} encoded after a preface decodes to an equal
        frame with nothing left over.
        """
        decoder = FrameDecoder(maxFrameSize)
        self.assertEqual(
            decoder.receive(PREFACE + frame.encode()), [Preface(1, Settings()), frame]
        )
        self.assertEqual(decoder.buffered, 0)

    def test_data(self) -> None:
        """
        DATA frames with every combination of END, FIN and OPEN, on small
        and large channel ids, with payloads from empty to the maximum
        frame size.
        """
        for flags in range(8):
            for channel in [1, 2, 127, 128, 1 << 20, MAX_VARINT]:
                for size in [0, 1, 127, 128, 16384]:
                    self.assertRoundTrip(
                        DataFrame(
                            channel,
                            bytes(range(256)) * (size // 256) + b"x" * (size % 256),
                            end=bool(flags & 1),
                            fin=bool(flags & 2),
                            open=bool(flags & 4),
                        )
                    )

    def test_bulkDataSplitAnywhere(self) -> None:
        """
        Bulk DATA frames (lengths of three varint bytes, up to 2 MiB) after
        a small one decode the same however the stream is cut, in the
        header or in the payload.
        """
        frames = [
            DataFrame(1, b"s", end=True),
            DataFrame(3, bytes(range(256)) * 256, end=True),
            DataFrame(127, b"b" * 70000, fin=True),
            DataFrame(5, b"c" * (2 * 1024 * 1024 - 1)),
        ]
        wire = b"".join(f.encode() for f in frames)
        for cut in [1, 2, 3, 4, 5, 6, 65541, 65542, 65545, 135546, len(wire) - 1]:
            decoder = FrameDecoder(2 * 1024 * 1024)
            decoder.receive(PREFACE)
            got = decoder.receive(wire[:cut]) + decoder.receive(wire[cut:])
            self.assertEqual(got, frames)

    def test_mediumDataSplitAnywhere(self) -> None:
        """
        DATA frames whose length takes two varint bytes (128 B to 16 KiB,
        decoded on a fast path) decode the same however the stream is cut,
        between any two bytes of their headers or payloads.
        """
        frames = [
            DataFrame(1, b"a" * 128, end=True),
            DataFrame(127, bytes(range(256)) * 16, fin=True),
            DataFrame(2, b"c" * 16383, end=True),
            DataFrame(3, b"", end=True),
        ]
        wire = b"".join(f.encode() for f in frames)
        for cut in [1, 2, 3, 4, 5, 131, 132, 133, 134, 135, 4230, 4231, 4232, 4233]:
            decoder = FrameDecoder()
            decoder.receive(PREFACE)
            got = decoder.receive(wire[:cut]) + decoder.receive(wire[cut:])
            self.assertEqual(got, frames)

    def test_mediumFrameOverMaximum(self) -> None:
        """
        A frame of two length bytes longer than a maximum frame size below
        16 KiB is a FRAME_SIZE_ERROR as soon as its header is read.
        """
        decoder = FrameDecoder(1000)
        decoder.receive(PREFACE)
        e = self.assertRaises(
            ProtocolError, decoder.receive, b"\x01\x01" + encodeVarint(1001) + b"x"
        )
        self.assertEqual(e.code, ErrorCode.FRAME_SIZE_ERROR)

    def test_dataVectors(self) -> None:
        """
        DATA frames carry their flags in the type byte's low nibble: END
        0x1, FIN 0x2, OPEN 0x4.
        """
        self.assertEqual(DataFrame(1, b"hi").encode(), b"\x00\x01\x02hi")
        self.assertEqual(DataFrame(1, b"hi", end=True).encode(), b"\x01\x01\x02hi")
        self.assertEqual(DataFrame(3, fin=True).encode(), b"\x02\x03\x00")
        self.assertEqual(DataFrame(5, b"", True, True, True).encode(), b"\x07\x05\x00")
        self.assertEqual(
            DataFrame(300, b"a" * 200).encode(), b"\x00\xac\x02\xc8\x01" + b"a" * 200
        )

    def test_encodeDataHeader(self) -> None:
        """
        L{encodeDataHeader} gives the same header as L{DataFrame.encode}.
        """
        for channel in [1, 127, 128, 5000, 16383, 16384, 2097151, 2097152]:
            for size in [0, 127, 128, 70000]:
                for flags in range(8):
                    frame = DataFrame(
                        channel,
                        b"z" * size,
                        bool(flags & 1),
                        bool(flags & 2),
                        bool(flags & 4),
                    )
                    self.assertEqual(
                        encodeDataHeader(channel, size, flags) + frame.data,
                        frame.encode(),
                    )

    def test_open(self) -> None:
        """
        OPEN frames with every combination of the METADATA, DESTINATION and
        LOSSY flags, with short, empty and maximum-length names.
        """
        for service in [b"", b"echo", b"s" * 255]:
            for metadata in [None, b"", b"\x00meta\xff"]:
                for destination in [
                    None,
                    ("example.com", 443),
                    ("", 0),
                    ("\u00fc.example", 65535),
                    ("h" * 255, 1),
                ]:
                    for lossy in [False, True]:
                        self.assertRoundTrip(
                            OpenFrame(7, service, metadata, destination, lossy)
                        )

    def test_openVector(self) -> None:
        """
        An OPEN frame's payload is service, then metadata and destination
        (host, port) when flagged, each length-prefixed.
        """
        self.assertEqual(
            OpenFrame(1, b"echo", b"m", ("h", 80), True).encode(),
            b"\x17\x01\x0a\x04echo\x01m\x01h\x50",
        )
        self.assertEqual(OpenFrame(2, b"echo").encode(), b"\x10\x02\x05\x04echo")

    def test_openEncodeLimits(self) -> None:
        """
        Encoding an OPEN frame with a service name or host over 255 bytes,
        or a port outside [0, 65535], raises L{ValueError}.
        """
        self.assertRaises(ValueError, OpenFrame(1, b"s" * 256).encode)
        self.assertRaises(ValueError, OpenFrame(1, b"s", None, ("h" * 256, 1)).encode)
        self.assertRaises(ValueError, OpenFrame(1, b"s", None, ("h", 65536)).encode)
        self.assertRaises(ValueError, OpenFrame(1, b"s", None, ("h", -1)).encode)

    def test_credit(self) -> None:
        """
        CREDIT frames on the session (channel 0) and on a channel, with
        limits from 0 to 2**63-1.
        """
        for channel in [0, 1, 2, 1000]:
            for limit in [0, 1, 65536, MAX_VARINT]:
                self.assertRoundTrip(CreditFrame(channel, limit))
        self.assertEqual(CreditFrame(0, 65536).encode(), b"\x20\x00\x03\x80\x80\x04")

    def test_reset(self) -> None:
        """
        RESET frames with defined and unknown codes and ASCII, empty and
        non-ASCII reasons.
        """
        for code in [*ErrorCode, 0xFF, MAX_VARINT]:
            for reason in ["", "no such service", "\u00e9chec \u2603"]:
                self.assertRoundTrip(ResetFrame(3, code, reason))
        self.assertEqual(
            ResetFrame(1, ErrorCode.REFUSED, "no").encode(), b"\x30\x01\x03\x06no"
        )

    def test_ping(self) -> None:
        """
        PING frames, with and without ACK, with payloads up to 64 bytes.
        """
        for payload in [b"", b"\x00", b"p" * 64]:
            for ack in [False, True]:
                self.assertRoundTrip(PingFrame(payload, ack))
        self.assertEqual(PingFrame(b"", True).encode(), b"\x41\x00\x00")
        self.assertRaises(ValueError, PingFrame(b"p" * 65).encode)

    def test_goAway(self) -> None:
        """
        GOAWAY frames with any last channel, code and reason.
        """
        for last in [0, 1, 2, 1 << 40]:
            for code in [ErrorCode.NO_ERROR, ErrorCode.PROTOCOL_ERROR, 0x1234]:
                for reason in ["", "bye", "\u2603"]:
                    self.assertRoundTrip(GoAwayFrame(last, code, reason))
        self.assertEqual(GoAwayFrame(4).encode(), b"\x50\x00\x02\x04\x00")

    def test_channels(self) -> None:
        """
        CHANNELS frames with any cumulative limit.
        """
        for limit in [0, 100, 1 << 40, MAX_VARINT]:
            self.assertRoundTrip(ChannelCreditFrame(limit))
        self.assertEqual(ChannelCreditFrame(125).encode(), b"\x60\x00\x01\x7d")

    def test_drop(self) -> None:
        """
        DROP frames with counts from 1 up.
        """
        for count in [1, 127, 128, MAX_VARINT]:
            self.assertRoundTrip(DropFrame(9, count))
        self.assertEqual(DropFrame(1, 2).encode(), b"\x70\x01\x01\x02")

    def test_unknownTypes(self) -> None:
        """
        Frames of the reserved types 0x8 to 0xF, with any flags, on any
        channel, decode as L{UnknownFrame} keeping type, flags, channel and
        payload, and do not disturb the frames around them.
        """
        for ftype in range(8, 16):
            for flags in range(16):
                for channel in [0, 1, 300]:
                    frame = UnknownFrame(ftype, flags, channel, b"\xffpayload")
                    self.assertRoundTrip(frame)
                    self.assertEqual(
                        decodeAll(
                            PREFACE + rawFrame(ftype << 4 | flags, channel, b"x")
                        )[1],
                        UnknownFrame(ftype, flags, channel, b"x"),
                    )
        data = (
            PREFACE + PingFrame().encode() + UnknownFrame(9, 3, 0, b"?" * 200).encode()
        )
        data += DataFrame(1, b"after").encode()
        self.assertEqual(decodeAll(data)[-1], DataFrame(1, b"after"))

    def test_unknownLargeFrameStillLimited(self) -> None:
        """
        A frame of an unknown type is still bound by the maximum frame size.
        """
        e = self.assertRaises(
            ProtocolError, decodeAll, PREFACE + rawFrame(0x90, 0, b"x" * 16385)
        )
        self.assertEqual(e.code, ErrorCode.FRAME_SIZE_ERROR)

    def test_frameTypeNumbers(self) -> None:
        """
        The defined frame types are 0x0 to 0x7.
        """
        self.assertEqual([t.value for t in FrameType], list(range(8)))


class OpenFastPathTests(SynchronousTestCase):
    """
    The common opening (a short name, nothing else) is encoded and decoded
    on a fast path; it must agree with the spec's layout byte for byte.
    """

    @given(
        st.integers(1, (1 << 21) - 1),
        st.binary(max_size=300),
        st.one_of(st.none(), st.binary(max_size=20)),
        st.booleans(),
    )
    def test_sameBytes(
        self, channel: int, service: bytes, metadata: bytes | None, lossy: bool
    ) -> None:
        """
        Any OPEN encodes as type byte, channel varint, length varint and
        the length-prefixed fields, and decodes back to itself.
        """
        if len(service) > 255:
            self.assertRaises(ValueError, OpenFrame(channel, service).encode)
            return
        frame = OpenFrame(channel, service, metadata, None, lossy)
        flags = (4 if lossy else 0) | (1 if metadata is not None else 0)
        payload = encodeVarint(len(service)) + service
        if metadata is not None:
            payload += encodeVarint(len(metadata)) + metadata
        expected = (
            bytes((0x10 | flags,))
            + encodeVarint(channel)
            + encodeVarint(len(payload))
            + payload
        )
        self.assertEqual(frame.encode(), expected)
        decoder = FrameDecoder(1 << 20)
        items = decoder.receive(encodePreface(Settings()) + expected)
        self.assertEqual(items[1:], [frame])


class ByteBudgetTests(SynchronousTestCase):
    """
    The wire overhead promised by the design.
    """

    def test_smallChunkHeader(self) -> None:
        """
        A DATA chunk of under 128 bytes on a channel under 128 has exactly
        three header bytes, whatever its flags.
        """
        for channel in range(1, 128):
            for size in [0, 1, 64, 127]:
                for flags in range(8):
                    frame = DataFrame(
                        channel,
                        b"d" * size,
                        bool(flags & 1),
                        bool(flags & 2),
                        bool(flags & 4),
                    )
                    self.assertEqual(len(frame.encode()), size + 3)

    def test_largerChunkHeader(self) -> None:
        """
        A 128-byte chunk, or a chunk on channel 128, costs one more header
        byte.
        """
        self.assertEqual(len(DataFrame(1, b"d" * 128).encode()), 128 + 4)
        self.assertEqual(len(DataFrame(128, b"d").encode()), 1 + 4)

    def test_openMessageClose(self) -> None:
        """
        Opening a channel for the default service, sending one 100-byte
        message and closing costs 103 bytes in a single frame.
        """
        frame = DataFrame(1, b"x" * 100, end=True, fin=True, open=True)
        self.assertEqual(len(frame.encode()), 103)
        self.assertEqual(decodeAll(PREFACE + frame.encode())[1:], [frame])


# ---------------------------------------------------------------- malformed


class MalformedInputTests(SynchronousTestCase):
    """
    Every class of malformed input raises L{ProtocolError} with the right
    code.
    """

    def assertRefused(
        self,
        frameBytes: bytes,
        code: ErrorCode = ErrorCode.PROTOCOL_ERROR,
        maxFrameSize: int = 16384,
    ) -> ProtocolError:
        """
        Assert that C{frameBytes} after a preface raise L{ProtocolError}
        with C{code}, whether fed at once or one byte at a time.
        """
        e: ProtocolError = self.assertRaises(
            ProtocolError, decodeAll, PREFACE + frameBytes, maxFrameSize
        )
        self.assertEqual(e.code, code, e)
        decoder = FrameDecoder(maxFrameSize)
        decoder.receive(PREFACE)
        with self.assertRaises(ProtocolError) as cm:
            for i in range(len(frameBytes)):
                decoder.receive(frameBytes[i : i + 1])
        self.assertEqual(cm.exception.code, code)
        return e

    def test_channelFramesOnChannelZero(self) -> None:
        """
        DATA, OPEN, RESET and DROP frames on channel 0 are PROTOCOL_ERRORs,
        for small (fast path) and large DATA frames alike.
        """
        self.assertRefused(rawFrame(0x00, 0, b"x"))
        self.assertRefused(rawFrame(0x07, 0, b""))
        self.assertRefused(rawFrame(0x00, 0, b"x" * 200))
        self.assertRefused(OpenFrame(0, b"echo").encode())
        self.assertRefused(ResetFrame(0, ErrorCode.CANCEL).encode())
        self.assertRefused(DropFrame(0, 1).encode())

    def test_sessionFramesOnChannel(self) -> None:
        """
        PING, GOAWAY and CHANNELS frames on a nonzero channel are
        PROTOCOL_ERRORs.
        """
        self.assertRefused(rawFrame(0x40, 1, b""))
        self.assertRefused(rawFrame(0x41, 200, b"abc"))
        self.assertRefused(rawFrame(0x50, 2, b"\x00\x00"))
        self.assertRefused(rawFrame(0x60, 3, b"\x64"))

    def test_frameTooLarge(self) -> None:
        """
        A frame longer than the maximum frame size is a FRAME_SIZE_ERROR,
        for every frame type, whatever the channel.
        """
        for typeByte in [0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xF0]:
            for channel in [0, 1]:
                header = (
                    bytes((typeByte,)) + encodeVarint(channel) + encodeVarint(16385)
                )
                e = self.assertRaises(ProtocolError, decodeAll, PREFACE + header)
                self.assertEqual(e.code, ErrorCode.FRAME_SIZE_ERROR)

    def test_frameTooLargeDetectedAtHeader(self) -> None:
        """
        The FRAME_SIZE_ERROR is raised as soon as the length is read: the
        decoder does not buffer the payload first, even when the header
        arrives one byte at a time.
        """
        decoder = FrameDecoder()
        decoder.receive(PREFACE)
        header = b"\x00\x01" + encodeVarint(1 << 40)
        for i in range(len(header) - 1):
            self.assertEqual(decoder.receive(header[i : i + 1]), [])
            self.assertLessEqual(decoder.buffered, len(header))
        e = self.assertRaises(ProtocolError, decoder.receive, header[-1:])
        self.assertEqual(e.code, ErrorCode.FRAME_SIZE_ERROR)
        self.assertLessEqual(decoder.buffered, len(header))

    def test_frameTooLargeWithPayloadInFlight(self) -> None:
        """
        An oversized frame whose payload starts arriving with its header is
        refused at once, without waiting for the rest.
        """
        e = self.assertRaises(
            ProtocolError,
            decodeAll,
            PREFACE + b"\x00\x01" + encodeVarint(1 << 30) + b"x" * 1000,
        )
        self.assertEqual(e.code, ErrorCode.FRAME_SIZE_ERROR)

    def test_maximumFrameSizeAccepted(self) -> None:
        """
        A frame of exactly the maximum size is accepted, for the initial
        maximum and for a larger one; one byte more is not.
        """
        self.assertEqual(
            decodeAll(PREFACE + DataFrame(1, b"x" * 16384).encode())[1],
            DataFrame(1, b"x" * 16384),
        )
        self.assertEqual(
            decodeAll(PREFACE + DataFrame(1, b"x" * 65536).encode(), 65536)[1],
            DataFrame(1, b"x" * 65536),
        )
        self.assertRefused(
            DataFrame(1, b"x" * 65537).encode(), ErrorCode.FRAME_SIZE_ERROR, 65536
        )

    def test_bufferBounded(self) -> None:
        """
        While a frame is arriving the decoder holds at most its header and
        payload: never more than the maximum frame size plus a header.
        """
        decoder = FrameDecoder()
        decoder.receive(PREFACE)
        data = DataFrame(1, b"x" * 16384).encode() * 3
        for i in range(0, len(data), 1000):
            decoder.receive(data[i : i + 1000])
            self.assertLessEqual(decoder.buffered, 16384 + 1 + 9 + 9)

    def test_pingPayloadTooLong(self) -> None:
        """
        A PING payload over 64 bytes is refused with FRAME_SIZE_ERROR; 64
        bytes is fine.
        """
        self.assertRefused(rawFrame(0x40, 0, b"p" * 65), ErrorCode.FRAME_SIZE_ERROR)
        self.assertRefused(rawFrame(0x41, 0, b"p" * 1000), ErrorCode.FRAME_SIZE_ERROR)
        self.assertEqual(
            decodeAll(PREFACE + rawFrame(0x40, 0, b"p" * 64))[1], PingFrame(b"p" * 64)
        )

    def test_dropZero(self) -> None:
        """
        A DROP of zero messages is a PROTOCOL_ERROR.
        """
        self.assertRefused(rawFrame(0x70, 1, b"\x00"))

    def test_trailingBytes(self) -> None:
        """
        CREDIT, CHANNELS and DROP frames whose payload has bytes after the
        varint are PROTOCOL_ERRORs.
        """
        self.assertRefused(rawFrame(0x20, 0, b"\x05\x00"))
        self.assertRefused(rawFrame(0x20, 3, b"\x80\x01x"))
        self.assertRefused(rawFrame(0x60, 0, b"\x05\x05"))
        self.assertRefused(rawFrame(0x70, 1, b"\x01\x01"))

    def test_emptyVarintPayloads(self) -> None:
        """
        CREDIT, CHANNELS, DROP, RESET and GOAWAY frames whose payload is
        empty or ends inside a varint are PROTOCOL_ERRORs.
        """
        for typeByte, channel in [
            (0x20, 0),
            (0x60, 0),
            (0x70, 1),
            (0x30, 1),
            (0x50, 0),
        ]:
            self.assertRefused(rawFrame(typeByte, channel, b""))
            self.assertRefused(rawFrame(typeByte, channel, b"\x80"))
            self.assertRefused(rawFrame(typeByte, channel, b"\xff\xff"))
        # GOAWAY: last channel present, code missing or cut.
        self.assertRefused(rawFrame(0x50, 0, b"\x04"))
        self.assertRefused(rawFrame(0x50, 0, b"\x04\x80"))

    def test_nonMinimalVarints(self) -> None:
        """
        Non-minimal varints in a frame header or payload are PROTOCOL_ERRORs.
        """
        self.assertRefused(b"\x00\x81\x00\x01x")
        self.assertRefused(b"\x00\x01\x81\x00x")
        self.assertRefused(rawFrame(0x20, 0, b"\x80\x00"))
        self.assertRefused(b"\x00" + b"\xff" * 9 + b"\x01\x01x")

    def test_openTruncated(self) -> None:
        """
        OPEN frames whose fields run past the payload are PROTOCOL_ERRORs:
        missing service length, service shorter than announced, metadata or
        destination flagged but absent, destination without its port.
        """
        for flags, payload in [
            (0, b""),
            (0, b"\x05abc"),
            (0, b"\x80"),
            (1, b"\x04echo"),
            (1, b"\x04echo\x05ab"),
            (2, b"\x04echo"),
            (2, b"\x04echo\x04host"),
            (2, b"\x04echo\x04ho"),
            (2, b"\x04echo\x04host\x80"),
            (3, b"\x04echo\x01m"),
        ]:
            self.assertRefused(rawFrame(0x10 | flags, 1, payload))

    def test_openServiceTooLong(self) -> None:
        """
        An OPEN frame naming a service over 255 bytes is a PROTOCOL_ERROR,
        as is a destination host over 255 bytes.
        """
        self.assertRefused(rawFrame(0x10, 1, encodeVarint(256) + b"s" * 256))
        self.assertRefused(
            rawFrame(0x12, 1, b"\x01s" + encodeVarint(256) + b"h" * 256 + b"\x01")
        )

    def test_openPortTooLarge(self) -> None:
        """
        An OPEN frame with a destination port over 65535 is a PROTOCOL_ERROR;
        65535 is accepted.
        """
        self.assertRefused(rawFrame(0x12, 1, b"\x01s\x01h" + encodeVarint(65536)))
        self.assertRefused(rawFrame(0x12, 1, b"\x01s\x01h" + encodeVarint(MAX_VARINT)))
        frame = rawFrame(0x12, 1, b"\x01s\x01h" + encodeVarint(65535))
        self.assertEqual(
            decodeAll(PREFACE + frame)[1], OpenFrame(1, b"s", None, ("h", 65535))
        )

    def test_openTrailingBytes(self) -> None:
        """
        An OPEN frame with bytes after its last field is a PROTOCOL_ERROR,
        including fields present but not flagged.
        """
        self.assertRefused(rawFrame(0x10, 1, b"\x04echox"))
        self.assertRefused(rawFrame(0x10, 1, b"\x04echo\x01m"))
        self.assertRefused(rawFrame(0x13, 1, b"\x04echo\x01m\x01h\x50\x00"))

    def test_openBadHost(self) -> None:
        """
        An OPEN frame whose destination host is not valid UTF-8 is a
        PROTOCOL_ERROR.
        """
        self.assertRefused(rawFrame(0x12, 1, b"\x01s\x02\xff\xfe\x50"))
        self.assertRefused(rawFrame(0x12, 1, b"\x01s\x01\xc3\x50"))

    def test_openServiceIsBytes(self) -> None:
        """
        A service name is opaque bytes: it need not be UTF-8.
        """
        self.assertEqual(
            decodeAll(PREFACE + rawFrame(0x10, 1, b"\x02\xff\xfe"))[1],
            OpenFrame(1, b"\xff\xfe"),
        )

    def test_badReasons(self) -> None:
        """
        RESET and GOAWAY frames whose reason is not valid UTF-8 are
        PROTOCOL_ERRORs.
        """
        self.assertRefused(rawFrame(0x30, 1, b"\x07\xff"))
        self.assertRefused(rawFrame(0x30, 1, b"\x07ok\xed\xa0\x80"))
        self.assertRefused(rawFrame(0x50, 0, b"\x00\x00\xc3"))

    def test_unknownCodesAccepted(self) -> None:
        """
        RESET and GOAWAY frames with codes this version does not define are
        accepted.
        """
        self.assertEqual(
            decodeAll(PREFACE + rawFrame(0x30, 1, encodeVarint(0x9999)))[1],
            ResetFrame(1, 0x9999),
        )

    def test_undefinedFlagsIgnored(self) -> None:
        """
        Flag bits a frame type does not define are ignored.
        """
        self.assertEqual(
            decodeAll(PREFACE + rawFrame(0x08, 1, b"x"))[1], DataFrame(1, b"x")
        )
        self.assertEqual(
            decodeAll(PREFACE + rawFrame(0x2F, 0, b"\x05"))[1], CreditFrame(0, 5)
        )
        self.assertEqual(
            decodeAll(PREFACE + rawFrame(0x4E, 0, b""))[1], PingFrame(b"", False)
        )


# ---------------------------------------------------------------- incremental


class IncrementalDecodingTests(SynchronousTestCase):
    """
    L{FrameDecoder} gives the same frames however its input is split.
    """

    stream = (
        encodePreface(Settings(maxFrameSize=20000, initialMaxChannels=1000))
        + DataFrame(1, b"hello", end=True, open=True).encode()
        + OpenFrame(3, b"echo", b"meta", ("example.com", 443), True).encode()
        + DataFrame(3, b"y" * 200).encode()
        + DataFrame(300, b"z" * 130, end=True, fin=True).encode()
        + CreditFrame(0, 1 << 40).encode()
        + CreditFrame(3, 70000).encode()
        + ResetFrame(5, ErrorCode.CANCEL, "\u2603 gone").encode()
        + PingFrame(b"12345678").encode()
        + PingFrame(b"", ack=True).encode()
        + GoAwayFrame(7, 0, "bye").encode()
        + ChannelCreditFrame(200).encode()
        + DropFrame(3, 2).encode()
        + UnknownFrame(0xC, 5, 0, b"ext").encode()
        + DataFrame(1, b"", fin=True).encode()
    )

    def test_wholeStream(self) -> None:
        """
        The reference stream decodes to a preface and fourteen frames,
        leaving nothing buffered.
        """
        decoder = FrameDecoder()
        items = decoder.receive(self.stream)
        self.assertEqual(len(items), 15)
        self.assertIsInstance(items[0], Preface)
        self.assertEqual(decoder.buffered, 0)

    def test_everySplit(self) -> None:
        """
        Split in two at every position, the stream decodes to the same
        items.
        """
        expected = decodeAll(self.stream)
        for i in range(len(self.stream) + 1):
            self.assertEqual(
                decodeInPieces([self.stream[:i], self.stream[i:]]), expected, i
            )

    def test_oneByteAtATime(self) -> None:
        """
        Fed one byte at a time, the stream decodes to the same items, and
        nothing is left buffered at the end.
        """
        decoder = FrameDecoder()
        out: list[Preface | Frame] = []
        for i in range(len(self.stream)):
            out.extend(decoder.receive(self.stream[i : i + 1]))
        self.assertEqual(out, decodeAll(self.stream))
        self.assertEqual(decoder.buffered, 0)

    def test_emptyInput(self) -> None:
        """
        Feeding no bytes produces nothing, before and after the preface.
        """
        decoder = FrameDecoder()
        self.assertEqual(decoder.receive(b""), [])
        decoder.receive(PREFACE)
        self.assertEqual(decoder.receive(b""), [])
        self.assertEqual(decoder.buffered, 0)

    def test_dataIsBytes(self) -> None:
        """
        DATA payloads are delivered as C{bytes}, whether decoded in one
        piece or reassembled.
        """
        frame = DataFrame(1, b"q" * 300).encode()
        for pieces in [
            [PREFACE + frame],
            [PREFACE, frame[:2], frame[2:100], frame[100:]],
        ]:
            data = decodeInPieces(pieces)[1]
            assert isinstance(data, DataFrame)
            self.assertIs(type(data.data), bytes)

    @given(st.lists(frames, max_size=12), settingsValues, st.data())
    @settings(max_examples=200, deadline=None)
    def test_roundTripAnySplit(
        self, frameList: list[Frame], prefaceSettings: Settings, data: st.DataObject
    ) -> None:
        """
        Any list of valid frames, encoded after any valid preface and split
        at any points, decodes back to the preface and the same frames.
        """
        stream = encodePreface(prefaceSettings) + b"".join(
            f.encode() for f in frameList
        )
        cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
        self.assertEqual(
            decodeInPieces(splitAt(stream, cuts)),
            [Preface(VERSION, prefaceSettings), *frameList],
        )


# ---------------------------------------------------------------- robustness


class RobustnessTests(SynchronousTestCase):
    """
    Whatever bytes arrive, the decoder returns items or raises
    L{ProtocolError}: never another exception.
    """

    def assertOnlyProtocolErrors(self, pieces: list[bytes]) -> None:
        """
        Feed C{pieces} to a fresh decoder; anything but L{ProtocolError}
        escapes and fails the test.  Returned items must be prefaces or
        frames.
        """
        decoder = FrameDecoder()
        try:
            for piece in pieces:
                for item in decoder.receive(piece):
                    self.assertIsInstance(
                        item,
                        (
                            Preface,
                            DataFrame,
                            OpenFrame,
                            CreditFrame,
                            ResetFrame,
                            PingFrame,
                            GoAwayFrame,
                            ChannelCreditFrame,
                            DropFrame,
                            UnknownFrame,
                        ),
                    )
                self.assertLessEqual(decoder.buffered, 16384 + 1 + 9 + 9 + 1024 + 20)
        except ProtocolError as e:
            self.assertIsInstance(e.code, ErrorCode)

    @given(st.binary(max_size=400))
    @settings(max_examples=300, deadline=None)
    def test_anyBytesAfterPreface(self, garbage: bytes) -> None:
        """
        Arbitrary bytes after a valid preface yield frames or a
        L{ProtocolError}.
        """
        self.assertOnlyProtocolErrors([PREFACE + garbage])

    @given(st.binary(max_size=400))
    @settings(max_examples=200, deadline=None)
    def test_anyBytes(self, garbage: bytes) -> None:
        """
        Arbitrary bytes without a preface yield nothing or a
        L{ProtocolError}.
        """
        self.assertOnlyProtocolErrors([garbage])

    @given(st.binary(max_size=200))
    @settings(max_examples=200, deadline=None)
    def test_anyBytesAfterMagic(self, garbage: bytes) -> None:
        """
        Arbitrary bytes after the magic (a garbled version and settings
        block) yield items or a L{ProtocolError}.
        """
        self.assertOnlyProtocolErrors([MAGIC + garbage])

    @given(mutatedStreams(), st.data())
    @settings(
        max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    def test_mutatedStreams(self, stream: bytes, data: st.DataObject) -> None:
        """
        A valid stream with bytes flipped, inserted or deleted, fed in
        arbitrary pieces, yields items or a L{ProtocolError}.
        """
        cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6))
        self.assertOnlyProtocolErrors(splitAt(stream, cuts))
