"""
The tools that ship with grott, as a user runs them: `grott fake-cloud`
(its default port, a taken port, -v) and `grott simulate` against a
closed port.  Real loopback sockets, and the console script as a
subprocess where what matters is what reaches the terminal.
"""

import io
import json
import os
import re
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


class ReadmeRecipeTests(TestCase):
    """
    README's "End to end on one machine", as three processes: the fake
    cloud, grott under twistd with proxy.upstream pointing at it, and the
    simulator pointed at grott (free ports instead of 5280 and 5279).
    """

    timeout = 120

    until = _twistd.TwistdTests.until

    def spawn(self, *args):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [_twistd.REPO, env.get("PYTHONPATH")] if p)
        proc = _twistd.Twistd()
        transport = _reactor().spawnProcess(proc, sys.executable, [sys.executable, *args],
                                            env=env, path=self.tmp)

        def stop():
            if not proc.done:
                transport.signalProcess("TERM")
                return proc.ended
            return None
        self.addCleanup(stop)
        return proc, transport

    def jsonl(self):
        try:
            with open(os.path.join(self.tmp, "grott.jsonl"), encoding="utf-8") as f:
                return [json.loads(line) for line in f]
        except FileNotFoundError:
            return []

    def test_recipe(self):
        self.tmp = os.path.abspath(self.mktemp())
        os.makedirs(self.tmp)
        with open(os.path.join(self.tmp, "e2e.yaml"), "w", encoding="utf-8") as f:
            f.write('proxy:\n  listen: "tcp:0:interface=127.0.0.1"\n'
                    '  upstream: "tcp:127.0.0.1:{cloud}"\n'
                    'command:\n  listen: none\nmetrics:\n  listen: none\n'
                    'outputs:\n  jsonl:\n    path: grott.jsonl\n')
        return defer.ensureDeferred(self.recipe())

    def fill_in(self, name, **values):
        path = os.path.join(self.tmp, name)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text.format(**values))

    async def recipe(self):

        cli = "from grott.cli import main; main()"
        cloud, _ = self.spawn("-c", cli, "fake-cloud", "-v", "--listen",
                              "tcp:0:interface=127.0.0.1")
        await self.until(lambda: b"listening on 127.0.0.1:" in cloud.err, "the cloud", cloud)
        cloud_port = int(cloud.err.split(b"listening on 127.0.0.1:")[1].split()[0])
        self.fill_in("e2e.yaml", cloud=cloud_port)
        grott, _ = self.spawn("-c", _twistd.TWISTD, "-n", "--pidfile=", "grott",
                              "--config", "e2e.yaml")
        started = rb"ProxyFactory starting on (\d+)"
        await self.until(lambda: re.search(started, grott.out), "grott", grott)
        port = int(re.search(started, grott.out).group(1))
        sim, _ = self.spawn("-c", cli, "simulate", "--target", f"tcp:127.0.0.1:{port}",
                            "--count", "2", "--records", "3", "--flood", "--reconnect", "0")
        self.assertEqual(await sim.ended, (0, None), sim.err)
        report = json.loads(sim.out)
        self.assertEqual(report["sent"], {"announce": 2, "data": 6})
        self.assertEqual(report["acked"], report["sent"])
        self.assertEqual(report["connections"], 2)
        lines = self.jsonl
        # grott writes in its plugin thread: maybe just after the last ack.
        await self.until(lambda: len(lines()) == 8, "8 records in grott.jsonl", grott)
        self.assertEqual({line["datalogger_serial"] for line in lines()},
                         {"SIM0000001", "SIM0000002"})
        await self.until(lambda: cloud.err.count(b" closed (datalogger SIM") == 2,
                         "the cloud's connection lines", cloud)
        self.assertEqual(cloud.err.count(b"fake cloud: connection from "), 4)  # opened, closed
