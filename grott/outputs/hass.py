"""
Home Assistant MQTT discovery: what the mqtt output publishes so that each
inverter shows up as a device with one sensor per value.

Pure functions (no MQTT, no Twisted) so the messages can be checked
directly.  Each sensor's config goes, retained, to
C{PREFIX/sensor/grott_SERIAL/KEY/config}; its state is read from the
record's JSON payload with C{value_json['values']['KEY']}.
"""

import json
import re

__all__ = ["discovery_messages", "sensor_config", "unit_meta"]

# unit -> (device_class, state_class); units as grott's register tables
# spell them.  Counters (energy, operating hours) only grow, apart from the
# daily resets Home Assistant's total_increasing copes with.
_UNITS = {
    "W": ("power", "measurement"),
    "kW": ("power", "measurement"),
    "VA": ("apparent_power", "measurement"),
    "var": ("reactive_power", "measurement"),
    "VAr": ("reactive_power", "measurement"),
    "V": ("voltage", "measurement"),
    "A": ("current", "measurement"),
    "mA": ("current", "measurement"),
    "Hz": ("frequency", "measurement"),
    "°C": ("temperature", "measurement"),
    "C": ("temperature", "measurement"),
    "Wh": ("energy", "total_increasing"),
    "kWh": ("energy", "total_increasing"),
    "h": ("duration", "total_increasing"),
    "s": ("duration", "measurement"),
    "%": (None, "measurement"),
    "kΩ": (None, "measurement"),
}

#: Units Home Assistant spells differently.
_HA_UNITS = {"C": "°C", "VAr": "var"}


def unit_meta(key, unit):
    """
    (unit as Home Assistant wants it, device_class, state_class) for a value.
    """
    if not unit:
        return None, None, None
    device_class, state_class = _UNITS.get(unit, (None, "measurement"))
    if unit == "%" and "soc" in key.lower():
        device_class = "battery"
    return _HA_UNITS.get(unit, unit), device_class, state_class


def _slug(text):
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(text))


def sensor_config(serial, key, value, unit, state_topic, availability_topic, device):
    """
    The discovery config of one sensor (a dict to publish as JSON).
    """
    config = {
        "name": key,
        "unique_id": f"grott_{_slug(serial)}_{_slug(key)}",
        "state_topic": state_topic,
        "value_template": "{{ value_json['values'][" + json.dumps(key) + "] }}",
        "availability_topic": availability_topic,
        "device": device,
    }
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if numeric:
        ha_unit, device_class, state_class = unit_meta(key, unit)
        if ha_unit:
            config["unit_of_measurement"] = ha_unit
        if device_class:
            config["device_class"] = device_class
        if state_class:
            config["state_class"] = state_class
    return config


def discovery_messages(record, serial, state_topic, availability_topic, prefix, skip=()):
    """
    [(topic, config dict)] for the values of C{record} not in C{skip}.

    @param serial: the device's serial (the inverter's, or the datalogger's
        for records without one).
    """
    model = record.family or (f"device type {record.device_type_code}"
                              if record.device_type_code is not None else None)
    device = {
        "identifiers": [f"grott_{_slug(serial)}"],
        "name": f"Growatt {serial}",
        "manufacturer": "Growatt",
        "serial_number": serial,
    }
    if model:
        device["model"] = str(model)
    messages = []
    for key, value in record.values.items():
        if key in skip:
            continue
        config = sensor_config(serial, key, value, record.units.get(key), state_topic,
                               availability_topic, device)
        messages.append((f"{prefix}/sensor/grott_{_slug(serial)}/{_slug(key)}/config", config))
    return messages
