"""
The mqtt output: each record published as JSON to an MQTT broker, with an
availability topic and, optionally, Home Assistant discovery.

The client is paho-mqtt (Eclipse), run the way it is designed to run: its
own network thread (C{loop_start}) owns the socket, the keepalive, TLS and
reconnection with backoff.  Everything else happens on the reactor thread:
paho's callbacks only hop over with C{reactor.callFromThread}, and
C{publish} (thread-safe in paho) is called from the reactor.

A record's delivery (the Deferred C{data} returns) fires when the broker
has it: PUBACK for QoS 1, PUBCOMP for QoS 2, written to the socket for QoS
0.  While the broker is away the delivery waits, so records pile up in the
plugin host's bounded queue for this plugin and go out, in order, once the
connection is back.  paho resends unacknowledged QoS 1/2 messages itself
after a reconnect; a QoS 0 message caught by a disconnect is sent again.
"""

import threading

from paho.mqtt import client as paho
from twisted.internet import defer
from zope.interface import implementer

from grott.interfaces import IConfigurablePlugin, IGrottPlugin, IGrottPluginService
from grott.logs import Logger
from grott.outputs import hass, jsonenc

__all__ = ["MqttError", "MqttFactory", "MqttOutput", "factory", "record_payload"]

#: Seconds stopService waits for the "offline" message and the disconnect.
_GOODBYE_TIMEOUT = 3.0


class MqttError(Exception):
    """
    The client refused a publish (not a connection problem: those wait).
    """


def record_payload(record):
    """
    The JSON document published for a record.
    """
    return {
        "device": record.inverter_serial or record.datalogger_serial,
        "datalogger": record.datalogger_serial,
        "inverter": record.inverter_serial,
        "time": record.timestamp,
        "buffered": record.buffered,
        "record_type": record.record_type,
        "family": record.family,
        "device_type_code": record.device_type_code,
        "values": dict(record.values),
    }


def make_client(settings, availability_topic):
    """
    A configured paho client, not yet connected.
    """
    v5 = settings.protocol == "5"
    kwargs = {"callback_api_version": paho.CallbackAPIVersion.VERSION2,
              "client_id": settings.client_id,
              "protocol": paho.MQTTv5 if v5 else paho.MQTTv311}
    if not v5:
        kwargs["clean_session"] = True
    client = paho.Client(**kwargs)
    if settings.username:
        client.username_pw_set(settings.username, settings.password or None)
    if settings.tls:
        client.tls_set(ca_certs=settings.ca_certs or None, certfile=settings.certfile or None,
                       keyfile=settings.keyfile or None)
        if settings.tls_insecure:
            client.tls_insecure_set(True)
    client.will_set(availability_topic, "offline", qos=1, retain=True)
    client.reconnect_delay_set(settings.reconnect_min,
                               max(settings.reconnect_min, settings.reconnect_max))
    return client


@implementer(IGrottPlugin, IGrottPluginService)
class MqttOutput:
    """
    Publishes records to the broker in C{settings} (a L{grott.config.MqttConfig}).
    """

    name = "mqtt"
    log = Logger()

    def __init__(self, settings, reactor, client=None):
        self.settings = settings
        self.reactor = reactor
        self.availability_topic = settings.availability_topic or f"{settings.topic}/availability"
        self.broker = f"{settings.host}:{settings.port}"
        self.client = client if client is not None else make_client(
            settings, self.availability_topic)
        self.client.on_connect = self._thread_on_connect
        self.client.on_connect_fail = self._thread_on_connect_fail
        self.client.on_disconnect = self._thread_on_disconnect
        self.client.on_publish = self._thread_on_publish
        self.connected = False
        self._ever_connected = False
        self._stopping = False
        self._trouble = None
        self._waiters = []
        self._pending = {}
        self._announced = {}
        self._shared_topic_warned = False
        self._disconnected = None
        #: topic filter -> qos, renewed on every connect (see subscribe)
        self._subscriptions = {}

    # -- paho's thread: hop to the reactor, nothing else

    def _thread_on_connect(self, client, userdata, flags, reason_code, properties):
        self.reactor.callFromThread(self._on_connect, reason_code.is_failure, str(reason_code))

    def _thread_on_connect_fail(self, client, userdata):
        self.reactor.callFromThread(self._on_connect_fail)

    def _thread_on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.reactor.callFromThread(self._on_disconnect, str(reason_code))

    def _thread_on_publish(self, client, userdata, mid, reason_code, properties):
        self.reactor.callFromThread(self._on_publish, mid, reason_code.is_failure,
                                    str(reason_code))

    # -- connection state, on the reactor thread

    def _on_connect(self, failed, reason):
        if failed:
            self._report("refused", "MQTT broker {broker} refused the connection: {reason}",
                         reason=reason)
            return
        self.connected = True
        if self._trouble is not None:
            self.log.info("MQTT: connected to {broker} again; sending queued records",
                          broker=self.broker)
        else:
            self.log.info("MQTT: connected to {broker}", broker=self.broker)
        self._trouble = None
        if self._ever_connected:
            # Retained discovery configs may have gone with a restarted broker.
            self._announced.clear()
        self._ever_connected = True
        self.client.publish(self.availability_topic, "online", qos=1, retain=True)
        for topic, qos in self._subscriptions.items():
            self.client.subscribe(topic, qos)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _on_connect_fail(self):
        self._report("unreachable", "MQTT: cannot reach broker {broker}; retrying (records "
                     "wait in the plugin queue)")

    def _on_disconnect(self, reason):
        was_connected, self.connected = self.connected, False
        if self._disconnected is not None:
            self._disconnected.callback(None)
            self._disconnected = None
        if was_connected and not self._stopping:
            self._report("lost", "MQTT: lost the connection to {broker} ({reason}); "
                         "reconnecting (records wait in the plugin queue)", reason=reason)
        # QoS 0 messages have no retry of their own: send them again.
        for mid, (d, qos) in list(self._pending.items()):
            if qos == 0:
                del self._pending[mid]
                d.callback(False)

    def _on_publish(self, mid, failed, reason):
        entry = self._pending.pop(mid, None)
        if entry is None:
            return
        if failed:
            entry[0].errback(MqttError(f"the broker rejected a message: {reason}"))
        else:
            entry[0].callback(True)

    def _report(self, trouble, message, **fields):
        """
        Log a connection problem once, not on every retry.
        """
        if trouble != self._trouble:
            self._trouble = trouble
            self.log.warn(message, broker=self.broker, **fields)  # noqa: G010

    # -- publishing

    def _when_connected(self):
        # Stopping empties the list before cancelling what waits.
        d = defer.Deferred(lambda d: self._waiters.remove(d) if d in self._waiters else None)
        self._waiters.append(d)
        return d

    def _publish(self, topic, payload, qos, retain, properties=None):
        """
        A Deferred firing True once the broker has the message, or False if
        it must be sent again.
        """
        info = self.client.publish(topic, payload, qos=qos, retain=retain,
                                   properties=properties)
        if info.rc == paho.MQTT_ERR_NO_CONN and qos == 0:
            self.connected = False
            return defer.succeed(False)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            raise MqttError(f"cannot publish to {topic}: {paho.error_string(info.rc)}")
        mid = info.mid
        d = defer.Deferred(lambda d: self._pending.pop(mid, None))
        self._pending[mid] = (d, qos)
        return d

    async def _send(self, messages):
        todo = messages
        while todo:
            if not self.connected:
                await self._when_connected()
            sent = await defer.gatherResults([self._publish(*m) for m in todo])
            todo = [m for m, ok in zip(todo, sent) if not ok]

    def state_topic(self, serial):
        if self.settings.serial_in_topic:
            return f"{self.settings.topic}/{serial}"
        return self.settings.topic

    def data(self, packet, record, log):
        settings = self.settings
        serial = record.inverter_serial or record.datalogger_serial or "unknown"
        topic = self.state_topic(serial)
        messages = []
        if settings.discovery:
            messages.extend(self._discovery(record, serial, topic, log))
        messages.append((topic, jsonenc.dumps(record_payload(record)), settings.qos,
                         settings.retain))
        return defer.Deferred.fromCoroutine(self._send(messages))

    def _discovery(self, record, serial, topic, log):
        announced = self._announced.setdefault(serial, set())
        new = hass.discovery_messages(record, serial, topic, self.availability_topic,
                                      self.settings.discovery_prefix, skip=announced)
        announced.update(record.values)
        if (len(self._announced) > 1 and not self.settings.serial_in_topic
                and not self._shared_topic_warned):
            self._shared_topic_warned = True
            log.warn(  # noqa: G010 (twisted.logger has no warning())
                "several inverters publish to {topic}: set outputs.mqtt.serial_in_topic "
                "so Home Assistant keeps their sensors apart", topic=topic)
        qos = max(1, self.settings.qos)
        return [(t, jsonenc.dumps(config), qos, True) for t, config in new]

    # -- for other parts of grott (the control plane's request/reply topics)

    def subscribe(self, topic, callback, qos=1):
        """
        Call C{callback(message)} (a paho C{MQTTMessage}) on the reactor
        thread for every message matching the filter C{topic}.  The
        subscription is renewed on every connect (sessions are clean).
        """
        reactor = self.reactor
        self.client.message_callback_add(
            topic, lambda client, userdata, message: reactor.callFromThread(callback, message))
        self._subscriptions[topic] = qos
        if self.connected:
            self.client.subscribe(topic, qos)

    def publish(self, topic, payload, qos=1, retain=False, properties=None):
        """
        Publish one message, waiting for the connection if it is down.

        @param properties: MQTT 5 properties (paho C{Properties}) or None.
        @return: a Deferred firing once the broker has the message.
        """
        return defer.Deferred.fromCoroutine(
            self._send([(topic, payload, qos, retain, properties)]))

    # -- service hooks

    def startService(self):
        self._stopping = False
        self.log.info("MQTT: connecting to {broker}{auth}{tls}", broker=self.broker,
                      auth=f" as {self.settings.username}" if self.settings.username else "",
                      tls=" over TLS" if self.settings.tls else "")
        self.client.connect_async(self.settings.host, self.settings.port,
                                  self.settings.keepalive)
        self.client.loop_start()

    def stopService(self):
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self):
        self._stopping = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.cancel()
        if self.connected:
            # A clean disconnect does not fire the last will: say it ourselves.
            offline = self._publish(self.availability_topic, "offline", 1, True)
            offline.addTimeout(_GOODBYE_TIMEOUT, self.reactor)
            try:
                await offline
            except defer.TimeoutError:
                pass
            self._disconnected = defer.Deferred()
            gone = self._disconnected
            gone.addTimeout(_GOODBYE_TIMEOUT, self.reactor)
            self.client.disconnect()
            try:
                await gone
            except defer.TimeoutError:
                pass
            self._disconnected = None
        else:
            self.client.disconnect()
        # loop_stop joins paho's thread, which may sit in a connect attempt
        # for a few seconds: join it off the reactor thread.
        await _in_thread(self.reactor, self.client.loop_stop)
        for d, _ in list(self._pending.values()):
            d.cancel()
        self.connected = False
        self.log.info("MQTT: disconnected from {broker}", broker=self.broker)


def _in_thread(reactor, f):
    d = defer.Deferred()

    def run():
        try:
            result = f()
        except BaseException as e:  # noqa: BLE001 - handed to the Deferred
            reactor.callFromThread(d.errback, e)
        else:
            reactor.callFromThread(d.callback, result)

    threading.Thread(target=run, daemon=True, name="grott-mqtt-stop").start()
    return d


@implementer(IConfigurablePlugin)
class MqttFactory:
    """
    Builds L{MqttOutput} from C{outputs.mqtt} (a L{grott.config.MqttConfig}).
    """

    name = "mqtt"

    def makePlugin(self, settings, reactor):
        return MqttOutput(settings, reactor)


factory = MqttFactory()
