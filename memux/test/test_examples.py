"""
The runnable examples in examples/ run and say what they promise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from memux.test._helpers import EXAMPLES, ROOT, runExample


class ExampleTests(SynchronousTestCase):
    """
    Each example runs to completion.
    """

    def test_webOverMemux(self) -> None:
        """
        web_over_memux.py fetches a page through an Agent over a channel,
        talks to a line service and pings, all on one connection.
        """
        out = runExample("web_over_memux.py")
        self.assertIn("web: served on memux channel 1 of port", out)
        self.assertIn("shout: HELLO!", out)
        self.assertIn("ping:", out)
        self.assertIn("server: channel 3 asks for b'shout'", out)

    def test_priorities(self) -> None:
        """
        priorities.py times an interactive channel's round trips beside
        bulk channels at urgency 0, then at the default, and compares them.
        """
        out = runExample("priorities.py", "--pings", "50")
        self.assertIn("urgency 0: median round trip", out)
        self.assertIn("urgency 3: median round trip", out)
        self.assertIn("the urgent channel answered", out)

    def test_echoClientAgainstTwistd(self) -> None:
        """
        echo_client.py, as the README shows it, gets its message echoed by
        the built-in echo service of ``twistd -n memux``.
        """
        if not (EXAMPLES / "echo_client.py").exists():
            raise SkipTest("examples/ is not here")
        tmp = tempfile.mkdtemp()
        sock = os.path.join(tmp, "memux.sock")
        server = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                "memux",
                "--listen",
                f"unix:{sock}",
            ],
            cwd=str(ROOT),
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(sock):
                if server.poll() is not None or time.monotonic() > deadline:
                    log = server.stdout.read() if server.stdout else b""
                    raise AssertionError(f"twistd did not start: {log!r}")
                time.sleep(0.05)
            out = runExample("echo_client.py", f"unix:{sock}")
            self.assertEqual(out, "hello\n")
        finally:
            server.terminate()
            server.wait(30)
            if server.stdout:
                server.stdout.close()
