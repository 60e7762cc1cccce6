# -*- test-case-name: memux.test.test_aio -*-
"""
``python -m memux.bench.aio``: the asyncio front end (`memux.aio`)
measured against asyncio's own streams on a raw TCP connection, and
against memux's Twisted front end, in three scenarios:

- ``bulk``: one channel, TOTAL bytes in 64 KiB writes, then the end; the
  server answers with the count;
- ``small``: MESSAGES messages of 64 B, WINDOW in flight, each echoed;
- ``churn``: EXCHANGES x (open a channel, a 100 B request, a 100 B reply,
  close), IN_FLIGHT at once (raw streams: the same requests and replies
  on one connection, length-prefixed, pipelined).

Each run is a server process and a client process over loopback TCP; the
candidates alternate run by run, and the table shows medians of the
runs and each front end's ratio to the others.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

#: (Not imported from `memux.bench.processes`, which imports Twisted: the
#: asyncio candidates' processes import none.)
LOOPBACK = "127.0.0.1"

__all__ = ["CANDIDATES", "SCENARIOS", "main", "runOnce"]

CANDIDATES = ("aio", "streams", "twisted")

#: scenario: (metric, default parameters, quick parameters).  Bulk moves
#: 1 GiB: at 2.5 GB/s a run of 256 MiB lasted a tenth of a second, and a
#: stall of a few milliseconds (another process's turn) moved its figure.
SCENARIOS: dict[str, tuple[str, dict[str, int], dict[str, int]]] = {
    "bulk": ("MB/s", {"total": 1 << 30}, {"total": 16 << 20}),
    "small": (
        "msgs/s",
        {"messages": 100_000, "window": 1000},
        {"messages": 5000, "window": 1000},
    ),
    "churn": (
        "exchanges/s",
        {"exchanges": 20_000, "inFlight": 100},
        {"exchanges": 1000, "inFlight": 100},
    ),
}

WRITE = 64 * 1024
SMALL = 64
REQUEST = 100
_LENGTH = struct.Struct("!I")


# ------------------------------------------------------------ asyncio servers


async def _aioServe() -> Any:
    from memux import aio

    async def echo(channel: aio.Channel) -> None:
        async for message in channel:
            await channel.send_message(message)

    async def count(channel: aio.Channel) -> None:
        n = 0
        while data := await channel.read(1 << 20):
            n += len(data)
        await channel.send_message(b"%d" % n)

    return await aio.serve({b"echo": echo, b"count": count}, LOOPBACK, 0)


async def _streamsServe() -> Any:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        kind = await reader.readexactly(1)
        if kind == b"b":
            n = 0
            while data := await reader.read(1 << 20):
                n += len(data)
            writer.write(b"%d" % n)
        else:
            while True:
                try:
                    head = await reader.readexactly(4)
                except asyncio.IncompleteReadError:
                    break
                body = await reader.readexactly(_LENGTH.unpack(head)[0])
                writer.write(head + body)
                await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, LOOPBACK, 0)


def _serve(candidate: str) -> None:
    if candidate == "twisted":
        _twistedServe()
        return

    async def run() -> None:
        server = await (_aioServe() if candidate == "aio" else _streamsServe())
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(run())


def _twistedServe() -> None:
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.internet.interfaces import IHalfCloseableProtocol
    from twisted.internet.protocol import Factory, Protocol
    from zope.interface import implementer

    from memux import IChannelTransport, MultiplexingFactory
    from memux.services import Echo

    @implementer(IHalfCloseableProtocol)
    class Count(Protocol):
        n = 0

        def dataReceived(self, data: bytes) -> None:
            self.n += len(data)

        def readConnectionLost(self) -> None:
            channel = IChannelTransport(self.transport)
            channel.writeMessage(b"%d" % self.n)
            channel.loseConnection()

        def writeConnectionLost(self) -> None:
            pass

    factory = MultiplexingFactory(
        {b"echo": Factory.forProtocol(Echo), b"count": Factory.forProtocol(Count)}
    )
    d = TCP4ServerEndpoint(reactor, 0, interface=LOOPBACK).listen(factory)
    d.addCallback(lambda port: print(port.getHost().port, flush=True))
    reactor.run()


# ------------------------------------------------------------ asyncio clients


async def _aioClient(scenario: str, port: int, p: dict[str, int]) -> float:
    from memux import aio

    session = await aio.connect(LOOPBACK, port)
    start = time.perf_counter()
    if scenario == "bulk":
        channel = await session.open_channel(b"count")
        block = b"x" * WRITE
        for _ in range(p["total"] // WRITE):
            await channel.write(block)
        channel.write_eof()
        assert await channel.receive_message() == b"%d" % p["total"]
        result = p["total"] / (time.perf_counter() - start) / 1e6
    elif scenario == "small":
        channel = await session.open_channel(b"echo")
        message = b"s" * SMALL
        total = p["messages"]
        # As the other candidates do: a window's worth at once, then one
        # more for each echo.
        sent = min(p["window"], total)
        for _ in range(sent):
            await channel.send_message(message)
        for _ in range(total):
            await channel.receive_message()
            if sent < total:
                await channel.send_message(message)
                sent += 1
        result = total / (time.perf_counter() - start)
    else:
        request = b"r" * REQUEST
        left = p["exchanges"]

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                channel = await session.open_channel(b"echo")
                await channel.send_message(request)
                await channel.receive_message()
                channel.close()

        await asyncio.gather(*(worker() for _ in range(p["inFlight"])))
        result = p["exchanges"] / (time.perf_counter() - start)
    session.close()
    await session.wait_closed()
    return result


async def _streamsClient(scenario: str, port: int, p: dict[str, int]) -> float:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    start = time.perf_counter()
    if scenario == "bulk":
        writer.write(b"b")
        block = b"x" * WRITE
        for _ in range(p["total"] // WRITE):
            writer.write(block)
            await writer.drain()
        writer.write_eof()
        assert await reader.read() == b"%d" % p["total"]
        result = p["total"] / (time.perf_counter() - start) / 1e6
    else:
        writer.write(b"m")
        if scenario == "small":
            total, window, size = p["messages"], p["window"], SMALL
        else:
            total, window, size = p["exchanges"], p["inFlight"], REQUEST
        frame = _LENGTH.pack(size) + b"s" * size
        sent = 0
        for _ in range(min(window, total)):
            writer.write(frame)
            sent += 1
        for _ in range(total):
            await reader.readexactly(len(frame))
            if sent < total:
                writer.write(frame)
                sent += 1
                await writer.drain()
        result = total / (time.perf_counter() - start)
    writer.close()
    return result


def _twistedClient(scenario: str, port: int, p: dict[str, int]) -> None:
    from twisted.internet import defer, task
    from twisted.internet.endpoints import TCP4ClientEndpoint
    from twisted.internet.protocol import Factory, Protocol
    from zope.interface import implementer

    from memux import IMessageReceiver, connectSession

    result: list[float] = []

    @implementer(IMessageReceiver)
    class Receiver(Protocol):
        def __init__(self) -> None:
            self.got = 0
            self.done: defer.Deferred[None] = defer.Deferred()
            self.onMessage: Callable[[bytes], None] = lambda m: None

        def messageReceived(self, message: bytes) -> None:
            self.onMessage(message)

    async def run(reactor: Any) -> None:
        endpoint = TCP4ClientEndpoint(reactor, LOOPBACK, port)
        session = await connectSession(endpoint)
        start = time.perf_counter()
        if scenario == "bulk":
            proto: Any = await session.openChannel(
                b"count", Factory.forProtocol(Receiver)
            )
            block = b"x" * WRITE
            left = p["total"] // WRITE
            t = proto.transport

            class Producer:
                paused = False

                def pauseProducing(self) -> None:
                    self.paused = True

                def resumeProducing(self) -> None:
                    nonlocal left
                    self.paused = False
                    while left and not self.paused:
                        t.write(block)
                        left -= 1
                    if not left:
                        t.unregisterProducer()
                        t.loseWriteConnection()

                def stopProducing(self) -> None:
                    pass

            proto.onMessage = lambda m: proto.done.callback(None)
            t.registerProducer(Producer(), True)
            Producer.resumeProducing(t.producer)
            await proto.done
            result.append(p["total"] / (time.perf_counter() - start) / 1e6)
        elif scenario == "small":
            proto = await session.openChannel(b"echo", Factory.forProtocol(Receiver))
            total, window = p["messages"], p["window"]
            message = b"s" * SMALL
            state = {"sent": 0, "got": 0}

            def onMessage(m: bytes) -> None:
                state["got"] += 1
                if state["sent"] < total:
                    proto.transport.writeMessage(message)
                    state["sent"] += 1
                if state["got"] == total:
                    proto.done.callback(None)

            proto.onMessage = onMessage
            for _ in range(min(window, total)):
                proto.transport.writeMessage(message)
                state["sent"] += 1
            await proto.done
            result.append(total / (time.perf_counter() - start))
        else:
            request = b"r" * REQUEST
            left = p["exchanges"]
            finished: defer.Deferred[None] = defer.Deferred()
            state = {"done": 0}

            def one() -> None:
                nonlocal left
                left -= 1
                d = session.openChannel(b"echo", Factory.forProtocol(Receiver))

                def opened(proto: Any) -> None:
                    def onMessage(m: bytes) -> None:
                        proto.transport.loseConnection()
                        state["done"] += 1
                        if left > 0:
                            one()
                        elif state["done"] == p["exchanges"]:
                            finished.callback(None)

                    proto.onMessage = onMessage
                    proto.transport.writeMessage(request)

                d.addCallback(opened)

            for _ in range(min(p["inFlight"], left)):
                one()
            await finished
            result.append(p["exchanges"] / (time.perf_counter() - start))
        session.loseConnection()
        await session.whenClosed()
        # (task.react exits the process: report from here.)
        print(json.dumps(result[0]), flush=True)

    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))


def _client(candidate: str, scenario: str, port: int, params: dict[str, int]) -> None:
    if candidate == "twisted":
        _twistedClient(scenario, port, params)
        return
    client = _aioClient if candidate == "aio" else _streamsClient
    print(json.dumps(asyncio.run(client(scenario, port, params))), flush=True)


# ------------------------------------------------------------ the runs


def runOnce(candidate: str, scenario: str, params: dict[str, int]) -> float:
    """
    One run: a server process and a client process; the client's figure.
    """
    from memux.bench.processes import workerEnvironment

    env = workerEnvironment()
    module = [sys.executable, "-m", "memux.bench.aio"]
    server = subprocess.Popen(
        [*module, "serve", candidate], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        done = subprocess.run(
            [*module, "client", candidate, scenario, str(port), json.dumps(params)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        if done.returncode != 0 and not done.stdout.strip():
            raise RuntimeError(f"{candidate} {scenario} client: {done.stderr}")
        return float(done.stdout.strip().splitlines()[-1])
    finally:
        server.kill()
        server.wait()


def main(argv: list[str] | None = None) -> None:
    """
    Run the scenarios, alternating the candidates, and print the table.
    """
    from memux.bench.report import alignTable, machineInfo

    parser = argparse.ArgumentParser(prog="python -m memux.bench.aio")
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--runs", type=int, default=5, help="runs per candidate")
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    args = parser.parse_args(argv)
    rows = [
        [
            "scenario",
            "metric",
            *CANDIDATES,
            "aio/streams",
            "aio/twisted",
        ]
    ]
    for scenario in args.scenarios:
        metric, params, quick = SCENARIOS[scenario]
        chosen = quick if args.quick else params
        runs: dict[str, list[float]] = {c: [] for c in CANDIDATES}
        for i in range(args.runs):
            # Alternate, and rotate who goes first.
            order = CANDIDATES[i % 3 :] + CANDIDATES[: i % 3]
            for candidate in order:
                runs[candidate].append(runOnce(candidate, scenario, chosen))
        medians = {c: statistics.median(v) for c, v in runs.items()}
        rows.append(
            [
                scenario,
                metric,
                *(f"{medians[c]:,.0f}" for c in CANDIDATES),
                f"{medians['aio'] / medians['streams']:.2f}",
                f"{medians['aio'] / medians['twisted']:.2f}",
            ]
        )
        print(f"{scenario} {chosen}: {json.dumps(runs)}", file=sys.stderr, flush=True)
    print(json.dumps(machineInfo()))
    print(alignTable(rows, set(range(2, len(rows[0])))))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        _serve(sys.argv[2])
    elif len(sys.argv) > 1 and sys.argv[1] == "client":
        _client(sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5]))
    else:
        main()
