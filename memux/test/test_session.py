# -*- test-case-name: memux.test.test_session -*-
"""
Tests for the sans-IO session core, `memux._session.SessionCore` and
`memux._channel.ChannelCore`, driven with no reactor: a fake host records
what the core writes and asks for, and time is a number the test sets.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from memux._channel import ChannelCore, Ending, Notice
from memux._engine import ChannelOpened
from memux._session import (
    KEEPALIVE_PAYLOAD,
    LOAD_BUDGET_PERIOD,
    LOGGED_CHANNEL_ENDINGS,
    RTT_PING,
    SessionCore,
    chooseService,
)
from memux._wire import (
    CreditFrame,
    DataFrame,
    FrameDecoder,
    GoAwayFrame,
    OpenFrame,
    PingFrame,
    Preface,
    Settings,
    encodePreface,
)
from memux.codes import ErrorCode
from memux.settings import SessionSettings


class Call:
    """
    A call the core asked for, run when the test says.
    """

    def __init__(self, f: Callable[..., object], args: tuple[object, ...]) -> None:
        self.f = f
        self.args = args
        self.cancelled = False
        self.called = False

    def active(self) -> bool:
        return not (self.cancelled or self.called)

    def cancel(self) -> None:
        self.cancelled = True


class FakeHost:
    """
    A `SessionHost` that records: bytes written (decoded as frames), the
    connection closed or aborted, calls asked for, deadlines, notices.
    """

    def __init__(self) -> None:
        self.time = 0.0
        self.decoder = FrameDecoder(1 << 24)
        self.frames: list[Any] = []
        self.closed = False
        self.aborted = False
        self.calls: list[Call] = []
        self.wakes: list[float | None] = []
        self.notices: list[Notice] = []
        self.pings: list[tuple[bytes, float]] = []
        self.channels: list[Recorder] = []
        self.core: SessionCore | None = None
        self.closing = False
        self.bulk: list[bool] = []
        self.latency: list[bool] = []

    def now(self) -> float:
        return self.time

    def write(self, pieces: list[bytes]) -> None:
        for item in self.decoder.receive(b"".join(pieces)):
            if not isinstance(item, Preface):
                self.frames.append(item)

    def closeConnection(self) -> None:
        self.closed = True

    def abortConnection(self) -> None:
        self.aborted = True

    def connectionClosing(self) -> bool:
        return self.closing

    def flushSoon(self) -> Call:
        assert self.core is not None
        return self.callSoon(self.core.flush)

    def wakeAt(self, deadline: float | None) -> None:
        self.wakes.append(deadline)

    def callSoon(self, f: Callable[..., object], *args: object) -> Call:
        call = Call(f, args)
        self.calls.append(call)
        return call

    def notice(self, notice: Notice) -> None:
        self.notices.append(notice)

    def channelRequested(self, event: ChannelOpened) -> ChannelCore | str:
        assert self.core is not None
        if event.service != b"record":
            return "no such service"
        channel = Recorder(self.core, event.channel, event.service)
        self.core.register(channel)
        self.channels.append(channel)
        return channel

    def pingAnswered(self, payload: bytes, rtt: float) -> None:
        self.pings.append((payload, rtt))

    def bulkMode(self, on: bool) -> None:
        self.bulk.append(on)

    def latencyMode(self, on: bool) -> None:
        self.latency.append(on)

    def runCalls(self) -> None:
        """
        Run the calls asked for (and those they ask for), as an event loop
        would.
        """
        while self.calls:
            calls, self.calls = self.calls, []
            for call in calls:
                if call.active():
                    call.called = True
                    call.f(*call.args)

    def take(self) -> list[Any]:
        """
        The frames written since the last call.
        """
        frames, self.frames = self.frames, []
        return frames


class Recorder(ChannelCore):
    """
    A channel object whose protocol is itself: it records what it is told.
    """

    def __init__(self, core: SessionCore, channel: int, service: bytes, mode: int = 0):
        super().__init__(core, channel, service, protocol=None, mode=mode)
        self.protocol = self
        self.received: list[Any] = []
        self.ending: Ending | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def messageReceived(self, message: bytes) -> None:
        self.received.append(("message", message))

    def _lose(self, ending: Ending) -> None:
        self.ending = ending

    def _failed(self) -> Any:
        return "failed"


def connected(settings: SessionSettings | None = None) -> tuple[FakeHost, SessionCore]:
    """
    A server core on a fake host, connected at time 0, after a peer's
    preface.
    """
    host = FakeHost()
    core = SessionCore(host, False, settings)
    host.core = core
    core.connectionMade()
    core.receiveData(encodePreface(Settings()))
    host.take()
    return host, core


class DeadlineTests(SynchronousTestCase):
    """
    Every timer of a session is a deadline the core names
    (`nextDeadline`) and acts on (`handleTimer`), under a fake clock.
    """

    def test_handshake(self) -> None:
        """
        A peer that sends no preface within handshakeTimeout is told GOAWAY
        IDLE_TIMEOUT and its connection closed, at the deadline, not
        before; one whose preface came in time has no deadline left.
        """
        host = FakeHost()
        core = SessionCore(host, False, SessionSettings(writeTimeout=None))
        host.core = core
        core.connectionMade()
        self.assertEqual(core.nextDeadline(), 20.0)
        self.assertIn(20.0, host.wakes)
        core.handleTimer(19.9)
        self.assertFalse(host.closed)
        core.handleTimer(20.0)
        self.assertEqual(
            [(type(f), f.code) for f in host.take()],
            [(GoAwayFrame, ErrorCode.IDLE_TIMEOUT)],
        )
        self.assertTrue(host.closed)
        host2, core2 = connected(SessionSettings(writeTimeout=None))
        self.assertIsNone(core2.nextDeadline())
        self.assertEqual(host2.wakes[-1], None)

    def test_handshakeOutputBlocked(self) -> None:
        """
        When the connection takes nothing more, the handshake timeout
        aborts it (a GOAWAY could never go).
        """
        host = FakeHost()
        core = SessionCore(host, False)
        host.core = core
        core.connectionMade()
        core.pauseOutput()
        core.handleTimer(20.0)
        self.assertTrue(host.aborted)

    def test_idle(self) -> None:
        """
        No channel open for idleTimeout: GOAWAY IDLE_TIMEOUT; a channel
        open meanwhile puts the deadline off until it closes.
        """
        host, core = connected(SessionSettings(idleTimeout=5.0, writeTimeout=None))
        self.assertEqual(core.nextDeadline(), 5.0)
        host.time = 3.0
        core.receiveData(OpenFrame(1, b"record").encode())
        self.assertIsNone(core.nextDeadline())
        host.channels[0].loseConnection()
        core.receiveData(DataFrame(1, fin=True).encode())
        host.runCalls()
        self.assertEqual(core.nextDeadline(), 8.0)
        host.take()
        core.handleTimer(8.0)
        host.runCalls()
        self.assertEqual(
            [(type(f), f.code) for f in host.take()],
            [(GoAwayFrame, ErrorCode.IDLE_TIMEOUT)],
        )
        self.assertEqual([n.what for n in host.notices][-1:], ["idle timeout"])

    def test_keepalive(self) -> None:
        """
        Nothing heard for keepAliveInterval: a PING; nothing again for as
        long: GOAWAY IDLE_TIMEOUT, and an abort one interval later.
        Anything heard meanwhile puts it all off.
        """
        settings = SessionSettings(keepAliveInterval=10.0, writeTimeout=None)
        host, core = connected(settings)
        core.handleTimer(10.0)  # the preface was heard: alive
        self.assertEqual(host.take(), [])
        self.assertEqual(core.nextDeadline(), 20.0)
        core.handleTimer(20.0)
        host.runCalls()
        self.assertEqual(host.take(), [PingFrame(KEEPALIVE_PAYLOAD)])
        core.handleTimer(30.0)
        host.runCalls()
        [goAway] = host.take()
        assert isinstance(goAway, GoAwayFrame)
        self.assertEqual(goAway.code, ErrorCode.IDLE_TIMEOUT)
        self.assertFalse(host.aborted)
        self.assertEqual(core.nextDeadline(), 40.0)
        core.handleTimer(40.0)
        self.assertTrue(host.aborted)

    def test_writeTimeout(self) -> None:
        """
        Output blocked for writeTimeout aborts; a resume in between starts
        the count again; a resume from a connection being closed under us
        does not.
        """
        host, core = connected(SessionSettings(writeTimeout=60.0))
        host.time = 1.0
        core.pauseOutput()
        self.assertEqual(core.nextDeadline(), 61.0)
        host.time = 30.0
        core.resumeOutput()
        self.assertIsNone(core.nextDeadline())
        host.time = 40.0
        core.pauseOutput()
        core.handleTimer(99.0)
        self.assertFalse(host.aborted)
        host.closing = True
        core.resumeOutput()  # the connection closes under us: still counts
        self.assertTrue(host.closed)
        self.assertEqual(core.nextDeadline(), 100.0)
        core.handleTimer(100.0)
        self.assertTrue(host.aborted)
        self.assertEqual(
            core.terminatedWith,
            (ErrorCode.IDLE_TIMEOUT, "the peer read nothing for 60 s"),
        )

    def test_loadBudgetRefill(self) -> None:
        """
        The peer's allowance of frames that do no work is refilled once a
        LOAD_BUDGET_PERIOD, by the time of its reads.
        """
        host, core = connected(SessionSettings(maxUselessFrames=10, writeTimeout=None))
        core.receiveData(PingFrame(b"p").encode() * 10)
        self.assertFalse(core.engine.terminated)
        host.time = LOAD_BUDGET_PERIOD
        core.receiveData(PingFrame(b"p").encode() * 10)
        self.assertFalse(core.engine.terminated)
        core.receiveData(PingFrame(b"p").encode())
        self.assertTrue(core.engine.terminated)

    def test_pingRoundTrip(self) -> None:
        """
        A PING's answer reports its round-trip time by the host's clock.
        """
        host, core = connected(SessionSettings(writeTimeout=None))
        core.ping(b"12345678")
        host.runCalls()
        self.assertEqual(host.take(), [PingFrame(b"12345678")])
        host.time = 0.25
        core.receiveData(PingFrame(b"12345678", ack=True).encode())
        self.assertEqual(host.pings, [(b"12345678", 0.25)])


class Refused(Exception):
    """
    A front end's refusal, with the reason the peer is sent.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ServiceChoiceTests(SynchronousTestCase):
    """
    The policy both front ends use to serve or refuse a channel the peer
    opened (`chooseService`), and how many endings they log.
    """

    def choose(
        self,
        event: ChannelOpened,
        services: dict[bytes, str] | None = None,
        chooser: Callable[[ChannelOpened], str | None] | None = None,
    ) -> tuple[str, list[ChannelOpened]]:
        failed: list[ChannelOpened] = []

        def never(event: ChannelOpened) -> str | None:
            raise AssertionError("a service map asks no chooser")

        chosen = chooseService(
            event, services, chooser or never, Refused, failed.append
        )
        return chosen, failed

    def test_serviceMap(self) -> None:
        """
        A service map serves the services it names (the empty name is the
        default service); any other is refused, naming what was asked for.
        """
        services = {b"echo": "echo", b"": "default"}
        self.assertEqual(self.choose(ChannelOpened(1, b"echo"), services)[0], "echo")
        self.assertEqual(self.choose(ChannelOpened(1, b""), services)[0], "default")
        self.assertEqual(
            self.choose(ChannelOpened(1, b"nope"), services)[0], "no service 'nope'"
        )
        self.assertEqual(
            self.choose(ChannelOpened(1, b""), {b"echo": "echo"})[0],
            "no default service",
        )

    def test_serviceMapForwardsNowhere(self) -> None:
        """
        A channel asking to be forwarded to a destination is refused by a
        service map, even for a service the map has.
        """
        event = ChannelOpened(1, b"echo", destination=("127.0.0.1", 7))
        self.assertEqual(
            self.choose(event, {b"echo": "echo"})[0],
            "this session forwards to no destination",
        )

    def test_chooser(self) -> None:
        """
        A chooser is asked with the event; what it returns serves the
        channel, None refuses it like an unknown service, and a refusal it
        raises is sent with its reason (or "refused" if it gave none).
        """
        event = ChannelOpened(3, b"svc", b"meta", ("127.0.0.1", 7), True)
        asked: list[ChannelOpened] = []

        def chooser(e: ChannelOpened) -> str | None:
            asked.append(e)
            return "served"

        self.assertEqual(self.choose(event, chooser=chooser), ("served", []))
        self.assertEqual(asked, [event])
        self.assertEqual(
            self.choose(event, chooser=lambda e: None)[0], "no service 'svc'"
        )

        def refuse(reason: str) -> Callable[[ChannelOpened], str | None]:
            def chooser(e: ChannelOpened) -> str | None:
                raise Refused(reason)

            return chooser

        self.assertEqual(self.choose(event, chooser=refuse("busy"))[0], "busy")
        self.assertEqual(self.choose(event, chooser=refuse(""))[0], "refused")

    def test_chooserFault(self) -> None:
        """
        Any other exception from the chooser is reported to the front end
        (to log, while the exception is being handled) and the peer is told
        only "internal error", not the exception's text.
        """
        event = ChannelOpened(5, b"svc")
        handling: list[bool] = []

        def broken(e: ChannelOpened) -> str | None:
            raise KeyError("secret")

        def failed(e: ChannelOpened) -> None:
            handling.append(sys.exc_info()[0] is KeyError)

        chosen = chooseService(event, None, broken, Refused, failed)
        self.assertEqual((chosen, handling), ("internal error", [True]))

    def test_endingsLoggedThenCounted(self) -> None:
        """
        A session's first LOGGED_CHANNEL_ENDINGS channel endings are logged;
        the rest are counted (for one line as the session ends), however
        many there are.
        """
        host, core = connected()
        extra = 3 * LOGGED_CHANNEL_ENDINGS + 7
        logged = [core.mayLogEnding() for _ in range(LOGGED_CHANNEL_ENDINGS + extra)]
        self.assertEqual(logged, [True] * LOGGED_CHANNEL_ENDINGS + [False] * extra)
        self.assertEqual(core.endingsUnlogged, extra)


class ChannelCoreTests(SynchronousTestCase):
    """
    A channel's inbound side with no reactor: held while paused, delivered
    in order on resume, ended after what it held.
    """

    def test_pausedHoldsInOrder(self) -> None:
        """
        Data arriving while the channel is paused is held; on resume it is
        delivered (soon, not from inside the resume), then the clean end.
        """
        host, core = connected(SessionSettings(writeTimeout=None))
        core.receiveData(OpenFrame(1, b"record").encode())
        [channel] = host.channels
        channel.pauseProducing()
        core.receiveData(DataFrame(1, b"one").encode() + DataFrame(1, b"two").encode())
        self.assertEqual(channel.received, [])
        channel.resumeProducing()
        self.assertEqual(channel.received, [])
        host.runCalls()
        self.assertEqual(channel.received, [b"one", b"two"])

    def test_messageTooLarge(self) -> None:
        """
        A message over maxMessageSize resets its channel with
        MESSAGE_TOO_LARGE; the channel hears a reset, never a partial
        message.
        """
        host, core = connected(SessionSettings(maxMessageSize=10, writeTimeout=None))
        core.receiveData(OpenFrame(1, b"record").encode())
        channel = host.channels[0]
        channel._mode = 1  # messages
        core.receiveData(
            DataFrame(1, b"x" * 8).encode() + DataFrame(1, b"y" * 8).encode()
        )
        self.assertEqual(channel.received, [])
        assert channel.ending is not None
        self.assertEqual(
            (channel.ending.kind, channel.ending.code),
            ("reset", ErrorCode.MESSAGE_TOO_LARGE),
        )

    def test_refused(self) -> None:
        """
        A channel the host will not serve is refused with its reason.
        """
        host, core = connected(SessionSettings(writeTimeout=None))
        core.receiveData(OpenFrame(1, b"nothing").encode())
        resets = [f for f in host.take() if f.__class__.__name__ == "ResetFrame"]
        self.assertEqual(
            [(f.code, f.reason) for f in resets],
            [(ErrorCode.REFUSED, "no such service")],
        )


class SubclassTests(SynchronousTestCase):
    """
    The front ends' channel classes keep to the rule `ChannelCore` sets for
    subclasses: compiled, its methods read its own fields, so a subclass
    that shadowed one with a class attribute would be ignored there.
    """

    def test_noShadowedFields(self) -> None:
        """
        Neither front end's channel class (nor anything between it and
        C{ChannelCore}) has a class attribute named as one of
        C{ChannelCore}'s fields.
        """
        from memux.aio._channel import _AioChannel
        from memux.transport import ChannelTransport

        fields = {
            name
            for name, value in vars(ChannelCore).items()
            if not name.startswith("__") and not callable(value)
        }
        self.assertIn("streamingProducer", fields)  # (the test sees fields)
        for subclass in (ChannelTransport, _AioChannel):
            mro = subclass.__mro__
            for klass in mro[: mro.index(ChannelCore)]:
                shadowed = sorted(
                    name
                    for name, value in vars(klass).items()
                    if name in fields and not callable(value)
                )
                self.assertEqual(shadowed, [], klass.__qualname__)


class CreditTuningTests(SynchronousTestCase):
    """
    Receive-window auto-tuning through the core: it samples the round trip
    with a PING of its own, grows a busy channel's window, and sets a
    slow reader's back.
    """

    def busy(self) -> tuple[FakeHost, SessionCore, Recorder]:
        """
        A core whose peer has opened channel 1 (its reader keeps up).
        """
        host, core = connected(SessionSettings(writeTimeout=None))
        core.receiveData(OpenFrame(1, b"record").encode())
        [channel] = host.channels
        host.take()
        return host, core, channel

    def feed(self, host: FakeHost, core: SessionCore, at: float, n: int) -> list[Any]:
        """
        At time ``at``, ``n`` bytes arrive on channel 1 (in 64 KiB frames);
        return the frames the core wrote in answer.
        """
        host.time = at
        while n:
            size = min(n, 65536)
            core.receiveData(DataFrame(1, b"d" * size).encode())
            n -= size
        host.runCalls()
        return host.take()

    def test_roundTripSampledOnce(self) -> None:
        """
        The first grant sends a PING of the core's own; its answer is a
        round-trip sample, not reported as a user's ping; no other PING
        goes out while grants go on.
        """
        host, core, channel = self.busy()
        frames = self.feed(host, core, 0.001, 512 * 1024)
        pings = [f for f in frames if isinstance(f, PingFrame)]
        self.assertEqual(len(pings), 1)
        self.assertTrue(pings[0].payload.startswith(RTT_PING))
        host.time = 0.004
        core.receiveData(PingFrame(pings[0].payload, ack=True).encode())
        self.assertEqual(host.pings, [])
        tuning = core.engine.creditTuning
        assert tuning is not None
        self.assertAlmostEqual(tuning.rtt or 0, 0.003)
        frames = self.feed(host, core, 0.005, 2 * 1024 * 1024)
        self.assertFalse([f for f in frames if isinstance(f, PingFrame)])

    def test_busyChannelGrows(self) -> None:
        """
        A channel whose reader keeps up, granted credit faster than every
        two round trips, is granted ever more, up to the cap.
        """
        host, core, channel = self.busy()
        frames = self.feed(host, core, 0.001, 512 * 1024)
        [ping] = [f for f in frames if isinstance(f, PingFrame)]
        host.time = 0.011
        core.receiveData(PingFrame(ping.payload, ack=True).encode())  # 10 ms
        consumed = 512 * 1024
        windows, limits = [], []
        for i in range(1, 12):
            limit = core.engine._channels[1].recv.limit
            frames = self.feed(host, core, 0.011 + 0.004 * i, limit - consumed)
            consumed = limit
            windows.append(core.engine._channels[1].recv.window)
            limits += [
                f.limit for f in frames if isinstance(f, CreditFrame) and f.channel == 1
            ]
        self.assertEqual(windows[:4], [2 << 20, 4 << 20, 8 << 20, 16 << 20])
        self.assertEqual(windows[-1], SessionSettings().channelCreditLimit)
        # What the peer is invited to send grows as fast: granted at half
        # the old window consumed, each CREDIT raises the limit by the new
        # window less half the old.
        steps = [b - a for a, b in zip(limits, limits[1:], strict=False)]
        self.assertEqual(steps[:3], [3 << 20, 6 << 20, 12 << 20])

    def test_slowReaderShrinks(self) -> None:
        """
        A grown window goes back to the initial size when its reader,
        paused for longer than `CreditTuning.SHRINK_AFTER_SECONDS`, resumes:
        the clock is read when held data is delivered, not only on reads.
        """
        host, core, channel = self.busy()
        frames = self.feed(host, core, 0.001, 512 * 1024)
        [ping] = [f for f in frames if isinstance(f, PingFrame)]
        host.time = 0.011
        core.receiveData(PingFrame(ping.payload, ack=True).encode())
        self.feed(host, core, 0.012, 512 * 1024)
        self.assertEqual(core.engine._channels[1].recv.window, 2 << 20)
        channel.pauseProducing()
        self.feed(host, core, 0.013, 2 << 20)
        host.time = 5.0
        channel.resumeProducing()
        host.runCalls()
        self.assertEqual(core.engine._channels[1].recv.window, 1 << 20)


class PureCoreTests(SynchronousTestCase):
    """
    The core is sans-IO: it imports without Twisted (or zope.interface), as
    a front end for another event loop needs.
    """

    def test_importsWithoutTwisted(self) -> None:
        """
        With Twisted and zope made unimportable, ``memux`` and its pure
        modules (codes, settings, wire, engine, session core) import, and
        a session core runs; and with mypy_extensions unimportable too (a
        build requirement only), a channel class can still be subclassed.
        """
        import subprocess
        import sys

        code = (
            "import sys\n"
            "class Blocker:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('twisted', 'zope', 'mypy_extensions'):\n"
            "            raise ImportError(name)\n"
            "sys.meta_path.insert(0, Blocker())\n"
            "import memux, memux.codes, memux.settings, memux._wire\n"
            "import memux._engine, memux._session, memux._channel\n"
            "class Channel(memux._channel.ChannelCore): pass\n"
            "print(memux.SessionSettings().maxChannels)\n"
        )
        from memux.test._helpers import ROOT

        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT
        )
        self.assertEqual((done.returncode, done.stdout, done.stderr), (0, "1024\n", ""))
