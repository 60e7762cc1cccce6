# -*- test-case-name: memux.test.test_bench -*-
"""
The child-process side of ``python -m memux.bench``: one server or one
client of one benchmark run, over loopback TCP.

    python -m memux.bench.workers server ROLE PARAMS
    python -m memux.bench.workers client ROLE PARAMS PORT

``ROLE`` names a scenario and what runs it (``bulk/memux``, ``bulk/tcp``,
...; see `ROLES`), ``PARAMS`` is a JSON object of the scenario's sizes and
the memux settings (``clientSettings``, ``serverSettings``).

The server listens on a free port of 127.0.0.1, prints ``{"port": N}`` on
a line of its own, and serves until SIGTERM (or until its parent goes
away).  The client connects, runs the workload, prints one JSON object of
results and exits.  Every timing is taken in the client, from its first
write to the receiver's acknowledgement of the last byte (or the last
reply), so no clock is compared across processes.

Writers respect backpressure in memux and in the baselines alike: they
register a streaming producer and stop writing while it is paused.  The
servers are in `memux.bench.servers`, the workloads in
`memux.bench.clients`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import cast

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from memux.bench.clients import (
    runBulk,
    runBulkTcp,
    runChurn,
    runChurnTcp,
    runFanout,
    runFanoutTcp,
    runIdle,
    runLatencyIdle,
    runLatencyLoaded,
    runOverheadBulk,
    runOverheadSmall,
    runSmall,
    runSmallTcp,
)
from memux.bench.peers import NoDelayPort, Params, Result
from memux.bench.processes import LOOPBACK, Reactor, emit
from memux.bench.servers import (
    serveBulk,
    serveBulkTcp,
    serveChurn,
    serveChurnTcp,
    serveFanout,
    serveFanoutTcp,
    serveIdle,
    serveLatency,
    serveOverheadBulk,
    serveOverheadSmall,
    serveSmall,
    serveSmallTcp,
)

__all__ = ["ROLES", "main"]

Runner = Callable[[Reactor, Params, int], Awaitable[Result]]

#: role -> (server factory, client workload)
ROLES: dict[str, tuple[Callable[[Params], Factory], Runner]] = {
    "bulk/memux": (serveBulk, runBulk),
    "bulk/tcp": (serveBulkTcp, runBulkTcp),
    "fanout/memux": (serveFanout, runFanout),
    "fanout/tcp": (serveFanoutTcp, runFanoutTcp),
    "small/memux": (serveSmall, runSmall),
    "small/tcp": (serveSmallTcp, runSmallTcp),
    "churn/memux": (serveChurn, runChurn),
    "churn/tcp": (serveChurnTcp, runChurnTcp),
    "latency/loaded": (serveLatency, runLatencyLoaded),
    "latency/idle": (serveLatency, runLatencyIdle),
    "idle/memux": (serveIdle, runIdle),
    "overhead-small/memux": (serveOverheadSmall, runOverheadSmall),
    "overhead-bulk/memux": (serveOverheadBulk, runOverheadBulk),
}


# ---------------------------------------------------------------- processes


async def server(reactor: Reactor, role: str, params: Params) -> None:
    """
    Listen, say where, and serve until stopped (SIGTERM) or orphaned.
    """
    factory = ROLES[role][0](params)
    # A deep backlog, so the churn baseline's connections are not dropped.
    listening: IListeningPort
    if params.get("nodelay"):
        listening = NoDelayPort(0, factory, 1024, LOOPBACK, reactor)
        listening.startListening()
    else:
        endpoint = TCP4ServerEndpoint(reactor, 0, backlog=1024, interface=LOOPBACK)
        listening = await endpoint.listen(factory)
    parent = os.getppid()
    emit({"port": cast(IPv4Address, listening.getHost()).port})

    def orphaned() -> None:
        if os.getppid() != parent:
            reactor.stop()

    task.LoopingCall(orphaned).start(1.0, now=False)
    await defer.Deferred()  # until the reactor stops


async def client(reactor: Reactor, role: str, params: Params, port: int) -> None:
    """
    Run the workload and print its result.
    """
    result = await ROLES[role][1](reactor, params, port)
    result["reactor"] = type(reactor).__name__
    emit(result)


def main(argv: list[str]) -> None:
    """
    ``server ROLE PARAMS`` or ``client ROLE PARAMS PORT``.
    """
    observer = FilteringLogObserver(
        textFileLogObserver(sys.stderr),
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    kind, role, params = argv[0], argv[1], json.loads(argv[2])
    if role not in ROLES:
        raise SystemExit(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if kind == "server":
        task.react(server, (role, params))
    elif kind == "client":
        task.react(client, (role, params, int(argv[3])))
    raise SystemExit(f"unknown kind {kind!r}: server or client")


if __name__ == "__main__":
    main(sys.argv[1:])
