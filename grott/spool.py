"""
Durable delivery: each spooled output keeps its records in a file of its
own until the receiving end confirmed them, so a sink that is away (a
database restarting, a broker down for an hour, the internet gone) or a
grott restart in the meantime loses nothing.

Why SQLite, in WAL mode, from the standard library:

  - crash-safe: a record is committed (and, with C{synchronous=FULL},
    fsynced) before C{data} reports it queued; a crash or power cut leaves
    either the whole transaction or none of it, never a torn record;
  - no dependency: C{sqlite3} ships with Python;
  - ordered: an C{AUTOINCREMENT} rowid only ever grows, even after the
    table was emptied, so "oldest first" is C{ORDER BY id} and delivery
    order survives restarts;
  - WAL lets the writer append without rewriting the pages a reader has,
    and removing the delivered head is one range delete.

All disk I/O runs on one worker thread per spool (a one-thread pool that
the output starts and stops), never on the reactor thread; one thread also
means one connection used strictly in sequence.  Each output has its own
file, thread and delivery loop, and the plugin host gives it its own
queue, so a sink that is down or slow never delays another sink or the
relay.

Delivery is at least once: a batch is removed from the spool only after
the sink's Deferred fired; one in flight when grott stopped is sent again.
"""

import collections
import contextlib
import os
import re
import sqlite3
import time
from functools import partial

from twisted.internet import defer
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from zope.interface import alsoProvides, implementer

from grott.config import seconds
from grott.interfaces import IBatchPlugin, IGrottObserver, IGrottPluginService
from grott.logs import Logger
from grott.logthrottle import LogThrottle
from grott.threads import DaemonThreadPool

__all__ = ["Rejected", "Row", "Spool", "SpooledOutput", "Store"]

#: Bytes counted per record on top of its data (rowid, time, page overhead),
#: so that max_mb bounds the file and not only the payloads.
ROW_OVERHEAD = 40

#: First wait after a failed delivery, seconds; it doubles up to retry_max.
RETRY_MIN = 1.0

Row = collections.namedtuple("Row", "id at data")


class Rejected(Exception):
    """
    The receiving end refused the data itself (an HTTP 400, a malformed
    status): sending it again cannot succeed, so it is dropped and counted,
    not retried.
    """


class Store:
    """
    The SQLite file.  Synchronous: every method runs on the spool's worker
    thread and returns C{(result, state)}, C{state} being C{(records,
    bytes, bytes on disk)} after the call, so the reactor thread learns the
    counts without touching the connection.
    """

    def __init__(self, path, max_bytes, max_age):
        self.path = path
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.db = None
        self.count = 0
        self.size = 0

    # -- opening and closing

    def open(self):
        """
        Open (or create) the file; a file that is not a readable spool is
        moved aside and a new one started, so a corrupt spool costs its
        records, not the output.

        @return: C{(path moved aside or None, state)}
        """
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        moved = None
        try:
            self._connect()
        except sqlite3.DatabaseError as e:
            self._close_quietly()
            moved = f"{self.path}.corrupt-{int(time.time())}"
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.replace(self.path + suffix, moved + suffix)
            moved = (moved, str(e))
            self._connect()
        return moved, self._state()

    def _connect(self):
        # isolation_level=None: transactions are ours (BEGIN IMMEDIATE).
        db = self.db = sqlite3.connect(self.path, isolation_level=None,
                                       check_same_thread=False)
        # Takes effect only while the file is new: lets deletes shrink it.
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise sqlite3.DatabaseError(f"cannot use WAL mode (got {mode})")
        db.execute("PRAGMA synchronous=FULL")
        # The WAL is reused after each checkpoint; past this it is cut back.
        db.execute("PRAGMA journal_size_limit=1048576")
        db.execute("CREATE TABLE IF NOT EXISTS records ("
                   "id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, data BLOB NOT NULL)")
        count, size = db.execute(
            "SELECT count(*), coalesce(sum(length(data)), 0) FROM records").fetchone()
        self.count = count
        self.size = size + count * ROW_OVERHEAD

    def close(self):
        if self.db is not None:
            try:
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._close_quietly()
        return None, self._state()

    def _close_quietly(self):
        db, self.db = self.db, None
        if db is not None:
            try:
                db.close()
            except sqlite3.Error:
                pass

    def _state(self):
        on_disk = 0
        for suffix in ("", "-wal"):
            try:
                on_disk += os.path.getsize(self.path + suffix)
            except OSError:
                pass
        return self.count, self.size, on_disk

    # -- records

    def put(self, data, now):
        """
        Append one record, then apply the bounds (the new record counts).

        @return: C{({reason: records dropped}, state)}
        """
        return self.put_many([data], now)

    def put_many(self, items, now):
        """
        Append several records in one transaction (one fsync), then apply
        the bounds.

        @return: C{({reason: records dropped}, state)}
        """
        with self._transaction():
            self.db.executemany("INSERT INTO records (at, data) VALUES (?, ?)",
                                [(now, data) for data in items])
            self.count += len(items)
            self.size += sum(len(data) for data in items) + len(items) * ROW_OVERHEAD
            dropped = self._bound(now)
        return dropped, self._state()

    def peek(self, limit, now):
        """
        The oldest C{limit} records, after dropping those past max_age.

        @return: C{((rows, {reason: dropped}), state)}
        """
        dropped = {}
        if self.count and self.max_age is not None:
            with self._transaction():
                dropped = self._bound(now)
        rows = [Row(*row) for row in self.db.execute(
            "SELECT id, at, data FROM records ORDER BY id LIMIT ?", (limit,))]
        return (rows, dropped), self._state()

    def remove(self, first, last):
        """
        Delete the records with ids C{first..last} (delivered, or rejected).

        @return: C{(records removed, state)}
        """
        with self._transaction():
            removed = self._delete("id BETWEEN ? AND ?", (first, last))
        self._shrink()
        return removed, self._state()

    # -- inside a transaction

    @contextlib.contextmanager
    def _transaction(self):
        """
        One write transaction; on any error it is rolled back and the
        counts are read again from the file.
        """
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            self._recount()
            raise

    def _bound(self, now):
        dropped = {}
        if self.max_age is not None:
            cutoff = now - self.max_age
            # Oldest first: stop at the first record young enough (the
            # times only go backwards when the clock does).
            last = self._last_id_while(lambda at, length: at < cutoff)
            if last is not None:
                dropped["max_age"] = self._delete("id <= ?", (last,))
        if self.size > self.max_bytes and self.count > 1:
            excess = self.size - self.max_bytes
            freed = [0]

            def needed(at, length):
                if freed[0] >= excess:
                    return False
                freed[0] += length + ROW_OVERHEAD
                return True

            last = self._last_id_while(needed)
            if last is not None:
                # Never the newest record: the spool keeps at least one.
                newest = self.db.execute("SELECT max(id) FROM records").fetchone()[0]
                dropped["max_mb"] = self._delete("id <= ? AND id < ?", (last, newest))
        return {reason: n for reason, n in dropped.items() if n}

    def _last_id_while(self, keep_going, chunk=512):
        """
        The id of the last record, oldest first, for which C{keep_going(at,
        length)} held without a break; None if not even the first.
        """
        last, after = None, -1
        while True:
            rows = self.db.execute(
                "SELECT id, at, length(data) FROM records WHERE id > ? ORDER BY id LIMIT ?",
                (after, chunk)).fetchall()
            for row_id, at, length in rows:
                if not keep_going(at, length):
                    return last
                last = row_id
            if len(rows) < chunk:
                return last
            after = rows[-1][0]

    def _delete(self, where, args):
        count, size = self.db.execute(
            f"SELECT count(*), coalesce(sum(length(data)), 0) FROM records WHERE {where}",
            args).fetchone()
        if count:
            self.db.execute(f"DELETE FROM records WHERE {where}", args)
            self.count -= count
            self.size -= size + count * ROW_OVERHEAD
        return count

    def _recount(self):
        count, size = self.db.execute(
            "SELECT count(*), coalesce(sum(length(data)), 0) FROM records").fetchone()
        self.count, self.size = count, size + count * ROW_OVERHEAD

    def _shrink(self):
        """
        Give free pages back to the file system once there are many, so
        a spool that emptied after an outage does not stay large.
        """
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        if free >= 256 or (free and not self.count):
            # executescript steps the pragma to the end; execute frees one page.
            self.db.executescript("PRAGMA incremental_vacuum")


class Spool:
    """
    A L{Store} driven from the reactor thread: every call runs through
    C{run} (the worker thread) and returns a Deferred; C{count}, C{size} and
    C{on_disk} are the counts after the last call that finished.
    """

    def __init__(self, path, max_bytes, max_age, run):
        """
        @param run: C{run(f, *args) -> Deferred} that calls C{f} off the
            reactor thread, one call at a time, in order.
        """
        self.path = path
        self.store = Store(path, max_bytes, max_age)
        self._run = run
        self.count = 0
        self.size = 0
        self.on_disk = 0

    def _call(self, method, *args):
        d = self._run(method, *args)
        d.addCallback(self._update)
        return d

    def _update(self, result_and_state):
        result, (self.count, self.size, self.on_disk) = result_and_state
        return result

    def open(self):
        return self._call(self.store.open)

    def close(self):
        return self._call(self.store.close)

    def put(self, data, now):
        return self._call(self.store.put, data, now)

    def put_many(self, items, now):
        return self._call(self.store.put_many, items, now)

    def peek(self, limit, now):
        return self._call(self.store.peek, limit, now)

    def remove(self, first, last):
        return self._call(self.store.remove, first, last)


def _file_name(name):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".sqlite"


def _describe(failure_or_exception):
    e = getattr(failure_or_exception, "value", failure_or_exception)
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@implementer(IBatchPlugin, IGrottPluginService)
class SpooledOutput:
    """
    An L{grott.interfaces.ISpoolSink} behind a spool: the plugin the host
    runs.  C{data} encodes a record and fires once it is committed to the
    spool file; a delivery loop sends the oldest records to the sink in
    batches, removes them once the sink confirmed them, and retries with
    exponential backoff (C{RETRY_MIN} doubling up to C{retry_max}) while it
    does not.

    @ivar delivered: records the sink confirmed.
    @ivar retried: delivery attempts that failed and will be repeated.
    @ivar dropped: records discarded by the bounds (max_mb, max_age).
    @ivar rejected: records the sink refused as bad data.
    @ivar last_error: the last delivery failure, as text, or None.
    """

    log = Logger()

    def __init__(self, sink, settings, reactor, clock=None, run=None):
        """
        @param settings: a L{grott.config.SpoolConfig}.
        @param clock: for delays and spool times (default C{reactor}).
        @param run: how store calls leave the reactor thread (tests); by
            default a one-thread pool of this output's own.
        """
        self.sink = sink
        self.name = sink.name
        if IGrottObserver.providedBy(sink):
            alsoProvides(self, IGrottObserver)
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.retry_max = max(RETRY_MIN, settings.retry_max)
        self._pool = None
        if run is None:
            self._pool = DaemonThreadPool(minthreads=1, maxthreads=1,
                                          name=f"grott-spool-{self.name}")
            run = partial(deferToThreadPool, reactor, self._pool)
        self.max_mb = settings.max_mb
        self.spool = Spool(os.path.join(settings.directory, _file_name(self.name)),
                           int(settings.max_mb * 1_000_000), seconds(settings.max_age), run)
        self.delivered = 0
        self.retried = 0
        self.dropped = 0
        self.rejected = 0
        self.last_error = None
        self._held = collections.Counter()
        self._throttle = LogThrottle(self.clock, self._summary, burst=1, interval=60.0)
        self._loop = None
        self._waiter = None
        self._failing = 0
        self._stopping = True  # until started

    # -- the plugin side

    def data(self, packet, record, log):
        item = self.sink.encode(record)
        if item is None:
            return None
        d = self.spool.put(item, self.clock.seconds())
        d.addCallbacks(self._queued, self._not_written)
        return d

    def dataBatch(self, items, log):
        """
        The records waiting in the plugin queue, committed to the spool in
        one transaction: the same guarantee as L{data} for each (on disk
        before it counts as queued) at one fsync for all of them.
        """
        encoded = [item for item in (self.sink.encode(record) for _, record in items)
                   if item is not None]
        if not encoded:
            return None
        d = self.spool.put_many(encoded, self.clock.seconds())
        d.addCallbacks(self._queued, self._not_written, errbackArgs=(len(encoded),))
        return d

    def _not_written(self, failure, count=1):
        """
        The spool file could not take the record (disk full, read-only,
        removed): the record is lost, counted with the drops, and the
        problem logged once per burst rather than once per record.
        """
        self.dropped += count
        self.last_error = _describe(failure)
        key = "record(s) not written to the spool"
        if self._throttle.admit(key):
            self.log.error("output {output}: cannot write to the spool {file} ({error}); the "
                           "record is lost", output=self.name, file=self.spool.path,
                           error=self.last_error)
        else:
            self._held[key] += count

    def _queued(self, dropped):
        if dropped:
            self._dropped(dropped)
        self._wake()

    def _dropped(self, dropped):
        for reason, count in dropped.items():
            self.dropped += count
            key = f"record(s) dropped ({reason})"
            if self._throttle.admit(key):
                why = (f"the spool reached max_mb ({self.max_mb:g} MB)" if reason == "max_mb"
                       else "they were older than max_age")
                self.log.warn("output {output}: dropped the {count} oldest record(s), {why}; "
                              "further drops are summarised once a minute",
                              output=self.name, count=count, why=why)
            else:
                self._held[key] += count

    def _summary(self, key, events, interval):
        count = self._held.pop(key, 0) or events
        self.log.warn("output {output}: {count} more {key} in the last {seconds:.0f} s",
                      output=self.name, count=count, key=key, seconds=interval)

    # -- the delivery loop

    def _wake(self):
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.called:
            waiter.callback(None)

    def _wait(self, timeout=None):
        """
        A Deferred of its own that fires with the next record spooled, or
        after C{timeout} seconds.
        """
        d = defer.Deferred(lambda d: setattr(self, "_waiter", None))
        self._waiter = d
        if timeout is not None:
            call = self.clock.callLater(timeout, self._wake)

            def cancel(result):
                if call.active():
                    call.cancel()
                return result
            d.addBoth(cancel)
        return d

    async def _pump(self):
        delay = RETRY_MIN
        isolate = 0  # records still to try one at a time after a rejected batch
        while not self._stopping:
            try:
                delivered = await self._cycle(isolate)
            except Exception as e:  # noqa: BLE001 - the loop must outlive any failure
                if self._stopping:
                    return  # cancelled by stopService
                self.retried += 1
                error, self.last_error = self.last_error, _describe(e)
                if self._failing == 0 or (error != self.last_error
                                          and self._throttle.admit("failed attempt(s)")):
                    self.log.warn("output {output}: delivery failed ({error}); the records stay "
                                  "in the spool and are tried again in {delay:g} s",
                                  output=self.name, error=self.last_error, delay=delay)
                self._failing += 1
                await deferLater(self.clock, delay, lambda: None)
                delay = min(delay * 2, self.retry_max)
                continue
            if delivered is None:
                continue
            kind, count = delivered
            if kind == "split":
                isolate = count
                continue
            if isolate:
                isolate -= 1
            if self._failing:
                self.log.info("output {output}: delivering again after {count} failed "
                              "attempt(s)", output=self.name, count=self._failing)
                self._failing = 0
            delay = RETRY_MIN

    async def _cycle(self, isolate):
        """
        One step: wait for records, deliver a batch, remove it.

        @return: None when it only waited; C{("split", n)} when a rejected
            batch of n is to be tried one by one; C{("done", n)} after a
            batch of n left the spool.
        """
        batch = 1 if isolate else max(1, int(self.sink.batch_size))
        rows, dropped = await self.spool.peek(batch, self.clock.seconds())
        if dropped:
            self._dropped(dropped)
        if not rows:
            await self._wait()
            return None
        flush = self.sink.flush_interval or 0
        if not isolate and len(rows) < batch and flush > 0:
            wait = min(flush, rows[0].at + flush - self.clock.seconds())
            if wait > 0:
                await self._wait(wait)
                return None
        try:
            refused = await defer.maybeDeferred(self.sink.deliver, [row.data for row in rows])
        except Rejected as e:
            if len(rows) > 1:
                self.log.warn("output {output}: the receiving end refused a batch of {count} "
                              "({error}); trying its records one by one", output=self.name,
                              count=len(rows), error=_describe(e))
                return ("split", len(rows))
            await self.spool.remove(rows[0].id, rows[-1].id)
            self.rejected += 1
            self.last_error = _describe(e)
            if self._throttle.admit("record(s) refused as bad data"):
                self.log.error("output {output}: the receiving end refused a record as bad "
                               "data ({error}); it is dropped", output=self.name,
                               error=self.last_error)
            else:
                self._held["record(s) refused as bad data"] += 1
            return ("done", 1)
        refused = refused if isinstance(refused, int) and not isinstance(refused, bool) else 0
        await self.spool.remove(rows[0].id, rows[-1].id)
        self.rejected += refused
        self.delivered += len(rows) - refused
        return ("done", len(rows))

    # -- service hooks

    def startService(self):
        return defer.Deferred.fromCoroutine(self._start())

    async def _start(self):
        self._stopping = False
        if self._pool is not None:
            self._pool.start()
        moved = await self.spool.open()
        if moved is not None:
            path, error = moved
            self.log.error("output {output}: the spool file {file} could not be read ({error}); "
                           "it was moved to {moved} and a new one started",
                           output=self.name, file=self.spool.path, error=error, moved=path)
        if self.spool.count:
            self.log.info("output {output}: {count} record(s) waiting in {file} from before "
                          "are delivered first", output=self.name, count=self.spool.count,
                          file=self.spool.path)
        if IGrottPluginService.providedBy(self.sink):
            await defer.maybeDeferred(self.sink.startService)
        self._loop = defer.Deferred.fromCoroutine(self._pump())
        self._loop.addErrback(self._loop_failed)

    def _loop_failed(self, failure):
        if not failure.check(defer.CancelledError):
            self.log.failure("output {output}: the delivery loop stopped", failure,
                             output=self.name)

    def stopService(self):
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self):
        if self._stopping:
            return  # stopped already
        self._stopping = True
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.cancel()  # a batch in flight stays in the spool for next time
        try:
            if IGrottPluginService.providedBy(self.sink):
                await defer.maybeDeferred(self.sink.stopService)
            await self.spool.close()
        finally:
            self._throttle.stop()
            if self._pool is not None and self._pool.started:
                self._pool.stop()
        self.log.info("output {output}: stopped; {count} record(s) left in the spool",
                      output=self.name, count=self.spool.count)

    # -- stats

    @property
    def connected(self):
        """
        The sink's own C{connected} when it has one (the mqtt output);
        otherwise whether it took the last delivery: True once one
        succeeded, False while deliveries fail, None before the first.
        """
        connected = getattr(self.sink, "connected", None)
        if isinstance(connected, bool):
            return connected
        if self._failing:
            return False
        return True if self.delivered or self.rejected else None

    # -- IGrottObserver, for a sink that is one (the mqtt output)

    def watchGrott(self, registry, status):
        return self.sink.watchGrott(registry, status)

    def dataloggerConnected(self, session):
        return self.sink.dataloggerConnected(session)

    def dataloggerDisconnected(self, session):
        return self.sink.dataloggerDisconnected(session)

    def reportLines(self):
        return self.sink.reportLines()

    def reportData(self):
        return self.sink.reportData()

    def spool_stats(self):
        """
        queued (records in the spool, not yet confirmed), on_disk (bytes
        of the spool file and its WAL), delivered, retried, dropped,
        rejected, last_error.
        """
        return {
            "queued": self.spool.count,
            "on_disk": self.spool.on_disk,
            "delivered": self.delivered,
            "retried": self.retried,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "last_error": self.last_error,
        }
