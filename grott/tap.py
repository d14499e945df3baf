"""
The twistd edge: options, config loading, and the service.

Config errors end start-up in C{postOptions} with one line and exit status
1, before twistd daemonizes or binds anything.
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
        from grott.service import validate
        try:
            self["loaded"] = load_config(self["config"])
            validate(self["loaded"])
        except ConfigError as e:
            # Not UsageError: twistd would print the whole option summary
            # before the one line that matters.  This exits with status 1,
            # before twistd daemonizes or binds anything.
            raise SystemExit(f"grott: {e}") from None


def makeService(options):
    from twisted.internet import reactor

    from grott.service import makeService as make
    try:
        return make(options["loaded"], reactor)
    except ConfigError as e:
        # e.g. a plugin name in plugins.enabled that no plugin has.
        raise SystemExit(f"grott: {e}") from None
