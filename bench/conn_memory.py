"""
Where a relay's memory per connection goes: the Python heap blocks that
N idle datalogger connections leave alive, by the line that allocated them.

    python bench/conn_memory.py [--target grott|portforward] [--count 3000]

The relay (grott's service tree with the benchmark's settings, or
L{twisted.protocols.portforward}) runs in this process against the fake
cloud in another; the dataloggers are plain sockets in a third process that
each send one protocol-6 announce and then stay idle.  tracemalloc starts
just before they connect and compares after every one is in (and, for
grott, identified).  Figures are per connection: Python heap only (no
malloc overhead, no kernel buffers), with tracemalloc's own cost left out.
"""

import argparse
import os
import socket
import subprocess
import sys
import time
import tracemalloc

_CLIENTS = """
import socket, sys, time
from grott.codec import RecordType, build_packet
from grott.testing.simulator import DataloggerSpec, DataloggerState

class Clock:
    def seconds(self):
        return time.time()

port, count = int(sys.argv[1]), int(sys.argv[2])
held = []
for i in range(count):
    state = DataloggerState(DataloggerSpec(serial=f"MEM{i + 1:07d}", family="min", protocol=6,
                                           ping_interval=0, seed=i), Clock())
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(build_packet(RecordType.ANNOUNCE, state.announce_body(), protocol=6, sequence=1))
    held.append(s)
sys.stdin.read()
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=("grott", "portforward"), default="grott")
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--top", type=int, default=30, help="allocation sites to list")
    parser.add_argument("--frames", type=int, default=1,
                        help="group by call stacks this deep and print them (default: by line)")
    options = parser.parse_args()

    from twisted.internet import defer, reactor, task
    from twisted.logger import globalLogBeginner

    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    cloud_port, relay_port = _free_port(), _free_port()
    cloud = subprocess.Popen([sys.executable, "-m", "grott.cli", "fake-cloud", "--listen",
                              f"tcp:{cloud_port}:interface=127.0.0.1", "--keep", "0"],
                             stderr=subprocess.PIPE)
    cloud.stderr.readline()   # "listening on ..."
    if options.target == "grott":
        from grott.config import config_from_string
        from grott.service import makeService
        top = makeService(config_from_string(
            f"proxy: {{listen: 'tcp:{relay_port}:interface=127.0.0.1', "
            f"upstream: 'tcp:127.0.0.1:{cloud_port}'}}\n"
            "command: {listen: none}\nmetrics: {listen: none}\nlog: {level: warn}\n"), reactor)
        top.startService()

        def done():
            return sum(1 for s in top.registry if s.datalogger_serial) >= options.count
    else:
        from twisted.protocols.portforward import ProxyFactory
        reactor.listenTCP(relay_port, ProxyFactory("127.0.0.1", cloud_port),
                          interface="127.0.0.1")

        def done():
            return len(reactor.getReaders()) >= 2 * options.count + 1

    async def measure():
        await task.deferLater(reactor, 0.5, lambda: None)
        tracemalloc.start(options.frames)
        before = tracemalloc.take_snapshot()
        clients = subprocess.Popen([sys.executable, "-c", _CLIENTS, str(relay_port),
                                    str(options.count)], stdin=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while not done():
            if time.monotonic() > deadline or clients.poll() is not None:
                raise SystemExit("the dataloggers did not all connect")
            await task.deferLater(reactor, 0.2, lambda: None)
        await task.deferLater(reactor, 1.0, lambda: None)
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        clients.stdin.close()
        clients.wait()
        n = options.count
        stats = after.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)]) \
            .compare_to(before.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)]),
                        "lineno" if options.frames == 1 else "traceback")
        total = sum(st.size_diff for st in stats)
        print(f"{options.target}: {n} idle connections, {total / n:.0f} B of Python heap each")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        for st in stats[:options.top]:
            where = [frame.filename.split("site-packages/")[-1].replace(root + "/", "") +
                     f":{frame.lineno}" for frame in st.traceback]
            print(f"{st.size_diff / n:7.0f} B {st.count_diff / n:5.2f} blocks  {where[0]}")
            for caller in where[1:]:
                print(f"{'':27}{caller}")

    def finish(result):
        cloud.kill()
        reactor.stop()
        return result

    reactor.callWhenRunning(lambda: defer.ensureDeferred(measure()).addBoth(finish))
    reactor.run()


if __name__ == "__main__":
    main()
