"""
The built-in outputs (jsonl, mqtt), registered as plugin factories.
"""

from grott.outputs.jsonl import factory as jsonl
from grott.outputs.mqtt import factory as mqtt

__all__ = ["jsonl", "mqtt"]
