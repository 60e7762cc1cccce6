# -*- test-case-name: memux.test.test_tap,memux.test.test_server -*-
"""
What ``twistd memux`` serves: the services by name (`ServerServices`),
and the allow-list of destinations a channel may name
(`DestinationPattern`, `classifyHost`).  Public through `memux.tap`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal, cast

from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IProtocolFactory, IReactorCore
from twisted.logger import Logger

from memux.error import ChannelRefused
from memux.protocol import ChannelRequest
from memux.transport import describeAddress
from memux.tunnel import forwardTo

__all__ = ["DestinationPattern", "HostKind", "ServerServices", "classifyHost"]

# Logged as the server's own (``[memux.tap#info]``), as before this moved.
_log = Logger(namespace="memux.tap")

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_WILDCARDS = set("*?[]!")
_IPV4_PATTERN = set("0123456789.-") | _WILDCARDS
_NAME_PATTERN = set("abcdefghijklmnopqrstuvwxyz0123456789._-") | _WILDCARDS

HostKind = Literal["name", "ipv4", "ipv6"]


def classifyHost(host: str) -> tuple[HostKind, str]:
    """
    What a requested destination host is, in the form patterns match: an IP
    address in its canonical text, or a DNS name in lower case without a
    final dot.  Nothing is resolved.

    :raises ValueError: if ``host`` is neither a host name nor an IP address
        in standard notation (so that no pattern can be sidestepped by an
        address spelt as a name, such as ``0x7f000001`` or ``127.1``).
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return ("ipv4" if address.version == 4 else "ipv6"), str(address)
    name = host.lower()
    if name.endswith("."):
        name = name[:-1]
    if len(name) > 253 or not _HOSTNAME.fullmatch(name):
        raise ValueError("not a host name or IP address")
    if name.rsplit(".", 1)[-1].isdigit() or _isNumeric(name):
        raise ValueError("an IP address must be in standard dotted-decimal form")
    return "name", name


def _isNumeric(name: str) -> bool:
    # inet_aton also takes hex, octal and short forms: 0x7f000001, 0177.1
    try:
        socket.inet_aton(name)
    except (OSError, ValueError):
        return False
    return True


def _showDestination(host: str, port: int) -> str:
    shown = host if host.isprintable() else repr(host)
    return f"[{shown}]:{port}" if ":" in host else f"{shown}:{port}"


@dataclass(frozen=True)
class DestinationPattern:
    """
    One ``--allow-connect`` pattern, ``HOST:PORT``.

    ``HOST`` is ``*`` (any host), a DNS name pattern (``*.internal``), an IPv4
    pattern made of digits, dots and wildcards (``10.1.*``), an IPv6
    pattern in brackets (``[fd00::*]``) or an IP network (``10.0.0.0/8``,
    ``[fd00::/8]``).  Wildcards are fnmatch's (``*``, ``?``, ``[seq]``);
    matching is case-insensitive, on the host as requested, with no DNS.
    A name pattern matches only names and an IP pattern only addresses, so
    ``10.*`` does not match ``10.example.com``.  ``PORT`` is ``*``, a port or a
    range ``LOW-HIGH``.
    """

    text: str
    kind: Literal["any", "name", "ipv4", "ipv6", "network"]
    host: str
    ports: tuple[int, int]
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    @classmethod
    def parse(cls, text: str) -> DestinationPattern:
        """
        Parse ``HOST:PORT``.

        :raises ValueError: if ``text`` is not a valid pattern.
        """
        host, sep, port = text.strip().rpartition(":")
        if not sep or not host or not port:
            raise ValueError("expected HOST:PORT, e.g. '*.internal:5432'")
        ports = _parsePorts(port)
        host = host.lower()
        bracketed = host.startswith("[") and host.endswith("]") and ":" in host
        if bracketed:
            host = host[1:-1]
        elif ":" in host:
            raise ValueError("write IPv6 addresses in brackets, e.g. '[::1]:22'")
        if "/" in host:
            try:
                network = ipaddress.ip_network(host, strict=False)
            except ValueError as e:
                raise ValueError(f"bad network {host!r}: {e}") from None
            return cls(text, "network", str(network), ports, network)
        if set(host) == {"*"}:
            return cls(text, "any", "*", ports)
        wild = bool(_WILDCARDS & set(host))
        if bracketed:
            if not wild:
                host = _canonicalAddress(host, 6)
            return cls(text, "ipv6", host, ports)
        if set(host) <= _IPV4_PATTERN and any(c.isdigit() for c in host):
            if not wild:
                host = _canonicalAddress(host, 4)
            return cls(text, "ipv4", host, ports)
        if not set(host) <= _NAME_PATTERN:
            raise ValueError(f"{host!r} is not a host name pattern")
        return cls(text, "name", host.rstrip("."), ports)

    def matches(self, kind: HostKind, host: str, port: int) -> bool:
        """
        Whether this pattern allows port ``port`` of ``host``, of ``kind``, as
        `classifyHost` returns them.
        """
        low, high = self.ports
        if not low <= port <= high:
            return False
        if self.kind == "any":
            return True
        if self.kind == "network":
            assert self.network is not None
            return kind != "name" and ipaddress.ip_address(host) in self.network
        return kind == self.kind and fnmatchcase(host, self.host)


def _parsePorts(text: str) -> tuple[int, int]:
    if text == "*":
        return (1, 65535)
    low, dash, high = text.partition("-")
    try:
        ports = (int(low), int(high) if dash else int(low))
    except ValueError:
        raise ValueError(
            f"the port must be '*', a number or a range LOW-HIGH, not {text!r}"
        ) from None
    if not 1 <= ports[0] <= ports[1] <= 65535:
        raise ValueError(f"bad port range {text!r} (ports are 1 to 65535)")
    return ports


def _canonicalAddress(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = None
    if address is None or address.version != version:
        raise ValueError(f"{text!r} is not an IPv{version} address")
    return str(address)


class ServerServices:
    """
    The services of a ``twistd memux`` server, as a services callable for
    `MultiplexingFactory`.

    A channel that names a destination is forwarded to it if an
    ``allowConnect`` pattern allows it and refused
    (`memux.error.ChannelRefused`, the reason naming the destination)
    otherwise; it is never given to a named service, whatever its service
    name.  Any other channel gets the factory
    mounted under its service name, or is refused.

    :ivar services: service name to factory.
    :ivar allowConnect: the patterns of destinations allowed.
    """

    def __init__(
        self,
        services: Mapping[bytes, IProtocolFactory],
        allowConnect: Sequence[DestinationPattern] = (),
        reactor: Any = None,
    ) -> None:
        self.services = dict(services)
        self.allowConnect = list(allowConnect)
        self._reactor = reactor

    def __call__(self, request: ChannelRequest) -> IProtocolFactory | None:
        """
        The factory for the channel ``request`` asks for, or ``None``.

        :raises ChannelRefused: if it names a destination not allowed.
        """
        if request.destination is None:
            return self.services.get(request.service)
        host, port = request.destination
        shown = _showDestination(host, port)
        try:
            kind, normalised = classifyHost(host)
        except ValueError as e:
            raise ChannelRefused(f"destination {shown} refused: {e}") from None
        if not self.allowConnect:
            raise ChannelRefused(
                f"destination {shown} not allowed: this server forwards to no"
                f" destination"
            )
        if not any(p.matches(kind, normalised, port) for p in self.allowConnect):
            raise ChannelRefused(f"destination {shown} not allowed")
        _log.info(
            "Forwarding channel {channel} from {peer} to {destination}",
            channel=request.channel,
            peer=_peerOf(request),
            destination=shown,
        )
        return forwardTo(HostnameEndpoint(self._reactorFor(), host, port), shown)

    def _reactorFor(self) -> Any:
        return self._reactor if self._reactor is not None else _globalReactor()


def _peerOf(request: ChannelRequest) -> str:
    transport = request.session.transport
    return describeAddress(transport.getPeer() if transport is not None else None)


def _globalReactor() -> IReactorCore:
    # Imported late: importing memux.tap must not install a reactor.
    from twisted.internet import reactor

    return cast(IReactorCore, reactor)
