"""
The whole service from a config file's worth of settings, over loopback:
simulated datalogger -> grott -> fake cloud, with the decoded records
reaching the jsonl output.  This is the path a user's data takes.
"""

import json
import os

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.trial.unittest import TestCase

from grott.config import config_from_string
from grott.service import makeService
from grott.testing.fakecloud import FakeCloud
from grott.testing.simulator import DataloggerFactory, DataloggerSpec
from tests.waiting import plugins_idle


class WholePathTests(TestCase):
    @defer.inlineCallbacks
    def test_recordsReachThePluginsAndTheCloud(self):
        cloud = FakeCloud(reactor)
        cloudPort = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(cloud)
        self.addCleanup(cloudPort.stopListening)
        path = os.path.abspath(self.mktemp())
        config = config_from_string(
            "proxy:\n"
            "  listen: tcp:0:interface=127.0.0.1\n"
            f"  upstream: tcp:127.0.0.1:{cloudPort.getHost().port}\n"
            "command:\n  listen: none\nmetrics:\n  listen: none\n"
            f"plugins:\n  directory: {os.path.abspath(self.mktemp())}\n"
            f"outputs:\n  jsonl:\n    path: {path}\n")
        top = makeService(config, reactor)
        top.privilegedStartService()
        top.startService()
        self.addCleanup(top.stopService)
        listener = top.getServiceNamed("proxy").getServiceNamed("listener")
        port = listener._waitingForPort.result
        spec = DataloggerSpec("GROTTE2E01", protocol=6, family="min", interval=0.05,
                              ping_interval=0, records=3, reconnect_delay=None)
        datalogger = DataloggerFactory(spec, reactor)
        datalogger.connect(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port))
        self.addCleanup(datalogger.disconnect)
        yield datalogger.state.when_done()
        # Every record the datalogger sent was acknowledged by the cloud,
        # through grott.
        self.assertEqual(datalogger.state.stats.acked.get("data"), 3)
        self.assertEqual(cloud.count("GROTTE2E01", 0x04), 3)
        # Every record was handed to the plugins before its ack came back
        # (the relay delivers as the packet passes); wait until the jsonl
        # output finished them, so its delivered count is final.
        yield plugins_idle(top.getServiceNamed("plugins"))
        with open(path, encoding="utf-8") as f:
            lines = [json.loads(line) for line in f if line.strip()]
        data = [r for r in lines if r["record_type"] == 4]
        self.assertEqual(len(data), 3)
        self.assertEqual(data[0]["datalogger_serial"], "GROTTE2E01")
        self.assertEqual(data[0]["family"], "tlx")
        self.assertIn("pvpowerin", data[0]["values"])
        announce = [r for r in lines if r["record_type"] == 3]
        self.assertEqual(announce[0]["device_type_code"], 5100)
        session = top.registry.by_serial("GROTTE2E01")
        self.assertEqual(session.device_type_code, 5100)
        report = "\n".join(top.report())
        self.assertIn("plugin jsonl: delivered=4", report)
