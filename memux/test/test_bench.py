"""
Tests for the benchmark harness, `memux.bench`.

The machine that runs the tests is shared and noisy, so nothing here judges
a timing: the end-to-end test is a smoke test that the harness runs every
scenario against its baseline and reports the numbers.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from memux import bench
from memux.test._helpers import isNumber, runModule


def runBench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """
    Run ``python -m memux.bench`` with ``args`` from the root of the
    checkout, this memux first on the path.
    """
    return runModule("memux.bench", *args, timeout=timeout)


class QuickRunTests(SynchronousTestCase):
    """
    ``python -m memux.bench --quick`` runs end to end.
    """

    def test_everyScenarioReported(self) -> None:
        """
        A quick run of one repetition exits 0, prints the table, and writes
        JSON with, for every scenario, the memux and baseline medians, their
        ratio, the target and a verdict, plus the machine it ran on.
        """
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "bench.json"
            done = runBench("--quick", "--runs", "1", "--json", str(out))
            self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
            report = json.loads(out.read_text())
        self.assertTrue("PASS" in done.stdout or "MISS" in done.stdout, done.stdout)
        self.assertIn("ratio", done.stdout)
        for key in ("cpu", "cores", "python", "twisted", "memux"):
            self.assertIn(key, report["machine"])
        self.assertEqual(report["runs"], 1)
        self.assertTrue(report["quick"])
        scenarios = report["scenarios"]
        self.assertEqual(sorted(scenarios), sorted(s.name for s in bench.SCENARIOS))
        for name, result in scenarios.items():
            for key in ("memux", "baseline", "ratio", "got"):
                self.assertTrue(isNumber(result[key]), f"{name} {key}: {result[key]}")
            expected = [label for label, _ in bench.BY_NAME[name].references]
            self.assertEqual(list(result["references"]), expected)
            for label, reference in result["references"].items():
                if reference["unavailable"] is None:
                    self.assertTrue(isNumber(reference["ratio"]), (name, label))
                    self.assertEqual(len(reference["runs"]), 1, (name, label))
                else:
                    # Only iperf3 may be missing, and it is said why.
                    self.assertEqual(label, "iperf3")
                    self.assertIn("not installed", reference["unavailable"])
                    self.assertIn("not run here: iperf3", done.stdout)
            self.assertIsInstance(result["pass"], bool)
            self.assertIsNone(result["error"], name)
            self.assertIn(name, done.stdout)


class PriorityLatencyTests(SynchronousTestCase):
    """
    The priority-latency measurement (`memux.bench.priorities`), run as
    the benchmark runs it (a server and a client process) with few pings.
    """

    def test_phases(self) -> None:
        """
        One run pings as many times in each phase as asked, in blocks: the
        idle phase with the bulk channels writing nothing, the urgent one
        beside bulk traffic; it reports the urgent and idle p99 as memux
        and baseline, their ratio, and the p50 and p99 of every phase.
        """
        scenario = bench.BY_NAME["priority-latency"]
        self.assertEqual(scenario.variants, (("both", "priority-latency/phases"),))
        params = bench.scenarioParams(scenario, True, 1.0, {})
        params.update(pings=120, block=50, warmup=5, settle=0.05, bulk=3)
        result = bench.scenarios.runOnce("priority-latency/phases", params, 120)
        self.assertEqual((result["pings"], result["idlePings"]), (120, 120))
        self.assertEqual(result["idleBulkBytes"], 0)
        self.assertGreater(result["bulkMBps"], 0)
        self.assertAlmostEqual(result["check"], result["memux"] / result["baseline"])
        self.assertLessEqual(result["p50"], result["memux"])
        self.assertLessEqual(result["idleP50"], result["baseline"])
        for phase in ("rr", "own"):
            self.assertLessEqual(result[f"{phase}P50"], result[f"{phase}P99"])


class HarnessTests(SynchronousTestCase):
    """
    The pieces of the harness that need no run.
    """

    def test_parseSize(self) -> None:
        """
        Sizes take binary units, and plain numbers stay numbers.
        """
        self.assertEqual(bench.parseSize("64KiB"), 64 * 1024)
        self.assertEqual(bench.parseSize("512M"), 512 * 1024 * 1024)
        self.assertEqual(bench.parseSize("1.5k"), 1536)
        self.assertEqual(bench.parseSize("20_000"), 20000)
        self.assertEqual(bench.parseSize("0.25"), 0.25)

    def test_scaleAndOverride(self) -> None:
        """
        ``--scale`` multiplies a scenario's work, ``--set`` overrides one
        parameter, and the memux settings ride along.
        """
        idle = bench.BY_NAME["idle"]
        params = bench.scenarioParams(idle, False, 0.5, {})
        self.assertEqual(params["channels"], 50_000)
        self.assertEqual(params["serverSettings"], {"maxChannels": 200_000})
        bulk = bench.BY_NAME["bulk"]
        params = bench.scenarioParams(bulk, True, 1.0, {"total": "1MiB"})
        self.assertEqual(params["total"], 1024 * 1024)
        self.assertRaises(
            SystemExit, bench.scenarioParams, bulk, True, 1.0, {"nonsense": "1"}
        )
        params = bench.scenarioParams(bulk, False, 0.3, {"write": "1000"})
        self.assertEqual(params["total"] % 1000, 0)

    def test_targets(self) -> None:
        """
        A target is met on the right side of its threshold, inclusive.
        """
        self.assertTrue(bench.Target("ratio", ">=", 0.9).met(0.9))
        self.assertFalse(bench.Target("ratio", ">=", 0.9).met(0.89))
        self.assertTrue(bench.Target("ratio", "<=", 5).met(4.9))
        self.assertFalse(bench.Target("ratio", "<=", 5).met(5.1))

    def test_outcomeAndTable(self) -> None:
        """
        An outcome takes medians of the runs and the ratio of the medians;
        the table shows them with the verdict.
        """
        outcome = bench.Outcome(bench.BY_NAME["bulk"], {})
        for memux, baseline in ((90, 100), (100, 100), (95, 110)):
            outcome.record("memux", {"value": memux})
            outcome.record("baseline", {"value": baseline})
        self.assertEqual(outcome.median("memux"), 95)
        self.assertEqual(outcome.median("baseline"), 100)
        self.assertAlmostEqual(outcome.ratio, 0.95)
        self.assertTrue(outcome.passed)
        text = bench.table([outcome])
        self.assertIn("PASS", text)
        self.assertIn("0.95", text)

    def test_referenceTargets(self) -> None:
        """
        A target on a reference is judged on memux / that reference and
        counts in the verdict; the table shows each reference's median and
        ratio.  A reference that could not run here is left out of the
        verdict, and the table says so with a dash.
        """
        params = bench.scenarioParams(bench.BY_NAME["bulk"], True, 1.0, {})
        outcome = bench.Outcome(bench.BY_NAME["bulk"], params)
        outcome.record("memux", {"value": 95})
        outcome.record("baseline", {"value": 100})
        outcome.record("defaults", {"value": 80})
        self.assertTrue(outcome.passed)  # iperf3 has no runs: not judged
        outcome.record("iperf3", {"value": 200})
        self.assertAlmostEqual(outcome.ratioTo("iperf3"), 0.475)
        self.assertFalse(outcome.passed)
        text = bench.table([outcome])
        self.assertIn("MISS", text)
        self.assertIn("defaults 80 = 1.19", text)
        self.assertIn("iperf3 200 = 0.47 (>= 0.75 MISS)", text)
        report = outcome.toJSON()
        self.assertEqual(report["references"]["defaults"]["ratio"], 95 / 80)
        self.assertEqual(report["alsoTargets"][0]["pass"], False)

        missing = bench.Outcome(bench.BY_NAME["bulk"], {})
        missing.record("memux", {"value": 95})
        missing.record("baseline", {"value": 100})
        missing.unavailable["iperf3"] = "iperf3 is not installed"
        self.assertTrue(missing.passed)
        self.assertIn("iperf3 -", bench.table([missing]))

    def test_baselinesTuned(self) -> None:
        """
        Every TCP baseline and reference role tunes its connections as memux
        tunes its own, on both sides; only the ``defaults`` references keep
        Twisted's defaults, and memux's own roles are left to memux.
        """
        from memux.bench.workers import ROLES, TUNING

        for scenario in bench.SCENARIOS:
            for label, role in (*scenario.variants, *scenario.references):
                if role == "iperf3":
                    continue
                self.assertIn(role, ROLES)
                tcp = "/tcp" in role or role == "churn/rr"
                if label == "defaults" or not tcp:
                    self.assertNotIn(role, TUNING, role)
                else:
                    self.assertIn(TUNING[role], ("session", "bulk"), role)

    def test_iperf3(self) -> None:
        """
        The iperf3 reference runs iperf3 over loopback and reports MB/s;
        without iperf3 it is unavailable, with the reason.
        """
        installed = shutil.which("iperf3")
        self.patch(shutil, "which", lambda name: None)
        with self.assertRaises(bench.scenarios.Unavailable) as raised:
            bench.scenarios.runIperf3({"total": 1 << 20}, 30)
        self.assertEqual(str(raised.exception), "iperf3 is not installed")
        self.patch(shutil, "which", lambda name: installed)
        if installed is None:
            raise SkipTest("iperf3 is not installed (only its absence was checked)")
        result = bench.scenarios.runIperf3({"total": 8 << 20}, 60)
        self.assertGreater(result["value"], 0)
        self.assertEqual(result["bytes"], 8 << 20)

    def test_plotWithoutMatplotlib(self) -> None:
        """
        ``--plot`` without matplotlib says how to install it and exits with
        status 2 before running anything.
        """
        saved = sys.modules.get("matplotlib")
        sys.modules["matplotlib"] = None  # type: ignore[assignment]
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                status = bench.main(["--plot", "x.png", "--scenario", "bulk"])
        finally:
            if saved is None:
                del sys.modules["matplotlib"]
            else:
                sys.modules["matplotlib"] = saved
        self.assertEqual(status, 2)
        self.assertIn("memux[bench]", stderr.getvalue())

    def test_plot(self) -> None:
        """
        With matplotlib, the chart is written as a PNG.
        """
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SkipTest("matplotlib is not installed") from None
        outcome = bench.Outcome(bench.BY_NAME["small"], {})
        outcome.record("memux", {"value": 50_000})
        outcome.record("baseline", {"value": 100_000})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "chart.png"
            bench.plot([outcome], bench.machineInfo(), str(path))
            self.assertEqual(path.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")


class LayoutTests(SynchronousTestCase):
    """
    How the tools' package is put together.
    """

    def test_publicModulesOnly(self) -> None:
        """
        The tools import no private module of memux (``memux._engine``,
        ``memux._wire``, ...), but for `memux.bench.frames`, which alone
        imports ``memux._wire``, for its frame encoders.
        """
        found = []
        for path in sorted(Path(bench.__file__).parent.glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module == "memux":
                    names = [f"memux.{alias.name}" for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                found += [
                    (path.name, name) for name in names if name.startswith("memux._")
                ]
        self.assertEqual(found, [("frames.py", "memux._wire")])
