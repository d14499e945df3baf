"""
Where grott's log events go.

Every grott module logs through L{Logger} below, which emits into
L{publisher} instead of straight into Twisted's global publisher.  From
there a L{FilteringLogObserver} applies the configured level and forwards to
the global publisher, so whatever twistd set up (stdout with -n, --logfile,
--syslog, --logger) receives grott's events at the level the user chose.
Extra observers (JSON file, per-datalogger files) attach to L{publisher} as
well and can see events below that level.
"""

import sys

from twisted import logger as _tlog

__all__ = ["Logger", "publisher", "set_level", "LEVELS"]

LEVELS = {
    "debug": _tlog.LogLevel.debug,
    "info": _tlog.LogLevel.info,
    "warn": _tlog.LogLevel.warn,
    "error": _tlog.LogLevel.error,
    "critical": _tlog.LogLevel.critical,
}

#: The configured level, applied to what reaches twistd's log.
levels = _tlog.LogLevelFilterPredicate(defaultLogLevel=_tlog.LogLevel.info)

publisher = _tlog.LogPublisher()
publisher.addObserver(
    _tlog.FilteringLogObserver(_tlog.globalLogPublisher, [levels]))


def set_level(name):
    """
    Set the level of grott's events in the main log ("info", "debug", ...).
    """
    levels.setLogLevelForNamespace("grott", LEVELS[name])
    levels.defaultLogLevel = LEVELS[name]


class Logger(_tlog.Logger):
    """
    A L{twisted.logger.Logger} that emits into grott's L{publisher}.

    Use it like Twisted's: C{log = Logger()} on a class or module.
    """

    def __init__(self, namespace=None, source=None, observer=None):
        if namespace is None:
            namespace = sys._getframe(1).f_globals.get("__name__", "grott")
        super().__init__(namespace, source, publisher if observer is None else observer)


#: Per-packet events (namespace "grott.packets") cost time on the relay's hot
#: path, so the proxy emits them only while this is true: set when the level
#: is debug or per-datalogger files are on.
trace_packets = False

#: Where per-packet events go (see grott.proxy): fields serial, direction
#: ("datalogger->server" / "server->datalogger"), record_type (int),
#: record_name, hex, and record (the decoded record's dict, or None).  When a
#: session ends, an event with session_closed=True and its serial follows.
packets = Logger("grott.packets")
