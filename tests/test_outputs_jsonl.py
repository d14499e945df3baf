"""
The jsonl output: one JSON line per record, flushed as it is written.
"""

import enum
import json
import os

from twisted.internet import defer, reactor
from twisted.internet.testing import EventLoggingObserver
from twisted.trial import unittest

from grott import logs
from grott.interfaces import DeliveryFailed
from grott.outputs import jsonenc
from grott.outputs.jsonl import JsonlOutput
from grott.pluginhost import PluginHost
from tests.pluginhelpers import (
    DATA_VECTORS,
    make_config,
    meter_packet_and_record,
    numbered,
    packet_and_record,
)
from tests.waiting import plugins_idle


def _lines(path):
    with open(path, "rb") as f:
        return f.read().splitlines()


class JsonlOutputTests(unittest.SynchronousTestCase):

    def test_each_record_is_one_line_readable_at_once(self):
        path = os.path.join(self.mktemp(), "sub", "records.jsonl")
        out = JsonlOutput(path)
        out.startService()
        self.addCleanup(out.stopService)
        records = [packet_and_record(v) for v in DATA_VECTORS]
        for count, (packet, record) in enumerate(records, 1):
            out.data(packet, record, None)
            # Still open: a reader tailing the file sees the line already.
            lines = _lines(path)
            self.assertEqual(len(lines), count)
            self.assertEqual(json.loads(lines[-1]), record.as_dict())

    def test_meter_and_inverter_lines_say_which_device(self):
        path = self.mktemp()
        out = JsonlOutput(path)
        out.startService()
        self.addCleanup(out.stopService)
        out.data(*packet_and_record(), None)
        out.data(*meter_packet_and_record(), None)
        inverter, meter = (json.loads(line) for line in _lines(path))
        self.assertEqual((inverter["kind"], inverter["device_id"]),
                         ("inverter", inverter["inverter_serial"]))
        self.assertEqual((meter["kind"], meter["device_id"], meter["inverter_serial"]),
                         ("meter", "QDL1CKK028-meter-01", "QDL1CKK028"))
        self.assertEqual(meter["values"]["pos_act_energy"], 269.6)

    def test_appends_to_an_existing_file(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b'{"earlier": true}\n')
        out = JsonlOutput(path)
        out.startService()
        out.data(*packet_and_record(), None)
        out.stopService()
        lines = _lines(path)
        self.assertEqual(json.loads(lines[0]), {"earlier": True})
        self.assertEqual(len(lines), 2)

    def test_standard_json_encoder(self):
        """
        Compact UTF-8, enums as their values: what orjson writes too.
        """
        class Kind(enum.Enum):
            DATA = 4

        dumps = jsonenc.encoder(None)
        encoded = dumps({"unit": "°C", "kind": Kind.DATA, "n": 1.5})
        self.assertEqual(encoded, '{"unit":"°C","kind":4,"n":1.5}'.encode())
        self.assertEqual(jsonenc.line({"a": 1}, dumps), b'{"a":1}\n')

    def test_orjson_writes_the_same(self):
        if jsonenc.orjson is None:
            raise unittest.SkipTest("orjson is not installed (pip install grott[speedups])")
        _, record = packet_and_record()
        document = record.as_dict()
        self.assertEqual(json.loads(jsonenc.encoder(jsonenc.orjson)(document)),
                         json.loads(jsonenc.encoder(None)(document)))


class JsonlThroughTheHostTests(unittest.TestCase):
    """
    Configured under outputs.jsonl, found through the dropin, run in the
    plugin thread pool.
    """

    timeout = 20

    def test_records_in_order(self):
        path = os.path.abspath(self.mktemp())
        config = make_config(self.mktemp(), outputs={"jsonl": {"path": path}})
        host = PluginHost(config, reactor)
        self.assertEqual([r.name for r in host.runners], ["jsonl"])
        host.startService()
        pairs = numbered(5)

        async def run():
            for packet, record in pairs:
                host.deliver(packet, record)
            await plugins_idle(host)
            self.assertEqual(host.stats()[0]["delivered"], 5)
            await host.stopService()
            lines = [json.loads(line) for line in _lines(path)]
            self.assertEqual([line["values"]["seq"] for line in lines], [0, 1, 2, 3, 4])
            self.assertEqual(lines[0], pairs[0][1].as_dict())
        return defer.Deferred.fromCoroutine(run())


class _Log:
    """The plugin's logger as the host hands it over, keeping the events."""

    def __init__(self):
        self.events = []

    def _emit(self, level, fmt, **kw):
        self.events.append((level, fmt, kw))

    def info(self, fmt, **kw):
        self._emit("info", fmt, **kw)

    def error(self, fmt, **kw):
        self._emit("error", fmt, **kw)


class JsonlTroubleTests(unittest.SynchronousTestCase):
    """
    A full disk (the kernel's /dev/full answers every write with ENOSPC), a
    path that cannot be created, and a file moved or deleted under grott.
    """

    def setUp(self):
        if not os.path.exists("/dev/full"):
            raise unittest.SkipTest("needs /dev/full (a Linux device that is always full)")
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "records.jsonl")
        self.log = _Log()

    def output(self):
        out = JsonlOutput(self.path)
        out.startService()
        self.addCleanup(out.stopService)
        return out

    def test_full_disk_said_once_counted_and_recovered(self):
        os.symlink("/dev/full", self.path)
        out = self.output()
        pairs = numbered(5)
        for packet, record in pairs[:3]:
            self.assertRaises(DeliveryFailed, out.data, packet, record, self.log)
        self.assertEqual(self.log.events, [("error", self.log.events[0][1],
                                            {"path": self.path,
                                             "error": "No space left on device"})])
        # Space again: the path now names a real file.
        os.remove(self.path)
        for packet, record in pairs[3:]:
            out.data(packet, record, self.log)
        self.assertEqual([kw.get("count") for _, _, kw in self.log.events[1:]], [3])
        self.assertEqual([json.loads(line)["values"]["seq"] for line in _lines(self.path)],
                         [3, 4])

    def test_moved_or_deleted_file_is_reopened(self):
        out = self.output()
        pairs = numbered(4)
        out.data(*pairs[0], self.log)
        os.rename(self.path, self.path + ".1")  # logrotate
        out.data(*pairs[1], self.log)
        os.remove(self.path)  # rm
        out.data(*pairs[2], self.log)
        out.data(*pairs[3], self.log)
        seqs = [json.loads(line)["values"]["seq"] for line in _lines(self.path)]
        self.assertEqual(seqs, [2, 3])
        self.assertEqual([json.loads(line)["values"]["seq"] for line in _lines(self.path + ".1")],
                         [0])
        moved = [kw for level, fmt, kw in self.log.events if "moved or deleted" in fmt]
        self.assertEqual(len(moved), 2)

    def test_uncreatable_path_is_retried(self):
        blocker = os.path.join(self.dir, "not-yet-a-directory")
        with open(blocker, "w"):
            pass
        self.path = os.path.join(blocker, "records.jsonl")
        out = self.output()  # starts anyway, and says so (logged)
        pairs = numbered(3)
        for pair in pairs[:2]:
            self.assertRaises(DeliveryFailed, out.data, *pair, self.log)
        os.remove(blocker)
        out.data(*pairs[2], self.log)
        self.assertEqual([json.loads(line)["values"]["seq"] for line in _lines(self.path)], [2])
        self.assertEqual([kw["count"] for _, fmt, kw in self.log.events if "again" in fmt], [2])


class JsonlHostTroubleTests(unittest.TestCase):
    """
    Through the host: records the output could not write are failed, not
    delivered, and logged without a traceback each.
    """

    timeout = 20

    def test_full_disk_through_the_host(self):
        if not os.path.exists("/dev/full"):
            raise unittest.SkipTest("needs /dev/full (a Linux device that is always full)")
        path = os.path.join(os.path.abspath(self.mktemp()), "records.jsonl")
        os.makedirs(os.path.dirname(path))
        os.symlink("/dev/full", path)
        config = make_config(self.mktemp(), outputs={"jsonl": {"path": path}})
        host = PluginHost(config, reactor)
        host.startService()
        pairs = numbered(5)

        async def run():
            events = EventLoggingObserver.createWithCleanup(self, logs.publisher)
            for pair in pairs[:3]:
                host.deliver(*pair)
            await plugins_idle(host)
            self.assertEqual(host.stats()[0]["failed"], 3)
            os.remove(path)
            for pair in pairs[3:]:
                host.deliver(*pair)
            await plugins_idle(host)
            await host.stopService()
            stats = host.stats()[0]
            self.assertEqual((stats["delivered"], stats["failed"], stats["state"]),
                             (2, 3, "stopped"))
            self.assertFalse([e for e in events if "log_failure" in e])
            said = [e["log_format"] for e in events
                    if e.get("log_namespace") == "grott.plugin.jsonl"]
            self.assertEqual(len(said), 2, said)
            self.assertEqual(len(_lines(path)), 2)
        return defer.Deferred.fromCoroutine(run())
