"""
The control plane over MQTT against a real mosquitto: simulated
dataloggers behind grott's proxy, the fake cloud, the mqtt output's
connection carrying grott's side, and an MQTT 5 client asking.  The
dispatcher's timeouts run on a Clock, so a timeout needs no waiting.
"""

import json

from paho.mqtt import client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from twisted.internet import defer, reactor
from twisted.internet.testing import EventLoggingObserver
from twisted.trial.unittest import SynchronousTestCase, TestCase

from grott import logs
from grott.config import ConfigError, config_from_string
from grott.mqttcontrol import BadRequest, MqttControl, parse_request
from grott.outputs.mqttspool import mqtt_output
from grott.pluginhost import PluginHost
from grott.service import makeService
from grott.testing.simulator import DataloggerFactory, DataloggerSpec
from tests import mosquitto
from tests.pluginhelpers import make_config
from tests.test_commands_loopback import TIMEOUT, HoldingFactory, _endpoint
from tests.test_control_loopback import ControlLoopbackBase


class Requester(mosquitto.Subscriber):
    """
    A user's MQTT client: publishes requests (MQTT 5, optionally with a
    response topic and correlation data) and collects every message on the
    topics it subscribed to as (topic, payload, retain, properties).
    """

    def __init__(self, port, topics, v5=True):
        self.messages = []
        self._waiters = []
        self.subscribed = defer.Deferred()
        self.v5 = v5
        self.topics = topics
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                                  protocol=paho.MQTTv5 if v5 else paho.MQTTv311)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: reactor.callFromThread(self._suback)
        self.client.on_message = lambda c, u, m: reactor.callFromThread(
            self._got, m.topic, m.payload, m.retain, getattr(m, "properties", None))
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def send(self, topic, payload, response_topic=None, correlation=None, retain=False):
        properties = None
        if self.v5 and (response_topic or correlation):
            properties = Properties(PacketTypes.PUBLISH)
            if response_topic:
                properties.ResponseTopic = response_topic
            if correlation is not None:
                properties.CorrelationData = correlation
        if not isinstance(payload, bytes):
            payload = json.dumps(payload)
        self.client.publish(topic, payload, qos=1, properties=properties, retain=retain)

    def replies(self, topic):
        return [json.loads(payload) for t, payload, _, _ in self.messages if t == topic]

    async def ask(self, serial, request, prefix="grott"):
        """Send C{request}; its reply (matched on id) on the reply topic."""
        topic = f"{prefix}/{serial}/reply"

        def answered(messages):
            return any(r.get("id") == request["id"] for r in self.replies(topic))
        self.send(f"{prefix}/{serial}/request", request)
        await self.wait_for(answered)
        return [r for r in self.replies(topic) if r.get("id") == request["id"]][-1]



class ParseTests(SynchronousTestCase):
    def test_requests(self):
        r = parse_request(b'{"id": "a", "op": "write", "register": 1080, "values": [1, 2]}')
        self.assertEqual((r.id, r.op, r.args), ("a", "write", (1080, [1, 2])))
        self.assertEqual(parse_request(b'{"id": 7, "op": "read", "register": 3}').args, (3, 1))
        self.assertEqual(parse_request(b'{"op": "dwrite", "register": 4, "value": 1}').args,
                         (4, "1"))
        for payload, request_id, error in [
            (b'{"id": "x1", "op": "read", "register": }', "x1", "bad JSON"),
            (b'{"op": "read", "register": 3', None, "bad JSON"),
            (b"\xff\xfe", None, "not UTF-8"),
            (b'[1, 2]', None, "must be a JSON object"),
            (b'{"id": "b", "op": "erase"}', "b", "unknown op 'erase'"),
            (b'{"id": "c", "op": "read"}', "c", "missing 'register'"),
            (b'{"id": "d", "op": "read", "register": "3"}', "d", "must be a whole number"),
            (b'{"id": "e", "op": "write", "register": 3, "values": []}', "e", "'values'"),
            (b'{"id": "f", "op": "set", "setting": "on_off"}', "f", "missing 'value'"),
            (b'{"id": true, "op": "get"}', None, "missing 'setting'"),
            (b"x" * 9000, None, "longer than"),
        ]:
            with self.assertRaises(BadRequest) as caught:
                parse_request(payload)
            self.assertEqual(caught.exception.id, request_id, payload)
            self.assertIn(error, str(caught.exception), payload)

    def test_configNeedsTheMqttOutput(self):
        with self.assertRaises(ConfigError) as caught:
            config_from_string("control:\n  mqtt: true\n", "c.yaml")
        self.assertEqual(str(caught.exception), "c.yaml: control.mqtt: needs outputs.mqtt "
                                                 "(the broker connection it uses) (line 2)")
        with self.assertRaises(ConfigError) as caught:
            config_from_string("control:\n  topic_prefix: a/+\n", "c.yaml")
        self.assertIn("c.yaml: control.topic_prefix: must not contain the wildcards",
                      str(caught.exception))


class MqttControlBase(ControlLoopbackBase):
    skip = mosquitto.SKIP
    protocol = "5"
    timeout = 30
    topics = ("grott/#", "me/replies")

    async def setUp(self):
        await ControlLoopbackBase.setUp(self)
        self.broker = mosquitto.Broker(self.mktemp())
        self.addCleanup(self.broker.stop)
        await self.broker.start()
        config = make_config(self.mktemp(), outputs={"mqtt": {
            "port": self.broker.port, "reconnect_min": 0.1, "reconnect_max": 0.3,
            "protocol": self.protocol, "client_id": "grott-test"}})
        self.host = PluginHost(config, reactor)
        mqtt = mqtt_output(self.host.runners[0].plugin)
        self.mqttControl = MqttControl(self.control, mqtt, self.registry, prefix="grott",
                                       instance_id="test-instance")
        self.user = Requester(self.broker.port, self.topics, v5=self.protocol == "5")
        self.addCleanup(self.user.stop)
        await self.user.subscribed
        await self.beforeGrott()
        self.host.startService()
        self.mqttControl.startService()
        self.addCleanup(self.host.stopService)
        self.addCleanup(lambda: self.mqttControl.running and self.mqttControl.stopService())

    async def beforeGrott(self):
        """Runs once the user's client is subscribed, before grott connects."""

    async def online(self, serial, **kw):
        """A datalogger, once its retained status says online (grott subscribed by then)."""
        logger = await self.datalogger(serial, **kw)
        topic = f"grott/{serial}/status"
        await self.user.wait_for(lambda messages: any(
            t == topic and json.loads(p)["status"] == "online" for t, p, _, _ in messages))
        return logger

    def assertOneReplyEach(self, serial):
        ids = [r["id"] for r in self.user.replies(f"grott/{serial}/reply")]
        self.assertEqual(len(ids), len(set(ids)), ids)


class OpsTests(MqttControlBase):
    async def test_everyOp(self):
        logger = await self.online("SIMS000001", family="storage")
        holding = logger.state.inverter.holding
        ask = self.user.ask
        self.assertEqual(await ask("SIMS000001", {"id": "r1", "op": "read", "register": 1090,
                                                  "count": 2}),
                         {"id": "r1", "ok": True, "registers": {"1090": 100, "1091": 100}})
        self.assertEqual(await ask("SIMS000001", {"id": "w1", "op": "write", "register": 3,
                                                  "value": 80, "client": "ha-1"}),
                         {"id": "w1", "ok": True, "registers": {"3": 80}})
        self.assertEqual(holding[3], 80)
        self.assertEqual(await ask("SIMS000001", {"id": "w2", "op": "write", "register": 1080,
                                                  "values": [0x0600, 0x0800, 1]}),
                         {"id": "w2", "ok": True,
                          "registers": {"1080": 0x0600, "1081": 0x0800, "1082": 1}})
        self.assertEqual(logger.state.stats.commands["inverter_write_multi"], 1)
        self.assertEqual(await ask("SIMS000001", {"id": "d1", "op": "dread", "register": 8}),
                         {"id": "d1", "ok": True, "registers": {"8": "SIMS000001"}})
        self.assertEqual(await ask("SIMS000001", {"id": "d2", "op": "dwrite", "register": 4,
                                                  "value": "1"}),
                         {"id": "d2", "ok": True, "registers": {"4": "1"}})
        self.assertEqual(logger.state.interval, 60)
        self.assertEqual(await ask("SIMS000001", {"id": "s1", "op": "set",
                                                  "setting": "battery_first_slot_1",
                                                  "value": {"start": "01:00", "end": "05:30"}}),
                         {"id": "s1", "ok": True, "setting": "battery_first_slot_1",
                          "value": "01:00-05:30 on",
                          "registers": {"1100": 256, "1101": 1310, "1102": 1}})
        self.assertEqual(await ask("SIMS000001", {"id": 9, "op": "get",
                                                  "setting": "active_power_rate"}),
                         {"id": 9, "ok": True, "setting": "active_power_rate", "value": 80,
                          "registers": {"3": 80}})
        self.assertOneReplyEach("SIMS000001")
        self.assertTrue(any("control: mqtt client ha-1 via grott/SIMS000001/request on "
                            "SIMS000001: register 3 := 80: 100 -> 80: ok" in line
                            for line in self.audit()), self.audit())
        self.assertIn("  control mqtt: requests=7 replies=7 errors=0 not_held=0",
                      self.mqttControl.report_lines())
        # The dispatcher's metrics count them as asked through MQTT.
        outcomes = self.dispatcher.outcomes
        self.assertEqual((outcomes[("mqtt", "mset", "ok")], outcomes[("mqtt", "set", "ok")],
                          outcomes[("mqtt", "dset", "ok")]), (2, 1, 1))
        self.assertEqual(sum(n for (via, _, _), n in outcomes.items() if via != "mqtt"), 0)
        await self.roundTrip(logger)
        self.assertCloudSawNoReplies()

    async def test_errorReplies(self):
        logger = await self.online("SIMA000001", family="min", factory=HoldingFactory)
        logger.hold = False
        before = self.settable(logger)
        ask = self.user.ask
        cases = [
            ("NOTHERE001", {"id": "e1", "op": "read", "register": 3},
             "datalogger NOTHERE001 is not connected"),
            ("SIMA000001", {"id": "e2", "op": "write", "register": 30, "value": 5},
             "register 30 is not writable for family tlx"),
            ("SIMA000001", {"id": "e3", "op": "write", "register": 122, "values": [1, 2, 3]},
             "register 124 is not writable"),
            ("SIMA000001", {"id": "e4", "op": "dwrite", "register": 17, "value": "evil"},
             "(server address) is protected"),
            ("SIMA000001", {"id": "e5", "op": "set", "setting": "active_power_rate",
                            "value": 150}, "outside 0..100 %"),
            ("SIMA000001", {"id": "e6", "op": "set", "setting": "grid_first_slot_1",
                            "value": "01:00-02:00"}, "no setting 'grid_first_slot_1'"),
            ("SIMA000001", {"id": "e7", "op": "read", "register": 500},
             "the inverter could not read registers 500..500"),
            ("SIMA000001", {"id": "e8", "op": "explode"}, "unknown op"),
        ]
        for serial, request, error in cases:
            reply = await ask(serial, request)
            self.assertEqual(set(reply), {"id", "ok", "error"}, reply)
            self.assertFalse(reply["ok"])
            self.assertIn(error, reply["error"], request)
        # Not JSON, but the id can still be read; and one with no id at all.
        self.user.send("grott/SIMA000001/request", b'{"id": "e9", "op": read}')
        self.user.send("grott/SIMA000001/request", b"\x00garbage")
        topic = "grott/SIMA000001/reply"
        await self.user.wait_for(lambda m: len(self.user.replies(topic)) == len(cases) + 1)
        replies = self.user.replies(topic)
        self.assertEqual(replies[-2]["id"], "e9")
        self.assertTrue(replies[-2]["error"].startswith("bad JSON"), replies[-2])
        self.assertIsNone(replies[-1]["id"])
        # A timeout is an error reply too, and the late answer stays with grott.
        logger.hold = True
        self.user.send("grott/SIMA000001/request",
                       {"id": "e10", "op": "read", "register": 3})
        await logger.whenHeld(1)
        self.clock.advance(TIMEOUT)
        await self.user.wait_for(lambda m: any(r["id"] == "e10" for r in self.user.replies(topic)))
        reply = self.user.replies(topic)[-1]
        self.assertEqual(reply["id"], "e10")
        self.assertTrue(reply["error"].startswith("timeout: datalogger SIMA000001 did not answer"))
        logger.hold = False
        logger.release()
        await self.roundTrip(logger)
        self.assertEqual(self.dispatcher.counts["late_replies"], 1)
        # Refused writes changed nothing in the inverter.
        self.assertEqual(self.settable(logger), before)
        self.assertEqual(logger.state.stats.commands["inverter_write"], 0)
        self.assertEqual(logger.state.stats.commands["config_set"], 0)
        self.assertOneReplyEach("SIMA000001")
        self.assertEqual(len(self.user.replies("grott/NOTHERE001/reply")), 1)
        self.assertCloudSawNoReplies()

    async def test_mqtt5ResponseTopicAndCorrelation(self):
        logger = await self.online("SIMA000001", family="min")
        self.user.send("grott/SIMA000001/request",
                       {"id": "c1", "op": "set", "setting": "export_limit_rate", "value": 45.5},
                       response_topic="me/replies", correlation=b"\x01corr")
        self.user.send("grott/SIMA000001/request", b"not json",
                       response_topic="me/replies", correlation=b"\x02bad")
        mine = await self.user.wait_for(
            lambda m: sum(1 for t, _, _, _ in m if t == "me/replies") == 2)
        direct = [(json.loads(p), props.CorrelationData) for t, p, _, props in mine
                  if t == "me/replies"]
        direct.sort(key=lambda pair: pair[1])
        self.assertEqual(direct[0], ({"id": "c1", "ok": True, "setting": "export_limit_rate",
                                      "value": 45.5, "registers": {"123": 455}}, b"\x01corr"))
        self.assertEqual(direct[1][1], b"\x02bad")
        self.assertFalse(direct[1][0]["ok"])
        self.assertEqual(logger.state.inverter.holding[123], 455)
        # ... and each also once on the reply topic.
        await self.user.wait_for(lambda m: len(self.user.replies("grott/SIMA000001/reply")) == 2)
        self.assertEqual(sum(1 for t, _, _, _ in self.user.messages if t == "me/replies"), 2)

    async def test_retainedStatus(self):
        logger = await self.online("SIMA000001", family="min")
        status = [json.loads(p) for t, p, _, _ in self.user.messages
                  if t == "grott/SIMA000001/status"]
        self.assertEqual(status[-1], {"status": "online", "datalogger": "SIMA000001",
                                      "inverter": "IVMA000001", "protocol": 6,
                                      "instance": "test-instance"})
        # A client that comes later gets it retained.
        late = Requester(self.broker.port, ["grott/+/status"])
        self.addCleanup(late.stop)
        await late.wait_for(lambda m: m and m[0][2] and json.loads(m[0][1])["status"] == "online")
        await logger.disconnect()
        await self.user.wait_for(lambda m: any(
            t == "grott/SIMA000001/status" and json.loads(p)["status"] == "offline"
            for t, p, _, _ in m))


class RetainedRequestTests(MqttControlBase):
    async def beforeGrott(self):
        self.user.send("grott/SIMA000001/request",
                       {"id": "old", "op": "write", "register": 3, "value": 1}, retain=True)
        self.user.send("grott/SIMA000001/setting/active_power_rate/set", b"1", retain=True)
        # Both are stored once they come back to the user's own subscription.
        await self.user.wait_for(lambda m: len([x for x in m if x[0].startswith(
            "grott/SIMA000001/")]) == 2)

    async def test_retainedRequestIsNotCarriedOut(self):
        logger = await self.online("SIMA000001", family="min")
        topic = "grott/SIMA000001/reply"
        await self.user.wait_for(lambda m: self.user.replies(topic))
        self.assertEqual(self.user.replies(topic), [{
            "id": "old", "ok": False,
            "error": "retained request ignored (publish requests without the retain flag)"}])
        self.assertEqual(logger.state.inverter.holding[3], 100)
        self.assertEqual(logger.state.stats.commands["inverter_write"], 0)


class Mqtt311Tests(MqttControlBase):
    protocol = "3.1.1"

    async def test_requestsWithoutProperties(self):
        logger = await self.online("SIMA000001", family="min")
        reply = await self.user.ask("SIMA000001", {"id": "p", "op": "set", "setting": "on_off",
                                                   "value": "off"})
        self.assertEqual(reply, {"id": "p", "ok": True, "setting": "on_off", "value": "off",
                                 "registers": {"0": 0}})
        self.assertEqual(logger.state.inverter.holding[0], 0)


class ServiceWiringTests(TestCase):
    skip = mosquitto.SKIP
    timeout = 30

    async def test_makeServiceAnswersMqttRequests(self):
        broker = mosquitto.Broker(self.mktemp())
        self.addCleanup(broker.stop)
        await broker.start()
        config = config_from_string(
            "proxy:\n  listen: tcp:0:interface=127.0.0.1\n  upstream: none\n"
            "command:\n  listen: none\nmetrics:\n  listen: none\n"
            f"plugins:\n  directory: {self.mktemp()}\n"
            f"outputs:\n  mqtt:\n    port: {broker.port}\n    reconnect_min: 0.1\n"
            "control:\n  mqtt: true\n  topic_prefix: site/a\ninstance:\n  id: roof\n")
        user = Requester(broker.port, ["site/a/#"], v5=False)
        self.addCleanup(user.stop)
        await user.subscribed
        top = makeService(config, reactor)
        top.privilegedStartService()
        top.startService()
        self.addCleanup(top.stopService)
        proxyPort = top.getServiceNamed("proxy").getServiceNamed("listener")._waitingForPort.result
        logger = DataloggerFactory(DataloggerSpec(serial="SIMW000001", interval=3600,
                                                  ping_interval=0), reactor)
        logger.connect(_endpoint(proxyPort))
        self.addCleanup(logger.disconnect)
        await user.wait_for(lambda m: any(t == "site/a/SIMW000001/status" for t, *_ in m))
        reply = await user.ask("SIMW000001", {"id": "1", "op": "set",
                                              "setting": "active_power_rate", "value": 60},
                               prefix="site/a")
        self.assertEqual(reply["registers"], {"3": 60})
        self.assertEqual(logger.state.inverter.holding[3], 60)
        report = "\n".join(top.report())
        self.assertIn("control writes: total=1 ok=1", report)
        self.assertIn("control mqtt: requests=1 replies=1 errors=0", report)
        await top.stopService()
        # Stopping says offline before the connection goes.
        status = [json.loads(p) for t, p, _, _ in user.messages
                  if t == "site/a/SIMW000001/status"]
        self.assertEqual([s["status"] for s in status][-1], "offline")
        self.assertEqual(status[0]["instance"], "roof")

    def test_entitiesOnlyWithDiscovery(self):
        for discovery, expected in ((False, ["control"]), (True, ["control",
                                                                  "control-entities"])):
            config = config_from_string(
                "proxy:\n  listen: tcp:0:interface=127.0.0.1\n  upstream: none\n"
                "metrics:\n  listen: none\n"
                f"plugins:\n  directory: {self.mktemp()}\n"
                f"outputs:\n  mqtt:\n    discovery: {str(discovery).lower()}\n"
                "control:\n  mqtt: true\n  poll_interval: 0\n")
            top = makeService(config, reactor)
            names = [child.name for child in top if child.name.startswith("control")]
            self.assertEqual(names, expected)

    async def test_stopsWithTheBrokerAway(self):
        """Statuses waiting for an unreachable broker do not hold up shutdown."""
        config = config_from_string(
            "proxy:\n  listen: tcp:0:interface=127.0.0.1\n  upstream: none\n"
            "command:\n  listen: none\nmetrics:\n  listen: none\n"
            # The record waiting in the mqtt plugin's queue is not drained.
            f"plugins:\n  directory: {self.mktemp()}\n  stop_timeout: 0\n"
            f"outputs:\n  mqtt:\n    port: {mosquitto.free_port()}\n    reconnect_min: 0.1\n"
            "control:\n  mqtt: true\n")
        events = EventLoggingObserver.createWithCleanup(self, logs.publisher)
        top = makeService(config, reactor)
        top.privilegedStartService()
        top.startService()
        proxyPort = top.getServiceNamed("proxy").getServiceNamed("listener")._waitingForPort.result
        logger = DataloggerFactory(DataloggerSpec(serial="SIMW000002", interval=3600,
                                                  ping_interval=0), reactor)
        logger.connect(_endpoint(proxyPort))
        self.addCleanup(logger.disconnect)
        await logger.state.wait(lambda state: state.stats.acked["announce"] == 1)
        self.assertEqual(list(top.mqttControl._online), ["SIMW000002"])
        await top.stopService()
        self.assertEqual([e for e in events if e.get("log_failure") is not None], [])
        # The output may still be waiting for its connection attempt's
        # thread (stop_timeout 0 does not wait for it), but no timer of its
        # is left in the reactor.
        self.assertEqual([call for call in reactor.getDelayedCalls()
                          if "MqttOutput" in repr(call)], [])
