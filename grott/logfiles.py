"""
Log files that cannot fill a disk, and the per-datalogger packet logs.

grott runs for months on SD cards: every file it writes rotates, either by
size (C{twisted.python.logfile.LogFile}: C{max_bytes} per file, C{keep} old
files) or daily (C{keep} days of files).  Twisted's L{DailyLogFile} never
deletes anything, so the daily variant here prunes old days itself.

L{DataloggerLogs} is the observer behind C{log.per_datalogger}: it writes
the events of namespace C{grott.packets} (fields documented in
L{grott.logs.PacketTracing}) into one file per datalogger serial, opened on the
first packet and closed when the session ends.  Serials come off the wire,
so they are reduced to a safe file name before touching the file system.
"""

import collections
import glob
import json
import os
import re
import time

from twisted.logger import eventAsJSON, formatEvent, formatTime, timeFormatRFC3339
from twisted.python.logfile import DailyLogFile, LogFile

__all__ = ["DataloggerLogs", "open_log_file", "safe_name"]


class _DailyFile(DailyLogFile):
    """
    A L{DailyLogFile} that keeps C{keep} old days and reads the time from a
    clock (so tests can move it).  Old files are named C{PATH.YYYY-MM-DD}.
    """

    _DATED = re.compile(r"\.(\d{4})-(\d{2})-(\d{2})$")

    def __init__(self, name, directory, keep, clock=None):
        self._clock = clock
        self.keep = keep
        super().__init__(name, directory)

    def toDate(self, *args):
        if not args:
            args = (self._clock.seconds() if self._clock is not None else time.time(),)
        return time.localtime(*args)[:3]

    def suffix(self, tupledate):
        if not isinstance(tupledate, (tuple, list)):
            tupledate = self.toDate(tupledate)
        year, month, day = tupledate[:3]
        return f"{year:04d}-{month:02d}-{day:02d}"

    def rotate(self):
        super().rotate()
        old = sorted(p for p in glob.glob(glob.escape(self.path) + ".*") if self._DATED.search(p))
        for path in old[:max(0, len(old) - self.keep)]:
            try:
                os.remove(path)
            except OSError:
                pass


def open_log_file(path, rotate="size", max_bytes=10_000_000, keep=5, clock=None):
    """
    Open (append to) the log file at C{path}, rotating as configured; its
    directory is created if missing.  OSError if it cannot be opened.
    """
    path = os.path.abspath(path)
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    if rotate == "daily":
        return _DailyFile(name, directory, keep, clock)
    return LogFile(name, directory, rotateLength=max_bytes, maxRotatedFiles=keep)


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def safe_name(serial):
    """
    A file-name-safe form of a datalogger serial: a hostile datalogger must
    not be able to write outside the log directory (C{../../etc/x}).
    """
    return _UNSAFE.sub("_", serial)[:64] or "_"


class DataloggerLogs:
    """
    Observer writing each datalogger's packets to
    C{DIRECTORY/grott_SERIAL.log}.

    Packet events (namespace C{grott.packets}) open the file; other grott
    events carrying the same C{serial} are added while it is open if
    C{wanted(event)} (the level filter) allows.  At most C{max_open} files
    are open at once: the least recently written is closed (and reopened,
    appending, when needed), so a bug that never ends a session cannot run
    out of file descriptors.
    """

    PACKETS = "grott.packets"

    def __init__(self, directory, fmt="text", decoded=False, wanted=None,
                 opener=open_log_file, on_error=None, max_open=256):
        self.directory = directory
        self.fmt = fmt
        self.decoded = decoded
        self.wanted = wanted or (lambda event: True)
        self.opener = opener
        self.on_error = on_error or (lambda name, error: None)
        self.max_open = max_open
        self._files = collections.OrderedDict()
        self._broken = set()

    def __call__(self, event):
        serial = event.get("serial")
        if not isinstance(serial, str) or not serial:
            return
        name = safe_name(serial)
        packet = event.get("log_namespace") == self.PACKETS
        if packet:
            f = self._open(name)
        else:
            f = self._files.get(name)
            if f is not None and not self.wanted(event):
                f = None
        if f is not None:
            try:
                f.write(self._format(event, packet))
                f.flush()
            except OSError as e:
                self._fail(name, e)
        if packet and event.get("session_closed"):
            self._close(name)
            self._broken.discard(name)

    def path_for(self, serial):
        return os.path.join(self.directory, f"grott_{safe_name(serial)}.log")

    def open_names(self):
        return list(self._files)

    def close_all(self):
        for name in list(self._files):
            self._close(name)
        self._broken.clear()

    def _open(self, name):
        f = self._files.get(name)
        if f is not None:
            self._files.move_to_end(name)
            return f
        if name in self._broken:
            return None
        try:
            f = self.opener(os.path.join(self.directory, f"grott_{name}.log"))
        except OSError as e:
            self._fail(name, e)
            return None
        self._files[name] = f
        while len(self._files) > self.max_open:
            self._close(next(iter(self._files)))
        return f

    def _close(self, name):
        f = self._files.pop(name, None)
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    def _fail(self, name, error):
        """
        Stop writing this datalogger's file until its session ends, and say
        so once (not once per packet).
        """
        self._close(name)
        if name not in self._broken:
            self._broken.add(name)
            self.on_error(name, error)

    def _format(self, event, packet):
        if self.fmt == "json":
            event = dict(event)
            if packet and not self.decoded:
                event.pop("record", None)
            return eventAsJSON(event) + "\n"
        when = formatTime(event.get("log_time"), timeFormatRFC3339)
        if not packet:
            level = getattr(event.get("log_level"), "name", "-")
            return f"{when} [{event.get('log_namespace', '-')}#{level}] {formatEvent(event)}\n"
        if event.get("session_closed"):
            return f"{when} session closed\n"
        kind = event.get("record_type")
        kind = f"{kind:#06x}" if isinstance(kind, int) else str(kind)
        line = (f"{when} {event.get('direction', '?')} {kind} "
                f"{event.get('record_name', '?')} {event.get('hex', '')}")
        record = event.get("record")
        if self.decoded and record is not None:
            line += " " + json.dumps(record, default=str, ensure_ascii=False)
        return line + "\n"
