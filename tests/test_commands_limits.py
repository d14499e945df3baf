"""
The command socket against hostile or careless clients (issue 17): a client
that sends and never reads, idle clients holding every slot, a flood of
lines, a wrong or missing token, the unix socket's permissions and an admin
socket facing the network without a token.

Real loopback sockets where the probe is about sockets (buffers, the unix
socket's mode); StringTransport and Clock where it is about timing.
"""

import os
import socket
import stat

from twisted.application.service import Service
from twisted.internet import defer, reactor
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import (
    EventLoggingObserver,
    MemoryReactor,
    StringTransport,
)
from twisted.logger import formatEvent
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase, TestCase

from grott import logs, tap
from grott.codec import InverterReadReply
from grott.commands import HELP, CommandDispatcher, CommandFactory, settings_help
from grott.config import ConfigError, config_from_string
from grott.service import PrivateListener, makeService
from grott.session import Registry
from tests.test_commands_unit import SERIAL, Fixture

TOKEN = "t0k3n-For-The-Admin-Socket"
#: What one "help" answer costs on the wire.
HELP_ANSWER = sum(len(line) + 2 for line in HELP + settings_help()) + 2


class Client(LineReceiver):
    """
    An admin client counting complete answers (each ends with an empty line).
    """

    def connectionMade(self):
        self.answers = []
        self.current = []
        self.lost = defer.Deferred()

    def lineReceived(self, line):
        if line:
            self.current.append(line.decode("latin-1"))
        else:
            self.answers.append(self.current)
            self.current = []

    def connectionLost(self, reason):
        self.lost.callback(None)


async def poll(condition, timeout=20.0, step=0.005):
    """
    Wait until C{condition()} is true, checking every C{step} seconds, for at
    most C{timeout} seconds (then fail).
    """
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        await deferLater(reactor, step, lambda: None)


def held_for(server):
    """
    Bytes grott holds for one admin client: answers in the transport's write
    buffer, plus lines read but not yet handled.
    """
    t = server.transport
    return len(t.dataBuffer) - t.offset + t._tempDataLen + len(server._buffer)


class Admin:
    """
    One admin client over a StringTransport (or C{transport}).
    """

    def __init__(self, fixture, transport=None, **kw):
        self.factory = CommandFactory(fixture.dispatcher, lambda: ["report"], **kw)
        self.protocol = self.factory.buildProtocol(None)
        self.transport = StringTransport() if transport is None else transport
        self.protocol.makeConnection(self.transport)

    def send(self, data=b""):
        if data:
            self.protocol.dataReceived(data)
        out = self.transport.value().decode("latin-1")
        self.transport.clear()
        return out


class LoopbackBase(TestCase):
    async def listen(self, **kw):
        self.clock = Clock()
        self.dispatcher = CommandDispatcher(Registry(), self.clock)
        self.factory = CommandFactory(self.dispatcher, lambda: ["report"], clock=self.clock, **kw)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.factory)
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    async def connect(self):
        client = await TCP4ClientEndpoint(reactor, "127.0.0.1", self.port).connect(
            Factory.forProtocol(Client))

        def close():
            if client.transport.connected:
                client.transport.abortConnection()
                return client.lost
        self.addCleanup(close)
        return client


class NonReadingClientTests(LoopbackBase):
    async def test_answersUnreadStopReading(self):
        """
        A client that sends commands and never reads their answers: grott
        stops reading it once its answers back up, so what grott holds for
        it stays under a bound (the old code read everything and buffered
        every answer: 20,000 helps, 14 MB).  Once the client reads again,
        every command is answered.
        """
        await self.listen(rate=1e9)
        client = await self.connect()
        client.transport.pauseProducing()  # never read
        count = 20_000
        client.transport.write(b"help\n" * count)
        await poll(lambda: len(self.factory.clients) == 1)
        [server] = self.factory.clients
        # Small kernel buffers, so the answers back up into grott whatever
        # the machine's TCP autotuning would allow.
        client.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        server.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        bound = 512 * 1024
        # Either grott stops reading the client (it holds only what it had),
        # or what it holds passes the bound (the old behaviour).
        await poll(lambda: (server.transport not in reactor.getReaders()
                            or held_for(server) > bound))
        self.assertLess(held_for(server), bound)
        self.assertIn("unread", server._holds)
        client.transport.resumeProducing()
        await poll(lambda: len(client.answers) == count)
        self.assertEqual(client.answers[-1], HELP + settings_help())
        self.assertEqual(len(self.factory.clients), 1)

    def test_closedPastTheBound(self):
        """
        A client that stopped reading is closed (and logged) rather than
        given an answer that would leave more than max_unread bytes unread.
        """
        f = Fixture()
        transport = UnreadTransport()
        admin = Admin(f, transport, max_unread=4096)
        factory, protocol = admin.factory, admin.protocol
        events = EventLoggingObserver.createWithCleanup(self, logs.publisher)
        protocol.dataReceived(b"read JPC281833B 1\n")
        transport.unread = 5000
        protocol.pauseProducing()  # what the transport does when its buffer is full
        f.consume(f.reply(InverterReadReply(1, 1, (5,))))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        self.assertIn("unread; closing it", formatEvent(events[-1]))
        self.assertEqual(factory.counts["closed_unread"], 1)
        self.assertEqual(factory.clients, {protocol})
        protocol.connectionLost(None)
        self.assertEqual(factory.clients, set())


class UnreadTransport(StringTransport):
    """A StringTransport reporting C{unread} bytes in its write buffer, as a socket does."""

    unread = 0
    dataBuffer = b""
    offset = 0

    @property
    def _tempDataLen(self):
        return self.unread


class IdleTests(LoopbackBase):
    async def test_idleClientsClosedSoTheAdminGetsIn(self):
        """
        Idle clients filling every slot locked the admin out for good; they
        are closed after command.idle_timeout, a client that keeps sending
        lines is not.
        """
        await self.listen(max_clients=2, idle_timeout=300)
        idle = await self.connect()
        busy = await self.connect()
        await poll(lambda: len(self.factory.clients) == 2)
        refused = await self.connect()
        await refused.lost
        self.clock.advance(200)
        busy.sendLine(b"help")
        await poll(lambda: len(busy.answers) == 1)
        self.clock.advance(100)
        await idle.lost
        self.assertTrue(busy.transport.connected)
        admin = await self.connect()
        admin.sendLine(b"list")
        await poll(lambda: len(admin.answers) == 1)
        self.assertEqual(admin.answers, [[]])
        self.clock.advance(200)
        await busy.lost
        self.assertEqual(self.clock.getDelayedCalls()[0].getTime(), 600)

    def test_idleTimeoutLogged(self):
        f = Fixture()
        admin = Admin(f, idle_timeout=60)
        protocol, transport = admin.protocol, admin.transport
        events = EventLoggingObserver.createWithCleanup(self, logs.publisher)
        f.clock.advance(59)
        self.assertFalse(transport.disconnecting)
        f.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertIn("sent no command for 60 s", formatEvent(events[0]))
        self.assertEqual(admin.factory.report_lines(),
                         [("  command socket: clients=1 closed_idle=1 closed_unread=0 "
                          "wrong_token=0 slowed=0")])
        protocol.connectionLost(None)
        self.assertEqual(f.clock.getDelayedCalls(), [])


class RateTests(SynchronousTestCase):
    def test_floodIsReadAtTheRate(self):
        """
        Past its burst, a client's lines are read at command.rate_limit a
        second: the rest wait unread (in the kernel on a socket), none is
        dropped.
        """
        f = Fixture()
        admin = Admin(f, rate=5, burst=5)
        events = EventLoggingObserver.createWithCleanup(self, logs.publisher)
        out = admin.send(b"list\n" * 20)
        self.assertEqual(out.count("\r\n\r\n"), 5)
        self.assertTrue(admin.transport.producerState == "paused")
        f.clock.advance(0.2)
        self.assertEqual(admin.send().count("\r\n\r\n"), 1)
        f.clock.advance(0.1)
        self.assertEqual(admin.send(), "")
        for _ in range(20):
            f.clock.advance(0.2)
        self.assertEqual(admin.send().count("\r\n\r\n"), 14)
        self.assertEqual(admin.transport.producerState, "producing")
        # Said once per client, not once per line.
        slowed = [e for e in events if "more slowly" in formatEvent(e)]
        self.assertEqual(len(slowed), 1)
        self.assertEqual(admin.factory.counts["slowed"], 1)

    def test_slowClientNeverLimited(self):
        f = Fixture()
        admin = Admin(f, rate=5, burst=5)
        for _ in range(30):
            self.assertTrue(admin.send(b"list\n").endswith("\r\n\r\n"))
            f.clock.advance(0.2)
        self.assertEqual(admin.transport.producerState, "producing")


class AuthTests(SynchronousTestCase):
    def setUp(self):
        self.f = Fixture()
        self.events = EventLoggingObserver.createWithCleanup(self, logs.publisher)

    def assertTokenNeverLogged(self):
        for event in self.events:
            self.assertNotIn(TOKEN, repr(event))
            self.assertNotIn(TOKEN, formatEvent(event))

    def test_authFirst(self):
        admin = Admin(self.f, token=TOKEN)
        self.assertEqual(admin.send(b"list\n"), "ERROR authenticate first: auth <token>\r\n\r\n")
        self.assertEqual(admin.send(b"read JPC281833B 1\n"),
                         "ERROR authenticate first: auth <token>\r\n\r\n")
        self.assertEqual(self.f.sent, [])
        self.assertEqual(admin.send(f"auth {TOKEN}\r\n".encode()), "OK\r\n\r\n")
        self.assertEqual(admin.send(b"list\n"), f"{SERIAL} | IV{SERIAL[-8:]} | 6\r\n\r\n")
        self.assertFalse(admin.transport.disconnecting)
        self.assertTokenNeverLogged()

    def test_wrongTokenCloses(self):
        for line in [b"auth nope\n", b"auth\n", f"auth {TOKEN} x\n".encode(),
                     f"auth {TOKEN[:-1]}\n".encode()]:
            admin = Admin(self.f, token=TOKEN)
            self.assertEqual(admin.send(line), "ERROR wrong token\r\n\r\n")
            self.assertTrue(admin.transport.disconnecting)
        self.assertEqual(len([e for e in self.events if "wrong token" in formatEvent(e)]), 4)
        self.assertTokenNeverLogged()

    def test_noTokenConfigured(self):
        admin = Admin(self.f)
        self.assertEqual(admin.send(b"auth whatever\nlist\n"),
                         f"OK\r\n\r\n{SERIAL} | IV{SERIAL[-8:]} | 6\r\n\r\n")


class ServiceTests(TestCase):
    """
    The admin socket as makeService builds it from a configuration.
    """

    def config(self, command):
        return config_from_string(
            "proxy:\n  listen: tcp:0:interface=127.0.0.1\n  upstream: none\n"
            "metrics:\n  listen: none\n"
            f"plugins:\n  directory: {os.path.abspath(self.mktemp())}\n"
            f"command:\n{command}", source="test.yaml")

    def start(self, config):
        top = makeService(config, reactor)
        top.privilegedStartService()
        top.startService()
        self.addCleanup(lambda: top.running and top.stopService())
        self.top = top
        admin = top.getServiceNamed("command")
        return getattr(admin, "listener", admin)._waitingForPort.result

    def test_networkWithoutTokenRefused(self):
        for listen in ["tcp:15279", "tcp:15279:interface=0.0.0.0",
                       "tcp6:15279:interface=\\:\\:", "tcp:15279:interface=192.168.1.5"]:
            config = self.config(f"  listen: '{listen}'\n")
            with self.assertRaises(ConfigError) as e:
                makeService(config, MemoryReactor())
            self.assertEqual(str(e.exception),
                             f"test.yaml: command.token: required when command.listen "
                             f"({listen}) is not a loopback address or a unix: socket")
        makeService(self.config(f'  listen: "tcp:15279"\n  token: "{TOKEN}"\n'), MemoryReactor())

    def test_twistdStartupRefusesNetworkWithoutToken(self):
        """
        twistd grott stops with one line before binding anything.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w", encoding="utf-8") as f:
            f.write("command:\n  listen: 'tcp:15279:interface=0.0.0.0'\n")
        with self.assertRaises(SystemExit) as e:
            tap.Options().parseOptions(["--config", path])
        self.assertEqual(str(e.exception),
                         f"grott: {path}: command.token: required when command.listen "
                         "(tcp:15279:interface=0.0.0.0) is not a loopback address or a "
                         "unix: socket")

    def test_shortTokenRefused(self):
        with self.assertRaises(ConfigError) as e:
            self.config('  token: "short"\n')
        self.assertEqual(str(e.exception),
                         "test.yaml: command.token: must be at least 16 characters "
                         "(or empty for none)")

    async def test_unixSocketIsPrivate(self):
        for mode, extra in [(0o600, ""), (0o660, '  mode: "0660"\n')]:
            path = os.path.abspath(self.mktemp())
            self.start(self.config(f'  listen: "unix:{path}"\n{extra}'))
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), mode)
            # Bound under umask 0177: never more open than 0600 before the chmod.
            self.assertIsInstance(self.top.getServiceNamed("command"), PrivateListener)
            client = await UNIXClientEndpoint(reactor, path).connect(Factory.forProtocol(Client))
            client.sendLine(b"list")
            await poll(lambda client=client: client.answers == [[]])
            client.transport.loseConnection()
            await client.lost
            await self.top.stopService()

    def test_unixSocketBoundUnderPrivateUmask(self):
        """
        The unix socket never exists with wider permissions, even between
        bind() and Twisted's chmod: it is bound under umask 0177.
        """
        seen = []

        class Probe(Service):
            def privilegedStartService(self):
                current = os.umask(0)
                os.umask(current)
                seen.append(current)

        before = os.umask(0o022)
        self.addCleanup(os.umask, before)
        PrivateListener(Probe()).privilegedStartService()
        self.assertEqual(seen, [0o177])
        self.assertEqual(os.umask(0o022), 0o022)

    async def test_tokenOverLoopback(self):
        port = self.start(self.config(
            f'  listen: "tcp:0:interface=127.0.0.1"\n  token: "{TOKEN}"\n'))
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        client = await endpoint.connect(Factory.forProtocol(Client))
        client.sendLine(b"list")
        client.sendLine(f"auth {TOKEN}".encode())
        client.sendLine(b"list")
        await poll(lambda: len(client.answers) == 3)
        self.assertEqual(client.answers,
                         [["ERROR authenticate first: auth <token>"], ["OK"], []])
        intruder = await endpoint.connect(Factory.forProtocol(Client))
        intruder.sendLine(b"auth guessed-token-0000000")
        await intruder.lost
        self.assertEqual(intruder.answers, [["ERROR wrong token"]])
        # The stats report counts it.
        client.sendLine(b"stats")
        await poll(lambda: len(client.answers) == 4)
        self.assertIn("  command socket: clients=1 closed_idle=0 closed_unread=0 "
                      "wrong_token=1 slowed=0", client.answers[3])
        client.transport.loseConnection()
        await client.lost

