"""
A blocking grott plugin: appends a few values of each record to a CSV file
with plain (blocking) file calls.

Declaring IBlockingPlugin makes grott call data() -- and startService /
stopService -- in its plugin thread pool, never on the reactor thread, so a
slow disk or a synchronous database driver cannot stall the relay.  The
same pattern fits sqlite3, psycopg, requests...
"""

import csv

from zope.interface import implementer

from grott.interfaces import IBlockingPlugin, IGrottPluginService

COLUMNS = ("pvpowerin", "pvpowerout", "pvenergytoday", "pvenergytotal")


@implementer(IBlockingPlugin, IGrottPluginService)
class CsvFile:
    name = "csv_file"

    def __init__(self, path):
        self.path = path
        self.file = None

    def startService(self):
        self.file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self.writer = csv.writer(self.file)

    def stopService(self):
        self.file.close()

    def data(self, packet, record, log):
        self.writer.writerow([record.timestamp, record.inverter_serial]
                             + [record.values.get(name) for name in COLUMNS])
        self.file.flush()


plugin = CsvFile("grott-values.csv")
