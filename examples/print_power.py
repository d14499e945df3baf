"""
A synchronous grott plugin: logs each inverter's AC power.

Copy this file into the plugins/ directory next to config.yaml (or the
directory named by plugins.directory) and restart grott.  It runs on the
reactor thread, so it must be quick and must not block: no sleeping, no
network or database calls (see slow_http.py and README.md for those).
"""

from zope.interface import implementer

from grott.interfaces import IGrottPlugin


@implementer(IGrottPlugin)
class PrintPower:
    #: The name used in config.yaml (plugins.enabled / disabled) and in logs.
    name = "print_power"

    def data(self, packet, record, log):
        if record.buffered:
            return  # replayed from the datalogger's buffer: not "now"
        power = record.values.get("pvpowerout")
        if power is not None:
            log.info("{serial}: {power} {unit} at {at}", serial=record.inverter_serial,
                     power=power, unit=record.units.get("pvpowerout", ""),
                     at=record.timestamp)


# grott runs every module-level object that provides IGrottPlugin.
plugin = PrintPower()
