"""
The admission rules on their own (tests.test_hostile_peers runs them
through real connections).
"""

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from grott.admission import Admission
from grott.session import Registry, Session


class _Link:
    def __init__(self):
        self.closed = []

    def disconnect(self, why):
        self.closed.append(why)


class AdmissionTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.registry = Registry()
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def session(self, host, serial="JPC281833B"):
        session = Session(f"{host}:40000", self.clock.seconds(), _Link(), host)
        session.datalogger_serial = serial
        self.registry.add(session)
        return session

    def refusals(self):
        return [e for e in self.events if "refusing" in e.get("log_format", "")]

    def test_serialNotAllowedIsRefusedAndLoggedOnce(self):
        admission = Admission(self.registry, self.clock, allowed_serials=["OTHER00001"])
        first = self.session("192.0.2.7")
        self.assertEqual(admission.claim(first), "serial JPC281833B not allowed")
        self.assertEqual(admission.claim(self.session("192.0.2.7")),
                         "serial JPC281833B not allowed")
        self.assertEqual(len(self.refusals()), 1)
        self.assertIsNone(self.registry.by_serial("JPC281833B"))

    def test_liveSerialFromAnotherAddressIsRefused(self):
        admission = Admission(self.registry, self.clock)
        live = self.session("192.0.2.7")
        self.assertIsNone(admission.claim(live))
        live.last_packet_at = self.clock.seconds()
        newcomer = self.session("198.51.100.9")
        self.assertEqual(admission.claim(newcomer),
                         "refused: JPC281833B is live on another connection")
        self.assertEqual(self.registry.refused_takeovers, 1)
        self.assertIs(self.registry.by_serial("JPC281833B"), live)
        self.assertEqual(live.link.closed, [])

    def test_sameAddressTakesOverAndClosesTheOldConnection(self):
        admission = Admission(self.registry, self.clock)
        old = self.session("192.0.2.7")
        admission.claim(old)
        new = self.session("192.0.2.7")
        self.assertIsNone(admission.claim(new))
        self.assertIs(self.registry.by_serial("JPC281833B"), new)
        self.assertEqual(old.link.closed, ["replaced by a newer connection"])

    def test_networks(self):
        admission = Admission(self.registry, self.clock,
                              allowed_networks=["192.168.1.0/24", "2001:db8::/32"])
        self.assertTrue(admission.networkAllowed(IPv4Address("TCP", "192.168.1.20", 1)))
        self.assertTrue(admission.networkAllowed(IPv6Address("TCP", "::ffff:192.168.1.20", 1)))
        self.assertTrue(admission.networkAllowed(IPv6Address("TCP", "2001:db8::5%eth0", 1)))
        self.assertFalse(admission.networkAllowed(IPv4Address("TCP", "10.0.0.1", 1)))
        self.assertFalse(admission.networkAllowed(IPv4Address("TCP", "10.0.0.1", 2)))
        self.assertEqual(self.registry.rejected, 2)
        self.assertEqual(len(self.refusals()), 1)

    def test_anyNetworkWhenUnset(self):
        admission = Admission(self.registry, self.clock)
        self.assertTrue(admission.networkAllowed(IPv4Address("TCP", "203.0.113.1", 1)))
        self.assertEqual(self.registry.rejected, 0)
