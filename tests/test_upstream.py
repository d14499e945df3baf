"""
The upstream endpoint: a plain tcp: upstream is connected without
Twisted's endpoint wrappers, and behaves as the endpoint would.
"""

from twisted.internet import defer
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from grott.upstream import DirectTCPEndpoint, UpstreamFactory, UpstreamProtocol, upstream_endpoint


class _Datalogger:
    """What the upstream protocol talks to: records what it is told."""

    def __init__(self):
        self.received = []
        self.lost = []
        self.transport = StringTransport()

    def fromUpstream(self, data):
        self.received.append(data)

    def upstreamLost(self, reason):
        self.lost.append(reason)


class UpstreamEndpointTests(SynchronousTestCase):

    def setUp(self):
        self.reactor = MemoryReactorClock()

    def test_plainTcpIsDirect(self):
        endpoint = upstream_endpoint(self.reactor,
                                     "tcp:127.0.0.1:5280:timeout=7:bindAddress=127.0.0.2")
        self.assertIsInstance(endpoint, DirectTCPEndpoint)
        verifyObject(IStreamClientEndpoint, endpoint)
        self.assertEqual((endpoint.host, endpoint.port, endpoint.timeout, endpoint.bindAddress),
                         ("127.0.0.1", 5280, 7, ("127.0.0.2", 0)))

    def test_othersAreTwisteds(self):
        self.assertIsInstance(upstream_endpoint(self.reactor, "unix:/run/cloud.sock"),
                              UNIXClientEndpoint)
        self.assertNotIsInstance(upstream_endpoint(self.reactor, "tls:server.example:5279"),
                                 DirectTCPEndpoint)

    def _connect(self):
        datalogger = _Datalogger()
        endpoint = upstream_endpoint(self.reactor, "tcp:127.0.0.1:5280")
        factory = UpstreamFactory(datalogger)
        d = endpoint.connect(factory)
        host, port, given, timeout, bind = self.reactor.tcpClients[-1]
        self.assertEqual((host, port, timeout), ("127.0.0.1", 5280, 30))
        self.assertIs(given, factory)
        return datalogger, factory, d

    def test_connectedFiresWithTheProtocolOnceItHasItsTransport(self):
        datalogger, factory, d = self._connect()
        self.assertNoResult(d)
        protocol = factory.buildProtocol(None)
        self.assertNoResult(d)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertIs(self.successResultOf(d), protocol)
        self.assertIs(protocol.transport, transport)
        # Nothing of the connect is kept for the life of the connection.
        self.assertIsNone(factory.connecting)
        self.assertIsNone(protocol.connected)
        protocol.dataReceived(b"cloud")
        protocol.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(datalogger.received, [b"cloud"])
        self.assertEqual(len(datalogger.lost), 1)

    def test_failedConnectFails(self):
        datalogger, factory, d = self._connect()
        connector = self.reactor.connectors[-1]
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError("refused")))
        self.failureResultOf(d, ConnectionRefusedError)
        self.assertIsNone(factory.connecting)
        self.assertEqual(datalogger.lost, [])

    def test_cancelStopsConnecting(self):
        datalogger, factory, d = self._connect()
        connector = self.reactor.connectors[-1]
        stopped = []
        connector.stopConnecting = lambda: stopped.append(True)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(stopped, [True])
        # The connector's failure report after stopping changes nothing.
        factory.clientConnectionFailed(connector, Failure(ConnectionError("stopped")))
        self.assertEqual(datalogger.lost, [])

    def test_timeoutCancels(self):
        datalogger, factory, d = self._connect()
        d.addTimeout(10, self.reactor)
        self.reactor.advance(10)
        self.failureResultOf(d, defer.TimeoutError)

    def test_throughAnotherEndpointNothingFires(self):
        # Twisted's endpoints wrap the factory and fire their own Deferred:
        # the protocol then has no Deferred of its own to fire.
        protocol = UpstreamFactory(_Datalogger()).buildProtocol(None)
        protocol.makeConnection(StringTransport())
        self.assertIsInstance(protocol, UpstreamProtocol)
        self.assertIsNone(protocol.connected)
