"""
The spool's throughput: how fast records are committed to an output's
spool file (each an fsynced transaction, off the reactor thread) and how
fast a backlog drains to a sink that confirms at once.

    python bench/spool.py [RECORDS] [--batch N]

Prints records per second for spooling (one data() after another, as the
plugin host calls it) and for draining the backlog, and the file's size.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, reactor, task
from zope.interface import implementer

from grott.config import SpoolConfig
from grott.interfaces import ISpoolSink
from grott.outputs.influxdb import line
from grott.spool import SpooledOutput
from tests.pluginhelpers import packet_and_record


@implementer(ISpoolSink)
class NullSink:
    """
    Confirms every batch at once; encodes like the influxdb output (a
    realistic record size, about 1.3 KB).
    """

    name = "bench"
    flush_interval = 0

    def __init__(self, batch_size):
        self.batch_size = batch_size
        self.hold = True
        self.released = defer.Deferred()
        self.count = 0

    def encode(self, record):
        return line(record, 1700000000).encode()

    async def deliver(self, items):
        if self.hold:
            await self.released
        self.count += len(items)


async def main(count, batch):
    directory = tempfile.mkdtemp(prefix="grott-spool-bench-")
    sink = NullSink(batch)
    out = SpooledOutput(sink, SpoolConfig(directory=directory, max_mb=10_000), reactor)
    await out.startService()
    packet, record = packet_and_record()
    start = time.perf_counter()
    for _ in range(count):
        await out.data(packet, record, None)
    spooled = time.perf_counter() - start
    size = out.spool_stats()["on_disk"]
    start = time.perf_counter()
    sink.hold = False
    sink.released.callback(None)
    while out.spool_stats()["queued"]:
        await task.deferLater(reactor, 0.001, lambda: None)
    drained = time.perf_counter() - start
    await out.stopService()
    print(f"{count} records of {len(sink.encode(record))} bytes, batches of {batch}")
    print(f"  spooling (commit + fsync each): {count / spooled:,.0f} records/s "
          f"({spooled / count * 1000:.2f} ms each)")
    print(f"  draining to a sink that confirms at once: {count / drained:,.0f} records/s")
    print(f"  spool file and WAL at the peak: {size / 1e6:.1f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("records", nargs="?", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    task.react(lambda _: defer.Deferred.fromCoroutine(main(args.records, args.batch)))
