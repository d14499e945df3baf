"""
Simulated Growatt dataloggers, for end-to-end tests and benchmarks.

A simulated datalogger behaves towards its server the way protocol.md
section 1 describes a real one: it connects, announces its inverter (0x03),
sends live data (0x04) every interval and pings (0x16) every ping interval,
replays records that were never acknowledged as buffered data (0x50) after a
reconnect, and answers the server's commands from its own register tables
(0x05/0x06/0x10 inverter registers, 0x18/0x19 datalogger configuration).
Each record type has its own sequence counter, as on real loggers, and every
acknowledgement is matched to the record it acknowledges (type + sequence),
so a test or a benchmark can tell exactly what reached the server.

The pieces, smallest first:

 - L{DataloggerSpec}: what to simulate (serial, protocol, family, timing).
 - L{DataloggerState}: everything that outlives one TCP connection: register
   tables, sequence counters, backlog, L{DataloggerStats}, waiters.
 - L{SimulatedDatalogger}: the protocol of one connection (thin: frames,
   dispatches, schedules on the factory's clock).
 - L{DataloggerFactory}: builds those protocols for one state; connects (and
   optionally reconnects) through an endpoint.
 - L{DataloggerSimulation}: N factories on one reactor, with a report.

Nothing here touches the global reactor: the clock and the endpoint are
handed in, so trial tests drive it with L{twisted.internet.task.Clock}.
"""

import calendar
import collections
import dataclasses
import datetime
import statistics
import time

from twisted.internet import defer, error
from twisted.internet.protocol import Factory, Protocol

from grott.codec import (
    ACKNOWLEDGED,
    COMMANDS,
    TO_DATALOGGER,
    ConfigGetReply,
    ConfigGetRequest,
    ConfigSetReply,
    ConfigSetRequest,
    Framer,
    Garbage,
    InverterReadReply,
    InverterReadRequest,
    InverterWriteMultiReply,
    InverterWriteMultiRequest,
    InverterWriteReply,
    InverterWriteRequest,
    PacketError,
    RecordType,
    build,
    build_packet,
    build_ping,
    parse_body,
)
from grott.logs import Logger
from grott.registers.meter import encode_meter_log, encode_meter_values
from grott.testing.simmodel import (
    SimulatedInverter,
    SimulatedMeter,
    blocks_of,
    family,
    register_payload,
)

__all__ = [
    "DataloggerFactory",
    "DataloggerSimulation",
    "DataloggerSpec",
    "DataloggerState",
    "DataloggerStats",
    "SimulatedDatalogger",
    "make_specs",
    "record_name",
]

#: Inverter reads longer than this fail, like a Modbus read of >125 registers.
MAX_READ = 125
#: A 0x19 get answers at most this many registers (guards against 0..65535).
MAX_CONFIG_BURST = 256
#: Configuration registers a set cannot change (serial, MAC, firmware).
READ_ONLY_CONFIG = frozenset({8, 16, 21})


def record_name(record_type):
    """
    A record type's readable name, as used in stats and reports.
    """
    try:
        return RecordType(record_type).name.lower()
    except ValueError:
        return f"0x{record_type:02x}"


@dataclasses.dataclass(frozen=True)
class DataloggerSpec:
    """
    What one simulated datalogger is.

    @ivar serial: the datalogger serial (1-10 ASCII letters/digits).
    @ivar inverter_serial: defaults to C{"IV"} + the last 8 of C{serial}.
    @ivar protocol: 2, 5 or 6 (the serial field is 30 bytes in 6).
    @ivar family: an inverter family of L{grott.testing.simmodel.FAMILIES}.
    @ivar interval: seconds between live records (datalogger register 4).
    @ivar ping_interval: seconds between pings; 0 sends none.
    @ivar first_data: seconds from connect to the first live record
        (default: one interval).  Not used when C{flood}.
    @ivar announce: send the 0x03 announce on every connect.
    @ivar buffered: records already waiting when the simulation starts;
        they go out as 0x50 (one interval apart, in the past).
    @ivar flood: send the next record as soon as the previous one is
        acknowledged (C{window} records in flight), ignoring C{interval}.
    @ivar records: stop after this many data + buffered records (None: never).
    @ivar reconnect_delay: seconds before reconnecting after a lost or
        failed connection; None: do not reconnect.
    @ivar start_epoch: epoch seconds the clock's current time stands for
        (None: the clock's own seconds, right for a real reactor).
    @ivar utc_offset: seconds east of UTC of the datalogger's local time.
    @ivar max_backlog: unacknowledged records kept for replay (oldest go).
    @ivar meter_address: a smart meter at this device address (0x22 is
        usual): a meter data record (0x20) follows every live data record.
        None: no meter.
    @ivar meter_log_address: the meter also sends its reading as a meter
        log line (0x1b) from this device address, after each 0x20, as
        dataloggers that send both do (needs C{meter_address}).  None: no
        log line.
    """

    serial: str
    inverter_serial: str = None
    protocol: int = 6
    family: str = "classic"
    interval: float = 300.0
    ping_interval: float = 180.0
    first_data: float = None
    device_address: int = 1
    announce: bool = True
    buffered: int = 0
    flood: bool = False
    window: int = 1
    records: int = None
    reconnect_delay: float = None
    start_epoch: float = None
    utc_offset: int = 0
    seed: int = None
    peak_watts: int = None
    max_backlog: int = 1000
    meter_address: int = None
    meter_log_address: int = None
    server_host: str = "127.0.0.1"
    server_port: int = 5279

    def __post_init__(self):
        if not (isinstance(self.serial, str) and 1 <= len(self.serial) <= 10
                and self.serial.isascii() and self.serial.isalnum()):
            raise ValueError(f"datalogger serial {self.serial!r} must be 1-10 ASCII letters/digits")
        if self.inverter_serial is None:
            object.__setattr__(self, "inverter_serial", "IV" + self.serial[-8:])
        if self.protocol not in (2, 5, 6):
            raise ValueError(f"protocol {self.protocol} is not 2, 5 or 6")
        family(self.family)
        if self.interval <= 0 or self.ping_interval < 0 or self.window < 1:
            raise ValueError("interval must be > 0, ping_interval >= 0, window >= 1")
        if self.meter_log_address is not None and self.meter_address is None:
            raise ValueError("a meter log line needs a meter (meter_address)")


def make_specs(count=1, *, serials=None, prefix="SIM", **common):
    """
    Specs for C{count} dataloggers: the given C{serials}, or C{prefix}
    followed by a zero-padded number up to 10 characters (SIM0000001...).
    C{common} sets the other L{DataloggerSpec} fields for all of them.
    """
    if serials is None:
        digits = 10 - len(prefix)
        if digits < 1 or count > 10 ** digits - 1:
            raise ValueError(f"prefix {prefix!r} leaves no room for {count} serials")
        serials = [f"{prefix}{n:0{digits}d}" for n in range(1, count + 1)]
    return [DataloggerSpec(serial=s, **common) for s in serials]


@dataclasses.dataclass
class DataloggerStats:
    """
    What one datalogger did, for reports and assertions.

    C{sent}/C{acked}/C{commands} count by record name (L{record_name});
    C{latencies} holds, per acknowledged data or buffered record, the
    seconds from its write to its ack on the simulation's clock.
    """

    connections: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    sent: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    acked: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    pings_echoed: int = 0
    unmatched_acks: int = 0
    commands: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    commands_ignored: int = 0
    bad_packets: int = 0
    unknown_packets: int = 0
    garbage_bytes: int = 0
    errors: int = 0
    backlog_dropped: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    latencies: list = dataclasses.field(default_factory=list)

    def as_dict(self, latencies=True):
        result = dataclasses.asdict(self)
        for key in ("sent", "acked", "commands"):
            result[key] = dict(sorted(getattr(self, key).items()))
        if not latencies:
            del result["latencies"]
        return result


class DataloggerState:
    """
    One datalogger across its connections: tables, counters, backlog, stats.

    @ivar inverter: the L{SimulatedInverter} (holding/input tables).
    @ivar config: datalogger configuration register -> bytes (0x18/0x19).
    @ivar backlog: plain bodies of records to replay as 0x50.
    @ivar records_sent: data + buffered records written so far.
    """

    log = Logger()

    def __init__(self, spec, clock):
        self.spec = spec
        self.clock = clock
        self._t0 = clock.seconds()
        self.clock_skew = 0.0
        self.interval = float(spec.interval)
        self.inverter = SimulatedInverter(
            spec.inverter_serial, spec.family, seed=spec.seed, peak_watts=spec.peak_watts,
            utc_offset=spec.utc_offset, device_address=spec.device_address)
        self.meter = SimulatedMeter(self.inverter) if spec.meter_address is not None else None
        self.stats = DataloggerStats()
        self._sequences = {}
        self.records_sent = 0
        self.reboot_requested = False
        #: Why the last connection attempt failed (None: none has).
        self.connect_error = None
        self.backlog = collections.deque()
        self._waiters = []
        self.config = self._initial_config()
        for n in range(spec.buffered, 0, -1):
            self.queue_buffered(self._data_body(self.epoch() - n * self.interval))

    # ---------------------------------------------------------------- time

    def epoch(self):
        """
        Epoch seconds now, as the simulated world sees it.
        """
        now = self.clock.seconds()
        if self.spec.start_epoch is None:
            return now
        return self.spec.start_epoch + (now - self._t0)

    def local_time(self, epoch=None):
        """
        The datalogger's clock (settable through register 31).
        """
        epoch = self.epoch() if epoch is None else epoch
        return time.gmtime(epoch + self.spec.utc_offset + self.clock_skew)

    # ---------------------------------------------------------------- records

    def next_sequence(self, record_type):
        """
        Real loggers count each record type separately (protocol.md 2).
        """
        value = self._sequences.get(record_type, 0) % 0xFFFF + 1
        self._sequences[record_type] = value
        return value

    def _timestamp(self, epoch):
        t = self.local_time(epoch)
        return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)

    def announce_body(self):
        epoch = self.epoch()
        table = self.inverter.holding_snapshot(epoch)
        return register_payload(
            self.spec.serial, self.spec.inverter_serial, self._timestamp(epoch),
            blocks_of(table, self.inverter.family.holding_blocks), protocol=self.spec.protocol)

    def _data_body(self, epoch):
        self.inverter.update(epoch)
        return register_payload(
            self.spec.serial, self.spec.inverter_serial, self._timestamp(epoch),
            self.inverter.input_blocks(), protocol=self.spec.protocol)

    def data_body(self):
        return self._data_body(self.epoch())

    def meter_body(self):
        """
        The meter's record at the time of the last live data record.
        """
        epoch = self.epoch()
        return encode_meter_values(self.spec.serial, self.spec.inverter_serial,
                                   self.meter.words(epoch), protocol=self.spec.protocol,
                                   timestamp=datetime.datetime(*self._timestamp(epoch)))

    def meter_log_body(self):
        """
        The meter's log line (0x1b): the reading of the last L{meter_body}.
        """
        return encode_meter_log(self.spec.serial, self.meter.log_text(),
                                protocol=self.spec.protocol,
                                timestamp=datetime.datetime(*self._timestamp(self.epoch())))

    def queue_buffered(self, body):
        """
        Keep C{body} for replay as 0x50; the oldest go when the backlog is full.
        """
        if len(self.backlog) >= self.spec.max_backlog:
            self.backlog.popleft()
            self.stats.backlog_dropped += 1
        self.backlog.append(body)

    def packet(self, record_type, body):
        address = {RecordType.METER_DATA: self.spec.meter_address,
                   RecordType.METER_LOG: self.spec.meter_log_address}.get(
                       record_type, self.spec.device_address)
        return build_packet(record_type, body, protocol=self.spec.protocol,
                            sequence=self.next_sequence(record_type), device_address=address)

    def ping(self):
        return build_ping(self.spec.serial, protocol=self.spec.protocol,
                          sequence=self.next_sequence(RecordType.PING),
                          device_address=self.spec.device_address)

    @property
    def records_left(self):
        """
        How many more data/buffered records may go out (None: unlimited).
        """
        if self.spec.records is None:
            return None
        return max(0, self.spec.records - self.records_sent)

    @property
    def done(self):
        """
        All allowed records went out and were acknowledged.
        """
        return (self.spec.records is not None and self.records_left == 0
                and self.acked_records >= self.spec.records)

    @property
    def acked_records(self):
        return self.stats.acked["data"] + self.stats.acked["buffered_data"]

    # ---------------------------------------------------------------- commands

    def _initial_config(self):
        spec = self.spec
        mac = "AC:CF:23:" + ":".join(f"{b:02X}" for b in spec.serial.encode()[-3:].rjust(3, b"0"))
        text = {
            4: f"{self.interval / 60:g}", 5: "1", 6: "32", 7: "X", 8: spec.serial, 9: "2.0",
            10: "0", 11: f"##{spec.server_host}/app/xml/#8081#", 13: "16",
            14: "192.168.1.1", 15: "80", 16: mac, 17: spec.server_host,
            18: str(spec.server_port), 19: spec.server_host, 21: "3.1.0.0",
            56: "simulated", 66: "2", 67: "0", 76: "-58",
        }
        return {register: value.encode("latin-1") for register, value in text.items()}

    def config_value(self, register):
        if register == 31:
            t = self.local_time()
            return time.strftime("%Y-%m-%d %H:%M:%S", t).encode("ascii")
        return self.config.get(register, b"")

    def _set_config(self, register, value):
        """
        Store a configuration value; return the reply status (0 = OK).
        """
        if register in READ_ONLY_CONFIG:
            return 1
        text = value.decode("latin-1")
        if register == 4:
            try:
                minutes = float(text)
            except ValueError:
                return 1
            if not minutes > 0:
                return 1
            self.interval = minutes * 60
        elif register == 31:
            try:
                wanted = time.strptime(text, "%Y-%m-%d %H:%M:%S")
            except ValueError:
                return 1
            target = calendar.timegm(wanted)
            self.clock_skew = target - (self.epoch() + self.spec.utc_offset)
            return 0
        elif register == 32:
            self.reboot_requested = True
            return 0
        self.config[register] = bytes(value)
        return 0

    def answer(self, message):
        """
        The reply messages a real datalogger sends for command C{message}.
        """
        holding = self.inverter.holding
        if isinstance(message, InverterReadRequest):
            registers = range(message.first, message.last + 1)
            if len(registers) > MAX_READ or any(r not in holding for r in registers):
                return [InverterReadReply(message.first, message.last, None)]
            table = self.inverter.holding_snapshot(self.epoch())
            return [InverterReadReply(message.first, message.last,
                                      tuple(table[r] for r in registers))]
        if isinstance(message, InverterWriteRequest):
            if not self.inverter.write(message.register, [message.value], self.epoch()):
                return [InverterWriteReply(message.register, 1, 0)]
            return [InverterWriteReply(message.register, 0, message.value)]
        if isinstance(message, InverterWriteMultiRequest):
            if (len(message.values) > MAX_READ
                    or not self.inverter.write(message.first, message.values, self.epoch())):
                return [InverterWriteMultiReply(message.first, message.last, 1)]
            return [InverterWriteMultiReply(message.first, message.last, 0)]
        if isinstance(message, ConfigGetRequest):
            last = min(message.last, message.first + MAX_CONFIG_BURST - 1)
            return [ConfigGetReply(r, self.config_value(r))
                    for r in range(message.first, last + 1)]
        if isinstance(message, ConfigSetRequest):
            return [ConfigSetReply(message.register, self._set_config(message.register,
                                                                      message.value))]
        raise PacketError(f"no answer for {message!r}")

    # ---------------------------------------------------------------- waiting

    def wait(self, predicate):
        """
        A Deferred firing (with this state) once C{predicate(self)} is true.
        Checked after every packet and connection event; each caller gets
        its own Deferred.
        """
        if predicate(self):
            return defer.succeed(self)
        d = defer.Deferred(lambda d: self._waiters.remove(entry) if entry in self._waiters else None)
        entry = (predicate, d)
        self._waiters.append(entry)
        return d

    def when_acked(self, count):
        """
        Fires once C{count} data/buffered records have been acknowledged.
        """
        return self.wait(lambda s: s.acked_records >= count)

    def when_done(self):
        """
        Fires once the C{records} limit was sent and fully acknowledged.
        """
        return self.wait(lambda s: s.done)

    def changed(self):
        if not self._waiters:
            return
        ready = [entry for entry in self._waiters if entry[0](self)]
        for entry in ready:
            self._waiters.remove(entry)
        for _, d in ready:
            d.callback(self)


class SimulatedDatalogger(Protocol):
    """
    One connection of a simulated datalogger to its server.

    State lives in the factory's L{DataloggerState}; this object holds only
    what ends with the connection: the framer, the timers and the records
    in flight (C{(record type, sequence) -> (send time, body)}).
    """

    log = Logger()

    def __init__(self, state):
        self.state = state
        self.spec = state.spec
        self.clock = state.clock
        self._framer = Framer()
        self._in_flight = {}
        self._pings = {}
        self._data_call = None
        self._ping_call = None
        self._announced = not self.spec.announce
        self.connected_at = None

    # ---------------------------------------------------------------- lifecycle

    def connectionMade(self):
        stats = self.state.stats
        stats.connections += 1
        self.connected_at = self.clock.seconds()
        self.log.debug("datalogger {serial} connected", serial=self.spec.serial)
        if self.spec.announce:
            self._send_record(RecordType.ANNOUNCE, self.state.announce_body())
        else:
            self._after_announce()
        if not self.spec.flood:
            first = self.spec.first_data if self.spec.first_data is not None else self.state.interval
            self._data_call = self.clock.callLater(first, self._data_tick)
        if self.spec.ping_interval:
            self._ping_call = self.clock.callLater(self.spec.ping_interval, self._ping_tick)
        self.state.changed()

    def connectionLost(self, reason=None):
        for call in (self._data_call, self._ping_call):
            if call is not None and call.active():
                call.cancel()
        self._data_call = self._ping_call = None
        # Records the server never acknowledged are replayed as 0x50 later,
        # as a real logger does with what it could not deliver.
        for (record_type, _), (_, body) in sorted(self._in_flight.items(), key=lambda i: i[1][0]):
            if record_type in (RecordType.DATA, RecordType.BUFFERED_DATA):
                self.state.queue_buffered(body)
        self._in_flight.clear()
        self.state.stats.disconnects += 1
        self.log.debug("datalogger {serial} disconnected", serial=self.spec.serial)
        factory = getattr(self, "factory", None)
        if factory is not None:
            factory.connection_lost(self)
        self.state.changed()

    # ---------------------------------------------------------------- sending

    def _write(self, data):
        self.state.stats.bytes_sent += len(data)
        self.transport.write(data)

    def _send_record(self, record_type, body):
        packet = self.state.packet(record_type, body)
        sequence = int.from_bytes(packet[:2], "big")
        self._in_flight[(record_type, sequence)] = (self.clock.seconds(), body)
        self.state.stats.sent[record_name(record_type)] += 1
        if record_type in (RecordType.DATA, RecordType.BUFFERED_DATA):
            self.state.records_sent += 1
        self._write(packet)

    def _send_next_record(self):
        """
        Buffered records first (oldest first), then live data.
        """
        if self.state.records_left == 0:
            return False
        if self.state.backlog:
            self._send_record(RecordType.BUFFERED_DATA, self.state.backlog.popleft())
        else:
            self._send_record(RecordType.DATA, self.state.data_body())
            if self.state.meter is not None:
                self._send_record(RecordType.METER_DATA, self.state.meter_body())
                if self.spec.meter_log_address is not None:
                    self._send_record(RecordType.METER_LOG, self.state.meter_log_body())
        return True

    def _records_in_flight(self):
        return sum(1 for (t, _) in self._in_flight
                   if t in (RecordType.DATA, RecordType.BUFFERED_DATA))

    def _after_announce(self):
        self._announced = True
        if self.spec.flood:
            self._flood()
        else:
            while self.state.backlog and self._send_next_record():
                pass

    def _flood(self):
        while self._records_in_flight() < self.spec.window and self._send_next_record():
            pass

    def _data_tick(self):
        self._data_call = self.clock.callLater(self.state.interval, self._data_tick)
        self._send_next_record()

    def _ping_tick(self):
        self._ping_call = self.clock.callLater(self.spec.ping_interval, self._ping_tick)
        packet = self.state.ping()
        self._pings[int.from_bytes(packet[:2], "big")] = packet
        if len(self._pings) > 64:
            self._pings.pop(next(iter(self._pings)))
        self.state.stats.sent["ping"] += 1
        self._write(packet)

    # ---------------------------------------------------------------- receiving

    def dataReceived(self, data):
        stats = self.state.stats
        stats.bytes_received += len(data)
        for item in self._framer.feed(data):
            if isinstance(item, Garbage):
                stats.garbage_bytes += len(item.data)
                self.log.warn(  # noqa: G010 (twisted.logger has no warning())
                    "datalogger {serial} received {count} bytes of garbage: {reason}",
                              serial=self.spec.serial, count=len(item.data), reason=item.reason)
                continue
            with self.log.failuresHandled("datalogger {serial} could not handle {packet!r}",
                                          serial=self.spec.serial, packet=item) as op:
                self._handle(item)
            if op.failed:
                stats.errors += 1
        self.state.changed()

    def _handle(self, packet):
        kind = packet.record_type
        if kind in ACKNOWLEDGED and len(packet.payload) == 1:
            self._ack(packet)
        elif kind == RecordType.PING:
            sent = self._pings.pop(packet.sequence, None)
            if sent == packet.raw:
                self.state.stats.pings_echoed += 1
            else:
                self.state.stats.unknown_packets += 1
        elif kind in COMMANDS:
            self._command(packet)
        else:
            self.state.stats.unknown_packets += 1
            self.log.info("datalogger {serial} ignores record type {name}",
                          serial=self.spec.serial, name=record_name(kind))

    def _ack(self, packet):
        stats = self.state.stats
        entry = self._in_flight.pop((packet.record_type, packet.sequence), None)
        if entry is None:
            stats.unmatched_acks += 1
            return
        stats.acked[record_name(packet.record_type)] += 1
        if packet.record_type == RecordType.ANNOUNCE:
            self._after_announce()
            return
        if packet.record_type in (RecordType.METER_DATA, RecordType.METER_LOG):
            return
        stats.latencies.append(self.clock.seconds() - entry[0])
        if self.spec.flood and self._announced:
            self._flood()

    def _command(self, packet):
        stats = self.state.stats
        if packet.protocol != self.spec.protocol or packet.datalogger_serial != self.spec.serial:
            # A real logger ignores frames for another serial or built for
            # the wrong protocol (protocol.md 14.2).
            stats.commands_ignored += 1
            self.log.warn(  # noqa: G010
                "datalogger {serial} ignores a command for {target} in protocol {protocol}",
                          serial=self.spec.serial, target=packet.datalogger_serial,
                          protocol=packet.protocol)
            return
        try:
            message = parse_body(packet, TO_DATALOGGER)
        except PacketError as e:
            stats.bad_packets += 1
            self.log.warn(  # noqa: G010
                "datalogger {serial} got a malformed command: {error}",
                          serial=self.spec.serial, error=str(e))
            return
        replies = self.state.answer(message)
        self._write(b"".join(
            build(reply, self.spec.serial, protocol=self.spec.protocol, sequence=packet.sequence,
                  device_address=packet.device_address)
            for reply in replies))
        stats.commands[record_name(packet.record_type)] += 1
        if isinstance(message, ConfigSetRequest) and message.register == 4:
            self._reschedule()
        if self.state.reboot_requested:
            self.state.reboot_requested = False
            self.transport.loseConnection()

    def _reschedule(self):
        """
        A new interval (register 4) takes effect from now.
        """
        if self._data_call is not None and self._data_call.active():
            self._data_call.cancel()
            self._data_call = self.clock.callLater(self.state.interval, self._data_tick)


class DataloggerFactory(Factory):
    """
    Connections of one simulated datalogger; its state survives reconnects.

    @ivar state: the L{DataloggerState}.
    @ivar connection: the connected L{SimulatedDatalogger}, or None.
    """

    log = Logger()
    noisy = False

    def __init__(self, spec, clock, state=None):
        self.spec = spec
        self.clock = clock
        self.state = state if state is not None else DataloggerState(spec, clock)
        self.connection = None
        self._endpoint = None
        self._running = False
        self._connecting = None
        self._retry = None
        self._closed = []

    def buildProtocol(self, addr):
        protocol = SimulatedDatalogger(self.state)
        protocol.factory = self
        self.connection = protocol
        return protocol

    def connect(self, endpoint):
        """
        Connect through C{endpoint}, and reconnect after C{reconnect_delay}
        when the connection fails or is lost, until L{disconnect}.
        """
        self._endpoint = endpoint
        self._running = True
        self._attempt()

    def _attempt(self):
        self._retry = None
        if not self._running:
            return
        d = self._connecting = self._endpoint.connect(self)
        d.addCallbacks(self._connected, self._failed)

    def _connected(self, protocol):
        self._connecting = None

    def _failed(self, reason):
        self._connecting = None
        self.connection = None
        if reason.check(defer.CancelledError, error.ConnectingCancelledError):
            return  # we gave up (stop), not the target
        self.state.stats.connect_failures += 1
        self.state.connect_error = reason.getErrorMessage()
        self.log.info("datalogger {serial} could not connect: {reason}",
                      serial=self.spec.serial, reason=reason.getErrorMessage())
        self.state.changed()
        self._schedule_retry()

    def _schedule_retry(self):
        if self._running and self.spec.reconnect_delay is not None and self._retry is None:
            self._retry = self.clock.callLater(self.spec.reconnect_delay, self._attempt)

    def connection_lost(self, protocol):
        if protocol is self.connection:
            self.connection = None
        closed, self._closed = self._closed, []
        for d in closed:
            d.callback(None)
        self._schedule_retry()

    def disconnect(self):
        """
        Stop reconnecting and close the connection; the Deferred fires when
        it is closed.
        """
        self._running = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._connecting is not None:
            self._connecting.cancel()
        if self.connection is None or self.connection.transport is None:
            return defer.succeed(None)
        d = defer.Deferred()
        self._closed.append(d)
        self.connection.transport.loseConnection()
        return d


def _summary(values):
    if not values:
        return None
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


class DataloggerSimulation:
    """
    N simulated dataloggers connecting through one client endpoint.

    @param clock: defaults to C{reactor}; all timing uses it.
    """

    log = Logger()

    def __init__(self, reactor, endpoint, specs, clock=None):
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.endpoint = endpoint
        self.factories = [DataloggerFactory(spec, self.clock) for spec in specs]
        self.started_at = None
        self.stopped_at = None

    @property
    def states(self):
        return [f.state for f in self.factories]

    def start(self):
        self.started_at = self.clock.seconds()
        for factory in self.factories:
            factory.connect(self.endpoint)

    def stop(self):
        """
        Disconnect everyone; fires when every connection is closed.
        """
        d = defer.gatherResults([f.disconnect() for f in self.factories], consumeErrors=True)

        def stopped(_):
            self.stopped_at = self.clock.seconds()
        return d.addCallback(stopped)

    def when_done(self):
        """
        Fires when every datalogger has sent and got acknowledged its
        C{records} (each spec needs a C{records} limit).
        """
        return defer.gatherResults([f.state.when_done() for f in self.factories])

    def when_acked(self, count):
        """
        Fires when every datalogger has C{count} records acknowledged.
        """
        return defer.gatherResults([f.state.when_acked(count) for f in self.factories])

    def when_unreachable(self):
        """
        Fires with the reason when a datalogger fails to connect before
        any has ever connected: the target is not there at all.
        """
        d = defer.DeferredList(
            [f.state.wait(lambda s: s.connect_error is not None) for f in self.factories],
            fireOnOneCallback=True, consumeErrors=True)
        d.addCallback(lambda result: result[0].connect_error)
        return d

    def ever_connected(self):
        return any(f.state.stats.connections for f in self.factories)

    def stats(self):
        """
        Per serial: the L{DataloggerStats} as a dict (latency lists included).
        """
        return {f.spec.serial: f.state.stats.as_dict() for f in self.factories}

    def report(self, latencies=False, per_datalogger=True):
        """
        The JSON-able report: totals, latency summary, and per datalogger
        what was sent and acknowledged.
        """
        totals = collections.Counter()
        sent = collections.Counter()
        acked = collections.Counter()
        commands = collections.Counter()
        all_latencies = []
        for factory in self.factories:
            s = factory.state.stats
            sent.update(s.sent)
            acked.update(s.acked)
            commands.update(s.commands)
            all_latencies.extend(s.latencies)
            for key in ("connections", "connect_failures", "disconnects", "pings_echoed",
                        "unmatched_acks", "commands_ignored", "bad_packets", "unknown_packets",
                        "garbage_bytes", "errors", "backlog_dropped", "bytes_sent",
                        "bytes_received"):
                totals[key] += getattr(s, key)
        end = self.stopped_at if self.stopped_at is not None else self.clock.seconds()
        elapsed = None if self.started_at is None else end - self.started_at
        acked_records = acked["data"] + acked["buffered_data"]
        result = {
            "dataloggers": len(self.factories),
            "elapsed": elapsed,
            "sent": dict(sorted(sent.items())),
            "acked": dict(sorted(acked.items())),
            "unacked_records": (sent["data"] + sent["buffered_data"]) - acked_records,
            "commands": dict(sorted(commands.items())),
            "records_per_second": (acked_records / elapsed) if elapsed else None,
            "latency": _summary(all_latencies),
            **dict(sorted(totals.items())),
        }
        if per_datalogger:
            result["per_datalogger"] = {
                f.spec.serial: f.state.stats.as_dict(latencies=latencies) for f in self.factories}
        elif latencies:
            result["latencies"] = all_latencies
        return result
