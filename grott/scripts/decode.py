"""
`grott decode`: what a packet from a log says, as JSON.

Users paste packets from logs into bug reports; this turns the hex back into
fields.  Spaces, newlines, colons and a leading 0x are tolerated; several
packets in one argument (a captured stream) are split by the framer.
"""

import json
import re
import sys

from twisted.python import usage

from grott.codec import Garbage, frame_all

_NOISE = re.compile(r"0x|[\s:,]", re.IGNORECASE)


class Options(usage.Options):
    synopsis = "HEX [HEX ...]   (or hex on standard input)"

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
            raise ValueError(f"{len(item.data)} bytes at offset {offset} are not a packet: {item.reason}")
        offset += len(item.raw)
    return items


def describe(packet):
    """
    The JSON-able description of one packet: header fields, and the decoded
    record where the packet carries one.
    """
    result = packet.as_dict()
    return result


def main(options, stdin=None, stdout=None, stderr=None):
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
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
        stdout.write(json.dumps(describe(packet), ensure_ascii=False) + "\n")
    return 0
