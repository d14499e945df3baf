"""
The built-in outputs (jsonl, mqtt), registered as plugin factories; their
modules are imported only when configured (L{grott.outputs.builtin}).
"""

from grott.outputs.builtin import jsonl, mqtt

__all__ = ["jsonl", "mqtt"]
