"""
HTTP POST for the outputs that talk to a web API (InfluxDB, PVOutput).

Built on L{twisted.web.client.Agent}, not treq: a POST of a small body and
reading the answer is all these outputs need, and Agent is part of Twisted
already.  HTTPS uses Agent's default policy (L{BrowserLikePolicyForHTTPS}):
the certificate is checked against the system's CAs, or against
C{ca_certs} for a server with a private CA.  Connections are kept open
between requests (one persistent pool per output).
"""

import dataclasses

from twisted.internet import defer
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
    readBody,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

__all__ = ["HttpClient", "Response", "tls_policy"]


@dataclasses.dataclass(frozen=True)
class Response:
    code: int
    headers: Headers
    body: bytes

    def header(self, name):
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


@implementer(IBodyProducer)
class _Body:
    """
    A body that is all in memory: written at once, with its length known
    (so the request has a Content-Length, not chunked encoding, which some
    servers refuse).
    """

    def __init__(self, data):
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer):
        consumer.write(self.data)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


def tls_policy(ca_certs=""):
    """
    Agent's certificate-checking policy; with C{ca_certs} (a PEM file) the
    server's certificate must chain to one of its certificates instead of
    the system's CAs.
    """
    if not ca_certs:
        return BrowserLikePolicyForHTTPS()
    with open(ca_certs, "rb") as f:
        pem = f.read()
    certificates = []
    marker = b"-----END CERTIFICATE-----"
    for chunk in pem.split(marker)[:-1]:
        certificates.append(Certificate.loadPEM(chunk + marker + b"\n"))
    if not certificates:
        raise ValueError(f"no certificate in {ca_certs}")
    return BrowserLikePolicyForHTTPS(trustRoot=trustRootFromCertificates(certificates))


class _QuietFactory(_HTTP11ClientFactory):
    """
    Without "Starting factory" / "Stopping factory" lines for every
    connection (one per retry while a server is away).
    """

    noisy = False


class _Pool(HTTPConnectionPool):
    # HTTPConnectionPool has no public way to choose its factory's noise.
    _factory = _QuietFactory


class HttpClient:
    """
    POST requests with a timeout over a persistent connection pool.
    """

    def __init__(self, reactor, timeout, ca_certs="", user_agent=b"grott"):
        self.reactor = reactor
        self.timeout = timeout
        self.user_agent = user_agent
        self.pool = _Pool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 1
        self.agent = Agent(reactor, contextFactory=tls_policy(ca_certs), pool=self.pool)

    def post(self, url, headers, body):
        """
        @param url: bytes.
        @param headers: C{{str: str}}.
        @return: a Deferred firing with a L{Response} (any status), or
            failing for a connection problem or the timeout.
        """
        raw = Headers({b"User-Agent": [self.user_agent]})
        for name, value in headers.items():
            raw.setRawHeaders(name.encode("ascii"), [value.encode("utf-8")])
        return defer.Deferred.fromCoroutine(self._post(url, raw, body))

    async def _post(self, url, headers, body):
        request = self.agent.request(b"POST", url, headers, _Body(body))
        request.addTimeout(self.timeout, self.reactor)
        response = await request
        reading = readBody(response)
        reading.addTimeout(self.timeout, self.reactor)
        data = await reading
        return Response(response.code, response.headers, data)

    def close(self):
        return self.pool.closeCachedConnections()
