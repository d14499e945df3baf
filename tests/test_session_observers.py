"""
Registry observers: dataloggers coming and going, as plugins (the mqtt
output's availability) see them.
"""

from twisted.internet.testing import EventLoggingObserver
from twisted.trial import unittest

from grott import logs
from grott.session import Registry, Session


class Recorder:

    def __init__(self):
        self.events = []

    def dataloggerConnected(self, session):
        self.events.append(("connected", session.datalogger_serial, session.id))

    def dataloggerDisconnected(self, session):
        self.events.append(("disconnected", session.datalogger_serial, session.id))


def _session(serial):
    session = Session(("127.0.0.1", 1), 0.0)
    session.datalogger_serial = serial
    return session


class ObserverTests(unittest.SynchronousTestCase):

    def test_connect_replace_disconnect(self):
        registry = Registry()
        seen = Recorder()
        registry.observers.append(seen)
        first, second = _session("DL1"), _session("DL1")
        for session in (first, second):
            registry.add(session)
        registry.claim(first)
        registry.claim(first)               # claimed again: no second event
        self.assertIs(registry.claim(second), first)
        registry.remove(first)              # replaced: the datalogger is still here
        registry.remove(second)
        self.assertEqual(seen.events, [("connected", "DL1", first.id),
                                       ("connected", "DL1", second.id),
                                       ("disconnected", "DL1", second.id)])

    def test_a_failing_observer_is_logged_and_others_still_hear(self):
        events = EventLoggingObserver.createWithCleanup(self, logs.publisher)

        class Broken:
            def dataloggerConnected(self, session):
                raise RuntimeError("observer bug")

        registry = Registry()
        seen = Recorder()
        registry.observers += [Broken(), seen]
        session = _session("DL2")
        registry.add(session)
        registry.claim(session)
        self.assertEqual(seen.events, [("connected", "DL2", session.id)])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(any("observer failed" in e["log_format"] for e in events))
