"""
Thread pools grott owns.
"""

import threading
from functools import partial

from twisted.python.threadpool import ThreadPool

__all__ = ["DaemonThreadPool"]


class DaemonThreadPool(ThreadPool):
    """
    A thread pool whose threads do not keep the process alive: a plugin or
    a disk stuck forever must not stop grott from exiting.
    """

    threadFactory = staticmethod(partial(threading.Thread, daemon=True))
