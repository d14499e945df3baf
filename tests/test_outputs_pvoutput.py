"""
The pvoutput output: records to statuses, then the whole path through the
spool to a local fake PVOutput (tests/fakepvoutput.py) that enforces the
API's rules: headers, parameters, rate limit, backdating window.
"""

import dataclasses
import datetime
import json
import types

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.trial import unittest

from grott import logs
from grott.config import ConfigError, PvoutputConfig, config_from_dict
from grott.outputs.pvoutput import PvoutputOutput
from grott.spool import SpooledOutput
from tests import fakepvoutput
from tests.pluginhelpers import packet_and_record
from tests.spoolhelpers import spool_settings, until

KEY = "a1b2c3d4e5f6a7b8c9d0a1b2c3d4e5f6a7b8c9d0"
SYSTEM = 12345
#: The classic vector's inverter and datalogger.
INVERTER, DATALOGGER = "QMB2823261", "JPC281833B"


def _clock(iso="2020-07-25T18:00:00"):
    clock = Clock()
    clock.advance(datetime.datetime.fromisoformat(iso).replace(
        tzinfo=datetime.timezone.utc).timestamp())  # noqa: UP017
    return clock


def _record(timestamp="2020-07-25T16:12:39", buffered=False, **values):
    _, record = packet_and_record()
    return dataclasses.replace(
        record, timestamp=timestamp, buffered=buffered,
        record_type=0x50 if buffered else 0x04,
        values=types.MappingProxyType(dict(record.values, **values)))


def _settings(url="http://127.0.0.1:1/service/r2/", **kw):
    kw.setdefault("systems", {INVERTER: SYSTEM})
    return PvoutputConfig(api_key=KEY, url=url, timezone="UTC", **kw)


def _backlog(start, count, step_minutes=5):
    first = datetime.datetime.fromisoformat(start)
    return [_record((first + datetime.timedelta(minutes=step_minutes * n)).isoformat(),
                    buffered=True, pvpowerout=100.0 + n) for n in range(count)]


class StatusTests(unittest.SynchronousTestCase):

    def sink(self, clock=None, **kw):
        sink = PvoutputOutput(_settings(**kw), reactor, clock or _clock())
        self.addCleanup(sink.stopService)
        return sink

    def test_a_record_becomes_a_status_at_its_interval(self):
        status = json.loads(self.sink().encode(_record()))
        self.assertEqual(status, {"sid": SYSTEM, "d": "20200725", "t": "16:10", "v1": 2600,
                                  "v2": 196, "v5": 26, "v6": 236.3})

    def test_one_status_per_interval_per_inverter(self):
        sink = self.sink()
        self.assertIsNotNone(sink.encode(_record("2020-07-25T16:10:00")))
        self.assertIsNone(sink.encode(_record("2020-07-25T16:14:59")))
        self.assertIsNotNone(sink.encode(_record("2020-07-25T16:15:00")))
        # A buffered record from earlier fills its own slot.
        self.assertIsNotNone(sink.encode(_record("2020-07-25T09:03:00", buffered=True)))

    def test_the_configured_interval(self):
        status = json.loads(self.sink(status_interval=15).encode(_record()))
        self.assertEqual(status["t"], "16:00")

    def test_what_is_not_sent(self):
        sink = self.sink()
        _, record = packet_and_record()
        self.assertIsNone(sink.encode(dataclasses.replace(record, record_type=0x03)))
        self.assertIsNone(sink.encode(dataclasses.replace(record, inverter_serial="OTHER",
                                                          datalogger_serial="OTHER2")))
        self.assertIsNone(sink.encode(dataclasses.replace(
            record, values=types.MappingProxyType({"pvtemperature": 20.0}))))

    def test_datalogger_serial_and_arrival_time(self):
        sink = self.sink(systems={DATALOGGER: 7}, clock=_clock("2020-07-25T18:03:10"))
        status = json.loads(sink.encode(_record(timestamp=None)))
        self.assertEqual((status["sid"], status["d"], status["t"]), (7, "20200725", "18:00"))

    def test_config_errors(self):
        for section, message in (
                ({"systems": {INVERTER: SYSTEM}}, "t.yaml: outputs.pvoutput.api_key: must be set"),
                ({"api_key": "k"}, "t.yaml: outputs.pvoutput.systems: map at least one"),
                ({"api_key": "k", "systems": {INVERTER: "abc"}},
                 "t.yaml: outputs.pvoutput.systems: QMB2823261: expected a PVOutput system id"),
                ({"api_key": "k", "systems": {INVERTER: 1}, "status_interval": 7},
                 "t.yaml: outputs.pvoutput.status_interval: must be one of")):
            with self.assertRaises(ConfigError) as caught:
                config_from_dict({"outputs": {"pvoutput": section}}, "t.yaml")
            self.assertTrue(str(caught.exception).startswith(message), str(caught.exception))


class FakePvoutputTests(unittest.TestCase):

    timeout = 60

    def setUp(self):
        self.events = EventLoggingObserver.createWithCleanup(self, logs.publisher)

    def fake(self, clock, donation=False, key=KEY):
        fake = fakepvoutput.FakePvoutput(clock, key, [SYSTEM], donation=donation)
        port = fakepvoutput.listen(reactor, fake)
        self.addCleanup(port.stopListening)
        return fake, f"http://127.0.0.1:{port.getHost().port}/service/r2/"

    async def output(self, clock, url, records=(), **kw):
        sink = PvoutputOutput(_settings(url, **kw), reactor, clock)
        # Real time for the spool's backoff; the sink's clock is the API's.
        out = SpooledOutput(sink, spool_settings(self.mktemp(), max_age="120d"), reactor,
                            clock=Clock())
        await out.startService()
        self.addCleanup(out.stopService)
        for record in records:
            await out.data(None, record, None)
        return out

    def tearDown(self):
        for event in self.events:
            self.assertNotIn(KEY, repr(event), "the API key reached a log event")

    async def test_a_live_status(self):
        clock = _clock()
        fake, url = self.fake(clock)
        out = await self.output(clock, url, [_record()])
        await until(lambda: out.spool_stats()["delivered"] == 1, "the status")
        self.assertEqual(fake.requests, [("addstatus.jsp", str(SYSTEM), {
            "d": "20200725", "t": "16:10", "v1": "2600", "v2": "196", "v5": "26",
            "v6": "236.3"}, 200)])
        self.assertEqual(fake.statuses[SYSTEM][("20200725", "16:10")]["v2"], "196")

    async def backlog(self, clock, fake, url, records, **kw):
        """
        Spool C{records} while PVOutput is down, then let it come back.
        """
        fake.down = True
        out = await self.output(clock, url, records, **kw)
        await until(lambda: out.spool_stats()["retried"] == 1, "a failed attempt")
        fake.down = False
        out.clock.advance(1)
        await until(lambda: out.spool_stats()["queued"] == 0, "the backlog")
        self.assertEqual(out.spool_stats()["delivered"], len(records))
        return [(path, len(fields["data"].split(";")) if "data" in fields else 1, code)
                for path, _, fields, code in fake.requests]

    async def test_a_backlog_goes_as_batches_in_order(self):
        clock = _clock("2020-07-26T12:00:00")
        fake, url = self.fake(clock)
        requests = await self.backlog(clock, fake, url, _backlog("2020-07-25T06:00:00", 40))
        # The first record alone (refused: down), then 30 a request.
        self.assertEqual(requests, [("addstatus.jsp", 1, 503), ("addbatchstatus.jsp", 30, 200),
                                    ("addbatchstatus.jsp", 10, 200)])
        times = sorted(fake.statuses[SYSTEM])
        self.assertEqual(len(times), 40)
        self.assertEqual((times[0], times[-1]), (("20200725", "06:00"), ("20200725", "09:15")))
        self.assertEqual(fake.statuses[SYSTEM][("20200725", "09:15")]["v2"], "139")

    async def test_statuses_outside_the_window_are_not_sent(self):
        clock = _clock("2020-08-20T12:00:00")
        fake, url = self.fake(clock)
        old = _backlog("2020-08-01T10:00:00", 2)  # 19 days old
        recent = _backlog("2020-08-19T10:00:00", 2)
        out = await self.output(clock, url, old + recent)
        await until(lambda: out.spool_stats()["queued"] == 0, "the spool to empty")
        stats = out.spool_stats()
        self.assertEqual((stats["delivered"], stats["rejected"]), (2, 2))
        self.assertEqual(sorted(fake.statuses[SYSTEM]),
                         [("20200819", "10:00"), ("20200819", "10:05")])
        self.assertTrue(all(code == 200 for *_, code in fake.requests))

    async def test_donation_mode_batches_and_window(self):
        clock = _clock("2020-09-20T12:00:00")
        fake, url = self.fake(clock, donation=True)
        # 57 days back: inside donation mode's 90.
        requests = await self.backlog(clock, fake, url, _backlog("2020-07-25T00:00:00", 130),
                                      donation=True)
        self.assertEqual(requests, [("addstatus.jsp", 1, 503), ("addbatchstatus.jsp", 100, 200),
                                    ("addbatchstatus.jsp", 30, 200)])
        self.assertEqual(len(fake.statuses[SYSTEM]), 130)

    async def test_never_more_than_60_requests_an_hour(self):
        clock = _clock("2020-07-25T23:59:00")
        fake, url = self.fake(clock)
        sink = PvoutputOutput(_settings(url), reactor, clock)
        self.addCleanup(sink.stopService)
        statuses = [sink.encode(r) for r in _backlog("2020-07-25T00:00:00", 61)]
        for item in statuses[:60]:
            await sink.deliver([item])
        last = sink.deliver([statuses[60]])
        self.assertEqual(len(fake.requests), 60)
        self.assertFalse(last.called)
        clock.advance(3599)
        self.assertFalse(last.called)
        clock.advance(1)
        await last
        self.assertEqual(len(fake.requests), 61)
        self.assertEqual({code for *_, code in fake.requests}, {200})

    async def test_a_limit_used_up_elsewhere_waits_for_the_reset(self):
        clock = _clock()
        fake, url = self.fake(clock)
        fake.sent[SYSTEM] = [clock.seconds() - 1800] * 60  # another uploader's hour
        out = await self.output(clock, url, [_record()])
        await until(lambda: out.spool_stats()["retried"] == 1, "the refusal")
        self.assertIn("HTTP 403: Forbidden 403: Exceeded 60 requests per hour",
                      out.spool_stats()["last_error"])
        out.clock.advance(1)  # the spool's backoff: the next attempt waits on the limit
        await until(lambda: out.clock.getDelayedCalls() == [] and len(clock.getDelayedCalls()) == 1,
                    "the wait for the reset")
        self.assertEqual(len(fake.requests), 1)
        clock.advance(1800)
        await until(lambda: out.spool_stats()["delivered"] == 1, "the status after the reset")
        self.assertEqual([code for *_, code in fake.requests], [403, 200])

    async def test_a_status_pvoutput_refuses_is_dropped(self):
        """
        A datalogger clock a day ahead: PVOutput refuses a date in the
        future with a 400, which is not retried.
        """
        clock = _clock()
        fake, url = self.fake(clock)
        out = await self.output(clock, url, [_record("2020-07-26T16:12:00"), _record()])
        await until(lambda: out.spool_stats()["queued"] == 0, "the spool to empty")
        stats = out.spool_stats()
        self.assertEqual((stats["delivered"], stats["rejected"], stats["retried"]), (1, 1, 0))
        self.assertIn("Date is in the future", stats["last_error"])
        self.assertEqual(list(fake.statuses[SYSTEM]), [("20200725", "16:10")])

    async def test_a_wrong_key_is_retried_and_never_logged(self):
        clock = _clock()
        fake, url = self.fake(clock, key="the-right-key")
        out = await self.output(clock, url, [_record()])
        await until(lambda: out.spool_stats()["retried"] == 1, "the refusal")
        self.assertEqual(out.spool_stats()["last_error"],
                         "PvoutputError: HTTP 401: Unauthorized 401: Invalid API Key")
        self.assertEqual(out.spool_stats()["queued"], 1)
        self.assertEqual(fake.statuses, {})
        self.assertTrue(any("delivery failed" in e.get("log_format", "") for e in self.events))

    async def test_pvoutput_down_then_back(self):
        clock = _clock()
        fake, url = self.fake(clock)
        fake.down = True
        out = await self.output(clock, url, [_record(), _record("2020-07-25T16:15:00")])
        await until(lambda: out.spool_stats()["retried"] == 1, "a failed attempt")
        self.assertEqual(out.spool_stats()["last_error"], "PvoutputError: HTTP 503: Service Unavailable")
        fake.down = False
        out.clock.advance(1)
        await until(lambda: out.spool_stats()["delivered"] == 2, "both statuses")
        self.assertEqual(sorted(fake.statuses[SYSTEM]), [("20200725", "16:10"), ("20200725", "16:15")])
