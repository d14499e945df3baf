"""
proxy.listen behind HAProxy: Twisted's haproxy: endpoint wrapper strips the
PROXY protocol header (v1 text, v2 binary), the session sees the datalogger's
real address, and the relay forwards every other byte unchanged.
"""

import struct

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.trial.unittest import SynchronousTestCase

from grott.proxy import ProxyFactory
from grott.session import Registry
from tests import relayhelpers
from tests.test_proxy_loopback import LoopbackBase
from tests.vectors import VECTORS

UP = [bytes.fromhex(v["hex"]) for v in VECTORS if v["direction"] == "datalogger->server"]
DOWN = [bytes.fromhex(v["hex"]) for v in VECTORS if v["direction"] == "server->datalogger"]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1(host, port):
    return f"PROXY TCP4 {host} 127.0.0.1 {port} 5279\r\n".encode("ascii")


def proxy_v2(host, port):
    address = bytes(int(part) for part in host.split(".")) + bytes([127, 0, 0, 1]) \
        + struct.pack("!HH", port, 5279)
    # Version 2, PROXY command; TCP over IPv4.
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(address)) + address


class HAProxyListenTests(LoopbackBase):
    def _cloudUp(self, port):
        # LoopbackBase's proxy, behind the haproxy: endpoint wrapper.
        self.addCleanup(port.stopListening)
        self.registry = Registry()
        self.factory = ProxyFactory(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), self.registry,
            reactor, upstream_label="cloud", connect_timeout=5, proxied=True,
            allowed_networks=["203.0.113.0/24", "198.51.100.0/24"])
        endpoint = serverFromString(reactor, "haproxy:tcp:0:interface=127.0.0.1")
        return endpoint.listen(self.factory).addCallback(self._proxyUp)

    @defer.inlineCallbacks
    def relay_with_header(self, header, host, port):
        client = yield relayhelpers.connect(reactor, self.proxyPort)
        stream = b"".join(UP)
        # The header and the first packet glued, the rest split mid-packet.
        client.transport.write(header + stream[:7])
        client.transport.write(stream[7:])
        upstream = yield self.cloud.connected
        got = yield upstream.waitFor(len(stream))
        self.assertEqual(got, stream)
        down = b"".join(DOWN)
        upstream.transport.write(down)
        got = yield client.waitFor(len(down))
        self.assertEqual(got, down)
        [session] = list(self.registry)
        self.assertEqual(session.peer, f"{host}:{port}")

    def test_proxyProtocolV1(self):
        return self.relay_with_header(proxy_v1("203.0.113.7", 40001), "203.0.113.7", 40001)

    def test_proxyProtocolV2(self):
        return self.relay_with_header(proxy_v2("198.51.100.23", 40002), "198.51.100.23", 40002)

    @defer.inlineCallbacks
    def test_allowedNetworksSeeTheDataloggersAddress(self):
        """
        proxy.allowed_networks judges the address in the PROXY header, not
        HAProxy's (127.0.0.1 here, which is not allowed): a datalogger
        outside them is closed before any upstream connection is made.
        """
        outsider = yield relayhelpers.connect(reactor, self.proxyPort)
        outsider.transport.write(proxy_v1("192.0.2.9", 40004) + UP[0])
        yield outsider.lost
        self.assertEqual(self.cloud.connections, [])
        self.assertEqual(self.registry.rejected, 1)
        yield self.relay_with_header(proxy_v1("203.0.113.7", 40005), "203.0.113.7", 40005)

    @defer.inlineCallbacks
    def test_headerOnlyOpensNoUpstream(self):
        """
        A connection that sends its PROXY header and nothing else (a stray
        health check) opens no upstream connection and holds no session.
        """
        idle = yield relayhelpers.connect(reactor, self.proxyPort)
        idle.transport.write(proxy_v1("203.0.113.10", 40006))
        yield self.relay_with_header(proxy_v1("203.0.113.7", 40007), "203.0.113.7", 40007)
        self.assertEqual(len(self.cloud.connections), 1)
        self.assertEqual(len(self.registry), 1)

    @defer.inlineCallbacks
    def test_noHeaderIsRefusedAlone(self):
        """
        A peer that bypasses HAProxy (no PROXY header) is closed; the
        datalogger beside it keeps relaying.
        """
        good = yield relayhelpers.connect(reactor, self.proxyPort)
        good.transport.write(proxy_v1("203.0.113.8", 40003) + UP[0])
        upstream = yield self.cloud.connected
        yield upstream.waitFor(len(UP[0]))
        bad = yield relayhelpers.connect(reactor, self.proxyPort)
        bad.transport.write(UP[0])
        yield bad.lost
        good.transport.write(UP[1])
        got = yield upstream.waitFor(len(UP[0]) + len(UP[1]))
        self.assertEqual(got, UP[0] + UP[1])
        self.assertEqual(len(self.cloud.connections), 1)


class HeaderWaitTests(SynchronousTestCase):
    """
    Behind HAProxy a connection that never sends a datalogger byte is closed
    after proxy.idle_timeout and forgotten.
    """

    def test_silentConnectionClosed(self):
        from twisted.internet.address import IPv4Address
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        clock = Clock()
        factory = ProxyFactory(None, Registry(), clock, idle_timeout=30.0, proxied=True)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        clock.advance(29)
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(None)
        self.assertEqual(factory.connections, set())
        self.assertEqual(len(factory.registry), 0)
        self.assertEqual([c for c in clock.getDelayedCalls() if c.active()], [])
