# -*- test-case-name: memux.test.test_cli -*-
"""
REMOTE and LOCAL_ENDPOINT: Twisted endpoint strings, or the bare
``HOST:PORT`` and ``PORT`` forms for convenience.
"""

from __future__ import annotations

import ipaddress
import re

from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import (
    IReactorCore,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)

from memux._cli._common import UsageError

#: the TCP port a bare REMOTE host (no port) means: ``twistd memux``'s default
DEFAULT_PORT = 7400


#: ``[v6address]:port``
_BRACKETED = re.compile(r"^\[(?P<host>[^\]]+)\](?::(?P<port>\d+))?$")
#: ``host:port``, ``host``
_BARE = re.compile(r"^(?P<host>[^:\[\]\s]+)(?::(?P<port>\d+))?$")
#: endpoint types whose name must never be read as a host name
_ENDPOINT_WORDS = frozenset({"tcp", "tcp6", "tls", "ssl", "unix", "memux", "mptcp"})


def _escape(text: str) -> str:
    """
    Quote C{text} for use as one field of an endpoint string.
    """
    return text.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def _checkPort(port: str, what: str) -> int:
    number = int(port)
    if not 0 <= number <= 65535:
        raise UsageError(f"{what}: port {number} is out of range (0-65535)")
    return number


def parseRemote(reactor: IReactorCore, text: str) -> tuple[IStreamClientEndpoint, str]:
    """
    Make the client endpoint that REMOTE names, and return it with a name
    for it in messages (the endpoint string, or ``tcp:`` and the bare form).

    REMOTE is a Twisted client endpoint string (``tcp:HOST:PORT``,
    ``tls:HOST:PORT``, ``unix:PATH``, ...), or for convenience a bare
    ``HOST:PORT``, ``[IPV6]:PORT`` or ``HOST`` (TCP, port 7400).

    @raise UsageError: if it is neither.
    """
    bracketed = _BRACKETED.match(text)
    if bracketed is not None:
        host, port = bracketed["host"], bracketed["port"]
        shown = f"[{host}]"
    else:
        host, port = None, None
        try:
            return clientFromString(reactor, text), text
        except Exception as e:
            bare = _BARE.match(text)
            if bare is None or bare["host"].lower() in _ENDPOINT_WORDS:
                raise UsageError(
                    f"REMOTE {text!r} is not a client endpoint"
                    f" (such as tcp:HOST:PORT, or HOST:PORT): {_describeError(e)}"
                ) from e
            host, port = bare["host"], bare["port"]
            shown = host
    assert host is not None
    number = DEFAULT_PORT if port is None else _checkPort(port, f"REMOTE {text!r}")
    endpoint = clientFromString(reactor, f"tcp:{_escape(host)}:{number}")
    return endpoint, f"tcp:{shown}:{number}"


def parseLocal(reactor: IReactorCore, text: str) -> tuple[IStreamServerEndpoint, str]:
    """
    Make the server endpoint that LOCAL_ENDPOINT names, and return it with
    the endpoint string it was made from.

    LOCAL_ENDPOINT is a Twisted server endpoint string (``tcp:8080``,
    ``tcp:8080:interface=127.0.0.1``, ``unix:/tmp/s``, ...), or for
    convenience, as with ``ssh -L``, a bare ``PORT`` (TCP on 127.0.0.1 only)
    or ``ADDRESS:PORT`` (TCP on that interface: an IP address, ``[IPV6]``
    or ``localhost``).

    @raise UsageError: if it is neither.
    """
    bare = re.match(r"^(?:(?P<host>[^:\s]+|\[[^\]]+\]):)?(?P<port>\d+)$", text)
    if bare is not None and _isInterface(bare["host"]):
        host = (bare["host"] or "127.0.0.1").strip("[]")
        port = _checkPort(bare["port"], f"LOCAL_ENDPOINT {text!r}")
        description = f"tcp:{port}:interface={_escape(host)}"
    else:
        description = text
    try:
        return serverFromString(reactor, description), description
    except Exception as e:
        raise UsageError(
            f"LOCAL_ENDPOINT {text!r} is not a server endpoint"
            f" (such as tcp:8080:interface=127.0.0.1, or 8080): {_describeError(e)}"
        ) from e


def _isInterface(host: str | None) -> bool:
    """
    Whether C{host}, from a bare LOCAL_ENDPOINT, names an interface to
    listen on (absent means the default).
    """
    if host is None or host.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _describeError(e: BaseException) -> str:
    text = str(e)
    if isinstance(e, TypeError) and "argument" in text:
        return "missing or unexpected fields"
    return text or type(e).__name__
