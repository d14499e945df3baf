"""
Simulated dataloggers and the fake cloud wired together in memory
(twisted.test.iosim), driven by a L{Clock}: no sockets, no real time.
"""

from twisted.internet import defer, error
from twisted.internet.task import Clock
from twisted.test import iosim

from grott.testing.fakecloud import FakeCloud
from grott.testing.simulator import DataloggerFactory, DataloggerSpec

#: 2024-06-21 10:00:00 UTC: mid-morning, the sun is up.
MORNING = 1718964000.0


class MemoryEndpoint:
    """
    A client endpoint whose connections go straight into C{cloud}, each
    through its own L{iosim.IOPump}.  C{fail} makes attempts fail instead.
    """

    def __init__(self, cloud, clock):
        self.cloud = cloud
        self.clock = clock
        self.pumps = []
        self.fail = False
        self.attempts = 0

    def connect(self, factory):
        self.attempts += 1
        if self.fail:
            return defer.fail(error.ConnectionRefusedError("memory endpoint told to refuse"))
        client = factory.buildProtocol(None)
        server = self.cloud.buildProtocol(None)
        pump = iosim.connect(server, iosim.makeFakeServer(server), client,
                             iosim.makeFakeClient(client), greet=False, clock=self.clock)
        self.pumps.append(pump)
        return defer.succeed(client)

    def flush(self):
        moved = True
        while moved:
            moved = False
            for pump in self.pumps:
                if pump.flush():
                    moved = True


class World:
    """
    One clock, one fake cloud, dataloggers connected through a
    L{MemoryEndpoint}; L{advance} moves time and delivers bytes.
    """

    def __init__(self, **cloud_options):
        self.clock = Clock()
        self.clock.advance(1000)
        self.cloud = FakeCloud(self.clock, **cloud_options)
        self.endpoint = MemoryEndpoint(self.cloud, self.clock)

    def datalogger(self, serial="JPC281833B", **spec_options):
        spec_options.setdefault("start_epoch", MORNING)
        factory = DataloggerFactory(DataloggerSpec(serial, **spec_options), self.clock)
        factory.connect(self.endpoint)
        self.flush()
        return factory

    def flush(self):
        self.endpoint.flush()

    def advance(self, seconds, step=1.0):
        """
        Move the clock by C{seconds} in steps, delivering bytes after each.
        """
        self.flush()
        left = seconds
        while left > 1e-9:
            move = min(step, left)
            self.clock.advance(move)
            left -= move
            self.flush()

    def send(self, serial, message, **options):
        """
        cloud.send plus delivery; returns the Deferred (already fired).
        """
        d = self.cloud.send(serial, message, **options)
        self.flush()
        return d
