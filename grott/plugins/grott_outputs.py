"""
The built-in outputs (jsonl, mqtt, influxdb, pvoutput), registered as
plugin factories; their modules are imported only when configured
(L{grott.outputs.builtin}).
"""

from grott.outputs.builtin import influxdb, jsonl, mqtt, pvoutput

__all__ = ["influxdb", "jsonl", "mqtt", "pvoutput"]
