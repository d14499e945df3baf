"""
What the long-running subcommands (simulate, fake-cloud) share: where their
log goes and how they run under the reactor.
"""

import sys

from twisted.internet import task
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)


def begin_logging(verbose):
    """
    Send log events to standard error: warnings and worse, or with
    C{verbose} also info (grott's own events only; Twisted's chatter stays
    at warnings).
    """
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    if verbose:
        predicate.setLogLevelForNamespace("grott", LogLevel.info)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])],
        redirectStandardIO=False)


def react_main(run, options):
    """
    Run C{run(reactor, options)} under L{task.react}; return its exit status.
    """
    async def main(reactor):
        code = await run(reactor, options)
        if code:
            raise SystemExit(code)

    try:
        task.react(main)
    except SystemExit as e:
        return e.code or 0
    return 0
