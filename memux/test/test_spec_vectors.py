"""
Check the test vectors of ``doc/spec.rst`` against `memux._wire`.

The specification carries its test vectors as ``.. code-block:: text``
blocks of ``key: value`` lines (see its "Test vectors" section).  These
tests extract every such block, encode what it describes with `memux._wire`
and compare the bytes with the block's hex, then decode the hex and compare
the result with what the block describes.  They also check that the
specification's tables of frame types, settings and error codes match the
implementation, and that every vector the prose cites exists.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from memux import _wire
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
    ProtocolError,
    ResetFrame,
    SettingId,
    Settings,
    UnknownFrame,
    decodeVarint,
    encodePreface,
    encodeVarint,
)

SPEC = Path(__file__).parents[2] / "doc" / "spec.rst"

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


def readSpec() -> str:
    """
    Return the text of ``doc/spec.rst``, or skip the calling test when the
    document is not there (for example in an installed package).
    """
    if not SPEC.is_file():
        raise unittest.SkipTest(f"{SPEC} not found: the specification is not installed")
    return SPEC.read_text(encoding="utf-8")


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


class SpecVectorTests(unittest.SynchronousTestCase):
    """
    The test vectors in ``doc/spec.rst`` agree with `memux._wire`.
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
        ]
        names = [v.name for v in self.vectors]
        self.assertEqual(len(names), len(set(names)), "duplicate vector names")
        for v in self.vectors:
            self.assertIn(set(v.fields), shapes, v)
            v.raw  # noqa: B018 -- raises ValueError for bad hex
            if "input" in v.fields:
                inputs = ("varint", "stream", "after-preface")
                self.assertIn(v.fields["input"], inputs, v)

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
