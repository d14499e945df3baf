"""
The built-in outputs as plugin factories (what C{grott.plugins.grott_outputs}
registers).

An output's module is imported when its C{outputs:} section turns it on,
not when plugins are discovered: the mqtt output brings paho-mqtt and the
Home Assistant tables, the HTTP outputs twisted.web's client, memory that a
grott without them need not carry.  Each output module keeps its own
C{factory}; these stand-ins only defer the import.
"""

import importlib

from zope.interface import implementer

from grott.interfaces import IConfigurablePlugin

__all__ = ["influxdb", "jsonl", "mqtt", "pvoutput"]


@implementer(IConfigurablePlugin)
class LazyFactory:
    """
    The factory of C{grott.outputs.<module>}, imported on first use.
    """

    def __init__(self, name, module):
        self.name = name
        self.module = module

    def makePlugin(self, settings, reactor):
        module = importlib.import_module(f"grott.outputs.{self.module}")
        return module.factory.makePlugin(settings, reactor)


jsonl = LazyFactory("jsonl", "jsonl")
# The mqtt output behind its spool unless outputs.mqtt.spool is false.
mqtt = LazyFactory("mqtt", "mqttspool")
influxdb = LazyFactory("influxdb", "influxdb")
pvoutput = LazyFactory("pvoutput", "pvoutput")
