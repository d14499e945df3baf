"""
The influxdb output: records as InfluxDB points, written over HTTP in line
protocol, through the spool (L{grott.spool}) so an InfluxDB that is away
loses nothing.

One point per record: measurement C{PREFIX + kind} (C{grott_data} for data
and buffered data, C{grott_announce} for announces), tags C{inverter},
C{datalogger}, C{family}, every numeric value as a float field (always a
float, so a value that happens to be whole never clashes with the field's
type in InfluxDB), and the record's own time in seconds: a buffered record
replayed after an outage lands at the time it was measured.  A record
without a usable time gets the time it arrived.

InfluxDB 1.x: C{POST /write?db=&rp=&precision=s}, credentials as HTTP Basic
authentication, which InfluxDB 1.x accepts like C{u}/C{p} and documents as
the preferred way: the password stays out of URLs, and so out of access
logs and proxies.  InfluxDB 2.x and 3.x: C{POST
/api/v2/write?org=&bucket=&precision=s} with C{Authorization: Token ...}.

Answers: 2xx is confirmation; 400, 413 and 422 mean the data itself is
refused (L{grott.spool.Rejected}: the spool tries the records one by one
and drops only those refused); anything else (401/403 wrong credentials,
404 no such database, 429, 5xx, no connection, a timeout) keeps the records
for a retry.
"""

import base64
import datetime
import json
import math
import zoneinfo
from urllib.parse import urlencode

from twisted.internet import defer
from zope.interface import implementer

from grott.interfaces import IConfigurablePlugin, IGrottPluginService, ISpoolSink
from grott.outputs.http import HttpClient
from grott.spool import Rejected

__all__ = ["InfluxError", "InfluxdbFactory", "InfluxdbOutput", "factory", "line", "record_kind"]

#: Answers that say "this data is bad": resending the same cannot succeed.
_REFUSED = (400, 413, 422)


class InfluxError(Exception):
    """
    InfluxDB did not confirm a write; the records are kept and retried.
    """


def _escape(text, specials):
    text = str(text).replace("\n", " ").replace("\r", " ")
    for char in specials:
        text = text.replace(char, "\\" + char)
    return text


def _key(text):
    """
    A tag key, tag value or field key: commas, equals signs and spaces
    escaped; a trailing backslash would escape the separator after it.
    """
    return _escape(text, ", =").rstrip("\\")


def _measurement(text):
    return _escape(text, ", ").rstrip("\\")


def record_kind(record):
    if record.record_type == 0x03:
        return "announce"
    if record.record_type in (0x04, 0x50):
        return "data"
    return f"record_{record.record_type:02x}"


def _number(value):
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        value = float(value)
        if math.isfinite(value):
            return value
    return None


def line(record, seconds, prefix="grott_"):
    """
    The record as one line of line protocol (no newline), or None when it
    has no numeric value (InfluxDB needs at least one field).
    """
    fields = []
    for name, value in record.values.items():
        number = _number(value)
        if number is not None:
            fields.append(f"{_key(name)}={number!r}")
    if not fields:
        return None
    tags = []
    for key, value in (("datalogger", record.datalogger_serial), ("family", record.family),
                       ("inverter", record.inverter_serial)):
        value = _key(value) if value not in (None, "") else ""
        if value:
            tags.append(f"{key}={value}")
    head = ",".join([_measurement(prefix + record_kind(record))] + tags)
    return f"{head} {','.join(fields)} {int(seconds)}"


def record_seconds(record, zone, fallback):
    """
    The record's own time as Unix seconds (its clock read in C{zone}, or
    the local zone when None), or C{fallback} when it has none.
    """
    if not record.timestamp:
        return fallback
    try:
        when = datetime.datetime.fromisoformat(record.timestamp)
    except (TypeError, ValueError):
        return fallback
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone) if zone is not None else when.astimezone()
    return when.timestamp()


def _server_error(response):
    """
    InfluxDB's own words from an error answer.
    """
    text = response.body.decode("utf-8", "replace").strip()
    try:
        text = json.loads(text).get("error") or json.loads(text).get("message") or text
    except (ValueError, AttributeError):
        pass
    return f"HTTP {response.code}: {text[:300]}" if text else f"HTTP {response.code}"


@implementer(ISpoolSink, IGrottPluginService)
class InfluxdbOutput:
    """
    Writes records to the InfluxDB in C{settings} (a
    L{grott.config.InfluxdbConfig}).
    """

    name = "influxdb"

    def __init__(self, settings, reactor, clock=None):
        self.settings = settings
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.batch_size = settings.batch_size
        self.flush_interval = settings.flush_interval
        self.zone = None if settings.timezone == "local" else zoneinfo.ZoneInfo(settings.timezone)
        self.url, self.headers = self._endpoint(settings)
        # Built here so that an unreadable ca_certs is reported at start-up.
        self.http = HttpClient(reactor, settings.timeout, settings.ca_certs)

    @staticmethod
    def _endpoint(settings):
        base = settings.url.rstrip("/")
        headers = {"Content-Type": "text/plain; charset=utf-8", "Accept": "application/json"}
        if settings.version == 2:
            query = {"org": settings.org, "bucket": settings.bucket, "precision": "s"}
            headers["Authorization"] = f"Token {settings.token}"
            return f"{base}/api/v2/write?{urlencode(query)}".encode("ascii"), headers
        query = {"db": settings.database}
        if settings.retention_policy:
            query["rp"] = settings.retention_policy
        query["precision"] = "s"
        if settings.username:
            credentials = f"{settings.username}:{settings.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
        return f"{base}/write?{urlencode(query)}".encode("ascii"), headers

    def encode(self, record):
        seconds = record_seconds(record, self.zone, self.clock.seconds())
        text = line(record, seconds, self.settings.measurement_prefix)
        return None if text is None else text.encode("utf-8")

    def deliver(self, items):
        return self.write(b"\n".join(items) + b"\n")

    async def _write(self, body):
        response = await self.http.post(self.url, self.headers, body)
        if 200 <= response.code < 300:
            return
        if response.code in _REFUSED:
            raise Rejected(_server_error(response))
        raise InfluxError(_server_error(response))

    def write(self, body):
        """
        POST line protocol; a Deferred that fires when InfluxDB confirmed.
        """
        return defer.Deferred.fromCoroutine(self._write(body))

    def startService(self):
        pass

    def stopService(self):
        return self.http.close()


@implementer(IConfigurablePlugin)
class InfluxdbFactory:
    """
    Builds L{InfluxdbOutput} from C{outputs.influxdb}.
    """

    name = "influxdb"

    def makePlugin(self, settings, reactor):
        return InfluxdbOutput(settings, reactor)


factory = InfluxdbFactory()
