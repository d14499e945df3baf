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


class _CheckCase(SynchronousTestCase):
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


class CheckTests(_CheckCase):

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
            f"{path}: log.file: {blocker} is not a directory (line 11)",
            f"{path}: log.directory: {blocker} is not a directory (line 13)",
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


#: Thirteen mistakes, one per numbered line, as a new user might make them.
MANY = """\
proxy:
  listen: "tcp:0:interface=127.0.0.1"
  upstream: "tcp:nowhere"
  retry_max: -1
  idle_timout: 30
command:
  listen: none
  timeout: soon
log:
  level: loud
  to: file
  file: {tmp}/missing-dir/grott.log
proxy:
  connect_timeout: 0
plugins:
  queue_size: 0
  stop_timeout: -5
registers:
  - {{name: extra, register: 70000}}
dtc_filter:
  5100: [pvpowerout, pvpowrout]
families:
  ABC123: growatt
"""


class EveryProblemTests(_CheckCase):
    """
    One run lists every problem, each with file, key and line.
    """

    def test_thirteenProblemsInOneRun(self):
        path = self.write(MANY)
        status, out, err = self.run_check(path)
        self.assertEqual((status, out), (1, ""))
        lines = err.splitlines()
        self.assertEqual(lines[-1], f"{path}: 13 problems")
        found = [(line.split(": ")[1], line.rsplit("(line ", 1)[1].rstrip(")"))
                 for line in lines[:-1]]
        self.assertEqual(sorted(found, key=lambda kv: int(kv[1])), [
            ("proxy.upstream", "3"),
            ("proxy.retry_max", "4"),
            ("proxy.idle_timout", "5"),
            ("command.timeout", "8"),
            ("log.level", "10"),
            ("log.file", "12"),
            ("proxy", "13"),
            ("proxy.connect_timeout", "14"),
            ("plugins.queue_size", "16"),
            ("plugins.stop_timeout", "17"),
            ("registers[0] (extra)", "19"),
            ("dtc_filter.5100", "21"),
            ("families.ABC123", "23"),
        ])
        for line in lines[:-1]:
            self.assertTrue(line.startswith(f"{path}: "), line)
        self.assertIn("'pvpowrout' is not the name of any register", err)
        self.assertIn("duplicate key (first at line 1", err)
        self.assertIn(f"the directory {self.tmp}/missing-dir does not exist", err)
        # grott did not create it.
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "missing-dir")))

    def test_duplicateKeysNested(self):
        path = self.write(GOOD + "  level: debug\n  level: info\n")
        status, _, err = self.run_check(path)
        self.assertEqual(status, 1)
        self.assertEqual(err.splitlines()[0],
                         f"{path}: log.level: duplicate key (first at line 14; YAML keeps only "
                         f"the last, silently dropping the first) (line 15)")

    def test_dtcFilterNames(self):
        good = GOOD + ("registers:\n  - {{name: mine, register: 200}}\n"
                       "dtc_filter:\n  5100: [pvpowerout, mine, reg_3093, 3093]\n")
        self.assertEqual(self.run_check(self.write(good))[0], 0)

    def test_brokenPluginFiles(self):
        plugins = os.path.join(self.tmp, "plugins")
        os.makedirs(plugins)
        with open(os.path.join(plugins, "broken.py"), "w") as f:
            f.write("import no_such_module_anywhere\n")
        with open(os.path.join(plugins, "half.py"), "w") as f:
            f.write("from zope.interface import implementer\n"
                    "from grott.interfaces import IGrottPlugin\n"
                    "@implementer(IGrottPlugin)\n"
                    "class Half:\n    name = 'half'\n"
                    "half = Half()\n")
        with open(os.path.join(plugins, "notes.py"), "w") as f:
            f.write("class Forgot:\n    name = 'forgot'\n    def data(self, *a):\n        pass\n"
                    "plugin = Forgot()\n")
        with open(os.path.join(plugins, "_helper.py"), "w") as f:
            f.write("HELPER = 1\n")
        path = self.write(GOOD + f"plugins:\n  directory: {plugins}\n")
        status, _, err = self.run_check(path)
        self.flushLoggedErrors(ImportError)
        self.assertEqual(status, 1, err)
        lines = err.splitlines()
        self.assertEqual(lines[-1], f"{path}: 3 problems")
        self.assertIn("notes.py provides no plugin: no module-level object provides "
                      "IGrottPlugin", lines[2])
        self.assertNotIn("_helper", err)
        self.assertIn("broken.py failed to import and is skipped: ModuleNotFoundError: "
                      "No module named 'no_such_module_anywhere' (line 14)", lines[0])
        self.assertTrue(lines[0].startswith(f"{path}: plugins: plugin file "), lines[0])
        self.assertIn("is not a usable plugin", lines[1])
        self.assertIn("data", lines[1])


class LoaderTests(SynchronousTestCase):
    """
    What YAML users type is taken as they mean it.
    """

    def test_unquotedNumberForAString(self):
        from grott.config import config_from_string
        config = config_from_string("outputs:\n  mqtt:\n    protocol: 5\n"
                                    "    client_id: 0123\n")
        self.assertEqual(config.outputs.mqtt.protocol, "5")
        # As typed, not as YAML 1.1 reads it (octal 83).
        self.assertEqual(config.outputs.mqtt.client_id, "0123")

    def test_trueIsNotAString(self):
        from grott.config import config_from_string
        e = self.assertRaises(ConfigError, config_from_string,
                              "outputs:\n  mqtt:\n    username: yes\n", "c.yaml")
        self.assertEqual(str(e), "c.yaml: outputs.mqtt.username: expected a string, "
                                 "got bool True (line 3)")

    def test_startupListsEveryProblem(self):
        from grott import tap
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("proxy:\n  retry_max: 0\nlog:\n  level: loud\n")
        e = self.assertRaises(SystemExit, tap.Options().parseOptions, ["--config", path])
        self.assertEqual(str(e.code).splitlines(), [
            f"grott: {path}: proxy.retry_max: must be greater than 0 (line 2)",
            (f"grott: {path}: log.level: must be one of 'debug', 'info', 'warn', 'error', "
             f"'critical' (line 4)"),
        ])

    def test_startupRefusesWhatCheckRefuses(self):
        from grott import tap
        tmp = os.path.abspath(self.mktemp())
        os.makedirs(tmp)
        path = os.path.join(tmp, "config.yaml")
        with open(path, "w") as f:
            f.write(f"log:\n  to: file\n  file: {tmp}/nowhere/grott.log\n"
                    "dtc_filter:\n  5100: [pvpowerout, pvpowrout]\n")
        e = self.assertRaises(SystemExit, tap.Options().parseOptions, ["--config", path])
        lines = str(e.code).splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertEqual(lines[0], f"grott: {path}: log.file: the directory {tmp}/nowhere does "
                                   f"not exist (create it, owned by the user grott runs as) "
                                   f"(line 3)")
        self.assertTrue(lines[1].startswith(f"grott: {path}: dtc_filter.5100: 'pvpowrout' is "
                                            f"not the name of any register"), lines[1])
        self.assertTrue(lines[1].endswith("(line 5)"), lines[1])
        self.assertFalse(os.path.exists(os.path.join(tmp, "nowhere")))


class JsonlPathTests(_CheckCase):
    def test_uncreatablePath(self):
        blocker = os.path.join(self.tmp, "plain-file")
        with open(blocker, "w"):
            pass
        path = self.write(GOOD + f"outputs:\n  jsonl:\n    path: {blocker}/sub/records.jsonl\n")
        status, _, err = self.run_check(path)
        self.assertEqual(status, 1)
        self.assertEqual(err.splitlines()[0],
                         f"{path}: outputs.jsonl.path: cannot create {blocker}/sub/records.jsonl: "
                         f"{blocker} is not a directory (line 16)")
        # Start-up goes on (the output retries): only the check says so.
        from grott.config import load_config
        from grott.service import validate
        validate(load_config(path))

    def test_creatablePath(self):
        path = self.write(GOOD + "outputs:\n  jsonl:\n    path: {tmp}/new/dir/records.jsonl\n")
        self.assertEqual(self.run_check(path)[0], 0)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "new")))


class PluginSecretTests(_CheckCase):
    def test_pluginErrorTextIsMasked(self):
        plugins = os.path.join(self.tmp, "plugins")
        os.makedirs(plugins)
        with open(os.path.join(plugins, "leaky.py"), "w") as f:
            f.write("from zope.interface import implementer\n"
                    "from grott.interfaces import IConfigurablePlugin\n"
                    "@implementer(IConfigurablePlugin)\n"
                    "class Factory:\n    name = 'leaky'\n"
                    "    def makePlugin(self, settings, reactor):\n"
                    "        raise ValueError('cannot log in with ' + settings['password'])\n"
                    "factory = Factory()\n")
        path = self.write(GOOD + f"plugins:\n  directory: {plugins}\n  enabled: [leaky]\n"
                                 f"  settings:\n    leaky: {{{{password: 'hunter2-long'}}}}\n")
        status, _, err = self.run_check(path)
        self.flushLoggedErrors(ValueError)
        self.assertEqual(status, 1, err)
        self.assertIn("could not be set up", err)
        self.assertNotIn("hunter2-long", err)
