"""
The control plane over MQTT: JSON requests on C{PREFIX/<datalogger>/request},
one JSON reply for each on C{PREFIX/<datalogger>/reply} (and on the MQTT 5
response topic, with the correlation data, when the request names one), and
a retained C{PREFIX/<datalogger>/status} saying whether the datalogger is
connected to this grott.

Requests (C{id} is echoed back; any string or number):

    {"id": "1", "op": "read", "register": 3, "count": 1}
    {"id": "2", "op": "write", "register": 3, "value": 80}
    {"id": "3", "op": "write", "register": 1080, "values": [1536, 2048, 1]}
    {"id": "4", "op": "dread", "register": 4}
    {"id": "5", "op": "dwrite", "register": 4, "value": "1"}
    {"id": "6", "op": "set", "setting": "active_power_rate", "value": 50}
    {"id": "7", "op": "get", "setting": "active_power_rate"}

Replies: C{{"id": ..., "ok": true, "registers": {"3": 80}}} (plus
C{"setting"} and C{"value"} for set/get) or C{{"id": ..., "ok": false,
"error": "text"}}.  Every request gets exactly one reply, whatever goes
wrong: bad JSON (the id is still picked out of the text when it can be), an
unknown datalogger, a refused write, a timeout.

The parsing (L{parse_request}, L{reply_for}) is plain functions; the
L{MqttControl} service only ties them to the MQTT connection of the mqtt
output (L{grott.outputs.mqtt.MqttOutput.subscribe} / C{publish}) and to the
L{grott.control.Control}.
"""

import json
import re
import socket

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from twisted.application import service
from twisted.internet import defer

from grott.commands import CommandError
from grott.control import Mismatch
from grott.logs import Logger

__all__ = ["BadRequest", "MqttControl", "Request", "parse_request", "status_payload"]

#: Seconds stopping waits for the "offline" statuses to reach the broker.
_GOODBYE_TIMEOUT = 3.0
#: The longest request payload read (bytes).
MAX_REQUEST = 8192
_OPS = ("read", "write", "dread", "dwrite", "set", "get")
_ID = re.compile(r'"id"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+)')


class BadRequest(CommandError):
    """A request that cannot be carried out as written."""


class Request:
    """A parsed request: C{op} and its arguments, and the C{id} to echo."""

    def __init__(self, id, op, args, client=None):
        self.id = id
        self.op = op
        self.args = args
        #: who asks, as the request names itself (for the audit line)
        self.client = client


def _readable_id(text):
    """The id of a request that is not valid JSON, if it can be seen."""
    match = _ID.search(text)
    if match is None:
        return None
    try:
        return json.loads(match.group(1))
    except ValueError:
        return None


def _int(request, key, default=None):
    value = request.get(key, default)
    if value is None:
        raise BadRequest(f"missing {key!r}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{key!r} must be a whole number, not {value!r}")
    return value


def parse_request(payload):
    """
    Read a request payload (bytes).

    @return: a L{Request}.
    @raise BadRequest: with C{.id} set to whatever id could be read.
    """
    request_id = None
    try:
        if len(payload) > MAX_REQUEST:
            raise BadRequest(f"request of {len(payload)} bytes is longer than {MAX_REQUEST}")
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        error = BadRequest("the request is not UTF-8 text")
        error.id = None
        raise error from None
    except BadRequest as error:
        error.id = None
        raise
    try:
        request = json.loads(text)
    except ValueError as e:
        error = BadRequest(f"bad JSON: {e}")
        error.id = _readable_id(text)
        raise error from None
    if isinstance(request, dict):
        request_id = request.get("id")
        if not isinstance(request_id, (str, int)) or isinstance(request_id, bool):
            request_id = None
    try:
        if not isinstance(request, dict):
            raise BadRequest("the request must be a JSON object")
        op = request.get("op")
        if op not in _OPS:
            raise BadRequest(f"unknown op {op!r} (known: {', '.join(_OPS)})")
        if op == "read":
            args = (_int(request, "register"), _int(request, "count", 1))
        elif op == "write":
            register = _int(request, "register")
            if "values" in request:
                values = request["values"]
                if not isinstance(values, list) or not values or any(
                        isinstance(v, bool) or not isinstance(v, int) for v in values):
                    raise BadRequest("'values' must be a list of whole numbers")
            else:
                values = [_int(request, "value")]
            args = (register, values)
        elif op == "dread":
            args = (_int(request, "register"),)
        elif op == "dwrite":
            value = request.get("value")
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise BadRequest("'value' must be text")
            args = (_int(request, "register"), str(value))
        else:
            name = request.get("setting")
            if not isinstance(name, str) or not name:
                raise BadRequest("missing 'setting'")
            if op == "set":
                if "value" not in request:
                    raise BadRequest("missing 'value'")
                args = (name, request["value"])
            else:
                args = (name,)
    except BadRequest as error:
        error.id = request_id
        raise
    client = request.get("client")
    client = client[:64] if isinstance(client, str) and client else None
    return Request(request_id, op, args, client)


def status_payload(session, online, instance):
    """The retained status document of a datalogger."""
    return {
        "status": "online" if online else "offline",
        "datalogger": session.datalogger_serial,
        "inverter": session.inverter_serial,
        "protocol": session.protocol,
        "instance": instance,
    }


def _registers(values):
    return {str(register): value for register, value in values.items()}


class MqttControl(service.Service):
    """
    Answers control requests arriving through the mqtt output's connection.

    @param mqtt: the running L{grott.outputs.mqtt.MqttOutput}.
    @param registry: the proxy's L{grott.session.Registry} (for status).
    """

    log = Logger()

    def __init__(self, control, mqtt, registry, prefix="grott", instance_id="",
                 answer_unknown=True):
        self.control = control
        self.answer_unknown = answer_unknown
        self.mqtt = mqtt
        self.registry = registry
        self.prefix = prefix
        self.instance = instance_id or socket.gethostname()
        self.v5 = mqtt.settings.protocol == "5"
        self.counts = {"requests": 0, "replies": 0, "errors": 0, "not_held": 0}
        self._online = {}

    def startService(self):
        service.Service.startService(self)
        self.mqtt.subscribe(f"{self.prefix}/+/request", self.received)
        self.registry.observers.append(self)
        for session in self.registry.sorted():
            if session.datalogger_serial is not None \
                    and self.registry.by_serial(session.datalogger_serial) is session:
                self.dataloggerConnected(session)
        self.log.info("control: MQTT requests on {topic}", topic=f"{self.prefix}/+/request")

    def stopService(self):
        service.Service.stopService(self)
        if self in self.registry.observers:
            self.registry.observers.remove(self)
        # The sessions are about to close; say so while the connection is
        # up (and do not wait for a broker that is away).
        online, self._online = list(self._online.values()), {}
        if not self.mqtt.connected:
            return None
        sent = defer.DeferredList([self._publish_status(session, False) for session in online],
                                  consumeErrors=True)
        sent.addTimeout(_GOODBYE_TIMEOUT, self.mqtt.reactor)
        sent.addErrback(lambda f: f.trap(defer.TimeoutError))
        return sent

    def report_lines(self):
        c = self.counts
        return [(f"  control mqtt: requests={c['requests']} replies={c['replies']} "
                 f"errors={c['errors']} not_held={c['not_held']}")]

    # ---------------------------------------------------------------- status

    def dataloggerConnected(self, session):
        """A registry observer's hook: the datalogger is here."""
        self._online[session.datalogger_serial] = session
        self._publish_status(session, True)

    def dataloggerDisconnected(self, session):
        """A registry observer's hook: the datalogger's connection ended."""
        if self._online.get(session.datalogger_serial) is session:
            del self._online[session.datalogger_serial]
        self._publish_status(session, False)

    def _publish_status(self, session, online):
        payload = json.dumps(status_payload(session, online, self.instance))
        d = self.mqtt.publish_message(f"{self.prefix}/{session.datalogger_serial}/status",
                                      payload, qos=1, retain=True)
        d.addErrback(self._not_published, "a status")
        return d

    def _not_published(self, failure, what):
        if failure.check(defer.FirstError):
            failure = failure.value.subFailure
        if not failure.check(defer.CancelledError):  # cancelled: stopping, broker away
            self.log.failure("control: publishing {what} failed", failure, what=what)

    # ---------------------------------------------------------------- requests

    def received(self, message):
        """
        One request (a paho C{MQTTMessage}); its reply is published later.
        """
        topic = message.topic
        serial = topic[len(self.prefix) + 1:-len("/request")]
        if not self.answer_unknown and self.registry.by_serial(serial) is None:
            # Several instances share the broker: the one holding this
            # datalogger answers, the others stay silent.
            self.counts["not_held"] += 1
            return defer.succeed(None)
        self.counts["requests"] += 1
        response_topic = correlation = None
        properties = getattr(message, "properties", None)
        if properties is not None:
            response_topic = getattr(properties, "ResponseTopic", None)
            correlation = getattr(properties, "CorrelationData", None)
        if message.retain:
            # A retained request is replayed on every (re)subscription: it
            # was answered when it was new, it is not carried out again.
            d = defer.succeed({"id": _readable_id(message.payload.decode("utf-8", "replace")),
                               "ok": False, "error": "retained request ignored (publish "
                               "requests without the retain flag)"})
        else:
            d = defer.Deferred.fromCoroutine(self._answer(serial, topic, message.payload))
        d.addErrback(self._internal_error)
        d.addCallback(self._reply, serial, response_topic, correlation)
        return d

    async def _answer(self, serial, topic, payload):
        try:
            request = parse_request(payload)
        except BadRequest as e:
            self.log.info("control: bad request on {topic}: {error}", topic=topic, error=str(e))
            return {"id": e.id, "ok": False, "error": str(e)}
        who = f"mqtt client {request.client} via {topic}" if request.client else f"mqtt {topic}"
        control = self.control
        try:
            if request.op == "read":
                answer = {"registers": _registers(await control.read(serial, *request.args,
                                                                     via="mqtt"))}
            elif request.op == "write":
                answer = {"registers": _registers(await control.write(serial, *request.args, who))}
            elif request.op == "dread":
                answer = {"registers": _registers(await control.dread(serial, *request.args,
                                                                      via="mqtt"))}
            elif request.op == "dwrite":
                answer = {"registers": _registers(await control.dwrite(serial, *request.args, who))}
            else:
                if request.op == "set":
                    result = await control.set(serial, *request.args, who)
                else:
                    result = await control.get(serial, *request.args, via="mqtt")
                answer = {"setting": result["setting"], "value": result["value"],
                          "registers": _registers(result["registers"])}
        except Mismatch as e:
            return {"id": request.id, "ok": False, "error": str(e),
                    "registers": _registers(e.held)}
        except CommandError as e:
            return {"id": request.id, "ok": False, "error": str(e)}
        return {"id": request.id, "ok": True, **answer}

    def _internal_error(self, failure):
        self.log.failure("control: an MQTT request failed", failure)
        return {"id": None, "ok": False, "error": "internal error (see grott's log)"}

    def _reply(self, reply, serial, response_topic, correlation):
        if not reply.get("ok"):
            self.counts["errors"] += 1
        self.counts["replies"] += 1
        payload = json.dumps(reply)
        sent = [self.mqtt.publish_message(f"{self.prefix}/{serial}/reply", payload, qos=1)]
        if self.v5 and response_topic:
            properties = Properties(PacketTypes.PUBLISH)
            if correlation is not None:
                properties.CorrelationData = correlation
            sent.append(self.mqtt.publish_message(response_topic, payload, qos=1,
                                                  properties=properties))
        d = defer.gatherResults(sent, consumeErrors=True)
        d.addErrback(self._not_published, "a reply")
        return d
