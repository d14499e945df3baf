"""
The durable spool: the SQLite store on its own, then spooled outputs on
the real reactor with their worker threads (a Clock for backoff and flush
delays, so no test waits for time to pass).
"""

import dataclasses
import os
import sqlite3
import threading
import types

from prometheus_client import generate_latest
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.trial import unittest

from grott import logs
from grott.metrics import GrottCollector, metrics_registry
from grott.pluginhost import PluginHost
from grott.service import plugin_lines
from grott.session import Registry
from grott.spool import ROW_OVERHEAD, Rejected, SpooledOutput, Store
from tests.pluginhelpers import make_config, numbered
from tests.spoolhelpers import Sink, spool_settings, until


def _records(count):
    return numbered(count)


async def _fail(sink, clock, times, error):
    """
    Fail the next C{times} deliveries with C{error}, letting each backoff
    pass on C{clock}; the backoff delays seen.
    """
    delays = []
    for attempt in range(1, times + 1):
        await until(lambda n=attempt: len(sink.calls) == n, f"attempt {attempt}")
        sink.calls[-1][1].errback(error)
        await until(clock.getDelayedCalls, "the backoff timer")
        delays.append(clock.getDelayedCalls()[0].getTime() - clock.seconds())
        clock.advance(delays[-1])
    return delays


class StoreTests(unittest.SynchronousTestCase):

    def store(self, path=None, max_bytes=10**9, max_age=None):
        store = Store(path or os.path.join(self.mktemp(), "out.sqlite"), max_bytes, max_age)
        store.open()
        self.addCleanup(store.close)
        return store

    def test_oldest_first_and_kept_across_reopen(self):
        store = self.store()
        for n in range(5):
            store.put(b"%d" % n, 100.0 + n)
        (rows, dropped), (count, _, on_disk) = store.peek(3, 200.0)
        self.assertEqual([r.data for r in rows], [b"0", b"1", b"2"])
        self.assertEqual((count, dropped), (5, {}))
        self.assertGreater(on_disk, 0)
        store.remove(rows[0].id, rows[1].id)
        store.close()
        again = self.store(store.path)
        (rows, _), (count, size, _) = again.peek(10, 200.0)
        self.assertEqual([r.data for r in rows], [b"2", b"3", b"4"])
        self.assertEqual(count, 3)
        self.assertEqual(size, 3 * (1 + ROW_OVERHEAD))
        self.assertEqual([r.at for r in rows], [102.0, 103.0, 104.0])

    def test_wal_mode_seen_by_another_connection(self):
        store = self.store()
        store.put(b"x", 1.0)
        other = sqlite3.connect(store.path)
        self.addCleanup(other.close)
        self.assertEqual(other.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(other.execute("SELECT count(*) FROM records").fetchone()[0], 1)

    def test_ids_only_grow_even_after_the_spool_emptied(self):
        store = self.store()
        store.put(b"a", 1.0)
        store.put(b"b", 1.0)
        (rows, _), _ = store.peek(10, 1.0)
        store.remove(rows[0].id, rows[-1].id)
        store.put(b"c", 1.0)
        (rows2, _), _ = store.peek(10, 1.0)
        self.assertGreater(rows2[0].id, rows[-1].id)

    def test_max_age_drops_the_oldest(self):
        store = self.store(max_age=15)
        self.assertEqual(store.put(b"0", 0.0)[0], {})
        self.assertEqual(store.put(b"1", 10.0)[0], {})
        self.assertEqual(store.put(b"2", 20.0)[0], {"max_age": 1})
        (rows, dropped), (count, _, _) = store.peek(10, 30.0)
        self.assertEqual(([r.data for r in rows], dropped, count), ([b"2"], {"max_age": 1}, 1))

    def test_max_bytes_drops_the_oldest(self):
        store = self.store(max_bytes=3 * (100 + ROW_OVERHEAD))
        results = [store.put(b"%03d" % n + b"x" * 97, 1.0)[0] for n in range(5)]
        self.assertEqual(results, [{}, {}, {}, {"max_mb": 1}, {"max_mb": 1}])
        (rows, _), (count, size, _) = store.peek(10, 1.0)
        self.assertEqual([r.data[:3] for r in rows], [b"002", b"003", b"004"])
        self.assertEqual((count, size), (3, 3 * (100 + ROW_OVERHEAD)))

    def test_a_record_larger_than_the_bound_is_still_kept(self):
        store = self.store(max_bytes=50)
        store.put(b"small", 1.0)
        dropped, (count, _, _) = store.put(b"y" * 100, 1.0)
        self.assertEqual((dropped, count), ({"max_mb": 1}, 1))

    def test_a_corrupt_file_is_moved_aside(self):
        path = os.path.join(self.mktemp(), "out.sqlite")
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(b"this is not a database" * 100)
        store = Store(path, 10**9, None)
        moved, (count, _, _) = store.open()
        self.addCleanup(store.close)
        self.assertEqual(count, 0)
        self.assertTrue(os.path.exists(moved[0]))
        self.assertIn("not a database", moved[1])
        store.put(b"ok", 1.0)
        self.assertEqual(store.peek(1, 1.0)[0][0][0].data, b"ok")

    def test_the_file_shrinks_once_emptied(self):
        store = self.store()
        for _ in range(100):
            store.put(b"z" * 10_000, 1.0)
        big = store.peek(1, 1.0)[1][2]
        (rows, _), _ = store.peek(5000, 1.0)
        store.remove(rows[0].id, rows[-1].id)
        store.close()
        small = os.path.getsize(store.path)
        self.assertLess(small, big / 10)


class SpooledOutputTests(unittest.TestCase):

    def output(self, sink, directory=None, clock=None, **settings):
        directory = directory or self.mktemp()
        out = SpooledOutput(sink, spool_settings(directory, **settings), reactor,
                            clock=clock if clock is not None else Clock())
        return out

    async def started(self, out):
        await out.startService()
        self.addCleanup(out.stopService)
        return out

    async def test_a_record_is_on_disk_before_it_counts_as_queued(self):
        out = await self.started(self.output(Sink(auto=False)))
        threads = []
        put = out.spool.store.put

        def watched(*args):
            threads.append(threading.current_thread())
            return put(*args)
        out.spool.store.put = watched
        packet, record = _records(1)[0]
        await out.data(packet, record, None)
        other = sqlite3.connect(out.spool.path)
        self.addCleanup(other.close)
        self.assertEqual(other.execute("SELECT data FROM records").fetchall(), [(b"0",)])
        self.assertEqual(len(threads), 1)
        self.assertIsNot(threads[0], threading.main_thread())
        self.assertTrue(threads[0].daemon)

    async def test_records_waiting_together_are_committed_together(self):
        out = await self.started(self.output(Sink(auto=False)))
        calls = []
        put_many = out.spool.store.put_many

        def watched(items, now):
            calls.append(list(items))
            return put_many(items, now)
        out.spool.store.put_many = watched
        records = _records(4)
        skipped = dataclasses.replace(records[2][1],
                                      values=types.MappingProxyType({"skip": 1}))
        await out.dataBatch([records[0], records[1], (records[2][0], skipped), records[3]],
                            None)
        # One transaction for the three the sink wants, on disk before it fired.
        self.assertEqual(calls, [[b"0", b"1", b"3"]])
        other = sqlite3.connect(out.spool.path)
        self.addCleanup(other.close)
        self.assertEqual(other.execute("SELECT data FROM records ORDER BY id").fetchall(),
                         [(b"0",), (b"1",), (b"3",)])
        self.assertEqual(out.spool_stats()["queued"], 3)
        self.assertIsNone(out.dataBatch([(records[2][0], skipped)], None))

    async def test_in_order_in_batches_removed_once_confirmed(self):
        sink = Sink(batch_size=3, auto=False)
        out = await self.started(self.output(sink))
        records = _records(8)
        await out.data(*records[0], None)
        await until(lambda: sink.calls, "the first delivery")
        for packet, record in records[1:]:
            await out.data(packet, record, None)
        self.assertEqual(sink.calls[0][0], [0])
        self.assertEqual(out.spool_stats()["queued"], 8)
        sink.auto = True
        sink.calls[0][1].callback(None)
        await until(lambda: out.spool_stats()["queued"] == 0, "the spool to empty")
        self.assertEqual([items for items, _ in sink.calls], [[0], [1, 2, 3], [4, 5, 6], [7]])
        stats = out.spool_stats()
        self.assertEqual((stats["delivered"], stats["retried"], stats["dropped"]), (8, 0, 0))

    async def test_failures_retry_with_exponential_backoff(self):
        clock = Clock()
        sink = Sink(auto=False)
        out = await self.started(self.output(sink, clock=clock))
        for packet, record in _records(2):
            await out.data(packet, record, None)
        delays = await _fail(sink, clock, 3, ConnectionRefusedError("Connection refused"))
        self.assertEqual(delays, [1.0, 2.0, 4.0])
        await until(lambda: len(sink.calls) == 4, "attempt 4")
        self.assertEqual(sink.calls[-1][0], [0, 1])
        sink.calls[-1][1].callback(None)
        await until(lambda: out.spool_stats()["queued"] == 0, "the spool to empty")
        stats = out.spool_stats()
        self.assertEqual((stats["delivered"], stats["retried"]), (2, 3))
        self.assertIn("Connection refused", stats["last_error"])

    async def test_backoff_is_capped_at_retry_max(self):
        clock = Clock()
        sink = Sink(auto=False)
        out = await self.started(self.output(sink, clock=clock, retry_max=3))
        packet, record = _records(1)[0]
        await out.data(packet, record, None)
        self.assertEqual(await _fail(sink, clock, 4, OSError("down")), [1.0, 2.0, 3.0, 3.0])

    async def test_a_rejected_batch_is_tried_one_by_one(self):
        def refuse(items):
            if 2 in items:
                raise Rejected("HTTP 400: bad line")
        sink = Sink(batch_size=5, auto=False, refuse=refuse)
        out = await self.started(self.output(sink))
        records = _records(7)
        await out.data(*records[0], None)
        await until(lambda: sink.calls, "the first delivery")
        for packet, record in records[1:]:
            await out.data(packet, record, None)
        sink.auto = True
        sink.calls[0][1].callback(None)
        await until(lambda: out.spool_stats()["queued"] == 0, "the spool to empty")
        # [1..5] refused as a batch: one by one, 2 alone is dropped; then 6.
        self.assertEqual([items for items, _ in sink.calls], [[0], [1], [3], [4], [5], [6]])
        stats = out.spool_stats()
        self.assertEqual((stats["delivered"], stats["rejected"]), (6, 1))
        self.assertIn("HTTP 400", stats["last_error"])

    async def test_flush_interval_holds_a_small_batch(self):
        clock = Clock()
        sink = Sink(batch_size=10, flush_interval=30)
        out = await self.started(self.output(sink, clock=clock))
        for packet, record in _records(2):
            await out.data(packet, record, None)
        await until(lambda: clock.getDelayedCalls(), "the flush timer")
        self.assertEqual(sink.calls, [])
        clock.advance(30)
        await until(lambda: sink.calls, "the flush")
        self.assertEqual(sink.calls[0][0], [0, 1])

    async def test_a_full_batch_does_not_wait_for_the_flush_interval(self):
        sink = Sink(batch_size=3, flush_interval=3600)
        out = await self.started(self.output(sink))
        for packet, record in _records(3):
            await out.data(packet, record, None)
        await until(lambda: sink.calls, "the full batch")
        self.assertEqual(sink.calls[0][0], [0, 1, 2])

    async def test_records_survive_a_restart_in_order(self):
        directory = self.mktemp()
        down = Sink(auto=False)
        first = self.output(down, directory)
        await first.startService()
        for packet, record in _records(5):
            await first.data(packet, record, None)
        await until(lambda: down.calls, "a delivery in flight")
        await first.stopService()
        self.assertEqual(down.cancelled, 1)
        up = Sink(batch_size=2)
        second = await self.started(self.output(up, directory))
        await until(lambda: second.spool_stats()["queued"] == 0, "the backlog to drain")
        self.assertEqual(up.confirmed(), [0, 1, 2, 3, 4])

    async def test_drops_are_counted_and_logged_once_per_burst(self):
        events = EventLoggingObserver.createWithCleanup(self, logs.publisher)
        sink = Sink(auto=False)
        clock = Clock()
        out = await self.started(self.output(sink, clock=clock, max_mb=0.0002))  # 200 bytes
        for packet, record in _records(40):
            await out.data(packet, record, None)
        stats = out.spool_stats()
        self.assertEqual(stats["dropped"] + stats["queued"], 40)
        self.assertGreater(stats["dropped"], 30)
        drops = [e for e in events if "dropped the" in e.get("log_format", "")]
        self.assertEqual(len(drops), 1)
        clock.advance(60)
        summaries = [e for e in events if "record(s) dropped" in e.get("key", "")]
        self.assertEqual(len(summaries), 1)
        self.assertEqual(summaries[0]["count"], stats["dropped"] - drops[0]["count"])

    async def test_a_record_the_sink_does_not_want_is_not_spooled(self):
        out = await self.started(self.output(Sink(auto=False)))
        packet, record = _records(1)[0]
        skipped = dataclasses.replace(record, values=types.MappingProxyType({"skip": 1}))
        self.assertIsNone(out.data(packet, skipped, None))
        self.assertEqual(out.spool_stats()["queued"], 0)


class WriteFailureTests(unittest.TestCase):

    async def test_a_spool_that_cannot_be_written_is_logged_once_per_burst(self):
        events = EventLoggingObserver.createWithCleanup(self, logs.publisher)
        clock = Clock()
        out = SpooledOutput(Sink(auto=False), spool_settings(self.mktemp()), reactor, clock=clock)
        await out.startService()
        self.addCleanup(out.stopService)

        def full(*args):
            raise sqlite3.OperationalError("database or disk is full")
        out.spool.store.put = full
        for packet, record in _records(5):
            await out.data(packet, record, None)
        stats = out.spool_stats()
        self.assertEqual((stats["dropped"], stats["last_error"]),
                         (5, "OperationalError: database or disk is full"))
        errors = [e for e in events if "cannot write to the spool" in e.get("log_format", "")]
        self.assertEqual(len(errors), 1)
        clock.advance(60)
        summary = [e for e in events if e.get("key") == "record(s) not written to the spool"]
        self.assertEqual([e["count"] for e in summary], [4])


def _write_plugin(directory, name, text):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
        f.write(text)


class HostTests(unittest.TestCase):

    async def test_one_sink_down_never_delays_another(self):
        directory = self.mktemp()
        config = make_config(os.path.join(directory, "plugins"),
                             outputs={"spool": {"directory": os.path.join(directory, "spool")}})
        down, up = Sink("down", auto=False), Sink("up")
        host = PluginHost(config, reactor, plugins=[down, up])
        host.startService()
        self.addCleanup(host.stopService)
        for packet, record in _records(20):
            host.deliver(packet, record)
        stats = {}

        def refresh():
            stats.update({s["name"]: s for s in host.stats()})
            return stats["up"]["spool"]["delivered"] == 20 and stats["down"]["spool"]["queued"] == 20
        await until(refresh, "the healthy sink to get everything")
        self.assertEqual(up.confirmed(), list(range(20)))
        self.assertEqual(len(down.calls), 1)
        self.assertTrue(os.path.exists(os.path.join(directory, "spool", "down.sqlite")))
        scrape = generate_latest(metrics_registry(
            GrottCollector(Registry(), Clock(), plugins=host.stats), process=False)).decode()
        self.assertIn('grott_output_spooled{output="down"} 20.0', scrape)
        self.assertIn('grott_output_spool_delivered_total{output="up"} 20.0', scrape)
        self.assertIn('grott_output_connected{output="up"} 1.0', scrape)
        lines = plugin_lines(host)
        self.assertIn("  spool down: queued=20 ", "\n".join(lines))
        self.assertTrue(any(line.startswith("  spool up: queued=0 ") and "delivered=20" in line
                            for line in lines), lines)

    async def test_a_plugin_file_can_ask_for_a_spool(self):
        directory = self.mktemp()
        _write_plugin(directory, "mysink.py", (
                "from zope.interface import implementer\n"
                "from grott.interfaces import ISpoolSink\n\n"
                "@implementer(ISpoolSink)\n"
                "class Mine:\n"
                "    name = 'mine'\n"
                "    batch_size = 5\n"
                "    flush_interval = 0\n"
                "    def __init__(self):\n"
                "        self.got = []\n"
                "    def encode(self, record):\n"
                "        return str(record.values['seq']).encode()\n"
                "    def deliver(self, items):\n"
                "        self.got.extend(items)\n\n"
                "sink = Mine()\n"))
        spool = os.path.abspath(self.mktemp())
        # Third-party plugins run only when named (plugins.enabled).
        config = make_config(directory, enabled=["mine"], outputs={"spool": {"directory": spool}})
        host = PluginHost(config, reactor)
        [runner] = host.runners
        self.assertIsInstance(runner.plugin, SpooledOutput)
        host.startService()
        self.addCleanup(host.stopService)
        for packet, record in _records(3):
            host.deliver(packet, record)
        await until(lambda: len(runner.plugin.sink.got) == 3, "the plugin's records")
        self.assertEqual(runner.plugin.sink.got, [b"0", b"1", b"2"])
        self.assertTrue(os.path.exists(os.path.join(spool, "mine.sqlite")))
