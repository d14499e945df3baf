"""
The jsonl output: each record as one JSON line appended to a file.

Each line is written with one unbuffered C{write}, so another program can
C{tail -f} the file and never sees half a line from an earlier failure.
Writing may block on a slow disk, so the plugin is an L{IBlockingPlugin}:
it runs in grott's plugin thread pool, never on the reactor thread.

What goes wrong in operation, and what it does:

  - The disk is full or the file cannot be opened (a directory that cannot
    be created, permissions): one error line when it starts, the record
    counted as failed, the file reopened for the next record; one line
    when writing works again, with how many records were lost.  A partial
    line is cut off again, so the file stays one JSON document per line.
  - The file is moved or deleted under grott (logrotate without
    copytruncate, a user's C{rm}): the next record notices that the path
    no longer names the open file (device and inode) and opens a new file
    there, so nothing is written into a file nobody can see while being
    counted as delivered.
"""

import os

from zope.interface import implementer

from grott.interfaces import (
    DeliveryFailed,
    IBlockingPlugin,
    IConfigurablePlugin,
    IGrottPluginService,
)
from grott.logs import Logger
from grott.outputs import jsonenc

__all__ = ["JsonlFactory", "JsonlOutput", "factory", "path_problem"]

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


def path_problem(path):
    """
    Why a jsonl file at C{path} cannot be written or created (missing
    directories are created), or None; for C{grott check} and start-up.
    """
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return f"{path} is a directory"
    if os.path.exists(path):
        return None if os.access(path, os.W_OK) else f"cannot write to {path}"
    probe = os.path.dirname(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        return f"cannot create {path}: {probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"cannot create {path}: cannot write in {probe}"
    return None


@implementer(IBlockingPlugin, IGrottPluginService)
class JsonlOutput:
    """
    Appends C{record.as_dict()} as one line of JSON to C{path}.

    Only ever used from one thread at a time (the host runs one delivery or
    hook per plugin at once), so the state below needs no lock.
    """

    name = "jsonl"
    log = Logger(namespace="grott.plugin.jsonl")

    def __init__(self, path, dumps=jsonenc.dumps):
        self.path = path
        self._dumps = dumps
        self._fd = None
        self._identity = None
        self._size = 0
        #: Why writing fails, while it does (None: it works).
        self._failing = None
        self._lost = 0

    def startService(self):
        try:
            self._open()
        except OSError as e:
            self._failing = e.strerror or str(e)
            self.log.error("jsonl: cannot open {path}: {error}; records are counted as failed "
                           "and the file is tried again with each one",
                           path=self.path, error=self._failing)

    def stopService(self):
        self._close()

    def _open(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fd = os.open(self.path, _FLAGS, 0o644)
        status = os.fstat(fd)
        self._fd, self._identity, self._size = fd, (status.st_dev, status.st_ino), status.st_size

    def _close(self):
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass

    def _moved(self):
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (status.st_dev, status.st_ino) != self._identity

    def _write(self, line):
        view = memoryview(line)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            if len(view) < len(line):
                # Half a line would glue onto the next record's.
                try:
                    os.ftruncate(self._fd, self._size)
                except OSError:
                    pass
            raise
        self._size += len(line)

    def data(self, packet, record, log):
        log = log or self.log
        line = jsonenc.line(record.as_dict(), self._dumps)
        try:
            if self._fd is not None and self._moved():
                log.info("jsonl: {path} was moved or deleted (log rotation?); writing to a new "
                         "file there", path=self.path)
                self._close()
            if self._fd is None:
                self._open()
            self._write(line)
        except OSError as e:
            self._close()  # and reopen for the next record
            self._lost += 1
            if self._failing is None:
                self._failing = e.strerror or str(e)
                log.error("jsonl: cannot write to {path}: {error}; records are counted as failed "
                          "until it works again", path=self.path, error=self._failing)
            raise DeliveryFailed(f"jsonl: {self.path}: {e.strerror or e}") from None
        if self._failing is not None:
            log.info("jsonl: writing to {path} again; {count} record(s) were lost meanwhile",
                     path=self.path, count=self._lost)
            self._failing = None
            self._lost = 0


@implementer(IConfigurablePlugin)
class JsonlFactory:
    """
    Builds L{JsonlOutput} from C{outputs.jsonl} (a L{grott.config.JsonlConfig}).
    """

    name = "jsonl"

    def makePlugin(self, settings, reactor):
        return JsonlOutput(settings.path)


factory = JsonlFactory()
