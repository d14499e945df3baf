"""
Hostile peers on the datalogger port, on real loopback sockets: a
datalogger that never reads grott's answers, a device claiming a live
serial from another address, a trickle of bytes that never makes a packet,
a flood of garbage, and peers outside proxy.allowed_serials /
proxy.allowed_networks.  Each check has a bound that the relay without
these defences does not meet.
"""

from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from grott import logs
from grott.codec import build_packet, parse_packet
from grott.proxy import UNREAD_LIMIT, ProxyFactory
from grott.session import Registry
from tests import relayhelpers
from tests.vectors import raw
from tests.waiting import until

PING = raw("grott-p6-0116-ping")
DATA = raw("grott-p6-0104-classic")
SERIAL = "JPC281833B"


def with_serial(data, serial):
    packet = parse_packet(data)
    payload = serial.encode("ascii") + packet.payload[10:]
    return build_packet(packet.record_type, payload, protocol=packet.protocol,
                        sequence=packet.sequence, device_address=packet.device_address)


class Lines:
    """grott's log lines, as text, while the test runs."""

    def __init__(self, case):
        self.events = []
        logs.publisher.addObserver(self.events.append)
        case.addCleanup(logs.publisher.removeObserver, self.events.append)

    def matching(self, text):
        return [line for line in map(formatEvent, self.events) if text in line]


class Base(TestCase):
    def startGrott(self, **kw):
        kw.setdefault("idle_timeout", 600)
        self.registry = Registry()
        self.factory = ProxyFactory(None, self.registry, reactor, **kw)
        d = relayhelpers.listen(reactor, self.factory)
        d.addCallback(self._up)
        return d

    def _up(self, port):
        self.port = port
        self.addCleanup(self._stop)

    def _stop(self):
        d = self.factory.closeAll("test over")
        return d.addCallback(lambda _: self.port.stopListening())

    def connect(self, source="127.0.0.1"):
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port,
                                      bindAddress=(source, 0))
        return endpoint.connect(Factory.forProtocol(relayhelpers.Client))

    def protocolOf(self, serial):
        [protocol] = [p for p in self.factory.connections
                      if p.session.datalogger_serial == serial]
        return protocol


class NonReaderTests(Base):
    @defer.inlineCallbacks
    def test_datalogger_that_never_reads_is_not_read_either(self):
        """
        Cloud-free, grott answers every ping; a datalogger that never reads
        the answers makes grott stop reading from it, so what grott takes in
        (and holds as unread answers) stays bounded by the socket buffers.
        """
        yield self.startGrott()
        client = yield self.connect()
        client.transport.pauseProducing()   # never reads grott's answers
        flood = PING * (32 * 2**20 // len(PING))
        client.transport.write(flood)
        self.addCleanup(client.transport.abortConnection)
        yield until(reactor, lambda: any(p.session.datalogger_serial for p in
                                         self.factory.connections), "the first ping")
        protocol = self.protocolOf(SERIAL)
        yield until(reactor, lambda: protocol.transport.producerPaused,
                    "grott to stop reading from the datalogger")
        taken = protocol.session.bytes_in
        self.assertLess(taken, 16 * 2**20)
        self.assertFalse(protocol.transport.disconnecting)


class UnreadBoundTests(SynchronousTestCase):
    def test_closed_past_the_unread_bound(self):
        """Answers (and admin commands) piling up unread close the datalogger, logged."""
        lines = Lines(self)
        factory = ProxyFactory(None, Registry(), task.Clock())
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(PING)
        self.assertIsNotNone(transport.producer)
        transport.producer.pauseProducing()      # what a full transport does
        self.assertEqual(transport.producerState, "paused")
        session = protocol.session
        for _ in range(UNREAD_LIMIT // len(PING)):
            self.assertTrue(session.send(PING))
        self.assertFalse(transport.disconnecting)
        session.send(PING * 2)
        self.assertTrue(transport.disconnecting)
        self.assertIn("not reading grott's answers", session.closed_by)
        self.assertEqual(len(lines.matching("does not read grott's answers")), 1)
        # The transport draining later does not resume a closing connection.
        transport.producer.resumeProducing()
        self.assertEqual(transport.producerState, "paused")


class TakeoverTests(Base):
    @defer.inlineCallbacks
    def test_live_serial_from_another_address_is_refused(self):
        lines = Lines(self)
        yield self.startGrott()
        victim = yield self.connect("127.0.0.1")
        victim.transport.write(PING)
        yield victim.waitFor(len(PING))
        for _ in range(3):
            attacker = yield self.connect("127.0.0.2")
            attacker.transport.write(PING)
            yield attacker.lost.addTimeout(5, reactor)
        self.assertEqual(self.registry.refused_takeovers, 3)
        self.assertEqual(len(lines.matching("refusing datalogger JPC281833B from 127.0.0.2")), 1)
        # The real datalogger kept its connection and its answers.
        victim.transport.write(PING)
        yield victim.waitFor(2 * len(PING))
        self.assertEqual(self.registry.by_serial(SERIAL).host, "127.0.0.1")

    @defer.inlineCallbacks
    def test_same_address_reconnect_replaces(self):
        yield self.startGrott()
        old = yield self.connect("127.0.0.1")
        old.transport.write(PING)
        yield old.waitFor(len(PING))
        new = yield self.connect("127.0.0.1")
        new.transport.write(PING)
        yield old.lost.addTimeout(5, reactor)
        yield new.waitFor(len(PING))
        self.assertEqual(self.registry.replaced, 1)

    @defer.inlineCallbacks
    def test_silent_old_connection_is_taken_over(self):
        yield self.startGrott()
        old = yield self.connect("127.0.0.1")
        old.transport.write(PING)
        yield old.waitFor(len(PING))
        self.registry.by_serial(SERIAL).last_packet_at -= 3600   # silent for an hour
        new = yield self.connect("127.0.0.2")
        new.transport.write(PING)
        yield old.lost.addTimeout(5, reactor)
        yield new.waitFor(len(PING))
        self.assertEqual(self.registry.by_serial(SERIAL).host, "127.0.0.2")


class TrickleTests(Base):
    @defer.inlineCallbacks
    def test_bytes_that_never_make_a_packet_do_not_keep_a_slot(self):
        yield self.startGrott(idle_timeout=0.5)
        client = yield self.connect()
        stream = iter(DATA)   # 585 bytes: a packet only after a minute
        trickle = task.LoopingCall(lambda: client.transport.write(bytes([next(stream)])))
        trickle.start(0.05)
        self.addCleanup(lambda: trickle.running and trickle.stop())
        started = reactor.seconds()
        yield client.lost.addTimeout(10, reactor)
        self.assertLess(reactor.seconds() - started, 5)
        self.assertEqual(len(self.registry), 0)


class GarbageFloodTests(Base):
    @defer.inlineCallbacks
    def test_log_lines_per_connection_are_bounded(self):
        lines = Lines(self)
        yield self.startGrott()
        client = yield self.connect()
        unit = b"\xaa\xbb" + PING       # garbage, then a packet, again and again
        count = 4000
        client.transport.write(unit * count)
        yield client.waitFor(len(PING) * count)
        self.assertLessEqual(len(lines.matching("bytes are not a packet")), 5)
        client.transport.loseConnection()
        yield client.lost
        yield until(reactor, lambda: lines.matching("more runs of bytes that are not a packet"),
                    "the summary line")
        [summary] = lines.matching("more runs of bytes")
        self.assertIn(f"{count - 5} more runs", summary)


class AllowedTests(Base):
    @defer.inlineCallbacks
    def test_serial_not_allowed_is_closed(self):
        yield self.startGrott(allowed_serials=["OTHER00001"])
        client = yield self.connect()
        client.transport.write(PING)
        yield client.lost.addTimeout(5, reactor)
        self.assertEqual(client.received, b"")
        allowed = yield self.connect()
        allowed.transport.write(with_serial(PING, "OTHER00001"))
        yield allowed.waitFor(len(PING))

    @defer.inlineCallbacks
    def test_network_not_allowed_is_refused(self):
        lines = Lines(self)
        yield self.startGrott(allowed_networks=["10.0.0.0/8", "127.0.0.2/32"])
        for _ in range(2):
            client = yield self.connect("127.0.0.1")
            yield client.lost.addTimeout(5, reactor)
        self.assertEqual(self.registry.rejected, 2)
        self.assertEqual(len(lines.matching("not in proxy.allowed_networks")), 1)
        allowed = yield self.connect("127.0.0.2")
        allowed.transport.write(PING)
        yield allowed.waitFor(len(PING))


class AllowedConfigTests(SynchronousTestCase):
    def config(self, text):
        from grott.config import config_from_string
        return config_from_string(text, "grott.yaml")

    def test_bad_network_is_one_line(self):
        from grott.config import ConfigError
        error = self.assertRaises(ConfigError, self.config,
                                  "proxy:\n  allowed_networks: [192.168.1.0/24, nonsense]\n")
        self.assertEqual(str(error), "grott.yaml: proxy.allowed_networks: not a network "
                                     "(a CIDR such as 192.168.1.0/24): 'nonsense'")

    def test_serials_file(self):
        from grott.config import ConfigError
        from grott.service import _allowed_serials
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("# ours\nJPC281833B\n\n  OTHER00001  # the garage\n")
        config = self.config(f"proxy:\n  allowed_serials: {path}\n")
        self.assertEqual(_allowed_serials(config), ["JPC281833B", "OTHER00001"])
        self.assertIsNone(_allowed_serials(self.config("proxy: {}\n")))
        error = self.assertRaises(ConfigError, self.config,
                                  "proxy:\n  allowed_serials: /nonexistent/serials\n")
        self.assertIn("proxy.allowed_serials: cannot read the serials file", str(error))
