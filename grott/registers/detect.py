"""
Which register map a record needs (protocol.md section 12).

Order of evidence: a family configured for the inverter or datalogger
serial; then the register ranges of the blocks; then the device type code
(DTC) of the inverter's last announce.  45-register blocks are ambiguous
(a classic string inverter and an off-grid SPF send the same 0-44, 45-89,
90-134 blocks), so there the DTC, then the values themselves decide: a grid
frequency in register 13 is a classic inverter, an SPF keeps the high word
of its AC charge power there and its frequencies in 21 and 23.  At night an
SPF's frequencies can all be zero; its battery still is not: a battery
voltage in register 17 (0.01 V, 9..65 V) beside a state of charge in 18
(0..100 %) is an SPF, where a classic inverter keeps the low word of its
phase 1 power (zero without sun) and the phase 2 voltage.  When nothing
decides, L{resolve_ambiguous} says so (None) and the decoder uses what an
earlier record of the same inverter decided (L{grott.registers.state}).

The block layout is no evidence: a classic inverter was captured sending
the 0-44, 45-89, 90-134 blocks that grott-async takes for an SPF.
"""

from grott.registers.maps import DTC_FAMILIES

__all__ = ["AMBIGUOUS_45", "family_from_layout", "resolve_ambiguous"]

#: Marker: 45-register blocks, classic or SPF.
AMBIGUOUS_45 = "classic-or-spf"

_SHORT_BLOCK = 45


def _overlaps(layout, low, high):
    return any(start <= high and end >= low for start, end in layout)


def family_from_layout(layout, dtc=None):
    """
    The family the block ranges point to, L{AMBIGUOUS_45}, or the DTC's
    family (None when nothing says).
    """
    if not layout:
        return DTC_FAMILIES.get(dtc)
    if _overlaps(layout, 3000, 3374):
        return "tlx"
    if _overlaps(layout, 1000, 1249) or _overlaps(layout, 2000, 2124):
        return "storage"
    if all(end - start < _SHORT_BLOCK for start, end in layout) and _overlaps(layout, 0, 44):
        return AMBIGUOUS_45
    if _overlaps(layout, 125, 249) or _overlaps(layout, 875, 999):
        return "tl3x"
    if _overlaps(layout, 0, 124):
        return DTC_FAMILIES.get(dtc, "tl3x")
    return DTC_FAMILIES.get(dtc)


def _frequency(value):
    return value is not None and 4500 <= value <= 6500


def _battery(voltage, soc):
    return voltage is not None and 900 <= voltage <= 6500 and soc is not None and soc <= 100


def resolve_ambiguous(dtc, word):
    """
    Classic, SPF, or None (the record cannot tell) for 45-register input
    blocks.  C{word(register)} returns a register's value or None.
    """
    family = DTC_FAMILIES.get(dtc)
    if family in ("classic", "spf"):
        return family
    frequency = word(13)
    if _frequency(frequency):
        return "classic"
    if frequency == 0 and (_frequency(word(21)) or _frequency(word(23))
                           or _battery(word(17), word(18))):
        return "spf"
    return None
