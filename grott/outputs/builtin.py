"""
The built-in outputs as plugin factories (what C{grott.plugins.grott_outputs}
registers).

An output's module is imported when its C{outputs:} section turns it on,
not when plugins are discovered: the mqtt output brings paho-mqtt and the
Home Assistant tables, about 1.3 MB that a grott without it need not carry.
"""

from zope.interface import implementer

from grott.interfaces import IConfigurablePlugin

__all__ = ["JsonlFactory", "MqttFactory", "jsonl", "mqtt"]


@implementer(IConfigurablePlugin)
class JsonlFactory:
    """
    Builds L{grott.outputs.jsonl.JsonlOutput} from C{outputs.jsonl} (a
    L{grott.config.JsonlConfig}).
    """

    name = "jsonl"

    def makePlugin(self, settings, reactor):
        from grott.outputs.jsonl import JsonlOutput
        return JsonlOutput(settings.path)


@implementer(IConfigurablePlugin)
class MqttFactory:
    """
    Builds L{grott.outputs.mqtt.MqttOutput} from C{outputs.mqtt} (a
    L{grott.config.MqttConfig}).
    """

    name = "mqtt"

    def makePlugin(self, settings, reactor):
        from grott.outputs.mqtt import MqttOutput
        return MqttOutput(settings, reactor)


jsonl = JsonlFactory()
mqtt = MqttFactory()
