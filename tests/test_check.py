"""
`grott check`: exit 0 and "PATH: OK" for a usable configuration, exit 1 and
every problem found otherwise.
"""

import io
import os
import sys

from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from grott import cli
from grott.config import ConfigError
from grott.scripts import check

GOOD = """
proxy:
  listen: "tcp:0:interface=127.0.0.1"
  upstream: "tcp:127.0.0.1:1"
command:
  listen: none
metrics:
  listen: none
log:
  to: file
  file: {tmp}/grott.log
  per_datalogger: true
  directory: {tmp}/logs
"""


class CheckTests(SynchronousTestCase):
    def setUp(self):
        self.tmp = os.path.abspath(self.mktemp())
        os.makedirs(self.tmp)

    def write(self, text):
        path = os.path.join(self.tmp, "config.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text.format(tmp=self.tmp))
        return path

    def run_check(self, path, build=None):
        options = check.Options()
        options.parseOptions(["--config", path])
        out, err = io.StringIO(), io.StringIO()
        status = check.main(options, out, err, build)
        return status, out.getvalue(), err.getvalue()

    def test_good(self):
        path = self.write(GOOD)
        self.assertEqual(self.run_check(path), (0, f"{path}: OK\n", ""))
        # Nothing was started: no log file, no directory.
        self.assertEqual(os.listdir(self.tmp), ["config.yaml"])

    def test_shippedConfig(self):
        shipped = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "config.yaml")
        self.assertEqual(self.run_check(shipped)[0], 0)

    def test_unknownKey(self):
        path = self.write(GOOD + "  levle: debug\n")
        status, out, err = self.run_check(path)
        self.assertEqual((status, out), (1, ""))
        self.assertIn(f"{path}: log.levle: unknown key", err)

    def test_badValueAndYaml(self):
        status, _, err = self.run_check(self.write(GOOD.replace("to: file", "to: syslog")))
        self.assertEqual(status, 1)
        self.assertIn("log.to: must be one of 'stdout', 'file'", err)
        status, _, err = self.run_check(self.write("log: [unclosed\n"))
        self.assertEqual(status, 1)
        self.assertIn("not valid YAML", err)

    def test_missingFile(self):
        status, _, err = self.run_check(os.path.join(self.tmp, "nope.yaml"))
        self.assertEqual(status, 1)
        self.assertIn("cannot read the configuration file", err)

    def test_logPathsListedTogether(self):
        blocker = os.path.join(self.tmp, "plain-file")
        with open(blocker, "w"):
            pass
        path = self.write(GOOD.replace("{tmp}/grott.log", blocker + "/grott.log")
                          .replace("{tmp}/logs", blocker + "/logs"))
        status, _, err = self.run_check(path)
        self.assertEqual(status, 1)
        self.assertEqual(err.splitlines(), [
            f"{path}: log.file: {blocker} is not a directory",
            f"{path}: log.directory: {blocker} is not a directory",
            f"{path}: 2 problems",
        ])

    def test_buildsTheTreeOnAMemoryReactor(self):
        built = []
        self.assertEqual(self.run_check(self.write(GOOD), lambda c, r: built.append((c, r)))[0], 0)
        [(config, reactor)] = built
        self.assertIsInstance(reactor, MemoryReactor)
        self.assertEqual(config.proxy.upstream, "tcp:127.0.0.1:1")

    def test_wiringErrors(self):
        path = self.write(GOOD)

        def unknown_plugin(config, reactor):
            raise ConfigError(f"{path}: plugins.enabled: no plugin named 'nope'")

        def broken(config, reactor):
            raise RuntimeError("boom")

        status, _, err = self.run_check(path, unknown_plugin)
        self.assertEqual((status, err.splitlines()[0]),
                         (1, f"{path}: plugins.enabled: no plugin named 'nope'"))
        status, _, err = self.run_check(path, broken)
        self.assertEqual((status, err.splitlines()[0]),
                         (1, f"{path}: cannot build the service: RuntimeError: boom"))

    def test_cli(self):
        path = self.write(GOOD)
        self.patch(sys, "stdout", io.StringIO())
        self.patch(sys, "stderr", io.StringIO())
        for argv, code in [(["check", "--config", path], 0), (["check", path], 0),
                           (["check", "-c", path + ".missing"], 1)]:
            with self.assertRaises(SystemExit) as raised:
                cli.main(argv)
            self.assertEqual(raised.exception.code, code, argv)
        self.assertEqual(sys.stdout.getvalue(), f"{path}: OK\n" * 2)
        self.assertIn("cannot read the configuration file", sys.stderr.getvalue())
