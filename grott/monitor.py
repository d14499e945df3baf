"""
The monitoring HTTP endpoint (C{metrics.listen}): /metrics for Prometheus,
/healthz and /readyz for supervisors and load balancers, /stats for people.

Everything is rendered on the reactor thread from what grott holds in
memory; nothing here blocks or keeps state of its own.  The exposition
comes from C{prometheus_client} (L{grott.metrics} collects), but not
through its own Twisted resource: that one collects in the reactor's thread
pool, and grott's counters belong to the reactor thread.

With C{metrics.token} set, every path wants C{Authorization: Bearer
TOKEN}; anything else is answered 401.  Requests are not access-logged: a
scrape every few seconds would bury the log.
"""

import hmac
import json

from prometheus_client.exposition import choose_encoder
from twisted.web.resource import Resource
from twisted.web.server import Site

from grott.commands import is_loopback
from grott.logs import Logger
from grott.logthrottle import LogThrottle

__all__ = ["MonitorSite", "check_ready", "make_site"]

#: Seconds an idle HTTP connection may stay open.
IDLE_TIMEOUT = 30

_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"


def check_ready(running, listening, plugins):
    """
    Whether grott is ready, as the JSON body of /readyz.

    @param running: the service tree is started and not stopping.
    @param listening: the datalogger listener has its port.
    @param plugins: the plugin host's stats (L{grott.pluginhost.PluginHost.stats}).
    @return: C{{"ready": bool, "problems": [sentences], "outputs": {...}}};
        an output that is away but whose queue still has room is ready
        (it is spooling within its limits).
    """
    problems = []
    if not running:
        problems.append("grott is starting or stopping")
    if not listening:
        problems.append("the datalogger listener (proxy.listen) is not listening")
    outputs = {}
    for s in plugins:
        name = s["name"]
        state = s["state"]
        size = s.get("queue_size")
        connected = s.get("connected")
        outputs[name] = {"state": state, "queued": s["queued"], "queue_size": size,
                         "connected": connected}
        if state in ("new", "starting"):
            problems.append(f"plugin {name} has not finished starting")
        elif state == "broken":
            problems.append(f"plugin {name} failed to start")
        elif state != "running":
            problems.append(f"plugin {name} is stopping")
        elif size is not None and s["queued"] >= size:
            away = " and is not connected to its sink" if connected is False else ""
            problems.append(f"plugin {name} is dropping records: its queue is full "
                            f"({s['queued']} of {size}){away}")
    return {"ready": not problems, "problems": problems, "outputs": outputs}


def _json(request, data, code=200):
    request.setResponseCode(code)
    request.setHeader(b"content-type", _JSON)
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(data, indent=1, default=str).encode("utf-8") + b"\n"


class _Page(Resource):
    """
    A leaf page; a failure while rendering is a logged 500, never a
    traceback sent to the client.
    """

    isLeaf = True
    log = Logger()
    #: a L{LogThrottle} for render failures (make_site sets one per site):
    #: a bug that fails every scrape logs a few tracebacks, then summaries
    throttle = None

    def render_GET(self, request):
        try:
            return self.page(request)
        except Exception:  # noqa: BLE001 - a bug here must not cost the scrape its answer
            path = request.path.decode("latin-1")
            if self.throttle is None or self.throttle.admit(path):
                self.log.failure("monitoring: rendering {path} failed", path=path)
            request.setResponseCode(500)
            request.setHeader(b"content-type", _TEXT)
            return b"internal error (see grott's log)\n"


class MetricsPage(_Page):
    def __init__(self, registry):
        Resource.__init__(self)
        self.registry = registry

    def page(self, request):
        accept = request.getHeader(b"accept")
        encoder, content_type = choose_encoder(accept.decode("latin-1") if accept else "")
        body = encoder(self.registry)
        request.setHeader(b"content-type", content_type.encode("ascii"))
        return body


class HealthPage(_Page):
    """The reactor answers: that is all /healthz says."""

    def page(self, request):
        request.setHeader(b"content-type", _TEXT)
        return b"ok\n"


class ReadyPage(_Page):
    def __init__(self, readiness):
        Resource.__init__(self)
        self.readiness = readiness

    def page(self, request):
        state = self.readiness()
        return _json(request, state, 200 if state["ready"] else 503)


class StatsPage(_Page):
    def __init__(self, report):
        Resource.__init__(self)
        self.report = report

    def page(self, request):
        return _json(request, self.report())


class IndexPage(_Page):
    def page(self, request):
        request.setHeader(b"content-type", _TEXT)
        return (b"grott monitoring: /metrics (Prometheus), /healthz, /readyz, "
                b"/stats (JSON)\n")


class Unauthorized(_Page):
    def page(self, request):
        request.setResponseCode(401)
        request.setHeader(b"www-authenticate", b'Bearer realm="grott"')
        request.setHeader(b"content-type", _TEXT)
        return b"a bearer token is required (metrics.token)\n"


class MonitorRoot(Resource):
    """
    The site's root: checks the bearer token (if one is configured) before
    any page is looked up.
    """

    def __init__(self, token=""):
        Resource.__init__(self)
        self._token = token.encode("utf-8") if token else None

    def authorized(self, request):
        if self._token is None:
            return True
        header = request.getHeader(b"authorization") or b""
        scheme, _, given = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token)

    def getChildWithDefault(self, path, request):
        if not self.authorized(request):
            return Unauthorized()
        return Resource.getChildWithDefault(self, path, request)


class MonitorSite(Site):
    """
    The monitoring site: start-up lines like the command socket's, no
    access log, no tracebacks to clients.
    """

    logger = Logger()
    noisy = False
    displayTracebacks = False

    def __init__(self, root, listen=None, token="", reactor=None):
        Site.__init__(self, root, timeout=IDLE_TIMEOUT, reactor=reactor)
        self.listen = listen
        self.has_token = bool(token)

    def startFactory(self):
        Site.startFactory(self)
        if self.listen is None:
            return
        self.logger.info("monitoring HTTP (/metrics, /healthz, /readyz, /stats) on {listen}",
                       listen=self.listen)
        if not is_loopback(self.listen):
            self.logger.warn(  # noqa: G010 (twisted.logger has no warning())
                "monitoring endpoint {listen} is not bound to a loopback interface: anyone "
                "who can reach it {can}", listen=self.listen,
                can="and has metrics.token can read grott's state" if self.has_token
                else "can read grott's state (datalogger serials, addresses); "
                     "set metrics.token")

    def log(self, request):
        """No access log."""


def make_site(registry, readiness, report, reactor, token="", listen=None):
    """
    The monitoring site over C{registry} (a C{CollectorRegistry}),
    C{readiness} (returns L{check_ready}'s dict) and C{report} (returns the
    stats report as a JSON-able dict).
    """
    log = Logger()

    def summary(path, count, seconds):
        log.error("monitoring: rendering {path} failed {count} more times in {seconds:.0f} s",
                  path=path, count=count, seconds=seconds)

    throttle = LogThrottle(reactor, summary, burst=3, interval=300.0)
    root = MonitorRoot(token)
    for path, page in ((b"", IndexPage()), (b"metrics", MetricsPage(registry)),
                       (b"healthz", HealthPage()), (b"readyz", ReadyPage(readiness)),
                       (b"stats", StatsPage(report))):
        page.throttle = throttle
        root.putChild(path, page)
    return MonitorSite(root, listen=listen, token=token, reactor=reactor)
