"""
The twistd edge: options, config loading, and the service.

Config errors end start-up in C{postOptions} with one line per problem and
exit status 1, before twistd daemonizes or binds anything; so does a port
that is already taken (L{grott.service.probe_listeners}, in
C{makeService}, which twistd also calls before it forks).
"""

from twisted.python import usage

from grott.config import ConfigError, in_file_order, load_config


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Relay Growatt dataloggers to the cloud and decode their data locally.  "
                "Check a configuration with `grott check --config FILE`; `grott --help` "
                "lists the other tools.")
    optParameters = [
        ["config", "c", "config.yaml", "Path to the configuration file."],
    ]

    def postOptions(self):
        from grott.service import problems, validate
        try:
            self["loaded"] = load_config(self["config"])
            validate(self["loaded"])
        except ConfigError as e:
            if e.config is not None:
                # Loading failed: list what start-up would check next too.
                e = ConfigError(*in_file_order(e.problems + problems(e.config)))
            # Not UsageError: twistd would print the whole option summary
            # before the one line that matters.  This exits with status 1,
            # before twistd daemonizes or binds anything.
            raise SystemExit(_lines(e)) from None


def _lines(error):
    """Each problem of a L{ConfigError} as its own C{grott: } line."""
    return "\n".join(f"grott: {problem}" for problem in error.problems)


def makeService(options):
    from twisted.internet import reactor

    from grott.service import makeService as make
    from grott.service import probe_listeners
    # Before twistd forks: a busy port is one line on the terminal.
    probe_listeners(options["loaded"])
    try:
        return make(options["loaded"], reactor)
    except ConfigError as e:
        # e.g. a plugin name in plugins.enabled that no plugin has.
        raise SystemExit(_lines(e)) from None
