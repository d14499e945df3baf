"""
The service tree: what runs, wired together.

    grott (MultiService)
     +- proxy      datalogger listener (strports) -> per-datalogger upstream
     +- command    admin socket (LineReceiver)
     +- plugins    plugin host: queues, thread pool, outputs

This is the one module that knows every part; the parts know only what they
are handed (the registry, a record callback, a clock).
"""

from twisted.application import service, strports
from twisted.internet.protocol import Factory, Protocol


def makeService(config, reactor):
    """
    Build the grott service tree for C{config} on C{reactor}.
    """
    top = service.MultiService()
    top.setName("grott")
    listener = strports.service(config.proxy.listen, Factory.forProtocol(Protocol), reactor=reactor)
    listener.setName("proxy")
    listener.setServiceParent(top)
    return top
