"""
The tools that ship with grott, as a user runs them: `grott fake-cloud`
(its default port, a taken port, -v) and `grott simulate` against a
closed port.  Real loopback sockets, and the console script as a
subprocess where what matters is what reaches the terminal.
"""

import io
import os
import socket
import sys

from twisted.internet import defer, error, protocol
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from grott.scripts import fakecloud as fakecloud_script
from grott.scripts import simulate as simulate_script
from tests import test_logs_twistd as _twistd
from tests.test_simulator import TriggerReactor


def _reactor():
    from twisted.internet import reactor
    return reactor


def closed_port():
    """A loopback port nothing listens on (bound by the OS, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeCloudTests(TestCase):
    timeout = 60

    until = _twistd.TwistdTests.until

    def test_defaultPortIsNotGrotts(self):
        options = fakecloud_script.Options()
        options.parseOptions(["--duration", "1"])
        reactor = TriggerReactor()
        out, err = io.StringIO(), io.StringIO()
        d = defer.ensureDeferred(fakecloud_script.run(reactor, options, out, err))
        [(port, _, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (5280, "127.0.0.1"))
        reactor.advance(1)
        self.assertEqual(self.successResultOf(d), 0)

    def test_portTaken(self):
        return defer.ensureDeferred(self.port_taken())

    async def port_taken(self):
        port = await TCP4ServerEndpoint(_reactor(), 0, interface="127.0.0.1").listen(
            protocol.Factory.forProtocol(protocol.Protocol))
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        options = fakecloud_script.Options()
        options.parseOptions(["--listen", f"tcp:{number}:interface=127.0.0.1"])
        out, err = io.StringIO(), io.StringIO()
        code = await fakecloud_script.run(_reactor(), options, out, err)
        self.assertEqual(code, 1)
        self.assertEqual(err.getvalue(), f"grott fake-cloud: cannot listen on 127.0.0.1:{number}: "
                                         f"Address already in use\n")
        self.assertEqual(out.getvalue(), "")

    def test_verboseLogsEachConnection(self):
        return defer.ensureDeferred(self.verbose())

    async def verbose(self):
        from twisted.internet.endpoints import TCP4ClientEndpoint

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [_twistd.REPO, env.get("PYTHONPATH")] if p)
        proc = _twistd.Twistd()
        transport = _reactor().spawnProcess(
            proc, sys.executable,
            [sys.executable, "-c", "from grott.cli import main; main()", "fake-cloud", "-v",
             "--listen", "tcp:0:interface=127.0.0.1"], env=env)
        self.addCleanup(lambda: None if proc.done else transport.signalProcess("KILL"))
        await self.until(lambda: b"listening on 127.0.0.1:" in proc.err, "the port", proc)
        number = int(proc.err.split(b"listening on 127.0.0.1:")[1].split()[0])
        client = await TCP4ClientEndpoint(_reactor(), "127.0.0.1", number).connect(
            protocol.Factory.forProtocol(_twistd.Client))
        peer = f"127.0.0.1:{client.transport.getHost().port}"
        await self.until(lambda: f"connection from {peer}".encode() in proc.err,
                         "the connection logged", proc)
        client.transport.loseConnection()
        await client.lost
        await self.until(lambda: f"connection from {peer} closed (datalogger unidentified, "
                                 f"0 packets)".encode() in proc.err, "the close logged", proc)
        transport.signalProcess("INT")
        await proc.ended


class SimulateTests(TestCase):
    timeout = 60

    def test_closedPortSaysSoAndFails(self):
        return defer.ensureDeferred(self.closed())

    async def closed(self):
        number = closed_port()
        options = simulate_script.Options()
        options.parseOptions(["--target", f"tcp:127.0.0.1:{number}", "--reconnect", "0"])
        out, err = io.StringIO(), io.StringIO()
        code = await simulate_script.run(_reactor(), options, out, err)
        self.assertEqual(code, 1)
        lines = err.getvalue().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith(
            f"grott simulate: cannot connect to tcp:127.0.0.1:{number}: "), lines[0])
        self.assertIn("refused", lines[0])

    def test_closedPortWithRetriesSaysSoOnce(self):
        reactor = TriggerReactor()
        options = simulate_script.Options()
        options.parseOptions(["--duration", "12", "--reconnect", "5"])
        out, err = io.StringIO(), io.StringIO()
        d = defer.ensureDeferred(simulate_script.run(reactor, options, out, err))
        refused = Failure(error.ConnectionRefusedError("Connection refused"))
        for _ in range(3):  # the first attempt and two retries
            connector = reactor.connectors[-1]
            reactor.tcpClients[-1][2].clientConnectionFailed(connector, refused)
            reactor.advance(5)
        reactor.advance(2)
        self.assertEqual(self.successResultOf(d), 1)
        self.assertEqual(err.getvalue().splitlines(), [
            ("grott simulate: cannot connect to tcp:127.0.0.1:5279: Connection was refused by "
             "other side: Connection refused.; retrying every 5 s"),
            "grott simulate: no datalogger could connect to tcp:127.0.0.1:5279",
        ])
