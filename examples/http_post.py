"""
An asynchronous grott plugin: POSTs each record as JSON to a web service,
using Twisted's HTTP client so the reactor never waits.

data() returns a Deferred; grott hands this plugin its next record only
after that Deferred has fired, and a slow server delays nothing else (its
records queue up, and beyond plugins.queue_size they are dropped and
counted).  Being an IConfigurablePlugin factory, it gets its settings from
config.yaml:

    plugins:
      settings:
        http_post:
          url: "http://127.0.0.1:8123/api/webhook/grott"
          timeout: 10
"""

import json
from io import BytesIO

from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from zope.interface import implementer

from grott.interfaces import IConfigurablePlugin, IGrottPlugin


@implementer(IGrottPlugin)
class HttpPost:
    name = "http_post"

    def __init__(self, url, timeout, reactor):
        self.url = url.encode("ascii")
        self.timeout = timeout
        self.reactor = reactor
        self.agent = Agent(reactor)

    async def data(self, packet, record, log):
        body = FileBodyProducer(BytesIO(json.dumps(record.as_dict()).encode("utf-8")))
        request = self.agent.request(b"POST", self.url,
                                     Headers({b"Content-Type": [b"application/json"]}), body)
        request.addTimeout(self.timeout, self.reactor)
        response = await request
        await readBody(response)
        if response.code >= 300:
            # Raising marks this record as failed (logged with the traceback,
            # counted in the stats); the plugin keeps receiving records.
            raise RuntimeError(f"{self.url.decode()} answered {response.code}")


@implementer(IConfigurablePlugin)
class HttpPostFactory:
    name = "http_post"

    def makePlugin(self, settings, reactor):
        unknown = set(settings) - {"url", "timeout"}
        if unknown or "url" not in settings:
            raise ValueError("http_post needs url (and optionally timeout); "
                             f"unknown: {sorted(unknown)}")
        return HttpPost(settings["url"], settings.get("timeout", 10), reactor)


factory = HttpPostFactory()
