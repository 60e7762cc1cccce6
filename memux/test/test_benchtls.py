"""
``python -m memux.bench --tls``: the benchmarks over TLS 1.3.

As in the other benchmark tests, nothing here judges a timing: a quick run
checks that memux and its baselines really ran over TLS and were reported.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from memux import bench
from memux.bench.certificate import HOSTNAME, selfSignedPEM
from memux.test._helpers import isNumber, runModule
from memux.tls import clientTLSOptions, serverTLSOptions


class QuickTLSRunTests(SynchronousTestCase):
    """
    A quick ``--tls`` run end to end.
    """

    def test_scenariosOverTLS(self) -> None:
        """
        A quick ``--tls`` run of bulk and churn exits 0, says it ran over
        TLS, and reports for each scenario memux's and the baseline's
        figures and their ratio, from clients that negotiated TLS 1.3;
        iperf3, plain TCP, is left out with the reason.
        """
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "bench.json"
            done = runModule(
                "memux.bench",
                "--tls",
                "--quick",
                "--runs",
                "1",
                "--scenario",
                "bulk",
                "--scenario",
                "churn",
                "--json",
                str(out),
                timeout=300,
            )
            self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
            report = json.loads(out.read_text())
        self.assertIn("over TLS 1.3", done.stdout)
        self.assertTrue(report["tls"])
        self.assertEqual(sorted(report["scenarios"]), ["bulk", "churn"])
        for name, result in report["scenarios"].items():
            for key in ("memux", "baseline", "ratio"):
                self.assertTrue(isNumber(result[key]), f"{name} {key}: {result[key]}")
            self.assertIsNone(result["error"], name)
            ran = {d["variant"]: d for d in result["details"]}
            for variant in ("memux", "baseline"):
                self.assertEqual(ran[variant]["tls"], ["TLSv1.3"], (name, variant))
        iperf3 = report["scenarios"]["bulk"]["references"]["iperf3"]
        self.assertIn("not compared with --tls", iperf3["unavailable"])
        bulk = {d["variant"]: d for d in report["scenarios"]["bulk"]["details"]}
        self.assertTrue(isNumber(bulk["memux"]["faultsPerMB"]))

    def test_plainRunNotTLS(self) -> None:
        """
        ``--tls`` is off unless given.
        """
        args = bench.buildParser().parse_args([])
        self.assertFalse(args.tls)
        self.assertTrue(bench.buildParser().parse_args(["--tls"]).tls)


class Hello(Protocol):
    """
    Send a greeting once connected; keep what arrives.
    """

    def __init__(self) -> None:
        self.received = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"hello")

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class CertificateTests(SynchronousTestCase):
    """
    The certificate a ``--tls`` run makes.
    """

    def handshake(self, pem: str, hostname: str) -> tuple[Hello, Hello]:
        """
        A TLS connection in memory: a server presenting ``pem``, a client
        trusting it for ``hostname``; each side greets the other.
        """
        clock = Clock()
        server, client = Hello(), Hello()
        serverFactory = TLSMemoryBIOFactory(
            serverTLSOptions(pem.encode("ascii")),
            False,
            Factory.forProtocol(lambda: server),
            clock,
        )
        clientFactory = TLSMemoryBIOFactory(
            clientTLSOptions(hostname, pem.encode("ascii")),
            True,
            Factory.forProtocol(lambda: client),
            clock,
        )
        _, _, pump = connectedServerAndClient(
            lambda: serverFactory.buildProtocol(None),
            lambda: clientFactory.buildProtocol(None),
            greet=False,
        )
        for _ in range(20):
            clock.advance(0)
            pump.pump()
        return server, client

    def test_trustedForLocalhost(self) -> None:
        """
        A fresh self-signed certificate (a new one each time), which a
        client that trusts it as its CA accepts for `HOSTNAME`: the TLS
        handshake completes and data flows both ways.
        """
        pem = selfSignedPEM()
        self.assertNotEqual(pem, selfSignedPEM())
        certificate = Certificate.loadPEM(pem.encode("ascii"))
        self.assertEqual(certificate.getSubject(), certificate.getIssuer())
        server, client = self.handshake(pem, HOSTNAME)
        self.assertEqual((server.received, client.received), (b"hello", b"hello"))

    def test_otherNameRefused(self) -> None:
        """
        The client checks the name: for another host name the handshake
        fails and no data flows.
        """
        server, client = self.handshake(selfSignedPEM(), "example.com")
        self.assertEqual((server.received, client.received), (b"", b""))
