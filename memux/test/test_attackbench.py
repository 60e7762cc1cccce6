"""
Tests for the attack bench, `memux.bench.attack` (``python -m
memux.attackbench``), and its hostile peers, `memux.bench.attackers`.

Each attacker is first driven against a sans-IO server engine, to check it
sends the attack it claims to (and that the engine answers as
doc/security.rst says).  The end-to-end test is a smoke test: the machine is
shared and noisy, so no figure is judged, only that every figure is
reported and the server and the well-behaved session came through.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import tempfile
from pathlib import Path
from typing import cast

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile
from twisted.trial.unittest import SynchronousTestCase

from memux import attackbench
from memux._engine import (
    ChannelOpened,
    DataReceived,
    Event,
    MemuxEngine,
    SessionSettings,
    SessionTerminated,
)
from memux._wire import ErrorCode, FrameDecoder, Preface
from memux.bench import attack, processes
from memux.bench.attackers import (
    Attacker,
    Campaign,
    ChannelFlood,
    Dribble,
    EmptyFrames,
    EndlessMessage,
    GarbagePreface,
    IdleChannels,
    NeverRead,
    OversizedFrame,
    PingFlood,
    RapidReset,
    Slowloris,
)
from memux.bench.processes import Reactor
from memux.test._helpers import isNumber, runModule

ROOT = Path(__file__).resolve().parents[2]
SERVER = SessionSettings()


class ThrottlingTransport(StringTransport):
    """
    A transport that pauses its producer once it holds more than ``limit``
    bytes, as a TCP transport does when its buffer fills.
    """

    limit = 64 * 1024

    def write(self, data: bytes) -> None:
        """
        Buffer ``data``; push back when full.
        """
        super().write(data)
        if len(self.io.getvalue()) > self.limit and self.producer is not None:
            self.producer.pauseProducing()


class Duel:
    """
    An attacker connected to a sans-IO server engine with default settings.
    """

    def __init__(self, attackerType: type[Attacker]) -> None:
        self.clock = MemoryReactorClock()
        # The campaign never connects here: a memory reactor stands in.
        self.campaign = Campaign(cast(Reactor, self.clock), 0, attackerType, 1)
        self.attacker = attackerType(self.campaign)
        self.transport = ThrottlingTransport()
        self.engine = MemuxEngine(False)
        self.events: list[Event] = []
        self.attacker.makeConnection(self.transport)

    def run(self, rounds: int = 20) -> None:
        """
        Carry what each side sends to the other, letting the attacker write
        one buffer-full per round, until the engine ends the session or
        ``rounds`` are over.
        """
        for _ in range(rounds):
            self.attacker.dataReceived(self.engine.dataToSend())
            self.events += self.engine.receiveData(self.transport.value())
            self.transport.clear()
            if self.engine.terminated:
                break
            self.attacker.resumeProducing()
        self.attacker.dataReceived(self.engine.dataToSend())

    def terminations(self) -> list[int]:
        """
        The codes the engine ended the session with.
        """
        return [e.code for e in self.events if isinstance(e, SessionTerminated)]

    def received(self) -> list[DataReceived]:
        """
        The chunks the engine delivered.
        """
        return [e for e in self.events if isinstance(e, DataReceived)]

    def ending(self) -> str:
        """
        How the attacker reports its connection, once closed.
        """
        self.attacker.connectionLost(Failure(ConnectionDone()))
        return self.campaign.endings[-1].what


class AttackerTests(SynchronousTestCase):
    """
    Each attacker sends the attack it names, within what the server's
    settings allow where it means to.
    """

    def assertCutOff(self, duel: Duel, code: ErrorCode) -> None:
        """
        The engine ended the session with ``code`` and the attacker saw
        the GOAWAY saying so.
        """
        self.assertEqual(duel.terminations(), [code])
        self.assertEqual(duel.attacker.goAway, code)
        self.assertEqual(duel.ending(), f"closed (GOAWAY {code.name})")

    def test_rapidReset(self) -> None:
        """
        Opening and at once resetting channels runs into the allowance of
        frames that do no work.
        """
        duel = Duel(RapidReset)
        duel.run()
        self.assertCutOff(duel, ErrorCode.EXCESSIVE_LOAD)
        self.assertEqual(duel.engine.uselessFrames, SERVER.maxUselessFrames + 1)

    def test_pingFlood(self) -> None:
        """
        A PING flood is cut off, and the attacker stops reading once it has
        the server's preface.
        """
        duel = Duel(PingFlood)
        duel.run()
        self.assertEqual(duel.transport.producerState, "paused")
        self.assertCutOff(duel, ErrorCode.EXCESSIVE_LOAD)

    def test_emptyFrames(self) -> None:
        """
        Empty DATA frames and CREDIT frames that raise nothing are cut off.
        """
        duel = Duel(EmptyFrames)
        duel.run()
        self.assertCutOff(duel, ErrorCode.EXCESSIVE_LOAD)

    def test_channelFlood(self) -> None:
        """
        One channel more than the server allows is CHANNEL_LIMIT_ERROR.
        """
        duel = Duel(ChannelFlood)
        duel.run()
        self.assertCutOff(duel, ErrorCode.CHANNEL_LIMIT_ERROR)

    def test_oversizedFrame(self) -> None:
        """
        A frame header over the maximum is FRAME_SIZE_ERROR.
        """
        duel = Duel(OversizedFrame)
        duel.run()
        self.assertCutOff(duel, ErrorCode.FRAME_SIZE_ERROR)

    def test_garbagePreface(self) -> None:
        """
        An HTTP request (the first connection of a campaign) in place of a
        preface is PROTOCOL_ERROR.
        """
        GarbagePreface.count = 0
        duel = Duel(GarbagePreface)
        self.assertTrue(duel.transport.value().startswith(b"GET / HTTP/1.1"))
        duel.run()
        self.assertCutOff(duel, ErrorCode.PROTOCOL_ERROR)

    def test_idleChannels(self) -> None:
        """
        Idle channels fill the server's channel-count credit exactly, and
        the session stays open.
        """
        duel = Duel(IdleChannels)
        duel.run()
        opened = [e for e in duel.events if isinstance(e, ChannelOpened)]
        self.assertEqual(len(opened), SERVER.maxChannels)
        self.assertEqual(duel.terminations(), [])
        self.assertEqual(duel.ending(), "closed (no GOAWAY)")

    def test_neverReadFillsSessionCredit(self) -> None:
        """
        The non-reading attacker sends exactly the session credit, as
        whole messages over many channels, and nothing beyond it.
        """
        duel = Duel(NeverRead)
        duel.run(rounds=1000)
        self.assertEqual(duel.terminations(), [])
        chunks = duel.received()
        self.assertEqual(sum(len(c.data) for c in chunks), SERVER.sessionCredit)
        self.assertTrue(all(c.endMessage for c in chunks))
        channels = {c.channel for c in chunks}
        self.assertEqual(len(channels), SERVER.sessionCredit // SERVER.channelCredit)

    def test_dribble(self) -> None:
        """
        The dribble sends 1-byte chunks on 1000 channels, and its CREDIT
        frames each raise a window, so none counts as useless.
        """
        duel = Duel(Dribble)
        duel.run(rounds=5)
        self.assertEqual(duel.terminations(), [])
        chunks = duel.received()
        self.assertEqual({len(c.data) for c in chunks}, {1})
        self.assertEqual(len({c.channel for c in chunks}), Dribble.CHANNELS)
        self.assertFalse(any(c.endMessage for c in chunks))
        self.assertEqual(duel.engine.uselessFrames, 0)

    def test_endlessMessage(self) -> None:
        """
        The endless message never ends, and stops at the server's credit.
        """
        duel = Duel(EndlessMessage)
        duel.run(rounds=100)
        self.assertEqual(duel.terminations(), [])
        chunks = duel.received()
        self.assertEqual({c.channel for c in chunks}, {1})
        self.assertFalse(any(c.endMessage for c in chunks))
        self.assertEqual(sum(len(c.data) for c in chunks), SERVER.channelCredit)

    def test_slowlorisPreface(self) -> None:
        """
        The slowloris preface is a valid one, over a thousand bytes long,
        sent one byte per second.
        """
        preface = Slowloris.PREFACE
        self.assertGreater(len(preface), 1000)
        items = FrameDecoder().receive(preface)
        self.assertEqual(len(items), 1)
        self.assertIsInstance(items[0], Preface)
        duel = Duel(Slowloris)
        self.assertEqual(duel.transport.value(), b"")
        duel.attacker.dataReceived(duel.engine.dataToSend())
        duel.clock.advance(1)
        duel.clock.advance(1)
        self.assertEqual(duel.transport.value(), preface[:3])
        duel.attacker.halt()
        duel.clock.advance(1)
        self.assertEqual(duel.transport.value(), preface[:3])


def runAttackBench(
    *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """
    Run ``python -m memux.attackbench`` with ``args`` from the root of the
    checkout, this memux first on the path.
    """
    return runModule("memux.attackbench", *args, timeout=timeout)


class QuickRunTests(SynchronousTestCase):
    """
    ``python -m memux.attackbench --quick`` runs end to end.
    """

    def test_quickRun(self) -> None:
        """
        A quick run of two attacks exits 0, prints the table, and writes
        JSON with, for each attack, the server's memory before and at peak,
        the baseline and attacked latencies and their ratio, and how the
        attacker's connections ended; the server and the well-behaved
        session survive, and the PING flood is cut off by GOAWAY.
        """
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "attacks.json"
            done = runAttackBench(
                "--quick",
                # (Two seconds, not one: on a loaded machine the flood's
                # GOAWAY came so near the end of one that the connection
                # was still closing when the attack stopped.)
                "--seconds=2",
                "--attack",
                "ping-flood",
                "--attack",
                "never-read",
                "--json",
                str(out),
            )
            self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
            report = json.loads(out.read_text())
        self.assertIn("peak RSS MiB", done.stdout)
        self.assertTrue(report["quick"])
        for key in ("cpu", "cores", "python", "twisted", "memux"):
            self.assertIn(key, report["machine"])
        attacks = report["attacks"]
        self.assertEqual(sorted(attacks), ["never-read", "ping-flood"])
        for name, result in attacks.items():
            self.assertIn(name, done.stdout)
            self.assertIsNone(result["error"], name)
            self.assertTrue(result["serverAlive"], name)
            self.assertTrue(result["sessionSurvived"], name)
            rss = result["rss"]
            self.assertGreater(rss["beforeMiB"], 0)
            self.assertGreaterEqual(rss["peakMiB"], rss["beforeMiB"])
            self.assertAlmostEqual(rss["growthMiB"], rss["peakMiB"] - rss["beforeMiB"])
            self.assertTrue(isNumber(result["serverCpuPercent"]), name)
            for phase in ("baseline", "attacked"):
                figures = result[phase]
                self.assertGreater(figures["pings"], 0)
                self.assertLessEqual(figures["p50"], figures["p99"])
            for key in ("p50", "p99"):
                self.assertAlmostEqual(
                    result["ratio"][key],
                    result["attacked"][key] / result["baseline"][key],
                )
            attacker = result["attacker"]
            self.assertEqual(
                sum(attacker["outcomes"].values()), attacker["connections"]
            )
            self.assertGreater(attacker["bytesSent"], 0)
        self.assertIn(
            "closed (GOAWAY EXCESSIVE_LOAD)",
            attacks["ping-flood"]["attacker"]["outcomes"],
        )


class CommandLineTests(SynchronousTestCase):
    """
    The command line, without a run.
    """

    def test_list(self) -> None:
        """
        ``--list`` names every attack and how many connections it uses.
        """
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            attack.main(["--list"])
        for each in attack.ATTACKS:
            self.assertIn(f"{each.name}: {each.title}", out.getvalue())

    def test_commandKept(self) -> None:
        """
        ``python -m memux.attackbench`` is kept: it runs the attack bench's
        command line.
        """
        self.assertIs(attackbench.main, attack.main)

    def test_unknownAttack(self) -> None:
        """
        An attack that does not exist is a usage error.
        """
        with contextlib.redirect_stderr(io.StringIO()):
            self.assertRaises(SystemExit, attack.main, ["--attack", "nonsense"])

    def test_outcomeDescribed(self) -> None:
        """
        The outcome column counts the connections by how they ended and
        gives the median time to close.
        """
        summary = {
            "outcomes": {"closed (GOAWAY EXCESSIVE_LOAD)": 1200, "open": 2},
            "medianSecondsToClose": 0.0125,
        }
        self.assertEqual(
            attack.describeOutcome(summary),
            "1,200 closed (GOAWAY EXCESSIVE_LOAD), 2 open; 12.50 ms to close",
        )

    def test_logLinesAcrossRotation(self) -> None:
        """
        The log lines counted include those twistd's log file rotated away
        (it does at every megabyte), and no other file's.
        """
        where = Path(self.mktemp())
        where.mkdir()
        log = LogFile("twistd.log", str(where), rotateLength=100)
        for n in range(50):
            log.write(f"line {n:03d} of a log that rotates\n")
        log.close()
        self.assertGreater(len(list(where.iterdir())), 3)
        (where / "twistd.log.bak").write_text("not a log line\n")
        (where / "other.log").write_text("not a log line\n")
        self.assertEqual(processes.logLines(where / "twistd.log"), 50)
