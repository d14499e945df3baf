"""
Smart-meter records: 0x20 (the meter's measurements as 32-bit numbers) and
0x1b (the meter log line: comma-separated decimal text), as named values.

Energy meters (Eastron SDM630/SDM120, Chint DTSU666/DDSU666) sit on the RS485
bus behind the datalogger; the datalogger forwards what it reads from them in
records of their own.  A meter is its own device: its records carry the
datalogger's serial, their header's device address (0x22, 0x24, 0x50 seen)
and, in 0x20, the serial of the inverter the meter reports for.

Layouts (protocol.md sections 7.10, 7.11 and 10.7; SF = serial field, 10
bytes for protocols 2 and 5, 30 for protocol 6; payload offsets)::

    0x20: datalogger SF, inverter SF, timestamp (6), length (2), 4 bytes
          of unknown meaning, then 32-bit big-endian values
    0x1b: datalogger SF, 2 bytes unknown, timestamp (6), text length (2),
          then that many bytes of ASCII: numbers separated by commas

The 2-byte length after the timestamp counts the bytes after it (the 4
unknown bytes and the values): 160 with 39 values and 200 with 49 in the
two public captures (grott issues #47 and #352; protocol.md calls all six
bytes unknown).  A record whose length disagrees is still decoded, with a
C{warning}.

Names are the ones Grott publishes (layouts T060120 and T06501b), so
dashboards built on Grott keep working; positions Grott leaves unnamed come
out as C{value_<n>} (0x20, n counted from 0) and C{pos<n>} (0x1b, n from 1,
Grott's own names for them).

The 0x1b text is the meter's own register order, so it differs by meter
model.  Grott's layout is an Eastron SDM630's (energies first); a Chint
DTSU666 behind a ShineMaster (grott issue #186, a real capture) sends line
voltages, phase voltages, currents, total and phase powers, ... instead.
Such a text is recognised by its own arithmetic (L{_is_dtsu}) and its
numbers get the same names as the same quantities in the SDM630 order, so
a dashboard works with either meter.
"""

import math
import struct
import types

from grott.codec import PacketError, RecordType, serial_field, serial_field_size
from grott.registers.blocks import encode_timestamp, parse_timestamp

__all__ = ["METER_LOG_FIELDS", "METER_LOG_FIELDS_DTSU", "METER_RECORDS", "METER_VALUE_FIELDS",
           "MeterError", "MeterValue", "decode_meter", "encode_meter_log",
           "encode_meter_values", "meter_device_id"]

#: Record types of smart-meter records.
METER_RECORDS = frozenset({RecordType.METER_DATA, RecordType.METER_LOG})

_HEADER_OFFSET = 8
_PRINTABLE = bytes(range(0x21, 0x7F))
_TIMESTAMP_SIZE = 6
_UNKNOWN_0X20 = 6
_UNKNOWN_0X1B = 2


class MeterError(PacketError):
    """A meter record that does not add up; the message says where."""


class MeterValue:
    """
    One named meter value: position (0x20: index of the 32-bit value;
    0x1b: 1-based position in the text), unit, divisor, sign, and for the
    split power values which part (C{"import"}: >= 0, C{"export"}: <= 0).
    """

    __slots__ = ("name", "part", "position", "scale", "signed", "unit")

    def __init__(self, name, position, unit="", scale=1, signed=False, part=None):
        self.name = name
        self.position = position
        self.unit = unit
        self.scale = scale
        self.signed = signed
        self.part = part

    def describe(self, text=False):
        if text:
            kind = "number in the text"
        else:
            kind = f"{'signed' if self.signed else 'unsigned'} 32-bit"
            if self.scale != 1:
                kind += f" / {self.scale}"
        if self.part == "import":
            kind += ", only when >= 0 (else 0)"
        elif self.part == "export":
            kind += ", only when <= 0 (else 0)"
        return kind


def _phases(names, first, unit, scale, signed):
    return [MeterValue(name, first + n, unit, scale, signed) for n, name in enumerate(names)]


#: 0x20: value position -> name (Grott layout T060120).
METER_VALUE_FIELDS = (
    *_phases(("voltage_l1", "voltage_l2", "voltage_l3"), 0, "V", 10, False),
    *_phases(("Current_l1", "Current_l2", "Current_l3"), 3, "A", 10, False),
    *_phases(("act_power_l1", "act_power_l2", "act_power_l3"), 6, "W", 10, True),
    *_phases(("app_power_l1", "app_power_l2", "app_power_l3"), 9, "VA", 10, True),
    *_phases(("react_power_l1", "react_power_l2", "react_power_l3"), 12, "var", 10, True),
    *_phases(("powerfactor_l1", "powerfactor_l2", "powerfactor_l3"), 15, "", 1000, True),
    MeterValue("pos_rev_act_power", 18, "W", 10, True),
    MeterValue("pos_act_power", 18, "W", 10, True, "import"),
    MeterValue("rev_act_power", 18, "W", 10, True, "export"),
    MeterValue("app_power", 19, "VA", 10, True),
    MeterValue("react_power", 20, "var", 10, True),
    MeterValue("powerfactor", 21, "", 1000, True),
    MeterValue("frequency", 22, "Hz", 10),
    *_phases(("L1-2_voltage", "L2-3_voltage", "L3-1_voltage"), 23, "V", 10, False),
    MeterValue("pos_act_energy", 26, "kWh", 10),
    MeterValue("rev_act_energy", 27, "kWh", 10),
    MeterValue("pos_act_energy_kvar", 28, "kvarh", 10),
    MeterValue("rev_act_energy_kvar", 29, "kvarh", 10),
    MeterValue("app_energy_kvar", 30, "kVAh", 10),
    MeterValue("act_energy_kwh", 31, "kWh", 10),
    MeterValue("react_energy_kvar", 32, "kvarh", 10),
)


def _log(names, first, unit):
    return [MeterValue(name, first + n, unit) for n, name in enumerate(names)]


#: 0x1b: 1-based text position -> name (Grott layout T06501b, Grott's
#: spelling kept: apperentPower, totalRectiveEnergy).
METER_LOG_FIELDS = (
    MeterValue("active_energy", 1, "kWh"),
    MeterValue("reactive_energy", 2, "kvarh"),
    *_log(("activePowerL1", "activePowerL2", "activePowerL3"), 3, "W"),
    *_log(("reactivePowerL1", "reactivePowerL2", "reactivePowerL3"), 6, "var"),
    *_log(("apperentPowerL1", "apperentPowerL2", "apperentPowerL3"), 9, "VA"),
    *_log(("powerFactorL1", "powerFactorL2", "powerFactorL3"), 12, ""),
    *_log(("voltageL1", "voltageL2", "voltageL3"), 15, "V"),
    *_log(("currentL1", "currentL2", "currentL3"), 18, "A"),
    MeterValue("power", 21, "W", signed=True),
    MeterValue("active_power", 21, "W", signed=True, part="import"),
    MeterValue("reverse_active_power", 21, "W", signed=True, part="export"),
    MeterValue("apparent_power", 22, "VA"),
    MeterValue("reactive_power", 23, "var"),
    MeterValue("power_factor", 24, ""),
    MeterValue("frequency", 25, "Hz"),
    MeterValue("posiActivePower", 26, "kWh"),
    MeterValue("reverActivePower", 27, "kWh"),
    MeterValue("posiReactivePower", 28, "kvarh"),
    MeterValue("reverReactivePower", 29, "kvarh"),
    MeterValue("apparentEnergy", 30, "kVAh"),
    *_log(("totalActiveEnergyL1", "totalActiveEnergyL2", "totalActiveEnergyL3"), 31, "kWh"),
    *_log(("totalRectiveEnergyL1", "totalRectiveEnergyL2", "totalRectiveEnergyL3"), 34,
          "kvarh"),
    MeterValue("total_energy", 37, "kWh"),
    *_log(("l1Voltage2", "l2Voltage3", "l3Voltage1"), 38, "V"),
)

#: 0x1b of a three-phase Chint DTSU666 (its register order, as in the real
#: capture of grott issue #186), under the names of the same quantities in
#: L{METER_LOG_FIELDS}; named only where the capture's own numbers confirm
#: the quantity.  Position 22 sits where the DTSU666 keeps the frequency,
#: but the capture's 49.0 is no grid frequency: it stays C{pos22}, as do
#: 23 and 24.
METER_LOG_FIELDS_DTSU = (
    *_log(("l1Voltage2", "l2Voltage3", "l3Voltage1"), 1, "V"),
    *_log(("voltageL1", "voltageL2", "voltageL3"), 4, "V"),
    *_log(("currentL1", "currentL2", "currentL3"), 7, "A"),
    MeterValue("power", 10, "W", signed=True),
    MeterValue("active_power", 10, "W", signed=True, part="import"),
    MeterValue("reverse_active_power", 10, "W", signed=True, part="export"),
    *_log(("activePowerL1", "activePowerL2", "activePowerL3"), 11, "W"),
    MeterValue("reactive_power", 14, "var"),
    *_log(("reactivePowerL1", "reactivePowerL2", "reactivePowerL3"), 15, "var"),
    MeterValue("power_factor", 18, ""),
    *_log(("powerFactorL1", "powerFactorL2", "powerFactorL3"), 19, ""),
)


def _by_position(fields):
    table = {}
    for field in fields:
        table.setdefault(field.position, []).append(field)
    return table


_BY_POSITION_0X20 = _by_position(METER_VALUE_FIELDS)
_BY_POSITION_0X1B = _by_position(METER_LOG_FIELDS)
_BY_POSITION_DTSU = _by_position(METER_LOG_FIELDS_DTSU)
_ROOT3 = math.sqrt(3)


def _is_dtsu(numbers):
    """
    Whether a 0x1b text (position -> number) is in a Chint DTSU666's
    order: positions 1-3 are line voltages, each sqrt(3) times the phase
    voltage at 4-6 (or both zero, a phase not connected; at least one
    phase live), and position 10, the total power, is the sum of the phase
    powers at 11-13.  In the SDM630 order those positions are energies,
    powers and power factors, which never line up like this.
    """
    try:
        lines = [float(numbers[n]) for n in (1, 2, 3)]
        phases = [float(numbers[n]) for n in (4, 5, 6)]
        total, *powers = (float(numbers[n]) for n in (10, 11, 12, 13))
    except (KeyError, OverflowError):    # not there; an integer no float holds
        return False
    live = 0
    for line, phase in zip(lines, phases):
        if line == 0 and phase == 0:
            continue
        if not 50 <= phase <= 300 or abs(line / (phase * _ROOT3) - 1) > 0.05:
            return False
        live += 1
    return live > 0 and abs(total - sum(powers)) <= max(2.0, 0.02 * abs(total))


def _part(value, part):
    """The import (>= 0) or export (<= 0) part of a signed power; 0 of the same type."""
    if part == "import":
        return value if value > 0 else value - value
    if part == "export":
        return value if value < 0 else value - value
    return value


def meter_device_id(datalogger_serial, inverter_serial, device_address):
    """
    The meter's device identity: the serial it reports for (the inverter's,
    else the datalogger's), "meter", and its header device address in hex.
    """
    owner = inverter_serial or datalogger_serial
    return f"{owner}-meter-{device_address:02x}"


def _serial(raw, what, offset):
    text = raw.split(b"\x00", 1)[0]
    if not text:
        return None
    if text.translate(None, _PRINTABLE):
        raise MeterError(f"{what} at packet offset {offset} is not ASCII text ({raw[:10].hex()})")
    return text.decode("ascii")


class MeterBody:
    """What a meter record holds: serials, timestamp, values, units."""

    __slots__ = ("datalogger_serial", "inverter_serial", "timestamp", "timestamp_raw",
                 "units", "values", "warning")

    def __init__(self, datalogger_serial, inverter_serial, timestamp, timestamp_raw, values,
                 units, warning):
        self.datalogger_serial = datalogger_serial
        self.inverter_serial = inverter_serial
        self.timestamp = timestamp
        self.timestamp_raw = timestamp_raw
        self.values = values
        self.units = units
        self.warning = warning


def _decode_values(payload, sf):
    start = 2 * sf + _TIMESTAMP_SIZE + _UNKNOWN_0X20
    if len(payload) < start + 4:
        raise MeterError(f"meter data record of {len(payload)} body bytes ends before its "
                         f"first value (packet offset {_HEADER_OFFSET + start})")
    datalogger = _serial(payload[:sf], "datalogger serial", _HEADER_OFFSET)
    if datalogger is None:
        raise MeterError(f"datalogger serial at packet offset {_HEADER_OFFSET} is empty")
    inverter = _serial(payload[sf:2 * sf], "inverter serial", _HEADER_OFFSET + sf)
    stamp = payload[2 * sf:2 * sf + _TIMESTAMP_SIZE]
    count = (len(payload) - start) // 4
    words = struct.unpack_from(f">{count}I", payload, start)
    values = {}
    units = {}
    for position, word in enumerate(words):
        fields = _BY_POSITION_0X20.get(position)
        if fields is None:
            values[f"value_{position}"] = word
            units[f"value_{position}"] = ""
            continue
        for field in fields:
            number = (word ^ 0x80000000) - 0x80000000 if field.signed else word
            if field.scale != 1:
                number = number / field.scale
            values[field.name] = _part(number, field.part)
            units[field.name] = field.unit
    warnings = []
    stray = (len(payload) - start) % 4
    if stray:
        warnings.append(f"{stray} bytes after the last 32-bit value ignored")
    (length,) = struct.unpack_from(">H", payload, start - _UNKNOWN_0X20)
    if length != len(payload) - start + 4:
        warnings.append(f"length field says {length} bytes follow it, "
                        f"{len(payload) - start + 4} do")
    warning = "; ".join(warnings) or None
    return MeterBody(datalogger, inverter, parse_timestamp(stamp), stamp.hex(), values, units,
                     warning)


def _number(text):
    try:
        return int(text)
    except ValueError:
        return float(text)


def _decode_log(payload, sf):
    head = sf + _UNKNOWN_0X1B
    text_at = head + _TIMESTAMP_SIZE + 2
    if len(payload) < text_at:
        raise MeterError(f"meter log record of {len(payload)} body bytes ends before its text "
                         f"(packet offset {_HEADER_OFFSET + text_at})")
    datalogger = _serial(payload[:sf], "datalogger serial", _HEADER_OFFSET)
    if datalogger is None:
        raise MeterError(f"datalogger serial at packet offset {_HEADER_OFFSET} is empty")
    stamp = payload[head:head + _TIMESTAMP_SIZE]
    (length,) = struct.unpack_from(">H", payload, head + _TIMESTAMP_SIZE)
    text = payload[text_at:text_at + length]
    warnings = []
    if len(text) < length:
        warnings.append(f"text length says {length} bytes, {len(text)} present")
    numbers = {}
    skipped = []
    # A DTSU666 text ends with a comma: a separator, not an empty number.
    items = text.rstrip(b"\x00 \r\n").removesuffix(b",").split(b",")
    for position, item in enumerate(items, 1):
        item = item.strip(b"\x00 \r\n")
        try:
            number = _number(item.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            skipped.append(position)
            continue
        if isinstance(number, float) and not math.isfinite(number):
            skipped.append(position)
            continue
        numbers[position] = number
    layout = _BY_POSITION_DTSU if _is_dtsu(numbers) else _BY_POSITION_0X1B
    values = {}
    units = {}
    for position, number in numbers.items():
        fields = layout.get(position)
        if fields is None:
            values[f"pos{position}"] = number
            units[f"pos{position}"] = ""
            continue
        for field in fields:
            values[field.name] = _part(number, field.part)
            units[field.name] = field.unit
    if skipped:
        warnings.append("positions that are not numbers skipped: "
                        + ", ".join(str(p) for p in skipped[:10])
                        + (" ..." if len(skipped) > 10 else ""))
    return MeterBody(datalogger, None, parse_timestamp(stamp), stamp.hex(), values, units,
                     "; ".join(warnings) or None)


def decode_meter(record_type, payload, protocol):
    """
    Decode the unscrambled payload of a meter record.

    @raise MeterError: the record does not add up; the message says where.
    """
    sf = serial_field_size(protocol)
    if record_type == RecordType.METER_DATA:
        body = _decode_values(payload, sf)
    else:
        body = _decode_log(payload, sf)
    body.values = types.MappingProxyType(body.values)
    body.units = types.MappingProxyType(body.units)
    return body


# ---------------------------------------------------------------- encoding

def encode_meter_values(datalogger_serial, inverter_serial, words, *, protocol, timestamp=None,
                        unknown=None):
    """
    The unscrambled payload of a 0x20 record carrying the raw 32-bit
    C{words} (signed values as negative integers).  C{unknown}: the six
    bytes after the timestamp; by default the length field and the
    C{00 00 00 84} seen in a real capture.
    """
    packed = b"".join(struct.pack(">i" if word < 0 else ">I", word) for word in words)
    inverter = (serial_field(inverter_serial, protocol) if inverter_serial
                else bytes(serial_field_size(protocol)))
    if unknown is None:
        unknown = struct.pack(">HI", 4 + len(packed), 0x84)
    return (serial_field(datalogger_serial, protocol) + inverter + encode_timestamp(timestamp)
            + bytes(unknown) + packed)


def encode_meter_log(datalogger_serial, text, *, protocol, timestamp=None, unknown=b"\x00\x43"):
    """The unscrambled payload of a 0x1b record carrying C{text}."""
    data = text.encode("ascii") if isinstance(text, str) else bytes(text)
    return (serial_field(datalogger_serial, protocol) + bytes(unknown)
            + encode_timestamp(timestamp) + struct.pack(">H", len(data)) + data)
