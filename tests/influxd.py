"""
A real InfluxDB 1.x (Debian's influxd) for the influxdb output tests: a
generated config on free loopback ports, data in a temporary directory,
queried back through its HTTP /query API as a Grafana dashboard would.
"""

import base64
import json
import os
import shutil
from urllib.parse import urlencode

from twisted.internet import reactor
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from tests.mosquitto import free_port
from tests.processes import OutputProcess
from tests.spoolhelpers import until

INFLUXD = shutil.which("influxd") or next(
    (p for p in ("/usr/bin/influxd", "/usr/local/bin/influxd") if os.path.exists(p)), None)

SKIP = None if INFLUXD else "influxd is not installed (apt-get install influxdb)"



class Influxd:
    """
    influxd on 127.0.0.1:C{port}; restartable on the same port with the
    same data.
    """

    def __init__(self, directory, auth=False, tls=None):
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.port = free_port()
        self.scheme = "https" if tls else "http"
        http = [f'  bind-address = "127.0.0.1:{self.port}"',
                f"  auth-enabled = {'true' if auth else 'false'}", "  log-enabled = false"]
        if tls:
            http += ["  https-enabled = true", f'  https-certificate = "{tls["cert"]}"',
                     f'  https-private-key = "{tls["key"]}"']
        lines = [
            "reporting-disabled = true",
            f'bind-address = "127.0.0.1:{free_port()}"',
            "[meta]", f'  dir = "{self.directory}/meta"',
            "[data]", f'  dir = "{self.directory}/data"', f'  wal-dir = "{self.directory}/wal"',
            "  query-log-enabled = false",
            "[http]", *http,
            "[monitor]", "  store-enabled = false",
            "[continuous_queries]", "  enabled = false",
            "[subscriber]", "  enabled = false",
        ]
        self.config = os.path.join(self.directory, "influxdb.conf")
        with open(self.config, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        self.process = None
        self.credentials = None
        self.tls = tls

    @property
    def url(self):
        return f"{self.scheme}://127.0.0.1:{self.port}"

    async def start(self):
        self.process = OutputProcess()
        reactor.spawnProcess(self.process, INFLUXD, [INFLUXD, "-config", self.config],
                             env=os.environ.copy())
        await until(lambda: b'msg="Listening on HTTP' in self.process.output
                    or self.process.ended.called, "influxd to listen")
        if self.process.ended.called:
            raise RuntimeError("influxd exited: " + self.process.output.decode(errors="replace"))

    async def stop(self):
        process = self.process
        if process is None or process.ended.called:
            return
        process.transport.signalProcess("TERM")
        call = reactor.callLater(15, lambda: process.ended.called
                                 or process.transport.signalProcess("KILL"))
        await process.ended
        if call.active():
            call.cancel()

    # -- the HTTP API, as a client sees it

    def _agent(self):
        if self.tls:
            from grott.outputs.http import tls_policy
            return Agent(reactor, contextFactory=tls_policy(self.tls["ca"]))
        return Agent(reactor)

    async def request(self, method, path, params):
        headers = Headers()
        if self.credentials:
            token = base64.b64encode(":".join(self.credentials).encode()).decode()
            headers.setRawHeaders(b"Authorization", [f"Basic {token}".encode()])
        url = f"{self.url}{path}?{urlencode(params)}".encode()
        response = await self._agent().request(method, url, headers)
        body = await readBody(response)
        return response.code, body

    async def query(self, q, db=None):
        """
        The JSON answer to InfluxQL C{q} (a POST, so it may change things).
        """
        params = {"q": q, "epoch": "s"}
        if db:
            params["db"] = db
        code, body = await self.request(b"POST", "/query", params)
        if code != 200:
            raise AssertionError(f"query {q!r}: HTTP {code} {body!r}")
        result = json.loads(body)["results"][0]
        if "error" in result:
            raise AssertionError(f"query {q!r}: {result['error']}")
        return result

    async def points(self, db, measurement):
        """
        Every point of C{measurement} as dicts (time in seconds, tags and
        fields by name), oldest first.
        """
        result = await self.query(f'SELECT * FROM "{measurement}"', db)
        points = []
        for series in result.get("series", []):
            columns = series["columns"]
            points.extend(dict(zip(columns, values)) for values in series["values"])
        return sorted(points, key=lambda p: p["time"])
