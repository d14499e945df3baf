"""
The mqtt output against a real mosquitto (started per test on a free
loopback port), plus the pure payload and discovery builders.
"""

import json

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from grott import logs
from grott.outputs import hass
from grott.outputs.mqtt import record_payload
from grott.pluginhost import PluginHost
from tests import mosquitto
from tests.pluginhelpers import DATA_VECTORS, make_config, numbered, packet_and_record


def _json(payload):
    return json.loads(payload.decode("utf-8"))


class PayloadTests(unittest.SynchronousTestCase):

    def test_record_payload(self):
        _, record = packet_and_record("grott-p6-0104-classic")
        payload = record_payload(record)
        self.assertEqual(payload["device"], record.inverter_serial)
        self.assertEqual(payload["datalogger"], record.datalogger_serial)
        self.assertEqual(payload["time"], record.timestamp)
        self.assertIs(payload["buffered"], False)
        self.assertEqual(payload["values"], dict(record.values))
        self.assertEqual(payload["record_type"], 4)

    def test_units(self):
        self.assertEqual(hass.unit_meta("pvpowerin", "W"), ("W", "power", "measurement"))
        self.assertEqual(hass.unit_meta("pvenergytotal", "kWh"),
                         ("kWh", "energy", "total_increasing"))
        self.assertEqual(hass.unit_meta("pvtemperature", "°C"),
                         ("°C", "temperature", "measurement"))
        self.assertEqual(hass.unit_meta("bat_soc", "%"), ("%", "battery", "measurement"))
        self.assertEqual(hass.unit_meta("pvstatus", ""), (None, None, None))

    def test_discovery_messages(self):
        _, record = packet_and_record("grott-p6-0104-classic")
        serial = record.inverter_serial
        messages = dict(hass.discovery_messages(record, serial, "energy/growatt/" + serial,
                                                "energy/growatt/availability", "homeassistant"))
        self.assertEqual(len(messages), len(record.values))
        power = messages[f"homeassistant/sensor/grott_{serial}/pvpowerin/config"]
        self.assertEqual(power["unique_id"], f"grott_{serial}_pvpowerin")
        self.assertEqual(power["state_topic"], "energy/growatt/" + serial)
        self.assertEqual(power["value_template"], "{{ value_json['values'][\"pvpowerin\"] }}")
        self.assertEqual(power["unit_of_measurement"], "W")
        self.assertEqual(power["device_class"], "power")
        self.assertEqual(power["device"]["identifiers"], [f"grott_{serial}"])
        self.assertEqual(power["device"]["model"], record.family)
        status = messages[f"homeassistant/sensor/grott_{serial}/pvstatus/config"]
        self.assertNotIn("unit_of_measurement", status)
        self.assertNotIn("state_class", status)
        skipped = hass.discovery_messages(record, serial, "t", "a", "homeassistant",
                                          skip=set(record.values) - {"pvstatus"})
        self.assertEqual([t for t, _ in skipped],
                         [f"homeassistant/sensor/grott_{serial}/pvstatus/config"])


class BrokerTestCase(unittest.TestCase):
    """
    Starts mosquitto, and offers a plugin host with only the mqtt output.
    """

    skip = mosquitto.SKIP
    timeout = 30

    def broker_options(self):
        return {}

    def setUp(self):
        self.broker = mosquitto.Broker(self.mktemp(), **self.broker_options())
        self.addCleanup(self.broker.stop)
        return self.broker.start()

    def host(self, stop_timeout=10, **mqtt):
        settings = {"port": self.broker.port, "reconnect_min": 0.1, "reconnect_max": 0.3}
        settings.update(mqtt)
        config = make_config(self.mktemp(), stop_timeout=stop_timeout, outputs={"mqtt": settings})
        host = PluginHost(config, reactor)
        self.assertEqual([r.name for r in host.runners], ["mqtt"])
        return host

    def subscribe(self, topics, **kw):
        subscriber = mosquitto.Subscriber(self.broker.port, topics, **kw)
        self.addCleanup(subscriber.stop)
        return subscriber

    def start(self, host):
        host.startService()
        self.addCleanup(lambda: host.stopService() if host.running else None)


def _count(topic_prefix, n):
    return lambda messages: sum(1 for t, _, _ in messages if t.startswith(topic_prefix)) >= n


class PublishTests(BrokerTestCase):

    async def _records_arrive(self):
        subscriber = self.subscribe(["energy/#"])
        await subscriber.subscribed
        host = self.host()
        self.start(host)
        pairs = [packet_and_record(v) for v in DATA_VECTORS]
        for packet, record in pairs:
            host.deliver(packet, record)
        await subscriber.wait_for(_count("energy/growatt", len(pairs) + 1))
        data = subscriber.on("energy/growatt")
        self.assertEqual(len(data), len(pairs))
        for (payload, retain), (_, record) in zip(data, pairs):
            self.assertFalse(retain)
            document = _json(payload)
            self.assertEqual(document["device"], record.inverter_serial)
            self.assertEqual(document["time"], record.timestamp)
            self.assertEqual(document["values"], json.loads(json.dumps(dict(record.values))))
        self.assertEqual(subscriber.on("energy/growatt/availability")[0][0], b"online")

        await host.stopService()
        self.assertEqual(host.stats()[0]["delivered"], len(pairs))
        await subscriber.wait_for(
            lambda m: (b"offline", False) in subscriber.on("energy/growatt/availability")
            or (b"offline", True) in subscriber.on("energy/growatt/availability"))

    def test_records_arrive(self):
        return defer.Deferred.fromCoroutine(self._records_arrive())

    async def _serial_topic_retain(self):
        host = self.host(topic="solar/inverters", serial_in_topic=True, retain=True, qos=0)
        self.start(host)
        packet, record = packet_and_record()
        host.deliver(packet, record)
        while host.stats()[0]["delivered"] < 1:
            await deferLater(reactor, 0.01, lambda: None)
        # Subscribing afterwards still gets the record: it was retained.
        subscriber = self.subscribe(["solar/#"])
        topic = f"solar/inverters/{record.inverter_serial}"
        await subscriber.wait_for(lambda m: subscriber.on(topic))
        [(payload, retain)] = subscriber.on(topic)
        self.assertTrue(retain)
        self.assertEqual(_json(payload)["values"]["pvpowerin"], record.values["pvpowerin"])

    def test_serial_in_topic_and_retain(self):
        return defer.Deferred.fromCoroutine(self._serial_topic_retain())

    async def _discovery(self):
        subscriber = self.subscribe(["homeassistant/#", "energy/#"])
        await subscriber.subscribed
        host = self.host(discovery=True, serial_in_topic=True)
        self.start(host)
        packet, record = packet_and_record("grott-p6-0104-classic")
        serial = record.inverter_serial
        state = f"energy/growatt/{serial}"
        host.deliver(packet, record)
        await subscriber.wait_for(lambda m: subscriber.on(state))
        configs = {t: _json(p) for t, p, _ in subscriber.messages
                   if t.startswith("homeassistant/")}
        self.assertEqual(len(configs), len(record.values))
        power = configs[f"homeassistant/sensor/grott_{serial}/pvpowerin/config"]
        self.assertEqual(power["state_topic"], state)
        self.assertEqual(power["availability_topic"], "energy/growatt/availability")
        self.assertEqual((power["unit_of_measurement"], power["device_class"],
                          power["state_class"]), ("W", "power", "measurement"))
        energy = configs[f"homeassistant/sensor/grott_{serial}/pvenergytotal/config"]
        self.assertEqual((energy["device_class"], energy["state_class"]),
                         ("energy", "total_increasing"))
        self.assertEqual(power["device"]["identifiers"], [f"grott_{serial}"])

        # Same inverter again: no second round of discovery.
        host.deliver(packet, record)
        await subscriber.wait_for(lambda m: len(subscriber.on(state)) == 2)
        self.assertEqual(sum(1 for t, _, _ in subscriber.messages
                             if t.startswith("homeassistant/")), len(record.values))
        # The configs are retained for a Home Assistant that starts later.
        late = self.subscribe(["homeassistant/#"])
        await late.wait_for(_count("homeassistant/", len(record.values)))
        self.assertTrue(all(retain for _, _, retain in late.messages))

    def test_discovery(self):
        return defer.Deferred.fromCoroutine(self._discovery())


class OutageTests(BrokerTestCase):

    async def _restart(self):
        # A persistent session: the broker keeps the subscriber's messages
        # across its own restart, so whatever grott sends is seen.
        subscriber = self.subscribe(["energy/growatt"], client_id="grott-test-sub",
                                    clean=False)
        await subscriber.subscribed
        host = self.host()
        self.start(host)
        pairs = numbered(8)
        for packet, record in pairs[:3]:
            host.deliver(packet, record)

        def seqs():
            return {_json(p)["values"]["seq"] for p, _ in subscriber.on("energy/growatt")}

        await subscriber.wait_for(lambda m: seqs() == {0, 1, 2})
        await self.broker.stop()
        for packet, record in pairs[3:]:
            host.deliver(packet, record)
            await deferLater(reactor, 0.02, lambda: None)
        stats = host.stats()[0]
        self.assertEqual(stats["delivered"], 3)
        self.assertEqual(stats["queued"] + (stats["busy_seconds"] is not None), 5)
        self.assertEqual(stats["dropped"], 0)

        await self.broker.start()
        await subscriber.wait_for(lambda m: seqs() == set(range(8)))
        while host.stats()[0]["delivered"] < 8:
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(host.stats()[0]["failed"], 0)

    def test_broker_restart_loses_nothing(self):
        return defer.Deferred.fromCoroutine(self._restart())

    async def _late_broker(self):
        events = EventLoggingObserver.createWithCleanup(self, logs.publisher)
        await self.broker.stop()
        host = self.host()
        self.start(host)
        for packet, record in numbered(3):
            host.deliver(packet, record)
        await deferLater(reactor, 0.8, lambda: None)   # several reconnect attempts
        unreachable = [e for e in events if "cannot reach" in e["log_format"]]
        self.assertEqual(len(unreachable), 1)
        await self.broker.start()
        # Delivered means acknowledged by the broker (QoS 1).
        while host.stats()[0]["delivered"] < 3:
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(host.stats()[0]["failed"], 0)

    def test_broker_down_at_start(self):
        return defer.Deferred.fromCoroutine(self._late_broker())


class AuthTests(BrokerTestCase):

    password = "pa55 w0rd-xyzzy"

    def broker_options(self):
        return {"users": {"grott": self.password}}

    def setUp(self):
        self.events = EventLoggingObserver.createWithCleanup(self, logs.publisher)
        self.all_events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        return BrokerTestCase.setUp(self)

    def assertNoSecret(self):
        for event in list(self.events) + list(self.all_events):
            self.assertNotIn(self.password, repr(event))

    async def _auth(self):
        subscriber = self.subscribe(["energy/#"], username="grott", password=self.password)
        await subscriber.subscribed
        host = self.host(username="grott", password=self.password)
        self.assertNotIn(self.password, repr(host.runners[0].plugin.settings))
        self.start(host)
        host.deliver(*packet_and_record())
        await subscriber.wait_for(lambda m: subscriber.on("energy/growatt"))
        await host.stopService()
        self.assertNoSecret()

    def test_username_password(self):
        return defer.Deferred.fromCoroutine(self._auth())

    async def _refused(self):
        host = self.host(username="grott", password="not " + self.password, stop_timeout=0.5)
        self.start(host)
        host.deliver(*packet_and_record())
        await deferLater(reactor, 0.8, lambda: None)
        refused = [e for e in self.events if "refused" in e["log_format"]]
        self.assertEqual(len(refused), 1)
        self.assertEqual(host.stats()[0]["delivered"], 0)
        await host.stopService()
        self.assertNoSecret()
        self.assertEqual(host.stats()[0]["failed"], 1)   # cancelled at shutdown

    def test_wrong_password_is_reported_once(self):
        return defer.Deferred.fromCoroutine(self._refused())


class TlsTests(BrokerTestCase):

    def setUp(self):
        self.tls = mosquitto.make_tls(self.mktemp())
        return BrokerTestCase.setUp(self)

    def broker_options(self):
        return {"tls": self.tls}

    async def _tls(self):
        subscriber = self.subscribe(["energy/#"], tls=self.tls["ca"])
        await subscriber.subscribed
        host = self.host(tls=True, ca_certs=self.tls["ca"])
        self.start(host)
        packet, record = packet_and_record()
        host.deliver(packet, record)
        await subscriber.wait_for(lambda m: subscriber.on("energy/growatt"))
        self.assertEqual(_json(subscriber.on("energy/growatt")[0][0])["device"],
                         record.inverter_serial)

    def test_tls(self):
        return defer.Deferred.fromCoroutine(self._tls())
