"""
Simulated dataloggers against the fake cloud, in memory (iosim + Clock),
plus one run of the CLI-level objects over real loopback sockets.
"""

import io
import json
import random
import struct

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from grott.codec import (
    FROM_DATALOGGER,
    TO_DATALOGGER,
    ConfigGetReply,
    ConfigGetRequest,
    ConfigSetReply,
    ConfigSetRequest,
    Framer,
    InverterReadReply,
    InverterReadRequest,
    InverterWriteMultiReply,
    InverterWriteMultiRequest,
    InverterWriteReply,
    InverterWriteRequest,
    RecordType,
    build,
    build_ack,
    build_packet,
    parse_body,
    parse_packet,
    serial_field_size,
)
from grott.registers import Decoder
from grott.scripts import fakecloud as fakecloud_script
from grott.scripts import simulate as simulate_script
from grott.testing.simmodel import SimulatedInverter
from grott.testing.simulator import (
    DataloggerFactory,
    DataloggerSimulation,
    DataloggerSpec,
    DataloggerState,
    make_specs,
)
from tests.simpair import MORNING, World
from tests.vectors import raw

SERIAL = "JPC281833B"


def registers_of(packet):
    """
    Register number -> value of a 0x03/0x04/0x50 packet (walks the blocks).
    """
    payload = packet.payload
    pos = 2 * serial_field_size(packet.protocol) + 6
    count = payload[pos]
    pos += 1
    table = {}
    blocks = []
    for _ in range(count):
        first, last = struct.unpack_from(">HH", payload, pos)
        values = struct.unpack_from(f">{last - first + 1}H", payload, pos + 4)
        table.update(zip(range(first, last + 1), values))
        blocks.append((first, last))
        pos += 4 + 2 * len(values)
    assert pos == len(payload), "blocks must consume the body exactly"
    return blocks, table


def timestamp_of(packet):
    at = 2 * serial_field_size(packet.protocol)
    year, month, day, hour, minute, second = packet.payload[at:at + 6]
    return (2000 + year, month, day, hour, minute, second)


def from_datalogger(cloud, record_type=None):
    return [r.packet for r in cloud.received
            if r.direction == FROM_DATALOGGER and r.packet is not None
            and (record_type is None or r.packet.record_type == record_type)]


def to_datalogger(cloud):
    return [r.raw for r in cloud.received if r.direction == TO_DATALOGGER]


class SessionTests(unittest.SynchronousTestCase):
    """
    Announce, data, pings: what a datalogger sends and how acks match.
    """

    def test_announce_classic(self):
        world = World()
        factory = world.datalogger(SERIAL, protocol=6, family="classic")
        [announce] = from_datalogger(world.cloud, RecordType.ANNOUNCE)
        self.assertEqual(len(announce.raw), 265)
        self.assertEqual(announce.inverter_serial, factory.spec.inverter_serial)
        blocks, table = registers_of(announce)
        self.assertEqual(blocks, [(0, 44), (45, 89)])
        self.assertEqual(table[43], 134)
        self.assertEqual(struct.pack(">5H", *(table[r] for r in range(23, 28))).decode(),
                         factory.spec.inverter_serial)
        self.assertEqual(timestamp_of(announce), (2024, 6, 21, 10, 0, 0))
        self.assertEqual(factory.state.stats.acked["announce"], 1)
        self.assertEqual(to_datalogger(world.cloud), [build_ack(announce)])

    def test_announce_min_protocol5(self):
        world = World()
        factory = world.datalogger("NAC49410AF", protocol=5, family="min", device_address=0x51)
        [announce] = from_datalogger(world.cloud, RecordType.ANNOUNCE)
        self.assertEqual(len(announce.raw), 545)
        self.assertEqual(announce.device_address, 0x51)
        blocks, table = registers_of(announce)
        self.assertEqual(blocks, [(0, 124), (3000, 3124)])
        self.assertEqual(table[43], 5100)
        self.assertEqual(table[44], 0x0201)
        self.assertEqual(struct.pack(">3H", *(table[r] for r in (9, 10, 11))).decode().strip(),
                         "AL1.0")
        self.assertEqual([table[r] for r in range(45, 51)], [2024, 6, 21, 10, 0, 0])
        self.assertEqual(factory.state.stats.acked["announce"], 1)

    def test_data_every_interval_acked_by_sequence(self):
        world = World()
        factory = world.datalogger(SERIAL, protocol=6, family="min", interval=300,
                                   ping_interval=0)
        world.advance(900, step=300)
        data = from_datalogger(world.cloud, RecordType.DATA)
        self.assertEqual([p.sequence for p in data], [1, 2, 3])
        self.assertEqual([len(p.raw) for p in data], [585] * 3)
        self.assertEqual([registers_of(p)[0] for p in data], [[(3000, 3124), (3125, 3249)]] * 3)
        self.assertEqual([timestamp_of(p)[3:5] for p in data], [(10, 5), (10, 10), (10, 15)])
        acks = to_datalogger(world.cloud)[1:]
        self.assertEqual(acks, [build_ack(p) for p in data])
        stats = factory.state.stats
        self.assertEqual((stats.sent["data"], stats.acked["data"], stats.unmatched_acks), (3, 3, 0))
        self.assertEqual(stats.latencies, [0.0, 0.0, 0.0])

    def test_meter_record_after_each_live_record(self):
        world = World()
        factory = world.datalogger(SERIAL, protocol=6, family="min", interval=300,
                                   ping_interval=0, meter_address=0x22)
        world.advance(4 * 3600, step=300)
        meters = from_datalogger(world.cloud, RecordType.METER_DATA)
        self.assertEqual(len(meters), 48)
        self.assertEqual({p.device_address for p in meters}, {0x22})
        records = [Decoder().decode(p) for p in meters]
        self.assertEqual({r.device_id for r in records},
                         {f"{factory.spec.inverter_serial}-meter-22"})
        for record in records:
            self.assertIsNone(record.warning)
            values = record.values
            self.assertLess(abs(values["pos_rev_act_power"]
                                - sum(values[f"act_power_l{n}"] for n in (1, 2, 3))), 0.2)
            self.assertTrue(225 < values["voltage_l1"] < 235)
        imported = [r.values["pos_act_energy"] for r in records]
        exported = [r.values["rev_act_energy"] for r in records]
        self.assertEqual(imported, sorted(imported))
        self.assertEqual(exported, sorted(exported))
        self.assertGreater((imported[-1] - imported[0]) + (exported[-1] - exported[0]), 0)
        self.assertEqual([timestamp_of(p)[3:5] for p in meters[:3]],
                         [(10, 5), (10, 10), (10, 15)])
        stats = factory.state.stats
        self.assertEqual((stats.sent["meter_data"], stats.acked["meter_data"]), (48, 48))
        # Data records and their count are what they were without a meter.
        self.assertEqual((stats.sent["data"], factory.state.records_sent), (48, 48))
        self.assertEqual(len(stats.latencies), 48)

    def test_meter_log_after_each_meter_record(self):
        """
        A datalogger that sends its meter's reading twice (0x20 from the
        meter's address, then the 0x1b log line from another): decoded as
        one stream, both kinds are one meter, and they carry one reading.
        """
        world = World()
        factory = world.datalogger(SERIAL, protocol=6, family="min", interval=300,
                                   ping_interval=0, meter_address=0x01,
                                   meter_log_address=0x22)
        world.advance(3600, step=300)
        meter_kinds = (RecordType.METER_DATA, RecordType.METER_LOG)
        packets = [p for p in from_datalogger(world.cloud) if p.record_type in meter_kinds]
        self.assertEqual([p.record_type for p in packets], list(meter_kinds) * 12)
        self.assertEqual({(p.record_type, p.device_address) for p in packets},
                         {(RecordType.METER_DATA, 0x01), (RecordType.METER_LOG, 0x22)})
        decoder = Decoder()
        records = [decoder.decode(p) for p in packets]
        self.assertEqual({r.device_id for r in records},
                         {f"{factory.spec.inverter_serial}-meter-01"})
        for data, log in zip(records[::2], records[1::2]):
            self.assertIsNone(log.warning)
            self.assertEqual(log.timestamp, data.timestamp)
            for data_name, log_name in (("voltage_l1", "voltageL1"),
                                        ("act_power_l3", "activePowerL3"),
                                        ("pos_rev_act_power", "power"),
                                        ("pos_act_energy", "posiActivePower"),
                                        ("rev_act_energy", "reverActivePower"),
                                        ("frequency", "frequency"),
                                        ("L3-1_voltage", "l3Voltage1")):
                self.assertEqual(log.values[log_name], data.values[data_name], log_name)
        stats = factory.state.stats
        self.assertEqual((stats.sent["meter_log"], stats.acked["meter_log"]), (12, 12))
        self.assertEqual((stats.sent["data"], len(stats.latencies)), (12, 12))
        self.assertRaises(ValueError, DataloggerSpec, SERIAL, meter_log_address=0x22)

    def test_ack_with_wrong_sequence_is_not_counted(self):
        world = World(ack_delay=10)
        factory = world.datalogger(SERIAL, protocol=6, ping_interval=0, interval=60)
        world.cloud.send_raw(SERIAL, build_packet(RecordType.ANNOUNCE, b"\x00", protocol=6,
                                                  sequence=77))
        world.flush()
        self.assertEqual(factory.state.stats.unmatched_acks, 1)
        self.assertEqual(factory.state.stats.acked["announce"], 0)
        world.advance(10)
        self.assertEqual(factory.state.stats.acked["announce"], 1)

    def test_pings_echoed_with_their_own_sequence(self):
        world = World()
        factory = world.datalogger(SERIAL, protocol=6, interval=300, ping_interval=180)
        world.advance(600, step=60)
        pings = from_datalogger(world.cloud, RecordType.PING)
        data = from_datalogger(world.cloud, RecordType.DATA)
        self.assertEqual([p.sequence for p in pings], [1, 2, 3])
        self.assertEqual([p.sequence for p in data], [1, 2])
        self.assertEqual([len(p.raw) for p in pings], [40] * 3)
        for ping in pings:
            self.assertIn(ping.raw, to_datalogger(world.cloud))
        self.assertEqual(factory.state.stats.pings_echoed, 3)

    def test_buffered_records_after_announce(self):
        world = World()
        factory = world.datalogger(SERIAL, protocol=6, buffered=2, interval=300, ping_interval=0)
        buffered = from_datalogger(world.cloud, RecordType.BUFFERED_DATA)
        self.assertEqual([timestamp_of(p)[3:5] for p in buffered], [(9, 50), (9, 55)])
        self.assertEqual([p.sequence for p in buffered], [1, 2])
        self.assertEqual(factory.state.stats.acked["buffered_data"], 2)
        self.assertEqual(factory.state.records_sent, 2)

    def test_unacked_records_replayed_as_buffered_after_reconnect(self):
        world = World(ack_delay=30)
        factory = world.datalogger(SERIAL, protocol=6, interval=60, ping_interval=0,
                                   reconnect_delay=5)
        world.advance(60)
        [lost] = from_datalogger(world.cloud, RecordType.DATA)
        world.cloud.disconnect(SERIAL)
        world.flush()
        self.assertEqual(len(factory.state.backlog), 1)
        self.assertEqual(world.clock.getDelayedCalls()[0].getTime(), world.clock.seconds() + 5)
        world.cloud.ack_delay = 0
        world.advance(5)
        self.assertEqual(factory.state.stats.connections, 2)
        [replayed] = from_datalogger(world.cloud, RecordType.BUFFERED_DATA)
        self.assertEqual(replayed.payload, lost.payload)
        self.assertEqual(factory.state.stats.acked["buffered_data"], 1)

    def test_flood_mode_latency_on_the_clock(self):
        world = World(ack_delay=0.5)
        factory = world.datalogger(SERIAL, protocol=6, flood=True, records=4, ping_interval=0)
        done = factory.state.when_done()
        world.advance(5, step=0.5)
        self.successResultOf(done)
        self.assertEqual(factory.state.stats.sent["data"], 4)
        self.assertEqual(factory.state.stats.latencies, [0.5] * 4)
        # the next record goes out only when the previous one was acked
        times = [r.time for r in world.cloud.received if r.direction == FROM_DATALOGGER]
        self.assertEqual(times, [1000.0, 1000.5, 1001.0, 1001.5, 1002.0])

    def test_flood_window(self):
        world = World(ack_delay=1)
        factory = world.datalogger(SERIAL, protocol=5, flood=True, window=3, records=6,
                                   ping_interval=0)
        world.advance(1)
        self.assertEqual(factory.state.stats.sent["data"], 3)
        world.advance(1)
        self.assertEqual(factory.state.stats.sent["data"], 6)
        world.advance(1)
        self.assertTrue(factory.state.done)


class CommandTests(unittest.SynchronousTestCase):
    """
    The datalogger's answers, checked against protocol.md 7.5-7.9 and the
    captured replies, in protocols 5 and 6.
    """

    def connected(self, serial=SERIAL, protocol=6, family="classic"):
        world = World()
        factory = world.datalogger(serial, protocol=protocol, family=family, ping_interval=0)
        return world, factory

    def reply(self, world, serial, message, **options):
        return self.successResultOf(world.send(serial, message, **options))

    def test_captured_write_gets_the_captured_reply(self):
        world, factory = self.connected("MWG0BH7030", family="classic")
        factory.state.inverter.holding[1] = 3
        world.cloud.send_raw("MWG0BH7030", raw("jonasmh-p6-0106-cmd-spf"))
        world.flush()
        [reply] = from_datalogger(world.cloud, RecordType.INVERTER_WRITE)
        self.assertEqual(reply.raw, raw("jonasmh-p6-0106-resp-spf"))
        self.assertEqual(factory.state.inverter.holding[1], 0)

    def test_captured_read_reply(self):
        world, factory = self.connected("JPC7A420FJ", family="classic")
        factory.state.inverter.holding[8] = 3600
        reply = self.reply(world, "JPC7A420FJ", InverterReadRequest(8, 8))
        self.assertEqual(reply.packet.raw, raw("jonasmh-p6-0105-resp-reg8"))

    def test_captured_config_reply(self):
        world, factory = self.connected("DXD7BM4033")
        factory.state.config[21] = b"1.0.5.9"
        reply = self.reply(world, "DXD7BM4033", ConfigGetRequest(21, 21))
        self.assertEqual(reply.packet.raw, raw("stefa-p6-0119-resp-reg21"))

    def test_captured_config_query_burst(self):
        writes = []

        class Counting(StringTransport):
            def write(self, data):
                writes.append(data)
                super().write(data)

        factory = DataloggerFactory(DataloggerSpec(SERIAL, announce=False, ping_interval=0,
                                                   start_epoch=MORNING), MemoryReactorClock())
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(Counting())
        protocol.dataReceived(raw("grott-p6-0119-query"))
        # the whole burst leaves in one write, as real loggers coalesce it
        [burst] = writes
        replies = Framer().feed(burst)
        self.assertEqual([p.record_type for p in replies], [RecordType.CONFIG_GET] * 18)
        messages = [parse_body(p, FROM_DATALOGGER) for p in replies]
        self.assertEqual([m.register for m in messages], list(range(4, 22)))
        values = {m.register: m.value for m in messages}
        self.assertEqual(values[4], b"5")
        self.assertEqual(values[8], SERIAL.encode())
        self.assertEqual(values[12], b"")
        self.assertEqual(values[18], b"5279")
        self.assertEqual({(p.sequence, p.device_address) for p in replies}, {(1, 1)})

    def check_commands(self, protocol, family):
        world, factory = self.connected(SERIAL, protocol, family)
        sf = serial_field_size(protocol)
        holding = factory.state.inverter.holding

        reply = self.reply(world, SERIAL, InverterReadRequest(43, 44), sequence=7)
        self.assertEqual(reply.message, InverterReadReply(43, 44, (holding[43], holding[44])))
        self.assertEqual((reply.packet.sequence, reply.packet.length), (7, 2 + sf + 4 + 4))
        self.assertEqual(reply.packet.raw, build(reply.message, SERIAL, protocol=protocol,
                                                 sequence=7))

        reply = self.reply(world, SERIAL, InverterReadRequest(4000, 4001))
        self.assertEqual(reply.message, InverterReadReply(4000, 4001, None))
        self.assertEqual(reply.packet.length, 2 + sf + 4)

        reply = self.reply(world, SERIAL, InverterWriteRequest(3, 55), device_address=0x51)
        self.assertEqual(reply.message, InverterWriteReply(3, 0, 55))
        self.assertEqual((reply.packet.device_address, reply.packet.length), (0x51, 2 + sf + 5))
        self.assertEqual(self.reply(world, SERIAL, InverterReadRequest(3, 3)).message.values, (55,))

        reply = self.reply(world, SERIAL, InverterWriteRequest(4000, 1))
        self.assertEqual(reply.message, InverterWriteReply(4000, 1, 0))

        reply = self.reply(world, SERIAL, InverterWriteMultiRequest(20, (7, 8, 9)))
        self.assertEqual(reply.message, InverterWriteMultiReply(20, 22, 0))
        self.assertEqual(reply.packet.length, 2 + sf + 5)
        self.assertEqual(self.reply(world, SERIAL, InverterReadRequest(20, 22)).message.values,
                         (7, 8, 9))

        reply = self.reply(world, SERIAL, ConfigGetRequest(16, 19))
        self.assertEqual([m.register for m in reply.messages], [16, 17, 18, 19])
        self.assertEqual([p.length for p in reply.packets],
                         [2 + sf + 4 + len(m.value) for m in reply.messages])

        reply = self.reply(world, SERIAL, ConfigSetRequest(4, b"1"))
        self.assertEqual(reply.message, ConfigSetReply(4, 0))
        self.assertEqual(reply.packet.length, 2 + sf + 3)
        self.assertEqual(self.reply(world, SERIAL, ConfigGetRequest(4, 4)).message,
                         ConfigGetReply(4, b"1"))
        self.assertEqual(self.reply(world, SERIAL, ConfigSetRequest(8, b"X")).message,
                         ConfigSetReply(8, 1))
        self.assertEqual(factory.state.stats.commands,
                         {"inverter_read": 4, "inverter_write": 2, "inverter_write_multi": 1,
                          "config_get": 2, "config_set": 2})
        # register 4 is the upload interval in minutes: data now every 60 s
        world.advance(120, step=10)
        self.assertEqual(len(from_datalogger(world.cloud, RecordType.DATA)), 2)

    def test_commands_protocol6_classic(self):
        self.check_commands(6, "classic")

    def test_commands_protocol5_min(self):
        self.check_commands(5, "min")

    def test_clock_set_moves_the_datalogger_clock(self):
        world, _ = self.connected(SERIAL)
        reply = self.reply(world, SERIAL, ConfigSetRequest(31, b"2021-02-09 12:15:00"))
        self.assertEqual(reply.message.status, 0)
        world.advance(300, step=300)
        [data] = from_datalogger(world.cloud, RecordType.DATA)
        self.assertEqual(timestamp_of(data), (2021, 2, 9, 12, 20, 0))
        reply = self.reply(world, SERIAL, ConfigGetRequest(31, 31))
        self.assertEqual(reply.message.value, b"2021-02-09 12:20:00")

    def test_commands_for_another_serial_or_protocol_are_ignored(self):
        world, factory = self.connected(SERIAL, protocol=6)
        world.cloud.send_raw(SERIAL, build(InverterReadRequest(0, 1), "OTHER12345", protocol=6))
        world.cloud.send_raw(SERIAL, build(InverterReadRequest(0, 1), SERIAL, protocol=5))
        world.flush()
        self.assertEqual(factory.state.stats.commands_ignored, 2)
        self.assertEqual(from_datalogger(world.cloud, RecordType.INVERTER_READ), [])

    def test_reboot_closes_the_connection(self):
        world, factory = self.connected(SERIAL)
        reply = self.reply(world, SERIAL, ConfigSetRequest(32, b"1"))
        self.assertEqual(reply.message, ConfigSetReply(32, 0))
        self.assertIsNone(factory.connection)
        self.assertEqual(factory.state.stats.disconnects, 1)


class RobustnessTests(unittest.SynchronousTestCase):
    """
    Garbage, unknown types and malformed commands never stop a datalogger.
    """

    def test_garbage_unknown_and_malformed(self):
        world = World()
        factory = world.datalogger(SERIAL, protocol=6, interval=60, ping_interval=0)
        junk = (b"\xff\x00\x13" * 40
                + build_packet(0x29, b"x" * 40, protocol=6)
                + build_packet(RecordType.INVERTER_READ, SERIAL.encode().ljust(30, b"\0") + b"\x01",
                               protocol=6)
                + build_packet(RecordType.CONFIG_SET, b"", protocol=6))
        for i in range(0, len(junk), 7):
            world.cloud.send_raw(SERIAL, junk[i:i + 7])
            world.flush()
        stats = factory.state.stats
        self.assertGreater(stats.garbage_bytes, 0)
        self.assertEqual(stats.unknown_packets, 1)
        self.assertEqual(stats.commands_ignored + stats.bad_packets, 2)
        self.assertEqual(stats.errors, 0)
        reply = self.successResultOf(world.send(SERIAL, InverterReadRequest(0, 0)))
        self.assertIsNotNone(reply.message.values)
        world.advance(60, step=60)
        self.assertEqual(stats.acked["data"], 1)

    def test_string_transport_never_raises(self):
        state = DataloggerState(DataloggerSpec(SERIAL), MemoryReactorClock())
        factory = DataloggerFactory(state.spec, state.clock, state)
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        noise = random.Random(5).randbytes(3000)
        for chunk in (b"\x00\x06\x00\x03", noise, b"\x00" * 100):
            protocol.dataReceived(chunk)
        self.assertEqual(state.stats.errors, 0)
        protocol.connectionLost(None)
        self.assertEqual(state.clock.getDelayedCalls(), [])


class ModelTests(unittest.SynchronousTestCase):
    """
    The numbers move like a plant's.
    """

    def test_a_day_of_values(self):
        inverter = SimulatedInverter("IV12345678", "classic", peak_watts=4000)
        start = 1718928000  # 2024-06-21 00:00 UTC
        power, totals, today = [], [], []
        for minute in range(0, 2 * 24 * 60, 10):
            table = inverter.update(start + minute * 60)
            power.append((table[11] << 16 | table[12]) / 10)
            today.append((table[26] << 16 | table[27]) / 10)
            totals.append((table[28] << 16 | table[29]) / 10)
        night = power[:30] + power[126:144]  # 00:00-05:00 and 21:00-24:00
        self.assertEqual(set(night), {0.0})
        noon = power[78]  # 13:00
        self.assertTrue(0.2 * 4000 < noon <= 4000, noon)
        self.assertEqual(totals, sorted(totals))
        self.assertGreater(today[143], 5.0)
        self.assertLess(today[150], 0.1)  # reset after midnight

    def test_grott_decoder_reads_what_was_simulated(self):
        decoder = Decoder()
        for protocol, family, detected, dtc in ((6, "classic", "classic", None),
                                                (5, "min", "tlx", 5100), (6, "min", "tlx", 5100)):
            state = DataloggerState(DataloggerSpec(SERIAL, protocol=protocol, family=family,
                                                   start_epoch=MORNING, peak_watts=5000),
                                    MemoryReactorClock())
            announce = decoder.decode(parse_packet(
                state.packet(RecordType.ANNOUNCE, state.announce_body())))
            data = decoder.decode(parse_packet(state.packet(RecordType.DATA, state.data_body())),
                                  announce.device_type_code)
            self.assertEqual((announce.family, data.family), (detected, detected))
            self.assertEqual(announce.device_type_code, dtc)
            self.assertEqual(announce.identification.serial, state.spec.inverter_serial)
            self.assertEqual(announce.identification.rated_power, 5000)
            self.assertEqual(data.timestamp, "2024-06-21T10:00:00")
            measure = state.inverter.measure
            self.assertLess(abs(data.values["pvpowerout"] - measure["pac"] / 10), 0.1)
            self.assertLess(abs(data.values["pvenergytotal"] - measure["eac_total"] / 10), 0.1)
            self.assertEqual(data.values["pvstatus"], 1)

    def test_same_seed_same_values(self):
        a = SimulatedInverter("IV1", "min", seed=7)
        b = SimulatedInverter("IV1", "min", seed=7)
        self.assertEqual(a.update(MORNING), b.update(MORNING))


class SimulationTests(unittest.SynchronousTestCase):
    """
    L{DataloggerSimulation} over a memory endpoint.
    """

    def test_start_report_stop(self):
        world = World()
        specs = make_specs(3, prefix="SIM", protocol=6, family="min", interval=60,
                           ping_interval=45, start_epoch=MORNING)
        self.assertEqual([s.serial for s in specs], ["SIM0000001", "SIM0000002", "SIM0000003"])
        simulation = DataloggerSimulation(world.clock, world.endpoint, specs)
        simulation.start()
        world.advance(180, step=15)
        report = simulation.report()
        self.assertEqual(report["sent"], {"announce": 3, "data": 9, "ping": 12})
        self.assertEqual(report["acked"], {"announce": 3, "data": 9})
        self.assertEqual(report["pings_echoed"], 12)
        self.assertEqual(report["unacked_records"], 0)
        self.assertEqual(report["latency"]["count"], 9)
        self.assertEqual(world.cloud.count(record_type=RecordType.DATA), 9)
        d = simulation.stop()
        world.flush()
        self.successResultOf(d)
        self.assertEqual(simulation.report()["disconnects"], 3)
        self.assertEqual(world.clock.getDelayedCalls(), [])
        json.dumps(simulation.report(latencies=True))

    def test_connect_failures_retry(self):
        world = World()
        world.endpoint.fail = True
        simulation = DataloggerSimulation(world.clock, world.endpoint,
                                          make_specs(1, reconnect_delay=10, start_epoch=MORNING))
        simulation.start()
        world.advance(25, step=5)
        self.assertEqual(simulation.report()["connect_failures"], 3)
        world.endpoint.fail = False
        world.advance(5)
        self.assertEqual(simulation.report()["connections"], 1)
        self.successResultOf(simulation.when_acked(0))
        d = simulation.stop()
        world.flush()
        self.successResultOf(d)
        self.assertEqual(world.clock.getDelayedCalls(), [])

    def test_spec_validation(self):
        self.assertRaises(ValueError, DataloggerSpec, "bad serial!")
        self.assertRaises(ValueError, DataloggerSpec, "ABC", family="nope")
        self.assertRaises(ValueError, DataloggerSpec, "ABC", protocol=4)
        self.assertRaises(ValueError, make_specs, 10, prefix="ABCDEFGHI")


class TriggerReactor(MemoryReactorClock):
    """
    A memory reactor whose shutdown triggers can be removed again, as the
    scripts do when they finish on their own.
    """

    def addSystemEventTrigger(self, phase, eventType, callable, *args, **kw):
        super().addSystemEventTrigger(phase, eventType, callable, *args, **kw)
        return (phase, eventType, (callable, args, kw))

    def removeSystemEventTrigger(self, triggerID):
        phase, eventType, entry = triggerID
        self.triggers[phase][eventType].remove(entry)


class ScriptTests(unittest.SynchronousTestCase):
    """
    The subcommands' run functions on a memory reactor.
    """

    def test_simulate_without_a_server_reports_and_fails(self):
        reactor = TriggerReactor()
        options = simulate_script.Options()
        options.parseOptions(["--count", "2", "--duration", "30", "--reconnect", "0"])
        out, err = io.StringIO(), io.StringIO()
        d = defer.ensureDeferred(simulate_script.run(reactor, options, out, err))
        self.assertEqual(len(reactor.tcpClients), 2)
        self.assertEqual(reactor.tcpClients[0][:2], ("127.0.0.1", 5279))
        reactor.advance(30)
        self.assertEqual(self.successResultOf(d), 1)
        self.assertEqual(err.getvalue(),
                         "grott simulate: no datalogger could connect to tcp:127.0.0.1:5279\n")
        self.assertEqual(reactor.triggers["before"]["shutdown"], [])
        self.assertTrue(all(c.stoppedConnecting for c in reactor.connectors))
        report = json.loads(out.getvalue())
        self.assertEqual(report["dataloggers"], 2)
        self.assertEqual(report["connections"], 0)

    def test_simulate_options(self):
        options = simulate_script.Options()
        options.parseOptions(["--serials", "AAA1111111,BBB2222222", "--protocol", "5",
                              "--family", "min", "--target", "tcp:127.0.0.1:6000",
                              "--start", "2024-06-21T12:00:00+00:00", "--meter", "34",
                              "--meter-log", "36"])
        specs = options["specs"]
        self.assertEqual([s.serial for s in specs], ["AAA1111111", "BBB2222222"])
        self.assertEqual({(s.meter_address, s.meter_log_address) for s in specs}, {(0x22, 0x24)})
        self.assertEqual({(s.protocol, s.family, s.server_port, s.start_epoch) for s in specs},
                         {(5, "min", 6000, 1718971200.0)})
        for bad in (["--family", "x"], ["--protocol", "3"], ["--start", "noon"],
                    ["--serials", "way-too-long-serial"], ["--meter", "256"],
                    ["--meter-log", "34"], ["--meter", "1", "--meter-log", "-1"]):
            self.assertRaises(simulate_script.usage.UsageError,
                              simulate_script.Options().parseOptions, bad)

    def test_fake_cloud_run_reports_after_duration(self):
        reactor = TriggerReactor()
        options = fakecloud_script.Options()
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", "--duration", "5"])
        out, err = io.StringIO(), io.StringIO()
        d = defer.ensureDeferred(fakecloud_script.run(reactor, options, out, err))
        self.assertEqual(len(reactor.tcpServers), 1)
        self.assertNoResult(d)
        reactor.advance(5)
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(json.loads(out.getvalue())["packets_received"], 0)
        self.assertIn("listening on", err.getvalue())


class LoopbackTests(unittest.TestCase):
    """
    The CLI-level objects over real loopback sockets (ports chosen by the OS),
    ended by events, not by waiting.
    """

    def open_record(self, path):
        record = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed by a cleanup)
        self.addCleanup(record.close)
        return record

    def read_lines(self, path):
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    def test_simulate_against_fake_cloud(self):
        return defer.ensureDeferred(self._simulate_against_fake_cloud())

    async def _simulate_against_fake_cloud(self):
        from twisted.internet import reactor

        path = self.mktemp()
        cloud_options = fakecloud_script.Options()
        cloud_options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", "--record", path])
        record = self.open_record(path)
        cloud, port = await fakecloud_script.listen(reactor, cloud_options, record)
        self.addCleanup(port.stopListening)

        sim_options = simulate_script.Options()
        sim_options.parseOptions([
            "--target", f"tcp:127.0.0.1:{port.getHost().port}", "--count", "3", "--flood",
            "--records", "5", "--buffered", "1", "--protocol", "5", "--family", "min",
            "--reconnect", "0", "--ping-interval", "0"])
        out = io.StringIO()
        code = await simulate_script.run(reactor, sim_options, out)
        self.assertEqual(code, 0)
        report = json.loads(out.getvalue())
        self.assertEqual(report["sent"], {"announce": 3, "buffered_data": 3, "data": 12})
        self.assertEqual(report["acked"], report["sent"])
        self.assertEqual(report["latency"]["count"], 15)
        self.assertEqual(report["disconnects"], 3)

        await cloud.wait(lambda c: not c.open_connections)
        self.assertEqual(cloud.count(record_type=RecordType.DATA), 12)
        self.assertEqual(cloud.count(record_type=RecordType.BUFFERED_DATA), 3)
        self.assertEqual(cloud.acks, 18)
        record.flush()
        lines = self.read_lines(path)
        self.assertEqual(len(lines), 36)
        self.assertEqual({line["serial"] for line in lines},
                         {"SIM0000001", "SIM0000002", "SIM0000003"})
        for line in lines:
            packet = parse_packet(bytes.fromhex(line["hex"]))
            self.assertEqual(packet.protocol, 5)
            self.assertEqual(line["direction"] == TO_DATALOGGER, len(packet.payload) == 1)

