"""
Finding plugins: dropins, the plugins directory, config.yaml's choices, and
verifyObject on every built-in.
"""

import dataclasses
import os
import re
import sys
import textwrap

from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

import grott.plugins
from grott import logs
from grott.config import (
    ConfigError,
    InfluxdbConfig,
    JsonlConfig,
    MqttConfig,
    PvoutputConfig,
    SpoolConfig,
    config_from_string,
    load_config,
)
from grott.interfaces import (
    IBlockingPlugin,
    IConfigurablePlugin,
    IGrottPlugin,
    IGrottPluginService,
    ISpoolSink,
)
from grott.outputs import builtin, jsonl, mqtt
from grott.pluginhost import PluginHost
from grott.spool import SpooledOutput
from tests.pluginhelpers import make_config

GOOD = """
from zope.interface import implementer
from grott.interfaces import IConfigurablePlugin, IGrottPlugin

@implementer(IGrottPlugin)
class Hello:
    name = "hello"
    def data(self, packet, record, log):
        pass

hello = Hello()
same_object_again = hello

@implementer(IConfigurablePlugin)
class Factory:
    name = "configured"
    def makePlugin(self, settings, reactor):
        plugin = Hello()
        plugin.name = "configured"
        plugin.settings = settings
        plugin.reactor = reactor
        return plugin

factory = Factory()

@implementer(IGrottPlugin)
class Forgotten:
    name = "forgotten"
    def data(self, packet, record, log):
        pass
"""

INVALID = """
from zope.interface import implementer
from grott.interfaces import IGrottPlugin

@implementer(IGrottPlugin)
class NoData:
    name = "nodata"

@implementer(IGrottPlugin)
class BadName:
    name = "has space"
    def data(self, packet, record, log):
        pass

@implementer(IGrottPlugin)
class WrongSignature:
    name = "wrongsig"
    def data(self, record):
        pass

nodata = NoData()
badname = BadName()
wrongsig = WrongSignature()
"""


def _write(directory, name, text):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(text))


class BuiltinTests(unittest.SynchronousTestCase):

    def test_verify_builtins(self):
        reactor = MemoryReactorClock()
        verifyObject(IConfigurablePlugin, builtin.jsonl)
        verifyObject(IConfigurablePlugin, builtin.mqtt)
        out = builtin.jsonl.makePlugin(JsonlConfig(path=self.mktemp()), reactor)
        verifyObject(IBlockingPlugin, out)
        verifyObject(IGrottPluginService, out)
        # Behind the spool by default; the plain output with spool: false.
        verifyObject(ISpoolSink, builtin.mqtt.makePlugin(MqttConfig(), reactor))
        out = builtin.mqtt.makePlugin(MqttConfig(spool=False), reactor)
        verifyObject(IGrottPlugin, out)
        verifyObject(IGrottPluginService, out)
        self.assertFalse(IBlockingPlugin.providedBy(out))

    def test_builtins_come_from_the_dropin(self):
        config = make_config(self.mktemp(), outputs={"jsonl": {"path": self.mktemp()},
                                                      "mqtt": {}})
        host = PluginHost(config, MemoryReactorClock())
        self.assertEqual([(r.name, type(r.plugin)) for r in host.runners],
                         [("jsonl", jsonl.JsonlOutput), ("mqtt", SpooledOutput)])
        self.assertIsInstance(host.runners[1].plugin.sink.output, mqtt.MqttOutput)
        unspooled = make_config(self.mktemp(), outputs={"mqtt": {"spool": False}})
        self.assertEqual([type(r.plugin) for r in PluginHost(unspooled,
                                                             MemoryReactorClock()).runners],
                         [mqtt.MqttOutput])
        self.assertEqual(host.runners[0].origin, "installed package grott.plugins.grott_outputs")

    def test_outputs_off_without_a_section(self):
        host = PluginHost(make_config(self.mktemp()), MemoryReactorClock())
        self.assertEqual(host.runners, [])

    def test_disabled_builtin(self):
        config = make_config(self.mktemp(), disabled=["jsonl"],
                             outputs={"jsonl": {"path": self.mktemp()}})
        self.assertEqual(PluginHost(config, MemoryReactorClock()).runners, [])


class ShippedConfigTests(unittest.SynchronousTestCase):
    """
    config.yaml ships with every output commented out, and the commented
    examples restate the defaults.
    """

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "config.yaml")

    def test_no_output_on(self):
        config = load_config(self.path)
        self.assertEqual((config.outputs.jsonl, config.outputs.mqtt, config.outputs.influxdb,
                          config.outputs.pvoutput), (None, None, None, None))

    def test_commented_examples_are_the_defaults(self):
        with open(self.path, encoding="utf-8") as f:
            text = f.read()
        start = text.index("\noutputs:\n") + 1
        block = text[start:text.index("\n# ---", start)]
        # pvoutput has no usable defaults (api_key, systems): its example
        # stays commented out, and its keys are checked by name.
        pvoutput = block[block.index("  # pvoutput:"):block.index("  # spool:")]
        keys = re.findall(r"^  #   (\w+):", pvoutput, re.MULTILINE)
        self.assertEqual(keys, [f.name for f in dataclasses.fields(PvoutputConfig)])
        block = block.replace(pvoutput, "")
        uncommented = "\n".join(
            line.replace("  # ", "  ", 1) if re.match(r"^  # (jsonl|mqtt|influxdb|spool|  )", line) else line
            for line in block.splitlines())
        outputs = config_from_string(uncommented, "config.yaml").outputs
        self.assertEqual(outputs.jsonl, JsonlConfig())
        self.assertEqual(outputs.mqtt, MqttConfig())
        self.assertEqual(outputs.spool, SpoolConfig())
        self.assertEqual(outputs.influxdb, InfluxdbConfig())


class DirectoryTests(unittest.SynchronousTestCase):

    def setUp(self):
        self.events = EventLoggingObserver.createWithCleanup(self, logs.publisher)
        self.directory = self.mktemp()
        _write(self.directory, "good.py", GOOD)
        _write(self.directory, "broken.py", "raise RuntimeError('broken plugin file')\n")
        _write(self.directory, "invalid.py", INVALID)
        _write(self.directory, "_helper.py", "raise RuntimeError('helpers are not scanned')\n")
        _write(self.directory, "notes.txt", "not python\n")

    def host(self, **settings):
        settings.setdefault("enabled", "all")
        return PluginHost(make_config(self.directory, **settings), MemoryReactorClock())

    def test_discovery_skips_and_reports_the_broken(self):
        host = self.host(settings={"configured": {"greeting": "hi"}})
        self.assertEqual([r.name for r in host.runners], ["hello", "configured"])
        configured = host.runners[1].plugin
        self.assertEqual(configured.settings, {"greeting": "hi"})
        self.assertIs(configured.reactor, host.reactor)
        self.assertEqual(host.runners[0].origin.split(" (")[0],
                         "file " + os.path.abspath(os.path.join(self.directory, "good.py")))

        [failure] = self.flushLoggedErrors(RuntimeError)
        self.assertIn("broken plugin file", str(failure.value))
        imports = [e for e in self.events if "failed to import" in e["log_format"]]
        self.assertEqual([os.path.basename(e["path"]) for e in imports], ["broken.py"])

        rejected = {e["object"].name: e["problem"] for e in self.events
                    if "not a usable plugin" in e["log_format"]}
        self.assertEqual(sorted(rejected), ["has space", "nodata", "wrongsig"])
        self.assertIn("data", rejected["nodata"])
        self.assertIn("not a non-empty string", rejected["has space"])
        self.assertIn("data", rejected["wrongsig"])

        forgotten = [e for e in self.events if "no instance of it" in e["log_format"]]
        self.assertEqual([e["cls"] for e in forgotten], ["Forgotten"])

    def test_third_party_plugins_are_opt_in(self):
        # The default: files found in the directory do not run until named.
        host = PluginHost(make_config(self.directory), MemoryReactorClock())
        self.assertEqual(host.runners, [])
        found = [e["plugin"] for e in self.events if "found but not enabled" in e["log_format"]]
        self.assertEqual(found, ["hello", "configured"])
        self.flushLoggedErrors(RuntimeError)

    def test_enabled_list(self):
        host = self.host(enabled=["configured"])
        self.assertEqual([r.name for r in host.runners], ["configured"])
        self.assertEqual(host.runners[0].plugin.settings, {})
        self.flushLoggedErrors(RuntimeError)

    def test_disabled_list(self):
        host = self.host(disabled=["hello"])
        self.assertEqual([r.name for r in host.runners], ["configured"])
        self.flushLoggedErrors(RuntimeError)

    def test_unknown_enabled_name_is_a_config_error(self):
        e = self.assertRaises(ConfigError, self.host, enabled=["hello", "helo"])
        self.assertIn("test.yaml: plugins.enabled: no plugin named 'helo'", str(e))
        self.assertIn("hello", str(e))
        self.flushLoggedErrors(RuntimeError)

    def test_builtin_in_enabled_is_a_config_error(self):
        e = self.assertRaises(ConfigError, self.host, enabled=["mqtt"])
        self.assertIn("outputs.mqtt", str(e))
        self.flushLoggedErrors(RuntimeError)

    def test_builtin_settings_in_the_wrong_place(self):
        e = self.assertRaises(ConfigError, self.host, settings={"jsonl": {"path": "x"}})
        self.assertIn("plugins.settings.jsonl", str(e))
        self.flushLoggedErrors(RuntimeError)

    def test_duplicate_name_keeps_the_first(self):
        _write(self.directory, "zz_again.py", GOOD.replace('"configured"', '"other"'))
        host = self.host()
        self.assertEqual([r.name for r in host.runners], ["hello", "configured", "other"])
        taken = [e for e in self.events if "already taken" in e["log_format"]]
        self.assertEqual([e["plugin"] for e in taken], ["hello"])
        self.flushLoggedErrors(RuntimeError)

    def test_factory_failure_is_reported_and_skipped(self):
        _write(self.directory, "good.py", GOOD.replace(
            "plugin = Hello()", "raise ValueError('greeting must be short')"))
        host = self.host()
        self.assertEqual([r.name for r in host.runners], ["hello"])
        [failure] = self.flushLoggedErrors(ValueError)
        self.assertIn("greeting must be short", str(failure.value))
        self.flushLoggedErrors(RuntimeError)

    def test_no_directory(self):
        host = PluginHost(make_config(self.mktemp()), MemoryReactorClock())
        self.assertEqual(host.runners, [])


class DropinTests(unittest.SynchronousTestCase):
    """
    Installed plugins: a directory joins grott.plugins.__path__ for the
    test, as an installed distribution's grott/plugins/ would.
    """

    def setUp(self):
        self.events = EventLoggingObserver.createWithCleanup(self, logs.publisher)
        root = self.mktemp()
        self.dropins = os.path.abspath(os.path.join(root, "grott", "plugins"))
        os.makedirs(self.dropins)
        grott.plugins.__path__.append(self.dropins)
        self.addCleanup(grott.plugins.__path__.remove, self.dropins)

    def drop(self, module, text):
        _write(self.dropins, module + ".py", text)
        self.addCleanup(sys.modules.pop, "grott.plugins." + module, None)

    def test_dropin_plugin_is_found(self):
        self.drop("test_dropin_hello", GOOD)
        host = PluginHost(make_config(self.mktemp(), enabled="all"), MemoryReactorClock())
        self.assertEqual([r.name for r in host.runners], ["hello", "configured"])
        self.assertEqual(host.runners[0].origin,
                         "installed package grott.plugins.test_dropin_hello")
        self.assertTrue(os.path.exists(os.path.join(self.dropins, "dropin.cache")))

    def test_broken_dropin_is_reported(self):
        self.drop("test_dropin_hello", GOOD)
        self.drop("test_dropin_broken", "raise RuntimeError('broken dropin')\n")
        host = PluginHost(make_config(self.mktemp(), enabled="all"), MemoryReactorClock())
        self.assertEqual([r.name for r in host.runners], ["hello", "configured"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        reported = [e["module"] for e in self.events if "failed to import" in e["log_format"]]
        self.assertEqual(reported, ["grott.plugins.test_dropin_broken"])

    def test_dropin_and_directory_together(self):
        self.drop("test_dropin_hello", GOOD)
        directory = self.mktemp()
        _write(directory, "mine.py", GOOD.replace('"hello"', '"mine"').replace(
            '"configured"', '"mine_configured"'))
        host = PluginHost(make_config(directory, enabled="all"), MemoryReactorClock())
        self.assertEqual([r.name for r in host.runners],
                         ["hello", "configured", "mine", "mine_configured"])
