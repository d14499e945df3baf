"""
The command socket end to end over loopback: simulated dataloggers (they
keep register tables and answer like an inverter) behind grott's proxy, the
fake cloud recording what reaches it, and a real TCP admin client.

Sockets run on the real reactor; the dispatcher's timeouts run on a Clock
the tests advance, so a timeout needs no waiting.
"""

import collections

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import TestCase

from grott.codec import COMMANDS, InverterReadRequest, RecordType
from grott.commands import CommandDispatcher, CommandFactory
from grott.config import config_from_string
from grott.control import Control
from grott.proxy import ProxyFactory
from grott.service import makeService
from grott.session import Registry
from grott.stats import report_lines
from grott.testing.fakecloud import FakeCloud
from grott.testing.simulator import (
    DataloggerFactory,
    DataloggerSpec,
    SimulatedDatalogger,
)

TIMEOUT = 10.0


class AdminClient(LineReceiver):
    """
    A script's view of the command socket: send a line, get the answer's
    lines once the empty line that ends it arrives.
    """

    def connectionMade(self):
        self.waiting = collections.deque()
        self.current = []
        self.lost = defer.Deferred()

    def lineReceived(self, line):
        if line:
            self.current.append(line.decode("latin-1"))
            return
        answer, self.current = self.current, []
        self.waiting.popleft().callback(answer)

    def command(self, text, end=b"\r\n"):
        d = defer.Deferred()
        self.waiting.append(d)
        self.transport.write(text.encode("latin-1") + end)
        return d

    def connectionLost(self, reason):
        self.lost.callback(None)


class HoldingDatalogger(SimulatedDatalogger):
    """
    A simulated datalogger whose commands wait in its factory while
    C{factory.hold} is set, to be answered by L{HoldingFactory.release}.
    """

    def _command(self, packet):
        factory = self.factory
        if factory.hold:
            factory.held.append(packet)
            factory.changed()
            return
        SimulatedDatalogger._command(self, packet)


class HoldingFactory(DataloggerFactory):
    hold = True

    def __init__(self, spec, clock):
        DataloggerFactory.__init__(self, spec, clock)
        self.held = []
        self._heldWaiters = []

    def buildProtocol(self, addr):
        protocol = HoldingDatalogger(self.state)
        protocol.factory = self
        self.connection = protocol
        return protocol

    def changed(self):
        ready = [(n, d) for n, d in self._heldWaiters if len(self.held) >= n]
        self._heldWaiters = [(n, d) for n, d in self._heldWaiters if len(self.held) < n]
        for _, d in ready:
            d.callback(self.held)

    def whenHeld(self, count):
        d = defer.Deferred()
        self._heldWaiters.append((count, d))
        self.changed()
        return d

    def release(self):
        held, self.held = self.held, []
        for packet in held:
            SimulatedDatalogger._command(self.connection, packet)


def _listen(factory):
    return TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)


def _endpoint(port):
    return TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)


class CommandLoopbackBase(TestCase):
    async def setUp(self):
        self.clock = Clock()
        self.cloud = FakeCloud(reactor)
        cloudPort = await _listen(self.cloud)
        self.addCleanup(cloudPort.stopListening)
        self.registry = Registry()
        self.dispatcher = CommandDispatcher(self.registry, self.clock, timeout=TIMEOUT)
        self.proxy = ProxyFactory(_endpoint(cloudPort), self.registry, reactor,
                                  upstream_label="fake cloud", connect_timeout=5,
                                  commands=self.dispatcher)
        proxyPort = await _listen(self.proxy)
        self.proxyEndpoint = _endpoint(proxyPort)

        def report():
            return report_lines(self.registry, reactor.seconds(),
                                extra=[self.dispatcher.report_lines, self.control.report_lines])
        # The admin clients' idle and rate timers: a clock of their own.
        self.adminClock = Clock()
        # Raw writes allowed: these tests are about the wire; the safety
        # rules have their own (test_control_loopback).
        self.control = Control(self.dispatcher, allow_raw_writes=True)
        self.admin = CommandFactory(self.dispatcher, report, clock=self.adminClock,
                                    control=self.control)
        self.adminPort = await _listen(self.admin)
        # Cleanups run last-added first: clients, dataloggers, then the proxy and cloud.
        self.addCleanup(self.cloud.close_all)
        self.addCleanup(proxyPort.stopListening)
        self.addCleanup(self.proxy.closeAll, "test over")
        self.addCleanup(self.adminPort.stopListening)

    async def datalogger(self, serial, protocol=6, factory=DataloggerFactory, **kw):
        spec = DataloggerSpec(serial=serial, protocol=protocol, interval=3600,
                              ping_interval=0, **kw)
        logger = factory(spec, reactor)
        logger.connect(self.proxyEndpoint)
        self.addCleanup(logger.disconnect)
        await self.cloud.when_connected(serial)
        return logger

    async def client(self):
        protocol = await TCP4ClientEndpoint(
            reactor, "127.0.0.1", self.adminPort.getHost().port).connect(
                Factory.forProtocol(AdminClient))

        def close():
            if protocol.transport.connected:
                protocol.transport.loseConnection()
                return protocol.lost
        self.addCleanup(close)
        return protocol

    def assertCloudSawNoReplies(self):
        """Nothing but the cloud's own questions' answers reached it."""
        for item in self.cloud.received:
            if item.direction == "datalogger->server" and item.packet is not None:
                self.assertNotIn(item.packet.record_type, COMMANDS, item)
        self.assertEqual(self.cloud.unsolicited_replies, 0)

    async def roundTrip(self, logger):
        """
        A ping from the datalogger, answered by the cloud: everything the
        datalogger sent before it has been through the proxy.
        """
        before = self.cloud.count(logger.spec.serial, RecordType.PING)
        logger.connection.transport.write(logger.state.ping())
        await self.cloud.when_received(before + 1, logger.spec.serial, RecordType.PING)


class CommandTests(CommandLoopbackBase):
    async def test_listEmptyThenDataloggers(self):
        admin = await self.client()
        self.assertEqual(await admin.command("list"), [])
        await self.datalogger("SIMB000002", protocol=5)
        await self.datalogger("SIMA000001")
        self.assertEqual(await admin.command("list"),
                         ["SIMA000001 | IVMA000001 | 6", "SIMB000002 | IVMB000002 | 5"])

    async def test_readAndRangeRead(self):
        logger = await self.datalogger("SIMA000001")
        holding = logger.state.inverter.holding
        admin = await self.client()
        self.assertEqual(await admin.command("read SIMA000001 3"),
                         [f"Reg: 3 Value: {holding[3]}"])
        self.assertEqual(await admin.command("READ SIMA000001 9 4", end=b"\n"),
                         [f"Reg: {r} Value: {holding[r]}" for r in range(9, 13)])
        self.assertEqual(logger.state.stats.commands["inverter_read"], 2)
        await self.roundTrip(logger)
        self.assertCloudSawNoReplies()

    async def test_setThenReadBack(self):
        logger = await self.datalogger("SIMA000001")
        admin = await self.client()
        self.assertEqual(await admin.command("set SIMA000001 3 55"), ["SET Reg: 3 Value: 55"])
        self.assertEqual(logger.state.inverter.holding[3], 55)
        self.assertEqual(await admin.command("read SIMA000001 3"), ["Reg: 3 Value: 55"])
        await self.roundTrip(logger)
        self.assertCloudSawNoReplies()

    async def test_inverterRefusals(self):
        logger = await self.datalogger("SIMA000001")
        admin = await self.client()
        answer = await admin.command("set SIMA000001 500 1")
        self.assertEqual(len(answer), 1)
        # The read before the write already fails: nothing is written.
        self.assertTrue(answer[0].startswith("ERROR the inverter could not read registers 500"),
                        answer)
        answer = await admin.command("read SIMA000001 500 2")
        self.assertTrue(answer[0].startswith("ERROR the inverter could not read"), answer)
        await self.roundTrip(logger)
        self.assertCloudSawNoReplies()

    async def test_dreadDsetBothProtocols(self):
        for serial, protocol in (("SIMA000001", 6), ("SIMB000002", 5)):
            logger = await self.datalogger(serial, protocol=protocol)
            admin = await self.client()
            self.assertEqual(await admin.command(f"dread {serial} 8"), [f"Reg: 8 Value: {serial}"])
            self.assertEqual(await admin.command(f"dset {serial} 56 my wifi"),
                             ["SET Reg: 56 Value: my wifi"])
            self.assertEqual(logger.state.config[56], b"my wifi")
            self.assertEqual(await admin.command(f"dread {serial} 56"), ["Reg: 56 Value: my wifi"])
            self.assertEqual(await admin.command(f"dset {serial} 31 2024-05-01 12:00:00"),
                             ["SET Reg: 31 Value: 2024-05-01 12:00:00"])
            clock = (await admin.command(f"dread {serial} 31"))[0]
            self.assertTrue(clock.startswith("Reg: 31 Value: 2024-05-01 12:0"), clock)
            answer = await admin.command(f"dset {serial} 8 OTHER")
            refused = "ERROR the datalogger refused register 8 := 'OTHER' (status 1)"
            self.assertEqual(answer, [refused])
            # Each dset reads before the write and, when it worked, after it.
            self.assertEqual(logger.state.stats.commands["config_get"], 3 + 2 * 2 + 1)
            self.assertEqual(logger.state.stats.commands["config_set"], 3)
            await self.roundTrip(logger)
        self.assertCloudSawNoReplies()

    async def test_errorsSendNothingAndKeepTheConnection(self):
        logger = await self.datalogger("SIMA000001")
        admin = await self.client()
        for line, start in [
            ("hello", "ERROR unknown command"),
            ("read SIMA000001", "ERROR usage: read"),
            ("set SIMA000001 1", "ERROR usage: set"),
            ("dread SIMA000001 1 2", "ERROR usage: dread"),
            ("read SIMA000001 abc", "ERROR register 'abc' is not a number"),
            ("set SIMA000001 1 65536", "ERROR value 65536 is out of range"),
            ("set SIMA000001 1 -5", "ERROR value '-5' is not a number"),
            ("read SIMA000001 1 200", "ERROR count 200 is out of range"),
            ("read NOTHERE001 1", "ERROR datalogger NOTHERE001 is not connected"),
            ("dset NOTHERE001 4 5", "ERROR datalogger NOTHERE001 is not connected"),
        ]:
            answer = await admin.command(line)
            self.assertEqual(len(answer), 1, (line, answer))
            self.assertTrue(answer[0].startswith(start), (line, answer))
        self.assertEqual(sum(logger.state.stats.commands.values()), 0)
        self.assertEqual(await admin.command("read SIMA000001 0"),
                         [f"Reg: 0 Value: {logger.state.inverter.holding[0]}"])

    async def test_helpStatsQuit(self):
        await self.datalogger("SIMA000001")
        admin = await self.client()
        help_ = await admin.command("help")
        commands = help_[:help_.index(next(line for line in help_ if line.startswith("settings")))]
        self.assertEqual([line.split()[0] for line in commands],
                         ["list", "read", "set", "mset", "setting", "dread", "dset", "stats",
                          "help", "quit"])
        self.assertIn("    active_power_rate           3         0..100 %", help_)
        await admin.command("read SIMA000001 0")
        stats = await admin.command("stats")
        self.assertTrue(stats[0].startswith("1 datalogger(s) connected"), stats)
        self.assertTrue(any(line.strip().startswith("SIMA000001 ") for line in stats), stats)
        self.assertIn("  control writes: total=0 ok=0 refused=0 mismatch=0 failed=0", stats)
        self.assertTrue(any(line.startswith("  commands: sent=1 answered=1 ") for line in stats),
                        stats)
        admin.transport.write(b"quit\r\n")
        await admin.lost

    async def test_timeoutThenLateReplyNotForwarded(self):
        logger = await self.datalogger("SIMA000001", factory=HoldingFactory)
        admin = await self.client()
        answer = admin.command("read SIMA000001 3")
        await logger.whenHeld(1)
        self.clock.advance(TIMEOUT)
        error = await answer
        self.assertEqual(len(error), 1)
        self.assertTrue(error[0].startswith("ERROR timeout"), error)
        logger.release()
        await self.roundTrip(logger)
        self.assertEqual(self.dispatcher.counts["late_replies"], 1)
        self.assertCloudSawNoReplies()
        # The socket and the datalogger still work.
        logger.hold = False
        self.assertEqual(await admin.command("read SIMA000001 3"),
                         [f"Reg: 3 Value: {logger.state.inverter.holding[3]}"])

    async def test_trafficFlowsWhileCommandInFlight(self):
        logger = await self.datalogger("SIMA000001", factory=HoldingFactory)
        admin = await self.client()
        answer = admin.command("read SIMA000001 3")
        await logger.whenHeld(1)
        # The datalogger's own records go up and are acknowledged.
        await self.roundTrip(logger)
        acked = logger.state.stats.acked["announce"]
        self.assertEqual(acked, 1)
        # The cloud's own command gets through and its answer reaches it.
        cloudRead = self.cloud.send("SIMA000001", InverterReadRequest(20, 21), timeout=5)
        await logger.whenHeld(2)
        logger.release()
        reply = await cloudRead
        self.assertEqual(reply.message.first, 20)
        self.assertEqual(await answer, [f"Reg: 3 Value: {logger.state.inverter.holding[3]}"])
        reads = [item.packet for item in self.cloud.received
                 if item.direction == "datalogger->server" and item.packet is not None
                 and item.packet.record_type == RecordType.INVERTER_READ]
        self.assertEqual([p.sequence for p in reads], [1])

    async def test_sameRegisterAsTheCloudTellsRepliesApart(self):
        logger = await self.datalogger("SIMA000001", factory=HoldingFactory)
        logger.hold = False
        admin = await self.client()
        # One answered command teaches grott that this logger echoes sequences.
        await admin.command("read SIMA000001 3")
        logger.hold = True
        cloudRead = self.cloud.send("SIMA000001", InverterReadRequest(3, 3), timeout=5)
        await logger.whenHeld(1)
        answer = admin.command("read SIMA000001 3")
        await logger.whenHeld(2)
        logger.hold = False
        logger.release()
        self.assertEqual((await cloudRead).packet.sequence, 1)
        self.assertEqual(await answer, [f"Reg: 3 Value: {logger.state.inverter.holding[3]}"])
        reads = [item.packet.sequence for item in self.cloud.received
                 if item.direction == "datalogger->server" and item.packet is not None
                 and item.packet.record_type == RecordType.INVERTER_READ]
        self.assertEqual(reads, [1])

    async def test_commandsToOneDataloggerQueueAcrossClients(self):
        logger = await self.datalogger("SIMA000001", factory=HoldingFactory)
        first, second = await self.client(), await self.client()
        old = logger.state.inverter.holding[3]
        a = first.command("read SIMA000001 3")
        await logger.whenHeld(1)
        b = second.command("set SIMA000001 3 7")
        # The second client's write waits behind the first's read.
        await self.roundTrip(logger)
        self.assertEqual(len(logger.held), 1)
        logger.hold = False
        logger.release()
        self.assertEqual(await a, [f"Reg: 3 Value: {old}"])
        self.assertEqual(await b, ["SET Reg: 3 Value: 7"])
        self.assertCloudSawNoReplies()

    async def test_differentDataloggersRunConcurrently(self):
        slow = await self.datalogger("SIMA000001", factory=HoldingFactory)
        fast = await self.datalogger("SIMB000002", protocol=5)
        first, second = await self.client(), await self.client()
        waiting = first.command("read SIMA000001 3")
        await slow.whenHeld(1)
        self.assertEqual(await second.command("set SIMB000002 4 9"), ["SET Reg: 4 Value: 9"])
        self.assertFalse(waiting.called)
        slow.release()
        self.assertEqual(await waiting, [f"Reg: 3 Value: {slow.state.inverter.holding[3]}"])
        await self.roundTrip(slow)
        await self.roundTrip(fast)
        self.assertCloudSawNoReplies()

    async def test_oneClientPipelinesLinesAnswersInOrder(self):
        await self.datalogger("SIMA000001")
        await self.datalogger("SIMB000002")
        admin = await self.client()
        answers = [admin.command(line) for line in
                   ("set SIMA000001 3 11", "set SIMB000002 3 12", "read SIMA000001 3",
                    "bogus", "read SIMB000002 3")]
        results = [await d for d in answers]
        self.assertEqual(results[0], ["SET Reg: 3 Value: 11"])
        self.assertEqual(results[1], ["SET Reg: 3 Value: 12"])
        self.assertEqual(results[2], ["Reg: 3 Value: 11"])
        self.assertTrue(results[3][0].startswith("ERROR unknown command"))
        self.assertEqual(results[4], ["Reg: 3 Value: 12"])

    async def test_dataloggerDisconnectFailsAtOnce(self):
        logger = await self.datalogger("SIMA000001", factory=HoldingFactory)
        admin = await self.client()
        answer = admin.command("read SIMA000001 3")
        queued = (await self.client()).command("read SIMA000001 4")
        await logger.whenHeld(1)
        await logger.disconnect()
        error = await answer
        self.assertTrue(error[0].startswith("ERROR datalogger SIMA000001 disconnected"), error)
        self.assertTrue((await queued)[0].startswith("ERROR datalogger SIMA000001 disconnected"))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(await admin.command("read SIMA000001 3"),
                         ["ERROR datalogger SIMA000001 is not connected"])


class ServiceTests(TestCase):
    """
    The command listener as makeService builds it.
    """

    def config(self, listen):
        return config_from_string(
            "proxy:\n  listen: tcp:0:interface=127.0.0.1\n  upstream: none\n"
            f"command:\n  listen: '{listen}'\n  timeout: 2\n"
            "metrics:\n  listen: none\n")

    async def test_listensAndAnswers(self):
        top = makeService(self.config("tcp:0:interface=127.0.0.1"), reactor)
        top.privilegedStartService()
        top.startService()
        self.addCleanup(top.stopService)
        port = top.getServiceNamed("command")._waitingForPort.result
        self.assertEqual(top.commands.timeout, 2)
        self.assertIs(top.getServiceNamed("proxy").factory.commands, top.commands)
        client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            Factory.forProtocol(AdminClient))
        self.assertEqual(await client.command("list"), [])
        stats = await client.command("stats")
        self.assertTrue(any(line.startswith("  commands: sent=0") for line in stats), stats)
        await top.stopService()
        # Stopping the listener closes the admin connections too.
        await client.lost

    async def test_cloudFreeModeCommands(self):
        """With upstream none the proxy answers the datalogger itself; commands still work."""
        top = makeService(self.config("tcp:0:interface=127.0.0.1"), reactor)
        top.privilegedStartService()
        top.startService()
        self.addCleanup(top.stopService)
        proxyPort = top.getServiceNamed("proxy").getServiceNamed("listener")._waitingForPort.result
        adminPort = top.getServiceNamed("command")._waitingForPort.result
        logger = DataloggerFactory(DataloggerSpec(serial="SIMC000003", interval=3600,
                                                  ping_interval=0), reactor)
        logger.connect(_endpoint(proxyPort))
        self.addCleanup(logger.disconnect)
        await logger.state.wait(lambda state: state.stats.acked["announce"] == 1)
        client = await TCP4ClientEndpoint(reactor, "127.0.0.1", adminPort.getHost().port).connect(
            Factory.forProtocol(AdminClient))
        self.addCleanup(client.transport.loseConnection)
        self.assertEqual(await client.command("list"), ["SIMC000003 | IVMC000003 | 6"])
        self.assertEqual(await client.command("set SIMC000003 3 55"), ["SET Reg: 3 Value: 55"])
        self.assertEqual(await client.command("read SIMC000003 3"), ["Reg: 3 Value: 55"])
        self.assertEqual(logger.state.inverter.holding[3], 55)

    def test_none(self):
        top = makeService(self.config("none"), reactor)
        self.assertNotIn("command", [child.name for child in top])

    async def test_portInUseStopsStartup(self):
        busy = await _listen(Factory.forProtocol(AdminClient))
        self.addCleanup(busy.stopListening)
        top = makeService(self.config(f"tcp:{busy.getHost().port}:interface=127.0.0.1"), reactor)
        proxyListener = top.getServiceNamed("proxy").getServiceNamed("listener")
        self.addCleanup(lambda: proxyListener._waitingForPort.result.stopListening())
        with self.assertRaises(SystemExit) as caught:
            top.privilegedStartService()
        self.assertIn(str(busy.getHost().port), str(caught.exception))
