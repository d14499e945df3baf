"""
Keep a repeated warning from flooding the log.

A peer that sends the same bad packet a million times, a plugin that
raises on every record, a disk that stays full: each would write one line
per event, and the log would then grow faster than the input and slow the
relay that writes it.  L{LogThrottle} lets the first few events of a kind
through in full, then holds the rest back and reports them as one summary
line per interval with a count, so no input can make the log grow faster
than a small, fixed number of lines per kind and interval.

    throttle = LogThrottle(clock, summary, burst=3, interval=60)
    if throttle.admit("garbage"):
        log.warn("... the full line ...")

    def summary(key, count, seconds):
        log.warn("{count} more {key} warnings in the last {seconds:.0f} s",
                 count=count, key=key, seconds=seconds)
"""

__all__ = ["LogThrottle"]


class _Window:
    __slots__ = ("start", "count", "held", "flush")

    def __init__(self, start):
        self.start = start
        self.count = 0
        self.held = 0
        self.flush = None


class LogThrottle:
    """
    Per-key rate limit for log lines: C{burst} lines per C{interval}, the
    rest counted and reported through C{summary(key, count, seconds)} once
    the interval is over.

    @ivar suppressed: how many events were held back in all (for stats).
    """

    #: Keys remembered at once; the oldest go first past this.  Callers use
    #: a handful of fixed keys, this only bounds a caller that does not.
    max_keys = 256

    def __init__(self, clock, summary, burst=5, interval=60.0):
        self.clock = clock
        self.summary = summary
        self.burst = burst
        self.interval = interval
        self.suppressed = 0
        self._windows = {}

    def admit(self, key):
        """
        Count one event of C{key}: True when its line should be logged in
        full, False when it is held back for the next summary.
        """
        now = self.clock.seconds()
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= self.max_keys:
                self._forget_oldest()
            window = self._windows[key] = _Window(now)
        elif window.flush is None and now - window.start >= self.interval:
            # A quiet interval went by: the next events get a fresh burst.
            window.start = now
            window.count = 0
        if window.count < self.burst:
            window.count += 1
            return True
        window.held += 1
        self.suppressed += 1
        if window.flush is None:
            delay = max(0.0, window.start + self.interval - now)
            window.flush = self.clock.callLater(delay, self._flush, key)
        return False

    def _flush(self, key):
        window = self._windows.get(key)
        if window is None:
            return
        window.flush = None
        held, window.held = window.held, 0
        now = self.clock.seconds()
        seconds = now - window.start
        # The next interval starts now and is still throttled: a flood
        # that goes on gets one summary per interval, not a fresh burst.
        window.start = now
        window.count = self.burst
        if held:
            self.summary(key, held, seconds)

    def _forget_oldest(self):
        key = next(iter(self._windows))
        self._flush(key)
        window = self._windows.pop(key)
        if window.flush is not None:
            window.flush.cancel()

    def stop(self):
        """
        Report what is still held back and cancel the pending summaries
        (call when the connection or service that owns the throttle ends).
        """
        for key in list(self._windows):
            window = self._windows[key]
            if window.flush is not None:
                window.flush.cancel()
                window.flush = None
                held, window.held = window.held, 0
                if held:
                    self.summary(key, held, self.clock.seconds() - window.start)
        self._windows.clear()
