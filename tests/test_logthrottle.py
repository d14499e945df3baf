"""
LogThrottle on a Clock: bursts pass, floods become one summary per interval.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from grott.logthrottle import LogThrottle


class LogThrottleTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.summaries = []
        self.throttle = LogThrottle(
            self.clock, lambda key, count, seconds: self.summaries.append((key, count, seconds)),
            burst=3, interval=60.0)

    def admitted(self, key, times):
        return sum(self.throttle.admit(key) for _ in range(times))

    def test_burst_then_held(self):
        self.assertEqual(self.admitted("a", 1000), 3)
        self.assertEqual(self.throttle.suppressed, 997)
        self.assertEqual(self.summaries, [])
        self.clock.advance(60)
        self.assertEqual(self.summaries, [("a", 997, 60.0)])

    def test_flood_gives_one_line_per_interval(self):
        lines = 0
        for second in range(600):
            lines += self.admitted("a", 100)
            self.clock.advance(1)
        lines += len(self.summaries)
        # 3 full lines, then one summary a minute for ten minutes.
        self.assertEqual(lines, 3 + 10)
        self.assertEqual(sum(count for _, count, _ in self.summaries), 60000 - 3)

    def test_keys_are_independent(self):
        self.assertEqual(self.admitted("a", 5), 3)
        self.assertEqual(self.admitted("b", 5), 3)
        self.clock.advance(60)
        self.assertEqual(sorted(self.summaries), [("a", 2, 60.0), ("b", 2, 60.0)])

    def test_quiet_interval_gives_fresh_burst(self):
        self.admitted("a", 5)
        self.clock.advance(60)
        self.clock.advance(61)
        self.assertEqual(self.admitted("a", 5), 3)

    def test_stop_reports_held_and_cancels(self):
        self.admitted("a", 4)
        self.clock.advance(10)
        self.throttle.stop()
        self.assertEqual(self.summaries, [("a", 1, 10.0)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_keys_bounded(self):
        self.throttle.max_keys = 4
        for key in range(100):
            self.throttle.admit(key)
            self.throttle.admit(key)
        self.assertLessEqual(len(self.throttle._windows), 4)
        self.assertLessEqual(len(self.clock.getDelayedCalls()), 4)
