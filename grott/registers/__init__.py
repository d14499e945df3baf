"""
Register records (0x03 announce, 0x04 data, 0x50 buffered data): walking
their blocks, the register maps of the inverter families, family detection
and the decoder that turns a packet into a L{Record}.

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
from grott.registers.decoder import Decoder
from grott.registers.fields import HOLDING, INPUT, Field
from grott.registers.maps import ALIASES, DTC_FAMILIES, FAMILIES, Family, family_name
from grott.registers.record import Identification, Record

__all__ = [
    "ALIASES",
    "DTC_FAMILIES",
    "FAMILIES",
    "HOLDING",
    "INPUT",
    "REGISTER_RECORDS",
    "Block",
    "BlockError",
    "Decoder",
    "Family",
    "Field",
    "Identification",
    "Record",
    "RegisterBody",
    "build_register_record",
    "encode_register_record",
    "encode_timestamp",
    "family_name",
    "parse_timestamp",
    "walk",
]
