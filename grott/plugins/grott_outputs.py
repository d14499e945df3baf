"""
The built-in outputs (jsonl, mqtt, influxdb, pvoutput), registered as
plugin factories.
"""

from grott.outputs.influxdb import factory as influxdb
from grott.outputs.jsonl import factory as jsonl
from grott.outputs.mqttspool import factory as mqtt
from grott.outputs.pvoutput import factory as pvoutput

__all__ = ["influxdb", "jsonl", "mqtt", "pvoutput"]
