# -*- test-case-name: memux.test.test_fuzzcorpus -*-
"""
Replay the fuzz corpus, ``fuzz/corpus/``, through the checks the fuzz
targets make (`memux.test.fuzzchecks`): every input found by fuzzing (crashes
included, once fixed) stays a regression test.  Also tests of the checks
themselves and of the mutation fuzzer used where atheris is missing.
"""

from __future__ import annotations

import io
import random
import sys
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from memux._engine import MemuxEngine
from memux._wire import (
    DataFrame,
    ErrorCode,
    Frame,
    FrameDecoder,
    Preface,
    Settings,
    encodePreface,
)
from memux.test import fuzzchecks as _fuzzchecks
from memux.test.fuzzchecks import (
    checkDecoder,
    checkEngine,
    fuzzWithoutAtheris,
    main,
    mutate,
    readCorpus,
)


def findCorpus() -> Path:
    """
    The corpus of the checkout these tests run from: next to the package
    (tests run from the repository root import it from there), or under
    the working directory.  Skip if neither has one (an installed package
    without its checkout).
    """
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        corpus = root / "fuzz" / "corpus"
        if corpus.is_dir():
            return corpus
    raise SkipTest("fuzz/corpus not found: not run from a memux checkout")


class CorpusTests(SynchronousTestCase):
    """
    Every file of the corpus passes both fuzz targets' checks.
    """

    def setUp(self) -> None:
        self.files = sorted(p for p in findCorpus().rglob("*") if p.is_file())

    def replay(self, check: _fuzzchecks.Check) -> set[str]:
        """
        Run C{check} on every corpus file; fail naming each file it fails
        on; return the features they exercised together.
        """
        failures = []
        features: set[str] = set()
        for path in self.files:
            try:
                features |= check(path.read_bytes())
            except Exception as e:
                failures.append(f"{path.name}: {e!r}")
        self.assertEqual(failures, [])
        return features

    def test_corpusPresent(self) -> None:
        """
        The corpus holds inputs for both targets, and stays small.
        """
        for target in ("decoder", "engine"):
            self.assertTrue(
                any(p.parent.name == target for p in self.files), f"no {target} input"
            )
        self.assertLess(len(self.files), 100)
        self.assertLess(sum(p.stat().st_size for p in self.files), 200 * 1024)

    def test_decoder(self) -> None:
        """
        Every input decodes the same whichever way it is split, or stops at
        the same typed error, within the decoder's memory bound, and every
        item decoded round-trips through its encoding.  Between them the
        inputs reach every frame type and every error code the decoder
        raises.
        """
        features = self.replay(checkDecoder)
        items = {f for f in features if f.startswith("item:")}
        self.assertEqual(len(items), 10, items)  # the preface and nine frames
        codes = {int(f.split(":")[1]) for f in features if f.startswith("error:")}
        self.assertEqual(
            codes,
            {
                ErrorCode.PROTOCOL_ERROR,
                ErrorCode.FRAME_SIZE_ERROR,
                ErrorCode.UNSUPPORTED_VERSION,
                ErrorCode.SETTINGS_ERROR,
            },
        )

    def test_engine(self) -> None:
        """
        An engine fed every input as its peer's bytes ends the session (if
        at all) only with a GOAWAY, never raises, and stays within its
        settings; between them the inputs reach every kind of event.
        """
        features = self.replay(checkEngine)
        events = {f for f in features if f.startswith("event:")}
        self.assertEqual(len(events), 11, events)


class CheckTests(SynchronousTestCase):
    """
    The checks accept typed errors and catch what they are meant to catch.
    """

    def test_typedErrorAccepted(self) -> None:
        """
        Input that is not memux ends in a typed error, which is no failure:
        the decoder check reports the error, the engine check the session's
        end.
        """
        http = b"GET / HTTP/1.1\r\n\r\n"
        self.assertIn(
            "error:1:not a memux peer: the stream starts with an HTTP/# request",
            checkDecoder(http),
        )
        self.assertIn(
            "end:1:not a memux peer: the stream starts with an HTTP/# request",
            checkEngine(bytes((0, 0)) + http),
        )

    def test_unexpectedExceptionPropagates(self) -> None:
        """
        An exception other than ProtocolError from the decoder reaches the
        caller of the check (the fuzzer, or the corpus test).
        """

        # Wrappers, not subclasses: a compiled (mypyc) FrameDecoder cannot
        # be subclassed from Python.
        class Broken:
            def __init__(self, maxFrameSize: int) -> None:
                self.buffered = 0

            def receive(
                self, data: bytes, limit: int = sys.maxsize
            ) -> list[Preface | Frame]:
                raise KeyError("boom")

        self.patch(_fuzzchecks, "FrameDecoder", Broken)
        self.assertRaises(KeyError, checkDecoder, encodePreface(Settings()))

    def test_splitDependenceCaught(self) -> None:
        """
        A decoder whose output depends on how the input is split fails the
        decoder check.
        """

        class Forgetful:
            def __init__(self, maxFrameSize: int) -> None:
                self.decoder = FrameDecoder(maxFrameSize)

            @property
            def buffered(self) -> int:
                return self.decoder.buffered

            def receive(
                self, data: bytes, limit: int = sys.maxsize
            ) -> list[Preface | Frame]:
                items = self.decoder.receive(data, limit)
                return items[:1]  # loses all but the first item of a read

        self.patch(_fuzzchecks, "FrameDecoder", Forgetful)
        stream = encodePreface(Settings()) + DataFrame(1, b"x", open=True).encode()
        self.assertRaises(AssertionError, checkDecoder, stream)

    def test_engineExceptionPropagates(self) -> None:
        """
        An exception from the engine reaches the caller of the engine
        check.
        """

        def broken(self: object, data: bytes) -> list[object]:
            raise ZeroDivisionError()

        self.patch(MemuxEngine, "receiveData", broken)
        self.assertRaises(ZeroDivisionError, checkEngine, b"\x02\x00")

    def test_boundsChecked(self) -> None:
        """
        A decoder holding more than the bound the checks allow fails them,
        on its own or in the engine.
        """
        self.patch(_fuzzchecks, "MAX_HEADER", -16384)
        self.patch(_fuzzchecks, "MAX_PREFACE", 0)
        partial = DataFrame(1, b"x" * 10, open=True).encode()[:-1]
        self.assertRaises(
            AssertionError, checkDecoder, encodePreface(Settings()) + partial
        )
        self.assertRaises(AssertionError, checkEngine, bytes((2, 0)) + partial)


class MutationFuzzerTests(SynchronousTestCase):
    """
    The fuzzer that runs where atheris is missing.
    """

    def test_mutateDeterministic(self) -> None:
        """
        With the same seed, the same mutations; the result stays within
        8 KiB and differs from the input.
        """
        data = encodePreface(Settings()) + DataFrame(1, b"hello").encode()
        self.assertEqual(
            mutate(data, random.Random(7), [data]),
            mutate(data, random.Random(7), [data]),
        )
        rng = random.Random(3)
        outputs = {mutate(data, rng, [data]) for _ in range(50)}
        self.assertGreater(len(outputs - {data}), 40)
        self.assertLessEqual(max(map(len, outputs)), 8192)

    def test_findsCrash(self) -> None:
        """
        A check that fails on some inputs is caught within a few hundred
        runs; the input is written to the crash directory and returned.
        """

        def fragile(data: bytes) -> frozenset[str]:
            if b"\xff" in data:
                raise ValueError("0xff")
            return frozenset({f"length:{len(data) // 4}"})

        crashes = Path(self.mktemp())
        found = fuzzWithoutAtheris(
            fragile, [b"abc"], runs=500, seed=1, crashDir=crashes, log=io.StringIO()
        )
        self.assertTrue(found)
        self.assertTrue(all(b"\xff" in data for data in found))
        self.assertEqual(
            sorted(p.read_bytes() for p in crashes.iterdir()), sorted(set(found))
        )

    def test_keepsNewInputs(self) -> None:
        """
        Inputs that exercise something new are written to the new-input
        directory; inputs that do not are not.
        """
        new = Path(self.mktemp())
        fuzzWithoutAtheris(
            lambda data: frozenset({str(len(data) > 5)}),
            [b"a"],
            runs=300,
            seed=2,
            newDir=new,
            log=io.StringIO(),
        )
        lengths = sorted(len(p.read_bytes()) > 5 for p in new.iterdir())
        self.assertEqual(lengths, [False, True])

    def test_mainWithoutAtheris(self) -> None:
        """
        C{--no-atheris} fuzzes the corpus directories given for the runs
        asked, without needing atheris, and exits 0 when nothing failed.
        """
        corpus = findCorpus() / "decoder"
        crashes = Path(self.mktemp())
        log = io.StringIO()
        self.patch(sys, "stderr", log)
        status = main(
            checkDecoder,
            [
                "fuzz_decoder.py",
                "--no-atheris",
                "--runs",
                "200",
                "--seed",
                "5",
                "--crashes",
                str(crashes),
                str(corpus),
            ],
        )
        self.assertEqual(status, 0)
        self.assertFalse(crashes.exists())
        self.assertIn("done: 200 runs", log.getvalue())
        self.assertTrue(readCorpus([corpus]))
