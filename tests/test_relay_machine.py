"""
The relay's state machine on its own (no transport, no reactor): every
state and transition, with a driver that records what it was asked to do;
and the seams of grott/interfaces.py checked against the real parts.
"""

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from grott.codec import RecordType, build_ack, parse_packet
from grott.commands import CommandDispatcher
from grott.config import Config
from grott.interfaces import ICommandHook, IDataloggerLink, IPacketTrace, IRecordSink
from grott.logs import Logger
from grott.pluginhost import PluginHost
from grott.proxy import CommandHook, PacketTrace, ProxyFactory
from grott.registers import Decoder
from grott.relay import (
    CLOSING,
    CLOUD_FREE,
    CONNECTING,
    LOCAL,
    RELAYING,
    RETRYING,
    IRelayDriver,
    RelayMachine,
    RelaySettings,
)
from grott.session import Registry, Session
from tests.test_proxy_unit import FakeEndpoint, LogCapture
from tests.vectors import raw

DATA = parse_packet(raw("grott-p6-0104-classic"))
ANNOUNCE = parse_packet(raw("grott-p6-0103-classic"))
PING = parse_packet(raw("grott-p6-0116-ping"))


@implementer(IRelayDriver)
class RecordingDriver:
    """Does no I/O: writes down what the machine asked for, in order."""

    def __init__(self):
        self.calls = []
        self.written = []

    def names(self):
        return [call[0] for call in self.calls]

    def connectUpstream(self):
        self.calls.append(("connectUpstream",))

    def cancelConnect(self):
        self.calls.append(("cancelConnect",))

    def startTimer(self, delay):
        self.calls.append(("startTimer", delay))

    def cancelTimer(self):
        self.calls.append(("cancelTimer",))

    def startRelaying(self, held):
        self.calls.append(("startRelaying", held))

    def stopRelaying(self):
        self.calls.append(("stopRelaying",))

    def answerLocally(self):
        self.calls.append(("answerLocally",))

    def toDatalogger(self, data):
        self.written.append(data)

    def pauseReading(self):
        self.calls.append(("pauseReading",))

    def resumeReading(self):
        self.calls.append(("resumeReading",))

    def closeBoth(self):
        self.calls.append(("closeBoth",))


class MachineTests(SynchronousTestCase):
    def machine(self, **settings):
        defaults = {"cloud": True, "fallback_local": True, "clock": Clock(),
                    "upstream_label": "tcp:cloud:5279", "pending_limit": 1000}
        defaults.update(settings)
        self.driver = RecordingDriver()
        self.session = Session("127.0.0.1:1", 0.0)
        machine = RelayMachine(RelaySettings(**defaults), self.session, self.driver)
        machine.start()
        return machine

    def test_driverContract(self):
        verifyObject(IRelayDriver, RecordingDriver())

    def test_connectingHoldsThenRelaysInOrder(self):
        m = self.machine()
        self.assertEqual((m.state, self.session.mode), (CONNECTING, "relaying"))
        self.assertEqual(self.driver.names(), ["connectUpstream"])
        self.assertFalse(m.fromDatalogger(ANNOUNCE))
        self.assertFalse(m.garbageFromDatalogger(b"junk"))
        self.assertTrue(m.upstreamConnected())
        self.assertEqual(m.state, RELAYING)
        self.assertEqual(self.driver.calls[-2], ("startRelaying", [ANNOUNCE.raw, b"junk"]))
        self.assertTrue(m.fromDatalogger(DATA))
        self.assertTrue(m.garbageFromDatalogger(b"x"))
        self.assertEqual(self.driver.written, [])

    def test_holdingBeyondTheBoundPausesReading(self):
        m = self.machine(pending_limit=len(DATA.raw))
        m.fromDatalogger(DATA)
        self.assertNotIn("pauseReading", self.driver.names())
        m.fromDatalogger(PING)
        self.assertIn("pauseReading", self.driver.names())

    def test_failedConnectAnswersHeldPacketsAndRetriesWithBackoff(self):
        m = self.machine(retry_max=4)
        m.fromDatalogger(ANNOUNCE)
        m.upstreamFailed("refused")
        self.assertEqual((m.state, self.session.mode), (LOCAL, "answering locally"))
        self.assertEqual(self.driver.written, [build_ack(ANNOUNCE)])
        delays = []
        for _ in range(4):
            delays.append(self.driver.calls[-1][1])
            m.retryDue()
            self.assertEqual(m.state, RETRYING)
            self.assertEqual(self.driver.calls[-1], ("connectUpstream",))
            m.upstreamFailed("refused")
            self.assertEqual(m.state, LOCAL)
        self.assertEqual(delays, [1.0, 2.0, 4.0, 4.0])
        m.retryDue()
        self.assertTrue(m.upstreamConnected())
        self.assertEqual((m.state, m.retries), (RELAYING, 0))

    def test_cloudLostAnswersWhatItHadNotAnswered(self):
        m = self.machine()
        m.upstreamConnected()
        data2 = parse_packet(_with_sequence(DATA, 2))
        m.fromDatalogger(DATA)
        m.fromDatalogger(data2)
        m.fromCloud(parse_packet(build_ack(DATA)))
        self.assertTrue(m.upstreamLost("gone", 3) is False)
        self.assertEqual(m.state, LOCAL)
        self.assertEqual(self.driver.written, [build_ack(data2)])
        self.assertEqual((self.session.local_acks, self.session.local_bytes),
                         (1, len(build_ack(data2))))
        self.assertIn("stopRelaying", self.driver.names())

    def test_closeFallbackCloses(self):
        m = self.machine(fallback_local=False)
        m.upstreamFailed("refused")
        self.assertEqual(m.state, CLOSING)
        self.assertEqual(self.session.closed_by, "upstream tcp:cloud:5279 unreachable")
        self.assertEqual(self.driver.names()[-1], "closeBoth")
        self.assertEqual(self.session.upstream_state, "failed")

    def test_cloudFreeAnswersAndSetsTheClock(self):
        m = self.machine(cloud=False)
        self.assertEqual((m.state, self.session.mode), (CLOUD_FREE, "cloud-free"))
        self.assertEqual(self.driver.names(), ["answerLocally"])
        self.assertFalse(m.fromDatalogger(ANNOUNCE))
        kinds = [parse_packet(data).record_type for data in self.driver.written]
        self.assertEqual(kinds, [RecordType.ANNOUNCE, RecordType.CONFIG_SET])
        self.assertFalse(m.fromDatalogger(PING))
        self.assertEqual(self.driver.written[-1], PING.raw)

    def test_closingIsFinal(self):
        m = self.machine()
        m.close("idle")
        m.close("again")
        self.assertEqual(self.session.closed_by, "idle")
        self.assertEqual(self.driver.names().count("closeBoth"), 1)
        self.assertFalse(m.upstreamConnected())
        m.upstreamFailed("late")
        m.retryDue()
        self.assertFalse(m.fromDatalogger(DATA))
        self.assertEqual(m.state, CLOSING)
        self.assertEqual(self.driver.written, [])

    def test_dataloggerGone(self):
        m = self.machine()
        m.dataloggerLost()
        self.assertEqual(m.state, CLOSING)
        self.assertEqual(self.session.closed_by, "datalogger closed the connection")
        self.assertEqual(self.driver.names()[-2:], ["cancelTimer", "cancelConnect"])


def _with_sequence(packet, sequence):
    from grott.codec import build_packet
    return build_packet(packet.record_type, packet.payload, protocol=packet.protocol,
                        sequence=sequence, device_address=packet.device_address)


class SeamTests(SynchronousTestCase):
    """Each seam of grott/interfaces.py, checked on the part that provides it."""

    def test_pluginHostIsARecordSink(self):
        host = PluginHost(Config(), Clock(), plugins=[])
        verifyObject(IRecordSink, host)
        self.assertFalse(host.wantsRecords())

    def test_commandDispatcherIsACommandHook(self):
        verifyObject(ICommandHook, CommandDispatcher(Registry(), Clock()))
        verifyObject(ICommandHook, CommandHook())

    def test_packetTrace(self):
        verifyObject(IPacketTrace, PacketTrace(Logger("grott.packets")))

    def test_liveConnectionIsTheSessionsLink(self):
        factory = ProxyFactory(FakeEndpoint(), Registry(), Clock())
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        verifyObject(IDataloggerLink, protocol.session.link)
        verifyObject(IRelayDriver, protocol)
        self.assertTrue(protocol.session.send(PING.raw))
        protocol.session.disconnect("test")
        self.assertFalse(protocol.session.send(PING.raw))
        self.assertEqual(protocol.session.closed_by, "test")

    def test_factoryBuildsWithoutAReactorClock(self):
        # grott check builds the service on a MemoryReactor (no seconds()).
        ProxyFactory(None, Registry(), MemoryReactor())


class DecodeOnDemandTests(SynchronousTestCase):
    """The relay writes a record upstream first and decodes it only for a consumer."""

    def setUp(self):
        self.endpoint = FakeEndpoint()
        self.decoded = []
        self.logs = LogCapture(self)

    def connect(self, sink=None, trace=None):
        factory = ProxyFactory(self.endpoint, Registry(), Clock(), sink=sink, trace=trace,
                               decode=self.decode)
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        _upstream, upTransport = self.endpoint.succeed()
        return protocol, upTransport

    def decode(self, packet, dtc):
        self.decoded.append(packet.record_type)

    def test_noConsumerDecodesOnlyTheAnnounce(self):
        protocol, upTransport = self.connect()
        protocol.dataReceived(ANNOUNCE.raw + DATA.raw + DATA.raw)
        self.assertEqual(upTransport.value(), ANNOUNCE.raw + DATA.raw + DATA.raw)
        self.assertEqual(self.decoded, [RecordType.ANNOUNCE])

    def test_sinkWithoutPluginsDecodesNothingMore(self):
        host = PluginHost(Config(), Clock(), plugins=[])
        protocol, _upTransport = self.connect(sink=host)
        protocol.dataReceived(DATA.raw)
        self.assertEqual(self.decoded, [])

    def test_bytesAreUpstreamBeforeTheRecordIsDelivered(self):
        seen = []

        @implementer(IRecordSink)
        class Sink:
            def wantsRecords(self):
                return True

            def deliver(self, packet, record):
                seen.append(upTransport.value())

        decoder = Decoder()

        def decode(packet, dtc):
            self.decoded.append(packet.record_type)
            return decoder.decode(packet, dtc)
        self.decode = decode
        protocol, upTransport = self.connect(sink=Sink())
        protocol.dataReceived(DATA.raw)
        self.assertEqual(self.decoded, [RecordType.DATA])
        self.assertEqual(seen, [DATA.raw])
        self.assertEqual(protocol.session.records, 1)

    def test_traceWantsRecords(self):
        traced = []

        @implementer(IPacketTrace)
        class Trace:
            def packet(self, session, direction, packet, record):
                traced.append((direction, packet.record_type))

            def sessionClosed(self, session):
                traced.append("closed")

        protocol, _upTransport = self.connect(trace=Trace())
        protocol.dataReceived(DATA.raw)
        self.assertEqual(self.decoded, [RecordType.DATA])
        self.assertEqual(traced, [("datalogger->server", RecordType.DATA)])


class LogWordingTests(SynchronousTestCase):
    def test_unidentifiedAndLocalAnswersInTheDisconnectLine(self):
        logs = LogCapture(self)
        factory = ProxyFactory(None, Registry(), Clock())
        factory.doStart()
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"not a packet")
        from twisted.python.failure import Failure
        protocol.connectionLost(Failure(Exception("bye")))
        text = logs.text()
        self.assertIn("datalogger unidentified from", text)
        self.assertNotIn("datalogger None", text)
        self.assertIn("grott answers every datalogger itself (cloud-free)", text)

        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(PING.raw + ANNOUNCE.raw)
        answered = len(PING.raw) + len(build_ack(ANNOUNCE))
        clock_set = protocol.session.local_bytes - answered
        self.assertGreater(clock_set, 0)
        protocol.connectionLost(Failure(Exception("bye")))
        self.assertIn(f"2 packets / {answered + clock_set} bytes answered by grott", logs.text())

    def test_upstreamLoggedOnceAtStart(self):
        logs = LogCapture(self)
        factory = ProxyFactory(FakeEndpoint(), Registry(), Clock(),
                               upstream_label="tcp:cloud:5279")
        factory.doStart()
        for _ in range(3):
            factory.buildProtocol(None).makeConnection(StringTransport())
        self.assertEqual(logs.text().count("relaying dataloggers to tcp:cloud:5279"), 1)


class ServiceTracingTests(SynchronousTestCase):
    """The service hands the proxy the LoggingService's packet tracing, at start."""

    def proxyFactory(self, level):
        from grott.config import config_from_string
        from grott.service import makeService
        config = config_from_string(
            f"log: {{level: {level}}}\ncommand: {{listen: none}}\n"
            f"plugins: {{directory: {self.mktemp()}}}\nproxy: {{upstream: none}}\n")
        top = makeService(config, MemoryReactorClock())
        logging, proxy = top.getServiceNamed("logging"), top.getServiceNamed("proxy")
        logging.startService()
        self.addCleanup(logging.stopService)
        proxy.startService()
        self.addCleanup(proxy.stopService)
        return proxy.factory, logging

    def test_debugTracesThroughTheServicesLogger(self):
        factory, logging = self.proxyFactory("debug")
        verifyObject(IPacketTrace, factory.trace)
        self.assertIs(factory.trace.log, logging.tracing.log)

    def test_infoTracesNothing(self):
        factory, logging = self.proxyFactory("info")
        self.assertIsNone(factory.trace)
