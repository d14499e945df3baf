"""
Where grott's log events go.

Every grott module logs through L{Logger} below, which emits into
L{publisher}, grott's log bus, instead of straight into Twisted's global
publisher.  What happens next belongs to the running L{LoggingService}: its
L{Redacting} entry masks the configured secrets (in fields, formatted text
and tracebacks), then its route hands the events to the per-datalogger files
and, through its level filter, to the global publisher, so whatever twistd
set up (stdout with -n, --logfile, --syslog, --logger) receives grott's
events at the level the user chose.

    Logger -> publisher -> LoggingService: redaction (its Secrets)
                             -> per-datalogger files (every packet)
                             -> level filter (its predicate) -> globalLogPublisher
                                                                 -> twistd's log
                                                                 -> log.file (to: file)

Without a running LoggingService (tests, the simulate and fake-cloud
commands) grott's events go to the global publisher at info and above.

The state a running grott's logging needs is the service's, handed to who
needs it: its L{Secrets}, its level predicate, and its L{PacketTracing}
(whether per-packet events are wanted, and their logger) for the proxy.
"""

import os
import sys
import time

import twisted.logger as _tlog
from constantly import NamedConstant
from twisted.application import service
from twisted.python.failure import Failure
from zope.interface import implementer

from grott.logfiles import DataloggerLogs, open_log_file
from grott.secrets import MASK, Secrets, secret_warnings, secrets_in

__all__ = [
    "LEVELS",
    "MASK",
    "Logger",
    "LoggingService",
    "PacketTracing",
    "Redacting",
    "check_paths",
    "main_log",
    "publisher",
    "redact",
    "secrets_in",
]

LEVELS = {
    "debug": _tlog.LogLevel.debug,
    "info": _tlog.LogLevel.info,
    "warn": _tlog.LogLevel.warn,
    "error": _tlog.LogLevel.error,
    "critical": _tlog.LogLevel.critical,
}


def level_filter(name):
    """
    A level predicate letting grott's events of level C{name} and above
    through ("info", "debug", ...).
    """
    predicate = _tlog.LogLevelFilterPredicate(defaultLogLevel=LEVELS[name])
    predicate.setLogLevelForNamespace("grott", LEVELS[name])
    return predicate


# ---------------------------------------------------------------- secrets

class _RedactedError(Exception):
    """
    Stands in for an exception whose text contained a secret.
    """


def _clean(value, secrets, depth=0):
    """
    C{value} with C{secrets} masked; the same object when it holds none.
    """
    if value is None or isinstance(value, (bool, NamedConstant)):
        return value
    if isinstance(value, (int, float)):
        # A numeric password is a number in an event's fields too.
        return MASK if secrets and secrets.found_in(str(value)) else value
    if isinstance(value, str):
        return secrets.mask(value) if secrets.found_in(value) else value
    if isinstance(value, (bytes, bytearray)):
        if secrets.found_in_bytes(value):
            return secrets.mask(bytes(value).decode("utf-8", "replace"))
        return value
    if depth > 20:
        return "<too deeply nested to check for secrets>"
    if isinstance(value, dict):
        changed = False
        cleaned = {}
        for k, v in value.items():
            ck, cv = _clean(k, secrets, depth + 1), _clean(v, secrets, depth + 1)
            changed = changed or ck is not k or cv is not v
            cleaned[ck] = cv
        return cleaned if changed else value
    if isinstance(value, (list, tuple, set, frozenset)):
        cleaned = [_clean(v, secrets, depth + 1) for v in value]
        if all(a is b for a, b in zip(cleaned, value)):
            return value
        if isinstance(value, tuple):
            return tuple(cleaned)
        return set(cleaned) if isinstance(value, (set, frozenset)) else cleaned
    if isinstance(value, Failure):
        text = value.getTraceback()
        if secrets.found_in(text):
            return Failure(_RedactedError(secrets.mask(text)))
        return value
    try:
        text = f"{value!s} {value!r}"
    except Exception:  # noqa: BLE001 (a broken __repr__ must not stop logging)
        return value
    return secrets.mask(repr(value)) if secrets.found_in(text) else value


#: Keys describing the emitter, not data; formatting checks cover their use.
_EMITTER_KEYS = frozenset({"log_logger", "log_source", "log_level", "log_namespace", "log_time",
                           "log_trace", "log_observer"})


def redact(event, secrets):
    """
    The event as it may be logged: a copy with every one of C{secrets} (a
    L{Secrets}) masked in its fields, its failure and its formatted text;
    the event itself if there are no secrets.
    """
    if not secrets:
        return event
    clean = dict(event)
    changed = False
    for key, value in event.items():
        if key not in _EMITTER_KEYS:
            clean[key] = _clean(value, secrets)
            changed = changed or clean[key] is not value
    if "log_format" in clean:
        text = _tlog.formatEvent(event)
        if changed or secrets.found_in(text):
            # A format string can reach into objects ({cfg.mqtt.password}),
            # and a masked field may no longer fit its format: log the
            # masked text instead of the format.
            clean["log_format"] = secrets.mask(text).replace("{", "{{").replace("}", "}}")
            clean.pop("log_flattened", None)
    return clean


class Redacting:
    """
    Observer wrapper: forwards L{redact}ed events to C{observer}.  Never
    raises: an event that cannot be checked is replaced by a notice.
    """

    def __init__(self, observer, secrets):
        self.observer = observer
        self.secrets = secrets

    def __call__(self, event):
        if event.get("log_namespace") == _HANDOFF_NAMESPACE:
            return
        try:
            clean = redact(event, self.secrets)
        except Exception as e:  # noqa: BLE001 (an observer must never raise)
            clean = {
                "log_format": "(a log event could not be checked for secrets: {error})",
                "error": self.secrets.mask(f"{type(e).__name__}: {e}"),
                "log_level": event.get("log_level", _tlog.LogLevel.error),
                "log_namespace": event.get("log_namespace", "grott"),
                "log_time": event.get("log_time"),
                "log_source": None,
            }
        self.observer(clean)


# ---------------------------------------------------------------- publishers

class _Bus(_tlog.LogPublisher):
    """
    grott's log bus: one route at a time besides whoever observes it (tests
    do).  The running LoggingService takes the route and gives it back when
    it stops; if two run at once (tests), the later one routes until it
    stops, and nothing is logged twice.
    """

    def __init__(self, default):
        super().__init__()
        self._routes = [default]
        self.addObserver(default)

    def take(self, route):
        self.removeObserver(self._routes[-1])
        self._routes.append(route)
        self.addObserver(route)

    def give_back(self, route):
        if route not in self._routes:
            return
        active = self._routes[-1]
        self._routes.remove(route)
        if route is active:
            self.removeObserver(route)
            self.addObserver(self._routes[-1])


#: Every grott Logger emits here.  Where events go is the running
#: LoggingService's business; the default route (the global publisher, info
#: and above) stands in while none runs.
publisher = _Bus(_tlog.FilteringLogObserver(_tlog.globalLogPublisher, [level_filter("info")]))


class Logger(_tlog.Logger):
    """
    A L{twisted.logger.Logger} that emits into grott's L{publisher}.

    Use it like Twisted's: C{log = Logger()} on a class or module.
    """

    def __init__(self, namespace=None, source=None, observer=None):
        if namespace is None:
            namespace = sys._getframe(1).f_globals.get("__name__", "grott")
        super().__init__(namespace, source, publisher if observer is None else observer)


class PacketTracing:
    """
    Per-packet events (namespace "grott.packets") cost time on the relay's
    hot path, so the proxy emits them only while C{enabled}: the
    L{LoggingService} that owns this sets it when the level is debug or
    per-datalogger files are on.

    C{log} is where they go: fields serial, direction ("datalogger->server"
    / "server->datalogger"), record_type (int), record_name, hex, and record
    (the decoded record's dict, or None).  When a session ends, an event
    with session_closed=True and its serial follows.
    """

    def __init__(self):
        self.enabled = False
        self.log = Logger("grott.packets")


log = Logger("grott.logs")


# ---------------------------------------------------------------- twistd --logger

#: The namespace of the event a LoggingService sends through the global
#: publisher to find the observer twistd built with main_log.
_HANDOFF_NAMESPACE = "grott.logs.handoff"


@implementer(_tlog.ILogObserver)
class _Handoff:
    """
    twistd's main log observer when started with C{--logger
    grott.logs.main_log}: holds early events (twistd's start-up lines, the
    listening ports) until L{LoggingService} starts and gives it the main
    log, then forwards to the observer the C{log:} section describes.

    twistd builds it from a name, with no arguments, so the service finds
    it through the log itself: it sends an event of namespace
    C{grott.logs.handoff} carrying a reply callable through the global
    publisher, and the hand-off answers with itself (C{answers}).  Text
    observers print nothing for that event (it has no format).
    """

    def __init__(self, stdout, limit=500, answers=True):
        self.stdout = stdout
        self.limit = limit
        self.answers = answers
        self.buffer = []
        self.target = None

    def __call__(self, event):
        if event.get("log_namespace") == _HANDOFF_NAMESPACE:
            reply = event.get("grott_handoff")
            if self.answers and callable(reply):
                reply(self)
            return
        if self.target is not None:
            self.target(event)
        elif len(self.buffer) < self.limit:
            self.buffer.append(event)

    def hand_to(self, target):
        self.target = target
        early, self.buffer = self.buffer, []
        for event in early:
            target(event)


def main_log():
    """
    Log observer factory for C{twistd --logger grott.logs.main_log}: the
    C{log:} section (to, file, format) then decides where the main log goes,
    instead of twistd's own stdout/--logfile/--syslog handling.
    """
    # twistd replaces sys.stdout with a logging file after this call;
    # writing log lines there would loop, so keep the real one.
    return _Handoff(sys.stdout)


def find_handoff(publisher=None):
    """
    The L{_Handoff} twistd installed with C{--logger grott.logs.main_log},
    or None.
    """
    found = []
    (publisher or _tlog.globalLogPublisher)({
        "log_namespace": _HANDOFF_NAMESPACE, "log_level": _tlog.LogLevel.debug,
        "log_time": time.time(), "log_source": None, "log_logger": None,
        "grott_handoff": found.append})
    return found[0] if found else None


# ---------------------------------------------------------------- the service

def check_paths(config):
    """
    Problems with the files the C{log:} section names (a directory that is
    not writable...), as sentences naming the key; empty if none.
    """
    problems = []

    def writable_dir(path, key):
        path = os.path.abspath(path)
        probe = path
        while not os.path.exists(probe):
            parent = os.path.dirname(probe)
            if parent == probe:
                break
            probe = parent
        if not os.path.isdir(probe):
            problems.append(f"log.{key}: {probe} is not a directory")
        elif not os.access(probe, os.W_OK | os.X_OK):
            problems.append(f"log.{key}: cannot write in {probe}")

    if config.to == "file":
        path = os.path.abspath(config.file)
        if os.path.isdir(path):
            problems.append(f"log.file: {path} is a directory")
        elif os.path.exists(path):
            if not os.access(path, os.W_OK):
                problems.append(f"log.file: cannot write to {path}")
        elif not os.path.lexists(os.path.dirname(path)):
            # Not created: grott often starts as root, and a directory made
            # by a typo would belong to root and hide the mistake.
            problems.append(f"log.file: the directory {os.path.dirname(path)} does not exist "
                            f"(create it, owned by the user grott runs as)")
        else:
            writable_dir(os.path.dirname(path), "file")
    if config.per_datalogger:
        writable_dir(config.directory, "directory")
    return problems


class LoggingService(service.Service):
    """
    Applies the C{log:} section: level, packet tracing, the log file,
    per-datalogger files and the secret filter.  It is the first child of
    the service tree, so it starts before and stops after everything else.

    It owns the state the rest of grott's logging reads: C{secrets} (a
    L{Secrets}), C{levels} (the level predicate) and C{tracing} (a
    L{PacketTracing}, handed to the proxy).  C{warnings} are logged at
    start (weak secrets, a configuration file others can read).

    C{log.to: file} adds a rotating file observer to the global log beside
    twistd's own (stdout with -n, twistd.log daemonized): see README.md
    "Running and logging" for avoiding two copies.
    """

    def __init__(self, config, secrets=(), clock=None, handoff=None, warnings=()):
        self.config = config
        self.secrets = Secrets(secrets)
        self.levels = level_filter(config.level)
        self.tracing = PacketTracing()
        self.clock = clock
        self.handoff = handoff
        self.warnings = list(warnings)
        #: Redacted grott events: the level filter and per-datalogger files.
        self._route = _tlog.LogPublisher()
        self._route.addObserver(_tlog.FilteringLogObserver(_tlog.globalLogPublisher,
                                                           [self.levels]))
        self._entry = Redacting(self._route, self.secrets)
        self._installed = False
        self._main = None
        self._main_file = None
        self._per_datalogger = None
        self._early = None

    @classmethod
    def fromConfig(cls, config, clock=None):
        """
        The service for a whole L{grott.config.Config}: its C{log} section,
        with the secrets found anywhere in it and the warnings about them.
        """
        return cls(config.log, secrets_in(config), clock, warnings=secret_warnings(config))

    def _install(self):
        if not self._installed:
            self._installed = True
            publisher.take(self._entry)

    def _uninstall(self):
        if self._installed:
            self._installed = False
            publisher.give_back(self._entry)

    def privilegedStartService(self):
        # Earliest moment after makeService: mask secrets before the other
        # children bind ports and log about it, and keep those lines for the
        # log file, which opens in startService (after twistd has switched
        # to --uid, so the file belongs to the user who rotates it).
        self._install()
        if self.handoff is None:
            self.handoff = find_handoff()
        if self.config.to == "file" and self.handoff is None:
            self._early = _Handoff(None, answers=False)
            _tlog.globalLogPublisher.addObserver(self._early)
        service.Service.privilegedStartService(self)

    def _open(self, path):
        c = self.config
        return open_log_file(path, c.rotate, c.max_bytes, c.keep, self.clock)

    def _observer_for(self, out):
        if self.config.format == "json":
            return _tlog.jsonFileLogObserver(out, recordSeparator="")
        return _tlog.textFileLogObserver(out)

    def startService(self):
        c = self.config
        self._install()
        self.tracing.enabled = c.level == "debug" or c.per_datalogger
        handoff = self.handoff
        if c.to == "file":
            self._main_file = self._open(c.file)
            out = self._main_file
        elif handoff is not None:
            out = handoff.stdout
        else:
            out = None
        if out is not None:
            self._main = Redacting(_tlog.FilteringLogObserver(self._observer_for(out),
                                                              [self.levels]), self.secrets)
            if handoff is not None:
                handoff.hand_to(self._main)
            else:
                if self._early is not None:
                    _tlog.globalLogPublisher.removeObserver(self._early)
                    for event in self._early.buffer:
                        self._main(event)
                _tlog.globalLogPublisher.addObserver(self._main)
        if self._early is not None:
            _tlog.globalLogPublisher.removeObserver(self._early)
            self._early = None
        if c.per_datalogger:
            os.makedirs(c.directory, exist_ok=True)
            self._per_datalogger = DataloggerLogs(
                c.directory, c.format, decoded=c.level == "debug",
                wanted=lambda event: self.levels(event) != _tlog.PredicateResult.no,
                opener=self._open, on_error=self._file_failed)
            self._route.addObserver(self._per_datalogger)
        service.Service.startService(self)
        log.info("logging at level {threshold}{to}{per}", threshold=c.level,
                 to=f" to {os.path.abspath(c.file)}" if c.to == "file" else "",
                 per=(f", one file per datalogger in {os.path.abspath(c.directory)}"
                      if c.per_datalogger else ""))
        for warning in self.warnings:
            log.warn("configuration: {problem}", problem=warning)  # noqa: G010
        if c.format == "json" and c.to == "stdout" and handoff is None:
            log.warn(  # noqa: G010 (twisted.logger has no warning())
                "log.format json with log.to stdout needs twistd --logger "
                "grott.logs.main_log; the main log stays twistd's text")

    def _file_failed(self, name, error):
        log.error("cannot write the log of datalogger {datalogger}: {error}",
                  datalogger=name, error=str(error))

    def stopService(self):
        service.Service.stopService(self)
        if self._early is not None:
            _tlog.globalLogPublisher.removeObserver(self._early)
            self._early = None
        if self._per_datalogger is not None:
            self._route.removeObserver(self._per_datalogger)
            self._per_datalogger.close_all()
            self._per_datalogger = None
        handoff = self.handoff
        if self._main is not None and (handoff is None or handoff.target is not self._main):
            _tlog.globalLogPublisher.removeObserver(self._main)
            if self._main_file is not None:
                self._main_file.close()
        # With --logger grott.logs.main_log the main log stays open: twistd's
        # last lines ("Main loop terminated") still go there before exit.
        self._main = None
        self._main_file = None
        self.tracing.enabled = False
        self._uninstall()
