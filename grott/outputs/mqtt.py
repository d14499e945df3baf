"""
The mqtt output: each record published as JSON to an MQTT broker, with
availability topics and, optionally, Home Assistant discovery.

Topics (L{grott.outputs.hass} lists them all): every record goes, as
before, to the shared C{TOPIC} unless C{serial_in_topic} is set (the
Grott-compatible layout, for other consumers).  With C{serial_in_topic} or
C{discovery}, each device (an inverter, or a smart meter under its own
C{device_id}, never under the inverter it reports for) also gets topics of
its own: live data (retained,
so Home Assistant never misses the first state after discovery), announce,
buffered (0x50 replays, which no entity reads, so Home Assistant's
statistics never go back in time) and held (live records the data guards of
L{grott.outputs.guards} kept out of the live topic).  A smart meter's 0x1b
log records go to a log topic of their own: they name other values than
its 0x20 records, and an entity must never read a message lacking its value.

Publishing is pipelined: C{data} hands a record's messages to paho and
returns at once; paho keeps up to L{MAX_INFLIGHT} QoS 1/2 messages in flight
with the broker and queues the rest.  C{data} only makes the plugin queue
wait while more than L{WINDOW} records are unacknowledged, or while the
broker is away.  L{MqttOutput.publish} is the seam for a spool: it fires
once the broker has acknowledged every message of one record.

The client is paho-mqtt (Eclipse), driven by the reactor through paho's
external event loop interface: the reactor watches paho's socket and calls
C{loop_read} / C{loop_write} when it is ready, a L{task.LoopingCall} runs
C{loop_misc} (the keepalive) every second, and only the blocking part of a
connection attempt (TCP connect and TLS handshake, C{reconnect}) runs in a
short-lived thread; this output reconnects with backoff itself
(C{reconnect_min} doubling up to C{reconnect_max}).  paho's own network
thread (C{loop_start}) is not used: sharing the GIL with the relay, it got
the GIL back only after the reactor thread's next release, for each of its
system calls, so at load the acknowledgements, not the broker, set the
pace, and every release of the GIL by the reactor thread became a wait of
up to a switch interval (5 ms) for the relay.  paho's callbacks still hop
to the reactor with C{reactor.callFromThread}, wherever they run.

A record's delivery (the Deferred C{data} returns) fires when the broker
has it: PUBACK for QoS 1, PUBCOMP for QoS 2, written to the socket for QoS
0.  While the broker is away the delivery waits, so records pile up in the
plugin host's bounded queue for this plugin and go out, in order, once the
connection is back.  paho resends unacknowledged QoS 1/2 messages itself
after a reconnect; a QoS 0 message caught by a disconnect is sent again.
"""

import collections
import threading

from paho.mqtt import client as paho
from twisted.internet import defer, task
from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from zope.interface import implementer

from grott.interfaces import (
    IGrottObserver,
    IGrottPlugin,
    IGrottPluginService,
)
from grott.logs import Logger
from grott.logthrottle import LogThrottle
from grott.outputs import guards, hass, hass_entities, jsonenc
from grott.registers.record import METER

__all__ = ["MqttError", "MqttOutput", "record_payload"]

#: Seconds stopService waits for the "offline" message and the disconnect.
_GOODBYE_TIMEOUT = 3.0
#: QoS 1/2 messages paho keeps unacknowledged with the broker at once.
MAX_INFLIGHT = 200
#: Records handed to paho but not yet acknowledged before data() waits.
WINDOW = 2000
#: Seconds between grott's own status messages (Home Assistant's grott device).
STATUS_INTERVAL = 30.0
#: expire_after choices (s): the first at least 3 datalogger intervals.
_EXPIRE_STEPS = (60, 180, 300, 600, 900, 1800, 3600, 7200)
#: expire_after until a device's interval is known (3 x the default 5 min).
_EXPIRE_DEFAULT = 900
#: The announce record type (0x03): identification and holding registers.
ANNOUNCE = 0x03
#: A smart meter's log record type (0x1b): its own topic and guard.
METER_LOG = 0x1b
#: What the jump guard takes a smart meter's rating for (W): three phases
#: of 100 A (a direct-connected SDM630) at 277 V.
METER_RATED_W = 3 * 100 * 277


class MqttError(Exception):
    """
    The client refused a publish (not a connection problem: those wait).
    """


def record_payload(record):
    """
    The JSON document published for a record.
    """
    meter = record.kind == METER
    return {
        "device": record.device_id if meter else (record.inverter_serial
                                                  or record.datalogger_serial),
        "kind": record.kind,
        "datalogger": record.datalogger_serial,
        "inverter": record.inverter_serial,
        "time": record.timestamp,
        "buffered": record.buffered,
        "record_type": record.record_type,
        "family": record.family,
        "device_type_code": record.device_type_code,
        "values": dict(record.values),
    }


#: Bytes the client takes from its socket per read (L{_Client}).
_READ_AHEAD = 65536
#: Seconds between paho's C{loop_misc} calls (keepalive pings, their timeout).
_MISC_INTERVAL = 1.0


class _Client(paho.Client):
    """
    paho's client, reading its socket in large chunks.

    paho asks for an incoming packet a byte or two at a time (its type, each
    byte of its length, then the rest), so every 4-byte acknowledgement of a
    QoS 1 message cost three or four C{recv} system calls.  Here
    C{_sock_recv} serves paho's small reads from one large read, and
    C{loop_read} keeps going until that buffer is used up (data in it is
    invisible to the reactor's poller).  Nothing else changes.
    """

    _buffer = b""
    _at = 0

    def _sock_recv(self, bufsize):
        buffer, at = self._buffer, self._at
        if at >= len(buffer):
            buffer = super()._sock_recv(_READ_AHEAD)
            if not buffer:
                return buffer  # the broker closed the connection
            self._buffer, at = buffer, 0
        self._at = at + bufsize
        return buffer[at:at + bufsize]

    def loop_read(self, max_packets=1):
        rc = super().loop_read(max_packets)
        while (rc == paho.MQTT_ERR_SUCCESS and self._at < len(self._buffer)
               and self._sock is not None):
            rc = super().loop_read(max_packets)
        return rc

    def _sock_close(self):
        # What was read ahead belongs to the connection being closed.
        self._buffer, self._at = b"", 0
        super()._sock_close()


@implementer(IReadDescriptor, IWriteDescriptor)
class _PahoSocket:
    """
    paho's socket as the reactor sees it: readable calls C{loop_read},
    writable C{loop_write}.  paho closes the socket itself; the output
    removes this from the reactor first (paho's C{on_socket_close}).
    """

    def __init__(self, client, sock):
        self.client = client
        self.sock = sock
        # Kept: a closed socket's fileno() is -1, and the reactor looks it up.
        self.fd = sock.fileno()

    def fileno(self):
        return self.fd

    def logPrefix(self):
        return "mqtt"

    def doRead(self):
        client = self.client
        client.loop_read()
        # TLS may hold decrypted bytes the poller cannot see.
        pending = getattr(self.sock, "pending", None)
        while pending is not None and client.socket() is self.sock and pending():
            client.loop_read()

    def doWrite(self):
        self.client.loop_write()

    def connectionLost(self, reason):
        pass


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
    client = _Client(**kwargs)
    if settings.username:
        client.username_pw_set(settings.username, settings.password or None)
    if settings.tls:
        client.tls_set(ca_certs=settings.ca_certs or None, certfile=settings.certfile or None,
                       keyfile=settings.keyfile or None)
        if settings.tls_insecure:
            client.tls_insecure_set(True)
    client.will_set(availability_topic, "offline", qos=1, retain=True)
    client.max_inflight_messages_set(MAX_INFLIGHT)
    client.reconnect_delay_set(settings.reconnect_min,
                               max(settings.reconnect_min, settings.reconnect_max))
    return client


class _Device:
    """
    What the output remembers about one device (an inverter or a smart
    meter): what its records carried, its guard, and what was last
    published for it.
    """

    def __init__(self, key, record):
        self.key = key
        self.kind = record.kind
        self.reports_for = record.inverter_serial
        self.phases = None
        self.datalogger = record.datalogger_serial
        self.address = record.device_address
        self.family = record.family
        self.dtc = record.device_type_code
        self.identification = None
        self.input_units = {}
        self.holding_units = {}
        #: A smart meter's 0x1b values (its 0x20 ones are input_units).
        self.log_units = {}
        #: One data guard per stream of live records: "input", "log".
        self.guards = {}
        self.version = 0
        self.published_version = None
        #: discovery topic -> the JSON published there
        self.published = {}
        self.live = None
        self.announce = None
        self.log = None
        self.last_arrival = None
        self.expire_after = _EXPIRE_DEFAULT
        self.gaps = collections.deque(maxlen=3)
        self.battery = None

    def meter(self):
        return hass.Meter(device_id=self.key, datalogger=self.datalogger, address=self.address,
                          reports_for=self.reports_for, phases=self.phases)

    def inverter(self):
        ident = self.identification
        return hass.Inverter(
            serial=self.key, datalogger=self.datalogger, family=self.family, dtc=self.dtc,
            firmware=getattr(ident, "firmware", None),
            control_firmware=getattr(ident, "control_firmware", None),
            manufacturer=getattr(ident, "manufacturer", None),
            module_code=getattr(ident, "module_code", None),
            trackers=getattr(ident, "trackers", None), phases=getattr(ident, "phases", None),
            battery=self.battery)

    def learn(self, record):
        """
        Note what C{record} says about the device; bump C{version} when the
        discovery configs must change.
        """
        changed = False
        if record.family is not None and record.family != self.family:
            self.family, changed = record.family, True
            self.guards.clear()
        if record.inverter_serial and self.reports_for is None:
            self.reports_for = record.inverter_serial
        if record.device_type_code is not None and record.device_type_code != self.dtc:
            self.dtc, changed = record.device_type_code, True
        if record.record_type == ANNOUNCE:
            units = self.holding_units
            if record.identification is not None and record.identification != self.identification:
                self.identification, changed = record.identification, True
        elif self.kind == METER:
            units = self.log_units if record.record_type == METER_LOG else self.input_units
            phases = self._meter_phases(record.values)
            if phases is not None and phases != self.phases:
                self.phases, changed = phases, True
        else:
            units = self.input_units
            if self.battery is not True:
                signs = [record.values.get(k) for k in hass_entities.BATTERY_SIGNS
                         if k in record.values]
                battery = any(isinstance(v, (int, float)) and v > 0 for v in signs) \
                    if signs else None
                if battery is not None and battery != self.battery:
                    self.battery, changed = battery, True
        if record.values.keys() - units.keys():
            units.update(record.units)
            for key in record.values:
                units.setdefault(key, "")
            changed = True
        if changed:
            self.version += 1

    def _meter_phases(self, values):
        """
        3 when a meter shows voltage on L2 or L3, 1 when it shows none
        there; None when its records do not say (a three-phase meter
        once seen stays three-phase).
        """
        signs = [values[k] for k in hass_entities.METER_PHASE_SIGNS
                 if isinstance(values.get(k), (int, float))]
        if not signs:
            return None
        return 3 if self.phases == 3 or any(v > 0 for v in signs) else 1

    def learn_interval(self, now):
        """
        Tie C{expire_after} to the datalogger's interval: three intervals,
        judged on the last three gaps between live records (gaps under
        5 s are a burst, not an interval), so it changes rarely.
        """
        if self.last_arrival is not None and now - self.last_arrival >= 5:
            self.gaps.append(now - self.last_arrival)
            if len(self.gaps) == self.gaps.maxlen:
                longest = 3 * max(self.gaps)
                expire = next((s for s in _EXPIRE_STEPS if s >= longest), _EXPIRE_STEPS[-1])
                if expire != self.expire_after:
                    self.expire_after = expire
                    self.version += 1
        self.last_arrival = now

    def check(self, record, now, discovery_all):
        """
        The guard's verdict on a live record.  A meter's 0x20 and 0x1b
        records are two streams (other names, other times): a guard each.
        """
        log = self.kind == METER and record.record_type == METER_LOG
        source = "log" if log else "input"
        guard = self.guards.get(source)
        if guard is None:
            counters = {e.key: e.unit for e in hass_entities.entities_for(self.family)
                        if e.state_class == "total_increasing" and e.source == source}
            if discovery_all:
                for key, unit in (self.log_units if log else self.input_units).items():
                    if unit in ("kWh", "kvarh", "kVAh", "h"):
                        counters.setdefault(key, unit)
            guard = self.guards[source] = guards.DeviceGuard(counters)
        if self.kind == METER:
            guard.rated_power = METER_RATED_W
        else:
            guard.rated_power = getattr(self.identification, "rated_power", None)
        return guard.check(record.timestamp, record.values, now)


class _Batch:
    """
    The acknowledgements one record's messages still wait for; C{done}
    fires when the last arrives (or fails with the first error).  Stands
    in for a message's Deferred in L{MqttOutput._pending}.
    """

    __slots__ = ("done", "left")

    def __init__(self, count):
        self.left = count
        self.done = defer.Deferred()
        if not count:
            self.done.callback(True)

    def callback(self, _):
        self.left -= 1
        if self.left == 0 and not self.done.called:
            self.done.callback(True)

    def errback(self, error):
        if not self.done.called:
            self.done.errback(error)

    def cancel(self):
        self.done.cancel()


@implementer(IGrottPlugin, IGrottPluginService, IGrottObserver)
class MqttOutput:
    """
    Publishes records to the broker in C{settings} (a L{grott.config.MqttConfig}).
    """

    name = "mqtt"
    log = Logger()

    def __init__(self, settings, reactor, client=None):
        self.settings = settings
        self.reactor = reactor
        self.topics = hass.Topics(settings.topic)
        self.availability_topic = settings.availability_topic or self.topics.availability
        self.broker = f"{settings.host}:{settings.port}"
        self.client = client if client is not None else make_client(
            settings, self.availability_topic)
        self.client.on_connect = self._thread_on_connect
        self.client.on_connect_fail = self._thread_on_connect_fail
        self.client.on_disconnect = self._thread_on_disconnect
        self.client.on_publish = self._thread_on_publish
        self.client.on_message = self._thread_on_message
        self.client.on_socket_open = self._thread_on_socket_open
        self.client.on_socket_close = self._thread_on_socket_close
        self.client.on_socket_register_write = self._thread_on_socket_register_write
        self.client.on_socket_unregister_write = self._thread_on_socket_unregister_write
        self._socket = None
        self._reactor_thread = None
        #: the connection attempt running in its thread, or None
        self._connecting = None
        #: the next connection attempt, or None
        self._retry = None
        self._delay = settings.reconnect_min
        self._misc_loop = None
        self.discovery = hass.Discovery(settings.discovery_prefix, self.topics,
                                        self.availability_topic, settings.discovery_all) \
            if settings.discovery else None
        self.birth_topic = f"{settings.discovery_prefix}/status"
        self.connected = False
        self._ever_connected = False
        self._stopping = False
        self._trouble = None
        self._waiters = []
        self._pending = {}
        self._acks = collections.deque()
        self._acks_scheduled = False
        self._room = []
        self._idle = []
        self.devices = {}
        #: datalogger serial -> "online" / "offline" as last published
        self.dataloggers = {}
        #: (datalogger, device address) -> inverter serial this session
        self._serials = {}
        self._serial_streak = collections.Counter()
        self._published = {}
        #: discovery node -> retained config topics seen on the broker
        self._retained = {}
        self._nodes = {}
        self.outstanding = 0
        self.counts = collections.Counter()
        self._registry = None
        self._status = None
        self._status_loop = None
        self._throttle = LogThrottle(reactor, self._held_summary, burst=1, interval=300.0)
        #: topic filter -> qos, renewed on every connect (see subscribe)
        self._subscriptions = {}

    # -- paho's callbacks: hop to the reactor (they may run in a connecting thread)

    def _thread_on_connect(self, client, userdata, flags, reason_code, properties):
        self.reactor.callFromThread(self._on_connect, reason_code.is_failure, str(reason_code))

    def _thread_on_connect_fail(self, client, userdata):
        self.reactor.callFromThread(self._on_connect_fail)

    # -- paho's socket in the reactor (its callbacks run in the connecting
    # thread or on the reactor thread)

    def _on_reactor(self, f, *args):
        """
        Now if on the reactor thread (paho closes the socket right after
        C{on_socket_close} returns: the reactor must let go of it first),
        else hop there.
        """
        if threading.get_ident() == self._reactor_thread:
            f(*args)
        else:
            self.reactor.callFromThread(f, *args)

    def _thread_on_socket_open(self, client, userdata, sock):
        self._on_reactor(self._socket_opened, sock)

    def _thread_on_socket_close(self, client, userdata, sock):
        self._on_reactor(self._socket_closed, sock)

    def _thread_on_socket_register_write(self, client, userdata, sock):
        self._on_reactor(self._socket_writing, sock, True)

    def _thread_on_socket_unregister_write(self, client, userdata, sock):
        self._on_reactor(self._socket_writing, sock, False)

    def _socket_opened(self, sock):
        if self._stopping:
            sock.close()  # an attempt that finished after stopService
            return
        if self._socket is not None:
            self._socket_closed(self._socket.sock)
        self._socket = _PahoSocket(self.client, sock)
        self.reactor.addReader(self._socket)

    def _socket_closed(self, sock):
        watched = self._socket
        if watched is None or watched.sock is not sock:
            return
        self._socket = None
        self.reactor.removeReader(watched)
        self.reactor.removeWriter(watched)

    def _socket_writing(self, sock, wanted):
        watched = self._socket
        if watched is None or watched.sock is not sock:
            return
        if wanted:
            self.reactor.addWriter(watched)
        else:
            self.reactor.removeWriter(watched)

    # -- connecting, with backoff

    def _connect(self):
        """
        One connection attempt: paho's C{reconnect} (blocking TCP connect
        and TLS handshake) in a thread; the CONNACK arrives through the
        reactor (C{on_connect}).
        """
        self._retry = None
        if self._stopping or self._connecting is not None:
            return
        attempt = self._connecting = _in_thread(self.reactor, self.client.reconnect)
        attempt.addCallbacks(self._connect_sent, self._connect_failed)

    def _connect_sent(self, result):
        self._connecting = None

    def _connect_failed(self, failure):
        self._connecting = None
        if self._stopping:
            return
        self._on_connect_fail()
        self._reconnect_later()

    def _reconnect_later(self):
        if self._stopping or self._retry is not None or self._connecting is not None:
            return
        delay, settings = self._delay, self.settings
        self._delay = min(delay * 2, max(settings.reconnect_min, settings.reconnect_max))
        self._retry = self.reactor.callLater(delay, self._connect)

    def _misc(self):
        if self.client.socket() is not None:
            self.client.loop_misc()

    def _thread_on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.reactor.callFromThread(self._on_disconnect, str(reason_code))

    def _thread_on_publish(self, client, userdata, mid, reason_code, properties):
        # One hop per batch of acknowledgements, not per message: under load
        # the reactor drains many at once.  (deque.append is thread-safe; a
        # race can only schedule one drain too many, never lose an ack.)
        failed = reason_code.is_failure
        self._acks.append((mid, failed, str(reason_code) if failed else ""))
        if not self._acks_scheduled:
            self._acks_scheduled = True
            if threading.get_ident() == self._reactor_thread:
                # paho runs on the reactor: the next turn, without waking it.
                self.reactor.callLater(0, self._drain_acks)
            else:
                self.reactor.callFromThread(self._drain_acks)

    def _drain_acks(self):
        self._acks_scheduled = False
        acks = self._acks
        while acks:
            self._on_publish(*acks.popleft())

    def _thread_on_message(self, client, userdata, message):
        self.reactor.callFromThread(self._on_message, message.topic, message.payload)

    # -- connection state, on the reactor thread

    def _on_connect(self, failed, reason):
        if failed:
            self.counts["connect_refused"] += 1
            self._report("refused", "MQTT broker {broker} refused the connection: {reason}",
                         reason=reason)
            return
        self.connected = True
        self._delay = self.settings.reconnect_min
        if self._trouble is not None:
            self.log.info("MQTT: connected to {broker} again; sending queued records",
                          broker=self.broker)
        else:
            self.log.info("MQTT: connected to {broker}", broker=self.broker)
        self._trouble = None
        self.client.publish(self.availability_topic, "online", qos=1, retain=True)
        if self.discovery is not None:
            prefix = self.settings.discovery_prefix
            self.client.subscribe([(self.birth_topic, 1), (f"{prefix}/sensor/+/+/config", 1),
                                   (f"{prefix}/binary_sensor/+/+/config", 1)])
        if self._ever_connected:
            # A restarted broker may have lost the retained configs and states.
            self._republish()
        self._ever_connected = True
        for topic, qos in self._subscriptions.items():
            self.client.subscribe(topic, qos)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _on_connect_fail(self):
        self.counts["connect_failures"] += 1
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
        self._reconnect_later()

    _disconnected = None

    def _on_publish(self, mid, failed, reason):
        entry = self._pending.pop(mid, None)
        if entry is None:
            return
        if failed:
            entry[0].errback(MqttError(f"the broker rejected a message: {reason}"))
        else:
            entry[0].callback(True)

    def _on_message(self, topic, payload):
        if topic == self.birth_topic:
            if payload.strip() == b"online" and self.connected:
                self.log.info("MQTT: Home Assistant is online; publishing discovery and the "
                              "last state of {count} device(s)", count=len(self.devices))
                self._republish()
            return
        self._seen_config(topic, payload)

    def _seen_config(self, topic, payload):
        """
        Remember the retained discovery configs of grott's inverter nodes on
        the broker, so those an older version left behind (raw reg_N, values
        no longer announced) are removed once their device is seen again.
        """
        parts = topic[len(self.settings.discovery_prefix) + 1:].split("/")
        node = parts[1] if len(parts) == 4 else ""
        if not node.startswith("grott_") or node.startswith(("grott_dl_", "grott_proxy_")):
            return
        seen = self._retained.setdefault(node, set())
        if not payload:
            seen.discard(topic)
            return
        seen.add(topic)
        device = self._nodes.get(node)
        if device is not None and device.published_version is not None \
                and topic not in device.published:
            self._fire_and_forget(self._stale([topic], node))

    def _stale(self, topics, node):
        qos = max(1, self.settings.qos)
        self._retained.get(node, set()).difference_update(topics)
        self.counts["stale_configs_removed"] += len(topics)
        return [(topic, b"", qos, True) for topic in topics]

    def _report(self, trouble, message, **fields):
        """
        Log a connection problem once, not on every retry.
        """
        if trouble != self._trouble:
            self._trouble = trouble
            self.log.warn(message, broker=self.broker, **fields)  # noqa: G010

    # -- delivery

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
        if info.is_published():
            d.callback(True)
        else:
            self._pending[mid] = (d, qos)
        return d

    async def _send(self, messages):
        todo = messages
        while todo:
            if not self.connected:
                await self._when_connected()
            sent = await defer.gatherResults([self._publish(*m) for m in todo],
                                             consumeErrors=True)
            todo = [m for m, ok in zip(todo, sent) if not ok]

    def deliver(self, messages):
        """
        Hand C{messages} ((topic, payload, qos, retain) tuples, one record's
        worth) to the client now.

        @return: a Deferred that fires once the broker has acknowledged
            every one of them (QoS 0: written), or fails with L{MqttError}.
        """
        self.outstanding += 1
        if self.connected and all(qos for _, _, qos, _ in messages):
            d = self._deliver_acknowledged(messages)
        else:
            d = defer.Deferred.fromCoroutine(self._send(messages))
        d.addBoth(self._settled)
        return d

    def _deliver_acknowledged(self, messages):
        """
        The common case (connected, QoS 1/2) without a Deferred per
        message: one L{_Batch} counts the acknowledgements.  paho resends
        QoS 1/2 messages itself after a reconnect.
        """
        batch = _Batch(len(messages))
        for topic, payload, qos, retain in messages:
            info = self.client.publish(topic, payload, qos=qos, retain=retain)
            if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
                batch.errback(MqttError(f"cannot publish to {topic}: "
                                        f"{paho.error_string(info.rc)}"))
            elif info.is_published():
                batch.callback(True)
            else:
                self._pending[info.mid] = (batch, qos)
        return batch.done

    def _settled(self, result):
        self.outstanding -= 1
        if self.outstanding < WINDOW and self._room:
            room, self._room = self._room, []
            for waiter in room:
                waiter.callback(None)
        if not self.outstanding and self._idle:
            idle, self._idle = self._idle, []
            for waiter in idle:
                if not waiter.called:
                    waiter.callback(None)
        return result

    def _fire_and_forget(self, messages):
        if messages:
            self.deliver(messages).addErrback(self._delivery_failed)

    def _delivery_failed(self, failure):
        if failure.check(defer.CancelledError, defer.FirstError) and self._stopping:
            return
        self.counts["failed"] += 1
        self.log.failure("MQTT: a message was not delivered", failure)

    def publish(self, record, log=None):
        """
        Route one record and hand its messages to the client: the seam for
        a spool that confirms a record only once the broker has it.

        @return: a Deferred that fires once the broker has acknowledged
            every message of the record (see L{deliver}).
        """
        messages = self._route(record, log or self.log)
        if not messages:
            return defer.succeed(None)
        return self.deliver(messages)

    def route(self, record, log=None):
        """
        The messages for C{record} ((topic, payload, qos, retain) tuples),
        the output's state (devices, discovery, guards) updated as if it
        were published now: the seam for the spool, which routes a record
        when it arrives and hands the messages to L{deliver} later
        (L{grott.outputs.mqttspool}).
        """
        return self._route(record, log or self.log)

    def _pipelined(self, record, log):
        self.publish(record, log).addErrback(self._delivery_failed)
        if self.outstanding >= WINDOW:
            d = defer.Deferred(lambda d: self._room.remove(d))
            self._room.append(d)
            return d
        return None

    def data(self, packet, record, log):
        if not self.connected:
            # The broker is away: the rest of the records wait, in order, in
            # the plugin queue until it is back.
            d = self._when_connected()
            d.addCallback(lambda _: self._pipelined(record, log))
            return d
        return self._pipelined(record, log)

    # -- routing a record

    def _message(self, topic, payload, retain):
        return (topic, payload, self.settings.qos, retain)

    def _route(self, record, log):
        settings = self.settings
        messages = []
        document = record_payload(record)
        payload = jsonenc.dumps(document)
        if not settings.serial_in_topic:
            messages.append(self._message(settings.topic, payload, settings.retain))
        if not (settings.serial_in_topic or settings.discovery):
            return messages
        key = hass.device_key(record)
        device = self.devices.get(key)
        if device is None:
            device = self.devices[key] = _Device(key, record)
        if record.datalogger_serial and record.datalogger_serial not in self.dataloggers:
            messages[:0] = self._datalogger_messages(record.datalogger_serial, "online")
        keep = settings.retain or settings.discovery
        if record.record_type == ANNOUNCE:
            device.learn(record)
            device.announce = self._message(self.topics.announce(key), payload, keep)
            messages += self._discovery_messages(device)
            messages.append(device.announce)
        elif record.buffered:
            messages.append(self._message(self.topics.buffered(key), payload, settings.retain))
        else:
            reason = self._serial_changed(record, key) or device.check(
                record, self.reactor.seconds(), settings.discovery_all)
            if reason is not None:
                self._held(record, key, reason, log)
                messages.append(self._message(self.topics.held(key),
                                              jsonenc.dumps(dict(document, held=reason)), False))
                return messages
            device.learn(record)
            device.learn_interval(self.reactor.seconds())
            if record.kind == METER and record.record_type == METER_LOG:
                device.log = message = self._message(self.topics.log(key), payload, keep)
            else:
                device.live = message = self._message(self.topics.live(key), payload, keep)
            messages += self._discovery_messages(device)
            messages.append(message)
        return messages

    def _serial_changed(self, record, key):
        """
        "serial_changed" when this datalogger address spoke for another
        device of the same kind earlier in the session (believed after
        three records).  A meter and an inverter may share an address.
        """
        if record.kind == METER and record.record_type == METER_LOG:
            # A 0x1b record's device is grott's choice (its datalogger's
            # 0x20 meter once one is seen), not a serial a slip could change.
            return None
        where = (record.datalogger_serial, record.device_address, record.kind)
        known = self._serials.setdefault(where, key)
        if known == key:
            self._serial_streak.pop(where, None)
            return None
        self._serial_streak[where] += 1
        if self._serial_streak[where] >= guards.BELIEVE_AFTER:
            self._serials[where] = key
            del self._serial_streak[where]
            return None
        return "serial_changed"

    def _held(self, record, key, reason, log):
        self.counts[f"held_{reason}"] += 1
        if self._throttle.admit((key, reason)):
            log.warn(  # noqa: G010 (twisted.logger has no warning())
                "held a record of {serial} back from its live topic ({reason}; recorded "
                "{recorded}); it went to {topic}", serial=key, reason=reason,
                recorded=record.timestamp, topic=self.topics.held(key))

    def _held_summary(self, throttle_key, count, seconds):
        serial, reason = throttle_key
        self.log.warn(  # noqa: G010 (twisted.logger has no warning())
            "held {count} more record(s) of {serial} back ({reason}) in the last "
                      "{seconds:.0f} s", count=count, serial=serial, reason=reason,
                      seconds=seconds)

    # -- discovery

    def _configs(self, configs, published):
        """
        Messages for the configs that differ from what was published.
        """
        qos = max(1, self.settings.qos)
        messages = []
        for topic, config in configs.items():
            payload = jsonenc.dumps(config)
            if published.get(topic) != payload:
                published[topic] = payload
                messages.append((topic, payload, qos, True))
        self.counts["discovery_configs"] += len(messages)
        return messages

    def _discovery_messages(self, device):
        if self.discovery is None or device.published_version == device.version:
            return []
        device.published_version = device.version
        messages = []
        # _configs skips what was published already: cheap to ask each time.
        messages += self._configs(self.discovery.proxy(), self._published)
        if device.datalogger:
            messages += self._configs(self.discovery.datalogger(device.datalogger),
                                      self._published)
        if device.kind == METER:
            configs = self.discovery.meter(device.meter(), device.input_units,
                                           device.expire_after, device.log_units)
        else:
            configs = self.discovery.inverter(device.inverter(), device.input_units,
                                              device.holding_units, device.expire_after)
        qos = max(1, self.settings.qos)
        for gone in set(device.published) - set(configs):
            # A config of an older version this one does not have: remove it.
            del device.published[gone]
            messages.append((gone, b"", qos, True))
        node = f"grott_{hass.slug(device.key)}"
        self._nodes[node] = device
        messages += self._stale(sorted(self._retained.get(node, set()) - set(configs)), node)
        return messages + self._configs(configs, device.published)

    def _datalogger_messages(self, datalogger, state):
        self.dataloggers[datalogger] = state
        messages = [(self.topics.datalogger(datalogger), state.encode(),
                     max(1, self.settings.qos), True)]
        if self.discovery is not None:
            messages[:0] = (self._configs(self.discovery.proxy(), self._published)
                            + self._configs(self.discovery.datalogger(datalogger),
                                            self._published))
        return messages

    def _republish(self):
        """
        Everything Home Assistant needs again: after its birth message or a
        broker restart.
        """
        self._published.clear()
        messages = []
        if self.discovery is not None:
            messages += self._configs(self.discovery.proxy(), self._published)
        for datalogger, state in self.dataloggers.items():
            messages += self._datalogger_messages(datalogger, state)
        for device in self.devices.values():
            device.published.clear()
            device.published_version = None
            messages += self._discovery_messages(device)
            messages += [m for m in (device.announce, device.live, device.log)
                         if m is not None]
        self._fire_and_forget(messages)
        self._publish_status()

    # -- dataloggers and grott's own numbers (IGrottObserver)

    def watchGrott(self, registry, status):
        self._registry = registry
        self._status = status

    def dataloggerConnected(self, session):
        serial = session.datalogger_serial
        if serial and self.dataloggers.get(serial) != "online":
            self._fire_and_forget(self._datalogger_messages(serial, "online"))
        self._publish_status()

    def dataloggerDisconnected(self, session):
        serial = session.datalogger_serial
        if serial:
            for where in [w for w in self._serials if w[0] == serial]:
                del self._serials[where]
            self._fire_and_forget(self._datalogger_messages(serial, "offline"))
        self._publish_status()

    def status(self):
        """
        grott's numbers for its own Home Assistant device.
        """
        numbers = dict(self._status()) if self._status is not None else {}
        numbers.setdefault("dataloggers", sum(
            1 for state in self.dataloggers.values() if state == "online"))
        numbers["records_held"] = sum(self.counts[f"held_{r}"] for r in guards.REASONS)
        cloud = numbers.get("cloud_reachable")
        numbers["cloud_reachable"] = None if cloud is None else ("ON" if cloud else "OFF")
        return numbers

    def _publish_status(self):
        if self.discovery is None or not self.connected:
            return
        self._fire_and_forget([(self.topics.status, jsonenc.dumps(self.status()),
                                max(1, self.settings.qos), True)])

    def reportData(self):
        return {"connected": self.connected, "awaiting_broker": self.outstanding,
                "failed": self.counts["failed"],
                "held": {r: self.counts[f"held_{r}"] for r in guards.REASONS},
                "devices": len(self.devices),
                "discovery_configs": self.counts["discovery_configs"],
                "stale_configs_removed": self.counts["stale_configs_removed"]}

    def reportLines(self):
        held = " ".join(f"{r}={self.counts[f'held_{r}']}" for r in guards.REASONS)
        line = (f"  mqtt: {'connected' if self.connected else 'not connected'} to "
                f"{self.broker}, {self.outstanding} record(s) awaiting the broker, "
                f"{self.counts['failed']} failed; held back: {held}; "
                f"{len(self.devices)} device(s), "
                f"{self.counts['discovery_configs']} discovery config(s) published, "
                f"{self.counts['stale_configs_removed']} stale one(s) removed")
        return [line]

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

    def publish_message(self, topic, payload, qos=1, retain=False, properties=None):
        """
        Publish one message (not a record: see L{publish}), waiting for the
        connection if it is down.

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
        self._reactor_thread = threading.get_ident()
        self._delay = self.settings.reconnect_min
        self.client.connect_async(self.settings.host, self.settings.port,
                                  self.settings.keepalive)
        self._connect()
        self._misc_loop = task.LoopingCall(self._misc)
        self._misc_loop.clock = self.reactor
        self._misc_loop.start(_MISC_INTERVAL, now=False)
        if self.discovery is not None:
            self._status_loop = task.LoopingCall(self._publish_status)
            self._status_loop.clock = self.reactor
            self._status_loop.start(STATUS_INTERVAL, now=False)

    def stopService(self):
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self):
        # The keepalive first: the goodbye is bounded by _GOODBYE_TIMEOUT,
        # shorter than any keepalive, and a plugin host that stops waiting
        # for this output (plugins.stop_timeout) must not leave its timer
        # behind in the reactor.
        if self._misc_loop is not None and self._misc_loop.running:
            self._misc_loop.stop()
        try:
            await self._goodbye()
        finally:
            # Also when the plugin host's deadline cancelled the goodbye.
            self._stopping = True
            self._cancel_retry()
            if self._socket is not None and self._connecting is None:
                # Connected (TCP) but never said goodbye: let go of it.
                sock = self._socket.sock
                self._socket_closed(sock)
                sock.close()
            self.connected = False

    def _cancel_retry(self):
        retry, self._retry = self._retry, None
        if retry is not None and retry.active():
            retry.cancel()

    async def _goodbye(self):
        if self._status_loop is not None and self._status_loop.running:
            self._status_loop.stop()
        self._throttle.stop()
        if self.connected and self.outstanding:
            # Records handed over but not yet acknowledged: give them a moment.
            idle = defer.Deferred()
            self._idle.append(idle)
            idle.addTimeout(_GOODBYE_TIMEOUT, self.reactor)
            try:
                await idle
            except defer.TimeoutError:
                self.log.warn(  # noqa: G010 (twisted.logger has no warning())
                    "MQTT: {count} record(s) still unacknowledged at shutdown",
                              count=self.outstanding)
        self._stopping = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.cancel()
        if self.connected:
            # A clean disconnect does not fire the last will: say it
            # ourselves, for grott and for every datalogger it knew (one
            # that does not come back after a restart must not look online).
            goodbyes = [self._publish(self.topics.datalogger(datalogger), "offline", 1, True)
                        for datalogger, state in self.dataloggers.items() if state == "online"]
            goodbyes.append(self._publish(self.availability_topic, "offline", 1, True))
            offline = defer.gatherResults(goodbyes, consumeErrors=True)
            offline.addTimeout(_GOODBYE_TIMEOUT, self.reactor)
            try:
                await offline
            except (defer.TimeoutError, defer.FirstError):
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
        self._cancel_retry()
        if self._connecting is not None:
            # A connection attempt may sit in its thread for a few seconds
            # (waited on through a Deferred of our own: cancelling this
            # must not fire the attempt's Deferred before its thread does).
            finished = defer.Deferred()
            self._connecting.addBoth(lambda _: finished.called or finished.callback(None))
            await finished
        for d, _ in list(self._pending.values()):
            d.cancel()
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
