"""
Features that are off cost no memory: a grott built without the monitoring
endpoint and without the mqtt output has not imported prometheus_client,
twisted.web, paho or the Home Assistant tables, nor the control plane
without a front end to it, nor sqlite3 without a spooled output (nor
twisted.trial, which twisted.internet.testing would bring in through the
config checks and the port probe before twistd forks).  Checked
in a fresh interpreter, since the test process itself imports all of them.
"""

import json
import os
import subprocess
import sys
import textwrap

from twisted.trial.unittest import SynchronousTestCase

HEAVY = ("prometheus_client", "twisted.web.server", "paho", "grott.outputs.mqtt",
         "grott.outputs.hass", "grott.metrics", "grott.monitor", "twisted.trial", "zoneinfo",
         "grott.control", "grott.controlhass", "sqlite3")


_BUILD = textwrap.dedent("""
    import json, sys
    from grott.config import config_from_string
    from grott.service import makeService, probe_listeners
    from twisted.internet import reactor
    config = config_from_string(sys.argv[1])
    probe_listeners(config)
    makeService(config, reactor)
    print(json.dumps(sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)))
    """)


def _imported(config_text):
    out = subprocess.run([sys.executable, "-c", _BUILD, config_text, json.dumps(HEAVY)],
                         capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if out.returncode != 0:
        raise AssertionError(f"building the service failed:\n{out.stderr}")
    return json.loads(out.stdout)


class LazyImportTests(SynchronousTestCase):

    def test_offFeaturesAreNotImported(self):
        plugins = os.path.abspath(self.mktemp())
        self.assertEqual(_imported(
            "proxy: {listen: 'tcp:0', upstream: 'tcp:127.0.0.1:1'}\n"
            "command: {listen: none}\nmetrics: {listen: none}\n"
            f"plugins: {{directory: {plugins}}}\n"), [])

    def test_onFeaturesAreImported(self):
        plugins = os.path.abspath(self.mktemp())
        imported = _imported(
            "proxy: {listen: 'tcp:0', upstream: 'tcp:127.0.0.1:1', timezone: Europe/Amsterdam}\n"
            "command: {listen: none}\nmetrics: {listen: 'tcp:0:interface=127.0.0.1'}\n"
            "control: {mqtt: true}\n"
            f"plugins: {{directory: {plugins}}}\noutputs: {{mqtt: {{discovery: true}}}}\n")
        self.assertEqual(imported, sorted(set(HEAVY) - {"twisted.trial"}))
