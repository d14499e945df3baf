"""
grott under a real twistd: foreground (-n) logs to stdout, daemonized it
writes a pidfile and logs to --logfile and log.file, and --logger
grott.logs.main_log hands the main log to the log: section (JSON on stdout).

Each test starts twistd in a temporary directory on a loopback port 0 with
no admin socket and an unreachable upstream, waits (bounded, polling) for
what it expects, stops it with SIGTERM and kills whatever is left.
"""

import json
import os
import re
import signal
import sys

from twisted.internet import defer, protocol
from twisted.trial.unittest import TestCase

import grott
from tests import waiting

REPO = os.path.dirname(os.path.dirname(os.path.abspath(grott.__file__)))
#: How twistd ends after SIGTERM: exit 0, or (Twisted >= 22) the signal again.
STOPPED = [(0, None), (None, signal.SIGTERM)]
TWISTD = "from twisted.scripts.twistd import run; run()"

CONFIG = """
proxy:
  listen: "tcp:0:interface=127.0.0.1"
  upstream: "tcp:127.0.0.1:1"
command:
  listen: none
metrics:
  listen: none
log:
{log}
"""


def _reactor():
    from twisted.internet import reactor
    return reactor


def alive(pid):
    """
    Whether process C{pid} still runs (a zombie waiting to be reaped does
    not count: a daemon is not our child).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


class Twistd(protocol.ProcessProtocol):
    def __init__(self):
        self.out = b""
        self.err = b""
        self.ended = defer.Deferred()
        self.done = False

    def outReceived(self, data):
        self.out += data

    def errReceived(self, data):
        self.err += data

    def processEnded(self, reason):
        self.done = True
        self.ended.callback((reason.value.exitCode, reason.value.signal))


class Client(protocol.Protocol):
    def __init__(self):
        self.lost = defer.Deferred()

    def connectionLost(self, reason):
        self.lost.callback(None)


class TwistdTests(TestCase):
    timeout = 120

    def setUp(self):
        self.tmp = os.path.abspath(self.mktemp())
        os.makedirs(self.tmp)
        self.pidfile = os.path.join(self.tmp, "twistd.pid")
        self.addCleanup(self.kill_daemon)

    def config(self, log):
        path = os.path.join(self.tmp, "config.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(CONFIG.format(log=log))
        return path

    def spawn(self, *args):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [REPO, env.get("PYTHONPATH")] if p)
        proc = Twistd()
        transport = _reactor().spawnProcess(
            proc, sys.executable, [sys.executable, "-c", TWISTD, *args], env=env, path=self.tmp)

        def stop():
            if not proc.done:
                transport.signalProcess("KILL")
                return proc.ended
            return None

        self.addCleanup(stop)
        return proc, transport

    async def until(self, condition, what, proc=None, seconds=60):
        detail = (lambda: f"stdout: {proc.out!r}\nstderr: {proc.err!r}") if proc else None
        await waiting.until(_reactor(), condition, what, seconds=seconds, interval=0.05,
                            detail=detail)

    async def running(self, text, proc=None):
        """
        Wait until twistd's reactor runs, so SIGTERM meets its handler and
        not the default action: a connection is only logged then.  Returns
        once the connection, logged with its peer address, is closed again.
        """
        from twisted.internet.endpoints import TCP4ClientEndpoint

        await self.until(lambda: re.search(r"ProxyFactory starting on (\d+)", text()),
                         "the listening port", proc)
        port = int(re.search(r"ProxyFactory starting on (\d+)", text()).group(1))
        client = await TCP4ClientEndpoint(_reactor(), "127.0.0.1", port).connect(
            protocol.Factory.forProtocol(Client))
        peer = f"127.0.0.1:{client.transport.getHost().port}"
        try:
            await self.until(lambda: peer in text(), "the connection in the log", proc)
        finally:
            client.transport.loseConnection()
            await client.lost

    def read(self, name):
        try:
            with open(os.path.join(self.tmp, name), encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def daemon_pid(self):
        try:
            with open(self.pidfile, encoding="ascii") as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def kill_daemon(self):
        pid = self.daemon_pid()
        if pid is not None and alive(pid):
            os.kill(pid, signal.SIGKILL)

    def test_daemonized(self):
        return defer.ensureDeferred(self.daemonized())

    async def daemonized(self):
        cfg = self.config("  to: file\n  file: grott.log\n")
        proc, _ = self.spawn("--pidfile", self.pidfile, "--logfile", "twistd.log",
                             "grott", "--config", cfg)
        # The launcher returns once the daemon has started.
        self.assertEqual(await proc.ended, (0, None), proc.err)
        await self.until(lambda: os.path.exists(self.pidfile), "the pidfile", proc)
        pid = self.daemon_pid()
        self.assertTrue(alive(pid))
        await self.running(lambda: self.read("twistd.log"))
        twistd_log = self.read("twistd.log")
        self.assertIn("[grott.logs#info] logging at level info to "
                      + os.path.join(self.tmp, "grott.log"), twistd_log)
        grott_log = self.read("grott.log")
        # Lines from before the file opened (ports binding) are kept too.
        self.assertIn("ProxyFactory starting on", grott_log)
        self.assertNotIn("twistd 26", grott_log.split("logging at level")[1])

        os.kill(pid, signal.SIGTERM)
        await self.until(lambda: not os.path.exists(self.pidfile), "the pidfile to go")
        await self.until(lambda: not alive(pid), "the daemon to exit")
        self.assertIn("Server Shut Down.", self.read("twistd.log"))

    def test_statsReportInTheLiveLog(self):
        return defer.ensureDeferred(self.stats_report())

    async def stats_report(self):
        cfg = self.config("  level: info\n")
        proc, _ = self.spawn("--pidfile", self.pidfile, "--logfile", "twistd.log",
                             "grott", "--config", cfg)
        self.assertEqual(await proc.ended, (0, None), proc.err)
        await self.until(lambda: os.path.exists(self.pidfile), "the pidfile", proc)
        pid = self.daemon_pid()
        await self.running(lambda: self.read("twistd.log"))
        for signals in (1, 2):
            os.kill(pid, signal.SIGUSR1)
            # twistd rotates on SIGUSR1; the report follows into the new file.
            await self.until(lambda: "datalogger(s) connected" in self.read("twistd.log"),
                             f"report {signals} in the live log")
            self.assertIn("  totals: ", self.read("twistd.log"))
            self.assertNotIn("datalogger(s) connected", self.read(f"twistd.log.{signals}"))
        os.kill(pid, signal.SIGTERM)
        await self.until(lambda: not alive(pid), "the daemon to exit")

    def test_foreground(self):
        return defer.ensureDeferred(self.foreground())

    async def foreground(self):
        cfg = self.config("  level: info\n")
        proc, transport = self.spawn("-n", "--pidfile", self.pidfile, "grott", "--config", cfg)
        await self.running(lambda: proc.out.decode(), proc)
        self.assertIn(b"[grott.logs#info] logging at level info\n", proc.out)
        self.assertTrue(os.path.exists(self.pidfile))
        self.assertEqual(sorted(os.listdir(self.tmp)), ["config.yaml", "twistd.pid"])
        transport.signalProcess("TERM")
        self.assertIn(await proc.ended, STOPPED)
        self.assertIn(b"Server Shut Down.", proc.out)
        self.assertFalse(os.path.exists(self.pidfile))

    def test_foregroundJsonThroughMainLog(self):
        return defer.ensureDeferred(self.foreground_json())

    async def foreground_json(self):
        cfg = self.config("  format: json\n")
        proc, transport = self.spawn("-n", "--pidfile=", "--logger", "grott.logs.main_log",
                                     "grott", "--config", cfg)
        await self.running(lambda: proc.out.decode(), proc)
        transport.signalProcess("TERM")
        self.assertIn(await proc.ended, STOPPED)
        events = [json.loads(line) for line in proc.out.decode().splitlines()]
        namespaces = [e.get("log_namespace") for e in events]
        self.assertIn("twisted.scripts._twistd_unix.UnixAppLogger", namespaces)
        [start] = [e for e in events if e.get("log_namespace") == "grott.logs"]
        self.assertEqual(start["threshold"], "info")
        self.assertIn("Server Shut Down.", [e.get("log_format") for e in events])
