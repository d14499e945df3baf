"""
The relay protocol driven by hand: StringTransport, a fake endpoint and a
Clock, so chunking, timing and failures are exact.
"""

from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from grott import logs
from grott.codec import build_ack, parse_packet
from grott.proxy import ProxyFactory
from grott.session import Registry
from tests.vectors import VECTORS, raw

UP_VECTORS = [bytes.fromhex(v["hex"]) for v in VECTORS if v["direction"] == "datalogger->server"]
DOWN_VECTORS = [bytes.fromhex(v["hex"]) for v in VECTORS if v["direction"] == "server->datalogger"]


class FakeEndpoint:
    """Records connection attempts; the test decides when and how they end."""

    def __init__(self):
        self.attempts = []

    def connect(self, factory):
        d = defer.Deferred(lambda d: self.attempts.remove((factory, d)))
        self.attempts.append((factory, d))
        return d

    def succeed(self, index=0):
        factory, d = self.attempts.pop(index)
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        d.callback(protocol)
        return protocol, transport


class LogCapture:
    def __init__(self, case):
        self.events = []
        logs.publisher.addObserver(self.events.append)
        case.addCleanup(logs.publisher.removeObserver, self.events.append)

    def text(self):
        from twisted.logger import formatEvent
        return "\n".join(formatEvent(e) for e in self.events)


class RelayTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        self.registry = Registry()
        self.records = []
        self.factory = ProxyFactory(
            self.endpoint, self.registry, self.clock, upstream_label="tcp:cloud:5279",
            connect_timeout=10, idle_timeout=600, pending_limit=4096,
            on_record=lambda packet, record: self.records.append(record))
        self.logs = LogCapture(self)

    def connectDatalogger(self):
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=None)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_bytesBeforeUpstreamAreHeldThenSentInOrder(self):
        protocol, transport = self.connectDatalogger()
        stream = b"".join(UP_VECTORS)
        for i in range(0, len(stream), 7):
            protocol.dataReceived(stream[i:i + 7])
        self.assertEqual(len(self.endpoint.attempts), 1)
        upstream, upTransport = self.endpoint.succeed()
        self.assertEqual(upTransport.value(), stream)

    def test_pendingBeyondLimitPausesTheDatalogger(self):
        protocol, transport = self.connectDatalogger()
        protocol.dataReceived(b"".join(UP_VECTORS))
        self.assertEqual(transport.producerState, "paused")
        upstream, upTransport = self.endpoint.succeed()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(upTransport.value(), b"".join(UP_VECTORS))

    def test_oneByteAtATimeBothWays(self):
        protocol, transport = self.connectDatalogger()
        upstream, upTransport = self.endpoint.succeed()
        stream = b"".join(UP_VECTORS)
        for i in range(len(stream)):
            protocol.dataReceived(stream[i:i + 1])
        self.assertEqual(upTransport.value(), stream)
        down = b"".join(DOWN_VECTORS + [build_ack(parse_packet(UP_VECTORS[3]))])
        for i in range(len(down)):
            upstream.dataReceived(down[i:i + 1])
        self.assertEqual(transport.value(), down)
        session = protocol.session
        self.assertEqual(session.packets_in, len(UP_VECTORS))
        self.assertEqual(session.packets_out, len(DOWN_VECTORS) + 1)
        self.assertEqual((session.bytes_in, session.bytes_out), (len(stream), len(down)))
        self.assertEqual(session.parse_errors, 0)

    def test_garbageIsRelayedUnchangedAndCounted(self):
        protocol, transport = self.connectDatalogger()
        upstream, upTransport = self.endpoint.succeed()
        ping = raw("grott-p6-0116-ping")
        absurd = b"\x00\x01\x00\x06\xff\xff\x01\x04" + b"\xaa" * 20
        stream = b"hello" + ping + absurd + ping
        protocol.dataReceived(stream)
        self.assertEqual(upTransport.value(), stream)
        self.assertEqual(protocol.session.packets_in, 2)
        self.assertGreater(protocol.session.parse_errors, 0)
        self.assertIn("are not a packet", self.logs.text())

    def test_badCrcIsRelayed(self):
        protocol, transport = self.connectDatalogger()
        upstream, upTransport = self.endpoint.succeed()
        packet = bytearray(raw("grott-p6-0104-classic"))
        packet[-1] ^= 0xFF
        protocol.dataReceived(bytes(packet))
        self.assertEqual(upTransport.value(), bytes(packet))
        self.assertEqual(protocol.session.packets_in, 1)

    def test_serialAndInverterAreLearned(self):
        protocol, transport = self.connectDatalogger()
        self.endpoint.succeed()
        protocol.dataReceived(raw("grott-p6-0104-classic"))
        session = protocol.session
        self.assertEqual(session.datalogger_serial, "JPC281833B")
        self.assertEqual(session.inverter_serial, "QMB2823261")
        self.assertEqual(session.protocol, 6)
        self.assertIs(self.registry.by_serial("JPC281833B"), session)

    def test_reconnectReplacesOldSession(self):
        old, oldTransport = self.connectDatalogger()
        self.endpoint.succeed()
        old.dataReceived(raw("grott-p6-0116-ping"))
        new, newTransport = self.connectDatalogger()
        self.endpoint.succeed()
        new.dataReceived(raw("grott-p6-0116-ping"))
        self.assertTrue(oldTransport.disconnecting)
        self.assertFalse(newTransport.disconnecting)
        self.assertIs(self.registry.by_serial("JPC281833B"), new.session)
        self.assertEqual(old.session.closed_by, "replaced by a newer connection")
        old.connectionLost(Failure(Exception("gone")))
        self.assertIs(self.registry.by_serial("JPC281833B"), new.session)
        self.assertEqual(len(self.registry), 1)

    def test_idleTimeoutClosesBothSides(self):
        protocol, transport = self.connectDatalogger()
        upstream, upTransport = self.endpoint.succeed()
        self.clock.advance(599)
        protocol.dataReceived(raw("grott-p6-0116-ping"))
        self.clock.advance(599)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(upTransport.disconnecting)
        self.assertEqual(protocol.session.closed_by, "idle for 600 s")

    def test_connectTimeoutClosesDataloggerWithReason(self):
        protocol, transport = self.connectDatalogger()
        self.clock.advance(9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.endpoint.attempts, [])
        text = self.logs.text()
        self.assertIn("upstream tcp:cloud:5279 unreachable", text)

    def test_refusedUpstreamClosesDatalogger(self):
        protocol, transport = self.connectDatalogger()
        factory, d = self.endpoint.attempts.pop()
        d.errback(ConnectionRefusedError("refused"))
        self.assertTrue(transport.disconnecting)
        self.assertIn("refused", self.logs.text())
        self.assertEqual(protocol.session.upstream_state, "failed")

    def test_upstreamCloseFlushesAndClosesDatalogger(self):
        protocol, transport = self.connectDatalogger()
        upstream, upTransport = self.endpoint.succeed()
        ack = raw("grott-p6-ack-0104")
        upstream.dataReceived(ack[:5])
        upstream.connectionLost(Failure(Exception("bye")))
        self.assertEqual(transport.value(), ack[:5])
        self.assertTrue(transport.disconnecting)

    def test_dataloggerCloseFlushesAndClosesUpstream(self):
        protocol, transport = self.connectDatalogger()
        upstream, upTransport = self.endpoint.succeed()
        ping = raw("grott-p6-0116-ping")
        protocol.dataReceived(ping[:10])
        protocol.connectionLost(Failure(Exception("bye")))
        self.assertEqual(upTransport.value(), ping[:10])
        self.assertTrue(upTransport.disconnecting)
        self.assertEqual(len(self.registry), 0)
        self.assertIn("disconnected (datalogger closed the connection)", self.logs.text())

    def test_dataloggerCloseCancelsPendingUpstream(self):
        protocol, transport = self.connectDatalogger()
        protocol.connectionLost(Failure(Exception("bye")))
        self.assertEqual(self.endpoint.attempts, [])
        self.assertEqual(len(self.registry), 0)

    def test_maxDataloggersRefusesExtra(self):
        self.factory.max_dataloggers = 2
        self.connectDatalogger()
        self.connectDatalogger()
        self.assertIsNone(self.factory.buildProtocol(None))
        self.assertEqual(self.registry.rejected, 1)
        self.assertIn("proxy.max_dataloggers", self.logs.text())

    def test_decoderErrorsNeverBreakTheRelay(self):
        def broken(packet, dtc):
            raise RuntimeError("decoder bug")
        self.factory.decode = broken
        protocol, transport = self.connectDatalogger()
        upstream, upTransport = self.endpoint.succeed()
        data = raw("grott-p6-0104-classic")
        protocol.dataReceived(data)
        self.assertEqual(upTransport.value(), data)
        self.assertEqual(protocol.session.parse_errors, 1)
        self.flushLoggedErrors(RuntimeError)

    def test_closeAllFiresWhenEverySessionIsGone(self):
        p1, t1 = self.connectDatalogger()
        p2, t2 = self.connectDatalogger()
        d = self.factory.closeAll("shutdown")
        self.assertNoResult(d)
        self.assertTrue(t1.disconnecting and t2.disconnecting)
        p1.connectionLost(Failure(Exception()))
        p2.connectionLost(Failure(Exception()))
        self.successResultOf(d)
        self.assertEqual(p1.session.closed_by, "shutdown")
