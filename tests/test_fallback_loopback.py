"""
Issue 10 over real loopback sockets, with simulated dataloggers and the fake
cloud: the cloud refused at connect, dropping mid-session and coming back,
cloud-free mode, and a server-address write blocked while data flows.
"""

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from grott.codec import ConfigSetRequest, InverterReadRequest
from grott.config import config_from_string
from grott.proxy import CLOUD_FREE, LOCAL, RELAYING
from grott.service import makeService
from grott.testing.fakecloud import FakeCloud
from grott.testing.simulator import DataloggerFactory, DataloggerSpec
from tests.waiting import until


class Base(TestCase):
    @defer.inlineCallbacks
    def startGrott(self, upstream, extra=""):
        config = config_from_string(
            "proxy:\n"
            "  listen: tcp:0:interface=127.0.0.1\n"
            f"  upstream: {upstream}\n"
            f"{extra}"
            "command:\n  listen: none\nmetrics:\n  listen: none\n"
            f"plugins:\n  directory: {self.mktemp()}\n")
        top = makeService(config, reactor)
        top.privilegedStartService()
        top.startService()
        self.addCleanup(top.stopService)
        self.top = top
        self.factory = top.getServiceNamed("proxy").factory
        self.factory.retry_initial = 0.05
        port = top.getServiceNamed("proxy").getServiceNamed("listener")._waitingForPort.result
        yield None
        return port

    def datalogger(self, port, serial, **kw):
        spec = DataloggerSpec(serial, protocol=6, family="min", ping_interval=0,
                              reconnect_delay=None, **kw)
        factory = DataloggerFactory(spec, reactor)
        factory.connect(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port))
        self.addCleanup(factory.disconnect)
        return factory

    @defer.inlineCallbacks
    def cloud(self, **kw):
        cloud = FakeCloud(reactor, **kw)
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(cloud)
        self.addCleanup(port.stopListening)
        self.addCleanup(cloud.close_all)
        return cloud, port


class FallbackLoopbackTests(Base):
    @defer.inlineCallbacks
    def test_cloudRefusedAtConnect(self):
        closed = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Protocol))
        number = closed.getHost().port
        yield closed.stopListening()
        port = yield self.startGrott(f"tcp:127.0.0.1:{number}")
        datalogger = self.datalogger(port, "REFUSED001", interval=0.02, records=3)
        yield datalogger.state.when_done()
        stats = datalogger.state.stats
        self.assertEqual((stats.acked.get("announce"), stats.acked.get("data")), (1, 3))
        self.assertEqual(stats.unmatched_acks, 0)
        session = self.top.registry.by_serial("REFUSED001")
        self.assertEqual(session.mode, LOCAL)
        self.assertEqual(session.local_acks, 4)

    @defer.inlineCallbacks
    def test_cloudDropsThenComesBack(self):
        cloud, cloudPort = yield self.cloud(drop_after=3)
        port = yield self.startGrott(f"tcp:127.0.0.1:{cloudPort.getHost().port}")
        datalogger = self.datalogger(port, "DROPPED001", interval=0.05, records=10)
        # The cloud drops the connection on the third packet (unacked).
        yield until(reactor, lambda: cloud.dropped, "the cloud to drop the connection")
        self.assertEqual(cloud.dropped, 1)
        cloud.drop_after = None
        yield datalogger.state.when_done()
        stats = datalogger.state.stats
        # Exactly one acknowledgement per packet throughout.
        self.assertEqual((stats.acked.get("announce"), stats.acked.get("data")), (1, 10))
        self.assertEqual(stats.unmatched_acks, 0)
        session = self.top.registry.by_serial("DROPPED001")
        self.assertGreater(session.local_acks, 0)
        yield until(reactor, lambda: session.mode == RELAYING, "grott to relay again")
        self.assertEqual(session.mode, RELAYING)
        self.assertGreater(cloud.count("DROPPED001", 0x04), 2)

    @defer.inlineCallbacks
    def test_cloudFreeSetsClock(self):
        port = yield self.startGrott("none", "  timezone: UTC\n")
        datalogger = self.datalogger(port, "NOCLOUD001", interval=0.02, records=2)
        yield datalogger.state.when_done()
        stats = datalogger.state.stats
        self.assertEqual((stats.acked.get("announce"), stats.acked.get("data")), (1, 2))
        self.assertEqual(sum(stats.commands.values()), 1)
        session = self.top.registry.by_serial("NOCLOUD001")
        self.assertEqual(session.mode, CLOUD_FREE)
        clock = datalogger.state.config_value(31).decode()
        self.assertRegex(clock, r"^20\d\d-\d\d-\d\d \d\d:\d\d:\d\d$")

    @defer.inlineCallbacks
    def test_serverAddressWriteBlockedWhileDataFlows(self):
        cloud, cloudPort = yield self.cloud()
        port = yield self.startGrott(f"tcp:127.0.0.1:{cloudPort.getHost().port}")
        datalogger = self.datalogger(port, "PROTECT001", interval=0.02, records=6)
        yield cloud.when_connected("PROTECT001")
        blocked = cloud.send("PROTECT001", ConfigSetRequest(17, b"203.0.113.9"), timeout=0.3)
        allowed = cloud.send("PROTECT001", InverterReadRequest(0, 0), timeout=5)
        yield self.assertFailure(blocked, defer.TimeoutError)
        reply = yield allowed
        self.assertEqual(reply.message.first, 0)
        yield datalogger.state.when_done()
        self.assertEqual(datalogger.state.stats.acked.get("data"), 6)
        self.assertNotEqual(datalogger.state.config_value(17), b"203.0.113.9")
        self.assertEqual(self.top.registry.by_serial("PROTECT001").commands_dropped, 1)
