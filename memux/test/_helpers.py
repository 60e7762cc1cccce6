# -*- test-case-name: memux.test.test_helpers -*-
"""
Helpers shared by memux's test modules (one home, so test modules never
import each other).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import unittest
from pathlib import Path
from typing import Any

import trustme
from twisted.trial.unittest import SkipTest

#: The directory above the memux package: the checkout's root when the
#: tests run from a checkout, site-packages when memux is installed.
ROOT = Path(__file__).resolve().parents[2]


def isCheckout(root: Path = ROOT) -> bool:
    """
    Whether ``root`` is a memux checkout (rather than the site-packages
    directory of an installed memux).  An installed package has
    ``twisted/plugins/`` beside it too (Twisted's own, holding memux's
    plugin), so only the project's own files tell a checkout.
    """
    return (root / "setup.cfg").is_file() and (root / "memux").is_dir()


#: The runnable examples, in the checkout.
EXAMPLES = ROOT / "examples"


#: The protocol's specification, in the checkout.
SPEC = ROOT / "doc" / "spec.rst"


def readSpec() -> str:
    """
    Return the text of ``doc/spec.rst``, or skip the calling test when the
    document is not there (for example in an installed package).
    """
    if not SPEC.is_file():
        raise unittest.SkipTest(f"{SPEC} not found: the specification is not installed")
    return SPEC.read_text(encoding="utf-8")


#: the name the test server's certificate is for
HOSTNAME = "memux.test"


class Certificates:
    """
    A test CA (made with trustme) with a server certificate for
    L{HOSTNAME} and C{127.0.0.1}, a client certificate, and a stranger's
    certificate from another CA; each also written to a PEM file in
    C{directory}, as are the client certificate and its key apart, the CA
    certificate alone in the directory C{caDirectory}, and another CA's
    certificate in C{otherCAFile}.
    """

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.ca = trustme.CA()
        self.server = self.ca.issue_cert(HOSTNAME, "127.0.0.1")
        self.client = self.ca.issue_cert("client.memux.test")
        self.stranger = trustme.CA().issue_cert("stranger.memux.test")
        self.caPEM = self.ca.cert_pem.bytes()
        self.serverPEM = self.server.private_key_and_cert_chain_pem.bytes()
        self.clientPEM = self.client.private_key_and_cert_chain_pem.bytes()
        self.strangerPEM = self.stranger.private_key_and_cert_chain_pem.bytes()
        self.caFile = self.write("ca.pem", self.caPEM)
        self.serverFile = self.write("server.pem", self.serverPEM)
        self.serverCertFile = self.write(
            "server-cert.pem", self.server.cert_chain_pems[0].bytes()
        )
        self.serverKeyFile = self.write(
            "server-key.pem", self.server.private_key_pem.bytes()
        )
        self.clientFile = self.write("client.pem", self.clientPEM)
        self.clientCertFile = self.write(
            "client-cert.pem", self.client.cert_chain_pems[0].bytes()
        )
        self.clientKeyFile = self.write(
            "client-key.pem", self.client.private_key_pem.bytes()
        )
        self.strangerFile = self.write("stranger.pem", self.strangerPEM)
        self.otherCAFile = self.write("other-ca.pem", trustme.CA().cert_pem.bytes())
        self.caDirectory = os.path.join(directory, "cas")
        os.makedirs(self.caDirectory, exist_ok=True)
        with open(os.path.join(self.caDirectory, "ca.pem"), "wb") as f:
            f.write(self.caPEM)

    def write(self, name: str, data: bytes) -> str:
        """
        Write C{data} to file C{name}; return its path.
        """
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path


# ------------------------------------------------------------ subprocesses


def runModule(
    module: str, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """
    Run ``python -m MODULE`` with ``args`` from the root of the checkout,
    this memux first on the path.
    """
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ""))
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(ROOT),
    )


def isNumber(x: Any) -> bool:
    """
    Whether ``x`` is a finite number (not a bool).
    """
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def runExample(name: str, *args: str) -> str:
    """
    Run ``examples/name`` with this Python and memux importable; return its
    standard output.
    """
    script = EXAMPLES / name
    if not script.exists():
        raise SkipTest(f"{script} is not here (installed without the examples)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=str(ROOT),
    )
    if done.returncode != 0:
        raise AssertionError(f"{name} exited {done.returncode}:\n{done.stderr}")
    return done.stdout
