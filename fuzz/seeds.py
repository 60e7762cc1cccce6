#!/usr/bin/env python3
"""
Write seed inputs for the fuzz targets: the test vectors of
``doc/spec.rst`` and the bytes each side sends in a few recorded sessions
between two engines, as ``OUT/decoder/seed-*`` (byte streams) and
``OUT/engine/seed-*`` (the same, behind the two configuration bytes of
`memux.test.fuzzchecks.checkEngine`).  A starting corpus for a fuzzing run;
``fuzz/corpus/`` keeps only those that add coverage.

    python fuzz/seeds.py OUT

Deterministic: rerunning it rewrites the same files.
"""

import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run from a checkout without installing memux.
sys.path.insert(0, str(ROOT))

from memux._engine import DataReceived, MemuxEngine, SessionSettings  # noqa: E402
from memux._wire import ErrorCode, Settings, encodePreface  # noqa: E402
from memux.test.test_spec_vectors import extractVectors  # noqa: E402

PREFACE = encodePreface(Settings())

#: checkEngine's first byte: server engine (0) or client (1), preface
#: given (2), application consumes (4) and replies (8).
SERVER_RAW = 4 | 8
CLIENT_RAW = 1 | 4 | 8
SERVER_AFTER_PREFACE = 2 | 4 | 8


Step = Callable[[MemuxEngine, MemuxEngine], None]


def record(*steps: Step) -> tuple[bytes, bytes]:
    """
    Run ``steps`` on a client and a server engine, moving bytes both ways
    (everything consumed as it arrives) after each until both are quiet;
    return all the bytes each side sent.
    """
    settings = SessionSettings(
        maxFrameSize=16384, channelCredit=65536, sessionCredit=262144, chunkSize=4000
    )
    client, server = MemuxEngine(True, settings), MemuxEngine(False, settings)
    sent = {True: b"", False: b""}

    def pump() -> None:
        for _ in range(100):
            moved = False
            for sender, receiver in ((client, server), (server, client)):
                out = sender.dataToSend()
                sent[sender.client] += out
                for e in receiver.receiveData(out):
                    if isinstance(e, DataReceived):
                        receiver.consumed(e.channel, len(e.data))
                moved = moved or bool(out)
            if not moved:
                return

    pump()
    for step in steps:
        step(client, server)
        pump()
    return sent[True], sent[False]


def echoRequest(client: MemuxEngine, server: MemuxEngine) -> None:
    """Open, one message, close; a ping."""
    cid = client.openChannel()
    client.sendData(cid, b"hello", endMessage=True)
    client.closeChannel(cid)
    client.ping(b"12345678")


def echoReply(client: MemuxEngine, server: MemuxEngine) -> None:
    """The answer to `echoRequest`."""
    server.sendData(1, b"world", endMessage=True)
    server.closeChannel(1)


def namedSession(client: MemuxEngine, server: MemuxEngine) -> None:
    """Named services with metadata, a destination, a lossy channel."""
    a = client.openChannel(b"echo", b"meta")
    b = client.openChannel(b"tunnel", destination=("example.com", 443))
    c = client.openChannel(b"feed", lossy=True)
    for cid in (a, b, c):
        client.sendData(cid, b"x" * 300, endMessage=True)
    for _ in range(3):
        client.sendData(c, b"tick", endMessage=True)
    client.discardQueuedMessages(c)
    client.sendData(c, b"tock", endMessage=True)
    client.resetChannel(b, ErrorCode.CANCEL, "changed my mind")
    client.closeChannel(a)
    client.closeChannel(c)
    s = server.openChannel(b"back")
    server.sendData(s, b"y" * 100)
    server.sendData(s, b"", endMessage=True)
    server.closeChannel(s)


def churnSession(client: MemuxEngine, server: MemuxEngine) -> None:
    """Many short channels, then GOAWAY: CHANNELS credit, a drain."""
    for i in range(120):
        cid = client.openChannel()
        client.sendData(cid, bytes([i]) * 3, endMessage=True)
        client.closeChannel(cid)
    server.goAway(ErrorCode.NO_ERROR, "bye")


def main(out: Path) -> None:
    """
    Write the seeds under ``out``.
    """

    def write(target: str, name: str, data: bytes) -> None:
        path = out / target / f"seed-{name}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    spec = (ROOT / "doc" / "spec.rst").read_text(encoding="utf-8")
    for vector in extractVectors(spec):
        raw = bytes.fromhex(vector.fields["hex"])
        where = vector.fields.get("input", "after-preface")
        name = vector.name.lower()
        if "varint" in vector.fields or where == "varint":
            continue
        if "preface" in vector.fields or where == "stream":
            write("decoder", name, raw)
            write("engine", name, bytes((SERVER_RAW, 0)) + raw)
        else:
            write("decoder", name, PREFACE + raw)
            write("engine", name, bytes((SERVER_AFTER_PREFACE, 0)) + raw)
    sessions: dict[str, list[Step]] = {
        "echo": [echoRequest, echoReply],
        "named": [namedSession],
        "churn": [churnSession],
    }
    for name, steps in sessions.items():
        fromClient, fromServer = record(*steps)
        write("decoder", f"{name}-client", fromClient)
        write("decoder", f"{name}-server", fromServer)
        # Fed to the other side's engine, in random pieces (split mode 2).
        write("engine", f"{name}-to-server", bytes((SERVER_RAW | 32, 7)) + fromClient)
        write("engine", f"{name}-to-client", bytes((CLIENT_RAW | 32, 7)) + fromServer)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUTPUT_DIRECTORY")
    main(Path(sys.argv[1]))
