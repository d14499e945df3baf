"""
The service tree: what runs, wired together.

    grott (GrottService)
     +- logging    level, log file, per-datalogger files, secret masking
     +- metrics    monitoring HTTP (grott.monitor): /metrics, /healthz, /readyz,
     |             /stats; absent with metrics.listen: none
     +- plugins    plugin host: a bounded queue per plugin, thread pool, outputs
     +- proxy      datalogger listener (strports) -> per-datalogger upstream
     +- stats      the session report on SIGUSR1
     +- control    MQTT request/reply for the control plane (control.mqtt)
     +- control-entities  Home Assistant entities for the settings (+ discovery)
     +- command    the admin socket (grott.commands); absent with command.listen: none

Children stop in reverse: the proxy stops taking data before the plugins
drain, the monitoring endpoint answers until both have stopped, and logging
closes last.

This is the one module that knows every part; the parts know only what they
are handed (the registry, a record callback, a clock).
"""

import errno
import os
import socket
from functools import partial

from twisted.application import service, strports
from twisted.internet import defer
from twisted.internet.error import CannotListenError

from grott import limits
from grott.commands import CommandDispatcher, CommandFactory, is_loopback
from grott.config import ConfigError, ParseOnlyReactor, allowed_serials, in_file_order
from grott.counters import TimedEndpoint, count_decoding
from grott.instance import instance_id
from grott.interfaces import IGrottObserver
from grott.logs import Logger, LoggingService, check_paths
from grott.pluginhost import PluginHost
from grott.policy import CloudCommandPolicy
from grott.proxy import PacketTrace, ProxyFactory
from grott.registers import Decoder, userconfig
from grott.session import Registry
from grott.stats import StatsService, report_data, report_lines
from grott.upstream import upstream_endpoint

__all__ = ["CannotStart", "GrottService", "ProxyService", "makeService", "probe_listeners"]

#: Seconds shutdown waits for sessions to close before going on.
SHUTDOWN_DEADLINE = 3.0


class CannotStart(SystemExit, Exception):
    """
    grott cannot start (a port is taken); the message is the one line to
    show.

    Both kinds of exception on purpose: as a SystemExit it ends a
    foreground twistd with that line and exit status 1, no traceback; as
    an Exception it is what a daemonized twistd catches after the fork, to
    tell the waiting parent (which then exits 1 instead of waiting
    forever) and to remove the pidfile.  A bare SystemExit gets neither.
    """


def _cannot_listen(interface, port, error):
    if isinstance(port, (bytes, str)):  # a UNIX socket's path
        where = os.fsdecode(port)
    else:
        where = f"{interface or '*'}:{port}"
    return CannotStart(f"grott: cannot listen on {where}: {_strip(error)}")


class GrottService(service.MultiService):
    """
    The top of the tree.  Children stop one after the other, last started
    first, so the proxy stops taking data before the plugins drain and the
    logs close.  A port that cannot be bound ends start-up with one line.
    """

    def privilegedStartService(self):
        try:
            service.MultiService.privilegedStartService(self)
        except CannotListenError as e:
            # Logging took over grott's log at its privileged start: give
            # the log back, for the one line that says why.
            logging = self.namedServices.get("logging")
            if logging is not None:
                logging.stopService()
            raise _cannot_listen(e.interface, e.port, e.socketError) from None

    @defer.inlineCallbacks
    def stopService(self):
        service.Service.stopService(self)
        for child in reversed(list(self)):
            if child.running:
                try:
                    yield defer.maybeDeferred(child.stopService)
                except Exception:
                    Logger().failure("stopping {name} failed", name=child.name)


def probe_listeners(config):
    """
    Try to bind, and let go at once, each TCP port C{config} listens on;
    raise L{CannotStart} for one that is taken.

    Called before twistd forks: a daemonized twistd's parent process can
    only print its own "An error has occurred" sentence for a failure in
    the daemon, so a busy port found here gives the same one line on the
    terminal as in the foreground, and no pidfile is written.  (Binding
    for real still happens in C{privilegedStartService}; a port taken in
    between is reported through L{CannotStart}.)
    """
    from twisted.internet.endpoints import serverFromString
    listens = [config.proxy.listen]
    for other in (config.command.listen, config.metrics.listen):
        if other != "none":
            listens.append(other)
    for description in listens:
        recorder = ParseOnlyReactor()
        serverFromString(recorder, description).listen(None)
        for port, interface in recorder.listening:
            if port:
                _probe(interface, port)


def _probe(interface, port):
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As Twisted's own listenTCP: a port in TIME_WAIT is not "taken".
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((interface or ("::" if family == socket.AF_INET6 else ""), port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
                raise _cannot_listen(interface, port, e) from None
            raise


def _strip(error):
    return getattr(error, "strerror", None) or str(error)


class ProxyService(service.MultiService):
    """
    The datalogger listener and the sessions behind it.
    """

    log = Logger()

    def __init__(self, factory, listen, reactor, max_dataloggers="auto", trace=None,
                 instance_id=None):
        """
        @param trace: a callable returning the packet trace (an
            L{grott.interfaces.IPacketTrace}, or None when tracing is off),
            asked at start, when the logging service has settled the level.
        @param instance_id: this grott's C{instance.id}, for the start-up line.
        """
        service.MultiService.__init__(self)
        self.instance_id = instance_id
        self.factory = factory
        self.trace = trace
        self.reactor = reactor
        self.max_setting = max_dataloggers
        listener = strports.service(listen, factory, reactor=reactor)
        listener.setName("listener")
        listener.setServiceParent(self)

    def privilegedStartService(self):
        soft = limits.raise_nofile_limit()
        allowed = limits.dataloggers_for(soft) if soft is not None else None
        if self.max_setting == "auto":
            self.factory.max_dataloggers = allowed
        else:
            self.factory.max_dataloggers = self.max_setting
            if allowed is not None and self.max_setting > allowed:
                self.log.warn("proxy.max_dataloggers is {max}, but the open-file limit "
                              "({soft}) only allows {allowed}", max=self.max_setting,
                              soft=soft, allowed=allowed)
        service.MultiService.privilegedStartService(self)
        self.log.info("grott instance {instance} can hold {count} dataloggers "
                      "(open-file limit {soft})", instance=self.instance_id,
                      count=self.factory.max_dataloggers, soft=soft)

    def startService(self):
        if self.trace is not None:
            self.factory.trace = self.trace()
        service.MultiService.startService(self)

    @defer.inlineCallbacks
    def stopService(self):
        yield service.MultiService.stopService(self)
        closing = self.factory.closeAll("grott is shutting down")
        closing.addTimeout(SHUTDOWN_DEADLINE, self.reactor)
        try:
            yield closing
        except defer.TimeoutError:
            self.log.warn("some datalogger connections did not close within {s} s",
                          s=SHUTDOWN_DEADLINE)


def plugin_lines(host):
    """
    The plugins' part of the stats report.
    """
    lines = []
    for s in host.stats():
        lines.append(f"  plugin {s['name']}: delivered={s['delivered']} failed={s['failed']} "
                     f"dropped={s['dropped']} queued={s['queued']}")
        spool = s.get("spool")
        if spool is not None:
            lines.append(f"  spool {s['name']}: queued={spool['queued']} "
                         f"on_disk={spool['on_disk']}B delivered={spool['delivered']} "
                         f"retried={spool['retried']} dropped={spool['dropped']} "
                         f"rejected={spool['rejected']} last_error={spool['last_error'] or '-'}")
    for runner in host.runners:
        if IGrottObserver.providedBy(runner.plugin):
            lines.extend(runner.plugin.reportLines())
    return lines


def grott_status(registry, host):
    """
    grott's own counters for observers (L{IGrottObserver.watchGrott}).
    """
    sessions = list(registry)
    upstream = [s.upstream_state for s in sessions if s.upstream_state != "none"]
    return {
        "dataloggers": len(sessions),
        "local_acks": registry.sum("local_acks"),
        "records_dropped": sum(s["dropped"] for s in host.stats()),
        "cloud_reachable": ("connected" in upstream) if upstream else None,
    }


def makeDecoder(config):
    """
    The register decoder for C{config}; a bad C{registers:}, C{families:} or
    C{dtc_filter:} entry is a L{ConfigError} naming the file.
    """
    try:
        return Decoder(registers=config.registers, dtc_filter=config.dtc_filter,
                       families=config.families)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{config.source}: {e}") from None


def problems(config):
    """
    What the config loader cannot check alone: the register definitions,
    families and DTC filter (each entry on its own), the files the C{log:}
    section names, and the admin socket's exposure (L{check_command}).  One line per problem, naming file, key and line.
    """
    found = []
    for dotted, message in userconfig.problems(config.registers, config.dtc_filter,
                                               config.families):
        line = config.lines.get(dotted)
        found.append(f"{config.source}: {message}" + (f" (line {line})" if line else ""))
    for text in check_paths(config.log):
        dotted, _, problem = text.partition(": ")
        found.append(config.problem(dotted, problem))
    try:
        check_command(config)
    except ConfigError as e:
        found.extend(f"{p} (line {config.lines['command.listen']})"
                     if "command.listen" in config.lines else p for p in e.problems)
    return found


def check_command(config):
    """
    An admin socket that other hosts can reach needs C{command.token}:
    without one anybody on the network could write inverter registers and
    re-point the datalogger.  Raise L{ConfigError} otherwise.
    """
    c = config.command
    if c.listen != "none" and not c.token and not is_loopback(c.listen):
        raise ConfigError(f"{config.source}: command.token: required when command.listen "
                          f"({c.listen}) is not a loopback address or a unix: socket")


def _is_unix(description):
    return description.split(":", 1)[0].lower() == "unix"


def command_endpoint(command):
    """
    The admin socket's endpoint description: a C{unix:} socket gets
    C{command.mode} (0600 by default) unless the description sets its own.
    """
    listen = command.listen
    if _is_unix(listen) and ":mode=" not in listen:
        listen = f"{listen}:mode={command.mode}"
    return listen


class PrivateListener(service.Service):
    """
    Wraps the admin socket's listener service: a C{unix:} socket is bound
    under umask 0177, so it exists with mode 0600 from the first moment.
    Twisted sets C{command.mode} only after bind(), and a local user who
    connects in between would stay connected after the chmod.
    """

    def __init__(self, listener):
        self.listener = listener

    def privilegedStartService(self):
        old = os.umask(0o177)
        try:
            self.listener.privilegedStartService()
        finally:
            os.umask(old)
        service.Service.privilegedStartService(self)

    def startService(self):
        service.Service.startService(self)
        self.listener.startService()

    def stopService(self):
        service.Service.stopService(self)
        return self.listener.stopService()


def validate(config):
    """
    Raise L{ConfigError} listing L{problems}, before anything is built.
    """
    found = problems(config)
    if found:
        raise ConfigError(*in_file_order(found))


def _mqtt_output(config, plugins):
    """
    The running mqtt output, whose connection the control plane shares.
    """
    from grott.outputs.mqttspool import mqtt_output  # only with control.mqtt on

    for runner in plugins.runners:
        output = mqtt_output(runner.plugin)
        if runner.name == "mqtt" and hasattr(output, "subscribe"):
            return output
    raise ConfigError(f"{config.source}: control.mqtt: the mqtt output is not running "
                      "(check outputs.mqtt and plugins.enabled/disabled)")


def _allowed_serials(config):
    """
    C{proxy.allowed_serials} as a list, or None when any serial may connect;
    a serials file that became unreadable since the config was checked is
    a L{ConfigError}.
    """
    try:
        serials = allowed_serials(config.proxy.allowed_serials)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{config.source}: proxy.allowed_serials: cannot read the serials "
                          f"file: {getattr(e, 'strerror', None) or e}") from None
    return serials or None


def makeService(config, reactor):
    """
    Build the grott service tree for C{config} on C{reactor}.
    """
    check_command(config)
    top = GrottService()
    top.setName("grott")
    top.instance_id = instance_id(config)
    logging = LoggingService.fromConfig(config, reactor)
    logging.setName("logging")
    plugins = PluginHost(config, reactor)
    plugins.setName("plugins")
    registry = Registry()
    decoder = makeDecoder(config)
    proxyConfig = config.proxy
    upstream = None if proxyConfig.upstream == "none" else \
        TimedEndpoint(upstream_endpoint(reactor, proxyConfig.upstream), registry.totals, reactor)
    commands = CommandDispatcher(registry, reactor, timeout=config.command.timeout)
    timezone = _timezone(proxyConfig.timezone)
    control = None
    if config.command.listen != "none" or config.control.mqtt:
        # Imported only when a front end can use it: the settings catalogue
        # and the control plane are half a megabyte of a process that may
        # hold thousands of dataloggers in 100 MB.
        from grott.control import Control
        control = Control(commands, allow_raw_writes=config.control.allow_raw_writes,
                          protect_server_address=config.proxy.protect_server_address,
                          now=lambda: reactor.seconds(), timezone=timezone)
    factory = ProxyFactory(
        upstream, registry, reactor,
        commands=commands,
        upstream_label=config.proxy.upstream,
        connect_timeout=config.proxy.connect_timeout,
        idle_timeout=config.proxy.idle_timeout,
        pending_limit=config.proxy.pending_limit,
        decode=count_decoding(decoder.decode, registry.totals,
                              partial(_family_of, registry)),
        sink=plugins,
        fallback=proxyConfig.upstream_fallback,
        retry_max=proxyConfig.retry_max,
        policy=CloudCommandPolicy(proxyConfig.cloud_commands,
                                  proxyConfig.protect_server_address),
        set_time=proxyConfig.set_time,
        timezone=timezone,
        allowed_serials=_allowed_serials(config),
        allowed_networks=[str(n) for n in proxyConfig.allowed_networks] or None,
        proxied=proxyConfig.listen.startswith("haproxy:"),
    )
    for runner in plugins.runners:
        if IGrottObserver.providedBy(runner.plugin) and not runner.blocking:
            runner.plugin.watchGrott(registry, partial(grott_status, registry, plugins))
            registry.observers.append(runner.plugin)
    tracing = logging.tracing
    proxy = ProxyService(factory, config.proxy.listen, reactor, config.proxy.max_dataloggers,
                         trace=lambda: PacketTrace(tracing.log) if tracing.enabled else None,
                         instance_id=top.instance_id)
    proxy.setName("proxy")

    extra = [commands.report_lines, partial(plugin_lines, plugins)]
    if control is not None:
        extra.insert(1, control.report_lines)
    controlServices = []
    mqttControl = None
    if config.control.mqtt:
        # Imported only when on: it brings paho (see _monitoring).
        from grott.mqttcontrol import MqttControl
        mqttControl = MqttControl(control, _mqtt_output(config, plugins), registry,
                                  prefix=config.control.topic_prefix,
                                  instance_id=instance_id(config),
                                  answer_unknown=config.control.answer_unknown)
        mqttControl.setName("control")
        controlServices.append(mqttControl)
        extra.insert(2, mqttControl.report_lines)
        if config.outputs.mqtt.discovery:
            from grott.controlhass import ControlEntities
            entities = ControlEntities(control, mqttControl.mqtt, registry, reactor,
                                       prefix=config.control.topic_prefix,
                                       discovery_prefix=config.outputs.mqtt.discovery_prefix,
                                       poll_interval=config.control.poll_interval)
            entities.setName("control-entities")
            controlServices.append(entities)

    def report():
        return report_lines(registry, reactor.seconds(), extra=extra,
                            instance=top.instance_id)

    def report_json():
        data = report_data(registry, reactor.seconds(), top.instance_id)
        data["commands"] = commands.report()
        if control is not None:
            data["control"] = dict(control.counts)
        data["plugins"] = plugins.stats()
        data["observers"] = {runner.name: runner.plugin.reportData()
                             for runner in plugins.runners
                             if IGrottObserver.providedBy(runner.plugin)}
        return data

    stats = StatsService(report, reactor)
    stats.setName("stats")

    # Children start in this order and stop in reverse: logging closes last,
    # and the monitoring endpoint answers (503 on /readyz) until the
    # proxy and the plugins have stopped.
    logging.setServiceParent(top)
    if config.metrics.listen != "none":
        monitoring = _monitoring(config.metrics, reactor, top, proxy, factory, registry,
                                 commands, plugins, report_json)
        monitoring.setName("metrics")
        monitoring.setServiceParent(top)
    plugins.setServiceParent(top)
    proxy.setServiceParent(top)
    stats.setServiceParent(top)
    # After the proxy: they stop first, saying "offline" while MQTT is up.
    for child in controlServices:
        child.setServiceParent(top)
    if config.command.listen != "none":
        # strports: a command port in use stops start-up like the proxy's.
        c = config.command
        adminFactory = CommandFactory(commands, report, listen=c.listen, clock=reactor,
                                      idle_timeout=c.idle_timeout, rate=c.rate_limit,
                                      token=c.token, control=control)
        extra.insert(0, adminFactory.report_lines)
        admin = strports.service(command_endpoint(c), adminFactory, reactor=reactor)
        if _is_unix(c.listen):
            admin = PrivateListener(admin)
        admin.setName("command")
        admin.setServiceParent(top)
    top.commands = commands
    top.control = control
    top.mqttControl = mqttControl
    top.registry = registry
    top.report = report
    top.report_json = report_json
    return top


def _monitoring(settings, reactor, top, proxy, factory, registry, commands, plugins,
                report_json):
    """
    The monitoring endpoint's listener service (C{metrics.listen}).

    Its modules are imported here, only when it is on: prometheus_client
    and twisted.web are some 4.5 MB of a process that may hold thousands
    of dataloggers in 100 MB.
    """
    from grott.metrics import GrottCollector, metrics_registry
    from grott.monitor import check_ready, make_site

    collector = GrottCollector(registry, reactor, commands=commands, plugins=plugins.stats,
                               capacity=lambda: factory.max_dataloggers,
                               instance=top.instance_id)

    def readiness():
        return check_ready(top.running and proxy.running, factory.numPorts > 0,
                           plugins.stats())

    site = make_site(metrics_registry(collector), readiness, report_json,
                     token=settings.token, listen=settings.listen, reactor=reactor)
    return strports.service(settings.listen, site, reactor=reactor)


def _timezone(name):
    """
    C{proxy.timezone} as a tzinfo, None for the local time zone (zoneinfo
    is imported only for a named one).
    """
    if name == "local":
        return None
    from zoneinfo import ZoneInfo
    return ZoneInfo(name)


def _family_of(registry, packet):
    """
    The inverter family last decoded for C{packet}'s datalogger, if any:
    what a decode error is counted under.
    """
    session = registry.by_serial(packet.datalogger_serial)
    return session.family if session is not None else None
