"""
grott with its decoder switched off, for bench/relay.py's grott-nodecode
target: the same relay, framing and sessions, no register decoding, so the
benchmark can tell what decoding costs in a real run.

    GROTT_BENCH_CONFIG=cfg.yaml twistd -n -y bench/nodecode.tac
"""

import os

from twisted.application import service
from twisted.internet import reactor

from grott.config import load_config
from grott.service import makeService

application = service.Application("grott-nodecode")
_top = makeService(load_config(os.environ["GROTT_BENCH_CONFIG"]), reactor)
_top.getServiceNamed("proxy").factory.decode = None
_top.setServiceParent(application)
