# -*- test-case-name: memux.test.test_dissector -*-
"""
The Wireshark dissector ``contrib/wireshark/memux.lua``, run by a real
``tshark`` over captures written here from bytes memux produced: a small
pcap writer frames them in synthetic TCP/IPv4 packets on loopback
addresses (deterministic, and no capture privileges needed).  What tshark
decodes is read back from its PDML output and compared with what memux's
own decoder makes of the same bytes.  The tests skip, saying why, when
tshark (Debian package ``tshark``) is not installed.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from memux._engine import DataReceived, MemuxEngine
from memux._wire import (
    MAGIC,
    ChannelCreditFrame,
    CreditFrame,
    DataFrame,
    DropFrame,
    ErrorCode,
    Frame,
    FrameDecoder,
    GoAwayFrame,
    OpenFrame,
    PingFrame,
    Preface,
    PriorityFrame,
    ProtocolError,
    ResetFrame,
    Settings,
    UnknownFrame,
    encodePreface,
    encodeVarint,
    parseFrame,
)
from memux.settings import SessionSettings
from memux.test._helpers import ROOT, readSpec

#: The dissector, in the checkout.
LUA = ROOT / "contrib" / "wireshark" / "memux.lua"


def tshark() -> str:
    """
    The path of tshark and the dissector's; skip the calling test, saying
    why, if either is missing.
    """
    path = shutil.which("tshark")
    if path is None:
        raise SkipTest(
            "tshark is not installed (Debian: apt-get install tshark):"
            " the Wireshark dissector is not tested"
        )
    if not LUA.is_file():
        raise SkipTest(f"{LUA} not found (an installed memux has no contrib/)")
    return path


# ------------------------------------------------------------ writing captures


def _checksum(data: bytes) -> int:
    """
    The Internet checksum (RFC 1071) of C{data}.
    """
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


#: TCP flags
SYN, FIN, PSH, ACK = 0x02, 0x01, 0x08, 0x10


class Capture:
    """
    A packet capture being written: IPv4 packets (pcap link type RAW),
    one millisecond apart.
    """

    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def tcp(
        self,
        src: tuple[str, int],
        dst: tuple[str, int],
        seq: int,
        ack: int,
        flags: int,
        payload: bytes = b"",
    ) -> int:
        """
        Add a TCP segment with valid checksums; return its frame number
        (from 1, as Wireshark counts).
        """
        srcIP, dstIP = socket.inet_aton(src[0]), socket.inet_aton(dst[0])
        header = struct.pack(
            "!HHIIBBHHH", src[1], dst[1], seq, ack, 5 << 4, flags, 65535, 0, 0
        )
        pseudo = srcIP + dstIP + struct.pack("!BBH", 0, 6, len(header) + len(payload))
        check = _checksum(pseudo + header + payload)
        segment = header[:16] + struct.pack("!H", check) + header[18:] + payload
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(segment),
            len(self.packets) & 0xFFFF,
            0x4000,
            64,
            6,
            0,
            srcIP,
            dstIP,
        )
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        self.packets.append(ip + segment)
        return len(self.packets)

    def write(self, path: Path) -> None:
        """
        Write the capture to C{path} in the classic pcap format.
        """
        with path.open("wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))
            for n, packet in enumerate(self.packets, 1):
                f.write(struct.pack("<IIII", 0, n * 1000, len(packet), len(packet)))
                f.write(packet)


class Connection:
    """
    One TCP connection in a L{Capture}, from its handshake (or, without
    C{handshake}, from somewhere in its middle, as in a capture started
    late): each L{send} becomes one segment per piece, with the sequence
    numbers TCP would use.
    """

    def __init__(
        self,
        capture: Capture,
        client: tuple[str, int],
        server: tuple[str, int],
        handshake: bool = True,
    ) -> None:
        self.capture = capture
        self.ends = {True: client, False: server}
        # initial sequence numbers differ from one connection to the next,
        # as TCP makes them: a SYN reusing a port is a new connection
        isn = 1000 + 100_000 * len(capture.packets)
        self.seq = {True: isn + 1, False: isn + 5001}
        if handshake:
            capture.tcp(client, server, isn, 0, SYN)
            capture.tcp(server, client, isn + 5000, isn + 1, SYN | ACK)
            capture.tcp(client, server, isn + 1, isn + 5001, ACK)

    def close(self) -> None:
        """
        End the connection: FIN each way, each acknowledged.
        """
        for fromClient in (True, False):
            self.capture.tcp(
                self.ends[fromClient],
                self.ends[not fromClient],
                self.seq[fromClient],
                self.seq[not fromClient],
                FIN | ACK,
            )
            self.seq[fromClient] += 1
        self.capture.tcp(
            self.ends[True], self.ends[False], self.seq[True], self.seq[False], ACK
        )

    def send(
        self, fromClient: bool, data: bytes, cuts: tuple[int, ...] | list[int] = ()
    ) -> list[int]:
        """
        Send C{data} one way, cut into segments at the offsets C{cuts};
        return the frame numbers of the segments.
        """
        frames = []
        bounds = [0, *cuts, len(data)]
        for start, end in zip(bounds, bounds[1:], strict=False):
            frames.append(
                self.capture.tcp(
                    self.ends[fromClient],
                    self.ends[not fromClient],
                    self.seq[fromClient],
                    self.seq[not fromClient],
                    PSH | ACK,
                    data[start:end],
                )
            )
            self.seq[fromClient] += end - start
        return frames


# ------------------------------------------------------------ reading tshark


@dataclass
class PDU:
    """
    One memux item tshark shows: a preface or a frame, with its fields
    (each name's C{(show, value)} pairs, in order) and expert infos
    (C{(name, message)}).
    """

    frame: int
    src: int
    title: str
    fields: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    #: each field name's displayed lines (as in tshark -V), in order
    shownames: dict[str, list[str]] = field(default_factory=dict)
    experts: list[tuple[str, str]] = field(default_factory=list)

    def show(self, name: str) -> str:
        """
        The displayed value of the one field C{name}.
        """
        [(show, _)] = self.fields[name]
        return show

    def integer(self, name: str) -> int:
        """
        The one field C{name}, an integer (decimal or 0x-hexadecimal).
        """
        return int(self.show(name), 0)

    def raw(self, name: str) -> bytes:
        """
        The bytes of the one field C{name}; empty if it has none.
        """
        if name not in self.fields:
            return b""
        [(_, value)] = self.fields[name]
        return bytes.fromhex(value)

    def flag(self, name: str) -> bool:
        """
        The one boolean field C{memux.flags.NAME}.
        """
        return self.show("memux.flags." + name) == "1"

    def has(self, name: str) -> bool:
        """
        Whether the PDU has a field C{name}.
        """
        return name in self.fields


@dataclass
class Packet:
    """
    A packet as tshark decoded it: its number, ports, the protocols in it,
    the memux PDUs, and how many TCP segments the data was reassembled from
    (0 if it was not).
    """

    number: int
    src: int
    dst: int
    protocols: list[str]
    pdus: list[PDU]
    segments: int


def dissect(capture: Capture, *options: str, twoPass: bool = False) -> list[Packet]:
    """
    Run tshark with the dissector over C{capture} (with the preferences
    C{options}, C{"name:value"}; in two passes, as Wireshark's window
    does, with C{twoPass}), in a configuration directory of its own;
    return its packets.
    """
    program = tshark()
    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp, "capture.pcap")
        capture.write(pcap)
        argv = [program, "-n", "-r", str(pcap), "-X", f"lua_script:{LUA}", "-T", "pdml"]
        for option in options:
            argv += ["-o", option]
        if twoPass:
            argv.append("-2")
        env = dict(os.environ, WIRESHARK_CONFIG_DIR=tmp)
        done = subprocess.run(argv, capture_output=True, timeout=60, env=env)
    if done.returncode != 0 or b"Lua: Error" in done.stderr:
        raise AssertionError(f"tshark failed ({done.returncode}): {done.stderr!r}")
    packets = []
    # tshark's PDML is UTF-8 unless a dissector slipped other bytes in
    text = done.stdout.decode("utf-8")
    if "Lua Error" in text:
        # a run-time error in the dissector shows in the tree, not on stderr
        raise AssertionError(re.findall(r'showname="(Lua Error[^"]*)"', text))
    for node in ET.fromstring(text).iter("packet"):
        protos = node.findall("proto")
        names = [p.get("name", "") for p in protos]
        number = src = dst = segments = 0
        pdus = []
        for proto in protos:
            for f in proto.iter("field"):
                name = f.get("name")
                if name == "frame.number":
                    number = int(f.get("show", "0"))
                elif name == "tcp.srcport":
                    src = int(f.get("show", "0"))
                elif name == "tcp.dstport":
                    dst = int(f.get("show", "0"))
                elif name == "tcp.segment":
                    segments += 1
            if proto.get("name") == "memux":
                pdu = PDU(number, src, proto.get("showname", ""))
                for f in proto.iter("field"):
                    name = f.get("name", "")
                    if name == "_ws.expert":
                        kinds = [
                            c.get("name", "")
                            for c in f
                            if c.get("name", "").startswith("memux.")
                        ]
                        message = [
                            c.get("show", "")
                            for c in f
                            if c.get("name") == "_ws.expert.message"
                        ]
                        pdu.experts.append((kinds[0], message[0] if message else ""))
                    elif name.startswith("memux."):
                        pdu.fields.setdefault(name, []).append(
                            (f.get("show", ""), f.get("value", ""))
                        )
                        pdu.shownames.setdefault(name, []).append(f.get("showname", ""))
                pdus.append(pdu)
        packets.append(Packet(number, src, dst, names, pdus, segments))
    return packets


def frameOf(pdu: PDU) -> Preface | Frame:
    """
    Rebuild from what tshark shows the preface or frame memux's own decoder
    would make of the same bytes.
    """
    if pdu.has("memux.magic"):
        block = b"".join(
            encodeVarint(int(i)) + encodeVarint(int(v))
            for (i, _), (v, _) in zip(
                pdu.fields.get("memux.setting.id", []),
                pdu.fields.get("memux.setting.value", []),
                strict=True,
            )
        )
        return Preface(pdu.integer("memux.version"), Settings.decode(block))
    ftype = pdu.integer("memux.type")
    channel = pdu.integer("memux.channel")
    if ftype == 0:
        return DataFrame(
            channel,
            pdu.raw("memux.data"),
            pdu.flag("end"),
            pdu.flag("fin"),
            pdu.flag("open"),
        )
    if ftype == 1:
        metadata = pdu.raw("memux.open.metadata") if pdu.flag("metadata") else None
        destination = None
        if pdu.flag("destination"):
            host = pdu.raw("memux.open.host").decode()
            destination = (host, pdu.integer("memux.open.port"))
        return OpenFrame(
            channel,
            pdu.raw("memux.open.service"),
            metadata,
            destination,
            pdu.flag("lossy"),
        )
    if ftype == 2:
        return CreditFrame(channel, pdu.integer("memux.credit.limit"))
    if ftype == 3:
        reason = pdu.raw("memux.reset.reason").decode()
        return ResetFrame(channel, pdu.integer("memux.reset.code"), reason)
    if ftype == 4:
        return PingFrame(pdu.raw("memux.ping.payload"), pdu.flag("ack"))
    if ftype == 5:
        reason = pdu.raw("memux.goaway.reason").decode()
        return GoAwayFrame(
            pdu.integer("memux.goaway.last_channel"),
            pdu.integer("memux.goaway.code"),
            reason,
        )
    if ftype == 6:
        return ChannelCreditFrame(pdu.integer("memux.channels.limit"))
    if ftype == 7:
        return DropFrame(channel, pdu.integer("memux.drop.count"))
    # A reserved or extension type: shown raw; what it means is memux's
    # business (an extension memux knows, such as PRIORITY, has a class).
    typeByte = (ftype << 4) | pdu.integer("memux.flags")
    return parseFrame(typeByte, channel, pdu.raw("memux.payload"))


def pdusFrom(packets: list[Packet], port: int) -> list[PDU]:
    """
    The memux PDUs sent from C{port}, in order.
    """
    return [pdu for p in packets for pdu in p.pdus if p.src == port]


def pdusTo(packets: list[Packet], port: int) -> list[PDU]:
    """
    The memux PDUs sent to C{port}, in order: on a connection from client
    port C{port}, the server's.
    """
    return [pdu for p in packets for pdu in p.pdus if p.dst == port]


def decoded(data: bytes, maxFrameSize: int = 1 << 24) -> list[Preface | Frame]:
    """
    What memux's own decoder makes of one direction's bytes.
    """
    return FrameDecoder(maxFrameSize).receive(data)


def rawFrame(typeByte: int, channel: int, payload: bytes) -> bytes:
    """
    The bytes of a frame built by hand, valid or not.
    """
    return (
        bytes((typeByte,))
        + encodeVarint(channel)
        + encodeVarint(len(payload))
        + payload
    )


def rawPreface(version: int, block: bytes) -> bytes:
    """
    A preface built by hand, valid or not.
    """
    return MAGIC + encodeVarint(version) + encodeVarint(len(block)) + block


#: HAProxy's send-proxy-v2 header for a client at 127.0.0.3:51000 that
#: reached 127.0.0.1:7400.
PROXY_V2_HEADER = (
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c"
    + socket.inet_aton("127.0.0.3")
    + socket.inet_aton("127.0.0.1")
    + struct.pack("!HH", 51000, 7400)
)

CLIENT = "127.0.0.2"
SERVER = "127.0.0.1"
#: The preface with every setting at its initial value (vector V-PREFACE-1):
#: PRIORITY_HINTS not stated, so 0.
PREFACE = encodePreface(Settings())
#: memux's default preface, which announces PRIORITY_HINTS = 1.
HINTS_PREFACE = encodePreface(SessionSettings().toWire())


#: A sample session: the client's preface (a setting above its initial
#: value, and an unknown one), every frame type each way (each flag and
#: optional field, a reserved type and an extension frame among them).
SAMPLE_PREFACE = rawPreface(
    1,
    encodeVarint(1)
    + encodeVarint(65536)
    + encodeVarint(4)
    + encodeVarint(200)
    + encodeVarint(0x4000)
    + encodeVarint(1),
)
SAMPLE_CLIENT: list[Frame] = [
    OpenFrame(1, b"echo"),
    DataFrame(1, b"hello", end=True),
    DataFrame(3, b"hi", end=True, fin=True, open=True),
    OpenFrame(5, b"db", b"token", ("db.internal", 5432), lossy=True),
    DropFrame(5, 2),
    CreditFrame(0, 1048576),
    PingFrame(b"12345678"),
    UnknownFrame(0x8, 0x3, 9, b"future"),
    UnknownFrame(0xF, 0x0, 0, encodeVarint(0x4001) + b"\x05"),
]
SAMPLE_SERVER: list[Frame] = [
    PingFrame(b"12345678", ack=True),
    ResetFrame(5, ErrorCode.REFUSED, "no such service"),
    CreditFrame(1, 131072),
    ChannelCreditFrame(300),
    DataFrame(2, b"push", open=True),
    GoAwayFrame(3, 0x40, "bye"),
]


def writeSample(capture: Capture, port: int) -> int:
    """
    Add the sample session to C{capture}, from client port C{port} to port
    7400, then a DATA frame with a reserved flag bit set (0x8: ignored by
    receivers); return the number of the packet that opens channel 5.
    """
    conn = Connection(capture, (CLIENT, port), (SERVER, 7400))
    conn.send(True, SAMPLE_PREFACE)
    conn.send(False, PREFACE)
    [openedIn] = conn.send(True, b"".join(f.encode() for f in SAMPLE_CLIENT[:5]))
    conn.send(True, b"".join(f.encode() for f in SAMPLE_CLIENT[5:]))
    conn.send(True, rawFrame(0x09, 1, b"!"))
    conn.send(False, b"".join(f.encode() for f in SAMPLE_SERVER))
    return openedIn


def pump(
    client: MemuxEngine, server: MemuxEngine, written: list[tuple[bool, bytes]]
) -> None:
    """
    Carry bytes between two engines, as TCP would, until neither has any
    to send, consuming what each receives; append each write to
    C{written}, as C{(True if the client wrote it, bytes)}.
    """
    moved = True
    while moved:
        moved = False
        for fromClient, sender, receiver in (
            (True, client, server),
            (False, server, client),
        ):
            data = sender.dataToSend()
            if data:
                moved = True
                written.append((fromClient, data))
                for event in receiver.receiveData(data):
                    if isinstance(event, DataReceived):
                        receiver.consumed(event.channel, len(event.data))


# ------------------------------------------------------------ the tests


class FrameTypeTests(SynchronousTestCase):
    """
    Every frame type, with each of its fields, decoded as the specification
    defines it.
    """

    def test_everyFrameType(self) -> None:
        """
        A session with the preface (a non-default setting and an unknown
        one) and each frame type (with each flag and optional field, a
        reserved type and an extension frame): tshark shows each item with
        the fields memux's own decoder finds in the same bytes, the error
        codes and settings by name, the extended type, and a note for a
        reserved flag bit; nothing is flagged malformed.
        """
        capture = Capture()
        openedIn = writeSample(capture, 40002)
        clientPreface, clientFrames, serverFrames = (
            SAMPLE_PREFACE,
            SAMPLE_CLIENT,
            SAMPLE_SERVER,
        )
        packets = dissect(capture)

        client, server = pdusFrom(packets, 40002), pdusFrom(packets, 7400)
        self.assertEqual(
            [frameOf(p) for p in client],
            decoded(clientPreface + b"".join(f.encode() for f in clientFrames))
            + [DataFrame(1, b"!", end=True)],
        )
        self.assertEqual(
            [frameOf(p) for p in client],
            [
                Preface(1, Settings(maxFrameSize=65536, initialMaxChannels=200)),
                *clientFrames,
                DataFrame(1, b"!", end=True),
            ],
        )
        self.assertEqual(
            [frameOf(p) for p in server], [Preface(1, Settings()), *serverFrames]
        )
        # the settings stated, unknown ones included
        self.assertEqual(
            [show for (show, _) in client[0].fields["memux.setting.id"]],
            ["1", "4", "16384"],
        )
        titles = [p.title for p in client[1:]] + [p.title for p in server[1:]]
        self.assertEqual(
            titles,
            [
                "memux OPEN frame",
                "memux DATA frame",
                "memux DATA frame",
                "memux OPEN frame",
                "memux DROP frame",
                "memux CREDIT frame",
                "memux PING frame",
                "memux reserved 0x8 frame",
                "memux EXTENSION frame",
                "memux DATA frame",
                "memux PING frame",
                "memux RESET frame",
                "memux CREDIT frame",
                "memux CHANNELS frame",
                "memux DATA frame",
                "memux GOAWAY frame",
            ],
        )
        self.assertEqual(client[9].integer("memux.extended_type"), 0x4001)
        reset, goaway = server[2], server[6]
        self.assertEqual(
            (reset.experts, goaway.experts),
            (
                [("memux.error_code", "RESET REFUSED: no such service")],
                [("memux.error_code", "GOAWAY UNKNOWN(0x40): bye")],
            ),
        )
        # the channel RESET names is followed back to its OPEN
        self.assertEqual(
            (
                reset.show("memux.channel.service"),
                reset.integer("memux.channel.opened_in"),
                reset.show("memux.channel.opener"),
            ),
            ("db", openedIn, "client"),
        )
        self.assertEqual(server[5].show("memux.channel.opener"), "server")
        self.assertEqual(
            [p.experts for p in client[8:]],
            [
                [
                    (
                        "memux.ignored",
                        "Frame of a reserved type (ignored by version 1 receivers)",
                    )
                ],
                [
                    (
                        "memux.ignored",
                        "Frame of a reserved type (ignored by version 1 receivers)",
                    )
                ],
                [("memux.reserved_flags", "Reserved flag bits set (ignored)")],
            ],
        )
        flagged = [
            e for p in client + server for e in p.experts if e[0] != "memux.ignored"
        ]
        self.assertNotIn("memux.malformed", [name for name, _ in flagged])


class EngineSessionTests(SynchronousTestCase):
    """
    A session memux's engine carried, as TCP would: the dissector agrees
    with memux's decoder on every preface and frame.
    """

    def session(self) -> list[tuple[bool, bytes]]:
        """
        Run a client and a server engine against each other through
        channels of every kind, a refusal, a lossy channel that sheds,
        flow control, a PING, enough channels opened and closed for
        channel-count credit, and a GOAWAY; return what each wrote, in
        order (C{True}: the client).
        """
        client = MemuxEngine(True, SessionSettings(maxFrameSize=32768))
        server = MemuxEngine(
            False,
            SessionSettings(channelCredit=65536, sessionCredit=262144, maxChannels=100),
        )
        written: list[tuple[bool, bytes]] = []
        echo = client.openChannel(b"echo")
        client.sendData(echo, b"hello", True)
        default = client.openChannel()
        client.sendData(default, b"x" * 100, True)
        lossy = client.openChannel(b"db", b"token", ("db.internal", 5432), lossy=True)
        client.sendData(lossy, b"m1", True)
        client.sendData(lossy, b"m2", True)
        self.assertEqual(client.discardQueuedMessages(lossy), 2)
        client.ping(b"12345678")
        pump(client, server, written)
        server.refuseChannel(lossy, "no such service")
        client.sendData(echo, b"y" * 200_000, True)
        pump(client, server, written)
        client.closeChannel(default)
        client.resetChannel(echo)
        for _ in range(60):
            client.closeChannel(client.openChannel(b"e"))
            pump(client, server, written)
        server.goAway()
        pump(client, server, written)
        return written

    def capture(self) -> tuple[list[tuple[bool, bytes]], Capture]:
        """
        The session's bytes, and a capture of them cut into 1400-byte
        segments.
        """
        written = self.session()
        capture = Capture()
        conn = Connection(capture, (CLIENT, 40001), (SERVER, 7400))
        for fromClient, data in written:
            conn.send(fromClient, data, list(range(1400, len(data), 1400)))
        return written, capture

    def test_agreesWithDecoder(self) -> None:
        """
        Each direction decodes in tshark to exactly the items memux's
        decoder finds (every frame type among them, and large DATA frames
        reassembled from many segments), with nothing flagged; the client's
        channels show the services they were opened for.
        """
        written, capture = self.capture()
        packets = dissect(capture)
        for port, fromClient in ((40001, True), (7400, False)):
            expected = decoded(b"".join(d for c, d in written if c == fromClient))
            pdus = pdusFrom(packets, port)
            self.assertEqual([frameOf(p) for p in pdus], expected)
            self.assertEqual(
                [e for p in pdus for e in p.experts if e[0] != "memux.error_code"], []
            )
        everything = [
            frameOf(p) for p in pdusFrom(packets, 40001) + pdusFrom(packets, 7400)
        ]
        kinds = {type(f).__name__ for f in everything}
        self.assertEqual(
            kinds,
            {
                "Preface",
                "DataFrame",
                "OpenFrame",
                "CreditFrame",
                "ResetFrame",
                "PingFrame",
                "GoAwayFrame",
                "ChannelCreditFrame",
                "DropFrame",
            },
        )
        self.assertGreater(max(p.segments for p in packets), 40)
        services = {
            p.integer("memux.channel"): p.show("memux.channel.service")
            for p in pdusFrom(packets, 40001)
            if p.has("memux.channel.service")
        }
        self.assertEqual((services[1], services[5], services[7]), ("echo", "db", "e"))
        self.assertEqual(services[3], "")

    def test_twoPasses(self) -> None:
        """
        In two passes (as Wireshark's window works: the second pass
        revisits every packet, and TCP hands the dissector again the
        segments it reassembled) each packet shows the same as in one.
        """
        _, capture = self.capture()
        once, twice = dissect(capture), dissect(capture, twoPass=True)
        self.assertEqual(
            [(p.number, p.pdus) for p in twice], [(p.number, p.pdus) for p in once]
        )
        self.assertGreater(sum(len(p.pdus) for p in once), 100)


class SegmentationTests(SynchronousTestCase):
    """
    Frames split across TCP segments are reassembled; several in one
    segment are each decoded.
    """

    def test_split(self) -> None:
        """
        A preface cut inside its magic, and a DATA frame (two-byte channel
        id and length) cut inside its channel varint and inside its payload,
        are each decoded once, whole, in the packet of their last segment,
        reassembled from their segments; a segment holding three frames and
        the start of a fourth shows the three, and the fourth with the next
        segment.
        """
        capture = Capture()
        conn = Connection(capture, (CLIENT, 40003), (SERVER, 7400))
        payload = bytes(range(256)) * 4
        big = DataFrame(301, payload, end=True).encode()
        small: list[Frame] = [
            CreditFrame(0, 1 << 20),
            PingFrame(b"p"),
            CreditFrame(301, 70000),
            DataFrame(301, b"tail", end=True, fin=True),
        ]
        smallBytes = b"".join(f.encode() for f in small)
        prefaceFrames = conn.send(True, PREFACE, [3])
        conn.send(False, PREFACE)
        conn.send(True, OpenFrame(301, b"bulk").encode())
        bigFrames = conn.send(True, big, [2, 500])
        # the server's frames: three whole, the fourth cut after 2 bytes
        cut = len(smallBytes) - len(small[3].encode()) + 2
        smallFrames = conn.send(False, smallBytes, [cut])
        packets = dissect(capture)
        byNumber = {p.number: p for p in packets}

        preface = byNumber[prefaceFrames[1]]
        self.assertEqual([frameOf(p) for p in preface.pdus], [Preface(1, Settings())])
        self.assertEqual(preface.segments, 2)
        self.assertEqual(byNumber[prefaceFrames[0]].pdus, [])

        self.assertEqual([byNumber[n].pdus for n in bigFrames[:2]], [[], []])
        last = byNumber[bigFrames[2]]
        self.assertEqual(
            [frameOf(p) for p in last.pdus], [DataFrame(301, payload, end=True)]
        )
        self.assertEqual(last.segments, 3)

        self.assertEqual([frameOf(p) for p in byNumber[smallFrames[0]].pdus], small[:3])
        self.assertEqual([frameOf(p) for p in byNumber[smallFrames[1]].pdus], small[3:])


#: Malformed input, as (name, bytes the client sends after its preface, or
#: instead of it when they start with the magic): each must be flagged
#: with the error code memux's own decoder raises on the same bytes.
MALFORMED = [
    ("channel varint not shortest", b"\x00\x81\x00\x00"),
    ("length varint too long", b"\x00\x01" + b"\xff" * 9 + b"\x01"),
    ("frame above MAX_FRAME_SIZE", b"\x00\x01\x81\x80\x01" + b"z" * 16385),
    ("PING on a channel, payload too long", rawFrame(0x40, 1, b"p" * 65)),
    ("PING payload too long", rawFrame(0x40, 0, b"p" * 65)),
    ("DATA on channel 0", rawFrame(0x00, 0, b"d")),
    ("GOAWAY on a channel", rawFrame(0x50, 1, b"\x00\x00")),
    ("CREDIT with trailing bytes", rawFrame(0x20, 1, b"\x01\x02")),
    ("CHANNELS without a limit", rawFrame(0x60, 0, b"")),
    ("DROP of nothing", rawFrame(0x70, 1, b"\x00")),
    ("RESET reason not UTF-8", rawFrame(0x30, 1, b"\x01\xff\xfe")),
    ("GOAWAY without a code", rawFrame(0x50, 0, b"\x05")),
    ("OPEN service too long", rawFrame(0x10, 1, encodeVarint(256) + b"s" * 256)),
    ("OPEN trailing bytes", rawFrame(0x10, 1, b"\x01sX")),
    ("OPEN port too large", rawFrame(0x12, 1, b"\x01s\x01h" + encodeVarint(65536))),
    ("OPEN metadata past the end", rawFrame(0x11, 1, b"\x01s\x05ab")),
    ("version 0", rawPreface(0, b"")),
    ("settings block too long", rawPreface(1, b"\x10" * 1025)),
    ("setting repeated", rawPreface(1, b"\x01\x80\x80\x02\x01\x80\x80\x02")),
    ("setting out of bounds", rawPreface(1, b"\x01\x64")),
    ("setting without a value", rawPreface(1, b"\x04")),
    ("PRIORITY_HINTS above 1", rawPreface(1, b"\x06\x02")),
]


class PriorityTests(SynchronousTestCase):
    """
    The PRIORITY extension frame (spec: "Priority hints") and the
    PRIORITY_HINTS setting that negotiates it, shown by name.
    """

    def test_priority(self) -> None:
        """
        A session whose sides announce PRIORITY_HINTS = 1 (shown by name)
        and send PRIORITY hints once they have read that: each is titled a
        PRIORITY frame, with its channel, urgency and weight as fields, the
        channel followed back to the OPEN of its service, and nothing
        flagged (no note that it is ignored or was not asked for); what
        tshark shows rebuilds the frames memux's decoder finds in the same
        bytes.
        """
        capture = Capture()
        conn = Connection(capture, (CLIENT, 40010), (SERVER, 7400))
        preface = HINTS_PREFACE
        client: list[Frame] = [
            OpenFrame(1, b"shell"),
            PriorityFrame(1, 0, 64),
            PriorityFrame(300, 7, 256),
        ]
        server = [PriorityFrame(1, 2, 16)]
        conn.send(False, preface)
        conn.send(True, preface + b"".join(f.encode() for f in client))
        conn.send(False, b"".join(f.encode() for f in server))
        packets = dissect(capture)
        sent = pdusFrom(packets, 40010)
        answered = pdusFrom(packets, 7400)
        self.assertEqual(
            [frameOf(p) for p in sent],
            decoded(preface + b"".join(f.encode() for f in client)),
        )
        self.assertEqual([frameOf(p) for p in sent[1:]], client)
        self.assertEqual([frameOf(p) for p in answered[1:]], server)
        self.assertIn("Setting PRIORITY_HINTS = 1", sent[0].shownames["memux.setting"])
        hints = [sent[2], sent[3], answered[1]]
        self.assertEqual(
            [
                (
                    p.title,
                    p.integer("memux.channel"),
                    p.integer("memux.extended_type"),
                    p.integer("memux.priority.urgency"),
                    p.integer("memux.priority.weight"),
                    p.experts,
                )
                for p in hints
            ],
            [
                ("memux PRIORITY frame", 1, 1, 0, 64, []),
                ("memux PRIORITY frame", 300, 1, 7, 256, []),
                ("memux PRIORITY frame", 1, 1, 2, 16, []),
            ],
        )
        self.assertEqual(
            (
                sent[2].show("memux.channel.service"),
                answered[1].show("memux.channel.service"),
                answered[1].show("memux.channel.opener"),
            ),
            ("shell", "shell", "client"),
        )
        self.assertFalse(sent[3].has("memux.channel.service"))  # never opened

    def test_reservedFlags(self) -> None:
        """
        A PRIORITY with a reserved flag bit set is still a PRIORITY (the
        bits are ignored, as memux's decoder ignores them), with a note
        about the bits.
        """
        capture = Capture()
        conn = Connection(capture, (CLIENT, 40012), (SERVER, 7400))
        conn.send(False, HINTS_PREFACE)
        conn.send(True, PREFACE + rawFrame(0xF1, 1, b"\x01\x03\x10"))
        [pdu] = pdusFrom(dissect(capture), 40012)[1:]
        self.assertEqual(frameOf(pdu), PriorityFrame(1, 3, 16))
        self.assertEqual(
            (pdu.title, pdu.integer("memux.priority.urgency"), pdu.experts),
            (
                "memux PRIORITY frame",
                3,
                [("memux.reserved_flags", "Reserved flag bits set (ignored)")],
            ),
        )

    def test_notInLayout(self) -> None:
        """
        An extension frame of PRIORITY's extended type whose payload does
        not match PRIORITY's layout is, as the spec says, an unknown
        extension frame, ignored (never malformed): it is shown as one,
        with a note saying why it is not a PRIORITY.
        """
        bad = [
            ("urgency 8 > 7", b"\x01\x08\x10", 1),
            ("weight 0 outside [1, 256]", b"\x01\x00\x00", 1),
            ("weight 257 outside [1, 256]", b"\x01\x00" + encodeVarint(257), 1),
            ("1 trailing bytes", b"\x01\x00\x10\x00", 1),
            ("weight missing", b"\x01\x00", 1),
            ("channel 0", b"\x01\x00\x10", 0),
            ("urgency: varint not in its shortest form", b"\x01\x80\x00\x10", 1),
        ]
        capture = Capture()
        conn = Connection(capture, (CLIENT, 40011), (SERVER, 7400))
        data = PREFACE + b"".join(rawFrame(0xF0, ch, p) for _, p, ch in bad)
        conn.send(True, data)
        packets = dissect(capture)
        pdus = pdusFrom(packets, 40011)[1:]
        self.assertEqual(
            [frameOf(p) for p in pdus],
            [UnknownFrame(0xF, 0, ch, p) for _, p, ch in bad],
        )
        self.assertEqual([frameOf(p) for p in pdus], decoded(data)[1:])
        self.assertEqual(
            [(p.title, p.experts) for p in pdus],
            [
                (
                    "memux EXTENSION frame",
                    [
                        (
                            "memux.ignored",
                            f"PRIORITY not in its layout ({why}):"
                            " ignored as an unknown extension frame",
                        )
                    ],
                )
                for why, _, _ in bad
            ],
        )


def unannounced(pdu: PDU) -> list[str]:
    """
    The messages of the notes on C{pdu} that it is a PRIORITY sent to a
    peer that did not announce PRIORITY_HINTS = 1.
    """
    return [m for k, m in pdu.experts if k == "memux.priority.unannounced"]


def notAnnounced(prefaceFrame: int, stated: bool) -> str:
    """
    The note on a PRIORITY sent to a peer whose preface, in frame
    C{prefaceFrame}, states PRIORITY_HINTS = 0 (C{stated}) or leaves it
    out.
    """
    what = "states PRIORITY_HINTS = 0" if stated else "does not state PRIORITY_HINTS"
    return (
        "PRIORITY sent to a peer that did not announce PRIORITY_HINTS = 1"
        f" (its preface, in frame {prefaceFrame}, {what}): the peer ignores it"
    )


#: The note on a PRIORITY sent before the peer's preface.
BEFORE_PREFACE = (
    "PRIORITY sent before the peer's preface: the sender cannot have read"
    " PRIORITY_HINTS = 1 from it"
)


class UnannouncedPriorityTests(SynchronousTestCase):
    """
    A PRIORITY frame sent to a peer that did not announce PRIORITY_HINTS =
    1, or before its preface (spec: "Priority hints": a side MUST NOT),
    gets a warning; each direction of each connection is judged by what
    its receiver announced.
    """

    def test_receiverDidNotAnnounce(self) -> None:
        """
        A PRIORITY sent to a server whose preface leaves PRIORITY_HINTS out,
        states 0, or is memux's with C{acceptPriorityHints=False} is still
        decoded as a PRIORITY, with a warning naming the frame of the
        server's preface and what it says.
        """
        declining = [
            (PREFACE, False),
            (rawPreface(1, encodeVarint(6) + encodeVarint(0)), True),
            (encodePreface(SessionSettings(acceptPriorityHints=False).toWire()), False),
        ]
        capture = Capture()
        prefaceFrames = []
        for i, (preface, _) in enumerate(declining):
            conn = Connection(capture, (CLIENT, 41000 + i), (SERVER, 7400))
            prefaceFrames += conn.send(False, preface)
            conn.send(True, HINTS_PREFACE + OpenFrame(1, b"bulk").encode())
            conn.send(True, PriorityFrame(1, 6, 8).encode())
        packets = dissect(capture)
        hints = [pdusFrom(packets, 41000 + i)[-1] for i in range(len(declining))]
        self.assertEqual(
            [(p.title, frameOf(p), p.experts) for p in hints],
            [
                (
                    "memux PRIORITY frame",
                    PriorityFrame(1, 6, 8),
                    [("memux.priority.unannounced", notAnnounced(n, stated))],
                )
                for n, (_, stated) in zip(prefaceFrames, declining, strict=True)
            ],
        )

    def test_receiverAnnounced(self) -> None:
        """
        A PRIORITY sent after the receiver's preface announced
        PRIORITY_HINTS = 1 is not flagged, even when its sender announced
        0 itself: only the receiver's announcement counts.
        """
        capture = Capture()
        conn = Connection(capture, (CLIENT, 41010), (SERVER, 7400))
        conn.send(False, HINTS_PREFACE)
        conn.send(True, PREFACE + OpenFrame(1, b"bulk").encode())
        conn.send(True, PriorityFrame(1, 0, 1).encode())
        [_, _, hint] = pdusFrom(dissect(capture), 41010)
        self.assertEqual((frameOf(hint), hint.experts), (PriorityFrame(1, 0, 1), []))

    def test_eachDirection(self) -> None:
        """
        Each direction of a connection, and each connection of a capture,
        is judged by its own receiver's preface: on one connection the
        client announces PRIORITY_HINTS = 1 and the server does not, on the
        other (its packets interleaved with the first's) the reverse; only
        the PRIORITY frames sent to the side that did not announce are
        flagged, and two passes (as Wireshark's window makes) flag the
        same.
        """
        capture = Capture()
        a = Connection(capture, (CLIENT, 41020), (SERVER, 7400))
        b = Connection(capture, (CLIENT, 41021), (SERVER, 7400))
        [aServer] = a.send(False, PREFACE)
        b.send(False, HINTS_PREFACE)
        a.send(True, HINTS_PREFACE + OpenFrame(1, b"bulk").encode())
        [bClient] = b.send(True, PREFACE + OpenFrame(1, b"bulk").encode())
        for conn in (a, b):
            conn.send(True, PriorityFrame(1, 3, 2).encode())
            conn.send(False, PriorityFrame(1, 4, 5).encode())
        once, twice = dissect(capture), dissect(capture, twoPass=True)
        for packets in (once, twice):
            self.assertEqual(
                [
                    [
                        unannounced(pdus(packets, port)[-1])
                        for pdus in (pdusFrom, pdusTo)
                    ]
                    for port in (41020, 41021)
                ],
                [
                    # (sent by the client, sent by the server)
                    [[notAnnounced(aServer, False)], []],
                    [[], [notAnnounced(bClient, False)]],
                ],
            )
            self.assertEqual(
                [frameOf(pdus(packets, 41020)[-1]) for pdus in (pdusFrom, pdusTo)],
                [PriorityFrame(1, 3, 2), PriorityFrame(1, 4, 5)],
            )

    def test_beforePreface(self) -> None:
        """
        A PRIORITY that a client sends before the server's preface is in
        the capture (so before the client can have read it) is flagged as
        sent before the peer's preface, although the preface that follows
        announces PRIORITY_HINTS = 1; one sent after it is not.  In a
        capture that starts in the middle of a session (no preface either
        way) what the peer announced is unknown, and nothing is flagged.
        """
        capture = Capture()
        conn = Connection(capture, (CLIENT, 41030), (SERVER, 7400))
        conn.send(True, HINTS_PREFACE + OpenFrame(1, b"shell").encode())
        conn.send(True, PriorityFrame(1, 0, 64).encode())
        conn.send(False, HINTS_PREFACE)
        conn.send(True, PriorityFrame(1, 1, 64).encode())
        late = Connection(capture, (CLIENT, 41031), (SERVER, 7400), handshake=False)
        late.send(True, PriorityFrame(1, 0, 64).encode())
        late.send(False, PriorityFrame(1, 2, 64).encode())
        packets = dissect(capture)
        [_, _, early, after] = pdusFrom(packets, 41030)
        self.assertEqual(
            [(frameOf(p), unannounced(p)) for p in (early, after)],
            [
                (PriorityFrame(1, 0, 64), [BEFORE_PREFACE]),
                (PriorityFrame(1, 1, 64), []),
            ],
        )
        midSession = [
            p
            for p in pdusFrom(packets, 41031) + pdusTo(packets, 41031)
            if p.has("memux.type")  # (not the "no preface" items)
        ]
        self.assertEqual(
            [(frameOf(p), unannounced(p)) for p in midSession],
            [(PriorityFrame(1, 0, 64), []), (PriorityFrame(1, 2, 64), [])],
        )

    def test_engineSendsOnlyWhenAnnounced(self) -> None:
        """
        memux's engine, asked before the server's preface to hint a
        priority to the server, sends the PRIORITY only once it has read a
        preface announcing PRIORITY_HINTS = 1, and none to a server that
        declines hints: in captures of what the engines wrote, there is a
        PRIORITY in the first case only, and nothing flagged in either.
        """
        found = []
        for port, accept in ((41040, True), (41041, False)):
            client = MemuxEngine(True, SessionSettings())
            server = MemuxEngine(False, SessionSettings(acceptPriorityHints=accept))
            channel = client.openChannel(b"bulk")
            client.setPriority(channel, 1, 32)
            written: list[tuple[bool, bytes]] = []
            pump(client, server, written)
            capture = Capture()
            conn = Connection(capture, (CLIENT, port), (SERVER, 7400))
            for fromClient, data in written:
                conn.send(fromClient, data)
            packets = dissect(capture)
            sent = pdusFrom(packets, port)
            found.append(
                (
                    [frameOf(p) for p in sent if p.has("memux.priority.urgency")],
                    [e for p in packets for pdu in p.pdus for e in pdu.experts],
                )
            )
        self.assertEqual(found, [([PriorityFrame(channel, 1, 32)], []), ([], [])])


class MalformedTests(SynchronousTestCase):
    """
    Malformed input is flagged with expert info naming the error a memux
    receiver would send.
    """

    def test_malformed(self) -> None:
        """
        Each malformed preface or frame (one TCP connection each) is flagged
        C{memux.malformed} (an error of Wireshark's group "Malformed") with
        a message that starts with the error code memux's decoder raises
        for the same bytes.
        """
        capture = Capture()
        for i, (_, bad) in enumerate(MALFORMED):
            conn = Connection(capture, (CLIENT, 41000 + i), (SERVER, 7400))
            conn.send(False, PREFACE)
            conn.send(True, bad if bad.startswith(MAGIC) else PREFACE + bad)
        packets = dissect(capture)
        for i, (name, bad) in enumerate(MALFORMED):
            data = bad if bad.startswith(MAGIC) else PREFACE + bad
            with self.assertRaises(ProtocolError, msg=name) as raised:
                decoded(data, 16384)
            flagged = [
                message
                for pdu in pdusFrom(packets, 41000 + i)
                for kind, message in pdu.experts
                if kind == "memux.malformed"
            ]
            self.assertEqual(len(flagged), 1, f"{name}: {flagged}")
            self.assertTrue(
                flagged[0].startswith(raised.exception.code.name + ": "),
                f"{name}: {flagged[0]!r}, memux says {raised.exception}",
            )

    def test_messages(self) -> None:
        """
        The messages say what is wrong, as memux's own errors do.
        """
        capture = Capture()
        for i, bad in enumerate(
            [
                b"\x00\x01\x81\x80\x01" + b"z" * 16385,
                rawFrame(0x40, 1, b"p" * 65),
                rawFrame(0x70, 1, b"\x00"),
                rawPreface(1, b"\x01\x64"),
            ]
        ):
            conn = Connection(capture, (CLIENT, 42000 + i), (SERVER, 7400))
            conn.send(True, bad if bad.startswith(MAGIC) else PREFACE + bad)
        packets = dissect(capture)
        self.assertEqual(
            [
                [e for pdu in pdusFrom(packets, 42000 + i) for e in pdu.experts]
                for i in range(4)
            ],
            [
                [
                    (
                        "memux.malformed",
                        "FRAME_SIZE_ERROR: frame of 16385 bytes exceeds"
                        " the maximum of 16384",
                    )
                ],
                [("memux.malformed", "PROTOCOL_ERROR: PING frame on channel 1")],
                [("memux.malformed", "PROTOCOL_ERROR: DROP of zero messages")],
                [
                    (
                        "memux.malformed",
                        "SETTINGS_ERROR: MAX_FRAME_SIZE = 100"
                        " outside [16384, 16777215]",
                    )
                ],
            ],
        )

    def test_afterHeaderError(self) -> None:
        """
        After a frame header that cannot be decoded (nobody can tell where
        the next frame starts, and a receiver ends the session) the rest of
        that direction is shown undecoded, not as made-up frames; the other
        direction is still decoded.
        """
        capture = Capture()
        conn = Connection(capture, (CLIENT, 40004), (SERVER, 7400))
        conn.send(True, PREFACE + b"\x00\x81\x00\x05" + PingFrame(b"a").encode())
        conn.send(True, PingFrame(b"b").encode())
        conn.send(False, PREFACE + PingFrame(b"c").encode())
        packets = dissect(capture)
        client = pdusFrom(packets, 40004)
        self.assertEqual(
            [p.title for p in client],
            [
                "memux preface",
                "memux DATA frame",
                "memux (not decoded)",
                "memux (not decoded)",
            ],
        )
        self.assertEqual(
            [frameOf(p) for p in pdusFrom(packets, 7400)],
            [Preface(1, Settings()), PingFrame(b"c")],
        )

    def test_wrongParity(self) -> None:
        """
        A client opening an even (server) channel id, and a channel opened
        below one opened before, are flagged as protocol violations.
        """
        capture = Capture()
        conn = Connection(capture, (CLIENT, 40005), (SERVER, 7400))
        conn.send(True, PREFACE + OpenFrame(2, b"x").encode())
        conn.send(True, OpenFrame(7, b"x").encode() + OpenFrame(5, b"x").encode())
        packets = dissect(capture)
        self.assertEqual(
            [e for p in pdusFrom(packets, 40005) for e in p.experts],
            [
                (
                    "memux.violation",
                    "PROTOCOL_ERROR: the client opened channel 2,"
                    " of the server's parity",
                ),
                ("memux.violation", "PROTOCOL_ERROR: channel 5 opened after channel 7"),
            ],
        )


class RegistrationTests(SynchronousTestCase):
    """
    Where the dissector looks for memux: its TCP port (a preference), and
    any port by the preface magic, after a PROXY header too.
    """

    def capture(self) -> tuple[Capture, dict[str, int]]:
        """
        Connections of each kind; return them and their client ports.
        """
        capture = Capture()
        ports = {
            "magic": 40010,
            "midway": 40011,
            "other": 40012,
            "http": 40013,
            "proxy": 40014,
            "http7400": 40015,
        }
        conn = Connection(capture, (CLIENT, ports["magic"]), (SERVER, 9000))
        conn.send(True, PREFACE + OpenFrame(1, b"echo").encode())
        # a capture begun mid-session: no handshake, no preface, on memux's
        # port and not
        midFrames = CreditFrame(0, 5000).encode() + DataFrame(1, b"m").encode()
        for name, port in (("midway", 7400), ("other", 9001)):
            Connection(capture, (CLIENT, ports[name]), (SERVER, port), False).send(
                True, midFrames
            )
        for name, port in (("http", 9002), ("http7400", 7400)):
            Connection(capture, (CLIENT, ports[name]), (SERVER, port)).send(
                True, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            )
        Connection(capture, (CLIENT, ports["proxy"]), (SERVER, 7400)).send(
            True, PROXY_V2_HEADER + PREFACE + OpenFrame(1, b"echo").encode()
        )
        return capture, ports

    def test_portAndMagic(self) -> None:
        """
        By default memux is found by its magic on any port, and on port
        7400 without it (a capture begun mid-session: noted, then decoded
        as frames; but a connection captured from its start that does not
        start with the magic is flagged); a PROXY protocol header before
        the magic is
        shown with the client address it gives; other traffic is left alone.
        """
        capture, ports = self.capture()
        packets = dissect(capture)
        self.assertEqual(
            [frameOf(p) for p in pdusFrom(packets, ports["magic"])],
            [Preface(1, Settings()), OpenFrame(1, b"echo")],
        )
        [midway] = [p for p in packets if p.src == ports["midway"] and p.pdus]
        self.assertEqual(
            [e for pdu in midway.pdus for e in pdu.experts],
            [
                (
                    "memux.no_preface",
                    "No memux preface at the start of this direction:"
                    " capture started mid-session?",
                )
            ],
        )
        self.assertEqual(
            [frameOf(p) for p in midway.pdus if p.has("memux.type")],
            [CreditFrame(0, 5000), DataFrame(1, b"m")],
        )
        self.assertEqual(pdusFrom(packets, ports["other"]), [])
        self.assertEqual(pdusFrom(packets, ports["http"]), [])
        # with the connection's start captured, a stream on memux's port
        # that does not start with the magic is not memux: flagged as a
        # receiver would see it
        [http] = pdusFrom(packets, ports["http7400"])
        self.assertEqual(
            http.experts,
            [
                (
                    "memux.malformed",
                    "PROTOCOL_ERROR: not a memux peer: the stream starts with"
                    " an HTTP/1 request",
                )
            ],
        )
        [proxied] = [p for p in packets if p.src == ports["proxy"] and p.pdus]
        header, *rest = proxied.pdus
        self.assertEqual(
            (
                header.title,
                header.show("memux.proxy.source"),
                header.show("memux.proxy.destination"),
            ),
            ("PROXY protocol header (version 2)", "127.0.0.3:51000", "127.0.0.1:7400"),
        )
        self.assertEqual(
            [frameOf(p) for p in rest], [Preface(1, Settings()), OpenFrame(1, b"echo")]
        )

    def test_heuristicPreference(self) -> None:
        """
        With the preference C{memux.heuristic} off, memux on another port
        is not found by its magic; memux's port still is memux.
        """
        capture, ports = self.capture()
        packets = dissect(capture, "memux.heuristic:FALSE")
        self.assertEqual(pdusFrom(packets, ports["magic"]), [])
        self.assertEqual(
            [
                frameOf(p)
                for p in pdusFrom(packets, ports["midway"])
                if p.has("memux.type")
            ],
            [CreditFrame(0, 5000), DataFrame(1, b"m")],
        )

    def test_portReused(self) -> None:
        """
        A second connection between the same addresses and ports, after
        the first closed, is a session of its own: its preface is a
        preface, and its channel 1 a new channel 1.
        """
        capture = Capture()
        for _ in range(2):
            conn = Connection(capture, (CLIENT, 40016), (SERVER, 7400))
            conn.send(False, PREFACE)
            conn.send(True, PREFACE + OpenFrame(1, b"echo").encode())
            conn.close()
        packets = dissect(capture)
        client = pdusFrom(packets, 40016)
        self.assertEqual(
            [frameOf(p) for p in client],
            [Preface(1, Settings()), OpenFrame(1, b"echo")] * 2,
        )
        self.assertEqual([e for p in client for e in p.experts], [])

    def test_portPreference(self) -> None:
        """
        With the preference C{memux.tcp_port} set to another port, that
        port is memux's (a mid-session capture there is decoded) and 7400
        no longer is.
        """
        capture, ports = self.capture()
        packets = dissect(capture, "memux.tcp_port:9001")
        self.assertEqual(
            [
                frameOf(p)
                for p in pdusFrom(packets, ports["other"])
                if p.has("memux.type")
            ],
            [CreditFrame(0, 5000), DataFrame(1, b"m")],
        )
        self.assertEqual(pdusFrom(packets, ports["midway"]), [])


#: What each display filter doc/operations.rst shows must select, as a
#: test on one PDU (a packet is selected if one of its PDUs passes).
DOC_FILTERS: dict[str, Callable[[PDU], bool]] = {
    "memux.type == 1": lambda p: p.has("memux.type") and p.integer("memux.type") == 1,
    "memux.channel == 5": lambda p: (
        p.has("memux.channel") and p.integer("memux.channel") == 5
    ),
    'memux.channel.service == "echo"': lambda p: (
        p.has("memux.channel.service") and p.show("memux.channel.service") == "echo"
    ),
    "memux.reset.code == 6": lambda p: (
        p.has("memux.reset.code") and p.integer("memux.reset.code") == 6
    ),
    "memux.goaway.code": lambda p: p.has("memux.goaway.code"),
    "memux.priority.urgency": lambda p: p.has("memux.priority.urgency"),
    "memux.priority.unannounced": lambda p: any(
        kind == "memux.priority.unannounced" for kind, _ in p.experts
    ),
    "memux.malformed || memux.violation": lambda p: any(
        kind in ("memux.malformed", "memux.violation") for kind, _ in p.experts
    ),
}


class DocumentationTests(SynchronousTestCase):
    """
    The display filters doc/operations.rst shows work as it says.
    """

    def test_filters(self) -> None:
        """
        Each filter of the table in "Looking at traffic with Wireshark" is
        accepted by tshark and selects exactly the packets holding what the
        table says it shows, in a capture that has some of each.
        """
        doc = ROOT / "doc" / "operations.rst"
        if not doc.is_file():
            raise SkipTest(f"{doc} not found (the documentation is not installed)")
        shown = re.findall(r"``-Y '([^']*)'``", doc.read_text(encoding="utf-8"))
        self.assertEqual(sorted(shown), sorted(DOC_FILTERS))
        capture = Capture()
        writeSample(capture, 40020)
        conn = Connection(capture, (CLIENT, 40021), (SERVER, 7400))
        conn.send(True, PREFACE + OpenFrame(2, b"x").encode())
        conn.send(True, rawFrame(0x70, 3, b"\x00"))
        conn.send(True, PriorityFrame(2, 0, 64).encode())
        packets = dissect(capture)
        program = tshark()
        with tempfile.TemporaryDirectory() as tmp:
            pcap = Path(tmp, "capture.pcap")
            capture.write(pcap)
            env = dict(os.environ, WIRESHARK_CONFIG_DIR=tmp)
            for text, test in DOC_FILTERS.items():
                done = subprocess.run(
                    [program, "-n", "-r", str(pcap), "-X", f"lua_script:{LUA}"]
                    + ["-Y", text, "-T", "fields", "-e", "frame.number"],
                    capture_output=True,
                    timeout=60,
                    env=env,
                )
                self.assertEqual(done.returncode, 0, f"{text}: {done.stderr!r}")
                selected = [int(n) for n in done.stdout.split()]
                expected = [p.number for p in packets if any(map(test, p.pdus))]
                self.assertTrue(expected, text)
                self.assertEqual(selected, expected, text)


def specVectors() -> list[tuple[str, bytes]]:
    """
    The test vectors of doc/spec.rst that are byte streams a side sends
    (prefaces, frames, and the ``stream`` and ``after-preface`` inputs), as
    C{(name, bytes)} with the default preface before frames that follow one.
    Only each block's C{hex} and C{input} are read: what they decode to is
    memux's decoder's business (test_spec_vectors checks that).
    """
    text = readSpec()
    found = []
    pattern = (
        r"\*\*(V-[A-Z]+-\d+)\*\*.*?\.\. code-block:: text\n\n((?:   [^\n]*\n|\n)+)"
    )
    for name, block in re.findall(pattern, text, re.S):
        fields: dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            m = re.match(r"^   ([a-z]+):\s*(.*)$", line)
            if m:
                key = m.group(1)
                fields[key] = m.group(2)
            elif line.strip() and key:
                fields[key] += " " + line.strip()
        if "preface" in fields or fields.get("input") == "stream":
            found.append((name, bytes.fromhex(fields["hex"])))
        elif "frame" in fields or fields.get("input") == "after-preface":
            found.append((name, PREFACE + bytes.fromhex(fields["hex"])))
    return found


class SpecVectorTests(SynchronousTestCase):
    """
    The specification's own test vectors.
    """

    def test_vectors(self) -> None:
        """
        Each preface, frame and stream vector of doc/spec.rst, sent by a
        client on a connection of its own, decodes in tshark to what
        memux's decoder finds in it, with nothing flagged malformed; or, if
        memux's decoder rejects it, the first thing flagged malformed names
        the error code memux's decoder raises; but for a TLS handshake,
        which is shown as TLS.
        """
        vectors = specVectors()
        self.assertGreater(len(vectors), 60)
        capture = Capture()
        for i, (_, data) in enumerate(vectors):
            conn = Connection(capture, (CLIENT, 43000 + i), (SERVER, 7400))
            conn.send(False, PREFACE)
            conn.send(True, data)
        packets = dissect(capture)
        for i, (name, data) in enumerate(vectors):
            pdus = pdusFrom(packets, 43000 + i)
            if data.startswith(b"\x16\x03"):
                # A TLS handshake on memux's port is memux over TLS as far
                # as a capture can tell (memux's decoder, on a port without
                # TLS, rejects it): shown as TLS.
                sent = [p for p in packets if p.src == 43000 + i][-1]
                self.assertEqual((pdus, "tls" in sent.protocols), ([], True), name)
                continue
            flagged = [m for p in pdus for k, m in p.experts if k == "memux.malformed"]
            try:
                expected = decoded(data, 16384)
            except ProtocolError as e:
                self.assertTrue(flagged, f"{name}: nothing flagged, memux says {e}")
                self.assertTrue(
                    flagged[0].startswith(e.code.name + ": "),
                    f"{name}: {flagged[0]!r}, memux says {e}",
                )
            else:
                self.assertEqual(flagged, [], name)
                self.assertEqual([frameOf(p) for p in pdus], expected, name)


#: What the client sends over TLS: the sample session, and a DATA frame
#: whose TLS record spans several segments.
TLS_CLIENT_BYTES = (
    SAMPLE_PREFACE
    + b"".join(f.encode() for f in SAMPLE_CLIENT)
    + DataFrame(1, bytes(3000), end=True).encode()
)


def tlsSession(capture: Capture, port: int, keylog: Path, proxy: bytes = b"") -> None:
    """
    Add to C{capture} a TLS 1.3 session (pyOpenSSL, in memory) on port
    7400 that negotiates ALPN memux/1 and carries L{TLS_CLIENT_BYTES} and
    the sample session's server side, each TLS flight cut into 500-byte
    segments; write its keys to C{keylog} in the key log format Wireshark
    reads.  The client's first bytes are C{proxy} (a balancer's PROXY
    header), if given.
    """
    import trustme
    from OpenSSL import SSL

    ca = trustme.CA()
    keys: list[bytes] = []
    serverContext = SSL.Context(SSL.TLS_METHOD)
    ca.issue_cert("memux.test").configure_cert(serverContext)
    serverContext.set_alpn_select_callback(lambda conn, offered: b"memux/1")
    clientContext = SSL.Context(SSL.TLS_METHOD)
    ca.configure_trust(clientContext)
    clientContext.set_alpn_protos([b"memux/1"])
    clientContext.set_keylog_callback(lambda conn, line: keys.append(line))
    client = SSL.Connection(clientContext, None)
    client.set_connect_state()
    client.set_tlsext_host_name(b"memux.test")
    server = SSL.Connection(serverContext, None)
    server.set_accept_state()
    conn = Connection(capture, (CLIENT, port), (SERVER, 7400))
    first = [proxy]

    def shuttle() -> None:
        moved = True
        while moved:
            moved = False
            for fromClient, sender, receiver in (
                (True, client, server),
                (False, server, client),
            ):
                try:
                    sender.do_handshake()
                except SSL.WantReadError:
                    pass
                try:
                    out = sender.bio_read(1 << 20)
                except SSL.WantReadError:
                    continue
                moved = True
                head = first.pop() if fromClient and first else b""
                wire = head + out
                conn.send(fromClient, wire, list(range(500, len(wire), 500)))
                receiver.bio_write(out)

    shuttle()
    assert client.get_alpn_proto_negotiated() == b"memux/1"
    client.sendall(TLS_CLIENT_BYTES)
    server.sendall(PREFACE + b"".join(f.encode() for f in SAMPLE_SERVER))
    shuttle()
    keylog.write_bytes(b"".join(line + b"\n" for line in keys))


class TLSTests(SynchronousTestCase):
    """
    memux over TLS on memux's port: Wireshark's TLS dissector decrypts it
    given the keys, and hands it back through ALPN memux/1.
    """

    def test_withKeys(self) -> None:
        """
        With the session's keys, the memux inside TLS (records reassembled
        from several segments) decodes as memux's decoder decodes it.
        """
        keylog = Path(self.mktemp())
        capture = Capture()
        tlsSession(capture, 40040, keylog)
        packets = dissect(capture, f"tls.keylog_file:{keylog.resolve()}")
        self.assertEqual(
            [frameOf(p) for p in pdusFrom(packets, 40040)], decoded(TLS_CLIENT_BYTES)
        )
        self.assertEqual(
            [frameOf(p) for p in pdusFrom(packets, 7400)],
            [Preface(1, Settings()), *SAMPLE_SERVER],
        )
        self.assertTrue(all("tls" in p.protocols for p in packets if p.pdus))

    def test_afterProxyHeader(self) -> None:
        """
        TLS after a PROXY header (HAProxy in front of a TLS worker): the
        header shows the client's address, and the memux inside TLS
        decodes given the keys.
        """
        keylog = Path(self.mktemp())
        capture = Capture()
        tlsSession(capture, 40042, keylog, PROXY_V2_HEADER)
        packets = dissect(capture, f"tls.keylog_file:{keylog.resolve()}")
        header, *rest = pdusFrom(packets, 40042)
        self.assertEqual(header.show("memux.proxy.source"), "127.0.0.3:51000")
        self.assertEqual([frameOf(p) for p in rest], decoded(TLS_CLIENT_BYTES))
        self.assertEqual(
            [frameOf(p) for p in pdusFrom(packets, 7400)],
            [Preface(1, Settings()), *SAMPLE_SERVER],
        )

    def test_withoutKeys(self) -> None:
        """
        Without the keys, TLS is shown as TLS, and nothing as malformed
        memux.
        """
        capture = Capture()
        tlsSession(capture, 40041, Path(self.mktemp()))
        packets = dissect(capture)
        self.assertEqual([p.pdus for p in packets], [[] for p in packets])
        self.assertIn("tls", packets[-1].protocols)
