"""
Register records (0x03 announce, 0x04 data, 0x50 buffered data): walking
their blocks, the register maps of the inverter families, family detection
and the decoder that turns a packet into a L{Record}; smart-meter records
(0x20 data, 0x1b log) decoded into records of their own.

Stdlib and L{grott.codec} only: no Twisted, no YAML.
"""

from grott.registers.blocks import (
    REGISTER_RECORDS,
    Block,
    BlockError,
    RegisterBody,
    build_register_record,
    encode_register_record,
    encode_timestamp,
    parse_timestamp,
    walk,
)
from grott.registers.decoder import DECODED_RECORDS, Decoder
from grott.registers.fields import HOLDING, INPUT, Field
from grott.registers.maps import ALIASES, DTC_FAMILIES, FAMILIES, Family, family_name
from grott.registers.meter import (
    METER_RECORDS,
    MeterError,
    encode_meter_log,
    encode_meter_values,
)
from grott.registers.record import INVERTER, METER, Identification, Record
from grott.registers.state import DecoderState
from grott.registers.texts import TEXTS

__all__ = [
    "ALIASES",
    "DECODED_RECORDS",
    "DTC_FAMILIES",
    "FAMILIES",
    "HOLDING",
    "INPUT",
    "INVERTER",
    "METER",
    "METER_RECORDS",
    "REGISTER_RECORDS",
    "TEXTS",
    "Block",
    "BlockError",
    "Decoder",
    "DecoderState",
    "Family",
    "Field",
    "Identification",
    "MeterError",
    "Record",
    "RegisterBody",
    "build_register_record",
    "encode_meter_log",
    "encode_meter_values",
    "encode_register_record",
    "encode_timestamp",
    "family_name",
    "parse_timestamp",
    "walk",
]
