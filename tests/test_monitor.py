"""
The monitoring endpoint over a real loopback port with twisted.web's Agent:
the pages, the bearer token, readiness, /stats, and what /metrics says
about grott's counters.
"""

import json
import re

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from grott.codec import RecordType, build_packet, parse_packet
from grott.commands import CommandDispatcher, CommandError, CommandTimeout, NotConnected
from grott.config import ConfigError, config_from_string
from grott.counters import Histogram, count_decoding
from grott.logs import secrets_in
from grott.logthrottle import LogThrottle
from grott.metrics import GrottCollector, metrics_registry
from grott.monitor import check_ready, make_site
from grott.session import Registry, Session
from tests.prometheus import get
from tests.relayhelpers import CallableLink

TOKEN = "s3cret-Token_42"


def samples(text):
    """{(name, frozenset(labels)): value} of an exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text, name, **labels):
    return samples(text).get((name, frozenset(labels.items())))


def _plugin(name="jsonl", state="running", queued=0, size=10, connected=None, **counts):
    stats = {"name": name, "state": state, "thread": False, "delivered": 0, "failed": 0,
             "dropped": 0, "queued": queued, "queue_size": size, "busy_seconds": None,
             "connected": connected}
    stats.update(counts)
    return stats


def _packet(record_type, serial=b"DLSERIAL01", crc_ok=True):
    raw = build_packet(record_type, serial + bytes(20) + b"INVERTER01" + bytes(40), protocol=6)
    if not crc_ok:
        raw = raw[:-1] + bytes([raw[-1] ^ 0xFF])
    return parse_packet(raw)


class MonitorTestCase(TestCase):
    """
    A site on a free loopback port over a real registry and sessions.
    """

    token = ""

    @defer.inlineCallbacks
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.registry = Registry()
        self.commands = CommandDispatcher(self.registry, self.clock, timeout=5)
        self.plugins = [_plugin()]
        self.ready_args = {"running": True, "listening": True}
        collector = GrottCollector(self.registry, self.clock, commands=self.commands,
                                   plugins=lambda: self.plugins, capacity=lambda: 500)
        self.site = make_site(
            metrics_registry(collector),
            lambda: check_ready(plugins=self.plugins, **self.ready_args),
            lambda: {"connected": len(self.registry), "plugins": self.plugins},
            token=self.token, reactor=reactor)
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.site)
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"

    def get(self, path, **kw):
        return defer.ensureDeferred(get(self.base + path, **kw))

    def connect(self, serial="DLSERIAL01", mode="relaying"):
        session = Session("127.0.0.1:1234", self.clock.seconds())
        self.registry.add(session)
        session.mode = mode
        session.saw_datalogger_packet(_packet(RecordType.ANNOUNCE, serial.encode()),
                                      self.clock.seconds())
        self.registry.claim(session)
        return session


class PageTests(MonitorTestCase):

    @defer.inlineCallbacks
    def test_healthz(self):
        code, _, body = yield self.get("/healthz")
        self.assertEqual((code, body), (200, b"ok\n"))

    @defer.inlineCallbacks
    def test_metricsIsPrometheusText(self):
        code, headers, body = yield self.get("/metrics")
        self.assertEqual(code, 200)
        self.assertTrue(headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain"))
        text = body.decode()
        for mode in ("relaying", "answering locally", "cloud-free"):
            self.assertEqual(value(text, "grott_dataloggers_connected", mode=mode), 0)
        self.assertEqual(value(text, "grott_dataloggers_capacity"), 500)
        self.assertEqual(value(text, "grott_local_acks_total"), 0)
        self.assertEqual(value(text, "grott_upstream_connect_failures_total"), 0)
        self.assertEqual(value(text, "grott_output_queue_depth", output="jsonl"), 0)
        self.assertEqual(value(text, "grott_output_delivered_total", output="jsonl"), 0)
        self.assertEqual(value(text, "grott_output_dropped_total", output="jsonl"), 0)

    @defer.inlineCallbacks
    def test_openMetricsWhenAsked(self):
        code, headers, body = yield self.get(
            "/metrics", headers={b"accept": b"application/openmetrics-text; version=1.0.0"})
        self.assertEqual(code, 200)
        self.assertIn(b"openmetrics", headers.getRawHeaders(b"content-type")[0])
        self.assertTrue(body.endswith(b"# EOF\n"))

    @defer.inlineCallbacks
    def test_unknownPathAndMethod(self):
        code, _, _ = yield self.get("/nothing")
        self.assertEqual(code, 404)
        code, _, _ = yield self.get("/metrics", method=b"POST")
        self.assertEqual(code, 405)
        code, _, body = yield self.get("/")
        self.assertEqual(code, 200)
        self.assertIn(b"/readyz", body)

    @defer.inlineCallbacks
    def test_readyWhenEverythingIs(self):
        code, headers, body = yield self.get("/readyz")
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(json.loads(body)["ready"], True)

    @defer.inlineCallbacks
    def test_notReadySaysWhy(self):
        self.ready_args["listening"] = False
        self.plugins = [_plugin("jsonl", state="broken"),
                        _plugin("mqtt", queued=10, size=10, connected=False),
                        _plugin("influx", queued=3, size=10, connected=False)]
        code, _, body = yield self.get("/readyz")
        self.assertEqual(code, 503)
        state = json.loads(body)
        self.assertEqual(state["ready"], False)
        self.assertEqual(state["problems"], [
            "the datalogger listener (proxy.listen) is not listening",
            "plugin jsonl failed to start",
            ("plugin mqtt is dropping records: its queue is full (10 of 10) and is not "
             "connected to its sink"),
        ])
        # Away but within its queue: spooling, not a readiness problem.
        self.assertEqual(state["outputs"]["influx"],
                         {"state": "running", "queued": 3, "queue_size": 10,
                          "connected": False})

    @defer.inlineCallbacks
    def test_statsIsJson(self):
        self.connect()
        code, _, body = yield self.get("/stats")
        self.assertEqual(code, 200)
        self.assertEqual(json.loads(body), {"connected": 1, "plugins": self.plugins})

    @defer.inlineCallbacks
    def test_renderingFailureIsA500NotATraceback(self):
        def broken():
            raise RuntimeError("boom at /stats")
        page = self.site.resource.children[b"stats"]
        page.report = broken
        summaries = []
        page.throttle = LogThrottle(self.clock, lambda *a: summaries.append(a), burst=3,
                                    interval=300)
        for _ in range(5):
            code, _, body = yield self.get("/stats")
            self.assertEqual(code, 500)
            self.assertNotIn(b"boom", body)
        # A bug that fails every scrape: three tracebacks, then a summary.
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)
        self.clock.advance(300)
        self.assertEqual([(path, count) for path, count, _ in summaries], [("/stats", 2)])


class CounterTests(MonitorTestCase):
    """
    What /metrics reports for grott's counters.
    """

    @defer.inlineCallbacks
    def test_trafficByDirectionAndRecordType(self):
        session = self.connect("DLSERIAL01")
        for _ in range(2):
            session.saw_datalogger_packet(_packet(RecordType.DATA), self.clock.seconds())
        session.saw_datalogger_packet(_packet(RecordType.DATA, crc_ok=False),
                                      self.clock.seconds())
        ack = build_packet(RecordType.DATA, b"\x00", protocol=6)
        session.saw_server_packet(parse_packet(ack))
        session.local_acks += 2
        session.commands_dropped += 1
        # A closed session's counts stay in the totals.
        self.registry.remove(session)
        self.connect("DLSERIAL02", mode="answering locally").local_acks += 1
        _, _, body = yield self.get("/metrics")
        text = body.decode()
        self.assertEqual(value(text, "grott_packets_total", direction="in", record_type="0x04"),
                         3)
        self.assertEqual(value(text, "grott_packets_total", direction="in", record_type="0x03"),
                         2)
        self.assertEqual(value(text, "grott_packets_total", direction="out",
                               record_type="0x04"), 1)
        self.assertEqual(value(text, "grott_packet_bytes_total", direction="out",
                               record_type="0x04"), len(ack))
        self.assertEqual(value(text, "grott_crc_failures_total"), 1)
        self.assertEqual(value(text, "grott_local_acks_total"), 3)
        self.assertEqual(value(text, "grott_cloud_commands_dropped_total"), 1)
        self.assertEqual(value(text, "grott_connections_opened_total"), 2)
        self.assertEqual(value(text, "grott_connections_closed_total"), 1)
        self.assertEqual(value(text, "grott_dataloggers_connected", mode="answering locally"),
                         1)
        self.assertEqual(value(text, "grott_dataloggers_connected", mode="relaying"), 0)

    @defer.inlineCallbacks
    def test_lastRecordAgeOnlyForConnectedDataloggers(self):
        one = self.connect("DLSERIAL01")
        two = self.connect("DLSERIAL02")
        self.connect("DLSERIAL03")  # announced, no data record yet
        one.saw_datalogger_packet(_packet(RecordType.DATA, b"DLSERIAL01"), self.clock.seconds())
        self.clock.advance(30)
        two.saw_datalogger_packet(_packet(RecordType.DATA, b"DLSERIAL02"), self.clock.seconds())
        self.clock.advance(12)
        self.registry.remove(two)
        _, _, body = yield self.get("/metrics")
        ages = {dict(labels)["serial"]: v for (name, labels), v in samples(body.decode()).items()
                if name == "grott_datalogger_last_record_age_seconds"}
        self.assertEqual(ages, {"DLSERIAL01": 42.0})

    @defer.inlineCallbacks
    def test_decodedAndFailedByFamily(self):
        class Record:
            family = "tlx"
            record_type = RecordType.DATA

        def decode(packet, dtc=None):
            if packet.record_type == RecordType.BUFFERED_DATA:
                raise ValueError("blocks do not add up")
            return Record()

        session = self.connect("DLSERIAL01")
        counting = count_decoding(decode, self.registry.totals,
                                  lambda packet: session.family)
        self.assertRaises(ValueError, counting, _packet(RecordType.BUFFERED_DATA))
        session.saw_record(counting(_packet(RecordType.DATA)))
        counting(_packet(RecordType.DATA))
        self.assertRaises(ValueError, counting, _packet(RecordType.BUFFERED_DATA))
        _, _, body = yield self.get("/metrics")
        text = body.decode()
        self.assertEqual(value(text, "grott_records_decoded_total", family="tlx"), 2)
        self.assertEqual(value(text, "grott_decode_errors_total", family="unknown"), 1)
        self.assertEqual(value(text, "grott_decode_errors_total", family="tlx"), 1)

    @defer.inlineCallbacks
    def test_commandsByViaOpResultWithLatency(self):
        session = self.connect("DLSERIAL01")
        session.protocol = 6
        sent = []
        session.link = CallableLink(lambda data: sent.append(data) or True)
        with self.assertRaises(NotConnected):
            self.commands.read_registers("NOBODY", 1)
        d = self.commands.read_registers("DLSERIAL01", 3, via="mqtt")
        failures = []
        d.addErrback(failures.append)
        self.clock.advance(5)
        self.assertTrue(failures and failures[0].check(CommandTimeout))
        with self.assertRaises(CommandError):
            self.commands.write_register("DLSERIAL01", 70000, 1)
        _, _, body = yield self.get("/metrics")
        text = body.decode()
        self.assertEqual(value(text, "grott_commands_total", via="admin", op="read",
                               result="not_connected"), 1)
        self.assertEqual(value(text, "grott_commands_total", via="mqtt", op="read",
                               result="timeout"), 1)
        self.assertEqual(value(text, "grott_commands_total", via="admin", op="set",
                               result="rejected"), 1)
        self.assertEqual(value(text, "grott_command_duration_seconds_count", via="mqtt",
                               op="read"), 1)
        self.assertEqual(value(text, "grott_command_duration_seconds_bucket", via="mqtt",
                               op="read", le="2.0"), 0)
        self.assertEqual(value(text, "grott_command_duration_seconds_bucket", via="mqtt",
                               op="read", le="5.0"), 1)

    @defer.inlineCallbacks
    def test_fileDescriptors(self):
        import os
        if not os.path.isdir("/proc/self/fd"):
            raise self.skipTest("no /proc/self/fd on this system")
        _, _, body = yield self.get("/metrics")
        text = body.decode()
        self.assertGreater(value(text, "process_open_fds"), 2)
        self.assertGreater(value(text, "process_max_fds"), value(text, "process_open_fds"))


    @defer.inlineCallbacks
    def test_dashboardUsesOnlyMetricsThatExist(self):
        from tests.test_metrics_e2e import dashboard_queries
        self.connect().last_record_at = self.clock.seconds()
        _, _, body = yield self.get("/metrics")
        # Families with labels but no samples yet still have their name.
        names = {family.name for family in text_string_to_metric_families(body.decode())}
        used = set()
        for expr in dashboard_queries():
            used.update(re.sub(r"_(total|bucket|count|sum)$", "", name) for name in
                        re.findall(r"\b((?:grott|process)_[a-z_]+)\b", expr))
        self.assertGreater(len(used), 20)
        self.assertEqual(sorted(used - names), [])


class HistogramTests(TestCase):
    def test_cumulative(self):
        h = Histogram((0.1, 1.0))
        for v in (0.05, 0.1, 0.5, 3):
            h.observe(v)
        self.assertEqual(h.cumulative(), [("0.1", 2), ("1.0", 3), ("+Inf", 4)])
        self.assertEqual(h.count, 4)
        self.assertAlmostEqual(h.sum, 3.65)


class TokenTests(MonitorTestCase):
    token = TOKEN

    @defer.inlineCallbacks
    def test_everyPathWantsTheToken(self):
        for path in ("/metrics", "/healthz", "/readyz", "/stats", "/", "/nothing"):
            code, headers, body = yield self.get(path)
            self.assertEqual(code, 401, path)
            self.assertEqual(headers.getRawHeaders(b"www-authenticate"), [b'Bearer realm="grott"'])
            self.assertNotIn(TOKEN.encode(), body)

    @defer.inlineCallbacks
    def test_wrongTokenOrScheme(self):
        code, _, _ = yield self.get("/metrics", token="s3cret-Token_4")
        self.assertEqual(code, 401)
        code, _, _ = yield self.get("/metrics", headers={b"authorization": TOKEN.encode()})
        self.assertEqual(code, 401)
        code, _, _ = yield self.get("/metrics", headers={b"authorization": b"Basic " +
                                                         TOKEN.encode()})
        self.assertEqual(code, 401)

    @defer.inlineCallbacks
    def test_rightToken(self):
        code, _, body = yield self.get("/metrics", token=TOKEN)
        self.assertEqual(code, 200)
        self.assertIn(b"grott_dataloggers_connected", body)
        code, _, _ = yield self.get("/healthz", token=TOKEN)
        self.assertEqual(code, 200)


class StartupTests(TestCase):
    def started(self, listen, token=""):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        site = make_site(metrics_registry(GrottCollector(Registry(), Clock()), process=False),
                         lambda: {"ready": True}, dict, token=token, listen=listen,
                         reactor=Clock())
        site.doStart()
        self.addCleanup(site.doStop)
        from twisted.logger import formatEvent
        return [(e.get("log_level").name, formatEvent(e)) for e in events
                if e.get("log_namespace", "").startswith("grott")]

    def test_loopbackIsQuiet(self):
        lines = self.started("tcp:9279:interface=127.0.0.1")
        self.assertEqual([level for level, _ in lines], ["info"])

    def test_elsewhereWarns(self):
        lines = self.started("tcp:9279:interface=0.0.0.0", token=TOKEN)
        self.assertEqual([level for level, _ in lines], ["info", "warn"])
        self.assertIn("not bound to a loopback interface", lines[1][1])
        self.assertNotIn(TOKEN, " ".join(text for _, text in lines))
        lines = self.started("tcp:9279")
        self.assertIn("set metrics.token", lines[1][1])


class ConfigTests(TestCase):
    def test_defaultsAndNone(self):
        config = config_from_string("")
        self.assertEqual(config.metrics.listen, "tcp:9279:interface=127.0.0.1")
        self.assertEqual(config.metrics.token, "")
        self.assertEqual(config_from_string("metrics:\n  listen: none\n").metrics.listen,
                         "none")

    def test_badValues(self):
        with self.assertRaises(ConfigError) as e:
            config_from_string("metrics:\n  listen: 'nonsense:1'\n", "c.yaml")
        self.assertTrue(str(e.exception).startswith("c.yaml: metrics.listen: "))
        with self.assertRaises(ConfigError) as e:
            config_from_string("metrics:\n  token: 'a b'\n", "c.yaml")
        self.assertTrue(str(e.exception).startswith("c.yaml: metrics.token: must not"))

    def test_tokenIsASecret(self):
        config = config_from_string(f"metrics:\n  token: {TOKEN}\n")
        self.assertNotIn(TOKEN, repr(config))
        # What the log masking filter is given.
        self.assertIn(TOKEN, secrets_in(config))
