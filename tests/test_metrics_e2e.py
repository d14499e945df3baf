"""
The monitoring endpoint of the whole service, the way an operator sees it:
a simulated datalogger sends records through grott to the fake cloud, then
/metrics, /readyz and /stats are read over HTTP, and a real Prometheus
server scrapes grott and answers PromQL queries about it.
"""

import json
import os

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from grott.codec import RecordType, build_packet
from grott.config import config_from_string
from grott.service import makeService
from grott.testing.fakecloud import FakeCloud
from grott.testing.simulator import DataloggerFactory, DataloggerSpec
from tests import prometheus
from tests.prometheus import Prometheus, get, poll
from tests.test_monitor import value

DASHBOARD = os.path.join(os.path.dirname(__file__), os.pardir, "contrib",
                         "grafana-dashboard.json")
SERIAL = "GROTTMET01"
RECORDS = 3
TOKEN = "scrape-token-77"


def dashboard_queries():
    with open(DASHBOARD, encoding="utf-8") as f:
        dashboard = json.load(f)
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


class MetricsEndToEnd(TestCase):
    timeout = 60

    async def startGrott(self, token="", upstream=None):
        if upstream is None:
            cloud = FakeCloud(reactor)
            cloudPort = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(cloud)
            self.addCleanup(cloudPort.stopListening)
            upstream = f"tcp:127.0.0.1:{cloudPort.getHost().port}"
            self.cloud = cloud
        token_line = f"  token: {token}\n" if token else ""
        config = config_from_string(
            "proxy:\n"
            "  listen: tcp:0:interface=127.0.0.1\n"
            f"  upstream: {upstream}\n"
            "command:\n  listen: none\n"
            "metrics:\n  listen: tcp:0:interface=127.0.0.1\n" + token_line +
            f"plugins:\n  directory: {os.path.abspath(self.mktemp())}\n"
            f"outputs:\n  jsonl:\n    path: {os.path.abspath(self.mktemp())}\n")
        top = makeService(config, reactor)
        top.privilegedStartService()
        top.startService()
        self.addCleanup(top.stopService)
        self.top = top
        listener = top.getServiceNamed("proxy").getServiceNamed("listener")
        self.proxyPort = listener._waitingForPort.result.getHost().port
        metrics = top.getServiceNamed("metrics")
        self.metricsPort = metrics._waitingForPort.result.getHost().port
        self.base = f"http://127.0.0.1:{self.metricsPort}"

    async def runDatalogger(self, cloud=True):
        spec = DataloggerSpec(SERIAL, protocol=6, family="min", interval=0.05,
                              ping_interval=0, records=RECORDS, reconnect_delay=None)
        datalogger = DataloggerFactory(spec, reactor)
        datalogger.connect(TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxyPort))
        self.addCleanup(datalogger.disconnect)
        await datalogger.state.when_done()
        if cloud:
            self.assertEqual(self.cloud.count(SERIAL, 0x04), RECORDS)
        return datalogger

    def metricsText(self, token=None):
        async def fetch():
            code, _, body = await get(self.base + "/metrics", token=token)
            self.assertEqual(code, 200)
            return body.decode()
        return fetch()

    @defer.inlineCallbacks
    def test_scrapeAfterRecords(self):
        yield defer.ensureDeferred(self.startGrott())
        yield defer.ensureDeferred(self.runDatalogger())

        async def delivered():
            text = await self.metricsText()
            # The plugin queue runs on later reactor turns.
            if value(text, "grott_output_delivered_total", output="jsonl") == RECORDS + 1:
                return text
        text = yield defer.ensureDeferred(poll(delivered, what="jsonl delivered everything"))
        self.assertEqual(value(text, "grott_packets_total", direction="in", record_type="0x04"),
                         RECORDS)
        self.assertEqual(value(text, "grott_packets_total", direction="in", record_type="0x03"),
                         1)
        # The cloud's acknowledgements, relayed back.
        self.assertEqual(value(text, "grott_packets_total", direction="out",
                               record_type="0x04"), RECORDS)
        self.assertEqual(value(text, "grott_records_decoded_total", family="tlx"), RECORDS + 1)
        self.assertEqual(value(text, "grott_dataloggers_connected", mode="relaying"), 1)
        self.assertEqual(value(text, "grott_upstream_connects_total"), 1)
        self.assertEqual(value(text, "grott_upstream_connect_failures_total"), 0)
        self.assertEqual(value(text, "grott_upstream_connect_duration_seconds_count"), 1)
        self.assertEqual(value(text, "grott_local_acks_total"), 0)
        self.assertEqual(value(text, "grott_crc_failures_total"), 0)
        self.assertEqual(value(text, "grott_output_queue_depth", output="jsonl"), 0)
        self.assertIsNotNone(value(text, "grott_datalogger_last_record_age_seconds",
                                   serial=SERIAL))
        code, _, body = yield defer.ensureDeferred(get(self.base + "/readyz"))
        self.assertEqual((code, json.loads(body)["problems"]), (200, []))
        code, _, body = yield defer.ensureDeferred(get(self.base + "/stats"))
        stats = json.loads(body)
        self.assertEqual([d["datalogger"] for d in stats["dataloggers"]], [SERIAL])
        self.assertEqual(stats["dataloggers"][0]["records"], RECORDS + 1)
        self.assertEqual(stats["plugins"][0]["name"], "jsonl")
        self.assertEqual(stats["commands"]["sent"], 0)

    @defer.inlineCallbacks
    def test_cloudAwayAndBadFrames(self):
        closed = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Protocol))
        number = closed.getHost().port
        yield closed.stopListening()
        yield defer.ensureDeferred(self.startGrott(upstream=f"tcp:127.0.0.1:{number}"))
        yield defer.ensureDeferred(self.runDatalogger(cloud=False))
        text = yield defer.ensureDeferred(self.metricsText())
        # The announce and every record, acknowledged by grott itself.
        self.assertEqual(value(text, "grott_local_acks_total"), RECORDS + 1)
        self.assertEqual(value(text, "grott_upstream_connects_total"), 0)
        self.assertGreaterEqual(value(text, "grott_upstream_connect_failures_total"), 1)
        self.assertEqual(value(text, "grott_dataloggers_connected", mode="answering locally"),
                         1)
        self.assertEqual(value(text, "grott_dataloggers_connected", mode="relaying"), 0)
        # Another connection: noise, then a ping whose CRC fails (garbage to
        # the framer after noise), a good one, then a bad one in step.
        ping = build_packet(RecordType.PING, b"CRCTEST001" + bytes(20), protocol=6)
        bad = ping[:-1] + bytes([ping[-1] ^ 0xFF])
        client = yield TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxyPort).connect(
            Factory.forProtocol(Protocol))
        self.addCleanup(client.transport.loseConnection)
        client.transport.write(b"\xfe\xfe\xfe" + bad + ping + bad)

        async def counted():
            text = await self.metricsText()
            if value(text, "grott_crc_failures_total") == 2:
                return text
        text = yield defer.ensureDeferred(poll(counted, what="two CRC failures counted"))
        self.assertEqual(value(text, "grott_garbage_bytes_total"), 3 + len(bad))
        self.assertEqual(value(text, "grott_packets_total", direction="in", record_type="0x16"),
                         2)

    @defer.inlineCallbacks
    def test_notReadyWhileStopping(self):
        yield defer.ensureDeferred(self.startGrott())
        proxy = self.top.getServiceNamed("proxy")
        yield proxy.stopService()
        code, _, body = yield defer.ensureDeferred(get(self.base + "/readyz"))
        self.assertEqual(code, 503)
        self.assertIn("grott is starting or stopping", json.loads(body)["problems"])

    @defer.inlineCallbacks
    def test_prometheusScrapesGrott(self):
        yield defer.ensureDeferred(self.startGrott(token=TOKEN))
        server = Prometheus(self.mktemp(), f"127.0.0.1:{self.metricsPort}", token=TOKEN)
        self.addCleanup(server.stop)
        yield server.start()
        yield defer.ensureDeferred(self.runDatalogger())

        def query(promql, expected):
            async def check():
                result = await server.query(promql)
                return bool(result) and float(result[0]["value"][1]) == expected
            return defer.ensureDeferred(poll(check, deadline=20,
                                             what=f"{promql} == {expected}"))

        yield query('grott_packets_total{direction="in",record_type="0x04"}', RECORDS)
        yield query('sum(grott_records_decoded_total)', RECORDS + 1)
        yield query('grott_upstream_connects_total', 1)
        yield query('sum(grott_dataloggers_connected)', 1)
        yield query('grott_output_delivered_total{output="jsonl"}', RECORDS + 1)
        targets = yield defer.ensureDeferred(server.targets())
        self.assertEqual([t["health"] for t in targets], ["up"])
        # Every query of the shipped Grafana dashboard is valid PromQL here.
        for expr in dashboard_queries():
            yield defer.ensureDeferred(server.query(expr.replace("$job", ".*")))
        result = yield defer.ensureDeferred(server.query(
            'sum(grott_dataloggers_connected{job=~".*"})'))
        self.assertEqual(float(result[0]["value"][1]), 1)

    if prometheus.SKIP:
        test_prometheusScrapesGrott.skip = prometheus.SKIP
