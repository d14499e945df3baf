"""
The session report: SIGUSR1 logs it, the command socket's `stats` prints it,
and the monitoring endpoint's /stats serves it as JSON (L{report_data}).

The signal handler does nothing but hand the work to the reactor thread
(C{callFromThread}); it chains to the handler that was installed before it,
because twistd uses SIGUSR1 to reopen its log file.
"""

import signal

from twisted.application import service

from grott.logs import Logger

__all__ = ["StatsService", "report_data", "report_lines"]


#: Session counters the report adds up over the connected dataloggers.
TOTALS = ("packets_in", "packets_out", "bytes_in", "bytes_out", "records", "parse_errors",
          "local_acks")


def report_data(registry, now, instance=None):
    """
    The report as a JSON-able dict: connection counts, one summary per
    session (L{grott.session.Session.describe}) and their totals, and which
    grott instance this is (C{instance.id}).
    """
    sessions = [session.describe(now) for session in registry.sorted()]
    totals = dict.fromkeys(TOTALS, 0)
    for d in sessions:
        for key in totals:
            totals[key] += d[key]
    return {
        "instance": instance,
        "connected": len(sessions),
        "connections": registry.total_connections,
        "replaced": registry.replaced,
        "refused": registry.rejected,
        "refused_takeovers": registry.refused_takeovers,
        "dataloggers": sessions,
        "totals": totals,
    }


def report_lines(registry, now, extra=(), instance=None):
    """
    The report as lines of text: one per session, then totals, then any
    extra sections (C{extra} is a list of callables returning lines).
    """
    data = report_data(registry, now, instance)
    lines = [f"{data['connected']} datalogger(s) connected; {data['connections']} "
             f"connection(s) since start, {data['replaced']} replaced, "
             f"{data['refused']} refused, "
             f"{data['refused_takeovers']} serial takeovers refused"
             + (f"; instance {instance}" if instance else "")]
    for d in data["dataloggers"]:
        last = "-" if d["last_packet_age"] is None else f"{d['last_packet_age']:.0f}s ago"
        lines.append(
            f"  {d['datalogger'] or '?'} inverters={','.join(d['inverters']) or '?'} "
            f"protocol={d['protocol'] or '?'} dtc={d['device_type_code'] or '?'} "
            f"peer={d['peer']} age={d['age']:.0f}s upstream={d['upstream']} mode={d['mode']} "
            f"in={d['packets_in']}p/{d['bytes_in']}B out={d['packets_out']}p/{d['bytes_out']}B "
            f"records={d['records']} errors={d['parse_errors']} local_acks={d['local_acks']} "
            f"last_packet={last}")
    lines.append("  totals: " + " ".join(f"{k}={v}" for k, v in data["totals"].items()))
    for section in extra:
        lines.extend(section())
    return lines


class StatsService(service.Service):
    """
    Logs the report on SIGUSR1 while running.
    """

    log = Logger()

    def __init__(self, report, reactor, signum=getattr(signal, "SIGUSR1", None)):
        self.report = report
        self.reactor = reactor
        self.signum = signum
        self._previous = None

    def startService(self):
        service.Service.startService(self)
        if self.signum is not None:
            self._previous = signal.signal(self.signum, self._handler)

    def stopService(self):
        if self.signum is not None and self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None
        return service.Service.stopService(self)

    def _handler(self, signum, frame):
        self.reactor.callFromThread(self.logReport)
        previous = self._previous
        if callable(previous):
            previous(signum, frame)

    def logReport(self):
        for line in self.report():
            self.log.info("{line}", line=line)
