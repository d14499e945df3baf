"""
A child process for the integration tests (influxd, prometheus, haproxy,
twistd): its recent output for failure messages, and a Deferred for its end.
"""

from twisted.internet import defer, protocol

#: Bytes of output kept: enough for the last error, bounded for chatty servers.
KEPT = 20000


class OutputProcess(protocol.ProcessProtocol):
    def __init__(self, name=None):
        self.name = name
        self.output = b""
        self.ended = defer.Deferred()
        self.done = False

    def outReceived(self, data):
        self.output = (self.output + data)[-KEPT:]

    errReceived = outReceived

    def processEnded(self, reason):
        self.done = True
        self.ended.callback(None)
