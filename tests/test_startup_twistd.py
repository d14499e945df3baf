"""
Start-up failures under a real twistd: a port that is taken ends start-up
with one line on the terminal and exit status 1, daemonized as in the
foreground, and leaves no pidfile behind.

twistd itself only reports an Exception raised in the daemon back to the
waiting parent; a SystemExit there used to leave the parent waiting
forever and the pidfile in place.
"""

import os
import sys

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import TestCase

from tests import test_logs_twistd as _twistd


class BusyPortTests(TestCase):
    timeout = 120

    # The subprocess plumbing of the twistd log tests.
    setUp = _twistd.TwistdTests.setUp
    spawn = _twistd.TwistdTests.spawn
    daemon_pid = _twistd.TwistdTests.daemon_pid
    kill_daemon = _twistd.TwistdTests.kill_daemon
    until = _twistd.TwistdTests.until

    def config(self, listen):
        path = os.path.join(self.tmp, "config.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(f'proxy:\n  listen: "{listen}"\n  upstream: none\ncommand:\n  listen: none\n'
                    'metrics:\n  listen: none\n')
        return path

    async def taken_port(self):
        from twisted.internet import reactor
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            protocol.Factory.forProtocol(protocol.Protocol))
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def test_daemonized(self):
        return defer.ensureDeferred(self.busy(daemonized=True))

    def test_foreground(self):
        return defer.ensureDeferred(self.busy(daemonized=False))

    async def busy(self, daemonized):
        port = await self.taken_port()
        cfg = self.config(f"tcp:{port}:interface=127.0.0.1")
        args = ["--pidfile", self.pidfile, "--logfile", "twistd.log"] if daemonized else \
            ["-n", "--pidfile", self.pidfile]
        proc, _ = self.spawn(*args, "grott", "--config", cfg)
        self.assertEqual(await proc.ended, (1, None))
        self.assertEqual(proc.err.decode(),
                         f"grott: cannot listen on 127.0.0.1:{port}: Address already in use\n")
        self.assertFalse(os.path.exists(self.pidfile))

    def test_failureAfterTheFork(self):
        return defer.ensureDeferred(self.after_fork())

    async def after_fork(self):
        # A UNIX socket in a missing directory is not probed before the
        # fork: the bind fails in the daemon, which must still tell the
        # waiting parent and remove its pidfile.
        missing = os.path.join("missing", "grott.sock")  # relative: AF_UNIX paths are short
        cfg = self.config(f"unix:{missing}:lockfile=0")
        proc, _ = self.spawn("--pidfile", self.pidfile, "--logfile", "twistd.log",
                             "grott", "--config", cfg)
        self.assertEqual(await proc.ended, (1, None))
        self.assertIn(b"grott: cannot listen on " + missing.encode(), proc.err)
        # twistd tells the parent first, then removes the pidfile.
        await self.until(lambda: not os.path.exists(self.pidfile), "the pidfile to go")
        # The daemon writes the line as it exits, maybe after the parent.
        line = f"grott: cannot listen on {missing}: No such file or directory"
        await self.until(lambda: line in _twistd.TwistdTests.read(self, "twistd.log"),
                         "the line in the log")


class TacTests(TestCase):
    """
    The application file ships inside the package and runs under twistd.
    """

    timeout = 120

    setUp = _twistd.TwistdTests.setUp
    daemon_pid = _twistd.TwistdTests.daemon_pid
    kill_daemon = _twistd.TwistdTests.kill_daemon
    until = _twistd.TwistdTests.until
    running = _twistd.TwistdTests.running

    def test_pythonMinusM(self):
        with open(os.path.join(self.tmp, "mine.yaml"), "w", encoding="utf-8") as f:
            f.write('proxy:\n  listen: "tcp:0:interface=127.0.0.1"\n  upstream: none\n'
                    'command:\n  listen: none\nmetrics:\n  listen: none\n')
        return defer.ensureDeferred(self.tac())

    async def tac(self):
        from twisted.internet import reactor
        from twisted.internet.utils import getProcessOutputAndValue

        import grott

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in [_twistd.REPO, env.get("PYTHONPATH")] if p)
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "grott.tac"], env=env, path=self.tmp)
        self.assertEqual((code, err), (0, b""))
        path = out.decode().strip()
        self.assertEqual(path, os.path.join(os.path.dirname(grott.__file__), "grott.tac"))
        self.assertTrue(os.path.isfile(path))

        env["GROTT_CONFIG"] = "mine.yaml"
        proc = _twistd.Twistd()
        transport = reactor.spawnProcess(
            proc, sys.executable,
            [sys.executable, "-c", _twistd.TWISTD, "-n", "--pidfile", self.pidfile, "-y", path],
            env=env, path=self.tmp)
        self.addCleanup(lambda: None if proc.done else transport.signalProcess("KILL"))
        await self.running(lambda: proc.out.decode(), proc)
        transport.signalProcess("TERM")
        self.assertIn(await proc.ended, _twistd.STOPPED)
        self.assertIn(b"Server Shut Down.", proc.out)


HUNG_PLUGIN = """
import threading
from zope.interface import implementer
from grott.interfaces import IBlockingPlugin

@implementer(IBlockingPlugin)
class Hung:
    name = "hung"
    def data(self, packet, record, log):
        log.info("hung plugin got a record")
        threading.Event().wait()  # a database that never answers

hung = Hung()
"""


class HungPluginShutdownTests(TestCase):
    """
    SIGTERM to a daemonized grott whose blocking plugin hangs: twistd exits
    once plugins.stop_timeout has passed, and the log says how many records
    were not delivered.
    """

    timeout = 120

    setUp = _twistd.TwistdTests.setUp
    spawn = _twistd.TwistdTests.spawn
    daemon_pid = _twistd.TwistdTests.daemon_pid
    kill_daemon = _twistd.TwistdTests.kill_daemon
    until = _twistd.TwistdTests.until
    read = _twistd.TwistdTests.read

    def test_sigterm(self):
        os.makedirs(os.path.join(self.tmp, "plugins"))
        with open(os.path.join(self.tmp, "plugins", "hung.py"), "w", encoding="utf-8") as f:
            f.write(HUNG_PLUGIN)
        with open(os.path.join(self.tmp, "config.yaml"), "w", encoding="utf-8") as f:
            f.write('proxy:\n  listen: "tcp:0:interface=127.0.0.1"\n'
                    '  upstream: "tcp:127.0.0.1:1"\ncommand:\n  listen: none\n'
                    'metrics:\n  listen: none\nplugins:\n  enabled: [hung]\n  stop_timeout: 1\n')
        return defer.ensureDeferred(self.sigterm())

    async def sigterm(self):
        import re
        import signal

        from twisted.internet.endpoints import TCP4ClientEndpoint

        from tests.vectors import raw

        proc, _ = self.spawn("--pidfile", self.pidfile, "--logfile", "twistd.log",
                             "grott", "--config", "config.yaml")
        self.assertEqual(await proc.ended, (0, None), proc.err)
        pid = self.daemon_pid()
        found = r"ProxyFactory starting on (\d+)"
        await self.until(lambda: re.search(found, self.read("twistd.log")), "the port")
        port = int(re.search(found, self.read("twistd.log")).group(1))
        client = await TCP4ClientEndpoint(_reactor(), "127.0.0.1", port).connect(
            protocol.Factory.forProtocol(_twistd.Client))

        def close():
            client.transport.loseConnection()
            return client.lost
        self.addCleanup(close)
        data = raw("grott-p6-0104-classic")
        for _ in range(3):
            client.transport.write(data)
        await self.until(lambda: "hung plugin got a record" in self.read("twistd.log"),
                         "the plugin to hang")
        os.kill(pid, signal.SIGTERM)
        await self.until(lambda: not _twistd.alive(pid), "the daemon to exit")
        log = self.read("twistd.log")
        self.assertIn("plugin hung did not finish within 1.0 s", log)
        self.assertIn("1 in flight abandoned (its thread is left running)", log)
        self.assertRegex(log, r"plugins stopped after \d+\.\d s; \d record\(s\) were not "
                              r"delivered")
        self.assertIn("Server Shut Down.", log)
        self.assertFalse(os.path.exists(self.pidfile))


def _reactor():
    from twisted.internet import reactor
    return reactor
