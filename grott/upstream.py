"""
The upstream side of the relay: one connection to the Growatt server per
datalogger, and the endpoint that opens it.

Everything here lives as long as a datalogger connection, thousands at a
time, so it is slotted and small.  For the common upstream, a plain
C{tcp:HOST:PORT}, L{upstream_endpoint} skips Twisted's endpoint wrappers
(a wrapping factory, its Deferred and a wrapping protocol that the
connection keeps for its whole life, some 450 bytes each) and calls
C{connectTCP} with L{UpstreamFactory} itself, as L{twisted.protocols.portforward}
does.  Any other endpoint string (C{tls:}, C{unix:}, C{tcp6:}, ...) goes
through its Twisted endpoint unchanged.
"""

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, clientFromString
from twisted.internet.error import NotConnectingError
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IStreamClientEndpoint,
)
from zope.interface import implementer

__all__ = ["DirectTCPEndpoint", "UpstreamFactory", "UpstreamProtocol", "upstream_endpoint"]


@implementer(IProtocol, IPushProducer)
class UpstreamProtocol:
    """
    grott's connection to the Growatt server for one datalogger: everything
    it receives goes to the datalogger side.

    It is also its upstream transport's producer, standing for the
    datalogger's reads (as in L{twisted.protocols.portforward}), minus
    C{stopProducing}: a transport that loses its connection stops its
    producer, and a dead cloud must not close the datalogger when grott is
    about to answer it locally.  The relay closes both sides itself.

    A plain slotted L{IProtocol} rather than a L{Protocol} subclass: one
    lives as long as each datalogger connection, and it needs nothing of
    L{Protocol} but the transport.

    @ivar connected: the pending Deferred of L{DirectTCPEndpoint.connect},
        fired with this protocol once it has its transport, then dropped.
    """

    __slots__ = ("connected", "datalogger", "transport")

    def __init__(self, datalogger, connected=None):
        self.datalogger = datalogger
        self.transport = None
        self.connected = connected

    def makeConnection(self, transport):
        self.transport = transport
        self.connectionMade()
        waiting, self.connected = self.connected, None
        if waiting is not None:
            # Never fired before: giving up on it stops the connector,
            # which only works before the protocol is built.
            waiting.callback(self)

    def connectionMade(self):
        pass

    def dataReceived(self, data):
        self.datalogger.fromUpstream(data)

    def connectionLost(self, reason):
        self.datalogger.upstreamLost(reason)

    def pauseProducing(self):
        self.datalogger.transport.pauseProducing()

    def resumeProducing(self):
        self.datalogger.transport.resumeProducing()

    def stopProducing(self):
        pass


@implementer(IProtocolFactory)
class UpstreamFactory:
    """
    Builds the one upstream protocol of one datalogger connection.

    Its connector keeps it for as long as the connection lasts, so it is a
    slotted plain factory (nothing to start, stop or log), not a
    L{ClientFactory} with a dict per connection.  Given to C{connectTCP}
    directly (L{DirectTCPEndpoint}) it also takes the connector's
    callbacks, and reports a failed connect through C{connecting}.

    @ivar connecting: the Deferred L{DirectTCPEndpoint.connect} returned,
        until the protocol is built or the connect failed; None through
        any other endpoint.
    """

    __slots__ = ("connecting", "datalogger")

    def __init__(self, datalogger):
        self.datalogger = datalogger
        self.connecting = None

    def buildProtocol(self, addr):
        waiting, self.connecting = self.connecting, None
        return UpstreamProtocol(self.datalogger, waiting)

    def doStart(self):
        pass

    def doStop(self):
        pass

    def startedConnecting(self, connector):
        pass

    def clientConnectionFailed(self, connector, reason):
        waiting, self.connecting = self.connecting, None
        if waiting is not None and not waiting.called:
            waiting.errback(reason)

    def clientConnectionLost(self, connector, reason):
        pass


@implementer(IStreamClientEndpoint)
class DirectTCPEndpoint:
    """
    C{tcp:HOST:PORT} for L{UpstreamFactory} only: C{connect} returns a
    Deferred that fires with the L{UpstreamProtocol} once connected, fails
    as a Twisted endpoint's would, and cancelling it stops connecting; but
    nothing of it stays behind once it has fired.
    """

    def __init__(self, reactor, host, port, timeout=30, bindAddress=None):
        self.reactor = reactor
        self.host = host
        self.port = port
        self.timeout = timeout
        self.bindAddress = bindAddress

    def __repr__(self):
        return f"<DirectTCPEndpoint {self.host}:{self.port}>"

    def connect(self, factory):
        connector = None

        def cancel(waiting):
            factory.connecting = None
            if connector is not None:
                try:
                    connector.stopConnecting()
                except NotConnectingError:
                    pass

        waiting = defer.Deferred(canceller=cancel)
        factory.connecting = waiting
        try:
            connector = self.reactor.connectTCP(self.host, self.port, factory,
                                                timeout=self.timeout,
                                                bindAddress=self.bindAddress)
        except Exception:
            factory.connecting = None
            return defer.fail()
        return waiting


def upstream_endpoint(reactor, description):
    """
    The endpoint for C{proxy.upstream}: a L{DirectTCPEndpoint} for a plain
    C{tcp:} string, Twisted's own endpoint for anything else.
    """
    endpoint = clientFromString(reactor, description)
    if type(endpoint) is TCP4ClientEndpoint:
        try:
            return DirectTCPEndpoint(reactor, endpoint._host, endpoint._port,
                                     endpoint._timeout, endpoint._bindAddress)
        except AttributeError:
            # Another Twisted keeping its fields elsewhere: the endpoint
            # works all the same, only with its wrappers.
            pass
    return endpoint
