"""
Small real-socket peers for the relay tests: a recording upstream and a raw
datalogger client.  They speak bytes, not behaviour, so a test can check
exactly what crossed the proxy.
"""

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from grott.codec import ACKNOWLEDGED, Framer, Garbage, build_ack
from grott.interfaces import IDataloggerLink


@implementer(IDataloggerLink)
class CallableLink:
    """
    A session's link without a connection: C{send(data)} goes to a
    callable (its result is the link's), C{disconnect} is recorded.
    """

    def __init__(self, send):
        self._send = send
        self.disconnected = []

    def send(self, data):
        return self._send(data)

    def disconnect(self, why):
        self.disconnected.append(why)


class _Waiting:
    """Deferreds that fire once C{received} holds at least N bytes."""

    def _check(self):
        still = []
        for size, d in self.waiters:
            if len(self.received) >= size:
                d.callback(self.received)
            else:
                still.append((size, d))
        self.waiters = still

    def waitFor(self, size):
        d = defer.Deferred()
        self.waiters.append((size, d))
        self._check()
        return d


class Recorder(_Waiting, Protocol):
    """
    One accepted connection: keeps every byte, acks register records when
    the factory says so, and fires Deferreds when enough bytes arrived.
    """

    def connectionMade(self):
        self.received = b""
        self.framer = Framer()
        self.waiters = []
        self.lost = defer.Deferred()
        self.factory.connections.append(self)
        self.factory.connected.callback(self) if not self.factory.connected.called else None
        for d in self.factory.connectionWaiters:
            d.callback(self)
        self.factory.connectionWaiters = []

    def dataReceived(self, data):
        self.received += data
        if self.factory.ack:
            for item in self.framer.feed(data):
                if not isinstance(item, Garbage) and item.record_type in ACKNOWLEDGED:
                    self.transport.write(build_ack(item))
        self._check()

    def connectionLost(self, reason):
        self.lost.callback(None)


class RecorderFactory(Factory):
    protocol = Recorder

    def __init__(self, ack=False):
        self.ack = ack
        self.connections = []
        self.connected = defer.Deferred()
        self.connectionWaiters = []

    def nextConnection(self):
        d = defer.Deferred()
        self.connectionWaiters.append(d)
        return d


class Client(_Waiting, Protocol):
    """
    A datalogger stand-in that sends raw bytes and records what comes back.
    """

    def connectionMade(self):
        self.received = b""
        self.waiters = []
        self.lost = defer.Deferred()

    def dataReceived(self, data):
        self.received += data
        self._check()

    def connectionLost(self, reason):
        self.lost.callback(None)


def listen(reactor, factory):
    return TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)


def connect(reactor, port, protocol=Client):
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    return endpoint.connect(Factory.forProtocol(protocol))
