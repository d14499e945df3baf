"""
The mqtt output against a real mosquitto (started per test on a free
loopback port), plus the pure payload and discovery builders.
"""

import dataclasses
import json
import re
import threading
import types

from twisted.internet import defer, reactor
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from grott import logs
from grott.config import MqttConfig
from grott.outputs.mqtt import record_payload
from grott.pluginhost import PluginHost
from tests import mosquitto
from tests.pluginhelpers import DATA_VECTORS, make_config, numbered, packet_and_record
from tests.waiting import until


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


class ReadAheadTests(unittest.SynchronousTestCase):

    def test_small_reads_come_from_one_large_one(self):
        """
        paho reads a packet a byte or two at a time; the client takes
        everything waiting in one read and serves those from it.
        """
        import socket

        from paho.mqtt import client as paho

        from grott.outputs.mqtt import _Client
        mine, broker = socket.socketpair()
        self.addCleanup(broker.close)
        mine.setblocking(False)
        client = _Client(paho.CallbackAPIVersion.VERSION2)
        client._sock = mine
        acks = b"\x40\x02\x00\x01" b"\x40\x02\x00\x02" b"\x40\x02\x00\x03"
        broker.sendall(acks)
        self.assertEqual(client._sock_recv(1), b"\x40")
        # Everything is out of the socket already.
        self.assertRaises(BlockingIOError, mine.recv, 1)
        got = [client._sock_recv(1), client._sock_recv(2)]
        got += [client._sock_recv(n) for n in (1, 1, 2, 1, 1, 5)]
        self.assertEqual(b"\x40" + b"".join(got), acks)
        self.assertRaises(BlockingIOError, client._sock_recv, 1)
        broker.sendall(b"\xd0\x00")
        self.assertEqual(client._sock_recv(1), b"\xd0")
        client._sock_close()  # what was read ahead goes with the connection
        self.assertEqual(client._buffer, b"")


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
        # These tests look inside the output (routing, discovery, counters):
        # the in-memory path; tests/test_outputs_mqtt_spool.py has the spool.
        settings = {"port": self.broker.port, "reconnect_min": 0.1, "reconnect_max": 0.3,
                    "spool": False}
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

    async def test_the_reactor_drives_the_client(self):
        """
        No paho network thread: the reactor watches the client's socket
        (and lets go of it on stop); the acknowledgements come back through
        it, several read at once.
        """
        subscriber = self.subscribe(["energy/#"])
        await subscriber.subscribed
        host = self.host(client_id="grott-under-test")
        self.start(host)
        output = host.runners[0].plugin
        await until(reactor, lambda: output.connected, "the connection")
        watched = output._socket
        self.assertIn(watched, reactor.getReaders())
        # (paho names its network thread after the client id.)
        self.assertEqual([t.name for t in threading.enumerate()
                          if t.name.endswith("grott-under-test")], [])
        pairs = [packet_and_record(v) for v in DATA_VECTORS] * 20
        for packet, record in pairs:
            host.deliver(packet, record)
        await until(reactor, lambda: output.outstanding == 0
                    and host.stats()[0]["delivered"] == len(pairs), "every acknowledgement")
        await subscriber.wait_for(_count("energy/growatt", len(pairs) + 1))
        self.assertEqual(len(subscriber.on("energy/growatt")), len(pairs))
        await host.stopService()
        self.assertNotIn(watched, reactor.getReaders())
        self.assertNotIn(watched, reactor.getWriters())
        self.assertIsNone(output.client.socket())

    async def _serial_topic_retain(self):
        host = self.host(topic="solar/inverters", serial_in_topic=True, retain=True, qos=0)
        self.start(host)
        packet, record = packet_and_record()
        host.deliver(packet, record)
        await until(reactor, lambda: host.stats()[0]["delivered"] >= 1, "the record delivered")
        # Subscribing afterwards still gets the record: it was retained.
        subscriber = self.subscribe(["solar/#"])
        topic = f"solar/inverters/{record.inverter_serial}"
        await subscriber.wait_for(lambda m: subscriber.on(topic))
        [(payload, retain)] = subscriber.on(topic)
        self.assertTrue(retain)
        self.assertEqual(_json(payload)["values"]["pvpowerin"], record.values["pvpowerin"])

    def test_serial_in_topic_and_retain(self):
        return defer.Deferred.fromCoroutine(self._serial_topic_retain())

    def test_discovery(self):
        return defer.Deferred.fromCoroutine(self._discovery())

    async def _discovery(self):
        """
        Two inverters of different families: each its own device and live
        topic (serial_in_topic at its default), configs once per device.
        """
        subscriber = self.subscribe(["homeassistant/#", "energy/#"])
        await subscriber.subscribed
        host = self.host(discovery=True)
        self.start(host)
        pairs = [packet_and_record("grott-p6-0104-classic"),
                 packet_and_record("grott-p6-0104-min-xdavidx93-a")]
        for packet, record in pairs:
            host.deliver(packet, record)
        serials = [record.inverter_serial for _, record in pairs]
        await subscriber.wait_for(lambda m: all(subscriber.on(f"energy/growatt/{s}")
                                                for s in serials))
        configs = {t: _json(p) for t, p, _ in subscriber.messages
                   if t.startswith("homeassistant/") and p}
        for (_, record), serial in zip(pairs, serials):
            mine = {t: c for t, c in configs.items() if f"/grott_{serial}/" in t}
            enabled = [c for c in mine.values() if c.get("enabled_by_default", True)]
            self.assertGreater(len(enabled), 10)
            self.assertLessEqual(len(enabled), 60)
            for config in mine.values():
                self.assertEqual(config["state_topic"], f"energy/growatt/{serial}")
                key = re.search(r"\['values'\]\[[\"'](\w+)", config["value_template"])[1]
                self.assertIn(key, record.values)
            [(payload, _)] = subscriber.on(f"energy/growatt/{serial}")
            self.assertEqual(_json(payload)["values"]["pvpowerin"], record.values["pvpowerin"])
        power = configs[f"homeassistant/sensor/grott_{serials[0]}/pvpowerin/config"]
        self.assertEqual(power["device"]["model"], "Classic (S / MTL-S / TL3-S)")
        self.assertEqual([a["topic"] for a in power["availability"]],
                         ["energy/growatt/availability",
                          f"energy/growatt/{pairs[0][1].datalogger_serial}/availability"])
        # The shared Grott-compatible topic still carries every record.
        self.assertEqual(len(subscriber.on("energy/growatt")), 2)
        # grott and the dataloggers are devices too.
        self.assertIn("homeassistant/binary_sensor/grott_proxy_energy_growatt/cloud/config",
                      configs)
        self.assertIn(f"homeassistant/binary_sensor/grott_dl_{pairs[1][1].datalogger_serial}"
                      "/connected/config", configs)

        # Same records again: states, no second round of discovery.
        count = len(configs)
        for packet, record in pairs:
            host.deliver(packet, record)
        await subscriber.wait_for(lambda m: all(len(subscriber.on(f"energy/growatt/{s}")) == 2
                                                for s in serials))
        self.assertEqual(sum(1 for t, p, _ in subscriber.messages
                             if t.startswith("homeassistant/") and p), count)
        # Configs and live states are retained for a Home Assistant that starts later.
        late = self.subscribe(["homeassistant/#", "energy/growatt/+"])
        await late.wait_for(_count("homeassistant/", count))
        await late.wait_for(lambda m: all(late.on(f"energy/growatt/{s}") for s in serials))
        self.assertTrue(all(retain for _, _, retain in late.messages))
        # A clean stop marks grott and every datalogger it knew offline.
        await host.stopService()
        topics = [f"energy/growatt/{r.datalogger_serial}/availability" for _, r in pairs]
        after = self.subscribe(topics + ["energy/growatt/availability"])
        await after.wait_for(lambda m: len(m) == 3)
        self.assertEqual({payload for _, payload, _ in after.messages}, {b"offline"})

    def test_buffered_and_held_stay_off_the_live_topic(self):
        return defer.Deferred.fromCoroutine(self._buffered_held())

    async def _buffered_held(self):
        subscriber = self.subscribe(["energy/#"])
        await subscriber.subscribed
        host = self.host(discovery=True)
        self.start(host)
        packet, record = packet_and_record("grott-p6-0104-classic")
        serial = record.inverter_serial
        total = record.values["pvenergytotal"]
        buffered = dataclasses.replace(record, buffered=True, record_type=0x50)
        lower = dataclasses.replace(record, values=types.MappingProxyType(
            dict(record.values, pvenergytotal=total - 50)))
        for item in (record, buffered, lower):
            host.deliver(packet, item)
        await subscriber.wait_for(lambda m: subscriber.on(f"energy/growatt/{serial}/held"))
        await subscriber.wait_for(lambda m: subscriber.on(f"energy/growatt/{serial}/buffered"))
        live = subscriber.on(f"energy/growatt/{serial}")
        self.assertEqual([_json(p)["values"]["pvenergytotal"] for p, _ in live], [total])
        [(held, _)] = subscriber.on(f"energy/growatt/{serial}/held")
        self.assertEqual(_json(held)["held"], "decrease")
        [(replay, _)] = subscriber.on(f"energy/growatt/{serial}/buffered")
        self.assertIs(_json(replay)["buffered"], True)
        plugin = host.runners[0].plugin
        self.assertEqual(plugin.counts["held_decrease"], 1)
        self.assertIn("decrease=1", plugin.reportLines()[0])

        # A burst of records with an impossible time: all held, one log line.
        events = EventLoggingObserver.createWithCleanup(self, logs.publisher)
        future = dataclasses.replace(record, timestamp="2099-01-01T00:00:00")
        for _ in range(5):
            host.deliver(packet, future)
        await subscriber.wait_for(
            lambda m: len(subscriber.on(f"energy/growatt/{serial}/held")) == 6)
        self.assertEqual(plugin.counts["held_timestamp"], 5)
        self.assertEqual(len(subscriber.on(f"energy/growatt/{serial}")), 1)
        held_lines = [e for e in events if "held a record" in e.get("log_format", "")]
        self.assertEqual(len(held_lines), 1)

    def test_publish_fires_when_the_broker_has_the_record(self):
        return defer.Deferred.fromCoroutine(self._publish_seam())

    async def _publish_seam(self):
        host = self.host(serial_in_topic=True, retain=True)
        self.start(host)
        plugin = host.runners[0].plugin
        await until(reactor, lambda: plugin.connected, "the connection to the broker")
        _, record = packet_and_record()
        await plugin.publish(record)
        self.assertEqual(plugin.outstanding, 0)
        # Acknowledged means on the broker, retained: a subscriber that
        # comes afterwards gets it.
        late = self.subscribe([f"energy/growatt/{record.inverter_serial}"])
        await late.wait_for(lambda m: m)

    def test_inverters_behind_one_datalogger(self):
        return defer.Deferred.fromCoroutine(self._one_datalogger())

    async def _one_datalogger(self):
        """
        Two device addresses of one datalogger are two devices; a third
        serial at a known address within the session is held back.
        """
        subscriber = self.subscribe(["homeassistant/#", "energy/#"])
        await subscriber.subscribed
        host = self.host(discovery=True)
        self.start(host)
        packet, record = packet_and_record("grott-p6-0104-classic")
        second = dataclasses.replace(record, inverter_serial="SECOND0001", device_address=2)
        swapped = dataclasses.replace(record, inverter_serial="SWAPPED001")
        for item in (record, second, swapped):
            host.deliver(packet, item)
        await subscriber.wait_for(lambda m: subscriber.on("energy/growatt/SWAPPED001/held"))
        await subscriber.wait_for(lambda m: subscriber.on("energy/growatt/SECOND0001"))
        devices = {}
        for topic, payload, _ in subscriber.messages:
            if topic.startswith("homeassistant/sensor/") and payload:
                device = _json(payload)["device"]
                if device["name"] != "grott proxy":
                    devices[device["identifiers"][0]] = device["via_device"]
        self.assertEqual(devices, {f"grott_{record.inverter_serial}":
                                   f"grott_dl_{record.datalogger_serial}",
                                   "grott_SECOND0001": f"grott_dl_{record.datalogger_serial}"})
        self.assertEqual(subscriber.on("energy/growatt/SWAPPED001"), [])
        self.assertEqual(host.runners[0].plugin.counts["held_serial_changed"], 1)

    def test_stale_configs_of_older_versions_are_removed(self):
        return defer.Deferred.fromCoroutine(self._stale())

    async def _stale(self):
        packet, record = packet_and_record("grott-p6-0104-classic")
        serial = record.inverter_serial
        old = f"homeassistant/sensor/grott_{serial}/reg_67/config"
        other = "homeassistant/sensor/grott_SOMEONEELSE/pvpowerin/config"
        kept = f"homeassistant/sensor/grott_{serial}/pvpowerin/config"
        setup = self.subscribe([old, other])
        await setup.subscribed
        for topic in (old, other, kept):
            setup.client.publish(topic, b'{"name": "old"}', qos=1, retain=True)
        await setup.wait_for(lambda m: len(m) == 2)
        host = self.host(discovery=True)
        self.start(host)
        host.deliver(packet, record)
        plugin = host.runners[0].plugin
        await setup.wait_for(lambda m: (old, b"", False) in m)
        self.assertEqual(plugin.counts["stale_configs_removed"], 1)
        late = self.subscribe([old, other, kept])
        await late.wait_for(lambda m: late.on(kept) and late.on(other))
        self.assertEqual(late.on(old), [])
        self.assertEqual(late.on(other), [(b'{"name": "old"}', True)])
        self.assertEqual(_json(late.on(kept)[0][0])["name"], "PV power")

    def test_birth_message_republishes(self):
        return defer.Deferred.fromCoroutine(self._birth())

    async def _birth(self):
        subscriber = self.subscribe(["homeassistant/sensor/#", "energy/growatt/+"])
        await subscriber.subscribed
        host = self.host(discovery=True)
        self.start(host)
        packet, record = packet_and_record("grott-p6-0104-classic")
        serial = record.inverter_serial
        host.deliver(packet, record)
        await subscriber.wait_for(lambda m: subscriber.on(f"energy/growatt/{serial}"))
        count = sum(1 for t, _, _ in subscriber.messages
                    if t.startswith(f"homeassistant/sensor/grott_{serial}/"))
        subscriber.client.publish("homeassistant/status", "online", qos=1)
        await subscriber.wait_for(lambda m: len(subscriber.on(f"energy/growatt/{serial}")) == 2)
        await subscriber.wait_for(_count(f"homeassistant/sensor/grott_{serial}/", 2 * count))

    def test_full_load_drops_nothing(self):
        return defer.Deferred.fromCoroutine(self._full_load())

    test_full_load_drops_nothing.timeout = 120

    async def _full_load(self):
        """
        Records arrive as fast as the plugin host hands them over, in bursts
        of half the queue: the pipelined output never lets the queue fill.
        """
        subscriber = self.subscribe(["energy/growatt"])
        await subscriber.subscribed
        host = self.host(qos=1)
        self.start(host)
        plugin = host.runners[0].plugin
        await until(reactor, lambda: plugin.connected, "the connection to the broker")
        # No round trip per record: data() hands over and returns at once.
        packet, record = packet_and_record()
        self.assertIsNone(plugin.data(packet, record, plugin.log))
        total, burst = 6000, 500
        pairs = numbered(total)
        for start in range(0, total, burst):
            for packet, record in pairs[start:start + burst]:
                host.deliver(packet, record)
            await until(reactor, lambda: host.stats()[0]["queued"] <= burst,
                        "the plugin queue to take the next burst", interval=0)
        await subscriber.wait_for(lambda m: len(m) >= total + 1)
        stats = host.stats()[0]
        self.assertEqual(stats["dropped"], 0)
        seqs = [_json(p)["values"].get("seq") for p, _ in subscriber.on("energy/growatt")]
        seqs.remove(None)
        self.assertEqual(sorted(seqs), list(range(total)))
        await host.stopService()
        self.assertEqual(host.runners[0].plugin.outstanding, 0)


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
        # Records handed to the client before it notices are resent by it
        # (QoS 1); these wait for it in the plugin queue.
        plugin = host.runners[0].plugin
        await until(reactor, lambda: not plugin.connected, "the output to notice the outage")
        for packet, record in pairs[3:]:
            host.deliver(packet, record)

        def waiting():
            stats = host.stats()[0]
            return stats["queued"] + (stats["busy_seconds"] is not None)

        await until(reactor, lambda: waiting() == 5, "the 5 records to wait for the broker")
        stats = host.stats()[0]
        self.assertEqual(stats["delivered"], 3)
        self.assertEqual(stats["queued"] + (stats["busy_seconds"] is not None), 5)
        self.assertEqual(stats["dropped"], 0)

        await self.broker.start()
        await subscriber.wait_for(lambda m: seqs() == set(range(8)))
        await until(reactor, lambda: host.stats()[0]["delivered"] >= 8, "8 records delivered")
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
        plugin = host.runners[0].plugin
        await until(reactor, lambda: plugin.counts["connect_failures"] >= 3,
                    "several failed connection attempts")
        unreachable = [e for e in events if "cannot reach" in e["log_format"]]
        self.assertEqual(len(unreachable), 1)
        await self.broker.start()
        # Delivered means acknowledged by the broker (QoS 1).
        await until(reactor, lambda: host.stats()[0]["delivered"] >= 3, "3 records delivered")
        self.assertEqual(host.stats()[0]["failed"], 0)

    def test_broker_down_at_start(self):
        return defer.Deferred.fromCoroutine(self._late_broker())

    async def _back_soon(self):
        """
        With the shipped reconnect settings, after an outage long enough
        for the backoff to reach its cap, grott is back within about one
        capped delay of the broker's return, not minutes later.
        """
        defaults = MqttConfig()
        host = self.host(reconnect_min=defaults.reconnect_min,
                         reconnect_max=defaults.reconnect_max)
        self.start(host)
        plugin = host.runners[0].plugin
        await until(reactor, lambda: plugin.connected, "the connection to the broker")
        await self.broker.stop()
        # 1 + 2 + 4 + 5 s of failed attempts: the backoff is at its cap.
        await until(reactor, lambda: plugin.counts["connect_failures"] >= 4,
                    "4 failed connection attempts", seconds=30, interval=0.1)
        await self.broker.start()
        back = reactor.seconds()
        await until(reactor, lambda: plugin.connected, "the connection after the outage",
                    seconds=30, interval=0.05)
        self.assertLess(reactor.seconds() - back, defaults.reconnect_max + 3)
        packet, record = packet_and_record()
        host.deliver(packet, record)
        await until(reactor, lambda: host.stats()[0]["delivered"] >= 1, "the record delivered")

    def test_reconnects_soon_after_a_long_outage(self):
        return defer.Deferred.fromCoroutine(self._back_soon())

    test_reconnects_soon_after_a_long_outage.timeout = 60


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
        plugin = host.runners[0].plugin
        await until(reactor, lambda: plugin.counts["connect_refused"] >= 3,
                    "several refused connection attempts")
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
