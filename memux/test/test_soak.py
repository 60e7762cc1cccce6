"""
Tests for the soak test, `memux.bench.soak` and the modules of its client
and workload (`memux.bench.soakclient`, `memux.bench.soakops`,
`memux.bench.soakstreams`, `memux.bench.soakbase`).

The workload's pieces (patterns, pacing, the saturation monitor, each
operation and how it judges what it sees) run against in-memory sessions
with a deterministic clock.  The end-to-end test is a smoke run of a few
seconds against a real ``twistd memux``: the machine is shared and noisy, so
no figure is judged, only that the run is clean and every figure reported.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from memux import bench
from memux.bench import soak, soakbase, soakclient, soakops, soakstreams
from memux.bench.processes import Reactor
from memux.bench.soakbase import (
    Budget,
    LoadMonitor,
    Pattern,
    StreamCheck,
    chargenPeriod,
)
from memux.bench.soakclient import SoakClient, SoakParams, SoakSession
from memux.bench.soakops import Churn, EchoBase, EchoChunks, EchoMessages, Op
from memux.bench.soakstreams import Download, EchoStream, HalfClose, Upload
from memux.codes import ErrorCode
from memux.error import SessionLost
from memux.interfaces import IChunkReceiver
from memux.protocol import MemuxProtocol
from memux.services import Chargen, builtinServices
from memux.testing import connectedSessions

ROOT = Path(__file__).resolve().parents[2]
ServiceMap = dict[bytes, Any]


class PatternTests(SynchronousTestCase):
    """
    The byte patterns every byte is checked against.
    """

    def test_chargenMatchesService(self) -> None:
        """
        The RFC 864 period written from the RFC is the one the ``chargen``
        service sends: 95 lines of 72 printable characters and CRLF, each
        starting one character later.
        """
        period = chargenPeriod()
        self.assertEqual(period, Chargen.block)
        lines = period.split(b"\r\n")[:-1]
        self.assertEqual(len(lines), 95)
        self.assertTrue(all(len(line) == 72 for line in lines))
        self.assertEqual(lines[0][:3], b' !"')
        self.assertEqual(lines[1][:3], b'!"#')
        self.assertEqual(lines[94][:2], b"~ ")

    def test_sliceWrapsAndSpans(self) -> None:
        """
        A slice is the period repeated, from any offset, of any length
        (longer than the precomputed span too).
        """
        pattern = Pattern(b"abcdefg", 10)
        self.assertEqual(pattern.slice(5, 5), b"fgabc")
        self.assertEqual(pattern.slice(7 * 1000 + 1, 3), b"bcd")
        self.assertEqual(pattern.slice(0, 23), b"abcdefg" * 3 + b"ab")
        self.assertEqual(pattern.slice(3, 0), b"")

    def test_mismatch(self) -> None:
        """
        ``mismatch`` gives the index of the first wrong byte, also past the
        span, or None; ``describe`` shows both sides.
        """
        pattern = Pattern(bytes(range(256)), 64)
        good = pattern.slice(100, 300)
        self.assertIsNone(pattern.mismatch(100, good))
        bad = good[:250] + b"\xff" + good[251:]
        self.assertEqual(pattern.mismatch(100, bad), 250)
        self.assertIn("got ff", pattern.describe(100, bad, 250))
        self.assertEqual(pattern.mismatch(101, good), 0)

    def test_streamCheck(self) -> None:
        """
        A stream checked piece by piece keeps its position and names the
        stream position of the first wrong byte.
        """
        pattern = Pattern(b"0123456789", 4)
        check = StreamCheck(pattern, 3)
        self.assertIsNone(check.feed(b"3456"))
        self.assertIsNone(check.feed(b"789012"))
        self.assertEqual(check.position, 10)
        error = check.feed(b"34x")
        self.assertIsNotNone(error)
        assert error is not None
        self.assertIn("byte 12:", error)

    def test_sizes(self) -> None:
        """
        Message sizes run from 0 B to 2 MiB, log-uniform: small and large
        sizes both come up.
        """
        rng = random.Random(1)
        sizes = [soakbase.messageSize(rng) for _ in range(5000)]
        self.assertEqual(min(sizes), 0)
        self.assertLessEqual(max(sizes), soakbase.MAX_MESSAGE)
        self.assertTrue(any(0 < s < 100 for s in sizes))
        self.assertTrue(any(s > soakbase.MAX_MESSAGE // 2 for s in sizes))
        pieces = [soakbase.pieceSize(rng) for _ in range(1000)]
        self.assertTrue(all(1 <= p <= 256 * 1024 for p in pieces))


class BudgetTests(SynchronousTestCase):
    """
    The token bucket that paces the workload.
    """

    def test_paced(self) -> None:
        """
        A cost is granted at once while the bucket is not in debt; after one
        that put it in debt, the next waits until the debt is repaid.
        """
        clock = Clock()
        budget = Budget(clock, rate=100, burst=100)
        first = budget.take(250)
        self.assertTrue(first.called)
        second = budget.take(10)
        self.assertFalse(second.called)
        clock.advance(1.4)
        self.assertFalse(second.called)
        clock.advance(0.1)
        self.assertTrue(second.called)

    def test_cancel(self) -> None:
        """
        A cancelled wait gives up its place.
        """
        clock = Clock()
        budget = Budget(clock, rate=100, burst=0)
        budget.take(100)
        waiting = budget.take(1000)
        after = budget.take(1)
        waiting.cancel()
        self.failureResultOf(waiting)
        clock.advance(1)
        self.assertTrue(after.called)


class LoadMonitorTests(SynchronousTestCase):
    """
    Whether the client was saturated.
    """

    def test_cpu(self) -> None:
        """
        Seconds with most of a core used are saturated; a window is when
        most of its seconds are.
        """
        clock = Clock()
        used = [0.0]
        monitor = LoadMonitor(clock, cpu=lambda: used[0])
        for busy in (True, True, False, True):
            clock.advance(1)
            used[0] += 0.95 if busy else 0.2
            monitor.sample()
        self.assertTrue(monitor.saturated(0, 4))
        self.assertFalse(monitor.saturated(2.5, 3.5))
        self.assertFalse(monitor.saturated(10, 20))

    def test_lag(self) -> None:
        """
        A timer that fires late makes its second saturated whatever the CPU,
        and the lag is reported in milliseconds.
        """
        clock = Clock()
        monitor = LoadMonitor(clock, cpu=lambda: 0.0)
        monitor.start()
        clock.advance(soakbase.LAG_PROBE + 0.7)
        clock.advance(0.3)
        monitor.sample()
        self.assertTrue(monitor.saturated(0, 2))
        figures = monitor.figures()
        self.assertAlmostEqual(figures["lagMaxMs"], 700, delta=1)
        monitor.stop()


@implementer(IChunkReceiver)
class Corrupting(Protocol):
    """
    An echo that flips one byte of the ``n``-th chunk.
    """

    n = 2

    def chunkReceived(self, data: bytes, endOfMessage: bool) -> None:
        """
        Echo, corrupting one chunk.
        """
        self.n -= 1
        if self.n == 0 and data:
            data = bytes([data[0] ^ 1]) + data[1:]
        transport: Any = self.transport
        if endOfMessage:
            transport.writeMessage(data)
        else:
            transport.write(data)


class Resetting(Protocol):
    """
    A service that resets every channel as soon as data arrives.
    """

    def dataReceived(self, data: bytes) -> None:
        """
        Reset.
        """
        cast(Any, self.transport).resetChannel(0x0B, "no")


class Truncating(Protocol):
    """
    An echo that drops the last byte of what it receives.
    """

    def dataReceived(self, data: bytes) -> None:
        """
        Echo all but the last byte, as one message.
        """
        cast(Any, self.transport).writeMessage(data[:-1])


class Silent(Protocol):
    """
    A service that reads and never answers.
    """


class Harness:
    """
    A soak client whose session runs in memory against ``services``, on a
    deterministic clock.
    """

    def __init__(self, services: ServiceMap | None = None, seed: int = 7) -> None:
        self.clock = Clock()
        if services is None:
            services = dict(builtinServices(self.clock))
        client, server, pump = connectedSessions(services, clock=self.clock)
        self.session: MemuxProtocol = client
        self.server: MemuxProtocol = server
        self.pump: IOPump = pump
        self.client = SoakClient(
            cast(Reactor, self.clock), SoakParams(seed=seed), emit=self.lines.append
        )
        self.soak = SoakSession(self.client, 1, random.Random(seed))
        self.soak.session = client
        self.soak.live = True

    lines: list[dict[str, Any]] = []

    def run(self, op: Op, steps: int = 5000) -> str | None:
        """
        Start ``op`` and move bytes (and time, for the reader's pauses)
        until it is over; its outcome, or None if it never ended.
        """
        outcomes: list[str] = []
        op.begin().addCallback(outcomes.append)
        for _ in range(steps):
            if outcomes:
                break
            self.pump.pump()
            if not self.pump.pump():
                self.clock.advance(0.05)
        return outcomes[0] if outcomes else None

    def problems(self) -> dict[str, int]:
        """
        The problems recorded, by kind.
        """
        return {k: v for k, v in self.client.tally.problems.items() if v}


def small(op: EchoBase, sizes: list[int]) -> EchoBase:
    """
    ``op`` with messages of ``sizes``.
    """
    op.messages = [(op.rng.randrange(soakbase.ECHO_PERIOD), n) for n in sizes]
    op.inbound = sum(sizes)
    return op


class OperationTests(SynchronousTestCase):
    """
    Each operation of the workload, against the built-in services in memory:
    it completes, counts what it moved, and finds nothing wrong.
    """

    def assertClean(self, harness: Harness, op: Op) -> None:
        """
        ``op`` ends ``ok`` with no problem recorded.
        """
        self.assertEqual(harness.run(op), "ok", harness.client.events)
        self.assertEqual(harness.problems(), {})
        self.assertEqual(harness.client.tally.ops[op.kind], 1)
        self.assertEqual(harness.client.active, set())

    def test_echoMessages(self) -> None:
        """
        Whole messages, empty and large, come back whole.
        """
        harness = Harness()
        op = small(EchoMessages(harness.soak), [0, 1, 70_000, 300_000])
        self.assertClean(harness, op)
        self.assertEqual(harness.client.tally.bytesIn, 370_001)
        self.assertEqual(harness.client.tally.bytesOut, 370_001)

    def test_echoChunks(self) -> None:
        """
        Chunks of messages come back, each message ending where it ended.
        """
        harness = Harness()
        self.assertClean(harness, small(EchoChunks(harness.soak), [200_000, 0, 5]))

    def test_echoStream(self) -> None:
        """
        A byte stream written through a producer comes back whole.
        """
        harness = Harness(seed=3)
        self.assertClean(harness, EchoStream(harness.soak))

    def test_halfClose(self) -> None:
        """
        After a half-close the echo is read to its end of file, and the
        channel then ends cleanly.
        """
        harness = Harness(seed=4)
        op = HalfClose(harness.soak)
        self.assertClean(harness, op)
        self.assertTrue(op.eof)

    def test_upload(self) -> None:
        """
        An upload to ``discard`` closes cleanly once written.
        """
        harness = Harness(seed=5)
        op = Upload(harness.soak)
        self.assertClean(harness, op)
        self.assertEqual(op.writer.sent, op.total)

    def test_download(self) -> None:
        """
        ``chargen``'s stream follows RFC 864.
        """
        harness = Harness(seed=6)
        op = Download(harness.soak)
        self.assertClean(harness, op)
        self.assertGreaterEqual(op.check.position, op.total)

    def test_aborts(self) -> None:
        """
        Aborting mid-message (echo) or mid-stream (chargen) ends ``ok``:
        the abort is the workload's own.
        """
        for seed in range(4):
            for kind in (soakstreams.AbortEcho, soakstreams.AbortDownload):
                harness = Harness(seed=seed)
                self.assertClean(harness, kind(harness.soak))

    def test_churn(self) -> None:
        """
        A churn burst opens, uses and closes all its channels.
        """
        harness = Harness()
        op = Churn(harness.soak)
        self.assertClean(harness, op)
        self.assertEqual(harness.client.tally.channels, soakops.CHURN_CHANNELS)
        self.assertEqual(harness.session.counters()["channelsOpen"], 0)
        self.assertFalse(harness.soak.churning)

    def test_ping(self) -> None:
        """
        A ping's round trip is kept.
        """
        harness = Harness()
        self.assertClean(harness, soakops.Ping(harness.soak))
        self.assertEqual(len(harness.client.tally.pings), 1)

    def test_goAway(self) -> None:
        """
        A session closed by GOAWAY lets its operations finish: they end
        ``ok``, and then the connection closes.
        """
        harness = Harness()
        harness.session.whenClosed().addCallback(harness.soak.whenClosed)
        op = small(EchoMessages(harness.soak), [100_000] * 4)
        outcomes: list[str] = []
        op.begin().addCallback(outcomes.append)
        harness.soak.mode = "session.goAway"
        harness.soak.close()
        for _ in range(100):
            harness.pump.flush()
            harness.clock.advance(0.1)
        self.assertEqual(outcomes, ["ok"])
        self.assertTrue(harness.soak.closed)
        self.assertFalse(harness.soak.cutting)
        self.assertEqual(harness.problems(), {})

    def test_pausedReader(self) -> None:
        """
        A reader paused on purpose is resumed, and the operation completes.
        """
        harness = Harness()
        op = small(EchoMessages(harness.soak), [100_000] * 3)
        self.patch(soakops, "PAUSE_SHARE", 1.0)
        self.assertClean(harness, op)
        self.assertGreaterEqual(harness.client.tally.pauses, 1)
        self.assertFalse(op.paused)


class ProblemTests(SynchronousTestCase):
    """
    What the operations and the watchdog report.
    """

    def test_corruptEcho(self) -> None:
        """
        A wrong byte is an integrity failure naming the echo and the byte.
        """
        harness = Harness({b"echo": Factory.forProtocol(Corrupting)})
        op = small(EchoChunks(harness.soak), [100_000])
        self.assertEqual(harness.run(op), "failed")
        self.assertEqual(harness.problems(), {"integrity": 1})
        self.assertIn("echo 1, byte", harness.client.events[0]["detail"])

    def test_shortMessage(self) -> None:
        """
        A message echoed with another length is an integrity failure.
        """

        harness = Harness({b"echo": Factory.forProtocol(Truncating)})
        op = small(EchoMessages(harness.soak), [10])
        self.assertEqual(harness.run(op), "failed")
        self.assertEqual(harness.problems(), {"integrity": 1})
        self.assertIn("is 9 B; 10 B were sent", harness.client.events[0]["detail"])

    def test_unexpectedReset(self) -> None:
        """
        A reset the workload did not cause is an unexpected reset, with the
        code and reason.
        """
        harness = Harness({b"echo": Factory.forProtocol(Resetting)})
        op = small(EchoMessages(harness.soak), [10])
        self.assertEqual(harness.run(op), "failed")
        self.assertEqual(harness.problems(), {"unexpected-reset": 1})
        self.assertIn("ChannelReset", harness.client.events[0]["detail"])

    def test_sessionClosedByUs(self) -> None:
        """
        Channels cut by the workload's own close of their session are
        ``cut``, not failures.
        """
        harness = Harness({b"echo": Factory.forProtocol(Silent)})
        op = small(EchoMessages(harness.soak), [10])
        op.begin()
        harness.pump.flush()
        harness.soak.mode = "session.abortConnection"
        harness.soak.close()
        harness.pump.flush()
        harness.clock.advance(0)
        self.assertTrue(op.ended)
        self.assertEqual(harness.client.tally.cut, 1)
        self.assertEqual(harness.problems(), {})

    def test_excessiveLoadNeverExpected(self) -> None:
        """
        `SessionLost` is expected only while the workload cuts its own
        session, and never with EXCESSIVE_LOAD.
        """
        self.assertTrue(soakops.cutOff(Failure(SessionLost("closed")), True))
        load = SessionLost("GOAWAY", ErrorCode.EXCESSIVE_LOAD)
        self.assertFalse(soakops.cutOff(Failure(load), True))
        self.assertFalse(soakops.cutOff(Failure(ConnectionDone()), True))
        self.assertFalse(soakops.cutOff(Failure(SessionLost("closed")), False))

    def test_sessionLost(self) -> None:
        """
        A session lost when the workload did not close it is an unexpected
        reset (and so is each channel it carried).
        """
        harness = Harness({b"echo": Factory.forProtocol(Silent)})
        harness.session.whenClosed().addCallback(harness.soak.whenClosed)
        op = small(EchoMessages(harness.soak), [10])
        op.begin()
        harness.pump.flush()
        harness.server.abortConnection()
        harness.pump.flush()
        harness.clock.advance(0)
        self.assertEqual(harness.problems(), {"unexpected-reset": 2})
        self.assertTrue(harness.soak.stopped.called)

    def test_stall(self) -> None:
        """
        An operation with no progress for `STALL_SECONDS` is a stall, once,
        when the client was not saturated.
        """
        harness = Harness({b"echo": Factory.forProtocol(Silent)})
        harness.client.monitor = LoadMonitor(harness.clock, cpu=lambda: 0.0)
        op = small(EchoMessages(harness.soak), [10])
        op.begin()
        harness.pump.flush()
        for _ in range(int(soakbase.STALL_SECONDS) + 5):
            harness.clock.advance(1)
            harness.client.tick()
        self.assertEqual(harness.problems(), {"stall": 1})
        self.assertIn("0 of 1 echoes back", harness.client.events[0]["detail"])

    def test_explainedStall(self) -> None:
        """
        A stall while the client was saturated is explained, not a failure.
        """
        harness = Harness({b"echo": Factory.forProtocol(Silent)})
        harness.client.monitor = LoadMonitor(harness.clock, cpu=harness.clock.seconds)
        op = small(EchoMessages(harness.soak), [10])
        op.begin()
        harness.pump.flush()
        for _ in range(int(soakbase.STALL_SECONDS) + 5):
            harness.clock.advance(1)
            harness.client.tick()
        self.assertEqual(harness.problems(), {"explained-stall": 1})

    def test_pausedIsNoStall(self) -> None:
        """
        An operation whose reader the workload paused is not stalled.
        """
        harness = Harness({b"echo": Factory.forProtocol(Silent)})
        op = small(EchoMessages(harness.soak), [10])
        op.begin()
        op.paused = True
        harness.clock.advance(soakbase.STALL_SECONDS * 2)
        harness.client.tick()
        self.assertEqual(harness.problems(), {})

    def test_hungClose(self) -> None:
        """
        A close not complete `HUNG_CLOSE_SECONDS` after it began is hung:
        reported with the session's state, then the connection is aborted.
        """
        harness = Harness()
        harness.client.sessions[harness.soak] = cast(Any, None)
        harness.soak.mode = "transport.loseConnection (busy)"
        harness.soak.closingByUs = True
        harness.soak.closeStarted = harness.clock.seconds()
        harness.clock.advance(soakclient.HUNG_CLOSE_SECONDS + 1)
        harness.client.tick()
        self.assertEqual(harness.problems(), {"hung-close": 1})
        detail = harness.client.events[0]["detail"]
        self.assertIn("transport.loseConnection (busy) began 31 s ago", detail)
        harness.pump.flush()
        self.assertFalse(harness.session.connected)


class ReportTests(SynchronousTestCase):
    """
    The table and the verdict.
    """

    def report(self, **problems: int) -> dict[str, Any]:
        """
        A report of one interval with ``problems``.
        """
        tally = soakbase.Tally()
        tally.problems.update({k.replace("_", "-"): v for k, v in problems.items()})
        row: dict[str, Any] = {
            "interval": 1,
            "phase": "run",
            "tally": tally.toJSON(),
            "serverRssMiB": 50.0,
            "serverPeakMiB": 60.0,
            "serverFds": 51,
            "serverFdsMax": 51,
            "serverCpuPercent": 20.0,
            "clientCpuPercent": 30.0,
            "lagMaxMs": 12.0,
            "wallSeconds": 60.0,
        }
        summary = soak.summarize([row], tally.toJSON())
        return {
            "rows": [row],
            "summary": summary,
            "end": {
                "serverRssStartMiB": 40.0,
                "serverRssAfterMiB": 45.0,
                "serverFdsStart": 11,
                "serverFdsAfter": 11,
                "quietSeconds": 10,
                "serverStopped": True,
                "stopSeconds": 0.1,
            },
            "serverLog": {"warn": [], "error": []},
        }

    def test_pass(self) -> None:
        """
        Nothing wrong, nothing failed; explained stalls do not fail.
        """
        report = self.report(explained_stall=2)
        self.assertEqual(soak.verdict(report), [])
        text = soak.table(report["rows"], report["summary"])
        self.assertIn("0 (+2 sat.)", text)
        self.assertIn("all", text)

    def test_failures(self) -> None:
        """
        Each kind of problem fails the run, and so do descriptors left open
        and errors in the server's log.
        """
        report = self.report(stall=1, hung_close=2, unexpected_reset=3, integrity=4)
        report["end"]["serverFdsAfter"] = 13
        report["serverLog"]["error"] = ["Traceback"]
        self.assertEqual(
            soak.verdict(report),
            [
                "4 integrity",
                "1 stall",
                "2 hung-close",
                "3 unexpected-reset",
                "2 server descriptors still open after close",
                "1 server log errors",
            ],
        )

    def test_scanLog(self) -> None:
        """
        Warnings and errors are found in twistd's log and the files it
        rotated.
        """
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "twistd.log"
            log.write_text("x [memux.protocol#info] fine\ny [a#warn] hm\n")
            (Path(tmp) / "twistd.log.1").write_text("z [b#error] bad\n")
            found = soak.scanLog(log)
        self.assertEqual(len(found["warn"]), 1)
        self.assertEqual(len(found["error"]), 1)

    def test_benchDispatches(self) -> None:
        """
        ``python -m memux.bench soak`` reaches the soak test's command line,
        and the other invocations are unchanged.
        """
        out = io.StringIO()
        with contextlib.redirect_stdout(out), self.assertRaises(SystemExit) as e:
            bench.main(["soak", "--help"])
        self.assertEqual(e.exception.code, 0)
        self.assertIn("python -m memux.bench soak", out.getvalue())
        self.assertIn("--minutes", out.getvalue())
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(bench.main(["--list"]), 0)
        self.assertIn("bulk", out.getvalue())

    def test_badCommandLine(self) -> None:
        """
        Nonsense options are refused before anything starts.
        """
        for argv in (["--lifetime", "x"], ["--lifetime", "20-10"], ["--minutes", "0"]):
            args = soak.buildParser().parse_args(argv)
            args.seed = 1
            self.assertRaises(SystemExit, soak.paramsFrom, args, 0)


class SmokeTests(SynchronousTestCase):
    """
    A few seconds of soak against a real ``twistd memux``.
    """

    def soak(self, *options: str) -> tuple[subprocess.CompletedProcess[str], Any]:
        """
        Run a soak of a few seconds with ``options``; return the finished
        process and the JSON it wrote.
        """
        path = os.environ.get("PYTHONPATH")
        env = dict(
            os.environ, PYTHONPATH=str(ROOT) + (os.pathsep + path if path else "")
        )
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "soak.json"
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "memux.bench",
                    "soak",
                    "--minutes=0.1",
                    "--interval=2",
                    "--sessions=4",
                    "--lifetime=1-3",
                    "--rate=20",
                    "--quiet=0.5",
                    "--seed=1",
                    f"--json={out}",
                    *options,
                ],
                capture_output=True,
                text=True,
                timeout=180,
                env=env,
                cwd=str(ROOT),
            )
            self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
            return done, json.loads(out.read_text())

    def test_shortSoak(self) -> None:
        """
        A short soak exits 0, prints its table and verdict, and writes JSON
        with a row per interval, the summary and the end figures.
        """
        done, report = self.soak()
        self.assertIn("result: PASS", done.stdout)
        self.assertIn("RSS MiB", done.stdout)
        self.assertEqual(report["failures"], [])
        self.assertGreaterEqual(len(report["rows"]), 3)
        self.assertEqual(report["rows"][-1]["phase"], "close")
        summary = report["summary"]
        self.assertGreater(summary["tally"]["opsDone"], 0)
        self.assertGreater(summary["tally"]["sessionsOpened"], 4)
        for key in ("serverPeakMiB", "serverCpuPercent", "clientCpuPercent"):
            self.assertGreater(summary[key], 0, key)
        end = report["end"]
        self.assertEqual(end["serverFdsAfter"], end["serverFdsStart"])
        self.assertTrue(end["serverStopped"])

    def test_shortSoakOverTLS(self) -> None:
        """
        With ``--tls`` the server speaks TLS and the client connects over
        it; every way of closing a session, the idle transport's
        ``loseConnection`` among them, still finishes, and nothing fails.
        """
        done, report = self.soak("--tls", "--lifetime=0.5-1")
        self.assertIn("over TLS", done.stdout)
        self.assertIn("result: PASS", done.stdout)
        self.assertEqual(report["failures"], [])
        self.assertGreater(report["summary"]["tally"]["sessionsOpened"], 4)
