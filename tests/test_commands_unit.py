"""
The command dispatcher and the admin line protocol, in memory: real
sessions and registry, packets built by the codec, a Clock for timeouts and
StringTransport for the admin client.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from grott import logs
from grott.codec import (
    TO_DATALOGGER,
    ConfigGetReply,
    ConfigGetRequest,
    ConfigSetReply,
    ConfigSetRequest,
    InverterReadReply,
    InverterReadRequest,
    InverterWriteReply,
    InverterWriteRequest,
    RecordType,
    build,
    build_packet,
    parse_body,
    parse_packet,
    serial_field,
)
from grott.commands import (
    FIRST_SEQUENCE,
    CommandDispatcher,
    CommandError,
    CommandFactory,
    CommandRefused,
    CommandTimeout,
    DataloggerGone,
    NotConnected,
    is_loopback,
)
from grott.control import Control
from grott.session import Registry, Session
from tests.relayhelpers import CallableLink

SERIAL = "JPC281833B"
INVERTER = "NHB691514F"


class Fixture:
    """
    A registry with one identified session whose sends are recorded.
    """

    def __init__(self, serial=SERIAL, protocol=6, address=1, timeout=10.0, **kw):
        self.clock = Clock()
        self.registry = Registry()
        self.sent = []
        self.accept = True
        self.session = self.add(serial, protocol, address)
        self.dispatcher = CommandDispatcher(self.registry, self.clock, timeout=timeout, **kw)

    def add(self, serial, protocol=6, address=1):
        session = Session("127.0.0.1:1", self.clock.seconds())
        session.datalogger_serial = serial
        session.protocol = protocol
        session.inverters[address] = "IV" + serial[-8:]
        session.link = CallableLink(self._send)
        self.registry.add(session)
        self.registry.claim(session)
        return session

    def _send(self, data):
        if not self.accept:
            return False
        self.sent.append(parse_packet(data))
        return True

    def request(self, index=-1):
        packet = self.sent[index]
        return packet, parse_body(packet, TO_DATALOGGER)

    def reply(self, message, sequence=None, session=None, protocol=None):
        """The datalogger's reply packet to the last command (its sequence by default)."""
        session = session or self.session
        if sequence is None:
            sequence = self.sent[-1].sequence
        return parse_packet(build(message, session.datalogger_serial,
                                  protocol=protocol or session.protocol, sequence=sequence,
                                  device_address=1))

    def consume(self, packet, session=None):
        return self.dispatcher.consume(session or self.session, packet)


class DispatcherTests(SynchronousTestCase):
    def test_readSendsOwnSequenceAndInverterAddress(self):
        f = Fixture(address=3)
        d = f.dispatcher.read_registers(SERIAL, 10, 3)
        packet, message = f.request()
        self.assertEqual(message, InverterReadRequest(10, 12))
        self.assertEqual((packet.sequence, packet.device_address, packet.protocol),
                         (FIRST_SEQUENCE, 3, 6))
        self.assertEqual(packet.datalogger_serial, SERIAL)
        self.assertNoResult(d)
        self.assertTrue(f.consume(f.reply(InverterReadReply(10, 12, (1, 2, 65535)))))
        self.assertEqual(self.successResultOf(d), [(10, 1), (11, 2), (12, 65535)])
        self.assertEqual(f.session.commands, 1)
        self.assertEqual(f.dispatcher.counts["answered"], 1)
        self.assertEqual(f.dispatcher._states, {})

    def test_protocol5Request(self):
        f = Fixture(protocol=5)
        f.dispatcher.read_config(SERIAL, 21)
        packet, message = f.request()
        self.assertEqual((packet.protocol, packet.device_address), (5, 1))
        self.assertEqual(message, ConfigGetRequest(21, 21))
        self.assertEqual(len(packet.payload), 10 + 4)

    def test_otherPacketsAreNotConsumed(self):
        f = Fixture()
        f.dispatcher.read_registers(SERIAL, 10)
        ping = parse_packet(build_packet(RecordType.PING, serial_field(SERIAL, 6), protocol=6))
        self.assertFalse(f.consume(ping))
        # Another register, and another record type with the same register.
        self.assertFalse(f.consume(f.reply(InverterReadReply(11, 11, (5,)))))
        self.assertFalse(f.consume(f.reply(InverterWriteReply(10, 0, 5))))
        # A session without commands is never asked to parse anything.
        other = f.add("OTHER00001")
        self.assertFalse(f.consume(f.reply(InverterReadReply(10, 10, (5,)), session=other),
                                   session=other))

    def test_writeAndConfigResults(self):
        f = Fixture()
        d = f.dispatcher.write_register(SERIAL, 3, 1000)
        self.assertEqual(f.request()[1], InverterWriteRequest(3, 1000))
        self.assertTrue(f.consume(f.reply(InverterWriteReply(3, 0, 999))))
        self.assertEqual(self.successResultOf(d), (3, 999))
        d = f.dispatcher.read_config(SERIAL, 21)
        self.assertTrue(f.consume(f.reply(ConfigGetReply(21, b"1.0.5.9"))))
        self.assertEqual(self.successResultOf(d), (21, "1.0.5.9"))
        d = f.dispatcher.write_config(SERIAL, 31, "2024-05-01 12:00:00")
        self.assertEqual(f.request()[1], ConfigSetRequest(31, b"2024-05-01 12:00:00"))
        self.assertTrue(f.consume(f.reply(ConfigSetReply(31, 0))))
        self.assertEqual(self.successResultOf(d), (31, "2024-05-01 12:00:00"))

    def test_refusals(self):
        f = Fixture()
        d = f.dispatcher.read_registers(SERIAL, 500, 2)
        f.consume(f.reply(InverterReadReply(500, 501, None)))
        self.assertIn("could not read registers 500..501",
                      str(self.failureResultOf(d, CommandRefused).value))
        d = f.dispatcher.write_register(SERIAL, 500, 1)
        f.consume(f.reply(InverterWriteReply(500, 2, 0)))
        self.assertIn("status 2", str(self.failureResultOf(d, CommandRefused).value))
        d = f.dispatcher.write_config(SERIAL, 8, "X")
        f.consume(f.reply(ConfigSetReply(8, 1)))
        self.assertIn("status 1", str(self.failureResultOf(d, CommandRefused).value))
        self.assertEqual(f.dispatcher.counts["refused"], 3)

    def test_validationSendsNothing(self):
        f = Fixture()
        bad = [
            lambda: f.dispatcher.read_registers(SERIAL, 65536),
            lambda: f.dispatcher.read_registers(SERIAL, -1),
            lambda: f.dispatcher.read_registers(SERIAL, 0, 0),
            lambda: f.dispatcher.read_registers(SERIAL, 0, 126),
            lambda: f.dispatcher.read_registers(SERIAL, 65535, 2),
            lambda: f.dispatcher.write_register(SERIAL, 1, 65536),
            lambda: f.dispatcher.write_register(SERIAL, 1, True),
            lambda: f.dispatcher.read_config(SERIAL, 70000),
            lambda: f.dispatcher.write_config(SERIAL, 4, ""),
            lambda: f.dispatcher.write_config(SERIAL, 4, "a\x01b"),
            lambda: f.dispatcher.write_config(SERIAL, 4, "x" * 256),
            lambda: f.dispatcher.write_config(SERIAL, 4, "\u20ac"),
        ]
        for call in bad:
            self.assertRaises(CommandError, call)
        self.assertRaises(NotConnected, f.dispatcher.read_registers, "NOPE000000", 1)
        self.assertEqual(f.sent, [])

    def test_lowerCaseSerialFound(self):
        f = Fixture()
        f.dispatcher.read_registers(SERIAL.lower(), 1)
        self.assertEqual(len(f.sent), 1)

    def test_oneInFlightPerDatalogger(self):
        f = Fixture()
        first = f.dispatcher.read_registers(SERIAL, 1)
        second = f.dispatcher.write_register(SERIAL, 2, 7)
        self.assertEqual(len(f.sent), 1)
        f.consume(f.reply(InverterReadReply(1, 1, (11,))))
        self.assertEqual(self.successResultOf(first), [(1, 11)])
        self.assertEqual(len(f.sent), 2)
        packet, message = f.request()
        self.assertEqual((packet.sequence, message), (FIRST_SEQUENCE + 1, InverterWriteRequest(2, 7)))
        f.consume(f.reply(InverterWriteReply(2, 0, 7)))
        self.assertEqual(self.successResultOf(second), (2, 7))

    def test_differentDataloggersRunConcurrently(self):
        f = Fixture()
        other = f.add("OTHER00001", protocol=5)
        a = f.dispatcher.read_registers(SERIAL, 1)
        b = f.dispatcher.read_registers("OTHER00001", 1)
        self.assertEqual(len(f.sent), 2)
        self.assertTrue(f.consume(f.reply(InverterReadReply(1, 1, (2,)), session=other),
                                  session=other))
        self.assertEqual(self.successResultOf(b), [(1, 2)])
        self.assertNoResult(a)

    def test_timeoutThenLateReplySwallowedOnce(self):
        f = Fixture(timeout=5.0, late_for=60.0)
        d = f.dispatcher.read_registers(SERIAL, 1)
        queued = f.dispatcher.read_registers(SERIAL, 2)
        f.clock.advance(4.9)
        self.assertNoResult(d)
        f.clock.advance(0.1)
        error = self.failureResultOf(d, CommandTimeout).value
        self.assertTrue(str(error).startswith("timeout"), str(error))
        # The queue moves on at once.
        self.assertEqual(f.request()[1], InverterReadRequest(2, 2))
        late = f.reply(InverterReadReply(1, 1, (9,)), sequence=FIRST_SEQUENCE)
        self.assertTrue(f.consume(late))
        self.assertFalse(f.consume(late))
        self.assertEqual(f.dispatcher.counts["late_replies"], 1)
        f.consume(f.reply(InverterReadReply(2, 2, (3,))))
        self.assertEqual(self.successResultOf(queued), [(2, 3)])
        self.assertEqual(f.clock.getDelayedCalls(), [])

    def test_lateMemoryExpiresAndIsBounded(self):
        f = Fixture(timeout=1.0, late_for=30.0, late_limit=2)
        for register in range(3):
            d = f.dispatcher.read_registers(SERIAL, register)
            f.clock.advance(1)
            self.failureResultOf(d, CommandTimeout)
        # Register 0 was pushed out by the bound; 1 and 2 are still expected.
        self.assertFalse(f.consume(f.reply(InverterReadReply(0, 0, (1,)))))
        self.assertTrue(f.consume(f.reply(InverterReadReply(1, 1, (1,)))))
        f.clock.advance(30)
        self.assertFalse(f.consume(f.reply(InverterReadReply(2, 2, (1,)))))
        self.assertEqual(f.dispatcher._states, {})

    def test_sequenceSeparatesCloudReplyOnceEchoed(self):
        f = Fixture()
        d = f.dispatcher.read_registers(SERIAL, 1)
        f.consume(f.reply(InverterReadReply(1, 1, (1,))))
        self.successResultOf(d)
        d = f.dispatcher.read_registers(SERIAL, 1)
        # The cloud asked for the same register with sequence 1: its reply passes.
        self.assertFalse(f.consume(f.reply(InverterReadReply(1, 1, (5,)), sequence=1)))
        self.assertNoResult(d)
        self.assertTrue(f.consume(f.reply(InverterReadReply(1, 1, (6,)))))
        self.assertEqual(self.successResultOf(d), [(1, 6)])

    def test_withoutEchoTypeAndRegisterSuffice(self):
        f = Fixture()
        d = f.dispatcher.read_registers(SERIAL, 1)
        self.assertTrue(f.consume(f.reply(InverterReadReply(1, 1, (4,)), sequence=1)))
        self.assertEqual(self.successResultOf(d), [(1, 4)])

    def test_replyFromAnotherSerialIgnored(self):
        f = Fixture()
        d = f.dispatcher.read_registers(SERIAL, 1)
        stranger = parse_packet(build(InverterReadReply(1, 1, (4,)), "ZZZ9999999", protocol=6,
                                      sequence=FIRST_SEQUENCE))
        self.assertFalse(f.consume(stranger))
        self.assertNoResult(d)

    def test_malformedReplyWithOurSequence(self):
        f = Fixture()
        d = f.dispatcher.read_registers(SERIAL, 1, 2)
        body = serial_field(SERIAL, 6) + b"\x00\x01\x00\x02\x00"
        bad = parse_packet(build_packet(RecordType.INVERTER_READ, body, protocol=6,
                                        sequence=FIRST_SEQUENCE))
        self.assertTrue(f.consume(bad))
        self.assertIn("malformed reply", str(self.failureResultOf(d, CommandError).value))
        other = parse_packet(build_packet(RecordType.INVERTER_READ, body, protocol=6, sequence=1))
        f.dispatcher.read_registers(SERIAL, 1, 2)
        self.assertFalse(f.consume(other))

    def test_sessionClosedFailsEverythingAtOnce(self):
        f = Fixture()
        first = f.dispatcher.read_registers(SERIAL, 1)
        second = f.dispatcher.read_registers(SERIAL, 2)
        f.dispatcher.sessionClosed(f.session)
        self.failureResultOf(first, DataloggerGone)
        self.failureResultOf(second, DataloggerGone)
        self.assertEqual(len(f.sent), 1)
        self.assertEqual(f.clock.getDelayedCalls(), [])
        self.assertEqual(f.dispatcher._states, {})
        f.dispatcher.sessionClosed(f.session)

    def test_sendRefusedMeansGone(self):
        f = Fixture()
        f.accept = False
        d = f.dispatcher.read_registers(SERIAL, 1)
        self.failureResultOf(d, DataloggerGone)
        self.assertEqual(f.dispatcher._states, {})

    def test_cancelledQueuedCommandIsNotSent(self):
        f = Fixture()
        first = f.dispatcher.read_registers(SERIAL, 1)
        second = f.dispatcher.read_registers(SERIAL, 2)
        third = f.dispatcher.read_registers(SERIAL, 3)
        second.cancel()
        f.consume(f.reply(InverterReadReply(1, 1, (1,))))
        self.successResultOf(first)
        self.assertEqual(f.request()[1], InverterReadRequest(3, 3))
        self.failureResultOf(second, defer.CancelledError)
        self.assertNoResult(third)

    def test_cancelledInFlightReplyStillSwallowed(self):
        f = Fixture()
        d = f.dispatcher.read_registers(SERIAL, 1)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertTrue(f.consume(f.reply(InverterReadReply(1, 1, (1,)))))

    def test_queueLimit(self):
        f = Fixture(queue_limit=2)
        f.dispatcher.read_registers(SERIAL, 1)
        f.dispatcher.read_registers(SERIAL, 2)
        f.dispatcher.read_registers(SERIAL, 3)
        self.assertRaises(CommandError, f.dispatcher.read_registers, SERIAL, 4)

    def test_sequenceWrapsInGrottsHalf(self):
        f = Fixture()
        f.dispatcher.read_registers(SERIAL, 1)
        state = f.dispatcher._states[f.session.id]
        state._sequence = 0xFFFF
        self.assertEqual(state.next_sequence(), FIRST_SEQUENCE)

    def test_listAndReport(self):
        f = Fixture()
        f.add("AAA0000001", protocol=5).inverters.clear()
        unknown = Session("127.0.0.1:2", 0)
        f.registry.add(unknown)
        self.assertEqual(f.dispatcher.dataloggers(),
                         [("AAA0000001", None, 5), (SERIAL, "IV" + SERIAL[-8:], 6)])
        f.dispatcher.read_registers(SERIAL, 1)
        self.assertIn("in_flight=1", f.dispatcher.report_lines()[0])


class Admin:
    """
    One admin connection over a StringTransport.
    """

    def __init__(self, fixture, report=lambda: ["report line", "", "  second"]):
        # Raw writes allowed: these tests are about the line protocol;
        # the safety rules have their own tests (test_control).
        self.factory = CommandFactory(fixture.dispatcher, report,
                                      control=Control(fixture.dispatcher, allow_raw_writes=True))
        self.protocol = self.factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def send(self, data):
        self.protocol.dataReceived(data)
        out = self.transport.value().decode("latin-1")
        self.transport.clear()
        return out

    def answers(self, data):
        """Every complete answer written so far, as lists of lines."""
        out = self.send(data)
        self.assertComplete(out)
        answers, current = [], []
        for line in out.split("\r\n")[:-1]:
            if line:
                current.append(line)
            else:
                answers.append(current)
                current = []
        return answers

    @staticmethod
    def assertComplete(out):
        assert out == "" or out.endswith("\r\n\r\n") or out == "\r\n", repr(out)


class ProtocolTests(SynchronousTestCase):
    def setUp(self):
        self.f = Fixture()
        self.admin = Admin(self.f)

    def test_listFormat(self):
        self.f.add("AAA0000001", protocol=5).inverters.clear()
        self.assertEqual(self.admin.send(b"LIST\n"),
                         "AAA0000001 | - | 5\r\nJPC281833B | IVC281833B | 6\r\n\r\n")

    def test_emptyList(self):
        f = Fixture()
        f.registry.remove(f.session)
        self.assertEqual(Admin(f).send(b"list\r\n"), "\r\n")

    def test_readOverProtocol(self):
        out = self.admin.send(b"read JPC281833B 10 2\r\n")
        self.assertEqual(out, "")
        self.f.consume(self.f.reply(InverterReadReply(10, 11, (7, 8))))
        self.assertEqual(self.admin.send(b""), "Reg: 10 Value: 7\r\nReg: 11 Value: 8\r\n\r\n")

    def test_setDreadDset(self):
        # A write is: read the old value, write, read back.
        self.admin.send(b"Set JPC281833B 0x10 300\n")
        self.assertEqual(self.f.request()[1], InverterReadRequest(16, 16))
        self.f.consume(self.f.reply(InverterReadReply(16, 16, (5,))))
        self.assertEqual(self.f.request()[1], InverterWriteRequest(16, 300))
        self.f.consume(self.f.reply(InverterWriteReply(16, 0, 300)))
        self.assertEqual(self.f.request()[1], InverterReadRequest(16, 16))
        self.f.consume(self.f.reply(InverterReadReply(16, 16, (300,))))
        self.assertEqual(self.admin.send(b""), "SET Reg: 16 Value: 300\r\n\r\n")
        self.admin.send(b"dread JPC281833B 56\n")
        self.f.consume(self.f.reply(ConfigGetReply(56, b"my\r\nwifi\x7f")))
        self.assertEqual(self.admin.send(b""), "Reg: 56 Value: my\\x0d\\x0awifi\\x7f\r\n\r\n")
        self.admin.send(b"dset JPC281833B 31   2024-05-01 12:00:00\r\n")
        self.f.consume(self.f.reply(ConfigGetReply(31, b"2024-05-01 11:00:00")))
        self.assertEqual(self.f.request()[1], ConfigSetRequest(31, b"2024-05-01 12:00:00"))
        self.f.consume(self.f.reply(ConfigSetReply(31, 0)))
        self.f.consume(self.f.reply(ConfigGetReply(31, b"2024-05-01 12:00:01")))
        self.assertEqual(self.admin.send(b""), "SET Reg: 31 Value: 2024-05-01 12:00:01\r\n\r\n")

    def test_errorsKeepConnectionUsable(self):
        cases = {
            b"frobnicate": "ERROR unknown command 'frobnicate'",
            b"read": "ERROR usage: read <datalogger serial> <register> [<count>]",
            b"read JPC281833B 1 2 3": "ERROR usage: read",
            b"set JPC281833B 1": "ERROR usage: set",
            b"dread JPC281833B": "ERROR usage: dread",
            b"dset JPC281833B 4": "ERROR usage: dset",
            b"list extra": "ERROR usage: list",
            b"read JPC281833B x": "ERROR register 'x' is not a number",
            b"read JPC281833B -1": "ERROR register '-1' is not a number",
            b"read JPC281833B 1 many": "ERROR count 'many' is not a number",
            b"read JPC281833B 65536": "ERROR register 65536 is out of range",
            b"read JPC281833B 1 126": "ERROR count 126 is out of range",
            b"set JPC281833B 1 70000": "ERROR value 70000 is out of range",
            b"set JPC281833B 1 1.5": "ERROR value '1.5' is not a number",
            b"dread JPC281833B 0xZZ": "ERROR register '0xZZ' is not a number",
            b"read NOSUCH0001 1": "ERROR datalogger NOSUCH0001 is not connected",
        }
        for line, start in cases.items():
            answers = self.admin.answers(line + b"\r\n")
            self.assertEqual(len(answers), 1, line)
            self.assertEqual(len(answers[0]), 1, line)
            self.assertTrue(answers[0][0].startswith(start), (line, answers[0]))
        self.assertEqual(self.f.sent, [])
        self.assertEqual(self.admin.answers(b"help\n")[0][0].split()[0], "list")
        self.assertFalse(self.admin.transport.disconnecting)

    def test_emptyLineAnswered(self):
        # A script waiting for the empty line that ends an answer never hangs.
        self.assertEqual(self.admin.send(b"\r\n  \n"), "ERROR empty line; try help\r\n\r\n" * 2)

    def test_linesAnsweredInOrder(self):
        out = self.admin.send(b"read JPC281833B 1\nhelp\nlist\n")
        self.assertEqual(out, "")
        self.f.consume(self.f.reply(InverterReadReply(1, 1, (5,))))
        out = self.admin.send(b"")
        self.assertTrue(out.startswith("Reg: 1 Value: 5\r\n\r\nlist "), out)
        self.assertTrue(out.endswith(f"{SERIAL} | IV{SERIAL[-8:]} | 6\r\n\r\n"), out)

    def test_timeoutAnswer(self):
        self.admin.send(b"read JPC281833B 1\n")
        self.f.clock.advance(10)
        out = self.admin.send(b"")
        self.assertTrue(out.startswith("ERROR timeout: datalogger JPC281833B did not answer"), out)
        self.assertTrue(out.endswith("\r\n\r\n"))

    def test_stats(self):
        self.assertEqual(self.admin.send(b"stats\n"), "report line\r\n  second\r\n\r\n")

    def test_quit(self):
        self.admin.send(b"quit\n")
        self.assertTrue(self.admin.transport.disconnecting)

    def test_tooLongLine(self):
        out = self.admin.send(b"x" * 2000)
        self.assertTrue(out.startswith("ERROR line longer than 1024"), out)
        self.assertTrue(self.admin.transport.disconnecting)

    def test_clientGoneCancelsItsCommands(self):
        self.admin.send(b"read JPC281833B 1\n")
        other = Admin(self.f)
        other.send(b"read JPC281833B 2\n")
        other.protocol.connectionLost(None)
        self.f.consume(self.f.reply(InverterReadReply(1, 1, (5,))))
        self.assertEqual(self.admin.send(b""), "Reg: 1 Value: 5\r\n\r\n")
        # The gone client's read was never sent.
        self.assertEqual(len(self.f.sent), 1)
        self.admin.protocol.connectionLost(None)
        self.assertEqual(self.admin.factory.clients, set())

    def test_internalErrorReported(self):
        def broken(*a):
            raise RuntimeError("bug")
        self.f.dispatcher.dataloggers = broken
        events = EventLoggingObserver.createWithCleanup(self, logs.publisher)
        self.assertEqual(self.admin.send(b"list\n"), "ERROR internal error (see grott's log)\r\n\r\n")
        self.assertEqual(len(events), 1)
        self.assertIsInstance(events[0]["log_failure"].value, RuntimeError)
        self.assertEqual(self.admin.send(b"help\n").split()[0], "list")
        self.flushLoggedErrors(RuntimeError)

    def test_maxClients(self):
        factory = CommandFactory(self.f.dispatcher, list, max_clients=1)
        factory.buildProtocol(None).makeConnection(StringTransport())
        self.assertIsNone(factory.buildProtocol(None))

    def test_stopFactoryClosesClients(self):
        self.admin.factory.stopFactory()
        self.assertTrue(self.admin.transport.disconnecting)


class LoopbackCheckTests(SynchronousTestCase):
    def test_isLoopback(self):
        yes = ["tcp:15279:interface=127.0.0.1", "tcp6:15279:interface=\\:\\:1",
               "tcp:15279:interface=localhost", "unix:/run/grott.sock", "tcp:0:127.0.0.2",
               "ssl:15279:privateKey=k.pem:interface=127.0.0.1"]
        no = ["tcp:15279", "tcp:15279:interface=0.0.0.0", "tcp6:15279:interface=\\:\\:",
              "tcp:15279:interface=192.168.1.5", "tcp:15279:interface=example.org",
              "ssl:15279:privateKey=k.pem"]
        for description in yes:
            self.assertTrue(is_loopback(description), description)
        for description in no:
            self.assertFalse(is_loopback(description), description)

    def test_warningAtStartup(self):
        events = EventLoggingObserver.createWithCleanup(self, logs.publisher)
        f = Fixture()
        CommandFactory(f.dispatcher, list, listen="tcp:15279:interface=127.0.0.1").startFactory()
        self.assertEqual([e["log_level"] for e in events], [LogLevel.info])
        CommandFactory(f.dispatcher, list, listen="tcp:15279").startFactory()
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["listen"], "tcp:15279")
