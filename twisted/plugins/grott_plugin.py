"""
twistd dropin: `twistd grott --config config.yaml`.

Lazy on purpose: `twistd --help` must not import grott.
"""

from twisted.application.service import ServiceMaker

grott = ServiceMaker(
    "grott",
    "grott.tap",
    "Growatt datalogger proxy: relay to the cloud, decode and publish locally.",
    "grott",
)
