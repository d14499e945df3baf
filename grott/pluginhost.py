"""
The plugin host: every decoded record goes to every enabled plugin, and no
plugin can hold up the relay or another plugin.

Each plugin gets a L{_Runner}: a bounded queue and at most one delivery in
flight.  C{deliver} only appends to the queues and returns; the runners
call the plugins on later reactor turns (or, for L{IBlockingPlugin}
providers, in a thread pool this service owns, as
L{twisted.enterprise.adbapi} does).  A plugin that raises is logged and
keeps receiving (its first traceback is logged in full, then a count per
minute); one that falls behind fills only its own queue, after which its
records are dropped and counted, with one warning per burst and none for
a plugin that hovers at its limit; one whose delivery hangs is reported
after C{plugins.stall_warning} seconds.  Shutdown waits for the plugins
at most C{plugins.stop_timeout} seconds in all and says how many records
were not delivered.
"""

import collections
import threading
import time

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.threads import deferToThreadPool
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from grott import pluginloader
from grott.interfaces import (
    DeliveryFailed,
    IBatchPlugin,
    IGrottPlugin,
    IRecordSink,
    ISpoolSink,
)
from grott.logs import Logger
from grott.logthrottle import LogThrottle
from grott.threads import DaemonThreadPool

__all__ = ["PluginHost"]

#: Records a plugin whose deliveries finish at once gets per reactor turn...
RECORDS_PER_TURN = 50
#: ...and seconds of the turn it may use for them (the relay waits meanwhile).
SECONDS_PER_TURN = 0.004
#: Most records handed to an L{IBatchPlugin} in one call.
BATCH_RECORDS = 500


class _Runner:
    """
    One plugin's queue and delivery loop.
    """

    def __init__(self, loaded, reactor, pool, queue_size, host_log, throttle,
                 timer=time.perf_counter):
        self.name = loaded.name
        self.origin = loaded.origin
        self.plugin = loaded.plugin
        self.blocking = loaded.blocking
        self.batches = not self.blocking and IBatchPlugin.providedBy(loaded.plugin)
        self.hooks = loaded.hooks
        self.spooled = loaded.spooled
        self.reactor = reactor
        self.pool = pool
        self.timer = timer
        self.limit = queue_size
        self.host_log = host_log
        #: The host's L{LogThrottle}: keys are (kind, plugin name).
        self.throttle = throttle
        self.log = Logger(namespace=f"grott.plugin.{self.name}", source=self.plugin)
        self.queue = collections.deque()
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.state = "new"
        self._burst = 0
        self._stalled = False
        self._current = None
        self._busy_since = None
        self._scheduled = None
        self._idle_waiters = []

    # -- feeding

    def offer(self, packet, record):
        if self.state in ("stopping", "stopped"):
            # Shutting down: the proxy may still hand over a record or two.
            self.dropped += 1
            return
        if len(self.queue) >= self.limit or self.state == "broken":
            self.dropped += 1
            self._burst += 1
            if self._burst == 1 and self.throttle.admit(("behind", self.name)):
                self.host_log.warn(
                    "plugin {plugin} is {why}; dropping its records until it catches up",
                    plugin=self.name, limit=self.limit,
                    why="not running (it failed to start)" if self.state == "broken"
                    else f"behind (its queue of {self.limit} records is full)")
            return
        if self._burst and len(self.queue) <= self.limit // 2:
            # Caught up only once half the queue is free again: a plugin
            # that hovers at the limit must not log one line per record.
            if self.throttle.admit(("again", self.name)):
                self.host_log.info(
                    "plugin {plugin} is taking records again; {count} were dropped",
                    plugin=self.name, count=self._burst)
            self._burst = 0
        self.queue.append((packet, record))
        self._kick()

    def _kick(self):
        if (self.state in ("running", "stopping") and self.queue and self._current is None
                and self._scheduled is None):
            self._scheduled = self.reactor.callLater(0, self._next)

    def _next(self):
        self._scheduled = None
        # Deliveries that finish at once (most outputs: they hand the record
        # on and return) are taken several per reactor turn, not one: at
        # full load a turn also carries the relay's many reads and writes,
        # and one record per turn is what the output could then keep up
        # with.  Bounded in records and in time (a record that brings a new
        # device's discovery messages takes milliseconds), so the relay
        # still gets its turns soon.
        self._turn = RECORDS_PER_TURN
        until = self.timer() + SECONDS_PER_TURN
        try:
            while (self._turn > 0 and self.queue and self._current is None
                   and (self._turn == RECORDS_PER_TURN or self.timer() < until)):
                self._turn -= 1
                self._busy_since = self.reactor.seconds()
                if self.batches and len(self.queue) > 1:
                    items = [self.queue.popleft()
                             for _ in range(min(BATCH_RECORDS, len(self.queue)))]
                    d = defer.maybeDeferred(self.plugin.dataBatch, items, self.log)
                    record, count = items[0][1], len(items)
                else:
                    packet, record = self.queue.popleft()
                    count = 1
                    if self.blocking:
                        d = deferToThreadPool(self.reactor, self.pool, self.plugin.data,
                                              packet, record, self.log)
                    else:
                        d = defer.maybeDeferred(self.plugin.data, packet, record, self.log)
                self._current = d
                d.addBoth(self._done, record, count)
        finally:
            self._turn = 0
        self._kick()

    #: Records this turn may still take (L{_next}); 0 outside it.
    _turn = 0

    def _done(self, result, record, count=1):
        self._current = None
        if self._stalled:
            self._stalled = False
            self.host_log.info("plugin {plugin} is delivering again (that record took "
                               "{seconds:.0f} s)", plugin=self.name,
                               seconds=self.reactor.seconds() - self._busy_since)
        self._busy_since = None
        if isinstance(result, Failure):
            self.failed += count
            if result.check(DeliveryFailed):
                pass  # the plugin has said why, in its own words
            elif result.check(defer.CancelledError) and self.state != "running":
                self.host_log.warn(
                    "plugin {plugin}: delivery in flight cancelled at shutdown",
                    plugin=self.name)
            elif self.throttle.admit(("failed", self.name)):
                # The first failure in full; more within the minute are
                # counted and summed up (LogThrottle), not each a traceback.
                self.host_log.failure(
                    "plugin {plugin} failed on a record from {serial}", result,
                    level=LogLevel.error, plugin=self.name,
                    serial=getattr(record, "datalogger_serial", None))
        else:
            self.delivered += count
        if self.queue and not self._turn:
            self._kick()
        if self.idle():
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def idle(self):
        """
        Nothing in flight and nothing that will be delivered.
        """
        return self._current is None and not (
            self.queue and self.state in ("starting", "running", "stopping"))

    # -- lifecycle

    def start(self):
        """
        Run the plugin's start hook (if any), then begin delivering.
        """
        self.state = "starting"
        if not self.hooks:
            self._started(None)
            return defer.succeed(None)
        d = self._hook("startService")
        d.addCallbacks(self._started, self._start_failed)
        self._starting = d
        d.addBoth(self._start_hook_done)
        return d

    #: The start hook's Deferred while it runs (L{stop} waits for it).
    _starting = None

    def _start_hook_done(self, result):
        self._starting = None
        return result

    def _started(self, _):
        if self.state == "starting":
            self.state = "running"
            self._kick()

    def _start_failed(self, failure):
        self.state = "broken"
        self.dropped += len(self.queue)
        self.queue.clear()
        self.host_log.failure("plugin {plugin} failed to start; it will receive no records",
                              failure, level=LogLevel.error, plugin=self.name)

    def _hook(self, method):
        call = getattr(self.plugin, method)
        if self.blocking:
            return deferToThreadPool(self.reactor, self.pool, call)
        return defer.maybeDeferred(call)

    def when_idle(self):
        """
        A Deferred of its own that fires once the queue is empty and nothing
        is in flight.
        """
        if self.idle():
            return defer.succeed(None)
        d = defer.Deferred(lambda d: self._idle_waiters.remove(d))
        self._idle_waiters.append(d)
        return d

    def busy(self):
        return self._current is not None

    def check_stalled(self, after):
        """
        Warn once when the delivery in flight has taken C{after} seconds or
        more: the plugin's queue only grows, and nothing else would say so.
        """
        if self._stalled or self._busy_since is None or self.state != "running":
            return
        seconds = self.reactor.seconds() - self._busy_since
        if seconds >= after:
            self._stalled = True
            self.host_log.warn(
                "plugin {plugin} has delivered nothing for {seconds:.0f} s: one record in "
                "flight, {queued} queued{thread}", plugin=self.name, seconds=seconds,
                queued=len(self.queue),
                thread=" (hung in its thread?)" if self.blocking else "")

    def abandon(self):
        """
        Give up on what is queued (the drain deadline passed): count it as
        dropped and cancel an asynchronous delivery in flight.

        @return: how many records were left undelivered.
        """
        left = len(self.queue)
        self.dropped += left
        self.queue.clear()
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if self._current is not None and not self.blocking:
            self._current.cancel()
        return left

    def stop(self):
        """
        Run the plugin's stop hook (if any).
        """
        started = self.state in ("running", "stopping")
        starting = self.state == "starting" and self._starting is not None
        self.state = "stopped"
        if starting:
            # Stopped while its start hook still runs (a spool opening its
            # file): stop it once started, not never (it would start after
            # grott stopped and keep its connections and timers).
            d = defer.Deferred()

            def then(_):
                if self.state == "broken":
                    stop = defer.succeed(None)  # it did not start: nothing to stop
                else:
                    # Even when the host's deadline passed meanwhile.
                    stop = self._hook("stopService")
                    stop.addErrback(self._stop_failed)
                stop.addCallback(lambda result: None if d.called else d.callback(result))
            self._starting.addBoth(then)
            return d
        if not (self.hooks and started):
            return defer.succeed(None)
        if self.blocking and self.busy():
            # Its thread is still inside data(); the hook would queue behind it.
            self.host_log.warn(
                "plugin {plugin} is still busy in its thread; its stop hook is skipped",
                plugin=self.name)
            return defer.succeed(None)
        d = self._hook("stopService")
        d.addErrback(self._stop_failed)
        return d

    def _stop_failed(self, failure):
        if failure.check(defer.CancelledError):
            return  # the host's deadline passed; it says so
        self.host_log.failure("plugin {plugin} failed to stop cleanly", failure,
                              level=LogLevel.error, plugin=self.name)

    def stats(self):
        busy = None
        if self._busy_since is not None:
            busy = round(self.reactor.seconds() - self._busy_since, 3)
        stats = {
            "name": self.name,
            "state": self.state,
            "thread": self.blocking,
            "delivered": self.delivered,
            "failed": self.failed,
            "dropped": self.dropped,
            "queued": len(self.queue),
            "queue_size": self.limit,
            "busy_seconds": busy,
            "connected": _connected(self.plugin),
        }
        if self.spooled:
            stats["spool"] = self.plugin.spool_stats()
            stats["spooled"] = stats["spool"]["queued"]
        return stats


def _connected(plugin):
    """
    Whether an output is connected to its sink: its C{connected} attribute
    when it has a true/false one (the MQTT output does), else None.
    """
    connected = getattr(plugin, "connected", None)
    return connected if isinstance(connected, bool) else None


@implementer(IRecordSink)
class PluginHost(service.Service):
    """
    Finds the plugins at construction, starts them (and the thread pool)
    with the service, and drains and stops them with it.

    @ivar runners: one L{_Runner} per enabled plugin, in discovery order.
    """

    log = Logger()

    def __init__(self, config, reactor, package=None, plugins=None, timer=time.perf_counter):
        """
        @param package: where installed plugins are looked up
            (C{grott.plugins} by default).
        @param plugins: plugin objects to run instead of discovering any
            (tests, embedding).
        @param timer: seconds, for the share of a reactor turn the plugins
            take (L{SECONDS_PER_TURN}).
        @raise grott.config.ConfigError: for unknown plugin names in
            C{plugins.enabled}; broken plugins are logged and skipped.
        """
        self.reactor = reactor
        self.stop_timeout = config.plugins.stop_timeout
        self.stall_warning = config.plugins.stall_warning
        self.throttle = LogThrottle(reactor, self._summary, burst=1, interval=60.0)
        self._shown = 0
        self._stall_check = None
        if plugins is None:
            loaded = pluginloader.load(config, reactor, package)
        else:
            loaded = pluginloader.given(plugins)
        loaded = [self._spooled(item, config.outputs.spool) for item in loaded]
        blocking = sum(1 for item in loaded if item.blocking)
        # One delivery in flight per plugin, so one thread per blocking
        # plugin is enough and a stuck plugin cannot starve another.
        self.pool = DaemonThreadPool(minthreads=0, maxthreads=max(1, blocking),
                                      name="grott-plugins")
        self.runners = [_Runner(item, reactor, self.pool, config.plugins.queue_size, self.log,
                                self.throttle, timer) for item in loaded]
        for runner in self.runners:
            self.log.info("plugin {plugin} enabled ({origin}{thread})", plugin=runner.name,
                          origin=runner.origin,
                          thread=", runs in a thread" if runner.blocking else "")
        if not self.runners:
            self.log.info("no output is on: decoded records go nowhere (turn one on under "
                          "outputs: in the config, or name a plugin in plugins.enabled); "
                          "the first {count} are shown in this log", count=self.SHOW_RECORDS)

    def _summary(self, key, count, seconds):
        kind, plugin = key
        if kind == "failed":
            self.log.error("plugin {plugin} failed on {count} more record(s) in the last "
                           "{seconds:.0f} s (the first traceback is above)",
                           plugin=plugin, count=count, seconds=seconds)
        elif kind == "behind":
            self.log.warn(  # noqa: G010 (twisted.logger has no warning())
                "plugin {plugin} fell behind {count} more time(s) in the last {seconds:.0f} s "
                "(dropped records are counted in the stats report)",
                plugin=plugin, count=count, seconds=seconds)
        else:
            self.log.info("plugin {plugin} caught up {count} more time(s) in the last "
                          "{seconds:.0f} s", plugin=plugin, count=count, seconds=seconds)

    def _spooled(self, item, settings):
        """
        An L{ISpoolSink} runs behind a spool of its own (L{grott.spool}).
        """
        if ISpoolSink.providedBy(item.plugin) and not IGrottPlugin.providedBy(item.plugin):
            # Imported here: sqlite3 and the spool cost 1 MB that a grott
            # without spooled outputs should not carry.
            from grott.spool import SpooledOutput
            return pluginloader.Loaded(item.name, SpooledOutput(item.plugin, settings,
                                                                self.reactor), item.origin,
                                       spooled=True)
        return item

    def wantsRecords(self):
        """
        Whether any plugin is enabled: without one the relay skips decoding.
        """
        return bool(self.runners)

    def deliver(self, packet, record):
        """
        Queue C{record} for every plugin.  Called on the reactor thread for
        every decoded record; returns at once and never raises.
        """
        if not self.runners:
            self._show(record)
            return
        for runner in self.runners:
            try:
                runner.offer(packet, record)
            except Exception:  # noqa: BLE001 - the relay must never see a plugin problem
                self.log.failure("queueing a record for plugin {plugin} failed",
                                 plugin=runner.name)

    #: With no output on, this many records are logged at info, so a first
    #: run shows that data arrives and decodes.
    SHOW_RECORDS = 3

    def _show(self, record):
        if self._shown >= self.SHOW_RECORDS:
            return
        self._shown += 1
        try:
            values = record.values
            units = record.units
            sample = ", ".join(f"{name}={values[name]}{' ' if units.get(name) else ''}"
                               f"{units.get(name, '')}" for name in list(values)[:6])
            self.log.info(
                "record {number} of the first {limit} (no output is on): datalogger {datalogger} "
                "inverter {inverter}, {count} values: {sample}{more}", number=self._shown,
                limit=self.SHOW_RECORDS, datalogger=record.datalogger_serial,
                inverter=record.inverter_serial, count=len(values), sample=sample,
                more=", ..." if len(values) > 6 else "")
        except Exception:  # noqa: BLE001 - the relay must never see this fail
            self.log.failure("showing a record failed")

    def stats(self):
        """
        Per-plugin counters: a list of dicts with name, state, thread (runs
        in the pool), delivered, failed, dropped, queued (queue depth),
        queue_size (its limit), busy_seconds (age of the delivery in flight,
        or None) and connected (of an output to its sink; None if unknown);
        spooled outputs add C{spool} (L{SpooledOutput.spool_stats}) and
        C{spooled} (records in the spool).
        """
        return [runner.stats() for runner in self.runners]

    def startService(self):
        service.Service.startService(self)
        if any(runner.blocking for runner in self.runners):
            self.pool.start()
        for runner in self.runners:
            runner.start()
        if self.stall_warning and self.runners:
            self._stall_check = task.LoopingCall(self._check_stalls)
            self._stall_check.clock = self.reactor
            # Checked twice per period: a stall is reported after between
            # one and one and a half periods.
            self._stall_check.start(self.stall_warning / 2, now=False)

    def _check_stalls(self):
        for runner in self.runners:
            runner.check_stalled(self.stall_warning)

    def stopService(self):
        service.Service.stopService(self)
        if self._stall_check is not None and self._stall_check.running:
            self._stall_check.stop()
        self._stall_check = None
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self):
        """
        Drain the queues, run the stop hooks and stop the thread pool, all
        within one deadline (C{plugins.stop_timeout}; the stop hooks get at
        least a second of it), so a hung plugin cannot hold up shutdown.
        """
        self.throttle.stop()
        started = self.reactor.seconds()
        deadline = started + self.stop_timeout
        for runner in self.runners:
            if runner.state == "running":
                runner.state = "stopping"
        waiting = [runner for runner in self.runners if not runner.idle()]
        if waiting:
            self.log.info("waiting up to {seconds} s for {count} plugin queue(s) to drain",
                          seconds=self.stop_timeout, count=len(waiting))
        drained = await self._within([runner.when_idle() for runner in self.runners],
                                     self.stop_timeout)
        lost = 0
        for runner in self.runners:
            busy = runner.busy()
            left = runner.abandon()
            lost += left + (1 if busy else 0)
            if left or busy:
                self.log.warn(  # noqa: G010 (twisted.logger has no warning())
                    "plugin {plugin} did not finish {when}: {count} queued record(s) dropped"
                    "{flight}", plugin=runner.name, count=left,
                    when=f"within {self.stop_timeout} s" if not drained else "before stopping",
                    flight="" if not busy else (
                        ", 1 in flight abandoned (its thread is left running)"
                        if runner.blocking else ", 1 in flight cancelled"))
        grace = max(deadline - self.reactor.seconds(), min(1.0, self.stop_timeout))
        if not await self._within([runner.stop() for runner in self.runners], grace):
            self.log.warn(  # noqa: G010 (twisted.logger has no warning())
                "plugin stop hooks did not finish within {seconds:.1f} s", seconds=grace)
        self._stop_pool()
        if lost:
            self.log.warn(  # noqa: G010 (twisted.logger has no warning())
                "plugins stopped after {seconds:.1f} s; {count} record(s) were not delivered",
                seconds=self.reactor.seconds() - started, count=lost)

    async def _within(self, deferreds, seconds):
        """
        Wait for C{deferreds} up to C{seconds}; False if that passed.
        """
        everything = defer.DeferredList(deferreds, consumeErrors=True)
        expired = []

        def expire():
            # Not addTimeout: cancelling a DeferredList fires it with its
            # children's results, so addTimeout would not see a timeout.
            expired.append(True)
            everything.cancel()

        timer = self.reactor.callLater(seconds, expire)
        await everything
        if timer.active():
            timer.cancel()
        return not expired

    def _stop_pool(self):
        if not self.pool.started:
            return
        stuck = [r.name for r in self.runners if r.blocking and r.busy()]
        if stuck:
            # ThreadPool.stop joins its threads; a stuck one would hang the
            # reactor, so join from a thread of our own and let it go.
            self.log.error("plugin(s) {plugins} still running in a thread; not waiting for "
                           "them", plugins=", ".join(stuck))
            threading.Thread(target=self.pool.stop, daemon=True,
                             name="grott-plugins-stop").start()
        else:
            self.pool.stop()
