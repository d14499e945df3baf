"""
The pvoutput output: live statuses per inverter to PVOutput.org, through
the spool (L{grott.spool}), so statuses missed while PVOutput or the
internet was away are sent later as backdated statuses.

What PVOutput's API asks for, and how grott keeps to it:

  - one status per system per status interval (the system's setting, 5
    minutes by default): a record becomes a status only when it is the
    first of its inverter in an interval, at the interval's start time
    (C{d} yyyymmdd, C{t} hh:mm, the datalogger's local time);
  - C{v1} energy generated today (Wh, from C{pvenergytoday}), C{v2} power
    (W, C{pvpowerout}), C{v5} temperature (°C, C{pvtemperature}), C{v6}
    voltage (V, C{pvgridvoltage});
  - authentication by the C{X-Pvoutput-Apikey} and C{X-Pvoutput-SystemId}
    headers (the key is a secret setting: never logged, masked everywhere);
  - at most 60 requests an hour per system (300 in donation mode): a
    sliding window of the requests sent holds the next one back, and a
    "limit reached" answer (HTTP 403, or C{X-Rate-Limit-Remaining: 0})
    holds every request for that system until C{X-Rate-Limit-Reset};
  - backdated statuses only within 14 days (90 in donation mode): older
    ones are not sent (counted as rejected); a backlog goes out with
    C{addbatchstatus.jsp}, 30 statuses a request (100 in donation mode),
    and a single status with C{addstatus.jsp}.

A 400 answer means PVOutput refused the status itself (the spool then tries
statuses one by one and drops only the refused ones); anything else (401
wrong key, 403 rate limit, 5xx, no connection) keeps them for a retry.
"""

import collections
import datetime
import json
import math
import zoneinfo
from urllib.parse import urlencode

from twisted.internet import defer
from twisted.internet.task import deferLater
from zope.interface import implementer

from grott.interfaces import IConfigurablePlugin, IGrottPluginService, ISpoolSink
from grott.logs import Logger
from grott.logthrottle import LogThrottle
from grott.outputs.http import HttpClient
from grott.spool import Rejected

__all__ = ["PvoutputError", "PvoutputFactory", "PvoutputOutput", "RateLimit", "factory"]

#: PVOutput parameter, record value, factor to PVOutput's unit, decimals.
_VALUES = (("v1", "pvenergytoday", 1000, 0), ("v2", "pvpowerout", 1, 0),
           ("v5", "pvtemperature", 1, 1), ("v6", "pvgridvoltage", 1, 1))

#: Slots remembered per inverter (two weeks of 5-minute slots).
_SLOTS_KEPT = 4096


class PvoutputError(Exception):
    """
    PVOutput did not take a request; the statuses are kept and retried.
    """


class RateLimit:
    """
    Requests per hour for one system: a sliding window of the times of the
    requests sent, and a time before which nothing is sent at all (when
    PVOutput said the limit was reached).
    """

    def __init__(self, clock, per_hour):
        self.clock = clock
        self.per_hour = per_hour
        self.sent = collections.deque()
        self.blocked_until = 0.0

    def delay(self):
        """
        Seconds until a request may go.
        """
        now = self.clock.seconds()
        while self.sent and self.sent[0] <= now - 3600:
            self.sent.popleft()
        wait = max(0.0, self.blocked_until - now)
        if len(self.sent) >= self.per_hour:
            wait = max(wait, self.sent[0] + 3600 - now)
        return wait

    async def acquire(self):
        while True:
            wait = self.delay()
            if wait <= 0:
                break
            await deferLater(self.clock, wait, lambda: None)
        self.sent.append(self.clock.seconds())

    def block(self, until):
        self.blocked_until = max(self.blocked_until, until)


def _number(value, factor, decimals):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    value = round(value * factor, decimals)
    return int(value) if decimals == 0 or value.is_integer() else value


@implementer(ISpoolSink, IGrottPluginService)
class PvoutputOutput:
    """
    Sends statuses to PVOutput per C{settings} (a L{grott.config.PvoutputConfig}).
    """

    name = "pvoutput"
    flush_interval = 0
    log = Logger()

    def __init__(self, settings, reactor, clock=None):
        self.settings = settings
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        donation = settings.donation
        self.per_hour = 300 if donation else 60
        self.batch_size = 100 if donation else 30
        self.window_days = 90 if donation else 14
        self.interval = settings.status_interval
        self.zone = None if settings.timezone == "local" else zoneinfo.ZoneInfo(settings.timezone)
        base = settings.url if settings.url.endswith("/") else settings.url + "/"
        self.status_url = (base + "addstatus.jsp").encode("ascii")
        self.batch_url = (base + "addbatchstatus.jsp").encode("ascii")
        self.http = HttpClient(reactor, settings.timeout)
        self.limits = {}
        self._slots = {}
        self._stale = 0
        self._throttle = LogThrottle(self.clock, self._summary, burst=1, interval=300.0)

    def _summary(self, key, events, seconds):
        count, self._stale = self._stale, 0
        self.log.warn("PVOutput: {count} more status(es) older than the {days}-day window "
                      "were not sent in the last {seconds:.0f} s", count=count,
                      days=self.window_days, seconds=seconds)

    # -- records to statuses, when they arrive

    def _now(self):
        now = datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.timezone.utc)  # noqa: UP017
        return now.astimezone(self.zone) if self.zone is not None else now.astimezone()

    def _record_time(self, record):
        if record.timestamp:
            try:
                when = datetime.datetime.fromisoformat(record.timestamp)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                return when.replace(tzinfo=None) if when.tzinfo is None else \
                    when.astimezone(self.zone).replace(tzinfo=None)
        return self._now().replace(tzinfo=None)

    def system_for(self, record):
        systems = self.settings.systems
        for serial in (record.inverter_serial, record.datalogger_serial):
            if serial and serial in systems:
                return serial, systems[serial]
        return None, None

    def encode(self, record):
        if record.record_type not in (0x04, 0x50):
            return None
        serial, system = self.system_for(record)
        if system is None:
            return None
        when = self._record_time(record)
        minute = (when.hour * 60 + when.minute) // self.interval * self.interval
        slot = (when.strftime("%Y%m%d"), f"{minute // 60:02d}:{minute % 60:02d}")
        status = {"sid": system, "d": slot[0], "t": slot[1]}
        for parameter, name, factor, decimals in _VALUES:
            number = _number(record.values.get(name), factor, decimals)
            if number is not None:
                status[parameter] = number
        if "v1" not in status and "v2" not in status:
            return None  # PVOutput needs energy or power
        seen = self._slots.setdefault(serial, collections.OrderedDict())
        if slot in seen:
            return None  # this interval has its status already
        seen[slot] = True
        if len(seen) > _SLOTS_KEPT:
            seen.popitem(last=False)
        return json.dumps(status, separators=(",", ":")).encode("ascii")

    # -- delivery

    def deliver(self, items):
        return defer.Deferred.fromCoroutine(self._deliver([json.loads(i) for i in items]))

    async def _deliver(self, statuses):
        oldest = (self._now().date() - datetime.timedelta(days=self.window_days - 1))
        fresh = [s for s in statuses
                 if datetime.datetime.strptime(s["d"], "%Y%m%d").date() >= oldest]
        refused = len(statuses) - len(fresh)
        if refused:
            if self._throttle.admit("stale"):
                self.log.warn("PVOutput: {count} status(es) older than the {days}-day window "
                              "were not sent; more are summarised every 5 minutes",
                              count=refused, days=self.window_days)
            else:
                self._stale += refused
        # Consecutive statuses of one system go together, in order.
        runs = []
        for status in fresh:
            if runs and runs[-1][0] == status["sid"] and len(runs[-1][1]) < self.batch_size:
                runs[-1][1].append(status)
            else:
                runs.append((status["sid"], [status]))
        for system, run in runs:
            refused += await self._send(system, run)
        return refused

    async def _send(self, system, statuses):
        limit = self.limits.get(system)
        if limit is None:
            limit = self.limits[system] = RateLimit(self.clock, self.per_hour)
        await limit.acquire()
        headers = {"X-Pvoutput-Apikey": self.settings.api_key,
                   "X-Pvoutput-SystemId": str(system),
                   "X-Rate-Limit": "1",
                   "Content-Type": "application/x-www-form-urlencoded"}
        if len(statuses) == 1:
            status = statuses[0]
            fields = {k: status[k] for k in ("d", "t", "v1", "v2", "v5", "v6") if k in status}
            url = self.status_url
        else:
            fields = {"data": ";".join(_batch_entry(s) for s in statuses)}
            url = self.batch_url
        response = await self.http.post(url, headers, urlencode(fields).encode("ascii"))
        self._note_limits(limit, response)
        text = response.body.decode("utf-8", "replace").strip()[:300]
        if response.code == 200:
            if len(statuses) == 1:
                return 0
            # "d,t,1;d,t,0;...": 0 is a status PVOutput did not add.
            return sum(1 for entry in text.split(";") if entry.endswith(",0"))
        if response.code == 400:
            raise Rejected(f"HTTP 400: {text}")
        if response.code == 403 and "exceeded" in text.lower():
            limit.block(self._reset_time(response))
        raise PvoutputError(f"HTTP {response.code}: {text}" if text else f"HTTP {response.code}")

    def _reset_time(self, response):
        reset = response.header(b"X-Rate-Limit-Reset")
        try:
            return float(reset)
        except (TypeError, ValueError):
            return self.clock.seconds() + 3600

    def _note_limits(self, limit, response):
        remaining = response.header(b"X-Rate-Limit-Remaining")
        if remaining is not None and remaining.strip() == b"0":
            limit.block(self._reset_time(response))

    # -- service hooks

    def startService(self):
        pass

    def stopService(self):
        self._throttle.stop()
        return self.http.close()


def _batch_entry(status):
    """
    One status of addbatchstatus's C{data}: d,t,v1,v2,v3,v4,v5,v6 (empty
    where grott has no value).
    """
    return ",".join(str(status.get(k, "")) for k in ("d", "t", "v1", "v2", "v3", "v4", "v5",
                                                      "v6")).rstrip(",")


@implementer(IConfigurablePlugin)
class PvoutputFactory:
    """
    Builds L{PvoutputOutput} from C{outputs.pvoutput}.
    """

    name = "pvoutput"

    def makePlugin(self, settings, reactor):
        return PvoutputOutput(settings, reactor)


factory = PvoutputFactory()
