"""
config.yaml to frozen dataclasses.

The file is read once with PyYAML's safe loader, noting the line of every
key, and checked against the dataclasses below: an unknown key, a duplicate
key, a value of the wrong type or an endpoint string Twisted cannot parse is
one line of a L{ConfigError} naming the file, the dotted key and its line
(C{config.yaml: proxy.upstream: ... (line 3)}), so a typo stops start-up
with a sentence instead of a traceback or, worse, a silently ignored
setting.  All the problems of a file are found in one pass, as
C{grott check} promises.

Defaults live here and are restated, with comments, in the shipped
config.yaml; a test loads that file so the two cannot drift apart.  To add a
setting, add a field to the section's dataclass: the loader checks it by its
annotation (and C{metadata["check"]} for finer rules).
"""

import dataclasses
import os
import re
import typing

import yaml
from twisted.internet.interfaces import IReactorPluggableNameResolver
from zope.interface import implementer

__all__ = [
    "Config",
    "ConfigError",
    "config_from_dict",
    "config_from_string",
    "in_file_order",
    "load_config",
    "problem_line",
    "seconds",
    "without_line",
]


class ConfigError(Exception):
    """
    The configuration cannot be used; the message says where and why.

    @ivar problems: each problem as one line (C{FILE: key: problem (line
        N)}); the message is these lines joined.
    @ivar config: for a file that could be parsed, the L{Config} with the
        wrong keys left at their defaults (else None).
    """

    config = None

    def __init__(self, *problems):
        Exception.__init__(self, "\n".join(problems))
        self.problems = list(problems)


# ---------------------------------------------------------------- checks

def _positive(value):
    if value <= 0:
        return "must be greater than 0"


def _non_negative(value):
    if value < 0:
        return "must not be negative"


def _choices(*allowed):
    def check(value):
        if value not in allowed:
            return "must be one of " + ", ".join(repr(a) for a in allowed)
    return check


@implementer(IReactorPluggableNameResolver)
class ParseOnlyReactor:
    """
    The reactor endpoint strings are checked and probed with: endpoint
    parsers only keep the reactor they are given, and a server endpoint's
    C{listen} only tells it which port to open, which is recorded in
    C{listening} as C{(port, interface)} and never opened.

    (C{twisted.internet.testing.MemoryReactor} would do, but importing it
    imports twisted.trial and unittest, 1.7 MB kept for the life of a
    running grott.)
    """

    nameResolver = None

    def __init__(self):
        self.listening = []

    def installNameResolver(self, resolver):
        raise NotImplementedError("endpoints checked by grott.config never resolve")

    def listenTCP(self, port, factory, backlog=50, interface=""):
        self.listening.append((port, interface))

    def listenSSL(self, port, factory, contextFactory, backlog=50, interface=""):
        self.listening.append((port, interface))

    def listenUNIX(self, address, factory, backlog=50, mode=0o666, wantPID=0):
        """A unix socket has no port to probe."""


def _server_endpoint(value):
    from twisted.internet.endpoints import serverFromString
    try:
        serverFromString(ParseOnlyReactor(), value)
    except Exception as e:
        return f"not a Twisted server endpoint string ({value!r}): {e}"


def _client_endpoint(value, allow_none=False):
    if allow_none and value == "none":
        return None
    from twisted.internet.endpoints import clientFromString
    try:
        clientFromString(ParseOnlyReactor(), value)
    except Exception as e:
        return f"not a Twisted client endpoint string ({value!r}): {e}"


def _upstream(value):
    return _client_endpoint(value, allow_none=True)


def _max_dataloggers(value):
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return "must be 'auto' or a whole number of at least 1"


def _set_time(value):
    if value != "auto" and not isinstance(value, bool):
        return "must be auto, true or false"


def _timezone(value):
    if value == "local":
        return None
    try:
        import zoneinfo
        zoneinfo.ZoneInfo(value)
    except Exception:
        return f"unknown time zone {value!r} (use local or an IANA name like Europe/Amsterdam)"


def allowed_serials(value):
    """
    The serials of C{proxy.allowed_serials}: the list itself, or the lines
    of the file it names (blank lines and C{#} comments skipped).

    @raise OSError: the file cannot be read.
    """
    if not isinstance(value, str):
        return list(value)
    with open(value, encoding="utf-8") as f:
        lines = (line.split("#", 1)[0].strip() for line in f)
        return [line for line in lines if line]


def _serials(value):
    if isinstance(value, str):
        try:
            allowed_serials(value)
        except (OSError, UnicodeDecodeError) as e:
            return f"cannot read the serials file {value!r}: {getattr(e, 'strerror', None) or e}"
        return None
    for serial in value:
        if not isinstance(serial, str) or not serial:
            return f"expected datalogger serials (strings), got {serial!r}"


def _networks(value):
    import ipaddress
    for network in value:
        try:
            ipaddress.ip_network(str(network), strict=False)
        except ValueError:
            return f"not a network (a CIDR such as 192.168.1.0/24): {network!r}"


#: The shortest command.token accepted: the socket may face a network.
MIN_TOKEN = 16


def _token(value):
    if value and len(value) < MIN_TOKEN:
        return f"must be at least {MIN_TOKEN} characters (or empty for none)"
    if any(c.isspace() for c in value):
        return "must not contain spaces"


def _octal_mode(value):
    try:
        mode = int(value, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        return f"must be octal permissions such as \"0600\" (got {value!r})"


def _field(default, check=None, secret=False, **kw):
    metadata = {"check": check} if check else {}
    if isinstance(default, (dict, list)):
        factory = (lambda d=default: type(d)(d))
        return dataclasses.field(default_factory=factory, metadata=metadata, repr=not secret, **kw)
    return dataclasses.field(default=default, metadata=metadata, repr=not secret, **kw)


# ---------------------------------------------------------------- sections

@dataclasses.dataclass(frozen=True)
class ProxyConfig:
    #: Where dataloggers connect (a Twisted server endpoint string).
    listen: str = _field("tcp:5279", _server_endpoint)
    #: The Growatt server, or "none" for cloud-free mode.
    upstream: str = _field("tcp:server.growatt.com:5279", _upstream)
    #: Seconds to wait for the upstream connection.
    connect_timeout: float = _field(10.0, _positive)
    #: Seconds without a complete packet from the datalogger before both
    #: sides close (bytes that never make a packet do not count).
    idle_timeout: float = _field(600.0, _positive)
    #: Concurrent dataloggers: a number, or "auto" (what RLIMIT_NOFILE allows).
    max_dataloggers: typing.Union[int, str] = _field("auto", _max_dataloggers)
    #: Bytes from the datalogger held while the upstream connection is not up.
    pending_limit: int = _field(65536, _positive)
    #: When the upstream is unreachable or drops: "local" (grott answers the
    #: datalogger itself and keeps retrying) or "close" (drop the datalogger).
    upstream_fallback: str = _field("local", _choices("local", "close"))
    #: Longest wait between upstream retries, seconds (backoff doubles from 1 s).
    retry_max: float = _field(30.0, _positive)
    #: Commands from the cloud: "allow", "read-only" (drop writes) or "block".
    cloud_commands: str = _field("allow", _choices("allow", "read-only", "block"))
    #: Drop cloud writes to datalogger registers 17/18/19 (server address/port).
    protect_server_address: bool = _field(True)
    #: Set the datalogger clock after its announce: auto (only when
    #: upstream is none), true or false.
    set_time: typing.Union[bool, str] = _field("auto", _set_time)
    #: Time zone for set_time: "local" or an IANA name such as Europe/Amsterdam.
    timezone: str = _field("local", _timezone)
    #: Datalogger serials allowed to connect (a list, or a file with one per
    #: line); empty: any serial.
    allowed_serials: typing.Union[list, str] = _field([], _serials)
    #: Networks (CIDRs) dataloggers may connect from; empty: any address.
    allowed_networks: list = _field([], _networks)


@dataclasses.dataclass(frozen=True)
class CommandConfig:
    #: The admin socket; "none" turns it off.
    listen: str = _field("tcp:15279:interface=127.0.0.1",
                         lambda v: None if v == "none" else _server_endpoint(v))
    #: Seconds to wait for the inverter's answer to a command.
    timeout: float = _field(10.0, _positive)
    #: Seconds without a line before an admin client is closed.
    idle_timeout: float = _field(300.0, _positive)
    #: Lines per second one admin client may send (bursts of as many).
    rate_limit: float = _field(20.0, _positive)
    #: Clients must send "auth TOKEN" first; required off loopback.
    token: str = _field("", _token, secret=True)
    #: Permissions of a unix: socket (octal text), unless listen sets mode=.
    mode: str = _field("0600", _octal_mode)


def _token(value):
    if any(c.isspace() or not c.isprintable() for c in value):
        return "must not contain spaces or control characters (it goes in an HTTP header)"


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
    #: The monitoring HTTP endpoint (/metrics, /healthz, /readyz, /stats);
    #: "none" turns it off.
    listen: str = _field("tcp:9279:interface=127.0.0.1",
                         lambda v: None if v == "none" else _server_endpoint(v))
    #: When set, every request needs "Authorization: Bearer TOKEN".
    token: str = _field("", _token, secret=True)


@dataclasses.dataclass(frozen=True)
class LogConfig:
    #: Lowest level logged: debug, info, warn, error, critical.
    level: str = _field("info", _choices("debug", "info", "warn", "error", "critical"))
    #: stdout (twistd's log) or file (also write log.file, rotated).
    to: str = _field("stdout", _choices("stdout", "file"))
    #: The log file when to is file.
    file: str = _field("grott.log")
    #: text, or json (one JSON event per line) for grott's own files.
    format: str = _field("text", _choices("text", "json"))
    #: Every packet of each datalogger to DIRECTORY/grott_SERIAL.log.
    per_datalogger: bool = _field(False)
    directory: str = _field("logs")
    #: How grott's files rotate: size (at max_bytes) or daily.
    rotate: str = _field("size", _choices("size", "daily"))
    #: Size at which a file rotates (rotate: size).
    max_bytes: int = _field(10_000_000, _positive)
    #: Old files kept per log: numbered (size) or days (daily).
    keep: int = _field(5, _positive)


def _enabled(value):
    if isinstance(value, str):
        if value != "all":
            return "must be 'all' or a list of plugin names"
        return None
    return _names(value)


def _names(value):
    for name in value:
        if not isinstance(name, str) or not name:
            return f"expected plugin names (strings), got {name!r}"


def _port(value):
    if not 1 <= value <= 65535:
        return "must be a port number (1-65535)"


def _topic(value, allow_empty=False):
    if not value:
        return None if allow_empty else "must not be empty"
    if "+" in value or "#" in value or "\0" in value:
        return "must not contain the wildcards + or #"
    if value.startswith("/") or value.endswith("/"):
        return "must not start or end with /"


@dataclasses.dataclass(frozen=True)
class PluginsConfig:
    #: Python files here are scanned for IGrottPlugin providers.
    directory: str = _field("plugins")
    #: Third-party plugin names to run: opt-in, so a file dropped in the
    #: directory does nothing until named here ("all" runs every one found).
    #: The built-in outputs are turned on by their outputs: section instead.
    enabled: typing.Union[list, str] = _field([], _enabled)
    #: Plugin names never to run.
    disabled: list = _field([], _names)
    #: Per-plugin settings, by plugin name.
    settings: dict = _field({})
    #: Records held per plugin while it is busy; beyond this they are dropped.
    queue_size: int = _field(1000, _positive)
    #: Seconds shutdown waits for the plugins in all: queues to drain, then
    #: stop hooks (which get at least 1 s); what is left is dropped and counted.
    stop_timeout: float = _field(5.0, _non_negative)
    #: Warn when a plugin's delivery in flight takes this long (0: never).
    stall_warning: float = _field(60.0, _non_negative)


@dataclasses.dataclass(frozen=True)
class JsonlConfig:
    #: File each record is appended to as one JSON line.
    path: str = _field("grott.jsonl", lambda v: None if v else "must not be empty")


@dataclasses.dataclass(frozen=True)
class MqttConfig:
    #: Broker host name or address, and port (8883 is usual with TLS).
    host: str = _field("localhost", lambda v: None if v else "must not be empty")
    port: int = _field(1883, _port)
    #: Records are published here (plus "/SERIAL" with serial_in_topic).
    topic: str = _field("energy/growatt", _topic)
    serial_in_topic: bool = _field(False)
    retain: bool = _field(False)
    qos: int = _field(1, _choices(0, 1, 2))
    #: "" lets the client pick a random id.
    client_id: str = _field("")
    username: str = _field("")
    password: str = _field("", secret=True)
    keepalive: int = _field(60, _positive)
    protocol: str = _field("3.1.1", _choices("3.1.1", "5"))
    tls: bool = _field(False)
    #: CA bundle to verify the broker with ("": the system's CAs).
    ca_certs: str = _field("")
    #: Client certificate and key, for brokers that want one.
    certfile: str = _field("")
    keyfile: str = _field("")
    #: Skip the broker host name check (testing only).
    tls_insecure: bool = _field(False)
    #: Seconds between reconnection attempts: doubling from min up to max
    #: (a few seconds, so records flow again soon after the broker is back).
    reconnect_min: float = _field(1.0, _positive)
    reconnect_max: float = _field(5.0, _positive)
    #: "online"/"offline" (retained, offline is the last will); "" means TOPIC/availability.
    availability_topic: str = _field("", lambda v: _topic(v, allow_empty=True))
    #: Home Assistant MQTT discovery.
    discovery: bool = _field(False)
    discovery_prefix: str = _field("homeassistant", _topic)
    #: Announce every value (raw reg_N too, disabled by default), not only the curated ones.
    discovery_all: bool = _field(False)
    #: Keep records on disk until the broker has them (outputs.spool); false
    #: keeps them in memory (plugins.queue_size) while the broker is away.
    spool: bool = _field(True)


def _http_url(value):
    from urllib.parse import urlsplit
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"expected an http:// or https:// URL with a host, got {value!r}"
    if parts.query or parts.fragment:
        return "must not have a query or fragment"


def _nonempty(value):
    if not value:
        return "must not be empty"


@dataclasses.dataclass(frozen=True)
class InfluxdbConfig:
    #: The server: http://host:8086, or https:// (certificate checked).
    url: str = _field("http://localhost:8086", _http_url)
    #: 1 (InfluxDB 1.x: database, username, password, retention_policy) or
    #: 2 (InfluxDB 2.x/3.x: org, bucket, token).
    version: int = _field(1, _choices(1, 2))
    database: str = _field("grott")
    username: str = _field("")
    password: str = _field("", secret=True)
    #: "": the database's default retention policy.
    retention_policy: str = _field("")
    org: str = _field("")
    bucket: str = _field("")
    token: str = _field("", secret=True)
    #: Most records (points) per write request.
    batch_size: int = _field(500, _positive)
    #: Seconds a write waits for a batch to fill (0: write at once).
    flush_interval: float = _field(10.0, _non_negative)
    #: Measurement names: PREFIX + record kind (data, announce).
    measurement_prefix: str = _field("grott_")
    #: The time zone of the datalogger clocks: "local" or an IANA name.
    timezone: str = _field("local", _timezone)
    #: CA bundle for an https:// server with a private CA ("": system CAs).
    ca_certs: str = _field("")
    #: Seconds one write request may take.
    timeout: float = _field(30.0, _positive)

    def section_problem(self):
        """
        (key, problem) for settings that do not fit together, or None.
        """
        if self.version == 1 and not self.database:
            return "database", "must be set with version: 1"
        if self.version == 2:
            for key in ("org", "bucket", "token"):
                if not getattr(self, key):
                    return key, "must be set with version: 2"
        return None


def _systems(value):
    for serial, system in value.items():
        if not isinstance(serial, str) or not serial:
            return f"keys are inverter serials (text), got {serial!r}"
        if isinstance(system, bool) or not isinstance(system, int) or system < 1:
            return f"{serial}: expected a PVOutput system id (a whole number), got {system!r}"


@dataclasses.dataclass(frozen=True)
class PvoutputConfig:
    #: The API key (PVOutput: Settings, API Settings).  Never logged.
    api_key: str = _field("", _nonempty, secret=True)
    #: Inverter serial -> PVOutput system id; other inverters are not sent.
    systems: dict = _field({}, _systems)
    #: Minutes between statuses per system: the system's Status Interval.
    status_interval: int = _field(5, _choices(1, 2, 3, 4, 5, 6, 10, 15, 20, 30, 60))
    #: Donation mode: 300 requests an hour instead of 60, 100 statuses per
    #: batch instead of 30, backdating 90 days instead of 14.
    donation: bool = _field(False)
    #: The API's base URL (a test server elsewhere).
    url: str = _field("https://pvoutput.org/service/r2/", _http_url)
    #: The time zone of the datalogger clocks and the PVOutput system.
    timezone: str = _field("local", _timezone)
    #: Seconds one request may take.
    timeout: float = _field(30.0, _positive)

    def section_problem(self):
        if not self.api_key:
            return "api_key", "must be set (PVOutput: Settings, API Settings)"
        if not self.systems:
            return "systems", "map at least one inverter serial to a PVOutput system id"
        return None


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(value):
    """
    A duration setting in seconds: a number of seconds, or text such as
    C{"90s"}, C{"30m"}, C{"12h"}, C{"14d"}.
    """
    if isinstance(value, str):
        text = value.strip()
        unit = _DURATION_UNITS.get(text[-1:].lower())
        if unit is None:
            return float(text)
        return float(text[:-1]) * unit
    return float(value)


def _duration(value):
    try:
        amount = seconds(value)
    except ValueError:
        return f"expected seconds or a duration like 30m, 12h, 14d; got {value!r}"
    if not amount > 0:
        return "must be greater than 0"


@dataclasses.dataclass(frozen=True)
class SpoolConfig:
    #: One SQLite file per output here (relative to the working directory).
    directory: str = _field("spool", lambda v: None if v else "must not be empty")
    #: Largest size of one output's spool in megabytes; the oldest records go first.
    max_mb: float = _field(100.0, _positive)
    #: Records older than this (seconds, or 30m / 12h / 14d) are dropped.
    max_age: typing.Union[float, str] = _field("14d", _duration)
    #: Longest wait between delivery attempts, seconds (doubling from 1 s).
    retry_max: float = _field(60.0, _positive)


def _instance_id(value):
    if value and (len(value) > 64 or not value.isprintable() or "/" in value
                  or "+" in value or "#" in value):
        return ("up to 64 printable characters, without /, + or # "
                "(it becomes part of MQTT messages)")
    return None


@dataclasses.dataclass(frozen=True)
class InstanceConfig:
    #: This process's name among several behind HAProxy; empty: host name
    #: and datalogger port (e.g. "pi4:5279").
    id: str = _field("", _instance_id)


@dataclasses.dataclass(frozen=True)
class OutputsConfig:
    """
    The built-in outputs.  A section present (even empty) turns that output
    on; an absent one leaves it as None, off.
    """

    jsonl: JsonlConfig = _field(None)
    mqtt: MqttConfig = _field(None)
    influxdb: InfluxdbConfig = _field(None)
    pvoutput: PvoutputConfig = _field(None)
    #: Where and how much the spooled outputs keep on disk (always present).
    spool: SpoolConfig = dataclasses.field(default_factory=SpoolConfig)


@dataclasses.dataclass(frozen=True)
class ControlConfig:
    """
    The control plane (grott.control): what may be written, and MQTT
    request/reply.
    """

    #: Write any holding / datalogger register, not only the family's
    #: documented settings (17-19 stay protected by proxy.protect_server_address).
    allow_raw_writes: bool = _field(False)
    #: Answer requests on TOPIC_PREFIX/<datalogger>/request (needs outputs.mqtt).
    mqtt: bool = _field(False)
    #: First topic level of request, reply and status topics.
    topic_prefix: str = _field("grott", _topic)
    #: Reply "not connected" to requests for dataloggers this grott does
    #: not hold.  Set false when several instances share the broker
    #: (docs/scaling.md): only the instance holding a datalogger answers.
    answer_unknown: bool = _field(True)
    #: Seconds between reads that refresh the Home Assistant settings
    #: entities (control.mqtt with outputs.mqtt.discovery); 0 = never.
    poll_interval: float = _field(600.0, _non_negative)


@dataclasses.dataclass(frozen=True)
class Config:
    """
    The whole configuration.  C{source} is the file it came from.
    """

    #: Which grott this is (logs, stats, status messages).
    instance: InstanceConfig = dataclasses.field(default_factory=InstanceConfig)
    proxy: ProxyConfig = dataclasses.field(default_factory=ProxyConfig)
    command: CommandConfig = dataclasses.field(default_factory=CommandConfig)
    control: ControlConfig = dataclasses.field(default_factory=ControlConfig)
    #: The monitoring HTTP endpoint: Prometheus metrics, health, stats.
    metrics: MetricsConfig = dataclasses.field(default_factory=MetricsConfig)
    log: LogConfig = dataclasses.field(default_factory=LogConfig)
    plugins: PluginsConfig = dataclasses.field(default_factory=PluginsConfig)
    #: Built-in outputs (jsonl, mqtt); a section present turns it on.
    outputs: OutputsConfig = dataclasses.field(default_factory=OutputsConfig)
    #: Extra or overriding register definitions (see README "Registers").
    registers: list = _field([])
    #: Inverter family per datalogger or inverter serial, overriding detection.
    families: dict = _field({})
    #: Device type code -> register numbers or names to extract.
    dtc_filter: dict = _field({})
    source: str = dataclasses.field(default="<defaults>", compare=False)
    #: Dotted key -> line in C{source}, for messages (see L{Config.problem}).
    lines: dict = dataclasses.field(default_factory=dict, compare=False,
                                    metadata={"internal": True})

    def problem(self, dotted, problem):
        """
        C{problem} with C{dotted} key, as one line naming the file and the
        key's line (for checks made after loading).
        """
        return problem_line(self.source, dotted, problem, self.lines)


#: Config fields that are not keys of the file.
_INTERNAL = ("source", "lines")


# ---------------------------------------------------------------- loading

_TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number",
               str: "a string", list: "a list", dict: "a mapping"}


class _Where:
    """
    Where the values of one file came from, and the problems found so far.

    C{lines} maps a dotted key (C{proxy.listen}, C{registers[2].name}) to
    its line in the file and C{texts} a scalar's text as typed, so that
    C{protocol: 5} can be taken as the string "5".  Both are empty for data
    that did not come from a file.
    """

    def __init__(self, source, lines=None, texts=None):
        self.source = source
        self.lines = lines or {}
        self.texts = texts or {}
        self.problems = []
        #: (dotted key, value) of sections a duplicate key made YAML drop.
        self.dropped = []

    def add(self, dotted, problem, line=None):
        line = self.lines.get(dotted) if line is None else line
        self.problems.append((line or 0, problem_line(self.source, dotted, problem,
                                                      {dotted: line})))

    def error(self):
        """
        The L{ConfigError} listing the problems in file order, or None.
        """
        if self.problems:
            return ConfigError(*(text for _, text in sorted(self.problems, key=lambda p: p[0])))
        return None


def problem_line(source, dotted, problem, lines=None):
    """
    One problem in the project's one-line style:
    C{FILE: dotted.key: problem (line N)}.
    """
    line = (lines or {}).get(dotted)
    at = f" (line {line})" if line else ""
    return f"{source}: {dotted or 'top level'}: {problem}{at}"


_LINE = re.compile(r"\(line (\d+)\)$")


def in_file_order(problems):
    """
    Problem lines sorted by the line they name (stable; lines naming none
    first), so a list from several checks reads top to bottom.
    """
    def line(problem):
        match = _LINE.search(problem)
        return int(match.group(1)) if match else 0
    return sorted(problems, key=line)


def without_line(problem):
    """A problem line without its C{(line N)}: the same problem, found twice."""
    return _LINE.sub("", problem).rstrip()


def _type_ok(value, tp):
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp)


_NOT_SET = object()


def _convert(value, tp, where, ctx, secret=False):
    """
    Check C{value} against the annotation C{tp}; return it (floats as
    float), or C{_NOT_SET} after recording the problem in C{ctx}.  A
    C{secret} value is never echoed in the problem (grott check prints it).
    """
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where, ctx)
    options = typing.get_args(tp) if typing.get_origin(tp) is typing.Union else (tp,)
    for option in options:
        if _type_ok(value, option):
            return float(value) if option is float else value
    if str in options and isinstance(value, (int, float)) and not isinstance(value, bool):
        # What YAML users type: `protocol: 5` is the string "5" to them,
        # and `password: 0123` is "0123", as typed, not YAML's octal 83.
        if where in ctx.texts:
            return ctx.texts[where]
        if not secret:
            return str(value)
    expected = " or ".join(_TYPE_NAMES.get(o, getattr(o, "__name__", str(o))) for o in options)
    shown = "" if secret else f" {value!r}"
    hint = " (quote it in the YAML file)" if secret and str in options else ""
    ctx.add(where, f"expected {expected}, got {type(value).__name__}{shown}{hint}")
    return _NOT_SET


def _build(cls, data, where, ctx):
    """
    C{cls} built from the mapping C{data}; every problem is recorded in
    C{ctx} and the offending key left at its default, so one pass finds
    them all.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        ctx.add(where, f"expected a mapping, got {type(data).__name__}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in _INTERNAL}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else str(key)
        field = fields.get(key)
        if field is None:
            known = ", ".join(sorted(fields))
            ctx.add(dotted, f"unknown key (known keys here: {known})")
            continue
        value = _convert(value, hints[key], dotted, ctx, secret=not field.repr)
        if value is _NOT_SET:
            continue
        check = field.metadata.get("check")
        problem = check(value) if check else None
        if problem:
            ctx.add(dotted, problem)
            continue
        kwargs[key] = value
    built = cls(**kwargs)
    problem = built.section_problem() if hasattr(built, "section_problem") else None
    if problem:
        # A rule across keys (InfluxDB 2 needs a token, ...): recorded like
        # any other problem, the section then left at its defaults.
        key, text = problem
        ctx.add(f"{where}.{key}" if where else key, text)
        return cls()
    return built


def _type_at(dotted):
    """
    The dataclass a dotted key of the file is built into, or None.
    """
    tp = Config
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(tp) or part in _INTERNAL:
            return None
        tp = typing.get_type_hints(tp).get(part)
    return tp if dataclasses.is_dataclass(tp) else None


def _config(data, ctx):
    config = _build(Config, data, "", ctx)
    if config.control.mqtt and config.outputs.mqtt is None:
        ctx.add("control.mqtt", "needs outputs.mqtt (the broker connection it uses)")
    for dotted, value in ctx.dropped:
        # A section YAML dropped for a later duplicate: its mistakes are
        # reported too, so fixing the duplicate reveals nothing new.
        tp = _type_at(dotted)
        if tp is not None:
            _build(tp, value, dotted, ctx)
    config = dataclasses.replace(config, source=ctx.source, lines=ctx.lines)
    error = ctx.error()
    if error is not None:
        # What could be read, the wrong keys left at their defaults: lets
        # `grott check` run its further checks and still list everything.
        error.config = config
        raise error
    return config


def config_from_dict(data, source="<config>"):
    """
    Build a L{Config} from parsed YAML; errors are prefixed with C{source}.
    """
    return _config(data, _Where(source))


def _marks(node, path, ctx, dropped):
    """
    Walk the composed YAML tree before it is constructed: note the line
    of every key and item and the text of every scalar, and record each
    duplicate key as a problem (PyYAML would keep the last one and
    silently drop the first).
    """
    if isinstance(node, yaml.MappingNode):
        seen = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            key = key_node.value
            dotted = f"{path}.{key}" if path else key
            line = key_node.start_mark.line + 1
            if key in seen:
                first_line, first_node = seen[key]
                ctx.add(dotted, f"duplicate key (first at line {first_line}; YAML keeps only "
                                f"the last, silently dropping the first)", line)
                dropped.append((dotted, first_node))
            ctx.lines[dotted] = line
            seen[key] = (line, value_node)
            _marks(value_node, dotted, ctx, dropped)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            dotted = f"{path}[{index}]"
            ctx.lines[dotted] = item.start_mark.line + 1
            _marks(item, dotted, ctx, dropped)
    elif isinstance(node, yaml.ScalarNode):
        ctx.texts[path] = node.value


def config_from_string(text, source="<config>"):
    """
    Parse YAML text into a L{Config}; every problem in it is one line of
    the L{ConfigError}.
    """
    ctx = _Where(source)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        dropped = []
        if node is not None:
            _marks(node, "", ctx, dropped)
        data = loader.construct_document(node) if node is not None else None
        ctx.dropped = [(dotted, loader.construct_object(n, deep=True)) for dotted, n in dropped]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{source}: not valid YAML{at}: {problem}") from None
    finally:
        loader.dispose()
    return _config(data, ctx)


def load_config(path):
    """
    Read and check the configuration file at C{path}.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the configuration file: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text: {e}") from None
    return config_from_string(text, os.fspath(path))
