# -*- test-case-name: memux.test.test_attackbench,memux.test.test_soak -*-
"""
What the tools' processes share: the loopback address and the reactor
interfaces they use, a child process's environment and its JSON lines to
the parent, figures from /proc (memory, CPU time, descriptors), child
processes driven from a reactor (`ChildProcess`), and a ``twistd -n memux``
server to measure (`startServer`).
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from twisted.internet import defer, task
from twisted.internet.interfaces import (
    IProcessTransport,
    IReactorCore,
    IReactorProcess,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

import memux

__all__ = [
    "LOOPBACK",
    "ChildProcess",
    "ProcessReactor",
    "Reactor",
    "cpuSeconds",
    "emit",
    "fdCount",
    "logLines",
    "resetPeak",
    "rssBytes",
    "settledRss",
    "spawn",
    "startServer",
    "workerEnvironment",
]

LOOPBACK = "127.0.0.1"


class Reactor(IReactorTCP, IReactorTime, IReactorCore):
    """
    The reactor interfaces the tools use (for typing only).
    """


class ProcessReactor(Reactor, IReactorProcess):
    """
    The reactor interfaces of a process that starts others (for typing
    only).
    """


def emit(obj: dict[str, Any]) -> None:
    """
    Print one JSON line for the parent.
    """
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def workerEnvironment() -> dict[str, str]:
    """
    The environment of a worker: this memux importable first.
    """
    root = str(Path(memux.__file__).resolve().parent.parent)
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = root + (os.pathsep + path if path else "")
    return env


# ---------------------------------------------------------------- /proc


def rssBytes(pid: int | str = "self", field: str = "VmRSS") -> int:
    """
    A process's resident set size in bytes (this one's, by default), or
    another memory ``field`` of its /proc/PID/status such as ``VmHWM``
    (Linux); -1 where that is not available.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def settledRss() -> int:
    """
    The resident set size after a full garbage collection.
    """
    gc.collect()
    return rssBytes()


def cpuSeconds(pid: int) -> float:
    """
    The CPU time (user + system) process ``pid`` has used.
    """
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resetPeak(pid: int) -> bool:
    """
    Reset process ``pid``'s peak resident set size (VmHWM), if we may.
    """
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def fdCount(pid: int) -> int:
    """
    How many file descriptors process ``pid`` has open (-1 if unknown).
    """
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def logLines(log: Path) -> int:
    """
    The lines in twistd's log file and in those it rotated away (at every
    megabyte: ``twistd.log.1``, ``.2``, ...), so that a flood of log lines
    is counted whole.
    """
    return sum(
        path.read_bytes().count(b"\n")
        for path in log.parent.glob(log.name + "*")
        if path.name == log.name or path.suffix[1:].isdigit()
    )


# ---------------------------------------------------------------- child processes


class ChildProcess(ProcessProtocol):
    """
    A child process: its output lines (JSON objects), the end of its
    standard error, and its end.
    """

    def __init__(self) -> None:
        self.lines: defer.DeferredQueue[dict[str, Any]] = defer.DeferredQueue()
        self.pending = b""
        self.errors = b""
        self.ended: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        """
        Queue each complete line.
        """
        *lines, self.pending = (self.pending + data).split(b"\n")
        for line in lines:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                self.lines.put({"error": line.decode("utf-8", "replace")})

    def errReceived(self, data: bytes) -> None:
        """
        Keep the end of standard error.
        """
        self.errors = (self.errors + data)[-4000:]

    def processEnded(self, reason: Failure) -> None:
        """
        Record the end; a reader still waiting gets an error.
        """
        errors = self.errors.decode("utf-8", "replace").strip()
        self.lines.put({"error": f"exited ({reason.value}): {errors}"})
        self.ended.callback(None)

    @property
    def alive(self) -> bool:
        """
        Whether it still runs.
        """
        return not self.ended.called

    @property
    def pid(self) -> int:
        """
        Its process id.
        """
        return cast(int, cast(IProcessTransport, self.transport).pid)

    async def nextLine(self, reactor: ProcessReactor, timeout: float) -> dict[str, Any]:
        """
        Its next line, or an error after ``timeout`` seconds.
        """
        d = self.lines.get()
        d.addTimeout(timeout, reactor)
        try:
            return await d
        except defer.TimeoutError:
            return {"error": f"no answer in {timeout:g} s"}

    def send(self, line: str) -> None:
        """
        Write ``line`` to its standard input.
        """
        cast(IProcessTransport, self.transport).write(line.encode() + b"\n")

    async def stop(self, reactor: ProcessReactor) -> None:
        """
        Close its standard input and SIGTERM it; SIGKILL if it has not
        ended in 10 s.
        """
        transport = cast(IProcessTransport, self.transport)
        transport.closeStdin()
        for signal in ("TERM", "KILL"):
            if not self.alive:
                return
            transport.signalProcess(signal)
            deadline = reactor.seconds() + 10
            while self.alive and reactor.seconds() < deadline:
                await task.deferLater(reactor, 0.05, lambda: None)


def spawn(reactor: ProcessReactor, args: list[str], where: str) -> ChildProcess:
    """
    Start ``python ARGS`` with this memux first on the path.
    """
    child = ChildProcess()
    reactor.spawnProcess(
        child,
        sys.executable,
        [sys.executable, *args],
        env=workerEnvironment(),
        path=where,
    )
    return child


async def startServer(
    reactor: ProcessReactor, where: str, options: Sequence[str]
) -> tuple[ChildProcess, int, Path]:
    """
    Start ``twistd -n memux`` on a free loopback port; return it, the port
    and its log file.
    """
    log = Path(where) / "twistd.log"
    twistd = "from twisted.scripts.twistd import run; run()"
    server = spawn(
        reactor,
        ["-c", twistd, "-n", f"--logfile={log}", "--pidfile=", "memux"]
        + ["--listen", f"tcp:0:interface={LOOPBACK}", *options],
        where,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.alive:
        text = log.read_text() if log.exists() else ""
        found = re.search(r"memux listening on \S+:(\d+) ", text)
        if found:
            return server, int(found.group(1)), log
        await task.deferLater(reactor, 0.1, lambda: None)
    await server.stop(reactor)
    text = log.read_text() if log.exists() else ""
    raise RuntimeError(
        f"twistd memux did not start: {server.errors.decode(errors='replace')}"
        f"{text[-2000:]}"
    )
