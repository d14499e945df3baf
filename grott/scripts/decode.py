"""
`grott decode`: what a packet from a log says, as JSON.

Users paste packets from logs into bug reports; this turns the hex back into
fields.  Spaces, newlines, colons and a leading 0x are tolerated; several
packets in one argument (a captured stream) are split by the framer.

Announce, data and buffered-data packets also get a C{record} (values,
units, family, DTC, timestamp, buffered flag, raw blocks) decoded with the
registers, families and DTC filter of C{--config} when given; smart-meter
packets (0x20, 0x1b) get a record of kind C{meter}.  All packets of one call
are one stream, decoded by one decoder: what an announce says (its DTC) and
the family decided for an inverter (an SPF by day) hold for the packets
after it, as they would in the running service.  A packet
whose register blocks do not add up still prints its header fields, with an
C{error} saying what is wrong instead of a record, and the exit status stays
0: the packet itself was framed and decoded as far as it goes.  Exit status
2 means the input was not packets at all.
"""

import json
import re
import sys
import typing

from twisted.python import usage

from grott.codec import CodecError, Garbage, frame_all
from grott.registers import Decoder

_NOISE = re.compile(r"0x|[\s:,]", re.IGNORECASE)


class Options(usage.Options):
    synopsis = "[--config FILE] [--dtc CODE] HEX [HEX ...]   (or hex on standard input)"
    optParameters: typing.ClassVar = [
        ["config", "c", None, "Decode with the registers, families and dtc_filter of this config."],
        ["dtc", None, None, "Device type code of the inverter, as learnt from its announce.", int],
    ]

    def parseArgs(self, *hexes):
        self["hexes"] = hexes


def packets_from_hex(text):
    """
    Frame the packets in C{text}; raise ValueError saying what is wrong.
    """
    cleaned = _NOISE.sub("", text)
    if not cleaned:
        raise ValueError("no hex given")
    if len(cleaned) % 2:
        raise ValueError(f"odd number of hex digits ({len(cleaned)})")
    try:
        data = bytes.fromhex(cleaned)
    except ValueError:
        bad = next(c for c in cleaned if c not in "0123456789abcdefABCDEF")
        raise ValueError(f"not hex: {bad!r}") from None
    items = frame_all(data)
    offset = 0
    for item in items:
        if isinstance(item, Garbage):
            raise ValueError(  # noqa: TRY004 - callers report ValueError as bad input
                f"{len(item.data)} bytes at offset {offset} are not a packet: {item.reason}")
        offset += len(item.raw)
    return items


def describe(packet, decoder=None, device_type_code=None):
    """
    The JSON-able description of one packet: header fields, and the decoded
    record where the packet carries one (or the reason it cannot be decoded).
    """
    result = packet.as_dict()
    decoder = decoder if decoder is not None else Decoder()
    try:
        record = decoder.decode(packet, device_type_code)
    except CodecError as e:
        result["error"] = str(e)
    else:
        if record is not None:
            result["record"] = record.as_dict()
    return result


def decoder_from_config(path):
    """
    A Decoder built from the decoding keys of the config file at C{path};
    ValueError (ConfigError's message) when the file is not usable.
    """
    from grott.config import ConfigError, load_config
    try:
        config = load_config(path)
    except ConfigError as e:
        raise ValueError(str(e)) from None
    try:
        return Decoder(config.registers, config.dtc_filter, config.families)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def main(options, stdin=None, stdout=None, stderr=None):
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    decoder = Decoder()
    if options["config"]:
        try:
            decoder = decoder_from_config(options["config"])
        except ValueError as e:
            stderr.write(f"grott decode: {e}\n")
            return 2
    sources = options["hexes"] or (stdin.read(),)
    packets = []
    for number, text in enumerate(sources, 1):
        where = f"argument {number}" if options["hexes"] else "standard input"
        try:
            packets.extend(packets_from_hex(text))
        except ValueError as e:
            stderr.write(f"grott decode: {where}: {e}\n")
            return 2
    for packet in packets:
        description = describe(packet, decoder, options["dtc"])
        stdout.write(json.dumps(description, ensure_ascii=False) + "\n")
    return 0
