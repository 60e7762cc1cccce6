"""
Check the test vectors of ``doc/spec.rst`` against `memux._wire`, and the
exchange and ``chargen`` vectors against the reference sessions and
built-in services (`memux.protocol`, `memux.services`).

The specification carries its test vectors as ``.. code-block:: text``
blocks of ``key: value`` lines (see its "Test vectors" section).  These
tests extract every such block, encode what it describes with `memux._wire`
and compare the bytes with the block's hex, then decode the hex and compare
the result with what the block describes; exchanges are played to a real
server session, and ``chargen`` data is read from a real channel.  They
also check that the specification's tables of frame types, settings and
error codes match the implementation, and that every vector the prose
cites exists.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any, cast

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer

from memux import _wire
from memux._engine import ChannelOpened, MemuxEngine, SessionSettings
from memux._wire import (
    SETTING_BOUNDS,
    ChannelCreditFrame,
    CreditFrame,
    DataFrame,
    DropFrame,
    ErrorCode,
    FrameDecoder,
    FrameType,
    GoAwayFrame,
    OpenFrame,
    PingFrame,
    Preface,
    PriorityFrame,
    ProtocolError,
    ResetFrame,
    SettingId,
    Settings,
    UnknownFrame,
    decodeVarint,
    encodePreface,
    encodeVarint,
)
from memux.interfaces import IChunkReceiver
from memux.protocol import ChannelTransport, MemuxProtocol
from memux.services import Echo, builtinServices
from memux.test._helpers import readSpec
from memux.testing import connectedSessions

#: The names a vector's expression may use, and nothing else.
_NAMESPACE: dict[str, Any] = {
    "__builtins__": {"bytes": bytes, "range": range},
    "ChannelCreditFrame": ChannelCreditFrame,
    "CreditFrame": CreditFrame,
    "DataFrame": DataFrame,
    "DropFrame": DropFrame,
    "ErrorCode": ErrorCode,
    "GoAwayFrame": GoAwayFrame,
    "OpenFrame": OpenFrame,
    "PingFrame": PingFrame,
    "Preface": Preface,
    "PriorityFrame": PriorityFrame,
    "ResetFrame": ResetFrame,
    "Settings": Settings,
    "UnknownFrame": UnknownFrame,
}

_DEFAULT_PREFACE = Preface(version=1, settings=Settings())
_KEY = re.compile(r"^([a-z]+):(?: +(.*))?$")
_VECTOR_NAME = re.compile(r"\*\*(V-[A-Z]+-\d+)\*\*")


class Vector:
    """
    One test vector: its name (``V-FRAME-3``), its fields and the line of
    the specification where its block starts.
    """

    def __init__(self, name: str, fields: dict[str, str], line: int) -> None:
        self.name = name
        self.fields = fields
        self.line = line

    @property
    def raw(self) -> bytes:
        """
        The bytes of the vector's ``hex`` field.
        """
        return bytes.fromhex(self.fields["hex"])

    def evaluate(self, key: str) -> Any:
        """
        Evaluate the expression in field ``key`` with the `memux._wire`
        names the specification uses.
        """
        return eval(self.fields[key], dict(_NAMESPACE))

    def __repr__(self) -> str:
        return f"<{self.name} at doc/spec.rst:{self.line}>"


def extractVectors(text: str) -> list[Vector]:
    """
    Return every vector block of the specification, in order.

    A vector block is a ``.. code-block:: text`` directive whose content
    starts with a ``key:`` line; lines that do not start with a key continue
    the previous value.  The nearest preceding ``**V-...**`` marker names it.
    """
    lines = text.splitlines()
    vectors = []
    name = None
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = _VECTOR_NAME.match(line)
        if marker:
            name = marker.group(1)
        if line.strip() != ".. code-block:: text":
            i += 1
            continue
        start = i + 1
        i += 1
        body = []
        while i < len(lines) and (not lines[i].strip() or lines[i][0].isspace()):
            body.append(lines[i])
            i += 1
        content = textwrap.dedent("\n".join(body)).strip("\n").splitlines()
        if not content or not _KEY.match(content[0]):
            continue
        fields: dict[str, str] = {}
        key = None
        for entry in content:
            m = _KEY.match(entry)
            if m:
                key = m.group(1)
                if key in fields:
                    raise ValueError(f"doc/spec.rst:{start}: {key} repeated")
                fields[key] = (m.group(2) or "").strip()
            elif key is not None and entry.strip():
                fields[key] += " " + entry.strip()
        if name is None:
            raise ValueError(f"doc/spec.rst:{start}: vector without a V- name")
        vectors.append(Vector(name, fields, start))
        name = None
    return vectors


def listTable(text: str, title: str) -> list[list[str]]:
    """
    Return the rows (header row included) of the ``.. list-table::`` with
    the given title, each row a list of its cells' text.
    """
    lines = text.splitlines()
    start = lines.index(f".. list-table:: {title}")
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.strip() and not line[0].isspace():
            break
        entry = line.strip()
        if entry.startswith("* - "):
            rows.append([entry[4:]])
        elif entry.startswith("- ") and rows:
            rows[-1].append(entry[2:])
        elif entry and rows and not entry.startswith(":"):
            rows[-1][-1] += " " + entry
    return rows


def decodeAll(data: bytes) -> list[Any]:
    """
    Decode ``data`` with a fresh `FrameDecoder` in one call.
    """
    return FrameDecoder().receive(data)


def decodeBytewise(data: bytes) -> list[Any]:
    """
    Decode ``data`` with a fresh `FrameDecoder`, one byte per call.
    """
    decoder = FrameDecoder()
    out = []
    for i in range(len(data)):
        out.extend(decoder.receive(data[i : i + 1]))
    return out


def withoutCredit(frames: list[Any]) -> list[Any]:
    """
    ``frames`` less CREDIT and CHANNELS frames, which exchange vectors leave
    out (when they are sent is each implementation's policy).
    """
    return [f for f in frames if not isinstance(f, (CreditFrame, ChannelCreditFrame))]


def serverAnswer(
    received: bytes, services: dict[bytes, Any] | None = None
) -> tuple[list[Any], StringTransport]:
    """
    Give ``received`` in one read to a reference server session offering
    ``services`` (the built-in ones by default) and return the frames it
    sends after its own preface, and its connection.
    """
    clock = Clock()
    if services is None:
        services = builtinServices(clock)
    session = MemuxProtocol(services, reactor=clock)
    transport = StringTransport()
    session.makeConnection(transport)
    session.dataReceived(received)
    for _ in range(10):
        clock.advance(0)
    sent = transport.value()
    preface = encodePreface(session.settings.toWire())
    if not sent.startswith(preface):
        raise AssertionError(f"the server did not start with its preface: {sent!r}")
    # Decoded as the peer would, with the initial MAX_FRAME_SIZE that the
    # vectors' preface (or no preface at all) leaves the server bound to.
    items = FrameDecoder().receive(sent)
    return items[1:], transport


def chargenByte(offset: int) -> int:
    """
    The byte at ``offset`` of the ``chargen`` data, by the formula of the
    specification's appendix.
    """
    line, column = divmod(offset, 74)
    if column < 72:
        return 0x20 + (line + column) % 95
    return 0x0D if column == 72 else 0x0A


def chargenData(length: int) -> bytes:
    """
    The first ``length`` bytes of the ``chargen`` data, by the formula.
    """
    period = bytes(chargenByte(offset) for offset in range(95 * 74))
    return (period * (length // len(period) + 1))[:length]


@implementer(IChunkReceiver)
class ChunkRecorder(Protocol):
    """
    A channel protocol that records the chunks it receives, with their END
    flags, and how the channel ended.
    """

    def __init__(self) -> None:
        self.chunks: list[tuple[bytes, bool]] = []
        self.reason: Failure | None = None

    def chunkReceived(self, data: bytes, endOfMessage: bool) -> None:
        self.chunks.append((data, endOfMessage))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason

    @property
    def data(self) -> bytes:
        return b"".join(data for data, _ in self.chunks)


class SpecVectorTests(unittest.SynchronousTestCase):
    """
    The test vectors in ``doc/spec.rst`` agree with `memux._wire`, and the
    exchanges and ``chargen`` data with the reference sessions and built-in
    services.
    """

    def setUp(self) -> None:
        self.text = readSpec()
        self.vectors = extractVectors(self.text)
        self.preface = encodePreface(Settings())

    def kind(self, *keys: str) -> list[Vector]:
        """
        Return the vectors that have exactly the given keys.
        """
        return [v for v in self.vectors if set(v.fields) == set(keys)]

    def test_everyBlockIsUnderstood(self) -> None:
        """
        Every vector block has one of the documented sets of keys, a unique
        name, and hex that parses; so no vector is silently skipped.
        """
        shapes = [
            {"varint", "hex"},
            {"preface", "hex"},
            {"frame", "hex"},
            {"input", "hex", "decodes"},
            {"input", "hex", "error"},
            {"input", "hex", "answer"},
            {"chargen", "hex"},
        ]
        names = [v.name for v in self.vectors]
        self.assertEqual(len(names), len(set(names)), "duplicate vector names")
        for v in self.vectors:
            self.assertIn(set(v.fields), shapes, v)
            v.raw  # noqa: B018 -- raises ValueError for bad hex
            if "answer" in v.fields:
                bytes.fromhex(v.fields["answer"])
                self.assertIn(v.fields["input"], ("stream", "after-preface"), v)
            if "input" in v.fields:
                inputs = ("varint", "stream", "after-preface")
                self.assertIn(v.fields["input"], inputs, v)
            if "chargen" in v.fields:
                self.assertGreaterEqual(int(v.fields["chargen"]), 0, v)

    def test_coverage(self) -> None:
        """
        The vectors cover the varints, prefaces, every frame type, every
        DATA flag and OPEN option, reserved types, and the malformed inputs
        the specification promises.
        """
        varints = {int(v.fields["varint"]) for v in self.kind("varint", "hex")}
        self.assertLessEqual({0, 127, 128, 300, 16384, 2**63 - 1}, varints)

        prefaces = [v.evaluate("preface") for v in self.kind("preface", "hex")]
        self.assertIn(_DEFAULT_PREFACE, prefaces)
        self.assertTrue(any(p.settings != Settings() for p in prefaces))

        frames = [v.evaluate("frame") for v in self.kind("frame", "hex")]
        for cls in (
            DataFrame,
            OpenFrame,
            CreditFrame,
            ResetFrame,
            PingFrame,
            GoAwayFrame,
            ChannelCreditFrame,
            DropFrame,
            UnknownFrame,
        ):
            self.assertTrue(any(type(f) is cls for f in frames), cls.__name__)
        data = [f for f in frames if isinstance(f, DataFrame)]
        combinations = {(f.end, f.fin, f.open) for f in data}
        for flags in [
            (False, False, False),
            (True, False, False),
            (False, True, False),
            (True, True, True),
        ]:
            self.assertIn(flags, combinations)
        opens = [f for f in frames if isinstance(f, OpenFrame)]
        plain = [
            f
            for f in opens
            if f.metadata is None and f.destination is None and not f.lossy
        ]
        self.assertTrue(plain)
        self.assertTrue(any(f.metadata is not None for f in opens))
        self.assertTrue(any(f.destination is not None for f in opens))
        self.assertTrue(any(f.lossy for f in opens))
        # An empty service name with flags: still the default service.
        self.assertTrue(
            any(f.service == b"" and (f.metadata is not None or f.lossy) for f in opens)
        )
        credits = {f.channel == 0 for f in frames if isinstance(f, CreditFrame)}
        self.assertEqual(credits, {True, False})
        acks = {f.ack for f in frames if isinstance(f, PingFrame)}
        self.assertEqual(acks, {True, False})

        errors = {v.fields["error"] for v in self.kind("input", "hex", "error")}
        self.assertLessEqual(
            {
                "PROTOCOL_ERROR",
                "FRAME_SIZE_ERROR",
                "SETTINGS_ERROR",
                "UNSUPPORTED_VERSION",
            },
            errors,
        )

        # The built-in services each have an exchange, and chargen its data.
        exchanges = b"".join(v.raw for v in self.kind("input", "hex", "answer"))
        for service in (b"echo", b"discard"):
            self.assertIn(bytes([len(service)]) + service, exchanges)
        self.assertTrue(self.kind("chargen", "hex"))

    def test_citedVectorsExist(self) -> None:
        """
        Every vector name the prose cites (``V-FRAME-10``, or a range such
        as ``V-BAD-16 to V-BAD-18``) names a vector that exists.
        """
        names = {v.name for v in self.vectors}
        cited = set(re.findall(r"\bV-[A-Z]+-\d+\b", self.text))
        self.assertEqual(cited - names, set())

    def test_varints(self) -> None:
        """
        Each varint vector's hex is `encodeVarint` of its value, and
        `decodeVarint` reads the value back, consuming every byte.
        """
        vectors = self.kind("varint", "hex")
        self.assertTrue(vectors)
        for v in vectors:
            value = int(v.fields["varint"])
            self.assertEqual(encodeVarint(value).hex(), v.raw.hex(), v)
            self.assertEqual(decodeVarint(v.raw), (value, len(v.raw)), v)

    def test_prefaces(self) -> None:
        """
        Each preface vector's hex is `encodePreface` of its settings and
        version, and a `FrameDecoder` decodes it back to the same preface,
        whether fed at once or a byte at a time.
        """
        vectors = self.kind("preface", "hex")
        self.assertTrue(vectors)
        for v in vectors:
            preface = v.evaluate("preface")
            self.assertIsInstance(preface, Preface, v)
            encoded = encodePreface(preface.settings, preface.version)
            self.assertEqual(encoded.hex(), v.raw.hex(), v)
            self.assertEqual(decodeAll(v.raw), [preface], v)
            self.assertEqual(decodeBytewise(v.raw), [preface], v)

    def test_frames(self) -> None:
        """
        Each frame vector's hex is the frame's encoding, and a
        `FrameDecoder` reading a default preface and then the hex yields the
        same frame, whether fed at once or a byte at a time.
        """
        vectors = self.kind("frame", "hex")
        self.assertTrue(vectors)
        for v in vectors:
            frame = v.evaluate("frame")
            self.assertEqual(frame.encode().hex(), v.raw.hex(), v)
            expected = [_DEFAULT_PREFACE, frame]
            self.assertEqual(decodeAll(self.preface + v.raw), expected, v)
            self.assertEqual(decodeBytewise(self.preface + v.raw), expected, v)

    def test_framesBackToBack(self) -> None:
        """
        All frame vectors sent back to back after one preface decode to the
        same frames in order: frames need no separator or alignment.
        """
        vectors = self.kind("frame", "hex")
        stream = self.preface + b"".join(v.raw for v in vectors)
        expected = [_DEFAULT_PREFACE] + [v.evaluate("frame") for v in vectors]
        self.assertEqual(decodeAll(stream), expected)

    def test_decodeOnly(self) -> None:
        """
        Each decode-only vector (reserved flags, unknown settings, higher
        versions) decodes to what the vector says.
        """
        vectors = self.kind("input", "hex", "decodes")
        self.assertTrue(vectors)
        for v in vectors:
            want = v.evaluate("decodes")
            if v.fields["input"] == "after-preface":
                got = decodeAll(self.preface + v.raw)
                self.assertEqual(got, [_DEFAULT_PREFACE, want], v)
            else:
                self.assertEqual(v.fields["input"], "stream", v)
                self.assertEqual(decodeAll(v.raw), [want], v)

    def test_malformed(self) -> None:
        """
        Each malformed-input vector makes the decoder raise `ProtocolError`
        with the error code the vector names, whether fed at once or a byte
        at a time.
        """
        vectors = self.kind("input", "hex", "error")
        self.assertTrue(vectors)
        for v in vectors:
            code = ErrorCode[v.fields["error"]]
            kind = v.fields["input"]
            if kind == "varint":
                error = self.assertRaises(ProtocolError, decodeVarint, v.raw)
                self.assertEqual(error.code, code, v)
                continue
            data = self.preface + v.raw if kind == "after-preface" else v.raw
            for decode in (decodeAll, decodeBytewise):
                error = self.assertRaises(ProtocolError, decode, data)
                self.assertEqual(error.code, code, (v, decode.__name__, str(error)))

    def test_checkOrder(self) -> None:
        """
        A frame that breaks several rules is reported with the error of the
        first check the specification lists: the length against
        MAX_FRAME_SIZE, then the channel id against the type, then the
        payload.  So a PING on a non-zero channel is a PROTOCOL_ERROR even
        with a payload over 64 bytes, but a FRAME_SIZE_ERROR if its length
        exceeds MAX_FRAME_SIZE.
        """
        cases = [
            # (type byte, channel, payload, code)
            (0x40, 1, bytes(65), ErrorCode.PROTOCOL_ERROR),
            (0x41, 3, bytes(200), ErrorCode.PROTOCOL_ERROR),
            (0x40, 0, bytes(65), ErrorCode.FRAME_SIZE_ERROR),
            (0x50, 1, b"\x80", ErrorCode.PROTOCOL_ERROR),
            (0x60, 1, b"", ErrorCode.PROTOCOL_ERROR),
            (0x30, 0, b"", ErrorCode.PROTOCOL_ERROR),
            (0x70, 0, b"\x00", ErrorCode.PROTOCOL_ERROR),
            (0x10, 0, b"\x05", ErrorCode.PROTOCOL_ERROR),
        ]
        for typeByte, channel, payload, code in cases:
            frame = (
                bytes([typeByte])
                + encodeVarint(channel)
                + encodeVarint(len(payload))
                + payload
            )
            for decode in (decodeAll, decodeBytewise):
                error = self.assertRaises(ProtocolError, decode, self.preface + frame)
                self.assertEqual(error.code, code, (frame.hex(" "), str(error)))
        # The length is checked from the header, before the channel id.
        header = b"\x40\x01" + encodeVarint(16385)
        error = self.assertRaises(ProtocolError, decodeAll, self.preface + header)
        self.assertEqual(error.code, ErrorCode.FRAME_SIZE_ERROR)

    def test_openingFrames(self) -> None:
        """
        Every opening frame among the frame vectors opens, at a receiving
        engine, a channel of the service it names, with its metadata,
        destination and lossiness; an empty name is the default service
        whatever the flags, and DATA with OPEN is the default service with
        none of them.
        """
        seen = 0
        for v in self.kind("frame", "hex"):
            frame = v.evaluate("frame")
            if isinstance(frame, OpenFrame):
                expected = ChannelOpened(
                    frame.channel,
                    frame.service,
                    frame.metadata,
                    frame.destination,
                    frame.lossy,
                )
            elif isinstance(frame, DataFrame) and frame.open:
                expected = ChannelOpened(frame.channel, b"")
            else:
                continue
            seen += 1
            # The peer of an odd (client) id is the server, and the reverse.
            engine = MemuxEngine(client=frame.channel % 2 == 0)
            events = engine.receiveData(self.preface + v.raw)
            opened = [e for e in events if isinstance(e, ChannelOpened)]
            self.assertEqual(opened, [expected], v)
        self.assertTrue(seen)

    def test_emptyServiceIsDefault(self) -> None:
        """
        A reference session serves every OPEN vector with an empty service
        name with its default service (the one under b""), whatever its
        flags: here an echo, which answers a message sent on the channel.
        """
        vectors = [
            v
            for v in self.kind("frame", "hex")
            if isinstance(v.evaluate("frame"), OpenFrame)
            and v.evaluate("frame").service == b""
        ]
        self.assertGreaterEqual(len(vectors), 2)
        for v in vectors:
            channel = v.evaluate("frame").channel
            message = DataFrame(channel, b"x", end=True)
            received = self.preface + v.raw + message.encode()
            frames, _ = serverAnswer(received, {b"": Factory.forProtocol(Echo)})
            self.assertEqual(withoutCredit(frames), [message], v)

    def test_exchanges(self) -> None:
        """
        Each exchange vector's ``answer`` is what a reference server
        session offering the built-in services sends after its preface
        (CREDIT and CHANNELS frames left out) when it receives the vector's
        input in one read; an answer ending in a GOAWAY with an error is
        followed by the close of the connection.
        """
        vectors = self.kind("input", "hex", "answer")
        self.assertTrue(vectors)
        for v in vectors:
            received = v.raw
            if v.fields["input"] == "after-preface":
                received = self.preface + received
            expected = decodeAll(self.preface + bytes.fromhex(v.fields["answer"]))[1:]
            self.assertEqual(
                b"".join(f.encode() for f in expected).hex(" "),
                bytes.fromhex(v.fields["answer"]).hex(" "),
                v,
            )
            frames, transport = serverAnswer(received)
            self.assertEqual(withoutCredit(frames), expected, v)
            last = expected[-1] if expected else None
            if isinstance(last, GoAwayFrame) and last.code != ErrorCode.NO_ERROR:
                self.assertTrue(transport.disconnecting, v)

    def test_chargen(self) -> None:
        """
        The data of the reference ``chargen`` service is the pattern the
        specification's formula gives, from its first byte, and each
        ``chargen`` vector's hex is that data at the vector's offset.  It
        never ends a message; after the client's FIN it sends what it has
        queued and FIN, and the channel closes cleanly.
        """
        vectors = self.kind("chargen", "hex")
        self.assertTrue(vectors)
        need = max(int(v.fields["chargen"]) + len(v.raw) for v in vectors)
        clock = Clock()
        client, server, pump = connectedSessions(builtinServices(clock), clock=clock)
        recorder = ChunkRecorder()
        client.openChannel(b"chargen", Factory.forProtocol(lambda: recorder))
        for _ in range(100):
            if len(recorder.data) >= need:
                break
            # Not pump.flush(): chargen always has more to send.
            pump.pump()
            clock.advance(0)
        data = recorder.data
        self.assertGreaterEqual(len(data), need)
        for v in vectors:
            offset = int(v.fields["chargen"])
            got = data[offset : offset + len(v.raw)]
            self.assertEqual(got.hex(" "), v.raw.hex(" "), v)

        cast(ChannelTransport, recorder.transport).loseWriteConnection()
        for _ in range(1000):
            if recorder.reason is not None:
                break
            pump.pump()
            clock.advance(0)
        self.assertIsNotNone(recorder.reason)
        assert recorder.reason is not None
        recorder.reason.trap(ConnectionDone)
        self.assertEqual(recorder.data, chargenData(len(recorder.data)))
        self.assertEqual([end for _, end in recorder.chunks if end], [])

    def test_echoStreams(self) -> None:
        """
        The reference ``echo`` service sends back a message longer than the
        MAX_MESSAGE_SIZE its session announces, intact and ended once: it
        streams chunks instead of reassembling messages.
        """
        clock = Clock()
        client, server, pump = connectedSessions(
            builtinServices(clock),
            serverSettings=SessionSettings(maxMessageSize=1000),
            clock=clock,
        )
        recorder = ChunkRecorder()
        client.openChannel(b"echo", Factory.forProtocol(lambda: recorder))
        pump.flush()
        transport = cast(ChannelTransport, recorder.transport)
        message = bytes(range(256)) * 40
        transport.write(message[:5000])
        transport.writeMessage(message[5000:])
        pump.flush()
        self.assertEqual(recorder.data, message)
        self.assertEqual([end for _, end in recorder.chunks if end], [True])
        self.assertTrue(recorder.chunks[-1][1])
        self.assertIsNone(recorder.reason)


class SpecTableTests(unittest.SynchronousTestCase):
    """
    The tables of ``doc/spec.rst`` agree with the constants of `memux._wire`.
    """

    def setUp(self) -> None:
        self.text = readSpec()

    def test_frameTypes(self) -> None:
        """
        The "Frame types" table lists exactly the `FrameType` values and
        names.
        """
        rows = listTable(self.text, "Frame types")[1:]
        table = {int(row[0], 16): row[1] for row in rows}
        self.assertEqual(table, {t.value: t.name for t in FrameType})

    def test_errorCodes(self) -> None:
        """
        The "Error codes" table lists exactly the `ErrorCode` values and
        names.
        """
        rows = listTable(self.text, "Error codes")[1:]
        table = {int(row[0], 16): row[1] for row in rows}
        self.assertEqual(table, {c.value: c.name for c in ErrorCode})

    def test_settings(self) -> None:
        """
        The "Settings" table lists exactly the `SettingId` values and names,
        with the initial values (equal to the lower bounds) and upper bounds
        of `SETTING_BOUNDS`.
        """
        rows = listTable(self.text, "Settings")[1:]
        table = {
            int(row[0], 16): (row[1], int(row[2].split()[0]), int(row[3].split()[0]))
            for row in rows
        }
        expected = {}
        for sid, (initial, low, high) in SETTING_BOUNDS.items():
            self.assertEqual(initial, low, sid)
            expected[sid.value] = (SettingId(sid).name, initial, high)
        self.assertEqual(table, expected)

    def test_byteBudgets(self) -> None:
        """
        The byte counts the "Byte budgets" and "Bulk overhead" tables state
        for DATA frames are those of real encodings: 3 header bytes for a
        chunk under 128 bytes on channels 1 to 127, 103 bytes to open the
        default service, send one 100-byte message and half-close, and the
        header size of each bulk chunk size listed.
        """
        rows = {row[0]: row[1] for row in listTable(self.text, "Byte budgets")[1:]}
        small = "Header of a DATA chunk of 0 to 127 bytes on channels 1 to 127"
        headers = {
            len(DataFrame(channel, bytes(n)).encode()) - n
            for channel in range(1, 128)
            for n in (0, 1, 100, 127)
        }
        self.assertEqual(headers, {int(rows[small])})
        whole = DataFrame(1, b"x" * 100, end=True, fin=True, open=True).encode()
        budget = (
            "Open a channel for the default service, send one 100-byte "
            "message, half-close"
        )
        self.assertEqual(len(whole), int(rows[budget]))
        self.assertEqual(len(whole), 103)

        bulk = listTable(self.text, "Bulk overhead")[1:]
        self.assertTrue(bulk)
        for row in bulk:
            n = int(row[0].split()[0])
            header = len(DataFrame(1, bytes(n)).encode()) - n
            self.assertEqual(header, int(row[1].split()[0]), row)

    def test_constants(self) -> None:
        """
        The magic, the version, the ALPN identifier and the size limits the
        specification states are those of `memux._wire`.
        """
        self.assertIn(f":Protocol version: {_wire.VERSION}\n", self.text)
        self.assertIn(f":Preface magic: ``{_wire.MAGIC.hex(' ')}``", self.text)
        self.assertIn("``memux/1``", self.text)
        self.assertIn(f"at most {_wire.MAX_SETTINGS_BLOCK}", self.text)
        self.assertIn(f"0 to {_wire.MAX_PING_PAYLOAD} opaque bytes", self.text)
        self.assertIn(f"0 to {_wire.MAX_NAME_LENGTH}", self.text)
