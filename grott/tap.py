"""
The twistd edge: options, config loading, and the service.

Config errors become L{usage.UsageError} in C{postOptions}, so twistd
prints one line and exits non-zero before it daemonizes or binds anything.
"""

from twisted.python import usage

from grott.config import ConfigError, load_config


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "Relay Growatt dataloggers to the cloud and decode their data locally."
    optParameters = [
        ["config", "c", "config.yaml", "Path to the configuration file."],
    ]

    def postOptions(self):
        try:
            self["loaded"] = load_config(self["config"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def makeService(options):
    from twisted.internet import reactor

    from grott.service import makeService as make
    return make(options["loaded"], reactor)
