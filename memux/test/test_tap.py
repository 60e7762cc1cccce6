# -*- test-case-name: memux.test.test_tap -*-
"""
Tests for L{memux.tap}, the ``twistd memux`` plugin: its options, the
destination allow-list, the services callable and the shape of the
service it makes (the service serving for real is tested in
L{memux.test.test_server}); and for the built-in services in
L{memux.services}.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any
from unittest import SkipTest

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IServiceMaker
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ServerEndpoint,
    UNIXServerEndpoint,
)
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.interfaces import (
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IPushProducer,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport
from twisted.logger import (
    LogLevel,
    capturedLogs,
    eventsFromJSONLogFile,
    formatEvent,
)
from twisted.plugin import getPlugins
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.python.runtime import platform
from twisted.python.usage import UsageError
from twisted.test.iosim import IOPump, connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

import memux
from memux import (
    ChannelRefused,
    ChannelRequest,
    MemuxProtocol,
    SessionLost,
    _tapoptions,
    tap,
)
from memux._engine import SessionSettings
from memux._wire import PriorityFrame
from memux.interfaces import IChannelTransport, IChunkReceiver, IMessageReceiver
from memux.protocol import MultiplexingFactory
from memux.services import Chargen, Discard, Echo, builtinServices
from memux.settings import Priority
from memux.tap import (
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DestinationPattern,
    ServerServices,
    classifyHost,
)
from memux.test._helpers import ROOT, Certificates
from memux.testing import StringChannelTransport


def parse(*argv: str) -> tap.Options:
    """
    Parse C{argv} with a fresh L{tap.Options}.
    """
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


# Objects for --factory to name.

#: a protocol factory
echoFactory = Factory.forProtocol(Echo)


class EchoFactory(Factory):
    """
    A factory class, instantiated without arguments.
    """

    protocol = Echo


def makeEchoFactory() -> IProtocolFactory:
    """
    A callable returning a factory.
    """
    return echoFactory


def makeNothing() -> None:
    """
    A callable returning something other than a factory.
    """


def makeBroken() -> IProtocolFactory:
    """
    A callable that fails.
    """
    raise RuntimeError("no database")


#: neither a factory, nor a protocol class, nor callable
notAFactory = 42


class OptionsTests(SynchronousTestCase):
    """
    Tests for L{tap.Options}: defaults, C{--listen} and C{--no-builtins}.
    """

    def test_defaults(self) -> None:
        """
        With no arguments the server listens on tcp:7400, serves the
        built-in services and nothing else, allows no destination, uses the
        default session settings, and no TLS.
        """
        options = parse()
        self.assertEqual(options["listen"], ["tcp:7400"])
        self.assertFalse(options["no-builtins"])
        self.assertEqual(options["service"], [])
        self.assertEqual(options["factory"], [])
        self.assertEqual(options["allow-connect"], [])
        self.assertEqual(
            options["settings"], SessionSettings(idleTimeout=DEFAULT_IDLE_TIMEOUT)
        )
        self.assertIsNone(options["tls"])
        for option in (
            "max-frame-size",
            "channel-credit",
            "session-credit",
            "max-channels",
            "max-message-size",
            "chunk-size",
            "tls-cert",
            "tls-key",
            "tls-ca",
        ):
            self.assertIsNone(options[option], option)

    def test_listenRepeatable(self) -> None:
        """
        Every C{--listen} is kept, in order, and replaces the default.
        """
        options = parse("--listen", "tcp:7401", "--listen=unix:/tmp/memux.sock")
        self.assertEqual(options["listen"], ["tcp:7401", "unix:/tmp/memux.sock"])

    def test_listenShort(self) -> None:
        """
        C{-l} is short for C{--listen}.
        """
        self.assertEqual(parse("-l", "tcp:7401")["listen"], ["tcp:7401"])

    def test_optionsNotShared(self) -> None:
        """
        The lists the repeatable options fill belong to one L{tap.Options}
        instance.
        """
        parse("--listen", "tcp:7401", "--service", "a=tcp:h:1", "--allow-connect=h:1")
        options = parse()
        self.assertEqual(options["listen"], ["tcp:7400"])
        self.assertEqual(options["service"], [])
        self.assertEqual(options["allow-connect"], [])

    def test_noBuiltins(self) -> None:
        """
        C{--no-builtins} sets the C{no-builtins} flag.
        """
        self.assertTrue(parse("--no-builtins")["no-builtins"])

    def test_badEndpointType(self) -> None:
        """
        An endpoint description of an unknown type is a usage error that
        quotes the description.
        """
        e = self.assertRaises(UsageError, parse, "--listen", "nonsense:7400")
        self.assertIn("'nonsense:7400'", str(e))

    def test_badEndpointArgument(self) -> None:
        """
        An endpoint description with a malformed argument is a usage error.
        """
        e = self.assertRaises(UsageError, parse, "--listen", "tcp:port")
        self.assertIn("'tcp:port'", str(e))

    def test_unknownOption(self) -> None:
        """
        An unknown option is a usage error.
        """
        self.assertRaises(UsageError, parse, "--frobnicate")

    def test_help(self) -> None:
        """
        The help lists every option, with the session settings' defaults
        taken from L{SessionSettings}.
        """
        text = " ".join(str(tap.Options()).split())
        for option in (
            "--listen",
            "--no-builtins",
            "--service",
            "--factory",
            "--allow-connect",
            "--tls-cert",
            "--tls-key",
            "--tls-ca",
            "--ignore-priority-hints",
        ):
            self.assertIn(option, text)
        defaults = SessionSettings()
        for option, attribute in [
            ("max-frame-size", "maxFrameSize"),
            ("channel-credit", "channelCredit"),
            ("session-credit", "sessionCredit"),
            ("max-channels", "maxChannels"),
            ("max-message-size", "maxMessageSize"),
            ("chunk-size", "chunkSize"),
        ]:
            start = text.index(f"--{option}=")
            default = f"[default: {getattr(defaults, attribute)}]"
            self.assertIn(default, text[start : text.index("--", start + 3)])


class ServiceOptionTests(SynchronousTestCase):
    """
    Tests for C{--service NAME=ENDPOINT}.
    """

    def test_service(self) -> None:
        """
        C{--service} keeps the service name, as bytes, and the client
        endpoint description; it is repeatable.
        """
        options = parse(
            "--service", "db=tcp:db.internal:5432", "--service", "web=unix:/run/w"
        )
        self.assertEqual(
            options["service"],
            [(b"db", "tcp:db.internal:5432"), (b"web", "unix:/run/w")],
        )

    def test_splitsAtFirstEquals(self) -> None:
        """
        The name ends at the first C{=}, so endpoint descriptions may use
        keyword arguments; an empty name mounts the default service; names
        are UTF-8.
        """
        options = parse(
            "--service",
            "web=tcp:host=example.com:port=80",
            "--service",
            "=tcp:localhost:80",
            "--service",
            "café=tcp:localhost:81",
        )
        self.assertEqual(
            options["service"],
            [
                (b"web", "tcp:host=example.com:port=80"),
                (b"", "tcp:localhost:80"),
                ("café".encode(), "tcp:localhost:81"),
            ],
        )

    def test_noEquals(self) -> None:
        """
        A C{--service} without C{NAME=} is a usage error naming the option.
        """
        e = self.assertRaises(UsageError, parse, "--service", "tcp:localhost:80")
        self.assertIn("--service takes NAME=", str(e))

    def test_badEndpoint(self) -> None:
        """
        A C{--service} endpoint that is not a valid client endpoint is a
        usage error naming the option and quoting the description.
        """
        for bad in ("nonsense:1", "tcp:localhost"):
            e = self.assertRaises(UsageError, parse, "--service", f"db={bad}")
            self.assertIn(f"--service db={bad}", str(e))
            self.assertIn(f"{bad!r} is not a client endpoint", str(e))

    def test_missingPort(self) -> None:
        """
        A client endpoint without its port is described as such, not by
        Twisted's C{TypeError} about missing arguments.
        """
        e = self.assertRaises(UsageError, parse, "--service", "web=tcp:localhost")
        self.assertEqual(
            str(e),
            "--service web=tcp:localhost: 'tcp:localhost' is not a client endpoint"
            " (such as tcp:HOST:PORT): missing or unexpected fields",
        )

    def test_nameTooLong(self) -> None:
        """
        A service name over 255 bytes is a usage error.
        """
        e = self.assertRaises(UsageError, parse, "--service", "x" * 256 + "=tcp:h:1")
        self.assertIn("at most 255 bytes", str(e))

    def test_mountedTwice(self) -> None:
        """
        A name mounted twice, by C{--service} or C{--factory}, is a usage
        error naming both.
        """
        e = self.assertRaises(
            UsageError,
            parse,
            "--service",
            "db=tcp:h:1",
            "--factory",
            "db=memux.services.Echo",
        )
        self.assertIn("'db' is mounted twice", str(e))
        self.assertIn(
            "--service db=tcp:h:1 and --factory db=memux.services.Echo", str(e)
        )
        self.assertRaises(
            UsageError, parse, "--service", "db=tcp:h:1", "--service", "db=tcp:h:2"
        )

    def test_builtinNameAllowed(self) -> None:
        """
        A built-in service's name may be mounted: it replaces the built-in.
        """
        options = parse("--service", "echo=tcp:h:1")
        self.assertEqual(options["service"], [(b"echo", "tcp:h:1")])


class FactoryOptionTests(SynchronousTestCase):
    """
    Tests for C{--factory NAME=package.module.attribute}.
    """

    def factoryFor(self, dotted: str) -> Any:
        """
        The factory C{--factory x=dotted} mounts.
        """
        [(name, given, factory)] = parse("--factory", f"x={dotted}")["factory"]
        self.assertEqual((name, given), (b"x", dotted))
        return factory

    def test_factory(self) -> None:
        """
        An L{IProtocolFactory} is mounted as it is.
        """
        self.assertIs(self.factoryFor("memux.test.test_tap.echoFactory"), echoFactory)

    def test_protocolClass(self) -> None:
        """
        A protocol class is served by a factory of it.
        """
        factory = self.factoryFor("memux.services.Echo")
        self.assertIsInstance(factory, Factory)
        self.assertIsInstance(factory.buildProtocol(None), Echo)

    def test_factoryClass(self) -> None:
        """
        A factory class is instantiated without arguments.
        """
        self.assertIsInstance(
            self.factoryFor("memux.test.test_tap.EchoFactory"), EchoFactory
        )

    def test_callable(self) -> None:
        """
        A callable is called without arguments, and what it returns is
        mounted.
        """
        factory = self.factoryFor("memux.test.test_tap.makeEchoFactory")
        self.assertIs(factory, echoFactory)

    def assertUsageError(self, dotted: str, *fragments: str) -> None:
        """
        C{--factory x=dotted} is a usage error naming the option and
        saying each of C{fragments}.
        """
        e = self.assertRaises(UsageError, parse, "--factory", f"x={dotted}")
        self.assertIn(f"--factory x={dotted}:", str(e))
        for fragment in fragments:
            self.assertIn(fragment, str(e))

    def test_notImportable(self) -> None:
        """
        A name that cannot be imported is a usage error.
        """
        self.assertUsageError("memux.nowhere.factory", "cannot import")
        self.assertUsageError("memux.test.test_tap.missing", "cannot import")
        self.assertUsageError("nodots", "cannot import")

    def test_notAFactory(self) -> None:
        """
        Something that is neither a factory, a protocol class nor callable
        is a usage error saying what is accepted.
        """
        self.assertUsageError(
            "memux.test.test_tap.notAFactory",
            "is 42: expected an IProtocolFactory, a protocol class, or a callable",
        )

    def test_callableReturnsOther(self) -> None:
        """
        A callable that returns something other than a factory is a usage
        error saying what it returned.
        """
        self.assertUsageError(
            "memux.test.test_tap.makeNothing",
            "returned None, which is not an IProtocolFactory",
        )

    def test_callableFails(self) -> None:
        """
        A callable that raises is a usage error with the exception.
        """
        self.assertUsageError(
            "memux.test.test_tap.makeBroken", "failed: RuntimeError('no database')"
        )

    def test_noEquals(self) -> None:
        """
        A C{--factory} without C{NAME=} is a usage error.
        """
        e = self.assertRaises(UsageError, parse, "--factory", "memux.services.Echo")
        self.assertIn("--factory takes NAME=", str(e))


class AllowConnectOptionTests(SynchronousTestCase):
    """
    Tests for C{--allow-connect PATTERN}.
    """

    def test_patterns(self) -> None:
        """
        Each C{--allow-connect} is parsed into a L{DestinationPattern}, in
        order.
        """
        options = parse(
            "--allow-connect", "*.internal:5432", "--allow-connect", "127.0.0.1:*"
        )
        self.assertEqual(
            options["allow-connect"],
            [
                DestinationPattern.parse("*.internal:5432"),
                DestinationPattern.parse("127.0.0.1:*"),
            ],
        )

    def test_bad(self) -> None:
        """
        A malformed pattern is a usage error naming the option and quoting
        the pattern.
        """
        e = self.assertRaises(UsageError, parse, "--allow-connect", "db.internal")
        self.assertIn("--allow-connect 'db.internal': expected HOST:PORT", str(e))


class SettingsOptionTests(SynchronousTestCase):
    """
    Tests for the session settings options.
    """

    options = {
        "max-frame-size": "maxFrameSize",
        "channel-credit": "channelCredit",
        "session-credit": "sessionCredit",
        "max-channels": "maxChannels",
        "max-message-size": "maxMessageSize",
        "chunk-size": "chunkSize",
    }

    def test_each(self) -> None:
        """
        Each option sets its setting; the others keep their defaults.
        """
        defaults = SessionSettings()
        for option, attribute in self.options.items():
            value = getattr(defaults, attribute) * 2
            settings = parse(f"--{option}", str(value))["settings"]
            self.assertEqual(getattr(settings, attribute), value, option)
            for other in self.options.values():
                if other != attribute:
                    self.assertEqual(
                        getattr(settings, other), getattr(defaults, other), other
                    )

    def test_together(self) -> None:
        """
        Several settings combine into one L{SessionSettings}.
        """
        settings = parse(
            "--max-message-size", "4096", "--chunk-size", "1024", "--max-channels=200"
        )["settings"]
        self.assertEqual(
            settings,
            SessionSettings(
                maxMessageSize=4096,
                chunkSize=1024,
                maxChannels=200,
                idleTimeout=DEFAULT_IDLE_TIMEOUT,
            ),
        )

    def test_suffixes(self) -> None:
        """
        Sizes take binary suffixes K, M and G (also KiB, MiB, GiB), in any
        case.
        """
        for text, size in [
            ("64K", 65536),
            ("64k", 65536),
            ("2M", 2 << 20),
            ("2MiB", 2 << 20),
            ("1G", 1 << 30),
            ("1gib", 1 << 30),
            ("12345", 12345),
        ]:
            self.assertEqual(
                parse("--max-message-size", text)["max-message-size"], size
            )

    def test_notANumber(self) -> None:
        """
        A value that is not a whole number (with an optional suffix) is a
        usage error naming the option.
        """
        for option in self.options:
            for bad in ("lots", "-1", "1.5", "12T"):
                e = self.assertRaises(UsageError, parse, f"--{option}", bad)
                self.assertIn(f"--{option} must be a whole number", str(e))

    def test_outOfRange(self) -> None:
        """
        A value out of range is a usage error naming the option and the
        range, in the unit the value was written in.
        """
        for option, value, allowed in [
            ("max-frame-size", "1000", "between 16384 and 16777215"),
            ("max-frame-size", "1K", "between 16K and 16777215 (16M - 1)"),
            ("max-frame-size", "32M", "between 16384 and 16777215 (16M - 1)"),
            ("channel-credit", "1K", "at least 64K"),
            ("session-credit", "1K", "at least 256K"),
            ("session-credit", "0", "at least 262144"),
            (
                "session-credit",
                "9000000000G",
                "at most 9223372036854775807 (8589934592G - 1)",
            ),
            ("max-channels", "5", "at least 100"),
            ("max-message-size", "0", "at least 1"),
            ("chunk-size", "0", "at least 1"),
            ("chunk-size", "0K", "at least 1"),
        ]:
            e = self.assertRaises(UsageError, parse, f"--{option}", value)
            self.assertEqual(str(e), f"--{option} must be {allowed}, not {value}")

    def test_maxChannelCredit(self) -> None:
        """
        ``--max-channel-credit`` sets how far a busy channel's window may
        grow: by default half the session window (at most 16M), with
        --channel-credit's value no auto-tuning; it must lie between
        --channel-credit and --session-credit, whichever way those are
        given, and the error names the options.
        """
        MiB = 1 << 20
        self.assertIsNone(parse()["settings"].maxChannelCredit)
        settings = parse("--max-channel-credit", "8M")["settings"]
        self.assertEqual(settings.maxChannelCredit, 8 * MiB)
        self.assertEqual(settings.channelCreditLimit, 8 * MiB)
        off = parse("--max-channel-credit", "1M")["settings"]
        self.assertEqual(off.channelCreditLimit, off.channelCredit)
        wide = parse("--max-channel-credit", "64M", "--session-credit", "256M")
        self.assertEqual(wide["settings"].maxChannelCredit, 64 * MiB)
        e = self.assertRaises(UsageError, parse, "--max-channel-credit", "64M")
        self.assertEqual(
            str(e),
            "--max-channel-credit must be between --channel-credit (1048576)"
            " and --session-credit (33554432), not 67108864",
        )
        e = self.assertRaises(
            UsageError,
            parse,
            "--channel-credit",
            "4M",
            "--max-channel-credit",
            "2M",
        )
        self.assertIn("--max-channel-credit must be between", str(e))
        e = self.assertRaises(UsageError, parse, "--max-channel-credit", "1K")
        self.assertEqual(str(e), "--max-channel-credit must be at least 64K, not 1K")

    def test_rangesAreTheSettings(self) -> None:
        """
        Each option's range is the one L{SessionSettings} accepts: its
        bounds pass, one beyond them does not.
        """
        for option, attribute in self.options.items():
            low, high = _tapoptions._RANGES[option]
            make: Any = SessionSettings  # (its fields are not all ints)
            make(**{attribute: low})
            self.assertRaises(ValueError, make, **{attribute: low - 1})
            if high is not None:
                make(**{attribute: high})
                self.assertRaises(ValueError, make, **{attribute: high + 1})


class TLSOptionTests(SynchronousTestCase):
    """
    Tests for C{--tls-cert}, C{--tls-key} and C{--tls-ca}.
    """

    def setUp(self) -> None:
        """
        Make a CA and certificate files.
        """
        self.certs = Certificates(self.mktemp())

    def test_certificate(self) -> None:
        """
        C{--tls-cert} alone (key in the same file) makes server TLS options
        that ask for no client certificate.
        """
        from twisted.internet.ssl import CertificateOptions

        tls = parse("--tls-cert", self.certs.serverFile)["tls"]
        self.assertTrue(IOpenSSLServerConnectionCreator.providedBy(tls))
        assert isinstance(tls, CertificateOptions)
        self.assertFalse(tls.verify)

    def test_keyAndCA(self) -> None:
        """
        With C{--tls-key} the key comes from its own file; with C{--tls-ca}
        client certificates are required.
        """
        from twisted.internet.ssl import CertificateOptions

        tls = parse(
            "--tls-cert",
            self.certs.serverCertFile,
            "--tls-key",
            self.certs.serverKeyFile,
            "--tls-ca",
            self.certs.caFile,
        )["tls"]
        assert isinstance(tls, CertificateOptions)
        self.assertTrue(tls.verify)
        self.assertTrue(tls.requireCertificate)

    def test_needsCertificate(self) -> None:
        """
        C{--tls-key} or C{--tls-ca} without C{--tls-cert} is a usage error.
        """
        for option in ("--tls-key", "--tls-ca"):
            e = self.assertRaises(UsageError, parse, option, self.certs.caFile)
            self.assertEqual(str(e), f"{option} needs --tls-cert")

    def test_missingFiles(self) -> None:
        """
        A file that cannot be read is a usage error naming the option and
        the path.
        """
        missing = os.path.join(self.certs.directory, "missing.pem")
        for argv, option in [
            (["--tls-cert", missing], "--tls-cert"),
            (
                ["--tls-cert", self.certs.serverCertFile, "--tls-key", missing],
                "--tls-key",
            ),
            (["--tls-cert", self.certs.serverFile, "--tls-ca", missing], "--tls-ca"),
        ]:
            e = self.assertRaises(UsageError, parse, *argv)
            self.assertIn(f"{option} {missing}: cannot read it", str(e))

    def test_noKey(self) -> None:
        """
        A certificate file without a key, and no C{--tls-key}, is a usage
        error naming the file.
        """
        e = self.assertRaises(
            UsageError, parse, "--tls-cert", self.certs.serverCertFile
        )
        self.assertIn(f"no PEM private key in {self.certs.serverCertFile!r}", str(e))

    def test_wrongKey(self) -> None:
        """
        A key that does not match the certificate is a usage error.
        """
        e = self.assertRaises(
            UsageError,
            parse,
            "--tls-cert",
            self.certs.serverCertFile,
            "--tls-key",
            self.certs.clientFile,
        )
        self.assertIn("does not match the certificate", str(e))

    def test_notACertificate(self) -> None:
        """
        A C{--tls-ca} file without certificates is a usage error naming it.
        """
        junk = self.certs.write("junk.pem", b"junk")
        e = self.assertRaises(
            UsageError, parse, "--tls-cert", self.certs.serverFile, "--tls-ca", junk
        )
        self.assertIn(f"no PEM certificate in {junk!r}", str(e))

    def test_sslListen(self) -> None:
        """
        An C{ssl:} listening endpoint with C{--tls-cert} (TLS twice) is a
        usage error.
        """
        e = self.assertRaises(
            UsageError,
            parse,
            "--listen",
            f"ssl:7443:privateKey={self.certs.serverFile}",
            "--tls-cert",
            self.certs.serverFile,
        )
        self.assertIn("already speaks TLS", str(e))


class DestinationPatternTests(SynchronousTestCase):
    """
    Tests for L{DestinationPattern} and L{classifyHost}.
    """

    def allows(self, pattern: str, host: str, port: int) -> bool:
        """
        Whether C{pattern} allows C{host}, C{port}.
        """
        kind, normalised = classifyHost(host)
        return DestinationPattern.parse(pattern).matches(kind, normalised, port)

    def test_kinds(self) -> None:
        """
        Patterns are parsed by the shape of their host.
        """
        for text, kind, host, ports in [
            ("*:*", "any", "*", (1, 65535)),
            ("*.internal:5432", "name", "*.internal", (5432, 5432)),
            ("DB.Internal:80", "name", "db.internal", (80, 80)),
            ("127.0.0.1:8000-8099", "ipv4", "127.0.0.1", (8000, 8099)),
            ("127.1.*:22", "ipv4", "127.1.*", (22, 22)),
            ("[::1]:22", "ipv6", "::1", (22, 22)),
            ("[0:0::1]:22", "ipv6", "::1", (22, 22)),
            ("[::*]:22", "ipv6", "::*", (22, 22)),
            ("127.0.0.0/8:443", "network", "127.0.0.0/8", (443, 443)),
            ("[::/120]:443", "network", "::/120", (443, 443)),
        ]:
            pattern = DestinationPattern.parse(text)
            self.assertEqual(
                (pattern.kind, pattern.host, pattern.ports, pattern.text),
                (kind, host, ports, text),
            )

    def test_invalid(self) -> None:
        """
        Malformed patterns are L{ValueError}s saying what is wrong.
        """
        for text, message in [
            ("db.internal", "expected HOST:PORT"),
            (":80", "expected HOST:PORT"),
            ("db:", "expected HOST:PORT"),
            ("db:http", "the port must be"),
            ("db:0", "bad port range"),
            ("db:70000", "bad port range"),
            ("db:90-80", "bad port range"),
            ("::1:22", "brackets"),
            ("300.1.1.1:22", "not an IPv4 address"),
            ("[zz::1]:22", "not an IPv6 address"),
            ("127.0.0.0/33:22", "bad network"),
            ("db internal:22", "not a host name pattern"),
            ("exämple.com:22", "not a host name pattern"),
        ]:
            e = self.assertRaises(ValueError, DestinationPattern.parse, text)
            self.assertIn(message, str(e), text)

    def test_names(self) -> None:
        """
        Name patterns match names case-insensitively, with fnmatch
        wildcards; a final dot on the requested name is ignored.
        """
        self.assertTrue(self.allows("*.internal:5432", "db.internal", 5432))
        self.assertTrue(self.allows("*.internal:5432", "DB.Internal.", 5432))
        self.assertTrue(self.allows("*.internal:5432", "a.b.internal", 5432))
        self.assertTrue(self.allows("db?.internal:*", "db1.internal", 1))
        self.assertFalse(self.allows("*.internal:5432", "db.internal", 5433))
        self.assertFalse(self.allows("*.internal:5432", "internal", 5432))
        self.assertFalse(self.allows("*.internal:5432", "db.internal.evil.com", 5432))
        self.assertFalse(self.allows("db.internal:*", "db.internal.evil.com", 1))

    def test_addresses(self) -> None:
        """
        IP patterns match addresses in canonical form, and networks
        contain them; ports may be ranges.
        """
        self.assertTrue(self.allows("127.0.0.1:*", "127.0.0.1", 8080))
        self.assertTrue(self.allows("127.1.*:22", "127.1.2.3", 22))
        self.assertTrue(self.allows("127.0.0.0/8:1-1024", "127.200.0.1", 1024))
        self.assertFalse(self.allows("127.0.0.0/8:1-1024", "127.200.0.1", 1025))
        self.assertFalse(self.allows("127.0.0.0/16:*", "127.1.0.1", 1))
        self.assertTrue(self.allows("[::1]:22", "0:0:0:0:0:0:0:1", 22))
        self.assertTrue(self.allows("[::/120]:22", "::1", 22))
        self.assertFalse(self.allows("[::/120]:22", "127.0.0.1", 22))
        self.assertTrue(self.allows("*:*", "::1", 22))

    def test_namesAndAddressesApart(self) -> None:
        """
        A name pattern never matches an address, and an IP pattern never
        matches a name, however alike they look: no name can sneak past an
        address pattern, nor the reverse.
        """
        self.assertFalse(self.allows("127.*:*", "127.attacker.example", 80))
        self.assertFalse(self.allows("127.0.0.0/8:*", "127.attacker.example", 80))
        self.assertFalse(self.allows("[1a]*:*", "127.0.0.1", 80))
        self.assertFalse(self.allows("*1:*", "::1", 80))
        self.assertTrue(self.allows("*.1:*", "127.0.0.1", 80))  # an IPv4 pattern
        self.assertFalse(self.allows("127.0.0.1:*", "localhost", 80))
        self.assertTrue(self.allows("*:*", "localhost", 80))

    def test_classifyHost(self) -> None:
        """
        L{classifyHost} says whether a host is a name or an address, in the
        form patterns match.
        """
        for host, expected in [
            ("db.internal", ("name", "db.internal")),
            ("DB.Internal.", ("name", "db.internal")),
            ("localhost", ("name", "localhost")),
            ("_srv.example", ("name", "_srv.example")),
            ("xn--exmple-cua.com", ("name", "xn--exmple-cua.com")),
            ("127.0.0.1", ("ipv4", "127.0.0.1")),
            ("::FFFF:127.0.0.1", ("ipv6", "::ffff:7f00:1")),
            ("0:0:0:0:0:0:0:1", ("ipv6", "::1")),
        ]:
            self.assertEqual(classifyHost(host), expected, host)

    def test_classifyHostRefuses(self) -> None:
        """
        Hosts that are not names or standard addresses are refused, among
        them addresses spelt in forms the resolver would still accept.
        """
        for host in [
            "",
            "exämple.com",
            "db internal",
            "db..internal",
            "-db.internal",
            "db.internal:80",
            "[::1]",
            "a" * 64 + ".example",
            "0x7f000001",
            "0x7f.1",
            "127.1",
            "2130706433",
            "0127.0.0.1",
            "1.2.3.4.5",
        ]:
            self.assertRaises(ValueError, classifyHost, host)


class StubSession:
    """
    Stands in for a session in a L{ChannelRequest}: only its transport's
    peer address is used.
    """

    def __init__(self) -> None:
        self.transport = StringTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.7", 4321)
        )


def request(
    service: bytes = b"", destination: tuple[str, int] | None = None
) -> ChannelRequest:
    """
    A channel request for C{service} (and C{destination}).
    """
    return ChannelRequest(service, None, destination, 1, False, StubSession())  # type: ignore[arg-type]


class ServerServicesTests(SynchronousTestCase):
    """
    Tests for L{ServerServices}, the services callable of the server.
    """

    def setUp(self) -> None:
        """
        A memory reactor for the endpoints, and an echo factory to mount.
        """
        self.reactor = MemoryReactor()
        self.echo = Factory.forProtocol(Echo)

    def services(self, *patterns: str) -> ServerServices:
        """
        Services with echo mounted and C{patterns} allowed.
        """
        return ServerServices(
            {b"echo": self.echo},
            [DestinationPattern.parse(p) for p in patterns],
            self.reactor,
        )

    def refusal(self, services: ServerServices, req: ChannelRequest) -> str:
        """
        The reason C{services} refuses C{req} with.
        """
        e: ChannelRefused = self.assertRaises(ChannelRefused, services, req)
        return e.reason

    def test_services(self) -> None:
        """
        A channel without a destination gets the factory mounted for its
        service, or L{None} (refused by the session).
        """
        services = self.services()
        self.assertIs(services(request(b"echo")), self.echo)
        self.assertIsNone(services(request(b"other")))

    def test_noAllowList(self) -> None:
        """
        Without patterns every destination is refused, with a reason naming
        it and saying that nothing is forwarded.
        """
        reason = self.refusal(self.services(), request(b"", ("127.0.0.1", 22)))
        self.assertEqual(
            reason,
            "destination 127.0.0.1:22 not allowed: this server forwards to no"
            " destination",
        )

    def test_notAllowed(self) -> None:
        """
        A destination no pattern matches is refused with a reason naming
        it (not the patterns).
        """
        services = self.services("*.internal:5432")
        reason = self.refusal(services, request(b"", ("db.example", 5432)))
        self.assertEqual(reason, "destination db.example:5432 not allowed")
        reason = self.refusal(services, request(b"", ("::1", 5432)))
        self.assertEqual(reason, "destination [::1]:5432 not allowed")

    def test_neverToANamedService(self) -> None:
        """
        A channel with a destination is never given to the service its name
        names, allowed or not.
        """
        refused = request(b"echo", ("db.example", 5432))
        self.assertRaises(ChannelRefused, self.services(), refused)
        self.assertRaises(ChannelRefused, self.services("*.internal:*"), refused)
        allowed = self.services("db.example:*")(refused)
        self.assertIsNot(allowed, self.echo)

    def test_invalidHost(self) -> None:
        """
        A destination host that is not a name or standard address is
        refused, even by C{*:*}.
        """
        services = self.services("*:*")
        reason = self.refusal(services, request(b"", ("0x7f000001", 80)))
        self.assertEqual(
            reason,
            "destination 0x7f000001:80 refused: an IP address must be in standard"
            " dotted-decimal form",
        )
        reason = self.refusal(services, request(b"", ("a\nb", 80)))
        self.assertIn("'a\\nb':80", reason)

    def test_allowed(self) -> None:
        """
        An allowed destination gets a factory forwarding the channel to a
        L{HostnameEndpoint} for it, and is logged at info with the peer.
        """
        services = self.services("*.internal:5432")
        with capturedLogs() as events:
            factory: Any = services(request(b"", ("DB.internal", 5432)))
        endpoint = factory.endpoint
        self.assertIsInstance(endpoint, HostnameEndpoint)
        self.assertEqual((endpoint._hostText, endpoint._port), ("DB.internal", 5432))
        self.assertEqual(factory.describe, "DB.internal:5432")
        [event] = events
        self.assertEqual(event["log_level"], LogLevel.info)
        self.assertEqual(event["destination"], "DB.internal:5432")
        self.assertEqual(event["peer"], "127.0.0.7:4321")


class PluginTests(SynchronousTestCase):
    """
    Tests for the plugin in C{twisted/plugins/memux_plugin.py}.
    """

    def test_discoverable(self) -> None:
        """
        Twisted's plugin system finds a service maker with the tap name
        C{memux} whose options and C{makeService} are L{memux.tap}'s.
        """
        makers = [m for m in getPlugins(IServiceMaker) if m.tapname == "memux"]
        self.assertEqual(len(makers), 1)
        [maker] = makers
        self.assertIs(maker.options, tap.Options)
        self.assertIs(maker.makeService, tap.makeService)
        self.assertTrue(maker.description)


def runTwistd(
    directory: str, *argv: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """
    Run the real C{twistd} with C{argv}, in C{directory}, importing memux
    (and its plugin) from this checkout; return how it ended.
    """
    return subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
        + list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        cwd=directory,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


def listeningSocket() -> socket.socket:
    """
    A TCP socket listening on a loopback port of the system's choosing.
    """
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


class TwistdTests(SynchronousTestCase):
    """
    The real C{twistd memux}, run in the foreground (C{-n}) and as a
    daemon: a mistake is one line and a non-zero exit status, never a
    traceback.
    """

    def setUp(self) -> None:
        """
        Run each C{twistd} in a directory of its own.
        """
        if platform.isWindows():
            raise SkipTest("twistd daemonises on POSIX only")
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.pidfile = os.path.join(self.directory, "twistd.pid")
        self.logfile = os.path.join(self.directory, "twistd.log")

    def modes(self) -> dict[str, list[str]]:
        """
        C{twistd}'s options for each mode.
        """
        return {
            "foreground": ["-n", f"--pidfile={self.pidfile}"],
            "daemon": [f"--pidfile={self.pidfile}", f"--logfile={self.logfile}"],
        }

    def test_usageErrorsOneLine(self) -> None:
        """
        A bad endpoint or number is one line on standard error naming the
        option and what it takes, in the unit given, and exit status 2;
        nothing on standard output (no usage text).
        """
        for argv, line in [
            (
                ["--service", "web=tcp:localhost"],
                "--service web=tcp:localhost: 'tcp:localhost' is not a client"
                " endpoint (such as tcp:HOST:PORT): missing or unexpected fields",
            ),
            (
                ["--listen", "tcp:port"],
                "--listen 'tcp:port' is not a server endpoint (such as tcp:7400 or"
                " unix:/run/memux.sock): invalid literal for int() with base 10:"
                " 'port'",
            ),
            (
                ["--idle-timeout=abc"],
                "--idle-timeout must be a number of seconds, 0 (never) or more,"
                " not 'abc'",
            ),
            (["--session-credit=1K"], "--session-credit must be at least 256K, not 1K"),
            (["--chunk-size=0"], "--chunk-size must be at least 1, not 0"),
            (
                ["--frobnicate"],
                "option --frobnicate not recognized (twistd memux --help lists them)",
            ),
        ]:
            for mode, options in self.modes().items():
                done = runTwistd(self.directory, *options, "memux", *argv)
                self.assertEqual(
                    (done.returncode, done.stdout, done.stderr),
                    (2, "", f"twistd memux: error: {line}\n"),
                    f"{mode} {argv}",
                )
                self.assertFalse(os.path.exists(self.pidfile))

    def test_portInUseForeground(self) -> None:
        """
        In the foreground, a port already in use is one critical line in
        the log (standard output), no traceback, and exit status 1; the PID
        file is removed.
        """
        with listeningSocket() as taken:
            where = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
            done = runTwistd(
                self.directory, *self.modes()["foreground"], "memux", "--listen", where
            )
        self.assertEqual((done.returncode, done.stderr), (1, ""), done.stdout)
        self.assertNotIn("Traceback", done.stdout)
        [line] = [s for s in done.stdout.splitlines() if "cannot listen" in s]
        self.assertTrue(
            line.endswith(
                f"[memux.tap#critical] memux cannot listen on {where}: Address"
                " already in use (another program listens on that port)"
            ),
            line,
        )
        self.assertFalse(os.path.exists(self.pidfile))

    def test_portInUseDaemon(self) -> None:
        """
        As a daemon, a port already in use is reported on standard error by
        C{twistd} from the reason memux gives, and logged as one critical
        line without a traceback; the exit status is 1.
        """
        with listeningSocket() as taken:
            where = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
            done = runTwistd(
                self.directory, *self.modes()["daemon"], "memux", "--listen", where
            )
            deadline = time.monotonic() + 30
            while os.path.exists(self.pidfile) and time.monotonic() < deadline:
                time.sleep(0.05)  # the daemon removes it as it exits
        self.assertEqual((done.returncode, done.stdout), (1, ""))
        self.assertIn(
            f"memux.tap.StartupError: cannot listen on {where}: Address already in use",
            done.stderr,
        )
        self.assertFalse(os.path.exists(self.pidfile))
        with open(self.logfile) as f:
            log = f.read()
        self.assertNotIn("Traceback", log)
        self.assertIn(
            f"[memux.tap#critical] memux cannot listen on {where}: Address already"
            " in use (another program listens on that port)\n",
            log,
        )

    def test_jsonLogger(self) -> None:
        """
        C{twistd -n --logger=memux.tap.jsonLogger memux} logs JSON records
        with every field serialisable (nothing C{"unpersistable"}): its
        startup, with memux's version, a session, a client that speaks
        HTTP and a health check.
        """
        directory = tempfile.mkdtemp()  # (short: a UNIX socket's path is)
        self.addCleanup(shutil.rmtree, directory, True)
        sock = os.path.join(directory, "memux.sock")
        out = os.path.join(directory, "out.json")
        with open(out, "wb") as f:
            server = subprocess.Popen(
                [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
                + ["-n", "--pidfile=", "--logger=memux.tap.jsonLogger", "memux"]
                + ["--listen", f"unix:{sock}"],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
            )
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(sock):
                self.assertIsNone(server.poll())
                self.assertLess(time.monotonic(), deadline, "twistd did not start")
                time.sleep(0.05)
            ping = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "memux",
                    "ping",
                    "-q",
                    "-c",
                    "1",
                    f"unix:{sock}",
                ],
                capture_output=True,
                timeout=60,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
            )
            self.assertEqual(ping.returncode, 0, ping.stderr)
            for data in (b"GET / HTTP/1.1\r\n\r\n", b""):
                with socket.socket(socket.AF_UNIX) as client:
                    client.connect(sock)
                    client.sendall(data)
                    client.shutdown(socket.SHUT_WR)
                    client.recv(1024)
        finally:
            server.terminate()
            server.wait(30)
        with open(out, encoding="utf-8") as f:
            text = f.read()
        self.assertNotIn("unpersistable", text)
        events = list(eventsFromJSONLogFile(io.StringIO(text)))
        self.assertEqual(len(events), text.count("\x1e"))
        formats = [e.get("log_format") for e in events]
        for expected in [
            "memux {version} serving on {endpoints}",
            "memux session from {peer}",
            "Protocol violation by {peer}: {code}: {reason}",
            "memux session with {peer} ended: {reason}",
        ]:
            self.assertIn(expected, formats)
        [version] = [
            e
            for e in events
            if e.get("log_namespace") == "memux.tap" and "version" in e
        ]
        self.assertEqual(version["version"], memux.__version__)
        for event in events:
            for key in ("peer", "reason", "why"):
                if key in event:
                    self.assertIsInstance(event[key], str, event)

    def test_version(self) -> None:
        """
        C{twistd memux --version} gives memux's version, then Twisted's,
        and says whether the core runs compiled.
        """
        done = runTwistd(self.directory, "memux", "--version")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertTrue(
            done.stdout.startswith(f"memux {memux.__version__} (Twisted "),
            done.stdout,
        )
        core = "compiled core" if memux.compiled else "pure-Python core"
        self.assertIn(core, done.stdout)


class MemoryTrimTests(SynchronousTestCase):
    """
    A running server gives the memory a burst freed back to the system once
    its sessions have fallen to half their peak, or to none.
    """

    def recordTrims(self) -> list[None]:
        """
        Replace L{tap.trimHeap} by a recorder; return its record.
        """
        trims: list[None] = []

        def trim() -> bool:
            trims.append(None)
            return True

        self.patch(tap, "trimHeap", trim)
        return trims

    def test_trimAfterLoadDrops(self) -> None:
        """
        Looked at every L{tap.TRIM_INTERVAL} seconds: no trim while load
        holds or grows, one once the sessions have halved, none again
        until they halve again from there.
        """
        trims = self.recordTrims()
        reactor = MemoryReactorClock()
        server = tap.makeService(parse("--listen", "tcp:0"), reactor=reactor)
        server.startService()
        self.addCleanup(server.stopService)
        factory = server.factory
        sessions = [MemuxProtocol() for _ in range(4)]
        for session in sessions:
            factory._sessionStarted(session)
        reactor.advance(tap.TRIM_INTERVAL)
        self.assertEqual(trims, [])
        factory._sessionEnded(sessions[0])
        reactor.advance(tap.TRIM_INTERVAL)
        self.assertEqual(trims, [])  # 3 of 4: not yet half
        factory._sessionEnded(sessions[1])
        reactor.advance(tap.TRIM_INTERVAL)
        self.assertEqual(len(trims), 1)
        reactor.advance(tap.TRIM_INTERVAL)
        self.assertEqual(len(trims), 1)  # nothing dropped since
        factory._sessionEnded(sessions[2])
        factory._sessionEnded(sessions[3])
        reactor.advance(tap.TRIM_INTERVAL)
        self.assertEqual(len(trims), 2)

    def test_shortBurstSeen(self) -> None:
        """
        A burst that comes and goes between two looks still counts: the
        factory keeps the peak.
        """
        trims = self.recordTrims()
        reactor = MemoryReactorClock()
        server = tap.makeService(parse("--listen", "tcp:0"), reactor=reactor)
        server.startService()
        self.addCleanup(server.stopService)
        session = MemuxProtocol()
        server.factory._sessionStarted(session)
        server.factory._sessionEnded(session)
        reactor.advance(tap.TRIM_INTERVAL)
        self.assertEqual(len(trims), 1)

    def test_trimHeap(self) -> None:
        """
        On Linux with glibc, L{memux.memory.trimHeap} runs; elsewhere it
        says it did not.
        """
        import platform

        from memux.memory import trimHeap

        expected = (
            sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
        )
        self.assertEqual(trimHeap(), expected)


@implementer(IStreamServerEndpoint)
class StubEndpoint:
    """
    A server endpoint whose C{listen} returns C{result}, or raises it if
    it is an exception.
    """

    def __init__(self, result: Deferred[Any] | Exception) -> None:
        self.result = result

    def listen(self, factory: IProtocolFactory) -> Deferred[Any]:
        """
        Return (or raise) C{result}.
        """
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


class AnnouncingEndpointTests(SynchronousTestCase):
    """
    The endpoint wrapper that logs where C{twistd memux} listens, or why it
    cannot.
    """

    def listen(self, result: Deferred[Any] | Exception) -> list[Any]:
        """
        Listen through the wrapper of a L{StubEndpoint}; return the results
        the Deferred has had so far (a L{Failure}, or the port).
        """
        endpoint = tap._AnnouncingEndpoint(StubEndpoint(result), "tcp:7400", False)
        results: list[Any] = []
        endpoint.listen(Factory()).addBoth(results.append)
        return results

    def test_failsAtOnce(self) -> None:
        """
        A failure to listen at once (as C{twistd} starts) fails with
        L{tap.StartupError}, whatever the endpoint raised, and is logged in
        one critical line.
        """
        for result in (
            fail(CannotListenError("", 7400, OSError(errno.EADDRINUSE, "in use"))),
            RuntimeError("no way"),
        ):
            with capturedLogs() as events:
                [failure] = self.listen(result)
            self.assertIsInstance(failure, Failure)
            self.assertIsInstance(failure.value, tap.StartupError)
            [event] = events
            self.assertEqual(event["log_level"], LogLevel.critical)
            self.assertIn("memux cannot listen on tcp:7400: ", formatEvent(event))

    def test_failsLater(self) -> None:
        """
        A failure to listen later (an endpoint that takes its time) is
        logged in one critical line, with no traceback (the failure is
        handled): C{twistd} carries on.
        """
        later: Deferred[Any] = Deferred()
        results = self.listen(later)
        with capturedLogs() as events:
            later.errback(CannotListenError("", 80, OSError(errno.EACCES, "denied")))
        self.assertEqual(results, [None])
        [event] = events
        self.assertEqual(
            formatEvent(event),
            "memux cannot listen on tcp:7400: denied (ports below 1024 need root)",
        )


class AddressTextTests(SynchronousTestCase):
    """
    How memux logs an address: a string, for every log observer.
    """

    def test_addresses(self) -> None:
        """
        TCP addresses are C{HOST:PORT}, IPv6 in brackets; a UNIX socket is
        its path.
        """
        from twisted.internet.address import IPv6Address, UNIXAddress

        from memux.transport import describeAddress

        for address, text in [
            (IPv4Address("TCP", "127.0.0.7", 4321), "127.0.0.7:4321"),
            (IPv6Address("TCP", "::1", 80), "[::1]:80"),
            (UNIXAddress(b"/run/memux.sock"), "/run/memux.sock"),
            (UNIXAddress(None), "an unnamed UNIX socket"),
            (None, "an unknown address"),
        ]:
            self.assertEqual(describeAddress(address), text)


class MakeServiceTests(SynchronousTestCase):
    """
    Tests for L{tap.makeService}: the shape of the service.
    """

    def makeService(self, *argv: str) -> tuple[MemoryReactorClock, tap.MemuxServer]:
        """
        Make the service for C{argv} with a L{MemoryReactorClock}.
        """
        reactor = MemoryReactorClock()
        return reactor, tap.makeService(parse(*argv), reactor=reactor)

    def test_oneServicePerListen(self) -> None:
        """
        Each C{--listen} gives one L{StreamServerEndpointService} with the
        endpoint described, all sharing one L{MultiplexingFactory}.
        """
        reactor, server = self.makeService(
            "--listen", "tcp:7401", "--listen", "unix:/tmp/memux-test.sock"
        )
        children: list[Any] = list(server)
        self.assertEqual(len(children), 2)
        for child in children:
            self.assertIsInstance(child, StreamServerEndpointService)
            self.assertIs(child.factory, server.factory)
        self.assertIsInstance(server.factory, MultiplexingFactory)
        self.assertIs(server.factory.services, server.resolver)
        tcp, unix = (child.endpoint.endpoint for child in children)
        self.assertIsInstance(tcp, TCP4ServerEndpoint)
        self.assertEqual(tcp._port, 7401)
        self.assertIsInstance(unix, UNIXServerEndpoint)
        self.assertEqual(unix._address, "/tmp/memux-test.sock")

    def test_defaultListens(self) -> None:
        """
        Without C{--listen}, the service listens on TCP port 7400 once
        started, with its multiplexing factory, and notes the port.
        """
        reactor, server = self.makeService()
        [child] = list(server)
        server.startService()
        self.addCleanup(server.stopService)
        [(port, factory, backlog, interface)] = reactor.tcpServers
        self.assertEqual(port, 7400)
        self.assertIs(factory, server.factory)
        self.assertIsNotNone(child.endpoint.port)

    def test_builtins(self) -> None:
        """
        By default the factory serves exactly the built-in services.
        """
        reactor, server = self.makeService()
        self.assertEqual(set(server.resolver.services), set(builtinServices()))
        self.assertEqual(server.resolver.allowConnect, [])

    def test_noBuiltins(self) -> None:
        """
        With C{--no-builtins} the factory serves no service.
        """
        reactor, server = self.makeService("--no-builtins")
        self.assertEqual(server.resolver.services, {})

    def test_mounts(self) -> None:
        """
        C{--service} mounts a forwarding factory for its endpoint and
        C{--factory} its factory; either replaces a built-in of the same
        name.
        """
        reactor, server = self.makeService(
            "--service",
            "db=tcp:db.internal:5432",
            "--factory",
            "echo=memux.test.test_tap.echoFactory",
        )
        services: dict[bytes, Any] = server.resolver.services
        self.assertEqual(set(services), {b"echo", b"discard", b"chargen", b"db"})
        self.assertIs(services[b"echo"], echoFactory)
        self.assertEqual(services[b"db"].describe, "tcp:db.internal:5432")
        self.assertIs(services[b"db"].endpoint._reactor, reactor)
        self.assertEqual(server.mounts[b"db"], "forwarded to tcp:db.internal:5432")
        self.assertEqual(
            server.mounts[b"echo"], "Python factory memux.test.test_tap.echoFactory"
        )

    def test_allowConnect(self) -> None:
        """
        The C{--allow-connect} patterns reach the services callable.
        """
        reactor, server = self.makeService("--allow-connect", "*.internal:5432")
        self.assertEqual(
            server.resolver.allowConnect, [DestinationPattern.parse("*.internal:5432")]
        )

    def test_defaultSettings(self) -> None:
        """
        Without settings options the factory has the default settings, and
        the server's default idle timeout.
        """
        reactor, server = self.makeService()
        self.assertEqual(
            server.factory.settings, SessionSettings(idleTimeout=DEFAULT_IDLE_TIMEOUT)
        )

    def test_settings(self) -> None:
        """
        The settings options reach the factory's session settings.
        """
        reactor, server = self.makeService(
            "--max-message-size", "1234", "--channel-credit", "2M"
        )
        self.assertEqual(
            server.factory.settings,
            SessionSettings(
                maxMessageSize=1234,
                channelCredit=2 << 20,
                idleTimeout=DEFAULT_IDLE_TIMEOUT,
            ),
        )

    def test_tls(self) -> None:
        """
        With C{--tls-cert}, every endpoint listens with the TLS options
        wrapped around the multiplexing factory.
        """
        certs = Certificates(self.mktemp())
        options = parse(
            "--tls-cert", certs.serverFile, "--listen", "tcp:1", "--listen", "tcp:2"
        )
        server = tap.makeService(options, reactor=MemoryReactorClock())
        self.assertIs(server.tls, options["tls"])
        children: list[Any] = list(server)
        self.assertIs(children[0].factory, children[1].factory)
        wrapper = children[0].factory
        self.assertIsInstance(wrapper, TLSMemoryBIOFactory)
        self.assertIs(wrapper.wrappedFactory, server.factory)
        self.assertTrue(all(child.endpoint.tls for child in children))

    def test_noTLS(self) -> None:
        """
        Without C{--tls-cert} the endpoints listen with the multiplexing
        factory itself.
        """
        reactor, server = self.makeService()
        [child] = list(server)
        self.assertIs(child.factory, server.factory)
        self.assertIsNone(server.tls)


class EchoTests(SynchronousTestCase):
    """
    Tests for L{Echo}.
    """

    def setUp(self) -> None:
        self.transport = StringChannelTransport(2, b"echo")
        self.protocol = Echo()
        self.protocol.makeConnection(self.transport)

    def test_echoesBytes(self) -> None:
        """
        Bytes received are written back unchanged.
        """
        self.protocol.dataReceived(b"hello, ")
        self.protocol.dataReceived(b"world")
        self.assertEqual(self.transport.value(), b"hello, world")

    def test_echoesChunks(self) -> None:
        """
        L{Echo} takes chunks of messages and sends each back at once,
        ending the echoed message where the received one ends.
        """
        self.assertTrue(IChunkReceiver.providedBy(self.protocol))
        self.assertFalse(IMessageReceiver.providedBy(self.protocol))
        self.protocol.chunkReceived(b"on", False)
        self.assertEqual(self.transport.value(), b"on")
        self.assertEqual(self.transport.messages, [])
        self.protocol.chunkReceived(b"e", True)
        self.protocol.chunkReceived(b"", True)
        self.protocol.chunkReceived(b"two", True)
        self.assertEqual(self.transport.messages, [b"one", b"", b"two"])

    def test_throttlesItsPeer(self) -> None:
        """
        L{Echo} registers its transport as the streaming producer of its own
        output, so reading pauses while echoes cannot be sent.
        """
        self.assertIs(self.transport.producer, self.transport)
        self.assertTrue(self.transport.streaming)

    def test_plainTransport(self) -> None:
        """
        On a transport that is not a push producer, L{Echo} registers no
        producer and still echoes.
        """

        class PlainTransport:
            written = b""

            def write(self, data: bytes) -> None:
                self.written += data

        transport = PlainTransport()
        protocol = Echo()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"x")
        self.assertEqual(transport.written, b"x")


class DiscardTests(SynchronousTestCase):
    """
    Tests for L{Discard}.
    """

    def test_discards(self) -> None:
        """
        Nothing received is written back or kept.
        """
        transport = StringTransport()
        protocol = Discard()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"x" * 100000)
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting)


class PausingTransport(StringTransport):
    """
    A L{StringTransport} that pauses its producer on every write, as TCP
    does when its buffer fills.
    """

    def write(self, data: bytes) -> None:
        """
        Record C{data}, then pause the producer.
        """
        super().write(data)
        assert self.producer is not None
        self.producer.pauseProducing()


class ChargenTests(SynchronousTestCase):
    """
    Tests for L{Chargen}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.transport = StringTransport()
        self.protocol = Chargen(self.clock, interval=1)
        self.protocol.makeConnection(self.transport)

    def takeOutput(self) -> bytes:
        """
        Return and clear what was written so far.
        """
        value: bytes = self.transport.value()
        self.transport.clear()
        return value

    def test_registersAsStreamingProducer(self) -> None:
        """
        L{Chargen} is an L{IPushProducer} registered, streaming, on its
        transport.
        """
        self.assertTrue(IPushProducer.providedBy(self.protocol))
        self.assertIs(self.transport.producer, self.protocol)
        self.assertTrue(self.transport.streaming)

    def test_pattern(self) -> None:
        """
        The output is the RFC 864 pattern: 72 printable characters per line,
        each line starting one character later, ending in CRLF, wrapping after
        the 95 printable ASCII characters.
        """
        output = self.takeOutput()
        lines = output.split(b"\r\n")
        self.assertEqual(lines[0], bytes(range(0x20, 0x20 + 72)))
        self.assertEqual(lines[1], bytes(range(0x21, 0x21 + 72)))
        self.assertEqual(lines[94], b"~" + bytes(range(0x20, 0x20 + 71)))
        self.assertEqual(output[: 95 * 74], Chargen.block)
        self.clock.advance(1)
        self.assertEqual(self.takeOutput(), Chargen.block)

    def test_streams(self) -> None:
        """
        L{Chargen} writes one block at once and another each reactor turn
        for as long as it is not paused.
        """
        self.assertEqual(len(self.takeOutput()), len(Chargen.block))
        for _ in range(3):
            self.assertEqual(len(self.clock.getDelayedCalls()), 1)
            self.clock.advance(1)
            self.assertEqual(len(self.takeOutput()), len(Chargen.block))

    def test_pauseAndResume(self) -> None:
        """
        After C{pauseProducing} nothing is written and nothing is scheduled
        until C{resumeProducing}, which starts writing again after the
        interval.
        """
        self.takeOutput()
        self.protocol.pauseProducing()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(self.takeOutput(), b"")
        self.protocol.resumeProducing()
        self.assertEqual(self.takeOutput(), b"")
        self.clock.advance(1)
        self.assertEqual(self.takeOutput(), Chargen.block)

    def test_resumeTwice(self) -> None:
        """
        Resuming an unpaused producer does not schedule a second writer.
        """
        self.protocol.resumeProducing()
        self.protocol.resumeProducing()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_pausedDuringWrite(self) -> None:
        """
        A transport that pauses L{Chargen} inside C{write} gets no further
        block until it resumes it.
        """
        transport = PausingTransport()
        protocol = Chargen(self.clock, interval=1)
        protocol.makeConnection(transport)
        self.assertEqual(transport.value(), Chargen.block)
        self.clock.advance(1)
        self.assertEqual(transport.value(), Chargen.block)
        protocol.resumeProducing()
        self.clock.advance(1)
        self.assertEqual(transport.value(), Chargen.block * 2)

    def test_stopProducing(self) -> None:
        """
        After C{stopProducing} nothing more is written, even if resumed.
        """
        self.takeOutput()
        self.protocol.stopProducing()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.protocol.resumeProducing()
        self.clock.advance(1)
        self.assertEqual(self.takeOutput(), b"")

    def test_stopsOnConnectionLost(self) -> None:
        """
        Losing the connection stops the generator.
        """
        self.takeOutput()
        self.protocol.connectionLost(Failure(ConnectionError()))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(1)
        self.assertEqual(self.takeOutput(), b"")

    def test_discardsInput(self) -> None:
        """
        Data received is ignored: the output is the pattern alone.
        """
        self.takeOutput()
        self.protocol.dataReceived(b"ignored")
        self.assertEqual(self.takeOutput(), b"")


class ChargenReactorTests(TestCase):
    """
    Tests for L{Chargen} with its defaults: the global reactor, one block
    per reactor turn.
    """

    def test_blockPerTurn(self) -> Deferred[None]:
        """
        L{Chargen} writes one block per reactor turn: it keeps writing, and
        it returns to the reactor in between.
        """
        from twisted.internet import reactor

        transport = StringTransport()
        protocol = Chargen()
        protocol.makeConnection(transport)
        self.addCleanup(protocol.stopProducing)
        self.assertEqual(transport.value(), Chargen.block)

        def check(ignored: None) -> None:
            written = len(transport.value())
            self.assertEqual(written % len(Chargen.block), 0)
            self.assertGreater(written, len(Chargen.block))

        return deferLater(reactor, 0.01, lambda: None).addCallback(check)


class BuiltinServicesTests(SynchronousTestCase):
    """
    Tests for L{builtinServices}.
    """

    def test_services(self) -> None:
        """
        The built-in services are echo, discard and chargen, each a protocol
        factory building the matching protocol.
        """
        services = builtinServices()
        expected = {b"echo": Echo, b"discard": Discard, b"chargen": Chargen}
        self.assertEqual(set(services), set(expected))
        for name, protocolClass in expected.items():
            factory = services[name]
            self.assertTrue(IProtocolFactory.providedBy(factory))
            assert isinstance(factory, Factory)
            self.assertIsInstance(factory.buildProtocol(None), protocolClass)

    def test_fresh(self) -> None:
        """
        Each call returns a new mapping, so callers may change theirs.
        """
        self.assertIsNot(builtinServices(), builtinServices())


class MessageRecorder(Protocol):
    """
    A channel protocol that keeps whole messages, and can stop reading
    after a number of bytes.

    @ivar pauseAfter: pause the transport once this many bytes arrived.
    """

    pauseAfter: int | None = None

    def __init__(self) -> None:
        self.received = b""
        self.messages: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        """
        Keep C{data}; pause the transport once C{pauseAfter} bytes arrived.
        """
        self.received += data
        if self.pauseAfter is not None and len(self.received) >= self.pauseAfter:
            assert self.transport is not None
            IPushProducer(self.transport).pauseProducing()


@implementer(IMessageReceiver)
class WholeMessageRecorder(MessageRecorder):
    """
    A L{MessageRecorder} that takes whole messages.
    """

    def messageReceived(self, message: bytes) -> None:
        """
        Keep C{message}.
        """
        self.messages.append(message)


class BuiltinServicesOverMemuxTests(SynchronousTestCase):
    """
    The built-in services served by real memux sessions, connected in
    memory.
    """

    def setUp(self) -> None:
        from memux.testing import connectedSessions

        self.clock = Clock()
        self.client, self.server, self.pump = connectedSessions(
            builtinServices(self.clock), clock=self.clock
        )

    def open(self, service: bytes, protocol: MessageRecorder) -> MessageRecorder:
        """
        Open a channel for C{service} from the client, connected to
        C{protocol}.
        """
        d = self.client.openChannel(service, Factory.forProtocol(lambda: protocol))
        self.assertIs(self.successResultOf(d), protocol)
        return protocol

    def test_echoMessages(self) -> None:
        """
        The echo service sends each message back as one message.
        """
        proto = self.open(b"echo", WholeMessageRecorder())
        transport = IChannelTransport(proto.transport)
        transport.writeMessage(b"hello")
        transport.writeMessage(b"")
        transport.write(b"wor")
        transport.write(b"ld")
        transport.endMessage()
        self.pump.flush()
        self.assertEqual(proto.messages, [b"hello", b"", b"world"])

    def test_echoBytes(self) -> None:
        """
        The echo service sends bytes back to a protocol that reads bytes.
        """
        proto = self.open(b"echo", MessageRecorder())
        assert proto.transport is not None
        proto.transport.write(b"hello, world")
        self.pump.flush()
        self.assertEqual(proto.received, b"hello, world")

    def test_echoThrottlesNonReader(self) -> None:
        """
        A peer that sends to echo without reading the echoes is stopped by
        flow control: the server stops inviting more once the echoes back up,
        so what it takes in stays within a few credit windows.
        """
        proto = MessageRecorder()
        proto.pauseAfter = 1
        self.open(b"echo", proto)
        assert proto.transport is not None
        window = SessionSettings().channelCredit
        for _ in range(64):
            proto.transport.write(b"x" * 65536)
            self.pump.flush()
        self.assertLess(self.server.counters()["bytesReceived"], 4 * window)

    def test_discard(self) -> None:
        """
        The discard service sends nothing back and keeps the channel open.
        """
        proto = self.open(b"discard", MessageRecorder())
        assert proto.transport is not None
        proto.transport.write(b"x" * 100000)
        self.pump.flush()
        self.assertEqual(proto.received, b"")
        from memux.protocol import ChannelTransport

        assert isinstance(proto.transport, ChannelTransport)
        self.assertTrue(proto.transport.connected)
        self.assertFalse(proto.transport.disconnecting)

    def test_chargenBackpressure(self) -> None:
        """
        The chargen service sends the RFC 864 pattern until the reader stops
        reading; then it stops within the channel's credit, and carries on
        when the reader resumes.
        """
        proto = MessageRecorder()
        proto.pauseAfter = 1
        self.open(b"chargen", proto)
        self.pump.flush()
        held = len(proto.received)
        self.assertEqual(proto.received, Chargen.block[:held])
        sent = self.server.counters()["bytesSent"]
        self.pump.flush()
        self.clock.advance(1)
        self.pump.flush()
        self.assertEqual(self.server.counters()["bytesSent"], sent)
        self.assertLess(sent, 4 * SessionSettings().channelCredit)

        proto.pauseAfter = held + 1000000
        assert proto.transport is not None
        IPushProducer(proto.transport).resumeProducing()
        self.pump.flush()
        self.assertGreaterEqual(len(proto.received), held + 1000000)
        pattern = Chargen.block * (len(proto.received) // len(Chargen.block) + 1)
        self.assertEqual(proto.received, pattern[: len(proto.received)])


class PriorityHintsOptionTests(SynchronousTestCase):
    """
    C{--ignore-priority-hints}: a server that keeps the priorities its own
    services set, whatever its clients ask.
    """

    def connect(self, *argv: str) -> tuple[MemuxProtocol, MemuxProtocol, IOPump]:
        """
        Start the server C{twistd memux} makes for C{argv} and connect a
        client session to its sessions' factory, in memory.
        """
        clock = MemoryReactorClock()
        server = tap.makeService(parse(*argv), reactor=clock)
        client, session, pump = connectedServerAndClient(
            lambda: server.factory.buildProtocol(None),
            lambda: MemuxProtocol(client=True, reactor=clock),
            clock=clock,
        )
        pump.flush()
        self.factory = server.factory
        return client, session, pump

    def openUrgent(self, client: MemuxProtocol, pump: IOPump) -> int:
        """
        Open a channel to the echo service from C{client}, ask for urgency 0
        and weight 64 on it, and return its id.
        """
        protocol = Protocol()
        client.openChannel(b"echo", Factory.forProtocol(lambda: protocol))
        transport = IChannelTransport(protocol.transport)
        transport.write(b"hello")
        transport.setPriority(0, 64)
        pump.flush()
        self.assertEqual(transport.priority, Priority(0, 64))
        channel: int = transport.channel
        return channel

    def serverPriority(self, channel: int) -> tuple[int | None, int | None]:
        """
        The urgency and weight the server sends C{channel}'s data at, as
        its status snapshot shows them.
        """
        [session] = self.factory.snapshot().sessions
        [found] = [c for c in session.channels if c.channel == channel]
        return found.priority, found.weight

    def test_default(self) -> None:
        """
        By default the server takes its clients' hints: the channel's data
        is sent back at the urgency and weight the client asked for.
        """
        self.assertTrue(parse()["settings"].acceptPriorityHints)
        client, session, pump = self.connect()
        self.assertEqual(client.engine.peerSettings.priorityHints, 1)
        channel = self.openUrgent(client, pump)
        self.assertEqual(self.serverPriority(channel), (0, 64))

    def test_ignore(self) -> None:
        """
        With C{--ignore-priority-hints} the server tells its clients it
        takes no hints (so a memux client sends none), and ignores one sent
        anyway: the channel keeps the default priority, and the session
        goes on.
        """
        options = parse("--ignore-priority-hints")
        self.assertFalse(options["settings"].acceptPriorityHints)
        client, session, pump = self.connect("--ignore-priority-hints")
        self.assertEqual(client.engine.peerSettings.priorityHints, 0)
        channel = self.openUrgent(client, pump)
        default = Priority()
        self.assertEqual(
            self.serverPriority(channel), (default.urgency, default.weight)
        )
        session.dataReceived(PriorityFrame(channel, 0, 64).encode())
        pump.flush()
        self.assertEqual(
            self.serverPriority(channel), (default.urgency, default.weight)
        )
        self.assertTrue(session.connected)


class IdleTimeoutOptionTests(SynchronousTestCase):
    """
    --idle-timeout.
    """

    def test_default(self) -> None:
        """
        By default a server ends sessions idle for 10 minutes.
        """
        self.assertEqual(parse()["settings"].idleTimeout, 600)

    def test_given(self) -> None:
        """
        --idle-timeout sets the session settings' idleTimeout; 0 means never.
        """
        self.assertEqual(parse("--idle-timeout", "2.5")["settings"].idleTimeout, 2.5)
        self.assertIsNone(parse("--idle-timeout", "0")["settings"].idleTimeout)

    def test_negative(self) -> None:
        """
        A negative --idle-timeout is a usage error saying what it takes.
        """
        e = self.assertRaises(UsageError, parse, "--idle-timeout", "-1")
        self.assertEqual(
            str(e),
            "--idle-timeout must be a number of seconds, 0 (never) or more, not '-1'",
        )


class TimeoutOptionTests(SynchronousTestCase):
    """
    C{--write-timeout}, C{--handshake-timeout} and C{--drain-timeout}.
    """

    def test_defaults(self) -> None:
        """
        By default the write and handshake timeouts are the session
        settings' (60 s and 20 s), and the drain timeout is 30 s.
        """
        options = parse()
        self.assertEqual(options["settings"].writeTimeout, 60)
        self.assertEqual(options["settings"].handshakeTimeout, 20)
        self.assertEqual(options["drain-timeout"], DEFAULT_DRAIN_TIMEOUT)
        self.assertEqual(DEFAULT_DRAIN_TIMEOUT, 30)

    def test_given(self) -> None:
        """
        The options set the session settings and the drain timeout; 0
        turns the write and handshake timeouts off.
        """
        options = parse(
            "--write-timeout",
            "7.5",
            "--handshake-timeout",
            "3",
            "--drain-timeout",
            "12",
        )
        self.assertEqual(options["settings"].writeTimeout, 7.5)
        self.assertEqual(options["settings"].handshakeTimeout, 3)
        self.assertEqual(options["drain-timeout"], 12)
        options = parse("--write-timeout", "0", "--handshake-timeout", "0")
        self.assertIsNone(options["settings"].writeTimeout)
        self.assertIsNone(options["settings"].handshakeTimeout)
        self.assertEqual(parse("--drain-timeout", "0")["drain-timeout"], 0)

    def test_negative(self) -> None:
        """
        A negative timeout is a usage error naming the option.
        """
        for option in ("--write-timeout", "--handshake-timeout", "--drain-timeout"):
            e = self.assertRaises(UsageError, parse, option, "-1")
            self.assertIn(option, str(e))

    def test_notANumber(self) -> None:
        """
        A number of seconds that is not a finite number is a usage error
        naming the option and what 0 means, not Twisted's "Parameter type
        enforcement failed".
        """
        for option, zero in [
            ("idle-timeout", "never"),
            ("keepalive", "off"),
            ("write-timeout", "never"),
            ("handshake-timeout", "never"),
            ("drain-timeout", "at once"),
        ]:
            for bad in ("soon", "abc", "inf", "nan", ""):
                e = self.assertRaises(UsageError, parse, f"--{option}", bad)
                self.assertEqual(
                    str(e),
                    f"--{option} must be a number of seconds, 0 ({zero}) or more,"
                    f" not {bad!r}",
                )

    def test_help(self) -> None:
        """
        The help lists the three options with their defaults.
        """
        text = " ".join(str(tap.Options()).split())
        for option, default in [
            ("write-timeout", 60),
            ("handshake-timeout", 20),
            ("drain-timeout", 30),
        ]:
            start = text.index(f"--{option}=")
            section = text[start : text.index("--", start + 3)]
            self.assertIn(f"[default: {default:.1f}]", section)

    def test_reachService(self) -> None:
        """
        makeService gives the drain timeout to the server and the other two
        to the sessions' settings.
        """
        options = parse(
            "--drain-timeout", "5", "--write-timeout", "6", "--handshake-timeout", "7"
        )
        server = tap.makeService(options, reactor=MemoryReactorClock())
        self.assertEqual(server.drainTimeout, 5)
        self.assertEqual(server.factory.settings.writeTimeout, 6)
        self.assertEqual(server.factory.settings.handshakeTimeout, 7)


class LossRecorder(WholeMessageRecorder):
    """
    A L{WholeMessageRecorder} that keeps why its channel ended.
    """

    lost: Failure | None = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Keep C{reason}.
        """
        self.lost = reason


class DrainTests(SynchronousTestCase):
    """
    Stopping the L{tap.MemuxServer} (twistd does on SIGTERM) stops
    listening and drains the sessions: GOAWAY, open channels may finish,
    and sessions left at C{--drain-timeout} are aborted; C{stopService}'s
    Deferred fires when every session has closed.
    """

    def setUp(self) -> None:
        """
        Start a server on a memory reactor, with a C{record} service too.
        """
        self.reactor = MemoryReactorClock()
        options = parse("--drain-timeout", "30")
        self.server = tap.makeService(options, reactor=self.reactor)
        self.server.startService()
        self.recorders: list[LossRecorder] = []

        def record() -> LossRecorder:
            self.recorders.append(LossRecorder())
            return self.recorders[-1]

        self.server.resolver.services[b"record"] = Factory.forProtocol(record)

    def connect(self) -> tuple[MemuxProtocol, MemuxProtocol, IOPump]:
        """
        A client session connected in memory to a session of the server:
        C{(client, server session, pump)}.
        """
        return connectedServerAndClient(
            lambda: self.server.factory.buildProtocol(None),
            lambda: MemuxProtocol(client=True, reactor=self.reactor),
            clock=self.reactor,
        )

    def open(
        self, client: MemuxProtocol, service: bytes, protocol: LossRecorder
    ) -> IChannelTransport:
        """
        Open a channel for C{service} from C{client} to C{protocol}.
        """
        d = client.openChannel(service, Factory.forProtocol(lambda: protocol))
        self.assertIs(self.successResultOf(d), protocol)
        return IChannelTransport(protocol.transport)

    def test_channelFinishes(self) -> None:
        """
        A client with a channel open sees GOAWAY naming that channel as the
        last processed; a channel it opened meanwhile is refused (safe to
        retry elsewhere); its open channel carries on until it closes it;
        then the connection closes, listening has stopped, and
        C{stopService}'s Deferred fires, leaving no timer behind.
        """
        client, session, pump = self.connect()
        mine = LossRecorder()
        channel = self.open(client, b"echo", mine)
        channel.writeMessage(b"one")
        pump.flush()
        stopped = self.server.stopService()
        late = LossRecorder()
        self.open(client, b"echo", late)  # crosses the GOAWAY
        pump.flush()
        self.assertEqual(client.engine.goAwayReceived, 1)
        assert late.lost is not None
        refused = late.lost.value
        assert isinstance(refused, ChannelRefused)
        self.assertTrue(refused.remote)
        self.assertNoResult(stopped)
        channel.writeMessage(b"two")
        pump.flush()
        self.assertEqual(mine.messages, [b"one", b"two"])
        self.assertNoResult(stopped)
        channel.loseConnection()
        pump.flush()
        self.assertIsNone(self.successResultOf(stopped))
        assert client.lostReason is not None
        self.assertTrue(client.lostReason.check(ConnectionDone))
        self.assertEqual([child.running for child in self.server], [False])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_idleSessionsCloseAtOnce(self) -> None:
        """
        Sessions with no channel open close as soon as their GOAWAY is
        written.
        """
        pairs = [self.connect() for _ in range(3)]
        stopped = self.server.stopService()
        for client, session, pump in pairs:
            pump.flush()
            self.assertIsNotNone(client.engine.goAwayReceived)
            self.assertIsNotNone(session.lostReason)
        self.assertIsNone(self.successResultOf(stopped))

    def test_deadline(self) -> None:
        """
        A session whose channel never ends is aborted at the drain timeout,
        not before: the channel's protocol hears SessionLost saying why,
        and C{stopService}'s Deferred fires.
        """
        client, session, pump = self.connect()
        channel = self.open(client, b"record", LossRecorder())
        channel.writeMessage(b"busy")
        pump.flush()
        stopped = self.server.stopService()
        pump.flush()
        self.reactor.advance(29.9)
        pump.flush()
        self.assertNoResult(stopped)
        self.assertIsNone(session.lostReason)
        self.reactor.advance(0.1)
        pump.flush()
        self.assertIsNone(self.successResultOf(stopped))
        [served] = self.recorders
        self.assertEqual(served.messages, [b"busy"])
        assert served.lost is not None
        lost = served.lost.value
        assert isinstance(lost, SessionLost)
        self.assertIn("shutting down", lost.reason)
        self.assertIsNotNone(client.lostReason)

    def test_sessionDuringDrain(self) -> None:
        """
        A session that starts while the listeners are closing is sent
        GOAWAY at once, and is waited for too.
        """
        first, session, pump = self.connect()
        self.open(first, b"record", LossRecorder())
        pump.flush()
        stopped = self.server.stopService()
        late, lateSession, latePump = self.connect()
        latePump.flush()
        self.assertIsNotNone(late.engine.goAwayReceived)
        self.assertIsNotNone(lateSession.lostReason)
        self.assertNoResult(stopped)
        self.reactor.advance(30)
        pump.flush()
        self.successResultOf(stopped)

    def test_nothingToDrain(self) -> None:
        """
        With no session, C{stopService}'s Deferred fires once listening has
        stopped.
        """
        self.assertIsNone(self.successResultOf(self.server.stopService()))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_listeningAgain(self) -> None:
        """
        Once its factory is started again (a port listening with it anew),
        new sessions are served normally, not drained.
        """
        self.successResultOf(self.server.stopService())
        self.server.factory.doStart()
        client, session, pump = self.connect()
        mine = LossRecorder()
        self.open(client, b"echo", mine).writeMessage(b"hello")
        pump.flush()
        self.assertIsNone(client.engine.goAwayReceived)
        self.assertEqual(mine.messages, [b"hello"])
        self.assertEqual(self.server.factory.connectedSessions(), [session])
