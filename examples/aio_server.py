"""
A memux server for asyncio, no Twisted needed: an ``echo`` service (whole
messages back) and an ``upper`` service (a byte stream, line by line, read
and written through the asyncio streams interface).

Run::

    python examples/aio_server.py [HOST [PORT]]

HOST defaults to 127.0.0.1 and PORT to 7400 (0: any free port).  It prints
where it listens, then serves until interrupted.  Try it with
``python examples/aio_echo_client.py`` (or the Twisted
``examples/echo_client.py``, or ``memux ping localhost:7400``).
"""

import asyncio
import sys

import memux.aio


async def echo(channel: memux.aio.Channel) -> None:
    # Each message back as it came; the channel is closed when we return.
    async for message in channel:
        await channel.send_message(message)


async def upper(channel: memux.aio.Channel) -> None:
    reader, writer = channel.streams()
    async for line in reader:
        writer.write(line.upper())
        await writer.drain()


async def main() -> None:
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 7400
    server = await memux.aio.serve({b"echo": echo, b"upper": upper}, host, port)
    print(f"memux listening on {host}:{server.port}", flush=True)
    async with server:
        await server.serve_forever()


try:
    asyncio.run(main())
except KeyboardInterrupt:
    pass
