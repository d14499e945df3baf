"""
The influxdb output: line protocol, then a real InfluxDB 1.x (started by
the tests, queried back through its HTTP API), then the 2.x request
against a test double that checks it byte for byte.
"""

import dataclasses
import datetime
import json
import os
import time
import types

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web import resource, server

from grott.config import ConfigError, InfluxdbConfig, config_from_dict
from grott.outputs.influxdb import InfluxdbOutput, line, record_seconds
from grott.spool import SpooledOutput, Store
from tests import influxd
from tests.mosquitto import make_tls
from tests.pluginhelpers import DATA_VECTORS, packet_and_record
from tests.spoolhelpers import spool_settings, until

UTC = __import__("zoneinfo").ZoneInfo("UTC")


def _with(record, **changes):
    values = changes.pop("values", None)
    if values is not None:
        changes["values"] = types.MappingProxyType(values)
    return dataclasses.replace(record, **changes)


class LineProtocolTests(unittest.SynchronousTestCase):

    def test_a_data_record(self):
        _, record = packet_and_record()
        text = line(_with(record, values={"pvpowerout": 195.7, "pvstatus": 1, "fw": "GH1.0"}),
                    1595693439.9)
        self.assertEqual(text, "grott_data,datalogger=JPC281833B,family=classic,"
                               "inverter=QMB2823261 pvpowerout=195.7,pvstatus=1.0 1595693439")

    def test_escaping(self):
        _, record = packet_and_record()
        odd = _with(record, datalogger_serial="A B,C=D", inverter_serial=None, family=None,
                    values={"my value,x=1": 2, "ok": float("nan"), "on": True})
        self.assertEqual(line(odd, 7, prefix="my data,"),
                         r"my\ data\,data,datalogger=A\ B\,C\=D my\ value\,x\=1=2.0,on=1.0 7")

    def test_no_numeric_value_no_point(self):
        _, record = packet_and_record()
        self.assertIsNone(line(_with(record, values={"firmware": "GH1.0"}), 1))

    def test_kinds(self):
        _, record = packet_and_record()
        self.assertTrue(line(_with(record, record_type=0x03), 1).startswith("grott_announce,"))
        self.assertTrue(line(_with(record, record_type=0x50, buffered=True), 1)
                        .startswith("grott_data,"))

    def test_the_record_time_in_its_zone_or_the_arrival_time(self):
        _, record = packet_and_record()
        amsterdam = __import__("zoneinfo").ZoneInfo("Europe/Amsterdam")
        self.assertEqual(record_seconds(record, UTC, 5.0), 1595693439)
        self.assertEqual(record_seconds(record, amsterdam, 5.0), 1595693439 - 7200)
        self.assertEqual(record_seconds(_with(record, timestamp=None), UTC, 5.0), 5.0)
        self.assertEqual(record_seconds(_with(record, timestamp="garbage"), UTC, 5.0), 5.0)

    def test_encode_uses_the_arrival_time_when_the_record_has_none(self):
        clock = Clock()
        clock.advance(1700000000)
        out = InfluxdbOutput(InfluxdbConfig(timezone="UTC"), reactor, clock)
        self.addCleanup(out.stopService)
        _, record = packet_and_record("grott-p5-5104-min-data")
        self.assertIsNone(record.timestamp)
        self.assertTrue(out.encode(record).endswith(b" 1700000000"))

    def test_version_1_and_2_requests(self):
        one = InfluxdbOutput(InfluxdbConfig(url="https://db.example:8086/influx/", username="u",
                                            password="p w", retention_policy="rp"), reactor)
        self.addCleanup(one.stopService)
        self.assertEqual(one.url, b"https://db.example:8086/influx/write?db=grott&rp=rp&precision=s")
        self.assertEqual(one.headers["Authorization"], "Basic dTpwIHc=")
        two = InfluxdbOutput(InfluxdbConfig(version=2, org="my org", bucket="b", token="t"),
                             reactor)
        self.addCleanup(two.stopService)
        self.assertEqual(two.url,
                         b"http://localhost:8086/api/v2/write?org=my+org&bucket=b&precision=s")
        self.assertEqual(two.headers["Authorization"], "Token t")

    def test_config_errors(self):
        for section, message in (
                ({"version": 2, "org": "o", "bucket": "b"},
                 "t.yaml: outputs.influxdb.token: must be set with version: 2"),
                ({"database": ""}, "t.yaml: outputs.influxdb.database: must be set with version: 1"),
                ({"url": "localhost:8086"}, "t.yaml: outputs.influxdb.url: expected an http://"),
                ({"version": 3}, "t.yaml: outputs.influxdb.version: must be one of 1, 2")):
            with self.assertRaises(ConfigError) as caught:
                config_from_dict({"outputs": {"influxdb": section}}, "t.yaml")
            self.assertTrue(str(caught.exception).startswith(message), str(caught.exception))


def _spooled(test, settings, directory=None, clock=None):
    sink = InfluxdbOutput(settings, reactor, clock)
    out = SpooledOutput(sink, spool_settings(directory or test.mktemp()), reactor)
    return out


async def _run(test, out, records):
    await out.startService()
    test.addCleanup(out.stopService)
    for packet, record in records:
        await out.data(packet, record, None)
    return out


class RealInfluxdbTests(unittest.TestCase):
    """
    Against Debian's influxd 1.x, as Grafana would read it back.
    """

    skip = influxd.SKIP
    timeout = 120

    async def server(self, **kw):
        db = influxd.Influxd(self.mktemp(), **kw)
        await db.start()
        self.addCleanup(db.stop)
        return db

    def settings(self, db, **kw):
        kw.setdefault("flush_interval", 0)
        return InfluxdbConfig(url=db.url, database="grott", timezone="UTC", **kw)

    async def test_points_land_at_their_own_time_with_tags_and_fields(self):
        db = await self.server()
        await db.query("CREATE DATABASE grott")
        clock = Clock()
        clock.advance(1700000000)
        records = [packet_and_record(v) for v in DATA_VECTORS]
        _, first = records[0]
        buffered = _with(first, record_type=0x50, buffered=True, timestamp="2020-07-25T15:05:00",
                         values=dict(first.values, pvpowerout=100.5))
        records.append((records[0][0], buffered))
        out = await _run(self, _spooled(self, self.settings(db), clock=clock), records)
        await until(lambda: out.spool_stats()["delivered"] == 5, "five points confirmed")
        points = await db.points("grott", "grott_data")
        by_inverter = {}
        for point in points:
            by_inverter.setdefault(point["inverter"], []).append(point)
        classic = by_inverter["QMB2823261"]
        # The buffered record landed at its own (earlier) time.
        self.assertEqual([(p["time"], p["pvpowerout"]) for p in classic],
                         [(1595689500, 100.5), (1595693439, 195.7)])
        self.assertEqual((classic[1]["datalogger"], classic[1]["family"]),
                         ("JPC281833B", "classic"))
        self.assertEqual(classic[1]["pvenergytotal"], 3530.4)
        self.assertEqual(classic[1]["pvstatus"], 1)
        # Records without a time of their own: the arrival time.
        self.assertEqual(by_inverter["DDF0A09112"][0]["time"], 1700000000)
        self.assertEqual(by_inverter["XTD6A120F5"][0]["time"], 1598777754)
        self.assertEqual(len(points), 5)
        stats = out.spool_stats()
        self.assertEqual((stats["queued"], stats["retried"], stats["rejected"]), (0, 0, 0))

    async def test_influxdb_away_then_grott_restarted_then_back(self):
        db = influxd.Influxd(self.mktemp())
        self.addCleanup(db.stop)
        spool = self.mktemp()
        records = [packet_and_record(v) for v in DATA_VECTORS]
        first = await _run(self, _spooled(self, self.settings(db), spool), records[:2])
        await until(lambda: first.spool_stats()["retried"] >= 1, "a failed attempt")
        self.assertIn("Connection refused", first.spool_stats()["last_error"])
        self.assertEqual(first.spool_stats()["queued"], 2)
        await first.stopService()
        await db.start()
        await db.query("CREATE DATABASE grott")
        second = await _run(self, _spooled(self, self.settings(db), spool), records[2:])
        await until(lambda: second.spool_stats()["delivered"] == 4, "the backlog and the rest")
        points = await db.points("grott", "grott_data")
        self.assertEqual(sorted(p["inverter"] for p in points),
                         sorted(r.inverter_serial for _, r in records))

    async def test_wrong_password_keeps_the_records_until_fixed(self):
        db = await self.server(auth=True)
        await db.query("CREATE USER admin WITH PASSWORD 'right' WITH ALL PRIVILEGES")
        db.credentials = ("admin", "right")
        await db.query("CREATE DATABASE grott")
        spool = self.mktemp()
        records = [packet_and_record(v) for v in DATA_VECTORS[:2]]
        wrong = await _run(self, _spooled(
            self, self.settings(db, username="admin", password="wrong"), spool), records)
        await until(lambda: wrong.spool_stats()["retried"] >= 1, "a refused attempt")
        self.assertEqual(wrong.spool_stats()["last_error"], "InfluxError: HTTP 401: authorization failed")
        self.assertEqual(wrong.spool_stats()["queued"], 2)
        await wrong.stopService()
        right = await _run(self, _spooled(
            self, self.settings(db, username="admin", password="right"), spool), [])
        await until(lambda: right.spool_stats()["delivered"] == 2, "the kept records")
        self.assertEqual(len(await db.points("grott", "grott_data")), 2)

    async def test_bad_data_is_dropped_not_retried(self):
        """
        A field type conflict is InfluxDB's 400: the batch is tried record
        by record; the conflicting record is dropped, the other written.
        """
        db = await self.server()
        await db.query("CREATE DATABASE grott")
        _, classic = packet_and_record("grott-p6-0104-classic")
        _, tlx = packet_and_record("grott-p6-0104-min-xdavidx93-a")
        # pvpowerout as text in the classic record's week (its shard).
        conflict = InfluxdbOutput(self.settings(db), reactor)
        self.addCleanup(conflict.stopService)
        await conflict.write(b'grott_data,inverter=X pvpowerout="text" 1595690000\n')
        # Both records waiting in the spool from before, so they go as one batch.
        spool = self.mktemp()
        out = _spooled(self, self.settings(db, batch_size=10), spool)
        store = Store(out.spool.path, 10**9, None)
        store.open()
        for record in (classic, tlx):
            store.put(out.sink.encode(record), time.time())
        store.close()
        await out.startService()
        self.addCleanup(out.stopService)
        await until(lambda: out.spool_stats()["queued"] == 0, "the batch to be settled")
        stats = out.spool_stats()
        self.assertEqual((stats["delivered"], stats["rejected"], stats["retried"]), (1, 1, 0))
        self.assertIn("HTTP 400: partial write: field type conflict", stats["last_error"])
        points = await db.points("grott", "grott_data")
        # (SELECT * reads pvpowerout as a float: the text point stays out.)
        self.assertEqual([(p["time"], p["inverter"], p["pvpowerout"]) for p in points],
                         [(1598777754, "XTD6A120F5", 4360.9)])

    async def test_https_checks_the_certificate(self):
        tls = make_tls(os.path.join(self.mktemp(), "tls"))
        db = await self.server(tls=tls)
        await db.query("CREATE DATABASE grott")
        records = [packet_and_record()]
        untrusted = await _run(self, _spooled(self, self.settings(db)), records)
        await until(lambda: untrusted.spool_stats()["retried"] >= 1, "a refused handshake")
        self.assertIn("certificate verify failed", untrusted.spool_stats()["last_error"])
        trusted = await _run(self, _spooled(self, self.settings(db, ca_certs=tls["ca"])), records)
        await until(lambda: trusted.spool_stats()["delivered"] == 1, "the point over TLS")
        self.assertEqual(len(await db.points("grott", "grott_data")), 1)
        self.assertEqual(untrusted.spool_stats()["delivered"], 0)


class _FakeInfluxdb2(resource.Resource):
    """
    Records every request; answers with the next code in C{codes} (204
    once they run out).
    """

    isLeaf = True

    def __init__(self, codes=()):
        super().__init__()
        self.codes = list(codes)
        self.requests = []

    def render_POST(self, request):
        self.requests.append({
            "path": request.path,
            "args": request.args,
            "authorization": request.getHeader(b"authorization"),
            "content-type": request.getHeader(b"content-type"),
            "body": request.content.read(),
        })
        code = self.codes.pop(0) if self.codes else 204
        request.setResponseCode(code)
        if code == 204:
            return b""
        request.setHeader(b"content-type", b"application/json")
        return b'{"code":"invalid","message":"unable to parse points"}'


class Influxdb2RequestTests(unittest.TestCase):

    async def fake(self, codes=()):
        fake = _FakeInfluxdb2(codes)
        port = reactor.listenTCP(0, server.Site(fake), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        settings = InfluxdbConfig(url=f"http://127.0.0.1:{port.getHost().port}", version=2,
                                  org="home", bucket="solar", token="s3cret", timezone="UTC",
                                  flush_interval=0)
        return fake, settings

    async def test_the_request_exactly(self):
        fake, settings = await self.fake()
        records = [packet_and_record(), packet_and_record("grott-p6-0104-min-xdavidx93-a")]
        sink = InfluxdbOutput(settings, reactor)
        self.addCleanup(sink.stopService)
        body = b"\n".join(sink.encode(r) for _, r in records) + b"\n"
        await sink.deliver([sink.encode(r) for _, r in records])
        self.assertEqual(fake.requests, [{
            "path": b"/api/v2/write",
            "args": {b"org": [b"home"], b"bucket": [b"solar"], b"precision": [b"s"]},
            "authorization": b"Token s3cret",
            "content-type": b"text/plain; charset=utf-8",
            "body": body,
        }])
        lines = body.decode().splitlines()
        self.assertTrue(lines[0].startswith(
            "grott_data,datalogger=JPC281833B,family=classic,inverter=QMB2823261 pvstatus=1.0,"))
        self.assertTrue(lines[0].endswith(" 1595693439"))
        self.assertTrue(lines[1].endswith(" 1598777754"))

    async def test_server_errors_retry_bad_data_is_rejected(self):
        fake, settings = await self.fake(codes=[503, 401, 400])
        out = SpooledOutput(InfluxdbOutput(settings, reactor), spool_settings(self.mktemp()),
                            reactor, clock=Clock())
        await _run(self, out, [packet_and_record()])
        clock = out.clock
        await until(lambda: out.spool_stats()["retried"] == 1, "the 503")
        self.assertEqual(out.spool_stats()["last_error"],
                         "InfluxError: HTTP 503: unable to parse points")
        clock.advance(1)
        await until(lambda: out.spool_stats()["retried"] == 2, "the 401")
        clock.advance(2)
        await until(lambda: out.spool_stats()["rejected"] == 1, "the 400")
        self.assertEqual(out.spool_stats()["queued"], 0)
        self.assertEqual(len(fake.requests), 3)
        self.assertEqual(len({r["body"] for r in fake.requests}), 1)


class SecretsTests(unittest.SynchronousTestCase):

    def test_the_token_and_password_are_secret(self):
        from grott.logs import secrets_in
        config = config_from_dict({"outputs": {"influxdb": {
            "version": 2, "org": "o", "bucket": "b", "token": "tok-123", "password": "pw-456"}}})
        self.assertEqual(set(secrets_in(config)) & {"tok-123", "pw-456"}, {"tok-123", "pw-456"})
        self.assertNotIn("tok-123", repr(config.outputs.influxdb))



def _json_lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(text) for text in f if text.strip()]


class WholePathTests(unittest.TestCase):
    """
    Simulated datalogger -> grott (the whole service, from config text) ->
    fake cloud, and the records in a real InfluxDB.
    """

    skip = influxd.SKIP
    timeout = 120

    async def grott(self, outputs):
        """
        The fake cloud and grott with C{outputs} (YAML lines); grott's
        service tree and its proxy port.
        """
        from twisted.internet.endpoints import TCP4ServerEndpoint

        from grott.config import config_from_string
        from grott.service import makeService
        from grott.testing.fakecloud import FakeCloud

        self.cloud = FakeCloud(reactor)
        cloud_port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            self.cloud)
        self.addCleanup(cloud_port.stopListening)
        config = config_from_string(
            "proxy:\n"
            "  listen: tcp:0:interface=127.0.0.1\n"
            f"  upstream: tcp:127.0.0.1:{cloud_port.getHost().port}\n"
            "command:\n  listen: none\n"
            "metrics:\n  listen: none\n"
            f"plugins:\n  directory: {os.path.abspath(self.mktemp())}\n"
            "outputs:\n" + outputs)
        top = makeService(config, reactor)
        top.privilegedStartService()
        top.startService()
        self.addCleanup(top.stopService)
        port = top.getServiceNamed("proxy").getServiceNamed("listener")._waitingForPort.result
        return top, port.getHost().port

    async def datalogger(self, port, serial, records):
        from twisted.internet.endpoints import TCP4ClientEndpoint

        from grott.testing.simulator import DataloggerFactory, DataloggerSpec

        spec = DataloggerSpec(serial, protocol=6, family="min", interval=0.05,
                              ping_interval=0, records=records, reconnect_delay=None)
        datalogger = DataloggerFactory(spec, reactor)
        datalogger.connect(TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        self.addCleanup(datalogger.disconnect)
        await datalogger.state.when_done()
        return datalogger

    async def test_records_from_a_datalogger_reach_influxdb(self):
        db = influxd.Influxd(self.mktemp())
        await db.start()
        self.addCleanup(db.stop)
        await db.query("CREATE DATABASE solar")
        jsonl = os.path.abspath(self.mktemp())
        top, port = await self.grott(
            f"  influxdb: {{url: '{db.url}', database: solar, flush_interval: 0, "
            "timezone: UTC}\n"
            f"  jsonl: {{path: '{jsonl}'}}\n"
            f"  spool: {{directory: '{os.path.abspath(self.mktemp())}'}}\n")
        await self.datalogger(port, "GROTTINFLX", 3)
        plugins = top.getServiceNamed("plugins")

        def delivered():
            return {s["name"]: s for s in plugins.stats()}["influxdb"]["spool"]["delivered"]
        await until(lambda: delivered() >= 4, "the announce and three data points confirmed")
        announces = await db.points("solar", "grott_announce")
        self.assertEqual([p["datalogger"] for p in announces], ["GROTTINFLX"])
        points = await db.points("solar", "grott_data")
        # The points carry the records' own times (as the jsonl output has
        # them); records within one second are one point.
        records = [r for r in _json_lines(jsonl) if r["record_type"] == 4]
        times = [datetime.datetime.fromisoformat(r["timestamp"]).replace(
            tzinfo=datetime.timezone.utc).timestamp() for r in records]  # noqa: UP017
        self.assertEqual(len(records), 3)
        self.assertEqual([p["time"] for p in points], sorted({int(t) for t in times}))
        self.assertEqual({p["datalogger"] for p in points}, {"GROTTINFLX"})
        second = [r["values"]["pvpowerout"] for r, t in zip(records, times)
                  if int(t) == points[-1]["time"]]
        self.assertIn(points[-1]["pvpowerout"], second)
        self.assertEqual(points[-1]["inverter"], records[-1]["inverter_serial"])

    async def test_influxdb_away_never_holds_up_the_relay(self):
        db = influxd.Influxd(self.mktemp())
        self.addCleanup(db.stop)
        top, port = await self.grott(
            f"  influxdb: {{url: '{db.url}', database: solar, flush_interval: 0}}\n"
            f"  spool: {{directory: '{os.path.abspath(self.mktemp())}', retry_max: 1}}\n")
        datalogger = await self.datalogger(port, "GROTTAWAY1", 5)
        # The cloud had every record while InfluxDB was away.
        self.assertEqual(datalogger.state.stats.acked.get("data"), 5)
        self.assertEqual(self.cloud.count("GROTTAWAY1", 0x04), 5)
        plugins = top.getServiceNamed("plugins")

        def spool():
            return {s["name"]: s for s in plugins.stats()}["influxdb"]["spool"]
        await until(lambda: spool()["queued"] == 6 and spool()["retried"] >= 1,
                    "the announce and five records spooled, delivery failing")
        self.assertIn("Connection refused", spool()["last_error"])
        await db.start()
        await db.query("CREATE DATABASE solar")
        await until(lambda: spool()["delivered"] == 6, "the spooled records delivered")
        self.assertEqual(spool()["queued"], 0)
        self.assertEqual(len(await db.points("solar", "grott_announce")), 1)
        self.assertGreaterEqual(len(await db.points("solar", "grott_data")), 1)
