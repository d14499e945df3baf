"""
Home Assistant MQTT discovery: the configs that make each inverter, each
datalogger and grott itself a device with curated entities.

Pure functions (no MQTT, no Twisted): the mqtt output decides when to
publish, this module only says what.  Entity rows come from
L{grott.outputs.hass_entities}.

Topics (C{BASE} is C{outputs.mqtt.topic}; see L{Topics}):

    BASE/SERIAL                  live data records of one inverter (retained)
    BASE/SERIAL/announce         its announce records (retained)
    BASE/SERIAL/buffered         its buffered (0x50) records: no entity reads them
    BASE/SERIAL/held             records the data guards kept from the live topic
    BASE/METER                   live 0x20 records of one smart meter (retained;
                                 and BASE/METER/held as for an inverter)
    BASE/METER/log               its live 0x1b log records (retained)
    BASE/DATALOGGER/availability "online"/"offline" per datalogger (retained)
    BASE/availability            "online"/"offline" for grott (retained, last will)
    BASE/grott/status            grott's own counters

Unique ids (stable across restarts and versions, never colliding):

    grott_SERIAL_KEY             an input-register value (live data)
    grott_SERIAL_holding_KEY     a holding-register value (announce)
    grott_METER_KEY              a smart meter's value
    grott_dl_DATALOGGER_connected  the datalogger's connectivity
    grott_proxy_BASE_KEY         grott's own sensors (BASE with / as _)

where C{SERIAL} is the inverter serial (or, for a record without one, the
datalogger serial, C{_} and the device address), C{METER} a meter record's
C{device_id} (the serial it reports for, C{-meter-} and its device address
in hex: C{QDL1CKK028-meter-01}; Growatt serials have no C{-}, so a meter's
ids never meet its inverter's), C{KEY} the value name of docs/registers.md,
and every character outside C{[A-Za-z0-9_-]} becomes C{_}.  Device identifiers are C{grott_SERIAL}, C{grott_METER},
C{grott_dl_DATALOGGER} and C{grott_proxy_BASE}.
"""

import dataclasses
import json
import re

from grott.outputs import hass_entities
from grott.registers.record import METER

__all__ = ["Discovery", "Inverter", "Meter", "Topics", "device_key", "slug"]

#: Family -> model name shown on the device page.
_MODELS = {
    "classic": "Classic (S / MTL-S / TL3-S)",
    "tlx": "MIN / TL-X / TL-XH",
    "tl3x": "TL3-X (MAX / MID / MAC)",
    "storage": "SPH / SPA / MIX",
    "spf": "SPF off-grid",
}

#: Device type code -> model, where protocol.md section 11 knows it.
_DTC_MODELS = {
    5100: "MIN / TL-X 2500-6000",
    5200: "MIN 2500-6000",
    5201: "MIN 7000-10000 TL-X",
    5400: "MOD / MID TL3-XH",
    3502: "SPH / SPA",
    3601: "SPH",
    3725: "SPH / SPA",
    3735: "SPH / SPA",
    5601: "WIT / WIS",
    5800: "WIT / WIS",
}


def slug(text):
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(text))


def device_key(record):
    """
    Which device a record belongs to: for a smart meter its C{device_id}
    (never the inverter it reports for), else the inverter serial, or for
    a record without one, datalogger serial and device address.
    """
    if record.kind == METER:
        return str(record.device_id)
    if record.inverter_serial:
        return str(record.inverter_serial)
    return f"{record.datalogger_serial or 'unknown'}_{record.device_address}"


@dataclasses.dataclass(frozen=True)
class Topics:
    """
    Where the mqtt output publishes (the module docstring lists them).
    """

    base: str

    def live(self, serial):
        return f"{self.base}/{serial}"

    def announce(self, serial):
        return f"{self.base}/{serial}/announce"

    def buffered(self, serial):
        return f"{self.base}/{serial}/buffered"

    def held(self, serial):
        return f"{self.base}/{serial}/held"

    def log(self, meter):
        return f"{self.base}/{meter}/log"

    def datalogger(self, datalogger):
        return f"{self.base}/{datalogger}/availability"

    @property
    def availability(self):
        return f"{self.base}/availability"

    @property
    def status(self):
        return f"{self.base}/grott/status"


@dataclasses.dataclass(frozen=True)
class Inverter:
    """
    What the device page shows about one inverter.
    """

    serial: str
    datalogger: str
    family: object = None
    dtc: object = None
    firmware: object = None
    control_firmware: object = None
    manufacturer: object = None
    module_code: object = None
    trackers: object = None
    phases: object = None
    #: True/False once the live records show whether a battery is there.
    battery: object = None

    def model(self):
        family = _MODELS.get(self.family, self.family or "Growatt inverter")
        known = _DTC_MODELS.get(self.dtc) if self.family != "classic" else None
        if known:
            return f"{known} (DTC {self.dtc})"
        if self.dtc is not None and self.family != "classic":
            return f"{family} (DTC {self.dtc})"
        return family


@dataclasses.dataclass(frozen=True)
class Meter:
    """
    What the device page shows about one smart meter.

    @ivar device_id: the record's C{device_id} (C{QDL1CKK028-meter-01}).
    @ivar reports_for: the inverter serial its 0x20 records name, if any.
    @ivar phases: 1 or 3 once its records show it, else None.
    """

    device_id: str
    datalogger: str
    address: object = None
    reports_for: object = None
    phases: object = None


def _text(value):
    if value is None:
        return None
    text = str(value).strip().strip("\x00").strip()
    return text if text and text.isprintable() else None


class Discovery:
    """
    Builds discovery configs: C{{topic: config dict}} per device.

    @param availability: the grott-wide availability topic (the last will).
    @param discovery_all: announce every value, not only the table's rows.
    """

    def __init__(self, prefix, topics, availability, discovery_all=False):
        self.prefix = prefix
        self.topics = topics
        self.availability = availability
        self.discovery_all = discovery_all
        self.proxy_id = f"grott_proxy_{slug(topics.base)}"

    # -- devices

    def proxy_device(self):
        return {"identifiers": [self.proxy_id], "name": "grott proxy", "manufacturer": "grott",
                "model": "Growatt datalogger proxy"}

    def datalogger_device(self, datalogger):
        return {"identifiers": [f"grott_dl_{slug(datalogger)}"],
                "name": f"Growatt datalogger {datalogger}", "manufacturer": "Growatt",
                "model": "Datalogger", "serial_number": str(datalogger),
                "via_device": self.proxy_id}

    def inverter_device(self, inverter):
        device = {"identifiers": [f"grott_{slug(inverter.serial)}"],
                  "name": f"Growatt {inverter.serial}", "manufacturer": "Growatt",
                  "model": inverter.model(), "serial_number": inverter.serial}
        firmware = _text(inverter.firmware)
        control = _text(inverter.control_firmware)
        if firmware or control:
            device["sw_version"] = " / ".join(v for v in (firmware, control) if v)
        hardware = _text(inverter.manufacturer) or _text(inverter.module_code)
        if hardware:
            device["hw_version"] = hardware
        if inverter.datalogger:
            device["via_device"] = f"grott_dl_{slug(inverter.datalogger)}"
        return device

    def meter_device(self, meter):
        device = {"identifiers": [f"grott_{slug(meter.device_id)}"],
                  "name": f"Smart meter {meter.device_id}", "model": "Smart meter"}
        if meter.datalogger:
            device["via_device"] = f"grott_dl_{slug(meter.datalogger)}"
        return device

    # -- configs

    def _topic(self, component, node, object_id):
        return f"{self.prefix}/{component}/{node}/{object_id}/config"

    def inverter(self, inverter, input_units, holding_units, expire_after=None):
        """
        Configs for one inverter: one entity per table row whose value the
        inverter's records carry (C{input_units}, C{holding_units}: key ->
        unit of the values seen on the live and the announce topic).  No
        entity reads a value its topic's messages lack.
        """
        return self._entities(
            inverter.serial, inverter.datalogger, self.inverter_device(inverter),
            inverter.family, {"input": input_units, "holding": holding_units},
            lambda e: e.fits(inverter.trackers, inverter.phases, inverter.battery),
            expire_after)

    def meter(self, meter, units, expire_after=None, log_units=None):
        """
        Configs for one smart meter: a device of its own (not the inverter
        it reports for); the rows of its 0x20 values read its live topic,
        those of its 0x1b values its log topic.  C{units}, C{log_units}:
        key -> unit of the values its 0x20 and 0x1b records carried.

        Both kinds describe the same quantities: on a meter with 0x20
        values the 0x1b rows are disabled by default, and a name both
        carry (C{frequency}) is one entity, read from the 0x20 records.
        """
        log_units = log_units or {}

        def fits(entity):
            return not (entity.source == "log" and units) and entity.fits(None, meter.phases)

        return self._entities(meter.device_id, meter.datalogger, self.meter_device(meter),
                              METER, {"input": units, "holding": {}, "log": log_units},
                              fits, expire_after)

    def _entities(self, key, datalogger, device, family, seen, fits, expire_after):
        node = f"grott_{slug(key)}"
        availability = [{"topic": self.availability},
                        {"topic": self.topics.datalogger(datalogger)}]
        rows = [e for e in hass_entities.entities_for(family) if e.key in seen.get(e.source, ())]
        if self.discovery_all:
            known = {(e.source, e.key) for e in rows}
            for source, units in seen.items():
                rows += [hass_entities.guessed(name, unit, source)
                         for name, unit in units.items() if (source, name) not in known]
        # Input and log values share object ids: one entity per name.
        live = {e.key for e in rows if e.source == "input"}
        rows = [e for e in rows if not (e.source == "log" and e.key in live)]
        topics = {"input": self.topics.live(key), "holding": self.topics.announce(key),
                  "log": self.topics.log(key)}
        configs = {}
        for entity in rows:
            if entity.enabled and not fits(entity):
                entity = dataclasses.replace(entity, enabled=False)
            holding = entity.source == "holding"
            object_id = f"holding_{slug(entity.key)}" if holding else slug(entity.key)
            config = entity_config(entity, f"{node}_{object_id}", device,
                                   topics[entity.source], availability)
            if expire_after and not holding:
                config["expire_after"] = int(expire_after)
            configs[self._topic(entity.component, node, object_id)] = config
        return configs

    def datalogger(self, datalogger):
        """
        The datalogger as its own device, with one connectivity entity that
        reads its availability topic.
        """
        node = f"grott_dl_{slug(datalogger)}"
        config = {"name": "Connected", "unique_id": f"{node}_connected",
                  "state_topic": self.topics.datalogger(datalogger),
                  "payload_on": "online", "payload_off": "offline",
                  "device_class": "connectivity", "entity_category": "diagnostic",
                  "availability_topic": self.availability,
                  "device": self.datalogger_device(datalogger)}
        return {self._topic("binary_sensor", node, "connected"): config}

    def proxy(self):
        """
        grott itself: counters from the stats report, on BASE/grott/status.
        """
        device = self.proxy_device()
        node = self.proxy_id
        common = {"state_topic": self.topics.status, "availability_topic": self.availability,
                  "device": device, "entity_category": "diagnostic"}
        rows = [("dataloggers", "Dataloggers connected", "measurement", "mdi:router-wireless"),
                ("local_acks", "Local acknowledgements", "total_increasing", "mdi:reply"),
                ("records_dropped", "Records dropped", "total_increasing", "mdi:delete-alert"),
                ("records_held", "Records held back", "total_increasing", "mdi:shield-alert")]
        configs = {}
        for key, name, state_class, icon in rows:
            configs[self._topic("sensor", node, key)] = dict(
                common, name=name, unique_id=f"{node}_{key}", state_class=state_class,
                icon=icon, suggested_display_precision=0,
                value_template="{{ value_json['" + key + "'] }}")
        configs[self._topic("binary_sensor", node, "cloud")] = dict(
            common, name="Cloud reachable", unique_id=f"{node}_cloud",
            device_class="connectivity",
            value_template="{{ value_json['cloud_reachable'] }}",
            payload_on="ON", payload_off="OFF")
        return configs


def entity_config(entity, unique_id, device, state_topic, availability):
    """
    The discovery config of one table row.
    """
    config = {
        "name": entity.name,
        "unique_id": unique_id,
        "state_topic": state_topic,
        "value_template": "{{ value_json['values'][" + json.dumps(entity.key) + "] }}",
        "availability": availability,
        "availability_mode": "all",
        "device": device,
    }
    for key, value in (("unit_of_measurement", entity.unit),
                       ("device_class", entity.device_class),
                       ("state_class", entity.state_class),
                       ("suggested_display_precision", entity.precision),
                       ("entity_category", entity.category),
                       ("icon", entity.icon)):
        if value is not None:
            config[key] = value
    if not entity.enabled:
        config["enabled_by_default"] = False
    config.update(entity.extra)
    return config
