"""
The decoded record: one immutable object handed to every consumer (the
session, plugins, MQTT), so none of them can change what another sees.

C{values} and C{units} are read-only mappings; C{as_dict()} returns a fresh
JSON-able copy for consumers that want to add to it.
"""

import dataclasses

__all__ = ["INVERTER", "METER", "Identification", "Record"]

#: Record kinds: what device a record describes.
INVERTER = "inverter"
METER = "meter"


@dataclasses.dataclass(frozen=True)
class Identification:
    """
    What an announce (0x03, holding registers) says about the inverter.
    Any part may be None when the family's map has no such register or the
    announce did not carry it.
    """

    __slots__ = (
        "control_firmware",
        "dtc",
        "firmware",
        "manufacturer",
        "modbus_version",
        "module_code",
        "phases",
        "rated_power",
        "serial",
        "trackers",
    )

    firmware: object
    control_firmware: object
    #: The inverter serial as the inverter reports it (holding 23..27).
    serial: object
    #: Manufacturer / model text (holding 34..41; 59..66 on classic inverters).
    manufacturer: object
    #: Holding 28..29 as hex, e.g. "0x0000f111".
    module_code: object
    #: Watts (holding 6..7, 0.1 W).
    rated_power: object
    #: Device type code (holding 43; None on classic inverters).
    dtc: object
    trackers: object
    phases: object
    modbus_version: object

    def as_dict(self):
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class Record:
    """
    A decoded announce, data or buffered-data record of an inverter, or a
    smart meter's data (0x20) or log (0x1b) record.

    C{kind} says which device it describes (L{INVERTER} or L{METER}) and
    C{device_id} names that device, stable across records: the inverter
    serial (the datalogger serial when the record names no inverter), or
    for a meter the serial it reports for, "meter" and its device address
    (C{"QCL0CGB0BC-meter-50"}); a 0x1b meter log record takes the id of
    its datalogger's 0x20 meter when there is exactly one (see
    L{grott.registers.state}).  Outputs make one device per C{device_id}.
    """

    __slots__ = (
        "blocks",
        "buffered",
        "datalogger_serial",
        "device_address",
        "device_id",
        "device_type_code",
        "family",
        "identification",
        "inverter_serial",
        "kind",
        "protocol",
        "record_type",
        "timestamp",
        "timestamp_raw",
        "units",
        "values",
        "warning",
    )

    datalogger_serial: str
    inverter_serial: object
    protocol: int
    record_type: int
    device_address: int
    #: ISO 8601 datalogger time, or None when the bytes are not a date.
    timestamp: object
    timestamp_raw: str
    #: True for 0x50 records, replayed from the datalogger's buffer.
    buffered: bool
    #: The DTC in force: the announce's own, or the last one announced.
    device_type_code: object
    family: object
    #: name -> scaled number or text; unknown registers as reg_<n>.
    values: object
    #: name -> unit ("" when none) for every named value.
    units: object
    blocks: tuple
    #: For announces: L{Identification}; None otherwise.
    identification: object
    #: Set when the block count byte disagrees with the blocks present.
    warning: object
    #: L{INVERTER} or L{METER}.
    kind: str
    #: The device this record describes (see the class docstring).
    device_id: str

    @property
    def is_announce(self):
        return self.record_type == 0x03

    @property
    def is_meter(self):
        return self.kind == METER

    def as_dict(self):
        """
        A JSON-able copy: plain dicts and lists, blocks as
        C{{"start", "end", "values"}}.
        """
        return {
            "kind": self.kind,
            "device_id": self.device_id,
            "datalogger_serial": self.datalogger_serial,
            "inverter_serial": self.inverter_serial,
            "protocol": self.protocol,
            "record_type": self.record_type,
            "device_address": self.device_address,
            "timestamp": self.timestamp,
            "timestamp_raw": self.timestamp_raw,
            "buffered": self.buffered,
            "device_type_code": self.device_type_code,
            "family": self.family,
            "values": dict(self.values),
            "units": dict(self.units),
            "blocks": [block.as_dict() for block in self.blocks],
            "identification": (self.identification.as_dict()
                               if self.identification is not None else None),
            "warning": self.warning,
        }
