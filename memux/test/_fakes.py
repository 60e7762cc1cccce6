# -*- test-case-name: memux.test.test_helpers -*-
"""
In-memory fakes shared by memux's test modules: hand-driven peers,
transports, recording protocols and the data they exchange.  Helpers that
need files, subprocesses or the real reactor are in L{memux.test._helpers}.
Test modules import these from here, never from each other.
"""

from __future__ import annotations

from memux._engine import Event, MemuxEngine
from memux._wire import Frame, FrameDecoder, Preface, Settings, encodePreface

# ------------------------------------------------------------ engines


#: The largest frame size any peer may announce: decoders in these tests
#: accept whatever an engine sends.
ANY_FRAME_SIZE = (1 << 24) - 1


class RawPeer:
    """
    A hand-driven peer for one engine: it sends crafted frames (after a
    preface) and decodes what the engine sends back.
    """

    def __init__(
        self, engine: MemuxEngine, peerSettings: Settings | None = None
    ) -> None:
        self.engine = engine
        self.decoder = FrameDecoder(ANY_FRAME_SIZE)
        self.events = engine.receiveData(encodePreface(peerSettings or Settings()))

    def send(self, *frames: Frame) -> list[Event]:
        """
        Deliver C{frames} to the engine in one piece; return its events.
        """
        return self.engine.receiveData(b"".join(f.encode() for f in frames))

    def read(self, maxBytes: int = 1 << 30) -> list[Frame]:
        """
        Everything the engine has to send now (up to about C{maxBytes}),
        decoded, without its preface.
        """
        items = self.decoder.receive(self.engine.dataToSend(maxBytes))
        return [i for i in items if not isinstance(i, Preface)]


def messageBody(tag: str, size: int) -> bytes:
    """
    A message of C{size} bytes whose content says which message it is, so
    misordered or mixed-up data shows.
    """
    unit = f"<{tag}>".encode()
    return (unit * (size // len(unit) + 1))[:size]


def splitAt(data: bytes, cuts: list[int]) -> list[bytes]:
    """
    Split C{data} at the given positions (clamped, sorted, repeats allowed).
    """
    points = sorted(min(max(c, 0), len(data)) for c in cuts)
    pieces = []
    last = 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces
