# -*- test-case-name: memux.test.test_fuzzcorpus -*-
"""
The checks the fuzz targets in ``fuzz/`` make, and a small mutation fuzzer
for machines without atheris.

`checkDecoder` and `checkEngine` take any bytes and raise (AssertionError,
or whatever unexpected exception the code under test raised) only on a
bug: malformed input must end in a typed `ProtocolError` (the decoder) or
a GOAWAY and `SessionTerminated` (the engine), never in anything else, and
memory and queues must stay within their bounds.  They return a set of
short strings naming what the input exercised, which the mutation fuzzer
uses as a cheap stand-in for coverage.

The fuzz targets (``fuzz/fuzz_decoder.py``, ``fuzz/fuzz_engine.py``) and the
corpus regression tests (``memux.test.test_fuzzcorpus``) share these, so a
crash found by fuzzing fails the tests until it is fixed.  Nothing here
needs atheris.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import random
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TextIO

from memux._engine import (
    MAX_CONTROL_BYTES,
    ChannelClosed,
    ChannelOpened,
    ChannelReset,
    DataReceived,
    Event,
    GoAwayReceived,
    LocalHalfClosed,
    MemuxEngine,
    MessagesDropped,
    PeerWarning,
    PingAcknowledged,
    PrefaceReceived,
    RemoteHalfClosed,
    SessionSettings,
    SessionTerminated,
)
from memux._wire import (
    MAGIC,
    MAX_SETTINGS_BLOCK,
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
    ProtocolError,
    ResetFrame,
    Settings,
    UnknownFrame,
    encodePreface,
)

__all__ = [
    "Check",
    "checkDecoder",
    "checkEngine",
    "mutate",
    "fuzzWithoutAtheris",
    "main",
]

#: A check: raises on a bug, else returns the features the input exercised.
Check = Callable[[bytes], frozenset[str]]

#: The largest frame header: a type byte and two nine-byte varints.
MAX_HEADER = 19

#: The largest preface: magic, two nine-byte varints, the settings block.
MAX_PREFACE = len(MAGIC) + 9 + 9 + MAX_SETTINGS_BLOCK

#: The largest frame any peer may announce it accepts.
ANY_FRAME_SIZE = (1 << 24) - 1

_FRAME_TYPES = (
    DataFrame,
    OpenFrame,
    CreditFrame,
    ResetFrame,
    PingFrame,
    GoAwayFrame,
    ChannelCreditFrame,
    DropFrame,
    UnknownFrame,
)

_CODES = frozenset(ErrorCode)

_EVENT_TYPES = (
    PrefaceReceived,
    ChannelOpened,
    DataReceived,
    RemoteHalfClosed,
    LocalHalfClosed,
    ChannelClosed,
    ChannelReset,
    MessagesDropped,
    PingAcknowledged,
    GoAwayReceived,
    SessionTerminated,
    PeerWarning,
)


def _reasonFeature(prefix: str, code: int, message: str) -> str:
    # Numbers and quoted bytes vary from input to input; the wording says
    # which rule fired.
    wording = re.sub(r"0x[0-9a-f]+|[0-9]+", "#", re.split(r" b['\"]", message)[0])
    return f"{prefix}:{code}:{wording[:60]}"


def _cuts(data: bytes, mode: int, seed: int) -> list[bytes]:
    """
    Split ``data`` into the pieces a peer's bytes might arrive in: whole,
    byte by byte, in small or in large random pieces.
    """
    if mode == 0 or not data:
        return [data]
    if mode == 1:
        return [data[i : i + 1] for i in range(len(data))]
    rng = random.Random(seed)
    top = 64 if mode == 2 else 4096
    pieces = []
    i = 0
    while i < len(data):
        n = rng.randint(1, top)
        pieces.append(data[i : i + n])
        i += n
    return pieces


# ---------------------------------------------------------------- decoder


def _decode(
    pieces: Iterable[bytes], maxFrameSize: int
) -> tuple[list[Preface | Frame], ProtocolError | None]:
    """
    Feed ``pieces`` to a fresh decoder, checking its buffer bound after
    each; return the items decoded and the error that stopped it, if any.
    """
    decoder = FrameDecoder(maxFrameSize)
    bound = max(maxFrameSize + MAX_HEADER, MAX_PREFACE)
    items: list[Preface | Frame] = []
    for piece in pieces:
        try:
            items += decoder.receive(piece)
        except ProtocolError as e:
            if not isinstance(e.code, ErrorCode) or not e.message:
                raise AssertionError(f"untyped or unexplained error: {e!r}") from e
            return items, e
        if decoder.buffered > bound:
            raise AssertionError(
                f"decoder holds {decoder.buffered} bytes, more than {bound}"
            )
    return items, None


def _reencoded(item: Preface | Frame) -> bytes:
    """
    The canonical encoding of a decoded item.
    """
    if isinstance(item, Preface):
        return encodePreface(item.settings, item.version)
    return item.encode()


def checkDecoder(data: bytes) -> frozenset[str]:
    """
    Decode ``data`` as a peer's byte stream (preface first) in one piece,
    byte by byte and in random pieces.  Each way must decode the same items
    (or stop at the same typed error), hold no more than one frame or one
    preface, and every item must encode to bytes that decode to it again.
    """
    whole, error = _decode([data], 16384)
    bytewise, bytewiseError = _decode(_cuts(data, 1, 0), 16384)
    pieces, piecesError = _decode(_cuts(data, 2, len(data)), 16384)
    if (error is None) != (bytewiseError is None) or (
        error is not None
        and bytewiseError is not None
        and error.code != bytewiseError.code
    ):
        raise AssertionError(
            f"whole input gives {error!r}, byte by byte gives {bytewiseError!r}"
        )
    if error is None:
        if whole != bytewise or whole != pieces or piecesError is not None:
            raise AssertionError("the items decoded depend on how input is split")
    elif (
        piecesError is None
        or piecesError.code != error.code
        or pieces != bytewise[: len(pieces)]
    ):
        raise AssertionError("the items decoded depend on how input is split")
    features = {_reasonFeature("error", error.code, error.message)} if error else set()
    for i, item in enumerate(bytewise):
        if isinstance(item, Preface):
            if i != 0:
                raise AssertionError(f"a preface after the first item: {item!r}")
        elif i == 0 or not isinstance(item, _FRAME_TYPES):
            raise AssertionError(f"unexpected item {i}: {item!r}")
        raw = _reencoded(item)
        prefix = b"" if i == 0 else encodePreface(Settings())
        again, againError = _decode([prefix + raw], ANY_FRAME_SIZE)
        if againError is not None or not again or again[-1] != item:
            raise AssertionError(
                f"{item!r} encodes to {raw!r}, which decodes to"
                f" {again[-1:]!r} ({againError!r})"
            )
        if _reencoded(again[-1]) != raw:
            raise AssertionError(f"{item!r} has no canonical encoding")
        features.add(f"item:{type(item).__name__}")
    return frozenset(features)


# ---------------------------------------------------------------- engine


#: Settings of the engine under test: the smallest windows, a small chunk
#: size, so that the fuzzer reaches the limits with short inputs.
ENGINE_SETTINGS = SessionSettings(
    maxFrameSize=16384,
    channelCredit=65536,
    sessionCredit=262144,
    maxChannels=100,
    chunkSize=100,
)

#: The same with a small allowance of frames that do no work.
ENGINE_SETTINGS_STRICT = SessionSettings(
    maxFrameSize=16384,
    channelCredit=65536,
    sessionCredit=262144,
    maxChannels=100,
    chunkSize=100,
    maxUselessFrames=20,
    usefulBytesPerFrame=64,
)


class _Application:
    """
    A well-behaved application on top of the engine under test: it reacts
    to events as `memux.protocol` would, and checks them and the engine's
    bounds as it goes.
    """

    def __init__(self, engine: MemuxEngine, config: int) -> None:
        self.engine = engine
        self.consume = bool(config & 4)
        self.reply = bool(config & 8)
        self.reassemble = bool(config & 64)
        # Every peer accepts frames of the initial MAX_FRAME_SIZE, and the
        # engine must send no larger ones (its chunks are smaller still).
        self.output = FrameDecoder()
        self.outputItems = 0
        self.terminated: SessionTerminated | None = None
        self.goAwayOut = False
        self.closedForWriting: set[int] = set()
        self.assembling: dict[int, int] = {}
        self.written = 0
        self.features: set[str] = set()
        if self.reply:
            # Channels of our own, so the peer's frames for them matter.
            for lossy in (False, True):
                cid = engine.openChannel(b"fuzz" if lossy else b"", lossy=lossy)
                self.write(cid, b"hello " * 30, True)

    def write(self, cid: int, data: bytes, end: bool) -> None:
        """
        Write on ``cid`` if it is still open for writing (a channel may end
        in the batch of events being handled, as in `memux.protocol`).
        """
        engine = self.engine
        if engine.isOpen(cid) and cid not in self.closedForWriting:
            engine.sendData(cid, data, end)
            self.written += len(data)

    def handle(self, events: list[Event]) -> None:
        """
        Check each event and react to it.
        """
        engine = self.engine
        for e in events:
            if not isinstance(e, _EVENT_TYPES):
                raise AssertionError(f"unexpected event {e!r}")
            self.features.add(f"event:{type(e).__name__}")
            if isinstance(e, SessionTerminated):
                if self.terminated is not None:
                    raise AssertionError(f"terminated twice: {e!r}")
                if not e.remote and (
                    e.code not in _CODES or e.code == ErrorCode.NO_ERROR or not e.reason
                ):
                    raise AssertionError(f"unexplained termination {e!r}")
                self.terminated = e
                if e.remote:
                    # The peer's own code and free text: not features.
                    self.features.add("end:by the peer")
                else:
                    self.features.add(_reasonFeature("end", e.code, e.reason))
            elif isinstance(e, ChannelOpened):
                if engine.isLocal(e.channel):
                    raise AssertionError(f"peer opened our channel: {e!r}")
                if e.service.startswith(b"r"):
                    engine.refuseChannel(e.channel, "refused by the fuzz target")
            elif isinstance(e, DataReceived):
                self.dataReceived(e)
            elif isinstance(e, RemoteHalfClosed) and self.reply:
                engine.closeChannel(e.channel)
                self.closedForWriting.add(e.channel)
            elif isinstance(e, ChannelReset) and not e.remote:
                self.features.add(_reasonFeature("reset", e.code, e.reason))

    def dataReceived(self, e: DataReceived) -> None:
        """
        Consume (or reassemble) a chunk, and echo its start.
        """
        engine = self.engine
        n = len(e.data)
        if self.consume:
            if self.reassemble:
                engine.consumed(e.channel, n, holdSession=True)
                held = self.assembling.get(e.channel, 0) + n
                if e.endMessage:
                    engine.releaseSession(e.channel, held)
                    held = 0
                self.assembling[e.channel] = held
            else:
                engine.consumed(e.channel, n)
        if self.reply:
            self.write(e.channel, e.data[:100], e.endMessage)

    def receive(self, piece: bytes) -> None:
        """
        Feed the engine one piece of its peer's bytes.
        """
        engine = self.engine
        wasTerminated = engine.terminated
        events = engine.receiveData(piece)
        if wasTerminated and any(
            isinstance(e, (DataReceived, ChannelOpened)) for e in events
        ):
            raise AssertionError("input processed after the session ended")
        self.handle(events)
        if engine.terminated and self.terminated is None:
            raise AssertionError("the session ended without SessionTerminated")
        self.checkBounds()

    def flush(self, maxBytes: int) -> None:
        """
        Take what the engine has to send, which must decode, and after a
        session error must hold the GOAWAY and then nothing more.
        """
        engine = self.engine
        goAwayDone = self.goAwayOut
        out = engine.dataToSend(maxBytes)
        self.handle(engine.popEvents())
        if goAwayDone and out:
            raise AssertionError(f"{len(out)} bytes sent after the final GOAWAY")
        try:
            items = self.output.receive(out)
        except ProtocolError as e:
            raise AssertionError(f"the engine's output does not decode: {e}") from e
        for item in items:
            self.outputItems += 1
            if isinstance(item, Preface) != (self.outputItems == 1):
                raise AssertionError(f"output item {self.outputItems}: {item!r}")
            if (
                isinstance(item, GoAwayFrame)
                and self.terminated is not None
                and not self.terminated.remote
                and item.code == self.terminated.code
            ):
                self.goAwayOut = True
        self.checkBounds()

    def checkBounds(self) -> None:
        """
        What the engine holds stays within its settings.
        """
        engine = self.engine
        s = engine.settings
        bound = max(s.maxFrameSize + MAX_HEADER, MAX_PREFACE)
        if engine._decoder.buffered > bound:
            raise AssertionError(f"engine decoder holds {engine._decoder.buffered}")
        # One peer-induced frame (the largest: a RESET with its reason) may
        # go past the limit before the session ends.
        if engine._controlBytes > MAX_CONTROL_BYTES + 2048:
            raise AssertionError(f"{engine._controlBytes} control bytes queued")
        if engine._peerChannels.open > s.maxChannels:
            raise AssertionError(f"{engine._peerChannels.open} peer channels open")
        queued = 0
        for ch in engine._channels.values():
            if not 0 <= ch.recv.held <= s.channelCredit:
                raise AssertionError(f"channel {ch.id} holds {ch.recv.held}")
            queued += ch.queued
        held = engine._sessionRecv.held
        if not 0 <= held <= s.sessionCredit:
            raise AssertionError(f"session holds {held}")
        if not 0 <= engine._reassemblyHeld <= held:
            raise AssertionError(f"reassembly holds {engine._reassemblyHeld}")
        if queued > self.written:
            raise AssertionError(f"{queued} bytes queued, {self.written} written")

    def finish(self) -> None:
        """
        Write out the rest; a session error must have sent its GOAWAY.
        """
        self.flush(1 << 30)
        self.flush(1 << 30)
        t = self.terminated
        if t is not None and not t.remote and not self.goAwayOut:
            raise AssertionError(f"no GOAWAY {t.code} after {t!r}")


def checkEngine(data: bytes) -> frozenset[str]:
    """
    Feed ``data`` to an engine as its peer's bytes, with an application on
    top that reacts as `memux.protocol` does, and write out what it sends
    after each piece.  The engine may only end the session with a GOAWAY
    (and `SessionTerminated`); it must never raise, its output must decode,
    and what it holds must stay within its settings.

    The first byte configures the run, bit by bit: 1, the engine is the
    client; 2, the input follows a valid preface (else it must bring its
    own); 4, the application consumes what arrives (else credit runs out);
    8, it opens channels, echoes data and closes when the peer does; 16 and
    32, how the input is split (whole, byte by byte, small or large random
    pieces); 64, it reassembles messages (session credit held until each
    ends); 128, the allowance of useless frames is small.  The second byte
    seeds the splitting and the write sizes; the rest is the peer's bytes.
    """
    config = data[0] if data else 0
    seed = data[1] if len(data) > 1 else 0
    stream = data[2:]
    if config & 2:
        stream = encodePreface(Settings()) + stream
    settings = ENGINE_SETTINGS_STRICT if config & 128 else ENGINE_SETTINGS
    engine = MemuxEngine(bool(config & 1), settings)
    app = _Application(engine, config)
    rng = random.Random(seed)
    for piece in _cuts(stream, (config >> 4) & 3, seed):
        app.receive(piece)
        app.flush(rng.choice((1, 100, 1 << 20)))
    app.finish()
    return frozenset(app.features)


# ---------------------------------------------------------------- mutation


#: Byte strings that sit on the edges of the wire format: varint limits,
#: the magic, frame type bytes with every flag.
_INTERESTING = [
    b"\x00",
    b"\x7f",
    b"\x80\x01",
    b"\xff\x7f",
    b"\x80\x80\x01",
    b"\xff" * 8 + b"\x7f",
    b"\xff" * 9 + b"\x01",
    b"\x80\x00",
    MAGIC,
    encodePreface(Settings()),
    *[bytes((t << 4 | f,)) for t in range(16) for f in (0, 1, 2, 4, 7, 15)],
]


def mutate(data: bytes, rng: random.Random, corpus: Sequence[bytes]) -> bytes:
    """
    Return ``data`` changed by one to four random mutations: bit flips,
    byte changes, insertions (random, wire-format edge values, a piece of
    another input), deletions, duplications, truncation.
    """
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        pos = rng.randint(0, len(buf))
        if op == 0 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 2:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3:
            buf[pos:pos] = rng.choice(_INTERESTING)
        elif op == 4 and buf:
            end = min(len(buf), pos + rng.randint(1, 32))
            del buf[pos:end]
        elif op == 5 and buf:
            end = min(len(buf), pos + rng.randint(1, 64))
            buf[pos:pos] = buf[pos:end]
        elif op == 6 and corpus:
            other = rng.choice(corpus)
            start = rng.randint(0, len(other))
            buf[pos:pos] = other[start : start + rng.randint(1, 256)]
        elif op == 7 and buf:
            del buf[rng.randint(0, len(buf)) :]
    return bytes(buf[:8192])


def fuzzWithoutAtheris(
    check: Check,
    corpus: list[bytes],
    runs: int | None = None,
    seconds: float | None = None,
    seed: int | None = None,
    crashDir: Path | None = None,
    newDir: Path | None = None,
    log: TextIO | None = None,
) -> list[bytes]:
    """
    Run ``check`` on random mutations of ``corpus`` until ``runs`` inputs
    or ``seconds`` have gone by.  Inputs that exercise something new (by
    the features ``check`` returns) join the corpus (and ``newDir``, if
    given); inputs that make ``check`` raise are written to ``crashDir`` as
    ``crash-<sha1>`` and returned.  Progress goes to ``log`` (standard
    error by default).
    """
    out = sys.stderr if log is None else log
    rng = random.Random(seed)
    pool = list(corpus) or [b""]
    seen: set[str] = set()
    crashes: list[bytes] = []

    def run(data: bytes) -> None:
        try:
            features = check(data)
        except Exception:
            crashes.append(data)
            name = "crash-" + hashlib.sha1(data).hexdigest()
            out.write(f"\n{name}: {data!r}\n{traceback.format_exc()}")
            if crashDir is not None:
                crashDir.mkdir(parents=True, exist_ok=True)
                (crashDir / name).write_bytes(data)
            return
        if not features <= seen:
            seen.update(features)
            pool.append(data)
            if newDir is not None:
                newDir.mkdir(parents=True, exist_ok=True)
                (newDir / hashlib.sha1(data).hexdigest()).write_bytes(data)

    for data in list(pool):
        run(data)
    deadline = None if seconds is None else time.monotonic() + seconds
    done = 0
    while (runs is None or done < runs) and (
        deadline is None or time.monotonic() < deadline
    ):
        run(mutate(rng.choice(pool), rng, pool))
        done += 1
        if done % 10000 == 0:
            out.write(f"#{done} corpus {len(pool)} features {len(seen)}\n")
    out.write(
        f"done: {done} runs, corpus {len(pool)}, {len(seen)} features,"
        f" {len(crashes)} crashes\n"
    )
    return crashes


def readCorpus(paths: Iterable[Path]) -> list[bytes]:
    """
    The inputs in the given files and directories (not recursively).
    """
    out = []
    for path in paths:
        if path.is_dir():
            out += [p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()]
        elif path.is_file():
            out.append(path.read_bytes())
    return out


def main(check: Check, argv: list[str] | None = None) -> int:
    """
    The command line of a fuzz target: with atheris (the default) the
    arguments are libFuzzer's (corpus directories, ``-max_total_time=``
    and so on); with ``--no-atheris`` a plain mutation fuzzer runs over the
    corpus directories given.  Exit status 1 if a crash was found.
    """
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(
        prog=argv[0],
        allow_abbrev=False,
        description="Fuzz a memux target; without --no-atheris, the other"
        " arguments go to libFuzzer.",
    )
    parser.add_argument("--no-atheris", action="store_true")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--crashes", type=Path, default=Path("."))
    parser.add_argument(
        "--new", type=Path, default=None, help="write new interesting inputs here"
    )
    options, rest = parser.parse_known_args(argv[1:])
    if not options.no_atheris:
        try:
            atheris = importlib.import_module("atheris")
        except ImportError:
            sys.stderr.write(
                "atheris is not installed: pip install atheris (or memux[fuzz]),"
                " or run with --no-atheris\n"
            )
            return 2

        def testOneInput(data: bytes) -> None:
            check(data)

        atheris.Setup([argv[0], *rest], testOneInput)
        atheris.Fuzz()
        return 0
    paths = [Path(p) for p in rest if not p.startswith("-")]
    if options.runs is None and options.seconds is None:
        options.seconds = 60.0
    crashes = fuzzWithoutAtheris(
        check,
        readCorpus(paths),
        runs=options.runs,
        seconds=options.seconds,
        seed=options.seed,
        crashDir=options.crashes,
        newDir=options.new,
    )
    return 1 if crashes else 0
