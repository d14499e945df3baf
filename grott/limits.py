"""
How many dataloggers this process can hold.

Each datalogger costs two descriptors (its connection and its upstream).
Running out of descriptors would make accept() fail for everyone, so grott
raises its soft RLIMIT_NOFILE as far as the hard limit allows and refuses
dataloggers beyond what that leaves after a reserve for listeners, log
files, plugins and the admin socket.
"""

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None

#: Descriptors kept for everything that is not a datalogger.
RESERVE = 64


def raise_nofile_limit():
    """
    Raise the soft open-file limit to the hard limit; return the new soft
    limit (None where the platform has no such limit).
    """
    if resource is None:  # pragma: no cover
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def dataloggers_for(soft_limit, reserve=RESERVE):
    """
    The number of dataloggers C{soft_limit} descriptors can serve.
    """
    return max(1, (soft_limit - reserve) // 2)
