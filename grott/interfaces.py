"""
The contracts between grott and its plugins.

A plugin is any object providing L{IGrottPlugin}.  grott finds plugins in
installed packages (Twisted dropins under C{grott/plugins/}) and in Python
files of the plugins directory, checks each with C{verifyObject}, and hands
every decoded record to every enabled plugin through a queue of its own (see
L{grott.pluginhost}).  The other plugin interfaces are optional: the host
asks C{providedBy} and adapts its behaviour.

The last four are the seams inside grott, between the relay
(L{grott.proxy}) and what it is wired to in L{grott.service}: where records
go (L{IRecordSink}), who may claim a datalogger's replies
(L{ICommandHook}), how the rest of grott reaches a datalogger connection
(L{IDataloggerLink}) and where traced packets go (L{IPacketTrace}).  Each
is checked with C{verifyObject} in the tests, so a part can be replaced
without reading the relay.
"""

from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface

__all__ = [
    "DeliveryFailed",
    "IBatchPlugin",
    "IBlockingPlugin",
    "ICommandHook",
    "IConfigurablePlugin",
    "IDataloggerLink",
    "IGrottObserver",
    "IGrottPlugin",
    "IGrottPluginService",
    "IPacketTrace",
    "IRecordSink",
    "ISpoolSink",
]


class DeliveryFailed(Exception):
    """
    Raised from C{data} for a record the plugin could not deliver and has
    already said why (once per outage, say): the host counts the record as
    failed and logs nothing more, where any other exception is logged with
    its traceback.
    """


class IGrottPlugin(IPlugin):
    """
    Receives every decoded record.

    Extends L{IPlugin} because Twisted's dropin cache only records IPlugin
    providers: without it an installed plugin would never be found.
    """

    name = Attribute(
        "The plugin's name in config.yaml (plugins.enabled, plugins.disabled, "
        "plugins.settings) and in logs and stats: a non-empty str of letters, "
        "digits, '_', '-' and '.', unique among the plugins grott finds.")

    def data(packet, record, log):
        """
        Handle one decoded record.

        Called once per record, in arrival order, never twice at the same
        time for the same plugin, and never on the relay's call stack: a
        slow plugin delays only its own queue.

        Without L{IBlockingPlugin} this runs on the reactor thread, so it
        must not block (no sleeping, no synchronous network or database
        calls); it may return a L{twisted.internet.defer.Deferred} or be an
        C{async def}, and the next record waits until that result fires.  A
        result that never fires stalls this plugin: its queue fills and its
        records are dropped (counted in stats).

        An exception (or a failed Deferred) is logged with its traceback and
        counted; the plugin keeps receiving records.

        @param packet: the L{grott.codec.Packet} the record came from: the
            wire bytes in C{packet.raw}, the unscrambled body in
            C{packet.payload}.
        @param record: the decoded record.  It is immutable and the same
            object is handed to every plugin: never try to change it.
        @param log: a L{twisted.logger.Logger} bound to this plugin
            (namespace C{grott.plugin.NAME}); log through it so the plugin's
            events carry its name and honour grott's log level.
        @return: ignored, or a Deferred (or coroutine) that fires when the
            record has been handled.
        """


class IBlockingPlugin(IGrottPlugin):
    """
    A plugin whose C{data} blocks: a synchronous database driver, an HTTP
    request with a synchronous library, file I/O on a slow disk.

    The host calls C{data} (and the L{IGrottPluginService} hooks, if
    provided) in a grott-owned thread pool, started and stopped with the
    service, one call at a time per plugin, so it never runs on the reactor
    thread.  It must not touch Twisted APIs other than the C{log} it is
    given.  Declare it with C{@implementer(IBlockingPlugin)}.
    """


class IBatchPlugin(IGrottPlugin):
    """
    A plugin that takes the records waiting in its queue in one call when
    more than one is waiting: a spooled output commits them in one
    transaction (one fsync) instead of one each.
    """

    def dataBatch(items, log):
        """
        Handle C{items}, a list of C{(packet, record)} in arrival order, as
        C{data} would one by one: the same rules (never on the relay's call
        stack, one call at a time, may return a Deferred), and the records
        count as delivered, or failed, together.
        """


class IGrottPluginService(Interface):
    """
    Start and stop hooks: open connections when grott starts, flush and
    close them when it stops.
    """

    def startService():
        """
        Called once when grott starts (after daemonizing, so threads and
        connections made here survive).  May return a Deferred; records
        queue up until it fires.  If it fails the failure is logged and the
        plugin receives no records.
        """

    def stopService():
        """
        Called once when grott stops, after this plugin's queue has drained
        (or the drain deadline passed).  May return a Deferred; shutdown
        waits for it up to C{plugins.stop_timeout} seconds.
        """


class IConfigurablePlugin(IPlugin):
    """
    A factory for a plugin that needs settings (the built-in outputs are
    these).  Discovered like a plugin; the host calls L{makePlugin} with the
    plugin's settings when the plugin is enabled.
    """

    name = Attribute("The name of the plugin it makes (see L{IGrottPlugin.name}).")

    def makePlugin(settings, reactor):
        """
        Build the plugin.

        @param settings: for a third-party plugin, C{plugins.settings.NAME}
            from config.yaml as parsed YAML (a dict; C{{}} when absent); for a
            built-in output, its typed section (C{outputs.jsonl},
            C{outputs.mqtt}).
        @param reactor: the reactor grott runs on; use it instead of
            importing the global one.
        @return: an L{IGrottPlugin} provider with the same C{name}.
        @raise Exception: when the settings are unusable; the message is
            logged and the plugin skipped.
        """


class ISpoolSink(IPlugin):
    """
    An output that wants durable delivery: grott keeps its records in a
    spool on disk (L{grott.spool}) and hands them over in order, in
    batches, until the sink confirms them.

    The built-in InfluxDB and PVOutput outputs are sinks; a plugin (or a
    plugin factory's C{makePlugin}) may return one instead of an
    L{IGrottPlugin}, and the plugin host wraps it in a spool configured by
    C{outputs.spool}.  A sink may also provide L{IGrottPluginService}; its
    hooks run on the reactor thread.

    Delivery is at least once: a batch that was in flight when grott
    stopped or crashed is delivered again after the restart, so a sink's
    write should be idempotent (InfluxDB points and PVOutput statuses are:
    the same time overwrites).
    """

    name = Attribute("As L{IGrottPlugin.name}; the spool file is named after it.")

    batch_size = Attribute(
        "The most records one L{deliver} call gets (an int of at least 1).")

    flush_interval = Attribute(
        "Seconds a batch smaller than batch_size waits for more records before it "
        "is delivered anyway (0: deliver at once).  Records spooled before a "
        "restart or during an outage are never held back.")

    def encode(record):
        """
        What to keep of C{record} on disk, on the reactor thread, when the
        record arrives.

        @return: C{bytes}, or None when this sink has nothing to send for the
            record (an announce for a sink that wants data only).  Decide
            here everything that depends on arrival (which time slot a
            record belongs to, the time to use when the record has none):
            L{deliver} may run hours later, after a restart.
        """

    def deliver(items):
        """
        Send a batch.

        @param items: a non-empty list of what L{encode} returned, oldest
            first.
        @return: a Deferred that fires once the receiving end confirmed the
            whole batch (its result, if an int, is how many of the items the
            sink deliberately left out as unusable; they are counted as
            rejected).  Failing with L{grott.spool.Rejected} says the batch
            itself is bad and resending cannot help: the spool tries its
            records one by one and drops those rejected alone.  Any other
            failure (connection refused, timeout, a server error) keeps the
            batch, which is tried again with exponential backoff.  The
            Deferred is cancelled when grott stops.
        """


class IRecordSink(Interface):
    """
    Where the relay hands decoded records (the plugin host).
    """

    def wantsRecords():
        """
        Whether anything consumes records now.  The relay decodes a data
        record only when this (or packet tracing) asks for it: decoding is
        most of a record's cost, and a relay without outputs needs none.
        """

    def deliver(packet, record):
        """
        Take one decoded record, with the packet it came from.  Called on
        the reactor thread after the packet's bytes went upstream; must
        return at once and never raise.
        """


class ICommandHook(Interface):
    """
    What the relay asks of the command socket (L{grott.commands}).
    """

    def consume(session, packet):
        """
        Return True when C{packet}, from the datalogger of C{session},
        answers a command grott sent: it is then not forwarded upstream.
        """

    def sessionClosed(session):
        """
        The connection of C{session} is gone: fail what still waits on it.
        """


class IDataloggerLink(Interface):
    """
    A live datalogger connection as the rest of grott sees it: through its
    L{grott.session.Session} (C{session.link}), never through the protocol.
    """

    def send(data):
        """
        Write whole packets that grott built (a command, an answer) to the
        datalogger.  Return False (writing nothing) when the connection is
        closing.
        """

    def disconnect(why):
        """
        Close the datalogger connection and its upstream; C{why} ends up in
        the disconnect log line.
        """


class IPacketTrace(Interface):
    """
    The packet trace (debug level, per-datalogger log files).
    """

    def packet(session, direction, packet, record):
        """
        One packet relayed or answered, in C{direction}
        (L{grott.codec.FROM_DATALOGGER} or L{grott.codec.TO_DATALOGGER}),
        with its decoded record or None.
        """

    def sessionClosed(session):
        """
        The connection of C{session} is gone (its trace file may close).
        """


class IGrottObserver(Interface):
    """
    A plugin that follows dataloggers as they come and go, and shows
    grott's own numbers (the mqtt output's availability and grott device).
    Called on the reactor thread; not for blocking plugins.
    """

    def watchGrott(registry, status):
        """
        Called once before start with the live L{grott.session.Registry}
        (read it, never change it) and C{status()}, returning a dict of
        grott's counters (C{dataloggers}, C{local_acks}, C{records_dropped},
        C{cloud_reachable}: True, False or None when unknown).
        """

    def dataloggerConnected(session):
        """
        A datalogger made itself known (its serial is in C{session}).
        """

    def dataloggerDisconnected(session):
        """
        That datalogger's connection ended (and no newer one replaced it).
        """

    def reportLines():
        """
        Lines for the stats report (C{stats}, SIGUSR1).
        """

    def reportData():
        """
        The same as a JSON-able dict (the monitoring endpoint's C{/stats},
        under C{observers.NAME}).
        """
