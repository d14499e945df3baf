"""
Data guards: which live records may become Home Assistant's state.

Home Assistant books every step of a C{total_increasing} sensor into its
long-term statistics: a counter that goes down starts a "new cycle" and the
next value is counted again in full; a decoding slip that reads 100,000 kWh
is booked as production.  So before a live record reaches an inverter's
state topic, L{DeviceGuard.check} asks:

 - C{timestamp}: is its time a date at all, not before 2000 and not more
   than a day ahead of grott's clock, and not more than two hours behind
   the previous live record (buffered replays never come here)?
 - C{decrease}: does a C{total_increasing} counter go down?  A C{*today}
   counter may restart when the inverter's date changes.
 - C{jump}: does an energy counter grow more than the inverter could
   produce since the previous record (1.5 x its rated power, at least
   30 kW, plus 1 kWh of slack)?

A record that fails is held (published on the device's C{held} topic, not
on its state topic) and counted.  After three held records in a row for a
counter or a clock that went back, the guard believes the third (a counter
reset, a clock set) and takes it as the new baseline rather than hiding the
inverter forever; a time that is not a plausible date is never believed.
Pure: the caller passes the wall clock.
"""

import datetime

__all__ = ["REASONS", "DeviceGuard", "is_today_counter"]

#: Every reason a record can be held, as counted in stats.
REASONS = ("timestamp", "decrease", "jump", "serial_changed")

#: Held records in a row after which the guard believes them.
BELIEVE_AFTER = 3

_MIN_CAP_W = 30000.0
_SLACK_KWH = 1.0
_MAX_BACKWARDS = datetime.timedelta(hours=2)
_MAX_AHEAD = datetime.timedelta(days=1)


def is_today_counter(key):
    lower = key.lower()
    return "today" in lower or lower.endswith("_tod")


def parse_time(text):
    if not text:
        return None
    try:
        value = datetime.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return value.replace(tzinfo=None)


class DeviceGuard:
    """
    The memory of one device's last accepted live record.

    @param counters: key -> unit of the device's C{total_increasing} values.
    """

    def __init__(self, counters):
        self.counters = counters
        self.rated_power = None
        self._time = None
        self._values = {}
        self._held = 0

    def check(self, timestamp, values, now):
        """
        None when the record may become the live state, else the reason
        (one of L{REASONS}).

        @param timestamp: the record's ISO time (the datalogger's clock).
        @param now: wall clock, epoch seconds (a datalogger in another time
            zone is at most a day away from it).
        """
        when = parse_time(timestamp)
        wall = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).replace(  # noqa: UP017
            tzinfo=None)
        if when is None or when.year < 2000 or when > wall + _MAX_AHEAD:
            return "timestamp"
        reason = self._reason(when, values)
        if reason is None or self._held + 1 >= BELIEVE_AFTER:
            self._held = 0
            self._accept(when, values)
            return None
        self._held += 1
        return reason

    def _reason(self, when, values):
        if self._time is None:
            return None
        if when < self._time - _MAX_BACKWARDS:
            return "timestamp"
        hours = max(0.0, (when - self._time).total_seconds() / 3600.0)
        cap = max(_MIN_CAP_W, 1.5 * (self.rated_power or 0)) / 1000.0 * hours + _SLACK_KWH
        new_day = when.date() != self._time.date()
        for key, unit in self.counters.items():
            new, old = values.get(key), self._values.get(key)
            if not isinstance(new, (int, float)) or not isinstance(old, (int, float)):
                continue
            if new < old:
                if not (new_day and is_today_counter(key)):
                    return "decrease"
            elif unit == "kWh" and new - old > cap:
                return "jump"
        return None

    def _accept(self, when, values):
        self._time = when
        for key in self.counters:
            value = values.get(key)
            if isinstance(value, (int, float)):
                self._values[key] = value
