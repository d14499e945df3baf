"""
grott with a record sink that takes every record and does nothing with it,
for bench/relay.py's grott-decodeall target: every register record is
decoded (as when an output is enabled) but no output's own cost is added,
so the benchmark can tell what decoding costs in a real run.

    GROTT_BENCH_CONFIG=cfg.yaml twistd -n -y bench/decodeall.tac
"""

import os

from twisted.application import service
from twisted.internet import reactor
from zope.interface import implementer

from grott.config import load_config
from grott.interfaces import IRecordSink
from grott.service import makeService


@implementer(IRecordSink)
class _Discard:
    def wantsRecords(self):
        return True

    def deliver(self, packet, record):
        pass


application = service.Application("grott-decodeall")
_top = makeService(load_config(os.environ["GROTT_BENCH_CONFIG"]), reactor)
_top.getServiceNamed("proxy").factory.sink = _Discard()
_top.setServiceParent(application)
