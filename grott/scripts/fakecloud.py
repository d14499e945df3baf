"""
`grott fake-cloud`: a stand-in Growatt server on loopback.

    grott fake-cloud --listen tcp:5279:interface=127.0.0.1 --record cloud.jsonl
    grott fake-cloud --delay 2 --drop-after 10            # a misbehaving cloud

It acknowledges what the real server acknowledges and echoes pings; on
Ctrl-C or after --duration seconds it prints a JSON report of what it got.
"""

import json
import sys

from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from grott.scripts._running import begin_logging, react_main
from grott.testing.fakecloud import FakeCloud


class Options(usage.Options):
    synopsis = "[options]"
    optParameters = (
        ["listen", "l", "tcp:5279:interface=127.0.0.1", "Twisted server endpoint string"],
        ["record", "r", None, "append every packet (both directions) to this JSON-lines file"],
        ["delay", None, 0.0, "seconds to wait before each ack and ping echo", float],
        ["drop-after", None, None, "close a connection when its N-th packet arrives", int],
        ["keep", None, 10000, "packets kept in memory", int],
        ["duration", "d", 0.0, "seconds to run (0: until Ctrl-C)", float],
    )
    optFlags = (
        ["refuse", None, "close every connection as soon as it is accepted"],
        ["no-ping-echo", None, "do not return pings"],
        ["verbose", "v", "log connections and problems to standard error"],
    )

    def postOptions(self):
        if self["delay"] < 0:
            raise usage.UsageError("--delay must not be negative")
        if self["drop-after"] is not None and self["drop-after"] < 1:
            raise usage.UsageError("--drop-after must be at least 1")


def make_cloud(reactor, options, record=None):
    return FakeCloud(reactor, record=record, keep=options["keep"], refuse=options["refuse"],
                     ack_delay=options["delay"], drop_after=options["drop-after"],
                     echo_pings=not options["no-ping-echo"])


async def listen(reactor, options, record=None):
    """
    Start listening; returns the L{FakeCloud} and the listening port.
    """
    cloud = make_cloud(reactor, options, record)
    port = await serverFromString(reactor, options["listen"]).listen(cloud)
    return cloud, port


def _open_record(path):
    """
    The record file stays open for the whole run; L{run} closes it.
    """
    return open(path, "a", encoding="utf-8")


async def run(reactor, options, out=None, err=None):
    """
    Serve until --duration or shutdown, then write the JSON report to C{out}.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    record = _open_record(options["record"]) if options["record"] else None
    try:
        cloud, port = await listen(reactor, options, record)
        host = port.getHost()
        err.write(f"grott fake-cloud: listening on {getattr(host, 'host', host)}:"
                  f"{getattr(host, 'port', '')}\n")
        finished = defer.Deferred()
        stopping = []

        def finish():
            if stopping:
                return defer.succeed(None)
            stopping.append(True)
            d = defer.maybeDeferred(port.stopListening)
            d.addCallback(lambda _: cloud.close_all())

            def write(_):
                out.write(json.dumps(cloud.stats(), indent=2) + "\n")
                if hasattr(out, "flush"):
                    out.flush()
                finished.callback(None)
            return d.addCallback(write)

        trigger = reactor.addSystemEventTrigger("before", "shutdown", finish)
        timer = reactor.callLater(options["duration"], finish) if options["duration"] else None
        try:
            await finished
        finally:
            if timer is not None and timer.active():
                timer.cancel()
            reactor.removeSystemEventTrigger(trigger)
    finally:
        if record is not None:
            record.close()
    return 0


def main(options):
    begin_logging(options["verbose"])
    return react_main(run, options)
