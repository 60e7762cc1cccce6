# -*- test-case-name: memux.test.test_mptcp -*-
"""
``mptcp:`` endpoints: Multipath TCP (RFC 8684) client and server endpoints
for Twisted, and what the kernel reports about a connection's paths.

Server::

    serverFromString(reactor, "mptcp:7400:interface=0.0.0.0")

Client::

    clientFromString(reactor, "mptcp:host=server.example:port=7400")

An MPTCP connection is a TCP connection as far as the application (and
memux) can tell: the same byte stream, carried over one or more TCP
*subflows*, which the kernel adds and removes as paths come and go.  Where
the kernel refuses MPTCP sockets (an old or non-Linux kernel, or
``net.mptcp.enabled = 0``), the endpoints fall back to plain TCP and log a
warning; with ``fallback=no`` they fail with `MPTCPUnavailable` instead.

`pathInfo` says what carries a session or transport (MPTCP with its
subflow count and counters, TCP, TLS over either, UNIX); `isMPTCP` and
`mptcpInfo` tell whether it is an MPTCP socket and what the kernel says of
its subflows.  The string parsers are registered by
``twisted/plugins/memux_mptcp.py``; see ``doc/multipath.rst``.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, tcp
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import _WrappingFactory
from twisted.internet.error import (
    CannotListenError,
    ConnectingCancelledError,
    DNSLookupError,
    getConnectError,
)
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from memux.tuning import overTLS, socketLayer

__all__ = [
    "IPPROTO_MPTCP",
    "MPTCP_INFO",
    "SOL_MPTCP",
    "MPTCPClientEndpoint",
    "MPTCPDescriptionError",
    "MPTCPInfo",
    "MPTCPServerEndpoint",
    "MPTCPUnavailable",
    "PathInfo",
    "isMPTCP",
    "mptcpAvailable",
    "mptcpInfo",
    "openSocket",
    "parseStreamClient",
    "parseStreamServer",
    "pathInfo",
]

#: The protocol number of MPTCP sockets (``IPPROTO_MPTCP``, linux/in.h).
IPPROTO_MPTCP = 262
#: The socket option level of MPTCP (``SOL_MPTCP``, linux/socket.h).
SOL_MPTCP = 284
#: The ``SOL_MPTCP`` option that reads ``struct mptcp_info``.
MPTCP_INFO = 1

#: Where Linux says whether new MPTCP sockets may be made.
SYSCTL_ENABLED = "/proc/sys/net/mptcp/enabled"

#: The errors with which a kernel refuses to make an MPTCP socket.
REFUSALS = frozenset({errno.EPROTONOSUPPORT, errno.ENOPROTOOPT, errno.EINVAL})

_log = Logger()

#: Makes sockets; replaced by tests to simulate a kernel without MPTCP.
socketFactory: Callable[..., socket.socket] = socket.socket


class MPTCPUnavailable(OSError):
    """
    The kernel refused to make an MPTCP socket and fallback to TCP was
    turned off (``fallback=no``).
    """


class MPTCPDescriptionError(ValueError):
    """
    An ``mptcp:`` endpoint description is malformed.
    """


def _sysctlDisabled() -> bool:
    try:
        with open(SYSCTL_ENABLED) as f:
            return f.read().strip() == "0"
    except OSError:
        return False


def openSocket(family: int, *, fallback: bool = True) -> tuple[socket.socket, bool]:
    """
    Make a stream socket of ``family``: an MPTCP one if the kernel allows,
    else (if ``fallback``) a TCP one, with a logged warning.

    :returns: the socket, and whether it is an MPTCP socket.
    :raises MPTCPUnavailable: if the kernel refused and ``fallback`` is
        false.
    """
    reason: str
    if _sysctlDisabled():
        reason = f"{SYSCTL_ENABLED} is 0"
    else:
        try:
            return socketFactory(family, socket.SOCK_STREAM, IPPROTO_MPTCP), True
        except OSError as e:
            if e.errno not in REFUSALS:
                raise
            reason = f"the kernel refused an MPTCP socket: {e}"
    if not fallback:
        raise MPTCPUnavailable(
            errno.EPROTONOSUPPORT, f"MPTCP is unavailable ({reason}) and fallback=no"
        )
    _log.warn(
        "MPTCP is unavailable ({reason}); falling back to plain TCP",
        reason=reason,
    )
    return socketFactory(family, socket.SOCK_STREAM), False


def mptcpAvailable() -> bool:
    """
    Whether this kernel makes MPTCP sockets now.
    """
    try:
        s, mptcp = openSocket(socket.AF_INET, fallback=False)
    except OSError:
        return False
    s.close()
    return mptcp


# ---------------------------------------------------------------- paths


@dataclass(frozen=True)
class MPTCPInfo:
    """
    What the kernel reports of an MPTCP connection (``struct mptcp_info``,
    linux/mptcp.h).  Counters the running kernel does not report are
    ``None``.

    :ivar subflows: the subflows besides the first one (so 0 with one
        path).
    :ivar addAddrSignal: addresses announced to the peer.
    :ivar addAddrAccepted: addresses announced by the peer and accepted.
    :ivar subflowsMax: the ``subflows`` limit.
    :ivar addAddrSignalMax: the limit of addresses announced.
    :ivar addAddrAcceptedMax: the ``add_addr_accepted`` limit.
    :ivar flags: ``mptcpi_flags``.
    :ivar token: the connection's MPTCP token.
    :ivar writeSeq: the next data sequence number to write.
    :ivar sndUna: the oldest unacknowledged data sequence number.
    :ivar rcvNxt: the next data sequence number expected.
    :ivar localAddrUsed: local addresses in use (kernels from 6.1).
    :ivar localAddrMax: their limit.
    :ivar csumEnabled: whether DSS checksums are on.
    :ivar retransmits: data retransmissions (kernels from 6.5).
    :ivar bytesRetrans: bytes retransmitted.
    :ivar bytesSent: bytes sent, over all subflows.
    :ivar bytesReceived: bytes received.
    :ivar bytesAcked: bytes acknowledged by the peer.
    """

    subflows: int
    addAddrSignal: int
    addAddrAccepted: int
    subflowsMax: int
    addAddrSignalMax: int
    addAddrAcceptedMax: int
    flags: int
    token: int
    writeSeq: int
    sndUna: int
    rcvNxt: int
    localAddrUsed: int | None = None
    localAddrMax: int | None = None
    csumEnabled: bool | None = None
    retransmits: int | None = None
    bytesRetrans: int | None = None
    bytesSent: int | None = None
    bytesReceived: int | None = None
    bytesAcked: int | None = None

    @classmethod
    def fromBytes(cls, data: bytes) -> MPTCPInfo | None:
        """
        Decode ``struct mptcp_info`` as the kernel returned it (perhaps
        shorter than this decoder knows); ``None`` if too short to hold the
        subflow counts and sequence numbers.
        """
        if len(data) < _BASE.size:
            return None
        base = _BASE.unpack_from(data)
        more: dict[str, Any] = {}
        if len(data) >= _BASE.size + _ADDRS.size:
            used, limit, csum = _ADDRS.unpack_from(data, _BASE.size)
            more.update(localAddrUsed=used, localAddrMax=limit, csumEnabled=bool(csum))
        offset = _BASE.size + _ADDRS.size
        if len(data) >= offset + _BYTES.size:
            names = (
                "retransmits",
                "bytesRetrans",
                "bytesSent",
                "bytesReceived",
                "bytesAcked",
            )
            more.update(zip(names, _BYTES.unpack_from(data, offset), strict=True))
        return cls(*base, **more)


# u8 subflows, add_addr_signal, add_addr_accepted, subflows_max,
# add_addr_signal_max, add_addr_accepted_max; (2 bytes padding) u32 flags,
# token; u64 write_seq, snd_una, rcv_nxt.
_BASE = struct.Struct("=6B2xIIQQQ")
# u8 local_addr_used, local_addr_max, csum_enabled; (1 byte padding).
_ADDRS = struct.Struct("=3Bx")
# u32 retransmits (ending at offset 48, so no padding); u64 bytes_retrans,
# bytes_sent, bytes_received, bytes_acked.  Checked against Linux 6.18,
# which returns 96 bytes (later fields are not decoded).
_BYTES = struct.Struct("=IQQQQ")
_INFO_SIZE = _BASE.size + _ADDRS.size + _BYTES.size


def _handle(connection: object) -> socket.socket | None:
    """
    The socket under ``connection`` (see `memux.tuning.socketLayer`).
    """
    found = socketLayer(connection)
    return None if found is None else found[1]


def isMPTCP(transport: object) -> bool:
    """
    Whether the socket under ``transport`` is an MPTCP socket.  It may be a
    Twisted TCP transport, anything whose ``getHandle()`` is a socket, a
    TLS layer over one, or a memux session (its connection is looked at).
    """
    handle = _handle(transport)
    if handle is None:
        return False
    try:
        proto = handle.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
    except OSError:
        return False
    return bool(proto == IPPROTO_MPTCP)


def mptcpInfo(transport: object) -> MPTCPInfo | None:
    """
    What the kernel reports of the MPTCP connection of ``transport`` (as
    for `isMPTCP`); ``None`` if it is not an MPTCP socket, the connection
    fell back to TCP, or the kernel does not say.
    """
    handle = _handle(transport)
    if handle is None:
        return None
    try:
        data = handle.getsockopt(SOL_MPTCP, MPTCP_INFO, _INFO_SIZE)
    except OSError:
        return None
    return MPTCPInfo.fromBytes(data)


@dataclass(frozen=True)
class PathInfo:
    """
    What carries a connection, as `pathInfo` found it.

    :ivar kind: ``"MPTCP"`` (an MPTCP connection), ``"TCP"`` (plain TCP,
        including an MPTCP socket whose connection fell back to TCP),
        ``"UNIX"``, or ``"unknown"`` (no socket to look at: a pipe, a
        memory transport).
    :ivar tls: whether TLS runs over it.
    :ivar fellBack: whether it is an MPTCP socket whose connection fell
        back to plain TCP (the peer, or a middlebox, does not speak MPTCP;
        or a kernel before 5.16, which does not report ``MPTCP_INFO``).
    :ivar mptcp: what the kernel reports of the MPTCP connection, if
        ``kind`` is ``"MPTCP"``.
    """

    kind: str
    tls: bool = False
    fellBack: bool = False
    mptcp: MPTCPInfo | None = None

    @property
    def subflows(self) -> int | None:
        """
        The number of subflows (paths) in use, counting the first one;
        ``None`` unless the connection is MPTCP.
        """
        return None if self.mptcp is None else self.mptcp.subflows + 1

    def describe(self) -> str:
        """
        One line for people: ``MPTCP, 2 subflows, 1 address accepted,
        4.2 MiB sent, 512 B received, 0 retransmits``, ``TCP``, ``TLS over
        TCP (MPTCP fell back to TCP)``, ...
        """
        text = f"TLS over {self.kind}" if self.tls else self.kind
        if self.fellBack:
            text += " (MPTCP fell back to TCP)"
        info = self.mptcp
        if info is None:
            return text
        n = info.subflows + 1
        parts = [text, f"{n} subflow{'' if n == 1 else 's'}"]
        if info.addAddrAccepted:
            accepted = info.addAddrAccepted
            parts.append(f"{accepted} address{'' if accepted == 1 else 'es'} accepted")
        if info.addAddrSignal:
            parts.append(f"{info.addAddrSignal} announced")
        if info.bytesSent is not None and info.bytesReceived is not None:
            parts.append(f"{_size(info.bytesSent)} sent")
            parts.append(f"{_size(info.bytesReceived)} received")
        if info.retransmits is not None:
            parts.append(f"{info.retransmits} retransmits")
        return ", ".join(parts)


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def pathInfo(connection: object) -> PathInfo:
    """
    Say what carries ``connection``: a memux session (what its connection
    runs over), a Twisted transport, or a TLS layer over one.  Never
    raises: what cannot be told is ``"unknown"``.
    """
    tls = overTLS(connection)
    handle = _handle(connection)
    if handle is None:
        return PathInfo("unknown", tls=tls)
    family = handle.family
    if family == getattr(socket, "AF_UNIX", None):
        return PathInfo("UNIX", tls=tls)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return PathInfo("unknown", tls=tls)
    if not isMPTCP(handle):
        return PathInfo("TCP", tls=tls)
    info = mptcpInfo(handle)
    if info is None:
        return PathInfo("TCP", tls=tls, fellBack=True)
    return PathInfo("MPTCP", tls=tls, mptcp=info)


# ---------------------------------------------------------------- endpoints


def _family(host: str) -> int:
    return socket.AF_INET6 if isIPv6Address(host) else socket.AF_INET


@implementer(IStreamServerEndpoint)
class MPTCPServerEndpoint:
    """
    Listens for MPTCP connections (and plain TCP ones: the kernel accepts
    both on an MPTCP socket).

    :param reactor: an `~twisted.internet.interfaces.IReactorSocket` provider.
    :param port: the port number (0 for any).
    :param backlog: the listen backlog.
    :param interface: the address to listen on; all IPv4 addresses if
        empty; an IPv6 address listens with an IPv6 socket.
    :param fallback: listen with plain TCP, and log a warning, if the kernel
        refuses MPTCP; if false, fail with `MPTCPUnavailable`.
    """

    def __init__(
        self,
        reactor: Any,
        port: int,
        backlog: int = 50,
        interface: str = "",
        *,
        fallback: bool = True,
    ) -> None:
        self.reactor = reactor
        self.port = port
        self.backlog = backlog
        self.interface = interface
        self.fallback = fallback

    def __repr__(self) -> str:
        return f"<MPTCPServerEndpoint {self.interface or '0.0.0.0'}:{self.port}>"

    def listen(
        self, protocolFactory: IProtocolFactory
    ) -> defer.Deferred[IListeningPort]:
        """
        Listen; fire with the listening port, or fail with
        `~twisted.internet.error.CannotListenError` or `MPTCPUnavailable`.
        """
        return defer.execute(self._listen, protocolFactory)

    def _listen(self, protocolFactory: IProtocolFactory) -> IListeningPort:
        family = _family(self.interface)
        sock, _ = openSocket(family, fallback=self.fallback)
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                address = self.interface or ("::" if family == socket.AF_INET6 else "")
                sock.bind((address, self.port))
                sock.listen(self.backlog)
            except OSError as e:
                raise CannotListenError(self.interface, self.port, e) from e
            sock.setblocking(False)
            port: IListeningPort = self.reactor.adoptStreamPort(
                sock.fileno(), family, protocolFactory
            )
        finally:
            # The reactor has its own duplicate of the descriptor.
            sock.close()
        return port


class _MPTCPClient(tcp.Client):
    """
    A TCP client connection whose socket is the one its connector made.
    """

    connector: _MPTCPConnector

    def createInternetSocket(self) -> socket.socket:
        sock = self.connector.takeSocket()
        sock.setblocking(False)
        return sock

    def connectionLost(self, reason: Failure) -> None:
        """
        A failed attempt reports the socket's error (connection refused,
        host unreachable), as a TCP client does.
        """
        sock = getattr(self, "socket", None)
        if not self.connected and sock is not None:
            # An MPTCP socket whose connection failed polls as hung up but
            # not writable, so the reactor reports a lost connection instead
            # of letting doConnect read the error: read it here.
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.failIfNotConnected(  # type: ignore[no-untyped-call]
                    getConnectError((err, os.strerror(err)))
                )
                return
        super().connectionLost(reason)  # type: ignore[no-untyped-call]


class _MPTCPConnector(tcp.Connector):
    """
    A TCP connector that makes `_MPTCPClient` objects, each with a socket from
    `openSocket`.
    """

    fallback = True
    _socket: socket.socket | None = None

    def prepare(self) -> None:
        """
        Make the socket of the next connection attempt now, so that a
        refusal fails the attempt with `MPTCPUnavailable` itself (errors
        from making the socket later reach the factory as
        `~twisted.internet.error.ConnectBindError`).
        """
        family = socket.AF_INET6 if isIPv6Address(self.host) else socket.AF_INET
        self._socket, _ = openSocket(family, fallback=self.fallback)

    def takeSocket(self) -> socket.socket:
        sock, self._socket = self._socket, None
        if sock is None:
            family = socket.AF_INET6 if isIPv6Address(self.host) else socket.AF_INET
            sock, _ = openSocket(family, fallback=self.fallback)
        return sock

    def _makeTransport(self) -> tcp.Client:
        return _MPTCPClient(  # type: ignore[no-untyped-call]
            self.host, self.port, self.bindAddress, self, self.reactor
        )


@implementer(IStreamClientEndpoint)
class MPTCPClientEndpoint:
    """
    Connects with MPTCP (falling back to plain TCP if the peer does not
    speak it, as the kernel does, or if the kernel refuses MPTCP and
    ``fallback`` is true).

    :param reactor: the reactor (a `~twisted.internet.base.ReactorBase`,
        for its name resolver and selectables).
    :param host: an IPv4 or IPv6 address, or a name: resolved by the
        reactor's name resolver to IPv4 and IPv6 addresses, tried in turn
        (only those of ``bindAddress``'s family if it has an address).
    :param port: the port number.
    :param timeout: seconds to wait for the connection.
    :param bindAddress: ``(host, port)`` to bind the socket to first.
    :param fallback: see `MPTCPServerEndpoint`.
    """

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        timeout: float = 30,
        bindAddress: tuple[str, int] | None = None,
        *,
        fallback: bool = True,
    ) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.timeout = timeout
        self.bindAddress = bindAddress
        self.fallback = fallback

    def __repr__(self) -> str:
        return f"<MPTCPClientEndpoint {self.host}:{self.port}>"

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        """
        Connect; fire with the connected protocol, or fail with the
        connection's error (`MPTCPUnavailable` if the kernel refused and
        fallback is off, `~twisted.internet.error.DNSLookupError` if the
        name has no address).  Cancelling stops the attempt.
        """
        resolver = IReactorPluggableNameResolver(self.reactor, None)
        if isIPAddress(self.host) or isIPv6Address(self.host) or resolver is None:
            # A reactor without a name resolver of its own: tcp.Client
            # resolves the name (IPv4 only).
            return self._connectTo(self.host, protocolFactory)
        return defer.Deferred.fromCoroutine(
            self._connectByName(resolver.nameResolver, protocolFactory)
        )

    async def _connectByName(
        self, resolver: IHostnameResolver, protocolFactory: IProtocolFactory
    ) -> IProtocol:
        """
        Resolve the name to IPv4 and IPv6 addresses and try them in the
        resolver's order (``getaddrinfo``'s: preferred first) until one
        connects; fail with the last attempt's error.
        """
        hosts = await self._resolve(resolver)
        if not hosts:
            raise DNSLookupError(f"no address for {self.host!r}")
        lastError: Exception | None = None
        for host in hosts:
            try:
                return await self._connectTo(host, protocolFactory)
            except (MPTCPUnavailable, ConnectingCancelledError, defer.CancelledError):
                raise
            except Exception as e:
                lastError = e
        assert lastError is not None
        raise lastError

    def _resolve(self, resolver: IHostnameResolver) -> defer.Deferred[list[str]]:
        """
        The addresses of the name, of the bind address's family if one
        was given.
        """
        hosts: list[str] = []
        done: defer.Deferred[list[str]] = defer.Deferred()
        types: list[type[IAddress]] = [IPv4Address, IPv6Address]
        if self.bindAddress is not None and self.bindAddress[0]:
            types = [IPv6Address if isIPv6Address(self.bindAddress[0]) else IPv4Address]

        @implementer(IResolutionReceiver)
        class Receiver:
            def resolutionBegan(self, resolution: IHostResolution) -> None:
                pass

            def addressResolved(self, address: IAddress) -> None:
                host = getattr(address, "host", None)
                if isinstance(host, str) and host not in hosts:
                    hosts.append(host)

            def resolutionComplete(self) -> None:
                done.callback(hosts)

        resolver.resolveHostName(Receiver(), self.host, self.port, types)
        return done

    def _connectTo(
        self, host: str, protocolFactory: IProtocolFactory
    ) -> defer.Deferred[IProtocol]:
        try:
            wf = _WrappingFactory(protocolFactory)
            connector = _MPTCPConnector(
                host,
                self.port,
                wf,
                self.timeout,
                self.bindAddress,
                self.reactor,
            )
            connector.fallback = self.fallback
            connector.prepare()
            connector.connect()
            return wf._onConnection
        except BaseException:
            return defer.fail()


# ---------------------------------------------------------------- strings


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _flag(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("yes", "true", "1", "on"):
        return True
    if lowered in ("no", "false", "0", "off"):
        return False
    raise MPTCPDescriptionError(f"mptcp: fallback must be yes or no, not {value!r}")


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise MPTCPDescriptionError(
            f"mptcp: {name} must be an integer, not {value!r}"
        ) from None


def _options(
    kwargs: dict[str, object], known: tuple[str, ...], kind: str
) -> dict[str, str]:
    options = {name: _text(value) for name, value in kwargs.items()}
    for name in options:
        if name not in known:
            raise MPTCPDescriptionError(
                f"mptcp: {kind} endpoint has no argument {name!r}"
                f" (it takes {', '.join(known)})"
            )
    return options


def parseStreamServer(
    reactor: Any, *args: object, **kwargs: object
) -> MPTCPServerEndpoint:
    """
    Build the server endpoint of ``mptcp:PORT[:interface=ADDR][:backlog=N]
    [:fallback=yes|no]`` (the arguments after the prefix).

    :raises MPTCPDescriptionError: if the description is malformed.
    """
    options = _options(kwargs, ("port", "interface", "backlog", "fallback"), "server")
    positional = [_text(a) for a in args]
    if "port" in options:
        positional.insert(0, options.pop("port"))
    if len(positional) != 1:
        raise MPTCPDescriptionError(
            "mptcp: server endpoint takes one port, e.g. mptcp:7400:interface=0.0.0.0"
        )
    return MPTCPServerEndpoint(
        reactor,
        _int("port", positional[0]),
        backlog=_int("backlog", options.get("backlog", "50")),
        interface=options.get("interface", ""),
        fallback=_flag(options.get("fallback", "yes")),
    )


def parseStreamClient(
    reactor: Any, *args: object, **kwargs: object
) -> MPTCPClientEndpoint:
    """
    Build the client endpoint of ``mptcp:host=H:port=P[:timeout=T]
    [:bindAddress=ADDR][:fallback=yes|no]`` (``mptcp:H:P`` also works).
    ``bindAddress`` is an address, or ``ADDR\\:PORT`` (``[ADDR]\\:PORT`` for
    IPv6) to bind a port too.  Escape the colons of IPv6 addresses.

    :raises MPTCPDescriptionError: if the description is malformed.
    """
    options = _options(
        kwargs, ("host", "port", "timeout", "bindAddress", "fallback"), "client"
    )
    positional = [_text(a) for a in args]
    for name in ("host", "port"):
        if name not in options and positional:
            options[name] = positional.pop(0)
    if positional or "host" not in options or "port" not in options:
        raise MPTCPDescriptionError(
            "mptcp: client endpoint needs host= and port=,"
            " e.g. mptcp:host=example.com:port=7400"
        )
    bindAddress: tuple[str, int] | None = None
    if "bindAddress" in options:
        text = options["bindAddress"]
        if text.startswith("[") and "]" in text:
            host, _, rest = text[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        elif isIPv6Address(text):
            host, port = text, ""
        else:
            host, _, port = text.partition(":")
        if port and not port.isdigit():
            raise MPTCPDescriptionError(
                f"mptcp: bindAddress must be ADDR, ADDR\\:PORT or [ADDR]\\:PORT,"
                f" not {text!r}"
            )
        bindAddress = (host, int(port or 0))
    timeout = options.get("timeout", "30")
    try:
        seconds = float(timeout)
    except ValueError:
        raise MPTCPDescriptionError(
            f"mptcp: timeout must be a number, not {timeout!r}"
        ) from None
    return MPTCPClientEndpoint(
        reactor,
        options["host"],
        _int("port", options["port"]),
        timeout=seconds,
        bindAddress=bindAddress,
        fallback=_flag(options.get("fallback", "yes")),
    )
