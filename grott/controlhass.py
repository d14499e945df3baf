"""
Home Assistant entities for the named settings (L{grott.settings}): a
C{number}, C{select}, C{switch}, C{text} or C{button} per setting, on the
inverter's device (identifier C{grott_<inverter serial>}, the one the mqtt
output's sensors use), commanded through the control plane like any other
request.

Topics (C{PREFIX} is C{control.topic_prefix}, C{DL} the datalogger serial):

    PREFIX/DL/settings                       retained JSON: every setting's value
    PREFIX/DL/setting/NAME/set               command: a new value
    PREFIX/DL/setting/NAME/start|end|enabled/set   command: one part of a slot

State comes from reads: when the datalogger connects, every
C{control.poll_interval} seconds, and whenever any front end reads or
writes a setting's registers (the control plane tells its observers every
value it sees, read-backs included), so an entity shows what the inverter
holds, never what was asked for.  Only settings whose registers could be
read get an entity.

Home Assistant's MQTT discovery has no C{time} platform, so a slot's start
and end are C{text} entities with an HH:MM pattern, and its enable a switch.
The clock is a button ("set to now").
"""

import json
import re

from twisted.application import service
from twisted.internet import defer, task

from grott.commands import CommandError
from grott.logs import Logger
from grott.logthrottle import LogThrottle

__all__ = ["ControlEntities", "discovery_configs", "state_document"]

#: Reads of neighbouring settings are merged when the gap is this small.
_GAP = 16
#: Retries (one per _RETRY seconds) for a datalogger whose family is not known yet.
_RETRY = 5.0
_RETRIES = 12

_HHMM = "^([01][0-9]|2[0-3]):[0-5][0-9]$"


def _slug(text):
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(text))


def _slot_parts(setting, words):
    start, end, flag = words
    return {"start": f"{start >> 8:02d}:{start & 0xFF:02d}",
            "end": f"{end >> 8:02d}:{end & 0xFF:02d}",
            "enabled": {0: "off", 1: "on"}.get(flag, str(flag))}


def state_document(settings, registers):
    """
    {setting name: value} for every setting whose registers are all in
    C{registers} (register -> raw value); slots as {start, end, enabled}.
    """
    document = {}
    for setting in settings:
        if setting.kind == "clock" or any(r not in registers for r in setting.registers):
            continue
        words = [registers[r] for r in setting.registers]
        if setting.kind == "slot":
            document[setting.name] = _slot_parts(setting, words)
        else:
            document[setting.name] = setting.decode(words)
    return document


def discovery_configs(settings, known, inverter, datalogger, prefix, discovery_prefix):
    """
    {discovery topic: config} for the settings named in C{known} (and the
    clock button), on the device of inverter C{inverter}.
    """
    node = f"grott_{_slug(inverter)}"
    base = f"{prefix}/{datalogger}"
    common = {
        "device": {"identifiers": [node]},
        "availability": [{"topic": f"{base}/status",
                          "value_template": "{{ value_json.status }}"}],
        "entity_category": "config",
    }
    configs = {}

    def add(component, key, name, **config):
        object_id = f"setting_{key}"
        configs[f"{discovery_prefix}/{component}/{node}/{object_id}/config"] = dict(
            common, name=name, unique_id=f"{node}_{object_id}", **config)

    for s in settings:
        state = {"state_topic": f"{base}/settings"}
        command = f"{base}/setting/{s.name}/set"
        template = f"{{{{ value_json.{s.name} }}}}"
        if s.kind == "clock":
            add("button", s.name, "Set inverter clock to now", command_topic=command,
                payload_press="now")
            continue
        if s.name not in known:
            continue
        if s.kind == "number":
            config = dict(state, command_topic=command, value_template=template,
                          min=s.minimum, max=s.maximum, step=1 / s.scale, mode="box")
            if s.unit:
                config["unit_of_measurement"] = s.unit
            add("number", s.name, s.title, **config)
        elif s.kind == "switch":
            add("switch", s.name, s.title, command_topic=command, value_template=template,
                payload_on="on", payload_off="off", state_on="on", state_off="off", **state)
        elif s.kind == "select":
            add("select", s.name, s.title, command_topic=command, value_template=template,
                options=[label for _, label in s.options], **state)
        elif s.kind == "slot":
            for part in ("start", "end"):
                add("text", f"{s.name}_{part}", f"{s.title} {part}",
                    command_topic=f"{base}/setting/{s.name}/{part}/set",
                    value_template=f"{{{{ value_json.{s.name}.{part} }}}}",
                    pattern=_HHMM, min=5, max=5, **state)
            add("switch", f"{s.name}_enabled", f"{s.title} enabled",
                command_topic=f"{base}/setting/{s.name}/enabled/set",
                value_template=f"{{{{ value_json.{s.name}.enabled }}}}",
                payload_on="on", payload_off="off", state_on="on", state_off="off", **state)
    return configs


def _read_plan(settings):
    """(first register, count) reads covering every setting but the clock."""
    spans = sorted((s.register, s.registers[-1]) for s in settings if s.kind != "clock")
    plan = []
    for first, last in spans:
        if plan and first - plan[-1][1] <= _GAP and last - plan[-1][0] < 100:
            plan[-1][1] = max(plan[-1][1], last)
        else:
            plan.append([first, last])
    return [(first, last - first + 1) for first, last in plan]


class ControlEntities(service.Service):
    """
    Keeps the settings entities of every connected datalogger's inverter.

    @param mqtt: the running L{grott.outputs.mqtt.MqttOutput}.
    @param poll_interval: seconds between refreshing reads; 0: never.
    """

    log = Logger()

    def __init__(self, control, mqtt, registry, clock, *, prefix="grott",
                 discovery_prefix="homeassistant", poll_interval=600.0):
        self.control = control
        self.mqtt = mqtt
        self.registry = registry
        self.clock = clock
        self.prefix = prefix
        self.discovery_prefix = discovery_prefix
        self.poll_interval = poll_interval
        #: datalogger -> register -> last value seen
        self.registers = {}
        #: datalogger -> last state document published
        self.published = {}
        #: datalogger -> (inverter, names) whose discovery went out
        self.announced = {}
        self._loop = None
        self._pending = {}
        self._throttle = LogThrottle(clock, self._failures, burst=3, interval=600.0)

    def startService(self):
        service.Service.startService(self)
        self.control.observers.append(self.saw)
        self.registry.observers.append(self)
        self.mqtt.subscribe(f"{self.prefix}/+/setting/#", self.received)
        for session in self.registry.sorted():
            if session.datalogger_serial is not None:
                self.dataloggerConnected(session)
        if self.poll_interval:
            self._loop = task.LoopingCall(self.poll)
            self._loop.clock = self.clock
            self._loop.start(self.poll_interval, now=False)

    def stopService(self):
        service.Service.stopService(self)
        if self.saw in self.control.observers:
            self.control.observers.remove(self.saw)
        if self in self.registry.observers:
            self.registry.observers.remove(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        self._throttle.stop()

    # ---------------------------------------------------------------- dataloggers

    def dataloggerConnected(self, session):
        # The record that identified the datalogger is decoded right after
        # this: look at its family on a later turn.
        self._schedule(session.datalogger_serial, 0, _RETRIES)

    def dataloggerDisconnected(self, session):
        call = self._pending.pop(session.datalogger_serial, None)
        if call is not None and call.active():
            call.cancel()

    def _schedule(self, serial, delay, tries):
        old = self._pending.get(serial)
        if old is not None and old.active():
            old.cancel()
        self._pending[serial] = self.clock.callLater(delay, self._first, serial, tries)

    def _first(self, serial, tries):
        self._pending.pop(serial, None)
        session = self.registry.by_serial(serial)
        if session is None:
            return
        if session.family is None and tries > 0:
            self._schedule(serial, _RETRY, tries - 1)
            return
        self.refresh(serial)

    def poll(self):
        """Read every connected datalogger's settings again."""
        return defer.DeferredList([self.refresh(s.datalogger_serial)
                                   for s in self.registry.sorted()
                                   if s.datalogger_serial is not None], consumeErrors=True)

    def refresh(self, serial):
        """Read the settings of C{serial}; the observer publishes what comes back."""
        return defer.Deferred.fromCoroutine(self._refresh(serial))

    async def _refresh(self, serial):
        try:
            settings = self.control.settings(serial)
        except CommandError:
            return
        for first, count in _read_plan(settings):
            try:
                await self.control.read(serial, first, count, via="hass")
            except CommandError as e:
                # A setting this inverter does not have (a TL-X without a
                # battery has no 3036-3049): it gets no entity.
                if self._throttle.admit((serial, first)):
                    self.log.info("control entities: {serial}: reading registers {first}.. "
                                  "failed ({error}); those settings get no entity",
                                  serial=serial, first=first, error=str(e))
        self._announce(serial)

    def _failures(self, key, count, seconds):
        self.log.info("control entities: {serial}: {count} more failed reads of registers "
                      "{first}.. in {seconds:.0f} s", serial=key[0], first=key[1],
                      count=count, seconds=seconds)

    # ---------------------------------------------------------------- state

    def saw(self, serial, values):
        """A control plane observer: registers just read from C{serial}."""
        self.registers.setdefault(serial, {}).update(values)
        if serial in self.announced:
            self._publish_state(serial)

    def _announce(self, serial):
        session = self.registry.by_serial(serial)
        if session is None:
            return
        settings = self.control.settings(serial)
        document = state_document(settings, self.registers.get(serial, {}))
        inverter = session.inverter_serial or serial
        key = (inverter, tuple(sorted(document)))
        if self.announced.get(serial) != key:
            self.announced[serial] = key
            for topic, config in discovery_configs(settings, document, inverter, serial,
                                                   self.prefix,
                                                   self.discovery_prefix).items():
                self._send(topic, json.dumps(config), retain=True)
        self._publish_state(serial)

    def _publish_state(self, serial):
        try:
            settings = self.control.settings(serial)
        except CommandError:
            return
        document = state_document(settings, self.registers.get(serial, {}))
        if document and document != self.published.get(serial):
            self.published[serial] = document
            self._send(f"{self.prefix}/{serial}/settings", json.dumps(document), retain=True)

    def _send(self, topic, payload, retain):
        d = self.mqtt.publish_message(topic, payload, qos=1, retain=retain)
        d.addErrback(self._not_published)

    def _not_published(self, failure):
        if not failure.check(defer.CancelledError):  # cancelled: stopping, broker away
            self.log.failure("control entities: publishing failed", failure)

    # ---------------------------------------------------------------- commands

    def received(self, message):
        """A command from Home Assistant (a paho C{MQTTMessage})."""
        if message.retain:
            # Replayed on every subscription: a command is carried out once.
            return None
        parts = message.topic[len(self.prefix) + 1:].split("/")
        if len(parts) not in (4, 5) or parts[1] != "setting" or parts[-1] != "set":
            return None
        serial, name = parts[0], parts[2]
        part = parts[3] if len(parts) == 5 else None
        try:
            value = message.payload.decode("utf-8").strip()
        except UnicodeDecodeError:
            value = ""
        d = defer.Deferred.fromCoroutine(self._command(serial, name, part, value,
                                                       message.topic))
        d.addErrback(lambda f: self.log.failure("control entities: a command failed", f))
        return d

    async def _command(self, serial, name, part, value, topic):
        who = f"home assistant {topic}"
        try:
            if part is not None:
                if part not in ("start", "end", "enabled"):
                    raise CommandError(f"no part {part!r} of {name}")
                current = self.published.get(serial, {}).get(name)
                if not isinstance(current, dict):
                    await self.control.get(serial, name, via="hass")
                    current = self.published.get(serial, {}).get(name)
                if not isinstance(current, dict):
                    raise CommandError(f"the current value of {name} is not known")
                value = dict(current, **{part: value})
            await self.control.set(serial, name, value, who)
        except CommandError as e:
            # The audit line has it; Home Assistant shows the state again.
            self.log.info("control entities: {topic}: {error}", topic=topic, error=str(e))
            self.published.pop(serial, None)
            self._publish_state(serial)
