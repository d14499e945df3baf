"""
A real HTTP client for the monitoring endpoint, and a real Prometheus
server (the Debian package's /usr/bin/prometheus) on a free loopback port
with a generated scrape config and its own storage directory.
"""

import json
import os
import shutil
import urllib.parse

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from tests.mosquitto import free_port
from tests.processes import OutputProcess

PROMETHEUS = shutil.which("prometheus") or next(
    (p for p in ("/usr/bin/prometheus", "/usr/local/bin/prometheus") if os.path.exists(p)),
    None)

SKIP = None if PROMETHEUS else "prometheus is not installed (apt-get install prometheus)"



async def get(url, token=None, method=b"GET", headers=None):
    """
    (status code, headers, body bytes) of one request with twisted.web's Agent.
    """
    fields = {b"user-agent": [b"grott-tests"]}
    if token is not None:
        fields[b"authorization"] = [b"Bearer " + token.encode()]
    for name, value in (headers or {}).items():
        fields[name] = [value]
    response = await Agent(reactor).request(method, url.encode("ascii"), Headers(fields))
    body = await readBody(response)
    return response.code, response.headers, body


async def poll(check, deadline=20.0, step=0.1, what="the condition"):
    """
    Call C{check()} (may return a Deferred or coroutine) until it returns
    something true; fail after C{deadline} seconds.
    """
    end = reactor.seconds() + deadline
    last = None
    while True:
        try:
            result = check()
            if isinstance(result, defer.Deferred) or hasattr(result, "__await__"):
                result = await result
            if result:
                return result
            last = result
        except Exception as e:  # noqa: BLE001 - keep polling; report the last error
            last = e
        if reactor.seconds() > end:
            raise AssertionError(f"{what} did not happen within {deadline} s (last: {last!r})")
        await deferLater(reactor, step, lambda: None)


class Prometheus:
    """
    A Prometheus server scraping C{target} ("127.0.0.1:PORT") every
    C{interval}, optionally with a bearer token.
    """

    def __init__(self, directory, target, interval="250ms", token=None):
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        job = [
            "  - job_name: grott",
            f"    scrape_interval: {interval}",
            f"    scrape_timeout: {interval}",
            "    static_configs:",
            f"      - targets: ['{target}']",
        ]
        if token is not None:
            job += ["    authorization:", "      type: Bearer",
                    f"      credentials: {json.dumps(token)}"]
        self.config = os.path.join(self.directory, "prometheus.yml")
        with open(self.config, "w", encoding="utf-8") as f:
            f.write("\n".join(["global:", f"  scrape_interval: {interval}",
                               "scrape_configs:"] + job) + "\n")
        self.process = None

    def start(self):
        """
        Start the server; the Deferred fires when /-/ready answers 200.
        """
        self.process = OutputProcess()
        reactor.spawnProcess(
            self.process, PROMETHEUS,
            [PROMETHEUS, f"--config.file={self.config}",
             f"--storage.tsdb.path={os.path.join(self.directory, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})

        async def ready():
            if self.process.ended.called:
                raise RuntimeError("prometheus exited: " +
                                   self.process.output.decode(errors="replace"))
            code, _, _ = await get(self.url + "/-/ready")
            return code == 200
        return defer.ensureDeferred(poll(ready, deadline=20, what="prometheus ready"))

    async def query(self, promql):
        """The result list of an instant query through the HTTP API."""
        code, _, body = await get(
            self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        answer = json.loads(body)
        if code != 200 or answer.get("status") != "success":
            raise AssertionError(f"query {promql!r}: {code} {body[:300]!r}")
        return answer["data"]["result"]

    async def targets(self):
        _, _, body = await get(self.url + "/api/v1/targets")
        return json.loads(body)["data"]["activeTargets"]

    def stop(self):
        process = self.process
        if process is None or process.ended.called:
            return defer.succeed(None)
        process.transport.signalProcess("TERM")
        kill = reactor.callLater(10, lambda: process.ended.called or
                                 process.transport.signalProcess("KILL"))

        def done(result):
            if kill.active():
                kill.cancel()
            return result
        return process.ended.addBoth(done)
