"""
A local PVOutput for the pvoutput output's tests: a twisted.web server on
a loopback port that enforces the rules of PVOutput's API (R2) that grott
relies on, and records every status it accepted and every request it got.

Rules enforced: POST with the C{X-Pvoutput-Apikey} and
C{X-Pvoutput-SystemId} headers (401 otherwise); C{d} as yyyymmdd and C{t} as
hh:mm, a date neither in the future nor older than the window (14 days,
90 with donation; 400 otherwise); at least one of v1..v4; numbers where
numbers go; addbatchstatus at most 30 statuses (100 with donation); at
most 60 requests an hour per system (300 with donation; 403 "Exceeded"
past it), with the X-Rate-Limit-* headers when asked for.
"""

import collections
import datetime
import re

from twisted.web import resource, server

_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


class _Refused(Exception):

    def __init__(self, code, text):
        super().__init__(text)
        self.code = code
        self.text = text


class FakePvoutput(resource.Resource):
    """
    C{statuses[system][(d, t)]} is the last status accepted for that time
    (a dict of v1..v6); C{requests} has (path, system, fields, code) per
    request.
    """

    isLeaf = True

    def __init__(self, clock, api_key, systems, donation=False):
        super().__init__()
        self.clock = clock
        self.api_key = api_key
        self.systems = set(systems)
        self.donation = donation
        self.per_hour = 300 if donation else 60
        self.batch_limit = 100 if donation else 30
        self.window = 90 if donation else 14
        self.statuses = collections.defaultdict(dict)
        self.requests = []
        self.sent = collections.defaultdict(list)
        self.down = False

    def today(self):
        return datetime.datetime.fromtimestamp(self.clock.seconds(),
                                               datetime.timezone.utc).date()  # noqa: UP017

    def render_GET(self, request):
        request.setResponseCode(405)
        return b"use POST"

    def render_POST(self, request):
        path = request.path.decode()
        fields = {k.decode(): v[0].decode() for k, v in request.args.items()}
        system = (request.getHeader(b"x-pvoutput-systemid") or b"").decode()
        try:
            if self.down:
                raise _Refused(503, "Service Unavailable")
            text = self._handle(request, path, system, fields)
            code = 200
        except _Refused as e:
            code, text = e.code, e.text
        self.requests.append((path.rsplit("/", 1)[-1], system, fields, code))
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/plain")
        return text.encode()

    def _handle(self, request, path, system, fields):
        if request.getHeader(b"x-pvoutput-apikey") != self.api_key.encode():
            raise _Refused(401, "Unauthorized 401: Invalid API Key")
        if not system.isdigit() or int(system) not in self.systems:
            raise _Refused(401, "Unauthorized 401: Invalid System ID")
        self._rate(request, int(system))
        if path.endswith("/addstatus.jsp"):
            status = self._status(fields)
            self.statuses[int(system)][(status["d"], status["t"])] = status
            return "OK 200: Added Status"
        if path.endswith("/addbatchstatus.jsp"):
            entries = [e for e in fields.get("data", "").split(";") if e]
            if not entries:
                raise _Refused(400, "Bad request 400: No statuses added")
            if len(entries) > self.batch_limit:
                raise _Refused(400, f"Bad request 400: Batch size over {self.batch_limit}")
            answers, added = [], []
            for entry in entries:
                parts = entry.split(",")
                names = ["d", "t", "v1", "v2", "v3", "v4", "v5", "v6"]
                status = self._status({n: p for n, p in zip(names, parts) if p != ""})
                added.append(status)
                answers.append(f"{status['d']},{status['t']},1")
            for status in added:
                self.statuses[int(system)][(status["d"], status["t"])] = status
            return ";".join(answers)
        raise _Refused(404, "Not Found")

    def _rate(self, request, system):
        now = self.clock.seconds()
        sent = self.sent[system] = [t for t in self.sent[system] if t > now - 3600]
        remaining = self.per_hour - len(sent)
        if request.getHeader(b"x-rate-limit") == b"1":
            reset = (sent[0] if sent else now) + 3600
            request.setHeader(b"X-Rate-Limit-Remaining", str(max(0, remaining - 1)).encode())
            request.setHeader(b"X-Rate-Limit-Limit", str(self.per_hour).encode())
            request.setHeader(b"X-Rate-Limit-Reset", str(int(reset)).encode())
        if remaining <= 0:
            raise _Refused(403, f"Forbidden 403: Exceeded {self.per_hour} requests per hour")
        sent.append(now)

    def _status(self, fields):
        d, t = fields.get("d", ""), fields.get("t", "")
        if not _DATE.match(d):
            raise _Refused(400, f"Bad request 400: Invalid date [{d}]")
        if not _TIME.match(t):
            raise _Refused(400, f"Bad request 400: Invalid time [{t}]")
        day = datetime.datetime.strptime(d, "%Y%m%d").date()
        if day > self.today():
            raise _Refused(400, f"Bad request 400: Date is in the future [{d}]")
        if (self.today() - day).days > self.window:
            raise _Refused(400, f"Bad request 400: Date is older than {self.window} days [{d}]")
        values = {k: fields[k] for k in ("v1", "v2", "v3", "v4", "v5", "v6") if k in fields}
        if not any(k in values for k in ("v1", "v2", "v3", "v4")):
            raise _Refused(400, "Bad request 400: No status data (v1, v2, v3 or v4)")
        for key, value in values.items():
            if not _NUMBER.match(value):
                raise _Refused(400, f"Bad request 400: Invalid number [{key}={value}]")
        return dict(values, d=d, t=t)


def listen(reactor, fake):
    """
    Serve C{fake} on a free loopback port; the listening port.
    """
    return reactor.listenTCP(0, server.Site(fake), interface="127.0.0.1")
