"""
Status and fault codes as words, per family.

A dashboard that shows "3" for an inverter in fault tells its user nothing;
these tables turn the codes into the words the Growatt documents use, so a
record carries both the number (for automations) and the text (for people).
A code a table does not know comes out as "unknown (N)" (faults: "fault
code N"), never as an error:
firmware adds codes faster than documents describe them.

Sources: Growatt Inverter Modbus RTU Protocol II v1.24 (status words of
input registers 0 / 3000 / 1000, fault main codes 1-32, BMS status 3212);
Growatt's off-grid SPF RTU protocol (status 0-12, as other open projects cite
it).  The old protocol v3.x of classic inverters uses the same status and
fault numbering for its registers 0 and 40.
"""

__all__ = ["TEXTS", "lookup"]


def _table(pairs, default="unknown ({})"):
    table = dict(pairs)

    def text(code):
        found = table.get(code)
        return found if found is not None else default.format(code)

    text.table = table
    #: Every known code -> text: decode plans look codes up here first and
    #: call the function only for codes no table knows.
    text.words = dict(table)
    return text


#: Inverter status, register 0 (classic, TL3-X, MIX/SPH inverter side).
_INVERTER_STATUS = {0: "waiting", 1: "normal", 3: "fault", 4: "flash"}

#: Fault main codes of protocol II v1.24 (input 105 / 3105) and of classic
#: inverters (input 40): 1-23 are shown by the inverter as "Error 100+n-1".
_FAULTS = {0: "no fault"}
_FAULTS.update({code: f"error {99 + code}" for code in range(1, 24)})
_FAULTS.update({
    24: "auto test failed",
    25: "no AC connection",
    26: "PV isolation low",
    27: "residual current high",
    28: "output DC current high",
    29: "PV voltage high",
    30: "AC voltage out of range",
    31: "AC frequency out of range",
    32: "module temperature high",
})

#: System work mode of storage inverters (input 1000) and the high byte of
#: TL-XH input 3000.
_STORAGE_MODE = {
    0: "waiting", 1: "self-test", 2: "reserved", 3: "fault", 4: "flash",
    5: "PV and battery online", 6: "battery online", 7: "PV offline", 8: "battery offline",
}

#: Off-grid SPF status (input 0).
_SPF_STATUS = {
    0: "standby", 1: "no use", 2: "discharge", 3: "fault", 4: "flash",
    5: "PV charge", 6: "AC charge", 7: "combined charge", 8: "combined charge and bypass",
    9: "PV charge and bypass", 10: "AC charge and bypass", 11: "bypass",
    12: "PV charge and discharge",
}

#: BMS battery working status (TL-XH input 3212).
_BMS_STATUS = {
    0: "dormant", 1: "charge", 2: "discharge", 3: "idle", 4: "standby",
    5: "soft start", 6: "fault", 7: "update",
}

#: Status of storage inverters (input 0, SPA 2000): the inverter words,
#: then the storage work modes (SPH records with status 5 and 6 are real).
_STORAGE_STATUS = dict(_STORAGE_MODE)
_STORAGE_STATUS.update(_INVERTER_STATUS)

_inverter_status = _table(_INVERTER_STATUS)
_storage_mode = _table(_STORAGE_MODE)


def _tlx_status(word):
    """
    TL-X input 3000: the low byte is the inverter status, the high byte the
    work mode of TL-XH storage variants (zero on plain TL-X).
    """
    status = _inverter_status(word & 0xFF)
    mode = word >> 8
    return status if not mode else f"{status}, {_storage_mode(mode)}"


_tlx_status.table = _INVERTER_STATUS
_tlx_status.words = {mode << 8 | status: _tlx_status(mode << 8 | status)
                     for mode in [0, *_STORAGE_MODE] for status in _INVERTER_STATUS}

#: Table name (as used by L{grott.registers.fields.Field.table}) -> code to text.
TEXTS = {
    "inverter_status": _inverter_status,
    "tlx_status": _tlx_status,
    "storage_mode": _storage_mode,
    "storage_status": _table(_STORAGE_STATUS),
    "spf_status": _table(_SPF_STATUS),
    "fault": _table(_FAULTS, "fault code {}"),
    "bms_status": _table(_BMS_STATUS),
}


def lookup(table, code):
    """The text of C{code} in the table named C{table}."""
    return TEXTS[table](code)
