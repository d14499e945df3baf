"""
The example plugins in examples/ load and work as README.md says.
"""

import csv
import json
import os

from twisted.internet import defer, endpoints, reactor
from twisted.internet.testing import EventLoggingObserver
from twisted.trial import unittest
from twisted.web import resource, server

from grott import logs
from grott.pluginhost import PluginHost
from tests.pluginhelpers import make_config, numbered

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


class _Sink(resource.Resource):
    isLeaf = True

    def __init__(self):
        resource.Resource.__init__(self)
        self.bodies = []

    def render_POST(self, request):
        self.bodies.append(json.loads(request.content.read()))
        return b"ok"


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


class ExampleTests(unittest.TestCase):

    timeout = 20

    async def _examples(self):
        events = EventLoggingObserver.createWithCleanup(self, logs.publisher)
        sink = _Sink()
        port = await endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            server.Site(sink))
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        config = make_config(EXAMPLES, enabled=["csv_file", "http_post", "print_power"],
                             settings={"http_post": {"url": url}})
        host = PluginHost(config, reactor)
        self.assertEqual(sorted(r.name for r in host.runners),
                         ["csv_file", "http_post", "print_power"])
        host.startService()
        pairs = numbered(3)
        for packet, record in pairs:
            host.deliver(packet, record)
        await host.stopService()

        self.assertEqual({s["name"]: (s["delivered"], s["failed"]) for s in host.stats()},
                         {"csv_file": (3, 0), "http_post": (3, 0), "print_power": (3, 0)})
        self.assertEqual([b["values"]["seq"] for b in sink.bodies], [0, 1, 2])
        powers = [e for e in events if e.get("log_namespace") == "grott.plugin.print_power"]
        self.assertEqual([e["power"] for e in powers], [pairs[0][1].values["pvpowerout"]] * 3)
        rows = _rows("grott-values.csv")
        self.assertEqual(len(rows), 3)
        self.assertEqual(rows[0][1], pairs[0][1].inverter_serial)

    def test_examples(self):
        return defer.Deferred.fromCoroutine(self._examples())

    def test_http_post_needs_a_url(self):
        config = make_config(EXAMPLES, enabled="all")
        host = PluginHost(config, reactor)
        self.assertEqual(sorted(r.name for r in host.runners), ["csv_file", "print_power"])
        [failure] = self.flushLoggedErrors(ValueError)
        self.assertIn("needs url", str(failure.value))
