"""
The plugin host: queues, isolation, counters, start and stop.

Plugins that do not block are driven with a MemoryReactorClock (time moves
by clock.advance); the blocking ones need a real thread pool and therefore
the real reactor.
"""

import threading

from twisted.internet import defer, reactor
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, formatEvent
from twisted.trial import unittest
from zope.interface import implementer

from grott import logs
from grott.interfaces import IBatchPlugin
from grott.pluginhost import (
    BATCH_RECORDS,
    RECORDS_PER_TURN,
    SECONDS_PER_TURN,
    PluginHost,
)
from tests.pluginhelpers import (
    Blocking,
    Coroutine,
    Raiser,
    Recorder,
    Slow,
    make_config,
    numbered,
    packet_and_record,
)
from tests.waiting import until


@implementer(IBatchPlugin)
class Batches:
    """
    Takes waiting records in one call; raises on every call once told to.
    """

    name = "batches"

    def __init__(self):
        self.calls = []
        self.fail = False

    def data(self, packet, record, log):
        self.calls.append(("data", 1))
        if self.fail:
            raise ZeroDivisionError("plugin bug")

    def dataBatch(self, items, log):
        self.calls.append(("dataBatch", len(items)))
        if self.fail:
            raise ZeroDivisionError("plugin bug")


class _TurnCountingClock(MemoryReactorClock):
    """Counts the calls scheduled for the next reactor turn."""

    turns = 0

    def callLater(self, delay, f, *args, **kwargs):
        if delay == 0:
            self.turns += 1
        return super().callLater(delay, f, *args, **kwargs)


def _events(test):
    return EventLoggingObserver.createWithCleanup(test, logs.publisher)


def _host(test, plugins, clock=None, timer=lambda: 0.0, **settings):
    """
    A host whose turns are bounded by records only, unless C{timer} moves.
    """
    settings.setdefault("stop_timeout", 5)
    config = make_config(test.mktemp(), **settings)
    return PluginHost(config, clock if clock is not None else MemoryReactorClock(),
                      plugins=plugins, timer=timer)


def _by_name(host):
    return {entry["name"]: entry for entry in host.stats()}


class IsolationTests(unittest.SynchronousTestCase):

    def test_deliver_returns_before_any_plugin_runs(self):
        """
        deliver only queues: the plugin runs on a later reactor turn, so the
        relay's call stack never contains plugin code.
        """
        clock = MemoryReactorClock()
        fast = Recorder()
        host = _host(self, [fast], clock)
        host.startService()
        packet, record = packet_and_record()
        host.deliver(packet, record)
        self.assertEqual(fast.got, [])
        clock.advance(0)
        self.assertEqual(fast.got, [record])

    def test_raising_plugin_is_logged_and_keeps_receiving(self):
        clock = MemoryReactorClock()
        events = _events(self)
        bad, fast = Raiser("bad"), Recorder("fast")
        host = _host(self, [bad, fast], clock)
        host.startService()
        pairs = numbered(3)
        for packet, record in pairs:
            host.deliver(packet, record)
        for _ in range(5):
            clock.advance(0)
        self.assertEqual(len(bad.got), 3)
        self.assertEqual([r.values["seq"] for r in fast.got], [0, 1, 2])
        # The first failure with its traceback; the others counted.
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        stats = _by_name(host)
        self.assertEqual((stats["bad"]["delivered"], stats["bad"]["failed"]), (0, 3))
        self.assertEqual((stats["fast"]["delivered"], stats["fast"]["failed"]), (3, 0))
        failures = [e for e in events if "log_failure" in e]
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0]["plugin"], "bad")
        self.assertEqual(failures[0]["serial"], pairs[0][1].datalogger_serial)
        self.assertEqual(failures[0]["log_level"], LogLevel.error)
        clock.advance(60)
        [summary] = [e for e in events if "more record(s)" in e["log_format"]]
        self.assertEqual((summary["plugin"], summary["count"], summary["log_level"]),
                         ("bad", 2, LogLevel.error))

    def test_slow_plugin_fills_its_own_queue_only(self):
        """
        A plugin whose Deferreds do not fire holds one record in flight and
        queue_size in its queue; the rest are dropped and counted, with one
        warning for the burst.  The fast plugin gets every record.
        """
        clock = MemoryReactorClock()
        events = _events(self)
        slow, fast = Slow(), Recorder()
        host = _host(self, [slow, fast], clock, queue_size=3)
        host.startService()
        pairs = numbered(10)
        for packet, record in pairs:
            host.deliver(packet, record)
            clock.advance(0)
        self.assertEqual(len(fast.got), 10)
        stats = _by_name(host)["slow"]
        self.assertEqual(stats["dropped"], 6)   # 1 in flight + 3 queued = 4 kept
        self.assertEqual(stats["queued"], 3)
        self.assertEqual(stats["delivered"], 0)
        self.assertIsNotNone(stats["busy_seconds"])
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["plugin"], "slow")

        # It catches up: the queued records go through in order.
        while slow.pending:
            slow.release()
            clock.advance(0)
        self.assertEqual([r.values["seq"] for r in slow.got], [0, 1, 2, 3])
        # The next record is accepted, and that is said once.
        host.deliver(*pairs[0])
        clock.advance(0)
        slow.release()
        self.assertEqual(_by_name(host)["slow"]["delivered"], 5)
        again = [e for e in events if "taking records again" in e["log_format"]]
        self.assertEqual([e["count"] for e in again], [6])

    def test_raising_on_every_record_under_load_is_a_few_lines(self):
        """
        A plugin that raises on every record while records arrive faster
        than it is called (queue at its limit every turn): one traceback,
        one "behind" and one "taking records again" line, then counts per
        minute; before, each turn logged a pair and every record a traceback.
        """
        clock = MemoryReactorClock()
        events = _events(self)
        bad = Raiser("bad")
        host = _host(self, [bad], clock, queue_size=5)
        host.startService()
        pairs = numbered(6)
        for _ in range(300):  # 30 s: six records per 0.1 s turn
            for packet, record in pairs:
                host.deliver(packet, record)
            clock.advance(0.1)
        clock.advance(60)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        stats = _by_name(host)["bad"]
        self.assertEqual((stats["failed"], stats["dropped"]), (1500, 300))
        texts = [e["log_format"] for e in events if e.get("plugin") == "bad"]
        self.assertEqual(len([t for t in texts if "dropping its records" in t]), 1)
        self.assertEqual(len([t for t in texts if "taking records again" in t]), 1)
        summaries = {e["log_format"].split(" {count}")[0]: e["count"] for e in events
                     if "more" in e["log_format"] and e.get("plugin") == "bad"}
        self.assertEqual(summaries, {
            "plugin {plugin} failed on": 1499,
            "plugin {plugin} fell behind": 299,
            "plugin {plugin} caught up": 298,
        })
        self.assertLess(len(events), 12)

    def test_stalled_plugin_is_reported_once(self):
        clock = MemoryReactorClock()
        events = _events(self)
        slow = Slow()
        host = _host(self, [slow], clock, stall_warning=10)
        host.startService()
        for packet, record in numbered(3):
            host.deliver(packet, record)
        clock.advance(0)

        def stalls():
            return [e for e in events if "delivered nothing" in e["log_format"]]
        clock.advance(9.9)
        self.assertEqual(stalls(), [])
        clock.advance(0.1)
        [stall] = stalls()
        self.assertEqual((stall["plugin"], stall["queued"], stall["log_level"]),
                         ("slow", 2, LogLevel.warn))
        for _ in range(20):
            clock.advance(5)
        self.assertEqual(len(stalls()), 1)
        slow.release()
        [again] = [e for e in events if "delivering again" in e["log_format"]]
        self.assertEqual(again["seconds"], 110)

    def test_no_output_is_said_and_the_first_records_shown(self):
        events = _events(self)
        host = _host(self, [], MemoryReactorClock())
        [said] = [e for e in events if "no output is on: " in e["log_format"]]
        self.assertEqual(said["log_level"], LogLevel.info)
        pairs = numbered(5)
        for pair in pairs:
            host.deliver(*pair)
        shown = [e for e in events if "(no output is on)" in e["log_format"]]
        self.assertEqual([e["number"] for e in shown], [1, 2, 3])
        record = pairs[0][1]
        self.assertEqual((shown[0]["datalogger"], shown[0]["inverter"], shown[0]["count"]),
                         (record.datalogger_serial, record.inverter_serial, len(record.values)))
        first = next(iter(record.values))
        unit = record.units.get(first)
        self.assertIn(f"{first}={record.values[first]}" + (f" {unit}" if unit else ""),
                      formatEvent(shown[0]))

    def test_deferred_and_coroutine_plugins_alongside_a_fast_one(self):
        clock = MemoryReactorClock()
        slow, coro, fast = Slow(), Coroutine(), Recorder()
        host = _host(self, [slow, coro, fast], clock)
        host.startService()
        for packet, record in numbered(3):
            host.deliver(packet, record)
        clock.advance(0)
        self.assertEqual(len(fast.got), 3)
        self.assertEqual((len(slow.got), len(coro.got)), (1, 0))
        coro.gate.callback(None)
        for _ in range(3):
            slow.release()
            clock.advance(0)
        self.assertEqual([r.values["seq"] for r in slow.got], [0, 1, 2])
        self.assertEqual([r.values["seq"] for r in coro.got], [0, 1, 2])
        self.assertEqual({e["name"]: e["delivered"] for e in host.stats()},
                         {"slow": 3, "coro": 3, "fast": 3})

    def test_records_that_finish_at_once_go_several_per_reactor_turn(self):
        """
        A synchronous plugin gets up to RECORDS_PER_TURN records per reactor
        turn: one per turn was all an output got at full load, while the
        relay's reads and writes filled the turns.
        """
        clock = _TurnCountingClock()
        fast = Recorder()
        host = _host(self, [fast], clock, queue_size=500)
        host.startService()
        count = RECORDS_PER_TURN * 2 + 7
        turns = clock.turns
        for packet, record in numbered(count):
            host.deliver(packet, record)
        clock.advance(0)
        self.assertEqual(clock.turns - turns, 3)
        self.assertEqual([r.values["seq"] for r in fast.got], list(range(count)))
        self.assertEqual(_by_name(host)["fast"]["delivered"], count)

    def test_a_turn_is_bounded_in_time_too(self):
        """
        Records that take long (a new device's discovery messages) end the
        turn once SECONDS_PER_TURN has passed: the relay waits no longer.
        """
        clock = _TurnCountingClock()
        now = [0.0]
        fast = Recorder()
        original = fast.data

        def slow(packet, record, log):
            now[0] += SECONDS_PER_TURN / 2.5
            original(packet, record, log)
        fast.data = slow
        host = _host(self, [fast], clock, timer=lambda: now[0])
        host.startService()
        for packet, record in numbered(9):
            host.deliver(packet, record)
        turns = clock.turns
        clock.advance(0)
        # Three records per turn: the third starts before the budget is spent.
        self.assertEqual(clock.turns - turns, 2)
        self.assertEqual([r.values["seq"] for r in fast.got], list(range(9)))
        self.assertEqual(_by_name(host)["fast"]["delivered"], 9)

    def test_a_batch_plugin_gets_what_waits_in_one_call(self):
        clock = MemoryReactorClock()
        batches = Batches()
        host = _host(self, [batches], clock, queue_size=2000)
        host.startService()
        host.deliver(*packet_and_record())
        clock.advance(0)
        # One record waiting: the plain data() call.
        self.assertEqual(batches.calls, [("data", 1)])
        for packet, record in numbered(BATCH_RECORDS + 3):
            host.deliver(packet, record)
        clock.advance(0)
        self.assertEqual(batches.calls[1:], [("dataBatch", BATCH_RECORDS), ("dataBatch", 3)])
        batches.calls.clear()
        batches.fail = True
        for packet, record in numbered(3):
            host.deliver(packet, record)
        clock.advance(0)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        stats = _by_name(host)["batches"]
        self.assertEqual((stats["delivered"], stats["failed"]), (BATCH_RECORDS + 4, 3))

    def test_stats_shape(self):
        host = _host(self, [Recorder()])
        self.assertEqual(host.stats(), [{
            "name": "fast", "state": "new", "thread": False, "delivered": 0, "failed": 0,
            "dropped": 0, "queued": 0, "queue_size": 1000, "busy_seconds": None,
            "connected": None}])

    def test_records_before_start_wait_for_it(self):
        clock = MemoryReactorClock()
        fast = Recorder()
        host = _host(self, [fast], clock)
        host.deliver(*packet_and_record())
        clock.advance(0)
        self.assertEqual(fast.got, [])
        host.startService()
        clock.advance(0)
        self.assertEqual(len(fast.got), 1)

    def test_start_hook_failure_stops_only_that_plugin(self):
        clock = MemoryReactorClock()

        class Broken(Recorder):
            def startService(self):
                raise OSError("cannot open")

            def stopService(self):
                pass

        from zope.interface import directlyProvides

        from grott.interfaces import IGrottPlugin, IGrottPluginService
        broken = Broken("broken")
        directlyProvides(broken, IGrottPlugin, IGrottPluginService)
        fast = Recorder()
        host = _host(self, [broken, fast], clock)
        host.startService()
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        host.deliver(*packet_and_record())
        clock.advance(0)
        self.assertEqual((len(broken.got), len(fast.got)), (0, 1))
        self.assertEqual(_by_name(host)["broken"]["state"], "broken")
        self.assertEqual(_by_name(host)["broken"]["dropped"], 1)

    def test_stopped_while_starting_it_is_stopped_once_started(self):
        """
        A start hook still running when grott stops (a spool opening its
        file): the stop hook runs once it has finished, not never, so the
        plugin does not start after grott stopped.
        """
        from zope.interface import directlyProvides

        from grott.interfaces import IGrottPlugin, IGrottPluginService

        class Starting(Recorder):
            def __init__(self):
                Recorder.__init__(self, "starting")
                self.started = defer.Deferred()
                self.hooks = []

            def startService(self):
                self.hooks.append("start")
                return self.started

            def stopService(self):
                self.hooks.append("stop")
        plugin = Starting()
        directlyProvides(plugin, IGrottPlugin, IGrottPluginService)
        host = _host(self, [plugin], MemoryReactorClock())
        host.startService()
        stopped = host.stopService()
        self.assertEqual(plugin.hooks, ["start"])
        self.assertNoResult(stopped)
        plugin.started.callback(None)
        self.assertEqual(plugin.hooks, ["start", "stop"])
        self.successResultOf(stopped)
        self.assertEqual(_by_name(host)["starting"]["state"], "stopped")

    def test_deliver_never_raises(self):
        host = _host(self, [Recorder()])
        host.runners[0].offer = None  # a bug in the host itself
        host.deliver(*packet_and_record())
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)


class StopTests(unittest.SynchronousTestCase):

    def test_stop_drains_queues(self):
        clock = MemoryReactorClock()
        slow = Slow()
        host = _host(self, [slow], clock)
        host.startService()
        for packet, record in numbered(3):
            host.deliver(packet, record)
        clock.advance(0)
        stopped = host.stopService()
        self.assertNoResult(stopped)
        # Records arriving during shutdown are counted, not queued.
        host.deliver(*packet_and_record())
        for _ in range(3):
            slow.release()
            clock.advance(0)
        self.successResultOf(stopped)
        stats = _by_name(host)["slow"]
        self.assertEqual((stats["delivered"], stats["dropped"], stats["state"]),
                         (3, 1, "stopped"))

    def test_stop_deadline_drops_and_cancels(self):
        clock = MemoryReactorClock()
        events = _events(self)
        slow = Slow()
        host = _host(self, [slow], clock, stop_timeout=2)
        host.startService()
        for packet, record in numbered(4):
            host.deliver(packet, record)
        clock.advance(0)
        stopped = host.stopService()
        clock.advance(1.9)
        self.assertNoResult(stopped)
        clock.advance(0.2)
        self.successResultOf(stopped)
        self.assertEqual(slow.cancelled, 1)
        stats = _by_name(host)["slow"]
        self.assertEqual((stats["failed"], stats["dropped"], stats["queued"]), (1, 3, 0))
        dropped = [e for e in events if "did not finish" in e["log_format"]]
        self.assertEqual(dropped[0]["count"], 3)
        self.assertEqual(dropped[0]["when"], "within 2.0 s")
        self.assertEqual(dropped[0]["flight"], ", 1 in flight cancelled")


class ThreadTests(unittest.TestCase):
    """
    Blocking plugins, with a real thread pool on the real reactor.
    """

    timeout = 20

    async def _wait_until(self, predicate):
        await until(reactor, predicate, "the plugins to see the records")

    def test_blocking_plugin_runs_in_the_pool(self):
        blocking, fast = Blocking(), Recorder()
        host = _host(self, [blocking, fast], reactor)
        blocking.gate.set()
        host.startService()
        for packet, record in numbered(3):
            host.deliver(packet, record)

        async def check():
            await self._wait_until(lambda: len(blocking.got) == 3 and len(fast.got) == 3)
            await host.stopService()
            main = threading.get_ident()
            self.assertNotIn(main, blocking.threads)
            self.assertEqual(fast.threads, {main})
            self.assertEqual(len(blocking.hook_threads), 2)
            self.assertNotIn(main, blocking.hook_threads)
            self.assertEqual([r.values["seq"] for r in blocking.got], [0, 1, 2])
            self.assertFalse(host.pool.started)
        return defer.Deferred.fromCoroutine(check())

    def test_hung_blocking_plugin_delays_nothing_and_shutdown_goes_on(self):
        blocking, fast = Blocking(), Recorder()
        host = _host(self, [blocking, fast], reactor, stop_timeout=0.2)
        self.addCleanup(blocking.gate.set)
        host.startService()
        pairs = numbered(5)

        async def check():
            for count, (packet, record) in enumerate(pairs, 1):
                host.deliver(packet, record)
                await self._wait_until(lambda count=count: len(fast.got) == count)
            self.assertEqual(blocking.got, [])
            started = reactor.seconds()
            events = _events(self)
            await host.stopService()
            self.assertLess(reactor.seconds() - started, 3)
            stats = _by_name(host)["blocking"]
            self.assertEqual((stats["delivered"], stats["dropped"]), (0, 4))
            [said] = [e for e in events if "did not finish" in e["log_format"]]
            self.assertEqual(said["count"], 4)
            self.assertIn("1 in flight abandoned", said["flight"])
            [total] = [e for e in events if "were not delivered" in e["log_format"]]
            self.assertEqual(total["count"], 5)
        return defer.Deferred.fromCoroutine(check())

