"""
The relay over real loopback sockets: a recording upstream, raw datalogger
clients, and grott's ProxyFactory between them.
"""

import os
import signal

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IPushProducer
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from grott import logs
from grott.codec import build_ack, build_packet, parse_packet
from grott.config import config_from_string
from grott.proxy import ProxyFactory
from grott.service import makeService
from grott.session import Registry
from tests import relayhelpers
from tests.vectors import VECTORS, raw
from tests.waiting import until

UP = [bytes.fromhex(v["hex"]) for v in VECTORS if v["direction"] == "datalogger->server"]
DOWN = [bytes.fromhex(v["hex"]) for v in VECTORS if v["direction"] == "server->datalogger"]


def with_serial(data, serial):
    """The same packet from another datalogger."""
    packet = parse_packet(data)
    payload = serial.encode("ascii") + packet.payload[10:]
    return build_packet(packet.record_type, payload, protocol=packet.protocol,
                        sequence=packet.sequence, device_address=packet.device_address)


class LoopbackBase(TestCase):
    ack = False

    def setUp(self):
        self.cloud = relayhelpers.RecorderFactory(ack=self.ack)
        return relayhelpers.listen(reactor, self.cloud).addCallback(self._cloudUp)

    def _cloudUp(self, port):
        self.cloudPort = port
        self.addCleanup(port.stopListening)
        self.registry = Registry()
        self.factory = ProxyFactory(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), self.registry,
            reactor, upstream_label="cloud", connect_timeout=5)
        return relayhelpers.listen(reactor, self.factory).addCallback(self._proxyUp)

    def _proxyUp(self, port):
        self.proxyPort = port
        self.addCleanup(self._closeAll)

    def _closeAll(self):
        d = self.factory.closeAll("test over")
        d.addCallback(lambda _: self.proxyPort.stopListening())
        for conn in self.cloud.connections:
            conn.transport.loseConnection()
        return d.addCallback(lambda _: defer.DeferredList(
            [c.lost for c in self.cloud.connections]))

    def connect(self, protocol=relayhelpers.Client):
        return relayhelpers.connect(reactor, self.proxyPort, protocol)


class RelayTests(LoopbackBase):
    @defer.inlineCallbacks
    def test_gluedPacketsBothWays(self):
        client = yield self.connect()
        upstream = yield self.cloud.connected
        stream = b"".join(UP)
        client.transport.write(stream)
        got = yield upstream.waitFor(len(stream))
        self.assertEqual(got, stream)
        down = b"".join(DOWN)
        upstream.transport.write(down)
        got = yield client.waitFor(len(down))
        self.assertEqual(got, down)
        session = self.registry.by_serial("YUZ0828205")
        self.assertEqual(session.packets_in, len(UP))
        self.assertEqual(session.packets_out, len(DOWN))

    @defer.inlineCallbacks
    def test_dataloggerCloseClosesUpstream(self):
        client = yield self.connect()
        upstream = yield self.cloud.connected
        client.transport.write(raw("grott-p6-0116-ping"))
        yield upstream.waitFor(40)
        client.transport.loseConnection()
        yield upstream.lost
        self.assertEqual(len(self.registry), 0)

    @defer.inlineCallbacks
    def test_upstreamCloseClosesDatalogger(self):
        client = yield self.connect()
        upstream = yield self.cloud.connected
        upstream.transport.write(raw("grott-p6-0119-query"))
        upstream.transport.loseConnection()
        yield client.lost
        self.assertEqual(client.received, raw("grott-p6-0119-query"))

    @defer.inlineCallbacks
    def test_reconnectOfSameSerialClosesOldConnection(self):
        first = yield self.connect()
        firstUp = yield self.cloud.connected
        first.transport.write(raw("grott-p6-0116-ping"))
        yield firstUp.waitFor(40)
        waitSecond = self.cloud.nextConnection()
        second = yield self.connect()
        secondUp = yield waitSecond
        second.transport.write(raw("grott-p6-0116-ping"))
        yield first.lost
        yield firstUp.lost
        yield secondUp.waitFor(40)
        self.assertEqual(len(self.registry), 1)
        self.assertIs(self.registry.by_serial("JPC281833B").peer.split(":")[0], "127.0.0.1") \
            if False else None
        self.assertEqual(self.registry.by_serial("JPC281833B").packets_in, 1)


class ManyConnectionsTests(LoopbackBase):
    ack = True
    clientCount = 100

    @defer.inlineCallbacks
    def test_garbageOnOneLeavesHundredOthersUntouched(self):
        data = raw("grott-p6-0104-min-xdavidx93-a")
        ack = build_ack(parse_packet(data))
        clients = []
        for _ in range(self.clientCount):
            clients.append((yield self.connect()))
        bad = yield self.connect()
        bad.transport.write(b"\xde\xad" * 50 + b"\x00\x01\x00\x06\xff\xff\x01\x04" + data)
        for number, client in enumerate(clients):
            client.transport.write(with_serial(data, f"TEST{number:06d}"))
        for client in clients:
            got = yield client.waitFor(len(ack))
            self.assertEqual(got, ack)
        # The bad connection is still relayed byte for byte, and its packet acked.
        got = yield bad.waitFor(len(ack))
        self.assertEqual(got, ack)
        self.assertEqual(len(self.registry), self.clientCount + 1)
        errors = sum(s.parse_errors for s in self.registry)
        self.assertGreater(errors, 0)
        cloudTotal = sum(len(c.received) for c in self.cloud.connections)
        self.assertEqual(cloudTotal, (self.clientCount + 1) * len(data) + 108)


@implementer(IPushProducer)
class Flooder(relayhelpers.Client):
    """Writes whenever its transport lets it, until told to stop."""

    chunk = raw("grott-p6-0104-min-xdavidx93-a") * 100

    def connectionMade(self):
        relayhelpers.Client.connectionMade(self)
        self.sent = 0
        self.stopped = False
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self):
        self.producing = True
        while self.producing and not self.stopped:
            self.transport.write(self.chunk)
            self.sent += len(self.chunk)

    def pauseProducing(self):
        self.producing = False

    def stopProducing(self):
        self.stopped = True


class Sluggard(relayhelpers.Recorder):
    """An upstream that never reads."""

    def connectionMade(self):
        relayhelpers.Recorder.connectionMade(self)
        self.transport.stopReading()


class BackpressureTests(LoopbackBase):
    @defer.inlineCallbacks
    def test_slowUpstreamStopsReadingFromDatalogger(self):
        self.cloud.protocol = Sluggard
        flooder = yield self.connect(Flooder)
        yield self.cloud.connected
        [protocol] = list(self.factory.connections)
        yield until(reactor, lambda: protocol.upstream is not None,
                    "grott's upstream connection")
        # grott's datalogger transport is paused by the upstream transport
        # (its producer) once the upstream's buffer is full.
        paused = defer.Deferred()
        transport = protocol.transport
        original = transport.pauseProducing

        def pauseProducing():
            original()
            if not paused.called:
                paused.callback(None)
        transport.pauseProducing = pauseProducing
        yield paused
        upTransport = protocol.upstream.transport
        held = len(upTransport.dataBuffer) + sum(map(len, upTransport._tempDataBuffer))
        # Held: about one buffer (64 KiB) plus one read, however much the
        # datalogger still wants to send.
        self.assertLess(held, 1024 * 1024)
        self.assertNotIn(transport, reactor.getReaders())
        flooder.stopped = True
        for conn in self.cloud.connections:
            conn.transport.abortConnection()


class ServiceTests(TestCase):
    """
    The whole tree from a config: listening, stats on SIGUSR1, shutdown.
    """

    @defer.inlineCallbacks
    def test_sigusr1LogsReportAndChains(self):
        cloud = relayhelpers.RecorderFactory(ack=True)
        cloudPort = yield relayhelpers.listen(reactor, cloud)
        self.addCleanup(cloudPort.stopListening)
        config = config_from_string(
            f"proxy:\n  listen: tcp:0:interface=127.0.0.1\n"
            f"  upstream: tcp:127.0.0.1:{cloudPort.getHost().port}\n"
            f"command:\n  listen: none\nmetrics:\n  listen: none\n")
        top = makeService(config, reactor)
        previous = []
        old = signal.signal(signal.SIGUSR1, lambda s, f: previous.append(s))
        self.addCleanup(signal.signal, signal.SIGUSR1, old)
        events = []
        logs.publisher.addObserver(events.append)
        self.addCleanup(logs.publisher.removeObserver, events.append)
        top.privilegedStartService()
        top.startService()
        port = top.getServiceNamed("proxy").getServiceNamed("listener")._waitingForPort.result
        client = yield relayhelpers.connect(reactor, port)
        data = raw("grott-p6-0104-classic")
        client.transport.write(data)
        yield client.waitFor(11)
        reported = defer.Deferred()
        stats = top.getServiceNamed("stats")
        original = stats.logReport

        def logReport():
            original()
            reported.callback(None)
        stats.logReport = logReport
        os.kill(os.getpid(), signal.SIGUSR1)
        yield reported
        self.assertEqual(previous, [signal.SIGUSR1])
        from twisted.logger import formatEvent
        text = "\n".join(formatEvent(e) for e in events)
        self.assertIn("1 datalogger(s) connected", text)
        self.assertIn("JPC281833B inverters=QMB2823261 protocol=6", text)
        self.assertIn("in=1p/265B out=1p/11B", text)
        yield top.stopService()
        yield client.lost
        self.assertIsNot(signal.getsignal(signal.SIGUSR1), stats._handler)
