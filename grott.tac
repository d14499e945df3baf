# twistd -ny grott.tac
#
# Reads the configuration named by $GROTT_CONFIG (default: config.yaml).
import os

from twisted.application import service

from grott import tap

_options = tap.Options()
try:
    _options.parseOptions(["--config", os.environ.get("GROTT_CONFIG", "config.yaml")])
except tap.usage.UsageError as e:
    raise SystemExit(f"grott: {e}")

application = service.Application("grott")
tap.makeService(_options).setServiceParent(application)
