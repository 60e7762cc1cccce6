r"""
Serve a directory through memux with the command line, as doc/tunnelling.rst
walks through: a web server behind ``twistd memux --service``, ``memux
forward`` in front, and an HTTP client that talks to the front.

    python -m http.server WEB --bind 127.0.0.1 --directory DIR
    twistd -n memux --listen tcp:MEMUX:interface=127.0.0.1 \
        --service web=tcp:127.0.0.1:WEB
    memux forward tcp:FRONT:interface=127.0.0.1 tcp:127.0.0.1:MEMUX web

This script runs those three commands (with this Python, on free ports),
fetches a page from the front through the tunnel, prints it, and stops
them.  Run it from a checkout, or with memux installed::

    python examples/cli_tunnel.py
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
MEMUX = [sys.executable, "-m", "memux"]


def freePort() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on just now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def waitForPort(port: int, process: subprocess.Popen[bytes]) -> None:
    """
    Wait until something accepts connections on C{port}, or fail if
    C{process}, which should, exits or takes more than 30 seconds.
    """
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{process.args!r} did not start") from None
            time.sleep(0.05)


def start(argv: list[str]) -> subprocess.Popen[bytes]:
    """
    Show and start a command, with memux importable from this checkout.
    """
    if argv[: len(TWISTD)] == TWISTD:
        shown = ["twistd", *argv[len(TWISTD) :]]
    else:
        shown = ["python" if a == sys.executable else a for a in argv]
    print("$", shlex.join(shown), "&")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen(
        argv,
        env=dict(os.environ, PYTHONPATH=path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> None:
    """
    Run the walk-through.
    """
    site = tempfile.mkdtemp()
    Path(site, "hello.txt").write_text("Hello through memux!\n")
    web, memux, front = freePort(), freePort(), freePort()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(
            start(
                [sys.executable, "-m", "http.server", str(web)]
                + ["--bind", "127.0.0.1", "--directory", site]
            )
        )
        waitForPort(web, processes[-1])
        processes.append(
            start(
                TWISTD
                + ["-n", "--pidfile=", "memux"]
                + ["--listen", f"tcp:{memux}:interface=127.0.0.1"]
                + ["--service", f"web=tcp:127.0.0.1:{web}"]
            )
        )
        waitForPort(memux, processes[-1])
        processes.append(
            start(
                MEMUX
                + ["forward", f"tcp:{front}:interface=127.0.0.1"]
                + [f"tcp:127.0.0.1:{memux}", "web"]
            )
        )
        waitForPort(front, processes[-1])
        url = f"http://127.0.0.1:{front}/hello.txt"
        # No proxy: the front is on this machine.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=30) as response:
            body = response.read().decode()
        print(f"GET {url} through memux: {body}", end="")
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(30)
        shutil.rmtree(site, ignore_errors=True)


if __name__ == "__main__":
    main()
