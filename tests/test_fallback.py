"""
Issue 10: grott answers the datalogger when the cloud is away, comes back
to relaying at a packet boundary, runs without a cloud, and applies the
cloud command policy.  Driven by hand (StringTransport, Clock) so that
"exactly one acknowledgement per packet" can be counted.
"""

from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from grott.codec import (
    FROM_DATALOGGER,
    TO_DATALOGGER,
    ConfigSetRequest,
    InverterReadRequest,
    InverterWriteRequest,
    RecordType,
    build,
    build_ack,
    frame_all,
    parse_body,
    parse_packet,
)
from grott.policy import CloudCommandPolicy
from grott.proxy import CLOUD_FREE, LOCAL, RELAYING, ProxyFactory
from grott.session import Registry
from tests.test_proxy_unit import FakeEndpoint, LogCapture
from tests.vectors import raw

DATA = raw("grott-p6-0104-classic")
PING = raw("grott-p6-0116-ping")
ANNOUNCE = raw("grott-p6-0103-classic")
SERIAL = "JPC281833B"


def data(sequence):
    """The data vector with another sequence number (CRC recomputed)."""
    packet = parse_packet(DATA)
    from grott.codec import build_packet
    return build_packet(packet.record_type, packet.payload, protocol=6, sequence=sequence,
                        device_address=packet.device_address)


def packets(transport):
    return frame_all(transport.value())


class FallbackTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        self.registry = Registry()
        self.factory = ProxyFactory(
            self.endpoint, self.registry, self.clock, upstream_label="tcp:cloud:5279",
            connect_timeout=10, fallback="local", retry_max=30)
        self.logs = LogCapture(self)

    def connect(self):
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_refusedAtConnectAnswersLocally(self):
        protocol, transport = self.connect()
        protocol.dataReceived(ANNOUNCE + data(1))
        factory, d = self.endpoint.attempts.pop()
        d.errback(ConnectionRefusedError("refused"))
        self.assertFalse(transport.disconnecting)
        self.assertEqual(protocol.session.mode, LOCAL)
        self.assertEqual([p.raw for p in packets(transport)],
                         [build_ack(parse_packet(ANNOUNCE)), build_ack(parse_packet(data(1)))])
        transport.clear()
        protocol.dataReceived(PING)
        self.assertEqual(transport.value(), PING)
        self.assertEqual(protocol.session.local_acks, 3)
        self.assertIn("answering the datalogger locally", self.logs.text())

    def test_retriesWithBackoffCappedAndReturnsToRelaying(self):
        protocol, transport = self.connect()
        self.endpoint.attempts.pop()[1].errback(ConnectionRefusedError())
        delays = []
        for _ in range(7):
            before = self.clock.seconds()
            while not self.endpoint.attempts:
                self.clock.advance(0.5)
            delays.append(self.clock.seconds() - before)
            self.endpoint.attempts.pop()[1].errback(ConnectionRefusedError())
        self.assertEqual(delays, [1, 2, 4, 8, 16, 30, 30])
        protocol.dataReceived(data(5))
        self.assertEqual(len(packets(transport)), 1)
        transport.clear()
        while not self.endpoint.attempts:
            self.clock.advance(0.5)
        upstream, upTransport = self.endpoint.succeed()
        self.assertEqual(protocol.session.mode, RELAYING)
        # Nothing answered locally is sent to the cloud again.
        self.assertEqual(upTransport.value(), b"")
        protocol.dataReceived(data(6))
        self.assertEqual(upTransport.value(), data(6))
        self.assertEqual(transport.value(), b"")
        upstream.dataReceived(build_ack(parse_packet(data(6))))
        self.assertEqual(transport.value(), build_ack(parse_packet(data(6))))
        self.assertIn("relaying again", self.logs.text())

    def test_cloudDropsMidSessionEveryPacketAnsweredOnce(self):
        protocol, transport = self.connect()
        upstream, upTransport = self.endpoint.succeed()
        sent = [data(n) for n in range(1, 9)]
        # 1, 2 acked by the cloud; 3 forwarded but not acked when it drops.
        protocol.dataReceived(sent[0] + sent[1])
        upstream.dataReceived(build_ack(parse_packet(sent[0])) + build_ack(parse_packet(sent[1])))
        protocol.dataReceived(sent[2] + PING)
        upstream.dataReceived(build_ack(parse_packet(sent[2]))[:4])
        upstream.connectionLost(Failure(Exception("cloud gone")))
        self.assertEqual(protocol.session.mode, LOCAL)
        self.assertFalse(transport.disconnecting)
        # 4, 5 while the cloud is away.
        protocol.dataReceived(sent[3] + sent[4])
        while not self.endpoint.attempts:
            self.clock.advance(0.5)
        upstream, upTransport = self.endpoint.succeed()
        protocol.dataReceived(sent[5])
        upstream.dataReceived(build_ack(parse_packet(sent[5])))
        answers = packets(transport)
        acked = sorted(p.sequence for p in answers if p.record_type == RecordType.DATA)
        self.assertEqual(acked, [1, 2, 3, 4, 5, 6])
        self.assertEqual([p.raw for p in answers if p.record_type == RecordType.PING], [PING])
        self.assertTrue(all(p.crc_ok for p in answers))
        self.assertEqual(upTransport.value(), sent[5])

    def test_closeFallbackKeepsClosing(self):
        self.factory.fallback_local = False
        protocol, transport = self.connect()
        self.endpoint.attempts.pop()[1].errback(ConnectionRefusedError())
        self.assertTrue(transport.disconnecting)


class CloudFreeTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1612872900)  # 2021-02-09 12:15:00 UTC
        import zoneinfo
        self.factory = ProxyFactory(None, Registry(), self.clock,
                                    timezone=zoneinfo.ZoneInfo("UTC"))

    def test_answersAndSetsClockAfterAnnounce(self):
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertEqual(protocol.session.mode, CLOUD_FREE)
        protocol.dataReceived(ANNOUNCE)
        ack, clock = packets(transport)
        self.assertEqual(ack.raw, build_ack(parse_packet(ANNOUNCE)))
        message = parse_body(clock, TO_DATALOGGER)
        self.assertEqual(message, ConfigSetRequest(31, b"2021-02-09 12:15:00"))
        # protocol.md 8.5: the computed clock-set frame for this datalogger.
        self.assertEqual(clock.raw.hex(), (
            "00010006003701180d222c4559454c74412d7761747447726f7761747447726f77617474"
            "47726f6861674677405e5a514659774b4f46534e4572485f4723f8"))
        transport.clear()
        protocol.dataReceived(data(7) + PING)
        self.assertEqual(transport.value(), build_ack(parse_packet(data(7))) + PING)
        # The datalogger's reply to the clock set is not acknowledged.
        from grott.codec import ConfigSetReply
        transport.clear()
        protocol.dataReceived(build(ConfigSetReply(31, 0), SERIAL, protocol=6))
        self.assertEqual(transport.value(), b"")


class PolicyTests(SynchronousTestCase):
    def relay(self, mode, protect=True):
        factory = ProxyFactory(FakeEndpoint(), Registry(), Clock(),
                               policy=CloudCommandPolicy(mode, protect))
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        upstream, upTransport = factory.upstream.succeed()
        protocol.dataReceived(PING)
        self.logs = LogCapture(self)
        return protocol, transport, upstream

    def commands(self):
        return {
            "read": build(InverterReadRequest(3, 3), SERIAL, protocol=6),
            "write": build(InverterWriteRequest(3, 100), SERIAL, protocol=6),
            "time": build(ConfigSetRequest(31, b"2024-01-01 00:00:00"), SERIAL, protocol=6),
            "server": build(ConfigSetRequest(17, b"10.0.0.1"), SERIAL, protocol=6),
            "ack": build_ack(parse_packet(DATA)),
        }

    def passed(self, mode, protect=True):
        protocol, transport, upstream = self.relay(mode, protect)
        commands = self.commands()
        for name in ("read", "write", "time", "server", "ack"):
            upstream.dataReceived(commands[name])
        got = transport.value()
        return {name for name, data in commands.items() if data in got}

    def test_allowLetsAllButServerAddress(self):
        self.assertEqual(self.passed("allow"), {"read", "write", "time", "ack"})
        self.assertIn("datalogger register 17 := '10.0.0.1'", self.logs.text())

    def test_allowWithoutProtectionWarnsButRelays(self):
        self.assertEqual(self.passed("allow", protect=False),
                         {"read", "write", "time", "server", "ack"})
        self.assertIn("changes the server address", self.logs.text())

    def test_readOnlyDropsWrites(self):
        self.assertEqual(self.passed("read-only"), {"read", "ack"})
        self.assertIn("inverter register 3 := 100", self.logs.text())
        self.assertIn("proxy.cloud_commands is read-only", self.logs.text())

    def test_blockDropsEveryCommand(self):
        self.assertEqual(self.passed("block"), {"ack"})

    def test_otherTrafficFlowsWhileBlocked(self):
        protocol, transport, upstream = self.relay("allow")
        upstream.dataReceived(self.commands()["server"] + self.commands()["ack"])
        protocol.dataReceived(DATA)
        self.assertEqual(transport.value(), self.commands()["ack"])
        self.assertEqual(protocol.session.commands_dropped, 1)
        self.assertEqual(parse_body(parse_packet(build(InverterReadRequest(3, 3), SERIAL,
                                                       protocol=6)), TO_DATALOGGER),
                         InverterReadRequest(3, 3))
        self.assertTrue(FROM_DATALOGGER)
