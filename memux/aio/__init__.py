# -*- test-case-name: memux.test.test_aio -*-
"""
memux for asyncio: the same sessions, channels, limits and wire protocol as
memux's Twisted front end (the sans-IO session core is shared), with
asyncio's conventions, and without Twisted.

::

    session = await memux.aio.connect("localhost", 7400)
    channel = await session.open_channel(b"echo")
    await channel.send_message(b"hello")
    print(await channel.receive_message())

    server = await memux.aio.serve({b"echo": echo}, "127.0.0.1", 7400)

See the "asyncio" page of the documentation.
"""

from __future__ import annotations

import asyncio
from ssl import SSLContext, create_default_context
from typing import Any

from memux.aio._channel import Channel, ChannelReader, ChannelWriter
from memux.aio._errors import (
    ChannelRefused,
    ChannelReset,
    MessageTooLarge,
    SessionLost,
)
from memux.aio._session import (
    ChannelRequest,
    Server,
    Services,
    Session,
)
from memux.codes import ChannelClosedError, ChannelState, ErrorCode
from memux.settings import ALPN, SessionSettings

__all__ = [
    "ALPN",
    "Channel",
    "ChannelClosedError",
    "ChannelReader",
    "ChannelRefused",
    "ChannelRequest",
    "ChannelReset",
    "ChannelState",
    "ChannelWriter",
    "ErrorCode",
    "MessageTooLarge",
    "Server",
    "Services",
    "Session",
    "SessionLost",
    "SessionSettings",
    "connect",
    "connect_streams",
    "serve",
    "start_session",
]


def _offerAlpn(context: SSLContext) -> SSLContext:
    """
    Offer (client) or select (server) ALPN ``memux/1`` on ``context``.
    """
    context.set_alpn_protocols([ALPN.decode()])
    return context


async def connect(
    host: str | None = None,
    port: int | None = None,
    *,
    ssl: SSLContext | bool | None = None,
    settings: SessionSettings | None = None,
    services: Services | None = None,
    **kwargs: Any,
) -> Session:
    """
    Connect to a memux server; return the session once the connection is
    made (channels can be opened at once: the preface exchange needs no
    round trip).

    :param ssl: True (verify the server against the system's roots) or an
        `ssl.SSLContext`, to connect with TLS; ALPN ``memux/1`` is offered.
    :param services: serves channels the server opens to us (as for
        `serve`).
    :param kwargs: passed on to `asyncio.loop.create_connection`
        (``sock``, ``server_hostname``, ``local_addr``, ...).
    :raises SessionLost: the server chose another ALPN protocol.
    """
    loop = asyncio.get_running_loop()
    if ssl is True:
        ssl = create_default_context()
    if isinstance(ssl, SSLContext):
        _offerAlpn(ssl)
    made: Any = loop.create_connection
    session: Session
    _, session = await made(
        lambda: Session(services, client=True, settings=settings, loop=loop),
        host,
        port,
        ssl=ssl or None,
        **kwargs,
    )
    if session._alpnError is not None:
        raise SessionLost(session._alpnError)
    return session


def start_session(
    transport: asyncio.Transport,
    *,
    client: bool,
    services: Services | None = None,
    settings: SessionSettings | None = None,
) -> Session:
    """
    Run a session over ``transport``, an asyncio transport already
    connected (``client``: this side opened it); the session becomes its
    protocol.
    """
    session = Session(services, client=client, settings=settings)
    transport.set_protocol(session)
    session.connection_made(transport)
    return session


def connect_streams(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    client: bool = True,
    services: Services | None = None,
    settings: SessionSettings | None = None,
) -> Session:
    """
    Run a session over a connection made with asyncio's streams
    (``asyncio.open_connection``, a ``start_server`` callback): the
    session takes the connection over, starting with whatever ``reader``
    had already received and not been asked for.
    """
    transport = writer.transport
    assert isinstance(transport, asyncio.Transport)
    # (StreamReader offers no public way to take what it holds.)
    held = bytes(getattr(reader, "_buffer", b""))
    session = start_session(
        transport, client=client, services=services, settings=settings
    )
    if held:
        session.data_received(held)
    if not transport.is_reading():
        transport.resume_reading()
    return session


async def serve(
    services: Services,
    host: str | None = None,
    port: int = 0,
    *,
    ssl: SSLContext | None = None,
    settings: SessionSettings | None = None,
    **kwargs: Any,
) -> Server:
    """
    Listen for memux sessions on ``host`` and ``port`` (0: a free port,
    see `Server.port`); each channel a peer opens is served by
    ``services``: a mapping of service name (bytes) to ``async def
    handler(channel)``, or a chooser taking a `ChannelRequest` and
    returning a handler or None (refuse; raise `ChannelRefused` to refuse
    with a reason).

    :param ssl: an `ssl.SSLContext` to serve TLS; ALPN ``memux/1`` is
        selected.
    :param kwargs: passed on to `asyncio.loop.create_server`.
    """
    loop = asyncio.get_running_loop()
    if ssl is not None:
        _offerAlpn(ssl)
    server = Server(services, settings)
    server._server = await loop.create_server(
        server._newSession, host, port, ssl=ssl, **kwargs
    )
    return server
