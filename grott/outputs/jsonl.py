"""
The jsonl output: each record as one JSON line appended to a file.

The file is flushed after every record, so another program can C{tail -f}
it.  Writing may block on a slow disk, so the plugin is an
L{IBlockingPlugin}: it runs in grott's plugin thread pool, never on the
reactor thread.
"""

import os

from zope.interface import implementer

from grott.interfaces import IBlockingPlugin, IGrottPluginService
from grott.outputs import jsonenc

__all__ = ["JsonlOutput"]


@implementer(IBlockingPlugin, IGrottPluginService)
class JsonlOutput:
    """
    Appends C{record.as_dict()} as one line of JSON to C{path}.
    """

    name = "jsonl"

    def __init__(self, path, dumps=jsonenc.dumps):
        self.path = path
        self._dumps = dumps
        self._file = None

    def startService(self):
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 - open for the service's lifetime

    def stopService(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def data(self, packet, record, log):
        self._file.write(jsonenc.line(record.as_dict(), self._dumps))
        self._file.flush()
