"""
Shared pieces for the spool and sink tests: a sink whose deliveries the
test confirms or fails, and waiting for an event with a deadline.
"""

from twisted.internet import defer, reactor
from zope.interface import implementer

from grott.config import SpoolConfig
from grott.interfaces import ISpoolSink
from tests import waiting

#: Longest wait for an event before a test fails.
DEADLINE = 20.0


def until(predicate, what, deadline=DEADLINE):
    """
    L{tests.waiting.until} on the global reactor, with the spool tests'
    longer deadline (their worker threads fsync).
    """
    return waiting.until(reactor, predicate, what, seconds=deadline)


def spool_settings(directory, **kw):
    return SpoolConfig(directory=directory, **kw)


@implementer(ISpoolSink)
class Sink:
    """
    Keeps each delivery's items; C{auto} confirms at once, otherwise the
    test fires C{calls[i][1]}.  C{refuse(items)} may raise to fail a call.
    """

    def __init__(self, name="sink", batch_size=10, flush_interval=0, auto=True, refuse=None):
        self.name = name
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.auto = auto
        self.refuse = refuse
        self.calls = []
        self.cancelled = 0

    def encode(self, record):
        if record.values.get("skip"):
            return None
        return str(record.values["seq"]).encode()

    def deliver(self, items):
        items = [int(item) for item in items]
        if self.refuse is not None:
            self.refuse(items)
        d = defer.Deferred(lambda d: self._cancelled())
        self.calls.append((items, d))
        if self.auto:
            d.callback(None)
        return d

    def _cancelled(self):
        self.cancelled += 1

    def confirmed(self):
        """
        Every item whose delivery fired successfully, in order.
        """
        done = []
        for items, d in self.calls:
            if d.called and not isinstance(getattr(d, "result", None), Exception):
                done.extend(items)
        return done
