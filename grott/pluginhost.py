"""
The plugin host: every decoded record goes to every enabled plugin, and no
plugin can hold up the relay or another plugin.

Each plugin gets a L{_Runner}: a bounded queue and at most one delivery in
flight.  C{deliver} only appends to the queues and returns; the runners
call the plugins on later reactor turns (or, for L{IBlockingPlugin}
providers, in a thread pool this service owns, as
L{twisted.enterprise.adbapi} does).  A plugin that raises is logged and
keeps receiving; one that falls behind fills only its own queue, after
which its records are dropped and counted, with one warning per burst.
"""

import collections
import threading

from twisted.application import service
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from grott import pluginloader
from grott.interfaces import IGrottPlugin, IRecordSink, ISpoolSink
from grott.logs import Logger
from grott.spool import SpooledOutput
from grott.threads import DaemonThreadPool

__all__ = ["PluginHost"]


class _Runner:
    """
    One plugin's queue and delivery loop.
    """

    def __init__(self, loaded, reactor, pool, queue_size, host_log):
        self.name = loaded.name
        self.origin = loaded.origin
        self.plugin = loaded.plugin
        self.blocking = loaded.blocking
        self.hooks = loaded.hooks
        self.reactor = reactor
        self.pool = pool
        self.limit = queue_size
        self.host_log = host_log
        self.log = Logger(namespace=f"grott.plugin.{self.name}", source=self.plugin)
        self.queue = collections.deque()
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.state = "new"
        self._burst = 0
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
            if self._burst == 1:
                self.host_log.warn(
                    "plugin {plugin} is {why}; dropping its records until it catches up",
                    plugin=self.name, limit=self.limit,
                    why="not running (it failed to start)" if self.state == "broken"
                    else f"behind (its queue of {self.limit} records is full)")
            return
        if self._burst:
            self.host_log.info("plugin {plugin} is taking records again; {count} were dropped",
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
        if not self.queue or self._current is not None:
            return
        packet, record = self.queue.popleft()
        self._busy_since = self.reactor.seconds()
        if self.blocking:
            d = deferToThreadPool(self.reactor, self.pool, self.plugin.data, packet, record,
                                  self.log)
        else:
            d = defer.maybeDeferred(self.plugin.data, packet, record, self.log)
        self._current = d
        d.addBoth(self._done, record)

    def _done(self, result, record):
        self._current = None
        self._busy_since = None
        if isinstance(result, Failure):
            self.failed += 1
            if result.check(defer.CancelledError) and self.state != "running":
                self.host_log.warn(
                    "plugin {plugin}: delivery in flight cancelled at shutdown",
                    plugin=self.name)
            else:
                self.host_log.failure(
                    "plugin {plugin} failed on a record from {serial}", result,
                    level=LogLevel.error, plugin=self.name,
                    serial=getattr(record, "datalogger_serial", None))
        else:
            self.delivered += 1
        if self.queue:
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
        return d

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
        self.state = "stopped"
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
        if isinstance(self.plugin, SpooledOutput):
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

    def __init__(self, config, reactor, package=None, plugins=None):
        """
        @param package: where installed plugins are looked up
            (C{grott.plugins} by default).
        @param plugins: plugin objects to run instead of discovering any
            (tests, embedding).
        @raise grott.config.ConfigError: for unknown plugin names in
            C{plugins.enabled}; broken plugins are logged and skipped.
        """
        self.reactor = reactor
        self.stop_timeout = config.plugins.stop_timeout
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
        self.runners = [_Runner(item, reactor, self.pool, config.plugins.queue_size, self.log)
                        for item in loaded]
        for runner in self.runners:
            self.log.info("plugin {plugin} enabled ({origin}{thread})", plugin=runner.name,
                          origin=runner.origin,
                          thread=", runs in a thread" if runner.blocking else "")
        if not self.runners:
            self.log.info("no plugins enabled")

    def _spooled(self, item, settings):
        """
        An L{ISpoolSink} runs behind a spool of its own (L{grott.spool}).
        """
        if ISpoolSink.providedBy(item.plugin) and not IGrottPlugin.providedBy(item.plugin):
            return pluginloader.Loaded(item.name, SpooledOutput(item.plugin, settings,
                                                                self.reactor), item.origin)
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
        for runner in self.runners:
            try:
                runner.offer(packet, record)
            except Exception:  # noqa: BLE001 - the relay must never see a plugin problem
                self.log.failure("queueing a record for plugin {plugin} failed",
                                 plugin=runner.name)

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

    def stopService(self):
        service.Service.stopService(self)
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self):
        """
        Drain the queues (deadline), run the stop hooks (deadline), stop the
        thread pool.
        """
        for runner in self.runners:
            if runner.state == "running":
                runner.state = "stopping"
        waiting = [runner for runner in self.runners if not runner.idle()]
        if waiting:
            self.log.info("waiting up to {seconds} s for {count} plugin queue(s) to drain",
                          seconds=self.stop_timeout, count=len(waiting))
        drained = await self._within([runner.when_idle() for runner in self.runners])
        for runner in self.runners:
            busy = runner.busy()
            left = runner.abandon()
            if left or busy:
                self.log.warn(  # noqa: G010 (twisted.logger has no warning())
                    "plugin {plugin} did not finish {when}; {count} queued record(s) dropped",
                    plugin=runner.name, count=left,
                    when=f"within {self.stop_timeout} s" if not drained else "before stopping")
        if not await self._within([runner.stop() for runner in self.runners]):
            self.log.warn(  # noqa: G010 (twisted.logger has no warning())
                "plugin stop hooks did not finish within {seconds} s", seconds=self.stop_timeout)
        self._stop_pool()

    async def _within(self, deferreds):
        """
        Wait for C{deferreds} up to the stop deadline; False if it passed.
        """
        everything = defer.DeferredList(deferreds, consumeErrors=True)
        everything.addTimeout(self.stop_timeout, self.reactor)
        try:
            await everything
        except defer.TimeoutError:
            return False
        return True

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
