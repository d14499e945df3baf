"""
What a decoder has learnt from the records it has seen: the device type
code (DTC) each inverter announced, the family decided for it, and the
smart meter each datalogger's 0x20 records describe.

Some records cannot say what they are: an off-grid SPF at night sends the
same 45-register blocks as a classic string inverter, with every frequency
at zero.  The record of the afternoon before could tell, so the decoder
keeps that decision here, per inverter, and uses it when a record cannot
decide.  One state serves every session of a running grott (inverter
serials are unique across dataloggers) and every packet of one
C{grott decode} call, which reads several packets as one stream.

A datalogger may send a meter's values twice: as 0x20 (keyed by the
inverter serial and device address the record carries) and as 0x1b (a text
line naming only the datalogger).  The 0x1b record cannot say which meter
it is, so the decoder notes the meter ids of each datalogger's 0x20
records here and gives its 0x1b records that id when there is exactly one.

Bounded: past C{limit} inverters the oldest entries are forgotten, so
garbage that happens to parse cannot grow memory.
"""

import sys

__all__ = ["DecoderState"]


class DecoderState:
    """
    Per-inverter memory of a L{grott.registers.Decoder}.  Keys are
    C{(datalogger serial, inverter serial or device address)}.
    """

    __slots__ = ("_dtcs", "_families", "_meters", "limit")

    #: Meter ids kept per datalogger: one is the rule, more only tells
    #: "several" (a datalogger with many meters needs no list of them all).
    METERS_KEPT = 2

    def __init__(self, limit=4096):
        self.limit = limit
        self._dtcs = {}
        self._families = {}
        self._meters = {}

    def __len__(self):
        return len(self._families) + len(self._dtcs) + len(self._meters)

    def _put(self, table, key, value):
        if table.get(key) == value:
            return
        table.pop(key, None)
        if len(table) >= self.limit:
            del table[next(iter(table))]
        # Serials interned: the sessions keep the same ones (one string per
        # serial in a grott holding thousands of dataloggers).
        datalogger, inverter = key
        if inverter.__class__ is str:
            inverter = sys.intern(inverter)
        table[sys.intern(datalogger), inverter] = value

    def family(self, key):
        """The family decided for C{key} by an earlier record, or None."""
        return self._families.get(key)

    def remember_family(self, key, family):
        self._put(self._families, key, family)

    def device_type_code(self, key):
        """The DTC of C{key}'s last announce, or None."""
        return self._dtcs.get(key)

    def remember_device_type_code(self, key, dtc):
        self._put(self._dtcs, key, dtc)

    def remember_meter(self, datalogger, device_id):
        """
        Note that C{datalogger} sent a 0x20 record of the meter C{device_id}.
        """
        known = self._meters.get(datalogger, ())
        if device_id in known or len(known) >= self.METERS_KEPT:
            return
        if not known and len(self._meters) >= self.limit:
            del self._meters[next(iter(self._meters))]
        self._meters[sys.intern(datalogger)] = (*known, device_id)

    def meter_of(self, datalogger):
        """
        The device id of C{datalogger}'s meter when its 0x20 records named
        exactly one, else None (none seen yet, or several).
        """
        known = self._meters.get(datalogger, ())
        return known[0] if len(known) == 1 else None

    def forget(self):
        """Forget everything (a new stream)."""
        self._dtcs.clear()
        self._families.clear()
        self._meters.clear()
