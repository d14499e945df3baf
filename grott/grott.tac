# The grott service as a Twisted application file, installed with grott:
#
#     GROTT_CONFIG=config.yaml twistd -ny "$(python -m grott.tac)"
#
# (`python -m grott.tac` prints where this file is; from a clone it is
# grott/grott.tac.)  Reads the configuration named by $GROTT_CONFIG
# (default: config.yaml); a configuration problem or a taken port ends
# start-up with one line per problem, as `twistd grott` does.
import os

from twisted.application import service

from grott import tap

_options = tap.Options()
_options.parseOptions(["--config", os.environ.get("GROTT_CONFIG", "config.yaml")])

application = service.Application("grott")
tap.makeService(_options).setServiceParent(application)
