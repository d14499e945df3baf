"""
Where grott's log events go.

Every grott module logs through L{Logger} below, which emits into
L{publisher} instead of straight into Twisted's global publisher.  Events
then pass the secret filter (L{set_secrets}: configured passwords and tokens
are masked in fields, formatted text and tracebacks), reach the
per-datalogger files, and go through a L{FilteringLogObserver} applying the
configured level to the global publisher, so whatever twistd set up (stdout
with -n, --logfile, --syslog, --logger) receives grott's events at the level
the user chose.

    Logger -> publisher -> redaction -> per-datalogger files (every packet)
                                     -> level filter -> globalLogPublisher
                                                          -> twistd's log
                                                          -> log.file (to: file)

L{LoggingService} applies the C{log:} section of the configuration.
"""

import dataclasses
import os
import re
import sys

import twisted.logger as _tlog
from constantly import NamedConstant
from twisted.application import service
from twisted.python.failure import Failure
from zope.interface import implementer

from grott.logfiles import DataloggerLogs, open_log_file

__all__ = [
    "LEVELS",
    "Logger",
    "LoggingService",
    "check_paths",
    "main_log",
    "packets",
    "publisher",
    "redact",
    "secrets_in",
    "set_level",
    "set_secrets",
]

LEVELS = {
    "debug": _tlog.LogLevel.debug,
    "info": _tlog.LogLevel.info,
    "warn": _tlog.LogLevel.warn,
    "error": _tlog.LogLevel.error,
    "critical": _tlog.LogLevel.critical,
}

#: The configured level, applied to what reaches twistd's log.
levels = _tlog.LogLevelFilterPredicate(defaultLogLevel=_tlog.LogLevel.info)


def set_level(name):
    """
    Set the level of grott's events in the main log ("info", "debug", ...).
    """
    levels.setLogLevelForNamespace("grott", LEVELS[name])
    levels.defaultLogLevel = LEVELS[name]


# ---------------------------------------------------------------- secrets

MASK = "********"
_secrets = ()


def set_secrets(values):
    """
    From now on, mask these strings wherever they would appear in a log
    event.  Longest first, so a secret containing another is masked whole.
    """
    global _secrets
    _secrets = tuple(sorted({v for v in values if isinstance(v, str) and v},
                            key=len, reverse=True))


def _mask(text):
    for secret in _secrets:
        text = text.replace(secret, MASK)
    return text


def _has_secret(text):
    return any(secret in text for secret in _secrets)


_SECRET_KEY = re.compile(r"pass(word|wd|phrase)?$|secret|token|api_?key|credential|private_?key",
                         re.IGNORECASE)


def secrets_in(config):
    """
    The secret strings in a configuration: values of dataclass fields marked
    secret (C{repr=False}), and in free-form mappings (outputs, plugin
    settings) the values of keys named like passwords, tokens or keys.
    """
    found = set()

    def walk(value, secret, depth):
        if depth > 20:
            return
        if isinstance(value, str):
            if secret and value:
                found.add(value)
        elif isinstance(value, (bytes, bytearray)):
            if secret and value:
                found.add(bytes(value).decode("utf-8", "replace"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if secret:
                found.add(str(value))
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                if not f.metadata.get("internal"):  # e.g. Config.lines: where keys are
                    walk(getattr(value, f.name, None), secret or not f.repr, depth + 1)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, secret or (isinstance(k, str) and bool(_SECRET_KEY.search(k))), depth + 1)
        elif isinstance(value, (list, tuple, set, frozenset)):
            for v in value:
                walk(v, secret, depth + 1)

    walk(config, False, 0)
    return frozenset(found)


class _RedactedError(Exception):
    """
    Stands in for an exception whose text contained a secret.
    """


def _clean(value, depth=0):
    """
    C{value} with secrets masked; the same object when it holds none.
    """
    if value is None or isinstance(value, (bool, int, float, NamedConstant)):
        return value
    if isinstance(value, str):
        return _mask(value) if _has_secret(value) else value
    if isinstance(value, (bytes, bytearray)):
        if any(s.encode("utf-8") in value for s in _secrets):
            return _mask(bytes(value).decode("utf-8", "replace"))
        return value
    if depth > 20:
        return "<too deeply nested to check for secrets>"
    if isinstance(value, dict):
        changed = False
        cleaned = {}
        for k, v in value.items():
            ck, cv = _clean(k, depth + 1), _clean(v, depth + 1)
            changed = changed or ck is not k or cv is not v
            cleaned[ck] = cv
        return cleaned if changed else value
    if isinstance(value, (list, tuple, set, frozenset)):
        cleaned = [_clean(v, depth + 1) for v in value]
        if all(a is b for a, b in zip(cleaned, value)):
            return value
        if isinstance(value, tuple):
            return tuple(cleaned)
        return set(cleaned) if isinstance(value, (set, frozenset)) else cleaned
    if isinstance(value, Failure):
        text = value.getTraceback()
        if _has_secret(text):
            return Failure(_RedactedError(_mask(text)))
        return value
    try:
        text = f"{value!s} {value!r}"
    except Exception:  # noqa: BLE001 (a broken __repr__ must not stop logging)
        return value
    return _mask(repr(value)) if _has_secret(text) else value


#: Keys describing the emitter, not data; formatting checks cover their use.
_EMITTER_KEYS = frozenset({"log_logger", "log_source", "log_level", "log_namespace", "log_time",
                           "log_trace", "log_observer"})


def redact(event):
    """
    The event as it may be logged: a copy with every known secret masked in
    its fields, its failure and its formatted text; the event itself if
    there are no secrets.
    """
    if not _secrets:
        return event
    clean = dict(event)
    changed = False
    for key, value in event.items():
        if key not in _EMITTER_KEYS:
            clean[key] = _clean(value)
            changed = changed or clean[key] is not value
    if "log_format" in clean:
        text = _tlog.formatEvent(event)
        if changed or _has_secret(text):
            # A format string can reach into objects ({cfg.mqtt.password}),
            # and a masked field may no longer fit its format: log the
            # masked text instead of the format.
            clean["log_format"] = _mask(text).replace("{", "{{").replace("}", "}}")
            clean.pop("log_flattened", None)
    return clean


class Redacting:
    """
    Observer wrapper: forwards L{redact}ed events to C{observer}.  Never
    raises: an event that cannot be checked is replaced by a notice.
    """

    def __init__(self, observer):
        self.observer = observer

    def __call__(self, event):
        try:
            clean = redact(event)
        except Exception as e:  # noqa: BLE001 (an observer must never raise)
            clean = {
                "log_format": "(a log event could not be checked for secrets: {error})",
                "error": _mask(f"{type(e).__name__}: {e}"),
                "log_level": event.get("log_level", _tlog.LogLevel.error),
                "log_namespace": event.get("log_namespace", "grott"),
                "log_time": event.get("log_time"),
                "log_source": None,
            }
        self.observer(clean)


# ---------------------------------------------------------------- publishers

#: Redacted grott events: the level filter and per-datalogger files listen here.
redacted = _tlog.LogPublisher()
redacted.addObserver(_tlog.FilteringLogObserver(_tlog.globalLogPublisher, [levels]))

#: Where grott's loggers emit.
publisher = _tlog.LogPublisher(Redacting(redacted))


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

log = Logger("grott.logs")


# ---------------------------------------------------------------- twistd --logger

@implementer(_tlog.ILogObserver)
class _Handoff:
    """
    twistd's main log observer when started with C{--logger
    grott.logs.main_log}: holds early events (twistd's start-up lines, the
    listening ports) until L{LoggingService} starts and gives it the main
    log, then forwards to the observer the C{log:} section describes.
    """

    def __init__(self, stdout, limit=500):
        self.stdout = stdout
        self.limit = limit
        self.buffer = []
        self.target = None

    def __call__(self, event):
        if self.target is not None:
            self.target(event)
        elif len(self.buffer) < self.limit:
            self.buffer.append(event)

    def hand_to(self, target):
        self.target = target
        early, self.buffer = self.buffer, []
        for event in early:
            target(event)


_handoff = None


def main_log():
    """
    Log observer factory for C{twistd --logger grott.logs.main_log}: the
    C{log:} section (to, file, format) then decides where the main log goes,
    instead of twistd's own stdout/--logfile/--syslog handling.
    """
    global _handoff
    # twistd replaces sys.stdout with a logging file after this call;
    # writing log lines there would loop, so keep the real one.
    _handoff = _Handoff(sys.stdout)
    return _handoff


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

    C{log.to: file} adds a rotating file observer to the global log beside
    twistd's own (stdout with -n, twistd.log daemonized): see README.md
    "Running and logging" for avoiding two copies.
    """

    def __init__(self, config, secrets=(), clock=None, handoff=None):
        self.config = config
        self.secrets = frozenset(secrets)
        self.clock = clock
        self.handoff = handoff
        self._main = None
        self._main_file = None
        self._per_datalogger = None
        self._saved = None
        self._early = None

    @classmethod
    def fromConfig(cls, config, clock=None):
        """
        The service for a whole L{grott.config.Config}: its C{log} section,
        with the secrets found anywhere in it.
        """
        return cls(config.log, secrets_in(config), clock)

    def privilegedStartService(self):
        # Earliest moment after makeService: mask secrets before the other
        # children bind ports and log about it, and keep those lines for the
        # log file, which opens in startService (after twistd has switched
        # to --uid, so the file belongs to the user who rotates it).
        set_secrets(set(_secrets) | self.secrets)
        if self.config.to == "file" and self._handoff_in_use() is None:
            self._early = _Handoff(None)
            _tlog.globalLogPublisher.addObserver(self._early)
        service.Service.privilegedStartService(self)

    def _handoff_in_use(self):
        return self.handoff if self.handoff is not None else _handoff

    def _open(self, path):
        c = self.config
        return open_log_file(path, c.rotate, c.max_bytes, c.keep, self.clock)

    def _observer_for(self, out):
        if self.config.format == "json":
            return _tlog.jsonFileLogObserver(out, recordSeparator="")
        return _tlog.textFileLogObserver(out)

    def startService(self):
        global trace_packets
        c = self.config
        set_secrets(set(_secrets) | self.secrets)
        self._saved = (levels.defaultLogLevel, levels.logLevelForNamespace("grott"),
                       trace_packets)
        set_level(c.level)
        trace_packets = c.level == "debug" or c.per_datalogger
        handoff = self._handoff_in_use()
        if c.to == "file":
            self._main_file = self._open(c.file)
            out = self._main_file
        elif handoff is not None:
            out = handoff.stdout
        else:
            out = None
        if out is not None:
            self._main = Redacting(_tlog.FilteringLogObserver(self._observer_for(out), [levels]))
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
                wanted=lambda event: levels(event) != _tlog.PredicateResult.no,
                opener=self._open, on_error=self._file_failed)
            redacted.addObserver(self._per_datalogger)
        service.Service.startService(self)
        log.info("logging at level {threshold}{to}{per}", threshold=c.level,
                 to=f" to {os.path.abspath(c.file)}" if c.to == "file" else "",
                 per=(f", one file per datalogger in {os.path.abspath(c.directory)}"
                      if c.per_datalogger else ""))
        if c.format == "json" and c.to == "stdout" and handoff is None:
            log.warn(  # noqa: G010 (twisted.logger has no warning())
                "log.format json with log.to stdout needs twistd --logger "
                "grott.logs.main_log; the main log stays twistd's text")

    def _file_failed(self, name, error):
        log.error("cannot write the log of datalogger {datalogger}: {error}",
                  datalogger=name, error=str(error))

    def stopService(self):
        global trace_packets
        service.Service.stopService(self)
        if self._early is not None:
            _tlog.globalLogPublisher.removeObserver(self._early)
            self._early = None
        if self._per_datalogger is not None:
            redacted.removeObserver(self._per_datalogger)
            self._per_datalogger.close_all()
            self._per_datalogger = None
        handoff = self._handoff_in_use()
        if self._main is not None and (handoff is None or handoff.target is not self._main):
            _tlog.globalLogPublisher.removeObserver(self._main)
            if self._main_file is not None:
                self._main_file.close()
        # With --logger grott.logs.main_log the main log stays open: twistd's
        # last lines ("Main loop terminated") still go there before exit.
        self._main = None
        self._main_file = None
        if self._saved is not None:
            default, grott_level, trace_packets = self._saved
            levels.defaultLogLevel = default
            levels.setLogLevelForNamespace("grott", grott_level)
            self._saved = None
