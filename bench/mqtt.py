"""
The mqtt output at full load: decoded records from many inverters handed to
the plugin host as fast as it takes them, published (with Home Assistant
discovery, so two messages per record) to a real mosquitto, and counted
when the broker has acknowledged every message.

    python bench/mqtt.py [RECORDS] [DATALOGGERS]
    QOS=0 SERIAL_IN_TOPIC=1 python bench/mqtt.py ...   # other settings

Needs the mosquitto binary (Debian package mosquitto).  Prints records/s
from the first hand-over to the last broker acknowledgement, and the
records the plugin queue dropped (the goal: none).
"""

import os
import shutil
import socket
import sys
import tempfile
import time

from twisted.internet import defer, protocol, reactor, task

from grott.codec import RecordType, parse_packet
from grott.config import config_from_dict
from grott.pluginhost import PluginHost
from grott.registers import Decoder
from grott.testing.simulator import DataloggerSpec, DataloggerState

#: One message per record (only the inverter's own topic) instead of two.
SERIAL_IN_TOPIC = bool(os.environ.get("SERIAL_IN_TOPIC"))


def _records(count, dataloggers):
    decoder = Decoder()
    clock = task.Clock()
    clock.advance(time.time())
    states = [DataloggerState(DataloggerSpec(f"BENCH{n:05d}", family="min" if n % 2 else
                                             "classic"), clock) for n in range(dataloggers)]
    records = []
    for n in range(count):
        state = states[n % dataloggers]
        if n % dataloggers == 0:
            clock.advance(300)
        packet = parse_packet(state.packet(RecordType.DATA, state.data_body()))
        records.append((packet, decoder.decode(packet)))
    return records


def _write_config(directory, port):
    path = os.path.join(directory, "mosquitto.conf")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest stderr\n"
                + ("user root\n" if os.getuid() == 0 else ""))
    return path


class _Mosquitto(protocol.ProcessProtocol):
    def __init__(self):
        self.ready = defer.Deferred()
        self.output = b""

    def errReceived(self, data):
        self.output += data
        if b" running" in self.output and not self.ready.called:
            self.ready.callback(None)

    outReceived = errReceived


async def main(count, dataloggers):
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    directory = tempfile.mkdtemp(prefix="grott-bench-mqtt-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config_path = _write_config(directory, port)
    broker = _Mosquitto()
    process = reactor.spawnProcess(broker, binary, [binary, "-c", config_path],
                                   env=dict(os.environ))
    await broker.ready
    records = _records(count, dataloggers)
    config = config_from_dict({"plugins": {"directory": directory},
                               "outputs": {"mqtt": {"port": port, "discovery": True,
                                                    "serial_in_topic": SERIAL_IN_TOPIC,
                                                    "qos": int(os.environ.get("QOS", "1"))}}})
    host = PluginHost(config, reactor)
    host.startService()
    plugin = host.runners[0].plugin
    while not plugin.connected:
        await task.deferLater(reactor, 0.01, lambda: None)
    burst = config.plugins.queue_size // 2
    start = time.perf_counter()
    for first in range(0, count, burst):
        for packet, record in records[first:first + burst]:
            host.deliver(packet, record)
        # Polling every few ms leaves the reactor to the host and the output.
        while host.stats()[0]["queued"] > burst:
            await task.deferLater(reactor, 0.005, lambda: None)
    while host.stats()[0]["queued"] or host.stats()[0]["busy_seconds"] is not None \
            or getattr(plugin, "outstanding", 0):
        await task.deferLater(reactor, 0.005, lambda: None)
    seconds = time.perf_counter() - start
    stats = host.stats()[0]
    print(f"{count} records from {dataloggers} inverters, discovery on: "
          f"{count / seconds:,.0f} records/s acknowledged by the broker "
          f"({(1 if SERIAL_IN_TOPIC else 2) * count / seconds:,.0f} messages/s); dropped {stats['dropped']}, "
          f"failed {stats['failed'] + getattr(plugin, 'counts', {}).get('failed', 0)}, "
          f"held {sum(v for k, v in getattr(plugin, 'counts', {}).items() if k.startswith('held_'))}")
    await host.stopService()
    process.signalProcess("TERM")
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    task.react(lambda _: defer.Deferred.fromCoroutine(main(*(args + [20000, 100][len(args):]))))
