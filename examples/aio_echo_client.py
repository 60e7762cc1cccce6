"""
Send one message to a memux server's echo service with asyncio (no
Twisted needed) and print the reply; then a line through the ``upper``
service of ``examples/aio_server.py``, if the server has one.

Start a server first (``twistd -n memux``, or
``python examples/aio_server.py``), then run::

    python examples/aio_echo_client.py [HOST [PORT]]

HOST defaults to 127.0.0.1 and PORT to 7400.
"""

import asyncio
import sys

import memux.aio


async def main() -> None:
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 7400
    async with await memux.aio.connect(host, port) as session:
        # Opening a channel needs no round trip: the message goes with it.
        channel = await session.open_channel(b"echo")
        await channel.send_message(b"hello")
        print((await channel.receive_message() or b"").decode())
        channel.close()

        # The same session, another channel, as an asyncio stream pair.
        reader, writer = await session.open_streams(b"upper")
        writer.write(b"shout\n")
        try:
            print((await reader.readline()).decode(), end="")
        except memux.aio.ChannelRefused as refused:
            print(f"upper: {refused}")
        writer.close()


asyncio.run(main())
