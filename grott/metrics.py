"""
What /metrics reports: grott's own counters, read at scrape time.

L{GrottCollector} is a C{prometheus_client} custom collector: it holds no
metric objects of its own, it reads the registry, the sessions, the command
dispatcher and the plugin host whenever Prometheus scrapes, so the relay
pays nothing per packet beyond the plain counters it already keeps
(L{grott.counters.Totals}, the session counters).  L{metrics_registry}
gives each service its own C{CollectorRegistry} (never the client's global
default one), with the client's process collector for file descriptors,
memory and CPU.

The counting itself (L{grott.counters}, with L{grott.counters.TimedEndpoint}
and L{grott.counters.count_decoding}) needs none of this module: it is
imported only when C{metrics.listen} is set, and prometheus_client with it.
"""

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from grott.counters import record_type_label

__all__ = ["GrottCollector", "metrics_registry"]

#: Session modes (grott.proxy), always reported so a graph has no gaps.
MODES = ("relaying", "answering locally", "cloud-free")

#: Registry-wide session counters (L{grott.session.Registry.sum}) as counters.
_SUMMED = (
    ("grott_local_acks", "local_acks",
     "Packets grott acknowledged itself because the cloud was away or off."),
    ("grott_cloud_commands_dropped", "commands_dropped",
     "Commands from the cloud dropped by proxy.cloud_commands or protect_server_address."),
    ("grott_garbage_bytes", "garbage_bytes",
     "Bytes from dataloggers that were not a packet (relayed unchanged)."),
    ("grott_parse_errors", "parse_errors",
     "Garbage runs and undecodable records from dataloggers."),
)


class GrottCollector:
    """
    Reads grott's counters when Prometheus scrapes.

    @param registry: the proxy's L{grott.session.Registry}.
    @param clock: for the seconds since each datalogger's last record.
    @param commands: the L{grott.commands.CommandDispatcher}, or None.
    @param plugins: returns the plugin host's stats (a list of dicts), or None.
    @param capacity: returns how many dataloggers grott can hold (None: no limit).
    @param instance: this grott's C{instance.id}, reported as C{grott_instance_info}.
    """

    def __init__(self, registry, clock, commands=None, plugins=None, capacity=None,
                 instance=None):
        self.registry = registry
        self.instance = instance
        self.clock = clock
        self.commands = commands
        self.plugins = plugins
        self.capacity = capacity

    def collect(self):
        if self.instance is not None:
            # Which grott answers, for dashboards over several instances
            # (join on it, or read it in a target's labels).
            info = GaugeMetricFamily("grott_instance_info", "This grott's instance.id (always 1).",
                                     labels=["instance_id"])
            info.add_metric([self.instance], 1)
            yield info
        yield from self._sessions()
        yield from self._traffic()
        yield from self._upstream()
        if self.commands is not None:
            yield from self._commands()
        if self.plugins is not None:
            yield from self._outputs()

    def _sessions(self):
        registry = self.registry
        sessions = list(registry)
        connected = GaugeMetricFamily(
            "grott_dataloggers_connected", "Datalogger connections open now, by mode.",
            labels=["mode"])
        by_mode = dict.fromkeys(MODES, 0)
        for session in sessions:
            by_mode[session.mode] = by_mode.get(session.mode, 0) + 1
        for mode, count in by_mode.items():
            connected.add_metric([mode], count)
        yield connected
        capacity = self.capacity() if self.capacity is not None else None
        if capacity is not None:
            yield GaugeMetricFamily(
                "grott_dataloggers_capacity",
                "Dataloggers grott accepts at once (proxy.max_dataloggers, or what the "
                "open-file limit allows).", value=capacity)
        for name, value, text in (
                ("opened", registry.total_connections, "Datalogger connections accepted."),
                ("closed", registry.closed, "Datalogger connections closed."),
                ("refused", registry.rejected,
                 "Datalogger connections refused at proxy.max_dataloggers."),
                ("replaced", registry.replaced,
                 "Datalogger connections closed because the same datalogger connected again.")):
            yield CounterMetricFamily(f"grott_connections_{name}", text, value=value)
        age = GaugeMetricFamily(
            "grott_datalogger_last_record_age_seconds",
            "Seconds since each connected datalogger's last data record.", labels=["serial"])
        now = self.clock.seconds()
        for session in sessions:
            if session.datalogger_serial is not None and session.last_record_at is not None:
                age.add_metric([session.datalogger_serial], max(0.0, now - session.last_record_at))
        yield age

    def _traffic(self):
        registry = self.registry
        totals = registry.totals
        packets = CounterMetricFamily(
            "grott_packets", "Packets by direction (in: from dataloggers, out: relayed from "
            "the cloud to them) and record type.", labels=["direction", "record_type"])
        size = CounterMetricFamily(
            "grott_packet_bytes", "Bytes of packets by direction and record type.",
            labels=["direction", "record_type"])
        for direction, kind, count, octets in totals.traffic():
            labels = [direction, record_type_label(kind)]
            packets.add_metric(labels, count)
            size.add_metric(labels, octets)
        yield packets
        yield size
        yield CounterMetricFamily(
            "grott_crc_failures", "Frames from dataloggers whose CRC did not match.",
            value=totals.crc_failures)
        records = CounterMetricFamily(
            "grott_records_decoded", "Register records decoded, by inverter family.",
            labels=["family"])
        for family, count in sorted(totals.records.items()):
            records.add_metric([family], count)
        yield records
        errors = CounterMetricFamily(
            "grott_decode_errors", "Register records the decoder failed on, by the "
            "datalogger's last known inverter family.", labels=["family"])
        for family, count in sorted(totals.decode_errors.items()):
            errors.add_metric([family], count)
        yield errors
        for name, field, text in _SUMMED:
            yield CounterMetricFamily(name, text, value=registry.sum(field))
        raw = CounterMetricFamily(
            "grott_bytes", "Bytes from dataloggers (in) and relayed to them (out), packets "
            "and garbage alike.", labels=["direction"])
        raw.add_metric(["in"], registry.sum("bytes_in"))
        raw.add_metric(["out"], registry.sum("bytes_out"))
        yield raw

    def _upstream(self):
        totals = self.registry.totals
        yield CounterMetricFamily("grott_upstream_connects",
                                  "Upstream (cloud) connections made.",
                                  value=totals.upstream_connects)
        yield CounterMetricFamily("grott_upstream_connect_failures",
                                  "Upstream (cloud) connections that failed or timed out.",
                                  value=totals.upstream_connect_failures)
        histogram = totals.upstream_connect_seconds
        yield HistogramMetricFamily("grott_upstream_connect_duration_seconds",
                                    "Seconds each successful upstream connect took.",
                                    buckets=histogram.cumulative(), sum_value=histogram.sum)

    def _commands(self):
        dispatcher = self.commands
        outcomes = CounterMetricFamily(
            "grott_commands", "Register commands by who asked (via), operation and result.",
            labels=["via", "op", "result"])
        for (via, op, result), count in sorted(dispatcher.outcomes.items()):
            outcomes.add_metric([via, op, result], count)
        yield outcomes
        latency = HistogramMetricFamily(
            "grott_command_duration_seconds",
            "Seconds from asking for a command to its answer (queueing included).",
            labels=["via", "op"])
        for (via, op), histogram in sorted(dispatcher.latency.items()):
            latency.add_metric([via, op], histogram.cumulative(), histogram.sum)
        yield latency
        report = dispatcher.report()
        yield GaugeMetricFamily("grott_commands_in_flight",
                                "Commands sent and waiting for their answer.",
                                value=report["in_flight"])
        yield GaugeMetricFamily("grott_commands_queued",
                                "Commands waiting behind the one in flight.",
                                value=report["queued"])

    def _outputs(self):
        stats = self.plugins()
        families = {
            "depth": GaugeMetricFamily("grott_output_queue_depth",
                                       "Records waiting in each plugin's queue.",
                                       labels=["output"]),
            "size": GaugeMetricFamily("grott_output_queue_capacity",
                                      "Records each plugin's queue holds before dropping "
                                      "(plugins.queue_size).", labels=["output"]),
            "delivered": CounterMetricFamily("grott_output_delivered",
                                             "Records each plugin took.", labels=["output"]),
            "dropped": CounterMetricFamily("grott_output_dropped",
                                           "Records dropped because a plugin's queue was full "
                                           "or it was not running.", labels=["output"]),
            "failed": CounterMetricFamily("grott_output_failed",
                                          "Records a plugin raised on.", labels=["output"]),
            "up": GaugeMetricFamily("grott_output_running",
                                    "1 while the plugin is running (started, not broken).",
                                    labels=["output"]),
            "connected": GaugeMetricFamily("grott_output_connected",
                                           "1 while an output is connected to its sink "
                                           "(outputs that know).", labels=["output"]),
            "spooled": GaugeMetricFamily("grott_output_spooled",
                                         "Records an output holds on disk for later "
                                         "(outputs that spool).", labels=["output"]),
            "spool_bytes": GaugeMetricFamily("grott_output_spool_bytes",
                                             "Bytes of an output's spool file and its WAL.",
                                             labels=["output"]),
            "spool_delivered": CounterMetricFamily(
                "grott_output_spool_delivered", "Spooled records the sink confirmed.",
                labels=["output"]),
            "spool_retried": CounterMetricFamily(
                "grott_output_spool_retried", "Failed delivery attempts (retried).",
                labels=["output"]),
            "spool_dropped": CounterMetricFamily(
                "grott_output_spool_dropped", "Spooled records dropped by max_mb or max_age.",
                labels=["output"]),
            "spool_rejected": CounterMetricFamily(
                "grott_output_spool_rejected", "Spooled records the sink refused as bad data.",
                labels=["output"]),
        }
        for s in stats:
            name = [s["name"]]
            families["depth"].add_metric(name, s["queued"])
            families["size"].add_metric(name, s.get("queue_size", 0))
            families["delivered"].add_metric(name, s["delivered"])
            families["dropped"].add_metric(name, s["dropped"])
            families["failed"].add_metric(name, s["failed"])
            families["up"].add_metric(name, 1 if s["state"] == "running" else 0)
            if s.get("connected") is not None:
                families["connected"].add_metric(name, 1 if s["connected"] else 0)
            if s.get("spooled") is not None:
                families["spooled"].add_metric(name, s["spooled"])
            spool = s.get("spool")
            if spool is not None:
                families["spool_bytes"].add_metric(name, spool["on_disk"])
                for key in ("delivered", "retried", "dropped", "rejected"):
                    families[f"spool_{key}"].add_metric(name, spool[key])
        yield from families.values()


def metrics_registry(collector, process=True):
    """
    A C{CollectorRegistry} of our own with C{collector} (and, on systems
    with /proc, the process's open and maximum file descriptors, memory
    and CPU as C{process_*}).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    if process:
        ProcessCollector(registry=registry)
    return registry
