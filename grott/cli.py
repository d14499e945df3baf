"""
The `grott` console script: small tools around the service (which itself
runs as `twistd grott`, see L{grott.tap}).

    grott decode HEX...      show what a packet says
    grott check --config F   validate a configuration (exit 0 or 1)
    grott simulate ...       simulated dataloggers
    grott fake-cloud ...     a stand-in for the Growatt server

Each subcommand lives in its own module under L{grott.scripts} with an
C{Options} class and a C{main(options)} function returning the exit status;
they are imported only when chosen, so `grott decode` starts quickly.
"""

import importlib
import sys

from twisted.python import usage

from grott.scripts import _options

#: name -> (module, one-line help)
SUBCOMMANDS = {
    "decode": ("grott.scripts.decode", "Decode Growatt packets given as hex (arguments or stdin)."),
    "check": ("grott.scripts.check", "Validate a configuration file (exit 0 if it is usable)."),
    "simulate": ("grott.scripts.simulate", "Simulated dataloggers connecting to a proxy or server."),
    "fake-cloud": ("grott.scripts.fakecloud", "A stand-in Growatt server (acks, pings, records)."),
}


class Options(_options.Options):
    #: After the commands: where the service itself is (not wrapped).
    epilog = """
These are the tools around grott.  The service itself runs under twistd:
  twistd -n grott --config config.yaml    foreground, logging to the terminal
  twistd grott --config config.yaml       daemonized (twistd.pid, twistd.log)
  twistd grott --help                     the service's own options
  twistd -ny $(python -m grott.tac)       from the application file (GROTT_CONFIG)
"""

    def getUsage(self, width=None):
        text = usage.Options.getUsage(self, width)
        if getattr(self, "subOptions", None) is None:
            text += self.epilog
        return text

    def getSynopsis(self):
        # A subcommand's usage line starts with this: "Usage: grott check
        # [--config PATH]", not the whole top-level synopsis.
        if self.subCommand is not None:
            return "Usage: grott"
        return "Usage: grott COMMAND [options]   (grott COMMAND --help for a command's options)"

    @property
    def subCommands(self):
        return [(name, None, _LazyOptions(module), text)
                for name, (module, text) in SUBCOMMANDS.items()]

    def postOptions(self):
        if self.subCommand is None:
            raise usage.UsageError("which command? (" + ", ".join(SUBCOMMANDS) + ")")


class _LazyOptions:
    """Import a subcommand's Options only when twisted.python.usage needs it."""

    def __init__(self, module):
        self.module = module

    def __call__(self):
        return importlib.import_module(self.module).Options()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        sys.stderr.write(f"grott: {e}\n")
        if options.subCommand is None:
            sys.stderr.write(str(options))
        sys.exit(2)
    module = importlib.import_module(SUBCOMMANDS[options.subCommand][0])
    sys.exit(module.main(options.subOptions))


if __name__ == "__main__":  # pragma: no cover
    main()
