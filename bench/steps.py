"""
What one record costs grott, step by step, on one core (microseconds).

    python bench/steps.py [SECONDS_PER_STEP]

The record is a real one: the 585-byte protocol-6 MIN/TL-X data record of
the public vectors (grott-p6-0104-min-xdavidx93-a), and its 11-byte ack.
The steps are the ones a record takes through grott.proxy:

  framing      Framer.feed: header checks, slicing, the Packet object
               (measured as the whole feed minus the two steps below)
  unscramble   XOR of the 577-byte body with "Growatt"
  crc          CRC-16/MODBUS of the 583 bytes before the trailer
  session      Session.saw_datalogger_packet (counters, serials)
  decoding     Decoder.decode (block walk + compiled register plan) and
               Session.saw_record, with the inverter-serial lookup
  plugins      PluginHost.deliver to no plugin, and to one no-op plugin
               (queue, callLater, the call, its Deferred)
  ack          the ack on the way back: framed, counted, written
  relay (py)   DataloggerProtocol.dataReceived + fromUpstream with
               in-memory transports: all of grott's Python for one
               record and its ack, without the reactor and the sockets

What is left of the CPU bench/relay.py measures per record is the
reactor and the four socket calls (read, write on each side), which
`twistd portforward` pays as well.  Prints one JSON object.
"""

import json
import os
import sys
import time

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from grott.codec import Framer, build_ack, parse_packet
from grott.codec.crc import IMPLEMENTATION, crc16, crc16_python
from grott.codec.scramble import scramble
from grott.interfaces import IGrottPlugin
from grott.registers import Decoder
from grott.registers.blocks import walk
from grott.session import Session

_VECTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                        "vectors.json")
VECTOR = "grott-p6-0104-min-xdavidx93-a"


def record_bytes():
    with open(_VECTORS, encoding="utf-8") as f:
        vectors = {v["id"]: v for v in json.load(f)["vectors"]}
    return bytes.fromhex(vectors[VECTOR]["hex"])


def per_call(function, seconds):
    """Microseconds per call: best of three runs of about C{seconds}/3."""
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            function()
        elapsed = time.perf_counter() - start
        if elapsed > 0.05:
            break
        n *= 4
    runs = max(1, int(seconds / 3 / elapsed * n))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(runs):
            function()
        best = min(best, (time.perf_counter() - start) / runs)
    return best * 1e6


class _Endpoint:
    """Connects at once to an in-memory upstream."""

    def connect(self, factory):
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        return defer.succeed(protocol)


def relay_pair(decoder, on_record):
    from grott.proxy import ProxyFactory
    from grott.session import Registry
    factory = ProxyFactory(_Endpoint(), Registry(), Clock(), decode=decoder.decode,
                           on_record=on_record)
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


@implementer(IGrottPlugin)
class _NoOp:
    name = "noop"

    def data(self, packet, record, log):
        return None


def plugin_host(plugins):
    from grott.config import Config
    from grott.pluginhost import PluginHost
    clock = Clock()
    host = PluginHost(Config(), clock, plugins=plugins)
    host.startService()
    return host, clock


def main(argv):
    seconds = float(argv[1]) if len(argv) > 1 else 1.5
    raw = record_bytes()
    packet = parse_packet(raw)
    ack = build_ack(packet)
    body = raw[8:-2]
    decoder = Decoder()
    record = decoder.decode(packet)
    session = Session("127.0.0.1:1", 0.0)

    steps = {}
    steps["framing+unscramble+crc"] = per_call(lambda: Framer().feed(raw), seconds)
    steps["unscramble"] = per_call(lambda: scramble(body), seconds)
    steps["crc"] = per_call(lambda: crc16(raw[:-2]), seconds)
    steps["framing"] = steps["framing+unscramble+crc"] - steps["unscramble"] - steps["crc"]
    steps["session"] = per_call(lambda: session.saw_datalogger_packet(packet, 0.0), seconds)

    def decoding():
        rec = decoder.decode(packet, session.device_type_codes.get(packet.inverter_serial))
        session.saw_record(rec)
    steps["decoding"] = per_call(decoding, seconds)
    steps["decoding: block walk"] = per_call(lambda: walk(packet.payload, 6), seconds)
    steps["decoding: Record.as_dict (what JSON/MQTT plugins do)"] = per_call(
        record.as_dict, seconds)
    try:
        host0, _ = plugin_host([])
        steps["plugins: deliver to none"] = per_call(lambda: host0.deliver(packet, record),
                                                     seconds)
        host1, clock1 = plugin_host([_NoOp()])

        def one_plugin():
            host1.deliver(packet, record)
            clock1.advance(0)
        steps["plugins: deliver to one no-op plugin"] = per_call(one_plugin, seconds)
    except Exception as e:  # noqa: BLE001 (the plugin host is optional here)
        steps["plugins"] = f"not measured: {type(e).__name__}: {e}"
    steps["ack: framing"] = per_call(lambda: Framer().feed(ack), seconds)

    # A record sink that takes every record, so the relay decodes each one.
    protocol, transport = relay_pair(decoder, lambda packet, record: None)
    upstream = protocol.upstream

    def relay():
        protocol.dataReceived(raw)
        upstream.dataReceived(ack)
        transport.clear()
        upstream.transport.clear()
    steps["relay (py): record + ack through DataloggerProtocol"] = per_call(relay, seconds)

    def relay_plain():
        # The same without the decoder: what framing-only relaying costs.
        protocol_plain.dataReceived(raw)
        protocol_plain.upstream.dataReceived(ack)
        transport_plain.clear()
        protocol_plain.upstream.transport.clear()
    protocol_plain, transport_plain = relay_pair(decoder, None)
    protocol_plain.factory.decode = None
    steps["relay (py) without decoding"] = per_call(relay_plain, seconds)
    steps["crc in pure Python (no fastcrc)"] = per_call(lambda: crc16_python(raw[:-2]), seconds)

    out = {"record": VECTOR, "record_bytes": len(raw), "ack_bytes": len(ack),
           "crc_implementation": IMPLEMENTATION, "python": sys.version.split()[0],
           "microseconds": {k: (round(v, 2) if isinstance(v, float) else v)
                            for k, v in steps.items()}}
    sys.stdout.write(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
