"""
`grott simulate`: simulated dataloggers connecting to a proxy or a server.

    grott simulate --count 10 --target tcp:127.0.0.1:5279 --interval 60
    grott simulate --flood --records 1000 --count 50     # throughput run

Runs until --duration seconds have passed, until every datalogger has had
its --records acknowledged, or until Ctrl-C; then prints a JSON report of
what was sent, what was acknowledged and how long the acks took.
"""

import datetime
import json
import sys
import time

from twisted.internet import defer
from twisted.internet.endpoints import clientFromString
from twisted.python import usage

from grott.scripts import _options
from grott.scripts._running import begin_logging, react_main
from grott.testing.simmodel import FAMILIES
from grott.testing.simulator import DataloggerSimulation, make_specs


class Options(_options.Options):
    synopsis = "[options]"
    optParameters = (
        ["target", "t", "tcp:127.0.0.1:5279", "where to connect: a Twisted client endpoint string"],
        ["count", "n", 1, "number of dataloggers", int],
        ["serial-prefix", None, "SIM", "serials are PREFIX + a number, 10 characters in all"],
        ["serials", None, None, "comma-separated datalogger serials (instead of --count)"],
        ["protocol", "p", 6, "protocol id: 2, 5 or 6", int],
        ["family", "f", "classic", "inverter family: " + ", ".join(sorted(FAMILIES))],
        ["address", None, 1, "device address of the inverter", int],
        ["interval", "i", 300.0, "seconds between live data records", float],
        ["first-data", None, None, "seconds from connect to the first record (default: interval)",
         float],
        ["ping-interval", None, 180.0, "seconds between pings (0: none)", float],
        ["buffered", None, 0, "records to replay as buffered data (0x50) at start", int],
        ["records", None, None, "stop each datalogger after this many records are acknowledged",
         int],
        ["window", None, 1, "with --flood: records in flight per datalogger", int],
        ["reconnect", None, 5.0,
         "seconds before reconnecting (0: never; a target that refuses then ends the run)",
         float],
        ["duration", "d", 0.0, "seconds to run (0: until --records are done or Ctrl-C)", float],
        ["start", None, None, "simulated start time, ISO 8601 local time (default: now)"],
        ["seed", None, None, "random seed for the simulated values", int],
        ["meter", None, None, "also a smart meter at this device address (34 = 0x22)", int],
        ["meter-log", None, None,
         ("with --meter: the meter also sends its reading as a 0x1b log line from this "
          "device address"), int],
    )
    optFlags = (
        ["flood", None, "send the next record as soon as the previous one is acknowledged"],
        ["no-announce", None, "do not send the 0x03 announce on connect"],
        ["latencies", None, "include every latency in the report"],
        ["verbose", "v", "log connections and problems to standard error"],
    )

    def postOptions(self):
        if self["family"] not in FAMILIES:
            raise usage.UsageError(f"unknown family {self['family']!r}")
        if self["protocol"] not in (2, 5, 6):
            raise usage.UsageError("--protocol must be 2, 5 or 6")
        for name in ("meter", "meter-log"):
            if self[name] is not None and not 0 <= self[name] <= 255:
                raise usage.UsageError(f"--{name} must be a device address, 0 to 255")
        if self["meter-log"] is not None and self["meter"] is None:
            raise usage.UsageError("--meter-log needs --meter")
        if self["start"] is not None:
            try:
                datetime.datetime.fromisoformat(self["start"])
            except ValueError:
                raise usage.UsageError(f"--start {self['start']!r} is not ISO 8601") from None
        try:
            self["specs"] = specs_from_options(self)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None


def _server_of(target):
    """
    Host and port for datalogger registers 17/18, read from tcp:HOST:PORT.
    """
    parts = target.split(":")
    if len(parts) >= 3 and parts[0] in ("tcp", "tcp6", "tls", "ssl") and parts[2].isdigit():
        return parts[1], int(parts[2])
    return "127.0.0.1", 5279


def specs_from_options(options):
    serials = None
    if options["serials"]:
        serials = [s.strip() for s in options["serials"].split(",") if s.strip()]
    start_epoch = None
    utc_offset = time.localtime().tm_gmtoff
    if options["start"] is not None:
        start = datetime.datetime.fromisoformat(options["start"])
        if start.tzinfo is None:
            start = start.replace(tzinfo=datetime.timezone(datetime.timedelta(seconds=utc_offset)))
        start_epoch = start.timestamp()
    host, port = _server_of(options["target"])
    return make_specs(
        options["count"], serials=serials, prefix=options["serial-prefix"],
        protocol=options["protocol"], family=options["family"],
        device_address=options["address"], interval=options["interval"],
        first_data=options["first-data"], ping_interval=options["ping-interval"],
        buffered=options["buffered"], records=options["records"], flood=options["flood"],
        window=options["window"], announce=not options["no-announce"],
        reconnect_delay=options["reconnect"] or None, start_epoch=start_epoch,
        utc_offset=utc_offset, seed=options["seed"], meter_address=options["meter"],
        meter_log_address=options["meter-log"],
        server_host=host, server_port=port)


async def run(reactor, options, out=None, err=None):
    """
    Run the simulation described by C{options}; write the JSON report to
    C{out} and return the exit status (1 when nothing ever connected, said
    on C{err} as soon as the first attempt fails).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    endpoint = clientFromString(reactor, options["target"])
    simulation = DataloggerSimulation(reactor, endpoint, options["specs"])
    finished = defer.Deferred()
    reported = []

    def finish(_=None):
        if reported:
            return defer.succeed(None)
        reported.append(True)
        d = simulation.stop()

        def write(_):
            report = simulation.report(latencies=options["latencies"])
            out.write(json.dumps(report, indent=2) + "\n")
            if hasattr(out, "flush"):
                out.flush()
            if not finished.called:
                finished.callback(report)
        return d.addCallback(write)

    said = []

    def unreachable(reason):
        if simulation.ever_connected():
            return
        said.append(reason)
        retry = options["reconnect"]
        err.write(f"grott simulate: cannot connect to {options['target']}: {reason}"
                  + (f"; retrying every {retry:g} s\n" if retry else "\n"))
        if not retry:
            finish()

    trigger = reactor.addSystemEventTrigger("before", "shutdown", finish)
    simulation.when_unreachable().addCallback(unreachable)
    simulation.start()
    timer = None
    if options["duration"]:
        timer = reactor.callLater(options["duration"], finish)
    if options["records"] is not None:
        simulation.when_done().addCallback(finish)
    try:
        report = await finished
    finally:
        if timer is not None and timer.active():
            timer.cancel()
        reactor.removeSystemEventTrigger(trigger)
    if not report["connections"]:
        if options["reconnect"] or not said:
            err.write(f"grott simulate: no datalogger could connect to {options['target']}\n")
        return 1
    return 0


def main(options):
    begin_logging(options["verbose"])
    return react_main(run, options)
