"""
How many full protocol-6 data records (585 bytes, two 125-register blocks)
one core decodes per second: parse_packet (unscramble, CRC) + Decoder.decode.

    python bench/decode.py [SECONDS]

Uses the real MIN/TL-X vector grott-p6-0104-min-xdavidx93-a when the test
data is present, else an encoded record of the same shape.
"""

import json
import os
import sys
import time

from grott.codec import RecordType, parse_packet
from grott.registers import Decoder, build_register_record

_VECTORS = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "vectors.json")
_VECTOR = "grott-p6-0104-min-xdavidx93-a"


def sample():
    try:
        with open(_VECTORS, encoding="utf-8") as f:
            vectors = {v["id"]: v for v in json.load(f)["vectors"]}
        return bytes.fromhex(vectors[_VECTOR]["hex"]), _VECTOR
    except (OSError, KeyError, ValueError):
        blocks = [(3000, [i % 65536 for i in range(125)]), (3125, [i * 7 % 65536 for i in range(125)])]
        raw = build_register_record(RecordType.DATA, "XGD2A106BF", "XTD6A120F5", blocks,
                                    protocol=6, timestamp="2020-08-30T08:55:54")
        return raw, "encoded 2x125-register record"


def rate(function, seconds):
    count = 0
    batch = 1000
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            function()
        count += batch
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main(argv):
    seconds = float(argv[1]) if len(argv) > 1 else 3.0
    raw, what = sample()
    decoder = Decoder()
    packet = parse_packet(raw)
    record = decoder.decode(packet)
    print(f"sample: {what}, {len(raw)} bytes, family {record.family}, "
          f"{len(record.values)} values")
    decode_only = rate(lambda: decoder.decode(packet), seconds)
    print(f"Decoder.decode:              {decode_only:10,.0f} records/s "
          f"({1e6 / decode_only:.1f} us each)")
    full = rate(lambda: decoder.decode(parse_packet(raw)), seconds)
    print(f"parse_packet + decode:       {full:10,.0f} records/s ({1e6 / full:.1f} us each)")
    as_dict = rate(lambda: decoder.decode(parse_packet(raw)).as_dict(), seconds)
    print(f"parse + decode + as_dict():  {as_dict:10,.0f} records/s ({1e6 / as_dict:.1f} us each)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
