"""
The jsonl output: one JSON line per record, flushed as it is written.
"""

import enum
import json
import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

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
