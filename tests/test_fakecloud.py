"""
The fake cloud: what it answers (checked against the real packets and the
acks protocol.md 8.1 expects for them), what it counts and records, and its
misbehaviours (refuse, delay, drop) with simulated dataloggers in memory.
"""

import io
import json
import random

from twisted.internet import defer, error
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from grott.codec import (
    FROM_DATALOGGER,
    TO_DATALOGGER,
    ConfigGetRequest,
    ConfigSetRequest,
    InverterReadReply,
    InverterReadRequest,
    InverterWriteRequest,
    RecordType,
    build,
    build_packet,
)
from grott.testing.fakecloud import FakeCloud, NotConnected
from tests.simpair import World
from tests.vectors import BY_ID, raw

SERIAL = "JPC281833B"


def connect(cloud):
    protocol = cloud.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


class AnswerTests(unittest.SynchronousTestCase):
    """
    Every real datalogger packet, and what the fake cloud sends back.
    """

    def test_acks_every_register_record_like_the_real_server(self):
        acked = [v for v in BY_ID.values() if v.get("expected", {}).get("server_ack_hex")]
        self.assertGreater(len(acked), 10)
        for vector in acked:
            cloud = FakeCloud(Clock())
            protocol, transport = connect(cloud)
            data = bytes.fromhex(vector["hex"])
            for i in range(0, len(data), 50):  # in pieces, as TCP may deliver it
                protocol.dataReceived(data[i:i + 50])
            self.assertEqual(transport.value().hex(), vector["expected"]["server_ack_hex"],
                             vector["id"])
            self.assertEqual(cloud.acks, 1)

    def test_the_captured_real_ack(self):
        # grott-p6-ack-0104 is the real server's ack of a protocol-6 data
        # record with sequence 0x11; acks ignore the record's CRC.
        cloud = FakeCloud(Clock())
        protocol, transport = connect(cloud)
        protocol.dataReceived(b"\x00\x11" + raw("grott-p6-0104-classic")[2:])
        self.assertEqual(transport.value(), raw("grott-p6-ack-0104"))

    def test_ping_echoed_byte_for_byte(self):
        cloud = FakeCloud(Clock())
        protocol, transport = connect(cloud)
        protocol.dataReceived(raw("grott-p6-0116-ping"))
        self.assertEqual(transport.value(), raw("grott-p6-0116-ping"))
        self.assertEqual(cloud.pings_echoed, 1)

    def test_ping_echo_can_be_turned_off(self):
        cloud = FakeCloud(Clock(), echo_pings=False)
        protocol, transport = connect(cloud)
        protocol.dataReceived(raw("grott-p6-0116-ping"))
        self.assertEqual(transport.value(), b"")

    def test_replies_and_unknown_types_get_no_answer(self):
        cloud = FakeCloud(Clock())
        protocol, transport = connect(cloud)
        for vector in ("stefa-p6-0119-resp-reg21", "jonasmh-p6-0105-resp-reg8",
                       "jonasmh-p6-0106-resp-spf"):
            protocol.dataReceived(raw(vector))
        protocol.dataReceived(build_packet(0x29, b"JPC281833B".ljust(30, b"\0"), protocol=6))
        self.assertEqual(transport.value(), b"")
        self.assertEqual(cloud.unsolicited_replies, 3)
        self.assertEqual(cloud.unanswered, 1)
        self.assertEqual(cloud.counts["JPC281833B"]["0x29"], 1)

    def test_garbage_is_counted_recorded_and_survived(self):
        record = io.StringIO()
        clock = Clock()
        clock.advance(12.5)
        cloud = FakeCloud(clock, record=record)
        protocol, _ = connect(cloud)
        protocol.dataReceived(b"\x13\x37" * 20 + raw("grott-p6-0104-classic"))
        self.assertEqual(cloud.garbage_bytes, 40)
        self.assertEqual(cloud.acks, 1)
        lines = [json.loads(line) for line in record.getvalue().splitlines()]
        self.assertEqual(lines[0], {"time": 12.5, "serial": None, "direction": FROM_DATALOGGER,
                                    "hex": "1337" * 20, "garbage": True})
        self.assertEqual(lines[1]["hex"], raw("grott-p6-0104-classic").hex())
        self.assertEqual(lines[1]["serial"], "JPC281833B")
        self.assertEqual(lines[2], {"time": 12.5, "serial": "JPC281833B",
                                    "direction": TO_DATALOGGER,
                                    "hex": BY_ID["grott-p6-0104-classic"]["expected"]
                                    ["server_ack_hex"]})


    def test_random_bytes_in_random_pieces(self):
        noise = random.Random(11)
        cloud = FakeCloud(Clock())
        protocol, _ = connect(cloud)
        stream = b"".join(noise.randbytes(noise.randrange(1, 200)) + raw("grott-p6-0104-classic")
                          for _ in range(20))
        pos = 0
        while pos < len(stream):
            step = noise.randrange(1, 300)
            protocol.dataReceived(stream[pos:pos + step])
            pos += step
        self.assertEqual(cloud.errors, 0)
        self.assertEqual(cloud.count(SERIAL, RecordType.DATA), 20)
        self.assertEqual(cloud.acks, 20)
        self.assertGreater(cloud.garbage_bytes, 0)


class CountingTests(unittest.SynchronousTestCase):
    def test_counts_per_serial_and_type_and_bounded_memory(self):
        cloud = FakeCloud(Clock(), keep=3)
        protocol, _ = connect(cloud)
        for vector in ("grott-p6-0103-classic", "grott-p6-0104-classic", "grott-p6-0116-ping",
                       "grott-p6-0150-classic"):
            protocol.dataReceived(raw(vector))
        other, _ = connect(cloud)
        other.dataReceived(raw("grott-p6-0104-min-xdavidx93-a"))
        self.assertEqual(dict(cloud.counts["JPC281833B"]),
                         {"announce": 1, "data": 1, "ping": 1, "buffered_data": 1})
        self.assertEqual(cloud.count("XGD2A106BF", RecordType.DATA), 1)
        self.assertEqual(cloud.count(record_type=RecordType.DATA), 2)
        self.assertEqual(cloud.count(), 5)
        self.assertEqual(len(cloud.received), 3)
        self.assertEqual(cloud.received[-1].direction, TO_DATALOGGER)
        stats = cloud.stats()
        self.assertEqual(stats["dataloggers"], 2)
        self.assertEqual(stats["by_type"]["data"], 2)
        self.assertEqual(stats["connections"]["open"], 2)
        json.dumps(stats)
        self.assertEqual(set(cloud.connections), {"JPC281833B", "XGD2A106BF"})

    def test_waiters(self):
        cloud = FakeCloud(Clock())
        protocol, _ = connect(cloud)
        two = cloud.when_received(2, SERIAL, RecordType.DATA)
        connected = cloud.when_connected(SERIAL)
        cancelled = cloud.when_received(99)
        cancelled.cancel()
        self.failureResultOf(cancelled, defer.CancelledError)
        protocol.dataReceived(raw("grott-p6-0104-classic"))
        self.assertIs(self.successResultOf(connected), protocol)
        self.assertNoResult(two)
        protocol.dataReceived(raw("grott-p6-0104-classic"))
        self.assertIs(self.successResultOf(two), cloud)
        self.assertEqual(cloud._waiters, [])


class MisbehaviourTests(unittest.SynchronousTestCase):
    """
    refuse, delay, drop, against a simulated datalogger.
    """

    def test_refuse(self):
        world = World(refuse=True)
        factory = world.datalogger(SERIAL, reconnect_delay=None)
        stats = factory.state.stats
        self.assertEqual((stats.connections, stats.disconnects), (1, 1))
        self.assertEqual(stats.acked["announce"], 0)
        self.assertEqual(world.cloud.refused, 1)
        self.assertEqual(world.cloud.count(), 0)
        self.assertEqual(world.clock.getDelayedCalls(), [])

    def test_refuse_then_accept_after_reconnect(self):
        world = World(refuse=True)
        factory = world.datalogger(SERIAL, reconnect_delay=10, ping_interval=0)
        world.cloud.refuse = False
        world.advance(10)
        self.assertEqual(factory.state.stats.connections, 2)
        self.assertEqual(factory.state.stats.acked["announce"], 1)

    def test_delay(self):
        world = World(ack_delay=3)
        factory = world.datalogger(SERIAL, flood=True, records=2, ping_interval=0)
        self.assertEqual(factory.state.stats.acked["announce"], 0)
        world.advance(2.5, step=0.5)
        self.assertEqual(factory.state.stats.acked["announce"], 0)
        world.advance(0.5)
        self.assertEqual(factory.state.stats.acked["announce"], 1)
        world.advance(6)
        self.assertEqual(factory.state.stats.latencies, [3.0, 3.0])

    def test_delayed_answers_cancelled_when_the_connection_goes(self):
        world = World(ack_delay=5)
        world.datalogger(SERIAL, ping_interval=0, interval=60)
        world.cloud.disconnect(SERIAL)
        world.flush()
        self.assertEqual(world.clock.getDelayedCalls(), [])
        self.assertEqual(world.cloud.acks, 0)

    def test_drop_after(self):
        world = World(drop_after=3)
        factory = world.datalogger(SERIAL, interval=60, ping_interval=0)
        world.advance(120, step=60)
        stats = factory.state.stats
        # announce + data acked; the third packet closed the connection unanswered
        self.assertEqual(stats.sent["data"], 2)
        self.assertEqual(stats.acked, {"announce": 1, "data": 1})
        self.assertEqual(stats.disconnects, 1)
        self.assertEqual(world.cloud.dropped, 1)
        self.assertEqual(len(factory.state.backlog), 1)


class SendTests(unittest.SynchronousTestCase):
    """
    cloud.send(): commands to a connected datalogger, replies back.
    """

    def test_reply_matched_by_type_and_register(self):
        world = World()
        factory = world.datalogger(SERIAL, protocol=6, ping_interval=0)
        first = world.cloud.send(SERIAL, InverterReadRequest(0, 1))
        second = world.cloud.send(SERIAL, InverterWriteRequest(3, 9))
        world.flush()
        holding = factory.state.inverter.holding
        self.assertEqual(self.successResultOf(first).message,
                         InverterReadReply(0, 1, (holding[0], holding[1])))
        self.assertEqual(self.successResultOf(second).message.register, 3)
        self.assertEqual(world.cloud.replies, 2)
        self.assertEqual(world.cloud.commands_sent, 2)

    def test_config_get_range_collects_one_reply_per_register(self):
        world = World()
        world.datalogger(SERIAL, protocol=5, ping_interval=0)
        reply = self.successResultOf(world.send(SERIAL, ConfigGetRequest(4, 21)))
        self.assertEqual(len(reply.packets), 18)
        self.assertEqual({p.protocol for p in reply.packets}, {5})
        self.assertEqual([m.register for m in reply.messages], list(range(4, 22)))

    def test_command_uses_the_announced_address(self):
        world = World()
        world.datalogger(SERIAL, protocol=6, device_address=0x51, ping_interval=0)
        read = self.successResultOf(world.send(SERIAL, InverterReadRequest(43, 43)))
        config = self.successResultOf(world.send(SERIAL, ConfigSetRequest(18, b"5279")))
        self.assertEqual(read.packet.device_address, 0x51)
        self.assertEqual(config.packet.device_address, 1)
        sent = [r.raw for r in world.cloud.received if r.direction == TO_DATALOGGER]
        self.assertIn(build(InverterReadRequest(43, 43), SERIAL, protocol=6, device_address=0x51),
                      sent)

    def test_not_connected_timeout_and_lost(self):
        world = World()
        world.datalogger(SERIAL, protocol=6, ping_interval=0)
        self.failureResultOf(world.cloud.send("NOBODY0000", InverterReadRequest(0, 0)),
                             NotConnected)
        self.failureResultOf(world.cloud.send(SERIAL, InverterReadReply(0, 0, (1,))), ValueError)
        # a reply the cloud never gets: the datalogger is unplugged in between
        pump = world.endpoint.pumps[0]
        timed = world.cloud.send(SERIAL, InverterReadRequest(0, 0), timeout=10)
        pump.serverIO.stream = []
        world.clock.advance(10)
        self.failureResultOf(timed, defer.TimeoutError)
        lost = world.cloud.send(SERIAL, InverterReadRequest(0, 0))
        pump.serverIO.stream = []
        world.cloud.disconnect(SERIAL)
        world.flush()
        self.failureResultOf(lost, error.ConnectionLost)
        self.assertEqual(world.cloud.connections, {})

    def test_close_all(self):
        world = World()
        world.datalogger("AAAA000001", ping_interval=0)
        world.datalogger("AAAA000002", ping_interval=0)
        d = world.cloud.close_all()
        self.assertNoResult(d)
        world.flush()
        self.successResultOf(d)
        self.assertEqual(world.cloud.stats()["connections"]["closed"], 2)
